//! Agent configuration: TOML files and command-line overrides, validated before anything
//! is opened or bound.
//!
//! Sources, later ones winning key by key:
//! 1. built-in defaults (documented on [`RawConfig`]);
//! 2. the main file, `/etc/gantry/agent.toml` unless `--config` / `GANTRY_AGENT_CONFIG`
//!    names another (the default file may be absent; a named one must exist);
//! 3. drop-ins `agent.d/*.toml` beside the main file, in file-name order;
//! 4. command-line flags, applied as values at their keys.
//!
//! Stage one deserializes the merged tree into [`RawConfig`], rejecting unknown keys;
//! stage two, [`RawConfig::validate`], turns it into a [`Config`] that cannot hold a bad
//! value. Every error names the key at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use gantry_shared::exposition::ModelLabel;
use gantry_shared::layout;

/// Default location of the main configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/gantry/agent.toml";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gantry";
/// Default metrics listener: dcgm-exporter's port, on loopback.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9400";
/// Shortest sampling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest sampling interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// Errors in loading or validating configuration. Each names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    fn invalid(key: &str, problem: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

/// The configuration as written, before validation. Defaults in comments.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Where the agent keeps its state. Default `/var/lib/gantry`.
    pub state_dir: Option<PathBuf>,
    pub telemetry: RawTelemetry,
    pub nvml: RawNvml,
    pub xid: RawXid,
    pub metrics: RawMetrics,
    pub trust: RawTrust,
    pub buffer: RawBuffer,
    pub uplink: RawUplink,
    pub inference: RawInference,
    pub health: RawHealth,
    pub monitoring: RawMonitoring,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMonitoring {
    /// How long each drift window of a served model lasts. Default `5m`.
    pub window: Option<String>,
    /// Fewest values a feature needs in a window to be scored. Default 100.
    pub min_values: Option<u64>,
    /// The drift threshold for every model, in place of each bundle's.
    pub drift_threshold: Option<f64>,
    /// How long a prediction waits for its ground-truth feedback. Default `24h`.
    pub feedback_ttl: Option<String>,
    /// Most predictions kept for feedback; the oldest go first. Default 500 000.
    pub max_predictions: Option<u64>,
    /// Per model: `[monitoring.models.NAME]`, in place of the above for that model.
    pub models: std::collections::BTreeMap<String, RawModelMonitoring>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawModelMonitoring {
    pub drift_threshold: Option<f64>,
    /// Share of the model's requests captured with their answers, in (0, 1]. Unset:
    /// nothing is captured.
    pub capture_rate: Option<f64>,
    /// Most bytes of captured pairs held in the buffer until the controller has them.
    /// Default `32MiB`.
    pub capture_max_bytes: Option<String>,
    /// Inputs left out of every captured pair.
    pub capture_redact: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHealth {
    /// GPU temperature that makes the node degraded. Default 85 (°C).
    pub gpu_temp_degraded: Option<u32>,
    /// GPU temperature that makes the node unhealthy. Default 95 (°C).
    pub gpu_temp_unhealthy: Option<u32>,
    /// How long a new XID counts against health. Default `10m`.
    pub xid_window: Option<String>,
    /// State-directory free space below which the node is degraded. Default `5GiB`.
    pub state_dir_free_degraded: Option<String>,
    /// State-directory free space below which the node is unhealthy. Default `512MiB`.
    pub state_dir_free_unhealthy: Option<String>,
    /// How often the served model's golden vectors run again. Default `5m`.
    pub golden_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInference {
    /// ONNX Runtime's shared library. Default: the GPU build with its CUDA runtime
    /// (`/usr/lib/gantry/cuda/libonnxruntime.so.1.31.1`) where it is there, else the CPU
    /// build, `/usr/lib/gantry/libonnxruntime.so.1.31.1` (each under `<prefix>/lib/gantry`
    /// first for an agent in `<prefix>/bin`, an unpacked tarball).
    pub onnxruntime: Option<PathBuf>,
    /// Address of the `KServe` v2 inference endpoint; `""` disables it. Default `127.0.0.1:8000`.
    pub listen: Option<String>,
    /// Address of its gRPC endpoint; `""` disables it. Default: the HTTP endpoint's
    /// address with the next port (`127.0.0.1:8001`, as Triton's 8000 and 8001).
    pub grpc_listen: Option<String>,
    /// Sessions per model, overriding the bundle's `requirements.instances`.
    pub instances: Option<u32>,
    /// ONNX Runtime threads per session, overriding the bundle's requirements.
    pub intra_op_threads: Option<u32>,
    pub inter_op_threads: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBuffer {
    /// Largest size of the telemetry buffer, e.g. `"256MiB"`. Default 256 MiB, at least 64 KiB.
    pub max_bytes: Option<String>,
    /// Metrics older than this are dropped. Default `7d`.
    pub max_age: Option<String>,
    /// Events (XIDs, GPU state changes) older than this are dropped. Default `30d`.
    pub event_max_age: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUplink {
    /// Controller address; default: the one the node enrolled with.
    pub controller: Option<String>,
    /// Several controllers of the fleet (sharing one store), tried in turn: the agent
    /// fails over to the next when one does not answer. Instead of `controller`.
    pub controllers: Option<Vec<String>>,
    /// Heartbeat interval. Default `10s`.
    pub heartbeat: Option<String>,
    /// Longest wait between reconnection attempts. Default `60s`.
    pub max_backoff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// Sampling interval, e.g. `"10s"`, `"500ms"`. Default `10s`, at least `100ms`.
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNvml {
    /// NVML library to load: a file name searched by the dynamic loader, or a path.
    /// Default `libnvidia-ml.so.1`.
    pub library: Option<String>,
    /// How often to retry NVML while it is unavailable. Default `60s`.
    pub retry_interval: Option<String>,
    /// Use the simulated NVML instead of the driver's.
    pub simulate: Option<RawSimulate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSimulate {
    /// Number of simulated GPUs, 1 to 64. Default 8.
    pub gpus: Option<i64>,
    /// GPU model: `h100`, `h200`, `a100`, `l40s` or `v100`. Default `h100`.
    pub model: Option<String>,
    /// Control file for fault injection. Default `<state_dir>/nvml-sim.json`.
    pub control_file: Option<PathBuf>,
    /// The simulated library. Default: found beside the agent executable, in
    /// `<prefix>/lib/gantry` for an agent in `<prefix>/bin`, or in `/usr/lib/gantry`.
    pub library: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawXid {
    /// Kernel log to read `NVRM: Xid` lines from; `""` disables. Default `/dev/kmsg`.
    pub kernel_log: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrust {
    /// The node's trust policy: which keys sign the bundles it runs. Default
    /// `<state_dir>/trust.json`.
    pub policy: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMetrics {
    /// Address of the `/metrics` and status endpoint. Default `127.0.0.1:9400`.
    pub listen: Option<String>,
    /// Label carrying the GPU product name: `"modelName"` (dcgm-exporter's, default) or
    /// `"model_name"` (passes Prometheus' label-name lint).
    pub model_label: Option<String>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub telemetry: TelemetryConfig,
    pub nvml: NvmlConfig,
    /// Kernel log to read XIDs from; `None` when disabled.
    pub kernel_log: Option<PathBuf>,
    pub metrics_listen: SocketAddr,
    pub metrics_model_label: ModelLabel,
    /// The node's trust policy file.
    pub trust_policy: PathBuf,
    pub buffer: crate::buffer::Limits,
    pub uplink: UplinkSettings,
    /// ONNX Runtime's shared library.
    pub onnxruntime: PathBuf,
    /// The inference endpoint's address; `None` when disabled.
    pub inference_listen: Option<SocketAddr>,
    /// Its gRPC endpoint's address; `None` when disabled.
    pub grpc_listen: Option<GrpcListen>,
    /// The node's overrides of every bundle's sessions and threads.
    pub execution: crate::inference::ExecutionOverrides,
    pub health: crate::health::Thresholds,
    pub monitoring: crate::serving::monitor::MonitoringSettings,
}

fn drift_threshold(key: &str, value: Option<f64>) -> Result<Option<f64>, ConfigError> {
    match value {
        Some(v) if !(v.is_finite() && v > 0.0) => Err(ConfigError::invalid(
            key,
            format!("{v} is not a positive number"),
        )),
        v => Ok(v),
    }
}

/// `uplink.controller` or `uplink.controllers` as addresses (empty where neither is set).
fn controllers(uplink: &RawUplink) -> Result<Vec<SocketAddr>, ConfigError> {
    let (key, texts) = match (&uplink.controller, &uplink.controllers) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                "uplink.controllers",
                "set uplink.controller (one) or uplink.controllers (a list), not both".to_owned(),
            ));
        }
        (Some(one), None) => ("uplink.controller", std::slice::from_ref(one)),
        (None, Some(list)) if list.is_empty() => {
            return Err(ConfigError::invalid(
                "uplink.controllers",
                "the list is empty; leave it out to use the controller the node enrolled with"
                    .to_owned(),
            ));
        }
        (None, Some(list)) => ("uplink.controllers", list.as_slice()),
        (None, None) => return Ok(Vec::new()),
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for text in texts {
        let addr: SocketAddr = text.trim().parse().map_err(|_| {
            ConfigError::invalid(
                key,
                format!("{text:?} is not an IP address and port like \"10.0.0.5:7443\""),
            )
        })?;
        if out.contains(&addr) {
            return Err(ConfigError::invalid(key, format!("{addr} is listed twice")));
        }
        if out
            .first()
            .is_some_and(|first| first.is_ipv4() != addr.is_ipv4())
        {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{addr} is not of the same IP version as {}: list IPv4 or IPv6 addresses, not both",
                    out[0]
                ),
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

/// Validated `[uplink]` settings.
#[derive(Debug, Clone)]
pub struct UplinkSettings {
    /// The controllers to connect to, in order; empty: the one the node enrolled with.
    pub controllers: Vec<SocketAddr>,
    pub heartbeat: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct NvmlConfig {
    /// The library handed to the dynamic loader.
    pub library: PathBuf,
    pub retry_interval: Duration,
    /// Set when the library is the simulated one.
    pub simulate: Option<SimulateConfig>,
}

#[derive(Debug, Clone)]
pub struct SimulateConfig {
    pub gpus: u32,
    pub model: String,
    pub control_file: PathBuf,
}

/// Command-line values that override configuration keys.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub interval: Option<String>,
    pub nvml_library: Option<String>,
    pub simulate_gpus: Option<u32>,
    pub simulate_model: Option<String>,
    pub metrics_listen: Option<String>,
    pub kernel_log: Option<PathBuf>,
    pub inference_listen: Option<String>,
}

impl Overrides {
    /// Sets each override at its key in the merged tree.
    fn apply(&self, tree: &mut toml::Table) {
        let mut set = |path: &[&str], value: toml::Value| {
            let (last, parents) = path.split_last().expect("non-empty key path");
            let mut table = &mut *tree;
            for key in parents {
                let entry = table
                    .entry((*key).to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if !entry.is_table() {
                    *entry = toml::Value::Table(toml::Table::new());
                }
                table = entry.as_table_mut().expect("just made a table");
            }
            table.insert((*last).to_owned(), value);
        };
        let path_value = |p: &Path| toml::Value::String(p.to_string_lossy().into_owned());
        if let Some(dir) = &self.state_dir {
            set(&["state_dir"], path_value(dir));
        }
        if let Some(interval) = &self.interval {
            set(
                &["telemetry", "interval"],
                toml::Value::String(interval.clone()),
            );
        }
        if let Some(library) = &self.nvml_library {
            set(&["nvml", "library"], toml::Value::String(library.clone()));
        }
        if let Some(gpus) = self.simulate_gpus {
            set(
                &["nvml", "simulate", "gpus"],
                toml::Value::Integer(i64::from(gpus)),
            );
        }
        if let Some(model) = &self.simulate_model {
            set(
                &["nvml", "simulate", "model"],
                toml::Value::String(model.clone()),
            );
        }
        if let Some(listen) = &self.metrics_listen {
            set(&["metrics", "listen"], toml::Value::String(listen.clone()));
        }
        if let Some(listen) = &self.inference_listen {
            set(
                &["inference", "listen"],
                toml::Value::String(listen.clone()),
            );
        }
        if let Some(log) = &self.kernel_log {
            set(&["xid", "kernel_log"], path_value(log));
        }
    }
}

/// Loads configuration from `explicit` (or the default path), its drop-ins and
/// `overrides`, and validates it.
pub fn load(explicit: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let main_path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    let mut tree = toml::Table::new();
    match std::fs::read_to_string(main_path) {
        Ok(text) => merge(&mut tree, parse(main_path, &text)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {}
        Err(source) => {
            return Err(ConfigError::Read {
                path: main_path.to_owned(),
                source,
            });
        }
    }
    for path in drop_ins(main_path)? {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        merge(&mut tree, parse(&path, &text)?);
    }
    overrides.apply(&mut tree);
    from_tree(tree)?.validate()
}

/// Parses configuration text alone (no drop-ins, no overrides) and validates it.
pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
    from_tree(parse(Path::new("<string>"), text)?)?.validate()
}

fn parse(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
}

fn from_tree(tree: toml::Table) -> Result<RawConfig, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Invalid {
            key: if key == "." {
                "(top level)".to_owned()
            } else {
                key
            },
            problem: e.into_inner().message().to_owned(),
        }
    })
}

/// `agent.d/*.toml` beside the main file, sorted by name.
fn drop_ins(main_path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = main_path.parent().unwrap_or(Path::new(".")).join(format!(
        "{}.d",
        main_path.file_stem().unwrap_or_default().to_string_lossy()
    ));
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::Read { path: dir, source }),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Merges `overlay` into `base`: tables recursively, everything else replaced.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge(base_table, overlay_table);
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn duration(key: &str, text: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text.trim()).map_err(|e| {
            ConfigError::invalid(
                key,
                format!("{text:?} is not a duration like \"10s\" or \"500ms\" ({e})"),
            )
        }),
    }
}

/// A duration that must lie in `range`; the error names the key and the bounds.
fn bounded_duration(
    key: &str,
    text: Option<&str>,
    default: Duration,
    range: std::ops::RangeInclusive<Duration>,
) -> Result<Duration, ConfigError> {
    let value = duration(key, text, default)?;
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "{} is out of range: it must be between {} and {}",
                humantime::format_duration(value),
                humantime::format_duration(*range.start()),
                humantime::format_duration(*range.end()),
            ),
        ))
    }
}

/// A number that must lie in `range`.
/// Default `capture_max_bytes`.
const CAPTURE_MAX_BYTES: u64 = 32 << 20;

/// `[monitoring.models.NAME]`'s capture settings, when it captures.
fn capture_settings(
    name: &str,
    model: &RawModelMonitoring,
) -> Result<Option<crate::serving::capture::CaptureSettings>, ConfigError> {
    let key = |field: &str| format!("monitoring.models.{name}.{field}");
    let Some(rate) = model.capture_rate else {
        if model.capture_max_bytes.is_some() || !model.capture_redact.is_empty() {
            return Err(ConfigError::invalid(
                &key("capture_rate"),
                "capture_max_bytes and capture_redact apply only with capture_rate set",
            ));
        }
        return Ok(None);
    };
    if !(rate > 0.0 && rate <= 1.0) {
        return Err(ConfigError::invalid(
            &key("capture_rate"),
            format!(
                "{rate} is not a share of requests: it must be more than 0 and at most 1 (remove it to capture nothing)"
            ),
        ));
    }
    let max_bytes = match model.capture_max_bytes.as_deref() {
        None => CAPTURE_MAX_BYTES,
        Some(text) => gantry_shared::units::parse_size(text)
            .map_err(|e| ConfigError::invalid(&key("capture_max_bytes"), e))?,
    };
    let max_bytes = bounded(
        &key("capture_max_bytes"),
        max_bytes,
        gantry_shared::monitoring::capture::MAX_PAIR_BYTES as u64..=(1 << 40),
        " bytes",
    )?;
    let mut redact = model.capture_redact.clone();
    redact.sort();
    redact.dedup();
    if let Some(empty) = redact.iter().find(|n| n.trim().is_empty()) {
        return Err(ConfigError::invalid(
            &key("capture_redact"),
            format!("{empty:?} is not an input name"),
        ));
    }
    Ok(Some(crate::serving::capture::CaptureSettings {
        rate,
        max_bytes,
        redact,
    }))
}

fn bounded<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::invalid(
            key,
            format!(
                "{value}{unit} is out of range: it must be between {}{unit} and {}{unit}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// Longest wait between reconnection attempts, by default: with full jitter, a fleet comes
/// back within seconds of its controller's return, spread over this window rather than
/// all at once.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
const TIB: u64 = 1 << 40;

impl RawConfig {
    /// Checks every value and resolves defaults.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let state_dir = self
            .state_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        if state_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("state_dir", "must not be empty"));
        }
        if !state_dir.is_absolute() {
            return Err(ConfigError::invalid(
                "state_dir",
                format!("{} must be an absolute path", state_dir.display()),
            ));
        }

        let interval = bounded_duration(
            "telemetry.interval",
            self.telemetry.interval.as_deref(),
            Duration::from_secs(10),
            MIN_INTERVAL..=MAX_INTERVAL,
        )?;

        let retry_interval = bounded_duration(
            "nvml.retry_interval",
            self.nvml.retry_interval.as_deref(),
            Duration::from_secs(60),
            Duration::from_millis(100)..=DAY,
        )?;

        let (library, simulate) = match self.nvml.simulate {
            None => {
                let library = self
                    .nvml
                    .library
                    .unwrap_or_else(|| "libnvidia-ml.so.1".to_owned());
                if library.trim().is_empty() {
                    return Err(ConfigError::invalid("nvml.library", "must not be empty"));
                }
                (PathBuf::from(library), None)
            }
            Some(sim) => {
                let gpus = sim.gpus.unwrap_or(8);
                if !(1..=i64::from(gantry_nvml_sim_limits::MAX_GPUS)).contains(&gpus) {
                    return Err(ConfigError::invalid(
                        "nvml.simulate.gpus",
                        format!(
                            "{gpus} is out of range: between 1 and {}",
                            gantry_nvml_sim_limits::MAX_GPUS
                        ),
                    ));
                }
                let model = sim.model.unwrap_or_else(|| "h100".to_owned());
                if !gantry_nvml_sim_limits::MODELS.contains(&model.as_str()) {
                    return Err(ConfigError::invalid(
                        "nvml.simulate.model",
                        format!(
                            "unknown model {model:?}; known models: {}",
                            gantry_nvml_sim_limits::MODELS.join(", ")
                        ),
                    ));
                }
                let library = match (sim.library, self.nvml.library) {
                    (Some(path), _) => path,
                    (None, Some(path)) => PathBuf::from(path),
                    (None, None) => find_simulated_library().ok_or_else(|| {
                        ConfigError::invalid(
                            "nvml.simulate.library",
                            format!(
                                "the simulated NVML library {} was not found (looked in {}); \
                                 build it with `cargo build -p gantry-nvml-sim` or name it here",
                                gantry_nvml_sim_limits::LIBRARY_FILE_NAME,
                                simulated_library_dirs()
                                    .iter()
                                    .map(|d| d.display().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?,
                };
                let control_file = sim
                    .control_file
                    .unwrap_or_else(|| state_dir.join("nvml-sim.json"));
                (
                    library,
                    Some(SimulateConfig {
                        gpus: gpus as u32,
                        model,
                        control_file,
                    }),
                )
            }
        };

        let kernel_log = match self.xid.kernel_log {
            None => Some(PathBuf::from("/dev/kmsg")),
            Some(path) if path.as_os_str().is_empty() => None,
            Some(path) => Some(path),
        };

        let listen_text = self
            .metrics
            .listen
            .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.to_owned());
        let metrics_listen: SocketAddr = listen_text.trim().parse().map_err(|_| {
            ConfigError::invalid(
                "metrics.listen",
                format!("{listen_text:?} is not an IP address and port like \"127.0.0.1:9400\""),
            )
        })?;

        let metrics_model_label = match self.metrics.model_label.as_deref() {
            None | Some("modelName") => ModelLabel::Dcgm,
            Some("model_name") => ModelLabel::SnakeCase,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "metrics.model_label",
                    format!("{other:?} is not one of \"modelName\", \"model_name\""),
                ));
            }
        };

        let trust_policy = self
            .trust
            .policy
            .unwrap_or_else(|| state_dir.join("trust.json"));

        let defaults = crate::buffer::Limits::default();
        let max_bytes = match self.buffer.max_bytes.as_deref() {
            None => defaults.max_bytes,
            Some(text) => gantry_shared::units::parse_size(text)
                .map_err(|e| ConfigError::invalid("buffer.max_bytes", e))?,
        };
        if max_bytes < 64 * 1024 {
            return Err(ConfigError::invalid(
                "buffer.max_bytes",
                "must be at least 64KiB",
            ));
        }
        if max_bytes > 16 * TIB {
            return Err(ConfigError::invalid(
                "buffer.max_bytes",
                "must be at most 16TiB",
            ));
        }
        let max_age = bounded_duration(
            "buffer.max_age",
            self.buffer.max_age.as_deref(),
            defaults.max_age,
            MINUTE..=3650 * DAY,
        )?;
        let event_max_age = bounded_duration(
            "buffer.event_max_age",
            self.buffer.event_max_age.as_deref(),
            defaults.event_max_age,
            MINUTE..=3650 * DAY,
        )?;
        if event_max_age < max_age {
            return Err(ConfigError::invalid(
                "buffer.event_max_age",
                format!(
                    "{} is shorter than buffer.max_age ({}): events are kept longest, so it must be at least as long",
                    humantime::format_duration(event_max_age),
                    humantime::format_duration(max_age)
                ),
            ));
        }
        let buffer = crate::buffer::Limits {
            max_bytes,
            max_age,
            event_max_age,
        };
        let controllers = controllers(&self.uplink)?;
        let heartbeat = bounded_duration(
            "uplink.heartbeat",
            self.uplink.heartbeat.as_deref(),
            Duration::from_secs(10),
            Duration::from_millis(100)..=HOUR,
        )?;
        let max_backoff = bounded_duration(
            "uplink.max_backoff",
            self.uplink.max_backoff.as_deref(),
            DEFAULT_MAX_BACKOFF,
            Duration::from_millis(250)..=HOUR,
        )?;
        let uplink = UplinkSettings {
            controllers,
            heartbeat,
            max_backoff,
        };
        let health_defaults = crate::health::Thresholds::default();
        let size = |key: &str, text: Option<&str>, default: u64| -> Result<u64, ConfigError> {
            text.map_or(Ok(default), |t| {
                gantry_shared::units::parse_size(t).map_err(|e| ConfigError::invalid(key, e))
            })
        };
        let health = crate::health::Thresholds {
            gpu_temp_degraded_c: bounded(
                "health.gpu_temp_degraded",
                self.health
                    .gpu_temp_degraded
                    .unwrap_or(health_defaults.gpu_temp_degraded_c),
                1..=150,
                " °C",
            )?,
            gpu_temp_unhealthy_c: bounded(
                "health.gpu_temp_unhealthy",
                self.health
                    .gpu_temp_unhealthy
                    .unwrap_or(health_defaults.gpu_temp_unhealthy_c),
                1..=150,
                " °C",
            )?,
            xid_window: bounded_duration(
                "health.xid_window",
                self.health.xid_window.as_deref(),
                health_defaults.xid_window,
                SECOND..=30 * DAY,
            )?,
            state_dir_free_degraded: size(
                "health.state_dir_free_degraded",
                self.health.state_dir_free_degraded.as_deref(),
                health_defaults.state_dir_free_degraded,
            )?,
            state_dir_free_unhealthy: size(
                "health.state_dir_free_unhealthy",
                self.health.state_dir_free_unhealthy.as_deref(),
                health_defaults.state_dir_free_unhealthy,
            )?,
            memory_available_min: health_defaults.memory_available_min,
            golden_interval: bounded_duration(
                "health.golden_interval",
                self.health.golden_interval.as_deref(),
                health_defaults.golden_interval,
                SECOND..=30 * DAY,
            )?,
            inference_error_rate: health_defaults.inference_error_rate,
        };
        if health.gpu_temp_degraded_c > health.gpu_temp_unhealthy_c {
            return Err(ConfigError::invalid(
                "health.gpu_temp_degraded",
                "must not exceed health.gpu_temp_unhealthy",
            ));
        }
        for (key, value) in [
            (
                "health.state_dir_free_degraded",
                health.state_dir_free_degraded,
            ),
            (
                "health.state_dir_free_unhealthy",
                health.state_dir_free_unhealthy,
            ),
        ] {
            if value > 1024 * TIB {
                return Err(ConfigError::invalid(key, "must be at most 1PiB"));
            }
        }
        if health.state_dir_free_unhealthy > health.state_dir_free_degraded {
            return Err(ConfigError::invalid(
                "health.state_dir_free_unhealthy",
                "must not exceed health.state_dir_free_degraded (less free space is worse)",
            ));
        }
        let inference_listen =
            optional_address("inference.listen", self.inference.listen.as_deref(), 8000)?;
        let grpc_listen = match self.inference.grpc_listen.as_deref() {
            None => inference_listen.and_then(|http| {
                Some(GrpcListen {
                    addr: SocketAddr::new(http.ip(), http.port().checked_add(1)?),
                    configured: false,
                })
            }),
            given => {
                optional_address("inference.grpc_listen", given, 8001)?.map(|addr| GrpcListen {
                    addr,
                    configured: true,
                })
            }
        };

        let execution = crate::inference::ExecutionOverrides {
            instances: bounded_count(
                "inference.instances",
                self.inference.instances,
                gantry_shared::bundle::manifest::MAX_INSTANCES,
            )?,
            intra_op_threads: bounded_count(
                "inference.intra_op_threads",
                self.inference.intra_op_threads,
                gantry_shared::bundle::manifest::MAX_THREADS,
            )?,
            inter_op_threads: bounded_count(
                "inference.inter_op_threads",
                self.inference.inter_op_threads,
                gantry_shared::bundle::manifest::MAX_THREADS,
            )?,
        };

        let monitoring_defaults = crate::serving::monitor::MonitoringSettings::default();
        let mut model_thresholds = std::collections::BTreeMap::new();
        let mut capture = std::collections::BTreeMap::new();
        for (name, model) in &self.monitoring.models {
            let key = format!("monitoring.models.{name}.drift_threshold");
            if let Some(t) = drift_threshold(&key, model.drift_threshold)? {
                model_thresholds.insert(name.clone(), t);
            }
            if let Some(settings) = capture_settings(name, model)? {
                capture.insert(name.clone(), settings);
            }
        }
        let captured: u64 = capture
            .values()
            .map(|c: &crate::serving::capture::CaptureSettings| c.max_bytes)
            .sum();
        if captured > max_bytes / 2 {
            return Err(ConfigError::invalid(
                "monitoring.models.*.capture_max_bytes",
                format!(
                    "the models' capture_max_bytes add up to {captured} bytes, more than half of buffer.max_bytes ({max_bytes}); lower them or raise buffer.max_bytes, so captured pairs never crowd out telemetry"
                ),
            ));
        }
        let monitoring = crate::serving::monitor::MonitoringSettings {
            window: bounded_duration(
                "monitoring.window",
                self.monitoring.window.as_deref(),
                monitoring_defaults.window,
                SECOND..=DAY,
            )?,
            min_values: bounded(
                "monitoring.min_values",
                self.monitoring
                    .min_values
                    .unwrap_or(monitoring_defaults.min_values),
                1..=10_000_000,
                "",
            )?,
            drift_threshold: drift_threshold(
                "monitoring.drift_threshold",
                self.monitoring.drift_threshold,
            )?,
            model_thresholds,
            capture,
            feedback: crate::serving::feedback::FeedbackSettings {
                ttl: bounded_duration(
                    "monitoring.feedback_ttl",
                    self.monitoring.feedback_ttl.as_deref(),
                    monitoring_defaults.feedback.ttl,
                    SECOND..=(DAY * 30),
                )?,
                max_predictions: bounded(
                    "monitoring.max_predictions",
                    self.monitoring
                        .max_predictions
                        .unwrap_or(monitoring_defaults.feedback.max_predictions),
                    1..=100_000_000,
                    "",
                )?,
            },
        };

        Ok(Config {
            state_dir,
            telemetry: TelemetryConfig { interval },
            nvml: NvmlConfig {
                library,
                retry_interval,
                simulate,
            },
            kernel_log,
            metrics_listen,
            metrics_model_label,
            trust_policy,
            buffer,
            uplink,
            onnxruntime: self
                .inference
                .onnxruntime
                .unwrap_or_else(default_onnxruntime),
            inference_listen,
            grpc_listen,
            execution,
            health,
            monitoring,
        })
    }
}

/// Where the gRPC endpoint listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcListen {
    pub addr: SocketAddr,
    /// Set in the configuration (a failure to bind stops the agent), or derived from the
    /// HTTP address (a failure to bind is logged and gRPC stays off).
    pub configured: bool,
}

/// A listening address that `""` turns off; loopback at `port` when not given.
fn optional_address(
    key: &str,
    value: Option<&str>,
    port: u16,
) -> Result<Option<SocketAddr>, ConfigError> {
    match value.map(str::trim) {
        Some("") => Ok(None),
        None => Ok(Some(SocketAddr::from(([127, 0, 0, 1], port)))),
        Some(text) => text.parse().map(Some).map_err(|_| {
            ConfigError::invalid(
                key,
                format!("{text:?} is not an IP address and port like \"127.0.0.1:{port}\""),
            )
        }),
    }
}

/// A count of sessions or threads: 1 to `max` when given.
fn bounded_count(key: &str, value: Option<u32>, max: u32) -> Result<Option<u32>, ConfigError> {
    match value {
        Some(n) if n == 0 || n > max => Err(ConfigError::invalid(
            key,
            format!("{n} is out of range: 1 to {max}"),
        )),
        other => Ok(other),
    }
}

/// Facts about the simulated NVML the configuration needs, kept here so the agent does
/// not link the simulator.
mod gantry_nvml_sim_limits {
    pub(super) const MAX_GPUS: u32 = 64;
    pub(super) const MODELS: &[&str] = &["h100", "h200", "a100", "l40s", "v100"];
    pub(super) const LIBRARY_FILE_NAME: &str = "libgantry_nvml_sim.so";
}

/// The directory of the running agent's executable.
fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(Path::to_owned)
}

/// `<prefix>/lib/gantry` for an agent installed as `<prefix>/bin/gantry-agent`.
fn prefix_library_dir() -> Option<PathBuf> {
    Some(exe_dir()?.parent()?.join(layout::PREFIX_LIBRARY_DIR))
}

/// Directories searched for the simulated NVML library, in order.
fn simulated_library_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = exe_dir() {
        // A build tree (`target/debug`), then an installed prefix (`<prefix>/bin`).
        dirs.push(exe_dir.join("deps"));
        dirs.push(exe_dir);
    }
    dirs.extend(prefix_library_dir());
    dirs.push(PathBuf::from(layout::LIBRARY_DIR));
    dirs
}

/// ONNX Runtime's library as the tarball (under the agent's prefix) or the packages
/// install it: the GPU build in its `cuda/` directory where it is there, else the CPU
/// build.
fn default_onnxruntime() -> PathBuf {
    let dirs: Vec<PathBuf> = prefix_library_dir()
        .into_iter()
        .chain([PathBuf::from(layout::LIBRARY_DIR)])
        .collect();
    dirs.iter()
        .map(|dir| {
            dir.join(layout::CUDA_SUBDIR)
                .join(layout::ONNXRUNTIME_LIBRARY)
        })
        .chain(dirs.iter().map(|dir| dir.join(layout::ONNXRUNTIME_LIBRARY)))
        .find(|path| path.is_file())
        .unwrap_or_else(|| Path::new(layout::LIBRARY_DIR).join(layout::ONNXRUNTIME_LIBRARY))
}

fn find_simulated_library() -> Option<PathBuf> {
    simulated_library_dirs()
        .into_iter()
        .map(|dir| dir.join(gantry_nvml_sim_limits::LIBRARY_FILE_NAME))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_key(result: Result<Config, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid-key error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_documented_values() {
        let config = from_toml_str("").unwrap();
        assert_eq!(config.state_dir, Path::new("/var/lib/gantry"));
        assert_eq!(config.telemetry.interval, Duration::from_secs(10));
        assert_eq!(config.metrics_listen, "127.0.0.1:9400".parse().unwrap());
        assert_eq!(config.nvml.library, Path::new("libnvidia-ml.so.1"));
        assert_eq!(config.kernel_log.as_deref(), Some(Path::new("/dev/kmsg")));
        assert!(config.nvml.simulate.is_none());
        assert_eq!(config.trust_policy, Path::new("/var/lib/gantry/trust.json"));
    }

    #[test]
    fn unknown_key_is_named() {
        let result = from_toml_str("[telemetry]\nintervall = \"1s\"\n");
        assert_eq!(invalid_key(result), "telemetry.intervall");
    }

    #[test]
    fn wrong_type_is_named() {
        let result = from_toml_str("[nvml.simulate]\ngpus = \"eight\"\n");
        assert_eq!(invalid_key(result), "nvml.simulate.gpus");
    }

    #[test]
    fn interval_bounds_are_enforced() {
        assert_eq!(
            invalid_key(from_toml_str("[telemetry]\ninterval = \"50ms\"")),
            "telemetry.interval"
        );
        assert_eq!(
            invalid_key(from_toml_str("[telemetry]\ninterval = \"2h\"")),
            "telemetry.interval"
        );
        assert_eq!(
            invalid_key(from_toml_str("[telemetry]\ninterval = \"soon\"")),
            "telemetry.interval"
        );
        let config = from_toml_str("[telemetry]\ninterval = \"100ms\"").unwrap();
        assert_eq!(config.telemetry.interval, Duration::from_millis(100));
    }

    #[test]
    fn out_of_range_values_are_refused_naming_their_key() {
        for (toml, key) in [
            (
                "[health]\ngolden_interval = \"0s\"",
                "health.golden_interval",
            ),
            ("[health]\nxid_window = \"0s\"", "health.xid_window"),
            ("[buffer]\nmax_age = \"0s\"", "buffer.max_age"),
            ("[buffer]\nevent_max_age = \"1s\"", "buffer.event_max_age"),
            (
                "[buffer]\nmax_age = \"30d\"\nevent_max_age = \"1d\"",
                "buffer.event_max_age",
            ),
            ("[buffer]\nmax_bytes = \"100TiB\"", "buffer.max_bytes"),
            (
                "[health]\ngpu_temp_unhealthy = 4000000000",
                "health.gpu_temp_unhealthy",
            ),
            (
                "[health]\ngpu_temp_degraded = 0",
                "health.gpu_temp_degraded",
            ),
            ("[uplink]\nheartbeat = \"100000h\"", "uplink.heartbeat"),
            ("[uplink]\nmax_backoff = \"30d\"", "uplink.max_backoff"),
            ("[nvml]\nretry_interval = \"400d\"", "nvml.retry_interval"),
            (
                "[health]\nstate_dir_free_unhealthy = \"10GiB\"\nstate_dir_free_degraded = \"1GiB\"",
                "health.state_dir_free_unhealthy",
            ),
        ] {
            assert_eq!(invalid_key(from_toml_str(toml)), key, "{toml}");
        }
        let err = from_toml_str("[health]\ngolden_interval = \"0s\"").unwrap_err();
        assert!(err.to_string().contains("between 1s and 30days"), "{err}");
    }

    #[test]
    fn capture_settings_are_validated_and_named() {
        let config = from_toml_str(
            "[monitoring.models.fraud]\ncapture_rate = 0.1\ncapture_redact = [\"card\", \"card\"]",
        )
        .unwrap();
        let c = &config.monitoring.capture["fraud"];
        assert_eq!((c.rate, c.max_bytes), (0.1, CAPTURE_MAX_BYTES));
        assert_eq!(c.redact, vec!["card".to_owned()]);
        for (toml, key) in [
            (
                "[monitoring.models.m]\ncapture_rate = 0",
                "monitoring.models.m.capture_rate",
            ),
            (
                "[monitoring.models.m]\ncapture_rate = 1.5",
                "monitoring.models.m.capture_rate",
            ),
            (
                "[monitoring.models.m]\ncapture_redact = [\"card\"]",
                "monitoring.models.m.capture_rate",
            ),
            (
                "[monitoring.models.m]\ncapture_rate = 1\ncapture_max_bytes = \"1KiB\"",
                "monitoring.models.m.capture_max_bytes",
            ),
            (
                "[monitoring.models.m]\ncapture_rate = 1\ncapture_redact = [\" \"]",
                "monitoring.models.m.capture_redact",
            ),
            (
                "[buffer]\nmax_bytes = \"64MiB\"\n[monitoring.models.m]\ncapture_rate = 1\ncapture_max_bytes = \"40MiB\"",
                "monitoring.models.*.capture_max_bytes",
            ),
        ] {
            assert_eq!(invalid_key(from_toml_str(toml)), key, "{toml}");
        }
    }

    #[test]
    fn bad_listen_address_is_named() {
        assert_eq!(
            invalid_key(from_toml_str("[metrics]\nlisten = \"localhost\"")),
            "metrics.listen"
        );
    }

    #[test]
    fn relative_state_dir_is_refused() {
        assert_eq!(
            invalid_key(from_toml_str("state_dir = \"var/gantry\"")),
            "state_dir"
        );
    }

    #[test]
    fn simulate_values_are_checked() {
        let with_lib = "[nvml.simulate]\nlibrary = \"/x/libsim.so\"\n";
        assert_eq!(
            invalid_key(from_toml_str(&format!("{with_lib}gpus = 0"))),
            "nvml.simulate.gpus"
        );
        assert_eq!(
            invalid_key(from_toml_str(&format!("{with_lib}model = \"gtx480\""))),
            "nvml.simulate.model"
        );
        let config = from_toml_str(&format!("state_dir = \"/s\"\n{with_lib}gpus = 4")).unwrap();
        let sim = config.nvml.simulate.unwrap();
        assert_eq!(sim.gpus, 4);
        assert_eq!(sim.control_file, Path::new("/s/nvml-sim.json"));
        assert_eq!(config.nvml.library, Path::new("/x/libsim.so"));
    }

    #[test]
    fn buffer_and_uplink_settings_are_checked() {
        assert_eq!(
            invalid_key(from_toml_str("[buffer]\nmax_bytes = \"1KiB\"")),
            "buffer.max_bytes"
        );
        assert_eq!(
            invalid_key(from_toml_str("[buffer]\nmax_bytes = \"lots\"")),
            "buffer.max_bytes"
        );
        assert_eq!(
            invalid_key(from_toml_str("[uplink]\ncontroller = \"ctl\"")),
            "uplink.controller"
        );
        for bad in [
            "controllers = []",
            "controllers = [\"10.0.0.1:7443\", \"ctl\"]",
            "controllers = [\"10.0.0.1:7443\", \"10.0.0.1:7443\"]",
            "controllers = [\"10.0.0.1:7443\", \"[::1]:7443\"]",
            "controller = \"10.0.0.1:7443\"\ncontrollers = [\"10.0.0.2:7443\"]",
        ] {
            assert_eq!(
                invalid_key(from_toml_str(&format!("[uplink]\n{bad}"))),
                "uplink.controllers",
                "{bad}"
            );
        }
        let config =
            from_toml_str("[uplink]\ncontrollers = [\"10.0.0.1:7443\", \"10.0.0.2:7443\"]")
                .unwrap();
        assert_eq!(
            config.uplink.controllers,
            [
                "10.0.0.1:7443".parse().unwrap(),
                "10.0.0.2:7443".parse().unwrap()
            ] as [SocketAddr; 2]
        );
        let config =
            from_toml_str("[buffer]\nmax_bytes = \"1MiB\"\n[uplink]\nmax_backoff = \"2s\"")
                .unwrap();
        assert_eq!(config.buffer.max_bytes, 1 << 20);
        assert_eq!(config.uplink.max_backoff, Duration::from_secs(2));
    }

    #[test]
    fn empty_kernel_log_disables_it() {
        let config = from_toml_str("[xid]\nkernel_log = \"\"").unwrap();
        assert_eq!(config.kernel_log, None);
    }

    #[test]
    fn drop_ins_merge_in_order_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("agent.toml");
        std::fs::write(
            &main,
            "state_dir = \"/a\"\n[telemetry]\ninterval = \"5s\"\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("agent.d")).unwrap();
        std::fs::write(
            dir.path().join("agent.d/10-b.toml"),
            "[telemetry]\ninterval = \"2s\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("agent.d/20-c.toml"),
            "[metrics]\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("agent.d/ignored.txt"), "garbage").unwrap();
        let overrides = Overrides {
            metrics_listen: Some("127.0.0.1:2".to_owned()),
            ..Overrides::default()
        };
        let config = load(Some(&main), &overrides).unwrap();
        assert_eq!(config.state_dir, Path::new("/a"));
        assert_eq!(config.telemetry.interval, Duration::from_secs(2));
        assert_eq!(config.metrics_listen, "127.0.0.1:2".parse().unwrap());
    }

    #[test]
    fn named_config_file_must_exist() {
        let result = load(
            Some(Path::new("/nonexistent/agent.toml")),
            &Overrides::default(),
        );
        assert!(matches!(result, Err(ConfigError::Read { .. })));
    }

    #[test]
    fn syntax_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("agent.toml");
        std::fs::write(&main, "[telemetry\n").unwrap();
        let err = load(Some(&main), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("agent.toml"), "{err}");
    }
}

#[cfg(test)]
mod simulator_agreement {
    /// The configuration's copy of the simulator's limits must match the simulator.
    #[test]
    fn limits_match_the_simulator() {
        assert_eq!(
            super::gantry_nvml_sim_limits::MAX_GPUS,
            gantry_nvml_sim::MAX_GPUS
        );
        assert_eq!(
            super::gantry_nvml_sim_limits::MODELS,
            gantry_nvml_sim::model::model_keys()
        );
        assert_eq!(
            super::gantry_nvml_sim_limits::LIBRARY_FILE_NAME,
            gantry_nvml_sim::LIBRARY_FILE_NAME
        );
    }
}
