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
use gantry_shared::monitoring::quality::{Metrics, QualitySummary};
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
    pages.push(e.into_string());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        exposition::merge(&pages),
    )
}
