//! Model monitoring at the controller: `gantry model drift` asks for a model's drift
//! windows as nodes reported them, and the fleet-wide windows merged from them.

use serde::{Deserialize, Serialize};

use crate::monitoring::drift::{FeatureDrift, Metric};

/// Most node windows one answer carries (the newest).
pub const MAX_WINDOWS: usize = 2000;

/// A model's drift over time, per node and fleet-wide.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriftReport {
    pub model: String,
    /// The length of the fleet-wide periods.
    pub period_ms: u64,
    /// Node windows, oldest first.
    pub windows: Vec<NodeWindow>,
    /// Fleet-wide windows: every node's windows of a version that ended in the same
    /// period, merged and scored against the version's reference, oldest first.
    pub fleet: Vec<FleetWindow>,
    /// Versions with windows whose bundle the controller does not hold, so it has no
    /// reference to score their merged windows against.
    pub without_reference: Vec<String>,
    /// Node windows left out beyond [`MAX_WINDOWS`].
    pub left_out: u64,
}

/// One node's closed window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeWindow {
    pub node: String,
    pub version: String,
    pub bundle: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub rows: u64,
    pub metric: Metric,
    pub threshold: f64,
    pub drift: Vec<FeatureDrift>,
}

/// Windows of every node for one version and period, merged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetWindow {
    pub version: String,
    /// The period: windows that ended in `[start_ms, end_ms)`.
    pub start_ms: u64,
    pub end_ms: u64,
    pub nodes: u32,
    pub rows: u64,
    pub metric: Metric,
    pub threshold: f64,
    pub drift: Vec<FeatureDrift>,
}

impl NodeWindow {
    /// Features over the threshold, worst first.
    pub fn drifted(&self) -> Vec<&FeatureDrift> {
        crate::monitoring::drift::over(&self.drift, self.metric, self.threshold)
    }
}

impl FleetWindow {
    pub fn drifted(&self) -> Vec<&FeatureDrift> {
        crate::monitoring::drift::over(&self.drift, self.metric, self.threshold)
    }
}

/// A model's production quality from ground-truth feedback over time: per node, merged
/// fleet-wide per version and period, and per version over the whole span.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QualityReport {
    pub model: String,
    pub since_ms: u64,
    pub period_ms: u64,
    /// Node windows, oldest first.
    pub windows: Vec<NodeQuality>,
    /// Fleet-wide: every node's windows of a version that ended in the same period.
    pub fleet: Vec<VersionQualityFigures>,
    /// Per version over the whole span (every node, every window).
    pub versions: Vec<VersionQualityFigures>,
    /// What became of the feedback over the span, fleet-wide.
    pub feedback: crate::monitoring::quality::FeedbackCounts,
    /// Node windows left out beyond [`MAX_WINDOWS`].
    pub left_out: u64,
}

/// One node's feedback window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeQuality {
    pub node: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub feedback: crate::monitoring::quality::FeedbackCounts,
    pub versions: Vec<VersionQualityFigures>,
}

/// A version's metrics over some span.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionQualityFigures {
    pub version: String,
    pub bundle: String,
    /// The span: windows that ended in `[start_ms, end_ms)` (a node window: its own).
    pub start_ms: u64,
    pub end_ms: u64,
    pub nodes: u32,
    pub metrics: crate::monitoring::quality::Metrics,
    /// Classification: the confusion matrix, one cell per (true, predicted) label pair
    /// seen, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confusion: Vec<ConfusionCell>,
}

/// Rows whose true label was `truth` and predicted label `predicted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionCell {
    pub truth: i64,
    pub predicted: i64,
    pub rows: u64,
}

/// The cells of a confusion matrix as [`crate::monitoring::quality::QualityStats`] keeps it.
pub fn confusion_cells(confusion: &[(i64, i64, u64)]) -> Vec<ConfusionCell> {
    confusion
        .iter()
        .map(|&(truth, predicted, rows)| ConfusionCell {
            truth,
            predicted,
            rows,
        })
        .collect()
}

/// Most bytes of pairs one capture page carries (a pair is at most
/// [`crate::monitoring::capture::MAX_PAIR_BYTES`], so every page fits a frame).
pub const MAX_CAPTURE_PAGE_BYTES: usize = 4 << 20;

/// Where a capture page ends: the last pair's time, node and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CaptureCursor {
    pub at_ms: u64,
    pub node: String,
    pub seq: u64,
}

/// A page of captured pairs, oldest first; `next` asks for the following page.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CapturePage {
    pub pairs: Vec<ExportedPair>,
    pub next: Option<CaptureCursor>,
}

/// A captured pair as the controller keeps it: the node that captured it, and the label
/// fed back for it, when there was one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedPair {
    pub node: String,
    pub seq: u64,
    pub pair: crate::monitoring::capture::CapturedPair,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<crate::monitoring::quality::Truth>,
}
