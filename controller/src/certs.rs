//! Certificate lifetimes and renewal: how long node and admin certificates live, and the
//! rule that decides whether a node may have a new one.
//!
//! Node certificates are short-lived (7 days by default) and renewed by the agent over
//! its uplink well before they expire, for the same key: the key never leaves the node.
//! A node that was offline past its certificate's expiry renews by proof of possession —
//! its signature over [`gantry_shared::protocol::enroll::renew_message`] with the key it
//! enrolled with — as long as the certificate expired less than the renewal grace ago
//! (180 days by default); a hall that stays offline longer renews by file within the same
//! grace. A revoked node never renews. Everything here is a pure function of the records
//! and the time, so the rule is tested without clocks.

use std::time::Duration;

use crate::store::{IdentityRecord, NodeRecord, Principal};

/// Lifetimes and the renewal grace, from `gantry serve`'s flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertPolicy {
    pub node_lifetime: Duration,
    pub admin_lifetime: Duration,
    pub renewal_grace: Duration,
}

impl Default for CertPolicy {
    fn default() -> Self {
        Self {
            node_lifetime: DEFAULT_NODE_LIFETIME,
            admin_lifetime: DEFAULT_ADMIN_LIFETIME,
            renewal_grace: DEFAULT_RENEWAL_GRACE,
        }
    }
}

pub const DEFAULT_NODE_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
pub const DEFAULT_ADMIN_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
pub const DEFAULT_RENEWAL_GRACE: Duration = Duration::from_secs(180 * 86_400);

/// How far the node's clock may differ from the controller's for a renewal sent over the
/// network; a renewal carried by file may be as old as the grace.
const ONLINE_REQUEST_SKEW_MS: u64 = 10 * 60 * 1000;

/// The controller's clock: the system's, shifted by `offset_ms` (only tests shift it, to
/// issue certificates in the past without waiting for them to age).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    pub offset_ms: i64,
}

impl Clock {
    pub fn now_ms(self) -> u64 {
        gantry_net::clock::now_ms().saturating_add_signed(self.offset_ms)
    }
}

impl CertPolicy {
    /// Checks the lifetimes and grace are sensible (64: bad configuration).
    pub fn validate(&self) -> Result<(), OutOfRange> {
        let hour = Duration::from_secs(3600);
        let day = Duration::from_secs(86_400);
        for (flag, value, min, max) in [
            ("--node-cert-lifetime", self.node_lifetime, hour, 3650 * day),
            (
                "--admin-cert-lifetime",
                self.admin_lifetime,
                hour,
                3650 * day,
            ),
            (
                "--renewal-grace",
                self.renewal_grace,
                Duration::ZERO,
                3650 * day,
            ),
        ] {
            if value < min || value > max {
                return Err(OutOfRange {
                    flag,
                    value: humantime::format_duration(value).to_string(),
                    min: humantime::format_duration(min).to_string(),
                    max: humantime::format_duration(max).to_string(),
                });
            }
        }
        Ok(())
    }
}

/// A certificate lifetime or grace outside what the controller accepts.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {value} is out of range: between {min} and {max}")]
pub struct OutOfRange {
    pub flag: &'static str,
    pub value: String,
    pub min: String,
    pub max: String,
}

/// How a node proves it may renew.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Over its mutual-TLS connection with a valid certificate.
    Connection,
    /// A signature by its key, made at `at_ms`; `by_file` when carried on media.
    Signature { at_ms: u64, by_file: bool },
}

/// Why a node may not renew.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no node named {0:?} is enrolled")]
    UnknownNode(String),
    #[error("node {0} is revoked; revoked nodes never renew (enroll it again with a new token)")]
    Revoked(String),
    #[error("the certificate named is not one this controller issued to node {0}")]
    NotItsCertificate(String),
    #[error(
        "the certificate of node {node} expired {expired_days} days ago, longer than this controller's renewal grace of {grace_days} days; enroll the node again with a new token"
    )]
    PastGrace {
        node: String,
        expired_days: u64,
        grace_days: u64,
    },
    #[error(
        "the renewal request was signed at {at} by the node's clock, too far from the controller's; check the node's clock"
    )]
    Stale { at: String },
    #[error("the renewal request's signature does not verify with the key node {0} enrolled with")]
    BadSignature(String),
}

/// Whether `node` may have a new certificate, renewing the one recorded as `old` (the
/// certificate the request names, `None` when unknown), at `now_ms`. The signature itself
/// is checked by the caller ([`signature_ok`]).
pub fn check(
    name: &str,
    node: Option<&NodeRecord>,
    old: Option<&IdentityRecord>,
    proof: Proof,
    policy: &CertPolicy,
    now_ms: u64,
) -> Result<(), Refusal> {
    let node = node.ok_or_else(|| Refusal::UnknownNode(name.to_owned()))?;
    if node.revoked {
        return Err(Refusal::Revoked(name.to_owned()));
    }
    let old = old
        .filter(|o| matches!(&o.principal, Principal::Node { name: n } if n == name))
        .ok_or_else(|| Refusal::NotItsCertificate(name.to_owned()))?;
    if old.revoked {
        return Err(Refusal::Revoked(name.to_owned()));
    }
    if let Proof::Signature { at_ms, by_file } = proof {
        let too_old = if by_file {
            policy.renewal_grace.as_millis() as u64 + ONLINE_REQUEST_SKEW_MS
        } else {
            ONLINE_REQUEST_SKEW_MS
        };
        if at_ms > now_ms + ONLINE_REQUEST_SKEW_MS || now_ms.saturating_sub(at_ms) > too_old {
            return Err(Refusal::Stale {
                at: humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(at_ms),
                )
                .to_string(),
            });
        }
    }
    if let Some(expired_at) = old.expires_at_ms
        && now_ms > expired_at
        && now_ms - expired_at > policy.renewal_grace.as_millis() as u64
    {
        return Err(Refusal::PastGrace {
            node: name.to_owned(),
            expired_days: (now_ms - expired_at) / 86_400_000,
            grace_days: policy.renewal_grace.as_secs() / 86_400,
        });
    }
    Ok(())
}

/// Whether `signature` (hex) over the renewal message verifies with the node's key.
pub fn signature_ok(
    node: &NodeRecord,
    request: &gantry_shared::protocol::enroll::RenewRequest,
) -> bool {
    let message = gantry_shared::protocol::enroll::renew_message(
        &request.node_name,
        &request.certificate_sha256,
        request.at_ms,
    );
    gantry_shared::bundle::signing::from_hex(&request.signature)
        .is_some_and(|sig| gantry_net::verify(&node.public_key, &message, &sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;
    const NOW: u64 = 1_800_000_000_000;

    fn node(revoked: bool) -> NodeRecord {
        NodeRecord {
            name: "n1".into(),
            revoked,
            ..NodeRecord::default()
        }
    }

    fn cert(expires_at_ms: Option<u64>) -> IdentityRecord {
        IdentityRecord {
            principal: Principal::Node { name: "n1".into() },
            issued_at_ms: 0,
            revoked: false,
            expires_at_ms,
        }
    }

    fn run(
        node: Option<&NodeRecord>,
        old: Option<&IdentityRecord>,
        proof: Proof,
    ) -> Result<(), Refusal> {
        check("n1", node, old, proof, &CertPolicy::default(), NOW)
    }

    #[test]
    fn renew_online_before_expiry() {
        assert_eq!(
            run(
                Some(&node(false)),
                Some(&cert(Some(NOW + DAY))),
                Proof::Connection
            ),
            Ok(())
        );
    }

    #[test]
    fn renew_after_expiry_within_grace_by_proof() {
        let proof = Proof::Signature {
            at_ms: NOW,
            by_file: false,
        };
        assert_eq!(
            run(Some(&node(false)), Some(&cert(Some(NOW - 90 * DAY))), proof),
            Ok(())
        );
    }

    #[test]
    fn refuse_after_grace() {
        let proof = Proof::Signature {
            at_ms: NOW,
            by_file: false,
        };
        let err = run(
            Some(&node(false)),
            Some(&cert(Some(NOW - 200 * DAY))),
            proof,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Refusal::PastGrace {
                    expired_days: 200,
                    grace_days: 180,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn refuse_when_revoked() {
        let err = run(
            Some(&node(true)),
            Some(&cert(Some(NOW + DAY))),
            Proof::Connection,
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::Revoked(_)));
        let mut revoked_cert = cert(Some(NOW + DAY));
        revoked_cert.revoked = true;
        let err = run(Some(&node(false)), Some(&revoked_cert), Proof::Connection).unwrap_err();
        assert!(matches!(err, Refusal::Revoked(_)));
    }

    #[test]
    fn refuse_a_certificate_of_another_node_or_unknown() {
        let mut other = cert(Some(NOW + DAY));
        other.principal = Principal::Node { name: "n2".into() };
        assert!(matches!(
            run(Some(&node(false)), Some(&other), Proof::Connection),
            Err(Refusal::NotItsCertificate(_))
        ));
        assert!(matches!(
            run(Some(&node(false)), None, Proof::Connection),
            Err(Refusal::NotItsCertificate(_))
        ));
        assert!(matches!(
            run(None, None, Proof::Connection),
            Err(Refusal::UnknownNode(_))
        ));
    }

    #[test]
    fn renewal_signed_long_ago_counts_only_by_file() {
        let old = cert(Some(NOW - 30 * DAY));
        let online = Proof::Signature {
            at_ms: NOW - 20 * DAY,
            by_file: false,
        };
        assert!(matches!(
            run(Some(&node(false)), Some(&old), online),
            Err(Refusal::Stale { .. })
        ));
        let file = Proof::Signature {
            at_ms: NOW - 20 * DAY,
            by_file: true,
        };
        assert_eq!(run(Some(&node(false)), Some(&old), file), Ok(()));
        let future = Proof::Signature {
            at_ms: NOW + DAY,
            by_file: true,
        };
        assert!(matches!(
            run(Some(&node(false)), Some(&old), future),
            Err(Refusal::Stale { .. })
        ));
    }

    #[test]
    fn certificates_without_an_expiry_renew() {
        assert_eq!(
            run(Some(&node(false)), Some(&cert(None)), Proof::Connection),
            Ok(())
        );
    }

    #[test]
    fn lifetimes_are_range_checked() {
        let mut p = CertPolicy::default();
        assert!(p.validate().is_ok());
        p.node_lifetime = Duration::from_secs(1);
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("--node-cert-lifetime")
        );
    }
}
