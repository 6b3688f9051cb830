//! The `gantry rollout` and `gantry report kpis` output: readable tables for people, the
//! records themselves (`--json`) for scripts.

use std::fmt::Write as _;

use gantry_shared::protocol::rollout::{Kpis, Rollout, State};

use crate::rollouts::nodes_text;

fn seconds(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn ago(at_ms: u64, now_ms: u64) -> String {
    format!("{} ago", seconds(now_ms.saturating_sub(at_ms)))
}

/// One rollout in detail.
pub fn render_status(r: &Rollout, now_ms: u64) -> String {
    let mut out = String::new();
    let state = r.state();
    let steps: Vec<String> = r.spec.steps.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "rollout {}: {}@{} ({})",
        r.id, r.bundle_name, r.bundle_version, r.bundle_id
    );
    let _ = writeln!(
        out,
        "state     {}{}",
        state.as_str().to_uppercase(),
        match state {
            State::Rolling => format!(
                " — step {} of {} ({} of {} assigned), waiting {} for them to run it",
                r.step + 1,
                r.spec.steps.len(),
                nodes_text(r.touched.len()),
                r.plan.len(),
                seconds(now_ms.saturating_sub(r.phase_started_ms))
            ),
            State::Baking => format!(
                " — step {} of {} ({} run it), {} of bake left",
                r.step + 1,
                r.spec.steps.len(),
                nodes_text(r.touched.len()),
                seconds((r.phase_started_ms + r.spec.bake_ms).saturating_sub(now_ms))
            ),
            _ => format!(
                " — step {} of {}, {} of {} nodes touched",
                r.step + 1,
                r.spec.steps.len(),
                r.touched.len(),
                r.plan.len()
            ),
        }
    );
    let _ = writeln!(
        out,
        "started   {} by {}; steps {}, bake {}",
        ago(r.created_at_ms, now_ms),
        r.created_by,
        steps.join(","),
        seconds(r.spec.bake_ms)
    );
    let g = &r.spec.gates;
    let mut gates = vec![format!("max unhealthy {}", g.max_unhealthy)];
    if let Some(rate) = g.max_error_rate {
        gates.push(format!("error rate ≤ {:.1} %", rate * 100.0));
    }
    if let Some(p99) = g.max_latency_p99_s {
        gates.push(format!("p99 ≤ {:.1} ms", p99 * 1e3));
    }
    if g.golden {
        gates.push("golden vectors pass".to_owned());
    }
    if let Some(max) = g.max_drift {
        gates.push(format!("drift ≤ {max}"));
    }
    for (metric, bound) in &g.min_quality {
        let sign = if metric.higher_is_better() {
            "≥"
        } else {
            "≤"
        };
        gates.push(format!("{} {sign} {bound}", metric.as_str()));
    }
    if !g.min_quality.is_empty() {
        gates.push(format!(
            "quality judged from {} feedback rows",
            g.min_quality_rows
        ));
    }
    if let Some(max) = g.max_prediction_shift {
        gates.push(format!(
            "prediction shift from the previous version ≤ {max}"
        ));
    }
    for (metric, drop) in &g.max_quality_drop {
        gates.push(format!(
            "{} at most {drop} {} than the previous version",
            metric.as_str(),
            if metric.higher_is_better() {
                "lower"
            } else {
                "higher"
            }
        ));
    }
    if g.compares() {
        gates.push(format!("compared from {} rows a side", g.min_compare_rows));
    }
    let _ = writeln!(out, "gates     {}", gates.join(", "));
    let nodes: Vec<String> = r
        .gates
        .nodes
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    let _ = writeln!(
        out,
        "nodes     {}{}",
        if nodes.is_empty() {
            "none touched yet".to_owned()
        } else {
            nodes.join(", ")
        },
        match (r.gates.max_error_rate, r.gates.max_latency_p99_s) {
            (Some(e), Some(p)) => format!(
                "; worst error rate {:.1} %, worst p99 {:.1} ms",
                e * 100.0,
                p * 1e3
            ),
            (Some(e), None) => format!("; worst error rate {:.1} %", e * 100.0),
            _ => String::new(),
        }
    );
    if let (Some(score), Some(feature)) = (r.gates.max_drift, &r.gates.max_drift_feature) {
        let _ = writeln!(out, "drift     worst {feature} {score:.3}");
    }
    if !r.spec.gates.min_quality.is_empty() {
        let worst: Vec<String> = r
            .gates
            .worst_quality
            .iter()
            .map(|(metric, v)| format!("{} {v:.4}", metric.as_str()))
            .collect();
        let _ = writeln!(
            out,
            "quality   {}{}",
            if worst.is_empty() {
                "no feedback yet".to_owned()
            } else {
                format!("worst {}", worst.join(", "))
            },
            r.gates
                .min_quality_rows
                .map(|rows| format!("; fewest rows on a node {rows}"))
                .unwrap_or_default()
        );
    }
    if let Some(c) = &r.gates.comparison {
        let _ = writeln!(out, "compared  {}", comparison_text(c));
    }
    for why in &r.gates.failing {
        let _ = writeln!(out, "  ✗ {why}");
    }
    if let Some(failure) = &r.failure {
        let _ = writeln!(out, "FAILED    {failure}");
    }
    if let (Some(failed), Some(recovered)) = (r.failed_at_ms, r.recovered_at_ms) {
        let _ = writeln!(
            out,
            "recovered in {:.1} s",
            recovered.saturating_sub(failed) as f64 / 1e3
        );
    }
    let _ = writeln!(out, "events");
    for e in r.events.iter().rev().take(10).rev() {
        let _ = writeln!(out, "  {:>9}  {}", ago(e.at_ms, now_ms), e.message);
    }
    out
}

/// Every rollout, one line each.
pub fn render_list(rollouts: &[Rollout], now_ms: u64) -> String {
    if rollouts.is_empty() {
        return "no rollouts yet (`gantry rollout start NAME@VERSION …`)\n".to_owned();
    }
    let mut out = format!(
        "{:<6} {:<28} {:<13} {:>7} {:>11}  {}\n",
        "ID", "BUNDLE", "STATE", "STEP", "NODES", "STARTED"
    );
    for r in rollouts {
        let _ = writeln!(
            out,
            "{:<6} {:<28} {:<13} {:>7} {:>11}  {}",
            r.id,
            format!("{}@{}", r.bundle_name, r.bundle_version),
            r.state().as_str(),
            format!("{}/{}", r.step + 1, r.spec.steps.len()),
            format!("{}/{}", r.touched.len(), r.plan.len()),
            ago(r.created_at_ms, now_ms)
        );
    }
    out
}

/// The KPIs, readable.
pub fn render_kpis(k: &Kpis) -> String {
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "—".to_owned(), f);
    let secs = |s: f64| format!("{s:.1} s");
    let states: Vec<String> = k.rollouts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "over {} (rollouts started in the window): {}",
        seconds(k.to_ms.saturating_sub(k.from_ms)),
        if states.is_empty() {
            "none".to_owned()
        } else {
            states.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "deployment frequency   {:.2} per day",
        k.deployments_per_day
    );
    let _ = writeln!(
        out,
        "lead time              median {}, max {} (push → fleet-wide)",
        opt(k.lead_time_median_s, &secs),
        opt(k.lead_time_max_s, &secs)
    );
    let _ = writeln!(
        out,
        "change failure rate    {}",
        opt(k.change_failure_rate, &|r| format!("{:.1} %", r * 100.0))
    );
    let _ = writeln!(
        out,
        "time to recovery       mean {}, max {} (failed gate → touched nodes back and healthy)",
        opt(k.mttr_mean_s, &secs),
        opt(k.mttr_max_s, &secs)
    );
    if !k.models.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<20} {:>9} {:>11} {:>12} {:>14} {:>11}",
            "MODEL", "ROLLOUTS", "PER DAY", "LEAD MEDIAN", "CHANGE FAIL", "MTTR MEAN"
        );
        for (model, m) in &k.models {
            let _ = writeln!(
                out,
                "{:<20} {:>9} {:>11.2} {:>12} {:>14} {:>11}",
                if model.is_empty() { "-" } else { model },
                m.rollouts.values().sum::<u32>(),
                m.deployments_per_day,
                opt(m.lead_time_median_s, &secs),
                opt(m.change_failure_rate, &|r| format!("{:.1} %", r * 100.0)),
                opt(m.mttr_mean_s, &secs)
            );
        }
    }
    if !k.model_quality.is_empty() {
        let _ = writeln!(
            out,
            "\nmodel performance in production (feedback joined on the nodes, fleet-wide)"
        );
        let _ = writeln!(
            out,
            "{:<20} {:<10} {:>5} {:>9}  METRICS",
            "MODEL", "VERSION", "NODES", "ROWS"
        );
        for (model, versions) in &k.model_quality {
            for v in versions {
                let _ = writeln!(
                    out,
                    "{:<20} {:<10} {:>5} {:>9}  {}",
                    model,
                    v.version,
                    v.nodes,
                    v.metrics.rows,
                    crate::quality::figures(&v.metrics)
                );
            }
        }
    }
    out
}

/// The canary against the baseline in one line.
fn comparison_text(c: &gantry_shared::protocol::rollout::Comparison) -> String {
    if c.baseline_bundles.is_empty() {
        return "no baseline: the touched nodes had no previous version of the model".to_owned();
    }
    let mut parts = vec![format!(
        "{} canary against {} baseline node(s) since {}",
        c.canary_nodes,
        c.baseline_nodes,
        gantry_net::clock::rfc3339(c.since_ms)
    )];
    match c.prediction_shift.first() {
        Some(worst) => parts.push(format!(
            "largest prediction shift {} {} {:.3}",
            worst.feature, worst.statistic, worst.score
        )),
        None => parts.push("prediction shift: too few values yet".to_owned()),
    }
    let figures = |m: &Option<gantry_shared::monitoring::quality::Metrics>| {
        m.as_ref().map(|m| {
            let present: Vec<String> = m
                .present()
                .iter()
                .map(|(metric, v)| format!("{} {v:.4}", metric.as_str()))
                .collect();
            format!("{} rows: {}", m.rows, present.join(", "))
        })
    };
    if let (Some(canary), Some(baseline)) =
        (figures(&c.canary_quality), figures(&c.baseline_quality))
    {
        parts.push(format!("quality canary {canary}; baseline {baseline}"));
    }
    parts.join("; ")
}
