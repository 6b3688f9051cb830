//! Rollouts: a bundle taken to the nodes a selector picks, step by step, each step held
//! for a bake time while health gates are evaluated on the nodes' own reports, and rolled
//! back automatically when a gate fails.
//!
//! These are the admin calls' payloads and the record the controller keeps per rollout
//! (in its store, so a restarted controller goes on where it was).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::monitoring::quality::QualityMetric;

/// One step: the number of selected nodes that run the bundle once it is done.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// A node count.
    Nodes(u32),
    /// A share of the selected nodes, rounded up (at least one node).
    Percent(f64),
}

impl Step {
    /// Nodes this step covers out of `total`.
    pub fn target(self, total: usize) -> usize {
        match self {
            Self::Nodes(n) => (n as usize).min(total),
            Self::Percent(p) => {
                let share = (p / 100.0 * total as f64).ceil() as usize;
                share.clamp(1, total)
            }
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nodes(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Parses `1,10%,50%,100%`: counts and percentages, each covering at least as many
/// nodes as the one before.
pub fn parse_steps(text: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for part in text.split(',').map(str::trim) {
        let step = if let Some(p) = part.strip_suffix('%') {
            let p: f64 = p
                .parse()
                .map_err(|_| format!("step {part:?} is not a percentage"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "step {part:?}: a percentage is above 0 and at most 100"
                ));
            }
            Step::Percent(p)
        } else {
            let n: u32 = part
                .parse()
                .map_err(|_| format!("step {part:?} is neither a node count nor a percentage"))?;
            if n == 0 {
                return Err("a step of 0 nodes does nothing".to_owned());
            }
            Step::Nodes(n)
        };
        steps.push(step);
    }
    if steps.is_empty() {
        return Err("name at least one step".to_owned());
    }
    Ok(steps)
}

/// What must hold on every node a rollout touched, while its steps bake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gates {
    /// Touched nodes allowed to be unhealthy, silent, or not running the bundle by the
    /// step timeout, before the rollout fails.
    pub max_unhealthy: u32,
    /// Largest share of failed inference requests among a node's recent requests.
    pub max_error_rate: Option<f64>,
    /// Largest 99th-percentile inference latency on a node, seconds.
    pub max_latency_p99_s: Option<f64>,
    /// Whether a node whose served model fails its golden vectors fails the gate.
    pub golden: bool,
    /// Largest drift score (by the bundle's statistic) of any feature in a node's latest
    /// drift window, for bundles with a reference profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_drift: Option<f64>,
    /// Production quality each touched node must reach on the bundle's version, from
    /// the feedback joined since it started serving it (`f1 ≥ 0.8`; errors such as
    /// `mae` are upper bounds), for bundles with a `--task`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub min_quality: BTreeMap<QualityMetric, f64>,
    /// Feedback rows a node needs before its quality is judged.
    pub min_quality_rows: u64,
    /// Largest shift of the canary's prediction distribution from the nodes still on
    /// the previous version over the same period, per output feature (KS for numeric
    /// outputs, JS distance for labels; 0–1), for bundles with a reference profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prediction_shift: Option<f64>,
    /// How much worse than the nodes still on the previous version the canary's
    /// production quality may be over the same period (`accuracy=0.02`: at most 0.02
    /// below; for errors such as `mae`, at most that much above).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub max_quality_drop: BTreeMap<QualityMetric, f64>,
    /// Rows (predictions, or feedback rows for quality) each side needs before the
    /// comparison is judged.
    pub min_compare_rows: u64,
}

impl Gates {
    /// Whether the canary is compared with the nodes still on the previous version.
    pub fn compares(&self) -> bool {
        self.max_prediction_shift.is_some() || !self.max_quality_drop.is_empty()
    }
}

/// Feedback rows a node needs before the quality gate judges it, unless told.
pub const DEFAULT_MIN_QUALITY_ROWS: u64 = 100;

impl Default for Gates {
    fn default() -> Self {
        Self {
            max_unhealthy: 0,
            max_error_rate: None,
            max_latency_p99_s: None,
            golden: true,
            max_drift: None,
            min_quality: BTreeMap::new(),
            min_quality_rows: DEFAULT_MIN_QUALITY_ROWS,
            max_prediction_shift: None,
            max_quality_drop: BTreeMap::new(),
            min_compare_rows: DEFAULT_MIN_QUALITY_ROWS,
        }
    }
}

/// What `gantry rollout start` asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Spec {
    /// `NAME@VERSION` or a bundle id (`sha256:…`).
    pub bundle: String,
    /// Labels a node must carry, all of them; empty selects every node.
    pub selector: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// How long each step holds, gates evaluated, before the next.
    pub bake_ms: u64,
    pub gates: Gates,
    /// How long the nodes of a step have to report the bundle active and healthy; after
    /// it, the ones that have not count against `max_unhealthy`.
    pub step_timeout_ms: u64,
    /// A touched node without a heartbeat for this long counts as unhealthy.
    pub silence_ms: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            bundle: String::new(),
            selector: BTreeMap::new(),
            steps: vec![Step::Nodes(1), Step::Percent(100.0)],
            bake_ms: 5 * 60 * 1000,
            gates: Gates::default(),
            step_timeout_ms: 10 * 60 * 1000,
            silence_ms: 30 * 1000,
        }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Assigning the current step's nodes and waiting for them to run the bundle.
    Rolling,
    /// The current step's nodes run it; gates are evaluated until the bake time is over.
    Baking,
    /// Held by an operator; nothing is assigned, no timer runs.
    Paused,
    /// Every step done and baked.
    Succeeded,
    /// Stopped by an operator; touched nodes keep what they run.
    Aborted,
    /// A gate failed or an operator asked: touched nodes are going back to their previous
    /// bundles.
    RollingBack,
    /// Every touched node is back on its previous bundle (or has none to go back to).
    RolledBack,
}

impl State {
    /// Every state, in the order of a rollout's life.
    pub const ALL: [Self; 7] = [
        Self::Rolling,
        Self::Baking,
        Self::Paused,
        Self::Succeeded,
        Self::Aborted,
        Self::RollingBack,
        Self::RolledBack,
    ];

    /// Whether the rollout still acts on nodes (and holds them against other rollouts).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Self::Rolling | Self::Baking | Self::Paused | Self::RollingBack
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rolling => "rolling",
            Self::Baking => "baking",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Aborted => "aborted",
            Self::RollingBack => "rolling-back",
            Self::RolledBack => "rolled-back",
        }
    }
}

/// A node the rollout assigned the bundle to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Touched {
    pub node: String,
    /// The bundle assigned to it before, to go back to; `None` when it had none.
    pub previous: Option<String>,
    pub step: usize,
    pub assigned_at_ms: u64,
}

/// How each touched node looks to the gates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Assigned; not yet running the bundle.
    #[default]
    Pending,
    /// Runs the bundle and passes the gates.
    Ok,
    /// Runs the bundle (or should by now) and fails a gate or its health.
    Failing,
    /// No heartbeat for the silence time.
    Silent,
    /// Refused the bundle (verification, golden vectors, no usable provider).
    Refused,
    /// Back on its previous bundle after a rollback.
    Restored,
}

/// The latest gate evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GateValues {
    pub at_ms: u64,
    /// Touched nodes per state.
    pub nodes: BTreeMap<String, u32>,
    /// Nodes counted against `max_unhealthy`, with why.
    pub failing: Vec<String>,
    pub max_error_rate: Option<f64>,
    pub max_latency_p99_s: Option<f64>,
    pub golden_failures: u32,
    /// The worst drift score among touched nodes' latest windows, and its feature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_drift: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_drift_feature: Option<String>,
    /// The worst value of each gated quality metric among touched nodes' figures.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub worst_quality: BTreeMap<QualityMetric, f64>,
    /// The fewest feedback rows any touched node reporting quality has joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_quality_rows: Option<u64>,
    /// The gates that touched nodes failed: `health`, `silence`, `refusal`, `timeout`,
    /// `error-rate`, `latency`, `golden`, `drift`, `quality`, and `canary-comparison`
    /// (the canary against the nodes still on the previous version).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_gates: Vec<String>,
    /// The canary against the nodes still on the previous version, when compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
}

/// The touched nodes on the rollout's bundle against the nodes still on the bundle they
/// replaced, over the same period: windows that started once the first touched node
/// was assigned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Comparison {
    pub since_ms: u64,
    pub canary_nodes: u32,
    pub baseline_nodes: u32,
    /// The bundles the baseline nodes serve.
    pub baseline_bundles: Vec<String>,
    /// Per output feature, worst first.
    pub prediction_shift: Vec<crate::monitoring::drift::OutputShift>,
    pub canary_quality: Option<crate::monitoring::quality::Metrics>,
    pub baseline_quality: Option<crate::monitoring::quality::Metrics>,
}

/// Something that happened to the rollout, for `status` and the KPIs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    pub at_ms: u64,
    pub message: String,
}

/// A rollout as the controller keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rollout {
    /// `r<number>`, in creation order.
    pub id: String,
    pub spec: Spec,
    /// The resolved bundle.
    pub bundle_id: String,
    pub bundle_name: String,
    pub bundle_version: String,
    /// When the bundle was pushed (lead time starts there).
    pub pushed_at_ms: u64,
    pub created_by: String,
    pub created_at_ms: u64,
    pub state: Option<State>,
    /// The state before a pause, to resume into.
    pub paused_from: Option<State>,
    /// Index into `spec.steps`.
    pub step: usize,
    /// When the current phase (rolling or baking of this step) started.
    pub phase_started_ms: u64,
    /// The selected nodes, in the order the steps take them (spread across labels).
    pub plan: Vec<String>,
    pub touched: Vec<Touched>,
    pub gates: GateValues,
    /// Why it failed, when a gate failed.
    pub failure: Option<String>,
    /// Which gates failed then (as in [`GateValues::failed_gates`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_gates: Vec<String>,
    pub failed_at_ms: Option<u64>,
    /// When every touched node was back on its previous bundle and healthy.
    pub recovered_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub events: Vec<Event>,
}

impl Rollout {
    pub fn state(&self) -> State {
        self.state.unwrap_or(State::Rolling)
    }

    /// Nodes the current step covers.
    pub fn step_target(&self) -> usize {
        self.spec
            .steps
            .get(self.step)
            .map_or(self.plan.len(), |s| s.target(self.plan.len()))
            .max(self.touched.len())
    }
}

/// Rollout KPIs over a window, from the recorded rollouts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Kpis {
    pub from_ms: u64,
    pub to_ms: u64,
    /// Rollouts started in the window, by final (or current) state.
    pub rollouts: BTreeMap<String, u32>,
    /// Succeeded rollouts per day.
    pub deployments_per_day: f64,
    /// Push of the bundle → rollout done fleet-wide, over succeeded rollouts.
    pub lead_time_median_s: Option<f64>,
    pub lead_time_max_s: Option<f64>,
    /// Failed gates over rollouts that finished by success or failure.
    pub change_failure_rate: Option<f64>,
    /// Failed gate → every touched node healthy on its previous bundle.
    pub mttr_mean_s: Option<f64>,
    pub mttr_max_s: Option<f64>,
    /// The same figures per model (the rolled-out bundles' names), each without its own
    /// breakdown.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, Kpis>,
    /// Model performance in production: per model, each version's quality from the
    /// feedback windows nodes closed in the window, merged fleet-wide.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub model_quality: BTreeMap<String, Vec<crate::protocol::monitoring::VersionQualityFigures>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_cover_nodes() {
        let steps = parse_steps("1,10%,50%,100%").unwrap();
        assert_eq!(
            steps.iter().map(|s| s.target(50)).collect::<Vec<_>>(),
            [1, 5, 25, 50]
        );
        assert_eq!(Step::Percent(10.0).target(3), 1, "at least one node");
        assert_eq!(Step::Nodes(5).target(3), 3, "never more than selected");
        assert!(parse_steps("0").is_err());
        assert!(parse_steps("150%").is_err());
        assert!(parse_steps("a").unwrap_err().contains("\"a\""));
        assert!(parse_steps("").is_err());
    }
}
