//! `gantry model drift`: the drift windows nodes reported for a model, and fleet-wide
//! windows — every node's windows of one version that ended in the same period, merged
//! (bin counts and sketches add up exactly) and scored against the version's reference
//! profile, read from the bundle file the controller holds.

use std::collections::BTreeMap;

use gantry_shared::monitoring::profile::Profile;
use gantry_shared::monitoring::{ModelWindow, drift};
use gantry_shared::protocol::monitoring::{DriftReport, FleetWindow, MAX_WINDOWS, NodeWindow};

use crate::bundles::BundleRepo;
use crate::store::{Store, StoreError};

/// Fewest values a feature needs in a merged window to be scored (as a node's default).
const MIN_VALUES: u64 = 100;

/// (version, bundle, period number).
type PeriodKey = (String, String, u64);
/// The merged profile, the nodes merged, and a window whose metric and threshold judge it.
type Period = (Profile, Vec<String>, ModelWindow);

/// Model `model`'s windows (of `version` only, when given) that ended at or after
/// `since_ms`; fleet-wide windows over periods of `period_ms`.
pub fn report(
    store: &Store,
    bundles: &BundleRepo,
    model: &str,
    version: Option<&str>,
    since_ms: u64,
    period_ms: u64,
) -> Result<DriftReport, StoreError> {
    let period_ms = period_ms.max(1000);
    let windows: Vec<(String, ModelWindow)> = store
        .model_windows(model, since_ms)?
        .into_iter()
        .filter(|(_, w)| version.is_none_or(|v| w.version == v))
        .collect();
    let mut report = DriftReport {
        model: model.to_owned(),
        period_ms,
        ..DriftReport::default()
    };
    // Per (version, bundle, period): the merged profile, nodes and the judging rule.
    let mut periods: BTreeMap<PeriodKey, Period> = BTreeMap::new();
    for (node, w) in &windows {
        let key = (w.version.clone(), w.bundle.clone(), w.end_ms / period_ms);
        match periods.get_mut(&key) {
            Some((merged, nodes, _)) => {
                if let Err(e) = merged.merge(&w.profile) {
                    tracing::warn!(%node, model, version = %w.version, error = %e, "a drift window does not merge with the others of its version; left out of the fleet-wide figures");
                    continue;
                }
                nodes.push(node.clone());
            }
            None => {
                periods.insert(key, (w.profile.clone(), vec![node.clone()], w.clone()));
            }
        }
    }
    for ((version, bundle, period), (merged, nodes, sample)) in periods {
        let reference = bundles.reference_profile(&bundle);
        let Some(reference) = reference else {
            if !report.without_reference.contains(&version) {
                report.without_reference.push(version.clone());
            }
            continue;
        };
        let mut nodes = nodes;
        nodes.sort();
        nodes.dedup();
        report.fleet.push(FleetWindow {
            version,
            start_ms: period * period_ms,
            end_ms: (period + 1) * period_ms,
            nodes: nodes.len() as u32,
            rows: merged.rows,
            metric: sample.metric,
            threshold: sample.threshold,
            drift: drift::compare(&reference, &merged, MIN_VALUES),
        });
    }
    report
        .fleet
        .sort_by_key(|f| (f.start_ms, f.version.clone()));
    let skip = windows.len().saturating_sub(MAX_WINDOWS);
    report.left_out = skip as u64;
    report.windows = windows
        .into_iter()
        .skip(skip)
        .map(|(node, w)| NodeWindow {
            node,
            version: w.version,
            bundle: w.bundle,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            rows: w.profile.rows,
            metric: w.metric,
            threshold: w.threshold,
            drift: w.drift,
        })
        .collect();
    Ok(report)
}

/// The readable form of a drift report: fleet-wide windows, then node windows.
pub fn render(report: &DriftReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if report.windows.is_empty() {
        let _ = writeln!(
            out,
            "no drift windows of model {:?} in the range: no node serving it with a reference profile has closed a window yet",
            report.model
        );
        return out;
    }
    let describe = |drift: &[drift::FeatureDrift], metric: drift::Metric, threshold: f64| {
        let worst = drift::worst(drift, metric).map_or("-".to_owned(), |f| {
            format!("{} {:.3}", f.label(), f.score(metric).unwrap_or(0.0))
        });
        let over: Vec<String> = drift::over(drift, metric, threshold)
            .iter()
            .map(|f| f.label())
            .collect();
        let verdict = if over.is_empty() {
            "ok".to_owned()
        } else {
            format!("DRIFTED {}", over.join(", "))
        };
        (worst, verdict)
    };
    let time = |ms: u64| gantry_net::clock::rfc3339(ms);
    let _ = writeln!(
        out,
        "model {}: fleet-wide (every node's windows that ended in each {} period, merged)",
        report.model,
        humantime::format_duration(std::time::Duration::from_millis(report.period_ms))
    );
    let _ = writeln!(
        out,
        "{:<22} {:<10} {:>5} {:>9}  {:<28} VERDICT",
        "PERIOD FROM", "VERSION", "NODES", "ROWS", "WORST"
    );
    for f in &report.fleet {
        let (worst, verdict) = describe(&f.drift, f.metric, f.threshold);
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:>5} {:>9}  {:<28} {verdict} ({} > {})",
            time(f.start_ms),
            f.version,
            f.nodes,
            f.rows,
            worst,
            f.metric.as_str(),
            f.threshold
        );
    }
    for v in &report.without_reference {
        let _ = writeln!(
            out,
            "  version {v}: no fleet-wide scores, this controller does not hold its bundle (push it to score the merged windows)"
        );
    }
    let _ = writeln!(out, "per node");
    let _ = writeln!(
        out,
        "{:<22} {:<16} {:<10} {:>9}  {:<28} VERDICT",
        "WINDOW END", "NODE", "VERSION", "ROWS", "WORST"
    );
    for w in &report.windows {
        let (worst, verdict) = describe(&w.drift, w.metric, w.threshold);
        let _ = writeln!(
            out,
            "{:<22} {:<16} {:<10} {:>9}  {:<28} {verdict}",
            time(w.end_ms),
            w.node,
            w.version,
            w.rows,
            worst
        );
    }
    if report.left_out > 0 {
        let _ = writeln!(
            out,
            "({} older windows left out: narrow --since)",
            report.left_out
        );
    }
    out
}
