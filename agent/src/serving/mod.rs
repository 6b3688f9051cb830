//! The local inference endpoint: the Open Inference Protocol (`KServe` v2, as Triton
//! speaks it) serving the active bundle's model. Requests and responses apart from their
//! transport (decoding, checking against the model, the binary tensor layout) are
//! `gantry_shared::oip`, where the fuzz targets reach them.
//!
//! - [`http`]: the REST routes, with Triton's extensions (binary tensor data, model
//!   configuration, statistics, repository index);
//! - [`watch`]: loads the store's active bundle into the [`Slot`] and runs its golden
//!   vectors again on a schedule;
//! - [`stats`]: the recent window health judges, and Triton's statistics.
//!
//! The active model sits in a slot as an `Arc`: a request clones the `Arc` and runs on it
//! to the end, so switching bundles never fails a request in flight — it finishes on the
//! model it started with. A model keeps several sessions (`instances`) and a request
//! waits, without holding a thread, for a free one; inference runs on blocking threads,
//! so a saturated model never delays health or readiness — except where the model's
//! latest run, on inputs no smaller, took under 100 µs: that takes less time in place
//! than the hand-off to another thread would.
//!
//! This module sits above both `bundle` (the store it watches) and `inference` (the
//! runtime that loads and runs models); neither of those imports it.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

mod batcher;
pub mod capture;
pub mod feedback;
mod grpc;
mod http;
pub mod monitor;
pub mod stats;
mod watch;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use gantry_shared::bundle::manifest::{Tensor, TensorSpec};
use gantry_shared::oip::{self, ApiError, Chosen, ErrorKind, Request};
use gantry_shared::tensor::TensorData;

pub use grpc::proto as grpc_proto;
pub use grpc::serve as serve_grpc;
pub use http::serve;
pub use watch::{WatchSettings, watch_store};

use crate::inference::{Execution, Golden, InferenceError, Model, Placement};
use stats::{Stats, Timing};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 << 20;

/// A loaded model and the bundle it came from.
#[derive(Debug)]
pub struct Loaded {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub placement: Placement,
    pub execution: Execution,
    /// Dynamic batching, when the bundle asks for it.
    pub batching: Option<gantry_shared::bundle::manifest::DynamicBatching>,
    golden: Vec<Golden>,
    pool: Pool,
    /// The queue of a batching model, started once it is shared.
    batcher: std::sync::OnceLock<batcher::Batcher>,
    /// Drift monitoring, when the bundle carries a reference profile.
    pub monitor: Option<monitor::ModelMonitor>,
    /// Predictions kept for feedback, when the bundle names what the model predicts.
    pub quality: Option<Quality>,
    /// Payload capture, when the node captures for this model.
    pub capture: Option<Arc<capture::Captures>>,
}

/// Where a served model's predictions are kept, and what they are.
#[derive(Debug)]
pub struct Quality {
    pub spec: gantry_shared::bundle::manifest::QualitySpec,
    pub feedback: Arc<feedback::Feedback>,
}

impl Loaded {
    /// Keeps the prediction in `outputs` for request `id`, when this model's are kept.
    fn keep_prediction(&self, id: Option<&str>, outputs: &[(String, Tensor)], captured: bool) {
        let (Some(q), Some(id)) = (&self.quality, id) else {
            return;
        };
        let Some((_, output)) = outputs.iter().find(|(name, _)| *name == q.spec.output) else {
            q.feedback
                .unreadable(&self.name, "the prediction output is missing");
            return;
        };
        match gantry_shared::monitoring::quality::Predicted::from_output(q.spec.task, output) {
            Ok(predicted) => q.feedback.keep(
                &self.name,
                id,
                feedback::Kept {
                    version: self.version.clone(),
                    bundle: format!("sha256:{}", self.digest),
                    at_ms: now_ms(),
                    predicted,
                    joined: false,
                    captured,
                },
            ),
            Err(e) => q.feedback.unreadable(&self.name, &e.to_string()),
        }
    }
}

/// A run this short goes on the async worker that took the request (see
/// [`Loaded::run_on_session`]); tokio's own guidance bounds a poll at 10–100 µs.
const INLINE_RUN: Duration = Duration::from_micros(100);

/// A model's sessions; a request takes a free one or waits for one.
#[derive(Debug)]
struct Pool {
    free: Arc<tokio::sync::Semaphore>,
    sessions: Vec<Mutex<Model>>,
    /// The input size ([`input_size`]) of the latest run when it took less than
    /// [`INLINE_RUN`], else 0: a request no larger than a quick run runs in place (a
    /// larger one, which may take longer on a model whose time grows with its input, is
    /// measured on a blocking thread first).
    quick_size: AtomicU64,
}

impl Pool {
    fn new(sessions: Vec<Model>) -> Self {
        Self {
            free: Arc::new(tokio::sync::Semaphore::new(sessions.len())),
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            quick_size: AtomicU64::new(0),
        }
    }

    /// A session not in use; called holding a permit, so one is free.
    fn any(&self) -> MutexGuard<'_, Model> {
        loop {
            for session in &self.sessions {
                if let Ok(guard) = session.try_lock() {
                    return guard;
                }
            }
            // Golden checks take a session without a permit: wait on the first.
            if let Ok(guard) = self.sessions[0].lock() {
                return guard;
            }
        }
    }
}

/// Why a request the model accepted did not produce outputs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the model failed: {0}")]
    Model(#[from] InferenceError),
    #[error("inference task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the model is shutting down or was replaced; send the request again")]
    Closed,
    #[error("the request holds {rows} rows; the model batches at most {max}")]
    TooManyRows { rows: u64, max: u64 },
    #[error("the model's queue is full ({limit} requests wait); try again shortly")]
    QueueFull { limit: usize },
    #[error("the request waited {waited:?} in the model's queue, longer than its timeout")]
    TimedOut { waited: Duration },
    #[error("the batched run failed: {0}")]
    Batch(String),
}

impl RunError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::TooManyRows { .. } => ErrorKind::BadRequest,
            Self::QueueFull { .. } | Self::TimedOut { .. } | Self::Closed => ErrorKind::Unavailable,
            Self::Model(_) | Self::Task(_) | Self::Batch(_) => ErrorKind::Internal,
        }
    }
}

impl Loaded {
    /// Runs `inputs` of `rows` rows: through the model's batch queue when it batches,
    /// else on a free session (waiting for one, off the async workers' backs). Outputs
    /// in the model's order, with where the time went.
    pub async fn infer(
        self: &Arc<Self>,
        inputs: Vec<(String, Tensor)>,
        rows: u64,
    ) -> Result<(Vec<(String, Tensor)>, Timing), RunError> {
        if let Some(batcher) = self.batcher.get() {
            return batcher.infer(inputs, rows).await;
        }
        let queued = Instant::now();
        let permit = Arc::clone(&self.pool.free)
            .acquire_owned()
            .await
            .map_err(|_| RunError::Closed)?;
        let queue = queued.elapsed();
        let (outputs, run) = self.run_on_session(inputs, permit).await?;
        Ok((
            outputs,
            Timing {
                queue,
                run,
                batch_size: rows,
                rows,
                executed: true,
            },
        ))
    }

    /// Runs `inputs` on the session `permit` reserves: on a blocking thread, or in
    /// place when this model's latest run, on inputs at least as large, was quicker than
    /// [`INLINE_RUN`] — then the hand-off to another thread and back (two wake-ups, tens
    /// of µs) would cost the request more than the run itself, and the async worker is
    /// held no longer than a poll may take.
    async fn run_on_session(
        self: &Arc<Self>,
        inputs: Vec<(String, Tensor)>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(Vec<(String, Tensor)>, crate::inference::RunTimes), RunError> {
        let size = input_size(&inputs);
        let in_place = size <= self.pool.quick_size.load(Ordering::Relaxed);
        let model = Arc::clone(self);
        let run = move || {
            let result = model.pool.any().run_timed(inputs);
            drop(permit);
            if let Ok((_, times)) = &result {
                let quick = if times.total() < INLINE_RUN { size } else { 0 };
                model.pool.quick_size.store(quick, Ordering::Relaxed);
            }
            result
        };
        let ran = if in_place {
            run()?
        } else {
            tokio::task::spawn_blocking(run).await??
        };
        Ok(ran)
    }
}

/// How much input a request carries, to compare with a quick run's: its elements, and
/// for `BYTES` tensors their bytes (one string may be a word or a book).
fn input_size(inputs: &[(String, Tensor)]) -> u64 {
    inputs
        .iter()
        .map(|(_, tensor)| match &tensor.data {
            TensorData::Bytes(items) => items.iter().map(|b| b.len() as u64 + 1).sum(),
            data => data.len() as u64,
        })
        .sum()
}

/// Every model the node serves, each in its own slot under its name: loading, swapping
/// or failing one never touches another.
#[derive(Debug, Default)]
pub struct Models {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// Models whose active bundle could not be loaded, with why.
    failures: RwLock<BTreeMap<String, String>>,
    /// The prediction store feedback is joined in.
    feedback: std::sync::OnceLock<Arc<feedback::Feedback>>,
    /// Payload capture, when any model is captured.
    capture: std::sync::OnceLock<Arc<capture::Captures>>,
}

impl Models {
    /// The slot of model `name`, while it serves.
    pub fn get(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.read().expect("models").get(name).cloned()
    }

    /// Every serving slot, by name.
    pub fn all(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .expect("models")
            .values()
            .cloned()
            .collect()
    }

    /// Joins feedback in `store` from now on.
    pub fn set_feedback(&self, store: Arc<feedback::Feedback>) {
        let _ = self.feedback.set(store);
    }

    /// The prediction store, once the daemon opened it.
    pub fn feedback(&self) -> Option<&Arc<feedback::Feedback>> {
        self.feedback.get()
    }

    /// Captures pairs in `captures` from now on.
    pub fn set_capture(&self, captures: Arc<capture::Captures>) {
        let _ = self.capture.set(captures);
    }

    /// Where pairs are captured, when any model is.
    pub fn capture(&self) -> Option<&Arc<capture::Captures>> {
        self.capture.get()
    }

    /// Whether any model serves.
    pub fn any(&self) -> bool {
        !self.slots.read().expect("models").is_empty()
    }

    /// Serves `loaded` under its name, in place of that model's earlier bundle.
    fn put(&self, loaded: Arc<Loaded>) {
        if let Some(settings) = loaded.batching.clone() {
            let _ = loaded
                .batcher
                .set(batcher::Batcher::start(&loaded, settings));
        }
        let name = loaded.name.clone();
        self.failures.write().expect("models").remove(&name);
        let existing = self.get(&name);
        if let Some(slot) = existing {
            slot.set(loaded);
        } else {
            let slot = Arc::new(Slot::default());
            slot.set(loaded);
            self.slots.write().expect("models").insert(name, slot);
        }
    }

    /// Stops serving model `name` (it has no active bundle any more).
    fn remove(&self, name: &str) {
        self.slots.write().expect("models").remove(name);
        self.failures.write().expect("models").remove(name);
    }

    /// Records that model `name`'s active bundle could not be loaded.
    fn failed(&self, name: &str, reason: String) {
        self.failures
            .write()
            .expect("models")
            .insert(name.to_owned(), reason);
    }

    /// Models whose active bundle could not be loaded, with why.
    pub fn failures(&self) -> BTreeMap<String, String> {
        self.failures.read().expect("models").clone()
    }

    /// Model `name`'s slot and the bundle loaded in it; `version`, when given, must be
    /// the one it serves.
    pub fn find(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<(Arc<Slot>, Arc<Loaded>), ApiError> {
        let unknown = || {
            let reason = self
                .failures()
                .get(name)
                .map(|why| format!(": its bundle could not be loaded: {why}"))
                .unwrap_or_default();
            ApiError::new(
                ErrorKind::NotFound,
                format!("unknown model {name:?}{reason}"),
            )
        };
        let slot = self.get(name).ok_or_else(unknown)?;
        let loaded = slot.get().ok_or_else(unknown)?;
        match version {
            Some(v) if !v.is_empty() && v != loaded.version => Err(ApiError::new(
                ErrorKind::NotFound,
                format!(
                    "model {name:?} has no version {v:?} loaded (it serves {:?})",
                    loaded.version
                ),
            )),
            _ => Ok((slot, loaded)),
        }
    }

    /// The repository index: every served model (`READY`), then, unless `ready_only`,
    /// every model whose bundle could not be loaded (`UNAVAILABLE`, with why).
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let mut index: Vec<IndexEntry> = self
            .all()
            .iter()
            .filter_map(|slot| slot.get())
            .map(|l| IndexEntry {
                name: l.name.clone(),
                version: l.version.clone(),
                state: "READY",
                reason: String::new(),
            })
            .collect();
        if !ready_only {
            for (name, reason) in self.failures() {
                if self.get(&name).is_none() {
                    index.push(IndexEntry {
                        name,
                        version: String::new(),
                        state: "UNAVAILABLE",
                        reason,
                    });
                }
            }
        }
        index
    }

    /// Every served model's figures, by name.
    pub fn health(&self) -> Vec<ModelHealth> {
        self.all().iter().filter_map(|slot| slot.health()).collect()
    }
}

/// One model of the repository index, as Triton names its states.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: &'static str,
    pub reason: String,
}

/// One model's active bundle, swappable, and what serving it has shown.
#[derive(Debug, Default)]
pub struct Slot {
    active: RwLock<Option<Arc<Loaded>>>,
    stats: Mutex<Stats>,
}

/// The served model's health figures, for checks and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelHealth {
    /// The model's name.
    pub name: String,
    /// Name and version, as status and health reasons write it.
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
    /// The latest drift window's verdict; `None` without monitoring or before the first.
    pub drift: Option<monitor::DriftVerdict>,
    /// The latest feedback window's figures; `None` before the first.
    pub quality: Option<gantry_shared::monitoring::quality::QualitySummary>,
    /// Predictions kept and feedback received since the agent started, when kept.
    pub feedback: Option<feedback::ModelCounters>,
    /// Payload capture, when the node captures for this model.
    pub capture: Option<capture::CaptureStatus>,
    /// Classification: the confusion matrix since the agent started, `(truth,
    /// predicted, rows)`.
    pub confusion: Vec<(i64, i64, u64)>,
}

impl Slot {
    pub fn get(&self) -> Option<Arc<Loaded>> {
        self.active.read().expect("model slot").clone()
    }

    /// Serves `loaded` from now on, with its statistics from zero.
    fn set(&self, loaded: Arc<Loaded>) {
        *self.active.write().expect("model slot") = Some(loaded);
        *self.stats.lock().expect("model stats") = Stats::default();
    }

    pub(in crate::serving) fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().expect("model stats")
    }

    pub(in crate::serving) fn reject(&self) {
        self.stats().rejected += 1;
    }

    /// Runs a decoded request on `loaded` (this slot's model, or the one it served when
    /// the request came): checks it against the model, runs it on a free session and
    /// counts it; returns the outputs to send, chosen as asked. A request the model
    /// never ran because it was wrong counts as rejected.
    pub async fn run(
        &self,
        loaded: &Arc<Loaded>,
        request: Request,
        started: Instant,
    ) -> Result<Vec<Chosen>, ApiError> {
        let id = request.id.clone();
        let checked = oip::check_requested(&loaded.outputs, &request.outputs)
            .and_then(|()| oip::model_inputs(&loaded.inputs, request.inputs));
        let (inputs, batch_size) = match checked {
            Ok(checked) => checked,
            Err(e) => {
                self.reject();
                return Err(e);
            }
        };
        if let Some(monitor) = &loaded.monitor {
            monitor.observe_inputs(&inputs, batch_size);
        }
        let capture = loaded
            .capture
            .as_ref()
            .filter(|c| c.sample(&loaded.name))
            .map(|c| (c, inputs.clone()));
        match loaded.infer(inputs, batch_size).await {
            Ok((outputs, timing)) => {
                if let Some(monitor) = &loaded.monitor {
                    monitor.observe_outputs(&outputs);
                }
                let captured = capture.is_some();
                if let Some((c, inputs)) = capture {
                    let names: Vec<&str> = loaded.inputs.iter().map(|s| s.name.as_str()).collect();
                    c.capture(
                        &loaded.name,
                        &loaded.version,
                        &format!("sha256:{}", loaded.digest),
                        id.as_deref(),
                        &names,
                        &inputs,
                        &outputs,
                        now_ms(),
                    );
                }
                loaded.keep_prediction(id.as_deref(), &outputs, captured);
                self.success(started.elapsed(), timing);
                Ok(oip::choose_outputs(
                    outputs,
                    &request.outputs,
                    request.binary_output,
                ))
            }
            Err(e) => {
                if e.kind() == ErrorKind::Internal {
                    self.failure(started.elapsed());
                } else {
                    self.reject();
                }
                Err(ApiError::new(e.kind(), e.to_string()))
            }
        }
    }

    fn success(&self, total: Duration, timing: Timing) {
        self.stats().success(total, timing, now_ms());
    }

    fn failure(&self, total: Duration) {
        self.stats().failure(total, now_ms());
    }

    fn set_golden(&self, result: Result<(), GoldenFailure>) {
        self.stats().golden = Some(result);
    }

    /// The served model's figures; `None` when no model is loaded.
    pub fn health(&self) -> Option<ModelHealth> {
        let loaded = self.get()?;
        let s = self.stats();
        let recent = s.recent_figures();
        Some(ModelHealth {
            name: loaded.name.clone(),
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
            drift: loaded
                .monitor
                .as_ref()
                .and_then(monitor::ModelMonitor::verdict),
            quality: loaded.quality.as_ref().and_then(|q| {
                q.feedback
                    .summary(&loaded.name, &format!("sha256:{}", loaded.digest))
            }),
            feedback: loaded.quality.as_ref().map(|q| {
                q.feedback
                    .counters()
                    .remove(&loaded.name)
                    .unwrap_or_default()
            }),
            capture: loaded.capture.as_ref().and_then(|c| c.status(&loaded.name)),
            confusion: loaded
                .quality
                .as_ref()
                .map(|q| {
                    q.feedback
                        .confusion(&loaded.name, &format!("sha256:{}", loaded.digest))
                })
                .unwrap_or_default(),
        })
    }
}

/// Milliseconds since the Unix epoch, for `last_inference`.
fn now_ms() -> u64 {
    gantry_net::clock::now_ms()
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
    let results = crate::inference::check_golden(&mut loaded.pool.any(), &loaded.golden);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_size_counts_elements_and_the_bytes_of_strings() {
        let numbers = Tensor {
            shape: vec![2, 3],
            data: TensorData::Float32(vec![0.0; 6]),
        };
        let words = Tensor {
            shape: vec![2],
            data: TensorData::Bytes(vec![b"a".to_vec(), vec![b'x'; 1000]]),
        };
        assert_eq!(input_size(&[("x".to_owned(), numbers.clone())]), 6);
        // A book weighs more than a word, though both are one element.
        assert_eq!(input_size(&[("t".to_owned(), words)]), 2 + 1001);
        assert_eq!(
            input_size(&[("a".to_owned(), numbers.clone()), ("b".to_owned(), numbers)]),
            12
        );
    }
}
