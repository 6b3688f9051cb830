//! `gantry report kpis`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `report` command.
pub(super) async fn run(command: ReportCommand) -> CommandResult {
    match command {
        ReportCommand::Kpis {
            window,
            admin,
            json,
        } => {
            let kpis = connect(&admin)
                .await?
                .report_kpis(window.as_millis() as u64)
                .await?;
            if json {
                print_json(&kpis);
            } else {
                print!("{}", crate::rollout_cmd::render_kpis(&kpis));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
