//! `gantry token create` and `gantry token redeem` (an offline enrollment by file).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `token` command.
pub(super) async fn run(command: TokenCommand) -> CommandResult {
    match command {
        TokenCommand::Redeem {
            request,
            out,
            admin,
        } => {
            use gantry_shared::protocol::enroll::{
                OFFLINE_REQUEST_FORMAT, OFFLINE_RESPONSE_FORMAT, OfflineRequest, OfflineResponse,
            };
            let offline: OfflineRequest = read_request_file(
                &request,
                |r: &OfflineRequest| r.format == OFFLINE_REQUEST_FORMAT,
                "an enrollment request from `gantry-agent enroll --offline-request`",
            )?;
            let identity = AdminIdentity::load(&client::identity_path(admin.identity.as_deref()))?;
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
            write_response_file(&out, &file)?;
            println!(
                "enrolled    {node} (by file)\nresponse    {}\nnext        carry it to the node: gantry-agent enroll --offline-response FILE",
                out.display()
            );
        }
        TokenCommand::Create { admin, labels, ttl } => {
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
    }
    Ok(ExitCode::SUCCESS)
}
