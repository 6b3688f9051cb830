//! Heartbeat: the node says how it is; the controller says what it wants.

use serde::{Deserialize, Serialize};

/// Sent by the agent every heartbeat interval while connected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Request {
    pub agent_version: String,
    /// Records waiting in the agent's buffer.
    pub buffered_records: u64,
    /// Age of the oldest buffered record, seconds.
    pub oldest_buffered_age_s: u64,
    /// Highest sequence number the agent has assigned.
    pub last_seq: u64,
    /// Records the buffer dropped to stay within its limits, per class.
    pub dropped_metrics: u64,
    pub dropped_events: u64,
    /// The node's health as the agent judged it.
    pub health: Option<crate::health::Health>,
    /// Active bundle, download progress, the last refusal.
    pub bundles: super::delivery::NodeBundles,
}

/// The controller's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    /// Controller wall clock, for the node's clock-skew check.
    pub server_time_ms: u64,
    /// The bundle this node should run; `None` while nothing is assigned.
    pub desired: Option<super::delivery::Desired>,
}
