//! Rollouts: the list, and one rollout's steps, gates and their values, bake timer and
//! events, live while it runs; operators pause, resume, abort and roll back from here.

use std::fmt::Write as _;
use std::sync::Arc;

use gantry_shared::protocol::admin::{self, Role};
use gantry_shared::protocol::rollout::{Rollout, State};

use super::html::{self, Section, esc};
use super::session::Session;
use super::{PageError, Rendered, Shared};

fn state_of(r: &Rollout) -> &'static str {
    r.state.map_or("unknown", State::as_str)
}

pub(super) async fn render_list(shared: &Arc<Shared>, session: &Session) -> Rendered {
    let mut rollouts =
        match super::ask(shared, session, admin::Request::RolloutStatus { id: None }).await? {
            admin::Response::Rollouts(r) => r,
            admin::Response::Rollout(r) => vec![*r],
            _ => return Err(PageError::Unavailable("unexpected answer".to_owned())),
        };
    rollouts.sort_by_key(|r| std::cmp::Reverse(r.created_at_ms));
    let now = gantry_net::clock::now_ms();
    let rows: Vec<Vec<String>> = rollouts
        .iter()
        .map(|r| {
            vec![
                format!(
                    "<a href=\"/rollouts/{}\">{}</a>",
                    html::url(&r.id),
                    esc(&r.id)
                ),
                format!("{} {}", esc(&r.bundle_name), esc(&r.bundle_version)),
                html::badge(state_of(r)),
                format!(
                    "{} of {}",
                    (r.step + 1).min(r.spec.steps.len()),
                    r.spec.steps.len()
                ),
                format!("{} touched", r.touched.len()),
                esc(&r.created_by),
                html::ago(now, r.created_at_ms),
                esc(r.failure.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    let mut main = String::from(
        "<h1>Rollouts</h1><p class=\"sub\">Newest first. Start one with <code>gantry rollout start</code>.</p>",
    );
    main.push_str(&html::table(
        &[
            "rollout", "bundle", "state", "step", "nodes", "by", "started", "failure",
        ],
        &rows,
        "No rollout yet.",
    ));
    Ok(("Rollouts".to_owned(), Some(Section::Rollouts), main))
}

pub(super) async fn render_one(shared: &Arc<Shared>, session: &Session, id: &str) -> Rendered {
    let admin::Response::Rollout(r) = super::ask(
        shared,
        session,
        admin::Request::RolloutStatus {
            id: Some(id.to_owned()),
        },
    )
    .await?
    else {
        return Err(PageError::Unavailable("unexpected answer".to_owned()));
    };
    let now = gantry_net::clock::now_ms();
    let state = state_of(&r);
    let mut main = format!(
        "<h1>Rollout {} {}</h1><p class=\"sub\">{} {} to nodes {} · started by {} {}</p>",
        esc(&r.id),
        html::badge(state),
        esc(&r.bundle_name),
        esc(&r.bundle_version),
        esc(&r
            .spec
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")),
        esc(&r.created_by),
        html::ago(now, r.created_at_ms),
    );
    if let Some(f) = &r.failure {
        main.push_str(&html::notice(f, false));
    }
    if session.grant.role >= Role::Operator && r.state.is_some_and(State::is_active) {
        main.push_str("<div class=\"actions\">");
        let base = format!("/rollouts/{}", html::url(&r.id));
        if r.state == Some(State::Paused) {
            main.push_str(&html::action(
                &format!("{base}/resume"),
                "Resume",
                session,
                None,
                false,
            ));
        } else if r.state != Some(State::RollingBack) {
            main.push_str(&html::action(
                &format!("{base}/pause"),
                "Pause",
                session,
                None,
                false,
            ));
        }
        if r.state != Some(State::RollingBack) {
            main.push_str(&html::action(
                &format!("{base}/abort"),
                "Abort",
                session,
                Some("Abort this rollout? Nodes keep what they run."),
                true,
            ));
            main.push_str(&html::action(
                &format!("{base}/rollback"),
                "Roll back",
                session,
                Some("Roll every touched node back to its previous bundle?"),
                true,
            ));
        }
        main.push_str("</div>");
    }

    main.push_str("<h2>Steps</h2><ol class=\"steps\">");
    for (i, step) in r.spec.steps.iter().enumerate() {
        let mark = if i < r.step || state == "succeeded" {
            "done"
        } else if i == r.step {
            state
        } else {
            "pending"
        };
        let step = step.to_string();
        let size = if step.ends_with('%') {
            format!("{step} of the nodes")
        } else if step == "1" {
            "1 node".to_owned()
        } else {
            format!("{step} nodes")
        };
        let _ = write!(main, "<li>{size} {}</li>", html::badge(mark));
    }
    main.push_str("</ol>");
    if r.state == Some(State::Baking) {
        #[allow(clippy::cast_precision_loss)] // seconds for display
        let left = r
            .spec
            .bake_ms
            .saturating_sub(now.saturating_sub(r.phase_started_ms)) as f64
            / 1000.0;
        let _ = write!(
            main,
            "<p>Baking: {} left of {}.</p>",
            html::span(left),
            html::span(r.spec.bake_ms as f64 / 1000.0)
        );
    }

    main.push_str("<h2>Gates</h2>");
    let g = &r.spec.gates;
    let v = &r.gates;
    let mut gates = vec![vec![
        "unhealthy nodes".to_owned(),
        format!("≤ {}", g.max_unhealthy),
        v.nodes
            .get("failing")
            .map_or_else(|| "0".to_owned(), u32::to_string),
    ]];
    if let Some(max) = g.max_error_rate {
        gates.push(vec![
            "error rate".to_owned(),
            format!("≤ {max}"),
            html::opt(v.max_error_rate.map(|e| format!("{e:.4}"))),
        ]);
    }
    if g.golden {
        gates.push(vec![
            "golden vectors".to_owned(),
            "pass".to_owned(),
            format!("{} failures", v.golden_failures),
        ]);
    }
    if let Some(max) = g.max_drift {
        gates.push(vec![
            "drift".to_owned(),
            format!("≤ {max}"),
            format!(
                "{} {}",
                html::opt(v.max_drift.map(|d| format!("{d:.3}"))),
                esc(v.max_drift_feature.as_deref().unwrap_or(""))
            ),
        ]);
    }
    for (metric, min) in &g.min_quality {
        gates.push(vec![
            format!("{metric:?}").to_lowercase(),
            format!("≥ {min}"),
            html::opt(v.worst_quality.get(metric).map(|q| format!("{q:.4}"))),
        ]);
    }
    if let Some(max) = g.max_prediction_shift {
        let worst = v
            .comparison
            .as_ref()
            .and_then(|c| c.prediction_shift.iter().map(|s| s.score).reduce(f64::max));
        gates.push(vec![
            "prediction shift".to_owned(),
            format!("≤ {max}"),
            html::opt(worst.map(|s| format!("{s:.3}"))),
        ]);
    }
    main.push_str(&html::table(&["gate", "must be", "latest"], &gates, ""));
    if !v.failed_gates.is_empty() {
        let _ = write!(main, "<p>Failed: {}</p>", esc(&v.failed_gates.join(", ")));
    }

    main.push_str("<h2>Nodes</h2>");
    let nodes: Vec<Vec<String>> = r
        .touched
        .iter()
        .map(|t| {
            vec![
                format!(
                    "<a href=\"/nodes/{}\">{}</a>",
                    html::url(&t.node),
                    esc(&t.node)
                ),
                (t.step + 1).to_string(),
                html::ago(now, t.assigned_at_ms),
                t.previous.as_deref().map_or_else(
                    || "—".to_owned(),
                    |p| {
                        format!(
                            "<span class=\"mono\">{}</span>",
                            esc(super::fleet::short(p))
                        )
                    },
                ),
            ]
        })
        .collect();
    main.push_str(&html::table(
        &["node", "step", "assigned", "previous bundle"],
        &nodes,
        "No node assigned yet.",
    ));

    main.push_str("<h2>Events</h2>");
    let events: Vec<Vec<String>> = r
        .events
        .iter()
        .rev()
        .map(|e| vec![html::time(e.at_ms), esc(&e.message)])
        .collect();
    main.push_str(&html::table(&["at", "event"], &events, "No event yet."));
    Ok((format!("Rollout {}", r.id), Some(Section::Rollouts), main))
}
