//! Renewal of the node's certificate, for the key it enrolled with (the key never leaves
//! the node and is never replaced here).
//!
//! - **Online**, over the uplink, once two thirds of the certificate's lifetime have
//!   passed (`Request::Renew` on the mutual-TLS connection).
//! - **By proof of possession**, once it expired: a connection without a client
//!   certificate that verifies the controller by the fleet CA, carrying a request signed
//!   by the node key (`Request::RenewExpired`). The controller accepts it within its
//!   renewal grace; a revoked node never renews.
//! - **By file**, for a hall that never connects: `gantry-agent renew --offline-request`
//!   writes the signed request, `gantry fleet renew` answers it, `gantry-agent renew
//!   --offline-response` installs the answer.
//!
//! Whatever the way, a new certificate is installed only if it names this node, chains
//! to the fleet CA the node already holds, and certifies this node's own key; the files
//! are replaced atomically. Sampling and buffering never depend on any of this.

use std::path::Path;
use std::time::Duration;

use gantry_shared::protocol::enroll::{self, RenewRequest};
use gantry_shared::protocol::{Request, Response};

use crate::identity::{self, Enrollment, NodeIdentity};

const RENEW_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a renewal did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("the controller refused to renew the certificate: {0}")]
    Refused(String),
    #[error("cannot reach the controller to renew the certificate")]
    Net(#[source] gantry_net::NetError),
    #[error("the controller answered the renewal with something unexpected")]
    Unexpected,
    #[error("the renewed certificate is not acceptable: {0}")]
    Invalid(String),
    #[error("cannot sign the renewal request with the node key")]
    Sign(#[source] gantry_net::NetError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("{0}")]
    File(String),
    #[error("the task installing the certificate failed")]
    Task(#[from] tokio::task::JoinError),
}

impl RenewError {
    /// Whether trying again later may help: any network failure, since the controller
    /// may be back; a refusal or an unusable answer is not.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Net(_))
    }
}

/// Where the certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Well within its lifetime.
    No,
    /// Two thirds of its lifetime passed (or its lifetime is unknown): renew online.
    Soon,
    /// Expired: renew by proof of possession.
    Expired,
}

/// Where the certificate described by `enrollment` stands at `now_ms`.
pub fn due(enrollment: &Enrollment, now_ms: u64) -> Due {
    let Some(expires) = enrollment.certificate_expires_at_ms else {
        // Issued before certificates had lifetimes: trade it for one that has.
        return Due::Soon;
    };
    if now_ms >= expires {
        Due::Expired
    } else if renew_at(enrollment).is_some_and(|at| now_ms >= at) {
        Due::Soon
    } else {
        Due::No
    }
}

/// When the certificate should be renewed online (Unix ms): two thirds into its life.
pub fn renew_at(enrollment: &Enrollment) -> Option<u64> {
    let expires = enrollment.certificate_expires_at_ms?;
    let issued = enrollment
        .certificate_issued_at_ms
        .unwrap_or(enrollment.enrolled_at_ms)
        .min(expires);
    Some(expires - (expires - issued) / 3)
}

/// The renewal request for `identity`, signed by its key at `now_ms`.
pub fn request(identity: &NodeIdentity, now_ms: u64) -> Result<RenewRequest, RenewError> {
    let certificate_sha256 =
        gantry_shared::tls::certificates_from_pem(&identity.cert_pem, "node certificate")
            .ok()
            .and_then(|certs| certs.first().map(|c| gantry_shared::tls::fingerprint(c)))
            .ok_or_else(|| {
                RenewError::Invalid("the node's own certificate is unreadable".to_owned())
            })?;
    let name = &identity.enrollment.name;
    let message = enroll::renew_message(name, &certificate_sha256, now_ms);
    let signature = gantry_net::sign(&identity.key_pem, &message).map_err(RenewError::Sign)?;
    Ok(RenewRequest {
        node_name: name.clone(),
        certificate_sha256,
        at_ms: now_ms,
        signature: gantry_shared::bundle::signing::to_hex(&signature),
    })
}

/// Online renewal over an established mutual-TLS connection.
pub async fn online(conn: &quinn::Connection) -> Result<enroll::Response, RenewError> {
    answer(
        gantry_net::call(conn, &Request::Renew, RENEW_TIMEOUT)
            .await
            .map_err(RenewError::Net)?,
    )
}

/// Renewal by proof of possession, for an expired certificate: a connection that presents
/// no certificate but verifies the controller by the fleet CA.
pub async fn by_proof(
    identity: &NodeIdentity,
    controller: std::net::SocketAddr,
    now_ms: u64,
) -> Result<enroll::Response, RenewError> {
    let request = request(identity, now_ms)?;
    let tls = gantry_shared::tls::anonymous_client_config(&identity.ca_pem)
        .map_err(|e| RenewError::Net(gantry_net::NetError::Tls(e.to_string())))?;
    let endpoint = gantry_net::client_endpoint(controller, tls).map_err(RenewError::Net)?;
    let conn = tokio::time::timeout(RENEW_TIMEOUT, gantry_net::connect(&endpoint, controller))
        .await
        .unwrap_or(Err(gantry_net::NetError::Timeout(RENEW_TIMEOUT)))
        .map_err(RenewError::Net)?;
    let result = gantry_net::call(&conn, &Request::RenewExpired(request), RENEW_TIMEOUT).await;
    conn.close(0u32.into(), b"renewed");
    endpoint.wait_idle().await;
    answer(result.map_err(RenewError::Net)?)
}

fn answer(response: Response) -> Result<enroll::Response, RenewError> {
    match response {
        Response::Renewed(answer) => Ok(*answer),
        Response::Error(e) => Err(RenewError::Refused(e.message)),
        _ => Err(RenewError::Unexpected),
    }
}

/// [`install`] on a blocking thread (it writes the identity files).
pub async fn install_blocking(
    state_dir: &Path,
    identity: &NodeIdentity,
    answer: enroll::Response,
    now: std::time::SystemTime,
) -> Result<NodeIdentity, RenewError> {
    let (state_dir, identity) = (state_dir.to_owned(), identity.clone());
    tokio::task::spawn_blocking(move || install(&state_dir, &identity, &answer, now)).await?
}

/// Checks a renewed certificate and installs it in place of the node's; returns the
/// identity as it now is. The CA is the node's own: a renewal never changes it.
pub fn install(
    state_dir: &Path,
    identity: &NodeIdentity,
    answer: &enroll::Response,
    now: std::time::SystemTime,
) -> Result<NodeIdentity, RenewError> {
    use gantry_shared::tls::{self, Role};
    if answer.node_name != identity.enrollment.name {
        return Err(RenewError::Invalid(format!(
            "it names {:?}, not this node ({:?})",
            answer.node_name, identity.enrollment.name
        )));
    }
    let cert = tls::certificates_from_pem(&answer.certificate_pem, "node certificate")
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .ok_or_else(|| RenewError::Invalid("it carries no readable certificate".to_owned()))?;
    tls::verify_issued_by(&identity.ca_pem, &cert, Role::Client, now).map_err(|e| {
        RenewError::Invalid(format!("it does not chain to this node's fleet CA: {e}"))
    })?;
    let probe = b"gantry renewal key check";
    let proof = gantry_net::sign(&identity.key_pem, probe).map_err(RenewError::Sign)?;
    tls::verify_signed_by(&cert, "node certificate", probe, &proof)
        .map_err(|_| RenewError::Invalid("it certifies another key, not this node's".to_owned()))?;
    let enrollment = Enrollment {
        certificate_expires_at_ms: answer.certificate_expires_at_ms,
        certificate_issued_at_ms: answer.certificate_issued_at_ms,
        ..identity.enrollment.clone()
    };
    identity::replace_certificate(state_dir, &answer.certificate_pem, &enrollment)?;
    Ok(NodeIdentity {
        enrollment,
        cert_pem: answer.certificate_pem.clone(),
        ..identity.clone()
    })
}

/// `gantry-agent renew --offline-request`: the signed request to carry to the controller.
pub fn offline_request(
    identity: &NodeIdentity,
    now_ms: u64,
) -> Result<enroll::OfflineRenewRequest, RenewError> {
    Ok(enroll::OfflineRenewRequest {
        format: enroll::OFFLINE_RENEW_REQUEST_FORMAT.to_owned(),
        request: request(identity, now_ms)?,
    })
}

/// `gantry-agent renew --offline-response`: installs the controller's answer.
pub fn offline_install(
    state_dir: &Path,
    identity: &NodeIdentity,
    bytes: &[u8],
    now: std::time::SystemTime,
) -> Result<NodeIdentity, RenewError> {
    let response: enroll::OfflineRenewResponse = serde_json::from_slice(bytes)
        .ok()
        .filter(|r: &enroll::OfflineRenewResponse| {
            r.format == enroll::OFFLINE_RENEW_RESPONSE_FORMAT
        })
        .ok_or_else(|| {
            RenewError::File("not a renewal response from `gantry fleet renew`".to_owned())
        })?;
    install(state_dir, identity, &response.response, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn enrollment(issued: Option<u64>, expires: Option<u64>) -> Enrollment {
        Enrollment {
            name: "n1".into(),
            controller: "127.0.0.1:7443".parse().unwrap(),
            labels: std::collections::BTreeMap::default(),
            enrolled_at_ms: 0,
            certificate_expires_at_ms: expires,
            certificate_issued_at_ms: issued,
        }
    }

    #[test]
    fn renewal_falls_due_at_two_thirds_of_the_lifetime() {
        let e = enrollment(Some(0), Some(9 * DAY));
        assert_eq!(due(&e, 5 * DAY), Due::No);
        assert_eq!(due(&e, 6 * DAY), Due::Soon);
        assert_eq!(due(&e, 9 * DAY), Due::Expired);
        assert_eq!(due(&e, 400 * DAY), Due::Expired);
    }

    #[test]
    fn a_certificate_without_a_known_lifetime_is_renewed() {
        assert_eq!(due(&enrollment(None, None), 0), Due::Soon);
        assert_eq!(due(&enrollment(None, Some(3 * DAY)), DAY), Due::No);
    }
}
