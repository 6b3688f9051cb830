//! `gantry console login`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `console` command.
pub(super) async fn run(command: ConsoleCommand) -> CommandResult {
    match command {
        ConsoleCommand::Login { admin, json } => {
            let client = connect(&admin).await?;
            let (url, code, expires_at_ms) = client.console_login().await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "url": url, "code": code, "expires_at_ms": expires_at_ms })
                );
            } else {
                let expires = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(expires_at_ms),
                );
                println!(
                    "open this link to sign in to the console (once, until {expires}):\n{url}"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
