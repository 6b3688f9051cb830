//! `gantry-agent run`: the daemon, with the simulated NVML pointed at when asked.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn run(args: RunArgs) -> CommandResult {
    let overrides = Overrides {
        state_dir: args.state_dir,
        interval: args.interval,
        nvml_library: args.nvml_library,
        simulate_gpus: args.simulate_gpus,
        simulate_model: args.simulate_model,
        metrics_listen: args.metrics_listen,
        kernel_log: args.kernel_log.map(PathBuf::from),
        inference_listen: args.inference_listen,
    };
    let config =
        config::load(args.config.config.as_deref(), &overrides).map_err(CommandError::config)?;
    if let Some(sim) = &config.nvml.simulate {
        configure_simulator(sim);
    }
    let runtime =
        runtime().map_err(|e| CommandError::failure("cannot start the async runtime", e))?;
    runtime
        .block_on(async {
            let shutdown = CancellationToken::new();
            if let Err(e) = gantry_net::signals::cancel_on_signals(shutdown.clone()) {
                tracing::warn!(error = %e, "cannot install signal handlers; stop the agent with SIGKILL");
            }
            crate::run::run(config, shutdown).await
        })
        .map_err(CommandError::from_error)?;
    Ok(ExitCode::SUCCESS)
}

/// Points the simulated NVML at its GPU count, model and control file. The library reads
/// these variables in `nvmlInit_v2`, on the sampler thread, long after this runs.
fn configure_simulator(sim: &config::SimulateConfig) {
    #[allow(unsafe_code)]
    // SAFETY: called from `main` before the async runtime or any other thread exists,
    // so nothing can read the environment concurrently.
    unsafe {
        std::env::set_var(gantry_agent_sim_env::GPUS, sim.gpus.to_string());
        std::env::set_var(gantry_agent_sim_env::MODEL, &sim.model);
        std::env::set_var(gantry_agent_sim_env::CONTROL, &sim.control_file);
    }
}

/// The simulated NVML's environment interface (see the `gantry-nvml-sim` crate).
mod gantry_agent_sim_env {
    pub(crate) const GPUS: &str = "GANTRY_NVML_SIM_GPUS";
    pub(crate) const MODEL: &str = "GANTRY_NVML_SIM_MODEL";
    pub(crate) const CONTROL: &str = "GANTRY_NVML_SIM_CONTROL";
}
