//! The durable telemetry buffer: every record is written here before it is sent, and
//! leaves only when the controller acknowledged it as stored.
//!
//! # Format
//!
//! One `redb` file, `<state_dir>/buffer.redb`, two tables:
//! - `records`: sequence (`u64`) → `at_ms: u64 BE | class: u8 | body JSON`;
//! - `meta`: `next_seq`, `dropped_metrics`, `dropped_events` (`u64`).
//!
//! # Invariants
//!
//! - Sequence numbers are per node, start at 1 and never repeat: `next_seq` is advanced in
//!   the same transaction that inserts the records, so a crash (`kill -9`, power loss) at
//!   any point leaves either both or neither.
//! - Records are deleted only by [`Buffer::ack`] (the controller stored them) or by the
//!   limits, and a limit drop is counted (persisted in `meta`) and reported.
//! - Limits: when the buffer exceeds `max_bytes`, the oldest *metrics* records go first;
//!   events (XIDs, GPU state changes) go only when no metrics record is left. Metrics
//!   older than `max_age` and events older than `event_max_age` are dropped too.
//! - Appends are durable when `append` returns (redb commits with fsync).
//! - Damage found when the buffer opens (the engine failing on its pages, a record
//!   numbered past `next_seq`) is [`BufferError::Damaged`], naming the file: the agent
//!   does not run on a buffer whose sequence numbers it cannot trust.
//!   `model_tests.rs` holds the model-based property test and the damage scenarios.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use gantry_shared::protocol::telemetry::RecordClass;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Bytes a record costs beyond its body: key, timestamp, class.
const RECORD_OVERHEAD: u64 = 17;
/// How often age limits are applied.
const AGE_CHECK_EVERY: Duration = Duration::from_secs(10);
/// Page cache redb may keep; the buffer is written and read sequentially, so a larger
/// cache only holds pages of records about to be deleted (2 MiB and 4 MiB benchmarked
/// alike: about 300 k appends/s, 1.3-1.4 M replayed/s).
const CACHE_BYTES: usize = 2 << 20;

/// Buffer failures. Any of these stops buffering: the health state turns unhealthy and
/// the log says why; nothing already stored is touched.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("the buffer {path} cannot be used: {message}")]
    Engine { path: PathBuf, message: String },
    #[error("the buffer {path} holds a corrupt record at sequence {seq}")]
    Corrupt { path: PathBuf, seq: u64 },
    #[error(
        "the buffer {path} cannot be reopened after a failed write ({message}); is its file system full? it is retried every second"
    )]
    Unavailable { path: PathBuf, message: String },
    #[error(
        "the buffer {path} is damaged ({problem}); nothing was changed. Keep it for inspection, move it aside and re-enroll the node (a new buffer starts its sequence numbers again, which the controller knows only under a new enrollment)"
    )]
    Damaged { path: PathBuf, problem: String },
}

/// Size and age limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_age: Duration,
    pub event_max_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
            max_age: Duration::from_secs(7 * 86_400),
            event_max_age: Duration::from_secs(30 * 86_400),
        }
    }
}

/// A record to append.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub class: RecordClass,
    pub at_ms: u64,
    pub body: Vec<u8>,
}

/// A buffered record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffered {
    pub seq: u64,
    pub at_ms: u64,
    pub class: RecordClass,
    pub body: Vec<u8>,
}

/// Figures for `/metrics`, `status` and heartbeats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    pub records: u64,
    pub bytes: u64,
    pub oldest_at_ms: Option<u64>,
    /// Highest sequence assigned so far.
    pub last_seq: u64,
    pub dropped_metrics: u64,
    pub dropped_events: u64,
    pub acked_total: u64,
}

#[derive(Debug)]
struct State {
    stats: BufferStats,
    last_age_check: Instant,
    /// When a limit drop was last logged at WARN (drops repeat every sample while full).
    last_drop_warning: Option<Instant>,
}

/// How often a sustained drop is logged at WARN; in between, at DEBUG.
const DROP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The durable buffer. Blocking: call from a blocking thread, never from async code.
#[derive(Debug)]
pub struct Buffer {
    path: PathBuf,
    /// `None` while the file could not be reopened after a failed write.
    db: RwLock<Option<Database>>,
    /// Set when a write failed (a full disk, an I/O error): the engine refuses everything
    /// after that until the database is reopened, which the next call tries.
    broken: AtomicBool,
    /// When the last reopen was tried; tried at most every [`REOPEN_EVERY`].
    last_reopen: Mutex<Option<Instant>>,
    limits: Limits,
    state: Mutex<State>,
}

/// How often a broken buffer tries to reopen its database.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

impl Buffered {
    /// A stored record as read back. One whose header is damaged comes back with an empty
    /// body (never JSON), so the uplink drops and counts it rather than stalling on it.
    fn read(path: &Path, seq: u64, value: &[u8]) -> Self {
        match decode(path, seq, value) {
            Ok((at_ms, class)) => Self {
                seq,
                at_ms,
                class,
                body: value[9..].to_vec(),
            },
            Err(e) => {
                tracing::error!(seq, error = %e, "a buffered record's header is damaged");
                Self {
                    seq,
                    at_ms: 0,
                    class: RecordClass::Metrics,
                    body: Vec::new(),
                }
            }
        }
    }
}

/// A record's time and class; a damaged header reads as the oldest possible metrics
/// record, so the limits drop (and count) it first and nothing stalls on it.
fn header(path: &Path, seq: u64, value: &[u8]) -> (u64, RecordClass) {
    decode(path, seq, value).unwrap_or((0, RecordClass::Metrics))
}

fn decode(path: &Path, seq: u64, value: &[u8]) -> Result<(u64, RecordClass), BufferError> {
    let corrupt = || BufferError::Corrupt {
        path: path.to_owned(),
        seq,
    };
    let at = u64::from_be_bytes(
        value
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?,
    );
    let class = value
        .get(8)
        .and_then(|&b| RecordClass::from_byte(b))
        .ok_or_else(corrupt)?;
    Ok((at, class))
}

impl Buffer {
    /// Opens (or creates) the buffer at `path`. Damage the engine meets (a truncated
    /// file, flipped bytes: it panics on some) and records numbered past the stored next
    /// sequence number are [`BufferError::Damaged`], never a panic or a record renumbered.
    pub fn open(path: &Path, limits: Limits) -> Result<Self, BufferError> {
        gantry_net::supervisor::catch_panic(|| Self::open_unguarded(path, limits)).unwrap_or_else(
            |problem| {
                Err(BufferError::Damaged {
                    path: path.to_owned(),
                    problem,
                })
            },
        )
    }

    fn open_unguarded(path: &Path, limits: Limits) -> Result<Self, BufferError> {
        let engine = |e: &dyn std::fmt::Display| BufferError::Engine {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| engine(&e))?;
        let txn = db.begin_write().map_err(|e| engine(&e))?;
        let mut stats = BufferStats::default();
        {
            let records = txn.open_table(RECORDS).map_err(|e| engine(&e))?;
            let meta = txn.open_table(META).map_err(|e| engine(&e))?;
            let get = |key: &str| -> Result<u64, BufferError> {
                Ok(meta
                    .get(key)
                    .map_err(|e| engine(&e))?
                    .map_or(0, |v| v.value()))
            };
            stats.last_seq = get("next_seq")?.saturating_sub(1);
            stats.dropped_metrics = get("dropped_metrics")?;
            stats.dropped_events = get("dropped_events")?;
            stats.records = records.len().map_err(|e| engine(&e))?;
            for entry in records.iter().map_err(|e| engine(&e))? {
                let (key, value) = entry.map_err(|e| engine(&e))?;
                let value = value.value();
                if key.value() == 0 || key.value() > stats.last_seq {
                    return Err(BufferError::Damaged {
                        path: path.to_owned(),
                        problem: format!(
                            "a record is numbered {} but the next sequence number is {}",
                            key.value(),
                            stats.last_seq + 1
                        ),
                    });
                }
                let (at, _) = header(path, key.value(), value);
                stats.oldest_at_ms.get_or_insert(at);
                stats.bytes += value.len() as u64 + RECORD_OVERHEAD - 9;
            }
        }
        txn.commit().map_err(|e| engine(&e))?;
        Ok(Self {
            path: path.to_owned(),
            db: RwLock::new(Some(db)),
            broken: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
            limits,
            state: Mutex::new(State {
                stats,
                last_age_check: Instant::now()
                    .checked_sub(AGE_CHECK_EVERY)
                    .unwrap_or_else(Instant::now),
                last_drop_warning: None,
            }),
        })
    }

    fn engine(&self, e: &dyn std::fmt::Display) -> BufferError {
        BufferError::Engine {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The database, reopened first when a write failed before. After a failed commit
    /// the file holds the last committed state, which is what the figures describe: a
    /// reopen loses nothing that was stored.
    fn database(&self) -> Result<RwLockReadGuard<'_, Option<Database>>, BufferError> {
        if self.broken.load(Ordering::SeqCst) {
            self.try_reopen();
        }
        let guard = self.db.read().expect("buffer database");
        if guard.is_some() {
            Ok(guard)
        } else {
            Err(BufferError::Unavailable {
                path: self.path.clone(),
                message: "closed after a failed write".to_owned(),
            })
        }
    }

    fn try_reopen(&self) {
        {
            let mut last = self.last_reopen.lock().expect("buffer reopen");
            if last.is_some_and(|at| at.elapsed() < REOPEN_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut db = self.db.write().expect("buffer database");
        if !self.broken.load(Ordering::SeqCst) {
            return;
        }
        // The engine refuses every call after an I/O error: close it before opening anew.
        drop(db.take());
        match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&self.path)
        {
            Ok(fresh) => {
                *db = Some(fresh);
                self.broken.store(false, Ordering::SeqCst);
                tracing::info!(path = %self.path.display(), "telemetry buffer reopened after a failed write");
            }
            Err(e) => {
                tracing::debug!(path = %self.path.display(), error = %e, "telemetry buffer cannot be reopened yet");
            }
        }
    }

    /// Writes the drop counters into `meta`, in the transaction that changed them.
    fn persist_drops(
        &self,
        meta: &mut redb::Table<'_, &str, u64>,
        stats: &BufferStats,
    ) -> Result<(), BufferError> {
        meta.insert("dropped_metrics", stats.dropped_metrics)
            .map_err(|e| self.engine(&e))?;
        meta.insert("dropped_events", stats.dropped_events)
            .map_err(|e| self.engine(&e))?;
        Ok(())
    }

    /// Marks the database for reopening after a failed write.
    fn failed<T>(&self, result: Result<T, BufferError>) -> Result<T, BufferError> {
        if result.is_err() {
            self.broken.store(true, Ordering::SeqCst);
        }
        result
    }

    pub fn stats(&self) -> BufferStats {
        self.state.lock().expect("buffer state").stats
    }

    /// Appends records durably; returns the sequence numbers they got. Records that
    /// cannot be written (a full disk) are counted as dropped, by class, and get no
    /// sequence number; the buffer reopens itself once writes succeed again.
    pub fn append(&self, records: &[NewRecord], now_ms: u64) -> Result<Range<u64>, BufferError> {
        let result = self.failed(self.append_unguarded(records, now_ms));
        if result.is_err() {
            let mut state = self.state.lock().expect("buffer state");
            for record in records {
                match record.class {
                    RecordClass::Metrics => state.stats.dropped_metrics += 1,
                    RecordClass::Event => state.stats.dropped_events += 1,
                }
            }
        }
        result
    }

    fn append_unguarded(
        &self,
        records: &[NewRecord],
        now_ms: u64,
    ) -> Result<Range<u64>, BufferError> {
        let mut state = self.state.lock().expect("buffer state");
        let db = self.database()?;
        let db = db.as_ref().expect("checked");
        let txn = db.begin_write().map_err(|e| self.engine(&e))?;
        let first = state.stats.last_seq + 1;
        let mut stats = state.stats;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.engine(&e))?;
            let mut value = Vec::new();
            for (i, record) in records.iter().enumerate() {
                value.clear();
                value.extend_from_slice(&record.at_ms.to_be_bytes());
                value.push(record.class.as_byte());
                value.extend_from_slice(&record.body);
                table
                    .insert(first + i as u64, value.as_slice())
                    .map_err(|e| self.engine(&e))?;
                stats.bytes += record.body.len() as u64 + RECORD_OVERHEAD;
                stats.records += 1;
                stats.oldest_at_ms.get_or_insert(record.at_ms);
            }
            stats.last_seq = first + records.len() as u64 - 1;
            let check_age = state.last_age_check.elapsed() >= AGE_CHECK_EVERY;
            let dropped = self.enforce_limits(&mut table, &mut stats, now_ms, check_age)?;
            if dropped > 0 {
                let warn = state
                    .last_drop_warning
                    .is_none_or(|at| at.elapsed() >= DROP_WARNING_EVERY);
                if warn {
                    state.last_drop_warning = Some(Instant::now());
                    tracing::warn!(
                        dropped_metrics_total = stats.dropped_metrics,
                        dropped_events_total = stats.dropped_events,
                        buffered = stats.records,
                        max_bytes = self.limits.max_bytes,
                        "telemetry buffer over its limits: dropping the oldest records (metrics before events); is the controller reachable?"
                    );
                } else {
                    tracing::debug!(dropped, "telemetry buffer still over its limits");
                }
            }
            if check_age {
                state.last_age_check = Instant::now();
            }
            let mut meta = txn.open_table(META).map_err(|e| self.engine(&e))?;
            meta.insert("next_seq", stats.last_seq + 1)
                .map_err(|e| self.engine(&e))?;
            self.persist_drops(&mut meta, &stats)?;
        }
        txn.commit().map_err(|e| self.engine(&e))?;
        state.stats = stats;
        Ok(first..first + records.len() as u64)
    }

    fn enforce_limits(
        &self,
        table: &mut redb::Table<'_, u64, &[u8]>,
        stats: &mut BufferStats,
        now_ms: u64,
        check_age: bool,
    ) -> Result<usize, BufferError> {
        let mut victims: Vec<(u64, RecordClass, u64)> = Vec::new();
        if check_age {
            let metrics_cutoff = now_ms.saturating_sub(self.limits.max_age.as_millis() as u64);
            let events_cutoff = now_ms.saturating_sub(self.limits.event_max_age.as_millis() as u64);
            for entry in table.iter().map_err(|e| self.engine(&e))? {
                let (key, value) = entry.map_err(|e| self.engine(&e))?;
                let (at, class) = header(&self.path, key.value(), value.value());
                if at >= metrics_cutoff.max(events_cutoff) {
                    break;
                }
                let cutoff = if class == RecordClass::Metrics {
                    metrics_cutoff
                } else {
                    events_cutoff
                };
                if at < cutoff {
                    victims.push((key.value(), class, value.value().len() as u64));
                }
            }
        }
        let mut bytes = stats.bytes
            - victims
                .iter()
                .map(|v| v.2 + RECORD_OVERHEAD - 9)
                .sum::<u64>();
        if bytes > self.limits.max_bytes {
            // Oldest metrics first, then (only if no metrics are left) oldest events.
            for class in [RecordClass::Metrics, RecordClass::Event] {
                for entry in table.iter().map_err(|e| self.engine(&e))? {
                    if bytes <= self.limits.max_bytes {
                        break;
                    }
                    let (key, value) = entry.map_err(|e| self.engine(&e))?;
                    let seq = key.value();
                    let (_, c) = header(&self.path, seq, value.value());
                    if c == class && !victims.iter().any(|v| v.0 == seq) {
                        let size = value.value().len() as u64;
                        victims.push((seq, c, size));
                        bytes -= size + RECORD_OVERHEAD - 9;
                    }
                }
            }
        }
        if victims.is_empty() {
            return Ok(0);
        }
        for (seq, class, size) in &victims {
            table.remove(*seq).map_err(|e| self.engine(&e))?;
            stats.records -= 1;
            stats.bytes -= size + RECORD_OVERHEAD - 9;
            match class {
                RecordClass::Metrics => stats.dropped_metrics += 1,
                RecordClass::Event => stats.dropped_events += 1,
            }
        }
        stats.oldest_at_ms = table
            .first()
            .map_err(|e| self.engine(&e))?
            .map(|(key, value)| header(&self.path, key.value(), value.value()).0);
        Ok(victims.len())
    }

    /// The oldest records, in order: at most `max_records` and about `max_bytes`.
    pub fn peek(&self, max_records: usize, max_bytes: usize) -> Result<Vec<Buffered>, BufferError> {
        self.failed(self.peek_unguarded(max_records, max_bytes))
    }

    fn peek_unguarded(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Buffered>, BufferError> {
        let db = self.database()?;
        let txn = db
            .as_ref()
            .expect("checked")
            .begin_read()
            .map_err(|e| self.engine(&e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.engine(&e))?;
        let mut out = Vec::new();
        let mut bytes = 0;
        for entry in table.iter().map_err(|e| self.engine(&e))? {
            if out.len() >= max_records || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            let (key, value) = entry.map_err(|e| self.engine(&e))?;
            let value = value.value();
            bytes += value.len();
            out.push(Buffered::read(&self.path, key.value(), value));
        }
        Ok(out)
    }

    /// Records after sequence `after`, in order: at most `max_records` and about
    /// `max_bytes` (at least one). Nothing is deleted.
    pub fn read_after(
        &self,
        after: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Buffered>, BufferError> {
        let db = self.database()?;
        let txn = db
            .as_ref()
            .expect("checked")
            .begin_read()
            .map_err(|e| self.engine(&e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.engine(&e))?;
        let mut out = Vec::new();
        let mut bytes = 0;
        let start = after.saturating_add(1);
        for entry in table.range(start..).map_err(|e| self.engine(&e))? {
            let (key, value) = entry.map_err(|e| self.engine(&e))?;
            let value = value.value();
            if out.len() >= max_records || (bytes + value.len() > max_bytes && !out.is_empty()) {
                break;
            }
            bytes += value.len();
            out.push(Buffered::read(&self.path, key.value(), value));
        }
        Ok(out)
    }

    /// The sequence number of the oldest record held; `None` when it holds none.
    pub fn first_seq(&self) -> Result<Option<u64>, BufferError> {
        let db = self.database()?;
        let txn = db
            .as_ref()
            .expect("checked")
            .begin_read()
            .map_err(|e| self.engine(&e))?;
        let table = txn.open_table(RECORDS).map_err(|e| self.engine(&e))?;
        Ok(table
            .first()
            .map_err(|e| self.engine(&e))?
            .map(|(key, _)| key.value()))
    }

    /// Drops records that can never be sent (their body is not JSON: damaged on disk),
    /// counting each as dropped in its class, so the uplink moves past them instead of
    /// offering the same record forever. Returns how many were removed.
    pub fn discard_unsendable(&self, seqs: &[u64]) -> Result<u64, BufferError> {
        self.failed(self.discard_unguarded(seqs))
    }

    fn discard_unguarded(&self, seqs: &[u64]) -> Result<u64, BufferError> {
        let mut state = self.state.lock().expect("buffer state");
        let db = self.database()?;
        let txn = db
            .as_ref()
            .expect("checked")
            .begin_write()
            .map_err(|e| self.engine(&e))?;
        let mut stats = state.stats;
        let mut removed = 0;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.engine(&e))?;
            for &seq in seqs {
                let Some(value) = table.remove(seq).map_err(|e| self.engine(&e))? else {
                    continue;
                };
                let value = value.value();
                let class = Buffered::read(&self.path, seq, value).class;
                stats.records -= 1;
                stats.bytes -= value.len() as u64 + RECORD_OVERHEAD - 9;
                match class {
                    RecordClass::Metrics => stats.dropped_metrics += 1,
                    RecordClass::Event => stats.dropped_events += 1,
                }
                removed += 1;
            }
            stats.oldest_at_ms = table
                .first()
                .map_err(|e| self.engine(&e))?
                .map(|(key, value)| header(&self.path, key.value(), value.value()).0);
            let mut meta = txn.open_table(META).map_err(|e| self.engine(&e))?;
            self.persist_drops(&mut meta, &stats)?;
        }
        txn.commit().map_err(|e| self.engine(&e))?;
        state.stats = stats;
        Ok(removed)
    }

    /// Deletes every record with a sequence up to `through` (the controller stored them).
    pub fn ack(&self, through: u64) -> Result<u64, BufferError> {
        self.failed(self.ack_unguarded(through))
    }

    fn ack_unguarded(&self, through: u64) -> Result<u64, BufferError> {
        let mut state = self.state.lock().expect("buffer state");
        let db = self.database()?;
        let txn = db
            .as_ref()
            .expect("checked")
            .begin_write()
            .map_err(|e| self.engine(&e))?;
        let mut stats = state.stats;
        let mut removed = 0;
        {
            let mut table = txn.open_table(RECORDS).map_err(|e| self.engine(&e))?;
            let doomed: Vec<(u64, u64)> = table
                .range(..=through)
                .map_err(|e| self.engine(&e))?
                .map(|entry| entry.map(|(k, v)| (k.value(), v.value().len() as u64)))
                .collect::<Result<_, _>>()
                .map_err(|e| self.engine(&e))?;
            for (seq, size) in doomed {
                table.remove(seq).map_err(|e| self.engine(&e))?;
                stats.bytes -= size + RECORD_OVERHEAD - 9;
                stats.records -= 1;
                removed += 1;
            }
            stats.oldest_at_ms = table
                .first()
                .map_err(|e| self.engine(&e))?
                .map(|(key, value)| header(&self.path, key.value(), value.value()).0);
        }
        txn.commit().map_err(|e| self.engine(&e))?;
        stats.acked_total += removed;
        state.stats = stats;
        Ok(removed)
    }
}

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(class: RecordClass, at_ms: u64, size: usize) -> NewRecord {
        NewRecord {
            class,
            at_ms,
            body: vec![b'x'; size],
        }
    }

    #[test]
    fn sequences_continue_across_reopen_and_acks_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        {
            let b = Buffer::open(&path, Limits::default()).unwrap();
            assert_eq!(
                b.append(
                    &[
                        rec(RecordClass::Metrics, 1, 10),
                        rec(RecordClass::Event, 2, 10)
                    ],
                    2
                )
                .unwrap(),
                1..3
            );
            assert_eq!(b.ack(1).unwrap(), 1);
        }
        let b = Buffer::open(&path, Limits::default()).unwrap();
        assert_eq!(b.stats().records, 1);
        assert_eq!(b.stats().oldest_at_ms, Some(2));
        assert_eq!(
            b.append(&[rec(RecordClass::Metrics, 3, 10)], 3).unwrap(),
            3..4,
            "sequences never repeat"
        );
        let seqs: Vec<u64> = b.peek(10, 1 << 20).unwrap().iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        b.ack(3).unwrap();
        assert_eq!(b.stats().records, 0);
        assert_eq!(b.stats().oldest_at_ms, None);
        assert_eq!(
            b.append(&[rec(RecordClass::Metrics, 4, 10)], 4).unwrap(),
            4..5
        );
    }

    #[test]
    fn over_the_byte_limit_metrics_go_first_and_events_stay() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 2000,
            ..Limits::default()
        };
        let b = Buffer::open(&dir.path().join("b.redb"), limits).unwrap();
        b.append(&[rec(RecordClass::Event, 1, 100)], 1).unwrap();
        for i in 0..30 {
            b.append(&[rec(RecordClass::Metrics, 2 + i, 100)], 2 + i)
                .unwrap();
        }
        let stats = b.stats();
        assert!(stats.bytes <= 2000, "{stats:?}");
        assert!(stats.dropped_metrics > 0);
        assert_eq!(stats.dropped_events, 0);
        let kept = b.peek(100, 1 << 20).unwrap();
        assert_eq!(
            kept[0].class,
            RecordClass::Event,
            "the event is kept longest"
        );
        assert_eq!(kept[0].seq, 1);
        assert_eq!(kept.last().unwrap().seq, 31, "the newest metrics are kept");
    }

    #[test]
    fn events_go_only_when_no_metrics_are_left() {
        let dir = tempfile::tempdir().unwrap();
        let b = Buffer::open(
            &dir.path().join("b.redb"),
            Limits {
                max_bytes: 500,
                ..Limits::default()
            },
        )
        .unwrap();
        for i in 0..10 {
            b.append(&[rec(RecordClass::Event, i, 100)], i).unwrap();
        }
        let stats = b.stats();
        assert!(stats.dropped_events > 0 && stats.bytes <= 500, "{stats:?}");
        assert_eq!(b.peek(100, 1 << 20).unwrap().last().unwrap().seq, 10);
    }

    #[test]
    fn old_records_age_out_by_class() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits {
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(60),
            event_max_age: Duration::from_secs(3600),
        };
        let b = Buffer::open(&dir.path().join("b.redb"), limits).unwrap();
        let now = 10_000_000;
        b.append(
            &[
                rec(RecordClass::Metrics, now - 120_000, 10),
                rec(RecordClass::Event, now - 120_000, 10),
                rec(RecordClass::Metrics, now, 10),
            ],
            now,
        )
        .unwrap();
        let kept: Vec<RecordClass> = b
            .peek(10, 1 << 20)
            .unwrap()
            .iter()
            .map(|r| r.class)
            .collect();
        assert_eq!(kept, vec![RecordClass::Event, RecordClass::Metrics]);
        assert_eq!(b.stats().dropped_metrics, 1);
    }

    #[test]
    fn drop_counts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.redb");
        let limits = Limits {
            max_bytes: 300,
            ..Limits::default()
        };
        {
            let b = Buffer::open(&path, limits).unwrap();
            for i in 0..10 {
                b.append(&[rec(RecordClass::Metrics, i, 100)], i).unwrap();
            }
        }
        let b = Buffer::open(&path, limits).unwrap();
        assert!(b.stats().dropped_metrics >= 7);
        assert_eq!(b.stats().last_seq, 10);
    }
}
