//! The agent's local HTTP endpoint: `GET /metrics` (Prometheus) and `GET /v1/status`
//! (JSON, read by `gantry-agent status`).
//!
//! Handlers only read the latest published snapshot; they never wait for a sample.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::{self, ProcessStats};
use crate::status::{AgentInfo, Links};
use crate::telemetry::SnapshotReceiver;

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone)]
struct ApiState {
    info: Arc<AgentInfo>,
    snapshots: SnapshotReceiver,
    links: Links,
}

/// Serves the endpoint on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    info: AgentInfo,
    snapshots: SnapshotReceiver,
    links: Links,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = ApiState {
        info: Arc::new(info),
        snapshots,
        links,
    };
    let router = Router::new()
        .route("/metrics", get(get_metrics))
        .route("/v1/status", get(get_status))
        .route("/v1/telemetry-export", get(get_export))
        .with_state(state);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn get_metrics(State(state): State<ApiState>) -> Response {
    let snapshot = state.snapshots.borrow().clone();
    let buffer = state.links.buffer.as_ref().map(|b| b.stats());
    let health = state
        .links
        .health
        .as_ref()
        .map(|h| h.lock().expect("health").clone());
    let models = state
        .links
        .models
        .as_ref()
        .map(|m| m.health())
        .unwrap_or_default();
    let uplink = state
        .links
        .uplink
        .as_ref()
        .map(|u| u.lock().expect("uplink status").clone());
    let body = metrics::render(
        snapshot.as_deref(),
        state.info.model_label,
        ProcessStats::read(),
        buffer.as_ref(),
        uplink.as_ref(),
        health.as_ref(),
        &models,
    );
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}

/// `GET /v1/telemetry-export?after_seq=N&max_records=M`: the signed export file
/// (`gantry-agent export-telemetry` asks the running agent, whose buffer it cannot open).
async fn get_export(
    State(state): State<ApiState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let param = |name: &str| {
        query.as_deref().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        })
    };
    let after_seq = param("after_seq").unwrap_or(0);
    let max_records = param("max_records").map_or(usize::MAX, |m| m as usize);
    let Some(buffer) = state.links.buffer.clone() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the buffer is not open").into_response();
    };
    let health = state
        .links
        .health
        .as_ref()
        .map(|h| h.lock().expect("health").clone());
    let state_dir = std::path::PathBuf::from(&state.info.state_dir);
    let built = tokio::task::spawn_blocking(move || {
        let identity = crate::identity::load(&state_dir).map_err(|e| e.to_string())?;
        crate::export::build(
            &buffer,
            identity.as_ref(),
            health,
            after_seq,
            max_records,
            gantry_net::clock::now_ms(),
        )
        .map_err(|e| gantry_shared::bundle::outcome::error_chain(&e))
    })
    .await;
    match built {
        Ok(Ok((bytes, _))) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(Err(message)) => (StatusCode::CONFLICT, message).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn get_status(State(state): State<ApiState>) -> Response {
    let status = crate::status::collect(&state.info, &state.snapshots, &state.links).await;
    match serde_json::to_vec(&status) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the status");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the status",
            )
                .into_response()
        }
    }
}
