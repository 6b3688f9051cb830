//! The `gantry` command line: its arguments (clap), and one module per command group
//! behind them — `serve`, `token`, `fleet`, `admin`, `bundle`, `rollout`, `report`,
//! `audit`, `telemetry`, `policy`, and `local` (`init`, `keygen`). The commands that talk
//! to (or are) the controller run on an async runtime through `remote`. Each returns a
//! `CommandResult`; exit codes: 0 success, 1 failure (including a bundle or policy that
//! fails verification), 2 usage, 64 configuration, 130 interrupted.

// Doc comments on the argument types are `--help` text, written for operators.
#![allow(clippy::doc_markdown)]

mod admin;
mod audit;
mod bundle;
mod capture;
mod console;
mod fleet;
mod local;
mod model;
mod policy;
mod remote;
mod report;
mod rollout;
mod serve;
mod telemetry;
mod token;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use crate::bundle_cmd::{self, CreateRequest, SignOutcome};
use crate::client::{self, AdminClient, ClientError};
use crate::fleet_cmd;
use crate::home::{AdminIdentity, Home};
use crate::keys;
use crate::policy_cmd::{self, KeySpec};
use crate::server::{self, ServeConfig};
use clap::{Args, Parser, Subcommand};
use gantry_net::clock::now_ms;
use gantry_net::command::{CommandError, CommandResult};
use gantry_shared::bundle::manifest::ExecutionProvider;
use gantry_shared::monitoring::quality::QualityMetric;
use gantry_shared::protocol::admin::{Request, Response};
use remote::connect;
use tokio_util::sync::CancellationToken;

/// The Gantry controller and fleet CLI.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct DirArgs {
    /// Controller directory (CA, certificates, store).
    #[arg(long, env = "GANTRY_DIR", default_value = crate::home::DEFAULT_DIR, value_name = "DIR")]
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
    #[command(flatten)]
    Local(LocalCommand),
    #[command(flatten)]
    Remote(RemoteCommand),
    /// Build, sign, verify and inspect model bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
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

/// The commands that work on local files only.
#[derive(Debug, Subcommand)]
enum LocalCommand {
    /// Create the fleet CA, the controller certificate and the first admin identity.
    Init {
        #[command(flatten)]
        dir: DirArgs,
        /// Address `gantry serve` will listen on (recorded in the admin identity).
        #[arg(long, env = "GANTRY_LISTEN", default_value = crate::home::DEFAULT_LISTEN, value_name = "ADDR")]
        listen: SocketAddr,
        /// Name of the first admin.
        #[arg(long, default_value = "admin")]
        admin_name: String,
        /// Lifetime of the first admin's certificate (rotate it with `gantry admin rotate`).
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration, value_name = "DURATION")]
        admin_cert_lifetime: Duration,
    },
    /// Create an ed25519 signing key pair: KEY (private, mode 0600) and KEY.pub.
    Keygen {
        /// Where to write the private key; the public key goes to <OUT>.pub.
        #[arg(long, value_name = "KEY")]
        out: PathBuf,
    },
    /// Create, sign, inspect and verify trust policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// The commands that are, or talk to, the controller daemon.
#[derive(Debug, Subcommand)]
enum RemoteCommand {
    /// Run the controller: QUIC for agents and admins, the embedded store, /metrics.
    Serve(Box<ServeArgs>),
    /// Join tokens for enrolling nodes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The fleet: nodes, their state and their GPUs.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Admin identities and roles.
    #[command(subcommand)]
    Admin(AdminCommand),
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
    /// Served models in production: drift from their reference data.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Request/answer pairs the nodes captured for retraining.
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// The web console `gantry serve --console-listen` serves.
    #[command(subcommand)]
    Console(ConsoleCommand),
}

#[derive(Debug, Subcommand)]
enum ConsoleCommand {
    /// A one-time sign-in link for the console, bound to your admin name and role
    /// (valid once, for 5 minutes).
    Login {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the link, code and expiry as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum CaptureCommand {
    /// Write a model's captured pairs, with the labels fed back for them, as `NumPy`
    /// `.npz` archives (one per version) and a manifest.json in DIR.
    Export {
        /// The model (the bundle's name).
        name: String,
        /// The directory to write (created when missing; its archives are replaced).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Only this version.
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Drift windows per node and fleet-wide, with the features over the threshold.
    Drift {
        /// The model (the bundle's name).
        name: String,
        /// Only this version.
        #[arg(long)]
        version: Option<String>,
        /// Windows that ended this long ago or later.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, value_name = "DURATION")]
        since: Duration,
        /// Fleet-wide windows: every node's windows ending in the same period, merged.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
        period: Duration,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
    /// Production quality from ground-truth feedback: accuracy, precision, recall, F1,
    /// ROC AUC or MAE and RMSE, per version, fleet-wide and per node.
    Quality {
        /// The model (the bundle's name).
        name: String,
        /// Only this version.
        #[arg(long)]
        version: Option<String>,
        /// Windows that ended this long ago or later.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration, value_name = "DURATION")]
        since: Duration,
        /// Fleet-wide figures: every node's windows ending in the same period, merged.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
        period: Duration,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        json: bool,
    },
}

/// `gantry serve`'s arguments.
#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    dir: DirArgs,
    /// QUIC address for agents and admins.
    #[arg(long, env = "GANTRY_LISTEN", default_value = crate::home::DEFAULT_LISTEN, value_name = "ADDR")]
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
    /// Address of the web console (plain HTTP, loopback only: reach it from elsewhere
    /// through an SSH tunnel or a TLS reverse proxy); "" (the default) leaves it off.
    #[arg(
        long,
        env = "GANTRY_CONSOLE_LISTEN",
        default_value = "",
        value_name = "ADDR"
    )]
    console_listen: String,
    /// How long a console sign-in lasts.
    #[arg(long, env = "GANTRY_CONSOLE_SESSION", default_value = "8h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    console_session: Duration,
    /// Prometheus remote-write receiver for the fleet's telemetry (protocol 1.0), e.g.
    /// http://127.0.0.1:9090/api/v1/write or https://mimir.example/api/v1/push; ""
    /// (the default) leaves it off. The store is the queue: an outage resends from where
    /// it stopped.
    #[arg(
        long,
        env = "GANTRY_REMOTE_WRITE",
        default_value = "",
        value_name = "URL"
    )]
    remote_write: String,
    /// Labels added to every remote-written series, `name=value,name=value`.
    #[arg(
        long,
        env = "GANTRY_REMOTE_WRITE_LABELS",
        default_value = "",
        value_name = "LABELS"
    )]
    remote_write_labels: String,
    /// CA certificates (PEM) an https:// remote-write receiver's certificate must chain
    /// to; the system's bundle (/etc/ssl/certs/ca-certificates.crt) where not given.
    #[arg(long, env = "GANTRY_REMOTE_WRITE_CA", value_name = "FILE")]
    remote_write_ca: Option<PathBuf>,
    /// Client certificate (PEM chain) for a remote-write receiver that asks for one
    /// (mutual TLS); with --remote-write-key.
    #[arg(long, env = "GANTRY_REMOTE_WRITE_CERT", value_name = "FILE")]
    remote_write_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GANTRY_REMOTE_WRITE_KEY", value_name = "FILE")]
    remote_write_key: Option<PathBuf>,
    /// OTLP/HTTP metrics receiver for the fleet's telemetry (binary protobuf, gzip), e.g.
    /// http://127.0.0.1:4318/v1/metrics (a URL naming no path takes /v1/metrics); ""
    /// (the default) leaves it off. Queued in the store like remote-write, with its own
    /// position.
    #[arg(long, env = "GANTRY_OTLP", default_value = "", value_name = "URL")]
    otlp: String,
    /// Resource attributes added to every node's OTLP metrics, `name=value,name=value`.
    #[arg(
        long,
        env = "GANTRY_OTLP_ATTRIBUTES",
        default_value = "",
        value_name = "ATTRIBUTES"
    )]
    otlp_attributes: String,
    /// CA certificates (PEM) an https:// OTLP receiver's certificate must chain
    /// to; the system's bundle (/etc/ssl/certs/ca-certificates.crt) where not given.
    #[arg(long, env = "GANTRY_OTLP_CA", value_name = "FILE")]
    otlp_ca: Option<PathBuf>,
    /// Client certificate (PEM chain) for a OTLP receiver that asks for one
    /// (mutual TLS); with --otlp-key.
    #[arg(long, env = "GANTRY_OTLP_CERT", value_name = "FILE")]
    otlp_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "GANTRY_OTLP_KEY", value_name = "FILE")]
    otlp_key: Option<PathBuf>,
    /// For tests: shift the clock certificates are issued and judged by (e.g. -10d).
    #[arg(long, hide = true, allow_hyphen_values = true, value_parser = parse_clock_offset, default_value = "0s")]
    clock_offset: i64,
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
    /// Prove a signed report (downloaded from the console) the controller's and unaltered;
    /// exit 1 naming what is wrong. Needs no controller: only the fleet's CA certificate.
    VerifyReport {
        /// The signed report file (`gantry-audit-report-….signed.json`).
        file: PathBuf,
        /// The fleet's CA certificate (PEM; `ca.crt` of the controller directory).
        /// Default: the CA in the admin identity file.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Admin identity file whose CA to use when --ca is not given.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// The verified report as JSON (nothing is printed on stdout unless it verifies).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the gates would only obscure them.
#[allow(clippy::large_enum_variant)]
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
        /// Fail when a feature's score in a node's latest drift window exceeds this (by
        /// the bundle's drift statistic; bundles with a reference profile). Give the bake
        /// time for a window to close (the node's monitoring.window).
        #[arg(long, value_name = "SCORE")]
        max_drift: Option<f64>,
        /// Fail when a node's production quality on the bundle (feedback joined since it
        /// started serving it; bundles with a --task) misses this: accuracy, precision,
        /// recall, f1, roc_auc as lower bounds, mae, rmse as upper bounds. Repeatable.
        #[arg(long, value_parser = parse_quality_gate, value_name = "METRIC=VALUE")]
        min_quality: Vec<(QualityMetric, f64)>,
        /// Feedback rows a node needs before --min-quality judges it.
        #[arg(long, default_value_t = gantry_shared::protocol::rollout::DEFAULT_MIN_QUALITY_ROWS, value_name = "N")]
        min_quality_rows: u64,
        /// Fail when the canary's prediction distribution, over the windows since it
        /// started, is further than this from the nodes still on the previous version
        /// over the same windows: per output feature, Kolmogorov–Smirnov for numeric
        /// outputs, Jensen–Shannon distance for labels (0–1; bundles with a reference
        /// profile).
        #[arg(long, value_name = "SCORE")]
        max_prediction_shift: Option<f64>,
        /// Fail when the canary's production quality over that period is worse than the
        /// nodes still on the previous version by more than DELTA (`accuracy=0.02`; for
        /// mae and rmse, higher by more than DELTA). Repeatable.
        #[arg(long, value_parser = parse_quality_drop, value_name = "METRIC=DELTA")]
        max_quality_drop: Vec<(QualityMetric, f64)>,
        /// Predictions (or feedback rows, for --max-quality-drop) the canary and the
        /// baseline each need before they are compared.
        #[arg(long, default_value_t = gantry_shared::protocol::rollout::DEFAULT_MIN_QUALITY_ROWS, value_name = "N")]
        min_compare_rows: u64,
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
    #[command(flatten)]
    Local(LocalBundleCommand),
    #[command(flatten)]
    Remote(RemoteBundleCommand),
}

/// Bundle commands on local files.
#[derive(Debug, Subcommand)]
enum LocalBundleCommand {
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
}

/// Bundle commands that talk to the controller.
#[derive(Debug, Subcommand)]
enum RemoteBundleCommand {
    /// Upload a signed bundle to the controller, which keeps it only if it passes the
    /// controller's trust policy (DIR/trust.json). A broken push resumes when run again.
    Push(PushArgs),
    /// Load a bundle file carried in (air-gapped) into the controller: checked against
    /// its trust policy like a push, and recorded in the audit log as an import.
    Import(PushArgs),
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
    /// Sessions of the model a node keeps, so that as many requests run at once
    /// (a node's `inference.instances` overrides it). Default: the node's (1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(gantry_shared::bundle::manifest::MAX_INSTANCES)))]
    instances: Option<u32>,
    /// ONNX Runtime threads within one operator, per session. Default: ONNX Runtime's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(gantry_shared::bundle::manifest::MAX_THREADS)))]
    intra_op_threads: Option<u32>,
    /// ONNX Runtime threads across independent operators, per session. Default: ONNX Runtime's.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(gantry_shared::bundle::manifest::MAX_THREADS)))]
    inter_op_threads: Option<u32>,
    /// Batch requests dynamically, up to N rows per run (the model must leave the first
    /// dimension of every input and output open).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(gantry_shared::bundle::manifest::MAX_BATCH_SIZE)))]
    max_batch_size: Option<u32>,
    /// How long a request may wait for others to join its batch, e.g. 500us or 2ms.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "max_batch_size")]
    max_queue_delay: Option<std::time::Duration>,
    /// Batch sizes sent as soon as they are reached, e.g. 4,8.
    #[arg(
        long = "preferred-batch-size",
        value_name = "N",
        value_delimiter = ',',
        requires = "max_batch_size"
    )]
    preferred_batch_sizes: Vec<u32>,
    /// Most requests waiting for a batch; more are refused at once. Default: no limit.
    #[arg(long, value_name = "N", requires = "max_batch_size")]
    max_queue_size: Option<u32>,
    /// Longest a request may wait in the queue before it is refused, e.g. 100ms.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "max_batch_size")]
    queue_timeout: Option<std::time::Duration>,
    /// A sample of the training or validation data, with the model's outputs on it
    /// where it has them, to measure drift against: .npy, .npz (arrays named after the
    /// model's tensors) or .csv (a header row). Profiled into the signed bundle.
    #[arg(long, value_name = "FILE")]
    reference_data: Option<PathBuf>,
    /// The drift statistic the threshold applies to: psi, ks or js.
    #[arg(long, value_name = "METRIC", value_parser = parse_drift_metric, requires = "reference_data")]
    drift_metric: Option<gantry_shared::monitoring::drift::Metric>,
    /// A feature scoring above this makes the model's health degraded on a node.
    /// Default: 0.25 for PSI, 0.2 for KS and JS.
    #[arg(long, value_name = "SCORE", requires = "reference_data")]
    drift_threshold: Option<f64>,
    /// What the model predicts, so nodes keep each answer for ground-truth feedback:
    /// classification or regression.
    #[arg(long, value_name = "TASK", value_parser = parse_task)]
    task: Option<gantry_shared::bundle::manifest::Task>,
    /// The output the prediction is read from (class scores, the probability of class
    /// 1, class labels, or the value). Default: the model's first output.
    #[arg(long, value_name = "OUTPUT", requires = "task")]
    prediction_output: Option<String>,
    /// The bundle file to write.
    #[arg(long, value_name = "BUNDLE")]
    out: PathBuf,
}

fn parse_task(text: &str) -> Result<gantry_shared::bundle::manifest::Task, String> {
    gantry_shared::bundle::manifest::Task::parse(text)
        .ok_or_else(|| format!("{text:?} is not a task: classification or regression"))
}

fn parse_drift_metric(text: &str) -> Result<gantry_shared::monitoring::drift::Metric, String> {
    gantry_shared::monitoring::drift::Metric::parse(text)
        .ok_or_else(|| format!("{text:?} is not a drift metric: psi, ks or js"))
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

/// Why a command-line value was refused (clap prints it after the argument's name).
#[derive(Debug, thiserror::Error)]
enum ValueError {
    #[error(transparent)]
    Duration(#[from] humantime::DurationError),
    #[error("the duration is too large")]
    TooLarge,
    #[error("{0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    #[error("{0:?} is not a finite number")]
    NotANumber(String),
    #[error("{0:?} is not an execution provider (cuda, cpu)")]
    NotAProvider(String),
    #[error("{0:?} is not a quality metric (accuracy, precision, recall, f1, roc_auc, mae, rmse)")]
    NotAMetric(String),
    #[error("{metric} {value} is out of range: {range}")]
    OutOfRange {
        metric: &'static str,
        value: f64,
        range: &'static str,
    },
}

/// A signed duration (`-10d`, `2h`) in milliseconds.
fn parse_clock_offset(text: &str) -> Result<i64, ValueError> {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let duration = humantime::parse_duration(rest)?;
    i64::try_from(duration.as_millis())
        .map(|ms| sign * ms)
        .map_err(|_| ValueError::TooLarge)
}

fn parse_key_value(text: &str) -> Result<(String, String), ValueError> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| ValueError::NotKeyValue(text.to_owned()))
}

fn parse_metric(text: &str) -> Result<(String, f64), ValueError> {
    let (k, v) = parse_key_value(text)?;
    match v.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok((k, value)),
        _ => Err(ValueError::NotANumber(v)),
    }
}

/// `METRIC=VALUE` for `--min-quality`: a metric by name, a bound in its range.
fn parse_quality_gate(text: &str) -> Result<(QualityMetric, f64), ValueError> {
    let (name, value) = parse_metric(text)?;
    let metric = QualityMetric::parse(&name).ok_or(ValueError::NotAMetric(name))?;
    let (ok, range) = if metric.higher_is_better() {
        ((0.0..=1.0).contains(&value), "a share between 0 and 1")
    } else {
        (value >= 0.0, "an error bound of 0 or more")
    };
    if !ok {
        return Err(ValueError::OutOfRange {
            metric: metric.as_str(),
            value,
            range,
        });
    }
    Ok((metric, value))
}

/// `METRIC=DELTA` for `--max-quality-drop`: a metric by name, a drop of 0 or more (at
/// most 1 for the shares).
fn parse_quality_drop(text: &str) -> Result<(QualityMetric, f64), ValueError> {
    let (name, value) = parse_metric(text)?;
    let metric = QualityMetric::parse(&name).ok_or(ValueError::NotAMetric(name))?;
    let ok = value >= 0.0 && (!metric.higher_is_better() || value <= 1.0);
    if !ok {
        return Err(ValueError::OutOfRange {
            metric: metric.as_str(),
            value,
            range: "a drop of 0 or more (at most 1 for accuracy, precision, recall, f1, roc_auc)",
        });
    }
    Ok((metric, value))
}

fn parse_provider(text: &str) -> Result<ExecutionProvider, ValueError> {
    match text.trim() {
        "cuda" => Ok(ExecutionProvider::Cuda),
        "cpu" => Ok(ExecutionProvider::Cpu),
        other => Err(ValueError::NotAProvider(other.to_owned())),
    }
}

/// Runs a parsed command line: the demo, the daemon or a CLI command, with logging set
/// up for it; returns the process's exit code.
pub fn run(cli: Cli) -> ExitCode {
    gantry_net::command::finish(dispatch(cli))
}

fn dispatch(cli: Cli) -> CommandResult {
    // The demo logs its embedded controller to a file of its own; the daemon at INFO,
    // commands only what goes wrong.
    let logging = |level| gantry_net::logging::init(level, gantry_net::logging::Format::Plain);
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| CommandError::failure("cannot start the async runtime", e))
    };
    match cli.command {
        Command::Demo {
            agents,
            agent_binary,
            onnxruntime,
            keep,
        } => demo(&crate::demo::Options {
            agents,
            agent_binary,
            onnxruntime,
            keep,
        }),
        Command::Local(command) => {
            logging("warn");
            local::run(command)
        }
        Command::Bundle(BundleCommand::Local(command)) => {
            logging("warn");
            bundle::local(command)
        }
        Command::Remote(command) => {
            logging(if matches!(command, RemoteCommand::Serve(_)) {
                "info"
            } else {
                "warn"
            });
            runtime()?.block_on(remote::run(command))
        }
        Command::Bundle(BundleCommand::Remote(command)) => {
            logging("warn");
            runtime()?.block_on(bundle::remote(command))
        }
    }
}

fn demo(options: &crate::demo::Options) -> CommandResult {
    match crate::demo::run(options) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ crate::demo::DemoError::Interrupted) => {
            Err(CommandError::interrupted(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

/// A request file carried over an air gap: `path` read and parsed, refused unless it is
/// `what` (its format field checked by `valid`).
fn read_request_file<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    valid: impl Fn(&T) -> bool,
    what: &str,
) -> Result<T, CommandError> {
    let text = std::fs::read(path)
        .map_err(|e| CommandError::failure(format!("cannot read {}", path.display()), e))?;
    serde_json::from_slice(&text)
        .ok()
        .filter(|r| valid(r))
        .ok_or_else(|| CommandError::from_error(format!("{} is not {what}", path.display())))
}

/// The answer file carried back over an air gap: pretty JSON, replaced at once.
fn write_response_file(
    path: &std::path::Path,
    value: &impl serde::Serialize,
) -> Result<(), CommandError> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("response serializes");
    bytes.push(b'\n');
    gantry_net::atomic::write_bytes(path, 0o644, &bytes)
        .map_err(|e| CommandError::failure(format!("cannot write {}", path.display()), e))
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serializes")
    );
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
