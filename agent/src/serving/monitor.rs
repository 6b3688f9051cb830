//! Drift monitoring of a served model version: each request's inputs and each answer's
//! outputs are profiled into the current window, on the bins and labels of the bundle's
//! reference profile; when the window's time is up it is closed, scored against the
//! reference (PSI, KS, JS per feature) and handed to the recorder, which buffers it for
//! the controller. The latest closed window is what health, `/metrics` and `status`
//! report.
//!
//! Memory per model is bounded by the reference's shape: per numeric feature ten bin
//! counts and a sketch of at most 2 × 2048 bins, per categorical one count per label.
//! The profiling cost per request is measured by `cargo bench --bench inference --
//! monitoring`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_shared::bundle::manifest::{Monitoring, Tensor, TensorSpec};
use gantry_shared::monitoring::drift::{self, FeatureDrift, Metric};
use gantry_shared::monitoring::profile::{Profile, Side, WindowProfiler};
use gantry_shared::monitoring::{DriftSummary, ModelWindow};
use gantry_shared::tensor::TensorData;

/// Validated `[monitoring]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringSettings {
    pub window: Duration,
    pub min_values: u64,
    /// The node's drift threshold for every model, and per model; else the bundle's.
    pub drift_threshold: Option<f64>,
    pub model_thresholds: std::collections::BTreeMap<String, f64>,
    /// Payload capture per model (`capture_rate` and the rest).
    pub capture: std::collections::BTreeMap<String, super::capture::CaptureSettings>,
    /// Predictions kept for ground-truth feedback.
    pub feedback: super::feedback::FeedbackSettings,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            min_values: 100,
            drift_threshold: None,
            model_thresholds: std::collections::BTreeMap::new(),
            capture: std::collections::BTreeMap::new(),
            feedback: super::feedback::FeedbackSettings::default(),
        }
    }
}

impl MonitoringSettings {
    /// The threshold model `name` is judged by: the node's for it, the node's for all,
    /// or the bundle's.
    pub fn threshold_for(&self, name: &str, bundle: f64) -> f64 {
        self.model_thresholds
            .get(name)
            .copied()
            .or(self.drift_threshold)
            .unwrap_or(bundle)
    }
}

/// One served model version's monitor.
#[derive(Debug)]
pub struct ModelMonitor {
    model: String,
    version: String,
    bundle: String,
    reference: Profile,
    pub metric: Metric,
    pub threshold: f64,
    min_values: u64,
    window: Duration,
    current: Mutex<Current>,
    latest: Mutex<Option<Arc<ModelWindow>>>,
}

#[derive(Debug)]
struct Current {
    profiler: WindowProfiler,
    start_ms: u64,
}

impl ModelMonitor {
    /// A monitor of model `name` `version` (bundle `digest`) against `reference`,
    /// judged by the bundle's `monitoring` unless the node's `settings` override it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        version: &str,
        digest: &str,
        reference: Profile,
        monitoring: &Monitoring,
        settings: &MonitoringSettings,
        specs: (&[TensorSpec], &[TensorSpec]),
        now_ms: u64,
    ) -> Self {
        let (inputs, outputs) = specs;
        let empty = |side: Side, tensor: &str| {
            let specs = if side == Side::Input { inputs } else { outputs };
            specs
                .iter()
                .find(|s| s.name == tensor)
                .map(|s| TensorData::empty(s.dtype))
        };
        let profiler = WindowProfiler::new(&reference, empty);
        Self {
            model: name.to_owned(),
            version: version.to_owned(),
            bundle: format!("sha256:{digest}"),
            metric: monitoring.drift_metric,
            threshold: settings.threshold_for(name, monitoring.drift_threshold),
            min_values: settings.min_values,
            window: settings.window,
            reference,
            current: Mutex::new(Current {
                profiler,
                start_ms: now_ms,
            }),
            latest: Mutex::new(None),
        }
    }

    /// Profiles a request's inputs, `rows` examples.
    pub fn observe_inputs(&self, inputs: &[(String, Tensor)], rows: u64) {
        let mut current = self.current.lock().expect("drift window");
        current.profiler.count_rows(rows);
        current
            .profiler
            .observe(Side::Input, inputs.iter().map(|(n, t)| (n.as_str(), t)));
    }

    /// Profiles the outputs a request got.
    pub fn observe_outputs(&self, outputs: &[(String, Tensor)]) {
        let mut current = self.current.lock().expect("drift window");
        current
            .profiler
            .observe(Side::Output, outputs.iter().map(|(n, t)| (n.as_str(), t)));
    }

    /// Closes the window when its time is up at `now_ms`: scores it, keeps it as the
    /// latest and returns it (a window that saw no request is not returned).
    pub fn close_if_due(&self, now_ms: u64) -> Option<Arc<ModelWindow>> {
        let profile = {
            let mut current = self.current.lock().expect("drift window");
            if now_ms.saturating_sub(current.start_ms) < self.window.as_millis() as u64 {
                return None;
            }
            let start_ms = std::mem::replace(&mut current.start_ms, now_ms);
            (start_ms, current.profiler.take())
        };
        let (start_ms, profile) = profile;
        let window = Arc::new(ModelWindow {
            model: self.model.clone(),
            version: self.version.clone(),
            bundle: self.bundle.clone(),
            start_ms,
            end_ms: now_ms,
            metric: self.metric,
            threshold: self.threshold,
            drift: drift::compare(&self.reference, &profile, self.min_values),
            profile,
        });
        *self.latest.lock().expect("drift window") = Some(Arc::clone(&window));
        (window.profile.rows > 0).then_some(window)
    }

    /// The latest closed window.
    pub fn latest(&self) -> Option<Arc<ModelWindow>> {
        self.latest.lock().expect("drift window").clone()
    }

    /// What health and status report: the latest window's verdict.
    pub fn verdict(&self) -> Option<DriftVerdict> {
        let latest = self.latest()?;
        Some(DriftVerdict {
            metric: self.metric,
            threshold: self.threshold,
            end_ms: latest.end_ms,
            rows: latest.profile.rows,
            worst: drift::worst(&latest.drift, self.metric).cloned(),
            drifted: latest.drifted().into_iter().cloned().collect(),
            scores: latest.drift.clone(),
        })
    }
}

/// The latest window's drift, as health and status judge it.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftVerdict {
    pub metric: Metric,
    pub threshold: f64,
    pub end_ms: u64,
    pub rows: u64,
    /// The highest-scoring feature.
    pub worst: Option<FeatureDrift>,
    /// Features over the threshold, worst first.
    pub drifted: Vec<FeatureDrift>,
    /// Every scored feature.
    pub scores: Vec<FeatureDrift>,
}

impl DriftVerdict {
    pub fn summary(&self) -> DriftSummary {
        let scored = |f: &FeatureDrift| (f.label(), f.score(self.metric).unwrap_or(0.0));
        DriftSummary {
            metric: self.metric,
            threshold: self.threshold,
            window_end_ms: self.end_ms,
            rows: self.rows,
            drifted: self.drifted.iter().map(scored).collect(),
            worst: self.worst.as_ref().map(scored),
        }
    }

    /// `x[3] psi 0.61, y[0] psi 0.30` for the drifted features (at most `n`).
    pub fn describe(&self, n: usize) -> String {
        let mut named: Vec<String> = self
            .drifted
            .iter()
            .take(n)
            .map(|f| {
                format!(
                    "{} {} {:.3}",
                    f.label(),
                    self.metric.as_str(),
                    f.score(self.metric).unwrap_or(0.0)
                )
            })
            .collect();
        if self.drifted.len() > n {
            named.push(format!("{} more", self.drifted.len() - n));
        }
        named.join(", ")
    }
}
