//! Model monitoring's pure part: data profiles ([`profile`]) of a model's inputs and
//! outputs — the bundle's reference, and the windows a node profiles from what it serves
//! — the drift scores between them ([`drift`]), the `.npy` array format reference
//! data comes in ([`npy`]), and production quality from ground-truth feedback
//! ([`quality`]), and the request/answer pairs captured for retraining ([`capture`]).

pub mod capture;
pub mod drift;
pub mod npy;
pub mod profile;
pub mod quality;
mod sketch;

pub use sketch::Sketch;

use serde::{Deserialize, Serialize};

/// A closed drift window of one served model version on one node: what it saw (the
/// profile, on the reference's bins) and how far that is from the reference. Travels
/// from the node's buffer to the controller as an event record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelWindow {
    pub model: String,
    pub version: String,
    /// Bundle id, `sha256:<hex>`.
    pub bundle: String,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The statistic and threshold drift was judged by on the node.
    pub metric: drift::Metric,
    pub threshold: f64,
    /// Scores of every feature with enough values.
    pub drift: Vec<drift::FeatureDrift>,
    pub profile: profile::Profile,
}

impl ModelWindow {
    /// The features over the threshold, worst first.
    pub fn drifted(&self) -> Vec<&drift::FeatureDrift> {
        drift::over(&self.drift, self.metric, self.threshold)
    }
}

#[cfg(test)]
mod tests;

/// A model's latest drift window in a few figures: what heartbeats carry and `status`
/// shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriftSummary {
    pub metric: drift::Metric,
    pub threshold: f64,
    pub window_end_ms: u64,
    /// Rows (examples) the window saw.
    pub rows: u64,
    /// Features over the threshold, worst first, with their scores.
    pub drifted: Vec<(String, f64)>,
    /// The highest-scoring feature and its score.
    pub worst: Option<(String, f64)>,
}
