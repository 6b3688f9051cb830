//! Telemetry: the sampler thread that reads GPUs (NVML), XIDs (NVML events and the
//! kernel log) and the host, and publishes each [`Snapshot`] for the rest of the agent.
//!
//! NVML and `sysinfo` calls block, so sampling runs on its own OS thread, never on the
//! async runtime. Between samples the thread waits on NVML's event set (or sleeps when
//! there is none) in slices of at most [`WAIT_SLICE`], polling the kernel log and the
//! shutdown token in between. Samples are published through a `watch` channel: readers
//! always see the latest complete snapshot and never block the sampler.
//!
//! NVML missing (no driver, no library, init failure) is not an error: the agent says
//! so once at WARN, reports host metrics, and retries NVML every `nvml.retry_interval`.

pub mod gpu;
pub mod host;
pub mod kernel_log;
pub mod xid;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gantry_shared::telemetry::{NvmlStatus, Sample};
use nvml_wrapper::Nvml;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use self::gpu::{EventWait, GpuSet};
use self::host::HostSampler;
use self::kernel_log::KernelLog;
use self::xid::{XidLedger, XidSource};

/// Longest uninterrupted wait between checks of the kernel log and the shutdown token.
pub const WAIT_SLICE: Duration = Duration::from_millis(250);

/// A published sample with the sampler's own statistics.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub sample: Sample,
    pub stats: SamplerStats,
}

/// The sampler's own figures, exported as `gantry_agent_*` metrics.
#[derive(Debug, Clone, Default)]
pub struct SamplerStats {
    pub interval: Duration,
    pub nvml_library: String,
    pub samples_total: u64,
    /// CPU time of the sampler thread spent inside samples.
    pub sample_cpu: Duration,
    pub last_sample_duration: Duration,
    pub xid_events_nvml: u64,
    pub xid_events_kernel_log: u64,
    pub xid_duplicates: u64,
    pub kernel_log_readable: bool,
    /// Fields the GPUs do not give, and why.
    pub absent_fields: Arc<Vec<gantry_shared::telemetry::AbsentField>>,
}

/// What the sampler needs from configuration.
#[derive(Debug, Clone)]
pub struct SamplerConfig {
    pub interval: Duration,
    pub nvml_library: PathBuf,
    pub nvml_retry_interval: Duration,
    pub kernel_log: Option<PathBuf>,
    pub state_dir: PathBuf,
}

/// Receives published snapshots; `None` until the first sample.
pub type SnapshotReceiver = watch::Receiver<Option<Arc<Snapshot>>>;

/// Starts the sampler thread. It stops when `shutdown` is cancelled.
pub fn spawn(
    config: SamplerConfig,
    shutdown: CancellationToken,
) -> Result<(std::thread::JoinHandle<()>, SnapshotReceiver), host::HostError> {
    let (tx, rx) = watch::channel(None);
    let host = HostSampler::new(config.state_dir.clone())?;
    let kernel_log = open_kernel_log(config.kernel_log.as_deref());
    let sampler = Sampler {
        stats: SamplerStats {
            interval: config.interval,
            nvml_library: config.nvml_library.display().to_string(),
            kernel_log_readable: kernel_log.is_some(),
            ..SamplerStats::default()
        },
        config,
        host,
        kernel_log,
        xids: XidLedger::default(),
        tx,
        shutdown,
        nvml_warned: false,
        next_tick: Instant::now(),
        absent_count: None,
    };
    let handle = std::thread::Builder::new()
        .name("telemetry".to_owned())
        .spawn(move || sampler.run())
        .map_err(|e| host::HostError::new(format!("cannot start the sampler thread: {e}")))?;
    Ok((handle, rx))
}

fn open_kernel_log(path: Option<&std::path::Path>) -> Option<KernelLog> {
    let path = path?;
    match KernelLog::open(path) {
        Ok(log) => {
            tracing::info!(path = %path.display(), "reading XIDs from the kernel log");
            Some(log)
        }
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e,
                "kernel log not readable; XIDs come from NVML events only (grant CAP_SYSLOG or read access to change this)");
            None
        }
    }
}

struct Sampler {
    config: SamplerConfig,
    host: HostSampler,
    kernel_log: Option<KernelLog>,
    xids: XidLedger,
    stats: SamplerStats,
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    shutdown: CancellationToken,
    nvml_warned: bool,
    next_tick: Instant,
    /// [`GpuSet::absent_count`] when the absent fields were last listed; `None` for a
    /// set not listed yet.
    absent_count: Option<usize>,
}

/// NVML could not start: the sampler reports host metrics only and tries again.
#[derive(Debug, thiserror::Error)]
#[error("NVML could not be initialised from {}: {cause}", .library.display())]
struct NvmlUnavailable {
    library: std::path::PathBuf,
    /// NVML's own words, kept in the one line status shows.
    cause: String,
}

impl Sampler {
    fn run(mut self) {
        tracing::debug!(interval = ?self.config.interval, "sampler started");
        while !self.shutdown.is_cancelled() {
            match self.init_nvml() {
                Ok(nvml) => self.run_with_nvml(&nvml),
                Err(unavailable) => {
                    let retry_at = Instant::now() + self.config.nvml_retry_interval;
                    let status = NvmlStatus::Unavailable {
                        reason: unavailable.to_string(),
                    };
                    self.tick_until(Some(retry_at), None, &status);
                }
            }
        }
        tracing::debug!("sampler stopped");
    }

    fn init_nvml(&mut self) -> Result<Nvml, NvmlUnavailable> {
        let library = &self.config.nvml_library;
        let result = Nvml::builder().lib_path(library.as_os_str()).init();
        match result {
            Ok(nvml) => {
                self.nvml_warned = false;
                Ok(nvml)
            }
            Err(e) => {
                let reason = NvmlUnavailable {
                    library: library.clone(),
                    cause: e.to_string(),
                };
                if self.nvml_warned {
                    tracing::debug!(library = %library.display(), error = %e, "NVML still unavailable");
                } else {
                    tracing::warn!(library = %library.display(), error = %e, retry_every = ?self.config.nvml_retry_interval,
                        "NVML is not available (no NVIDIA driver or library?): reporting host metrics only");
                    self.nvml_warned = true;
                }
                Err(reason)
            }
        }
    }

    fn run_with_nvml(&mut self, nvml: &Nvml) {
        let driver_version = nvml.sys_driver_version().ok();
        let mut gpus = match GpuSet::open(nvml) {
            Ok(gpus) => gpus,
            Err(e) => {
                tracing::warn!(error = %e, "NVML initialised but GPUs cannot be enumerated; reporting host metrics only");
                let retry_at = Instant::now() + self.config.nvml_retry_interval;
                let status = NvmlStatus::Unavailable {
                    reason: format!("GPUs cannot be enumerated: {e}"),
                };
                self.tick_until(Some(retry_at), None, &status);
                return;
            }
        };
        tracing::info!(library = %self.config.nvml_library.display(), driver = driver_version.as_deref().unwrap_or("unknown"),
            gpus = gpus.len(), "NVML initialised");
        self.absent_count = None;
        let status = NvmlStatus::Available {
            driver_version,
            library: self.config.nvml_library.display().to_string(),
        };
        self.tick_until(None, Some(&mut gpus), &status);
    }

    /// Samples on every tick and handles events in between, until `until` passes or
    /// shutdown is requested.
    fn tick_until(
        &mut self,
        until: Option<Instant>,
        mut gpus: Option<&mut GpuSet<'_>>,
        nvml: &NvmlStatus,
    ) {
        loop {
            if self.shutdown.is_cancelled() {
                return;
            }
            let now = Instant::now();
            if until.is_some_and(|until| now >= until) {
                return;
            }
            if now >= self.next_tick {
                self.take_sample(gpus.as_deref_mut(), nvml);
                self.next_tick += self.config.interval;
                if self.next_tick <= Instant::now() {
                    // Fell behind (a slow sample or a suspended host): skip, do not burst.
                    self.next_tick = Instant::now() + self.config.interval;
                }
            }
            let wait = self
                .next_tick
                .saturating_duration_since(Instant::now())
                .min(WAIT_SLICE);
            let waited = match gpus.as_deref() {
                Some(gpus) => gpus.wait_event(wait),
                None => EventWait::Unavailable,
            };
            match waited {
                EventWait::Xid(pci, code) => {
                    self.stats.xid_events_nvml += 1;
                    tracing::warn!(pci_bus_id = %gantry_shared::telemetry::format_pci_bus_id(pci), xid = code, "XID event from NVML");
                    self.record_xid(pci, code, XidSource::Nvml);
                }
                EventWait::Timeout => {}
                EventWait::Unavailable => std::thread::sleep(wait),
            }
            self.poll_kernel_log();
        }
    }

    fn poll_kernel_log(&mut self) {
        let Some(log) = &mut self.kernel_log else {
            return;
        };
        let found = log.poll();
        for (pci, code) in found {
            self.stats.xid_events_kernel_log += 1;
            tracing::warn!(pci_bus_id = %gantry_shared::telemetry::format_pci_bus_id(pci), xid = code,
                "XID in the kernel log");
            self.record_xid(pci, code, XidSource::KernelLog);
        }
    }

    fn record_xid(&mut self, pci: xid::PciAddress, code: u64, source: XidSource) {
        if !self.xids.record(pci, code, source, Instant::now()) {
            self.stats.xid_duplicates += 1;
        }
    }

    fn take_sample(&mut self, gpus: Option<&mut GpuSet<'_>>, nvml: &NvmlStatus) {
        let started = Instant::now();
        let cpu_started = cpu_time::ThreadTime::try_now().ok();
        let taken_at_ms = gantry_net::clock::now_ms();

        let (gpu_readings, xids) = match gpus {
            Some(gpus) => {
                let readings = gpus.sample();
                let xids = self.xids.snapshot(|pci| gpus.index_of(pci));
                // Rebuilt (strings and all) only when a field was newly found absent.
                let count = gpus.absent_count();
                if self.absent_count != Some(count) {
                    self.absent_count = Some(count);
                    let absent = gpus.absent_fields();
                    if absent != *self.stats.absent_fields {
                        log_absent(&absent);
                        self.stats.absent_fields = Arc::new(absent);
                    }
                }
                (readings, xids)
            }
            None => (Vec::new(), self.xids.snapshot(|_| None)),
        };
        let host = self.host.sample();
        let sample = Sample {
            taken_at_ms,
            nvml: nvml.clone(),
            gpus: gpu_readings,
            xids,
            host,
        };

        self.stats.samples_total += 1;
        self.stats.last_sample_duration = started.elapsed();
        if let Some(cpu) = cpu_started.and_then(|t| t.try_elapsed().ok()) {
            self.stats.sample_cpu += cpu;
        }
        tracing::trace!(gpus = sample.gpus.len(), took = ?self.stats.last_sample_duration, "sample taken");
        self.tx.send_replace(Some(Arc::new(Snapshot {
            sample,
            stats: self.stats.clone(),
        })));
    }
}

/// Says once, at INFO, which fields the GPUs do not give and why, grouped by field and
/// reason (the same list `gantry-agent status` shows).
fn log_absent(absent: &[gantry_shared::telemetry::AbsentField]) {
    for ((field, reason), gpus) in gantry_shared::telemetry::group_absent(absent) {
        tracing::info!(field, reason, gpus = ?gpus, "GPU field absent from /metrics (never reported as 0)");
    }
}
