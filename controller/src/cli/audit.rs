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
    }
}
