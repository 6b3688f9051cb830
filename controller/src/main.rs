//! `gantry`: parses arguments, runs the library, maps outcomes to exit codes
//! (0 success, 1 failure — including a bundle or policy that fails verification — and
//! 2 usage).

// Doc comments on the argument types are `--help` text, written for operators.
#![allow(clippy::doc_markdown)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use gantry_controller::bundle_cmd::{self, BundleCmdError, CreateRequest, SignOutcome};
use gantry_controller::keys;
use gantry_controller::policy_cmd::{self, KeySpec};
use gantry_shared::bundle::manifest::ExecutionProvider;

/// The Gantry controller and fleet CLI.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct DirArgs {
    /// Controller directory (CA, certificates, store).
    #[arg(long, env = "GANTRY_DIR", default_value = gantry_controller::home::DEFAULT_DIR, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// Admin identity file (default: $GANTRY_IDENTITY, else DIR/admin.identity of the default directory).
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Controller address, instead of the one in the identity file.
    #[arg(long, value_name = "ADDR")]
    controller: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the fleet CA, the controller certificate and the first admin identity.
    Init {
        #[command(flatten)]
        dir: DirArgs,
        /// Address `gantry serve` will listen on (recorded in the admin identity).
        #[arg(long, env = "GANTRY_LISTEN", default_value = gantry_controller::home::DEFAULT_LISTEN, value_name = "ADDR")]
        listen: SocketAddr,
        /// Name of the first admin.
        #[arg(long, default_value = "admin")]
        admin_name: String,
        /// Lifetime of the first admin's certificate (rotate it with `gantry admin rotate`).
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration, value_name = "DURATION")]
        admin_cert_lifetime: Duration,
    },
    /// Run the controller: QUIC for agents and admins, the embedded store, /metrics.
    Serve {
        #[command(flatten)]
        dir: DirArgs,
        /// QUIC address for agents and admins.
        #[arg(long, env = "GANTRY_LISTEN", default_value = gantry_controller::home::DEFAULT_LISTEN, value_name = "ADDR")]
        listen: SocketAddr,
        /// Address for the fleet's /metrics (Prometheus federation); "" disables it.
        #[arg(
            long,
            env = "GANTRY_METRICS_LISTEN",
            default_value = "127.0.0.1:9401",
            value_name = "ADDR"
        )]
        metrics_listen: String,
        /// How long telemetry is kept.
        #[arg(long, env = "GANTRY_RETENTION", default_value = "7d", value_parser = humantime::parse_duration, value_name = "DURATION")]
        retention: Duration,
        /// Start with a new, empty store when the directory has none (the audit chain
        /// starts again); without it a missing or empty store is refused.
        #[arg(long)]
        new_store: bool,
        /// Lifetime of node certificates; agents renew them over the uplink when a third
        /// of it is left.
        #[arg(long, env = "GANTRY_NODE_CERT_LIFETIME", default_value = "7d", value_parser = humantime::parse_duration, value_name = "DURATION")]
        node_cert_lifetime: Duration,
        /// Lifetime of admin certificates issued by `gantry admin add` and `rotate`.
        #[arg(long, env = "GANTRY_ADMIN_CERT_LIFETIME", default_value = "365d", value_parser = humantime::parse_duration, value_name = "DURATION")]
        admin_cert_lifetime: Duration,
        /// How long after its certificate expired a node may still renew by proof of its
        /// key (online or by file); after that it must enroll again.
        #[arg(long, env = "GANTRY_RENEWAL_GRACE", default_value = "180d", value_parser = humantime::parse_duration, value_name = "DURATION")]
        renewal_grace: Duration,
        /// Health checks whose unhealthy reasons cordon a node automatically (audited),
        /// comma-separated; `gpu.xid` is unhealthy only for critical XIDs. `none` turns
        /// automatic cordoning off.
        #[arg(
            long,
            env = "GANTRY_AUTO_CORDON",
            default_value = "gpu.xid",
            value_name = "CHECKS"
        )]
        auto_cordon: String,
        /// For tests: shift the clock certificates are issued and judged by (e.g. -10d).
        #[arg(long, hide = true, allow_hyphen_values = true, value_parser = parse_clock_offset, default_value = "0s")]
        clock_offset: i64,
    },
    /// Join tokens for enrolling nodes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The fleet: nodes, their state and their GPUs.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Admin identities and roles.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Create an ed25519 signing key pair: KEY (private, mode 0600) and KEY.pub.
    Keygen {
        /// Where to write the private key; the public key goes to <OUT>.pub.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Build, sign, verify and inspect model bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Create, sign, inspect and verify trust policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Canary rollouts with health gates and automatic rollback.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Reports from the controller's records.
    #[command(subcommand)]
    Report(ReportCommand),
    /// The hash-chained audit log: verify it, report from it.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Telemetry carried in by file.
    #[command(subcommand)]
    Telemetry(TelemetryCommand),
    /// The whole system on this machine: an embedded controller and a few agents on
    /// simulated GPUs, over loopback. Enrolls them, signs a bundle, rolls it out through a
    /// canary, answers an inference request, rolls back a failing rollout, and shows the
    /// fleet, the KPIs and the audit report; then stops everything.
    Demo {
        /// Agents to start, 2 to 8.
        #[arg(long, default_value_t = 3, value_name = "N")]
        agents: usize,
        /// gantry-agent to run (default: beside this gantry, else on PATH).
        #[arg(long, value_name = "PATH")]
        agent_binary: Option<PathBuf>,
        /// ONNX Runtime's library (default: $GANTRY_ONNXRUNTIME, else
        /// /usr/lib/gantry/libonnxruntime.so.1.31.1 from the gantry-agent package).
        #[arg(long, value_name = "PATH")]
        onnxruntime: Option<PathBuf>,
        /// Keep the working directory (configuration, state, logs) after a successful run.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TelemetryCommand {
    /// Ingest a file from `gantry-agent export-telemetry`: checked against the node's
    /// enrolled certificate and key; importing it again, or after the uplink delivered
    /// the same records, stores nothing twice.
    Import {
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Prove the chain intact, or name its first broken entry (exit 1).
    Verify {
        /// Read the store of this controller directory directly (the controller stopped,
        /// or a copy), instead of asking the running controller.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// Which bundle ran where and when, who signed it, what put it there; flags (Markdown).
    Report {
        /// The range: from this long ago until now.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, value_name = "DURATION")]
        since: Duration,
        /// Flag nodes without a connection for longer than this.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
        silence: Duration,
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        admin: AdminArgs,
        /// JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Roll a pushed bundle out to the nodes a selector picks, step by step.
    Start {
        /// The bundle: NAME@VERSION or sha256:<id>.
        bundle: String,
        /// Labels the nodes must carry, k=v,k=v (default: every node).
        #[arg(long, value_delimiter = ',', value_parser = parse_key_value, value_name = "K=V,…")]
        selector: Vec<(String, String)>,
        /// Nodes each step covers: counts and percentages of the selected nodes.
        #[arg(long, default_value = "1,10%,50%,100%", value_name = "STEPS")]
        steps: String,
        /// How long each step holds, gates evaluated, before the next.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        bake: Duration,
        /// Touched nodes allowed to be unhealthy, silent, refusing or late.
        #[arg(long, default_value_t = 0, value_name = "N")]
        max_unhealthy: u32,
        /// Fail when a node's recent inference error rate exceeds this share (0.05 = 5 %).
        #[arg(long, value_name = "RATE")]
        max_error_rate: Option<f64>,
        /// Fail when a node's p99 inference latency exceeds this.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
        max_latency_p99: Option<Duration>,
        /// Do not fail on a served model failing its golden vectors.
        #[arg(long)]
        no_golden_gate: bool,
        /// How long a step's nodes have to run the bundle before they count as failed.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        step_timeout: Duration,
        /// A touched node without a heartbeat this long counts as unhealthy.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
        silence: Duration,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// A rollout's step, nodes per state, gate values and time left; all rollouts without ID.
    Status {
        id: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// Hold a rollout where it is.
    Pause {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Go on with a paused rollout (the step's timers start again).
    Resume {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop a rollout; the nodes it touched keep the bundle.
    Abort {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Return every node a rollout touched to its previous bundle.
    Rollback {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Deployment frequency, lead time, change failure rate and time to recovery.
    Kpis {
        /// The window, ending now: rollouts started in it count.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration, value_name = "DURATION")]
        window: Duration,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a single-use join token that also pins the controller certificate.
    Create {
        #[command(flatten)]
        admin: AdminArgs,
        /// Labels the node gets, k=v,k=v.
        #[arg(long, value_delimiter = ',', value_parser = parse_key_value, value_name = "K=V,…")]
        labels: Vec<(String, String)>,
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
        ttl: Duration,
    },
    /// Enroll a node that cannot reach the controller, from the request file it wrote
    /// (`gantry-agent enroll --offline-request`); writes the response for it to install.
    Redeem {
        /// The node's request file.
        request: PathBuf,
        /// Where to write the response.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// List nodes.
    Ls {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// One node in detail, with its latest GPU readings.
    Show {
        node: String,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// A live GPU table across the fleet.
    Top {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print once and exit.
        #[arg(long)]
        once: bool,
        /// Refresh interval.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
    /// Renew a node's certificate by file: its request from `gantry-agent renew
    /// --offline-request`, answered with a file for `gantry-agent renew --offline-response`.
    Renew {
        /// The node's renewal request.
        request: PathBuf,
        /// Where to write the response for the node.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Revoke a node: its certificate stops working at once.
    Revoke {
        node: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Cordon a node: it takes no new rollouts (what it runs stays) until uncordoned.
    Cordon {
        node: String,
        /// Why, for the fleet view and the audit log.
        #[arg(long, default_value = "cordoned by an operator")]
        reason: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Let a cordoned node take rollouts again.
    Uncordon {
        node: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create another admin identity with a role (viewer, operator, admin).
    Add {
        name: String,
        #[arg(long)]
        role: gantry_shared::protocol::admin::Role,
        /// Where to write the new identity file (mode 0600).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace your own certificate and key: a new key made here, a new certificate for
    /// it with the controller's admin lifetime; every earlier certificate of yours is
    /// revoked. The identity file is replaced in place.
    Rotate {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    /// Pack an ONNX model, its golden vectors and provenance into an unsigned bundle.
    Create(Box<CreateArgs>),
    /// Add a signature to a bundle (in place unless --out is given).
    Sign {
        bundle: PathBuf,
        /// Private key to sign with.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Write the signed bundle here instead of replacing the input.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Check every file digest and the signatures against a trust policy.
    Verify {
        bundle: PathBuf,
        /// Trust policy file.
        #[arg(long, value_name = "POLICY")]
        trust: PathBuf,
        /// Verify as of this time (RFC 3339) instead of now.
        #[arg(long, value_name = "TIME", value_parser = humantime::parse_rfc3339)]
        at: Option<SystemTime>,
        #[arg(long)]
        json: bool,
    },
    /// Show a bundle's manifest and signatures (without verifying them).
    Inspect {
        bundle: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Upload a signed bundle to the controller, which keeps it only if it passes the
    /// controller's trust policy (DIR/trust.json). A broken push resumes when run again.
    Push(PushArgs),
    /// Load a bundle file carried in (air-gapped) into the controller: checked against
    /// its trust policy like a push, and recorded in the audit log as an import.
    Import(PushArgs),
    /// Write a bundle the controller holds to a file for removable media, verified on
    /// the way against the controller's trust policy.
    Export {
        /// NAME@VERSION or sha256:<id>.
        bundle: String,
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        dir: DirArgs,
    },
    /// List the bundles the controller holds and the nodes each is assigned to.
    Ls {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// Make a pushed bundle the one the named nodes should run.
    Assign {
        /// Bundle id (sha256:…), as `gantry bundle push` or `bundle ls` shows it.
        id: String,
        /// A node to assign it to; repeat for more.
        #[arg(long = "node", value_name = "NODE", required = true)]
        nodes: Vec<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// A bundle file to upload (`bundle push`, `bundle import`).
#[derive(Debug, Args)]
struct PushArgs {
    bundle: PathBuf,
    #[command(flatten)]
    admin: AdminArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// The ONNX model; its inputs and outputs are read from it.
    #[arg(long, value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Bundle name (lowercase letters, digits, '.', '_', '-').
    #[arg(long)]
    name: String,
    /// Semantic version, e.g. 1.4.0.
    #[arg(long)]
    version: String,
    /// Golden vectors (JSON list of {name, inputs, outputs, tolerance}).
    #[arg(long, value_name = "FILE.json")]
    golden: Option<PathBuf>,
    /// Another payload file, as LOCAL_PATH or LOCAL_PATH=PATH_IN_BUNDLE.
    #[arg(long = "file", value_name = "PATH[=IN_BUNDLE]")]
    files: Vec<String>,
    /// Provenance as a JSON object {source_revision, training_data_digest, hyperparameters, metrics}.
    #[arg(long, value_name = "FILE.json")]
    provenance: Option<PathBuf>,
    /// Source revision the model was trained from, e.g. git:3f2c1e0.
    #[arg(long)]
    source_revision: Option<String>,
    /// Digest of the training data, e.g. sha256:….
    #[arg(long)]
    training_data_digest: Option<String>,
    /// A hyperparameter, KEY=VALUE (typed: bool, integer, float or text).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    params: Vec<(String, String)>,
    /// An evaluation metric, KEY=NUMBER.
    #[arg(long = "metric", value_name = "KEY=NUMBER", value_parser = parse_metric)]
    metrics: Vec<(String, f64)>,
    /// GPU memory the model needs, e.g. 8GiB.
    #[arg(long, value_name = "SIZE", value_parser = gantry_shared::units::parse_size, default_value = "0")]
    min_gpu_memory: u64,
    /// Execution providers it may run on, in preference order: cuda, cpu.
    #[arg(long = "execution-provider", value_name = "EP", value_delimiter = ',', value_parser = parse_provider)]
    execution_providers: Vec<ExecutionProvider>,
    /// The bundle file to write.
    #[arg(long, value_name = "BUNDLE")]
    out: PathBuf,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Write a new, unsigned trust policy (sign it with `gantry policy sign`).
    Create {
        /// Start from this policy: its keys, threshold and revocations, version + 1.
        #[arg(long, value_name = "POLICY")]
        from: Option<PathBuf>,
        /// Policy version (default 1, or the --from policy's + 1).
        #[arg(long)]
        version: Option<u64>,
        /// Distinct valid signatures a bundle and a policy update need.
        #[arg(long)]
        threshold: Option<u32>,
        /// A key to trust: NAME=PUBLIC_KEY_FILE[,not-before=TIME][,not-after=TIME].
        #[arg(long = "key", value_name = "NAME=KEY.pub")]
        keys: Vec<KeySpec>,
        /// Stop trusting this key id (drop it from the list).
        #[arg(long = "remove-key", value_name = "KEY_ID")]
        remove_keys: Vec<String>,
        /// Revoke this key id: its signatures never count again.
        #[arg(long = "revoke", value_name = "KEY_ID")]
        revoke: Vec<String>,
        /// Golden vectors a bundle must carry, each with non-empty inputs and outputs
        /// (new policies: 1).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        golden_min: Option<u32>,
        /// Loosest absolute tolerance a golden vector may have (new policies: 0.01).
        #[arg(long, value_name = "ABS")]
        golden_max_abs: Option<f64>,
        /// Loosest relative tolerance a golden vector may have (new policies: 0.01).
        #[arg(long, value_name = "REL")]
        golden_max_rel: Option<f64>,
        /// Require no golden vectors at all (not recommended: the golden gate can then pass
        /// a bundle that never ran a real input).
        #[arg(long, conflicts_with_all = ["golden_min", "golden_max_abs", "golden_max_rel"])]
        no_golden_requirement: bool,
        #[arg(long, value_name = "POLICY")]
        out: PathBuf,
    },
    /// Add a signature to a policy file.
    Sign {
        policy: PathBuf,
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
    /// Show a policy's keys, threshold, revocations and signatures.
    Inspect {
        policy: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a policy: as an update of --trust, or on its own as an installed policy.
    Verify {
        policy: PathBuf,
        /// The policy currently in force; the checked one must be a valid update of it.
        #[arg(long, value_name = "POLICY")]
        trust: Option<PathBuf>,
    },
}

/// `, valid until …` for a certificate's expiry, when known.
fn expiry_note(expires_at_ms: Option<u64>) -> String {
    expires_at_ms.map_or_else(String::new, |ms| {
        format!(
            ", valid until {}",
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
        )
    })
}

/// A signed duration (`-10d`, `2h`) in milliseconds.
fn parse_clock_offset(text: &str) -> Result<i64, String> {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let duration = humantime::parse_duration(rest).map_err(|e| e.to_string())?;
    i64::try_from(duration.as_millis())
        .map(|ms| sign * ms)
        .map_err(|_| "too large".to_owned())
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

fn parse_metric(text: &str) -> Result<(String, f64), String> {
    let (k, v) = parse_key_value(text)?;
    let value: f64 = v.parse().map_err(|_| format!("{v:?} is not a number"))?;
    if !value.is_finite() {
        return Err(format!("{v:?} is not a finite number"));
    }
    Ok((k, value))
}

fn parse_provider(text: &str) -> Result<ExecutionProvider, String> {
    match text.trim() {
        "cuda" => Ok(ExecutionProvider::Cuda),
        "cpu" => Ok(ExecutionProvider::Cpu),
        other => Err(format!(
            "{other:?} is not an execution provider (cuda, cpu)"
        )),
    }
}

fn report(error: &(dyn std::error::Error + 'static)) {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo {
        agents,
        agent_binary,
        onnxruntime,
        keep,
    } = cli.command
    {
        // The demo logs its embedded controller to a file of its own.
        let options = gantry_controller::demo::Options {
            agents,
            agent_binary,
            onnxruntime,
            keep,
        };
        return match gantry_controller::demo::run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ gantry_controller::demo::DemoError::Interrupted) => {
                eprintln!("\n{e}");
                ExitCode::from(130)
            }
            Err(e) => {
                report(&e);
                ExitCode::FAILURE
            }
        };
    }
    let default_level = if matches!(cli.command, Command::Serve { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only on a terminal: under systemd, stderr goes to the journal.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        command @ (Command::Serve { .. }
        | Command::Token(_)
        | Command::Fleet(_)
        | Command::Admin(_)
        | Command::Rollout(_)
        | Command::Report(_)
        | Command::Audit(_)
        | Command::Telemetry(_)
        | Command::Bundle(
            BundleCommand::Push(_)
            | BundleCommand::Import(_)
            | BundleCommand::Ls { .. }
            | BundleCommand::Assign { .. },
        )) => {
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(fleet::run(command)),
                Err(e) => {
                    report(&e);
                    return ExitCode::FAILURE;
                }
            }
        }
        command => run(command).map_err(|e| Box::new(e) as Box<dyn std::error::Error>),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(e.as_ref());
            ExitCode::FAILURE
        }
    }
}

/// The commands that talk to (or are) the controller daemon.
mod fleet {
    use std::process::ExitCode;

    use gantry_controller::client::{self, AdminClient, ClientError};
    use gantry_controller::home::{AdminIdentity, Home};
    use gantry_controller::server::{self, ServeConfig};
    use gantry_controller::{fleet_cmd, now_ms};
    use gantry_shared::protocol::admin::{Request, Response};
    use tokio_util::sync::CancellationToken;

    use super::{
        AdminArgs, AdminCommand, AuditCommand, BundleCommand, Command, FleetCommand, PushArgs,
        ReportCommand, RolloutCommand, TelemetryCommand, TokenCommand, expiry_note, print_json,
    };

    async fn connect(args: &AdminArgs) -> Result<AdminClient, ClientError> {
        let identity = AdminIdentity::load(&client::identity_path(args.identity.as_deref()))?;
        AdminClient::connect(&identity, args.controller).await
    }

    /// `bundle push`, or `bundle import` (the same upload, recorded as an import).
    async fn upload(args: PushArgs, import: bool) -> Result<(), Box<dyn std::error::Error>> {
        let client = connect(&args.admin).await?;
        let info = if import {
            gantry_controller::push::import(&client, &args.bundle).await?
        } else {
            gantry_controller::push::push(&client, &args.bundle).await?
        };
        if args.json {
            print_json(&info);
        } else if import {
            println!(
                "imported {} {} ({} bytes)\nid: {}",
                info.name, info.version, info.size, info.id
            );
        } else {
            println!(
                "pushed {} {} ({} bytes)\nid: {}\nassign it with: gantry bundle assign {} --node NODE",
                info.name, info.version, info.size, info.id, info.id
            );
        }
        Ok(())
    }

    async fn audit(command: AuditCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
        use gantry_controller::audit_cmd;
        match command {
            AuditCommand::Verify { dir, admin, json } => {
                let v = if let Some(dir) = dir {
                    tokio::task::spawn_blocking(move || {
                        audit_cmd::open_store(&dir)?
                            .guarded(gantry_controller::store::Store::verify_audit)
                            .map_err(Into::into)
                    })
                    .await?
                    .map_err(|e: audit_cmd::OfflineError| e.to_string())?
                } else {
                    connect(&admin).await?.audit_verify().await?
                };
                if json {
                    print_json(&v);
                } else {
                    print!("{}", audit_cmd::render_verification(&v));
                }
                Ok(if v.ok() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            AuditCommand::Report {
                since,
                silence,
                dir,
                admin,
                json,
            } => {
                let to_ms = gantry_controller::now_ms();
                let from_ms = to_ms.saturating_sub(since.as_millis() as u64);
                let silence_ms = silence.as_millis() as u64;
                let report = if let Some(dir) = dir {
                    tokio::task::spawn_blocking(move || {
                        audit_cmd::open_store(&dir)?
                            .guarded(|store| {
                                gantry_controller::audit::report(store, from_ms, to_ms, silence_ms)
                            })
                            .map_err(audit_cmd::OfflineError::from)
                    })
                    .await?
                    .map_err(|e| e.to_string())?
                } else {
                    connect(&admin)
                        .await?
                        .audit_report(from_ms, to_ms, silence_ms)
                        .await?
                };
                if json {
                    print_json(&report);
                } else {
                    print!("{}", audit_cmd::render_markdown(&report));
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }

    async fn rollout(command: RolloutCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
        use gantry_controller::rollout_cmd;
        use gantry_shared::protocol::rollout::{Gates, Spec, parse_steps};
        let now = gantry_controller::now_ms;
        let (admin, request, json) = match command {
            RolloutCommand::Start {
                bundle,
                selector,
                steps,
                bake,
                max_unhealthy,
                max_error_rate,
                max_latency_p99,
                no_golden_gate,
                step_timeout,
                silence,
                admin,
                json,
            } => {
                let steps = parse_steps(&steps).map_err(|e| format!("--steps: {e}"))?;
                if let Some(rate) = max_error_rate.filter(|r| !(0.0..=1.0).contains(r)) {
                    return Err(format!(
                        "--max-error-rate {rate} is not a share between 0 and 1 (0.05 = 5 %)"
                    )
                    .into());
                }
                let spec = Spec {
                    bundle,
                    selector: selector.into_iter().collect(),
                    steps,
                    bake_ms: bake.as_millis() as u64,
                    gates: Gates {
                        max_unhealthy,
                        max_error_rate,
                        max_latency_p99_s: max_latency_p99.map(|d| d.as_secs_f64()),
                        golden: !no_golden_gate,
                    },
                    step_timeout_ms: step_timeout.as_millis() as u64,
                    silence_ms: silence.as_millis() as u64,
                };
                (admin, Request::RolloutStart(Box::new(spec)), json)
            }
            RolloutCommand::Status { id, admin, json } => {
                (admin, Request::RolloutStatus { id }, json)
            }
            RolloutCommand::Pause { id, admin } => (admin, Request::RolloutPause { id }, false),
            RolloutCommand::Resume { id, admin } => (admin, Request::RolloutResume { id }, false),
            RolloutCommand::Abort { id, admin } => (admin, Request::RolloutAbort { id }, false),
            RolloutCommand::Rollback { id, admin } => {
                (admin, Request::RolloutRollback { id }, false)
            }
        };
        match connect(&admin).await?.call(request).await? {
            Response::Rollout(r) if json => print_json(&r),
            Response::Rollout(r) => print!("{}", rollout_cmd::render_status(&r, now())),
            Response::Rollouts(list) if json => print_json(&list),
            Response::Rollouts(list) => print!("{}", rollout_cmd::render_list(&list, now())),
            _ => return Err(ClientError::Unexpected { call: "rollout" }.into()),
        }
        Ok(ExitCode::SUCCESS)
    }

    /// A key made here and a certificate for it from the controller (`request` carries the
    /// public key): an admin identity to save, and when its certificate expires.
    async fn new_admin_identity(
        admin: &AdminArgs,
        request: impl FnOnce(String) -> Request,
    ) -> Result<(AdminIdentity, Option<u64>), Box<dyn std::error::Error>> {
        let (key_pem, public_key) = gantry_net::new_key_pair()?;
        let current = AdminIdentity::load(&client::identity_path(admin.identity.as_deref()))?;
        let client = AdminClient::connect(&current, admin.controller).await?;
        let client::AdminCertificate {
            name,
            role,
            certificate_pem,
            ca_pem,
            expires_at_ms,
        } = client.admin_certificate(request(public_key)).await?;
        let identity = AdminIdentity {
            name,
            role,
            controller: admin.controller.unwrap_or(current.controller),
            ca_pem,
            cert_pem: certificate_pem,
            key_pem,
        };
        Ok((identity, expires_at_ms))
    }

    pub(super) async fn run(command: Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
        match command {
            Command::Serve {
                dir,
                listen,
                metrics_listen,
                retention,
                new_store,
                node_cert_lifetime,
                admin_cert_lifetime,
                renewal_grace,
                auto_cordon,
                clock_offset,
            } => {
                let auto_cordon = match gantry_controller::cordon::AutoCordon::parse(&auto_cordon) {
                    Ok(rules) => rules,
                    Err(e) => {
                        eprintln!("error: --auto-cordon: {e}");
                        return Ok(ExitCode::from(64));
                    }
                };
                let certs = gantry_controller::certs::CertPolicy {
                    node_lifetime: node_cert_lifetime,
                    admin_lifetime: admin_cert_lifetime,
                    renewal_grace,
                };
                if let Err(e) = certs.validate() {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(64));
                }
                gantry_net::service_dir::check_writer(&dir.dir, "gantry serve …")?;
                let metrics_listen = if metrics_listen.trim().is_empty() {
                    None
                } else {
                    Some(metrics_listen.trim().parse().map_err(|_| format!("--metrics-listen {metrics_listen:?} is not an address like 127.0.0.1:9401"))?)
                };
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{SignalKind, signal};
                    let (Ok(mut term), Ok(mut int)) = (
                        signal(SignalKind::terminate()),
                        signal(SignalKind::interrupt()),
                    ) else {
                        return;
                    };
                    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
                    on_signal.cancel();
                });
                server::serve(
                    ServeConfig {
                        home: Home::new(dir.dir),
                        listen,
                        metrics_listen,
                        retention,
                        new_store,
                        certs,
                        clock: gantry_controller::certs::Clock {
                            offset_ms: clock_offset,
                        },
                        auto_cordon,
                    },
                    shutdown,
                    None,
                )
                .await?;
            }
            Command::Token(TokenCommand::Redeem {
                request,
                out,
                admin,
            }) => {
                use gantry_shared::protocol::enroll::{
                    OFFLINE_REQUEST_FORMAT, OFFLINE_RESPONSE_FORMAT, OfflineRequest,
                    OfflineResponse,
                };
                let text = std::fs::read(&request)
                    .map_err(|e| format!("cannot read {}: {e}", request.display()))?;
                let offline: OfflineRequest = serde_json::from_slice(&text)
                    .ok()
                    .filter(|r: &OfflineRequest| r.format == OFFLINE_REQUEST_FORMAT)
                    .ok_or_else(|| {
                        format!(
                            "{} is not an enrollment request from `gantry-agent enroll --offline-request`",
                            request.display()
                        )
                    })?;
                let identity =
                    AdminIdentity::load(&client::identity_path(admin.identity.as_deref()))?;
                let client = AdminClient::connect(&identity, admin.controller).await?;
                let client::Redeemed {
                    response,
                    controller_certificate_pem,
                    controller_signature,
                } = client.token_redeem(offline.request).await?;
                let node = response.node_name.clone();
                let file = OfflineResponse {
                    format: OFFLINE_RESPONSE_FORMAT.to_owned(),
                    response,
                    controller: admin.controller.unwrap_or(identity.controller).to_string(),
                    controller_certificate_pem,
                    controller_signature,
                };
                let mut bytes = serde_json::to_vec_pretty(&file).expect("response serializes");
                bytes.push(b'\n');
                gantry_controller::atomic_file::write_bytes(&out, 0o644, &bytes)
                    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
                println!(
                    "enrolled    {node} (by file)\nresponse    {}\nnext        carry it to the node: gantry-agent enroll --offline-response FILE",
                    out.display()
                );
            }
            Command::Token(TokenCommand::Create { admin, labels, ttl }) => {
                let client::Token {
                    token,
                    expires_at_ms,
                } = connect(&admin)
                    .await?
                    .token_create(labels.into_iter().collect(), ttl.as_secs().max(1))
                    .await?;
                println!("{token}");
                eprintln!(
                    "single use, expires in {}; on the node: gantry-agent enroll --controller ADDR --token TOKEN",
                    humantime::format_duration(std::time::Duration::from_secs(
                        expires_at_ms.saturating_sub(now_ms()) / 1000
                    ))
                );
            }
            Command::Bundle(BundleCommand::Push(args)) => upload(args, false).await?,
            Command::Bundle(BundleCommand::Import(args)) => upload(args, true).await?,
            Command::Bundle(BundleCommand::Ls { admin, json }) => {
                let bundles = connect(&admin).await?.bundle_list().await?;
                if json {
                    print_json(&bundles);
                } else {
                    print!("{}", gantry_controller::push::render_list(&bundles));
                }
            }
            Command::Bundle(BundleCommand::Assign { id, nodes, admin }) => {
                let (id, nodes) = connect(&admin).await?.bundle_assign(id, nodes).await?;
                println!("assigned {id} to {}", nodes.join(", "));
            }
            Command::Rollout(command) => return rollout(command).await,
            Command::Audit(command) => return audit(command).await,
            Command::Telemetry(TelemetryCommand::Import { file, admin, json }) => {
                let bytes = std::fs::read(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                if bytes.len() > gantry_shared::telemetry_export::MAX_EXPORT_BYTES {
                    return Err(format!(
                        "{} is {} bytes; an export is at most {} (export in ranges with --max-records)",
                        file.display(),
                        bytes.len(),
                        gantry_shared::telemetry_export::MAX_EXPORT_BYTES
                    )
                    .into());
                }
                let imported = connect(&admin)
                    .await?
                    .telemetry_import(gantry_shared::protocol::delivery::encode(&bytes))
                    .await?;
                let client::Imported {
                    node,
                    from_seq,
                    to_seq,
                    records,
                    stored,
                    duplicates,
                } = &imported;
                if json {
                    print_json(&serde_json::json!({ "telemetry_imported": imported }));
                } else {
                    println!(
                        "imported    {records} records of node {node}, sequences {from_seq}..={to_seq}\nstored      {stored} new, {duplicates} already held (imported before or delivered by the uplink)"
                    );
                }
            }
            Command::Report(ReportCommand::Kpis {
                window,
                admin,
                json,
            }) => {
                let kpis = connect(&admin)
                    .await?
                    .report_kpis(window.as_millis() as u64)
                    .await?;
                if json {
                    print_json(&kpis);
                } else {
                    print!("{}", gantry_controller::rollout_cmd::render_kpis(&kpis));
                }
            }
            Command::Fleet(FleetCommand::Ls { admin, json }) => {
                let nodes = connect(&admin).await?.fleet_list().await?;
                if json {
                    print_json(&nodes);
                } else {
                    print!("{}", fleet_cmd::render_list(&nodes, now_ms()));
                }
            }
            Command::Fleet(FleetCommand::Show { node, admin, json }) => {
                let detail = connect(&admin).await?.fleet_show(node).await?;
                if json {
                    print_json(&detail);
                } else {
                    print!("{}", fleet_cmd::render_show(&detail, now_ms()));
                }
            }
            Command::Fleet(FleetCommand::Top {
                admin,
                once,
                interval,
            }) => {
                let client = connect(&admin).await?;
                loop {
                    let nodes = client.fleet_top().await?;
                    if once {
                        print!("{}", fleet_cmd::render_top(&nodes));
                        break;
                    }
                    print!("\x1b[2J\x1b[H{}", fleet_cmd::render_top(&nodes));
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => break,
                        () = tokio::time::sleep(interval) => {}
                    }
                }
            }
            Command::Fleet(FleetCommand::Revoke { node, admin }) => {
                let node = connect(&admin).await?.node_revoke(node).await?;
                println!("revoked     {node}: its certificate no longer connects");
            }
            Command::Fleet(FleetCommand::Cordon {
                node,
                reason,
                admin,
            }) => {
                let cordon = connect(&admin)
                    .await?
                    .node_cordon(node.clone(), reason)
                    .await?;
                let reason = cordon.map(|c| c.reason).unwrap_or_default();
                println!(
                    "cordoned    {node}: it takes no new rollouts ({reason}); `gantry fleet uncordon {node}` lifts it"
                );
            }
            Command::Fleet(FleetCommand::Uncordon { node, admin }) => {
                connect(&admin).await?.node_uncordon(node.clone()).await?;
                println!("uncordoned  {node}: it takes rollouts again");
            }
            Command::Admin(AdminCommand::Add {
                name,
                role,
                out,
                admin,
            }) => {
                let (identity, expires_at_ms) =
                    new_admin_identity(&admin, |public_key| Request::AdminAdd {
                        name,
                        role,
                        public_key,
                    })
                    .await?;
                identity.save(&out)?;
                println!(
                    "admin       {} ({}) written to {} (mode 0600){}",
                    identity.name,
                    identity.role.as_str(),
                    out.display(),
                    expiry_note(expires_at_ms)
                );
            }
            Command::Admin(AdminCommand::Rotate { admin }) => {
                let (identity, expires_at_ms) =
                    new_admin_identity(&admin, |public_key| Request::AdminRotate { public_key })
                        .await?;
                let path = client::identity_path(admin.identity.as_deref());
                identity.save(&path)?;
                println!(
                    "rotated     {} ({}): new key and certificate in {}{}; the previous certificate is revoked",
                    identity.name,
                    identity.role.as_str(),
                    path.display(),
                    expiry_note(expires_at_ms)
                );
            }
            Command::Fleet(FleetCommand::Renew {
                request,
                out,
                admin,
            }) => {
                use gantry_shared::protocol::enroll::{
                    OFFLINE_RENEW_REQUEST_FORMAT, OFFLINE_RENEW_RESPONSE_FORMAT,
                    OfflineRenewRequest, OfflineRenewResponse,
                };
                let text = std::fs::read(&request)
                    .map_err(|e| format!("cannot read {}: {e}", request.display()))?;
                let offline: OfflineRenewRequest = serde_json::from_slice(&text)
                    .ok()
                    .filter(|r: &OfflineRenewRequest| r.format == OFFLINE_RENEW_REQUEST_FORMAT)
                    .ok_or_else(|| {
                        format!(
                            "{} is not a renewal request from `gantry-agent renew --offline-request`",
                            request.display()
                        )
                    })?;
                let response = connect(&admin).await?.node_renew(offline.request).await?;
                let node = response.node_name.clone();
                let expires = response.certificate_expires_at_ms;
                let file = OfflineRenewResponse {
                    format: OFFLINE_RENEW_RESPONSE_FORMAT.to_owned(),
                    response,
                };
                let mut bytes = serde_json::to_vec_pretty(&file).expect("response serializes");
                bytes.push(b'\n');
                gantry_controller::atomic_file::write_bytes(&out, 0o644, &bytes)
                    .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
                println!(
                    "renewed     {node} (by file){}\nresponse    {}\nnext        carry it to the node: gantry-agent renew --offline-response FILE",
                    expiry_note(expires),
                    out.display()
                );
            }
            _ => unreachable!("only fleet commands are routed here"),
        }
        Ok(ExitCode::SUCCESS)
    }
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    );
}

fn run(command: Command) -> Result<ExitCode, BundleCmdError> {
    match command {
        Command::Keygen { out } => {
            let key = keys::generate(&out)?;
            println!("key id      {}", key.key_id);
            println!(
                "private     {} (mode 0600; keep it secret)",
                key.private_path.display()
            );
            println!("public      {}", key.public_path.display());
        }
        Command::Bundle(BundleCommand::Create(args)) => {
            let files = args
                .files
                .iter()
                .map(|spec| {
                    if let Some((local, inside)) = spec.split_once('=') {
                        (PathBuf::from(local), inside.to_owned())
                    } else {
                        let local = PathBuf::from(spec);
                        let inside = local
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        (local, inside)
                    }
                })
                .collect();
            let req = CreateRequest {
                model: args.model,
                name: args.name,
                version: args.version,
                files,
                golden: args.golden,
                provenance_file: args.provenance,
                source_revision: args.source_revision,
                training_data_digest: args.training_data_digest,
                params: args.params,
                metrics: args.metrics,
                min_gpu_memory_bytes: args.min_gpu_memory,
                execution_providers: args.execution_providers,
                out: args.out.clone(),
            };
            let id = bundle_cmd::create(&req)?;
            println!("created     {} (unsigned)", args.out.display());
            println!("id          {id}");
            println!(
                "next        gantry bundle sign {} --key KEY",
                args.out.display()
            );
        }
        Command::Bundle(BundleCommand::Sign { bundle, key, out }) => {
            match bundle_cmd::sign(&bundle, &key, out.as_deref())? {
                SignOutcome::Added { key_id, signatures } => {
                    println!(
                        "signed      {} by key {key_id} ({signatures} signature(s) now)",
                        out.as_ref().unwrap_or(&bundle).display()
                    );
                }
                SignOutcome::AlreadySigned { key_id } => {
                    println!(
                        "unchanged   {} already carries a signature by key {key_id}",
                        bundle.display()
                    );
                }
            }
        }
        Command::Bundle(BundleCommand::Verify {
            bundle,
            trust,
            at,
            json,
        }) => {
            let outcome = bundle_cmd::verify(&bundle, &trust, at.unwrap_or_else(SystemTime::now))?;
            if json {
                print_json(&outcome);
            } else {
                print!("{}", outcome.render_text());
            }
            if !outcome.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Bundle(BundleCommand::Export { bundle, out, dir }) => {
            let exported = gantry_controller::bundle_cmd::export(&dir.dir, &bundle, &out)?;
            println!(
                "exported    {} {} {}\nfile        {} ({} bytes)\nsignatures  {} valid under {}\nnext        carry it in; `gantry-agent import {}` verifies it offline",
                exported.name,
                exported.version,
                exported.id,
                out.display(),
                exported.size,
                exported.signers.join(", "),
                dir.dir.join("trust.json").display(),
                out.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            );
        }
        Command::Bundle(BundleCommand::Inspect { bundle, json }) => {
            let inspection = bundle_cmd::inspect(&bundle)?;
            if json {
                print_json(&inspection);
            } else {
                print!("{}", bundle_cmd::render_inspection(&inspection));
            }
        }
        Command::Policy(PolicyCommand::Create {
            from,
            version,
            threshold,
            keys,
            remove_keys,
            revoke,
            golden_min,
            golden_max_abs,
            golden_max_rel,
            no_golden_requirement,
            out,
        }) => {
            let policy = policy_cmd::create(&policy_cmd::CreateRequest {
                from,
                version,
                threshold,
                add_keys: keys,
                remove_keys,
                revoke,
                golden: policy_cmd::GoldenChoice {
                    min_vectors: golden_min,
                    max_abs_tolerance: golden_max_abs,
                    max_rel_tolerance: golden_max_rel,
                    none: no_golden_requirement,
                },
                out: out.clone(),
            })?;
            println!(
                "created     {} (version {}, {} key(s), threshold {}; unsigned)",
                out.display(),
                policy.version,
                policy.keys.len(),
                policy.threshold
            );
            println!(
                "next        gantry policy sign {} --key KEY   (by {} of the keys{})",
                out.display(),
                policy.threshold,
                if policy.version > 1 {
                    ", and by enough keys of the policy it replaces"
                } else {
                    ""
                }
            );
        }
        Command::Policy(PolicyCommand::Sign { policy, key }) => {
            let (key_id, count) = policy_cmd::sign(&policy, &key)?;
            println!(
                "signed      {} by key {key_id} ({count} signature(s) now)",
                policy.display()
            );
        }
        Command::Policy(PolicyCommand::Inspect { policy, json }) => {
            let inspection = policy_cmd::inspect(&policy)?;
            if json {
                print_json(&inspection);
            } else {
                print!("{}", policy_cmd::render_inspection(&inspection));
            }
        }
        Command::Init {
            dir,
            listen,
            admin_name,
            admin_cert_lifetime,
        } => {
            if let Err(e) = gantry_net::service_dir::check_writer(&dir.dir, "gantry init …") {
                report(&e);
                return Ok(ExitCode::FAILURE);
            }
            let identity = gantry_controller::home::Home::new(&dir.dir)
                .init(listen, &admin_name, admin_cert_lifetime)
                .map_err(|e| {
                    BundleCmdError::Usage(gantry_shared::bundle::outcome::error_chain(&e))
                })?;
            println!(
                "initialized {} (fleet CA, controller certificate, store)",
                dir.dir.display()
            );
            println!(
                "admin       {} (mode 0600; the CLI reads it, or set GANTRY_IDENTITY)",
                identity.display()
            );
            println!(
                "next        gantry serve --dir {} --listen {listen}",
                dir.dir.display()
            );
        }
        Command::Serve { .. }
        | Command::Token(_)
        | Command::Fleet(_)
        | Command::Admin(_)
        | Command::Rollout(_)
        | Command::Report(_)
        | Command::Audit(_)
        | Command::Telemetry(_)
        | Command::Bundle(
            BundleCommand::Push(_)
            | BundleCommand::Import(_)
            | BundleCommand::Ls { .. }
            | BundleCommand::Assign { .. },
        ) => {
            unreachable!("routed to the runtime")
        }
        Command::Demo { .. } => unreachable!("run before logging is set up"),
        Command::Policy(PolicyCommand::Verify { policy, trust }) => {
            let report = policy_cmd::verify(&policy, trust.as_deref(), SystemTime::now())?;
            match trust {
                Some(current) => println!(
                    "VERIFIED    {} is a valid update of {} ({report})",
                    policy.display(),
                    current.display()
                ),
                None => println!(
                    "VERIFIED    {} is signed by enough of its own keys ({report})",
                    policy.display()
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
