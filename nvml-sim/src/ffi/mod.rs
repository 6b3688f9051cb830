//! The exported NVML C functions.
//!
//! Each function follows NVML's C contract: out-pointers are checked for null and
//! written only on success; strings are NUL-terminated and refused with
//! `NVML_ERROR_INSUFFICIENT_SIZE` when the caller's buffer is too small. Device handles
//! are `index + 1` and event-set handles their id, cast to pointers: opaque to the
//! caller and never dereferenced here. All state sits behind one mutex, never held
//! while an event wait sleeps.
//!
//! Functions `nvml-wrapper` looks up but the agent never calls are not exported; a
//! call to one of those fails in `nvml-wrapper` with "function not found", as it would
//! against an older real driver.

#![allow(
    unsafe_code,
    non_snake_case,
    unreachable_pub,
    clippy::missing_safety_doc
)]

use std::ffi::{c_char, c_uint, c_ulonglong};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nvml_wrapper_sys::bindings::{
    nvmlDevice_st, nvmlDevice_t, nvmlEnableState_t, nvmlEventData_t, nvmlEventSet_st,
    nvmlEventSet_t, nvmlMemory_v2_t, nvmlPciInfo_t, nvmlReturn_t, nvmlUtilization_t,
};

use crate::sim::{InitError, Sim, UnknownEventSet, Values};

mod extended;

const SUCCESS: nvmlReturn_t = 0;
const ERROR_UNINITIALIZED: nvmlReturn_t = 1;
const ERROR_INVALID_ARGUMENT: nvmlReturn_t = 2;
const ERROR_NOT_SUPPORTED: nvmlReturn_t = 3;
const ERROR_INSUFFICIENT_SIZE: nvmlReturn_t = 7;
const ERROR_DRIVER_NOT_LOADED: nvmlReturn_t = 9;
const ERROR_NOT_FOUND: nvmlReturn_t = 6;
const ERROR_TIMEOUT: nvmlReturn_t = 10;
const ERROR_GPU_IS_LOST: nvmlReturn_t = 15;
const ERROR_UNKNOWN: nvmlReturn_t = 999;

const EVENT_TYPE_XID_CRITICAL_ERROR: c_ulonglong = 8;
const EVENT_TYPE_SINGLE_BIT_ECC: c_ulonglong = 1;
const EVENT_TYPE_DOUBLE_BIT_ECC: c_ulonglong = 2;

const TEMPERATURE_GPU: c_uint = 0;
const CLOCK_GRAPHICS: c_uint = 0;
const CLOCK_SM: c_uint = 1;
const CLOCK_MEM: c_uint = 2;
const MEMORY_ERROR_CORRECTED: c_uint = 0;
const MEMORY_ERROR_UNCORRECTED: c_uint = 1;
const VOLATILE_ECC: c_uint = 0;
const AGGREGATE_ECC: c_uint = 1;
const PCIE_UTIL_TX: c_uint = 0;
const PCIE_UTIL_RX: c_uint = 1;
const RETIREMENT_MULTIPLE_SBE: c_uint = 0;
const RETIREMENT_DBE: c_uint = 1;

/// Longest single sleep inside `nvmlEventSetWait_v2` (and of a hung call), so new events
/// are seen promptly: an injected XID within 200 ms. The real driver blocks instead;
/// checking the control file more often would show up as the agent's own CPU in the
/// footprint benchmark, which measures agent and simulator in one process.
const EVENT_POLL: Duration = Duration::from_millis(200);

/// The simulator and NVML's init reference count.
static STATE: Mutex<Option<(Sim, u32)>> = Mutex::new(None);

fn state() -> MutexGuard<'static, Option<(Sim, u32)>> {
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn device_handle(gpu: u32) -> nvmlDevice_t {
    std::ptr::without_provenance_mut::<nvmlDevice_st>(gpu as usize + 1)
}

/// Runs `f` on the simulator with a valid, present GPU.
fn with_device(
    device: nvmlDevice_t,
    f: impl FnOnce(&mut Sim, u32) -> nvmlReturn_t,
) -> nvmlReturn_t {
    loop {
        let mut guard = state();
        let Some((sim, _)) = guard.as_mut() else {
            return ERROR_UNINITIALIZED;
        };
        let gpu = match device.addr().checked_sub(1) {
            Some(gpu) if gpu < sim.gpus as usize => gpu as u32,
            _ => return ERROR_INVALID_ARGUMENT,
        };
        sim.refresh(false);
        if sim.faults(gpu).hang {
            // A hung driver: the call does not return until the fault is cleared.
            drop(guard);
            std::thread::sleep(EVENT_POLL);
            continue;
        }
        if sim.is_lost(gpu) {
            return ERROR_GPU_IS_LOST;
        }
        return f(sim, gpu);
    }
}

/// Reads one value of a present GPU into `out`.
unsafe fn read_value<T>(
    device: nvmlDevice_t,
    out: *mut T,
    pick: impl FnOnce(&Sim, u32, &Values) -> Result<T, nvmlReturn_t>,
) -> nvmlReturn_t {
    if out.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    with_device(device, |sim, gpu| {
        let values = sim.values(gpu);
        match pick(sim, gpu, &values) {
            Ok(value) => {
                // SAFETY: `out` is non-null and, by NVML's contract, points to a `T`.
                unsafe { out.write(value) };
                SUCCESS
            }
            Err(code) => code,
        }
    })
}

/// Copies `text` NUL-terminated into the caller's buffer of `length` bytes.
unsafe fn write_str(text: &str, buffer: *mut c_char, length: c_uint) -> nvmlReturn_t {
    if buffer.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    if text.len() + 1 > length as usize {
        return ERROR_INSUFFICIENT_SIZE;
    }
    // SAFETY: the caller's buffer holds `length` bytes, which we checked is enough.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buffer, text.len());
        buffer.add(text.len()).write(0);
    }
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    let mut guard = state();
    if let Some((_, count)) = guard.as_mut() {
        *count += 1;
        return SUCCESS;
    }
    match Sim::from_env() {
        Ok(sim) => {
            *guard = Some((sim, 1));
            SUCCESS
        }
        Err(InitError::DriverNotLoaded) => ERROR_DRIVER_NOT_LOADED,
        Err(InitError::BadConfig(message)) => {
            eprintln!("gantry-nvml-sim: {message}");
            ERROR_UNKNOWN
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    nvmlInit_v2()
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    let mut guard = state();
    match guard.as_mut() {
        None => ERROR_UNINITIALIZED,
        Some((_, count)) if *count > 1 => {
            *count -= 1;
            SUCCESS
        }
        Some(_) => {
            *guard = None;
            SUCCESS
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    let text: &'static std::ffi::CStr = match result {
        SUCCESS => c"Success",
        ERROR_UNINITIALIZED => c"Uninitialized",
        ERROR_INVALID_ARGUMENT => c"Invalid Argument",
        ERROR_NOT_SUPPORTED => c"Not Supported",
        ERROR_NOT_FOUND => c"Not Found",
        ERROR_INSUFFICIENT_SIZE => c"Insufficient Size",
        ERROR_DRIVER_NOT_LOADED => c"Driver Not Loaded",
        ERROR_TIMEOUT => c"Timeout",
        ERROR_GPU_IS_LOST => c"GPU is lost",
        _ => c"Unknown Error",
    };
    text.as_ptr()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    if state().is_none() {
        return ERROR_UNINITIALIZED;
    }
    // SAFETY: forwarded caller contract.
    unsafe { write_str("560.35.03", version, length) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> nvmlReturn_t {
    if count.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    match state().as_ref() {
        // SAFETY: non-null out-pointer per NVML's contract.
        Some((sim, _)) => unsafe {
            count.write(sim.gpus);
            SUCCESS
        },
        None => ERROR_UNINITIALIZED,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    if device.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    let mut guard = state();
    let Some((sim, _)) = guard.as_mut() else {
        return ERROR_UNINITIALIZED;
    };
    if index >= sim.gpus {
        return ERROR_INVALID_ARGUMENT;
    }
    sim.refresh(false);
    if sim.is_lost(index) {
        return ERROR_GPU_IS_LOST;
    }
    // SAFETY: non-null out-pointer per NVML's contract.
    unsafe { device.write(device_handle(index)) };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(
    device: nvmlDevice_t,
    index: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { read_value(device, index, |_, gpu, _| Ok(gpu)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    if let Some(code) = unsafe { extended::mig_name(device, name, length) } {
        return code;
    }
    // SAFETY: forwarded caller contract.
    with_device(device, |sim, _| unsafe {
        write_str(sim.model.name, name, length)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    if let Some(code) = unsafe { extended::mig_uuid(device, uuid, length) } {
        return code;
    }
    with_device(device, |sim, gpu| {
        let text = crate::model::uuid(sim.model, gpu);
        // SAFETY: forwarded caller contract.
        unsafe { write_str(&text, uuid, length) }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(
    device: nvmlDevice_t,
    minor: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { read_value(device, minor, |_, gpu, _| Ok(gpu)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, pci, |sim, gpu, _| {
            let bus = crate::model::pci_bus(gpu);
            // SAFETY: `nvmlPciInfo_t` is plain C data; all-zero is a valid value.
            let mut info: nvmlPciInfo_t = std::mem::zeroed();
            info.domain = 0;
            info.bus = c_uint::from(bus);
            info.device = 0;
            info.pciDeviceId = sim.model.pci_device_id;
            info.pciSubSystemId = 0x16C1_10DE;
            fill_c_chars(&mut info.busId, &format!("00000000:{bus:02X}:00.0"));
            fill_c_chars(&mut info.busIdLegacy, &format!("0000:{bus:02X}:00.0"));
            Ok(info)
        })
    }
}

fn fill_c_chars(target: &mut [c_char], text: &str) {
    for (slot, byte) in target
        .iter_mut()
        .zip(text.bytes().chain(std::iter::once(0)))
    {
        *slot = c_char::from_ne_bytes([byte]);
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, utilization, |sim, gpu, v| {
            if !sim.mig(gpu).is_empty() {
                // NVML has no GPU-wide utilisation in MIG mode.
                return Err(ERROR_NOT_SUPPORTED);
            }
            Ok(nvmlUtilization_t {
                gpu: v.gpu_util,
                memory: v.mem_util,
            })
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    if memory.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    // SAFETY: non-null; the caller sets `version` before the call, per NVML's contract.
    let version = unsafe { (*memory).version };
    if let Some(code) = extended::with_mig(device, |sim, gpu, _, profile| {
        // SAFETY: checked non-null above.
        unsafe { memory.write(extended::mig_memory(sim, gpu, profile, version)) };
        SUCCESS
    }) {
        return code;
    }
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, memory, |_, _, v| {
            Ok(nvmlMemory_v2_t {
                version,
                total: v.fb_total,
                reserved: v.fb_reserved,
                free: v.fb_free,
                used: v.fb_used,
            })
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    sensor: c_uint,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, temp, |_, _, v| match sensor {
            TEMPERATURE_GPU => Ok(v.temperature),
            _ => Err(ERROR_INVALID_ARGUMENT),
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(
    device: nvmlDevice_t,
    power: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { read_value(device, power, |_, _, v| Ok(v.power_mw)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { read_value(device, limit, |_, _, v| Ok(v.power_limit_mw)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetEnforcedPowerLimit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { read_value(device, limit, |_, _, v| Ok(v.power_limit_mw)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEnergyConsumption(
    device: nvmlDevice_t,
    energy: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { read_value(device, energy, |_, _, v| Ok(v.energy_mj)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    clock_type: c_uint,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, clock, |_, _, v| match clock_type {
            CLOCK_GRAPHICS | CLOCK_SM => Ok(v.sm_clock),
            CLOCK_MEM => Ok(v.mem_clock),
            _ => Err(ERROR_NOT_SUPPORTED),
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCurrentClocksThrottleReasons(
    device: nvmlDevice_t,
    reasons: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe { read_value(device, reasons, |_, _, v| Ok(v.throttle_reasons)) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    device: nvmlDevice_t,
    error_type: c_uint,
    counter_type: c_uint,
    count: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, count, |_, _, v| match (error_type, counter_type) {
            (MEMORY_ERROR_CORRECTED, VOLATILE_ECC) => Ok(v.ecc_sbe_volatile),
            (MEMORY_ERROR_UNCORRECTED, VOLATILE_ECC) => Ok(v.ecc_dbe_volatile),
            (MEMORY_ERROR_CORRECTED, AGGREGATE_ECC) => Ok(v.ecc_sbe_aggregate),
            (MEMORY_ERROR_UNCORRECTED, AGGREGATE_ECC) => Ok(v.ecc_dbe_aggregate),
            _ => Err(ERROR_INVALID_ARGUMENT),
        })
    }
}

/// Pages retired for `cause` on models with page retirement.
fn retired_pages(sim: &Sim, v: &Values, cause: c_uint) -> Result<u64, nvmlReturn_t> {
    if !sim.model.page_retirement {
        return Err(ERROR_NOT_SUPPORTED);
    }
    match cause {
        RETIREMENT_MULTIPLE_SBE => Ok(v.ecc_sbe_aggregate / 2),
        RETIREMENT_DBE => Ok(v.ecc_dbe_aggregate),
        _ => Err(ERROR_INVALID_ARGUMENT),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages(
    device: nvmlDevice_t,
    cause: c_uint,
    page_count: *mut c_uint,
    addresses: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        nvmlDeviceGetRetiredPages_v2(device, cause, page_count, addresses, std::ptr::null_mut())
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages_v2(
    device: nvmlDevice_t,
    cause: c_uint,
    page_count: *mut c_uint,
    addresses: *mut c_ulonglong,
    timestamps: *mut c_ulonglong,
) -> nvmlReturn_t {
    if page_count.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    with_device(device, |sim, gpu| {
        let v = sim.values(gpu);
        let pages = match retired_pages(sim, &v, cause) {
            Ok(pages) => pages as c_uint,
            Err(code) => return code,
        };
        // SAFETY: `page_count` is non-null; on input it holds the caller's array length.
        let capacity = unsafe { page_count.read() };
        // SAFETY: as above.
        unsafe { page_count.write(pages) };
        if capacity < pages {
            return ERROR_INSUFFICIENT_SIZE;
        }
        for i in 0..pages as usize {
            // SAFETY: the caller's arrays hold `capacity >= pages` entries when non-null.
            unsafe {
                if !addresses.is_null() {
                    addresses
                        .add(i)
                        .write(0x7f00_0000 + (i as c_ulonglong) * 0x1000);
                }
                if !timestamps.is_null() {
                    timestamps.add(i).write(1_700_000_000_000_000);
                }
            }
        }
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPagesPendingStatus(
    device: nvmlDevice_t,
    pending: *mut nvmlEnableState_t,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, pending, |sim, _, v| {
            retired_pages(sim, v, RETIREMENT_DBE).map(|pages| nvmlEnableState_t::from(pages > 0))
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetRemappedRows(
    device: nvmlDevice_t,
    corrected: *mut c_uint,
    uncorrected: *mut c_uint,
    pending: *mut c_uint,
    failure: *mut c_uint,
) -> nvmlReturn_t {
    if corrected.is_null() || uncorrected.is_null() || pending.is_null() || failure.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    with_device(device, |sim, gpu| {
        if !sim.model.row_remapping {
            return ERROR_NOT_SUPPORTED;
        }
        let v = sim.values(gpu);
        let unc = v.ecc_dbe_aggregate as c_uint;
        // SAFETY: all four out-pointers were checked non-null above.
        unsafe {
            corrected.write(c_uint::from(v.ecc_sbe_aggregate > 100));
            uncorrected.write(unc);
            pending.write(c_uint::from(v.ecc_dbe_volatile > 0));
            failure.write(0);
        }
        SUCCESS
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetPcieThroughput(
    device: nvmlDevice_t,
    counter: c_uint,
    value: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, value, |_, _, v| match counter {
            PCIE_UTIL_TX => Ok(v.pcie_tx_kbps),
            PCIE_UTIL_RX => Ok(v.pcie_rx_kbps),
            _ => Err(ERROR_INVALID_ARGUMENT),
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetNumFans(
    device: nvmlDevice_t,
    fans: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, fans, |sim, _, _| match sim.model.fans {
            0 => Err(ERROR_NOT_SUPPORTED),
            n => Ok(n),
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetFanSpeed_v2(
    device: nvmlDevice_t,
    fan: c_uint,
    speed: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, speed, |sim, _, v| match v.fan_percent {
            Some(_) if fan >= sim.model.fans => Err(ERROR_INVALID_ARGUMENT),
            Some(percent) => Ok(percent),
            None => Err(ERROR_NOT_SUPPORTED),
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetSupportedEventTypes(
    device: nvmlDevice_t,
    types: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: forwarded caller contract.
    unsafe {
        read_value(device, types, |_, _, _| {
            Ok(EVENT_TYPE_XID_CRITICAL_ERROR
                | EVENT_TYPE_SINGLE_BIT_ECC
                | EVENT_TYPE_DOUBLE_BIT_ECC)
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    if set.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    let mut guard = state();
    let Some((sim, _)) = guard.as_mut() else {
        return ERROR_UNINITIALIZED;
    };
    let id = sim.create_event_set();
    // SAFETY: non-null out-pointer per NVML's contract.
    unsafe { set.write(std::ptr::without_provenance_mut::<nvmlEventSet_st>(id)) };
    SUCCESS
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    match state()
        .as_mut()
        .map(|(sim, _)| sim.free_event_set(set.addr()))
    {
        Some(true) => SUCCESS,
        Some(false) => ERROR_INVALID_ARGUMENT,
        None => ERROR_UNINITIALIZED,
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    types: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    with_device(device, |sim, gpu| {
        if types & EVENT_TYPE_XID_CRITICAL_ERROR == 0 {
            // Only XID events are ever delivered; accepting others is harmless.
            return SUCCESS;
        }
        if sim.register_xid_events(set.addr(), gpu) {
            SUCCESS
        } else {
            ERROR_INVALID_ARGUMENT
        }
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeout_ms: c_uint,
) -> nvmlReturn_t {
    if data.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
    loop {
        {
            let mut guard = state();
            let Some((sim, _)) = guard.as_mut() else {
                return ERROR_UNINITIALIZED;
            };
            sim.refresh(true);
            match sim.next_event(set.addr()) {
                Err(UnknownEventSet) => return ERROR_INVALID_ARGUMENT,
                Ok(Some((gpu, code))) => {
                    // SAFETY: non-null out-pointer per NVML's contract.
                    unsafe {
                        data.write(nvmlEventData_t {
                            device: device_handle(gpu),
                            eventType: EVENT_TYPE_XID_CRITICAL_ERROR,
                            eventData: code,
                            gpuInstanceId: 0xFFFF_FFFF,
                            computeInstanceId: 0xFFFF_FFFF,
                        });
                    }
                    return SUCCESS;
                }
                Ok(None) => {}
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return ERROR_TIMEOUT;
        }
        std::thread::sleep(EVENT_POLL.min(deadline - now));
    }
}
