//! The canary comparison: the touched nodes on the rollout's bundle against the nodes
//! still on the bundles they replaced, over the same period — the drift and feedback
//! windows in the store that started once the first touched node was assigned (so a
//! window holding traffic from before the canary never counts; give the bake time a
//! whole window or more). The engine reads it before each [`super::advance`], which
//! judges it.

use std::collections::{BTreeMap, BTreeSet};

use gantry_shared::monitoring::drift;
use gantry_shared::monitoring::quality::{MAX_SCORED, QualityMetric, QualityStats};
use gantry_shared::protocol::rollout::{Comparison, Gates, Rollout};

use crate::store::{Store, StoreError};

/// The comparison of `r`, when its gates ask for one and it has touched a node.
pub fn read(store: &Store, r: &Rollout) -> Result<Option<Comparison>, StoreError> {
    let gates = &r.spec.gates;
    if !gates.compares() {
        return Ok(None);
    }
    let Some(since_ms) = r.touched.iter().map(|t| t.assigned_at_ms).min() else {
        return Ok(None);
    };
    let touched: BTreeSet<&str> = r.touched.iter().map(|t| t.node.as_str()).collect();
    let baseline_bundles: BTreeSet<&str> = r
        .touched
        .iter()
        .filter_map(|t| t.previous.as_deref())
        .filter(|b| *b != r.bundle_id)
        .collect();
    let side = |node: &str, bundle: &str| -> Option<bool> {
        if touched.contains(node) {
            (bundle == r.bundle_id).then_some(true)
        } else {
            baseline_bundles.contains(bundle).then_some(false)
        }
    };
    let mut nodes: [BTreeSet<String>; 2] = Default::default();
    let windows = store.model_windows(&r.bundle_name, since_ms.saturating_add(1))?;
    let mut profiles: [Vec<&gantry_shared::monitoring::profile::Profile>; 2] = Default::default();
    for (node, w) in windows.iter().filter(|(_, w)| w.start_ms >= since_ms) {
        if let Some(canary) = side(node, &w.bundle) {
            profiles[usize::from(canary)].push(&w.profile);
            nodes[usize::from(canary)].insert(node.clone());
        }
    }
    let prediction_shift = drift::compare_outputs(
        profiles[1].iter().copied(),
        profiles[0].iter().copied(),
        gates.min_compare_rows,
    );
    let mut quality: [Option<QualityStats>; 2] = [None, None];
    for (node, w) in store.quality_windows(Some(&r.bundle_name), since_ms.saturating_add(1))? {
        if w.start_ms < since_ms {
            continue;
        }
        for v in &w.versions {
            if let Some(canary) = side(&node, &v.bundle) {
                quality[usize::from(canary)]
                    .get_or_insert_with(|| QualityStats::new(v.stats.task))
                    .merge(&v.stats, MAX_SCORED);
                nodes[usize::from(canary)].insert(node.clone());
            }
        }
    }
    let [baseline_quality, canary_quality] = quality.map(|q| q.map(|s| s.metrics()));
    Ok(Some(Comparison {
        since_ms,
        canary_nodes: u32::try_from(nodes[1].len()).unwrap_or(u32::MAX),
        baseline_nodes: u32::try_from(nodes[0].len()).unwrap_or(u32::MAX),
        baseline_bundles: baseline_bundles.iter().map(|b| (*b).to_owned()).collect(),
        prediction_shift,
        canary_quality,
        baseline_quality,
    }))
}

/// Why the canary fails the comparison gates, when it does. Nothing is judged before
/// both sides hold `min_compare_rows` (predictions per output feature; feedback rows).
pub fn failure(gates: &Gates, c: &Comparison) -> Option<String> {
    let mut failed = Vec::new();
    if let Some(max) = gates.max_prediction_shift
        && let Some(worst) = c.prediction_shift.first().filter(|s| s.score > max)
    {
        failed.push(format!(
            "its predictions moved from the previous version's: {} {} {:.3} over {} canary and {} baseline values (gate {max})",
            worst.feature,
            worst.statistic,
            worst.score,
            worst.canary_values,
            worst.baseline_values
        ));
    }
    if let (Some(canary), Some(baseline)) = (&c.canary_quality, &c.baseline_quality)
        && canary.rows >= gates.min_compare_rows.max(1)
        && baseline.rows >= gates.min_compare_rows.max(1)
    {
        let drops: BTreeMap<QualityMetric, f64> = gates.max_quality_drop.clone();
        for (metric, drop) in drops {
            let (Some(got), Some(base)) = (canary.get(metric), baseline.get(metric)) else {
                continue;
            };
            let worse = if metric.higher_is_better() {
                got < base - drop
            } else {
                got > base + drop
            };
            if worse {
                failed.push(format!(
                    "its {} {got:.4} against the previous version's {base:.4} over {} and {} feedback rows (gate: at most {drop} {})",
                    metric.as_str(),
                    canary.rows,
                    baseline.rows,
                    if metric.higher_is_better() { "lower" } else { "higher" }
                ));
            }
        }
    }
    (!failed.is_empty()).then(|| {
        format!(
            "the canary against the nodes still on the previous version: {}",
            failed.join("; ")
        )
    })
}
