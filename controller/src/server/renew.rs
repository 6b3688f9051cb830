//! Node certificate renewal: online over the node's mutual-TLS connection, by proof of
//! possession once its certificate expired, and by file for a hall that never connects.
//! The rule is [`crate::certs::check`]; this module reads the records, issues the new
//! certificate for the key the node enrolled with, records it and audits it.

#![deny(clippy::disallowed_methods)] // async workers: file I/O goes through spawn_blocking

use std::sync::Arc;

use gantry_shared::protocol::enroll::{self, RenewRequest};
use gantry_shared::protocol::{ErrorCode, Response};

use super::{Shared, blocking, error, record_audit};
use crate::audit;
use crate::ca::{self, PeerPublicKey};
use crate::certs::{self, Proof, Refusal};
use crate::store::{IdentityRecord, Principal};

/// A node renewing over its connection, with a certificate still valid.
pub(super) async fn online(shared: &Shared, name: &str) -> Result<enroll::Response, Response> {
    let store = Arc::clone(&shared.store);
    let node_name = name.to_owned();
    let Some(Ok(node)) = blocking(move || store.node(&node_name)).await else {
        return Err(unavailable());
    };
    let fingerprint = node
        .as_ref()
        .map(|n| n.fingerprint.clone())
        .unwrap_or_default();
    renew(
        shared,
        name,
        &fingerprint,
        Proof::Connection,
        None,
        "online",
    )
    .await
}

/// A node proving possession of its key: `by_file` for a request carried on media
/// (`gantry fleet renew`), else one sent without a client certificate because the
/// node's certificate expired.
pub(super) async fn by_proof(
    shared: &Shared,
    request: &RenewRequest,
    by_file: bool,
) -> Result<enroll::Response, Response> {
    let proof = Proof::Signature {
        at_ms: request.at_ms,
        by_file,
    };
    let via = if by_file {
        "file"
    } else {
        "proof of possession"
    };
    renew(
        shared,
        &request.node_name,
        &request.certificate_sha256,
        proof,
        Some(request),
        via,
    )
    .await
}

async fn renew(
    shared: &Shared,
    name: &str,
    old_fingerprint: &str,
    proof: Proof,
    request: Option<&RenewRequest>,
    via: &str,
) -> Result<enroll::Response, Response> {
    let store = Arc::clone(&shared.store);
    let (node_name, fingerprint) = (name.to_owned(), old_fingerprint.to_owned());
    let Some(Ok((node, old))) = blocking(move || {
        Ok::<_, crate::store::StoreError>((store.node(&node_name)?, store.identity(&fingerprint)?))
    })
    .await
    else {
        return Err(unavailable());
    };
    let now_ms = shared.clock.now_ms();
    let checked = certs::check(
        name,
        node.as_ref(),
        old.as_ref(),
        proof,
        &shared.certs,
        now_ms,
    )
    .and_then(|()| {
        let node = node.as_ref().expect("checked");
        match request {
            Some(r) if !certs::signature_ok(node, r) => Err(Refusal::BadSignature(name.to_owned())),
            _ => Ok(node),
        }
    });
    let node = match checked {
        Ok(node) => node,
        Err(refusal) => {
            tracing::warn!(node = %name, via, reason = %refusal, "certificate renewal refused");
            record_audit(
                shared,
                crate::audit::entry(
                    format!("node {name}"),
                    "node.renew_refused",
                    name,
                    audit::details([
                        ("via", serde_json::json!(via)),
                        ("reason", serde_json::json!(refusal.to_string())),
                    ]),
                ),
            )
            .await;
            let code = match refusal {
                Refusal::UnknownNode(_) => ErrorCode::NotFound,
                Refusal::Stale { .. } => ErrorCode::BadRequest,
                _ => ErrorCode::Unauthenticated,
            };
            return Err(error(code, refusal.to_string()));
        }
    };
    let Ok(key) = PeerPublicKey::from_hex(&node.public_key) else {
        return Err(error(
            ErrorCode::Unavailable,
            "the node's enrolled key is unreadable",
        ));
    };
    let validity = ca::Validity::starting(now_ms, shared.certs.node_lifetime);
    let Ok(cert_pem) = shared.ca.issue_node(name, &key, validity) else {
        return Err(error(
            ErrorCode::Unavailable,
            "issuing the certificate failed",
        ));
    };
    let Ok(fingerprint) = ca::pem_fingerprint(&cert_pem) else {
        return Err(error(
            ErrorCode::Unavailable,
            "issuing the certificate failed",
        ));
    };
    let record = IdentityRecord {
        principal: Principal::Node {
            name: name.to_owned(),
        },
        issued_at_ms: now_ms,
        revoked: false,
        expires_at_ms: Some(validity.not_after_ms),
    };
    let store = Arc::clone(&shared.store);
    let (node_name, new_fingerprint) = (name.to_owned(), fingerprint.clone());
    let node = match blocking(move || {
        store.install_node_certificate(&node_name, &new_fingerprint, &record)
    })
    .await
    {
        Some(Ok(Some(node))) => node,
        Some(Ok(None)) => {
            return Err(error(
                ErrorCode::Unauthenticated,
                Refusal::Revoked(name.to_owned()).to_string(),
            ));
        }
        _ => return Err(unavailable()),
    };
    tracing::info!(node = %name, via, expires_at_ms = validity.not_after_ms, "node certificate renewed");
    record_audit(
        shared,
        crate::audit::entry(
            format!("node {name}"),
            "node.renew",
            name,
            audit::details([
                ("via", serde_json::json!(via)),
                (
                    "previous_certificate_sha256",
                    serde_json::json!(old_fingerprint),
                ),
                ("certificate_sha256", serde_json::json!(fingerprint)),
                ("expires_at_ms", serde_json::json!(validity.not_after_ms)),
            ]),
        ),
    )
    .await;
    Ok(enroll::Response {
        node_name: node.name,
        certificate_pem: cert_pem,
        ca_pem: shared.ca.cert_pem().to_owned(),
        labels: node.labels,
        certificate_expires_at_ms: Some(validity.not_after_ms),
        certificate_issued_at_ms: Some(validity.not_before_ms),
    })
}

fn unavailable() -> Response {
    error(
        ErrorCode::Unavailable,
        "the controller store failed; try again",
    )
}
