//! `gantry-agent run`: the daemon. Starts the sampler thread and the local endpoint,
//! and stops both cleanly on shutdown.

use std::time::Duration;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::buffer::Buffer;
use crate::recorder;
use crate::uplink::UplinkConfig;

use crate::api;
use crate::config::Config;
use crate::status::SimulatedGpus;
use crate::status::{AgentInfo, Links};
use crate::telemetry::{self, SamplerConfig, host::HostError};

/// How long shutdown waits for the sampler thread before giving up on it.
const SAMPLER_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create the state directory {path}")]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr} (metrics.listen); is another agent or dcgm-exporter using the port?"
    )]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("the metrics endpoint failed")]
    Serve(#[source] std::io::Error),
    #[error(
        "cannot listen on {addr} (inference.listen); is another inference server using the port?"
    )]
    InferenceListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr} (inference.grpc_listen); is another inference server using the port?"
    )]
    GrpcListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Buffer(#[from] crate::buffer::BufferError),
    #[error(
        "the agent's {0} panicked (a bug; its log says where); it stopped so systemd restarts it whole"
    )]
    Panicked(&'static str),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    create_state_dir(&config.state_dir)?;
    let listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.metrics_listen,
            source,
        })?;
    let local = listener.local_addr().map_err(RunError::Serve)?;

    if let Some(sim) = &config.nvml.simulate {
        tracing::info!(gpus = sim.gpus, model = %sim.model, control_file = %sim.control_file.display(),
            library = %config.nvml.library.display(), "using the simulated NVML; inject faults through the control file");
    }
    let sampler_config = SamplerConfig {
        interval: config.telemetry.interval,
        nvml_library: config.nvml.library.clone(),
        nvml_retry_interval: config.nvml.retry_interval,
        kernel_log: config.kernel_log.clone(),
        state_dir: config.state_dir.clone(),
    };
    let identity = crate::identity::load(&config.state_dir)?;
    let buffer_path = config.state_dir.join("buffer.redb");
    let limits = config.buffer;
    let buffer = tokio::task::spawn_blocking(move || Buffer::open(&buffer_path, limits))
        .await
        .map_err(|e| RunError::Serve(std::io::Error::other(e)))??;
    let buffer = Arc::new(buffer);
    let stats = buffer.stats();
    tracing::info!(
        records = stats.records,
        last_seq = stats.last_seq,
        "telemetry buffer opened"
    );

    // An import killed before it finished (SIGKILL, power loss) leaves its scratch copy.
    crate::bundle::store::BundleStore::new(&config.state_dir).remove_abandoned_staging();
    let (sampler, snapshots) = telemetry::spawn(sampler_config, shutdown.clone())?;
    let bundles = crate::delivery::SharedBundles::default();
    let tasks = gantry_net::supervisor::Supervisor::new(shutdown.clone());
    let appended = Arc::new(Notify::new());
    let health = crate::health::SharedHealth::default();
    let models = Arc::new(crate::serving::Models::default());
    tasks.spawn(
        "recorder",
        recorder::run(
            Arc::clone(&buffer),
            snapshots.clone(),
            Arc::clone(&appended),
            recorder::Judge {
                health: Arc::clone(&health),
                models: Arc::clone(&models),
                monitor: crate::health::Monitor::new(config.health),
            },
            recorder::Journal {
                store: crate::bundle::store::BundleStore::new(&config.state_dir),
                bundles: Arc::clone(&bundles),
            },
            shutdown.clone(),
        ),
    );
    let enrolled = identity.is_some();
    let uplink_status = if let Some(identity) = identity {
        let status = crate::uplink::SharedStatus::default();
        let uplink = UplinkConfig {
            controllers: if config.uplink.controllers.is_empty() {
                vec![identity.enrollment.controller]
            } else {
                config.uplink.controllers.clone()
            },
            heartbeat: config.uplink.heartbeat,
            max_backoff: config.uplink.max_backoff,
            batch_records: 1000,
            batch_bytes: 256 << 10,
            health: Arc::clone(&health),
            delivery: crate::delivery::DeliveryConfig {
                state_dir: config.state_dir.clone(),
                trust_policy: config.trust_policy.clone(),
                onnxruntime: config.onnxruntime.clone(),
                snapshots: snapshots.clone(),
            },
            bundles: Arc::clone(&bundles),
            models: config.inference_listen.map(|_| Arc::clone(&models)),
        };
        tasks.spawn(
            "uplink",
            crate::uplink::run(
                uplink,
                identity,
                Arc::clone(&buffer),
                appended,
                Arc::clone(&status),
                shutdown.clone(),
            ),
        );
        Some(status)
    } else {
        tracing::info!(
            "not enrolled: telemetry stays in the local buffer (run `gantry-agent enroll` to connect to a controller)"
        );
        None
    };
    tasks.close();

    let mut info = AgentInfo {
        started_at_ms: gantry_net::clock::now_ms(),
        state_dir: config.state_dir.display().to_string(),
        metrics_listen: local.to_string(),
        interval_ms: config.telemetry.interval.as_millis() as u64,
        nvml_library: config.nvml.library.display().to_string(),
        simulated: config.nvml.simulate.as_ref().map(|sim| SimulatedGpus {
            gpus: sim.gpus,
            model: sim.model.clone(),
            control_file: sim.control_file.display().to_string(),
        }),
        model_label: config.metrics_model_label,
        onnxruntime: None,
    };
    tracing::info!(addr = %local, "metrics endpoint listening");
    let notifier = gantry_net::notify::Notifier::from_env().map(Arc::new);
    if let Some(notifier) = &notifier {
        notifier.ready(&format!("metrics on {local}"));
        let on_stop = Arc::clone(notifier);
        let stopping = shutdown.clone();
        tasks.spawn("systemd notifier", async move {
            stopping.cancelled().await;
            on_stop.stopping();
        });
        if let Some(every) = gantry_net::notify::watchdog_interval() {
            tasks.spawn(
                "watchdog",
                watchdog(
                    Arc::clone(notifier),
                    every,
                    config.telemetry.interval,
                    snapshots.clone(),
                    shutdown.clone(),
                ),
            );
        }
    }
    if let Some(addr) = config.inference_listen {
        match crate::inference::init(&config.onnxruntime) {
            Ok(()) => {
                info.onnxruntime = Some(config.onnxruntime.display().to_string());
                let listener = TcpListener::bind(addr)
                    .await
                    .map_err(|source| RunError::InferenceListen { addr, source })?;
                let store = crate::bundle::store::BundleStore::new(&config.state_dir);
                let feedback = open_feedback(&config).await;
                if let Some(f) = &feedback {
                    models.set_feedback(Arc::clone(f));
                }
                let capture = open_capture(&config, &buffer).await;
                if let Some(c) = &capture {
                    models.set_capture(Arc::clone(c));
                }
                tasks.spawn(
                    "model loader",
                    crate::serving::watch_store(
                        store,
                        Arc::clone(&models),
                        snapshots.clone(),
                        crate::serving::WatchSettings {
                            golden_every: config.health.golden_interval,
                            execution: config.execution,
                            monitoring: config.monitoring.clone(),
                            feedback,
                            capture,
                        },
                        shutdown.clone(),
                    ),
                );
                let stop = shutdown.clone();
                let served = Arc::clone(&models);
                tasks.spawn("inference endpoint", async move {
                    if let Err(e) = crate::serving::serve(listener, served, stop).await {
                        tracing::error!(error = %e, "the inference endpoint failed");
                    }
                });
                tracing::info!(%addr, "inference endpoint listening (KServe v2 over HTTP)");
                if let Some(grpc) = config.grpc_listen {
                    match TcpListener::bind(grpc.addr).await {
                        Ok(listener) => {
                            let (stop, served) = (shutdown.clone(), Arc::clone(&models));
                            tasks.spawn("gRPC inference endpoint", async move {
                                if let Err(e) =
                                    crate::serving::serve_grpc(listener, served, stop).await
                                {
                                    tracing::error!(error = %e, "the gRPC inference endpoint failed");
                                }
                            });
                            tracing::info!(addr = %grpc.addr, "inference endpoint listening (KServe v2 over gRPC)");
                        }
                        Err(source) if grpc.configured => {
                            return Err(RunError::GrpcListen {
                                addr: grpc.addr,
                                source,
                            });
                        }
                        Err(e) => {
                            tracing::error!(addr = %grpc.addr, error = %e, "gRPC inference endpoint off: cannot listen on the port after the HTTP one (set inference.grpc_listen)");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "inference disabled: ONNX Runtime is not available (set inference.onnxruntime)");
            }
        }
    }
    let links = Links {
        health: Some(Arc::clone(&health)),
        models: Some(Arc::clone(&models)),
        buffer: Some(Arc::clone(&buffer)),
        uplink: uplink_status,
        bundles: enrolled.then(|| {
            (
                bundles,
                crate::bundle::store::BundleStore::new(&config.state_dir),
            )
        }),
    };
    let served = api::serve(listener, info, snapshots, links, shutdown.clone()).await;
    // Whatever ended the endpoint, the sampler stops too.
    shutdown.cancel();

    let joined = tokio::task::spawn_blocking(move || sampler.join());
    let mut sampler_panicked = false;
    match tokio::time::timeout(SAMPLER_GRACE, joined).await {
        Ok(Ok(Ok(()))) => tracing::debug!("sampler joined"),
        Ok(Ok(Err(_))) => {
            tracing::error!("the sampler thread panicked");
            sampler_panicked = true;
        }
        Ok(Err(e)) => tracing::error!(error = %e, "waiting for the sampler failed"),
        Err(_) => {
            tracing::warn!(grace = ?SAMPLER_GRACE, "the sampler did not stop within its grace period; exiting anyway");
        }
    }
    if tokio::time::timeout(SAMPLER_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?SAMPLER_GRACE, "the uplink did not stop within its grace period; exiting anyway");
    }
    if let Some(feedback) = models.feedback()
        && tokio::time::timeout(SAMPLER_GRACE, feedback.flush())
            .await
            .is_err()
    {
        tracing::warn!("the prediction store did not commit its queue within the grace period");
    }
    if let Some(task) = tasks.panicked() {
        return Err(RunError::Panicked(task));
    }
    if sampler_panicked {
        return Err(RunError::Panicked("sampler"));
    }
    served.map_err(RunError::Serve)?;
    tracing::info!("agent stopped");
    Ok(())
}

/// Opens `<state_dir>/predictions.redb`; a store that cannot be opened leaves the
/// Payload capture for the models configured to capture, with the pairs already in the
/// buffer counted against their caps; `None` when no model captures.
async fn open_capture(
    config: &Config,
    buffer: &Arc<crate::buffer::Buffer>,
) -> Option<Arc<crate::serving::capture::Captures>> {
    let captures = Arc::new(crate::serving::capture::Captures::new(
        config.monitoring.capture.clone(),
    )?);
    let (c, b) = (Arc::clone(&captures), Arc::clone(buffer));
    match tokio::task::spawn_blocking(move || c.rebuild(&b)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot count the captured pairs already buffered; capture_max_bytes counts from now");
        }
        Err(e) => tracing::warn!(error = %e, "counting the captured pairs already buffered failed"),
    }
    for (model, settings) in &config.monitoring.capture {
        tracing::info!(model, rate = settings.rate, max_bytes = settings.max_bytes, redacted = ?settings.redact, "payload capture on");
    }
    Some(captures)
}

/// models served without feedback (each feedback call says why) rather than the node
/// without inference.
async fn open_feedback(config: &Config) -> Option<Arc<crate::serving::feedback::Feedback>> {
    let path = config.state_dir.join("predictions.redb");
    let settings = config.monitoring.feedback.clone();
    let window = config.monitoring.window;
    let opened = tokio::task::spawn_blocking(move || {
        crate::serving::feedback::Feedback::open(&path, settings, window)
    })
    .await;
    match opened {
        Ok(Ok(store)) => Some(store),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot open the prediction store; models are served but feedback is refused until the agent restarts with a usable store (move the file aside to start a new one)");
            None
        }
        Err(e) => {
            tracing::error!(error = %e, "opening the prediction store failed");
            None
        }
    }
}

/// Pings the systemd watchdog while the sampler keeps producing samples. A sampler stuck
/// in a driver call stops the pings, so systemd restarts the agent (`WatchdogSec`).
async fn watchdog(
    notifier: Arc<gantry_net::notify::Notifier>,
    every: Duration,
    interval: Duration,
    snapshots: crate::telemetry::SnapshotReceiver,
    shutdown: CancellationToken,
) {
    // A sample may take this long before the agent counts as hung: three intervals, and
    // never less than ten seconds.
    let stale_after = (interval * 3).max(Duration::from_secs(10));
    let started = std::time::Instant::now();
    let mut warned = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let age = snapshots.borrow().as_ref().map(|s| {
            Duration::from_millis(gantry_net::clock::now_ms().saturating_sub(s.sample.taken_at_ms))
        });
        let alive = match age {
            Some(age) => age <= stale_after,
            None => started.elapsed() <= stale_after,
        };
        if alive {
            notifier.watchdog();
            warned = false;
        } else if !warned {
            tracing::error!(stale_for = ?age, "the sampler has not produced a sample; withholding watchdog pings so the service manager restarts the agent");
            notifier.status("sampler stalled");
            warned = true;
        }
    }
}

fn create_state_dir(path: &std::path::Path) -> Result<(), RunError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(path)
        .map_err(|source| RunError::StateDir {
            path: path.to_owned(),
            source,
        })
}
