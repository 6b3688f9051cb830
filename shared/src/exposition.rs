//! The Prometheus text exposition of telemetry samples, and the metric names it uses:
//! the agent's `/metrics` and the controller's federation endpoint render through it.
//!
//! GPU fields use dcgm-exporter's names, units and labels (`gpu`, `UUID`, `pci_bus_id`,
//! `device`, `modelName`, `Hostname` as released versions spell it, and
//! `DCGM_FI_DRIVER_VERSION`; `GPU_I_PROFILE` and `GPU_I_ID` on MIG instances' series;
//! `err_code` and `err_msg` on `DCGM_FI_DEV_XID_ERRORS`) so dashboards and alerts built
//! for dcgm-exporter work unchanged. A field a GPU does not give is absent, never 0. dcgm-exporter declares its monotonic fields (`*_TOTAL`, energy, retired
//! pages) as counters without the `_total` suffix Prometheus requires of counters; we
//! declare those `untyped`, which keeps the names and values identical and the
//! exposition lint-clean. What dcgm-exporter lacks comes under `gantry_`: a counter per
//! XID code (from 0 for every critical code), GPU liveness, host metrics and the
//! agent's own.
//!
//! Two lint findings cannot be avoided without breaking dashboards: dcgm-exporter's
//! `modelName` label is camelCase, and `DCGM_FI_DEV_PCIE_REPLAY_COUNTER` names a type.
//! `metrics.model_label = "model_name"` makes the page lint-clean for sites that run
//! `promtool check metrics` as a gate (the label becomes `model_name`, the replay
//! count `gantry_gpu_pcie_replays_total`); the default keeps dcgm-exporter's.

use std::fmt::Write as _;

use crate::telemetry::{
    DiskReading, GpuFields, GpuReading, GpuState, MigReading, NetworkReading, Sample,
};

/// Which label carries the GPU's product name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModelLabel {
    /// `modelName`, as dcgm-exporter.
    #[default]
    Dcgm,
    /// `model_name`, passing Prometheus' label-name lint.
    SnakeCase,
}

impl ModelLabel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dcgm => "modelName",
            Self::SnakeCase => "model_name",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Untyped,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
            Self::Untyped => "untyped",
        }
    }
}

/// One dcgm-exporter field: name, type, help, and how to get its value from a reading.
struct GpuFamily {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&GpuFields) -> Option<f64>,
}

const MIB: f64 = 1024.0 * 1024.0;

fn num<T: Into<f64>>(v: Option<T>) -> Option<f64> {
    v.map(Into::into)
}

fn u64_num(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64)
}

fn flag(v: Option<bool>) -> Option<f64> {
    v.map(|v| if v { 1.0 } else { 0.0 })
}

/// dcgm-exporter's GPU fields, in its order.
const GPU_FAMILIES: &[GpuFamily] = &[
    GpuFamily {
        name: "DCGM_FI_DEV_SM_CLOCK",
        kind: Kind::Gauge,
        help: "SM clock frequency (in MHz).",
        value: |f| num(f.sm_clock_mhz),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_MEM_CLOCK",
        kind: Kind::Gauge,
        help: "Memory clock frequency (in MHz).",
        value: |f| num(f.mem_clock_mhz),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_GPU_TEMP",
        kind: Kind::Gauge,
        help: "GPU temperature (in C).",
        value: |f| num(f.temperature_c),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_POWER_USAGE",
        kind: Kind::Gauge,
        help: "Power draw (in W).",
        value: |f| f.power_usage_mw.map(|mw| f64::from(mw) / 1000.0),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_POWER_MGMT_LIMIT",
        kind: Kind::Gauge,
        help: "Power management limit (in W).",
        value: |f| f.power_limit_mw.map(|mw| f64::from(mw) / 1000.0),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_ENFORCED_POWER_LIMIT",
        kind: Kind::Gauge,
        help: "Enforced power limit (in W).",
        value: |f| f.enforced_power_limit_mw.map(|mw| f64::from(mw) / 1000.0),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        kind: Kind::Untyped,
        help: "Total energy consumption since boot (in mJ); monotonic.",
        value: |f| u64_num(f.total_energy_mj),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_GPU_UTIL",
        kind: Kind::Gauge,
        help: "GPU utilization (in %).",
        value: |f| num(f.gpu_util_percent),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_MEM_COPY_UTIL",
        kind: Kind::Gauge,
        help: "Memory utilization (in %).",
        value: |f| num(f.mem_copy_util_percent),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_FB_TOTAL",
        kind: Kind::Gauge,
        help: "Total framebuffer memory (in MiB).",
        value: |f| f.fb_total_bytes.map(|b| (b as f64 / MIB).floor()),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_FB_FREE",
        kind: Kind::Gauge,
        help: "Framebuffer memory free (in MiB).",
        value: |f| f.fb_free_bytes.map(|b| (b as f64 / MIB).floor()),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_FB_USED",
        kind: Kind::Gauge,
        help: "Framebuffer memory used (in MiB).",
        value: |f| f.fb_used_bytes.map(|b| (b as f64 / MIB).floor()),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_FB_RESERVED",
        kind: Kind::Gauge,
        help: "Framebuffer memory reserved (in MiB).",
        value: |f| f.fb_reserved_bytes.map(|b| (b as f64 / MIB).floor()),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        kind: Kind::Gauge,
        help: "Current clock throttle reasons (NVML bitmask).",
        value: |f| u64_num(f.clock_throttle_reasons),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        kind: Kind::Untyped,
        help: "Total number of single-bit volatile ECC errors; monotonic.",
        value: |f| u64_num(f.ecc_sbe_volatile),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        kind: Kind::Untyped,
        help: "Total number of double-bit volatile ECC errors; monotonic.",
        value: |f| u64_num(f.ecc_dbe_volatile),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        kind: Kind::Untyped,
        help: "Total number of single-bit persistent ECC errors; monotonic.",
        value: |f| u64_num(f.ecc_sbe_aggregate),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        kind: Kind::Untyped,
        help: "Total number of double-bit persistent ECC errors; monotonic.",
        value: |f| u64_num(f.ecc_dbe_aggregate),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_RETIRED_SBE",
        kind: Kind::Untyped,
        help: "Total number of retired pages due to single-bit errors; monotonic.",
        value: |f| u64_num(f.retired_pages_sbe),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_RETIRED_DBE",
        kind: Kind::Untyped,
        help: "Total number of retired pages due to double-bit errors; monotonic.",
        value: |f| u64_num(f.retired_pages_dbe),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_RETIRED_PENDING",
        kind: Kind::Gauge,
        help: "Pages pending retirement (1 if any).",
        value: |f| flag(f.retired_pages_pending),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        kind: Kind::Untyped,
        help: "Number of remapped rows for correctable errors; monotonic.",
        value: |f| u64_num(f.remapped_rows_correctable),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        kind: Kind::Untyped,
        help: "Number of remapped rows for uncorrectable errors; monotonic.",
        value: |f| u64_num(f.remapped_rows_uncorrectable),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_ROW_REMAP_PENDING",
        kind: Kind::Gauge,
        help: "Row remapping pending a GPU reset (1 if pending).",
        value: |f| flag(f.row_remap_pending),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        kind: Kind::Gauge,
        help: "Whether remapping of rows has failed (1 if failed).",
        value: |f| flag(f.row_remap_failure),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_PCIE_TX_THROUGHPUT",
        kind: Kind::Gauge,
        help: "PCIe transmit throughput (in KB/s).",
        value: |f| num(f.pcie_tx_kbps),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_PCIE_RX_THROUGHPUT",
        kind: Kind::Gauge,
        help: "PCIe receive throughput (in KB/s).",
        value: |f| num(f.pcie_rx_kbps),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_FAN_SPEED",
        kind: Kind::Gauge,
        help: "Fan speed (in %).",
        value: |f| num(f.fan_speed_percent),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_MEMORY_TEMP",
        kind: Kind::Gauge,
        help: "Memory temperature (in C).",
        value: |f| num(f.memory_temperature_c),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        kind: Kind::Untyped,
        help: "Total number of PCIe retries; monotonic.",
        value: |f| u64_num(f.pcie_replay_total),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_ENC_UTIL",
        kind: Kind::Gauge,
        help: "Encoder utilization (in %).",
        value: |f| num(f.enc_util_percent),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_DEC_UTIL",
        kind: Kind::Gauge,
        help: "Decoder utilization (in %).",
        value: |f| num(f.dec_util_percent),
    },
    GpuFamily {
        name: "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        kind: Kind::Gauge,
        help: "NVLink data throughput over all links, transmit and receive (in MB/s), as DCGM reports it.",
        value: |f| f.nvlink_bandwidth_mbps,
    },
    GpuFamily {
        name: "DCGM_FI_DEV_VGPU_LICENSE_STATUS",
        kind: Kind::Gauge,
        help: "vGPU License status (1 licensed, 0 not).",
        value: |f| num(f.vgpu_license_status),
    },
    GpuFamily {
        name: "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        kind: Kind::Gauge,
        help: "Ratio of time the graphics engine is active.",
        value: |f| f.prof_gr_engine_active,
    },
    GpuFamily {
        name: "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        kind: Kind::Gauge,
        help: "Ratio of cycles the tensor (HMMA) pipe is active.",
        value: |f| f.prof_pipe_tensor_active,
    },
    GpuFamily {
        name: "DCGM_FI_PROF_DRAM_ACTIVE",
        kind: Kind::Gauge,
        help: "Ratio of cycles the device memory interface is active sending or receiving data.",
        value: |f| f.prof_dram_active,
    },
    GpuFamily {
        name: "DCGM_FI_PROF_PCIE_TX_BYTES",
        kind: Kind::Gauge,
        help: "The rate of data transmitted over the PCIe bus, protocol headers included (in bytes/s).",
        value: |f| f.prof_pcie_tx_bytes,
    },
    GpuFamily {
        name: "DCGM_FI_PROF_PCIE_RX_BYTES",
        kind: Kind::Gauge,
        help: "The rate of data received over the PCIe bus, protocol headers included (in bytes/s).",
        value: |f| f.prof_pcie_rx_bytes,
    },
];

/// The name a dcgm-exporter field takes on a lint-clean page (`metrics.model_label =
/// "model_name"`), where dcgm-exporter's own name would fail `promtool check metrics`:
/// `DCGM_FI_DEV_PCIE_REPLAY_COUNTER` names a metric type.
fn lint_clean_name(name: &str) -> Option<(&'static str, Kind)> {
    match name {
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER" => Some(("gantry_gpu_pcie_replays_total", Kind::Counter)),
        _ => None,
    }
}

/// Prometheus text-format writer: families with HELP and TYPE, escaped label values.
/// `extra` labels (the controller's `node`) lead every sample's label set. Made with
/// [`Exposition::collecting`], it keeps each family and sample instead ([`Collected`]),
/// for remote-write and OTLP.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
    extra: Vec<(String, String)>,
    collected: Option<Collected>,
}

/// What a [`Exposition::collecting`] writer kept: each family as declared, and each
/// sample in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected {
    pub families: Vec<Family>,
    pub series: Vec<Series>,
}

/// A family's declaration: its name, type and help text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: String,
}

/// One sample as [`Exposition::collecting`] keeps it: the metric name, its labels
/// (the extra labels first) and the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

fn push_label(out: &mut String, label: &str, text: &str) {
    out.push_str(label);
    out.push_str("=\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Exposition {
    pub fn new(extra: Vec<(String, String)>) -> Self {
        Self {
            out: String::with_capacity(32 * 1024),
            extra,
            collected: None,
        }
    }

    /// A writer that keeps samples as [`Series`] (read them with
    /// [`Exposition::into_series`]) and writes no text.
    pub fn collecting(extra: Vec<(String, String)>) -> Self {
        Self {
            out: String::new(),
            extra,
            collected: Some(Collected::default()),
        }
    }

    pub fn into_string(self) -> String {
        self.out
    }

    /// The samples kept by a [`Exposition::collecting`] writer (empty for a text one).
    pub fn into_series(self) -> Vec<Series> {
        self.into_collected().series
    }

    /// The families and samples kept by a [`Exposition::collecting`] writer.
    pub fn into_collected(self) -> Collected {
        self.collected.unwrap_or_default()
    }

    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        if let Some(collected) = &mut self.collected {
            collected.families.push(Family {
                name: name.to_owned(),
                kind,
                help: help.to_owned(),
            });
            return;
        }
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        if let Some(collected) = &mut self.collected {
            collected.series.push(Series {
                name: name.to_owned(),
                labels: self
                    .extra
                    .iter()
                    .cloned()
                    .chain(
                        labels
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                    )
                    .collect(),
                value,
            });
            return;
        }
        self.out.push_str(name);
        if !labels.is_empty() || !self.extra.is_empty() {
            self.out.push('{');
            let extra = self.extra.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            for (i, (label, text)) in extra.chain(labels.iter().copied()).enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                push_label(&mut self.out, label, text);
            }
            self.out.push('}');
        }
        if value.is_finite() {
            let _ = writeln!(self.out, " {value}");
        } else {
            let _ = writeln!(self.out, " NaN");
        }
    }

    /// A family with a single sample (labelled with the extra labels only).
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The label set of one GPU series, in dcgm-exporter's order: `gpu`, `UUID`,
/// `pci_bus_id`, `device`, `modelName`, for a MIG instance `GPU_I_PROFILE` and
/// `GPU_I_ID`, then `Hostname`, `DCGM_FI_DRIVER_VERSION`, and the XID attributes.
#[derive(Debug, Clone)]
struct GpuLabels(Vec<(&'static str, String)>);

impl GpuLabels {
    fn new(
        gpu: &GpuReading,
        mig: Option<&MigReading>,
        model_label: ModelLabel,
        hostname: &str,
        driver_version: Option<&str>,
    ) -> Self {
        let index = gpu.identity.index.to_string();
        let mut labels = vec![
            ("gpu", index.clone()),
            ("UUID", gpu.identity.uuid.clone()),
            ("pci_bus_id", gpu.identity.pci_bus_id.clone()),
            ("device", format!("nvidia{index}")),
            (model_label.name(), gpu.identity.name.clone()),
        ];
        if let Some(mig) = mig {
            labels.push(("GPU_I_PROFILE", mig.profile.clone()));
            labels.push(("GPU_I_ID", mig.gpu_instance_id.to_string()));
        }
        labels.push(("Hostname", hostname.to_owned()));
        if let Some(version) = driver_version {
            labels.push(("DCGM_FI_DRIVER_VERSION", version.to_owned()));
        }
        Self(labels)
    }

    fn with(&self, extra: &[(&'static str, String)]) -> Self {
        let mut labels = self.0.clone();
        labels.extend_from_slice(extra);
        Self(labels)
    }

    fn as_pairs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// GPU families: dcgm-exporter's fields (GPU-wide and per MIG instance), XIDs, liveness.
pub fn render_gpus(e: &mut Exposition, sample: &Sample, model_label: ModelLabel) {
    let hostname = sample.host.hostname.as_str();
    let driver_version = match &sample.nvml {
        crate::telemetry::NvmlStatus::Available { driver_version, .. } => driver_version.as_deref(),
        crate::telemetry::NvmlStatus::Unavailable { .. } => None,
    };
    let labels: Vec<GpuLabels> = sample
        .gpus
        .iter()
        .map(|gpu| GpuLabels::new(gpu, None, model_label, hostname, driver_version))
        .collect();
    let mig_labels: Vec<Vec<(GpuLabels, &GpuFields)>> = sample
        .gpus
        .iter()
        .map(|gpu| {
            gpu.mig
                .iter()
                .map(|mig| {
                    (
                        GpuLabels::new(gpu, Some(mig), model_label, hostname, driver_version),
                        &mig.fields,
                    )
                })
                .collect()
        })
        .collect();

    for family in GPU_FAMILIES {
        let mut values: Vec<(&GpuLabels, f64)> = Vec::new();
        for ((gpu, labels), instances) in sample.gpus.iter().zip(&labels).zip(&mig_labels) {
            if gpu.state != GpuState::Ok {
                continue;
            }
            if let Some(v) = (family.value)(&gpu.fields) {
                values.push((labels, v));
            }
            for (labels, fields) in instances {
                if let Some(v) = (family.value)(fields) {
                    values.push((labels, v));
                }
            }
        }
        if values.is_empty() {
            continue;
        }
        let (name, kind) = match model_label {
            ModelLabel::SnakeCase => {
                lint_clean_name(family.name).unwrap_or((family.name, family.kind))
            }
            ModelLabel::Dcgm => (family.name, family.kind),
        };
        e.family(name, kind, family.help);
        for (labels, value) in values {
            e.sample(name, &labels.as_pairs(), value);
        }
    }

    if !sample.gpus.is_empty() {
        render_gpu_states(e, sample, &labels);
    }
    if !sample.gpus.is_empty() || sample.xids.iter().any(|x| !x.by_code.is_empty()) {
        render_xid_counters(e, sample);
    }
}

/// The last XID per GPU as dcgm-exporter labels it, and the GPUs' liveness.
fn render_gpu_states(e: &mut Exposition, sample: &Sample, labels: &[GpuLabels]) {
    e.family(
        "DCGM_FI_DEV_XID_ERRORS",
        Kind::Gauge,
        "Value of the last XID error encountered (0 if none).",
    );
    for (gpu, labels) in sample.gpus.iter().zip(labels) {
        let last = sample
            .xids
            .iter()
            .find(|x| x.gpu == Some(gpu.identity.index))
            .map_or(0, |x| x.last);
        let labels = labels.with(&[
            ("err_code", last.to_string()),
            ("err_msg", crate::xid::lookup(last).name.to_owned()),
        ]);
        e.sample("DCGM_FI_DEV_XID_ERRORS", &labels.as_pairs(), last as f64);
    }
    e.family(
        "gantry_gpu_up",
        Kind::Gauge,
        "Whether the GPU could be read in the last sample (1) or not (0).",
    );
    for (gpu, labels) in sample.gpus.iter().zip(labels) {
        let up = if gpu.state == GpuState::Ok { 1.0 } else { 0.0 };
        e.sample("gantry_gpu_up", &labels.as_pairs(), up);
    }
    e.family(
        "gantry_gpu_lost",
        Kind::Gauge,
        "Whether the GPU has fallen off the bus (NVML GPU_IS_LOST).",
    );
    for (gpu, labels) in sample.gpus.iter().zip(labels) {
        let lost = if gpu.state == GpuState::Lost {
            1.0
        } else {
            0.0
        };
        e.sample("gantry_gpu_lost", &labels.as_pairs(), lost);
    }
}

/// Per-code XID counters. Every enumerated GPU has a series from 0 for each critical
/// code, so `increase()` and alerts see the first occurrence; other codes appear when
/// first seen (an XID on a bus id no enumerated GPU has is kept, without `gpu`).
fn render_xid_counters(e: &mut Exposition, sample: &Sample) {
    const NAME: &str = "gantry_gpu_xid_errors_total";
    e.family(
        NAME,
        Kind::Counter,
        "XID errors per GPU and code since the agent started, from NVML events and the kernel log, each event counted once.",
    );
    let hostname = sample.host.hostname.as_str();
    let mut write = |index: &str, uuid: &str, pci: &str, code: u64, count: u64| {
        let code = code.to_string();
        e.sample(
            NAME,
            &[
                ("gpu", index),
                ("UUID", uuid),
                ("pci_bus_id", pci),
                ("Hostname", hostname),
                ("xid", &code),
            ],
            count as f64,
        );
    };
    for gpu in &sample.gpus {
        let counts = sample
            .xids
            .iter()
            .find(|x| x.gpu == Some(gpu.identity.index))
            .map(|x| &x.by_code);
        let mut codes: std::collections::BTreeMap<u64, u64> =
            crate::xid::critical_codes().map(|code| (code, 0)).collect();
        if let Some(counts) = counts {
            codes.extend(counts.iter().map(|(&code, &n)| (code, n)));
        }
        let index = gpu.identity.index.to_string();
        for (code, count) in codes {
            write(
                &index,
                &gpu.identity.uuid,
                &gpu.identity.pci_bus_id,
                code,
                count,
            );
        }
    }
    for xid in &sample.xids {
        let enumerated = xid
            .gpu
            .is_some_and(|index| sample.gpus.iter().any(|g| g.identity.index == index));
        if enumerated {
            continue;
        }
        let index = xid.gpu.map(|i| i.to_string()).unwrap_or_default();
        for (&code, &count) in &xid.by_code {
            write(&index, "", &xid.pci_bus_id, code, count);
        }
    }
}

type DiskValue = fn(&DiskReading) -> u64;
type NetworkValue = fn(&NetworkReading) -> u64;

/// Host families and the state directory's space.
pub fn render_host(e: &mut Exposition, sample: &Sample) {
    let h = &sample.host;
    e.single(
        "gantry_host_cpus",
        Kind::Gauge,
        "Number of logical CPUs.",
        f64::from(h.cpu_count),
    );
    e.single(
        "gantry_host_cpu_usage_ratio",
        Kind::Gauge,
        "Busy share of all CPUs over the last sampling interval (0-1).",
        f64::from(h.cpu_usage_percent) / 100.0,
    );
    e.single(
        "gantry_host_load1",
        Kind::Gauge,
        "1-minute load average.",
        h.load1,
    );
    e.single(
        "gantry_host_load5",
        Kind::Gauge,
        "5-minute load average.",
        h.load5,
    );
    e.single(
        "gantry_host_load15",
        Kind::Gauge,
        "15-minute load average.",
        h.load15,
    );
    e.single(
        "gantry_host_memory_total_bytes",
        Kind::Gauge,
        "Total memory.",
        h.mem_total_bytes as f64,
    );
    e.single(
        "gantry_host_memory_used_bytes",
        Kind::Gauge,
        "Used memory.",
        h.mem_used_bytes as f64,
    );
    e.single(
        "gantry_host_memory_available_bytes",
        Kind::Gauge,
        "Memory available for new work.",
        h.mem_available_bytes as f64,
    );
    e.single(
        "gantry_host_swap_total_bytes",
        Kind::Gauge,
        "Total swap.",
        h.swap_total_bytes as f64,
    );
    e.single(
        "gantry_host_swap_used_bytes",
        Kind::Gauge,
        "Used swap.",
        h.swap_used_bytes as f64,
    );
    e.single(
        "gantry_host_uptime_seconds",
        Kind::Gauge,
        "Time since the host booted.",
        h.uptime_s as f64,
    );

    let disk_families: [(&str, Kind, &str, DiskValue); 4] = [
        (
            "gantry_host_filesystem_size_bytes",
            Kind::Gauge,
            "File system size.",
            |d| d.total_bytes,
        ),
        (
            "gantry_host_filesystem_avail_bytes",
            Kind::Gauge,
            "File system space available to unprivileged users.",
            |d| d.available_bytes,
        ),
        (
            "gantry_host_disk_read_bytes_total",
            Kind::Counter,
            "Bytes read from the file system's device.",
            |d| d.read_bytes_total,
        ),
        (
            "gantry_host_disk_written_bytes_total",
            Kind::Counter,
            "Bytes written to the file system's device.",
            |d| d.written_bytes_total,
        ),
    ];
    if !h.disks.is_empty() {
        for (name, kind, help, value) in disk_families {
            e.family(name, kind, help);
            for d in &h.disks {
                e.sample(
                    name,
                    &[
                        ("device", &d.device),
                        ("mountpoint", &d.mount_point),
                        ("fstype", &d.file_system),
                    ],
                    value(d) as f64,
                );
            }
        }
    }

    let net_families: [(&str, &str, NetworkValue); 6] = [
        (
            "gantry_host_network_receive_bytes_total",
            "Bytes received.",
            |n| n.rx_bytes_total,
        ),
        (
            "gantry_host_network_transmit_bytes_total",
            "Bytes transmitted.",
            |n| n.tx_bytes_total,
        ),
        (
            "gantry_host_network_receive_packets_total",
            "Packets received.",
            |n| n.rx_packets_total,
        ),
        (
            "gantry_host_network_transmit_packets_total",
            "Packets transmitted.",
            |n| n.tx_packets_total,
        ),
        (
            "gantry_host_network_receive_errors_total",
            "Receive errors.",
            |n| n.rx_errors_total,
        ),
        (
            "gantry_host_network_transmit_errors_total",
            "Transmit errors.",
            |n| n.tx_errors_total,
        ),
    ];
    if !h.networks.is_empty() {
        for (name, help, value) in net_families {
            e.family(name, Kind::Counter, help);
            for n in &h.networks {
                e.sample(name, &[("interface", &n.interface)], value(n) as f64);
            }
        }
    }

    if let Some(state) = &h.state_dir {
        e.family(
            "gantry_agent_state_dir_free_bytes",
            Kind::Gauge,
            "Free space on the file system of the agent's state directory.",
        );
        e.sample(
            "gantry_agent_state_dir_free_bytes",
            &[("path", &state.path)],
            state.free_bytes as f64,
        );
        e.family(
            "gantry_agent_state_dir_size_bytes",
            Kind::Gauge,
            "Size of the file system of the agent's state directory.",
        );
        e.sample(
            "gantry_agent_state_dir_size_bytes",
            &[("path", &state.path)],
            state.total_bytes as f64,
        );
    }
}

/// Merges several expositions into one, keeping each family's samples together (the
/// text format allows a family's HELP and TYPE only once): the controller renders one
/// page per node and serves them merged.
pub fn merge(pages: &[String]) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: std::collections::HashMap<&str, (Vec<&str>, Vec<&str>)> =
        std::collections::HashMap::new();
    for page in pages {
        let mut current = "";
        for line in page.lines() {
            if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                current = rest.split(' ').next().unwrap_or("");
                let entry = families.entry(current).or_insert_with(|| {
                    order.push(current);
                    (Vec::new(), Vec::new())
                });
                if entry.0.len() < 2 && !entry.0.contains(&line) {
                    entry.0.push(line);
                }
            } else if !line.is_empty() {
                families
                    .entry(current)
                    .or_insert_with(|| {
                        order.push(current);
                        (Vec::new(), Vec::new())
                    })
                    .1
                    .push(line);
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let (header, samples) = &families[name];
        for line in header.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.sample("m", &[("a", "x\"y\\z\nw")], 1.5);
        assert_eq!(e.into_string(), "m{a=\"x\\\"y\\\\z\\nw\"} 1.5\n");
    }

    #[test]
    fn extra_labels_lead() {
        let mut e = Exposition::new(vec![("node".into(), "n1".into())]);
        e.sample("m", &[("gpu", "0")], 1.0);
        e.single("s", Kind::Gauge, "help", 2.0);
        assert_eq!(
            e.into_string(),
            "m{node=\"n1\",gpu=\"0\"} 1\n# HELP s help\n# TYPE s gauge\ns{node=\"n1\"} 2\n"
        );
    }

    #[test]
    fn non_finite_values_render_as_nan() {
        let mut e = Exposition::default();
        e.sample("m", &[], f64::INFINITY);
        assert_eq!(e.into_string(), "m NaN\n");
    }

    #[test]
    fn a_collecting_writer_keeps_exactly_the_families_and_samples_the_text_shows() {
        let extra = || vec![("node".to_owned(), "n\"1".to_owned())];
        let mut text = Exposition::new(extra());
        let mut collected = Exposition::collecting(extra());
        for e in [&mut text, &mut collected] {
            e.family("a_total", Kind::Counter, "A.");
            e.sample("a_total", &[("gpu", "0")], 1.5);
            e.single("b", Kind::Gauge, "B.", 2.0);
        }
        let page = text.into_string();
        let Collected { families, series } = collected.into_collected();
        assert_eq!(
            families,
            [
                Family {
                    name: "a_total".into(),
                    kind: Kind::Counter,
                    help: "A.".into()
                },
                Family {
                    name: "b".into(),
                    kind: Kind::Gauge,
                    help: "B.".into()
                }
            ]
        );
        let lines: Vec<&str> = page.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [r#"a_total{node="n\"1",gpu="0"} 1.5"#, r#"b{node="n\"1"} 2"#]
        );
        assert_eq!(
            series,
            [
                Series {
                    name: "a_total".into(),
                    labels: vec![("node".into(), "n\"1".into()), ("gpu".into(), "0".into())],
                    value: 1.5
                },
                Series {
                    name: "b".into(),
                    labels: vec![("node".into(), "n\"1".into())],
                    value: 2.0
                }
            ]
        );
    }

    #[test]
    fn family_names_are_unique() {
        let mut names: Vec<_> = GPU_FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), GPU_FAMILIES.len());
    }

    #[test]
    fn merged_pages_keep_families_together() {
        let a = "# HELP x h\n# TYPE x gauge\nx{node=\"a\"} 1\n# HELP y h\n# TYPE y gauge\ny{node=\"a\"} 2\n".to_owned();
        let b = "# HELP x h\n# TYPE x gauge\nx{node=\"b\"} 3\n".to_owned();
        assert_eq!(
            merge(&[a, b]),
            "# HELP x h\n# TYPE x gauge\nx{node=\"a\"} 1\nx{node=\"b\"} 3\n# HELP y h\n# TYPE y gauge\ny{node=\"a\"} 2\n"
        );
    }
}
