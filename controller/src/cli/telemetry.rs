//! `gantry telemetry import`: telemetry carried out of an air-gapped hall by file.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `telemetry` command.
pub(super) async fn run(command: TelemetryCommand) -> CommandResult {
    match command {
        TelemetryCommand::Import { file, admin, json } => {
            let bytes = std::fs::read(&file)
                .map_err(|e| CommandError::failure(format!("cannot read {}", file.display()), e))?;
            if bytes.len() > gantry_shared::telemetry_export::MAX_EXPORT_BYTES {
                return Err(CommandError::from_error(format!(
                    "{} is {} bytes; an export is at most {} (export in ranges with --max-records)",
                    file.display(),
                    bytes.len(),
                    gantry_shared::telemetry_export::MAX_EXPORT_BYTES
                )));
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
    }
    Ok(ExitCode::SUCCESS)
}
