//! `gantry audit verify` and `gantry audit report`, through the controller or on a copy of its store (`--dir`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// An `audit` command.
pub(super) async fn run(command: AuditCommand) -> CommandResult {
    use crate::audit_cmd;
    match command {
        AuditCommand::Verify { dir, admin, json } => {
            let v = if let Some(dir) = dir {
                tokio::task::spawn_blocking(move || {
                    audit_cmd::open_store(&dir)?
                        .guarded(crate::store::Store::verify_audit)
                        .map_err(audit_cmd::OfflineError::from)
                })
                .await??
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
            let to_ms = gantry_net::clock::now_ms();
            let from_ms = to_ms.saturating_sub(since.as_millis() as u64);
            let silence_ms = silence.as_millis() as u64;
            let report = if let Some(dir) = dir {
                tokio::task::spawn_blocking(move || {
                    audit_cmd::open_store(&dir)?
                        .guarded(|store| crate::audit::report(store, from_ms, to_ms, silence_ms))
                        .map_err(audit_cmd::OfflineError::from)
                })
                .await??
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
        AuditCommand::VerifyReport {
            file,
            ca,
            identity,
            json,
        } => verify_report(&file, ca.as_deref(), identity.as_deref(), json),
    }
}

fn verify_report(
    file: &std::path::Path,
    ca: Option<&std::path::Path>,
    identity: Option<&std::path::Path>,
    json: bool,
) -> CommandResult {
    use gantry_shared::signed_report;
    let ca_pem = match ca {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CommandError::failure(
                format!("cannot read the CA certificate {}", path.display()),
                e,
            )
        })?,
        None => AdminIdentity::load(&client::identity_path(identity))?.ca_pem,
    };
    let bytes = std::fs::read(file)
        .map_err(|e| CommandError::failure(format!("cannot read {}", file.display()), e))?;
    let verified = signed_report::verify(&bytes, &ca_pem).map_err(|e| {
        CommandError::failure(
            format!("{} is not a valid signed audit report", file.display()),
            e,
        )
    })?;
    let r = &verified.report;
    if json {
        print_json(r);
    } else {
        println!(
            "{}: signed by this fleet's controller (certificate sha256 {}), unaltered",
            file.display(),
            verified.certificate_sha256
        );
        println!(
            "generated {}, covering {} to {}; audit chain {} ({} entries), {} flags",
            gantry_net::clock::rfc3339(r.generated_at_ms),
            gantry_net::clock::rfc3339(r.from_ms),
            gantry_net::clock::rfc3339(r.to_ms),
            if r.chain.ok() { "intact" } else { "BROKEN" },
            r.chain.entries,
            r.flags.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
