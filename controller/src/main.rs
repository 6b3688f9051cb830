//! `gantry`: parses arguments, runs the library, maps outcomes to exit codes
//! (0 success, 1 failure — including a bundle or policy that fails verification — and
//! 2 usage).

// Doc comments on the argument types are `--help` text, written for operators.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

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

#[derive(Debug, Subcommand)]
enum Command {
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
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "0")]
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

/// Parses sizes like `0`, `512MiB`, `8GiB`, `2GB`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 8GiB"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
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
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
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
            out,
        }) => {
            let policy = policy_cmd::create(&policy_cmd::CreateRequest {
                from,
                version,
                threshold,
                add_keys: keys,
                remove_keys,
                revoke,
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

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("8 furlongs").is_err());
        assert!(parse_size("GiB").is_err());
    }
}
