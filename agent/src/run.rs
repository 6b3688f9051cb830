//! `gantry-agent run`: the daemon. Starts the sampler thread and the local endpoint,
//! and stops both cleanly on shutdown.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AgentInfo};
use crate::config::Config;
use crate::status::SimulatedGpus;
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
    let (sampler, snapshots) = telemetry::spawn(sampler_config, shutdown.clone())?;

    let info = AgentInfo {
        started_at_ms: api::now_ms(),
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
    };
    tracing::info!(addr = %local, "metrics endpoint listening");
    let served = api::serve(listener, info, snapshots, shutdown.clone()).await;
    // Whatever ended the endpoint, the sampler stops too.
    shutdown.cancel();

    let joined = tokio::task::spawn_blocking(move || sampler.join());
    match tokio::time::timeout(SAMPLER_GRACE, joined).await {
        Ok(Ok(Ok(()))) => tracing::debug!("sampler joined"),
        Ok(Ok(Err(_))) => tracing::error!("the sampler thread panicked"),
        Ok(Err(e)) => tracing::error!(error = %e, "waiting for the sampler failed"),
        Err(_) => {
            tracing::warn!(grace = ?SAMPLER_GRACE, "the sampler did not stop within its grace period; exiting anyway");
        }
    }
    served.map_err(RunError::Serve)?;
    tracing::info!("agent stopped");
    Ok(())
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

/// Cancels `shutdown` on SIGTERM or SIGINT.
pub fn cancel_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        shutdown.cancel();
    });
    Ok(())
}
