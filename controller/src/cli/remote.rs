//! The commands that talk to (or are) the controller daemon: `serve` and every admin
//! call over the typed client.

use std::process::ExitCode;

use crate::client::{self, AdminClient, ClientError};
use crate::fleet_cmd;
use crate::home::{AdminIdentity, Home};
use crate::server::{self, ServeConfig};
use gantry_net::clock::now_ms;
use gantry_net::command::{CommandError, CommandResult};
use gantry_shared::protocol::admin::{Request, Response};
use tokio_util::sync::CancellationToken;

use super::{
    AdminArgs, AdminCommand, AuditCommand, FleetCommand, PushArgs, RemoteBundleCommand,
    RemoteCommand, ReportCommand, RolloutCommand, TelemetryCommand, TokenCommand, expiry_note,
    print_json,
};

async fn connect(args: &AdminArgs) -> Result<AdminClient, ClientError> {
    let identity = AdminIdentity::load(&client::identity_path(args.identity.as_deref()))?;
    AdminClient::connect(&identity, args.controller).await
}

/// `bundle push`, or `bundle import` (the same upload, recorded as an import).
async fn upload(args: PushArgs, import: bool) -> Result<(), CommandError> {
    let client = connect(&args.admin).await?;
    let info = if import {
        crate::push::import(&client, &args.bundle).await?
    } else {
        crate::push::push(&client, &args.bundle).await?
    };
    if args.json {
        print_json(&info);
    } else if import {
        println!(
            "imported {} {} ({} bytes)\nid: {}",
            info.name, info.version, info.size, info.id
        );
    } else {
        println!(
            "pushed {} {} ({} bytes)\nid: {}\nassign it with: gantry bundle assign {} --node NODE",
            info.name, info.version, info.size, info.id, info.id
        );
    }
    Ok(())
}

async fn audit(command: AuditCommand) -> CommandResult {
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

async fn rollout(command: RolloutCommand) -> CommandResult {
    use crate::rollout_cmd;
    use gantry_shared::protocol::rollout::{Gates, Spec, parse_steps};
    let now = now_ms;
    let (admin, request, json) = match command {
        RolloutCommand::Start {
            bundle,
            selector,
            steps,
            bake,
            max_unhealthy,
            max_error_rate,
            max_latency_p99,
            no_golden_gate,
            step_timeout,
            silence,
            admin,
            json,
        } => {
            let steps = parse_steps(&steps).map_err(|e| CommandError::failure("--steps", e))?;
            if let Some(rate) = max_error_rate.filter(|r| !(0.0..=1.0).contains(r)) {
                return Err(CommandError::from_error(format!(
                    "--max-error-rate {rate} is not a share between 0 and 1 (0.05 = 5 %)"
                )));
            }
            let spec = Spec {
                bundle,
                selector: selector.into_iter().collect(),
                steps,
                bake_ms: bake.as_millis() as u64,
                gates: Gates {
                    max_unhealthy,
                    max_error_rate,
                    max_latency_p99_s: max_latency_p99.map(|d| d.as_secs_f64()),
                    golden: !no_golden_gate,
                },
                step_timeout_ms: step_timeout.as_millis() as u64,
                silence_ms: silence.as_millis() as u64,
            };
            (admin, Request::RolloutStart(Box::new(spec)), json)
        }
        RolloutCommand::Status { id, admin, json } => (admin, Request::RolloutStatus { id }, json),
        RolloutCommand::Pause { id, admin } => (admin, Request::RolloutPause { id }, false),
        RolloutCommand::Resume { id, admin } => (admin, Request::RolloutResume { id }, false),
        RolloutCommand::Abort { id, admin } => (admin, Request::RolloutAbort { id }, false),
        RolloutCommand::Rollback { id, admin } => (admin, Request::RolloutRollback { id }, false),
    };
    match connect(&admin).await?.call(request).await? {
        Response::Rollout(r) if json => print_json(&r),
        Response::Rollout(r) => print!("{}", rollout_cmd::render_status(&r, now())),
        Response::Rollouts(list) if json => print_json(&list),
        Response::Rollouts(list) => print!("{}", rollout_cmd::render_list(&list, now())),
        _ => return Err(ClientError::Unexpected { call: "rollout" }.into()),
    }
    Ok(ExitCode::SUCCESS)
}

/// A key made here and a certificate for it from the controller (`request` carries the
/// public key): an admin identity to save, and when its certificate expires.
async fn new_admin_identity(
    admin: &AdminArgs,
    request: impl FnOnce(String) -> Request,
) -> Result<(AdminIdentity, Option<u64>), CommandError> {
    let (key_pem, public_key) = gantry_net::new_key_pair()?;
    let current = AdminIdentity::load(&client::identity_path(admin.identity.as_deref()))?;
    let client = AdminClient::connect(&current, admin.controller).await?;
    let client::AdminCertificate {
        name,
        role,
        certificate_pem,
        ca_pem,
        expires_at_ms,
    } = client.admin_certificate(request(public_key)).await?;
    let identity = AdminIdentity {
        name,
        role,
        controller: admin.controller.unwrap_or(current.controller),
        ca_pem,
        cert_pem: certificate_pem,
        key_pem,
    };
    Ok((identity, expires_at_ms))
}

pub(super) async fn run(command: RemoteCommand) -> CommandResult {
    match command {
        RemoteCommand::Serve {
            dir,
            listen,
            metrics_listen,
            retention,
            new_store,
            node_cert_lifetime,
            admin_cert_lifetime,
            renewal_grace,
            auto_cordon,
            clock_offset,
        } => {
            let auto_cordon = match crate::cordon::AutoCordon::parse(&auto_cordon) {
                Ok(rules) => rules,
                Err(e) => return Err(CommandError::config(format!("--auto-cordon: {e}"))),
            };
            let certs = crate::certs::CertPolicy {
                node_lifetime: node_cert_lifetime,
                admin_lifetime: admin_cert_lifetime,
                renewal_grace,
            };
            certs.validate().map_err(CommandError::config)?;
            gantry_net::service_dir::check_writer(&dir.dir, "gantry serve …")?;
            let metrics_listen = if metrics_listen.trim().is_empty() {
                None
            } else {
                Some(metrics_listen.trim().parse().map_err(|_| {
                    CommandError::usage(format!(
                        "--metrics-listen {metrics_listen:?} is not an address like 127.0.0.1:9401"
                    ))
                })?)
            };
            let shutdown = CancellationToken::new();
            gantry_net::signals::cancel_on_signals(shutdown.clone())
                .map_err(|e| CommandError::failure("cannot install signal handlers", e))?;
            server::serve(
                ServeConfig {
                    home: Home::new(dir.dir),
                    listen,
                    metrics_listen,
                    retention,
                    new_store,
                    certs,
                    clock: crate::certs::Clock {
                        offset_ms: clock_offset,
                    },
                    auto_cordon,
                },
                shutdown,
                None,
            )
            .await?;
        }
        RemoteCommand::Token(TokenCommand::Redeem {
            request,
            out,
            admin,
        }) => {
            use gantry_shared::protocol::enroll::{
                OFFLINE_REQUEST_FORMAT, OFFLINE_RESPONSE_FORMAT, OfflineRequest, OfflineResponse,
            };
            let text = std::fs::read(&request).map_err(|e| {
                CommandError::failure(format!("cannot read {}", request.display()), e)
            })?;
            let offline: OfflineRequest = serde_json::from_slice(&text)
                .ok()
                .filter(|r: &OfflineRequest| r.format == OFFLINE_REQUEST_FORMAT)
                .ok_or_else(|| {
                    CommandError::from_error(format!(
                        "{} is not an enrollment request from `gantry-agent enroll --offline-request`",
                        request.display()
                    ))
                })?;
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
            let mut bytes = serde_json::to_vec_pretty(&file).expect("response serializes");
            bytes.push(b'\n');
            gantry_net::atomic::write_bytes(&out, 0o644, &bytes)
                .map_err(|e| CommandError::failure(format!("cannot write {}", out.display()), e))?;
            println!(
                "enrolled    {node} (by file)\nresponse    {}\nnext        carry it to the node: gantry-agent enroll --offline-response FILE",
                out.display()
            );
        }
        RemoteCommand::Token(TokenCommand::Create { admin, labels, ttl }) => {
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
        RemoteCommand::Rollout(command) => return rollout(command).await,
        RemoteCommand::Audit(command) => return audit(command).await,
        RemoteCommand::Telemetry(TelemetryCommand::Import { file, admin, json }) => {
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
        RemoteCommand::Report(ReportCommand::Kpis {
            window,
            admin,
            json,
        }) => {
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
        RemoteCommand::Fleet(FleetCommand::Ls { admin, json }) => {
            let nodes = connect(&admin).await?.fleet_list().await?;
            if json {
                print_json(&nodes);
            } else {
                print!("{}", fleet_cmd::render_list(&nodes, now_ms()));
            }
        }
        RemoteCommand::Fleet(FleetCommand::Show { node, admin, json }) => {
            let detail = connect(&admin).await?.fleet_show(node).await?;
            if json {
                print_json(&detail);
            } else {
                print!("{}", fleet_cmd::render_show(&detail, now_ms()));
            }
        }
        RemoteCommand::Fleet(FleetCommand::Top {
            admin,
            once,
            interval,
        }) => {
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
        RemoteCommand::Fleet(FleetCommand::Revoke { node, admin }) => {
            let node = connect(&admin).await?.node_revoke(node).await?;
            println!("revoked     {node}: its certificate no longer connects");
        }
        RemoteCommand::Fleet(FleetCommand::Cordon {
            node,
            reason,
            admin,
        }) => {
            let cordon = connect(&admin)
                .await?
                .node_cordon(node.clone(), reason)
                .await?;
            let reason = cordon.map(|c| c.reason).unwrap_or_default();
            println!(
                "cordoned    {node}: it takes no new rollouts ({reason}); `gantry fleet uncordon {node}` lifts it"
            );
        }
        RemoteCommand::Fleet(FleetCommand::Uncordon { node, admin }) => {
            connect(&admin).await?.node_uncordon(node.clone()).await?;
            println!("uncordoned  {node}: it takes rollouts again");
        }
        RemoteCommand::Admin(AdminCommand::Add {
            name,
            role,
            out,
            admin,
        }) => {
            let (identity, expires_at_ms) =
                new_admin_identity(&admin, |public_key| Request::AdminAdd {
                    name,
                    role,
                    public_key,
                })
                .await?;
            identity.save(&out)?;
            println!(
                "admin       {} ({}) written to {} (mode 0600){}",
                identity.name,
                identity.role.as_str(),
                out.display(),
                expiry_note(expires_at_ms)
            );
        }
        RemoteCommand::Admin(AdminCommand::Rotate { admin }) => {
            let (identity, expires_at_ms) =
                new_admin_identity(&admin, |public_key| Request::AdminRotate { public_key })
                    .await?;
            let path = client::identity_path(admin.identity.as_deref());
            identity.save(&path)?;
            println!(
                "rotated     {} ({}): new key and certificate in {}{}; the previous certificate is revoked",
                identity.name,
                identity.role.as_str(),
                path.display(),
                expiry_note(expires_at_ms)
            );
        }
        RemoteCommand::Fleet(FleetCommand::Renew {
            request,
            out,
            admin,
        }) => {
            use gantry_shared::protocol::enroll::{
                OFFLINE_RENEW_REQUEST_FORMAT, OFFLINE_RENEW_RESPONSE_FORMAT, OfflineRenewRequest,
                OfflineRenewResponse,
            };
            let text = std::fs::read(&request).map_err(|e| {
                CommandError::failure(format!("cannot read {}", request.display()), e)
            })?;
            let offline: OfflineRenewRequest = serde_json::from_slice(&text)
                .ok()
                .filter(|r: &OfflineRenewRequest| r.format == OFFLINE_RENEW_REQUEST_FORMAT)
                .ok_or_else(|| {
                    CommandError::from_error(format!(
                        "{} is not a renewal request from `gantry-agent renew --offline-request`",
                        request.display()
                    ))
                })?;
            let response = connect(&admin).await?.node_renew(offline.request).await?;
            let node = response.node_name.clone();
            let expires = response.certificate_expires_at_ms;
            let file = OfflineRenewResponse {
                format: OFFLINE_RENEW_RESPONSE_FORMAT.to_owned(),
                response,
            };
            let mut bytes = serde_json::to_vec_pretty(&file).expect("response serializes");
            bytes.push(b'\n');
            gantry_net::atomic::write_bytes(&out, 0o644, &bytes)
                .map_err(|e| CommandError::failure(format!("cannot write {}", out.display()), e))?;
            println!(
                "renewed     {node} (by file){}\nresponse    {}\nnext        carry it to the node: gantry-agent renew --offline-response FILE",
                expiry_note(expires),
                out.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `bundle push`, `import`, `ls` and `assign`: calls on the controller.
pub(super) async fn bundle(command: RemoteBundleCommand) -> CommandResult {
    match command {
        RemoteBundleCommand::Push(args) => upload(args, false).await?,
        RemoteBundleCommand::Import(args) => upload(args, true).await?,
        RemoteBundleCommand::Ls { admin, json } => {
            let bundles = connect(&admin).await?.bundle_list().await?;
            if json {
                print_json(&bundles);
            } else {
                print!("{}", crate::push::render_list(&bundles));
            }
        }
        RemoteBundleCommand::Assign { id, nodes, admin } => {
            let (id, nodes) = connect(&admin).await?.bundle_assign(id, nodes).await?;
            println!("assigned {id} to {}", nodes.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
