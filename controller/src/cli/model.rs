//! `gantry model drift` and `gantry model quality`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `model` command.
pub(super) async fn run(command: ModelCommand) -> CommandResult {
    match command {
        ModelCommand::Drift {
            name,
            version,
            since,
            period,
            admin,
            json,
        } => {
            let since_ms = gantry_net::clock::now_ms().saturating_sub(since.as_millis() as u64);
            let report = connect(&admin)
                .await?
                .model_drift(
                    &name,
                    version.as_deref(),
                    since_ms,
                    period.as_millis() as u64,
                )
                .await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", crate::drift::render(&report));
            }
        }
        ModelCommand::Quality {
            name,
            version,
            since,
            period,
            admin,
            json,
        } => {
            let since_ms = gantry_net::clock::now_ms().saturating_sub(since.as_millis() as u64);
            let report = connect(&admin)
                .await?
                .model_quality(
                    &name,
                    version.as_deref(),
                    since_ms,
                    period.as_millis() as u64,
                )
                .await?;
            if json {
                print_json(&report);
            } else {
                print!("{}", crate::quality::render(&report));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
