//! The local inference endpoint: the `KServe` v2 / Open Inference Protocol over HTTP/JSON,
//! serving the active bundle's model.
//!
//! Routes: `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2/models/{name}`,
//! `GET /v2/models/{name}/ready`, `POST /v2/models/{name}/infer`. Errors use the
//! protocol's shape, `{"error": "…"}`: 400 for a bad request (wrong shape, wrong
//! datatype, missing input), 404 for an unknown model, 413 for an oversized body, 503
//! while no model is loaded.
//!
//! The active model sits in a slot as an `Arc`: a request clones the `Arc` and runs on it
//! to the end, so switching bundles (the store's `current.json` changes) never fails a
//! request in flight — it finishes on the model it started with. Inference runs on
//! blocking threads, never on the async workers.
//!
//! This module sits above both `bundle` (the store it watches) and `inference` (the
//! runtime that loads and runs models); neither of those imports it.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_shared::bundle::manifest::{DType, Dim, Manifest, Tensor, TensorSpec, check_tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::bundle::store::BundleStore;
use crate::inference::Model;

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 << 20;
/// How often the store's active bundle is checked.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// A loaded model and the bundle it came from.
#[derive(Debug)]
pub struct Loaded {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub placement: crate::inference::Placement,
    golden: Vec<gantry_shared::bundle::manifest::GoldenVector>,
    model: Mutex<Model>,
}

/// The active model, swappable, and what serving it has shown.
#[derive(Debug, Default)]
pub struct Slot {
    active: RwLock<Option<Arc<Loaded>>>,
    stats: Mutex<Stats>,
}

/// Requests kept for the error rate and latency percentiles.
const RECENT: usize = 1024;

#[derive(Debug, Default)]
struct Stats {
    ok: u64,
    failed: u64,
    rejected: u64,
    /// (succeeded, seconds) of the latest requests.
    recent: std::collections::VecDeque<(bool, f64)>,
    golden: Option<Result<(), GoldenFailure>>,
}

/// What the latest requests show.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Recent {
    error_rate: f64,
    requests: usize,
    p50: Option<f64>,
    p99: Option<f64>,
}

impl Stats {
    /// One request served (`ok`) or failed, in `seconds`; the window keeps [`RECENT`].
    fn record(&mut self, ok: bool, seconds: f64) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((ok, seconds));
    }

    /// The window's failed share and the latency percentiles of its successes.
    fn recent_figures(&self) -> Recent {
        let mut latencies: Vec<f64> = self.recent.iter().filter(|r| r.0).map(|r| r.1).collect();
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| -> Option<f64> {
            let last = latencies.len().checked_sub(1)?;
            Some(latencies[((last as f64) * q).round() as usize])
        };
        let failed = self.recent.iter().filter(|r| !r.0).count();
        Recent {
            error_rate: if self.recent.is_empty() {
                0.0
            } else {
                failed as f64 / self.recent.len() as f64
            },
            requests: self.recent.len(),
            p50: quantile(0.5),
            p99: quantile(0.99),
        }
    }
}

/// The served model's health figures, for checks and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelHealth {
    pub model: String,
    /// The bundle digest (hex) it came from.
    pub bundle: String,
    pub execution_provider: &'static str,
    /// Providers the bundle preferred that were passed over, with why.
    pub passed_over: Vec<String>,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub requests_rejected: u64,
    /// Failed share of the latest requests, and how many that is over.
    pub recent_error_rate: f64,
    pub recent_requests: usize,
    pub latency_p50: Option<f64>,
    pub latency_p99: Option<f64>,
    /// The latest golden-vector run: `None` before the first.
    pub golden: Option<Result<(), GoldenFailure>>,
}

impl Slot {
    pub fn get(&self) -> Option<Arc<Loaded>> {
        self.active.read().expect("model slot").clone()
    }

    fn set(&self, loaded: Option<Arc<Loaded>>) {
        *self.active.write().expect("model slot") = loaded;
        *self.stats.lock().expect("model stats") = Stats::default();
    }

    fn record(&self, ok: bool, seconds: f64) {
        self.stats.lock().expect("model stats").record(ok, seconds);
    }

    fn reject(&self) {
        self.stats.lock().expect("model stats").rejected += 1;
    }

    fn set_golden(&self, result: Result<(), GoldenFailure>) {
        self.stats.lock().expect("model stats").golden = Some(result);
    }

    /// The served model's figures; `None` when no model is loaded.
    pub fn health(&self) -> Option<ModelHealth> {
        let loaded = self.get()?;
        let s = self.stats.lock().expect("model stats");
        let recent = s.recent_figures();
        Some(ModelHealth {
            model: format!("{} {}", loaded.name, loaded.version),
            bundle: loaded.digest.clone(),
            execution_provider: crate::inference::provider_name(loaded.placement.provider),
            passed_over: loaded.placement.passed_over.clone(),
            requests_ok: s.ok,
            requests_failed: s.failed,
            requests_rejected: s.rejected,
            recent_error_rate: recent.error_rate,
            recent_requests: recent.requests,
            latency_p50: recent.p50,
            latency_p99: recent.p99,
            golden: s.golden.clone(),
        })
    }
}

/// The first golden vector that failed on the serving model, as health and status
/// report it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GoldenFailure {
    /// The vector could not run (its inputs were refused, the run failed).
    #[error("golden vector {vector}: {message}")]
    Error { vector: String, message: String },
    #[error("golden vector {vector}: output {output:?} element {index} is {got}, expected {want}")]
    Mismatch {
        vector: String,
        output: String,
        index: usize,
        got: f64,
        want: f64,
    },
}

/// Runs the loaded model's golden vectors; `Err` names the first failure.
fn run_golden(loaded: &Loaded) -> Result<(), GoldenFailure> {
    let results =
        crate::inference::check_golden(&mut loaded.model.lock().expect("model"), &loaded.golden);
    match results.into_iter().find(|r| !r.passed) {
        None => Ok(()),
        Some(r) => Err(match (r.error, r.first_mismatch) {
            (Some(message), _) => GoldenFailure::Error {
                vector: r.name,
                message,
            },
            (None, Some((output, index, got, want))) => GoldenFailure::Mismatch {
                vector: r.name,
                output,
                index,
                got,
                want,
            },
            (None, None) => GoldenFailure::Error {
                vector: r.name,
                message: "failed".to_owned(),
            },
        }),
    }
}

/// Why the active bundle's model could not be loaded.
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("cannot read the active bundle's manifest")]
    Manifest(#[source] crate::bundle::store::StoreError),
    #[error(transparent)]
    Model(#[from] crate::inference::InferenceError),
}

/// `KServe` datatype names.
fn datatype(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "BOOL",
        DType::Uint8 => "UINT8",
        DType::Uint16 => "UINT16",
        DType::Uint32 => "UINT32",
        DType::Uint64 => "UINT64",
        DType::Int8 => "INT8",
        DType::Int16 => "INT16",
        DType::Int32 => "INT32",
        DType::Int64 => "INT64",
        DType::Float16 => "FP16",
        DType::Float32 => "FP32",
        DType::Float64 => "FP64",
        DType::Bfloat16 => "BF16",
        DType::String => "BYTES",
    }
}

fn shape_json(shape: &[Dim]) -> Vec<i64> {
    shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => i64::try_from(*n).unwrap_or(i64::MAX),
            Dim::Named(_) => -1,
        })
        .collect()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

#[derive(Debug, Deserialize)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    inputs: Vec<InferInput>,
}

#[derive(Debug, Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    data: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct InferOutput {
    name: String,
    shape: Vec<u64>,
    datatype: &'static str,
    data: Vec<f64>,
}

/// Loads the store's active bundle into `slot` whenever it changes, until `shutdown`.
pub async fn watch_store(
    store: BundleStore,
    slot: Arc<Slot>,
    snapshots: crate::telemetry::SnapshotReceiver,
    golden_every: Duration,
    shutdown: CancellationToken,
) {
    // Place the first model knowing the GPUs: the first sample comes within moments of
    // starting (without NVML it says so, and the model goes to the CPU).
    let mut first = snapshots.clone();
    let _ = tokio::time::timeout(Duration::from_secs(5), first.wait_for(Option::is_some)).await;
    let mut loaded_digest: Option<String> = None;
    let mut next_golden = tokio::time::Instant::now();
    loop {
        let reading = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.current()).await
        };
        let active = match reading {
            Ok(Ok(current)) => current.active,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the active bundle");
                loaded_digest.clone()
            }
            Err(e) => {
                tracing::warn!(error = %e, "the task reading the active bundle failed");
                loaded_digest.clone()
            }
        };
        if active != loaded_digest {
            match active.clone() {
                None => slot.set(None),
                Some(digest) => {
                    let store = store.clone();
                    let d = digest.clone();
                    let hardware = crate::inference::Hardware::from_snapshots(&snapshots);
                    let result =
                        tokio::task::spawn_blocking(move || -> Result<Loaded, LoadError> {
                            let manifest: Manifest =
                                store.manifest(&d).map_err(LoadError::Manifest)?;
                            let path = store
                                .bundle_dir(&d)
                                .join("files")
                                .join(&manifest.model.entry);
                            let model = Model::load(
                                &path,
                                &manifest.model,
                                &manifest.requirements,
                                hardware,
                            )?;
                            Ok(Loaded {
                                name: manifest.name,
                                version: manifest.version,
                                digest: d,
                                inputs: manifest.model.inputs,
                                outputs: manifest.model.outputs,
                                placement: model.placement().clone(),
                                golden: manifest.golden,
                                model: Mutex::new(model),
                            })
                        })
                        .await;
                    match result {
                        Ok(Ok(loaded)) => {
                            let provider =
                                crate::inference::provider_name(loaded.placement.provider);
                            let passed_over = loaded.placement.passed_over.join("; ");
                            if loaded.placement.passed_over.is_empty() || !loaded.placement.listed {
                                tracing::info!(bundle = %loaded.digest, model = %loaded.name, version = %loaded.version, provider, passed_over, "model loaded and serving");
                            } else {
                                tracing::warn!(bundle = %loaded.digest, model = %loaded.name, version = %loaded.version, provider, passed_over, "model loaded and serving, not on the provider the bundle prefers");
                            }
                            slot.set(Some(Arc::new(loaded)));
                            next_golden = tokio::time::Instant::now();
                        }
                        Ok(Err(e)) => {
                            tracing::error!(bundle = %digest, error = gantry_shared::bundle::outcome::error_chain(&e), "cannot load the active bundle's model; the previous model keeps serving");
                        }
                        Err(e) => tracing::error!(error = %e, "model loading task failed"),
                    }
                }
            }
            loaded_digest = active;
        }
        if let Some(loaded) = slot
            .get()
            .filter(|_| tokio::time::Instant::now() >= next_golden)
        {
            next_golden = tokio::time::Instant::now() + golden_every;
            let checked = Arc::clone(&loaded);
            match tokio::task::spawn_blocking(move || run_golden(&checked)).await {
                Ok(Ok(())) => slot.set_golden(Ok(())),
                Ok(Err(e)) => {
                    tracing::error!(model = %loaded.name, version = %loaded.version, error = %e, "the served model fails its golden vectors");
                    slot.set_golden(Err(e));
                }
                Err(e) => tracing::error!(error = %e, "golden-vector task failed"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(WATCH_EVERY) => {}
        }
    }
}

/// Serves the inference endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    slot: Arc<Slot>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new()
        .route(
            "/v2/health/live",
            get(|| async { axum::Json(json!({ "live": true })) }),
        )
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(slot);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn ready(State(slot): State<Arc<Slot>>) -> Response {
    match slot.get() {
        Some(_) => axum::Json(json!({ "ready": true })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false })),
        )
            .into_response(),
    }
}

fn named(slot: &Slot, name: &str) -> Result<Arc<Loaded>, Box<Response>> {
    match slot.get() {
        Some(loaded) if loaded.name == name => Ok(loaded),
        Some(_) => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("unknown model {name:?}"),
        ))),
        None => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            format!("unknown model {name:?}: no model is loaded"),
        ))),
    }
}

async fn model_ready(State(slot): State<Arc<Slot>>, UrlPath(name): UrlPath<String>) -> Response {
    match named(&slot, &name) {
        Ok(_) => axum::Json(json!({ "name": name, "ready": true })).into_response(),
        Err(response) => *response,
    }
}

async fn metadata(State(slot): State<Arc<Slot>>, UrlPath(name): UrlPath<String>) -> Response {
    let loaded = match named(&slot, &name) {
        Ok(loaded) => loaded,
        Err(response) => return *response,
    };
    let describe = |specs: &[TensorSpec]| -> Vec<serde_json::Value> {
        specs.iter().map(|s| json!({ "name": s.name, "datatype": datatype(s.dtype), "shape": shape_json(&s.shape) })).collect()
    };
    axum::Json(json!({
        "name": loaded.name,
        "versions": [loaded.version],
        "platform": "onnxruntime_onnx",
        "inputs": describe(&loaded.inputs),
        "outputs": describe(&loaded.outputs),
    }))
    .into_response()
}

async fn infer(
    State(slot): State<Arc<Slot>>,
    name: UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let response = infer_request(&slot, name, body).await;
    // 400 is the client's mistake (shape, datatype, JSON); the model never ran.
    if response.status() == StatusCode::BAD_REQUEST {
        slot.reject();
    }
    response
}

async fn infer_request(
    slot: &Arc<Slot>,
    UrlPath(name): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let loaded = match named(slot, &name) {
        Ok(loaded) => loaded,
        Err(response) => return *response,
    };
    let request: InferRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the request is not a valid inference request: {e}"),
            );
        }
    };
    let mut inputs = BTreeMap::new();
    for input in request.inputs {
        let Some(spec) = loaded.inputs.iter().find(|s| s.name == input.name) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the model has no input {:?}", input.name),
            );
        };
        if input.datatype != datatype(spec.dtype) {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "input {:?}: datatype {} does not match the model's {}",
                    input.name,
                    input.datatype,
                    datatype(spec.dtype)
                ),
            );
        }
        let tensor = Tensor {
            dtype: spec.dtype,
            shape: input.shape,
            data: input.data,
        };
        if let Err(problem) = check_tensor(spec, &tensor) {
            return error(
                StatusCode::BAD_REQUEST,
                format!("input {:?}: {problem}", input.name),
            );
        }
        inputs.insert(input.name, tensor);
    }
    if let Some(missing) = loaded.inputs.iter().find(|s| !inputs.contains_key(&s.name)) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("input {:?} is missing", missing.name),
        );
    }
    let model = Arc::clone(&loaded);
    let started = std::time::Instant::now();
    let result =
        tokio::task::spawn_blocking(move || model.model.lock().expect("model").run(&inputs)).await;
    slot.record(matches!(result, Ok(Ok(_))), started.elapsed().as_secs_f64());
    match result {
        Ok(Ok(outputs)) => {
            let outputs: Vec<InferOutput> = outputs
                .into_iter()
                .map(|(name, t)| InferOutput {
                    name,
                    shape: t.shape,
                    datatype: datatype(t.dtype),
                    data: t.data,
                })
                .collect();
            axum::Json(json!({
                "model_name": loaded.name,
                "model_version": loaded.version,
                "id": request.id,
                "outputs": outputs,
            }))
            .into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the model failed: {e}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("inference task failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_latest_requests_and_failures_count_against_the_rate_only() {
        let mut stats = Stats::default();
        assert_eq!(
            stats.recent_figures(),
            Recent {
                error_rate: 0.0,
                requests: 0,
                p50: None,
                p99: None
            }
        );
        // 1 024 fast failures, then 1 000 successes of 1 ms to 1 000 ms.
        for _ in 0..RECENT {
            stats.record(false, 0.0001);
        }
        for ms in 1..=1000 {
            stats.record(true, f64::from(ms) / 1000.0);
        }
        let recent = stats.recent_figures();
        assert_eq!(recent.requests, RECENT, "the window is bounded");
        assert!(
            (recent.error_rate - 24.0 / 1024.0).abs() < 1e-12,
            "{recent:?}"
        );
        assert_eq!(recent.p50, Some(0.501), "failures never count as latencies");
        assert_eq!(recent.p99, Some(0.99));
        assert_eq!(
            (stats.ok, stats.failed),
            (1000, 1024),
            "totals keep counting"
        );
    }
}
