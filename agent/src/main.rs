//! `gantry-agent`: parses arguments, loads configuration, starts logging, runs the
//! library, and maps the outcome to an exit code (0 ok, 1 failure, 2 usage, 64 config).

// Doc comments on the argument types are `--help` text, written for operators.
#![allow(clippy::doc_markdown)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gantry_agent::config::{self, ConfigError, Overrides};
use tokio_util::sync::CancellationToken;

const EXIT_FAILURE: u8 = 1;
const EXIT_CONFIG: u8 = 64;

/// The Gantry node agent: GPU and host telemetry for private GPU servers.
#[derive(Debug, Parser)]
#[command(name = "gantry-agent", version, about, propagate_version = true)]
struct Cli {
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

fn main() -> ExitCode {
    keep_onnxruntime_in_the_state_dir();
    gantry_agent::memory::limit_arenas();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Run(args) => run(args),
        Command::Status(args) => status(&args),
        Command::Verify(args) => verify(&args),
        Command::Enroll(args) => enroll(args),
        Command::Import(args) => import(args),
        Command::Rollback(args) => rollback(args),
        Command::ExportTelemetry(args) => export_telemetry(&args),
        Command::Renew(args) => renew(args),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: under systemd, stderr goes to the journal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_on_stderr())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Prints an error with its chain of causes, as operators read it.
fn report(context: &str, error: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {context}{error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

/// The configuration, with `--state-dir` over the file's; a bad one is reported and
/// its exit code returned.
fn load_with_state_dir(
    args: &ConfigArgs,
    state_dir: Option<PathBuf>,
) -> Result<config::Config, ExitCode> {
    let overrides = Overrides {
        state_dir,
        ..Overrides::default()
    };
    config::load(args.config.as_deref(), &overrides).map_err(|e| config_failure(&e))
}

/// For the commands that write into the state directory: refuses root writing into the
/// service user's directory (`sudo -u gantry` is what works).
fn as_state_dir_owner(config: &config::Config, command: &str) -> Result<(), ExitCode> {
    gantry_net::service_dir::check_writer(&config.state_dir, &format!("gantry-agent {command}"))
        .map_err(|e| {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        })
}

fn colour_on_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none()
}

fn config_failure(error: &ConfigError) -> ExitCode {
    report("", error);
    ExitCode::from(EXIT_CONFIG)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gantry-agent")
        .enable_all()
        .build()
}

fn run(args: RunArgs) -> ExitCode {
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
    let config = match config::load(args.config.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => return config_failure(&e),
    };
    if let Some(sim) = &config.nvml.simulate {
        configure_simulator(sim);
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            report("cannot start the async runtime: ", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let outcome = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(e) = gantry_agent::run::cancel_on_signals(shutdown.clone()) {
            tracing::warn!(error = %e, "cannot install signal handlers; stop the agent with SIGKILL");
        }
        gantry_agent::run::run(config, shutdown).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// ONNX Runtime's own telemetry writes a device id and a database under
/// `~/.cache/Microsoft/DeveloperTools` and a session file in `/tmp` as soon as its
/// environment is created (turning it off through the API comes too late): the agent
/// writes nothing outside its state directory, so it is switched off before the library
/// can ever load.
fn keep_onnxruntime_in_the_state_dir() {
    #[allow(unsafe_code)]
    // SAFETY: the first thing `main` does, before any other thread exists, so nothing can
    // read the environment concurrently.
    unsafe {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
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

/// A DNS-label version of the host name: lowercase, other characters as '-'.
fn default_node_name() -> String {
    let host = gantry_agent::telemetry::host::hostname().to_ascii_lowercase();
    let mut name: String = host
        .split('.')
        .next()
        .unwrap_or("node")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "node".to_owned()
    } else {
        name
    }
}

fn enroll(args: EnrollArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = as_state_dir_owner(&config, "enroll …") {
        return code;
    }
    if let Some(path) = &args.offline_response {
        return enroll_offline_response(&config.state_dir, path);
    }
    let token = match gantry_shared::protocol::enroll::JoinToken::parse(
        args.token.as_deref().unwrap_or_default(),
    ) {
        Ok(token) => token,
        Err(e) => {
            report("--token: ", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let name = args.name.unwrap_or_else(default_node_name);
    if let Some(path) = &args.offline_request {
        return enroll_offline_request(&config.state_dir, &token, &name, path);
    }
    let Some(controller) = args.controller else {
        eprintln!(
            "error: --controller is needed (or --offline-request for a node that cannot reach it)"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report("cannot start the async runtime: ", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        report(
            &format!("cannot create {}: ", config.state_dir.display()),
            &e,
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    match runtime.block_on(gantry_agent::identity::enroll(
        &config.state_dir,
        controller,
        &token,
        &name,
    )) {
        Ok(identity) => {
            println!(
                "enrolled    as {} with {}",
                identity.enrollment.name, identity.enrollment.controller
            );
            if !identity.enrollment.labels.is_empty() {
                let labels: Vec<String> = identity
                    .enrollment
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!("labels      {}", labels.join(","));
            }
            println!(
                "identity    {} (the key never left this node)",
                gantry_agent::identity::identity_dir(&config.state_dir).display()
            );
            println!("next        gantry-agent run");
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn enroll_offline_request(
    state_dir: &std::path::Path,
    token: &gantry_shared::protocol::enroll::JoinToken,
    name: &str,
    out: &std::path::Path,
) -> ExitCode {
    let result = std::fs::create_dir_all(state_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            gantry_agent::identity::offline_request(state_dir, token, name)
                .map_err(|e| gantry_shared::bundle::outcome::error_chain(&e))
        })
        .and_then(|request| {
            let mut bytes = serde_json::to_vec_pretty(&request).expect("request serializes");
            bytes.push(b'\n');
            std::fs::write(out, bytes).map_err(|e| format!("cannot write {}: {e}", out.display()))
        });
    match result {
        Ok(()) => {
            println!(
                "request     {} (node {name}; the node key stays in {})\nnext        carry it to the controller: gantry token redeem {} --out RESPONSE\n            then here: gantry-agent enroll --offline-response RESPONSE",
                out.display(),
                gantry_agent::identity::identity_dir(state_dir).display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn enroll_offline_response(state_dir: &std::path::Path, path: &std::path::Path) -> ExitCode {
    let response = std::fs::read(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|bytes| {
            serde_json::from_slice::<gantry_shared::protocol::enroll::OfflineResponse>(&bytes)
                .map_err(|e| format!("{} is not an enrollment response: {e}", path.display()))
        });
    let installed = response.and_then(|response| {
        gantry_agent::identity::offline_install(state_dir, &response)
            .map_err(|e| gantry_shared::bundle::outcome::error_chain(&e))
    });
    match installed {
        Ok(identity) => {
            println!(
                "enrolled    as {} (by file; controller {})\nidentity    {} (the key never left this node)\nnext        gantry-agent run",
                identity.enrollment.name,
                identity.enrollment.controller,
                gantry_agent::identity::identity_dir(state_dir).display()
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn verify(args: &VerifyArgs) -> ExitCode {
    let config = match config::load(args.config.config.as_deref(), &Overrides::default()) {
        Ok(config) => config,
        Err(e) => return config_failure(&e),
    };
    let policy = args.trust.clone().unwrap_or(config.trust_policy);
    let now = std::time::SystemTime::now();
    let (outcome, golden) = if args.golden {
        let library = args.onnxruntime.clone().unwrap_or(config.onnxruntime);
        match gantry_agent::bundle::verify_with_golden(&args.bundle, &policy, &library, now) {
            Ok(result) => result,
            Err(e) => {
                report("", &e);
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    } else {
        match gantry_agent::bundle::verify_file(&args.bundle, &policy, now) {
            Ok(outcome) => (outcome, Vec::new()),
            Err(e) => {
                report("", &e);
                return ExitCode::from(EXIT_FAILURE);
            }
        }
    };
    let golden_ok = golden.iter().all(|g| g.passed);
    if args.json {
        let mut value = serde_json::to_value(&outcome).expect("outcome serializes");
        if args.golden {
            value["golden"] = serde_json::to_value(&golden).expect("results serialize");
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&value).expect("outcome serializes")
        );
    } else {
        print!("{}", outcome.render_text());
        for g in &golden {
            match (&g.error, &g.first_mismatch) {
                (Some(error), _) => println!("golden      {}: FAILED: {error}", g.name),
                (None, Some((output, index, got, want))) => println!(
                    "golden      {}: FAILED: output {output:?} element {index} is {got}, expected {want} (max error {:.3e})",
                    g.name, g.max_abs_error
                ),
                (None, None) => println!(
                    "golden      {}: ok (max error {:.3e})",
                    g.name, g.max_abs_error
                ),
            }
        }
    }
    if outcome.ok && golden_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    }
}

fn export_telemetry(args: &ExportArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir.clone()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let fail = |context: &str, e: &(dyn std::error::Error + 'static)| {
        report(context, e);
        println!("nothing exported");
        ExitCode::from(EXIT_FAILURE)
    };
    let identity = match gantry_agent::identity::load(&config.state_dir) {
        Ok(Some(identity)) => identity,
        Ok(None) => return fail("", &gantry_agent::export::ExportBuildError::NotEnrolled),
        Err(e) => return fail("", &e),
    };
    let addr = args.agent.unwrap_or(config.metrics_listen);
    let max_records = args.max_records.unwrap_or(usize::MAX);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail("cannot start the async runtime: ", &e),
    };
    let path = format!(
        "/v1/telemetry-export?after_seq={}&max_records={max_records}",
        args.after_seq
    );
    let bytes = match runtime.block_on(gantry_agent::status::fetch_raw(
        addr,
        &path,
        Duration::from_secs(60),
    )) {
        Ok(bytes) => bytes.to_vec(),
        Err(gantry_agent::status::StatusError::Connect { .. }) => {
            // No agent running: its buffer is free to read.
            let buffer = match gantry_agent::buffer::Buffer::open(
                &config.state_dir.join("buffer.redb"),
                config.buffer,
            ) {
                Ok(buffer) => buffer,
                Err(e) => return fail("", &e),
            };
            match gantry_agent::export::build(
                &buffer,
                Some(&identity),
                None,
                args.after_seq,
                max_records,
                gantry_agent::api::now_ms(),
            ) {
                Ok((bytes, _)) => bytes,
                Err(e) => return fail("", &e),
            }
        }
        Err(e) => return fail("", &e),
    };
    let write = || -> std::io::Result<()> {
        let dir = args.out.parent().filter(|d| !d.as_os_str().is_empty());
        let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(std::path::Path::new(".")))?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&args.out).map(|_| ()).map_err(|e| e.error)
    };
    if let Err(e) = write() {
        return fail(&format!("cannot write {}: ", args.out.display()), &e);
    }
    let body = gantry_shared::telemetry_export::parse_envelope(&bytes)
        .and_then(|e| gantry_shared::telemetry_export::parse_body(&e.body));
    match body {
        Ok(body) if body.records.is_empty() => {
            println!(
                "nothing buffered after sequence {}; wrote an empty export to {}",
                args.after_seq,
                args.out.display()
            );
        }
        Ok(body) => {
            println!(
                "exported    {} records of node {}, sequences {}..={}\nfile        {} ({} bytes, signed by the node key)\nnext        carry it out and run `gantry telemetry import`; the next export starts with --after-seq {}",
                body.records.len(),
                body.node,
                body.from_seq,
                body.to_seq,
                args.out.display(),
                bytes.len(),
                body.to_seq
            );
        }
        Err(e) => return fail("the export just written does not read back: ", &e),
    }
    ExitCode::SUCCESS
}

/// `import` of a trust-policy update.
fn import_policy(
    installed: &std::path::Path,
    update: &std::path::Path,
    file: std::fs::File,
) -> ExitCode {
    match gantry_agent::bundle::policy_update::install(
        installed,
        update,
        file,
        std::time::SystemTime::now(),
    ) {
        Ok(done) => {
            println!(
                "trust policy updated: version {} → {} ({}), authorized by {}",
                done.from_version,
                done.to_version,
                installed.display(),
                done.authorized_by.join(", ")
            );
            println!(
                "previous    {} (kept)",
                gantry_agent::bundle::policy_update::previous_path(installed).display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            println!(
                "trust policy NOT updated; {} is unchanged",
                installed.display()
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn import(args: ImportArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = as_state_dir_owner(&config, "import …") {
        return code;
    }
    let policy = args.trust.unwrap_or(config.trust_policy);
    // One open, one read: what is checked is what is installed.
    let mut file = match gantry_agent::bundle::open_regular(&args.bundle) {
        Ok(file) => file,
        Err(e) => {
            report("", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match gantry_agent::bundle::policy_update::looks_like_policy(&mut file) {
        Ok(true) => return import_policy(&policy, &args.bundle, file),
        Ok(false) => {}
        Err(e) => {
            report(&format!("cannot read {}: ", args.bundle.display()), &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    let library = args.onnxruntime.unwrap_or(config.onnxruntime);
    let store = gantry_agent::bundle::store::BundleStore::new(&config.state_dir);
    let mut options = gantry_agent::bundle::store::ImportOptions::new(
        &policy,
        &library,
        gantry_agent::inference::Hardware::default(),
        std::time::SystemTime::now(),
    );
    options.allow_downgrade = args.allow_downgrade;
    match store.import_file(file, &options) {
        Ok(imported) => {
            print!("{}", imported.outcome.render_text());
            for g in &imported.golden {
                let verdict = if g.passed {
                    "ok".to_owned()
                } else {
                    format!(
                        "FAILED: {}",
                        g.error
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", g.first_mismatch))
                    )
                };
                println!(
                    "golden      {}: {verdict} (max error {:.3e})",
                    g.name, g.max_abs_error
                );
            }
            if let Some(digest) = imported.activated {
                println!(
                    "activated   sha256:{digest} (the previous bundle is kept for `gantry-agent rollback`)"
                );
                ExitCode::SUCCESS
            } else {
                println!(
                    "NOT ACTIVATED: the bundle failed a check; the active bundle is unchanged"
                );
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn renew(args: RenewArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = as_state_dir_owner(&config, "renew …") {
        return code;
    }
    let identity = match gantry_agent::identity::load(&config.state_dir) {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            eprintln!("error: this node is not enrolled; enroll it first (gantry-agent enroll)");
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            report("", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if let Some(out) = &args.files.offline_request {
        let request =
            match gantry_agent::renewal::offline_request(&identity, gantry_agent::api::now_ms()) {
                Ok(request) => request,
                Err(e) => {
                    report("", &e);
                    return ExitCode::from(EXIT_FAILURE);
                }
            };
        let mut bytes = serde_json::to_vec_pretty(&request).expect("request serializes");
        bytes.push(b'\n');
        if let Err(e) = std::fs::write(out, bytes) {
            report(&format!("cannot write {}: ", out.display()), &e);
            return ExitCode::from(EXIT_FAILURE);
        }
        println!(
            "request     {} (signed by the node key; the key stays here)\nnext        on the controller: gantry fleet renew {} --out RESPONSE; then gantry-agent renew --offline-response RESPONSE",
            out.display(),
            out.display()
        );
        return ExitCode::SUCCESS;
    }
    let Some(path) = &args.files.offline_response else {
        return ExitCode::from(2);
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            report(&format!("cannot read {}: ", path.display()), &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match gantry_agent::renewal::offline_install(
        &config.state_dir,
        &identity,
        &bytes,
        std::time::SystemTime::now(),
    ) {
        Ok(renewed) => {
            let until = renewed.enrollment.certificate_expires_at_ms.map_or_else(
                || "?".to_owned(),
                |ms| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    )
                    .to_string()
                },
            );
            println!(
                "renewed     {} (certificate valid until {until}); a running agent uses it from its next connection",
                renewed.enrollment.name
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            println!("certificate NOT renewed; the node's identity is unchanged");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn rollback(args: RollbackArgs) -> ExitCode {
    let config = match load_with_state_dir(&args.config, args.state_dir) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(code) = as_state_dir_owner(&config, "rollback") {
        return code;
    }
    match gantry_agent::bundle::store::BundleStore::new(&config.state_dir).rollback() {
        Ok(current) => {
            println!("active      sha256:{}", current.active.unwrap_or_default());
            println!(
                "previous    sha256:{}",
                current.previous.unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn status(args: &StatusArgs) -> ExitCode {
    let addr = match args.agent {
        Some(addr) => addr,
        None => match config::load(args.config.config.as_deref(), &Overrides::default()) {
            Ok(config) => config.metrics_listen,
            Err(e) => return config_failure(&e),
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report("cannot start the async runtime: ", &e);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if args.json {
        return match runtime.block_on(gantry_agent::status::fetch_raw(
            addr,
            "/v1/status",
            args.timeout,
        )) {
            Ok(body) => {
                println!("{}", String::from_utf8_lossy(&body));
                ExitCode::SUCCESS
            }
            Err(e) => {
                report("", &e);
                ExitCode::from(EXIT_FAILURE)
            }
        };
    }
    match runtime.block_on(gantry_agent::status::fetch(addr, args.timeout)) {
        Ok(status) => {
            print!(
                "{}",
                gantry_agent::status::render_table(&status, gantry_agent::api::now_ms())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            report("", &e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
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
