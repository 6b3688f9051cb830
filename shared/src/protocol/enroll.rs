//! Enrollment: a node trades a single-use join token for a certificate naming it.
//!
//! The node makes its key pair itself and sends only the public key; the private key
//! never leaves the node. The connection carries no client certificate; the node checks
//! the controller's certificate against the SHA-256 pinned in the token.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Prefix of join tokens, with the token format version.
pub const TOKEN_PREFIX: &str = "gantry-join-1";

/// Enrollment request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub token_id: String,
    pub secret: String,
    /// The name the node asks for (its host name unless set).
    pub node_name: String,
    /// The node's ECDSA P-256 public key, uncompressed point, hexadecimal.
    pub public_key: String,
}

/// Enrollment answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub node_name: String,
    /// The node's certificate, issued by the fleet CA.
    pub certificate_pem: String,
    /// The fleet CA certificate, to verify the controller from now on.
    pub ca_pem: String,
    /// Labels the token assigned.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the certificate stops being valid (Unix ms); absent from controllers that
    /// issued certificates for decades.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires_at_ms: Option<u64>,
    /// When the certificate started being valid (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_issued_at_ms: Option<u64>,
}

/// A node asking for a new certificate for the key it enrolled with, by proof of
/// possession: its signature over [`renew_message`]. Used when its certificate expired
/// (sent without a client certificate) and, as a file, by a node that never reaches the
/// controller (`gantry-agent renew --offline-request`, `gantry fleet renew`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub node_name: String,
    /// SHA-256 of the certificate being renewed (issued by this controller).
    pub certificate_sha256: String,
    /// When the node signed the request (Unix ms, the node's clock).
    pub at_ms: u64,
    /// ECDSA P-256 (SHA-256, ASN.1 DER) by the node key over [`renew_message`], hex.
    pub signature: String,
}

/// What a node signs to renew its certificate.
pub fn renew_message(node_name: &str, certificate_sha256: &str, at_ms: u64) -> Vec<u8> {
    format!("gantry node renewal v1\0{node_name}\0{certificate_sha256}\0{at_ms}").into_bytes()
}

/// A renewal carried by file: what the node writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRenewRequest {
    /// `gantry-renew-request`.
    pub format: String,
    pub request: RenewRequest,
}

/// The controller's answer to a renewal by file: the new certificate. The node checks
/// it chains to the fleet CA it already holds and certifies its own key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRenewResponse {
    /// `gantry-renew-response`.
    pub format: String,
    pub response: Response,
}

pub const OFFLINE_RENEW_REQUEST_FORMAT: &str = "gantry-renew-request";
pub const OFFLINE_RENEW_RESPONSE_FORMAT: &str = "gantry-renew-response";

/// Enrollment by file, for a node that never reaches the controller: what the node
/// writes (`gantry-agent enroll --offline-request`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineRequest {
    /// `gantry-enroll-request`.
    pub format: String,
    pub request: Request,
}

/// What the controller writes back (`gantry token redeem`), for the node to install
/// (`gantry-agent enroll --offline-response`).
///
/// The controller certificate alone proves nothing (it is public): the response carries
/// the controller's signature, by the private key of that certificate, over
/// [`offline_response_message`] — the node's own public key and the response — and the
/// node checks that its certificate and the controller's chain to the CA in the response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineResponse {
    /// `gantry-enroll-response`.
    pub format: String,
    pub response: Response,
    /// The controller's address, should the node ever reach it.
    pub controller: String,
    /// The controller's certificate: the node checks it against the token's pin.
    pub controller_certificate_pem: String,
    /// ECDSA P-256 (SHA-256, ASN.1 DER) by the controller's key over
    /// [`offline_response_message`], hexadecimal.
    pub controller_signature: String,
}

/// What the controller signs for an enrollment by file: a context, the public key the
/// node asked to be certified, and the response.
pub fn offline_response_message(node_public_key: &str, response: &Response) -> Vec<u8> {
    #[derive(Serialize)]
    struct Signed<'a> {
        node_public_key: &'a str,
        response: &'a Response,
    }
    let mut message = b"gantry offline enrollment response v1\0".to_vec();
    serde_json::to_writer(
        &mut message,
        &Signed {
            node_public_key,
            response,
        },
    )
    .expect("an enrollment response serializes");
    message
}

pub const OFFLINE_REQUEST_FORMAT: &str = "gantry-enroll-request";
pub const OFFLINE_RESPONSE_FORMAT: &str = "gantry-enroll-response";

/// A parsed join token: `gantry-join-1.<id>.<secret>.<controller certificate sha256>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
    pub controller_sha256: String,
}

/// A token that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Gantry join token (expected {TOKEN_PREFIX}.<id>.<secret>.<fingerprint>)")]
pub struct BadToken;

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl JoinToken {
    pub fn parse(text: &str) -> Result<Self, BadToken> {
        let mut parts = text.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret), Some(pin), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(BadToken);
        };
        if !(is_hex(id, 16) && is_hex(secret, 64) && is_hex(pin, 64)) {
            return Err(BadToken);
        }
        Ok(Self {
            id: id.to_ascii_lowercase(),
            secret: secret.to_ascii_lowercase(),
            controller_sha256: pin.to_ascii_lowercase(),
        })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.id, self.secret, self.controller_sha256
        )
    }
}

/// Whether a node name is acceptable: 1-63 lowercase letters, digits and '-', as a DNS label.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = JoinToken {
            id: "a".repeat(16),
            secret: "b".repeat(64),
            controller_sha256: "c".repeat(64),
        };
        assert_eq!(JoinToken::parse(&t.to_string()), Ok(t));
        for bad in [
            "",
            "gantry-join-1.a.b.c",
            "gantry-join-2.aaaaaaaaaaaaaaaa.x.y",
            &"x".repeat(200),
        ] {
            assert_eq!(JoinToken::parse(bad), Err(BadToken), "{bad}");
        }
    }

    #[test]
    fn node_names_are_dns_labels() {
        assert!(valid_node_name("gpu-node-07"));
        assert!(!valid_node_name("GPU"));
        assert!(!valid_node_name("a.b"));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name(&"a".repeat(64)));
    }
}
