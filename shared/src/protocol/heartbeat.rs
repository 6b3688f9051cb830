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
    /// The first served model's figures, for controllers that track one model per node.
    pub model: Option<ModelReport>,
    /// Every served model's figures.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelReport>,
}

impl Request {
    /// The figures of the model served from bundle `id` (`sha256:<hex>`).
    pub fn model_for(&self, id: &str) -> Option<&ModelReport> {
        model_for(&self.models, self.model.as_ref(), id)
    }
}

/// The report for bundle `id` among `models`, or `model` (a node that sends one).
pub fn model_for<'a>(
    models: &'a [ModelReport],
    model: Option<&'a ModelReport>,
    id: &str,
) -> Option<&'a ModelReport> {
    models.iter().chain(model).find(|m| m.bundle == id)
}

/// The served model's figures, for rollout gates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelReport {
    /// The model's name (empty from nodes that serve one model).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Bundle id (`sha256:<hex>`) of the model being served.
    pub bundle: String,
    pub execution_provider: String,
    /// Failed share of the latest requests, and how many those are.
    pub recent_error_rate: f64,
    pub recent_requests: u64,
    pub latency_p99_s: Option<f64>,
    /// The latest golden-vector run; `None` before the first.
    pub golden_ok: Option<bool>,
    /// The latest drift window, for a bundle with a reference profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<crate::monitoring::DriftSummary>,
    /// The latest feedback window, for a bundle that names what it predicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<crate::monitoring::quality::QualitySummary>,
}

/// The controller's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Response {
    /// Controller wall clock, for the node's clock-skew check.
    pub server_time_ms: u64,
    /// The first of `assigned`, for agents that run one model.
    pub desired: Option<super::delivery::Desired>,
    /// The bundle this node should run for each model assigned to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assigned: Vec<super::delivery::Desired>,
}

impl Response {
    /// The answer naming `assigned`.
    pub fn new(server_time_ms: u64, assigned: Vec<super::delivery::Desired>) -> Self {
        Self {
            server_time_ms,
            desired: assigned.first().cloned(),
            assigned,
        }
    }

    /// What the controller wants the node to run, one bundle per model; a controller
    /// that knows one model per node names it in `desired` only.
    pub fn wanted(&self) -> Vec<super::delivery::Desired> {
        if self.assigned.is_empty() {
            self.desired.iter().cloned().collect()
        } else {
            self.assigned.clone()
        }
    }
}
