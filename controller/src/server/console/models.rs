//! Models and bundles (versions, signers, where each runs, drift and quality), and the
//! delivery KPIs over time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use gantry_shared::protocol::admin;
use gantry_shared::protocol::delivery::BundleInfo;
use gantry_shared::protocol::monitoring::VersionQualityFigures;

use super::chart::{self, Series};
use super::html::{self, Section, esc};
use super::session::Session;
use super::{PageError, Rendered, Shared};

const DAY_MS: u64 = 86_400_000;

async fn bundles(shared: &Arc<Shared>, session: &Session) -> Result<Vec<BundleInfo>, PageError> {
    match super::ask(shared, session, admin::Request::BundleList).await? {
        admin::Response::Bundles(b) => Ok(b),
        _ => Err(PageError::Unavailable("unexpected answer".to_owned())),
    }
}

/// Bundle id → nodes whose heartbeat says they serve it now.
fn running(shared: &Shared) -> HashMap<String, Vec<String>> {
    let live = shared.live.lock().expect("live map");
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (node, l) in live.iter() {
        if l.connections.is_empty() {
            continue;
        }
        for m in l.heartbeat.iter().flat_map(|h| h.bundles.models.iter()) {
            if let Some(active) = &m.active {
                out.entry(active.clone()).or_default().push(node.clone());
            }
        }
    }
    for nodes in out.values_mut() {
        nodes.sort();
    }
    out
}

pub(super) async fn render_list(shared: &Arc<Shared>, session: &Session) -> Rendered {
    let all = bundles(shared, session).await?;
    let running = running(shared);
    let mut by_model: BTreeMap<&str, Vec<&BundleInfo>> = BTreeMap::new();
    for b in &all {
        by_model.entry(b.name.as_str()).or_default().push(b);
    }
    let rows: Vec<Vec<String>> = by_model
        .iter()
        .map(|(name, versions)| {
            let serving: usize = versions
                .iter()
                .map(|b| running.get(&b.id).map_or(0, Vec::len))
                .sum();
            let newest = versions
                .iter()
                .max_by_key(|b| b.pushed_at_ms)
                .map_or("", |b| b.version.as_str());
            vec![
                format!("<a href=\"/models/{}\">{}</a>", html::url(name), esc(name)),
                versions.len().to_string(),
                esc(newest),
                serving.to_string(),
            ]
        })
        .collect();
    let mut main = String::from(
        "<h1>Models</h1><p class=\"sub\">Every bundle the controller holds, by model.</p>",
    );
    main.push_str(&html::table(
        &["model", "versions", "newest", "nodes serving"],
        &rows,
        "No bundle pushed yet: `gantry bundle push`.",
    ));
    Ok(("Models".to_owned(), Some(Section::Models), main))
}

fn quality_cells(m: &gantry_shared::monitoring::quality::Metrics) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("accuracy", m.accuracy),
        ("precision", m.precision),
        ("recall", m.recall),
        ("F1", m.f1),
        ("ROC AUC", m.roc_auc),
        ("MAE", m.mae),
        ("RMSE", m.rmse),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v:.4}"));
        }
    }
    format!("{} over {} rows", esc(&parts.join(" · ")), m.rows)
}

pub(super) async fn render_one(shared: &Arc<Shared>, session: &Session, name: &str) -> Rendered {
    let all = bundles(shared, session).await?;
    let mut versions: Vec<&BundleInfo> = all.iter().filter(|b| b.name == name).collect();
    if versions.is_empty() {
        return Err(PageError::NotFound(format!(
            "the controller holds no bundle of model {name:?}"
        )));
    }
    versions.sort_by_key(|b| std::cmp::Reverse(b.pushed_at_ms));
    let running = running(shared);
    let now = gantry_net::clock::now_ms();
    let mut main = format!("<h1>{}</h1><h2>Versions</h2>", esc(name));
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|b| {
            let nodes = running.get(&b.id).cloned().unwrap_or_default();
            let shown: Vec<String> = nodes
                .iter()
                .take(20)
                .map(|n| format!("<a href=\"/nodes/{}\">{}</a>", html::url(n), esc(n)))
                .collect();
            let more = nodes.len().saturating_sub(20);
            vec![
                esc(&b.version),
                format!(
                    "<span class=\"mono\">{}</span>",
                    esc(super::fleet::short(&b.id))
                ),
                esc(&b.signers.join(", ")),
                format!(
                    "{} by {}",
                    html::ago(now, b.pushed_at_ms),
                    esc(&b.pushed_by)
                ),
                html::bytes(b.size),
                format!(
                    "{}{}",
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ),
            ]
        })
        .collect();
    main.push_str(&html::table(
        &[
            "version",
            "bundle",
            "signed by",
            "pushed",
            "size",
            "running on",
        ],
        &rows,
        "",
    ));

    let since = now.saturating_sub(7 * DAY_MS);
    if let Ok(admin::Response::Quality(q)) = super::ask(
        shared,
        session,
        admin::Request::ModelQuality {
            model: name.to_owned(),
            version: None,
            since_ms: since,
            period_ms: DAY_MS / 24,
        },
    )
    .await
    {
        main.push_str("<h2>Quality in production (7 days)</h2>");
        let rows: Vec<Vec<String>> = q
            .versions
            .iter()
            .map(|v| {
                vec![
                    esc(&v.version),
                    v.nodes.to_string(),
                    quality_cells(&v.metrics),
                ]
            })
            .collect();
        main.push_str(&html::table(
            &["version", "nodes", "figures"],
            &rows,
            "No feedback joined with this model's predictions yet.",
        ));
        if !q.fleet.is_empty() {
            main.push_str(&quality_chart(&q.fleet));
        }
    }
    if let Ok(admin::Response::Drift(d)) = super::ask(
        shared,
        session,
        admin::Request::ModelDrift {
            model: name.to_owned(),
            version: None,
            since_ms: now.saturating_sub(DAY_MS),
            period_ms: DAY_MS / 24,
        },
    )
    .await
    {
        main.push_str("<h2>Drift (24 hours, fleet-wide per hour)</h2>");
        let mut by_version: BTreeMap<&str, Series> = BTreeMap::new();
        for w in &d.fleet {
            let worst = w
                .drift
                .iter()
                .map(|f| f.psi.max(f.ks.unwrap_or(0.0)).max(f.js))
                .fold(0.0, f64::max);
            let s = by_version.entry(w.version.as_str()).or_default();
            s.name.clone_from(&w.version);
            s.points.push((w.end_ms, worst));
        }
        let series: Vec<Series> = by_version.into_values().collect();
        if !series.is_empty() {
            main.push_str(&chart::lines(
                "Worst feature's drift score",
                "",
                &series,
                Some((0.0, 0.0)),
            ));
        }
        let recent: Vec<Vec<String>> = d
            .windows
            .iter()
            .rev()
            .take(20)
            .map(|w| {
                let drifted = w.drifted();
                vec![
                    html::time(w.end_ms),
                    format!(
                        "<a href=\"/nodes/{}\">{}</a>",
                        html::url(&w.node),
                        esc(&w.node)
                    ),
                    esc(&w.version),
                    w.rows.to_string(),
                    if drifted.is_empty() {
                        html::badge("ok")
                    } else {
                        esc(&drifted
                            .iter()
                            .map(|f| f.feature.as_str())
                            .collect::<Vec<_>>()
                            .join(", "))
                    },
                ]
            })
            .collect();
        main.push_str(&html::table(
            &["window end", "node", "version", "rows", "drifted features"],
            &recent,
            "No drift window reported (the bundle may carry no reference profile).",
        ));
    }
    Ok((name.to_owned(), Some(Section::Models), main))
}

/// The headline metric of each version over time.
fn quality_chart(fleet: &[VersionQualityFigures]) -> String {
    let mut by_version: BTreeMap<&str, Series> = BTreeMap::new();
    let mut label = "accuracy";
    for v in fleet {
        let value = v.metrics.accuracy.or_else(|| {
            label = "RMSE";
            v.metrics.rmse
        });
        if let Some(value) = value {
            let s = by_version.entry(v.version.as_str()).or_default();
            s.name.clone_from(&v.version);
            s.points.push((v.end_ms, value));
        }
    }
    let series: Vec<Series> = by_version.into_values().collect();
    chart::lines(&format!("Fleet-wide {label} per hour"), "", &series, None)
}

pub(super) async fn render_kpis(
    shared: &Arc<Shared>,
    session: &Session,
    query: &HashMap<String, String>,
) -> Rendered {
    let days: u64 = query
        .get("days")
        .and_then(|d| d.parse().ok())
        .unwrap_or(30)
        .clamp(1, 365);
    let rollouts =
        match super::ask(shared, session, admin::Request::RolloutStatus { id: None }).await? {
            admin::Response::Rollouts(r) => r,
            admin::Response::Rollout(r) => vec![*r],
            _ => return Err(PageError::Unavailable("unexpected answer".to_owned())),
        };
    let now = gantry_net::clock::now_ms();
    let today = now - now % DAY_MS;
    let mut deployments = Vec::new();
    let mut lead = Vec::new();
    let mut failure = Vec::new();
    let mut mttr = Vec::new();
    for d in (0..days).rev() {
        let from = today - d * DAY_MS;
        let k = crate::rollouts::kpis(rollouts.iter(), from, from + DAY_MS);
        let label = html::time(from)[5..10].to_owned();
        #[allow(clippy::cast_precision_loss)] // counts for display
        let done = k.rollouts.get("succeeded").copied().map(f64::from);
        deployments.push((label.clone(), done));
        lead.push((label.clone(), k.lead_time_median_s.map(|s| s / 60.0)));
        failure.push((label.clone(), k.change_failure_rate.map(|r| r * 100.0)));
        mttr.push((label, k.mttr_mean_s.map(|s| s / 60.0)));
    }
    let admin::Response::Kpis(total) = super::ask(
        shared,
        session,
        admin::Request::ReportKpis {
            window_ms: days * DAY_MS,
        },
    )
    .await?
    else {
        return Err(PageError::Unavailable("unexpected answer".to_owned()));
    };
    let mut main = format!(
        "<h1>Delivery KPIs</h1><p class=\"sub\">Per day over the last {days} days, from the rollouts the controller recorded. <a href=\"/kpis?days=7\">7 days</a> · <a href=\"/kpis?days=30\">30 days</a> · <a href=\"/kpis?days=90\">90 days</a></p>"
    );
    main.push_str(&html::cards(&[
        (
            "deployments per day",
            format!("{:.2}", total.deployments_per_day),
        ),
        (
            "lead time (median)",
            total
                .lead_time_median_s
                .map_or_else(|| "—".to_owned(), html::span),
        ),
        (
            "change failure rate",
            total
                .change_failure_rate
                .map_or_else(|| "—".to_owned(), |r| format!("{:.0} %", r * 100.0)),
        ),
        (
            "time to recover (mean)",
            total.mttr_mean_s.map_or_else(|| "—".to_owned(), html::span),
        ),
    ]));
    main.push_str("<div class=\"grid2\">");
    main.push_str(&chart::bars(
        "Deployments (succeeded rollouts)",
        "per day",
        &deployments,
    ));
    main.push_str(&chart::bars(
        "Lead time, push to fleet-wide",
        "minutes, median",
        &lead,
    ));
    main.push_str(&chart::bars("Change failure rate", "%", &failure));
    main.push_str(&chart::bars("Time to recover", "minutes, mean", &mttr));
    main.push_str("</div>");
    let _ = write!(main, "<h2>Model performance in production</h2>");
    let mut rows = Vec::new();
    for (model, versions) in &total.model_quality {
        for v in versions {
            rows.push(vec![
                esc(model),
                esc(&v.version),
                v.nodes.to_string(),
                quality_cells(&v.metrics),
            ]);
        }
    }
    main.push_str(&html::table(
        &["model", "version", "nodes", "figures"],
        &rows,
        "No feedback in this span.",
    ));
    Ok(("KPIs".to_owned(), Some(Section::Kpis), main))
}
