//! GPU models the simulator can pretend to be, with the values that shape their readings.

/// Static description of a GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuModel {
    /// Short name used in configuration (`h100`).
    pub key: &'static str,
    /// Product name NVML reports.
    pub name: &'static str,
    pub memory_mib: u64,
    pub tdp_w: u32,
    pub idle_w: u32,
    pub max_sm_clock_mhz: u32,
    pub mem_clock_mhz: u32,
    /// Number of fans; 0 for passively cooled boards (fan queries are not supported).
    pub fans: u32,
    /// Pre-Ampere page retirement is supported.
    pub page_retirement: bool,
    /// Ampere-and-later row remapping is supported.
    pub row_remapping: bool,
    /// PCI device id as NVML reports it (device << 16 | vendor).
    pub pci_device_id: u32,
    /// GPU Performance Monitoring (Hopper and later): the profiling fields.
    pub gpm: bool,
    /// NVLink links (SXM boards); 0 for `PCIe` cards.
    pub nvlinks: u32,
    /// Has video encoders (NVENC); the data-centre compute parts have none.
    pub encoder: bool,
    /// Reports memory (HBM) temperature.
    pub memory_temperature: bool,
    /// Can be partitioned into MIG instances.
    pub mig: bool,
}

/// Every model the simulator knows.
pub const MODELS: &[GpuModel] = &[
    GpuModel {
        key: "h100",
        name: "NVIDIA H100 80GB HBM3",
        memory_mib: 81_559,
        tdp_w: 700,
        idle_w: 70,
        max_sm_clock_mhz: 1980,
        mem_clock_mhz: 2619,
        fans: 0,
        page_retirement: false,
        row_remapping: true,
        pci_device_id: 0x2330_10DE,
        gpm: true,
        nvlinks: 18,
        encoder: false,
        memory_temperature: true,
        mig: true,
    },
    GpuModel {
        key: "h200",
        name: "NVIDIA H200",
        memory_mib: 143_771,
        tdp_w: 700,
        idle_w: 75,
        max_sm_clock_mhz: 1980,
        mem_clock_mhz: 3201,
        fans: 0,
        page_retirement: false,
        row_remapping: true,
        pci_device_id: 0x2335_10DE,
        gpm: true,
        nvlinks: 18,
        encoder: false,
        memory_temperature: true,
        mig: true,
    },
    GpuModel {
        key: "a100",
        name: "NVIDIA A100-SXM4-80GB",
        memory_mib: 81_920,
        tdp_w: 400,
        idle_w: 55,
        max_sm_clock_mhz: 1410,
        mem_clock_mhz: 1593,
        fans: 0,
        page_retirement: false,
        row_remapping: true,
        pci_device_id: 0x20B2_10DE,
        gpm: false,
        nvlinks: 12,
        encoder: false,
        memory_temperature: true,
        mig: true,
    },
    GpuModel {
        key: "l40s",
        name: "NVIDIA L40S",
        memory_mib: 46_068,
        tdp_w: 350,
        idle_w: 35,
        max_sm_clock_mhz: 2520,
        mem_clock_mhz: 9001,
        fans: 1,
        page_retirement: false,
        row_remapping: true,
        pci_device_id: 0x26B9_10DE,
        gpm: false,
        nvlinks: 0,
        encoder: true,
        memory_temperature: false,
        mig: false,
    },
    GpuModel {
        key: "v100",
        name: "Tesla V100-SXM2-32GB",
        memory_mib: 32_768,
        tdp_w: 300,
        idle_w: 40,
        max_sm_clock_mhz: 1530,
        mem_clock_mhz: 877,
        fans: 0,
        page_retirement: true,
        row_remapping: false,
        pci_device_id: 0x1DB5_10DE,
        gpm: false,
        nvlinks: 6,
        encoder: true,
        memory_temperature: true,
        mig: false,
    },
];

/// Looks a model up by its short name, case-insensitively.
pub fn find(key: &str) -> Option<&'static GpuModel> {
    MODELS
        .iter()
        .find(|m| m.key.eq_ignore_ascii_case(key.trim()))
}

/// Names of all models, for error messages.
pub fn model_keys() -> Vec<&'static str> {
    MODELS.iter().map(|m| m.key).collect()
}

/// PCI bus numbers of an 8-GPU HGX baseboard; further GPUs continue from 0xE0.
const HGX_BUSES: [u8; 8] = [0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB];

/// PCI bus number of simulated GPU `index`.
pub fn pci_bus(index: u32) -> u8 {
    HGX_BUSES
        .get(index as usize)
        .copied()
        .unwrap_or_else(|| 0xE0u8.wrapping_add((index - 8) as u8))
}

/// Deterministic UUID of simulated GPU `index` of `model`.
pub fn uuid(model: &GpuModel, index: u32) -> String {
    let model_no = MODELS.iter().position(|m| m == model).unwrap_or(0);
    format!("GPU-5177a7ed-{model_no:04x}-4000-8000-{index:012x}")
}

/// Memory of a MIG profile named like `3g.40gb`, in MiB; `None` when the name does not
/// have that shape.
pub fn mig_profile_memory_mib(profile: &str) -> Option<u64> {
    let (slices, memory) = profile.split_once('.')?;
    slices.strip_suffix('g')?.parse::<u32>().ok()?;
    let gb: u64 = memory.strip_suffix("gb")?.parse().ok()?;
    Some(gb * 1024)
}

/// Compute slices of a MIG profile (`3g.40gb` → 3).
pub fn mig_profile_slices(profile: &str) -> Option<u32> {
    profile.split_once('.')?.0.strip_suffix('g')?.parse().ok()
}
