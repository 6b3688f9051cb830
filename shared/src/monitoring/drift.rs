//! Drift between a window and the reference, per feature:
//!
//! - PSI (population stability index), `Σ (q − p) · ln(q / p)` over the reference's
//!   bins (numeric features: its deciles; categorical: its labels and the rest), each
//!   share floored at 10⁻⁴ so an empty bin counts as rare, not as infinitely unlikely.
//!   Rule of thumb: below 0.1 stable, 0.1–0.25 moderate, above 0.25 shifted.
//! - Kolmogorov–Smirnov: the largest gap between the two cumulative distributions, from
//!   the two quantile sketches at 201 ranks (so to ½ % of rank and the sketches' 1 % of
//!   value); numeric features only.
//! - Jensen–Shannon distance: the square root of the Jensen–Shannon divergence, base 2,
//!   over the same bins as PSI; 0 for the same distribution, 1 for disjoint ones.
//!
//! [`compare_outputs`] compares a canary's predictions with the baseline's the same way
//! (KS on sketches, JS on labels), for the rollout gate `max_prediction_shift`.

use serde::{Deserialize, Serialize};

use super::Sketch;
use super::profile::{FeatureProfile, Profile, Side, Values};

/// Smallest share a bin counts with.
const FLOOR: f64 = 1e-4;
/// Ranks the KS statistic is read at.
const KS_RANKS: u32 = 200;

pub use crate::bundle::manifest::DriftMetric as Metric;

/// One feature's scores in a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub side: Side,
    pub tensor: String,
    pub feature: String,
    /// Values in the window (missing ones included).
    pub count: u64,
    pub missing: u64,
    #[serde(default)]
    pub out_of_range: u64,
    pub psi: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ks: Option<f64>,
    pub js: f64,
}

impl FeatureDrift {
    pub fn score(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Psi => Some(self.psi),
            Metric::Ks => self.ks,
            Metric::Js => Some(self.js),
        }
    }

    /// `tensor/feature`, or the feature alone when it is named after its tensor.
    pub fn label(&self) -> String {
        if self.feature.starts_with(&self.tensor) {
            self.feature.clone()
        } else {
            format!("{}/{}", self.tensor, self.feature)
        }
    }
}

/// Scores every feature of `window` that holds at least `min_values` values against
/// `reference`; features with fewer are left out (too few to judge).
pub fn compare(reference: &Profile, window: &Profile, min_values: u64) -> Vec<FeatureDrift> {
    let mut scores = Vec::new();
    for t in &window.tensors {
        let Some(r) = reference.tensor(t.side, &t.name) else {
            continue;
        };
        for (wf, rf) in t.features.iter().zip(&r.features) {
            if wf.count < min_values.max(1) {
                continue;
            }
            if let Some((psi, js, ks)) = feature_scores(rf, wf) {
                let out_of_range = match &wf.values {
                    Values::Numeric(n) => n.out_of_range,
                    Values::Categorical(_) => 0,
                };
                scores.push(FeatureDrift {
                    side: t.side,
                    tensor: t.name.clone(),
                    feature: wf.name.clone(),
                    count: wf.count,
                    missing: wf.missing,
                    out_of_range,
                    psi,
                    ks,
                    js,
                });
            }
        }
    }
    scores
}

fn feature_scores(
    reference: &FeatureProfile,
    window: &FeatureProfile,
) -> Option<(f64, f64, Option<f64>)> {
    match (&reference.values, &window.values) {
        (Values::Numeric(r), Values::Numeric(w)) if r.edges == w.edges => {
            let (p, q) = (shares(&r.bins, 0), shares(&w.bins, 0));
            Some((psi(&p, &q), js(&p, &q), ks(&r.sketch, &w.sketch)))
        }
        (Values::Categorical(r), Values::Categorical(w)) if r.labels == w.labels => {
            let (p, q) = (shares(&r.counts, r.other), shares(&w.counts, w.other));
            Some((psi(&p, &q), js(&p, &q), None))
        }
        _ => None,
    }
}

/// Shares of `counts` and then `rest`; all zero when nothing was counted.
fn shares(counts: &[u64], rest: u64) -> Vec<f64> {
    let total = counts.iter().sum::<u64>() + rest;
    let scale = if total > 0 { 1.0 / total as f64 } else { 0.0 };
    counts
        .iter()
        .chain([&rest])
        .map(|c| *c as f64 * scale)
        .collect()
}

/// Population stability index of `q` against `p`.
pub fn psi(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(a, b)| **a > 0.0 || **b > 0.0)
        .map(|(a, b)| {
            let (a, b) = (a.max(FLOOR), b.max(FLOOR));
            (b - a) * (b / a).ln()
        })
        .sum()
}

/// Jensen–Shannon distance (base 2) between `p` and `q`.
pub fn js(p: &[f64], q: &[f64]) -> f64 {
    let kl = |x: f64, m: f64| if x > 0.0 { x * (x / m).log2() } else { 0.0 };
    let divergence: f64 = p
        .iter()
        .zip(q)
        .map(|(a, b)| {
            let m = (a + b) / 2.0;
            if m > 0.0 {
                0.5 * kl(*a, m) + 0.5 * kl(*b, m)
            } else {
                0.0
            }
        })
        .sum();
    divergence.clamp(0.0, 1.0).sqrt()
}

/// Kolmogorov–Smirnov statistic between two sketches; `None` when either is empty.
pub fn ks(a: &Sketch, b: &Sketch) -> Option<f64> {
    let grid = |s: &Sketch| -> Option<Vec<f64>> {
        (0..=KS_RANKS)
            .map(|k| s.quantile(f64::from(k) / f64::from(KS_RANKS)))
            .collect()
    };
    let (qa, qb) = (grid(a)?, grid(b)?);
    // The share of a sketch's grid at or below x: its cumulative distribution.
    let cdf = |q: &[f64], x: f64| q.partition_point(|v| *v <= x) as f64 / q.len() as f64;
    let gap = qa
        .iter()
        .chain(&qb)
        .map(|&x| (cdf(&qa, x) - cdf(&qb, x)).abs())
        .fold(0.0, f64::max);
    Some(gap)
}

/// The features whose `metric` score is above `threshold`, worst first.
pub fn over(scores: &[FeatureDrift], metric: Metric, threshold: f64) -> Vec<&FeatureDrift> {
    let mut over: Vec<&FeatureDrift> = scores
        .iter()
        .filter(|f| f.score(metric).is_some_and(|s| s > threshold))
        .collect();
    over.sort_by(|a, b| {
        b.score(metric)
            .partial_cmp(&a.score(metric))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    over
}

/// The worst `metric` score and its feature.
pub fn worst(scores: &[FeatureDrift], metric: Metric) -> Option<&FeatureDrift> {
    scores
        .iter()
        .filter(|f| f.score(metric).is_some())
        .max_by(|a, b| {
            a.score(metric)
                .partial_cmp(&b.score(metric))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
}

/// How far one output feature's distribution on a canary is from the baseline's over
/// the same period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputShift {
    /// `tensor/feature`, as [`FeatureDrift::label`] writes it.
    pub feature: String,
    /// `ks` for numeric outputs (their sketches), `js` for categorical ones (label shares).
    pub statistic: String,
    pub score: f64,
    pub canary_values: u64,
    pub baseline_values: u64,
}

/// One output feature merged over several windows.
#[derive(Debug, Default)]
struct Merged {
    values: u64,
    sketch: Option<Sketch>,
    labels: std::collections::BTreeMap<String, u64>,
}

fn merge_outputs<'a>(
    profiles: impl Iterator<Item = &'a Profile>,
) -> std::collections::BTreeMap<String, Merged> {
    let mut out: std::collections::BTreeMap<String, Merged> = std::collections::BTreeMap::new();
    for p in profiles {
        for t in p.tensors.iter().filter(|t| t.side == Side::Output) {
            for f in &t.features {
                let label = if f.name.starts_with(&t.name) {
                    f.name.clone()
                } else {
                    format!("{}/{}", t.name, f.name)
                };
                let m = out.entry(label).or_default();
                m.values += f.count - f.missing.min(f.count);
                match &f.values {
                    Values::Numeric(n) => match &mut m.sketch {
                        Some(s) => s.merge(&n.sketch),
                        None => m.sketch = Some(n.sketch.clone()),
                    },
                    Values::Categorical(c) => {
                        for (l, n) in c.labels.iter().zip(&c.counts) {
                            *m.labels.entry(l.clone()).or_default() += n;
                        }
                        *m.labels.entry(String::new()).or_default() += c.other;
                    }
                }
            }
        }
    }
    out
}

/// The prediction distribution of `canary` windows against `baseline` windows, per
/// output feature both hold at least `min_values` values of, worst first. The two may
/// come from bundles with different reference profiles: numeric outputs compare by
/// their quantile sketches (Kolmogorov–Smirnov), categorical ones by their labels'
/// shares (Jensen–Shannon distance; values outside a reference's top labels count as
/// one label of their own).
pub fn compare_outputs<'a>(
    canary: impl Iterator<Item = &'a Profile>,
    baseline: impl Iterator<Item = &'a Profile>,
    min_values: u64,
) -> Vec<OutputShift> {
    let (canary, baseline) = (merge_outputs(canary), merge_outputs(baseline));
    let mut shifts: Vec<OutputShift> = canary
        .iter()
        .filter_map(|(feature, c)| {
            let b = baseline.get(feature)?;
            if c.values < min_values.max(1) || b.values < min_values.max(1) {
                return None;
            }
            let (statistic, score) = match (&c.sketch, &b.sketch) {
                (Some(cs), Some(bs)) => ("ks", ks(cs, bs)?),
                (None, None) => {
                    let labels: std::collections::BTreeSet<&String> =
                        c.labels.keys().chain(b.labels.keys()).collect();
                    let counts = |m: &Merged| -> Vec<u64> {
                        labels
                            .iter()
                            .map(|l| m.labels.get(*l).copied().unwrap_or(0))
                            .collect()
                    };
                    let (p, q) = (shares(&counts(b), 0), shares(&counts(c), 0));
                    ("js", js(&p, &q))
                }
                _ => return None,
            };
            Some(OutputShift {
                feature: feature.clone(),
                statistic: statistic.to_owned(),
                score,
                canary_values: c.values,
                baseline_values: b.values,
            })
        })
        .collect();
    shifts.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    shifts
}
