//! The agent's health checks, evaluated on every sample: GPUs (lost or missing, ECC
//! uncorrectable errors, row-remapping failures, recent XIDs, temperature and thermal
//! throttling, power over the limit), the node (state-directory space, memory) and the
//! telemetry buffer. The result — healthy, degraded or unhealthy with reasons — is shown
//! by `status`, exported on `/metrics` and sent in every heartbeat.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gantry_shared::health::{Action, Cause, Health, HealthState, Remedy};
use gantry_shared::telemetry::{GpuState, Sample, THERMAL_THROTTLE_MASK};
use gantry_shared::xid;

use crate::serving::ModelHealth;

/// The latest evaluation, shared with the endpoint and the uplink.
pub type SharedHealth = std::sync::Arc<std::sync::Mutex<Health>>;

/// Where the checks draw their lines. Defaults in `Default`.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub gpu_temp_degraded_c: u32,
    pub gpu_temp_unhealthy_c: u32,
    /// How long a new XID counts against health.
    pub xid_window: Duration,
    pub state_dir_free_degraded: u64,
    pub state_dir_free_unhealthy: u64,
    /// Available memory below this share of the total is degraded.
    pub memory_available_min: f64,
    /// How often the served model's golden vectors run again.
    pub golden_interval: Duration,
    /// Failed share of recent inference requests that makes the node degraded.
    pub inference_error_rate: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            gpu_temp_degraded_c: 85,
            gpu_temp_unhealthy_c: 95,
            xid_window: Duration::from_secs(600),
            state_dir_free_degraded: 5 << 30,
            state_dir_free_unhealthy: 512 << 20,
            memory_available_min: 0.05,
            golden_interval: Duration::from_secs(300),
            inference_error_rate: 0.05,
        }
    }
}

/// Evaluates samples; remembers what it needs across them (GPUs seen, XID counts).
#[derive(Debug)]
pub struct Monitor {
    thresholds: Thresholds,
    gpus_seen: usize,
    /// (PCI bus id, code) → (count, when it last grew).
    xids: BTreeMap<(String, u64), (u64, Instant)>,
    last_state: HealthState,
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

impl Monitor {
    pub fn new(thresholds: Thresholds) -> Self {
        Self {
            thresholds,
            gpus_seen: 0,
            xids: BTreeMap::new(),
            last_state: HealthState::Healthy,
        }
    }

    /// The health at `now` given the latest sample and whether the buffer can be written.
    pub fn evaluate(
        &mut self,
        sample: &Sample,
        buffer_problem: Option<&str>,
        models: &[ModelHealth],
        now: Instant,
    ) -> Health {
        let t = self.thresholds;
        let mut h = Health::default();
        self.gpus_seen = self.gpus_seen.max(sample.gpus.len());
        if !sample.nvml.is_available() && self.gpus_seen > 0 {
            h.add(
                "gpu.nvml",
                HealthState::Unhealthy,
                format!(
                    "NVML became unavailable; {} GPU(s) are unmonitored",
                    self.gpus_seen
                ),
                Remedy::new(Cause::Driver, Action::RebootNode),
            );
        } else if sample.gpus.len() < self.gpus_seen {
            h.add(
                "gpu.missing",
                HealthState::Unhealthy,
                format!(
                    "{} of {} GPUs are missing",
                    self.gpus_seen - sample.gpus.len(),
                    self.gpus_seen
                ),
                Remedy::new(Cause::Hardware, Action::RebootNode),
            );
        }
        for gpu in &sample.gpus {
            let id = gpu.identity.index;
            match &gpu.state {
                GpuState::Lost => {
                    h.add(
                        "gpu.lost",
                        HealthState::Unhealthy,
                        format!("GPU {id} has fallen off the bus"),
                        xid::lookup(79).remedy(),
                    );
                    continue;
                }
                GpuState::Error { message } => {
                    h.add(
                        "gpu.read",
                        HealthState::Degraded,
                        format!("GPU {id} cannot be read: {message}"),
                        Remedy::new(Cause::Driver, Action::ResetGpu),
                    );
                    continue;
                }
                GpuState::Ok => {}
            }
            let f = &gpu.fields;
            if let Some(n) = f.ecc_dbe_volatile.filter(|&n| n > 0) {
                h.add(
                    "gpu.ecc",
                    HealthState::Unhealthy,
                    format!("GPU {id} has {n} uncorrectable ECC error(s)"),
                    Remedy::new(Cause::Hardware, Action::ResetGpu),
                );
            }
            if f.row_remap_failure == Some(true) {
                h.add(
                    "gpu.ecc",
                    HealthState::Unhealthy,
                    format!("GPU {id} failed to remap a row; it needs service"),
                    Remedy::new(Cause::Hardware, Action::InspectHardware),
                );
            } else if f.row_remap_pending == Some(true) || f.retired_pages_pending == Some(true) {
                h.add(
                    "gpu.ecc",
                    HealthState::Degraded,
                    format!("GPU {id} has a memory repair pending a reset"),
                    Remedy::new(Cause::Hardware, Action::ResetGpu),
                );
            }
            if let Some(temp) = f.temperature_c {
                if temp >= t.gpu_temp_unhealthy_c {
                    h.add(
                        "gpu.temperature",
                        HealthState::Unhealthy,
                        format!(
                            "GPU {id} is at {temp} °C (limit {} °C)",
                            t.gpu_temp_unhealthy_c
                        ),
                        Remedy::new(Cause::Hardware, Action::InspectHardware),
                    );
                } else if temp >= t.gpu_temp_degraded_c {
                    h.add(
                        "gpu.temperature",
                        HealthState::Degraded,
                        format!(
                            "GPU {id} is at {temp} °C (warning {} °C)",
                            t.gpu_temp_degraded_c
                        ),
                        Remedy::new(Cause::Hardware, Action::InspectHardware),
                    );
                }
            }
            if f.clock_throttle_reasons
                .is_some_and(|bits| bits & THERMAL_THROTTLE_MASK != 0)
            {
                h.add(
                    "gpu.thermal",
                    HealthState::Degraded,
                    format!("GPU {id} is thermally throttled"),
                    Remedy::new(Cause::Hardware, Action::InspectHardware),
                );
            }
            if let (Some(draw), Some(limit)) = (
                f.power_usage_mw,
                f.enforced_power_limit_mw.or(f.power_limit_mw),
            ) && u64::from(draw) * 100 > u64::from(limit) * 105
            {
                h.add(
                    "gpu.power",
                    HealthState::Degraded,
                    format!(
                        "GPU {id} draws {} W over its {} W limit",
                        draw / 1000,
                        limit / 1000
                    ),
                    Remedy::new(Cause::Hardware, Action::InspectHardware),
                );
            }
        }
        for xid in &sample.xids {
            for (&code, &count) in &xid.by_code {
                let key = (xid.pci_bus_id.clone(), code);
                let entry = self.xids.entry(key).or_insert((0, now));
                if count > entry.0 {
                    *entry = (count, now);
                }
                if now.duration_since(entry.1) <= t.xid_window {
                    let gpu = xid
                        .gpu
                        .map_or_else(|| xid.pci_bus_id.clone(), |g| format!("GPU {g}"));
                    let entry = xid::lookup(code);
                    let state = if entry.critical {
                        HealthState::Unhealthy
                    } else {
                        HealthState::Degraded
                    };
                    h.add(
                        "gpu.xid",
                        state,
                        format!(
                            "{gpu} reported XID {code} ({}) in the last {}",
                            entry.name,
                            humantime::format_duration(t.xid_window)
                        ),
                        entry.remedy(),
                    );
                }
            }
        }
        if let Some(dir) = &sample.host.state_dir {
            if dir.free_bytes < t.state_dir_free_unhealthy {
                h.add(
                    "node.disk",
                    HealthState::Unhealthy,
                    format!("{} has {:.2} GiB free", dir.path, gib(dir.free_bytes)),
                    Remedy::new(Cause::Host, Action::CheckHost),
                );
            } else if dir.free_bytes < t.state_dir_free_degraded {
                h.add(
                    "node.disk",
                    HealthState::Degraded,
                    format!("{} has {:.2} GiB free", dir.path, gib(dir.free_bytes)),
                    Remedy::new(Cause::Host, Action::CheckHost),
                );
            }
        }
        let host = &sample.host;
        if host.mem_total_bytes > 0
            && (host.mem_available_bytes as f64)
                < host.mem_total_bytes as f64 * t.memory_available_min
        {
            h.add(
                "node.memory",
                HealthState::Degraded,
                format!(
                    "{:.2} GiB of {:.2} GiB memory available",
                    gib(host.mem_available_bytes),
                    gib(host.mem_total_bytes)
                ),
                Remedy::new(Cause::Host, Action::CheckHost),
            );
        }
        for model in models {
            if let Some(Err(e)) = &model.golden {
                h.add(
                    "model.golden",
                    HealthState::Unhealthy,
                    format!("{}: {e}", model.model),
                    Remedy::new(Cause::Application, Action::CheckApplication),
                );
            }
            if let Some(drift) = model.drift.as_ref().filter(|d| !d.drifted.is_empty()) {
                h.add(
                    "model.drift",
                    HealthState::Degraded,
                    format!(
                        "{}: drifted from its reference data over the last window ({} rows): {} (threshold {})",
                        model.model,
                        drift.rows,
                        drift.describe(5),
                        drift.threshold
                    ),
                    Remedy::new(Cause::Data, Action::ReviewData),
                );
            }
            if model.recent_requests >= 20 && model.recent_error_rate > t.inference_error_rate {
                h.add(
                    "model.errors",
                    HealthState::Degraded,
                    format!(
                        "{}: {:.1} % of the last {} requests failed",
                        model.model,
                        model.recent_error_rate * 100.0,
                        model.recent_requests
                    ),
                    Remedy::new(Cause::Application, Action::CheckApplication),
                );
            }
        }
        if let Some(problem) = buffer_problem {
            h.add(
                "node.buffer",
                HealthState::Unhealthy,
                format!(
                    "the telemetry buffer cannot be written ({problem}); samples are dropped and counted until it can"
                ), Remedy::new(Cause::Host, Action::CheckHost));
        }
        self.log_transition(&h);
        h
    }

    fn log_transition(&mut self, h: &Health) {
        if h.state == self.last_state {
            return;
        }
        let reasons: Vec<&str> = h.reasons.iter().map(|r| r.message.as_str()).collect();
        if h.state > self.last_state {
            tracing::warn!(from = self.last_state.as_str(), to = h.state.as_str(), reasons = ?reasons, "node health worsened");
        } else {
            tracing::info!(from = self.last_state.as_str(), to = h.state.as_str(), reasons = ?reasons, "node health improved");
        }
        self.last_state = h.state;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gantry_shared::telemetry::{
        GpuFields, GpuIdentity, GpuReading, HostReading, NvmlStatus, StateDirReading, XidCounts,
    };

    use super::*;

    fn sample(fields: GpuFields, state: GpuState, xid79: u64) -> Sample {
        Sample {
            taken_at_ms: 1,
            nvml: NvmlStatus::Available {
                driver_version: None,
                library: "x".into(),
            },
            gpus: vec![GpuReading {
                identity: GpuIdentity {
                    index: 0,
                    uuid: "GPU-0".into(),
                    name: "n".into(),
                    pci_bus_id: "00000000:18:00.0".into(),
                },
                state,
                fields,
                mig: Vec::new(),
            }],
            xids: if xid79 == 0 {
                vec![]
            } else {
                vec![XidCounts {
                    pci_bus_id: "00000000:18:00.0".into(),
                    gpu: Some(0),
                    last: 79,
                    by_code: BTreeMap::from([(79, xid79)]),
                }]
            },
            host: HostReading {
                mem_total_bytes: 100 << 30,
                mem_available_bytes: 50 << 30,
                state_dir: Some(StateDirReading {
                    path: "/var/lib/gantry".into(),
                    total_bytes: 100 << 30,
                    free_bytes: 50 << 30,
                }),
                ..HostReading::default()
            },
        }
    }

    #[test]
    fn a_cool_gpu_is_healthy() {
        let mut m = Monitor::new(Thresholds::default());
        let fields = GpuFields {
            temperature_c: Some(50),
            clock_throttle_reasons: Some(0),
            ecc_dbe_volatile: Some(0),
            ..GpuFields::default()
        };
        assert_eq!(
            m.evaluate(&sample(fields, GpuState::Ok, 0), None, &[], Instant::now())
                .state,
            HealthState::Healthy
        );
    }

    #[test]
    fn heat_throttling_and_ecc_are_judged_by_severity() {
        let mut m = Monitor::new(Thresholds::default());
        let hot = GpuFields {
            temperature_c: Some(90),
            clock_throttle_reasons: Some(0x40),
            ..GpuFields::default()
        };
        let h = m.evaluate(&sample(hot, GpuState::Ok, 0), None, &[], Instant::now());
        assert_eq!(h.state, HealthState::Degraded);
        assert!(h.reasons.iter().any(|r| r.check == "gpu.thermal"));
        let ecc = GpuFields {
            ecc_dbe_volatile: Some(2),
            ..GpuFields::default()
        };
        let h = m.evaluate(&sample(ecc, GpuState::Ok, 0), None, &[], Instant::now());
        assert_eq!(h.state, HealthState::Unhealthy);
        assert!(h.reasons[0].message.contains("2 uncorrectable"));
    }

    #[test]
    fn a_lost_or_missing_gpu_is_unhealthy() {
        let mut m = Monitor::new(Thresholds::default());
        assert_eq!(
            m.evaluate(
                &sample(GpuFields::default(), GpuState::Lost, 0),
                None,
                &[],
                Instant::now()
            )
            .state,
            HealthState::Unhealthy
        );
        let mut none = sample(GpuFields::default(), GpuState::Ok, 0);
        none.gpus.clear();
        let h = m.evaluate(&none, None, &[], Instant::now());
        assert!(h.reasons.iter().any(|r| r.check == "gpu.missing"), "{h:?}");
    }

    #[test]
    fn a_critical_xid_counts_for_its_window_then_clears() {
        let mut m = Monitor::new(Thresholds {
            xid_window: Duration::from_secs(60),
            ..Thresholds::default()
        });
        let t0 = Instant::now();
        let h = m.evaluate(
            &sample(GpuFields::default(), GpuState::Ok, 1),
            None,
            &[],
            t0,
        );
        assert_eq!(h.state, HealthState::Unhealthy);
        let later = m.evaluate(
            &sample(GpuFields::default(), GpuState::Ok, 1),
            None,
            &[],
            t0 + Duration::from_secs(61),
        );
        assert_eq!(later.state, HealthState::Healthy, "{later:?}");
        let again = m.evaluate(
            &sample(GpuFields::default(), GpuState::Ok, 2),
            None,
            &[],
            t0 + Duration::from_secs(62),
        );
        assert_eq!(
            again.state,
            HealthState::Unhealthy,
            "a new XID counts again"
        );
    }

    #[test]
    fn node_space_memory_and_buffer_count() {
        let mut m = Monitor::new(Thresholds::default());
        let mut s = sample(GpuFields::default(), GpuState::Ok, 0);
        s.host.state_dir.as_mut().unwrap().free_bytes = 100 << 20;
        s.host.mem_available_bytes = 1 << 30;
        let h = m.evaluate(&s, Some("No space left on device"), &[], Instant::now());
        assert_eq!(h.state, HealthState::Unhealthy);
        let checks: Vec<&str> = h.reasons.iter().map(|r| r.check.as_str()).collect();
        assert_eq!(checks, vec!["node.disk", "node.memory", "node.buffer"]);
    }
}

#[cfg(test)]
mod model_tests {
    use super::*;

    #[test]
    fn a_failing_golden_run_or_many_errors_count() {
        let mut m = Monitor::new(Thresholds::default());
        let sample = gantry_shared::telemetry::Sample {
            taken_at_ms: 1,
            nvml: gantry_shared::telemetry::NvmlStatus::Unavailable {
                reason: "none".into(),
            },
            gpus: vec![],
            xids: vec![],
            host: gantry_shared::telemetry::HostReading::default(),
        };
        let mut model = ModelHealth {
            model: "m 1.0.0".into(),
            golden: Some(Ok(())),
            recent_requests: 100,
            recent_error_rate: 0.01,
            ..ModelHealth::default()
        };
        assert_eq!(
            m.evaluate(&sample, None, std::slice::from_ref(&model), Instant::now())
                .state,
            HealthState::Healthy
        );
        model.recent_error_rate = 0.2;
        let h = m.evaluate(&sample, None, std::slice::from_ref(&model), Instant::now());
        assert_eq!(h.state, HealthState::Degraded);
        assert!(
            h.reasons[0]
                .message
                .contains("20.0 % of the last 100 requests failed")
        );
        model.golden = Some(Err(crate::serving::GoldenFailure::Mismatch {
            vector: "ones".into(),
            output: "y".into(),
            index: 0,
            got: 1.0,
            want: 2.0,
        }));
        assert_eq!(
            m.evaluate(&sample, None, std::slice::from_ref(&model), Instant::now())
                .state,
            HealthState::Unhealthy
        );
    }
}
