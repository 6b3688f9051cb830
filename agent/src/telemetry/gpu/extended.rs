//! The fields that need more than one NVML call per value, or state between samples:
//! NVML field values (memory temperature, `PCIe` replays, NVLink counters turned into a
//! rate), encoder and decoder utilisation, vGPU licensing, the profiling fields from GPU
//! Performance Monitoring (two GPM samples per interval, converted to DCGM's units) and
//! MIG instances with their own memory and profiling fields.
//!
//! DCGM's profiling fields and their NVML GPM equivalents:
//! - `DCGM_FI_PROF_GR_ENGINE_ACTIVE` (ratio) = `GRAPHICS_UTIL` (percent) / 100;
//! - `DCGM_FI_PROF_PIPE_TENSOR_ACTIVE` (ratio) = `ANY_TENSOR_UTIL` / 100;
//! - `DCGM_FI_PROF_DRAM_ACTIVE` (ratio) = `DRAM_BW_UTIL` / 100;
//! - `DCGM_FI_PROF_PCIE_{TX,RX}_BYTES` (bytes/s, headers included) =
//!   `PCIE_{TX,RX}_PER_SEC` (MiB/s) × 2^20.

use std::time::Instant;

use gantry_shared::telemetry::{GpuFields, MigReading};
use nvml_wrapper::enum_wrappers::device::GpuVirtualizationMode;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::{GpmSample, gpm_metrics_get};
use nvml_wrapper::{Device, Nvml};

use super::{Field, Gpu, Lost};

/// NVML field ids (`NVML_FI_DEV_*`).
const FI_MEMORY_TEMP: u32 = 82;
const FI_NVLINK_LINK_COUNT: u32 = 91;
const FI_PCIE_REPLAY_COUNTER: u32 = 94;
const FI_NVLINK_THROUGHPUT_DATA_TX: u32 = 138;
const FI_NVLINK_THROUGHPUT_DATA_RX: u32 = 139;

/// The GPM metrics behind DCGM's default profiling fields, in [`apply_gpm`]'s order.
const GPM_METRICS: [GpmMetricId; 5] = [
    GpmMetricId::GraphicsUtil,
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::DramBwUtil,
    GpmMetricId::PcieTxPerSec,
    GpmMetricId::PcieRxPerSec,
];

const MIB: f64 = 1024.0 * 1024.0;

/// State kept between samples of one GPU.
#[derive(Debug, Default)]
pub(super) struct Extended<'n> {
    /// NVLink links, once known.
    nvlinks: Option<u32>,
    /// KiB sent and received over all links, and when.
    nvlink_previous: Option<(u64, Instant)>,
    gpm_previous: Option<GpmSample<'n>>,
    gpm_checked: bool,
    /// MIG instances, once enumerated.
    mig: Option<Vec<MigInstance<'n>>>,
}

#[derive(Debug)]
struct MigInstance<'n> {
    device: Device<'n>,
    gpu_instance_id: u32,
    profile: String,
    gpm_previous: Option<GpmSample<'n>>,
}

impl<'n> Gpu<'n> {
    pub(super) fn read_extended(&mut self, nvml: &'n Nvml, f: &mut GpuFields) -> Result<(), Lost> {
        if self.device.is_none() {
            return Ok(());
        }
        self.read_field_values(f)?;
        f.enc_util_percent = self
            .read(Field::EncoderUtil, Device::encoder_utilization)?
            .map(|u| u.utilization);
        f.dec_util_percent = self
            .read(Field::DecoderUtil, Device::decoder_utilization)?
            .map(|u| u.utilization);
        self.read_nvlink(f)?;
        self.read_vgpu(f)?;
        self.read_gpm(nvml, f)?;
        Ok(())
    }

    /// Memory temperature and `PCIe` replays, in one field-values call.
    fn read_field_values(&mut self, f: &mut GpuFields) -> Result<(), Lost> {
        let wanted: Vec<(Field, u32)> = [
            (Field::MemoryTemperature, FI_MEMORY_TEMP),
            (Field::PcieReplay, FI_PCIE_REPLAY_COUNTER),
        ]
        .into_iter()
        .filter(|(field, _)| !self.unsupported.contains_key(field))
        .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let ids: Vec<(u32, u32)> = wanted.iter().map(|&(_, id)| (id, 0)).collect();
        // A driver without field values marks the first field wanted; the next sample
        // tries the rest.
        let Some(results) = self.read(wanted[0].0, |d| raw::field_values(d, &ids))? else {
            return Ok(());
        };
        for ((field, _), result) in wanted.into_iter().zip(results) {
            match result {
                Ok(value) => match field {
                    Field::MemoryTemperature => {
                        f.memory_temperature_c = u32::try_from(value).ok();
                    }
                    _ => f.pcie_replay_total = Some(value),
                },
                Err(NvmlError::GpuLost) => return Err(Lost),
                Err(NvmlError::NotSupported) => {
                    self.mark_unsupported(field, "NVML: not supported on this GPU".to_owned());
                }
                Err(e) => {
                    tracing::debug!(gpu = self.identity.index, field = ?field, error = %e, "reading a GPU field failed");
                }
            }
        }
        Ok(())
    }

    /// NVLink throughput over the last interval, from the per-link data counters.
    fn read_nvlink(&mut self, f: &mut GpuFields) -> Result<(), Lost> {
        if self.unsupported.contains_key(&Field::NvLink) {
            return Ok(());
        }
        let links = if let Some(links) = self.extended.nvlinks {
            links
        } else {
            let Some(results) = self.read(Field::NvLink, |d| {
                raw::field_values(d, &[(FI_NVLINK_LINK_COUNT, 0)])
            })?
            else {
                return Ok(());
            };
            let links = match results.into_iter().next() {
                Some(Ok(n)) => u32::try_from(n).unwrap_or(0),
                Some(Err(NvmlError::GpuLost)) => return Err(Lost),
                _ => 0,
            };
            if links == 0 {
                self.mark_unsupported(Field::NvLink, "the GPU has no NVLink".to_owned());
                return Ok(());
            }
            self.extended.nvlinks = Some(links);
            links
        };
        let ids: Vec<(u32, u32)> = (0..links)
            .flat_map(|link| {
                [
                    (FI_NVLINK_THROUGHPUT_DATA_TX, link),
                    (FI_NVLINK_THROUGHPUT_DATA_RX, link),
                ]
            })
            .collect();
        let Some(results) = self.read(Field::NvLink, |d| raw::field_values(d, &ids))? else {
            return Ok(());
        };
        let mut kib = 0u64;
        for result in results {
            match result {
                Ok(v) => kib = kib.saturating_add(v),
                Err(NvmlError::GpuLost) => return Err(Lost),
                Err(NvmlError::NotSupported) => {
                    self.mark_unsupported(
                        Field::NvLink,
                        "NVML: NVLink throughput counters not supported".to_owned(),
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(gpu = self.identity.index, error = %e, "reading NVLink counters failed");
                    return Ok(());
                }
            }
        }
        let now = Instant::now();
        if let Some((before, at)) = self.extended.nvlink_previous {
            let seconds = now.duration_since(at).as_secs_f64();
            if seconds > 0.0 && kib >= before {
                f.nvlink_bandwidth_mbps = Some((kib - before) as f64 * 1024.0 / 1e6 / seconds);
            }
        }
        self.extended.nvlink_previous = Some((kib, now));
        Ok(())
    }

    /// vGPU license state, for GPUs that are vGPU guests.
    fn read_vgpu(&mut self, f: &mut GpuFields) -> Result<(), Lost> {
        if self.unsupported.contains_key(&Field::VgpuLicense) {
            return Ok(());
        }
        let Some(mode) = self.read(Field::VgpuLicense, Device::virtualization_mode)? else {
            return Ok(());
        };
        if mode != GpuVirtualizationMode::Vgpu {
            self.mark_unsupported(
                Field::VgpuLicense,
                format!("not a vGPU guest (virtualization mode {mode:?})"),
            );
            return Ok(());
        }
        f.vgpu_license_status = self
            .read(Field::VgpuLicense, raw::vgpu_licensed)?
            .map(u32::from);
        Ok(())
    }

    /// The profiling fields: GPM metrics between the previous sample and this one.
    fn read_gpm(&mut self, nvml: &'n Nvml, f: &mut GpuFields) -> Result<(), Lost> {
        if self.unsupported.contains_key(&Field::Gpm) {
            return Ok(());
        }
        if !self.extended.gpm_checked {
            let supported = self.read(Field::Gpm, Device::gpm_support)?;
            if self.unsupported.contains_key(&Field::Gpm) {
                return Ok(());
            }
            if supported == Some(false) {
                self.mark_unsupported(
                    Field::Gpm,
                    "GPU Performance Monitoring needs a Hopper or later GPU".to_owned(),
                );
                return Ok(());
            }
            self.extended.gpm_checked = supported.is_some();
        }
        let Some(sample) = self.read(Field::Gpm, Device::gpm_sample)? else {
            return Ok(());
        };
        if let Some(previous) = self.extended.gpm_previous.take() {
            apply_gpm(nvml, &previous, &sample, f);
        }
        self.extended.gpm_previous = Some(sample);
        Ok(())
    }

    /// MIG instances with their memory and profiling fields; empty when not in MIG mode.
    pub(super) fn read_mig(&mut self, nvml: &'n Nvml) -> Result<Vec<MigReading>, Lost> {
        if self.device.is_none() || self.unsupported.contains_key(&Field::Mig) {
            return Ok(Vec::new());
        }
        if self.extended.mig.is_none() {
            let instances = self.enumerate_mig()?;
            self.extended.mig = Some(instances);
        }
        let gpm = self.extended.gpm_checked && !self.unsupported.contains_key(&Field::Gpm);
        let parent = self.device.as_ref();
        let mut readings = Vec::new();
        for instance in self.extended.mig.iter_mut().flatten() {
            let mut fields = GpuFields::default();
            match instance.device.memory_info() {
                Ok(m) => {
                    fields.fb_total_bytes = Some(m.total);
                    fields.fb_used_bytes = Some(m.used);
                    fields.fb_free_bytes = Some(m.free);
                    fields.fb_reserved_bytes = Some(m.reserved);
                }
                Err(NvmlError::GpuLost) => return Err(Lost),
                Err(e) => {
                    tracing::debug!(gpu = self.identity.index, gpu_instance = instance.gpu_instance_id,
                        error = %e, "reading a MIG instance's memory failed");
                }
            }
            if gpm && let Some(parent) = parent {
                match parent.gpm_mig_sample(instance.gpu_instance_id) {
                    Ok(sample) => {
                        if let Some(previous) = instance.gpm_previous.take() {
                            apply_gpm(nvml, &previous, &sample, &mut fields);
                        }
                        instance.gpm_previous = Some(sample);
                    }
                    Err(NvmlError::GpuLost) => return Err(Lost),
                    Err(e) => {
                        tracing::debug!(gpu = self.identity.index, gpu_instance = instance.gpu_instance_id,
                            error = %e, "GPM sample of a MIG instance failed");
                    }
                }
            }
            readings.push(MigReading {
                gpu_instance_id: instance.gpu_instance_id,
                profile: instance.profile.clone(),
                fields,
            });
        }
        Ok(readings)
    }

    fn enumerate_mig(&mut self) -> Result<Vec<MigInstance<'n>>, Lost> {
        let Some(mode) = self.read(Field::Mig, Device::mig_mode)? else {
            return Ok(Vec::new());
        };
        if mode.current == 0 {
            return Ok(Vec::new());
        }
        let Some(device) = &self.device else {
            return Ok(Vec::new());
        };
        let max = match device.mig_device_count() {
            Ok(n) => n,
            Err(NvmlError::GpuLost) => return Err(Lost),
            Err(_) => 0,
        };
        let mut instances = Vec::new();
        for index in 0..max {
            let mig = match device.mig_device_by_index(index) {
                Ok(mig) => mig,
                Err(NvmlError::GpuLost) => return Err(Lost),
                // Instance slots need not be contiguous.
                Err(_) => continue,
            };
            let gpu_instance_id = match raw::gpu_instance_id(&mig) {
                Ok(id) => id,
                Err(NvmlError::GpuLost) => return Err(Lost),
                Err(e) => {
                    tracing::debug!(gpu = self.identity.index, error = %e, "MIG instance has no GPU instance id");
                    continue;
                }
            };
            let name = mig.name().unwrap_or_default();
            let profile = mig_profile(&name).to_owned();
            tracing::info!(gpu = self.identity.index, gpu_instance = gpu_instance_id, profile = %profile, "MIG instance found");
            instances.push(MigInstance {
                device: mig,
                gpu_instance_id,
                profile,
                gpm_previous: None,
            });
        }
        Ok(instances)
    }
}

/// The profile in a MIG device's name: `NVIDIA H100 80GB HBM3 MIG 1g.10gb` → `1g.10gb`.
fn mig_profile(name: &str) -> &str {
    name.rsplit_once(" MIG ")
        .map_or(name, |(_, profile)| profile)
}

/// Converts GPM metrics between two samples into DCGM's units; metrics the GPU or
/// instance does not give stay absent.
fn apply_gpm<'n>(nvml: &'n Nvml, first: &GpmSample<'n>, second: &GpmSample<'n>, f: &mut GpuFields) {
    let results = match gpm_metrics_get(nvml, first, second, &GPM_METRICS) {
        Ok(results) => results,
        Err(e) => {
            tracing::debug!(error = %e, "computing GPM metrics failed");
            return;
        }
    };
    let values: Vec<Option<f64>> = results
        .into_iter()
        .map(|r| r.ok().map(|m| m.value).filter(|v| v.is_finite()))
        .collect();
    let ratio = |v: Option<f64>| v.map(|percent| (percent / 100.0).clamp(0.0, 1.0));
    let bytes = |v: Option<f64>| v.map(|mib| (mib * MIB).max(0.0));
    f.prof_gr_engine_active = ratio(values[0]);
    f.prof_pipe_tensor_active = ratio(values[1]);
    f.prof_dram_active = ratio(values[2]);
    f.prof_pcie_tx_bytes = bytes(values[3]);
    f.prof_pcie_rx_bytes = bytes(values[4]);
}

/// NVML calls `nvml-wrapper` 0.13 does not wrap the way the agent needs.
mod raw {
    #![allow(unsafe_code)]

    use nvml_wrapper::Device;
    use nvml_wrapper::error::{NvmlError, nvml_sym, nvml_try};
    use nvml_wrapper_sys::bindings::{nvmlFieldValue_t, nvmlGridLicensableFeatures_t};

    /// `nvmlValueType_t`.
    const VALUE_DOUBLE: u32 = 0;
    const VALUE_UNSIGNED_INT: u32 = 1;
    const VALUE_UNSIGNED_LONG: u32 = 2;
    const VALUE_UNSIGNED_LONG_LONG: u32 = 3;
    const VALUE_SIGNED_LONG_LONG: u32 = 4;
    const VALUE_SIGNED_INT: u32 = 5;
    const VALUE_UNSIGNED_SHORT: u32 = 6;
    const LICENSE_FEATURE_VGPU: u32 = 1;
    const LICENSE_FEATURE_COMPUTE: u32 = 4;

    /// `nvmlDeviceGetFieldValues` with a scope (link) per field, which the wrapper
    /// always sets to 0. Each entry is the value as an integer, or its own error.
    pub(super) fn field_values(
        device: &Device<'_>,
        fields: &[(u32, u32)],
    ) -> Result<Vec<Result<u64, NvmlError>>, NvmlError> {
        let sym = nvml_sym(device.nvml().lib().nvmlDeviceGetFieldValues.as_ref())?;
        let mut values: Vec<nvmlFieldValue_t> = fields
            .iter()
            .map(|&(id, scope)| {
                // SAFETY: plain C data; all-zero is a valid value.
                let mut value: nvmlFieldValue_t = unsafe { std::mem::zeroed() };
                value.fieldId = id;
                value.scopeId = scope;
                value
            })
            .collect();
        let count = i32::try_from(values.len()).map_err(|_| NvmlError::InvalidArg)?;
        // SAFETY: the handle is valid for the life of `device`; `values` holds `count`
        // initialised entries, which NVML fills in place.
        nvml_try(unsafe { sym(device.handle(), count, values.as_mut_ptr()) })?;
        Ok(values
            .iter()
            .map(|v| {
                nvml_try(v.nvmlReturn)?;
                // SAFETY: `valueType` names the union member NVML wrote.
                let value = unsafe {
                    match v.valueType {
                        VALUE_DOUBLE => v.value.dVal.max(0.0) as u64,
                        VALUE_UNSIGNED_INT => u64::from(v.value.uiVal),
                        VALUE_UNSIGNED_LONG => v.value.ulVal,
                        VALUE_UNSIGNED_LONG_LONG => v.value.ullVal,
                        VALUE_SIGNED_LONG_LONG => u64::try_from(v.value.sllVal).unwrap_or(0),
                        VALUE_SIGNED_INT => u64::try_from(v.value.siVal).unwrap_or(0),
                        VALUE_UNSIGNED_SHORT => u64::from(v.value.usVal),
                        _ => return Err(NvmlError::Unknown),
                    }
                };
                Ok(value)
            })
            .collect())
    }

    /// Whether a vGPU guest holds its license (`nvmlDeviceGetGridLicensableFeatures_v4`).
    pub(super) fn vgpu_licensed(device: &Device<'_>) -> Result<bool, NvmlError> {
        let sym = nvml_sym(
            device
                .nvml()
                .lib()
                .nvmlDeviceGetGridLicensableFeatures_v4
                .as_ref(),
        )?;
        // SAFETY: plain C data; all-zero is a valid value.
        let mut features: nvmlGridLicensableFeatures_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid handle; `features` is a live out-parameter of the right type.
        nvml_try(unsafe { sym(device.handle(), &raw mut features) })?;
        if features.isGridLicenseSupported == 0 {
            return Err(NvmlError::NotSupported);
        }
        let count =
            (features.licensableFeaturesCount as usize).min(features.gridLicensableFeatures.len());
        Ok(features.gridLicensableFeatures[..count].iter().any(|f| {
            matches!(
                f.featureCode,
                LICENSE_FEATURE_VGPU | LICENSE_FEATURE_COMPUTE
            ) && f.featureState == 1
        }))
    }

    /// GPU instance id of a MIG device handle (`nvmlDeviceGetGpuInstanceId`).
    pub(super) fn gpu_instance_id(device: &Device<'_>) -> Result<u32, NvmlError> {
        let sym = nvml_sym(device.nvml().lib().nvmlDeviceGetGpuInstanceId.as_ref())?;
        let mut id = 0;
        // SAFETY: valid handle; `id` is a live out-parameter.
        nvml_try(unsafe { sym(device.handle(), &raw mut id) })?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mig_profiles_come_from_the_device_name() {
        assert_eq!(mig_profile("NVIDIA H100 80GB HBM3 MIG 1g.10gb"), "1g.10gb");
        assert_eq!(mig_profile("NVIDIA A100-SXM4-80GB MIG 3g.40gb"), "3g.40gb");
        assert_eq!(mig_profile("odd"), "odd");
    }
}
