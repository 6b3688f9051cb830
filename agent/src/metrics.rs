//! The agent's `/metrics` page: the sample through `gantry_shared::exposition`, then the
//! agent's own figures (`gantry_agent_*`) and the conventional `process_*` metrics.

use gantry_shared::exposition::{self, Exposition, Kind, ModelLabel};
use gantry_shared::health::HealthState;

use crate::buffer::BufferStats;
use crate::telemetry::{SamplerStats, Snapshot};
use crate::uplink::UplinkStatus;

fn render_buffer(e: &mut Exposition, b: &BufferStats, now_ms: u64) {
    e.single(
        "gantry_agent_buffer_records",
        Kind::Gauge,
        "Records waiting in the durable buffer.",
        b.records as f64,
    );
    e.single(
        "gantry_agent_buffer_bytes",
        Kind::Gauge,
        "Size of the records in the durable buffer.",
        b.bytes as f64,
    );
    e.single(
        "gantry_agent_buffer_oldest_age_seconds",
        Kind::Gauge,
        "Age of the oldest buffered record (0 when empty).",
        b.oldest_at_ms
            .map_or(0.0, |at| now_ms.saturating_sub(at) as f64 / 1000.0),
    );
    e.single(
        "gantry_agent_buffer_last_sequence",
        Kind::Gauge,
        "Highest sequence number assigned.",
        b.last_seq as f64,
    );
    e.family(
        "gantry_agent_buffer_dropped_total",
        Kind::Counter,
        "Records dropped, by class: to keep the buffer within its limits, or damaged on disk so they could never be sent.",
    );
    e.sample(
        "gantry_agent_buffer_dropped_total",
        &[("class", "metrics")],
        b.dropped_metrics as f64,
    );
    e.sample(
        "gantry_agent_buffer_dropped_total",
        &[("class", "event")],
        b.dropped_events as f64,
    );
    e.single(
        "gantry_agent_buffer_acked_total",
        Kind::Counter,
        "Records the controller acknowledged since the agent started.",
        b.acked_total as f64,
    );
}

/// Process figures from `/proc/self`, for the conventional `process_*` metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads this process's figures; `None` where `/proc` is unavailable.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = 100.0; // USER_HZ on Linux
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        let start_ticks: f64 = fields.get(19)?.parse().ok()?;
        let rss_pages: u64 = fields.get(21)?.parse().ok()?;
        let page_size = rustix::param::page_size() as u64;
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })?;
        Some(Self {
            cpu_seconds: (utime + stime) / ticks,
            resident_bytes: rss_pages * page_size,
            start_time_seconds: boot_time + start_ticks / ticks,
        })
    }
}

/// Renders the whole `/metrics` page.
pub fn render(
    snapshot: Option<&Snapshot>,
    model_label: ModelLabel,
    process: Option<ProcessStats>,
    buffer: Option<&BufferStats>,
    uplink: Option<&UplinkStatus>,
    health: Option<&gantry_shared::health::Health>,
    models: &[crate::serving::ModelHealth],
) -> String {
    let mut e = Exposition::default();
    if let Some(snapshot) = snapshot {
        exposition::render_gpus(&mut e, &snapshot.sample, model_label);
        exposition::render_host(&mut e, &snapshot.sample);
        render_agent(&mut e, snapshot);
    }
    if let Some(b) = buffer {
        render_buffer(&mut e, b, gantry_net::clock::now_ms());
    }
    render_models(&mut e, models);
    if let Some(h) = health {
        e.family(
            "gantry_agent_health",
            Kind::Gauge,
            "The node's health: 1 for its current state, 0 for the others.",
        );
        for state in [
            HealthState::Healthy,
            HealthState::Degraded,
            HealthState::Unhealthy,
        ] {
            e.sample(
                "gantry_agent_health",
                &[("state", state.as_str())],
                if h.state == state { 1.0 } else { 0.0 },
            );
        }
        e.family(
            "gantry_agent_health_reasons",
            Kind::Gauge,
            "Findings behind the health state, per check, likely cause and suggested action.",
        );
        let mut per_check: std::collections::BTreeMap<(&str, &str, &str), u32> =
            std::collections::BTreeMap::new();
        for r in &h.reasons {
            let (cause, action) = r.remedy.map_or(("unknown", "none"), |m| {
                (m.cause.as_str(), m.action.as_str())
            });
            *per_check
                .entry((r.check.as_str(), cause, action))
                .or_default() += 1;
        }
        for ((check, cause, action), n) in per_check {
            e.sample(
                "gantry_agent_health_reasons",
                &[("check", check), ("cause", cause), ("action", action)],
                f64::from(n),
            );
        }
    }
    if let Some(u) = uplink {
        e.single(
            "gantry_agent_uplink_connected",
            Kind::Gauge,
            "Whether the agent is connected to its controller.",
            if u.connected { 1.0 } else { 0.0 },
        );
        e.single(
            "gantry_agent_uplink_connects_total",
            Kind::Counter,
            "Connections made to the controller.",
            u.connects_total as f64,
        );
        if let Some(at) = u.last_ack_ms {
            e.single(
                "gantry_agent_uplink_last_ack_timestamp_seconds",
                Kind::Gauge,
                "When the controller last acknowledged a batch.",
                at as f64 / 1000.0,
            );
        }
    }
    if let Some(p) = process {
        e.single(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        );
        e.single(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            p.resident_bytes as f64,
        );
        e.single(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        );
    }
    e.into_string()
}

fn render_agent(e: &mut Exposition, snapshot: &Snapshot) {
    let stats: &SamplerStats = &snapshot.stats;
    e.family(
        "gantry_agent_info",
        Kind::Gauge,
        "Agent version and NVML library (always 1).",
    );
    e.sample(
        "gantry_agent_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("nvml_library", &stats.nvml_library),
        ],
        1.0,
    );
    e.single(
        "gantry_agent_nvml_up",
        Kind::Gauge,
        "Whether NVML is initialised and GPU telemetry is available.",
        if snapshot.sample.nvml.is_available() {
            1.0
        } else {
            0.0
        },
    );
    e.single(
        "gantry_agent_gpus",
        Kind::Gauge,
        "GPUs NVML enumerated.",
        snapshot.sample.gpus.len() as f64,
    );
    e.single(
        "gantry_agent_samples_total",
        Kind::Counter,
        "Telemetry samples taken.",
        stats.samples_total as f64,
    );
    e.single(
        "gantry_agent_sample_cpu_seconds_total",
        Kind::Counter,
        "CPU time the sampler thread spent taking samples.",
        stats.sample_cpu.as_secs_f64(),
    );
    e.single(
        "gantry_agent_last_sample_duration_seconds",
        Kind::Gauge,
        "Wall time the last sample took.",
        stats.last_sample_duration.as_secs_f64(),
    );
    e.single(
        "gantry_agent_last_sample_timestamp_seconds",
        Kind::Gauge,
        "When the last sample was taken, since the Unix epoch.",
        snapshot.sample.taken_at_ms as f64 / 1000.0,
    );
    e.single(
        "gantry_agent_sampling_interval_seconds",
        Kind::Gauge,
        "Configured sampling interval.",
        stats.interval.as_secs_f64(),
    );
    e.family(
        "gantry_agent_xid_events_total",
        Kind::Counter,
        "XID events seen per source, before de-duplication.",
    );
    e.sample(
        "gantry_agent_xid_events_total",
        &[("source", "nvml")],
        stats.xid_events_nvml as f64,
    );
    e.sample(
        "gantry_agent_xid_events_total",
        &[("source", "kernel_log")],
        stats.xid_events_kernel_log as f64,
    );
    e.single(
        "gantry_agent_xid_duplicates_total",
        Kind::Counter,
        "XID events reported by both sources and counted once.",
        stats.xid_duplicates as f64,
    );
    e.single(
        "gantry_agent_kernel_log_readable",
        Kind::Gauge,
        "Whether the kernel log is being read for XIDs.",
        if stats.kernel_log_readable { 1.0 } else { 0.0 },
    );
}

/// Per served model (label `model`, its name): what it is, its requests by outcome, its
/// latency percentiles and its latest golden run.
fn render_models(e: &mut Exposition, models: &[crate::serving::ModelHealth]) {
    if models.is_empty() {
        return;
    }
    e.family(
        "gantry_agent_model_info",
        Kind::Gauge,
        "A served model: name, version, bundle digest and execution provider.",
    );
    for m in models {
        let version = m.model.rsplit(' ').next().unwrap_or_default();
        e.sample(
            "gantry_agent_model_info",
            &[
                ("model", m.name.as_str()),
                ("version", version),
                ("bundle", m.bundle.as_str()),
                ("execution_provider", m.execution_provider),
            ],
            1.0,
        );
    }
    e.family(
        "gantry_agent_inference_requests_total",
        Kind::Counter,
        "Inference requests by model and outcome: ok, error (the model failed), rejected (a bad request).",
    );
    for m in models {
        for (outcome, n) in [
            ("ok", m.requests_ok),
            ("error", m.requests_failed),
            ("rejected", m.requests_rejected),
        ] {
            e.sample(
                "gantry_agent_inference_requests_total",
                &[("model", m.name.as_str()), ("outcome", outcome)],
                n as f64,
            );
        }
    }
    for (name, help, pick) in [
        (
            "gantry_agent_inference_latency_p50_seconds",
            "Median latency of a model's latest 1024 successful requests.",
            (|m: &crate::serving::ModelHealth| m.latency_p50)
                as fn(&crate::serving::ModelHealth) -> Option<f64>,
        ),
        (
            "gantry_agent_inference_latency_p99_seconds",
            "99th-percentile latency of a model's latest 1024 successful requests.",
            |m: &crate::serving::ModelHealth| m.latency_p99,
        ),
        (
            "gantry_agent_model_golden_ok",
            "Whether a served model passed its golden vectors on the latest run.",
            |m: &crate::serving::ModelHealth| {
                m.golden.as_ref().map(|g| if g.is_ok() { 1.0 } else { 0.0 })
            },
        ),
    ] {
        let values: Vec<(&str, f64)> = models
            .iter()
            .filter_map(|m| Some((m.name.as_str(), pick(m)?)))
            .collect();
        if values.is_empty() {
            continue;
        }
        e.family(name, Kind::Gauge, help);
        for (model, value) in values {
            e.sample(name, &[("model", model)], value);
        }
    }
    render_drift(e, models);
    render_quality(e, models);
    render_capture(e, models);
}

/// Most distinct labels a model's confusion matrix is exposed for (its series grow with
/// their square); larger ones are in the controller's `gantry model quality --json`.
const EXPOSED_CLASSES: usize = 32;

/// Each classifier's confusion matrix since the agent started.
fn render_confusion(e: &mut Exposition, models: &[crate::serving::ModelHealth]) {
    let exposed: Vec<_> = models
        .iter()
        .filter(|m| !m.confusion.is_empty())
        .filter(|m| {
            let mut labels: Vec<i64> = m.confusion.iter().flat_map(|c| [c.0, c.1]).collect();
            labels.sort_unstable();
            labels.dedup();
            labels.len() <= EXPOSED_CLASSES
        })
        .collect();
    if exposed.is_empty() {
        return;
    }
    e.family(
        "gantry_agent_model_confusion_rows",
        Kind::Gauge,
        "A served classifier's confusion matrix from ground-truth feedback since the agent started: rows whose true label is truth and predicted label predicted (models with at most 32 labels).",
    );
    for m in exposed {
        let version = m.model.rsplit(' ').next().unwrap_or_default();
        for (truth, predicted, rows) in &m.confusion {
            let (truth, predicted) = (truth.to_string(), predicted.to_string());
            e.sample(
                "gantry_agent_model_confusion_rows",
                &[
                    ("model", m.name.as_str()),
                    ("version", version),
                    ("truth", truth.as_str()),
                    ("predicted", predicted.as_str()),
                ],
                *rows as f64,
            );
        }
    }
}

/// Payload capture: pairs captured, held for the controller, and requests sampled but
/// not captured, by why.
fn render_capture(e: &mut Exposition, models: &[crate::serving::ModelHealth]) {
    let captured: Vec<_> = models
        .iter()
        .filter_map(|m| Some((m.name.as_str(), m.capture.as_ref()?)))
        .collect();
    if captured.is_empty() {
        return;
    }
    e.family(
        "gantry_agent_capture_pairs_total",
        Kind::Counter,
        "Sampled requests captured with their answers for retraining.",
    );
    for (name, c) in &captured {
        e.sample(
            "gantry_agent_capture_pairs_total",
            &[("model", name)],
            c.counters.captured as f64,
        );
    }
    e.family(
        "gantry_agent_capture_bytes_total",
        Kind::Counter,
        "Bytes of pairs captured.",
    );
    for (name, c) in &captured {
        e.sample(
            "gantry_agent_capture_bytes_total",
            &[("model", name)],
            c.counters.captured_bytes as f64,
        );
    }
    e.family(
        "gantry_agent_capture_held_bytes",
        Kind::Gauge,
        "Bytes of captured pairs in the buffer, not yet stored by the controller (at most monitoring.models.NAME.capture_max_bytes).",
    );
    for (name, c) in &captured {
        e.sample(
            "gantry_agent_capture_held_bytes",
            &[("model", name)],
            c.counters.held_bytes as f64,
        );
    }
    e.family(
        "gantry_agent_capture_skipped_total",
        Kind::Counter,
        "Sampled requests not captured: capped (capture_max_bytes held), too_large (over 1 MiB), queue_full (the recorder behind), misconfigured (capture_redact names no input of the served version).",
    );
    for (name, c) in &captured {
        let n = &c.counters;
        for (reason, v) in [
            ("capped", n.capped),
            ("too_large", n.too_large),
            ("queue_full", n.queue_full),
            ("misconfigured", n.misconfigured),
        ] {
            e.sample(
                "gantry_agent_capture_skipped_total",
                &[("model", name), ("reason", reason)],
                v as f64,
            );
        }
    }
}

/// Production quality from ground-truth feedback: the latest window's and the
/// cumulative metrics of every served version, and what became of predictions and
/// feedback.
fn render_quality(e: &mut Exposition, models: &[crate::serving::ModelHealth]) {
    let version =
        |m: &crate::serving::ModelHealth| m.model.rsplit(' ').next().unwrap_or_default().to_owned();
    let judged: Vec<_> = models
        .iter()
        .filter_map(|m| Some((m, m.quality.as_ref()?)))
        .collect();
    if !judged.is_empty() {
        e.family(
            "gantry_agent_model_quality",
            Kind::Gauge,
            "A served version's quality from ground-truth feedback (label scope: window is the latest feedback window, cumulative everything since the agent started).",
        );
        for (m, q) in &judged {
            let version = version(m);
            for (scope, metrics) in [("window", &q.metrics), ("cumulative", &q.cumulative)] {
                for (metric, value) in metrics.present() {
                    e.sample(
                        "gantry_agent_model_quality",
                        &[
                            ("model", m.name.as_str()),
                            ("version", version.as_str()),
                            ("metric", metric.as_str()),
                            ("scope", scope),
                        ],
                        value,
                    );
                }
            }
        }
        e.family(
            "gantry_agent_model_quality_rows",
            Kind::Gauge,
            "Rows joined with their ground truth (label scope as for gantry_agent_model_quality).",
        );
        for (m, q) in &judged {
            let version = version(m);
            for (scope, metrics) in [("window", &q.metrics), ("cumulative", &q.cumulative)] {
                e.sample(
                    "gantry_agent_model_quality_rows",
                    &[
                        ("model", m.name.as_str()),
                        ("version", version.as_str()),
                        ("scope", scope),
                    ],
                    metrics.rows as f64,
                );
            }
        }
    }
    render_confusion(e, models);
    let counted: Vec<_> = models
        .iter()
        .filter_map(|m| Some((m, m.feedback.as_ref()?)))
        .collect();
    if counted.is_empty() {
        return;
    }
    e.family(
        "gantry_agent_model_feedback_total",
        Kind::Counter,
        "Feedback items received, by what became of them: joined, late (the prediction expired), duplicate, unknown (no such request id), invalid.",
    );
    for (m, c) in &counted {
        let f = &c.feedback;
        for (outcome, n) in [
            ("joined", f.joined),
            ("late", f.late),
            ("duplicate", f.duplicate),
            ("unknown", f.unknown),
            ("invalid", f.invalid),
        ] {
            e.sample(
                "gantry_agent_model_feedback_total",
                &[("model", m.name.as_str()), ("outcome", outcome)],
                n as f64,
            );
        }
    }
    e.family(
        "gantry_agent_model_predictions_kept_total",
        Kind::Counter,
        "Predictions kept for feedback (requests with an id).",
    );
    for (m, c) in &counted {
        e.sample(
            "gantry_agent_model_predictions_kept_total",
            &[("model", m.name.as_str())],
            c.kept as f64,
        );
    }
    e.family(
        "gantry_agent_model_predictions_not_kept_total",
        Kind::Counter,
        "Requests with an id whose prediction was not kept: queue_full (the store fell behind or failed) or unreadable (the output is not a prediction).",
    );
    for (m, c) in &counted {
        for (reason, n) in [("queue_full", c.queue_full), ("unreadable", c.unreadable)] {
            e.sample(
                "gantry_agent_model_predictions_not_kept_total",
                &[("model", m.name.as_str()), ("reason", reason)],
                n as f64,
            );
        }
    }
    e.family(
        "gantry_agent_model_predictions_expired_total",
        Kind::Counter,
        "Kept predictions dropped before any feedback could still join them: ttl (older than monitoring.feedback_ttl) or evicted (over monitoring.max_predictions).",
    );
    for (m, c) in &counted {
        for (reason, n) in [("ttl", c.expired), ("evicted", c.evicted)] {
            e.sample(
                "gantry_agent_model_predictions_expired_total",
                &[("model", m.name.as_str()), ("reason", reason)],
                n as f64,
            );
        }
    }
}

/// The latest drift window of every monitored model: each feature's scores, and the
/// window's size and verdict.
fn render_drift(e: &mut Exposition, models: &[crate::serving::ModelHealth]) {
    let monitored: Vec<(
        &crate::serving::ModelHealth,
        &crate::serving::monitor::DriftVerdict,
    )> = models
        .iter()
        .filter_map(|m| Some((m, m.drift.as_ref()?)))
        .collect();
    if monitored.is_empty() {
        return;
    }
    let version =
        |m: &crate::serving::ModelHealth| m.model.rsplit(' ').next().unwrap_or_default().to_owned();
    e.family(
        "gantry_agent_model_drift_score",
        Kind::Gauge,
        "Drift of a feature from the bundle's reference data over the latest window: psi, ks (Kolmogorov-Smirnov) or js (Jensen-Shannon distance).",
    );
    for (m, d) in &monitored {
        let version = version(m);
        for f in &d.scores {
            for metric in [
                gantry_shared::monitoring::drift::Metric::Psi,
                gantry_shared::monitoring::drift::Metric::Ks,
                gantry_shared::monitoring::drift::Metric::Js,
            ] {
                if let Some(score) = f.score(metric) {
                    e.sample(
                        "gantry_agent_model_drift_score",
                        &[
                            ("model", m.name.as_str()),
                            ("version", version.as_str()),
                            ("side", f.side.as_str()),
                            ("tensor", f.tensor.as_str()),
                            ("feature", f.feature.as_str()),
                            ("metric", metric.as_str()),
                        ],
                        score,
                    );
                }
            }
        }
    }
    e.family(
        "gantry_agent_model_feature_out_of_range",
        Kind::Gauge,
        "Values of a feature outside the reference data's range in the latest drift window.",
    );
    for (m, d) in &monitored {
        for f in &d.scores {
            e.sample(
                "gantry_agent_model_feature_out_of_range",
                &[
                    ("model", m.name.as_str()),
                    ("tensor", f.tensor.as_str()),
                    ("feature", f.feature.as_str()),
                ],
                f.out_of_range as f64,
            );
        }
    }
    for (name, help, pick) in [
        (
            "gantry_agent_model_drift_threshold",
            "The drift score above which a feature makes the model degraded (label metric: the statistic it applies to).",
            (|d: &crate::serving::monitor::DriftVerdict| d.threshold)
                as fn(&crate::serving::monitor::DriftVerdict) -> f64,
        ),
        (
            "gantry_agent_model_drifted_features",
            "Features over the drift threshold in the latest window.",
            |d: &crate::serving::monitor::DriftVerdict| d.drifted.len() as f64,
        ),
        (
            "gantry_agent_model_drift_window_rows",
            "Rows (examples) the latest drift window saw.",
            |d: &crate::serving::monitor::DriftVerdict| d.rows as f64,
        ),
        (
            "gantry_agent_model_drift_window_end_timestamp_seconds",
            "When the latest drift window closed.",
            |d: &crate::serving::monitor::DriftVerdict| d.end_ms as f64 / 1000.0,
        ),
    ] {
        e.family(name, Kind::Gauge, help);
        for (m, d) in &monitored {
            e.sample(
                name,
                &[("model", m.name.as_str()), ("metric", d.metric.as_str())],
                pick(d),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_read() {
        let p = ProcessStats::read().expect("/proc/self is readable on Linux");
        assert!(p.resident_bytes > 0);
        assert!(p.start_time_seconds > 1.0e9);
    }
}
