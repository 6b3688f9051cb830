//! Ground truth for served models: the prediction kept for every request with an `id`
//! to a model whose bundle names what it predicts, the feedback clients send for those
//! ids later, and the windows of joined rows the recorder closes and buffers.
//!
//! Everything lives in `<state_dir>/predictions.redb`, written by one thread:
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `predictions` | (model, id) | the kept prediction ([`Kept`], JSON) |
//! | `by_time` | (kept at, model, id) | — (expiry and eviction, oldest first) |
//! | `tombstones` | (model, id) | when it expired (so its feedback counts as late) |
//! | `tombstones_by_time` | (expired at, model, id) | — |
//! | `log` | sequence | feedback as it arrived and what became of it ([`Logged`]) |
//! | `meta` | `closed_until` | the end of the latest window buffered |
//!
//! A prediction is kept until `feedback.ttl` after it was made, or until
//! `feedback.max_predictions` newer ones push it out; a joined one stays (marked) so a
//! second label for it counts as a duplicate. Feedback is answered after its transaction
//! commits. The log is read into windows of `monitoring.window`, aligned to the clock
//! (so a window closed twice after a crash is the same window), and an entry is deleted
//! only once the window holding it is in the telemetry buffer.
//!
//! A prediction waits in a bounded queue (milliseconds) before its commit: a crash can
//! lose the last ones, and their feedback then counts as unknown. A full queue keeps
//! nothing and counts it; inference never waits for this store.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_shared::monitoring::capture::CaptureLabel;
use gantry_shared::monitoring::quality::{
    FeedbackCounts, FeedbackItem, Predicted, QualityStats, QualitySummary, QualityWindow, Task,
    Truth, VersionQuality,
};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

const PREDICTIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("predictions");
const BY_TIME: TableDefinition<(u64, &str, &str), ()> = TableDefinition::new("by_time");
const TOMBSTONES: TableDefinition<(&str, &str), u64> = TableDefinition::new("tombstones");
const TOMBSTONES_BY_TIME: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("tombstones_by_time");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The end of the latest window buffered: feedback committed later for a window that
/// ended by then goes into the next one, so no window is sent twice with different rows.
const CLOSED_UNTIL: &str = "closed_until";

/// Predictions waiting for their commit.
const QUEUE: usize = 65_536;
/// Most messages one transaction takes.
const BATCH: usize = 4_096;
/// How often expired predictions are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Versions per model whose latest figures are kept for `/metrics` and heartbeats.
const VERSIONS_KEPT: usize = 4;

/// Validated `[feedback]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackSettings {
    /// How long a prediction waits for its feedback.
    pub ttl: Duration,
    /// Most predictions kept; the oldest go first.
    pub max_predictions: u64,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            max_predictions: 500_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("prediction store {path}: {message}")]
    Engine { path: PathBuf, message: String },
    #[error("the prediction store is not running (the agent is stopping)")]
    Stopped,
    #[error("the prediction store's queue is full; send the feedback again shortly")]
    Busy,
}

/// A prediction as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    pub version: String,
    pub bundle: String,
    pub at_ms: u64,
    pub predicted: Predicted,
    #[serde(default)]
    pub joined: bool,
    /// The request was captured: its label goes with the feedback window for
    /// `gantry capture export`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub captured: bool,
}

/// Feedback as it arrived, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Logged {
    at_ms: u64,
    model: String,
    outcome: Fate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Fate {
    Joined {
        version: String,
        bundle: String,
        predicted: Predicted,
        truth: Truth,
        /// The request's id, when the request was captured.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        captured: Option<String>,
    },
    Late,
    Duplicate,
    Unknown,
    Invalid,
}

/// What became of one piece of feedback, as the caller is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    Joined { version: String },
    Late,
    Duplicate,
    Unknown,
    Invalid { reason: String },
}

enum Message {
    Keep {
        model: String,
        id: String,
        kept: Kept,
    },
    Feedback {
        model: String,
        items: Vec<FeedbackItem>,
        now_ms: u64,
        reply: tokio::sync::oneshot::Sender<Result<Vec<Outcome>, FeedbackError>>,
    },
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Counters of one model since the agent started, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelCounters {
    pub kept: u64,
    /// Not kept: the queue was full, or the output could not be read as a prediction.
    pub queue_full: u64,
    pub unreadable: u64,
    pub expired: u64,
    pub evicted: u64,
    pub feedback: FeedbackCounts,
}

/// A version's latest closed window and everything since the agent started.
#[derive(Debug, Clone)]
struct VersionFigures {
    version: String,
    window_end_ms: u64,
    latest: QualityStats,
    cumulative: QualityStats,
}

/// The latest quality figures of one model version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionSummary {
    pub model: String,
    pub version: String,
    pub bundle: String,
    pub summary: QualitySummary,
}

/// Windows closed from the log, and the entries they hold (deleted by
/// [`Feedback::consume`] once the windows are buffered).
#[derive(Debug, Default)]
pub struct Closed {
    pub windows: Vec<QualityWindow>,
    seqs: Vec<u64>,
    /// The earliest end of a window left open.
    next_due: u64,
}

#[derive(Debug)]
pub struct Feedback {
    path: PathBuf,
    db: Arc<Database>,
    tx: SyncSender<Message>,
    window_ms: u64,
    counters: Arc<Mutex<BTreeMap<String, ModelCounters>>>,
    /// Held predictions, as of the latest commit.
    held: Arc<std::sync::atomic::AtomicU64>,
    /// No log entry's window ends before this (so closing earlier reads nothing).
    due: Arc<std::sync::atomic::AtomicU64>,
    figures: Mutex<BTreeMap<String, BTreeMap<String, VersionFigures>>>,
}

impl Feedback {
    /// Opens (or creates) the store at `path` and starts its writer thread. Windows last
    /// `window`.
    pub fn open(
        path: &Path,
        settings: FeedbackSettings,
        window: Duration,
    ) -> Result<Arc<Self>, FeedbackError> {
        let engine = engine_error(path);
        let db = Database::builder()
            .set_cache_size(16 << 20)
            .create(path)
            .map_err(|e| engine(&e))?;
        let txn = db.begin_write().map_err(|e| engine(&e))?;
        let held;
        {
            let predictions = txn.open_table(PREDICTIONS).map_err(|e| engine(&e))?;
            held = predictions.len().map_err(|e| engine(&e))?;
            txn.open_table(BY_TIME).map_err(|e| engine(&e))?;
            txn.open_table(TOMBSTONES).map_err(|e| engine(&e))?;
            txn.open_table(TOMBSTONES_BY_TIME).map_err(|e| engine(&e))?;
            txn.open_table(LOG).map_err(|e| engine(&e))?;
            txn.open_table(META).map_err(|e| engine(&e))?;
        }
        txn.commit().map_err(|e| engine(&e))?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let counters = Arc::new(Mutex::new(BTreeMap::new()));
        let held = Arc::new(std::sync::atomic::AtomicU64::new(held));
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let due = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = Writer {
            window_ms,
            due: Arc::clone(&due),
            path: path.to_owned(),
            db: Arc::clone(&db),
            settings,
            counters: Arc::clone(&counters),
            held: Arc::clone(&held),
        };
        std::thread::Builder::new()
            .name("predictions".into())
            .spawn(move || writer.run(&rx))
            .map_err(|e| engine(&e))?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            db,
            tx,
            window_ms,
            counters,
            held,
            due,
            figures: Mutex::new(BTreeMap::new()),
        }))
    }

    /// Keeps `predicted` for request `id` of `model`; never waits.
    pub fn keep(&self, model: &str, id: &str, kept: Kept) {
        let message = Message::Keep {
            model: model.to_owned(),
            id: id.to_owned(),
            kept,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(message)
        {
            let mut counters = self.counters.lock().expect("feedback counters");
            let c = counters.entry(model.to_owned()).or_default();
            if c.queue_full == 0 {
                tracing::warn!(
                    model,
                    "the prediction store is behind; predictions are not kept (and counted) until it catches up"
                );
            }
            c.queue_full += 1;
        }
    }

    /// Counts an answer whose output could not be read as a prediction.
    pub fn unreadable(&self, model: &str, why: &str) {
        let mut counters = self.counters.lock().expect("feedback counters");
        let c = counters.entry(model.to_owned()).or_default();
        if c.unreadable == 0 {
            tracing::warn!(
                model,
                reason = why,
                "an answer's prediction output cannot be read; its feedback will count as unknown"
            );
        }
        c.unreadable += 1;
    }

    /// Joins `items` with the predictions kept for `model`; answers once committed.
    pub async fn feedback(
        &self,
        model: &str,
        items: Vec<FeedbackItem>,
    ) -> Result<Vec<Outcome>, FeedbackError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let message = Message::Feedback {
            model: model.to_owned(),
            items,
            now_ms: gantry_net::clock::now_ms(),
            reply,
        };
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(FeedbackError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(FeedbackError::Stopped),
        }
        answer.await.map_err(|_| FeedbackError::Stopped)?
    }

    /// Waits until every prediction queued before the call is committed.
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Reads the windows that ended by `now_ms` from the log (blocking).
    pub fn close(&self, now_ms: u64) -> Result<Closed, FeedbackError> {
        let due = self.due.load(std::sync::atomic::Ordering::SeqCst);
        if now_ms < due {
            return Ok(Closed {
                next_due: due,
                ..Closed::default()
            });
        }
        let engine = engine_error(&self.path);
        let txn = self.db.begin_read().map_err(|e| engine(&e))?;
        let log = txn.open_table(LOG).map_err(|e| engine(&e))?;
        let closed_until = txn
            .open_table(META)
            .map_err(|e| engine(&e))?
            .get(CLOSED_UNTIL)
            .map_err(|e| engine(&e))?
            .map_or(0, |v| v.value());
        // (model, window end) → window being folded.
        let mut windows: BTreeMap<(String, u64), QualityWindow> = BTreeMap::new();
        let mut closed = Closed {
            next_due: now_ms + 1,
            ..Closed::default()
        };
        let mut earliest_open = u64::MAX;
        for entry in log.iter().map_err(|e| engine(&e))? {
            let (seq, bytes) = entry.map_err(|e| engine(&e))?;
            let Ok(logged) = serde_json::from_slice::<Logged>(bytes.value()) else {
                tracing::warn!(
                    seq = seq.value(),
                    "a feedback log entry is damaged; it is dropped"
                );
                closed.seqs.push(seq.value());
                continue;
            };
            let end = ((logged.at_ms / self.window_ms + 1) * self.window_ms).max(
                closed_until
                    .saturating_add(self.window_ms)
                    .min(u64::MAX - self.window_ms),
            );
            if end > now_ms {
                earliest_open = earliest_open.min(end);
                continue;
            }
            closed.seqs.push(seq.value());
            let window = windows
                .entry((logged.model.clone(), end))
                .or_insert_with(|| QualityWindow {
                    model: logged.model.clone(),
                    start_ms: end - self.window_ms,
                    end_ms: end,
                    feedback: FeedbackCounts::default(),
                    versions: Vec::new(),
                    labels: Vec::new(),
                });
            fold(window, logged.outcome);
        }
        if earliest_open != u64::MAX {
            closed.next_due = earliest_open;
        }
        closed.windows = windows.into_values().collect();
        Ok(closed)
    }

    /// Deletes the log entries of windows now buffered, and keeps their figures as the
    /// latest (blocking).
    pub fn consume(&self, closed: &Closed) -> Result<(), FeedbackError> {
        if !closed.seqs.is_empty() {
            let engine = engine_error(&self.path);
            let txn = self.db.begin_write().map_err(|e| engine(&e))?;
            {
                let mut log = txn.open_table(LOG).map_err(|e| engine(&e))?;
                for seq in &closed.seqs {
                    log.remove(*seq).map_err(|e| engine(&e))?;
                }
                if let Some(last) = closed.windows.iter().map(|w| w.end_ms).max() {
                    let mut meta = txn.open_table(META).map_err(|e| engine(&e))?;
                    let until = meta
                        .get(CLOSED_UNTIL)
                        .map_err(|e| engine(&e))?
                        .map_or(0, |v| v.value());
                    meta.insert(CLOSED_UNTIL, until.max(last))
                        .map_err(|e| engine(&e))?;
                }
            }
            txn.commit().map_err(|e| engine(&e))?;
        }
        // What is left ends later; the writer lowers this for what it logs meanwhile.
        self.due
            .fetch_max(closed.next_due, std::sync::atomic::Ordering::SeqCst);
        let mut figures = self.figures.lock().expect("quality figures");
        for window in &closed.windows {
            let versions = figures.entry(window.model.clone()).or_default();
            for v in &window.versions {
                let f = versions
                    .entry(v.bundle.clone())
                    .or_insert_with(|| VersionFigures {
                        version: v.version.clone(),
                        window_end_ms: 0,
                        latest: QualityStats::new(v.stats.task),
                        cumulative: QualityStats::new(v.stats.task),
                    });
                if window.end_ms >= f.window_end_ms {
                    f.window_end_ms = window.end_ms;
                    f.latest = v.stats.clone();
                }
                f.cumulative
                    .merge(&v.stats, gantry_shared::monitoring::quality::MAX_SCORED);
            }
            while versions.len() > VERSIONS_KEPT {
                let oldest = versions
                    .iter()
                    .min_by_key(|(_, f)| f.window_end_ms)
                    .map(|(b, _)| b.clone())
                    .expect("more than zero versions");
                versions.remove(&oldest);
            }
        }
        Ok(())
    }

    /// The latest figures of model `name`'s bundle `bundle`.
    pub fn summary(&self, name: &str, bundle: &str) -> Option<QualitySummary> {
        let figures = self.figures.lock().expect("quality figures");
        let f = figures.get(name)?.get(bundle)?;
        Some(QualitySummary {
            window_end_ms: f.window_end_ms,
            metrics: f.latest.metrics(),
            cumulative: f.cumulative.metrics(),
        })
    }

    /// The confusion matrix of model `name`'s bundle `bundle` since the agent started:
    /// `(truth, predicted, rows)`, sorted.
    pub fn confusion(&self, name: &str, bundle: &str) -> Vec<(i64, i64, u64)> {
        let figures = self.figures.lock().expect("quality figures");
        figures
            .get(name)
            .and_then(|v| v.get(bundle))
            .map(|f| f.cumulative.confusion.clone())
            .unwrap_or_default()
    }

    /// Every version's latest figures.
    pub fn summaries(&self) -> Vec<VersionSummary> {
        let figures = self.figures.lock().expect("quality figures");
        figures
            .iter()
            .flat_map(|(model, versions)| {
                versions.iter().map(move |(bundle, f)| VersionSummary {
                    model: model.clone(),
                    version: f.version.clone(),
                    bundle: bundle.clone(),
                    summary: QualitySummary {
                        window_end_ms: f.window_end_ms,
                        metrics: f.latest.metrics(),
                        cumulative: f.cumulative.metrics(),
                    },
                })
            })
            .collect()
    }

    /// Counters per model since the agent started.
    pub fn counters(&self) -> BTreeMap<String, ModelCounters> {
        self.counters.lock().expect("feedback counters").clone()
    }

    /// Predictions held.
    pub fn held(&self) -> u64 {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn fold(window: &mut QualityWindow, outcome: Fate) {
    let counts = &mut window.feedback;
    match outcome {
        Fate::Late => counts.late += 1,
        Fate::Duplicate => counts.duplicate += 1,
        Fate::Unknown => counts.unknown += 1,
        Fate::Invalid => counts.invalid += 1,
        Fate::Joined {
            version,
            bundle,
            predicted,
            truth,
            captured,
        } => {
            if let Some(id) = captured {
                window.labels.push(CaptureLabel {
                    id,
                    bundle: bundle.clone(),
                    truth: truth.clone(),
                });
            }
            let task = match predicted {
                Predicted::Values(_) => Task::Regression,
                _ => Task::Classification,
            };
            let at = if let Some(at) = window.versions.iter().position(|v| v.bundle == bundle) {
                at
            } else {
                window.versions.push(VersionQuality {
                    version,
                    bundle,
                    stats: QualityStats::new(task),
                });
                window.versions.len() - 1
            };
            // Checked when the feedback came; a refusal here cannot happen but is counted.
            if window.versions[at].stats.add(&predicted, &truth).is_ok() {
                counts.joined += 1;
            } else {
                counts.invalid += 1;
            }
        }
    }
}

fn engine_error(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> FeedbackError + '_ {
    move |e| FeedbackError::Engine {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The one thread that writes the store.
struct Writer {
    window_ms: u64,
    due: Arc<std::sync::atomic::AtomicU64>,
    path: PathBuf,
    db: Arc<Database>,
    settings: FeedbackSettings,
    counters: Arc<Mutex<BTreeMap<String, ModelCounters>>>,
    held: Arc<std::sync::atomic::AtomicU64>,
}

type Replies = Vec<(
    tokio::sync::oneshot::Sender<Result<Vec<Outcome>, FeedbackError>>,
    Vec<Outcome>,
)>;

impl Writer {
    fn run(self, rx: &mpsc::Receiver<Message>) {
        let mut last_sweep = Instant::now();
        loop {
            match rx.recv_timeout(SWEEP_EVERY) {
                Ok(first) => {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    self.commit(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                if let Err(e) = self.sweep(gantry_net::clock::now_ms()) {
                    tracing::warn!(error = %e, "cannot expire old predictions; retrying");
                }
            }
        }
    }

    fn commit(&self, batch: Vec<Message>) {
        let mut flushes = Vec::new();
        let mut replies: Replies = Vec::new();
        let mut kept: BTreeMap<String, u64> = BTreeMap::new();
        let mut seen: BTreeMap<String, FeedbackCounts> = BTreeMap::new();
        let result = self.write(batch, &mut flushes, &mut replies, &mut kept, &mut seen);
        match result {
            Ok(()) => {
                let mut counters = self.counters.lock().expect("feedback counters");
                for (model, n) in kept {
                    counters.entry(model).or_default().kept += n;
                }
                for (model, counts) in seen {
                    counters.entry(model).or_default().feedback.merge(&counts);
                }
                drop(counters);
                for (reply, outcomes) in replies {
                    let _ = reply.send(Ok(outcomes));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot write the prediction store; these predictions are not kept and this feedback is refused");
                let mut counters = self.counters.lock().expect("feedback counters");
                for (model, n) in kept {
                    counters.entry(model).or_default().queue_full += n;
                }
                drop(counters);
                for (reply, _) in replies {
                    let _ = reply.send(Err(FeedbackError::Engine {
                        path: self.path.clone(),
                        message: e.to_string(),
                    }));
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }

    fn write(
        &self,
        batch: Vec<Message>,
        flushes: &mut Vec<tokio::sync::oneshot::Sender<()>>,
        replies: &mut Replies,
        kept: &mut BTreeMap<String, u64>,
        seen: &mut BTreeMap<String, FeedbackCounts>,
    ) -> Result<(), FeedbackError> {
        let engine = engine_error(&self.path);
        let txn = self.db.begin_write().map_err(|e| engine(&e))?;
        {
            let mut predictions = txn.open_table(PREDICTIONS).map_err(|e| engine(&e))?;
            let mut by_time = txn.open_table(BY_TIME).map_err(|e| engine(&e))?;
            let tombstones = txn.open_table(TOMBSTONES).map_err(|e| engine(&e))?;
            let mut log = txn.open_table(LOG).map_err(|e| engine(&e))?;
            let mut next_seq = log
                .last()
                .map_err(|e| engine(&e))?
                .map_or(1, |(k, _)| k.value() + 1);
            for message in batch {
                match message {
                    Message::Flush(done) => flushes.push(done),
                    Message::Keep { model, id, kept: k } => {
                        let previous = predictions
                            .get((model.as_str(), id.as_str()))
                            .map_err(|e| engine(&e))?
                            .and_then(|v| serde_json::from_slice::<Kept>(v.value()).ok());
                        if let Some(previous) = previous {
                            by_time
                                .remove((previous.at_ms, model.as_str(), id.as_str()))
                                .map_err(|e| engine(&e))?;
                        }
                        let bytes = serde_json::to_vec(&k).expect("predictions serialize");
                        predictions
                            .insert((model.as_str(), id.as_str()), bytes.as_slice())
                            .map_err(|e| engine(&e))?;
                        by_time
                            .insert((k.at_ms, model.as_str(), id.as_str()), ())
                            .map_err(|e| engine(&e))?;
                        *kept.entry(model).or_default() += 1;
                    }
                    Message::Feedback {
                        model,
                        items,
                        now_ms,
                        reply,
                    } => {
                        let counts = seen.entry(model.clone()).or_default();
                        let mut outcomes = Vec::with_capacity(items.len());
                        for item in items {
                            let key = (model.as_str(), item.id.as_str());
                            let found = predictions
                                .get(key)
                                .map_err(|e| engine(&e))?
                                .and_then(|v| serde_json::from_slice::<Kept>(v.value()).ok());
                            let (outcome, logged) = match found {
                                None => {
                                    let late =
                                        tombstones.get(key).map_err(|e| engine(&e))?.is_some();
                                    if late {
                                        counts.late += 1;
                                        (Outcome::Late, Fate::Late)
                                    } else {
                                        counts.unknown += 1;
                                        (Outcome::Unknown, Fate::Unknown)
                                    }
                                }
                                Some(k) if k.joined => {
                                    counts.duplicate += 1;
                                    (Outcome::Duplicate, Fate::Duplicate)
                                }
                                Some(mut k) => match Truth::read(&item.label, &k.predicted) {
                                    Err(e) => {
                                        counts.invalid += 1;
                                        (
                                            Outcome::Invalid {
                                                reason: e.to_string(),
                                            },
                                            Fate::Invalid,
                                        )
                                    }
                                    Ok(truth) => {
                                        counts.joined += 1;
                                        k.joined = true;
                                        let bytes =
                                            serde_json::to_vec(&k).expect("predictions serialize");
                                        predictions
                                            .insert(key, bytes.as_slice())
                                            .map_err(|e| engine(&e))?;
                                        (
                                            Outcome::Joined {
                                                version: k.version.clone(),
                                            },
                                            Fate::Joined {
                                                version: k.version,
                                                bundle: k.bundle,
                                                predicted: k.predicted,
                                                truth,
                                                captured: k.captured.then(|| item.id.clone()),
                                            },
                                        )
                                    }
                                },
                            };
                            let entry = Logged {
                                at_ms: now_ms,
                                model: model.clone(),
                                outcome: logged,
                            };
                            let bytes = serde_json::to_vec(&entry).expect("feedback serializes");
                            log.insert(next_seq, bytes.as_slice())
                                .map_err(|e| engine(&e))?;
                            next_seq += 1;
                            outcomes.push(outcome);
                        }
                        replies.push((reply, outcomes));
                        let end = (now_ms / self.window_ms + 1) * self.window_ms;
                        self.due.fetch_min(end, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        }
        let evicted = self.expire(&txn, None)?;
        txn.commit().map_err(|e| engine(&e))?;
        self.count_expiry(evicted, |c| &mut c.evicted);
        Ok(())
    }

    /// Expires predictions made before `before_ms` (when given) and those beyond the
    /// cap, oldest first, into tombstones; returns how many per model.
    fn expire(
        &self,
        txn: &redb::WriteTransaction,
        before_ms: Option<u64>,
    ) -> Result<BTreeMap<String, u64>, FeedbackError> {
        let engine = engine_error(&self.path);
        let mut predictions = txn.open_table(PREDICTIONS).map_err(|e| engine(&e))?;
        let mut by_time = txn.open_table(BY_TIME).map_err(|e| engine(&e))?;
        let mut tombstones = txn.open_table(TOMBSTONES).map_err(|e| engine(&e))?;
        let mut tombstones_by_time = txn.open_table(TOMBSTONES_BY_TIME).map_err(|e| engine(&e))?;
        let held = predictions.len().map_err(|e| engine(&e))?;
        let over = held.saturating_sub(self.settings.max_predictions);
        let mut gone = Vec::new();
        for entry in by_time.iter().map_err(|e| engine(&e))? {
            let (key, _) = entry.map_err(|e| engine(&e))?;
            let (at, model, id) = key.value();
            let expired = before_ms.is_some_and(|b| at < b);
            if !expired && (gone.len() as u64) >= over {
                break;
            }
            gone.push((at, model.to_owned(), id.to_owned()));
        }
        let now = gantry_net::clock::now_ms();
        let mut per_model: BTreeMap<String, u64> = BTreeMap::new();
        for (at, model, id) in &gone {
            by_time
                .remove((*at, model.as_str(), id.as_str()))
                .map_err(|e| engine(&e))?;
            predictions
                .remove((model.as_str(), id.as_str()))
                .map_err(|e| engine(&e))?;
            tombstones
                .insert((model.as_str(), id.as_str()), now)
                .map_err(|e| engine(&e))?;
            tombstones_by_time
                .insert((now, model.as_str(), id.as_str()), ())
                .map_err(|e| engine(&e))?;
            *per_model.entry(model.clone()).or_default() += 1;
        }
        // Tombstones live one more expiry period, and no more of them than predictions.
        let ttl_ms = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
        let tomb_before = now.saturating_sub(ttl_ms);
        let tomb_over = tombstones
            .len()
            .map_err(|e| engine(&e))?
            .saturating_sub(self.settings.max_predictions);
        let mut dead = Vec::new();
        for entry in tombstones_by_time.iter().map_err(|e| engine(&e))? {
            let (key, _) = entry.map_err(|e| engine(&e))?;
            let (at, model, id) = key.value();
            if at >= tomb_before && (dead.len() as u64) >= tomb_over {
                break;
            }
            dead.push((at, model.to_owned(), id.to_owned()));
        }
        for (at, model, id) in &dead {
            tombstones_by_time
                .remove((*at, model.as_str(), id.as_str()))
                .map_err(|e| engine(&e))?;
            tombstones
                .remove((model.as_str(), id.as_str()))
                .map_err(|e| engine(&e))?;
        }
        self.held.store(
            predictions.len().map_err(|e| engine(&e))?,
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(per_model)
    }

    fn sweep(&self, now_ms: u64) -> Result<(), FeedbackError> {
        let engine = engine_error(&self.path);
        let ttl_ms = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
        let txn = self.db.begin_write().map_err(|e| engine(&e))?;
        let expired = self.expire(&txn, Some(now_ms.saturating_sub(ttl_ms)))?;
        txn.commit().map_err(|e| engine(&e))?;
        self.count_expiry(expired, |c| &mut c.expired);
        Ok(())
    }

    fn count_expiry(
        &self,
        per_model: BTreeMap<String, u64>,
        field: fn(&mut ModelCounters) -> &mut u64,
    ) {
        if per_model.is_empty() {
            return;
        }
        let mut counters = self.counters.lock().expect("feedback counters");
        for (model, n) in per_model {
            *field(counters.entry(model).or_default()) += n;
        }
    }
}

/// Whether the store can be read by this build: used by tests.
#[cfg(test)]
pub(crate) fn log_len(feedback: &Feedback) -> u64 {
    let txn = feedback.db.begin_read().expect("read");
    txn.open_table(LOG).expect("log").len().expect("len")
}

#[cfg(test)]
mod tests;
