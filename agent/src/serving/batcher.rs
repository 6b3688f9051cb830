//! Dynamic batching, with Triton's semantics: requests to a model with a batch dimension
//! queue; whenever a session is free, one run takes the oldest request and as many
//! queued after it as fit `max_batch_size` (same shape past the first dimension),
//! waiting up to `max_queue_delay_us` for more unless a preferred size is reached. The
//! inputs are joined along the first dimension, the outputs split back by rows. The
//! queue is bounded (`max_queue_size`) and a request that waits past `queue_timeout_us`
//! is refused, never run late.
//!
//! The scheduler is one task per loaded model, holding only a weak reference to it: when
//! the model is replaced, its queue closes, the task ends, and requests still queued are
//! answered with an error rather than dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use gantry_shared::bundle::manifest::{DynamicBatching, Tensor};
use gantry_shared::tensor::TensorData;
use tokio::sync::{mpsc, oneshot};

use super::stats::Timing;
use super::{Loaded, RunError};

/// What a queued request is answered with: its rows of the outputs, and its timing.
type Answer = Result<(Vec<(String, Tensor)>, Timing), RunError>;

/// A request waiting for its batch.
#[derive(Debug)]
struct Queued {
    inputs: Vec<(String, Tensor)>,
    rows: u64,
    at: Instant,
    answer: oneshot::Sender<Answer>,
}

impl Queued {
    /// Whether `other` can share a run with this one: the same shape past the first
    /// dimension, input by input.
    fn joins(&self, other: &Self) -> bool {
        self.inputs
            .iter()
            .zip(&other.inputs)
            .all(|((_, a), (_, b))| a.shape.get(1..) == b.shape.get(1..))
    }
}

/// A model's queue: where requests go, and how many wait.
#[derive(Debug)]
pub(super) struct Batcher {
    send: mpsc::UnboundedSender<Queued>,
    waiting: Arc<AtomicUsize>,
    settings: DynamicBatching,
}

impl Batcher {
    /// Starts the scheduler of `model`, which must be batching.
    pub(super) fn start(model: &Arc<Loaded>, settings: DynamicBatching) -> Self {
        let (send, receive) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        tokio::spawn(schedule(
            Arc::downgrade(model),
            receive,
            Arc::clone(&waiting),
            settings.clone(),
        ));
        Self {
            send,
            waiting,
            settings,
        }
    }

    /// Queues a request of `rows` rows and waits for its share of a batch.
    pub(super) async fn infer(
        &self,
        inputs: Vec<(String, Tensor)>,
        rows: u64,
    ) -> Result<(Vec<(String, Tensor)>, Timing), RunError> {
        let max = u64::from(self.settings.max_batch_size);
        if rows > max {
            return Err(RunError::TooManyRows { rows, max });
        }
        let limit = self.settings.max_queue_size as usize;
        if limit > 0 && self.waiting.load(Ordering::Relaxed) >= limit {
            return Err(RunError::QueueFull { limit });
        }
        let (answer, result) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let queued = Queued {
            inputs,
            rows,
            at: Instant::now(),
            answer,
        };
        if self.send.send(queued).is_err() {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(RunError::Closed);
        }
        result.await.unwrap_or(Err(RunError::Closed))
    }
}

/// Forms batches whenever a session is free, until the model is gone.
async fn schedule(
    model: Weak<Loaded>,
    mut receive: mpsc::UnboundedReceiver<Queued>,
    waiting: Arc<AtomicUsize>,
    settings: DynamicBatching,
) {
    let max_rows = u64::from(settings.max_batch_size);
    let delay = Duration::from_micros(settings.max_queue_delay_us);
    let timeout =
        (settings.queue_timeout_us > 0).then(|| Duration::from_micros(settings.queue_timeout_us));
    let preferred = |rows: u64| {
        settings
            .preferred_batch_sizes
            .iter()
            .any(|&p| u64::from(p) == rows)
    };
    // Requests taken off the channel that did not fit the last batch.
    let mut held: VecDeque<Queued> = VecDeque::new();
    // A free session first: while every session runs, requests keep queueing, and the
    // next batch takes them all.
    while let Some(free) = model.upgrade().map(|m| Arc::clone(&m.pool.free)) {
        let Ok(permit) = free.acquire_owned().await else {
            break;
        };
        let first = match held.pop_front() {
            Some(first) => first,
            None => match receive.recv().await {
                Some(first) => first,
                None => break,
            },
        };
        let mut batch = vec![first];
        let mut rows = batch[0].rows;
        let deadline = batch[0].at + delay;
        // Requests that cannot join this batch (another shape, too many rows) wait for
        // the next one, in order.
        let mut later: VecDeque<Queued> = VecDeque::new();
        while rows < max_rows && !preferred(rows) {
            let next = if let Some(next) = held.pop_front() {
                Some(next)
            } else {
                let now = Instant::now();
                if now >= deadline {
                    receive.try_recv().ok()
                } else {
                    match tokio::time::timeout(deadline - now, receive.recv()).await {
                        Ok(Some(next)) => Some(next),
                        Ok(None) | Err(_) => None,
                    }
                }
            };
            let Some(next) = next else { break };
            if batch[0].joins(&next) && rows + next.rows <= max_rows {
                rows += next.rows;
                batch.push(next);
            } else {
                later.push_back(next);
            }
        }
        later.extend(held.drain(..));
        held = later;
        waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        let started = Instant::now();
        let (ready, expired): (Vec<Queued>, Vec<Queued>) = batch
            .into_iter()
            .partition(|q| timeout.is_none_or(|t| started - q.at <= t));
        for q in expired {
            let waited = started - q.at;
            let _ = q.answer.send(Err(RunError::TimedOut { waited }));
        }
        if ready.is_empty() {
            continue;
        }
        let Some(model) = model.upgrade() else { break };
        tokio::spawn(run(model, ready, permit));
    }
    // The model is gone: whatever still waits is told, never dropped silently.
    receive.close();
    while let Ok(q) = receive.try_recv() {
        let _ = q.answer.send(Err(RunError::Closed));
    }
    for q in held {
        let _ = q.answer.send(Err(RunError::Closed));
    }
}

/// Runs one batch on the session `permit` holds and answers each request with its rows.
async fn run(model: Arc<Loaded>, batch: Vec<Queued>, permit: tokio::sync::OwnedSemaphorePermit) {
    let started = Instant::now();
    let rows: u64 = batch.iter().map(|q| q.rows).sum();
    let mut joined: Vec<(String, Tensor)> = Vec::new();
    for q in &batch {
        for (i, (name, tensor)) in q.inputs.iter().enumerate() {
            match joined.get_mut(i) {
                None => {
                    let mut shape = tensor.shape.clone();
                    shape[0] = rows;
                    let mut data = TensorData::empty(tensor.dtype());
                    data.extend_from(&tensor.data);
                    joined.push((name.clone(), Tensor { shape, data }));
                }
                Some((_, all)) => {
                    all.data.extend_from(&tensor.data);
                }
            }
        }
    }
    let ran = model.run_on_session(joined, permit).await;
    let outputs = match ran {
        Ok(ran) => ran,
        Err(e) => {
            let message = e.to_string();
            for q in batch {
                let _ = q.answer.send(Err(RunError::Batch(message.clone())));
            }
            return;
        }
    };
    let (outputs, times) = outputs;
    let mut first_row = 0u64;
    for (i, q) in batch.into_iter().enumerate() {
        let mine: Result<Vec<(String, Tensor)>, RunError> = outputs
            .iter()
            .map(|(name, t)| {
                let total = t.shape.first().copied().unwrap_or(0);
                if total != rows {
                    return Err(RunError::Batch(format!(
                        "output {name:?} has {total} rows for a batch of {rows}"
                    )));
                }
                let per_row = if rows == 0 {
                    0
                } else {
                    t.data.len() / rows as usize
                };
                let start = first_row as usize * per_row;
                let end = start + q.rows as usize * per_row;
                let mut shape = t.shape.clone();
                shape[0] = q.rows;
                Ok((
                    name.clone(),
                    Tensor {
                        shape,
                        data: t.data.slice(start, end),
                    },
                ))
            })
            .collect();
        first_row += q.rows;
        let timing = Timing {
            queue: started - q.at,
            run: times,
            batch_size: rows,
            rows: q.rows,
            executed: i == 0,
        };
        let _ = q.answer.send(mine.map(|outputs| (outputs, timing)));
    }
}
