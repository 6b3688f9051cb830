//! Telemetry samples: what one node reports about its GPUs and host at one instant.
//!
//! A [`Sample`] is produced by the agent's sampler, rendered on the agent's `/metrics`
//! endpoint and shown by `gantry-agent status`; it is also the unit the agent buffers
//! and ships to the controller.
//!
//! Invariants of the format:
//! - A field a GPU does not support is `None` and is *absent* from the serialized form,
//!   never `0`: "not measured" and "measured zero" stay distinguishable.
//! - Counters (`*_total`, ECC counts, XID counts, energy) are monotonic for the life of
//!   the source that produced them (the GPU for NVML counters, the agent process for XID
//!   counts).
//! - Unknown fields are ignored when reading, so older readers accept newer samples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything one node reported at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Wall-clock time the sample was taken, in milliseconds since the Unix epoch.
    pub taken_at_ms: u64,
    /// Whether GPU telemetry was available for this sample, and why not.
    pub nvml: NvmlStatus,
    /// One reading per GPU NVML enumerated, in NVML index order.
    #[serde(default)]
    pub gpus: Vec<GpuReading>,
    /// XID error counts per GPU, from NVML events and the kernel log together.
    #[serde(default)]
    pub xids: Vec<XidCounts>,
    /// Host-wide metrics.
    pub host: HostReading,
}

/// Whether NVML could be used for a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NvmlStatus {
    /// NVML initialised; GPU readings are present.
    Available {
        /// Driver version NVML reported, where it did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        driver_version: Option<String>,
        /// The NVML library that was loaded.
        library: String,
    },
    /// NVML could not be used: no driver, no library, or initialisation failed.
    Unavailable {
        /// Human-readable reason, including the library that was tried.
        reason: String,
    },
}

impl NvmlStatus {
    /// Whether GPU readings can be expected.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available { .. })
    }
}

/// Stable identity of one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuIdentity {
    /// NVML index (the `gpu` label of dcgm-exporter).
    pub index: u32,
    /// GPU UUID, `GPU-…`; empty when it could never be read.
    pub uuid: String,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// PCI bus id in NVML's form, `00000000:3B:00.0`.
    pub pci_bus_id: String,
}

/// One GPU's state and readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuReading {
    #[serde(flatten)]
    pub identity: GpuIdentity,
    pub state: GpuState,
    #[serde(default)]
    pub fields: GpuFields,
    /// MIG instances, when the GPU is in MIG mode: per-instance memory and profiling
    /// fields (the GPU-level fields above stay).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mig: Vec<MigReading>,
}

/// One MIG GPU instance of a GPU in MIG mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigReading {
    /// NVML's GPU instance id (dcgm-exporter's `GPU_I_ID`).
    pub gpu_instance_id: u32,
    /// Profile name, e.g. `1g.10gb` (dcgm-exporter's `GPU_I_PROFILE`).
    pub profile: String,
    /// The instance's fields that NVML gives per instance: memory, profiling.
    #[serde(default)]
    pub fields: GpuFields,
}

/// Whether a GPU could be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GpuState {
    /// Readings were taken (fields the GPU does not support are absent).
    Ok,
    /// The GPU has fallen off the bus or is otherwise inaccessible (NVML `GPU_IS_LOST`).
    Lost,
    /// The GPU could not be read for another reason.
    Error { message: String },
}

/// Per-GPU readings. Every field is optional: `None` means the GPU does not support it
/// or it could not be read for this sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GpuFields {
    /// Percent of time over the past sample period during which a kernel was running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_util_percent: Option<u32>,
    /// Percent of time over the past sample period during which memory was read or written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_copy_util_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fb_total_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fb_used_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fb_free_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fb_reserved_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_usage_mw: Option<u32>,
    /// Power management limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_limit_mw: Option<u32>,
    /// Limit actually enforced (the lowest of all limiters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforced_power_limit_mw: Option<u32>,
    /// Energy consumed since the driver was last loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_energy_mj: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm_clock_mhz: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_clock_mhz: Option<u32>,
    /// NVML `nvmlClocksThrottleReason*` bitmask; see [`throttle_reason_names`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock_throttle_reasons: Option<u64>,
    /// Corrected (single-bit) ECC errors since the last driver reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecc_sbe_volatile: Option<u64>,
    /// Uncorrected (double-bit) ECC errors since the last driver reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecc_dbe_volatile: Option<u64>,
    /// Corrected ECC errors over the GPU's lifetime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecc_sbe_aggregate: Option<u64>,
    /// Uncorrected ECC errors over the GPU's lifetime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ecc_dbe_aggregate: Option<u64>,
    /// Pages retired for multiple single-bit errors (pre-Ampere page retirement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_pages_sbe: Option<u64>,
    /// Pages retired for a double-bit error (pre-Ampere page retirement).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_pages_dbe: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_pages_pending: Option<bool>,
    /// Rows remapped for correctable errors (Ampere and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remapped_rows_correctable: Option<u64>,
    /// Rows remapped for uncorrectable errors (Ampere and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remapped_rows_uncorrectable: Option<u64>,
    /// A remapping is pending and takes effect after a GPU reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_remap_pending: Option<bool>,
    /// A remapping failed: the GPU needs service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_remap_failure: Option<bool>,
    /// `PCIe` transmit throughput over a 20 ms window, KB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcie_tx_kbps: Option<u32>,
    /// `PCIe` receive throughput over a 20 ms window, KB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcie_rx_kbps: Option<u32>,
    /// Intended speed of the first fan, percent of maximum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_speed_percent: Option<u32>,
    /// HBM temperature (NVML field `MEMORY_TEMP`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_temperature_c: Option<u32>,
    /// `PCIe` replays (link-level retries) since the driver was loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcie_replay_total: Option<u64>,
    /// Video encoder utilisation, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enc_util_percent: Option<u32>,
    /// Video decoder utilisation, percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dec_util_percent: Option<u32>,
    /// NVLink data throughput, transmit and receive over all links, MB/s, over the last
    /// sampling interval (what DCGM reports as `NVLINK_BANDWIDTH_TOTAL`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvlink_bandwidth_mbps: Option<f64>,
    /// vGPU license state of a vGPU guest: 1 licensed, 0 not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vgpu_license_status: Option<u32>,
    /// Share of time the graphics engine was active (0-1), from GPM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prof_gr_engine_active: Option<f64>,
    /// Share of cycles any tensor pipe was active (0-1), from GPM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prof_pipe_tensor_active: Option<f64>,
    /// Share of cycles the memory interface was busy (0-1), from GPM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prof_dram_active: Option<f64>,
    /// `PCIe` transmit rate including protocol headers, bytes/s, from GPM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prof_pcie_tx_bytes: Option<f64>,
    /// `PCIe` receive rate including protocol headers, bytes/s, from GPM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prof_pcie_rx_bytes: Option<f64>,
}

/// A field a GPU does not give, and why: `gantry-agent status` lists these once per
/// GPU and field, so an empty dashboard panel has an explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbsentField {
    pub gpu: u32,
    /// The field's dcgm-exporter name, e.g. `DCGM_FI_PROF_PIPE_TENSOR_ACTIVE`.
    pub field: String,
    pub reason: String,
}

/// Absent fields grouped by (field, reason), with the GPUs each applies to: how `status`
/// and the agent's log say it once per field.
pub fn group_absent(absent: &[AbsentField]) -> BTreeMap<(&str, &str), Vec<u32>> {
    let mut grouped: BTreeMap<(&str, &str), Vec<u32>> = BTreeMap::new();
    for a in absent {
        grouped
            .entry((a.field.as_str(), a.reason.as_str()))
            .or_default()
            .push(a.gpu);
    }
    grouped
}

/// XID error counts for one GPU, keyed by its PCI bus id (the one identifier both
/// NVML events and kernel log lines carry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidCounts {
    /// PCI bus id in NVML's form, `00000000:3B:00.0`.
    pub pci_bus_id: String,
    /// NVML index of the GPU, where the bus id matches an enumerated GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// The most recent XID code seen on this GPU.
    pub last: u64,
    /// Events seen per XID code since the agent started.
    pub by_code: BTreeMap<u64, u64>,
}

/// Host-wide readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostReading {
    pub hostname: String,
    pub uptime_s: u64,
    pub cpu_count: u32,
    /// Busy share of all CPUs since the previous sample, percent.
    pub cpu_usage_percent: f32,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
    pub mem_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub disks: Vec<DiskReading>,
    pub networks: Vec<NetworkReading>,
    /// The agent's state directory: where buffers and bundles live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<StateDirReading>,
}

/// One mounted file system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskReading {
    pub device: String,
    pub mount_point: String,
    pub file_system: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub read_bytes_total: u64,
    pub written_bytes_total: u64,
}

/// One network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkReading {
    pub interface: String,
    pub rx_bytes_total: u64,
    pub tx_bytes_total: u64,
    pub rx_packets_total: u64,
    pub tx_packets_total: u64,
    pub rx_errors_total: u64,
    pub tx_errors_total: u64,
}

/// Space on the file system holding the agent's state directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StateDirReading {
    pub path: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// A health event the agent records (buffer class `event`): kept longest when the buffer
/// is full, and shipped to the controller like samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// New XID errors on a GPU since the previous sample.
    Xid {
        pci_bus_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu: Option<u32>,
        code: u64,
        /// Events of this code since the previous sample.
        count: u64,
    },
    /// A GPU changed state (lost, recovered, unreadable).
    GpuState {
        gpu: u32,
        uuid: String,
        state: GpuState,
    },
    /// NVML became available or unavailable.
    Nvml { available: bool },
    /// The node's journal: a bundle became active (verified against the node's policy,
    /// golden vectors passed), by delivery, local import or rollback.
    /// `model` names the model it serves (empty from nodes that serve one model).
    BundleActivated {
        bundle: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        model: String,
    },
    /// The node's journal: an assigned bundle was refused, and why.
    BundleRefused { bundle: String, reason: String },
    /// A served model's drift window closed: its profile and scores.
    ModelWindow(Box<crate::monitoring::ModelWindow>),
    /// A served model's feedback window closed: what became of the feedback, and the
    /// joined rows per version.
    ModelQuality(Box<crate::monitoring::quality::QualityWindow>),
    /// A sampled request to a served model and its answer (payload capture).
    Capture(Box<crate::monitoring::capture::CapturedPair>),
}

/// NVML clock throttle reason bits and their names, as `nvml.h` defines them.
pub const THROTTLE_REASONS: &[(u64, &str)] = &[
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// Throttle reasons that mean the GPU is too hot.
pub const THERMAL_THROTTLE_MASK: u64 = 0x20 | 0x40;

/// Names of the reasons set in an NVML throttle-reason bitmask; unknown bits are named
/// by their hexadecimal value so nothing is hidden.
pub fn throttle_reason_names(bits: u64) -> Vec<String> {
    let mut names = Vec::new();
    let mut known = 0;
    for &(bit, name) in THROTTLE_REASONS {
        known |= bit;
        if bits & bit != 0 {
            names.push(name.to_owned());
        }
    }
    let unknown = bits & !known;
    if unknown != 0 {
        names.push(format!("{unknown:#x}"));
    }
    names
}

/// Parses a PCI bus id as NVML (`00000000:3B:00.0`) or the kernel log (`0000:3b:00`)
/// writes it, into (domain, bus, device). The function number is ignored: XIDs are
/// reported per GPU, not per PCI function.
pub fn parse_pci_bus_id(text: &str) -> Option<(u32, u8, u8)> {
    let mut parts = text.trim().split(':');
    let domain = u32::from_str_radix(parts.next()?, 16).ok()?;
    let bus = u8::from_str_radix(parts.next()?, 16).ok()?;
    let device_and_function = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let device = device_and_function
        .split_once('.')
        .map_or(device_and_function, |(device, _)| device);
    let device = u8::from_str_radix(device, 16).ok()?;
    Some((domain, bus, device))
}

/// Formats a PCI address in NVML's canonical form, `00000000:3B:00.0`.
pub fn format_pci_bus_id((domain, bus, device): (u32, u8, u8)) -> String {
    format!("{domain:08X}:{bus:02X}:{device:02X}.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_fields_are_absent_not_zero() {
        let fields = GpuFields {
            temperature_c: Some(0),
            ..GpuFields::default()
        };
        let json = serde_json::to_value(&fields).unwrap();
        assert_eq!(json, serde_json::json!({ "temperature_c": 0 }));
    }

    #[test]
    fn reading_tolerates_unknown_fields() {
        let json = r#"{"index":0,"uuid":"GPU-1","name":"x","pci_bus_id":"00000000:01:00.0",
            "state":{"state":"ok"},"fields":{"gpu_util_percent":3,"from_the_future":1},"extra":true}"#;
        let reading: GpuReading = serde_json::from_str(json).unwrap();
        assert_eq!(reading.fields.gpu_util_percent, Some(3));
        assert_eq!(reading.state, GpuState::Ok);
    }

    #[test]
    fn throttle_reasons_are_named_and_unknown_bits_kept() {
        assert_eq!(
            throttle_reason_names(0x40 | 0x20 | 0x1000),
            vec!["sw_thermal_slowdown", "hw_thermal_slowdown", "0x1000"]
        );
        assert!(throttle_reason_names(0).is_empty());
    }

    #[test]
    fn pci_bus_ids_from_nvml_and_kernel_log_agree() {
        let nvml = parse_pci_bus_id("00000000:3B:00.0").unwrap();
        let kernel = parse_pci_bus_id("0000:3b:00").unwrap();
        assert_eq!(nvml, kernel);
        assert_eq!(format_pci_bus_id(kernel), "00000000:3B:00.0");
        assert_eq!(parse_pci_bus_id("garbage"), None);
        assert_eq!(parse_pci_bus_id("0000:3b:00:00:00"), None);
        assert_eq!(parse_pci_bus_id("0000:zz:00"), None);
    }
}
