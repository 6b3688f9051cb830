//! `gantry model quality`: production quality from the feedback windows nodes sent
//! (`quality_windows` in the store), merged fleet-wide per version and period and over
//! the whole span; and each version's figures for `gantry report kpis`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use gantry_shared::monitoring::quality::{
    FeedbackCounts, MAX_SCORED, QualityStats, QualityWindow, VersionQuality,
};
use gantry_shared::protocol::monitoring::{
    MAX_WINDOWS, NodeQuality, QualityReport, VersionQualityFigures, confusion_cells,
};

use crate::store::{Store, StoreError};

/// Scored rows kept for ROC AUC when windows are merged at the controller.
pub const MERGED_SCORED: usize = MAX_SCORED * 10;

/// Model `model`'s quality (of `version` only, when given) from windows that ended at
/// or after `since_ms`.
pub fn report(
    store: &Store,
    model: &str,
    version: Option<&str>,
    since_ms: u64,
    period_ms: u64,
) -> Result<QualityReport, StoreError> {
    let period_ms = period_ms.max(1);
    let mut report = QualityReport {
        model: model.to_owned(),
        since_ms,
        period_ms,
        ..QualityReport::default()
    };
    let wanted = |v: &str| version.is_none_or(|want| want == v);
    // (period start, version, bundle) and (version, bundle) → the windows merged.
    let mut fleet: BTreeMap<(u64, String, String), Merged> = BTreeMap::new();
    let mut span: BTreeMap<(String, String), Merged> = BTreeMap::new();
    for (node, w) in store.quality_windows(Some(model), since_ms)? {
        report.feedback.merge(&w.feedback);
        let mut versions = Vec::new();
        for v in w.versions.iter().filter(|v| wanted(&v.version)) {
            versions.push(VersionQualityFigures {
                version: v.version.clone(),
                bundle: v.bundle.clone(),
                start_ms: w.start_ms,
                end_ms: w.end_ms,
                nodes: 1,
                metrics: v.stats.metrics(),
                confusion: confusion_cells(&v.stats.confusion),
            });
            let start = w.end_ms.saturating_sub(1) / period_ms * period_ms;
            fleet
                .entry((start, v.version.clone(), v.bundle.clone()))
                .or_insert_with(|| Merged::new(v))
                .add(&node, &w, v);
            span.entry((v.version.clone(), v.bundle.clone()))
                .or_insert_with(|| Merged::new(v))
                .add(&node, &w, v);
        }
        if versions.is_empty() && version.is_some() {
            continue;
        }
        report.windows.push(NodeQuality {
            node,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
            feedback: w.feedback,
            versions,
        });
    }
    if report.windows.len() > MAX_WINDOWS {
        let extra = report.windows.len() - MAX_WINDOWS;
        report.windows.drain(..extra);
        report.left_out = extra as u64;
    }
    report.fleet = fleet
        .into_iter()
        .map(|((start, version, _), merged)| {
            let mut figures = merged.figures(version);
            figures.start_ms = start;
            figures.end_ms = start + period_ms;
            figures
        })
        .collect();
    report.versions = span
        .into_iter()
        .map(|((version, _), merged)| merged.figures(version))
        .collect();
    Ok(report)
}

/// Every model version's quality over windows that ended in `[from_ms, to_ms]`:
/// (model, version) → figures.
pub fn per_version(
    store: &Store,
    from_ms: u64,
    to_ms: u64,
) -> Result<BTreeMap<(String, String), VersionQualityFigures>, StoreError> {
    let mut merged: BTreeMap<(String, String), Merged> = BTreeMap::new();
    for (node, w) in store.quality_windows(None, from_ms)? {
        if w.end_ms > to_ms {
            continue;
        }
        for v in &w.versions {
            merged
                .entry((w.model.clone(), v.version.clone()))
                .or_insert_with(|| Merged::new(v))
                .add(&node, &w, v);
        }
    }
    Ok(merged
        .into_iter()
        .map(|((model, version), m)| ((model, version.clone()), m.figures(version)))
        .collect())
}

/// One version's windows from several nodes, folded together.
struct Merged {
    bundle: String,
    nodes: BTreeSet<String>,
    stats: QualityStats,
    first_ms: u64,
    last_ms: u64,
}

impl Merged {
    fn new(v: &VersionQuality) -> Self {
        Self {
            bundle: v.bundle.clone(),
            nodes: BTreeSet::new(),
            stats: QualityStats::new(v.stats.task),
            first_ms: u64::MAX,
            last_ms: 0,
        }
    }

    fn add(&mut self, node: &str, window: &QualityWindow, v: &VersionQuality) {
        if !self.nodes.contains(node) {
            self.nodes.insert(node.to_owned());
        }
        self.stats.merge(&v.stats, MERGED_SCORED);
        self.first_ms = self.first_ms.min(window.start_ms);
        self.last_ms = self.last_ms.max(window.end_ms);
    }

    fn figures(self, version: String) -> VersionQualityFigures {
        VersionQualityFigures {
            version,
            bundle: self.bundle,
            start_ms: self.first_ms,
            end_ms: self.last_ms,
            nodes: u32::try_from(self.nodes.len()).unwrap_or(u32::MAX),
            metrics: self.stats.metrics(),
            confusion: confusion_cells(&self.stats.confusion),
        }
    }
}

/// Most classes a confusion matrix is drawn for; larger ones are in `--json`.
const DRAWN_CLASSES: usize = 12;

/// `v`'s confusion matrix as a table (rows: true labels, columns: predicted), when it
/// has one small enough to read.
fn confusion_table(v: &VersionQualityFigures) -> Option<String> {
    if v.confusion.is_empty() {
        return None;
    }
    let mut labels: Vec<i64> = v
        .confusion
        .iter()
        .flat_map(|c| [c.truth, c.predicted])
        .collect();
    labels.sort_unstable();
    labels.dedup();
    let mut out = String::new();
    if labels.len() > DRAWN_CLASSES {
        let _ = writeln!(
            out,
            "  confusion matrix of {} {}: {} classes, {} cells (see --json)",
            v.version,
            v.bundle,
            labels.len(),
            v.confusion.len()
        );
        return Some(out);
    }
    let _ = writeln!(
        out,
        "  confusion matrix of {} (rows: true label, columns: predicted)",
        v.version
    );
    let _ = write!(out, "  {:>8}", "");
    for l in &labels {
        let _ = write!(out, " {l:>8}");
    }
    out.push('\n');
    for t in &labels {
        let _ = write!(out, "  {t:>8}");
        for p in &labels {
            let n = v
                .confusion
                .iter()
                .find(|c| c.truth == *t && c.predicted == *p)
                .map_or(0, |c| c.rows);
            let _ = write!(out, " {n:>8}");
        }
        out.push('\n');
    }
    Some(out)
}

/// A metrics cell: every metric present, four decimals.
pub fn figures(m: &gantry_shared::monitoring::quality::Metrics) -> String {
    let present: Vec<String> = m
        .present()
        .iter()
        .map(|(metric, v)| format!("{} {v:.4}", metric.as_str()))
        .collect();
    let mut out = present.join("  ");
    if m.roc_auc_sampled {
        let _ = write!(out, " (auc on a {}-row sample)", m.roc_auc_rows);
    }
    out
}

fn counts(f: &FeedbackCounts) -> String {
    format!(
        "{} joined, {} late, {} duplicate, {} unknown, {} invalid",
        f.joined, f.late, f.duplicate, f.unknown, f.invalid
    )
}

/// The readable form of a quality report: per version over the span, fleet-wide
/// periods, then node windows.
pub fn render(report: &QualityReport) -> String {
    let mut out = String::new();
    if report.windows.is_empty() {
        let _ = writeln!(
            out,
            "no feedback windows of model {:?} in the range: no node has closed a window with feedback for it yet (bundles need --task, requests an id, and clients POST …/feedback)",
            report.model
        );
        return out;
    }
    let time = |ms: u64| gantry_net::clock::rfc3339(ms);
    let _ = writeln!(
        out,
        "model {}: feedback {}",
        report.model,
        counts(&report.feedback)
    );
    let _ = writeln!(out, "per version, over the whole range");
    let _ = writeln!(
        out,
        "{:<10} {:>5} {:>9}  METRICS",
        "VERSION", "NODES", "ROWS"
    );
    for v in &report.versions {
        let _ = writeln!(
            out,
            "{:<10} {:>5} {:>9}  {}",
            v.version,
            v.nodes,
            v.metrics.rows,
            figures(&v.metrics)
        );
    }
    for v in &report.versions {
        if let Some(table) = confusion_table(v) {
            out.push_str(&table);
        }
    }
    let _ = writeln!(
        out,
        "fleet-wide (every node's windows that ended in each {} period, merged)",
        humantime::format_duration(std::time::Duration::from_millis(report.period_ms))
    );
    let _ = writeln!(
        out,
        "{:<22} {:<10} {:>5} {:>9}  METRICS",
        "PERIOD FROM", "VERSION", "NODES", "ROWS"
    );
    for f in &report.fleet {
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:>5} {:>9}  {}",
            time(f.start_ms),
            f.version,
            f.nodes,
            f.metrics.rows,
            figures(&f.metrics)
        );
    }
    let _ = writeln!(out, "per node");
    let _ = writeln!(
        out,
        "{:<22} {:<16} {:<10} {:>9}  METRICS",
        "WINDOW END", "NODE", "VERSION", "ROWS"
    );
    for w in &report.windows {
        for v in &w.versions {
            let _ = writeln!(
                out,
                "{:<22} {:<16} {:<10} {:>9}  {}",
                time(w.end_ms),
                w.node,
                v.version,
                v.metrics.rows,
                figures(&v.metrics)
            );
        }
        let f = &w.feedback;
        if f.late + f.duplicate + f.unknown + f.invalid > 0 {
            let _ = writeln!(
                out,
                "{:<22} {:<16} feedback {}",
                time(w.end_ms),
                w.node,
                counts(f)
            );
        }
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
