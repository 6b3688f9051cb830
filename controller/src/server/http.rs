//! `/metrics` for Prometheus federation: every node's latest sample with a `node` label,
//! and the controller's own counters.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use gantry_shared::exposition::{self, Exposition, Kind, ModelLabel};
use gantry_shared::health::HealthState;
use gantry_shared::monitoring::quality::{Metrics, QualitySummary};
use gantry_shared::protocol::rollout::State as RolloutState;
use tokio_util::sync::CancellationToken;

use super::Shared;

pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the /metrics endpoint failed");
    }
}

/// Each served model's latest drift window on a node, from its heartbeat: the worst
/// feature's score, how many features are over the threshold, and the threshold.
fn render_drift(e: &mut Exposition, models: &[gantry_shared::protocol::heartbeat::ModelReport]) {
    let monitored: Vec<(
        &gantry_shared::protocol::heartbeat::ModelReport,
        &gantry_shared::monitoring::DriftSummary,
    )> = models
        .iter()
        .filter_map(|m| Some((m, m.drift.as_ref()?)))
        .collect();
    if monitored.is_empty() {
        return;
    }
    e.family(
        "gantry_node_model_drift_worst",
        Kind::Gauge,
        "The highest drift score of any feature in a served model's latest window on the node (label metric: the bundle's statistic).",
    );
    for (m, d) in &monitored {
        if let Some((feature, score)) = &d.worst {
            e.sample(
                "gantry_node_model_drift_worst",
                &[
                    ("model", m.name.as_str()),
                    ("bundle", m.bundle.as_str()),
                    ("metric", d.metric.as_str()),
                    ("feature", feature.as_str()),
                ],
                *score,
            );
        }
    }
    for (name, help, pick) in [
        (
            "gantry_node_model_drifted_features",
            "Features over the drift threshold in a served model's latest window on the node.",
            (|d: &gantry_shared::monitoring::DriftSummary| d.drifted.len() as f64)
                as fn(&gantry_shared::monitoring::DriftSummary) -> f64,
        ),
        (
            "gantry_node_model_drift_threshold",
            "The drift score above which a feature makes the model degraded on the node.",
            |d: &gantry_shared::monitoring::DriftSummary| d.threshold,
        ),
        (
            "gantry_node_model_drift_window_rows",
            "Rows (examples) the model's latest drift window on the node saw.",
            |d: &gantry_shared::monitoring::DriftSummary| d.rows as f64,
        ),
    ] {
        e.family(name, Kind::Gauge, help);
        for (m, d) in &monitored {
            e.sample(
                name,
                &[
                    ("model", m.name.as_str()),
                    ("bundle", m.bundle.as_str()),
                    ("metric", d.metric.as_str()),
                ],
                pick(d),
            );
        }
    }
}

/// A summary's figures by scope label.
fn scopes(q: &QualitySummary) -> [(&'static str, &Metrics); 2] {
    [("window", &q.metrics), ("cumulative", &q.cumulative)]
}

/// Each served model's production quality on the node, from its heartbeat: every metric
/// its feedback gives, over the latest window and since the node started serving it.
fn render_quality(e: &mut Exposition, models: &[gantry_shared::protocol::heartbeat::ModelReport]) {
    let scored: Vec<(
        &gantry_shared::protocol::heartbeat::ModelReport,
        &QualitySummary,
    )> = models
        .iter()
        .filter_map(|m| Some((m, m.quality.as_ref()?)))
        .collect();
    if scored.is_empty() {
        return;
    }
    e.family(
        "gantry_node_model_quality",
        Kind::Gauge,
        "A served model's production quality on the node from joined feedback (label scope: window = the latest closed window, cumulative = since the node started serving the bundle).",
    );
    for (m, q) in &scored {
        for (scope, metrics) in scopes(q) {
            for (metric, value) in metrics.present() {
                e.sample(
                    "gantry_node_model_quality",
                    &[
                        ("model", m.name.as_str()),
                        ("bundle", m.bundle.as_str()),
                        ("metric", metric.as_str()),
                        ("scope", scope),
                    ],
                    value,
                );
            }
        }
    }
    e.family(
        "gantry_node_model_quality_rows",
        Kind::Gauge,
        "Feedback rows joined with predictions behind gantry_node_model_quality.",
    );
    for (m, q) in &scored {
        for (scope, metrics) in scopes(q) {
            e.sample(
                "gantry_node_model_quality_rows",
                &[
                    ("model", m.name.as_str()),
                    ("bundle", m.bundle.as_str()),
                    ("scope", scope),
                ],
                metrics.rows as f64,
            );
        }
    }
}

/// The node's health as its heartbeat reported it: 1 for the current state, 0 for the
/// others (as the agent's own `gantry_agent_health`).
fn render_health(e: &mut Exposition, health: &gantry_shared::health::Health) {
    e.family(
        "gantry_node_health",
        Kind::Gauge,
        "The node's health from its latest heartbeat: 1 for its current state, 0 for the others.",
    );
    for state in [
        HealthState::Healthy,
        HealthState::Degraded,
        HealthState::Unhealthy,
    ] {
        e.sample(
            "gantry_node_health",
            &[("state", state.as_str())],
            if health.state == state { 1.0 } else { 0.0 },
        );
    }
}

/// Each served model's serving figures from the node's heartbeat: its share of failed
/// requests among the latest, their 99th-percentile latency and its golden run.
fn render_serving(e: &mut Exposition, models: &[gantry_shared::protocol::heartbeat::ModelReport]) {
    if models.is_empty() {
        return;
    }
    let name = |m: &gantry_shared::protocol::heartbeat::ModelReport| {
        if m.name.is_empty() {
            "default".to_owned()
        } else {
            m.name.clone()
        }
    };
    e.family(
        "gantry_node_model_info",
        Kind::Gauge,
        "A model the node serves: 1, labelled with its bundle and execution provider.",
    );
    for m in models {
        e.sample(
            "gantry_node_model_info",
            &[
                ("model", name(m).as_str()),
                ("bundle", m.bundle.as_str()),
                ("provider", m.execution_provider.as_str()),
            ],
            1.0,
        );
    }
    let figures: [(&str, &str, ModelFigure); 4] = [
        (
            "gantry_node_model_recent_requests",
            "How many of the model's latest requests the error ratio and latency are over.",
            |m| Some(m.recent_requests as f64),
        ),
        (
            "gantry_node_model_error_ratio",
            "Failed share of the model's latest requests on the node.",
            |m| Some(m.recent_error_rate),
        ),
        (
            "gantry_node_model_latency_p99_seconds",
            "99th-percentile latency of the model's latest successful requests on the node.",
            |m| m.latency_p99_s,
        ),
        (
            "gantry_node_model_golden_ok",
            "Whether the model's latest golden-vector run on the node matched (1) or not (0).",
            |m| m.golden_ok.map(|ok| if ok { 1.0 } else { 0.0 }),
        ),
    ];
    for (family, help, value) in figures {
        let values: Vec<(String, &str, f64)> = models
            .iter()
            .filter_map(|m| Some((name(m), m.bundle.as_str(), value(m)?)))
            .collect();
        if values.is_empty() {
            continue;
        }
        e.family(family, Kind::Gauge, help);
        for (model, bundle, v) in values {
            e.sample(family, &[("model", model.as_str()), ("bundle", bundle)], v);
        }
    }
}

/// One per-model gauge's value, when the model's report has one.
type ModelFigure = fn(&gantry_shared::protocol::heartbeat::ModelReport) -> Option<f64>;

/// One per-rollout gauge's value, when the rollout has one.
type RolloutFigure = fn(&crate::rollouts::Summary) -> Option<f64>;

/// Rollouts kept on `/metrics` besides the active ones: the newest finished.
const RECENT_ROLLOUTS: usize = 50;

/// Rollouts: how many are in each state, and per rollout (the active ones and the
/// newest finished) its state, progress and the times it started, failed and finished.
fn render_rollouts(
    e: &mut Exposition,
    counts: &std::collections::BTreeMap<RolloutState, u64>,
    rollouts: &[crate::rollouts::Summary],
) {
    e.family(
        "gantry_rollouts",
        Kind::Gauge,
        "Rollouts the controller holds, by state.",
    );
    for state in RolloutState::ALL {
        e.sample(
            "gantry_rollouts",
            &[("state", state.as_str())],
            counts.get(&state).copied().unwrap_or(0) as f64,
        );
    }
    if rollouts.is_empty() {
        return;
    }
    e.family(
        "gantry_rollout_state",
        Kind::Gauge,
        "A rollout (every active one and the newest finished): 1, labelled with its model, version and current state.",
    );
    for r in rollouts {
        e.sample(
            "gantry_rollout_state",
            &[
                ("rollout", r.id.as_str()),
                ("model", r.model.as_str()),
                ("version", r.version.as_str()),
                ("state", r.state.as_str()),
            ],
            1.0,
        );
    }
    let per_rollout: [(&str, &str, RolloutFigure); 6] = [
        (
            "gantry_rollout_step",
            "The rollout's current step, from 1.",
            |r| Some(r.step as f64),
        ),
        (
            "gantry_rollout_steps",
            "How many steps the rollout has.",
            |r| Some(r.steps as f64),
        ),
        (
            "gantry_rollout_nodes_touched",
            "Nodes the rollout has assigned its bundle to.",
            |r| Some(r.touched as f64),
        ),
        (
            "gantry_rollout_started_timestamp_seconds",
            "When the rollout was started.",
            |r| Some(r.created_at_ms as f64 / 1000.0),
        ),
        (
            "gantry_rollout_failed_timestamp_seconds",
            "When a gate failed the rollout (only for rollouts that failed).",
            |r| r.failed_at_ms.map(|t| t as f64 / 1000.0),
        ),
        (
            "gantry_rollout_finished_timestamp_seconds",
            "When the rollout finished (succeeded, aborted or rolled back).",
            |r| r.finished_at_ms.map(|t| t as f64 / 1000.0),
        ),
    ];
    for (name, help, value) in per_rollout {
        let values: Vec<(&str, f64)> = rollouts
            .iter()
            .filter_map(|r| Some((r.id.as_str(), value(r)?)))
            .collect();
        if values.is_empty() {
            continue;
        }
        e.family(name, Kind::Gauge, help);
        for (id, v) in values {
            e.sample(name, &[("rollout", id)], v);
        }
    }
}

/// A telemetry export's own figures, under `gantry_controller_{prefix}_`.
fn render_export(e: &mut Exposition, prefix: &str, what: &str, c: &crate::export::Counters) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
    let name = |suffix: &str| format!("gantry_controller_{prefix}_{suffix}");
    e.single(
        &name("samples_total"),
        Kind::Counter,
        &format!("Samples the {what} receiver accepted."),
        load(&c.samples),
    );
    e.single(
        &name("records_total"),
        Kind::Counter,
        &format!("Telemetry records delivered by {what}."),
        load(&c.records),
    );
    e.single(
        &name("bytes_total"),
        Kind::Counter,
        "Compressed bytes of the requests the receiver accepted.",
        load(&c.bytes),
    );
    let requests = name("requests_total");
    e.family(
        &requests,
        Kind::Counter,
        &format!("{what} requests, by outcome: ok, or failed (retried, or refused for good)."),
    );
    e.sample(&requests, &[("outcome", "ok")], load(&c.requests_ok));
    e.sample(
        &requests,
        &[("outcome", "failed")],
        load(&c.requests_failed),
    );
    e.single(
        &name("refused_records_total"),
        Kind::Counter,
        "Records the receiver refused for good (a 4xx answer), passed over.",
        load(&c.records_refused),
    );
    e.single(
        &name("rejected_samples_total"),
        Kind::Counter,
        "Samples of accepted requests the receiver said it rejected (a partial success), passed over.",
        load(&c.samples_rejected),
    );
    e.single(
        &name("expired_records_total"),
        Kind::Counter,
        "Records retention deleted before they were delivered (the receiver failed for longer than the retention).",
        load(&c.records_expired),
    );
    e.single(
        &name("last_success_timestamp_seconds"),
        Kind::Gauge,
        "When the receiver last accepted a request (0 before the first).",
        load(&c.last_success_ms) / 1000.0,
    );
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut pages = Vec::new();
    let (connected, known) = {
        let live = shared.live.lock().expect("live map");
        for (name, entry) in live.iter() {
            if let Some(sample) = &entry.latest {
                let mut e = Exposition::new(vec![("node".to_owned(), name.clone())]);
                exposition::render_gpus(&mut e, sample, ModelLabel::Dcgm);
                exposition::render_host(&mut e, sample);
                e.single(
                    "gantry_node_connected",
                    Kind::Gauge,
                    "Whether the node is connected now.",
                    if entry.connections.is_empty() {
                        0.0
                    } else {
                        1.0
                    },
                );
                e.single(
                    "gantry_node_last_sample_timestamp_seconds",
                    Kind::Gauge,
                    "When the node's latest stored sample was taken.",
                    sample.taken_at_ms as f64 / 1000.0,
                );
                if let Some(h) = &entry.heartbeat {
                    if let Some(health) = &h.health {
                        render_health(&mut e, health);
                    }
                    render_serving(&mut e, &h.models);
                    render_drift(&mut e, &h.models);
                    render_quality(&mut e, &h.models);
                }
                pages.push(e.into_string());
            }
        }
        (
            live.values().filter(|l| !l.connections.is_empty()).count(),
            live.len(),
        )
    };
    let c = &shared.counters;
    let mut e = Exposition::default();
    let (counts, rollouts) = shared.rollouts.summaries(RECENT_ROLLOUTS);
    render_rollouts(&mut e, &counts, &rollouts);
    e.single(
        "gantry_controller_records_stored_total",
        Kind::Counter,
        "Telemetry records stored.",
        c.stored.load(Ordering::Relaxed) as f64,
    );
    e.single(
        "gantry_controller_records_duplicate_total",
        Kind::Counter,
        "Telemetry records received again and not stored twice.",
        c.duplicates.load(Ordering::Relaxed) as f64,
    );
    e.single(
        "gantry_controller_batches_total",
        Kind::Counter,
        "Telemetry batches stored.",
        c.batches.load(Ordering::Relaxed) as f64,
    );
    e.single(
        "gantry_controller_rejected_streams_total",
        Kind::Counter,
        "Streams refused for a malformed frame or request.",
        c.rejected_streams.load(Ordering::Relaxed) as f64,
    );
    e.single(
        "gantry_controller_connected_nodes",
        Kind::Gauge,
        "Nodes connected now.",
        connected as f64,
    );
    e.single(
        "gantry_controller_known_nodes",
        Kind::Gauge,
        "Nodes with live state since the controller started.",
        known as f64,
    );
    if let Some(counters) = &shared.remote_write {
        render_export(&mut e, "remote_write", "remote-write", counters);
    }
    if let Some(counters) = &shared.otlp {
        render_export(&mut e, "otlp", "OTLP", counters);
    }
    pages.push(e.into_string());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition::merge(&pages),
    )
}
