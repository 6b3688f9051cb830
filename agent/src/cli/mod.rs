//! The `gantry-agent` command line: its arguments (clap) and one module per command
//! group — `daemon` (`run`), `enroll` (`enroll`, `renew`), `bundles` (`verify`, `import`,
//! `rollback`), `telemetry` (`export-telemetry`, `status`). Outcomes map to exit codes:
//! 0 ok, 1 failure, 2 usage, 64 configuration.

// Doc comments on the argument types are `--help` text, written for operators.
#![allow(clippy::doc_markdown)]

mod bundles;
mod daemon;
mod enroll;
mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{self, Overrides};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gantry_net::command::{CommandError, CommandResult, Exit};
use tokio_util::sync::CancellationToken;

/// The Gantry node agent: GPU and host telemetry for private GPU servers.
#[derive(Debug, Parser)]
#[command(name = "gantry-agent", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain, env = "GANTRY_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent daemon (what the systemd service starts).
    Run(RunArgs),
    /// Show the running agent's GPUs, XIDs and host summary.
    Status(StatusArgs),
    /// Check a bundle file against this node's trust policy (digests and signatures).
    Verify(VerifyArgs),
    /// Enroll this node with a controller, using a join token from `gantry token create`.
    Enroll(EnrollArgs),
    /// Verify a bundle file (removable media), run its golden vectors, and activate it.
    Import(ImportArgs),
    /// Switch back to the previously active bundle.
    Rollback(RollbackArgs),
    /// Write buffered telemetry (with health and events) to a file signed by the node key,
    /// for `gantry telemetry import` on the other side of an air gap.
    ExportTelemetry(ExportArgs),
    /// Renew the node certificate by file, for a node that does not reach its controller
    /// (online, the running agent renews by itself).
    Renew(RenewArgs),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct RenewFiles {
    /// Write a renewal request signed by the node key, for `gantry fleet renew`.
    #[arg(long, value_name = "FILE")]
    offline_request: Option<PathBuf>,
    /// Install the controller's answer from `gantry fleet renew`.
    #[arg(long, value_name = "FILE")]
    offline_response: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RenewArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    files: RenewFiles,
    /// State directory (`state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Where to write the export.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Export the records after this sequence number (the last export's end).
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    after_seq: u64,
    /// At most this many records (an export also stays under 5 MiB).
    #[arg(long, value_name = "N")]
    max_records: Option<usize>,
    /// The running agent to ask; default: metrics.listen. When none answers, the buffer
    /// is read directly.
    #[arg(long, value_name = "ADDR")]
    agent: Option<SocketAddr>,
    /// State directory (`state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// A bundle file, or a signed trust-policy update (JSON) to install over the node's.
    bundle: PathBuf,
    /// Trust policy to use instead of the node's (`trust.policy`).
    #[arg(long, value_name = "POLICY")]
    trust: Option<PathBuf>,
    /// ONNX Runtime library (`inference.onnxruntime`).
    #[arg(long, value_name = "PATH", env = "GANTRY_ONNXRUNTIME")]
    onnxruntime: Option<PathBuf>,
    /// State directory (`state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Accept a version older than the newest of its model this node has run (refused
    /// otherwise, so that an old, validly signed but vulnerable bundle cannot come back).
    #[arg(long)]
    allow_downgrade: bool,
}

#[derive(Debug, Args)]
struct RollbackArgs {
    /// The model to roll back; may be left out when the node serves one model.
    model: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// State directory (`state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The controller's QUIC address, e.g. 10.0.0.5:7443.
    #[arg(long, value_name = "ADDR", required_unless_present_any = ["offline_request", "offline_response"])]
    controller: Option<SocketAddr>,
    /// The join token.
    #[arg(
        long,
        env = "GANTRY_JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        required_unless_present = "offline_response"
    )]
    token: Option<String>,
    /// Enroll by file, for a node that never reaches the controller: make the node key
    /// and write the request to FILE, for `gantry token redeem` on the controller.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["controller", "offline_response"])]
    offline_request: Option<PathBuf>,
    /// Finish an enrollment by file with the controller's response.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["controller", "token"])]
    offline_response: Option<PathBuf>,
    /// The node's name in the fleet (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// State directory (`state_dir`), where the identity is written.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The bundle file.
    bundle: PathBuf,
    /// Trust policy to use instead of the node's (trust.policy).
    #[arg(long, value_name = "POLICY")]
    trust: Option<PathBuf>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// Also run the bundle's golden vectors in this node's ONNX Runtime.
    #[arg(long)]
    golden: bool,
    /// ONNX Runtime library (`inference.onnxruntime`).
    #[arg(long, value_name = "PATH", env = "GANTRY_ONNXRUNTIME")]
    onnxruntime: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// Configuration file; drop-ins are read from `<name>.d/*.toml` beside it.
    #[arg(long, env = "GANTRY_AGENT_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Use the simulated NVML with this many GPUs (no driver needed).
    #[arg(long, value_name = "N")]
    simulate_gpus: Option<u32>,
    /// Model of the simulated GPUs: h100, h200, a100, l40s, v100.
    #[arg(long, value_name = "MODEL", requires = "simulate_gpus")]
    simulate_model: Option<String>,
    /// Address for `/metrics` and the status endpoint (metrics.listen).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// State directory (`state_dir`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Sampling interval, e.g. 1s or 500ms (telemetry.interval).
    #[arg(long, value_name = "DURATION")]
    interval: Option<String>,
    /// NVML library to load (nvml.library).
    #[arg(long, value_name = "PATH")]
    nvml_library: Option<String>,
    /// Kernel log to read XIDs from; empty to disable (`xid.kernel_log`).
    #[arg(long, value_name = "PATH")]
    kernel_log: Option<String>,
    /// Address of the KServe v2 inference endpoint; empty to disable (`inference.listen`).
    #[arg(long, value_name = "ADDR")]
    inference_listen: Option<String>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Agent endpoint to ask; default: metrics.listen from the configuration.
    #[arg(long, value_name = "ADDR")]
    agent: Option<SocketAddr>,
    /// Print the full status as JSON.
    #[arg(long)]
    json: bool,
    /// How long to wait for the agent.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// Runs a parsed command line with logging set up; returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    let format = match cli.log_format {
        LogFormat::Plain => gantry_net::logging::Format::Plain,
        LogFormat::Json => gantry_net::logging::Format::Json,
    };
    gantry_net::logging::init("info", format);
    gantry_net::command::finish(match cli.command {
        Command::Run(args) => daemon::run(args),
        Command::Status(args) => telemetry::status(&args),
        Command::Verify(args) => bundles::verify(&args),
        Command::Enroll(args) => enroll::enroll(args),
        Command::Import(args) => bundles::import(args),
        Command::Rollback(args) => bundles::rollback(args),
        Command::ExportTelemetry(args) => telemetry::export_telemetry(&args),
        Command::Renew(args) => enroll::renew(args),
    })
}

/// The configuration, with `--state-dir` over the file's.
fn load_with_state_dir(
    args: &ConfigArgs,
    state_dir: Option<PathBuf>,
) -> Result<config::Config, CommandError> {
    let overrides = Overrides {
        state_dir,
        ..Overrides::default()
    };
    config::load(args.config.as_deref(), &overrides).map_err(CommandError::config)
}

/// For the commands that write into the state directory: refuses root writing into the
/// service user's directory (`sudo -u gantry` is what works).
fn as_state_dir_owner(config: &config::Config, command: &str) -> Result<(), CommandError> {
    gantry_net::service_dir::check_writer(&config.state_dir, &format!("gantry-agent {command}"))
        .map_err(CommandError::from_error)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gantry-agent")
        .enable_all()
        .build()
}

/// A single-threaded runtime for a CLI command's few calls.
fn command_runtime() -> Result<tokio::runtime::Runtime, CommandError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::failure("cannot start the async runtime", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
