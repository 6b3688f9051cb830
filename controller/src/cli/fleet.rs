//! `gantry fleet`: ls, show, top, revoke, cordon, uncordon and renew by file.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A `fleet` command.
pub(super) async fn run(command: FleetCommand) -> CommandResult {
    match command {
        FleetCommand::Ls { admin, json } => {
            let nodes = connect(&admin).await?.fleet_list().await?;
            if json {
                print_json(&nodes);
            } else {
                print!("{}", fleet_cmd::render_list(&nodes, now_ms()));
            }
        }
        FleetCommand::Show { node, admin, json } => {
            let detail = connect(&admin).await?.fleet_show(node).await?;
            if json {
                print_json(&detail);
            } else {
                print!("{}", fleet_cmd::render_show(&detail, now_ms()));
            }
        }
        FleetCommand::Top {
            admin,
            once,
            interval,
        } => {
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
        FleetCommand::Revoke { node, admin } => {
            let node = connect(&admin).await?.node_revoke(node).await?;
            println!("revoked     {node}: its certificate no longer connects");
        }
        FleetCommand::Cordon {
            node,
            reason,
            admin,
        } => {
            let cordon = connect(&admin)
                .await?
                .node_cordon(node.clone(), reason)
                .await?;
            let reason = cordon.map(|c| c.reason).unwrap_or_default();
            println!(
                "cordoned    {node}: it takes no new rollouts ({reason}); `gantry fleet uncordon {node}` lifts it"
            );
        }
        FleetCommand::Uncordon { node, admin } => {
            connect(&admin).await?.node_uncordon(node.clone()).await?;
            println!("uncordoned  {node}: it takes rollouts again");
        }
        FleetCommand::Renew {
            request,
            out,
            admin,
        } => {
            use gantry_shared::protocol::enroll::{
                OFFLINE_RENEW_REQUEST_FORMAT, OFFLINE_RENEW_RESPONSE_FORMAT, OfflineRenewRequest,
                OfflineRenewResponse,
            };
            let offline: OfflineRenewRequest = read_request_file(
                &request,
                |r: &OfflineRenewRequest| r.format == OFFLINE_RENEW_REQUEST_FORMAT,
                "a renewal request from `gantry-agent renew --offline-request`",
            )?;
            let response = connect(&admin).await?.node_renew(offline.request).await?;
            let node = response.node_name.clone();
            let expires = response.certificate_expires_at_ms;
            let file = OfflineRenewResponse {
                format: OFFLINE_RENEW_RESPONSE_FORMAT.to_owned(),
                response,
            };
            write_response_file(&out, &file)?;
            println!(
                "renewed     {node} (by file){}\nresponse    {}\nnext        carry it to the node: gantry-agent renew --offline-response FILE",
                expiry_note(expires),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
