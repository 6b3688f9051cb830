//! The audit log's answers to admins: the chain's verification and the auditor's report.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One audit entry as stored (and as `audit log` answers it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Entry {
    pub seq: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub details: serde_json::Value,
    pub prev: String,
    pub hash: String,
}

/// The first place the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// Sequence number of the first entry that does not verify (or where one is missing).
    pub seq: u64,
    pub problem: String,
}

/// What verifying the chain found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Verification {
    /// Entries stored.
    pub entries: u64,
    /// The last entry that verified: where the intact chain ends.
    pub head_seq: u64,
    pub head_hash: String,
    pub first_break: Option<Break>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.first_break.is_none()
    }
}

/// The auditor's report over a time range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    pub from_ms: u64,
    pub to_ms: u64,
    pub generated_at_ms: u64,
    /// The chain it was computed from, so it can be reproduced.
    pub chain: Verification,
    pub nodes: BTreeMap<String, NodeReport>,
    pub bundles: BTreeMap<String, BundleReport>,
    /// The controller's trust policies, in the order they came into force (up to the end
    /// of the range): pushes are verified against the one in force at their time.
    pub policies: Vec<PolicyRecord>,
    /// Bundles the controller refused to take, by push or by import, in order.
    pub refused_uploads: Vec<RefusedUpload>,
    /// Everything an auditor must look at.
    pub flags: Vec<Flag>,
}

/// A bundle upload the controller refused (`bundle push` or `bundle import`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefusedUpload {
    pub at_ms: u64,
    pub by: String,
    /// `push` or `import`.
    pub via: String,
    /// SHA-256 of the refused file, when recorded.
    pub file_sha256: String,
    pub reason: String,
}

/// A trust policy of the controller, from when the log first saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyRecord {
    pub from_ms: u64,
    pub sha256: String,
    pub version: Option<u64>,
    pub threshold: Option<u32>,
    pub keys: Vec<String>,
    pub revoked: Vec<String>,
}

/// One node: what ran on it and when.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    pub enrolled_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
    pub ran: Vec<Interval>,
    pub refused: Vec<Refusal>,
    /// Periods without a connection longer than the report's silence threshold.
    pub silent: Vec<Period>,
    /// When the node was cordoned (taking no new rollouts), by whom, and when lifted.
    pub cordons: Vec<CordonRecord>,
}

/// One cordon of a node, from the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CordonRecord {
    pub at_ms: u64,
    /// An admin, or `controller` for an automatic cordon.
    pub by: String,
    pub reason: String,
    pub automatic: bool,
    pub lifted_at_ms: Option<u64>,
    pub lifted_by: Option<String>,
}

/// A bundle active on a node from `from_ms` until `to_ms` (`None`: still active).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Interval {
    pub bundle: String,
    pub name: String,
    pub version: String,
    pub from_ms: u64,
    pub to_ms: Option<u64>,
    /// What put it there: `rollout r3`, `assigned by alice`, or an activation on the node
    /// itself (a local import or rollback).
    pub cause: String,
    /// The keys whose valid signatures admitted it when it was pushed.
    pub signers: Vec<String>,
    /// Whether its signatures were verified valid under the controller's policy of that
    /// time (recorded at the push); `false` when it was never pushed here.
    pub signatures_valid: bool,
    pub policy_sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Refusal {
    pub at_ms: u64,
    pub bundle: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Period {
    pub from_ms: u64,
    /// `None`: still silent at the end of the report.
    pub to_ms: Option<u64>,
}

/// One bundle: who pushed and signed it, and where it ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BundleReport {
    pub name: String,
    pub version: String,
    pub pushed_at_ms: Option<u64>,
    pub pushed_by: String,
    /// How it reached the controller: `push`, or `import` (carried in on media).
    pub via: String,
    pub signers: Vec<String>,
    pub signatures_valid: bool,
    pub policy_sha256: String,
    /// `(node, from, to)` for every interval it ran.
    pub ran_on: Vec<(String, u64, Option<u64>)>,
}

/// Something the auditor must look at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Flag {
    /// `unverified-bundle`, `silent-node`, `chain-broken`, `model-drift`,
    /// `quality-gate-failed`, `drift-gate-failed`, `rollout-gate-failed`.
    pub kind: String,
    pub subject: String,
    pub message: String,
}
