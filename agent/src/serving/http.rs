//! The Open Inference Protocol over HTTP/REST, as Triton and `KServe` speak it.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v2` | server metadata and the extensions served |
//! | `GET /v2/health/live`, `/v2/health/ready` | liveness; readiness (a model is loaded) |
//! | `GET /v2/models/{m}[/versions/{v}]` | model metadata |
//! | `GET …/ready` | model readiness |
//! | `GET …/config` | the model's configuration in Triton's shape |
//! | `GET …/stats`, `GET /v2/models/stats` | Triton's statistics extension |
//! | `POST …/infer` | inference, JSON or with binary tensor data |
//! | `POST …/feedback` | ground truth for earlier requests by their `id` (`{"id", "label"}` or `{"feedback": [...]}`) |
//! | `POST /v2/repository/index` | the models served, with their state |
//!
//! Every error status carries the protocol's `{"error": "…"}` body: 400 for a bad
//! request, 404 for an unknown model, version or route, 405 for a wrong method, 413 for
//! an oversized body, 501 for what this endpoint does not do (shared memory, loading
//! models by hand), 503 while nothing is loaded, 500 when the model fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gantry_shared::bundle::manifest::{DType, TensorSpec};
use gantry_shared::tensor::datatype_name;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Loaded, MAX_BODY, Models, Slot};
use gantry_shared::oip::{self as protocol, ApiError, ErrorKind};

/// The header that gives the JSON part's length when binary tensor data follows.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// Extensions served in full (Triton's names).
pub(super) const EXTENSIONS: [&str; 3] =
    ["binary_tensor_data", "model_configuration", "statistics"];

/// Why models cannot be loaded or unloaded through the endpoint.
pub(super) const BY_HAND: &str = "models are loaded from signed bundles, never by hand: assign a bundle with `gantry bundle assign`, or import one with `gantry-agent import`";

/// The protocol's error body, `{"error": "…"}`, with the status of its kind.
fn reply(e: ApiError) -> Response {
    let ApiError { kind, message } = e;
    let status = match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
    };
    let body = Value::Object(
        [("error".to_owned(), Value::String(message))]
            .into_iter()
            .collect(),
    );
    (status, axum::Json(body)).into_response()
}

/// Serves the inference endpoint on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    models: Arc<Models>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Small answers leave at once, not after the client's delayed acknowledgement.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on an inference connection");
        }
    });
    axum::serve(listener, router(models))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

fn router(models: Arc<Models>) -> Router {
    let model = |tail: &str| {
        [
            format!("/v2/models/{{name}}{tail}"),
            format!("/v2/models/{{name}}/versions/{{version}}{tail}"),
        ]
    };
    let mut router = Router::new()
        .route("/v2", get(server_metadata))
        .route(
            "/v2/health/live",
            get(|| async { axum::Json(json!({ "live": true })) }),
        )
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/repository/index", post(repository_index))
        .route(
            "/v2/repository/models/{name}/{action}",
            post(|| async { reply(ApiError::new(ErrorKind::Unsupported, BY_HAND)) }),
        );
    for path in model("") {
        router = router.route(&path, get(metadata));
    }
    for path in model("/ready") {
        router = router.route(&path, get(model_ready));
    }
    for path in model("/config") {
        router = router.route(&path, get(config));
    }
    for path in model("/stats") {
        router = router.route(&path, get(model_stats));
    }
    for path in model("/infer") {
        router = router.route(&path, post(infer));
    }
    for path in model("/feedback") {
        router = router.route(&path, post(feedback));
    }
    router
        .fallback(|| async { reply(ApiError::new(ErrorKind::NotFound, "no such route")) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(json!({ "error": "this route does not take that method" })),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(models)
}

type Params = UrlPath<HashMap<String, String>>;

/// The served model the path names (and its version, when the path gives one).
fn named(
    models: &Models,
    params: &HashMap<String, String>,
) -> Result<(Arc<Slot>, Arc<Loaded>), ApiError> {
    models.find(
        params.get("name").map_or("", String::as_str),
        params.get("version").map(String::as_str),
    )
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": "gantry-agent",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
    .into_response()
}

async fn ready(State(models): State<Arc<Models>>) -> Response {
    if models.any() {
        axum::Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false })),
        )
            .into_response()
    }
}

async fn model_ready(State(models): State<Arc<Models>>, UrlPath(params): Params) -> Response {
    match named(&models, &params) {
        Ok((_, loaded)) => {
            axum::Json(json!({ "name": loaded.name, "ready": true })).into_response()
        }
        Err(e) => reply(e),
    }
}

async fn metadata(State(models): State<Arc<Models>>, UrlPath(params): Params) -> Response {
    let loaded = match named(&models, &params) {
        Ok((_, loaded)) => loaded,
        Err(e) => return reply(e),
    };
    let describe = |specs: &[TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| json!({ "name": s.name, "datatype": datatype_name(s.dtype), "shape": protocol::protocol_shape(&s.shape) }))
            .collect()
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

/// Triton's `data_type` names.
pub(super) fn triton_type(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "TYPE_BOOL",
        DType::Uint8 => "TYPE_UINT8",
        DType::Uint16 => "TYPE_UINT16",
        DType::Uint32 => "TYPE_UINT32",
        DType::Uint64 => "TYPE_UINT64",
        DType::Int8 => "TYPE_INT8",
        DType::Int16 => "TYPE_INT16",
        DType::Int32 => "TYPE_INT32",
        DType::Int64 => "TYPE_INT64",
        DType::Float16 => "TYPE_FP16",
        DType::Float32 => "TYPE_FP32",
        DType::Float64 => "TYPE_FP64",
        DType::Bfloat16 => "TYPE_BF16",
        DType::String => "TYPE_STRING",
    }
}

/// The model's configuration as Triton's `model_config.proto` writes it in JSON.
pub(super) fn config_json(loaded: &Loaded) -> Value {
    // A batching model's dims leave out the batch dimension, as Triton writes them.
    let skip = usize::from(loaded.batching.is_some());
    let tensors = |specs: &[TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| json!({ "name": s.name, "data_type": triton_type(s.dtype), "dims": protocol::protocol_shape(&s.shape[skip..]) }))
            .collect()
    };
    let kind = match loaded.placement.provider {
        gantry_shared::bundle::manifest::ExecutionProvider::Cuda => "KIND_GPU",
        gantry_shared::bundle::manifest::ExecutionProvider::Cpu => "KIND_CPU",
    };
    let threads = loaded.execution.threads;
    let mut parameters = serde_json::Map::new();
    for (key, n) in [
        ("intra_op_thread_count", threads.intra_op),
        ("inter_op_thread_count", threads.inter_op),
    ] {
        if n > 0 {
            parameters.insert(key.to_owned(), json!({ "string_value": n.to_string() }));
        }
    }
    let mut config = json!({
        "name": loaded.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "version_policy": { "latest": { "num_versions": 1 } },
        "max_batch_size": loaded.batching.as_ref().map_or(0, |b| b.max_batch_size),
        "input": tensors(&loaded.inputs),
        "output": tensors(&loaded.outputs),
        "instance_group": [{
            "name": loaded.name,
            "kind": kind,
            "count": loaded.execution.instances,
        }],
        "parameters": parameters,
    });
    if let Some(b) = &loaded.batching {
        config["dynamic_batching"] = json!({
            "preferred_batch_size": b.preferred_batch_sizes,
            "max_queue_delay_microseconds": b.max_queue_delay_us,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": b.queue_timeout_us,
                "max_queue_size": b.max_queue_size,
            },
        });
    }
    config
}

async fn config(State(models): State<Arc<Models>>, UrlPath(params): Params) -> Response {
    match named(&models, &params) {
        Ok((_, loaded)) => axum::Json(config_json(&loaded)).into_response(),
        Err(e) => reply(e),
    }
}

/// One model's entry of Triton's statistics.
fn stats_json(slot: &Slot, loaded: &Loaded) -> Value {
    let s = slot.stats();
    json!({
        "name": loaded.name,
        "version": loaded.version,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": s.inference,
        "batch_stats": s.batches.values().collect::<Vec<_>>(),
        "memory_usage": [],
    })
}

async fn model_stats(State(models): State<Arc<Models>>, UrlPath(params): Params) -> Response {
    match named(&models, &params) {
        Ok((slot, loaded)) => {
            axum::Json(json!({ "model_stats": [stats_json(&slot, &loaded)] })).into_response()
        }
        Err(e) => reply(e),
    }
}

async fn all_stats(State(models): State<Arc<Models>>) -> Response {
    let stats: Vec<Value> = models
        .all()
        .iter()
        .filter_map(|slot| slot.get().map(|loaded| stats_json(slot, &loaded)))
        .collect();
    axum::Json(json!({ "model_stats": stats })).into_response()
}

async fn repository_index(
    State(models): State<Arc<Models>>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let ready_only = match body {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => false,
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => v.get("ready").and_then(Value::as_bool).unwrap_or(false),
            Err(e) => {
                return reply(ApiError::bad(format!("the index request is not JSON: {e}")));
            }
        },
        Err(e) => return reply(body_error(&e)),
    };
    axum::Json(models.index(ready_only)).into_response()
}

fn body_error(e: &BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorKind::BadRequest,
            format!("the request body is larger than {} MiB", MAX_BODY >> 20),
        )
    } else {
        ApiError::bad(format!("cannot read the request body: {e}"))
    }
}

async fn infer(
    State(models): State<Arc<Models>>,
    UrlPath(params): Params,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let too_large = matches!(&body, Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE);
    let (slot, loaded) = match named(&models, &params) {
        Ok(found) => found,
        Err(e) => return reply(e),
    };
    let request = match decode(&headers, body) {
        Ok(request) => request,
        Err(e) => {
            // The client's mistake: the model never ran.
            slot.reject();
            let mut response = reply(e);
            if too_large {
                *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
            }
            return response;
        }
    };
    let id = request.id.clone();
    let chosen = match slot.run(&loaded, request, started).await {
        Ok(chosen) => chosen,
        Err(e) => return reply(e),
    };
    match protocol::encode_http((&loaded.name, &loaded.version), id.as_deref(), &chosen) {
        Ok((body, header_length)) => {
            let mut response = Response::new(axum::body::Body::from(body));
            let content_type = match header_length {
                Some(n) => {
                    response
                        .headers_mut()
                        .insert(HEADER_LENGTH, HeaderValue::from(n));
                    "application/octet-stream"
                }
                None => "application/json",
            };
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Err(e) => reply(e),
    }
}

/// Joins ground truth with the predictions kept for the model's earlier requests, and
/// says what became of each item.
async fn feedback(
    State(models): State<Arc<Models>>,
    UrlPath(params): Params,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Response {
    let loaded = match named(&models, &params) {
        Ok((_, loaded)) => loaded,
        Err(e) => return reply(e),
    };
    let Some(quality) = &loaded.quality else {
        let (kind, why) = if models.feedback().is_none() {
            (
                ErrorKind::Unavailable,
                "the prediction store could not be opened (see the agent's log)",
            )
        } else {
            (
                ErrorKind::BadRequest,
                "its bundle does not say what it predicts (gantry bundle create --task)",
            )
        };
        return reply(ApiError::new(
            kind,
            format!(
                "model {:?} keeps no predictions for feedback: {why}",
                loaded.name
            ),
        ));
    };
    let body = match body {
        Ok(body) => body,
        Err(e) => return reply(body_error(&e)),
    };
    let items = match gantry_shared::monitoring::quality::parse_feedback(&body) {
        Ok(items) => items,
        Err(e) => return reply(ApiError::bad(e.to_string())),
    };
    let ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    match quality.feedback.feedback(&loaded.name, items).await {
        Ok(outcomes) => {
            let mut counts: std::collections::BTreeMap<&str, u64> =
                ["joined", "late", "duplicate", "unknown", "invalid"]
                    .into_iter()
                    .map(|k| (k, 0))
                    .collect();
            let results: Vec<Value> = ids
                .iter()
                .zip(&outcomes)
                .map(|(id, outcome)| {
                    let mut v = serde_json::to_value(outcome).expect("outcomes serialize");
                    if let Some(kind) = v.get("outcome").and_then(Value::as_str)
                        && let Some(n) = counts.get_mut(kind)
                    {
                        *n += 1;
                    }
                    v["id"] = json!(id);
                    v
                })
                .collect();
            let mut answer = json!({ "model_name": loaded.name, "results": results });
            for (kind, n) in counts {
                answer[kind] = json!(n);
            }
            axum::Json(answer).into_response()
        }
        Err(e) => reply(ApiError::new(ErrorKind::Unavailable, e.to_string())),
    }
}

/// The request in an HTTP body: JSON, or JSON then binary tensor data.
fn decode(
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<protocol::Request, ApiError> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"identity"
    {
        return Err(ApiError::new(
            ErrorKind::Unsupported,
            format!("Content-Encoding {encoding:?} is not accepted; send the body uncompressed"),
        ));
    }
    let header_length = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "Inference-Header-Content-Length {v:?} is not a byte count"
                    ))
                })?,
        ),
    };
    let body = body.map_err(|e| body_error(&e))?;
    protocol::decode_http(&body, header_length)
}
