//! Admin calls: each checked against the caller's role and logged with the caller.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::collections::BTreeMap;
use std::sync::Arc;

use gantry_shared::protocol::admin::{self, NodeDetail, NodeLatest, NodeSummary, Request, Role};
use gantry_shared::protocol::delivery;
use gantry_shared::protocol::enroll::JoinToken;
use gantry_shared::protocol::{ErrorCode, Response};
use quinn::VarInt;
use sha2::{Digest, Sha256};

use super::{CLOSE_REVOKED, Shared, blocking, error, record_audit};
use crate::audit;
use crate::ca::{self, PeerPublicKey};
use crate::rollouts::{Command, RolloutError};
use crate::store::{IdentityRecord, NodeRecord, Principal, TokenRecord};

/// Longest token lifetime accepted.
const MAX_TOKEN_TTL_S: u64 = 30 * 24 * 3600;

/// Whether `caller`, holding `role`, may make `request`: the refusal to answer if not.
fn authorize(caller: &str, role: Role, request: &Request) -> Result<(), Response> {
    let required = request.required_role();
    if role >= required {
        return Ok(());
    }
    Err(error(
        ErrorCode::Forbidden,
        format!(
            "`{}` needs the {} role; {caller} has {}",
            request.name(),
            required.as_str(),
            role.as_str()
        ),
    ))
}

pub(super) async fn handle(
    shared: &Arc<Shared>,
    caller: &str,
    role: Role,
    request: Request,
) -> Response {
    let call = request.name();
    if let Err(refusal) = authorize(caller, role, &request) {
        tracing::warn!(
            admin = caller,
            role = role.as_str(),
            call,
            required = request.required_role().as_str(),
            "admin call refused"
        );
        return refusal;
    }
    tracing::info!(admin = caller, role = role.as_str(), call, "admin call");
    match request {
        Request::TokenCreate { labels, ttl_s } => token_create(shared, caller, labels, ttl_s).await,
        Request::ConsoleLogin => super::console::issue(shared, caller, role).await,
        Request::FleetList => match list(shared).await {
            Some(nodes) => Response::Admin(admin::Response::Nodes(nodes)),
            None => error(ErrorCode::Unavailable, "the controller store failed"),
        },
        Request::FleetShow { node } => show(shared, &node).await,
        Request::FleetTop => top(shared).await,
        Request::TelemetryQuery {
            node,
            after_seq,
            limit,
        } => {
            let store = Arc::clone(&shared.store);
            match blocking(move || store.records(&node, after_seq, limit.min(100_000) as usize))
                .await
            {
                Some(Ok(records)) => Response::Admin(admin::Response::Records(records)),
                _ => error(ErrorCode::Unavailable, "the controller store failed"),
            }
        }
        Request::NodeRevoke { node } => revoke(shared, caller, node).await,
        Request::NodeCordon { node, reason } => cordon(shared, caller, node, Some(reason)).await,
        Request::NodeUncordon { node } => cordon(shared, caller, node, None).await,
        Request::AdminAdd {
            name,
            role,
            public_key,
        } => admin_add(shared, caller, name, role, &public_key, false).await,
        Request::AdminRotate { public_key } => {
            admin_add(shared, caller, caller.to_owned(), role, &public_key, true).await
        }
        Request::NodeRenew(request) => {
            tracing::info!(admin = caller, node = %request.node_name, "renewing a node certificate by file");
            super::renew::by_proof(shared, &request, true)
                .await
                .map_or_else(
                    |e| e,
                    |r| Response::Admin(admin::Response::NodeRenewed(Box::new(r))),
                )
        }
        Request::BundleUpload {
            file_sha256,
            size,
            offset,
            data,
        } => {
            let bytes = match delivery::decode(&data, delivery::CHUNK_SIZE) {
                Ok(bytes) => bytes,
                Err(e) => return error(ErrorCode::BadRequest, e),
            };
            let bundles = Arc::clone(&shared.bundles);
            repo_call(move || {
                bundles
                    .upload(&file_sha256, size, offset, &bytes)
                    .map(|received| admin::Response::Uploaded { received })
            })
            .await
        }
        Request::BundleCommit {
            file_sha256,
            import,
        } => {
            let bundles = Arc::clone(&shared.bundles);
            let caller_name = caller.to_owned();
            let (store, trust) = (Arc::clone(&shared.store), shared.bundles.trust_path());
            let file = file_sha256.clone();
            let response = repo_call(move || {
                super::audit_trust_policy(&store, &trust);
                bundles
                    .commit(&file, &caller_name, std::time::SystemTime::now())
                    .map(|info| admin::Response::Pushed(Box::new(info)))
            })
            .await;
            match &response {
                Response::Admin(admin::Response::Pushed(info)) => {
                    tracing::info!(admin = caller, id = %info.id, name = %info.name, version = %info.version, bytes = info.size, "bundle pushed");
                    record_audit(
                        shared,
                        crate::audit::entry(
                            caller,
                            if import {
                                "bundle.import"
                            } else {
                                "bundle.push"
                            },
                            &info.id,
                            audit::details([
                                ("name", serde_json::json!(info.name)),
                                ("version", serde_json::json!(info.version)),
                                ("file_sha256", serde_json::json!(info.file_sha256)),
                                ("size", serde_json::json!(info.size)),
                                ("signers", serde_json::json!(info.signers)),
                                ("policy_sha256", serde_json::json!(info.policy_sha256)),
                                ("signatures_valid", serde_json::json!(true)),
                            ]),
                        ),
                    )
                    .await;
                }
                Response::Error(e) => {
                    let action = if import {
                        "bundle.import_refused"
                    } else {
                        "bundle.push_refused"
                    };
                    tracing::warn!(admin = caller, reason = %e.message, %action, "bundle upload refused");
                    record_audit(
                        shared,
                        crate::audit::entry(
                            caller,
                            action,
                            "",
                            audit::details([
                                ("reason", serde_json::json!(e.message)),
                                ("file_sha256", serde_json::json!(file_sha256)),
                            ]),
                        ),
                    )
                    .await;
                }
                _ => {}
            }
            response
        }
        Request::BundleList => {
            let bundles = Arc::clone(&shared.bundles);
            repo_call(move || bundles.list().map(admin::Response::Bundles)).await
        }
        Request::BundleAssign { id, nodes } => {
            let unknown: Vec<&String> = {
                let Some(known) = list(shared).await else {
                    return error(ErrorCode::Unavailable, "the controller store failed");
                };
                nodes
                    .iter()
                    .filter(|n| !known.iter().any(|k| &k.name == *n))
                    .collect()
            };
            if nodes.is_empty() || !unknown.is_empty() {
                return error(
                    ErrorCode::NotFound,
                    if nodes.is_empty() {
                        "name at least one node to assign the bundle to".to_owned()
                    } else {
                        format!("no enrolled node is named {unknown:?}; see `gantry fleet ls`")
                    },
                );
            }
            let bundles = Arc::clone(&shared.bundles);
            let admin = caller.to_owned();
            let response = repo_call(move || {
                // The assignment and its audit entry are one transaction.
                let audit = |info: &gantry_shared::protocol::delivery::BundleInfo| {
                    vec![crate::audit::entry(
                        admin,
                        "bundle.assign",
                        info.id.clone(),
                        audit::details([
                            ("nodes", serde_json::json!(nodes)),
                            ("model", serde_json::json!(info.name)),
                        ]),
                    )]
                };
                bundles
                    .assign(&id, &nodes, audit)
                    .map(|info| admin::Response::Assigned {
                        id: info.id,
                        nodes,
                        model: info.name,
                    })
            })
            .await;
            if let Response::Admin(admin::Response::Assigned { id, nodes, model }) = &response {
                tracing::info!(admin = caller, %id, model, ?nodes, "bundle assigned");
            }
            response
        }
        Request::RolloutStart(spec) => {
            rollout_call(shared, caller, move |engine, views, caller, now| {
                engine
                    .start(*spec, caller, views, now)
                    .map(|r| admin::Response::Rollout(Box::new(r)))
            })
            .await
        }
        Request::RolloutStatus { id } => match shared.rollouts.status(id.as_deref()) {
            Ok(mut list) if id.is_some() => {
                Response::Admin(admin::Response::Rollout(Box::new(list.remove(0))))
            }
            Ok(list) => Response::Admin(admin::Response::Rollouts(list)),
            Err(e) => rollout_error(&e),
        },
        Request::RolloutPause { id } => rollout_command(shared, caller, id, Command::Pause).await,
        Request::RolloutResume { id } => rollout_command(shared, caller, id, Command::Resume).await,
        Request::RolloutAbort { id } => rollout_command(shared, caller, id, Command::Abort).await,
        Request::RolloutRollback { id } => {
            rollout_command(shared, caller, id, Command::Rollback).await
        }
        Request::ReportKpis { window_ms } => {
            let now = gantry_net::clock::now_ms();
            let mut kpis = shared.rollouts.kpis(window_ms, now);
            let store = Arc::clone(&shared.store);
            let from = kpis.from_ms;
            match blocking(move || crate::quality::per_version(&store, from, now)).await {
                Some(Ok(figures)) => {
                    for ((model, _), v) in figures {
                        kpis.model_quality.entry(model).or_default().push(v);
                    }
                    Response::Admin(admin::Response::Kpis(Box::new(kpis)))
                }
                _ => error(ErrorCode::Unavailable, "the controller store failed"),
            }
        }
        Request::TelemetryImport { file } => telemetry_import(shared, caller, &file).await,
        Request::TokenRedeem(request) => {
            let node = request.node_name.clone();
            let node_public_key = request.public_key.clone();
            match super::enroll(shared, *request).await {
                Response::Enrolled(response) => {
                    let message = gantry_shared::protocol::enroll::offline_response_message(
                        &node_public_key,
                        &response,
                    );
                    let signature = match gantry_net::sign(&shared.controller_key_pem, &message) {
                        Ok(signature) => signature,
                        Err(e) => {
                            tracing::error!(admin = caller, %node, error = %e, "cannot sign an enrollment by file with the controller key; the node is enrolled but its response cannot be issued: revoke it and enroll again once the key is fixed");
                            return error(
                                ErrorCode::Unavailable,
                                "the controller cannot sign the enrollment response",
                            );
                        }
                    };
                    tracing::info!(admin = caller, %node, "node enrolled by file");
                    Response::Admin(admin::Response::Redeemed {
                        response,
                        controller_certificate_pem: shared.controller_certificate_pem.clone(),
                        controller_signature: gantry_shared::bundle::signing::to_hex(&signature),
                    })
                }
                other => other,
            }
        }
        Request::AuditVerify => {
            let store = Arc::clone(&shared.store);
            match blocking(move || store.verify_audit()).await {
                Some(Ok(v)) => Response::Admin(admin::Response::AuditVerified(v)),
                _ => error(ErrorCode::Unavailable, "the controller store failed"),
            }
        }
        Request::AuditEntries {
            before_seq,
            limit,
            filter,
        } => {
            let store = Arc::clone(&shared.store);
            let limit = usize::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
            let page = blocking(move || {
                store.audit_page(before_seq, limit, |e| {
                    filter.is_empty()
                        || e.actor.contains(&filter)
                        || e.action.contains(&filter)
                        || e.subject.contains(&filter)
                })
            })
            .await;
            match page {
                Some(Ok(entries)) => Response::Admin(admin::Response::AuditEntries(entries)),
                _ => error(ErrorCode::Unavailable, "the controller store failed"),
            }
        }
        Request::ModelDrift {
            model,
            version,
            since_ms,
            period_ms,
        } => {
            let (store, bundles) = (Arc::clone(&shared.store), Arc::clone(&shared.bundles));
            let report = blocking(move || {
                crate::drift::report(
                    &store,
                    &bundles,
                    &model,
                    version.as_deref(),
                    since_ms,
                    period_ms,
                )
            })
            .await;
            match report {
                Some(Ok(r)) => Response::Admin(admin::Response::Drift(Box::new(r))),
                _ => error(ErrorCode::Unavailable, "the controller store failed"),
            }
        }
        Request::ModelQuality {
            model,
            version,
            since_ms,
            period_ms,
        } => {
            let store = Arc::clone(&shared.store);
            let report = blocking(move || {
                crate::quality::report(&store, &model, version.as_deref(), since_ms, period_ms)
            })
            .await;
            match report {
                Some(Ok(r)) => Response::Admin(admin::Response::Quality(Box::new(r))),
                _ => error(ErrorCode::Unavailable, "the controller store failed"),
            }
        }
        Request::CaptureExport {
            model,
            version,
            after,
        } => capture_export(shared, caller, model, version, after).await,
        Request::AuditReport {
            from_ms,
            to_ms,
            silence_ms,
        } => {
            let store = Arc::clone(&shared.store);
            match blocking(move || crate::audit::report(&store, from_ms, to_ms, silence_ms)).await {
                Some(Ok(r)) => Response::Admin(admin::Response::AuditReport(Box::new(r))),
                _ => error(ErrorCode::Unavailable, "the controller store failed"),
            }
        }
    }
}

async fn rollout_command(
    shared: &Arc<Shared>,
    caller: &str,
    id: String,
    command: Command,
) -> Response {
    rollout_call(shared, caller, move |engine, views, caller, now| {
        engine
            .command(&id, command, caller, views, now)
            .map(|r| admin::Response::Rollout(Box::new(r)))
    })
    .await
}

/// Runs a rollout change with the current node views, off the async workers.
async fn rollout_call(
    shared: &Arc<Shared>,
    caller: &str,
    f: impl FnOnce(
        &crate::rollouts::Engine,
        &std::collections::BTreeMap<String, crate::rollouts::NodeView>,
        &str,
        u64,
    ) -> Result<admin::Response, RolloutError>
    + Send
    + 'static,
) -> Response {
    let Some(views) = super::node_views(shared).await else {
        return error(ErrorCode::Unavailable, "the controller store failed");
    };
    let shared = Arc::clone(shared);
    let caller = caller.to_owned();
    match blocking(move || {
        f(
            &shared.rollouts,
            &views,
            &caller,
            gantry_net::clock::now_ms(),
        )
    })
    .await
    {
        Some(Ok(response)) => Response::Admin(response),
        Some(Err(e)) => rollout_error(&e),
        None => error(ErrorCode::Unavailable, "the rollout task failed"),
    }
}

fn rollout_error(e: &RolloutError) -> Response {
    match e {
        RolloutError::BadRequest(m) => error(ErrorCode::BadRequest, m.clone()),
        RolloutError::NotFound(m) => error(ErrorCode::NotFound, m.clone()),
        RolloutError::Conflict(m) => error(ErrorCode::Conflict, m.clone()),
        RolloutError::Repo(e) => super::repo_error(e),
        RolloutError::Store(e) => {
            // The store's path and the engine's words stay in the controller's log.
            tracing::error!(
                error = gantry_shared::bundle::outcome::error_chain(e),
                "rollout store failure"
            );
            error(
                ErrorCode::Unavailable,
                "the controller's store failed; try again, or see the controller's log",
            )
        }
    }
}

/// Verifies a telemetry export against the node's enrolled certificate and key, then
/// stores its records idempotently by (node, sequence) and records the import.
async fn telemetry_import(shared: &Arc<Shared>, caller: &str, file: &str) -> Response {
    use gantry_shared::telemetry_export::{self, MAX_EXPORT_BYTES};
    let bytes = match delivery::decode(file, MAX_EXPORT_BYTES) {
        Ok(bytes) => bytes,
        Err(e) => return error(ErrorCode::BadRequest, format!("the export {e}")),
    };
    let file_sha256 = format!("{:x}", Sha256::digest(&bytes));
    let parsed = telemetry_export::parse_envelope(&bytes).and_then(|envelope| {
        let body = telemetry_export::parse_body(&envelope.body)?;
        Ok((envelope, body))
    });
    let (envelope, body) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return error(ErrorCode::BadRequest, e.to_string()),
    };
    let store = Arc::clone(&shared.store);
    let name = body.node.clone();
    let node = match blocking(move || store.node(&name)).await {
        Some(Ok(Some(node))) => node,
        Some(Ok(None)) => {
            return error(
                ErrorCode::NotFound,
                format!(
                    "no node named {:?} is enrolled here; telemetry is accepted only from this fleet's nodes",
                    body.node
                ),
            );
        }
        _ => return error(ErrorCode::Unavailable, "the controller store failed"),
    };
    let refuse = |message: String| {
        tracing::warn!(admin = caller, node = %node.name, reason = %message, "telemetry import refused");
        error(ErrorCode::BadRequest, message)
    };
    if node.revoked {
        return refuse(format!(
            "node {} is revoked; its exports are not accepted",
            node.name
        ));
    }
    if ca::pem_fingerprint(&envelope.certificate_pem)
        .ok()
        .as_deref()
        != Some(node.fingerprint.as_str())
    {
        return refuse(format!(
            "the export's certificate is not the one node {} enrolled with (a foreign or re-enrolled node)",
            node.name
        ));
    }
    if node.public_key.is_empty() {
        return refuse(format!(
            "no public key is recorded for node {} (it enrolled before signed exports); re-enroll it",
            node.name
        ));
    }
    let signature =
        gantry_shared::bundle::signing::from_hex(&envelope.signature).unwrap_or_default();
    if !gantry_net::verify(
        &node.public_key,
        &telemetry_export::signed_message(&envelope.body),
        &signature,
    ) {
        return refuse(format!(
            "the export's signature does not verify with node {}'s key: the file was altered, or is not from that node",
            node.name
        ));
    }
    let records = body.records.len() as u64;
    let (from_seq, to_seq, name) = (body.from_seq, body.to_seq, node.name.clone());
    let store = Arc::clone(&shared.store);
    let stored = blocking(move || -> Result<(u64, u64), ImportError> {
        let mut totals = (0, 0);
        super::audit_node_journal(&store, &name, &body.records, "telemetry import");
        super::keep_model_windows(&store, &name, &body.records);
        let mut records = body.records.into_iter().peekable();
        while records.peek().is_some() {
            let batch = gantry_shared::protocol::telemetry::Batch {
                records: records
                    .by_ref()
                    .take(gantry_shared::protocol::telemetry::MAX_BATCH_RECORDS)
                    .collect(),
            };
            let results = store.store_batches(&[(name.as_str(), &batch)])?;
            let outcome = results.into_iter().next().expect("one result per batch")?;
            totals.0 += outcome.stored;
            totals.1 += outcome.duplicates;
        }
        Ok(totals)
    })
    .await;
    let (stored, duplicates) = match stored {
        Some(Ok(totals)) => totals,
        Some(Err(e)) => {
            tracing::error!(error = %e, "telemetry import failed in the store");
            return error(
                ErrorCode::Unavailable,
                "the controller store failed; import again",
            );
        }
        None => return error(ErrorCode::Unavailable, "the import task failed"),
    };
    tracing::info!(admin = caller, node = %node.name, records, stored, duplicates, "telemetry imported");
    record_audit(
        shared,
        crate::audit::entry(
            caller,
            "telemetry.import",
            &node.name,
            audit::details([
                ("from_seq", serde_json::json!(from_seq)),
                ("to_seq", serde_json::json!(to_seq)),
                ("records", serde_json::json!(records)),
                ("stored", serde_json::json!(stored)),
                ("duplicates", serde_json::json!(duplicates)),
                ("file_sha256", serde_json::json!(file_sha256)),
            ]),
        ),
    )
    .await;
    Response::Admin(admin::Response::TelemetryImported {
        node: node.name,
        from_seq,
        to_seq,
        records,
        stored,
        duplicates,
    })
}

async fn repo_call(
    f: impl FnOnce() -> Result<admin::Response, crate::bundles::RepoError> + Send + 'static,
) -> Response {
    match blocking(f).await {
        Some(Ok(response)) => Response::Admin(response),
        Some(Err(e)) => super::repo_error(&e),
        None => error(ErrorCode::Unavailable, "the bundle task failed"),
    }
}

fn random_hex(bytes: usize) -> Result<String, Response> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)
        .map_err(|e| error(ErrorCode::Unavailable, format!("no randomness: {e}")))?;
    Ok(gantry_shared::bundle::signing::to_hex(&buf))
}

async fn token_create(
    shared: &Shared,
    caller: &str,
    labels: BTreeMap<String, String>,
    ttl_s: u64,
) -> Response {
    if ttl_s == 0 || ttl_s > MAX_TOKEN_TTL_S {
        return error(
            ErrorCode::BadRequest,
            format!(
                "the TTL must be between 1 s and {} days",
                MAX_TOKEN_TTL_S / 86_400
            ),
        );
    }
    for (k, v) in &labels {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        };
        if !ok(k) || !ok(v) {
            return error(
                ErrorCode::BadRequest,
                format!(
                    "label {k}={v}: keys and values are 1-63 letters, digits, '.', '_', '-', '/'"
                ),
            );
        }
    }
    let (id, secret) = match (random_hex(8), random_hex(32)) {
        (Ok(id), Ok(secret)) => (id, secret),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let expires_at_ms = gantry_net::clock::now_ms() + ttl_s * 1000;
    let record = TokenRecord {
        secret_sha256: gantry_shared::bundle::signing::to_hex(&Sha256::digest(secret.as_bytes())),
        labels: labels.clone(),
        created_by: caller.to_owned(),
        expires_at_ms,
        used_at_ms: None,
        used_by: None,
    };
    let store = Arc::clone(&shared.store);
    let token_id = id.clone();
    match blocking(move || store.put_token(&token_id, &record)).await {
        Some(Ok(())) => {
            record_audit(
                shared,
                crate::audit::entry(
                    caller,
                    "token.create",
                    &id,
                    audit::details([
                        ("labels", serde_json::json!(labels)),
                        ("expires_at_ms", serde_json::json!(expires_at_ms)),
                    ]),
                ),
            )
            .await;
            let token = JoinToken {
                id,
                secret,
                controller_sha256: shared.controller_fingerprint.clone(),
            };
            Response::Admin(admin::Response::Token {
                token: token.to_string(),
                expires_at_ms,
            })
        }
        _ => error(ErrorCode::Unavailable, "the controller store failed"),
    }
}

fn summary(shared: &Shared, node: &NodeRecord) -> NodeSummary {
    let live = shared.live.lock().expect("live map");
    let entry = live.get(&node.name);
    NodeSummary {
        name: node.name.clone(),
        labels: node.labels.clone(),
        enrolled_at_ms: node.enrolled_at_ms,
        last_seen_ms: entry
            .and_then(|l| l.heartbeat.as_ref())
            .map(|h| h.at_ms)
            .or(node.last_seen_ms),
        connected: entry.is_some_and(|l| !l.connections.is_empty()),
        revoked: node.revoked,
        gpus: entry
            .and_then(|l| l.latest.as_ref())
            .map_or(0, |s| s.gpus.len() as u32),
        records_stored: node.records_stored,
        last_seq: node.last_seq,
        health: entry
            .and_then(|l| l.heartbeat.as_ref())
            .and_then(|h| h.health.as_ref())
            .map(|h| h.state),
        cordon: node.cordon.clone(),
    }
}

async fn list(shared: &Shared) -> Option<Vec<NodeSummary>> {
    let store = Arc::clone(&shared.store);
    let nodes = blocking(move || store.nodes()).await?.ok()?;
    Some(nodes.iter().map(|n| summary(shared, n)).collect())
}

async fn show(shared: &Shared, name: &str) -> Response {
    let store = Arc::clone(&shared.store);
    let key = name.to_owned();
    match blocking(move || store.node(&key)).await {
        Some(Ok(Some(node))) => {
            let (latest, heartbeat) = {
                let live = shared.live.lock().expect("live map");
                let entry = live.get(name);
                (
                    entry.and_then(|l| l.latest.as_deref().cloned()),
                    entry.and_then(|l| l.heartbeat.clone()),
                )
            };
            // The live heartbeat, else the one stored when the node last disconnected.
            let heartbeat = heartbeat.unwrap_or_else(|| node.heartbeat.clone());
            Response::Admin(admin::Response::Node(Box::new(NodeDetail {
                summary: summary(shared, &node),
                buffered_on_node: heartbeat.buffered_records,
                dropped_metrics: heartbeat.dropped_metrics,
                dropped_events: heartbeat.dropped_events,
                agent_version: heartbeat.agent_version,
                health: heartbeat.health,
                latest,
                bundles: heartbeat.bundles,
                assigned: shared.bundles.desired(name),
            })))
        }
        Some(Ok(None)) => error(ErrorCode::NotFound, format!("no node named {name:?}")),
        _ => error(ErrorCode::Unavailable, "the controller store failed"),
    }
}

async fn top(shared: &Shared) -> Response {
    let Some(nodes) = list(shared).await else {
        return error(ErrorCode::Unavailable, "the controller store failed");
    };
    let live = shared.live.lock().expect("live map");
    let latest = nodes
        .into_iter()
        .filter(|n| !n.revoked)
        .map(|n| NodeLatest {
            sample: live.get(&n.name).and_then(|l| l.latest.as_deref().cloned()),
            connected: n.connected,
            node: n.name,
        })
        .collect();
    Response::Admin(admin::Response::Top(latest))
}

async fn revoke(shared: &Shared, caller: &str, name: String) -> Response {
    let store = Arc::clone(&shared.store);
    let key = name.clone();
    match blocking(move || store.revoke_node(&key)).await {
        Some(Ok(Some(_))) => {
            let connections = shared
                .live
                .lock()
                .expect("live map")
                .get_mut(&name)
                .map(|l| std::mem::take(&mut l.connections));
            for conn in connections.into_iter().flatten() {
                conn.close(VarInt::from_u32(CLOSE_REVOKED), b"certificate revoked");
            }
            tracing::warn!(node = %name, admin = caller, "node revoked");
            record_audit(
                shared,
                crate::audit::entry(caller, "node.revoke", &name, serde_json::json!({})),
            )
            .await;
            Response::Admin(admin::Response::Revoked { node: name })
        }
        Some(Ok(None)) => error(ErrorCode::NotFound, format!("no node named {name:?}")),
        _ => error(ErrorCode::Unavailable, "the controller store failed"),
    }
}

/// Cordons a node (`reason` given) or lifts its cordon, with the audit entry in the same
/// transaction. Cordoning a cordoned node replaces the reason; uncordoning an uncordoned
/// node changes nothing and records nothing.
async fn cordon(shared: &Shared, caller: &str, name: String, reason: Option<String>) -> Response {
    if let Some(reason) = &reason
        && (reason.trim().is_empty() || reason.len() > 1024)
    {
        return error(
            ErrorCode::BadRequest,
            "a cordon reason must be 1-1024 characters",
        );
    }
    let store = Arc::clone(&shared.store);
    let (key, by) = (name.clone(), caller.to_owned());
    let now_ms = shared.clock.now_ms();
    let result = blocking(move || {
        store.cordon_node(&key, |current| {
            let new = reason.map(|reason| admin::Cordon {
                reason,
                by: by.clone(),
                at_ms: now_ms,
                automatic: false,
            });
            if current.is_none() && new.is_none() {
                return None;
            }
            let (action, details) = match &new {
                Some(c) => (
                    "node.cordon",
                    serde_json::json!({ "reason": c.reason, "automatic": false }),
                ),
                None => (
                    "node.uncordon",
                    serde_json::json!({ "was": current.map(|c| c.reason.clone()) }),
                ),
            };
            Some((new, crate::audit::entry(&by, action, &key, details)))
        })
    })
    .await;
    match result {
        Some(Ok(Some(node))) => {
            let mut cordoned = shared.cordoned.lock().expect("cordoned");
            if node.cordon.is_some() {
                cordoned.insert(name.clone());
                tracing::warn!(node = %name, admin = caller, reason = ?node.cordon.as_ref().map(|c| &c.reason), "node cordoned");
            } else {
                cordoned.remove(&name);
                tracing::info!(node = %name, admin = caller, "node uncordoned");
            }
            Response::Admin(admin::Response::Cordoned {
                node: name,
                cordon: node.cordon,
            })
        }
        Some(Ok(None)) => error(ErrorCode::NotFound, format!("no node named {name:?}")),
        _ => error(ErrorCode::Unavailable, "the controller store failed"),
    }
}

/// A certificate for admin `name` with `role`: a new admin, or (`rotate`) the caller's
/// own replacement, every earlier certificate of the caller then revoked.
async fn admin_add(
    shared: &Shared,
    caller: &str,
    name: String,
    role: Role,
    public_key: &str,
    rotate: bool,
) -> Response {
    if !gantry_shared::protocol::enroll::valid_node_name(&name) {
        return error(
            ErrorCode::BadRequest,
            format!("admin name {name:?} must be 1-63 lowercase letters, digits or '-'"),
        );
    }
    let key = match PeerPublicKey::from_hex(public_key) {
        Ok(key) => key,
        Err(e) => return error(ErrorCode::BadRequest, e.to_string()),
    };
    let now_ms = shared.clock.now_ms();
    let validity = ca::Validity::starting(now_ms, shared.certs.admin_lifetime);
    let Ok(cert_pem) = shared.ca.issue_admin(&name, &key, validity) else {
        return error(ErrorCode::Unavailable, "issuing the certificate failed");
    };
    let Ok(fingerprint) = ca::pem_fingerprint(&cert_pem) else {
        return error(ErrorCode::Unavailable, "issuing the certificate failed");
    };
    let record = IdentityRecord {
        principal: Principal::Admin {
            name: name.clone(),
            role,
        },
        issued_at_ms: now_ms,
        revoked: false,
        expires_at_ms: Some(validity.not_after_ms),
    };
    let store = Arc::clone(&shared.store);
    let (admin_name, new_fingerprint) = (name.clone(), fingerprint.clone());
    let stored = blocking(move || {
        if rotate {
            store.rotate_admin(&admin_name, &new_fingerprint, &record)
        } else {
            store.put_identity(&new_fingerprint, &record).map(|()| 0)
        }
    })
    .await;
    match stored {
        Some(Ok(revoked)) => {
            let action = if rotate { "admin.rotate" } else { "admin.add" };
            tracing::info!(admin = caller, new_admin = %name, role = role.as_str(), revoked, "{action}");
            record_audit(
                shared,
                crate::audit::entry(
                    caller,
                    action,
                    &name,
                    audit::details([
                        ("role", serde_json::json!(role.as_str())),
                        ("certificate_sha256", serde_json::json!(fingerprint)),
                        ("expires_at_ms", serde_json::json!(validity.not_after_ms)),
                        ("revoked_certificates", serde_json::json!(revoked)),
                    ]),
                ),
            )
            .await;
            Response::Admin(admin::Response::AdminAdded {
                name,
                role,
                certificate_pem: cert_pem,
                ca_pem: shared.ca.cert_pem().to_owned(),
                expires_at_ms: Some(validity.not_after_ms),
            })
        }
        _ => error(ErrorCode::Unavailable, "the controller store failed"),
    }
}

/// Why an imported export's records were not stored.
#[derive(Debug, thiserror::Error)]
enum ImportError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Batch(#[from] crate::store::BatchError),
}

/// A page of captured pairs. The first page of an export is audited (who took which
/// model's production data) before anything is answered; a page is refused when its
/// audit entry cannot be written.
async fn capture_export(
    shared: &Arc<Shared>,
    caller: &str,
    model: String,
    version: Option<String>,
    after: Option<gantry_shared::protocol::monitoring::CaptureCursor>,
) -> Response {
    let store = Arc::clone(&shared.store);
    let first = after.is_none();
    let audit = first.then(|| {
        crate::audit::entry(
            caller,
            "capture.export",
            format!("model {model}"),
            serde_json::json!({ "version": version }),
        )
    });
    let page = blocking(move || {
        if let Some(entry) = audit {
            store.append_audit(vec![entry])?;
        }
        store.capture_page(
            &model,
            version.as_deref(),
            after.as_ref(),
            gantry_shared::protocol::monitoring::MAX_CAPTURE_PAGE_BYTES,
        )
    })
    .await;
    match page {
        Some(Ok(page)) => Response::Admin(admin::Response::Captures(Box::new(page))),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot read captured pairs");
            error(ErrorCode::Unavailable, "the controller store failed")
        }
        None => error(ErrorCode::Unavailable, "the controller store failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(role: Role, request: &Request) -> Option<String> {
        match authorize("carol", role, request) {
            Ok(()) => None,
            Err(Response::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Forbidden);
                Some(e.message)
            }
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_role_makes_the_calls_of_its_rank_and_below_and_is_told_what_it_lacks() {
        let calls = [
            (Request::FleetList, Role::Viewer),
            (Request::AuditVerify, Role::Viewer),
            (
                Request::NodeCordon {
                    node: "n".into(),
                    reason: "r".into(),
                },
                Role::Operator,
            ),
            (
                Request::BundleAssign {
                    id: "x".into(),
                    nodes: vec![],
                },
                Role::Operator,
            ),
            (Request::NodeRevoke { node: "n".into() }, Role::Admin),
            (
                Request::TokenCreate {
                    labels: BTreeMap::new(),
                    ttl_s: 60,
                },
                Role::Admin,
            ),
        ];
        for (request, least) in &calls {
            for role in [Role::Viewer, Role::Operator, Role::Admin] {
                let refusal = refused(role, request);
                assert_eq!(
                    refusal.is_none(),
                    role >= *least,
                    "{role:?} {}",
                    request.name()
                );
                if let Some(message) = refusal {
                    assert_eq!(
                        message,
                        format!(
                            "`{}` needs the {} role; carol has {}",
                            request.name(),
                            least.as_str(),
                            role.as_str()
                        )
                    );
                }
            }
        }
    }
}
