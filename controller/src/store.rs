//! The controller's state, in one embedded `redb` file (`store.redb` in the controller
//! directory). All state goes through this module, so moving it to another engine is
//! this module's work alone.
//!
//! Tables:
//! - `tokens`: token id → [`TokenRecord`] (JSON). Single use: `used_at_ms` is set in the
//!   same transaction that creates the node.
//! - `identities`: certificate SHA-256 → [`IdentityRecord`] (JSON). Every certificate
//!   the CA issued; a connection's identity is looked up here, and revocation marks it.
//! - `nodes`: node name → [`NodeRecord`] (JSON).
//! - `telemetry`: `node id << 64 | sequence` (`u128`) → `at_ms: u64 BE | class: u8 |
//!   body JSON`. A node id is allocated per enrollment (`meta.next_node_id`), so a node
//!   enrolled again under the same name starts a fresh sequence without colliding with
//!   its earlier life; numeric keys also keep inserts cheap. A (node, sequence) already
//!   present counts as a duplicate, so redelivery never double-counts. Records older than
//!   the retention are deleted, and the node's `low_water` remembers the highest sequence
//!   deleted, so a late redelivery of a deleted record is recognized as a duplicate too.
//! - `model_assignments`: (node name, model name) → bundle id the node should run for
//!   that model; `bundles`: bundle id hex → `BundleInfo` (JSON). Changed with the rollout
//!   that makes an assignment and its audit entries in one transaction
//!   (`commit_assignments`); the bundle files stay in `<home>/bundles/`. The table
//!   `assignments` (node name → bundle id) of controllers that knew one model per node
//!   is moved into it at open, each under its bundle's name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gantry_shared::protocol::admin::{RecordInfo, Role};
use gantry_shared::protocol::delivery::BundleInfo;
use gantry_shared::protocol::telemetry::{Batch, RecordClass};
use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
const IDENTITIES: TableDefinition<&str, &[u8]> = TableDefinition::new("identities");
const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const TELEMETRY: TableDefinition<u128, &[u8]> = TableDefinition::new("telemetry");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Rollout number → the rollout record (JSON), rewritten on every change.
const ROLLOUTS: TableDefinition<u64, &[u8]> = TableDefinition::new("rollouts");
/// Audit sequence number → entry (JSON); appended only (`audit.rs`).
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// `"head"` → the last audit entry's `[seq, hash]` (JSON), written with each append.
const AUDIT_HEAD: TableDefinition<&str, &[u8]> = TableDefinition::new("audit_head");
/// `"trust.json"` → SHA-256 of the controller's trust policy last recorded in the audit log.
const AUDITED_POLICY: TableDefinition<&str, &str> = TableDefinition::new("audited_policy");
/// Node → the `[active, refused]` bundle ids last recorded in the audit log for it.
const AUDITED_BUNDLES: TableDefinition<&str, &[u8]> = TableDefinition::new("audited_bundles");
/// (Node name, model name) → the bundle id it should run for that model (`sha256:<hex>`).
const ASSIGNMENTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("model_assignments");
/// Node name → bundle id: the assignments of controllers that knew one model per node,
/// moved into [`ASSIGNMENTS`] at open.
const LEGACY_ASSIGNMENTS: TableDefinition<&str, &str> = TableDefinition::new("assignments");
/// Bundle id hex → its `BundleInfo` (JSON, `assigned` empty), written once when the
/// bundle is kept; the bundle file itself stays in `<home>/bundles/`.
const BUNDLES: TableDefinition<&str, &[u8]> = TableDefinition::new("bundles");
/// Closed drift windows nodes reported: (model, window end ms, node) → JSON
/// [`gantry_shared::monitoring::ModelWindow`].
const MODEL_WINDOWS: TableDefinition<(&str, u64, &str), &[u8]> =
    TableDefinition::new("model_windows");
/// Closed feedback windows nodes reported: (model, window end ms, node) → JSON
/// [`gantry_shared::monitoring::quality::QualityWindow`].
const QUALITY_WINDOWS: TableDefinition<(&str, u64, &str), &[u8]> =
    TableDefinition::new("quality_windows");
/// Captured request/answer pairs nodes sent: (model, captured at ms, node, sequence) →
/// JSON [`gantry_shared::monitoring::capture::CapturedPair`].
const CAPTURES: TableDefinition<(&str, u64, &str, u64), &[u8]> = TableDefinition::new("captures");
/// Labels fed back for captured requests: (model, node, request id) → JSON
/// [`StoredLabel`].
const CAPTURE_LABELS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("capture_labels");

/// A captured request's label as kept, with the end of the window that carried it (for
/// expiry).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StoredLabel {
    bundle: String,
    truth: gantry_shared::monitoring::quality::Truth,
    end_ms: u64,
}

/// Per (node, model): the end of the latest window audited and whether it had drifted,
/// so the audit log records each drift alert and its clearing once.
/// (node, at ms) → the node's health (JSON) when its state or the set of its reasons
/// changed, as heartbeats told: the console's health history.
const HEALTH_CHANGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("health_changes");
/// node → the highest telemetry sequence number remote-write has delivered (or passed
/// over: events, records the receiver refused for good).
const REMOTE_WRITE_CURSORS: TableDefinition<&str, u64> =
    TableDefinition::new("remote_write_cursors");
/// The same for OTLP export.
const OTLP_CURSORS: TableDefinition<&str, u64> = TableDefinition::new("otlp_cursors");
const DRIFT_ALERTS: TableDefinition<(&str, &str), (u64, bool)> =
    TableDefinition::new("drift_alerts");

fn key(id: u64, seq: u64) -> u128 {
    u128::from(id) << 64 | u128::from(seq)
}

/// A telemetry export, each with its own cursor per node: how far it has delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    RemoteWrite,
    Otlp,
}

impl Export {
    fn cursors(self) -> TableDefinition<'static, &'static str, u64> {
        match self {
            Self::RemoteWrite => REMOTE_WRITE_CURSORS,
            Self::Otlp => OTLP_CURSORS,
        }
    }
}

/// What [`Store::apply_retention`] deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub deleted: u64,
    /// Per export asked about: records deleted before it delivered them.
    pub unexported: Vec<(Export, u64)>,
}

/// One node's part of an export batch ([`Store::export_batch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportChunk {
    pub node: String,
    /// Metrics records' bodies by sequence number.
    pub metrics: Vec<(u64, Vec<u8>)>,
    /// The last sequence number looked at, where the node's cursor goes once delivered.
    pub last_seq: u64,
}

/// Store failures: the controller cannot vouch for its state. Transient for clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store failed: {0}")]
    Engine(String),
    #[error("a stored record is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the store {path} is damaged ({problem}); nothing was changed: restore it from a backup, or keep it as evidence and start on a copy"
    )]
    Damaged { path: PathBuf, problem: String },
    #[error(
        "the store {path} {problem}: it is not the controller's evidence (point --dir at the controller directory or a copy of its store)"
    )]
    NotEvidence {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("the store was opened read-only, as evidence; it cannot be changed")]
    ReadOnly,
}

/// A change of one node's desired bundle for one model: `None` takes the assignment away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub node: String,
    pub model: String,
    pub bundle: Option<String>,
}

/// Who runs what: (node, model) → bundle id.
pub type Assignments = BTreeMap<(String, String), String>;

/// Why one node's batch in a group commit was not stored (the others' are unaffected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("telemetry for unknown node {0}")]
    UnknownNode(String),
}

/// Runs `f`, turning a panic inside the storage engine (which is how it meets some kinds
/// of damage: a truncated file, flipped bits) into [`StoreError::Damaged`] naming `path`.
/// The default panic message is not printed: the error says what happened.
pub fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    gantry_net::supervisor::catch_panic(f).unwrap_or_else(|problem| {
        Err(StoreError::Damaged {
            path: path.to_owned(),
            problem,
        })
    })
}

/// What opening the store at `path` failed with: damage named as such, with the file.
fn open_error(path: &Path, e: redb::DatabaseError) -> StoreError {
    use redb::{DatabaseError, StorageError as S};
    match e {
        DatabaseError::Storage(S::Corrupted(problem)) => StoreError::Damaged {
            path: path.to_owned(),
            problem,
        },
        DatabaseError::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            StoreError::Damaged {
                path: path.to_owned(),
                problem: format!("it ends early: {io}"),
            }
        }
        other => StoreError::Engine(format!("{}: {other}", path.display())),
    }
}

/// The engine's handle: writable for the daemon, read-only for evidence.
enum Db {
    Writable(Database),
    ReadOnly(ReadOnlyDatabase),
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Writable(_) => "Db::Writable",
            Self::ReadOnly(_) => "Db::ReadOnly",
        })
    }
}

macro_rules! engine_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Engine(e.to_string())
            }
        }
    )*};
}
engine_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records serialize")
}

fn from_json<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The record of node `name` in an open nodes table.
fn node_in(
    nodes: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<NodeRecord>, StoreError> {
    nodes.get(name)?.map(|v| from_json(v.value())).transpose()
}

/// Moves the assignments of a controller that knew one model per node (node → bundle
/// id) into the per-model table, each under its bundle's recorded name, in the open
/// transaction; an assignment the per-model table holds already wins.
fn move_legacy_assignments(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let legacy: Vec<(String, String)> = txn
        .open_table(LEGACY_ASSIGNMENTS)?
        .iter()?
        .map(|entry| {
            let (k, v) = entry?;
            Ok((k.value().to_owned(), v.value().to_owned()))
        })
        .collect::<Result<_, StoreError>>()?;
    if legacy.is_empty() {
        txn.delete_table(LEGACY_ASSIGNMENTS)?;
        return Ok(());
    }
    let bundles = txn.open_table(BUNDLES)?;
    let mut table = txn.open_table(ASSIGNMENTS)?;
    for (node, id) in &legacy {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        let model = bundles
            .get(hex)?
            .map(|v| from_json::<BundleInfo>(v.value()))
            .transpose()?
            .map(|info| info.name)
            .unwrap_or_default();
        if table.get((node.as_str(), model.as_str()))?.is_none() {
            table.insert((node.as_str(), model.as_str()), id.as_str())?;
        }
    }
    drop((bundles, table));
    txn.delete_table(LEGACY_ASSIGNMENTS)?;
    tracing::info!(
        assignments = legacy.len(),
        "assignments moved to the per-model table (each under its bundle's name)"
    );
    Ok(())
}

/// A join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub secret_sha256: String,
    pub labels: BTreeMap<String, String>,
    pub created_by: String,
    pub expires_at_ms: u64,
    pub used_at_ms: Option<u64>,
    pub used_by: Option<String>,
}

/// Who a certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Principal {
    Node { name: String },
    Admin { name: String, role: Role },
}

/// A certificate the CA issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityRecord {
    pub principal: Principal,
    pub issued_at_ms: u64,
    pub revoked: bool,
    /// When the certificate expires (Unix ms); absent for certificates issued before
    /// certificates had lifetimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// What the node said in its last heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HeartbeatInfo {
    pub at_ms: u64,
    pub agent_version: String,
    pub buffered_records: u64,
    pub last_seq: u64,
    pub dropped_metrics: u64,
    pub dropped_events: u64,
    pub health: Option<gantry_shared::health::Health>,
    pub bundles: gantry_shared::protocol::delivery::NodeBundles,
    pub model: Option<gantry_shared::protocol::heartbeat::ModelReport>,
    /// Every model the node serves (empty from nodes that send `model` only).
    pub models: Vec<gantry_shared::protocol::heartbeat::ModelReport>,
}

impl HeartbeatInfo {
    /// The figures of the model served from bundle `id`.
    pub fn model_for(&self, id: &str) -> Option<&gantry_shared::protocol::heartbeat::ModelReport> {
        gantry_shared::protocol::heartbeat::model_for(&self.models, self.model.as_ref(), id)
    }
}

/// An enrolled node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub enrolled_at_ms: u64,
    pub fingerprint: String,
    /// The node's public key (hex uncompressed P-256 point), as it enrolled with it: what
    /// its signed telemetry exports verify against.
    pub public_key: String,
    pub revoked: bool,
    pub last_seen_ms: Option<u64>,
    pub heartbeat: HeartbeatInfo,
    pub last_seq: u64,
    pub records_stored: u64,
    /// Highest sequence deleted by retention.
    pub low_water: u64,
    /// Telemetry key space of this enrollment.
    pub id: u64,
    /// Ids of earlier enrollments under this name, whose records retention still clears.
    pub retired_ids: Vec<u64>,
    /// Set while the node takes no new rollouts.
    pub cordon: Option<gantry_shared::protocol::admin::Cordon>,
}

/// Why an enrollment was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollRefusal {
    #[error("unknown join token")]
    UnknownToken,
    #[error("the join token was already used{}", by.as_deref().map(|n| format!(" (by node {n})")).unwrap_or_default())]
    TokenUsed { by: Option<String> },
    #[error("the join token expired")]
    TokenExpired,
    #[error(
        "node name {0:?} is already enrolled; revoke it first (`gantry fleet revoke {0}`) or enroll with another --name"
    )]
    NameTaken(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A certificate just issued to a node: its SHA-256, the key it certifies (hex P-256
/// point) and when it expires (Unix ms).
#[derive(Debug, Clone, Copy)]
pub struct IssuedCertificate<'a> {
    pub fingerprint: &'a str,
    pub public_key: &'a str,
    pub expires_at_ms: u64,
}

/// Outcome of storing one batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub stored: u64,
    pub duplicates: u64,
    pub through_seq: u64,
}

/// Chains `entries` after the stored head inside `txn`, and moves the head.
fn append_audit_in(
    txn: &redb::WriteTransaction,
    entries: Vec<gantry_shared::audit::NewEntry>,
) -> Result<Vec<gantry_shared::audit::Entry>, StoreError> {
    let mut head_table = txn.open_table(AUDIT_HEAD)?;
    let (mut seq, mut hash): (u64, String) = match head_table.get("head")? {
        Some(v) => from_json(v.value())?,
        None => (0, gantry_shared::audit::GENESIS.to_owned()),
    };
    let mut table = txn.open_table(AUDIT)?;
    let mut stored = Vec::with_capacity(entries.len());
    for new in entries {
        let entry = gantry_shared::audit::chain(seq, &hash, new);
        table.insert(entry.seq, to_json(&entry).as_slice())?;
        seq = entry.seq;
        hash.clone_from(&entry.hash);
        stored.push(entry);
    }
    head_table.insert("head", to_json(&(seq, &hash)).as_slice())?;
    Ok(stored)
}

/// The controller store.
#[derive(Debug)]
pub struct Store {
    db: Db,
    path: PathBuf,
    /// The private copy an unclean evidence store is read from; removed with the store.
    _copy: Option<tempfile::NamedTempFile>,
}

impl Store {
    /// Opens (or creates) the store at `path` and its tables, checking every page of an
    /// existing one first: damage is found here, with the file named, not by a crash later.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        guarded(path, || Self::open_unguarded(path))
    }

    fn open_unguarded(path: &Path) -> Result<Self, StoreError> {
        // The cache serves reads of recent telemetry and the small tables; writes are
        // appends. 64 MiB keeps the controller's memory bounded under sustained ingest.
        let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let mut db = Database::builder()
            .set_cache_size(64 << 20)
            .create(path)
            .map_err(|e| open_error(path, e))?;
        if existed
            && !db.check_integrity().map_err(|e| StoreError::Damaged {
                path: path.to_owned(),
                problem: e.to_string(),
            })?
        {
            tracing::warn!(path = %path.display(), "the store was not closed cleanly; repaired");
        }
        let txn = db.begin_write()?;
        txn.open_table(TOKENS)?;
        txn.open_table(IDENTITIES)?;
        txn.open_table(NODES)?;
        txn.open_table(TELEMETRY)?;
        txn.open_table(META)?;
        txn.open_table(ROLLOUTS)?;
        txn.open_table(AUDIT)?;
        txn.open_table(AUDIT_HEAD)?;
        txn.open_table(AUDITED_BUNDLES)?;
        txn.open_table(AUDITED_POLICY)?;
        txn.open_table(ASSIGNMENTS)?;
        txn.open_table(BUNDLES)?;
        txn.open_table(MODEL_WINDOWS)?;
        txn.open_table(DRIFT_ALERTS)?;
        txn.open_table(QUALITY_WINDOWS)?;
        txn.open_table(CAPTURES)?;
        txn.open_table(CAPTURE_LABELS)?;
        txn.open_table(HEALTH_CHANGES)?;
        txn.open_table(REMOTE_WRITE_CURSORS)?;
        txn.open_table(OTLP_CURSORS)?;
        move_legacy_assignments(&txn)?;
        txn.commit()?;
        Ok(Self {
            db: Db::Writable(db),
            path: path.to_owned(),
            _copy: None,
        })
    }

    /// Opens the store at `path` read-only, as evidence: it must exist and hold a store;
    /// nothing is created and no byte of the file changes. A store that was not closed
    /// cleanly (its controller killed) needs a repair to be read: that repair is made on a
    /// private copy, never on the file. Reads through such a store go through
    /// [`Store::guarded`].
    pub fn open_evidence(path: &Path) -> Result<Self, StoreError> {
        let not = |problem| StoreError::NotEvidence {
            path: path.to_owned(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(|_| not("does not exist"))?;
        if !meta.is_file() {
            return Err(not("is not a file"));
        }
        if meta.len() == 0 {
            return Err(not("is empty"));
        }
        guarded(path, || {
            match redb::Builder::new()
                .set_cache_size(64 << 20)
                .open_read_only(path)
            {
                Ok(db) => Ok(Self {
                    db: Db::ReadOnly(db),
                    path: path.to_owned(),
                    _copy: None,
                }),
                Err(redb::DatabaseError::RepairAborted) => Self::open_repaired_copy(path),
                Err(e) => Err(open_error(path, e)),
            }
        })
    }

    fn open_repaired_copy(path: &Path) -> Result<Self, StoreError> {
        tracing::info!(path = %path.display(), "the store was not closed cleanly; reading a repaired private copy, the file itself stays untouched");
        let io =
            |e: std::io::Error| StoreError::Engine(format!("cannot copy {}: {e}", path.display()));
        let copy = tempfile::NamedTempFile::new().map_err(io)?;
        std::fs::copy(path, copy.path()).map_err(io)?;
        let db = Database::builder()
            .set_cache_size(64 << 20)
            .create(copy.path())
            .map_err(|e| open_error(path, e))?;
        Ok(Self {
            db: Db::Writable(db),
            path: path.to_owned(),
            _copy: Some(copy),
        })
    }

    /// Runs `f` over this store, a panic of the engine on damaged data becoming an error.
    pub fn guarded<T>(
        &self,
        f: impl FnOnce(&Self) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        guarded(&self.path, || f(self))
    }

    fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        Ok(match &self.db {
            Db::Writable(db) => db.begin_read()?,
            Db::ReadOnly(db) => db.begin_read()?,
        })
    }

    fn write(&self) -> Result<redb::WriteTransaction, StoreError> {
        match &self.db {
            Db::Writable(db) => Ok(db.begin_write()?),
            Db::ReadOnly(_) => Err(StoreError::ReadOnly),
        }
    }

    pub fn put_identity(
        &self,
        fingerprint: &str,
        record: &IdentityRecord,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(IDENTITIES)?
            .insert(fingerprint, to_json(record).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn identity(&self, fingerprint: &str) -> Result<Option<IdentityRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(IDENTITIES)?;
        table
            .get(fingerprint)?
            .map(|v| from_json(v.value()))
            .transpose()
    }

    pub fn put_token(&self, id: &str, record: &TokenRecord) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(TOKENS)?
            .insert(id, to_json(record).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Redeems a token for node `name` and records the node and its certificate, all in
    /// one transaction. `secret_sha256` is the hash of the secret presented.
    pub fn enroll(
        &self,
        token_id: &str,
        secret_sha256: &str,
        name: &str,
        certificate: &IssuedCertificate<'_>,
        now_ms: u64,
    ) -> Result<NodeRecord, EnrollRefusal> {
        let IssuedCertificate {
            fingerprint,
            public_key,
            expires_at_ms,
        } = *certificate;
        let txn = self.write()?;
        let node = {
            let mut tokens = txn.open_table(TOKENS).map_err(StoreError::from)?;
            let mut token: TokenRecord = match tokens.get(token_id).map_err(StoreError::from)? {
                Some(v) => from_json(v.value())?,
                None => return Err(EnrollRefusal::UnknownToken),
            };
            // Constant-time comparison is not needed: the stored value is a hash.
            if token.secret_sha256 != secret_sha256 {
                return Err(EnrollRefusal::UnknownToken);
            }
            if token.used_at_ms.is_some() {
                return Err(EnrollRefusal::TokenUsed { by: token.used_by });
            }
            if now_ms > token.expires_at_ms {
                return Err(EnrollRefusal::TokenExpired);
            }
            let mut nodes = txn.open_table(NODES).map_err(StoreError::from)?;
            let mut retired_ids = Vec::new();
            if let Some(existing) = nodes.get(name).map_err(StoreError::from)? {
                let existing: NodeRecord = from_json(existing.value())?;
                if !existing.revoked {
                    return Err(EnrollRefusal::NameTaken(name.to_owned()));
                }
                retired_ids = existing.retired_ids;
                retired_ids.push(existing.id);
                // The new enrollment numbers its records from 1 again: each export
                // starts it from there, not from where the old one had got to.
                for export in [Export::RemoteWrite, Export::Otlp] {
                    txn.open_table(export.cursors())
                        .and_then(|mut t| t.remove(name).map(|_| ()).map_err(Into::into))
                        .map_err(StoreError::from)?;
                }
            }
            token.used_at_ms = Some(now_ms);
            token.used_by = Some(name.to_owned());
            tokens
                .insert(token_id, to_json(&token).as_slice())
                .map_err(StoreError::from)?;
            let mut meta = txn.open_table(META).map_err(StoreError::from)?;
            let id = meta
                .get("next_node_id")
                .map_err(StoreError::from)?
                .map_or(1, |v| v.value());
            meta.insert("next_node_id", id + 1)
                .map_err(StoreError::from)?;
            let node = NodeRecord {
                name: name.to_owned(),
                labels: token.labels.clone(),
                enrolled_at_ms: now_ms,
                fingerprint: fingerprint.to_owned(),
                public_key: public_key.to_owned(),
                id,
                retired_ids,
                ..NodeRecord::default()
            };
            nodes
                .insert(name, to_json(&node).as_slice())
                .map_err(StoreError::from)?;
            let identity = IdentityRecord {
                principal: Principal::Node {
                    name: name.to_owned(),
                },
                issued_at_ms: now_ms,
                revoked: false,
                expires_at_ms: Some(expires_at_ms),
            };
            txn.open_table(IDENTITIES)
                .map_err(StoreError::from)?
                .insert(fingerprint, to_json(&identity).as_slice())
                .map_err(StoreError::from)?;
            node
        };
        txn.commit().map_err(StoreError::from)?;
        Ok(node)
    }

    /// Appends `entries` to the audit log, chained, in one transaction; returns them as
    /// stored.
    pub fn append_audit(
        &self,
        entries: Vec<gantry_shared::audit::NewEntry>,
    ) -> Result<Vec<gantry_shared::audit::Entry>, StoreError> {
        let txn = self.write()?;
        let stored = append_audit_in(&txn, entries)?;
        txn.commit()?;
        Ok(stored)
    }

    /// Moves what the audit log knows of `node`'s bundles on, with the entries that say
    /// what changed, in one transaction: `change` sees the state last recorded and returns
    /// the new one with its entries, or `None` when nothing changed. Two reports of the
    /// same change can never both be recorded.
    pub fn audit_node_bundles(
        &self,
        node: &str,
        change: impl FnOnce(
            &gantry_shared::audit::NodeBundleState,
        ) -> Option<(
            gantry_shared::audit::NodeBundleState,
            Vec<gantry_shared::audit::NewEntry>,
        )>,
    ) -> Result<bool, StoreError> {
        let txn = self.write()?;
        let changed = {
            let mut table = txn.open_table(AUDITED_BUNDLES)?;
            let before: gantry_shared::audit::NodeBundleState = table
                .get(node)?
                .map(|v| from_json(v.value()))
                .transpose()?
                .unwrap_or_default();
            match change(&before) {
                None => false,
                Some((after, entries)) => {
                    table.insert(node, to_json(&after).as_slice())?;
                    append_audit_in(&txn, entries)?;
                    true
                }
            }
        };
        txn.commit()?;
        Ok(changed)
    }

    /// Records the controller's trust policy with hash `sha256` in the audit log unless it
    /// is the one recorded last; `entry` makes the entry from the previous hash. Returns
    /// whether it was recorded.
    pub fn audit_policy(
        &self,
        sha256: &str,
        entry: impl FnOnce(Option<&str>) -> gantry_shared::audit::NewEntry,
    ) -> Result<bool, StoreError> {
        let txn = self.write()?;
        let changed = {
            let mut table = txn.open_table(AUDITED_POLICY)?;
            let previous = table.get("trust.json")?.map(|v| v.value().to_owned());
            if previous.as_deref() == Some(sha256) {
                false
            } else {
                table.insert("trust.json", sha256)?;
                append_audit_in(&txn, vec![entry(previous.as_deref())])?;
                true
            }
        };
        txn.commit()?;
        Ok(changed)
    }

    /// Walks the audit chain and names its first break (`audit::verify`).
    pub fn verify_audit(&self) -> Result<gantry_shared::audit::Verification, StoreError> {
        let txn = self.read()?;
        let head: Option<(u64, String)> = txn
            .open_table(AUDIT_HEAD)?
            .get("head")?
            .map(|v| from_json(v.value()))
            .transpose()?;
        let table = txn.open_table(AUDIT)?;
        let entries = table.iter()?.map(|item| {
            let (k, v) = item.map_err(StoreError::from)?;
            Ok::<_, StoreError>((k.value(), v.value().to_vec()))
        });
        gantry_shared::audit::verify(entries, head)
    }

    /// Up to `limit` audit entries older than `before` (from the head when `None`),
    /// newest first, that `keep` accepts (entries that do not parse are skipped).
    pub fn audit_page(
        &self,
        before: Option<u64>,
        limit: usize,
        mut keep: impl FnMut(&gantry_shared::audit::Entry) -> bool,
    ) -> Result<Vec<gantry_shared::audit::Entry>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(AUDIT)?;
        let mut out = Vec::new();
        for item in table.range(..before.unwrap_or(u64::MAX))?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            if let Ok(entry) = serde_json::from_slice::<gantry_shared::audit::Entry>(v.value())
                && keep(&entry)
            {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Calls `f` with every audit entry in order (entries that do not parse are skipped;
    /// `verify_audit` names them).
    pub fn scan_audit(
        &self,
        mut f: impl FnMut(gantry_shared::audit::Entry),
    ) -> Result<(), StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(AUDIT)?;
        for item in table.iter()? {
            let (_, v) = item?;
            if let Ok(entry) = serde_json::from_slice(v.value()) {
                f(entry);
            }
        }
        Ok(())
    }

    /// Every (node, model)'s assigned bundle id.
    pub fn assignments(&self) -> Result<Assignments, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ASSIGNMENTS)?;
        table
            .iter()?
            .map(|entry| {
                let (k, v) = entry?;
                let (node, model) = k.value();
                Ok(((node.to_owned(), model.to_owned()), v.value().to_owned()))
            })
            .collect()
    }

    /// Changes assignments, stores the rollout that makes them (if any) and appends their
    /// audit entries, all in one transaction: an assignment is never made without its
    /// record, nor recorded without being made.
    pub fn commit_assignments(
        &self,
        changes: &[Assignment],
        rollout: Option<(u64, &gantry_shared::protocol::rollout::Rollout)>,
        audit: Vec<gantry_shared::audit::NewEntry>,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(ASSIGNMENTS)?;
            for change in changes {
                let key = (change.node.as_str(), change.model.as_str());
                match &change.bundle {
                    Some(id) => table.insert(key, id.as_str())?,
                    None => table.remove(key)?,
                };
            }
            if let Some((number, rollout)) = rollout {
                txn.open_table(ROLLOUTS)?
                    .insert(number, to_json(rollout).as_slice())?;
            }
        }
        if !audit.is_empty() {
            append_audit_in(&txn, audit)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// What is recorded of the bundle with id `hex`.
    pub fn bundle_info(&self, hex: &str) -> Result<Option<BundleInfo>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(BUNDLES)?;
        table.get(hex)?.map(|v| from_json(v.value())).transpose()
    }

    /// Every bundle held, in no particular order.
    pub fn bundle_infos(&self) -> Result<Vec<BundleInfo>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(BUNDLES)?;
        table
            .iter()?
            .map(|entry| from_json(entry?.1.value()))
            .collect()
    }

    /// Records a bundle kept under id `hex`, unless one is recorded already; returns the
    /// record that stands.
    pub fn put_bundle_info(&self, hex: &str, info: &BundleInfo) -> Result<BundleInfo, StoreError> {
        let txn = self.write()?;
        let standing = {
            let mut table = txn.open_table(BUNDLES)?;
            let existing = table
                .get(hex)?
                .map(|v| from_json::<BundleInfo>(v.value()))
                .transpose()?;
            if let Some(existing) = existing {
                existing
            } else {
                table.insert(hex, to_json(info).as_slice())?;
                info.clone()
            }
        };
        txn.commit()?;
        Ok(standing)
    }

    /// Takes in what an older controller kept in files (`assignments.json`, node → bundle
    /// id, one `<hex>.json` per bundle), in one transaction; what the store holds already
    /// wins. Each assignment is for its bundle's model.
    pub fn import_repository_files(
        &self,
        assignments: &BTreeMap<String, String>,
        bundles: &[(String, BundleInfo)],
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(ASSIGNMENTS)?;
            for (node, id) in assignments {
                let hex = id.strip_prefix("sha256:").unwrap_or(id);
                let model = bundles
                    .iter()
                    .find(|(h, _)| h == hex)
                    .map_or("", |(_, info)| info.name.as_str());
                if table.get((node.as_str(), model))?.is_none() {
                    table.insert((node.as_str(), model), id.as_str())?;
                }
            }
            let mut table = txn.open_table(BUNDLES)?;
            for (hex, info) in bundles {
                if table.get(hex.as_str())?.is_none() {
                    table.insert(hex.as_str(), to_json(info).as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Stores a rollout under its number (`r<number>`), replacing the previous record.
    pub fn put_rollout(
        &self,
        number: u64,
        rollout: &gantry_shared::protocol::rollout::Rollout,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(ROLLOUTS)?
            .insert(number, to_json(rollout).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Every rollout, by number.
    pub fn rollouts(
        &self,
    ) -> Result<Vec<(u64, gantry_shared::protocol::rollout::Rollout)>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(ROLLOUTS)?;
        table
            .iter()?
            .map(|entry| {
                let (k, v) = entry?;
                Ok((k.value(), from_json(v.value())?))
            })
            .collect()
    }

    pub fn node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(NODES)?;
        table.get(name)?.map(|v| from_json(v.value())).transpose()
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(NODES)?;
        table
            .iter()?
            .map(|entry| from_json(entry?.1.value()))
            .collect()
    }

    /// Updates a node record in place.
    pub fn update_node(
        &self,
        name: &str,
        change: impl FnOnce(&mut NodeRecord),
    ) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.write()?;
        let updated = {
            let mut table = txn.open_table(NODES)?;
            let current: Option<NodeRecord> =
                table.get(name)?.map(|v| from_json(v.value())).transpose()?;
            match current {
                None => None,
                Some(mut node) => {
                    change(&mut node);
                    table.insert(name, to_json(&node).as_slice())?;
                    Some(node)
                }
            }
        };
        txn.commit()?;
        Ok(updated)
    }

    /// Records a renewed certificate of node `name` (the same key, a new validity) and
    /// makes it the node's current one, unless the node was revoked meanwhile.
    pub fn install_node_certificate(
        &self,
        name: &str,
        fingerprint: &str,
        record: &IdentityRecord,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.write()?;
        let node = {
            let mut nodes = txn.open_table(NODES)?;
            let current = node_in(&nodes, name)?;
            let Some(mut node) = current.filter(|n| !n.revoked) else {
                return Ok(None);
            };
            fingerprint.clone_into(&mut node.fingerprint);
            nodes.insert(name, to_json(&node).as_slice())?;
            txn.open_table(IDENTITIES)?
                .insert(fingerprint, to_json(record).as_slice())?;
            node
        };
        txn.commit()?;
        Ok(Some(node))
    }

    /// Replaces an admin's certificates: the new one recorded and every earlier one of that
    /// admin revoked, in one transaction (`gantry admin rotate`).
    pub fn rotate_admin(
        &self,
        name: &str,
        new_fingerprint: &str,
        record: &IdentityRecord,
    ) -> Result<usize, StoreError> {
        let txn = self.write()?;
        let revoked = {
            let mut identities = txn.open_table(IDENTITIES)?;
            let mut doomed = Vec::new();
            for entry in identities.iter()? {
                let (fingerprint, value) = entry?;
                let old: IdentityRecord = from_json(value.value())?;
                if !old.revoked
                    && matches!(&old.principal, Principal::Admin { name: n, .. } if n == name)
                {
                    doomed.push((fingerprint.value().to_owned(), old));
                }
            }
            let revoked = doomed.len();
            for (fingerprint, mut old) in doomed {
                old.revoked = true;
                identities.insert(fingerprint.as_str(), to_json(&old).as_slice())?;
            }
            identities.insert(new_fingerprint, to_json(record).as_slice())?;
            revoked
        };
        txn.commit()?;
        Ok(revoked)
    }

    /// Sets or clears a node's cordon with its audit entry, in one transaction, when
    /// `change` (given the current cordon) returns the new one; `Ok(None)` for an unknown
    /// node, the node unchanged when `change` declines.
    pub fn cordon_node(
        &self,
        name: &str,
        change: impl FnOnce(
            Option<&gantry_shared::protocol::admin::Cordon>,
        ) -> Option<(
            Option<gantry_shared::protocol::admin::Cordon>,
            gantry_shared::audit::NewEntry,
        )>,
    ) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.write()?;
        let node = {
            let mut nodes = txn.open_table(NODES)?;
            let current = node_in(&nodes, name)?;
            let Some(mut node) = current else {
                return Ok(None);
            };
            let Some((cordon, entry)) = change(node.cordon.as_ref()) else {
                return Ok(Some(node));
            };
            node.cordon = cordon;
            nodes.insert(name, to_json(&node).as_slice())?;
            append_audit_in(&txn, vec![entry])?;
            node
        };
        txn.commit()?;
        Ok(Some(node))
    }

    /// Revokes a node: its record and every certificate identity it ever had.
    pub fn revoke_node(&self, name: &str) -> Result<Option<NodeRecord>, StoreError> {
        let txn = self.write()?;
        let node = {
            let mut nodes = txn.open_table(NODES)?;
            let current = node_in(&nodes, name)?;
            let Some(mut node) = current else {
                return Ok(None);
            };
            node.revoked = true;
            nodes.insert(name, to_json(&node).as_slice())?;
            // Every certificate the node ever had: renewals leave earlier ones behind.
            let mut identities = txn.open_table(IDENTITIES)?;
            let mut doomed = Vec::new();
            for entry in identities.iter()? {
                let (fingerprint, value) = entry?;
                let record: IdentityRecord = from_json(value.value())?;
                if !record.revoked
                    && matches!(&record.principal, Principal::Node { name: n } if n == name)
                {
                    doomed.push((fingerprint.value().to_owned(), record));
                }
            }
            for (fingerprint, mut record) in doomed {
                record.revoked = true;
                identities.insert(fingerprint.as_str(), to_json(&record).as_slice())?;
            }
            node
        };
        txn.commit()?;
        Ok(Some(node))
    }

    /// Stores batches from several nodes in one transaction (group commit). Each
    /// record is stored once: a (node, seq) already present counts as a duplicate.
    pub fn store_batches(
        &self,
        batches: &[(&str, &Batch)],
    ) -> Result<Vec<Result<Stored, BatchError>>, StoreError> {
        let txn = self.write()?;
        let mut results = Vec::with_capacity(batches.len());
        {
            let mut telemetry = txn.open_table(TELEMETRY)?;
            let mut nodes = txn.open_table(NODES)?;
            for (name, batch) in batches {
                let Some(mut node) = nodes
                    .get(*name)?
                    .map(|v| from_json::<NodeRecord>(v.value()))
                    .transpose()?
                else {
                    // Not fatal for the other nodes' batches in this transaction.
                    results.push(Err(BatchError::UnknownNode((*name).to_owned())));
                    continue;
                };
                let mut outcome = Stored::default();
                let mut value = Vec::new();
                for record in &batch.records {
                    outcome.through_seq = record.seq;
                    if record.seq <= node.low_water {
                        outcome.duplicates += 1;
                        continue;
                    }
                    value.clear();
                    value.extend_from_slice(&record.at_ms.to_be_bytes());
                    value.push(record.class.as_byte());
                    value.extend_from_slice(record.body.get().as_bytes());
                    // A redelivered record carries the same bytes under the same key, so
                    // replacing it changes nothing; the old value says it was a duplicate.
                    if telemetry
                        .insert(key(node.id, record.seq), value.as_slice())?
                        .is_some()
                    {
                        outcome.duplicates += 1;
                    } else {
                        outcome.stored += 1;
                    }
                }
                node.records_stored += outcome.stored;
                node.last_seq = node.last_seq.max(outcome.through_seq);
                nodes.insert(*name, to_json(&node).as_slice())?;
                results.push(Ok(outcome));
            }
        }
        txn.commit()?;
        Ok(results)
    }

    fn node_id(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.node(name)?.map(|n| n.id))
    }

    /// Stored records of `node` after `after_seq`, at most `limit`.
    pub fn records(
        &self,
        node: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<RecordInfo>, StoreError> {
        let Some(id) = self.node_id(node)? else {
            return Ok(Vec::new());
        };
        let txn = self.read()?;
        let table = txn.open_table(TELEMETRY)?;
        let mut out = Vec::new();
        for entry in table
            .range(key(id, after_seq.saturating_add(1))..=key(id, u64::MAX))?
            .take(limit)
        {
            let (k, value) = entry?;
            let (at_ms, class) = decode_header(value.value())?;
            out.push(RecordInfo {
                seq: k.value() as u64,
                at_ms,
                class,
            });
        }
        Ok(out)
    }

    /// An export's next batch, in one read transaction: for nodes after `after_node`
    /// (by name, wrapping around, so every node takes its turn), up to `per_node` records
    /// after each node's cursor, until `total` metrics records are in. Each entry is a
    /// node, its metrics records' bodies by sequence number, and the last sequence
    /// number looked at (events included), where its cursor goes once delivered.
    pub fn export_batch(
        &self,
        export: Export,
        after_node: &str,
        per_node: usize,
        total: usize,
    ) -> Result<Vec<ExportChunk>, StoreError> {
        let txn = self.read()?;
        let nodes = txn.open_table(NODES)?;
        let cursors = txn.open_table(export.cursors())?;
        let telemetry = txn.open_table(TELEMETRY)?;
        let mut out = Vec::new();
        let mut records = 0;
        let after = nodes.range::<&str>((
            std::ops::Bound::Excluded(after_node),
            std::ops::Bound::Unbounded,
        ))?;
        let before = nodes.range::<&str>(..=after_node)?;
        for entry in after.chain(before) {
            if records >= total {
                break;
            }
            let (name, value) = entry?;
            let node: NodeRecord = from_json(value.value())?;
            let cursor = cursors.get(name.value())?.map_or(0, |v| v.value());
            let mut chunk = ExportChunk {
                node: node.name.clone(),
                metrics: Vec::new(),
                last_seq: 0,
            };
            for item in telemetry
                .range(key(node.id, cursor.saturating_add(1))..=key(node.id, u64::MAX))?
                .take(per_node)
            {
                let (k, value) = item?;
                #[allow(clippy::cast_possible_truncation)] // the low 64 bits are the sequence
                let seq = k.value() as u64;
                let value = value.value();
                if decode_header(value)?.1 == RecordClass::Metrics {
                    chunk.metrics.push((seq, value[9..].to_vec()));
                    records += 1;
                }
                chunk.last_seq = seq;
            }
            if chunk.last_seq > 0 {
                out.push(chunk);
            }
        }
        Ok(out)
    }

    /// Moves an export's cursors forward, in one transaction.
    pub fn set_export_cursors(
        &self,
        export: Export,
        cursors: &[(String, u64)],
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(export.cursors())?;
            for (node, seq) in cursors {
                table.insert(node.as_str(), *seq)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The body of the newest metrics record of `node`, if any.
    pub fn latest_metrics(&self, node: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(id) = self.node_id(node)? else {
            return Ok(None);
        };
        let txn = self.read()?;
        let table = txn.open_table(TELEMETRY)?;
        for entry in table.range(key(id, 0)..=key(id, u64::MAX))?.rev() {
            let (_, value) = entry?;
            let value = value.value();
            if decode_header(value)?.1 == RecordClass::Metrics {
                return Ok(Some(value[9..].to_vec()));
            }
        }
        Ok(None)
    }

    /// Deletes records older than `cutoff_ms` for every node (and its earlier
    /// enrollments); returns how many, and how many of them each of `exports` had not
    /// delivered yet (lost to it).
    pub fn apply_retention(
        &self,
        cutoff_ms: u64,
        exports: &[Export],
    ) -> Result<Expired, StoreError> {
        let mut expired = Expired {
            deleted: 0,
            unexported: exports.iter().map(|e| (*e, 0)).collect(),
        };
        for node in self.nodes()? {
            let txn = self.write()?;
            {
                let mut cursors = Vec::new();
                for (export, _) in &expired.unexported {
                    let table = txn.open_table(export.cursors())?;
                    cursors.push(table.get(node.name.as_str())?.map_or(0, |v| v.value()));
                }
                let mut table = txn.open_table(TELEMETRY)?;
                let mut current_highest = None;
                let mut current_removed = 0u64;
                for id in std::iter::once(node.id).chain(node.retired_ids.iter().copied()) {
                    let mut old = Vec::new();
                    for entry in table.range(key(id, 0)..=key(id, u64::MAX))? {
                        let (k, value) = entry?;
                        if decode_header(value.value())?.0 >= cutoff_ms {
                            break;
                        }
                        old.push(k.value());
                    }
                    for k in &old {
                        table.remove(*k)?;
                    }
                    if id == node.id {
                        current_highest = old.last().map(|&k| k as u64);
                        current_removed = old.len() as u64;
                        for ((_, lost), cursor) in expired.unexported.iter_mut().zip(&cursors) {
                            *lost += old.iter().filter(|&&k| k as u64 > *cursor).count() as u64;
                        }
                    }
                    expired.deleted += old.len() as u64;
                }
                if let Some(highest) = current_highest {
                    let mut nodes = txn.open_table(NODES)?;
                    let mut record = node.clone();
                    record.low_water = record.low_water.max(highest);
                    record.records_stored = record.records_stored.saturating_sub(current_removed);
                    nodes.insert(node.name.as_str(), to_json(&record).as_slice())?;
                }
            }
            txn.commit()?;
        }
        Ok(expired)
    }
}

impl Store {
    /// Keeps the drift windows `node` reported; a window already held (the same model,
    /// end and node: a batch delivered twice) is replaced by the same bytes. In the same
    /// transaction, a window newer than the last audited one for its (node, model) whose
    /// verdict differs from it (drifted, or back within the threshold) is recorded in the
    /// audit log with the entry `alert(window, drifted)` makes; returns how many were.
    pub fn put_model_windows(
        &self,
        node: &str,
        windows: &[gantry_shared::monitoring::ModelWindow],
        alert: impl Fn(&gantry_shared::monitoring::ModelWindow, bool) -> gantry_shared::audit::NewEntry,
    ) -> Result<usize, StoreError> {
        let txn = self.write()?;
        let mut entries = Vec::new();
        {
            let mut table = txn.open_table(MODEL_WINDOWS)?;
            let mut alerts = txn.open_table(DRIFT_ALERTS)?;
            let mut ordered: Vec<&gantry_shared::monitoring::ModelWindow> =
                windows.iter().collect();
            ordered.sort_by_key(|w| w.end_ms);
            for w in ordered {
                table.insert((w.model.as_str(), w.end_ms, node), to_json(w).as_slice())?;
                let drifted = !w.drifted().is_empty();
                let last = alerts.get((node, w.model.as_str()))?.map(|v| v.value());
                if last.is_some_and(|(end, _)| end >= w.end_ms) {
                    continue;
                }
                if last.map_or(drifted, |(_, was)| was != drifted) {
                    entries.push(alert(w, drifted));
                }
                alerts.insert((node, w.model.as_str()), (w.end_ms, drifted))?;
            }
        }
        let audited = entries.len();
        append_audit_in(&txn, entries)?;
        txn.commit()?;
        Ok(audited)
    }

    /// Model `model`'s windows that ended at or after `since_ms`, oldest first, with the
    /// node that reported each.
    pub fn model_windows(
        &self,
        model: &str,
        since_ms: u64,
    ) -> Result<Vec<(String, gantry_shared::monitoring::ModelWindow)>, StoreError> {
        let txn = self.read()?;
        // A store written before drift monitoring, opened read-only, has no such table.
        let Some(table) = optional_table(&txn, MODEL_WINDOWS)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.range((model, since_ms, "")..(model, u64::MAX, ""))? {
            let (key, value) = entry?;
            out.push((key.value().2.to_owned(), from_json(value.value())?));
        }
        Ok(out)
    }

    /// Keeps the feedback windows `node` reported; a window already held (a batch
    /// delivered twice) is replaced by the same bytes.
    pub fn put_quality_windows(
        &self,
        node: &str,
        windows: &[gantry_shared::monitoring::quality::QualityWindow],
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(QUALITY_WINDOWS)?;
            for w in windows {
                table.insert((w.model.as_str(), w.end_ms, node), to_json(w).as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Model `model`'s feedback windows that ended at or after `since_ms`, oldest first,
    /// with the node that reported each; every model's when `model` is `None`.
    pub fn quality_windows(
        &self,
        model: Option<&str>,
        since_ms: u64,
    ) -> Result<Vec<(String, gantry_shared::monitoring::quality::QualityWindow)>, StoreError> {
        let txn = self.read()?;
        // A store written before quality monitoring, opened read-only, has no such table.
        let Some(table) = optional_table(&txn, QUALITY_WINDOWS)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<(String, gantry_shared::monitoring::quality::QualityWindow)> = Vec::new();
        let range = match model {
            Some(model) => table.range((model, since_ms, "")..(model, u64::MAX, ""))?,
            None => table.range::<(&str, u64, &str)>(..)?,
        };
        for entry in range {
            let (key, value) = entry?;
            if key.value().1 >= since_ms {
                out.push((key.value().2.to_owned(), from_json(value.value())?));
            }
        }
        out.sort_by_key(|(_, w)| w.end_ms);
        Ok(out)
    }

    /// Deletes drift and feedback windows that ended before `cutoff_ms`, captured
    /// pairs and labels and health changes older than that; returns how many.
    pub fn expire_model_windows(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        Ok(self.expire_windows(MODEL_WINDOWS, cutoff_ms)?
            + self.expire_windows(QUALITY_WINDOWS, cutoff_ms)?
            + self.expire_captures(cutoff_ms)?
            + self.expire_health_changes(cutoff_ms)?)
    }

    /// Records that `node`'s health became `health` at `at_ms`.
    pub fn put_health_change(
        &self,
        node: &str,
        at_ms: u64,
        health: &gantry_shared::health::Health,
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        txn.open_table(HEALTH_CHANGES)?
            .insert((node, at_ms), to_json(health).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The newest `limit` health changes of `node`, newest first.
    pub fn health_changes(
        &self,
        node: &str,
        limit: usize,
    ) -> Result<Vec<(u64, gantry_shared::health::Health)>, StoreError> {
        let txn = self.read()?;
        // A store written before the console, opened read-only, has no such table.
        let Some(table) = optional_table(&txn, HEALTH_CHANGES)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in table.range((node, 0)..=(node, u64::MAX))?.rev().take(limit) {
            let (key, value) = entry?;
            out.push((key.value().1, from_json(value.value())?));
        }
        Ok(out)
    }

    fn expire_health_changes(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let txn = self.write()?;
        let mut deleted = 0;
        {
            let mut table = txn.open_table(HEALTH_CHANGES)?;
            let old: Vec<(String, u64)> = table
                .iter()?
                .filter_map(Result::ok)
                .map(|(k, _)| (k.value().0.to_owned(), k.value().1))
                .filter(|(_, at)| *at < cutoff_ms)
                .collect();
            for (node, at) in &old {
                table.remove((node.as_str(), *at))?;
                deleted += 1;
            }
        }
        txn.commit()?;
        Ok(deleted)
    }

    /// The newest `limit` records of `node`, newest first, with their bodies.
    pub fn recent_records(
        &self,
        node: &str,
        limit: usize,
    ) -> Result<Vec<(RecordInfo, Vec<u8>)>, StoreError> {
        let Some(id) = self.node_id(node)? else {
            return Ok(Vec::new());
        };
        let txn = self.read()?;
        let table = txn.open_table(TELEMETRY)?;
        let mut out = Vec::new();
        for entry in table
            .range(key(id, 0)..=key(id, u64::MAX))?
            .rev()
            .take(limit)
        {
            let (k, value) = entry?;
            let value = value.value();
            let (at_ms, class) = decode_header(value)?;
            out.push((
                RecordInfo {
                    seq: k.value() as u64,
                    at_ms,
                    class,
                },
                value[9..].to_vec(),
            ));
        }
        Ok(out)
    }

    /// Keeps the pairs `node` captured (with their record's sequence number); a pair
    /// already held (a batch delivered twice) is replaced by the same bytes.
    pub fn put_captures(
        &self,
        node: &str,
        pairs: &[(u64, gantry_shared::monitoring::capture::CapturedPair)],
    ) -> Result<(), StoreError> {
        let txn = self.write()?;
        {
            let mut table = txn.open_table(CAPTURES)?;
            for (seq, pair) in pairs {
                table.insert(
                    (pair.model.as_str(), pair.at_ms, node, *seq),
                    to_json(pair).as_slice(),
                )?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Keeps the labels of captured requests that `node`'s feedback `windows` carry.
    pub fn put_capture_labels(
        &self,
        node: &str,
        windows: &[gantry_shared::monitoring::quality::QualityWindow],
    ) -> Result<(), StoreError> {
        if windows.iter().all(|w| w.labels.is_empty()) {
            return Ok(());
        }
        let txn = self.write()?;
        {
            let mut table = txn.open_table(CAPTURE_LABELS)?;
            for w in windows {
                for label in &w.labels {
                    let stored = StoredLabel {
                        bundle: label.bundle.clone(),
                        truth: label.truth.clone(),
                        end_ms: w.end_ms,
                    };
                    table.insert(
                        (w.model.as_str(), node, label.id.as_str()),
                        to_json(&stored).as_slice(),
                    )?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A page of model `model`'s captured pairs (of `version` only, when given) after
    /// `after`, oldest first, each with its label when one was fed back for the bundle
    /// that answered it: at most `max_bytes` of pairs (at least one).
    pub fn capture_page(
        &self,
        model: &str,
        version: Option<&str>,
        after: Option<&gantry_shared::protocol::monitoring::CaptureCursor>,
        max_bytes: usize,
    ) -> Result<gantry_shared::protocol::monitoring::CapturePage, StoreError> {
        use gantry_shared::protocol::monitoring::{CaptureCursor, CapturePage, ExportedPair};
        let txn = self.read()?;
        // A store written before payload capture, opened read-only, has no such tables.
        let (Some(captures), Some(labels)) = (
            optional_table(&txn, CAPTURES)?,
            optional_table(&txn, CAPTURE_LABELS)?,
        ) else {
            return Ok(CapturePage::default());
        };
        let mut page = CapturePage::default();
        let mut bytes = 0;
        let start = match after {
            Some(c) => std::ops::Bound::Excluded((model, c.at_ms, c.node.as_str(), c.seq)),
            None => std::ops::Bound::Included((model, 0, "", 0)),
        };
        let end = std::ops::Bound::Included((model, u64::MAX, "\u{10ffff}", u64::MAX));
        let mut complete = true;
        for entry in captures.range::<(&str, u64, &str, u64)>((start, end))? {
            let (key, value) = entry?;
            let (_, at_ms, node, seq) = key.value();
            let value = value.value();
            if !page.pairs.is_empty() && bytes + value.len() > max_bytes {
                complete = false;
                break;
            }
            page.next = Some(CaptureCursor {
                at_ms,
                node: node.to_owned(),
                seq,
            });
            let pair: gantry_shared::monitoring::capture::CapturedPair = from_json(value)?;
            if version.is_some_and(|v| v != pair.version) {
                continue;
            }
            bytes += value.len();
            let label = match &pair.id {
                Some(id) => labels
                    .get((model, node, id.as_str()))?
                    .map(|v| from_json::<StoredLabel>(v.value()))
                    .transpose()?
                    .filter(|l| l.bundle == pair.bundle)
                    .map(|l| l.truth),
                None => None,
            };
            page.pairs.push(ExportedPair {
                node: node.to_owned(),
                seq,
                pair,
                label,
            });
        }
        if complete {
            page.next = None;
        }
        Ok(page)
    }

    fn expire_captures(&self, cutoff_ms: u64) -> Result<u64, StoreError> {
        let txn = self.write()?;
        let mut deleted = 0;
        {
            let mut captures = txn.open_table(CAPTURES)?;
            let old: Vec<(String, u64, String, u64)> = captures
                .iter()?
                .filter_map(Result::ok)
                .map(|(k, _)| {
                    let (model, at, node, seq) = k.value();
                    (model.to_owned(), at, node.to_owned(), seq)
                })
                .filter(|(_, at, _, _)| *at < cutoff_ms)
                .collect();
            for (model, at, node, seq) in &old {
                captures.remove((model.as_str(), *at, node.as_str(), *seq))?;
                deleted += 1;
            }
            let mut labels = txn.open_table(CAPTURE_LABELS)?;
            let old: Vec<(String, String, String)> = labels
                .iter()?
                .filter_map(Result::ok)
                .filter(|(_, v)| {
                    from_json::<StoredLabel>(v.value()).map_or(true, |l| l.end_ms < cutoff_ms)
                })
                .map(|(k, _)| {
                    let (model, node, id) = k.value();
                    (model.to_owned(), node.to_owned(), id.to_owned())
                })
                .collect();
            for (model, node, id) in &old {
                labels.remove((model.as_str(), node.as_str(), id.as_str()))?;
                deleted += 1;
            }
        }
        txn.commit()?;
        Ok(deleted)
    }

    fn expire_windows(
        &self,
        definition: TableDefinition<(&str, u64, &str), &[u8]>,
        cutoff_ms: u64,
    ) -> Result<u64, StoreError> {
        let txn = self.write()?;
        let mut deleted = 0;
        {
            let mut table = txn.open_table(definition)?;
            let old: Vec<(String, u64, String)> = table
                .iter()?
                .filter_map(Result::ok)
                .map(|(k, _)| {
                    let (model, end, node) = k.value();
                    (model.to_owned(), end, node.to_owned())
                })
                .filter(|(_, end, _)| *end < cutoff_ms)
                .collect();
            for (model, end, node) in &old {
                table.remove((model.as_str(), *end, node.as_str()))?;
                deleted += 1;
            }
        }
        txn.commit()?;
        Ok(deleted)
    }
}

/// `definition` in a read transaction, or `None` where the store predates it (a store
/// opened read-only is never given the tables of later versions).
fn optional_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    definition: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match txn.open_table(definition) {
        Ok(table) => Ok(Some(table)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn decode_header(value: &[u8]) -> Result<(u64, RecordClass), StoreError> {
    let at = value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("telemetry record shorter than its header".into()))?;
    let class = value
        .get(8)
        .and_then(|&b| RecordClass::from_byte(b))
        .ok_or_else(|| StoreError::Corrupt("telemetry record of unknown class".into()))?;
    Ok((at, class))
}

#[cfg(test)]
mod tests {
    use gantry_shared::protocol::telemetry::Record;
    use serde_json::value::RawValue;

    use super::*;

    #[test]
    fn one_model_per_node_assignments_move_under_their_bundle_s_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let hex = "a".repeat(64);
        {
            // A store as a controller that knew one model per node left it.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(LEGACY_ASSIGNMENTS)
                .unwrap()
                .insert("n1", format!("sha256:{hex}").as_str())
                .unwrap();
            let info = BundleInfo {
                id: format!("sha256:{hex}"),
                name: "resnet".into(),
                ..BundleInfo::default()
            };
            txn.open_table(BUNDLES)
                .unwrap()
                .insert(hex.as_str(), to_json(&info).as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        let expected = BTreeMap::from([(
            ("n1".to_owned(), "resnet".to_owned()),
            format!("sha256:{hex}"),
        )]);
        assert_eq!(store.assignments().unwrap(), expected);
        drop(store);
        assert_eq!(Store::open(&path).unwrap().assignments().unwrap(), expected);
    }

    fn batch(seqs: std::ops::RangeInclusive<u64>, at_ms: u64) -> Batch {
        Batch {
            records: seqs
                .map(|seq| Record {
                    seq,
                    at_ms,
                    class: RecordClass::Metrics,
                    body: RawValue::from_string("{}".into()).unwrap(),
                })
                .collect(),
        }
    }

    fn enrolled(store: &Store, name: &str, token: &str) {
        let record = TokenRecord {
            secret_sha256: "s".into(),
            labels: BTreeMap::new(),
            created_by: "t".into(),
            expires_at_ms: u64::MAX,
            used_at_ms: None,
            used_by: None,
        };
        store.put_token(token, &record).unwrap();
        let fingerprint = format!("fp-{token}");
        let certificate = IssuedCertificate {
            fingerprint: &fingerprint,
            public_key: "04ab",
            expires_at_ms: u64::MAX,
        };
        store.enroll(token, "s", name, &certificate, 1).unwrap();
    }

    #[test]
    fn a_token_redeems_until_its_expiry_instant_and_not_a_millisecond_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let expires_at_ms = 1_000_000;
        for id in ["on-time", "late"] {
            let record = TokenRecord {
                secret_sha256: "s".into(),
                labels: BTreeMap::new(),
                created_by: "t".into(),
                expires_at_ms,
                used_at_ms: None,
                used_by: None,
            };
            store.put_token(id, &record).unwrap();
        }
        let certificate = |fingerprint: &'static str| IssuedCertificate {
            fingerprint,
            public_key: "04ab",
            expires_at_ms: u64::MAX,
        };
        let late = store.enroll("late", "s", "n2", &certificate("fp-2"), expires_at_ms + 1);
        assert!(matches!(late, Err(EnrollRefusal::TokenExpired)), "{late:?}");
        assert!(store.node("n2").unwrap().is_none(), "nothing half-enrolled");
        store
            .enroll("on-time", "s", "n1", &certificate("fp-1"), expires_at_ms)
            .unwrap();
        // Used once, it stays used, whatever the clock says.
        let again = store.enroll("on-time", "s", "n3", &certificate("fp-3"), 0);
        assert!(
            matches!(again, Err(EnrollRefusal::TokenUsed { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn an_export_takes_every_node_in_turn_from_its_own_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        for (name, token) in [("a", "t1"), ("b", "t2"), ("c", "t3")] {
            enrolled(&store, name, token);
            store.store_batches(&[(name, &batch(1..=3, 5))]).unwrap();
        }
        let nodes = |after: &str, total: usize| -> Vec<(String, Vec<u64>, u64)> {
            store
                .export_batch(Export::RemoteWrite, after, 2, total)
                .unwrap()
                .into_iter()
                .map(|c| {
                    (
                        c.node,
                        c.metrics.iter().map(|(s, _)| *s).collect(),
                        c.last_seq,
                    )
                })
                .collect()
        };
        // Up to 2 records per node, until 3 are in: a's two, then b's two.
        assert_eq!(
            nodes("", 3),
            vec![
                ("a".to_owned(), vec![1, 2], 2),
                ("b".to_owned(), vec![1, 2], 2)
            ]
        );
        // After c, it wraps around to a.
        assert_eq!(nodes("c", 1)[0].0, "a");
        assert_eq!(nodes("b", 1)[0].0, "c");
        // Delivered cursors are where the next batch starts; a node with nothing new is
        // left out.
        store
            .set_export_cursors(
                Export::RemoteWrite,
                &[("a".to_owned(), 3), ("b".to_owned(), 2)],
            )
            .unwrap();
        assert_eq!(
            nodes("", 10),
            vec![
                ("b".to_owned(), vec![3], 3),
                ("c".to_owned(), vec![1, 2], 2)
            ]
        );
        // Another export keeps its own cursors: OTLP still starts at a's first record.
        let otlp = store.export_batch(Export::Otlp, "", 2, 10).unwrap();
        assert_eq!(otlp[0].node, "a");
        assert_eq!(otlp[0].metrics[0].0, 1);
    }

    #[test]
    fn redelivery_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        enrolled(&store, "n", "t1");
        let first = store.store_batches(&[("n", &batch(1..=10, 5))]).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!(
            (first.stored, first.duplicates, first.through_seq),
            (10, 0, 10)
        );
        let again = store.store_batches(&[("n", &batch(5..=15, 5))]).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!((again.stored, again.duplicates), (5, 6));
        let seqs: Vec<u64> = store
            .records("n", 0, 100)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    }

    #[test]
    fn retention_deletes_old_records_and_remembers_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        enrolled(&store, "n", "t1");
        store.store_batches(&[("n", &batch(1..=5, 100))]).unwrap();
        store.store_batches(&[("n", &batch(6..=8, 900))]).unwrap();
        store
            .set_export_cursors(Export::RemoteWrite, &[("n".to_owned(), 3)])
            .unwrap();
        let expired = store
            .apply_retention(500, &[Export::RemoteWrite, Export::Otlp])
            .unwrap();
        assert_eq!(expired.deleted, 5);
        assert_eq!(
            expired.unexported,
            [(Export::RemoteWrite, 2), (Export::Otlp, 5)],
            "remote-write had delivered 1..=3, OTLP nothing"
        );
        assert_eq!(
            store.records("n", 0, 100).unwrap().first().map(|r| r.seq),
            Some(6)
        );
        let late = store.store_batches(&[("n", &batch(3..=3, 100))]).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!(
            (late.stored, late.duplicates),
            (0, 1),
            "a deleted record redelivered is not stored again"
        );
    }

    #[test]
    fn a_node_enrolled_again_starts_a_fresh_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        enrolled(&store, "n", "t1");
        store.store_batches(&[("n", &batch(1..=3, 5))]).unwrap();
        store.revoke_node("n").unwrap();
        enrolled(&store, "n", "t2");
        let fresh = store.store_batches(&[("n", &batch(1..=2, 6))]).unwrap()[0]
            .clone()
            .unwrap();
        assert_eq!(
            fresh.stored, 2,
            "the new enrollment's sequence 1 is not a duplicate of the old one"
        );
        assert_eq!(store.node("n").unwrap().unwrap().retired_ids.len(), 1);
        assert_eq!(
            store.apply_retention(u64::MAX, &[]).unwrap().deleted,
            5,
            "retention clears both lives"
        );
    }

    #[test]
    fn a_node_enrolled_again_is_exported_from_its_new_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        enrolled(&store, "n", "t1");
        store.store_batches(&[("n", &batch(1..=5, 5))]).unwrap();
        for export in [Export::RemoteWrite, Export::Otlp] {
            store
                .set_export_cursors(export, &[("n".to_owned(), 5)])
                .unwrap();
        }
        store.revoke_node("n").unwrap();
        enrolled(&store, "n", "t2");
        store.store_batches(&[("n", &batch(1..=3, 6))]).unwrap();
        for export in [Export::RemoteWrite, Export::Otlp] {
            let batch = store.export_batch(export, "", 10, 10).unwrap();
            let seqs: Vec<u64> = batch[0].metrics.iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, [1, 2, 3], "{export:?} starts the new enrollment at 1");
        }
    }
}
