//! `gantry-agent status`: what the running agent reports about itself, how the CLI
//! fetches it from the agent's local endpoint (`GET /v1/status`), and the table it prints.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use gantry_shared::telemetry::{GpuReading, GpuState, NvmlStatus, Sample, throttle_reason_names};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::telemetry::SnapshotReceiver;
use gantry_shared::exposition::ModelLabel;
use std::sync::Arc;

/// The agent's answer on `/v1/status`: an interface between the daemon and its CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub version: String,
    pub started_at_ms: u64,
    pub state_dir: String,
    pub metrics_listen: String,
    pub interval_ms: u64,
    pub nvml_library: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedGpus>,
    /// The ONNX Runtime library models run in (the GPU build when it is installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnxruntime_library: Option<String>,
    pub samples_total: u64,
    pub sample_cpu_seconds_total: f64,
    pub kernel_log_readable: bool,
    /// GPU fields that are absent from `/metrics`, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent_fields: Vec<gantry_shared::telemetry::AbsentField>,
    /// The latest sample; `None` until the first one is taken.
    #[serde(default)]
    pub sample: Option<Sample>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffer: Option<BufferSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<gantry_shared::health::Health>,
    /// Present when the node is enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkSummary>,
    /// Assigned-bundle delivery, when enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundles: Option<gantry_shared::protocol::delivery::NodeBundles>,
    /// The models being served, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ServingModel>,
    /// Models whose active bundle could not be loaded: name and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_failures: BTreeMap<String, String>,
}

/// The served model, as `status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ServingModel {
    /// Name and version.
    pub model: String,
    /// Bundle digest (hex).
    pub bundle: String,
    /// `cuda` or `cpu`.
    pub execution_provider: String,
    /// Providers the bundle preferred that were passed over, with why.
    pub passed_over: Vec<String>,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub requests_rejected: u64,
    pub latency_p50_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    /// Whether the latest golden-vector run passed; absent before the first.
    pub golden_ok: Option<bool>,
    /// Why it failed.
    pub golden_error: Option<String>,
    /// The latest drift window, for a bundle with a reference profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<gantry_shared::monitoring::DriftSummary>,
    /// The latest feedback window's and the cumulative quality.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<gantry_shared::monitoring::quality::QualitySummary>,
    /// Payload capture, when the node captures for this model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<crate::serving::capture::CaptureStatus>,
}

impl From<&crate::serving::ModelHealth> for ServingModel {
    fn from(m: &crate::serving::ModelHealth) -> Self {
        Self {
            model: m.model.clone(),
            bundle: m.bundle.clone(),
            execution_provider: m.execution_provider.to_owned(),
            passed_over: m.passed_over.clone(),
            requests_ok: m.requests_ok,
            requests_failed: m.requests_failed,
            requests_rejected: m.requests_rejected,
            latency_p50_seconds: m.latency_p50,
            latency_p99_seconds: m.latency_p99,
            golden_ok: m.golden.as_ref().map(Result::is_ok),
            golden_error: m
                .golden
                .clone()
                .and_then(Result::err)
                .map(|e| e.to_string()),
            drift: m
                .drift
                .as_ref()
                .map(crate::serving::monitor::DriftVerdict::summary),
            quality: m.quality.clone(),
            capture: m.capture.clone(),
        }
    }
}

/// The durable buffer, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BufferSummary {
    pub records: u64,
    pub bytes: u64,
    pub last_seq: u64,
    pub dropped_metrics: u64,
    pub dropped_events: u64,
}

/// The connection to the controller, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UplinkSummary {
    pub node: String,
    pub controller: String,
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the node certificate expires (Unix ms); renewed automatically before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires_at_ms: Option<u64>,
}

/// The simulated NVML in use, and where to inject faults into it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimulatedGpus {
    pub gpus: u32,
    pub model: String,
    pub control_file: String,
}

/// Why the status could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "cannot connect to the agent at {addr}; is `gantry-agent run` running and listening there?"
    )]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from the agent at {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP exchange with the agent at {addr} failed")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
    #[error("the agent at {addr} answered {status}")]
    Status {
        addr: SocketAddr,
        status: hyper::StatusCode,
    },
    #[error("the agent at {addr} sent a status this version cannot read")]
    Decode {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
}

/// Fetches `path` from the agent's local endpoint.
pub async fn fetch_raw(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<Bytes, StatusError> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| StatusError::Connect { addr, source })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|source| StatusError::Http { addr, source })?;
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .expect("static request is valid");
        let response = sender
            .send_request(request)
            .await
            .map_err(|source| StatusError::Http { addr, source })?;
        if !response.status().is_success() {
            return Err(StatusError::Status {
                addr,
                status: response.status(),
            });
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| StatusError::Http { addr, source })?
            .to_bytes();
        connection.abort();
        Ok(body)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| StatusError::Timeout { addr, timeout })?
}

/// Fetches and decodes the agent's status.
pub async fn fetch(addr: SocketAddr, timeout: Duration) -> Result<AgentStatus, StatusError> {
    let body = fetch_raw(addr, "/v1/status", timeout).await?;
    serde_json::from_slice(&body).map_err(|source| StatusError::Decode { addr, source })
}

fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn gib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.1}", b as f64 / (1u64 << 30) as f64),
    )
}

/// The readable form: agent summary, one row per GPU, XIDs, host summary.
pub fn render_table(status: &AgentStatus, now_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "gantry-agent {}  metrics http://{}/metrics  state {}  sampling every {}",
        status.version,
        status.metrics_listen,
        status.state_dir,
        humantime::format_duration(Duration::from_millis(status.interval_ms))
    );
    let Some(sample) = &status.sample else {
        let _ = writeln!(out, "no sample taken yet");
        return out;
    };
    let age = Duration::from_millis(now_ms.saturating_sub(sample.taken_at_ms) / 100 * 100);
    match &sample.nvml {
        NvmlStatus::Available {
            driver_version,
            library,
        } => {
            let _ = writeln!(
                out,
                "NVML: driver {} ({library}){}  last sample {} ago",
                driver_version.as_deref().unwrap_or("unknown"),
                status
                    .simulated
                    .as_ref()
                    .map(|s| format!(
                        ", simulated {} x {}, faults via {}",
                        s.gpus, s.model, s.control_file
                    ))
                    .unwrap_or_default(),
                humantime::format_duration(age)
            );
        }
        NvmlStatus::Unavailable { reason } => {
            let _ = writeln!(out, "NVML unavailable: {reason}; host metrics only");
        }
    }
    if !sample.gpus.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<3} {:<24} {:<10} {:>5} {:>13} {:>5} {:>11} {:>6} {:>8} {:<22}",
            "GPU",
            "NAME",
            "STATE",
            "UTIL%",
            "MEM GiB",
            "TEMP",
            "POWER W",
            "SM MHz",
            "ECC DBE",
            "THROTTLE"
        );
        for gpu in &sample.gpus {
            let _ = writeln!(out, "{}", gpu_row(gpu));
        }
        for gpu in &sample.gpus {
            let _ = writeln!(
                out,
                "  gpu {} uuid {} pci {}",
                gpu.identity.index, gpu.identity.uuid, gpu.identity.pci_bus_id
            );
            for mig in &gpu.mig {
                let gib = |b: Option<u64>| {
                    b.map_or("-".to_owned(), |b| {
                        format!("{:.1}", b as f64 / f64::from(1u32 << 30))
                    })
                };
                let _ = writeln!(
                    out,
                    "    MIG instance {} ({}): memory {}/{} GiB, graphics active {}",
                    mig.gpu_instance_id,
                    mig.profile,
                    gib(mig.fields.fb_used_bytes),
                    gib(mig.fields.fb_total_bytes),
                    mig.fields
                        .prof_gr_engine_active
                        .map_or("-".to_owned(), |r| format!("{:.0} %", r * 100.0))
                );
            }
        }
    }
    write_absent_fields(&mut out, &status.absent_fields);
    for xid in &sample.xids {
        let codes: Vec<String> = xid
            .by_code
            .iter()
            .map(|(code, n)| format!("xid {code} x{n}"))
            .collect();
        let _ = writeln!(
            out,
            "XID gpu {} ({}): {} (last {})",
            opt(xid.gpu),
            xid.pci_bus_id,
            codes.join(", "),
            xid.last
        );
    }
    let h = &sample.host;
    let _ = writeln!(out);
    if let Some(health) = &status.health {
        let _ = writeln!(out, "health: {}", health.state.as_str());
        for r in &health.reasons {
            let _ = writeln!(out, "  {} {}: {}", r.state.as_str(), r.check, r.describe());
        }
    }
    match &status.uplink {
        Some(u) => {
            let _ = writeln!(
                out,
                "node {} -> controller {}: {}{}",
                u.node,
                u.controller,
                if u.connected {
                    "connected"
                } else {
                    "not connected"
                },
                u.last_error
                    .as_deref()
                    .filter(|_| !u.connected)
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            );
            if let Some(ms) = u.certificate_expires_at_ms {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                let _ = writeln!(
                    out,
                    "certificate valid until {}{}",
                    humantime::format_rfc3339_seconds(at),
                    if at < std::time::SystemTime::now() {
                        " (EXPIRED: renewing by proof of the node key; telemetry is buffered meanwhile)"
                    } else {
                        " (renewed automatically before then)"
                    }
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "not enrolled: telemetry stays in the local buffer (gantry-agent enroll)"
            );
        }
    }
    if let Some(library) = &status.onnxruntime_library {
        let _ = writeln!(out, "models run in ONNX Runtime {library}");
    }
    for (model, why) in &status.model_failures {
        let _ = writeln!(out, "NOT SERVING {model}: {why}");
    }
    for m in &status.models {
        let _ = writeln!(
            out,
            "serving {} (bundle sha256:{}) on {}: {} requests ok, {} failed, {} rejected{}{}",
            m.model,
            m.bundle,
            m.execution_provider,
            m.requests_ok,
            m.requests_failed,
            m.requests_rejected,
            match (m.latency_p50_seconds, m.latency_p99_seconds) {
                (Some(p50), Some(p99)) => {
                    format!("; p50 {:.2} ms, p99 {:.2} ms", p50 * 1e3, p99 * 1e3)
                }
                _ => String::new(),
            },
            match (m.golden_ok, &m.golden_error) {
                (Some(true), _) => "; golden vectors pass".to_owned(),
                (Some(false), Some(e)) => format!("; golden vectors FAIL: {e}"),
                (Some(false), None) => "; golden vectors FAIL".to_owned(),
                (None, _) => String::new(),
            }
        );
        for reason in &m.passed_over {
            let _ = writeln!(out, "  not on {reason}");
        }
        if let Some(d) = &m.drift {
            let metric = d.metric.as_str();
            let worst = d.worst.as_ref().map_or(
                "no feature had enough values to score".to_owned(),
                |(f, v)| format!("worst {f} {metric} {v:.3}"),
            );
            let verdict = if d.drifted.is_empty() {
                "within the threshold".to_owned()
            } else {
                let named: Vec<String> = d
                    .drifted
                    .iter()
                    .map(|(f, v)| format!("{f} {v:.3}"))
                    .collect();
                format!("DRIFTED: {}", named.join(", "))
            };
            let _ = writeln!(
                out,
                "  drift ({} rows, window ending {}): {worst}; {verdict} (threshold {metric} {})",
                d.rows,
                gantry_net::clock::rfc3339(d.window_end_ms),
                d.threshold
            );
        }
        if let Some(q) = &m.quality {
            let figures = |metrics: &gantry_shared::monitoring::quality::Metrics| {
                let present: Vec<String> = metrics
                    .present()
                    .iter()
                    .map(|(metric, v)| format!("{} {v:.4}", metric.as_str()))
                    .collect();
                format!("{} rows: {}", metrics.rows, present.join(", "))
            };
            let _ = writeln!(
                out,
                "  quality (feedback window ending {}): {}; since start {}",
                gantry_net::clock::rfc3339(q.window_end_ms),
                figures(&q.metrics),
                figures(&q.cumulative)
            );
        }
        if let Some(c) = &m.capture {
            let n = &c.counters;
            let redacted = if c.redacted.is_empty() {
                String::new()
            } else {
                format!(", {} redacted", c.redacted.join(", "))
            };
            let _ = writeln!(
                out,
                "  capture ({:.2} % of requests{redacted}): {} pairs ({} bytes), {} of {} bytes held for the controller; not captured: {} over the cap, {} too large, {} recorder behind, {} misconfigured",
                c.rate * 100.0,
                n.captured,
                n.captured_bytes,
                n.held_bytes,
                c.max_bytes,
                n.capped,
                n.too_large,
                n.queue_full,
                n.misconfigured,
            );
        }
    }
    if let Some(d) = &status.bundles {
        if let Some(id) = &d.downloading {
            let _ = writeln!(
                out,
                "bundle {id}: downloading, {} bytes received{}",
                d.downloaded_bytes,
                if d.resumed_at > 0 {
                    format!(" (resumed at {})", d.resumed_at)
                } else {
                    String::new()
                }
            );
        }
        for f in d.refusals() {
            let model = if f.model.is_empty() {
                String::new()
            } else {
                format!(" (model {})", f.model)
            };
            let _ = writeln!(out, "bundle {}{model} NOT activated: {}", f.id, f.reason);
        }
        if let Some(t) = &d.last_transfer {
            let _ = writeln!(
                out,
                "last transfer: bundle {}, {} bytes in {:.2} s ({:.0} MiB/s), synced in {:.2} s",
                t.id,
                t.bytes,
                t.seconds,
                t.mib_per_second(),
                t.sync_seconds
            );
        }
    }
    if let Some(b) = &status.buffer {
        let _ = writeln!(
            out,
            "buffer: {} records ({} bytes) waiting, through sequence {}; dropped {} metrics, {} events",
            b.records, b.bytes, b.last_seq, b.dropped_metrics, b.dropped_events
        );
    }
    let _ = writeln!(
        out,
        "host {}: {} CPUs {:.0}% busy, load {:.2} {:.2} {:.2}, memory {} of {} GiB available{}",
        h.hostname,
        h.cpu_count,
        h.cpu_usage_percent,
        h.load1,
        h.load5,
        h.load15,
        gib(Some(h.mem_available_bytes)),
        gib(Some(h.mem_total_bytes)),
        h.state_dir
            .as_ref()
            .map(|s| format!(", state dir {} GiB free", gib(Some(s.free_bytes))))
            .unwrap_or_default()
    );
    out
}

/// Absent fields, once per field and reason, with the GPUs they concern.
fn write_absent_fields(out: &mut String, absent: &[gantry_shared::telemetry::AbsentField]) {
    let grouped = gantry_shared::telemetry::group_absent(absent);
    if grouped.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "absent fields (left out of /metrics, never reported as 0):"
    );
    for ((field, reason), gpus) in grouped {
        let gpus: Vec<String> = gpus.iter().map(u32::to_string).collect();
        let _ = writeln!(out, "  {field} on GPU {}: {reason}", gpus.join(","));
    }
}

fn gpu_row(gpu: &GpuReading) -> String {
    let f = &gpu.fields;
    let state = match &gpu.state {
        GpuState::Ok => "ok".to_owned(),
        GpuState::Lost => "LOST".to_owned(),
        GpuState::Error { .. } => "error".to_owned(),
    };
    let memory = match (f.fb_used_bytes, f.fb_total_bytes) {
        (Some(_), Some(_)) => format!("{}/{}", gib(f.fb_used_bytes), gib(f.fb_total_bytes)),
        _ => "-".to_owned(),
    };
    let power = match (f.power_usage_mw, f.power_limit_mw) {
        (Some(p), Some(l)) => format!("{}/{}", p / 1000, l / 1000),
        (Some(p), None) => format!("{}", p / 1000),
        _ => "-".to_owned(),
    };
    let throttle = f.clock_throttle_reasons.map_or_else(
        || "-".to_owned(),
        |bits| {
            let names = throttle_reason_names(bits);
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(",")
            }
        },
    );
    let mut name = gpu.identity.name.clone();
    name.truncate(24);
    format!(
        "{:<3} {:<24} {:<10} {:>5} {:>13} {:>5} {:>11} {:>6} {:>8} {:<22}",
        gpu.identity.index,
        name,
        state,
        opt(f.gpu_util_percent),
        memory,
        opt(f.temperature_c),
        power,
        opt(f.sm_clock_mhz),
        opt(f.ecc_dbe_volatile),
        throttle
    )
}

/// Facts about the agent that do not change while it runs.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub started_at_ms: u64,
    pub state_dir: String,
    pub metrics_listen: String,
    pub interval_ms: u64,
    pub nvml_library: String,
    pub simulated: Option<SimulatedGpus>,
    pub model_label: ModelLabel,
    /// The ONNX Runtime library the endpoint serves with; `None` when it does not.
    pub onnxruntime: Option<String>,
}

/// The buffer and uplink, when running, for `/metrics` and `/v1/status`.
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub health: Option<crate::health::SharedHealth>,
    pub models: Option<Arc<crate::serving::Models>>,
    pub buffer: Option<Arc<crate::buffer::Buffer>>,
    pub uplink: Option<crate::uplink::SharedStatus>,
    /// Delivery state and the store it activates into.
    pub bundles: Option<(
        crate::delivery::SharedBundles,
        crate::bundle::store::BundleStore,
    )>,
}

/// What `/v1/status` answers now: the latest snapshot and each running part's state.
pub async fn collect(info: &AgentInfo, snapshots: &SnapshotReceiver, links: &Links) -> AgentStatus {
    let bundles = match links.bundles.clone() {
        Some((shared, store)) => {
            tokio::task::spawn_blocking(move || crate::delivery::report(&shared, &store))
                .await
                .ok()
        }
        None => None,
    };
    let snapshot = snapshots.borrow().clone();
    AgentStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: info.started_at_ms,
        state_dir: info.state_dir.clone(),
        metrics_listen: info.metrics_listen.clone(),
        interval_ms: info.interval_ms,
        nvml_library: info.nvml_library.clone(),
        simulated: info.simulated.clone(),
        onnxruntime_library: info.onnxruntime.clone(),
        samples_total: snapshot.as_ref().map_or(0, |s| s.stats.samples_total),
        sample_cpu_seconds_total: snapshot
            .as_ref()
            .map_or(0.0, |s| s.stats.sample_cpu.as_secs_f64()),
        kernel_log_readable: snapshot
            .as_ref()
            .is_some_and(|s| s.stats.kernel_log_readable),
        absent_fields: snapshot
            .as_ref()
            .map(|s| s.stats.absent_fields.as_ref().clone())
            .unwrap_or_default(),
        sample: snapshot.map(|s| s.sample.clone()),
        buffer: links.buffer.as_ref().map(|b| {
            let stats = b.stats();
            BufferSummary {
                records: stats.records,
                bytes: stats.bytes,
                last_seq: stats.last_seq,
                dropped_metrics: stats.dropped_metrics,
                dropped_events: stats.dropped_events,
            }
        }),
        health: links
            .health
            .as_ref()
            .map(|h| h.lock().expect("health").clone()),
        uplink: links.uplink.as_ref().map(|u| {
            let u = u.lock().expect("uplink status");
            UplinkSummary {
                node: u.node.clone().unwrap_or_default(),
                controller: u.controller.map(|a| a.to_string()).unwrap_or_default(),
                connected: u.connected,
                last_error: u.last_error.clone(),
                certificate_expires_at_ms: u.certificate_expires_at_ms,
            }
        }),
        bundles,
        models: links
            .models
            .as_ref()
            .map(|m| m.health().iter().map(ServingModel::from).collect())
            .unwrap_or_default(),
        model_failures: links
            .models
            .as_ref()
            .map(|m| m.failures())
            .unwrap_or_default(),
    }
}
