//! The simulator's state: GPUs, their moving values, faults from the control file and
//! pending XID events. Safe code; `ffi` translates NVML's C calls onto it.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crate::control::{Control, DeviceFaults};
use crate::model::{self, GpuModel};

/// How often the control file is checked for changes outside event waits.
const CONTROL_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Why `nvmlInit_v2` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InitError {
    /// The control file asked for an init failure.
    DriverNotLoaded,
    /// The configuration is unusable; the message says why.
    BadConfig(String),
}

/// An event-set handle that was never created or was already freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnknownEventSet;

/// Identity of the control file's current version: changes on every atomic replace.
type Stamp = (u64, SystemTime, u64);

#[derive(Debug, Default)]
pub(crate) struct EventSet {
    /// GPUs registered for XID events.
    registered: Vec<bool>,
    queue: VecDeque<(u32, u64)>,
}

#[derive(Debug)]
pub(crate) struct Sim {
    pub(crate) model: &'static GpuModel,
    pub(crate) gpus: u32,
    started: Instant,
    control_path: Option<PathBuf>,
    control: Control,
    stamp: Option<Stamp>,
    last_check: Instant,
    delivered_xids: usize,
    event_sets: BTreeMap<usize, EventSet>,
    next_event_set: usize,
    /// MIG instances per GPU (profile names), fixed at init as a mode change needs a reset.
    mig: Vec<Vec<String>>,
    /// Allocated GPM samples; `None` until filled by `nvmlGpmSampleGet`.
    gpm_samples: BTreeMap<usize, Option<GpmRecord>>,
    next_gpm_sample: usize,
}

/// What a GPM sample captured: whose counters, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GpmRecord {
    pub(crate) gpu: u32,
    /// GPU instance for a MIG sample.
    pub(crate) instance: Option<u32>,
    pub(crate) t: f64,
}

/// GPM metric ids the simulator computes (NVML's `nvmlGpmMetricId_t`).
pub(crate) mod gpm_metric {
    pub(crate) const GRAPHICS_UTIL: u32 = 1;
    pub(crate) const ANY_TENSOR_UTIL: u32 = 5;
    pub(crate) const DRAM_BW_UTIL: u32 = 10;
    pub(crate) const PCIE_TX_PER_SEC: u32 = 20;
    pub(crate) const PCIE_RX_PER_SEC: u32 = 21;
}

/// Why a GPM computation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GpmError {
    /// A sample handle is unknown or was never filled.
    BadSample,
    /// The samples are of different GPUs or instances, or not in time order.
    Mismatch,
}

/// Every value a GPU reports at one instant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Values {
    pub(crate) gpu_util: u32,
    pub(crate) mem_util: u32,
    pub(crate) fb_total: u64,
    pub(crate) fb_reserved: u64,
    pub(crate) fb_used: u64,
    pub(crate) fb_free: u64,
    pub(crate) temperature: u32,
    pub(crate) power_mw: u32,
    pub(crate) power_limit_mw: u32,
    pub(crate) energy_mj: u64,
    pub(crate) sm_clock: u32,
    pub(crate) mem_clock: u32,
    pub(crate) throttle_reasons: u64,
    pub(crate) ecc_sbe_volatile: u64,
    pub(crate) ecc_dbe_volatile: u64,
    pub(crate) ecc_sbe_aggregate: u64,
    pub(crate) ecc_dbe_aggregate: u64,
    pub(crate) pcie_tx_kbps: u32,
    pub(crate) pcie_rx_kbps: u32,
    pub(crate) fan_percent: Option<u32>,
    pub(crate) memory_temperature: Option<u32>,
    pub(crate) pcie_replays: u64,
    pub(crate) enc_util: Option<u32>,
    pub(crate) dec_util: u32,
    /// NVLink data sent and received per link since init, KiB.
    pub(crate) nvlink_tx_kib_per_link: u64,
    pub(crate) nvlink_rx_kib_per_link: u64,
}

const MIB: u64 = 1024 * 1024;

impl Sim {
    /// Builds the simulator from the environment and the control file, as at `nvmlInit_v2`.
    pub(crate) fn from_env() -> Result<Self, InitError> {
        let control_path = std::env::var_os(crate::ENV_CONTROL).map(PathBuf::from);
        let mut sim = Self {
            model: &model::MODELS[0],
            gpus: 8,
            started: Instant::now(),
            control_path,
            control: Control::default(),
            stamp: None,
            last_check: Instant::now(),
            delivered_xids: 0,
            event_sets: BTreeMap::new(),
            next_event_set: 1,
            mig: Vec::new(),
            gpm_samples: BTreeMap::new(),
            next_gpm_sample: 1,
        };
        sim.reload_control().map_err(InitError::BadConfig)?;
        // Events already in the file when NVML initialises happened "before boot".
        sim.delivered_xids = sim.control.xid_events.len();

        let gpus = match (&sim.control.gpus, std::env::var(crate::ENV_GPUS)) {
            (Some(gpus), _) => *gpus,
            (None, Ok(text)) => text.trim().parse().map_err(|_| {
                InitError::BadConfig(format!("{}={text:?} is not a GPU count", crate::ENV_GPUS))
            })?,
            (None, Err(_)) => 8,
        };
        if gpus > crate::MAX_GPUS {
            return Err(InitError::BadConfig(format!(
                "{gpus} GPUs asked for; at most {} can be simulated",
                crate::MAX_GPUS
            )));
        }
        let model_key = sim
            .control
            .model
            .clone()
            .or_else(|| std::env::var(crate::ENV_MODEL).ok())
            .unwrap_or_else(|| "h100".to_owned());
        sim.model = model::find(&model_key).ok_or_else(|| {
            InitError::BadConfig(format!(
                "unknown GPU model {model_key:?}; known models: {}",
                model::model_keys().join(", ")
            ))
        })?;
        sim.gpus = gpus;
        sim.mig = (0..gpus)
            .map(|gpu| sim.mig_profiles_at_init(gpu))
            .collect::<Result<_, _>>()
            .map_err(InitError::BadConfig)?;
        if sim.control.init_failure {
            return Err(InitError::DriverNotLoaded);
        }
        Ok(sim)
    }

    /// The MIG profiles the control file asks of `gpu`, checked against the model.
    fn mig_profiles_at_init(&self, gpu: u32) -> Result<Vec<String>, String> {
        let profiles = self.control.faults(gpu).mig;
        if profiles.is_empty() {
            return Ok(profiles);
        }
        if !self.model.mig {
            return Err(format!(
                "GPU {gpu}: {} does not support MIG",
                self.model.key
            ));
        }
        let mut slices = 0;
        for profile in &profiles {
            match (
                model::mig_profile_slices(profile),
                model::mig_profile_memory_mib(profile),
            ) {
                (Some(n), Some(_)) => slices += n,
                _ => {
                    return Err(format!(
                        "GPU {gpu}: MIG profile {profile:?} is not of the form 1g.10gb"
                    ));
                }
            }
        }
        if slices > 7 {
            return Err(format!(
                "GPU {gpu}: MIG profiles {profiles:?} need {slices} of 7 compute slices"
            ));
        }
        Ok(profiles)
    }

    /// MIG instances of `gpu` (empty: not in MIG mode).
    pub(crate) fn mig(&self, gpu: u32) -> &[String] {
        self.mig.get(gpu as usize).map_or(&[], Vec::as_slice)
    }

    /// GPU instance id of MIG instance `index` of a GPU: NVML numbers instances by
    /// placement; the simulator counts from 1.
    pub(crate) fn gpu_instance_id(index: u32) -> u32 {
        index + 1
    }

    /// Seconds since init.
    pub(crate) fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub(crate) fn alloc_gpm_sample(&mut self) -> usize {
        let id = self.next_gpm_sample;
        self.next_gpm_sample += 1;
        self.gpm_samples.insert(id, None);
        id
    }

    pub(crate) fn free_gpm_sample(&mut self, id: usize) -> bool {
        self.gpm_samples.remove(&id).is_some()
    }

    pub(crate) fn fill_gpm_sample(&mut self, id: usize, record: GpmRecord) -> bool {
        match self.gpm_samples.get_mut(&id) {
            Some(slot) => {
                *slot = Some(record);
                true
            }
            None => false,
        }
    }

    /// Metric `metric` between two samples, in NVML's units (percent, MiB/s); `None`
    /// when the simulator does not compute that metric for that kind of sample.
    pub(crate) fn gpm_metric(
        &self,
        first: usize,
        second: usize,
        metric: u32,
    ) -> Result<Option<f64>, GpmError> {
        let get = |id| {
            self.gpm_samples
                .get(&id)
                .copied()
                .flatten()
                .ok_or(GpmError::BadSample)
        };
        let (a, b) = (get(first)?, get(second)?);
        if a.gpu != b.gpu || a.instance != b.instance || b.t <= a.t {
            return Err(GpmError::Mismatch);
        }
        // Activity over the interval, taken at its midpoint; an instance has a wave of
        // its own.
        let wave_of = a.gpu + a.instance.map_or(0, |i| 16 * (i + 1));
        let v = values_at(
            self.model,
            wave_of,
            f64::midpoint(a.t, b.t),
            self.faults(a.gpu),
        );
        let util = f64::from(v.gpu_util);
        Ok(match (metric, a.instance) {
            (gpm_metric::GRAPHICS_UTIL, _) => Some(util * 0.97),
            (gpm_metric::ANY_TENSOR_UTIL, _) => Some(util * 0.55),
            (gpm_metric::DRAM_BW_UTIL, _) => Some(f64::from(v.mem_util)),
            (gpm_metric::PCIE_TX_PER_SEC, None) => Some(f64::from(v.pcie_tx_kbps) / 1024.0),
            (gpm_metric::PCIE_RX_PER_SEC, None) => Some(f64::from(v.pcie_rx_kbps) / 1024.0),
            _ => None,
        })
    }

    /// Re-reads the control file if it changed. Returns a message when it cannot be parsed
    /// (the previous document stays in force).
    fn reload_control(&mut self) -> Result<(), String> {
        let Some(path) = &self.control_path else {
            return Ok(());
        };
        let stamp = std::fs::metadata(path).ok().map(|m| {
            (
                m.ino(),
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
            )
        });
        if stamp == self.stamp {
            return Ok(());
        }
        self.stamp = stamp;
        if stamp.is_none() {
            self.control = Control::default();
            return Ok(());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read control file {}: {e}", path.display()))?;
        self.control = Control::from_json(&text)
            .map_err(|e| format!("control file {} is not valid: {e}", path.display()))?;
        Ok(())
    }

    /// Picks up control-file changes (at most every 100 ms unless `force`) and queues
    /// newly appended XID events on the event sets registered for them.
    pub(crate) fn refresh(&mut self, force: bool) {
        if !force && self.last_check.elapsed() < CONTROL_CHECK_INTERVAL {
            return;
        }
        self.last_check = Instant::now();
        if let Err(message) = self.reload_control() {
            eprintln!("gantry-nvml-sim: {message}; keeping the previous control document");
        }
        let events = &self.control.xid_events;
        if events.len() < self.delivered_xids {
            // The file was rewritten with fewer events: start counting from here.
            self.delivered_xids = events.len();
        }
        for event in &events[self.delivered_xids..] {
            for set in self.event_sets.values_mut() {
                if set
                    .registered
                    .get(event.gpu as usize)
                    .copied()
                    .unwrap_or(false)
                {
                    set.queue.push_back((event.gpu, event.code));
                }
            }
        }
        self.delivered_xids = events.len();
    }

    /// Faults of one GPU, borrowed: every NVML call asks, so nothing is cloned.
    pub(crate) fn faults(&self, gpu: u32) -> &DeviceFaults {
        static NONE: DeviceFaults = DeviceFaults {
            overheat: false,
            ecc_uncorrectable: 0,
            ecc_correctable: 0,
            lost: false,
            hang: false,
            utilization: None,
            mig: Vec::new(),
            vgpu_licensed: None,
        };
        self.control.devices.get(&gpu).unwrap_or(&NONE)
    }

    pub(crate) fn is_lost(&self, gpu: u32) -> bool {
        self.faults(gpu).lost
    }

    pub(crate) fn create_event_set(&mut self) -> usize {
        let id = self.next_event_set;
        self.next_event_set += 1;
        self.event_sets.insert(
            id,
            EventSet {
                registered: vec![false; self.gpus as usize],
                queue: VecDeque::new(),
            },
        );
        id
    }

    pub(crate) fn free_event_set(&mut self, id: usize) -> bool {
        self.event_sets.remove(&id).is_some()
    }

    pub(crate) fn register_xid_events(&mut self, id: usize, gpu: u32) -> bool {
        match self.event_sets.get_mut(&id) {
            Some(set) => {
                set.registered[gpu as usize] = true;
                true
            }
            None => false,
        }
    }

    /// Next pending event of a set, as (GPU, XID code).
    pub(crate) fn next_event(&mut self, id: usize) -> Result<Option<(u32, u64)>, UnknownEventSet> {
        let set = self.event_sets.get_mut(&id).ok_or(UnknownEventSet)?;
        Ok(set.queue.pop_front())
    }

    /// The values of GPU `gpu` now.
    pub(crate) fn values(&self, gpu: u32) -> Values {
        let t = self.started.elapsed().as_secs_f64();
        values_at(self.model, gpu, t, self.faults(gpu))
    }
}

/// Values of GPU `gpu` of `model` at `t` seconds after init, under `faults`.
pub(crate) fn values_at(model: &GpuModel, gpu: u32, t: f64, faults: &DeviceFaults) -> Values {
    let phase = f64::from(gpu) * 0.7;
    let wave = 0.5 + 0.35 * (t / 20.0 + phase).sin() + 0.1 * (t / 3.1 + 2.0 * phase).sin();
    let gpu_util = faults.utilization.map_or_else(
        || (wave.clamp(0.0, 1.0) * 100.0).round() as u32,
        |u| u.min(100),
    );
    let util = f64::from(gpu_util) / 100.0;

    let fb_total = model.memory_mib * MIB;
    let fb_reserved = 512 * MIB;
    let used_share = 0.3 + 0.2 * (1.0 + (t / 60.0 + phase).sin());
    let fb_used = ((fb_total - fb_reserved) as f64 * used_share) as u64 / MIB * MIB;
    let fb_free = fb_total - fb_reserved - fb_used;

    let power_mw =
        (f64::from(model.idle_w) + f64::from(model.tdp_w - model.idle_w) * util) * 1000.0;
    let mean_power_mw = f64::from(model.idle_w + model.tdp_w) / 2.0 * 1000.0;
    // Energy since "driver load": a GPU that has been up for a day, plus what it used since.
    let energy_mj = (mean_power_mw * (86_400.0 + t)) as u64;

    let mut temperature = 32 + (f64::from(gpu_util) * 0.38) as u32;
    let mut sm_clock = (f64::from(model.max_sm_clock_mhz) * (0.75 + 0.25 * util)) as u32;
    let mut throttle_reasons = u64::from(gpu_util < 5); // GPU idle
    if gpu_util >= 95 {
        throttle_reasons |= 0x4; // software power cap
    }
    if faults.overheat {
        temperature = 93;
        sm_clock = sm_clock * 6 / 10;
        throttle_reasons |= 0x20 | 0x40;
    }

    // Lifetime counts differ per GPU so aggregates are visibly not volatile counts.
    let lifetime_sbe = u64::from(gpu) * 3;
    // NVLink carries data in proportion to the activity wave: its integral since init.
    let activity_seconds = faults.utilization.map_or_else(
        || {
            0.5 * t
                - 7.0 * ((t / 20.0 + phase).cos() - phase.cos())
                - 0.31 * ((t / 3.1 + 2.0 * phase).cos() - (2.0 * phase).cos())
        },
        |u| f64::from(u.min(100)) / 100.0 * t,
    );
    let nvlink_kib_per_link = (activity_seconds.max(0.0) * 20_000_000.0) as u64;
    Values {
        gpu_util,
        mem_util: (f64::from(gpu_util) * 0.6) as u32,
        fb_total,
        fb_reserved,
        fb_used,
        fb_free,
        temperature,
        power_mw: power_mw as u32,
        power_limit_mw: model.tdp_w * 1000,
        energy_mj,
        sm_clock,
        mem_clock: model.mem_clock_mhz,
        throttle_reasons,
        ecc_sbe_volatile: faults.ecc_correctable,
        ecc_dbe_volatile: faults.ecc_uncorrectable,
        ecc_sbe_aggregate: lifetime_sbe + faults.ecc_correctable,
        ecc_dbe_aggregate: faults.ecc_uncorrectable,
        pcie_tx_kbps: (2_000_000.0 * util) as u32 + 1_000,
        pcie_rx_kbps: (6_000_000.0 * util) as u32 + 1_500,
        fan_percent: (model.fans > 0).then(|| 30 + (f64::from(gpu_util) * 0.6) as u32),
        memory_temperature: model.memory_temperature.then_some(temperature + 4),
        pcie_replays: u64::from(gpu % 3),
        enc_util: model.encoder.then_some(gpu_util / 5),
        dec_util: gpu_util / 10,
        nvlink_tx_kib_per_link: if model.nvlinks > 0 {
            nvlink_kib_per_link
        } else {
            0
        },
        nvlink_rx_kib_per_link: if model.nvlinks > 0 {
            nvlink_kib_per_link / 10 * 9
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> &'static GpuModel {
        model::find("h100").unwrap()
    }

    #[test]
    fn values_move_over_time_and_differ_per_gpu() {
        let none = DeviceFaults::default();
        let a = values_at(h100(), 0, 0.0, &none);
        let b = values_at(h100(), 0, 15.0, &none);
        let c = values_at(h100(), 1, 0.0, &none);
        assert_ne!(a.gpu_util, b.gpu_util);
        assert_ne!(a.gpu_util, c.gpu_util);
        assert!(b.energy_mj > a.energy_mj);
        assert_eq!(a.fb_used + a.fb_free + a.fb_reserved, a.fb_total);
    }

    #[test]
    fn overheat_throttles_and_cuts_clocks() {
        let hot = DeviceFaults {
            overheat: true,
            utilization: Some(50),
            ..DeviceFaults::default()
        };
        let cool = DeviceFaults {
            utilization: Some(50),
            ..DeviceFaults::default()
        };
        let hot = values_at(h100(), 0, 1.0, &hot);
        let cool = values_at(h100(), 0, 1.0, &cool);
        assert_eq!(hot.temperature, 93);
        assert_eq!(hot.throttle_reasons & 0x60, 0x60);
        assert_eq!(cool.throttle_reasons & 0x60, 0);
        assert!(hot.sm_clock < cool.sm_clock);
    }

    #[test]
    fn ecc_faults_add_to_counters() {
        let faults = DeviceFaults {
            ecc_uncorrectable: 2,
            ecc_correctable: 5,
            ..DeviceFaults::default()
        };
        let v = values_at(h100(), 2, 1.0, &faults);
        assert_eq!(v.ecc_dbe_volatile, 2);
        assert_eq!(v.ecc_dbe_aggregate, 2);
        assert_eq!(v.ecc_sbe_volatile, 5);
        assert_eq!(v.ecc_sbe_aggregate, 6 + 5);
    }

    #[test]
    fn nvlink_counters_only_grow() {
        let none = DeviceFaults::default();
        let mut previous = 0;
        for step in 0..400 {
            let v = values_at(h100(), 3, f64::from(step) * 0.5, &none);
            assert!(v.nvlink_tx_kib_per_link >= previous, "step {step}");
            previous = v.nvlink_tx_kib_per_link;
        }
        assert!(previous > 0);
        assert_eq!(
            values_at(model::find("l40s").unwrap(), 0, 9.0, &none).nvlink_tx_kib_per_link,
            0
        );
    }

    #[test]
    fn passively_cooled_models_have_no_fan() {
        let none = DeviceFaults::default();
        assert_eq!(values_at(h100(), 0, 1.0, &none).fan_percent, None);
        assert!(
            values_at(model::find("l40s").unwrap(), 0, 1.0, &none)
                .fan_percent
                .is_some()
        );
    }
}
