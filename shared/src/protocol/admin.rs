//! Admin calls from the fleet CLI. Each is checked against the role in the caller's
//! certificate record: `viewer` reads, `operator` changes what runs, `admin` manages
//! tokens, nodes and admins.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::telemetry::Sample;

use super::telemetry::RecordClass;

/// Admin roles, in increasing power.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(format!("{other:?} is not a role (viewer, operator, admin)")),
        }
    }
}

/// Admin requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Admin: a single-use join token.
    TokenCreate {
        labels: BTreeMap<String, String>,
        ttl_s: u64,
    },
    /// Viewer: every node.
    FleetList,
    /// Viewer: one node in detail.
    FleetShow { node: String },
    /// Viewer: the latest sample of every node.
    FleetTop,
    /// Viewer: the sequence numbers stored for a node.
    TelemetryQuery {
        node: String,
        after_seq: u64,
        limit: u32,
    },
    /// Admin: revoke a node's certificate.
    NodeRevoke { node: String },
    /// Operator: take a node out of new rollouts, saying why.
    NodeCordon { node: String, reason: String },
    /// Operator: let a cordoned node take rollouts again.
    NodeUncordon { node: String },
    /// Admin: a certificate for another admin with `role`, for `public_key` (hex P-256 point).
    AdminAdd {
        name: String,
        role: Role,
        public_key: String,
    },
    /// Operator: bytes of a bundle being pushed, at `offset` of a file of `size` bytes
    /// whose SHA-256 is `file_sha256`. Answered with the bytes held so far, so a broken
    /// push resumes.
    BundleUpload {
        file_sha256: String,
        size: u64,
        offset: u64,
        data: String,
    },
    /// Operator: the upload is complete; verify it against the controller's trust policy
    /// and keep it.
    BundleCommit {
        file_sha256: String,
        /// Carried in by file (`gantry bundle import`) rather than pushed: recorded so.
        #[serde(default)]
        import: bool,
    },
    /// Viewer: every bundle held.
    BundleList,
    /// Operator: make `id` the desired bundle of `nodes`.
    BundleAssign { id: String, nodes: Vec<String> },
    /// Operator: start a rollout.
    RolloutStart(Box<super::rollout::Spec>),
    /// Viewer: one rollout, or every rollout when `id` is `None`.
    RolloutStatus { id: Option<String> },
    /// Operator: hold a rollout where it is.
    RolloutPause { id: String },
    /// Operator: go on with a paused rollout.
    RolloutResume { id: String },
    /// Operator: stop a rollout; touched nodes keep what they run.
    RolloutAbort { id: String },
    /// Operator: return every node a rollout touched to its previous bundle.
    RolloutRollback { id: String },
    /// Viewer: delivery KPIs over rollouts started in the last `window_ms`.
    ReportKpis { window_ms: u64 },
    /// Admin: enroll a node by file (its offline request), as if it had dialled in.
    TokenRedeem(Box<super::enroll::Request>),
    /// Admin: renew a node's certificate by file (its offline renewal request).
    NodeRenew(Box<super::enroll::RenewRequest>),
    /// Any admin: a new certificate for the caller's own name and role, for a new key
    /// (`gantry admin rotate`); the certificate used for the call is revoked.
    AdminRotate { public_key: String },
    /// Operator: ingest a telemetry export carried out of an air-gapped hall (the file,
    /// base64).
    TelemetryImport { file: String },
    /// Viewer: walk the audit chain and name its first break.
    AuditVerify,
    /// Viewer: the audit log itself, newest first: up to `limit` entries older than
    /// `before_seq` (from the head when `None`) whose actor, action or subject contains
    /// `filter` (every entry when empty).
    AuditEntries {
        before_seq: Option<u64>,
        limit: u32,
        #[serde(default)]
        filter: String,
    },
    /// Viewer: the auditor's report over `[from_ms, to_ms]`; nodes without a connection
    /// for longer than `silence_ms` are flagged.
    AuditReport {
        from_ms: u64,
        to_ms: u64,
        silence_ms: u64,
    },
    /// Viewer: model `model`'s drift windows (of `version` only, when given) that ended
    /// after `since_ms`, and fleet-wide windows of `period_ms`.
    ModelDrift {
        model: String,
        version: Option<String>,
        since_ms: u64,
        period_ms: u64,
    },
    /// Viewer: model `model`'s feedback windows (of `version` only, when given) that
    /// ended after `since_ms`, merged fleet-wide per `period_ms` and over the span.
    ModelQuality {
        model: String,
        version: Option<String>,
        since_ms: u64,
        period_ms: u64,
    },
    /// Operator (captured payloads are production data): a page of model `model`'s
    /// captured pairs (of `version` only, when given), oldest first, after `after`.
    CaptureExport {
        model: String,
        version: Option<String>,
        after: Option<super::monitoring::CaptureCursor>,
    },
    /// Any admin: a one-time sign-in code for the web console, bound to the caller's
    /// name and role (`gantry console login`).
    ConsoleLogin,
}

impl Request {
    /// The least role allowed to make this request.
    pub fn required_role(&self) -> Role {
        match self {
            Self::FleetList
            | Self::FleetShow { .. }
            | Self::FleetTop
            | Self::TelemetryQuery { .. }
            | Self::BundleList
            | Self::RolloutStatus { .. }
            | Self::ReportKpis { .. }
            | Self::AuditVerify
            | Self::AuditReport { .. }
            | Self::AuditEntries { .. }
            | Self::ModelDrift { .. }
            | Self::ModelQuality { .. }
            | Self::ConsoleLogin
            | Self::AdminRotate { .. } => Role::Viewer,
            Self::BundleUpload { .. }
            | Self::BundleCommit { .. }
            | Self::BundleAssign { .. }
            | Self::RolloutStart(_)
            | Self::RolloutPause { .. }
            | Self::RolloutResume { .. }
            | Self::RolloutAbort { .. }
            | Self::RolloutRollback { .. }
            | Self::NodeCordon { .. }
            | Self::NodeUncordon { .. }
            | Self::TelemetryImport { .. }
            | Self::CaptureExport { .. } => Role::Operator,
            Self::TokenCreate { .. }
            | Self::TokenRedeem(_)
            | Self::NodeRenew(_)
            | Self::NodeRevoke { .. }
            | Self::AdminAdd { .. } => Role::Admin,
        }
    }

    /// Short name for logs and the audit trail.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TokenCreate { .. } => "token create",
            Self::FleetList => "fleet ls",
            Self::FleetShow { .. } => "fleet show",
            Self::FleetTop => "fleet top",
            Self::TelemetryQuery { .. } => "telemetry query",
            Self::NodeRevoke { .. } => "fleet revoke",
            Self::NodeCordon { .. } => "fleet cordon",
            Self::NodeUncordon { .. } => "fleet uncordon",
            Self::AdminAdd { .. } => "admin add",
            Self::BundleUpload { .. } => "bundle upload",
            Self::BundleCommit { .. } => "bundle push",
            Self::BundleList => "bundle ls",
            Self::BundleAssign { .. } => "bundle assign",
            Self::RolloutStart(_) => "rollout start",
            Self::RolloutStatus { .. } => "rollout status",
            Self::RolloutPause { .. } => "rollout pause",
            Self::RolloutResume { .. } => "rollout resume",
            Self::RolloutAbort { .. } => "rollout abort",
            Self::RolloutRollback { .. } => "rollout rollback",
            Self::ReportKpis { .. } => "report kpis",
            Self::AuditVerify => "audit verify",
            Self::TelemetryImport { .. } => "telemetry import",
            Self::TokenRedeem(_) => "token redeem",
            Self::NodeRenew(_) => "fleet renew",
            Self::AdminRotate { .. } => "admin rotate",
            Self::AuditReport { .. } => "audit report",
            Self::AuditEntries { .. } => "audit log",
            Self::ModelDrift { .. } => "model drift",
            Self::ModelQuality { .. } => "model quality",
            Self::CaptureExport { .. } => "capture export",
            Self::ConsoleLogin => "console login",
        }
    }
}

/// Admin responses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Token {
        token: String,
        expires_at_ms: u64,
    },
    Nodes(Vec<NodeSummary>),
    Node(Box<NodeDetail>),
    Top(Vec<NodeLatest>),
    Records(Vec<RecordInfo>),
    Revoked {
        node: String,
    },
    /// The node's cordon after `fleet cordon` or `fleet uncordon` (`None`: uncordoned).
    Cordoned {
        node: String,
        cordon: Option<Cordon>,
    },
    AdminAdded {
        name: String,
        role: Role,
        certificate_pem: String,
        ca_pem: String,
        /// When the certificate stops being valid (Unix ms).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at_ms: Option<u64>,
    },
    NodeRenewed(Box<super::enroll::Response>),
    /// Bytes of the upload held so far.
    Uploaded {
        received: u64,
    },
    Pushed(Box<super::delivery::BundleInfo>),
    Bundles(Vec<super::delivery::BundleInfo>),
    Assigned {
        id: String,
        nodes: Vec<String>,
        /// The model the assignment is for (the bundle's name).
        #[serde(default)]
        model: String,
    },
    Rollout(Box<super::rollout::Rollout>),
    Rollouts(Vec<super::rollout::Rollout>),
    Kpis(Box<super::rollout::Kpis>),
    AuditVerified(super::audit::Verification),
    Redeemed {
        response: Box<super::enroll::Response>,
        controller_certificate_pem: String,
        /// See [`super::enroll::OfflineResponse::controller_signature`].
        controller_signature: String,
    },
    TelemetryImported {
        node: String,
        from_seq: u64,
        to_seq: u64,
        records: u64,
        stored: u64,
        duplicates: u64,
    },
    AuditReport(Box<super::audit::Report>),
    /// Audit log entries, newest first (`Request::AuditEntries`).
    AuditEntries(Vec<super::audit::Entry>),
    Drift(Box<super::monitoring::DriftReport>),
    Quality(Box<super::monitoring::QualityReport>),
    Captures(Box<super::monitoring::CapturePage>),
    /// A one-time console sign-in: the link to open (or the code to type at `/login`),
    /// valid once until `expires_at_ms`.
    ConsoleLogin {
        url: String,
        code: String,
        expires_at_ms: u64,
    },
}

/// One node in `fleet ls`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeSummary {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub enrolled_at_ms: u64,
    pub last_seen_ms: Option<u64>,
    pub connected: bool,
    pub revoked: bool,
    pub gpus: u32,
    /// Records stored for the node, and the highest sequence stored.
    pub records_stored: u64,
    pub last_seq: u64,
    /// From the node's latest heartbeat.
    pub health: Option<crate::health::HealthState>,
    /// Set while the node takes no new rollouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cordon: Option<Cordon>,
}

/// Why a node takes no new rollouts: `gantry fleet cordon`, or the controller on a health
/// reason the operator chose (`gantry serve --auto-cordon`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cordon {
    pub reason: String,
    /// The admin who cordoned it, or `controller` when it was automatic.
    pub by: String,
    pub at_ms: u64,
    pub automatic: bool,
}

/// `fleet show`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeDetail {
    pub summary: NodeSummary,
    /// From the node's last heartbeat.
    pub buffered_on_node: u64,
    pub dropped_metrics: u64,
    pub dropped_events: u64,
    pub agent_version: String,
    pub health: Option<crate::health::Health>,
    pub latest: Option<Sample>,
    /// Active bundle, download progress and the last refusal, from the last heartbeat.
    pub bundles: super::delivery::NodeBundles,
    /// What the controller wants the node to run, one bundle per model.
    pub assigned: Vec<super::delivery::Desired>,
}

/// `fleet top`: a node's latest sample.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeLatest {
    pub node: String,
    pub connected: bool,
    pub sample: Option<Sample>,
}

/// A stored record's key facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    pub seq: u64,
    pub at_ms: u64,
    pub class: RecordClass,
}
