//! GPU readings through NVML (`nvml-wrapper`).
//!
//! One [`GpuSet`] lives on the sampler thread for as long as NVML is initialised. It
//! remembers, per GPU, which fields the GPU does not support, so those are neither asked
//! again nor reported (as `0` or otherwise). A GPU that answers `GPU_IS_LOST` is reported
//! as lost, with the identity it had, while the others keep reporting; it is probed once
//! per sample and reported again when it answers.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_shared::telemetry::{
    AbsentField, GpuFields, GpuIdentity, GpuReading, GpuState, parse_pci_bus_id,
};
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, Nvml};

use super::xid::PciAddress;

mod extended;

/// A field read from NVML, named for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Utilization,
    Memory,
    Temperature,
    Power,
    PowerLimit,
    EnforcedPowerLimit,
    Energy,
    SmClock,
    MemClock,
    ThrottleReasons,
    EccSbeVolatile,
    EccDbeVolatile,
    EccSbeAggregate,
    EccDbeAggregate,
    RetiredPagesSbe,
    RetiredPagesDbe,
    RetiredPagesPending,
    RemappedRows,
    PcieTx,
    PcieRx,
    FanSpeed,
    MemoryTemperature,
    PcieReplay,
    EncoderUtil,
    DecoderUtil,
    NvLink,
    VgpuLicense,
    /// GPU Performance Monitoring: the profiling fields.
    Gpm,
    Mig,
}

impl Field {
    /// The dcgm-exporter fields this NVML read feeds.
    fn dcgm_names(self) -> &'static [&'static str] {
        match self {
            Self::Utilization => &["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL"],
            Self::Memory => &[
                "DCGM_FI_DEV_FB_TOTAL",
                "DCGM_FI_DEV_FB_FREE",
                "DCGM_FI_DEV_FB_USED",
                "DCGM_FI_DEV_FB_RESERVED",
            ],
            Self::Temperature => &["DCGM_FI_DEV_GPU_TEMP"],
            Self::Power => &["DCGM_FI_DEV_POWER_USAGE"],
            Self::PowerLimit => &["DCGM_FI_DEV_POWER_MGMT_LIMIT"],
            Self::EnforcedPowerLimit => &["DCGM_FI_DEV_ENFORCED_POWER_LIMIT"],
            Self::Energy => &["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"],
            Self::SmClock => &["DCGM_FI_DEV_SM_CLOCK"],
            Self::MemClock => &["DCGM_FI_DEV_MEM_CLOCK"],
            Self::ThrottleReasons => &["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"],
            Self::EccSbeVolatile => &["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"],
            Self::EccDbeVolatile => &["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"],
            Self::EccSbeAggregate => &["DCGM_FI_DEV_ECC_SBE_AGG_TOTAL"],
            Self::EccDbeAggregate => &["DCGM_FI_DEV_ECC_DBE_AGG_TOTAL"],
            Self::RetiredPagesSbe => &["DCGM_FI_DEV_RETIRED_SBE"],
            Self::RetiredPagesDbe => &["DCGM_FI_DEV_RETIRED_DBE"],
            Self::RetiredPagesPending => &["DCGM_FI_DEV_RETIRED_PENDING"],
            Self::RemappedRows => &[
                "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
                "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
                "DCGM_FI_DEV_ROW_REMAP_PENDING",
                "DCGM_FI_DEV_ROW_REMAP_FAILURE",
            ],
            Self::PcieTx => &["DCGM_FI_DEV_PCIE_TX_THROUGHPUT"],
            Self::PcieRx => &["DCGM_FI_DEV_PCIE_RX_THROUGHPUT"],
            Self::FanSpeed => &["DCGM_FI_DEV_FAN_SPEED"],
            Self::MemoryTemperature => &["DCGM_FI_DEV_MEMORY_TEMP"],
            Self::PcieReplay => &["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"],
            Self::EncoderUtil => &["DCGM_FI_DEV_ENC_UTIL"],
            Self::DecoderUtil => &["DCGM_FI_DEV_DEC_UTIL"],
            Self::NvLink => &["DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL"],
            Self::VgpuLicense => &["DCGM_FI_DEV_VGPU_LICENSE_STATUS"],
            Self::Gpm => &[
                "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
                "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
                "DCGM_FI_PROF_DRAM_ACTIVE",
                "DCGM_FI_PROF_PCIE_TX_BYTES",
                "DCGM_FI_PROF_PCIE_RX_BYTES",
            ],
            Self::Mig => &["MIG instances (GPU_I_ID, GPU_I_PROFILE)"],
        }
    }
}

/// The GPU fell off the bus while being read.
struct Lost;

#[derive(Debug)]
struct Gpu<'n> {
    device: Option<Device<'n>>,
    identity: GpuIdentity,
    pci: Option<PciAddress>,
    /// Fields this GPU does not give, with NVML's or our reason.
    unsupported: BTreeMap<Field, String>,
    state: GpuState,
    /// Counters kept between samples for rates, GPM samples and MIG instances.
    extended: extended::Extended<'n>,
}

/// Outcome of waiting for an NVML event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventWait {
    /// An XID on the GPU at this PCI address.
    Xid(PciAddress, u64),
    /// Nothing arrived in time.
    Timeout,
    /// Events cannot be waited for (not registered, or NVML failed); the caller sleeps.
    Unavailable,
}

/// The GPUs NVML enumerated, and the XID event set registered on them.
pub struct GpuSet<'n> {
    nvml: &'n Nvml,
    gpus: Vec<Gpu<'n>>,
    events: Option<EventSet<'n>>,
}

impl std::fmt::Debug for GpuSet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSet")
            .field("gpus", &self.gpus)
            .field("events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

impl<'n> GpuSet<'n> {
    /// Enumerates the GPUs and registers for their XID events.
    pub fn open(nvml: &'n Nvml) -> Result<Self, NvmlError> {
        let count = nvml.device_count()?;
        let gpus = (0..count).map(|index| Gpu::open(nvml, index)).collect();
        let mut set = Self {
            nvml,
            gpus,
            events: None,
        };
        set.register_events();
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.gpus.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gpus.is_empty()
    }

    fn register_events(&mut self) {
        let devices: Vec<(u32, &Device<'n>)> = self
            .gpus
            .iter()
            .filter_map(|gpu| gpu.device.as_ref().map(|d| (gpu.identity.index, d)))
            .collect();
        let mut registered: Vec<&Device<'n>> = Vec::new();
        let mut set = match self.nvml.create_event_set() {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create an NVML event set; XIDs come from the kernel log only");
                return;
            }
        };
        for (index, device) in devices {
            match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(kept) => {
                    set = kept;
                    registered.push(device);
                }
                Err(e) => {
                    // NVML frees the set on failure: start a new one with the GPUs so far.
                    tracing::debug!(gpu = index, error = %e.error, "GPU does not deliver XID events through NVML");
                    let Some(fresh) = self.rebuild_event_set(&registered) else {
                        return;
                    };
                    set = fresh;
                }
            }
        }
        self.events = Some(set);
    }

    fn rebuild_event_set(&self, devices: &[&Device<'n>]) -> Option<EventSet<'n>> {
        let mut set = self.nvml.create_event_set().ok()?;
        for device in devices {
            set = match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(set) => set,
                Err(e) => {
                    tracing::warn!(error = %e.error, "re-registering XID events failed; XIDs come from the kernel log only");
                    return None;
                }
            };
        }
        Some(set)
    }

    /// How many (GPU, field) pairs are known unsupported: it only grows while the set
    /// lives, so a change says [`Self::absent_fields`] changed.
    pub fn absent_count(&self) -> usize {
        self.gpus.iter().map(|gpu| gpu.unsupported.len()).sum()
    }

    /// Fields the GPUs do not give, and why, in GPU order.
    pub fn absent_fields(&self) -> Vec<AbsentField> {
        let mut absent = Vec::new();
        for gpu in &self.gpus {
            for (field, reason) in &gpu.unsupported {
                for name in field.dcgm_names() {
                    absent.push(AbsentField {
                        gpu: gpu.identity.index,
                        field: (*name).to_owned(),
                        reason: reason.clone(),
                    });
                }
            }
        }
        absent
    }

    /// Reads every GPU. One GPU failing never stops the others.
    pub fn sample(&mut self) -> Vec<GpuReading> {
        self.gpus
            .iter_mut()
            .map(|gpu| gpu.sample(self.nvml))
            .collect()
    }

    /// Waits up to `timeout` for the next XID event.
    pub fn wait_event(&self, timeout: Duration) -> EventWait {
        let Some(events) = &self.events else {
            return EventWait::Unavailable;
        };
        let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        match events.wait(timeout_ms) {
            Ok(event) => {
                let code = match event.event_data {
                    Some(XidError::Value(code)) => code,
                    Some(XidError::Unknown) | None => return EventWait::Timeout,
                };
                if let Some(pci) = self.pci_of(&event.device) {
                    EventWait::Xid(pci, code)
                } else {
                    tracing::debug!(xid = code, "XID event for a GPU that was not enumerated");
                    EventWait::Timeout
                }
            }
            Err(NvmlError::Timeout) => EventWait::Timeout,
            Err(e) => {
                tracing::debug!(error = %e, "waiting for NVML events failed");
                EventWait::Unavailable
            }
        }
    }

    /// PCI address of the GPU an event names, matched by handle.
    fn pci_of(&self, device: &Device<'_>) -> Option<PciAddress> {
        let handle = raw::handle(device);
        self.gpus
            .iter()
            .find(|gpu| {
                gpu.device
                    .as_ref()
                    .is_some_and(|d| raw::handle(d) == handle)
            })
            .and_then(|gpu| gpu.pci)
    }

    /// NVML index of the GPU at a PCI address.
    pub fn index_of(&self, pci: PciAddress) -> Option<u32> {
        self.gpus
            .iter()
            .find(|gpu| gpu.pci == Some(pci))
            .map(|gpu| gpu.identity.index)
    }
}

impl<'n> Gpu<'n> {
    fn open(nvml: &'n Nvml, index: u32) -> Self {
        let mut gpu = Self {
            device: None,
            identity: GpuIdentity {
                index,
                uuid: String::new(),
                name: String::new(),
                pci_bus_id: String::new(),
            },
            pci: None,
            unsupported: BTreeMap::new(),
            state: GpuState::Ok,
            extended: extended::Extended::default(),
        };
        gpu.connect(nvml);
        gpu
    }

    /// Gets the device handle and identity; records why when it cannot.
    fn connect(&mut self, nvml: &'n Nvml) {
        let index = self.identity.index;
        match nvml.device_by_index(index) {
            Ok(device) => {
                if let Ok(uuid) = device.uuid() {
                    self.identity.uuid = uuid;
                }
                if let Ok(name) = device.name() {
                    self.identity.name = name;
                }
                if let Ok(pci) = device.pci_info() {
                    self.pci = parse_pci_bus_id(&pci.bus_id);
                    self.identity.pci_bus_id = pci.bus_id;
                }
                tracing::info!(gpu = index, uuid = %self.identity.uuid, name = %self.identity.name,
                    pci_bus_id = %self.identity.pci_bus_id, "GPU found");
                self.extended = extended::Extended::default();
                self.device = Some(device);
            }
            Err(NvmlError::GpuLost) => self.set_state(GpuState::Lost),
            Err(e) => self.set_state(GpuState::Error {
                message: format!("cannot open GPU {index}: {e}"),
            }),
        }
    }

    fn set_state(&mut self, state: GpuState) {
        if state == self.state {
            return;
        }
        let index = self.identity.index;
        match &state {
            GpuState::Ok => {
                tracing::info!(gpu = index, uuid = %self.identity.uuid, "GPU is answering again");
            }
            GpuState::Lost => tracing::error!(gpu = index, uuid = %self.identity.uuid,
                pci_bus_id = %self.identity.pci_bus_id,
                "GPU has fallen off the bus (NVML: GPU is lost); it needs a reset or the node a reboot"),
            GpuState::Error { message } => {
                tracing::warn!(gpu = index, uuid = %self.identity.uuid, error = %message, "GPU cannot be read");
            }
        }
        self.state = state;
    }

    fn sample(&mut self, nvml: &'n Nvml) -> GpuReading {
        if self.device.is_none() {
            self.connect(nvml);
        }
        let read = self.read_fields().and_then(|mut fields| {
            self.read_extended(nvml, &mut fields)?;
            let mig = self.read_mig(nvml)?;
            Ok((fields, mig))
        });
        let (fields, mig) = if let Ok(read) = read {
            if self.device.is_some() {
                self.set_state(GpuState::Ok);
            }
            read
        } else {
            self.set_state(GpuState::Lost);
            self.extended = extended::Extended::default();
            (GpuFields::default(), Vec::new())
        };
        GpuReading {
            identity: self.identity.clone(),
            state: self.state.clone(),
            fields,
            mig,
        }
    }

    /// Reads one field: `None` when unsupported (remembered) or failing this time.
    fn read<T>(
        &mut self,
        field: Field,
        read: impl FnOnce(&Device<'n>) -> Result<T, NvmlError>,
    ) -> Result<Option<T>, Lost> {
        if self.unsupported.contains_key(&field) {
            return Ok(None);
        }
        let Some(device) = &self.device else {
            return Ok(None);
        };
        match read(device) {
            Ok(value) => Ok(Some(value)),
            Err(NvmlError::GpuLost) => Err(Lost),
            Err(e @ (NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_))) => {
                let reason = match e {
                    NvmlError::NotSupported => "NVML: not supported on this GPU".to_owned(),
                    e => format!("NVML: {e} (driver too old?)"),
                };
                self.mark_unsupported(field, reason);
                Ok(None)
            }
            Err(e) => {
                tracing::debug!(gpu = self.identity.index, field = ?field, error = %e, "reading a GPU field failed");
                Ok(None)
            }
        }
    }

    /// Leaves a field out from now on, saying why once.
    fn mark_unsupported(&mut self, field: Field, reason: String) {
        tracing::debug!(gpu = self.identity.index, field = ?field, fields = ?field.dcgm_names(), reason = %reason,
            "GPU does not give this field; it is left out (never reported as 0)");
        self.unsupported.insert(field, reason);
    }

    fn read_fields(&mut self) -> Result<GpuFields, Lost> {
        if self.device.is_none() {
            return Ok(GpuFields::default());
        }
        let mut f = GpuFields::default();
        if let Some(u) = self.read(Field::Utilization, Device::utilization_rates)? {
            f.gpu_util_percent = Some(u.gpu);
            f.mem_copy_util_percent = Some(u.memory);
        }
        if let Some(m) = self.read(Field::Memory, Device::memory_info)? {
            f.fb_total_bytes = Some(m.total);
            f.fb_used_bytes = Some(m.used);
            f.fb_free_bytes = Some(m.free);
            f.fb_reserved_bytes = Some(m.reserved);
        }
        f.temperature_c = self.read(Field::Temperature, |d| {
            d.temperature(TemperatureSensor::Gpu)
        })?;
        f.power_usage_mw = self.read(Field::Power, Device::power_usage)?;
        f.power_limit_mw = self.read(Field::PowerLimit, Device::power_management_limit)?;
        f.enforced_power_limit_mw =
            self.read(Field::EnforcedPowerLimit, Device::enforced_power_limit)?;
        f.total_energy_mj = self.read(Field::Energy, Device::total_energy_consumption)?;
        f.sm_clock_mhz = self.read(Field::SmClock, |d| d.clock_info(Clock::SM))?;
        f.mem_clock_mhz = self.read(Field::MemClock, |d| d.clock_info(Clock::Memory))?;
        f.clock_throttle_reasons = self
            .read(Field::ThrottleReasons, Device::current_throttle_reasons)?
            .map(|r| r.bits());
        f.ecc_sbe_volatile = self.read(Field::EccSbeVolatile, |d| {
            d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
        })?;
        f.ecc_dbe_volatile = self.read(Field::EccDbeVolatile, |d| {
            d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
        })?;
        f.ecc_sbe_aggregate = self.read(Field::EccSbeAggregate, |d| {
            d.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)
        })?;
        f.ecc_dbe_aggregate = self.read(Field::EccDbeAggregate, |d| {
            d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)
        })?;
        f.retired_pages_sbe = self
            .read(Field::RetiredPagesSbe, |d| {
                d.retired_pages(RetirementCause::MultipleSingleBitEccErrors)
            })?
            .map(|pages| pages.len() as u64);
        f.retired_pages_dbe = self
            .read(Field::RetiredPagesDbe, |d| {
                d.retired_pages(RetirementCause::DoubleBitEccError)
            })?
            .map(|pages| pages.len() as u64);
        f.retired_pages_pending = self.read(
            Field::RetiredPagesPending,
            Device::are_pages_pending_retired,
        )?;
        if let Some(rows) = self.read(Field::RemappedRows, raw::remapped_rows)? {
            f.remapped_rows_correctable = Some(u64::from(rows.correctable));
            f.remapped_rows_uncorrectable = Some(u64::from(rows.uncorrectable));
            f.row_remap_pending = Some(rows.pending);
            f.row_remap_failure = Some(rows.failure);
        }
        f.pcie_tx_kbps = self.read(Field::PcieTx, |d| d.pcie_throughput(PcieUtilCounter::Send))?;
        f.pcie_rx_kbps = self.read(Field::PcieRx, |d| {
            d.pcie_throughput(PcieUtilCounter::Receive)
        })?;
        f.fan_speed_percent = self.read(Field::FanSpeed, |d| d.fan_speed(0))?;
        Ok(f)
    }
}

/// The two NVML calls `nvml-wrapper` 0.13 does not wrap safely.
mod raw {
    #![allow(unsafe_code)]

    use nvml_wrapper::Device;
    use nvml_wrapper::error::{NvmlError, nvml_sym, nvml_try};

    /// Row remapping state (Ampere and later), `nvmlDeviceGetRemappedRows`.
    pub(super) struct RemappedRows {
        pub(super) correctable: u32,
        pub(super) uncorrectable: u32,
        pub(super) pending: bool,
        pub(super) failure: bool,
    }

    pub(super) fn remapped_rows(device: &Device<'_>) -> Result<RemappedRows, NvmlError> {
        let sym = nvml_sym(device.nvml().lib().nvmlDeviceGetRemappedRows.as_ref())?;
        let (mut corr, mut unc, mut pending, mut failure) = (0, 0, 0, 0);
        // SAFETY: the handle is valid for the life of `device` (it borrows the loaded
        // library), and the four out-pointers point to live locals, as NVML requires.
        nvml_try(unsafe {
            sym(
                device.handle(),
                &raw mut corr,
                &raw mut unc,
                &raw mut pending,
                &raw mut failure,
            )
        })?;
        Ok(RemappedRows {
            correctable: corr,
            uncorrectable: unc,
            pending: pending != 0,
            failure: failure != 0,
        })
    }

    /// The raw handle, as an integer for comparing devices (never dereferenced).
    pub(super) fn handle(device: &Device<'_>) -> usize {
        // SAFETY: reading the handle has no preconditions; it is only compared, never
        // used to build another `Device` (which `handle()`'s contract forbids).
        unsafe { device.handle() }.addr()
    }
}
