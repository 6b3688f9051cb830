//! The ingest writer: one thread that stores the telemetry batches of all connections,
//! committing as many as are waiting in one transaction (group commit), and answers each
//! batch only after the transaction holding it committed.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::sync::Arc;

use gantry_shared::protocol::telemetry::Batch;
use tokio::sync::{mpsc, oneshot};

use crate::store::{BatchError, Store, Stored};

/// Why a batch was not stored. Every kind is transient for the agent: it keeps the
/// batch and sends it again.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum IngestError {
    #[error("the ingest writer stopped")]
    Stopped,
    /// The transaction holding the batch failed (the message of the store's error, shared
    /// by every batch of the group).
    #[error("the store failed: {0}")]
    Store(String),
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Batches waiting beyond this apply back-pressure to the connections sending them.
const QUEUE: usize = 1024;
/// Most batches committed in one transaction.
const GROUP: usize = 256;

struct Job {
    node: String,
    batch: Batch,
    reply: oneshot::Sender<Result<Stored, IngestError>>,
}

/// Sends batches to the writer.
#[derive(Clone)]
pub(super) struct Handle {
    tx: mpsc::Sender<Job>,
}

/// The writer thread; it ends when every [`Handle`] is gone.
pub(super) struct Writer {
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    /// Lets the thread finish what is queued; it exits once the handles are dropped.
    pub(super) fn stop(self) {
        if self.thread.is_finished() {
            let _ = self.thread.join();
        }
    }
}

impl Handle {
    /// Stores `batch` for `node`; resolves once it is durable.
    pub(super) async fn store(&self, node: String, batch: Batch) -> Result<Stored, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { node, batch, reply })
            .await
            .map_err(|_| IngestError::Stopped)?;
        answer.await.map_err(|_| IngestError::Stopped)?
    }
}

pub(super) fn spawn(store: Arc<Store>) -> (Handle, Writer) {
    let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
    let thread = std::thread::Builder::new()
        .name("ingest".to_owned())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut jobs = vec![first];
                while jobs.len() < GROUP {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let batches: Vec<(&str, &Batch)> =
                    jobs.iter().map(|j| (j.node.as_str(), &j.batch)).collect();
                match store.store_batches(&batches) {
                    Ok(results) => {
                        for (job, stored) in jobs.into_iter().zip(results) {
                            let _ = job.reply.send(stored.map_err(IngestError::from));
                        }
                    }
                    Err(e) => {
                        // One failed transaction fails every batch it held.
                        let failed = IngestError::Store(e.to_string());
                        for job in jobs {
                            let _ = job.reply.send(Err(failed.clone()));
                        }
                    }
                }
            }
        })
        .expect("the ingest thread starts");
    (Handle { tx }, Writer { thread })
}
