//! NVML functions behind dcgm-exporter's fields beyond the basics: field values
//! (memory temperature, `PCIe` replays, NVLink throughput), encoder and decoder
//! utilisation, vGPU licensing, GPU Performance Monitoring (GPM) and MIG devices.
//!
//! MIG device handles are `MIG_HANDLE_BASE + gpu * MIG_SLOTS + index`, disjoint from GPU
//! handles, so functions that take only GPU handles refuse them as NVML does.

use std::ffi::{c_char, c_int, c_uint};

use nvml_wrapper_sys::bindings::{
    nvmlDevice_st, nvmlDevice_t, nvmlFieldValue_t, nvmlGpmMetricsGet_t, nvmlGpmSample_st,
    nvmlGpmSample_t, nvmlGpmSupport_t, nvmlGridLicensableFeatures_t, nvmlMemory_v2_t, nvmlReturn_t,
    nvmlValue_t,
};

use super::{
    ERROR_INSUFFICIENT_SIZE, ERROR_INVALID_ARGUMENT, ERROR_NOT_FOUND, ERROR_NOT_SUPPORTED,
    ERROR_UNINITIALIZED, SUCCESS, read_value, state, with_device, write_str,
};
use crate::sim::{GpmError, GpmRecord, Sim};

const MIG_HANDLE_BASE: usize = 0x1000;
const MIG_SLOTS: usize = 8;

// NVML field ids (`NVML_FI_DEV_*`).
const FI_MEMORY_TEMP: c_uint = 82;
const FI_NVLINK_LINK_COUNT: c_uint = 91;
const FI_PCIE_REPLAY_COUNTER: c_uint = 94;
const FI_NVLINK_THROUGHPUT_DATA_TX: c_uint = 138;
const FI_NVLINK_THROUGHPUT_DATA_RX: c_uint = 139;

// `nvmlValueType_t`.
const VALUE_UNSIGNED_INT: c_uint = 1;
const VALUE_UNSIGNED_LONG_LONG: c_uint = 3;

const GPM_VERSION: c_uint = 1;
const VIRTUALIZATION_NONE: c_uint = 0;
const VIRTUALIZATION_VGPU: c_uint = 2;
const LICENSE_FEATURE_VGPU: c_uint = 1;
/// Sampling period NVML reports with encoder and decoder utilisation.
const CODEC_SAMPLING_US: c_uint = 167_000;

fn mig_handle(gpu: u32, index: u32) -> nvmlDevice_t {
    std::ptr::without_provenance_mut::<nvmlDevice_st>(
        MIG_HANDLE_BASE + gpu as usize * MIG_SLOTS + index as usize,
    )
}

/// The (GPU, instance index) of a MIG handle, if it is one.
pub(super) fn decode_mig(sim: &Sim, device: nvmlDevice_t) -> Option<(u32, u32)> {
    let offset = device.addr().checked_sub(MIG_HANDLE_BASE)?;
    let gpu = u32::try_from(offset / MIG_SLOTS).ok()?;
    let index = u32::try_from(offset % MIG_SLOTS).ok()?;
    (gpu < sim.gpus && (index as usize) < sim.mig(gpu).len()).then_some((gpu, index))
}

/// Runs `f` with the (GPU, instance index, profile) of a valid MIG handle.
pub(super) fn with_mig(
    device: nvmlDevice_t,
    f: impl FnOnce(&Sim, u32, u32, &str) -> nvmlReturn_t,
) -> Option<nvmlReturn_t> {
    let guard = state();
    let (sim, _) = guard.as_ref()?;
    let (gpu, index) = decode_mig(sim, device)?;
    let profile = sim.mig(gpu)[index as usize].clone();
    Some(f(sim, gpu, index, &profile))
}

/// Memory of a MIG instance: its profile's size, used in proportion to the GPU's use.
pub(super) fn mig_memory(sim: &Sim, gpu: u32, profile: &str, version: c_uint) -> nvmlMemory_v2_t {
    const MIB: u64 = 1024 * 1024;
    let total = crate::model::mig_profile_memory_mib(profile).unwrap_or(0) * MIB;
    let gpu_values = sim.values(gpu);
    let share = gpu_values.fb_used as f64 / gpu_values.fb_total as f64;
    let reserved = 32 * MIB;
    let used = ((total - reserved) as f64 * share) as u64 / MIB * MIB;
    nvmlMemory_v2_t {
        version,
        total,
        reserved,
        free: total - reserved - used,
        used,
    }
}

/// One field value of a present GPU: (type, value), or the NVML error for that entry.
fn field_value(
    sim: &Sim,
    gpu: u32,
    field: c_uint,
    scope: c_uint,
) -> Result<(c_uint, nvmlValue_t), nvmlReturn_t> {
    let v = sim.values(gpu);
    let links = sim.model.nvlinks;
    let per_link = |kib: u64| {
        if links == 0 {
            Err(ERROR_NOT_SUPPORTED)
        } else if scope >= links {
            Err(ERROR_INVALID_ARGUMENT)
        } else {
            Ok((VALUE_UNSIGNED_LONG_LONG, nvmlValue_t { ullVal: kib }))
        }
    };
    match field {
        FI_MEMORY_TEMP => v
            .memory_temperature
            .map(|t| (VALUE_UNSIGNED_INT, nvmlValue_t { uiVal: t }))
            .ok_or(ERROR_NOT_SUPPORTED),
        FI_PCIE_REPLAY_COUNTER => Ok((
            VALUE_UNSIGNED_LONG_LONG,
            nvmlValue_t {
                ullVal: v.pcie_replays,
            },
        )),
        FI_NVLINK_LINK_COUNT => Ok((VALUE_UNSIGNED_INT, nvmlValue_t { uiVal: links })),
        FI_NVLINK_THROUGHPUT_DATA_TX => per_link(v.nvlink_tx_kib_per_link),
        FI_NVLINK_THROUGHPUT_DATA_RX => per_link(v.nvlink_rx_kib_per_link),
        _ => Err(ERROR_NOT_SUPPORTED),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: nvmlDevice_t,
    count: c_int,
    values: *mut nvmlFieldValue_t,
) -> nvmlReturn_t {
    let Ok(count) = usize::try_from(count) else {
        return ERROR_INVALID_ARGUMENT;
    };
    if values.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    with_device(device, |sim, gpu| {
        // SAFETY: the caller passes `count` initialised entries at `values`.
        let entries = unsafe { std::slice::from_raw_parts_mut(values, count) };
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        for entry in entries {
            entry.timestamp = now_us;
            entry.latencyUsec = 0;
            match field_value(sim, gpu, entry.fieldId, entry.scopeId) {
                Ok((kind, value)) => {
                    entry.valueType = kind;
                    entry.value = value;
                    entry.nvmlReturn = SUCCESS;
                }
                Err(code) => entry.nvmlReturn = code,
            }
        }
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPcieReplayCounter(
    device: nvmlDevice_t,
    value: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { read_value(device, value, |_, _, v| Ok(v.pcie_replays as c_uint)) }
}

/// Writes a codec utilisation and NVML's sampling period.
unsafe fn codec_utilization(
    device: nvmlDevice_t,
    utilization: *mut c_uint,
    period_us: *mut c_uint,
    pick: impl FnOnce(&crate::sim::Values) -> Option<c_uint>,
) -> nvmlReturn_t {
    if period_us.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: forwarded caller contract.
    let code = unsafe {
        read_value(device, utilization, |_, _, v| {
            pick(v).ok_or(ERROR_NOT_SUPPORTED)
        })
    };
    if code == SUCCESS {
        // SAFETY: checked non-null above.
        unsafe { period_us.write(CODEC_SAMPLING_US) };
    }
    code
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEncoderUtilization(
    device: nvmlDevice_t,
    utilization: *mut c_uint,
    period_us: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { codec_utilization(device, utilization, period_us, |v| v.enc_util) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetDecoderUtilization(
    device: nvmlDevice_t,
    utilization: *mut c_uint,
    period_us: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { codec_utilization(device, utilization, period_us, |v| Some(v.dec_util)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetVirtualizationMode(
    device: nvmlDevice_t,
    mode: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, mode, |sim, gpu, _| {
            Ok(match sim.faults(gpu).vgpu_licensed {
                Some(_) => VIRTUALIZATION_VGPU,
                None => VIRTUALIZATION_NONE,
            })
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGridLicensableFeatures_v4(
    device: nvmlDevice_t,
    features: *mut nvmlGridLicensableFeatures_t,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, features, |sim, gpu, _| {
            let licensed = sim.faults(gpu).vgpu_licensed.ok_or(ERROR_NOT_SUPPORTED)?;
            // SAFETY: plain C data; all-zero is a valid value.
            let mut out: nvmlGridLicensableFeatures_t = std::mem::zeroed();
            out.isGridLicenseSupported = 1;
            out.licensableFeaturesCount = 1;
            out.gridLicensableFeatures[0].featureCode = LICENSE_FEATURE_VGPU;
            out.gridLicensableFeatures[0].featureState = c_uint::from(licensed);
            out.gridLicensableFeatures[0].featureEnabled = 1;
            Ok(out)
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
    device: nvmlDevice_t,
    support: *mut nvmlGpmSupport_t,
) -> nvmlReturn_t {
    if support.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null; the caller sets `version` first, per NVML's contract.
    if unsafe { (*support).version } != GPM_VERSION {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, support, |sim, _, _| {
            Ok(nvmlGpmSupport_t {
                version: GPM_VERSION,
                isSupportedDevice: c_uint::from(sim.model.gpm),
            })
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmSampleAlloc(sample: *mut nvmlGpmSample_t) -> nvmlReturn_t {
    if sample.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    let mut guard = state();
    let Some((sim, _)) = guard.as_mut() else {
        return ERROR_UNINITIALIZED;
    };
    let id = sim.alloc_gpm_sample();
    // SAFETY: non-null out-pointer per NVML's contract.
    unsafe { sample.write(std::ptr::without_provenance_mut::<nvmlGpmSample_st>(id)) };
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlGpmSampleFree(sample: nvmlGpmSample_t) -> nvmlReturn_t {
    match state()
        .as_mut()
        .map(|(sim, _)| sim.free_gpm_sample(sample.addr()))
    {
        Some(true) => SUCCESS,
        Some(false) => ERROR_INVALID_ARGUMENT,
        None => ERROR_UNINITIALIZED,
    }
}

fn gpm_sample_get(
    device: nvmlDevice_t,
    instance: Option<u32>,
    sample: nvmlGpmSample_t,
) -> nvmlReturn_t {
    with_device(device, |sim, gpu| {
        if !sim.model.gpm {
            return ERROR_NOT_SUPPORTED;
        }
        if let Some(id) = instance {
            let known = (0..sim.mig(gpu).len() as u32).any(|i| Sim::gpu_instance_id(i) == id);
            if !known {
                return ERROR_NOT_FOUND;
            }
        }
        let record = GpmRecord {
            gpu,
            instance,
            t: sim.now(),
        };
        if sim.fill_gpm_sample(sample.addr(), record) {
            SUCCESS
        } else {
            ERROR_INVALID_ARGUMENT
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlGpmSampleGet(device: nvmlDevice_t, sample: nvmlGpmSample_t) -> nvmlReturn_t {
    gpm_sample_get(device, None, sample)
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlGpmMigSampleGet(
    device: nvmlDevice_t,
    gpu_instance_id: c_uint,
    sample: nvmlGpmSample_t,
) -> nvmlReturn_t {
    gpm_sample_get(device, Some(gpu_instance_id), sample)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmMetricsGet(request: *mut nvmlGpmMetricsGet_t) -> nvmlReturn_t {
    if request.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null, and the caller owns the request for the call.
    let request = unsafe { &mut *request };
    if request.version != GPM_VERSION || request.numMetrics as usize > request.metrics.len() {
        return ERROR_INVALID_ARGUMENT;
    }
    let guard = state();
    let Some((sim, _)) = guard.as_ref() else {
        return ERROR_UNINITIALIZED;
    };
    let (first, second) = (request.sample1.addr(), request.sample2.addr());
    for metric in &mut request.metrics[..request.numMetrics as usize] {
        match sim.gpm_metric(first, second, metric.metricId) {
            Ok(Some(value)) => {
                metric.value = value;
                metric.nvmlReturn = SUCCESS;
            }
            Ok(None) => metric.nvmlReturn = ERROR_NOT_SUPPORTED,
            Err(GpmError::BadSample | GpmError::Mismatch) => return ERROR_INVALID_ARGUMENT,
        }
    }
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> nvmlReturn_t {
    if current.is_null() || pending.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    with_device(device, |sim, gpu| {
        if !sim.model.mig {
            return ERROR_NOT_SUPPORTED;
        }
        let mode = c_uint::from(!sim.mig(gpu).is_empty());
        // SAFETY: both checked non-null above.
        unsafe {
            current.write(mode);
            pending.write(mode);
        }
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMaxMigDeviceCount(
    device: nvmlDevice_t,
    count: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, count, |sim, _, _| {
            if sim.model.mig {
                Ok(7)
            } else {
                Err(ERROR_NOT_SUPPORTED)
            }
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: nvmlDevice_t,
    index: c_uint,
    mig: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    if mig.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    with_device(device, |sim, gpu| {
        if !sim.model.mig {
            return ERROR_NOT_SUPPORTED;
        }
        if index as usize >= sim.mig(gpu).len() {
            return ERROR_NOT_FOUND;
        }
        // SAFETY: checked non-null above.
        unsafe { mig.write(mig_handle(gpu, index)) };
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(
    device: nvmlDevice_t,
    is_mig: *mut c_uint,
) -> nvmlReturn_t {
    if is_mig.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    let answer = with_mig(device, |_, _, _, _| SUCCESS).is_some();
    if !answer {
        // A GPU handle, or nothing valid at all.
        let code = with_device(device, |_, _| SUCCESS);
        if code != SUCCESS {
            return code;
        }
    }
    // SAFETY: checked non-null above.
    unsafe { is_mig.write(c_uint::from(answer)) };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(
    device: nvmlDevice_t,
    id: *mut c_uint,
) -> nvmlReturn_t {
    if id.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    with_mig(device, |_, _, index, _| {
        // SAFETY: checked non-null above.
        unsafe { id.write(Sim::gpu_instance_id(index)) };
        SUCCESS
    })
    .unwrap_or(ERROR_INVALID_ARGUMENT)
}

/// `nvmlDeviceGetName` of a MIG device: the GPU's name and the profile, as NVML names it.
pub(super) unsafe fn mig_name(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> Option<nvmlReturn_t> {
    with_mig(device, |sim, _, _, profile| {
        let text = format!("{} MIG {profile}", sim.model.name);
        // SAFETY: forwarded caller contract.
        unsafe { write_str(&text, name, length) }
    })
}

/// `nvmlDeviceGetUUID` of a MIG device.
pub(super) unsafe fn mig_uuid(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> Option<nvmlReturn_t> {
    with_mig(device, |sim, gpu, index, _| {
        let gpu_uuid = crate::model::uuid(sim.model, gpu);
        let text = format!("MIG-{}-{index:04x}", &gpu_uuid[4..]);
        if text.len() + 1 > length as usize {
            return ERROR_INSUFFICIENT_SIZE;
        }
        // SAFETY: forwarded caller contract.
        unsafe { write_str(&text, uuid, length) }
    })
}
