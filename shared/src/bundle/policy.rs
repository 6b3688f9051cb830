//! The trust policy: which keys a node trusts, when, which it has revoked, and how many
//! distinct valid signatures a bundle needs.
//!
//! A policy file is JSON: `{"policy": "<policy JSON text>", "signatures": [...]}`. The
//! policy text is kept verbatim (it is what the signatures cover) and parsed strictly.
//!
//! Rules:
//! - **Bundles** need `threshold` signatures by distinct keys that the policy trusts, has
//!   not revoked, and whose validity window contains the verification time. One key
//!   signing twice counts once.
//! - **Policy updates** must carry a higher `version`, be signed by `threshold` distinct
//!   non-revoked keys of the *current* policy, and by `threshold` keys of the *new*
//!   policy valid now (so nobody can install a policy whose keys nobody holds). Validity
//!   windows of the current keys are not enforced for updates: an expired key can still
//!   sign its own replacement, so a node is never left un-updatable because a key
//!   expired. Revocation is enforced always.
//! - A policy whose threshold exceeds its usable keys is refused: it could never verify.
//! - A node's installed policy must carry `threshold` signatures by its own non-revoked
//!   keys, so a policy file altered after signing is detected.

use std::collections::BTreeSet;
use std::time::SystemTime;

use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::manifest::Manifest;
use super::signing::{self, MAX_SIGNATURES, Purpose, Signature, SignatureProblem};

/// The policy schema this code reads.
pub const POLICY_SCHEMA: u32 = 1;
/// Largest policy file accepted.
pub const MAX_POLICY_BYTES: u64 = 256 * 1024;

/// Problems with a policy document itself.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the policy file is {size} bytes; at most {max} are accepted")]
    Oversized { size: u64, max: u64 },
    #[error("the policy file is not valid: {message}")]
    Malformed { message: String },
    #[error(
        "the policy has schema version {found}; this version of Gantry reads schema {POLICY_SCHEMA}"
    )]
    UnknownSchema { found: u32 },
    #[error("policy field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
    #[error("the policy is not signed by enough of its own keys: {report}")]
    NotSelfSigned { report: SignatureReport },
    #[error(
        "policy version {update} does not replace version {current}: an update must carry exactly the next version, {next}"
    )]
    NotNext {
        current: u64,
        update: u64,
        next: u64,
    },
    #[error("the policy update is not signed by enough keys the current policy trusts: {report}")]
    UpdateNotAuthorized { report: SignatureReport },
    #[error("the policy update is not signed by enough of its own keys: {report}")]
    UpdateNotSelfSigned { report: SignatureReport },
    #[error("key {key_id} already signed this policy")]
    AlreadySigned { key_id: String },
    #[error("the policy carries {count} signatures; at most {MAX_SIGNATURES} are accepted")]
    TooManySignatures { count: usize },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    pub schema: u32,
    /// Increases with every update.
    pub version: u64,
    /// Distinct valid signatures a bundle (and a policy update) needs.
    pub threshold: u32,
    pub keys: Vec<TrustedKey>,
    /// Key ids that must never count again, whether or not still listed in `keys`.
    #[serde(default)]
    pub revoked: Vec<String>,
    /// What a bundle's golden vectors must be for the bundle to be accepted. Absent in
    /// policies made before it existed (no requirement); `gantry policy create` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden: Option<GoldenRequirement>,
}

/// The golden gate a policy demands: at least `min_vectors` vectors that each exercise the
/// model (every input and output holds at least one element), and no vector whose
/// tolerance is looser than the ceilings — a gate that cannot fail is no gate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenRequirement {
    pub min_vectors: u32,
    pub max_abs_tolerance: f64,
    pub max_rel_tolerance: f64,
}

impl Eq for GoldenRequirement {}

impl GoldenRequirement {
    /// What new policies require unless told otherwise.
    pub const DEFAULT: Self = Self {
        min_vectors: 1,
        max_abs_tolerance: 1e-2,
        max_rel_tolerance: 1e-2,
    };

    fn validate(&self) -> Result<(), PolicyError> {
        if self.min_vectors == 0 {
            return Err(invalid(
                "golden.min_vectors",
                "must be at least 1 (leave `golden` out to require none)",
            ));
        }
        for (field, value) in [
            ("golden.max_abs_tolerance", self.max_abs_tolerance),
            ("golden.max_rel_tolerance", self.max_rel_tolerance),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(
                    field,
                    format!("{value} is not a finite number ≥ 0"),
                ));
            }
        }
        Ok(())
    }

    /// Checks a manifest's golden vectors against the requirement.
    pub fn check(&self, manifest: &Manifest) -> Result<(), GoldenShortfall> {
        for golden in &manifest.golden {
            let t = golden.tolerance;
            if t.abs > self.max_abs_tolerance || t.rel > self.max_rel_tolerance {
                return Err(GoldenShortfall::TooLoose {
                    vector: golden.name.clone(),
                    abs: t.abs,
                    rel: t.rel,
                    max_abs: self.max_abs_tolerance,
                    max_rel: self.max_rel_tolerance,
                });
            }
        }
        let exercising = manifest
            .golden
            .iter()
            .filter(|g| {
                g.inputs
                    .values()
                    .chain(g.outputs.values())
                    .all(|t| t.elements().is_some_and(|n| n > 0))
            })
            .count();
        if exercising < self.min_vectors as usize {
            return Err(GoldenShortfall::TooFew {
                found: exercising,
                listed: manifest.golden.len(),
                needed: self.min_vectors,
            });
        }
        Ok(())
    }
}

/// Why a bundle's golden vectors do not satisfy the policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GoldenShortfall {
    #[error(
        "the trust policy requires {needed} golden vector(s) with non-empty inputs and outputs; the bundle has {found} ({listed} listed)"
    )]
    TooFew {
        found: usize,
        listed: usize,
        needed: u32,
    },
    #[error(
        "golden vector {vector:?} has tolerance abs {abs:e}, rel {rel:e}; the trust policy allows at most abs {max_abs:e}, rel {max_rel:e}"
    )]
    TooLoose {
        vector: String,
        abs: f64,
        rel: f64,
        max_abs: f64,
        max_rel: f64,
    },
}

/// A key the policy trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedKey {
    pub id: String,
    /// Who holds it, e.g. `release-1` or `alice@ml`.
    pub name: String,
    /// The raw ed25519 public key, 64 hexadecimal digits.
    pub public_key: String,
    /// RFC 3339; the key does not count before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// RFC 3339; the key does not count after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    policy: String,
    signatures: Vec<Signature>,
}

#[derive(Debug, Clone)]
struct LoadedKey {
    public: VerifyingKey,
    not_before: Option<SystemTime>,
    not_after: Option<SystemTime>,
}

/// A parsed policy file: the verbatim policy text, its parsed form and its signatures.
#[derive(Debug, Clone)]
pub struct SignedPolicy {
    text: String,
    policy: TrustPolicy,
    keys: Vec<LoadedKey>,
    signatures: Vec<Signature>,
}

/// Why one signature does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Untrusted,
    Revoked,
    NotYetValid { not_before: String },
    Expired { not_after: String },
    Invalid(SignatureProblem),
    SameKeyAgain,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Untrusted => f.write_str("key is not trusted by this policy"),
            Self::Revoked => f.write_str("key is revoked"),
            Self::NotYetValid { not_before } => write!(f, "key is not valid before {not_before}"),
            Self::Expired { not_after } => write!(f, "key expired at {not_after}"),
            Self::Invalid(problem) => write!(f, "{problem}"),
            Self::SameKeyAgain => f.write_str("this key already signed; it counts once"),
        }
    }
}

/// The outcome for one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// 1-based position among the signatures, as shown to operators.
    pub position: usize,
    pub key_id: String,
    /// The key's name in the policy, when it is listed.
    pub key_name: Option<String>,
    pub outcome: Result<(), Rejection>,
}

/// All signatures checked against a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureReport {
    pub checks: Vec<SignatureCheck>,
    pub threshold: u32,
}

impl SignatureReport {
    /// Distinct keys whose signature counted.
    pub fn valid(&self) -> usize {
        self.checks.iter().filter(|c| c.outcome.is_ok()).count()
    }

    pub fn is_satisfied(&self) -> bool {
        self.valid() >= self.threshold as usize
    }
}

impl std::fmt::Display for SignatureReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} distinct valid signature(s), {} needed",
            self.valid(),
            self.threshold
        )?;
        if self.checks.is_empty() {
            return f.write_str(" (it has no signatures)");
        }
        for check in &self.checks {
            if let Err(rejection) = &check.outcome {
                write!(f, "; signature {} by key {}", check.position, check.key_id)?;
                if let Some(name) = &check.key_name {
                    write!(f, " ({name})")?;
                }
                write!(f, ": {rejection}")?;
            }
        }
        Ok(())
    }
}

/// Whether validity windows count when checking signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Windows {
    Enforce(SystemTime),
    Ignore,
}

fn parse_time(field: &str, text: Option<&String>) -> Result<Option<SystemTime>, PolicyError> {
    text.map(|t| {
        humantime::parse_rfc3339(t)
            .map_err(|e| invalid(field, format!("{t:?} is not an RFC 3339 time ({e})")))
    })
    .transpose()
}

impl TrustPolicy {
    fn validate(&self) -> Result<Vec<LoadedKey>, PolicyError> {
        if self.schema != POLICY_SCHEMA {
            return Err(PolicyError::UnknownSchema { found: self.schema });
        }
        if self.version == 0 {
            return Err(invalid("version", "starts at 1"));
        }
        if self.version == u64::MAX {
            return Err(invalid(
                "version",
                "leaves no room for the next update (each update carries exactly the next version)",
            ));
        }
        if self.keys.is_empty() {
            return Err(invalid("keys", "a policy trusts at least one key"));
        }
        let mut ids = BTreeSet::new();
        let mut loaded = Vec::with_capacity(self.keys.len());
        for key in &self.keys {
            let field = |rest: &str| format!("keys[{}]{rest}", key.name);
            if key.name.trim().is_empty() {
                return Err(invalid("keys", "every key needs a name"));
            }
            let public = signing::public_key_from_hex(&key.public_key)
                .map_err(|e| invalid(field(".public_key"), e.to_string()))?;
            let derived = signing::key_id(&public);
            if key.id != derived {
                return Err(invalid(
                    field(".id"),
                    format!("{:?} is not the id of its public key ({derived})", key.id),
                ));
            }
            if !ids.insert(key.id.clone()) {
                return Err(invalid("keys", format!("key {} is listed twice", key.id)));
            }
            let not_before = parse_time(&field(".not_before"), key.not_before.as_ref())?;
            let not_after = parse_time(&field(".not_after"), key.not_after.as_ref())?;
            if let (Some(start), Some(end)) = (not_before, not_after)
                && start >= end
            {
                return Err(invalid(
                    field(""),
                    "not_before must be earlier than not_after",
                ));
            }
            loaded.push(LoadedKey {
                public,
                not_before,
                not_after,
            });
        }
        if let Some(golden) = &self.golden {
            golden.validate()?;
        }
        for id in &self.revoked {
            if id.len() != 16 || signing::from_hex(id).is_none() {
                return Err(invalid(
                    "revoked",
                    format!("{id:?} is not a key id (16 hexadecimal digits)"),
                ));
            }
        }
        let usable = self
            .keys
            .iter()
            .filter(|k| !self.revoked.contains(&k.id))
            .count();
        if self.threshold == 0 {
            return Err(invalid("threshold", "must be at least 1"));
        }
        if self.threshold as usize > usable {
            return Err(invalid(
                "threshold",
                format!(
                    "{} signatures needed but only {usable} non-revoked key(s): nothing could ever verify",
                    self.threshold
                ),
            ));
        }
        Ok(loaded)
    }

    /// Checks `signatures` over `message` for `purpose` under this policy.
    fn check(
        &self,
        keys: &[LoadedKey],
        purpose: Purpose,
        message: &[u8],
        signatures: &[Signature],
        windows: Windows,
    ) -> SignatureReport {
        let mut counted = BTreeSet::new();
        let checks = signatures
            .iter()
            .enumerate()
            .map(|(i, signature)| {
                let listed = self.keys.iter().position(|k| k.id == signature.key_id);
                let outcome = (|| {
                    if self.revoked.contains(&signature.key_id) {
                        return Err(Rejection::Revoked);
                    }
                    let index = listed.ok_or(Rejection::Untrusted)?;
                    let (key, loaded) = (&self.keys[index], &keys[index]);
                    if let Windows::Enforce(now) = windows {
                        if loaded.not_before.is_some_and(|t| now < t) {
                            return Err(Rejection::NotYetValid {
                                not_before: key.not_before.clone().unwrap_or_default(),
                            });
                        }
                        if loaded.not_after.is_some_and(|t| now > t) {
                            return Err(Rejection::Expired {
                                not_after: key.not_after.clone().unwrap_or_default(),
                            });
                        }
                    }
                    signing::verify(&loaded.public, purpose, message, signature)
                        .map_err(Rejection::Invalid)?;
                    if !counted.insert(signature.key_id.clone()) {
                        return Err(Rejection::SameKeyAgain);
                    }
                    Ok(())
                })();
                SignatureCheck {
                    position: i + 1,
                    key_id: signature.key_id.clone(),
                    key_name: listed.map(|i| self.keys[i].name.clone()),
                    outcome,
                }
            })
            .collect();
        SignatureReport {
            checks,
            threshold: self.threshold,
        }
    }
}

impl SignedPolicy {
    /// A new, not yet signed policy.
    pub fn new(policy: TrustPolicy) -> Result<Self, PolicyError> {
        let keys = policy.validate()?;
        let mut text =
            serde_json::to_string_pretty(&policy).map_err(|e| PolicyError::Malformed {
                message: e.to_string(),
            })?;
        text.push('\n');
        Ok(Self {
            text,
            policy,
            keys,
            signatures: Vec::new(),
        })
    }

    /// Parses a policy file; checks its structure, not its signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, PolicyError> {
        if bytes.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::Oversized {
                size: bytes.len() as u64,
                max: MAX_POLICY_BYTES,
            });
        }
        let file: PolicyFile =
            serde_json::from_slice(bytes).map_err(|e| PolicyError::Malformed {
                message: e.to_string(),
            })?;
        if file.signatures.len() > MAX_SIGNATURES {
            return Err(PolicyError::TooManySignatures {
                count: file.signatures.len(),
            });
        }
        let policy: TrustPolicy =
            serde_json::from_str(&file.policy).map_err(|e| PolicyError::Malformed {
                message: format!("the policy text: {e}"),
            })?;
        let keys = policy.validate()?;
        Ok(Self {
            text: file.policy,
            policy,
            keys,
            signatures: file.signatures,
        })
    }

    /// Parses a node's installed policy file and checks its own signatures.
    pub fn load_installed(bytes: &[u8]) -> Result<Self, PolicyError> {
        let policy = Self::parse(bytes)?;
        policy.verify_installed()?;
        Ok(policy)
    }

    /// The policy file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let file = PolicyFile {
            policy: self.text.clone(),
            signatures: self.signatures.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("policy file serializes");
        bytes.push(b'\n');
        bytes
    }

    pub fn policy(&self) -> &TrustPolicy {
        &self.policy
    }

    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// Adds a signature by `key`.
    pub fn sign(&mut self, key: &SigningKey) -> Result<(), PolicyError> {
        let id = signing::key_id(&key.verifying_key());
        if self.signatures.iter().any(|s| s.key_id == id) {
            return Err(PolicyError::AlreadySigned { key_id: id });
        }
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(PolicyError::TooManySignatures {
                count: self.signatures.len() + 1,
            });
        }
        self.signatures.push(signing::sign(
            key,
            Purpose::TrustPolicy,
            self.text.as_bytes(),
        ));
        Ok(())
    }

    /// Checks the policy is signed by `threshold` of its own non-revoked keys, as an
    /// installed policy must be.
    pub fn verify_installed(&self) -> Result<SignatureReport, PolicyError> {
        let report = self.own_signatures(Windows::Ignore);
        if report.is_satisfied() {
            Ok(report)
        } else {
            Err(PolicyError::NotSelfSigned { report })
        }
    }

    fn own_signatures(&self, windows: Windows) -> SignatureReport {
        self.policy.check(
            &self.keys,
            Purpose::TrustPolicy,
            self.text.as_bytes(),
            &self.signatures,
            windows,
        )
    }

    /// Checks that `update` may replace this policy at time `now`.
    pub fn verify_update(
        &self,
        update: &Self,
        now: SystemTime,
    ) -> Result<SignatureReport, PolicyError> {
        // Exactly the next version (TUF's rule for root metadata): a validly signed update
        // can never jump to the last version and freeze the node, nor go back.
        let next = self.policy.version.saturating_add(1);
        if update.policy.version != next || next == self.policy.version {
            return Err(PolicyError::NotNext {
                current: self.policy.version,
                update: update.policy.version,
                next,
            });
        }
        let authorized = self.policy.check(
            &self.keys,
            Purpose::TrustPolicy,
            update.text.as_bytes(),
            &update.signatures,
            Windows::Ignore,
        );
        if !authorized.is_satisfied() {
            return Err(PolicyError::UpdateNotAuthorized { report: authorized });
        }
        let own = update.own_signatures(Windows::Enforce(now));
        if !own.is_satisfied() {
            return Err(PolicyError::UpdateNotSelfSigned { report: own });
        }
        Ok(authorized)
    }

    /// Checks a bundle's golden vectors against the policy's requirement, if it has one.
    pub fn check_golden(&self, manifest: &Manifest) -> Result<(), GoldenShortfall> {
        self.policy.golden.map_or(Ok(()), |g| g.check(manifest))
    }

    /// Checks a bundle manifest's signatures at time `now`.
    pub fn verify_manifest(
        &self,
        manifest_bytes: &[u8],
        signatures: &[Signature],
        now: SystemTime,
    ) -> SignatureReport {
        self.policy.check(
            &self.keys,
            Purpose::BundleManifest,
            manifest_bytes,
            signatures,
            Windows::Enforce(now),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trusted(seed: u8, name: &str) -> TrustedKey {
        let public = key(seed).verifying_key();
        TrustedKey {
            id: signing::key_id(&public),
            name: name.into(),
            public_key: signing::to_hex(public.as_bytes()),
            not_before: None,
            not_after: None,
        }
    }

    fn policy(version: u64, threshold: u32, seeds: &[u8]) -> TrustPolicy {
        TrustPolicy {
            schema: POLICY_SCHEMA,
            version,
            threshold,
            keys: seeds
                .iter()
                .map(|&s| trusted(s, &format!("k{s}")))
                .collect(),
            revoked: Vec::new(),
            golden: None,
        }
    }

    fn signed(p: TrustPolicy, signers: &[u8]) -> SignedPolicy {
        let mut sp = SignedPolicy::new(p).unwrap();
        for &s in signers {
            sp.sign(&key(s)).unwrap();
        }
        SignedPolicy::parse(&sp.to_bytes()).unwrap()
    }

    fn now() -> SystemTime {
        humantime::parse_rfc3339("2026-06-01T00:00:00Z").unwrap()
    }

    #[test]
    fn installed_policy_needs_its_own_threshold() {
        assert!(
            signed(policy(1, 2, &[1, 2, 3]), &[1, 2])
                .verify_installed()
                .is_ok()
        );
        let err = signed(policy(1, 2, &[1, 2, 3]), &[1])
            .verify_installed()
            .unwrap_err();
        assert!(matches!(err, PolicyError::NotSelfSigned { .. }), "{err}");
    }

    #[test]
    fn policy_text_altered_after_signing_is_detected() {
        let sp = signed(policy(1, 1, &[1]), &[1]);
        let tampered = String::from_utf8(sp.to_bytes())
            .unwrap()
            .replace("\\\"threshold\\\": 1", "\\\"threshold\\\":  1");
        let err = SignedPolicy::parse(tampered.as_bytes())
            .unwrap()
            .verify_installed()
            .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn unsatisfiable_threshold_is_refused() {
        let err = SignedPolicy::new(policy(1, 3, &[1, 2])).unwrap_err();
        assert!(err.to_string().contains("threshold"), "{err}");
        let mut p = policy(1, 2, &[1, 2]);
        p.revoked.push(p.keys[0].id.clone());
        assert!(
            SignedPolicy::new(p).is_err(),
            "a revoked key does not count toward the threshold"
        );
    }

    #[test]
    fn key_id_must_match_its_public_key() {
        let mut p = policy(1, 1, &[1]);
        p.keys[0].id = "0000000000000000".into();
        assert!(
            SignedPolicy::new(p)
                .unwrap_err()
                .to_string()
                .contains("not the id of its public key")
        );
    }

    #[test]
    fn policy_update_signed_by_current_keys_is_accepted() {
        let current = signed(policy(1, 2, &[1, 2, 3]), &[1, 2]);
        // Rotate key 3 out, key 4 in; signed by two current keys and two new ones.
        let update = signed(policy(2, 2, &[1, 2, 4]), &[1, 2, 4]);
        assert!(current.verify_update(&update, now()).is_ok());
    }

    #[test]
    fn policy_update_not_signed_by_enough_trusted_keys_is_refused() {
        let current = signed(policy(1, 2, &[1, 2, 3]), &[1, 2]);
        // Signed by one current key and the attacker's own keys.
        let update = signed(policy(2, 2, &[1, 8, 9]), &[1, 8, 9]);
        let err = current.verify_update(&update, now()).unwrap_err();
        assert!(
            matches!(err, PolicyError::UpdateNotAuthorized { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("key is not trusted by this policy"),
            "{err}"
        );
    }

    #[test]
    fn policy_rollback_to_an_older_version_is_refused() {
        let current = signed(policy(5, 1, &[1]), &[1]);
        let old = signed(policy(4, 1, &[1]), &[1]);
        assert!(matches!(
            current.verify_update(&old, now()),
            Err(PolicyError::NotNext { .. })
        ));
    }

    #[test]
    fn policy_freeze_by_jumping_to_the_last_version_is_refused() {
        let current = signed(policy(1, 1, &[1]), &[1]);
        let mut last = policy(u64::MAX - 1, 1, &[1]);
        let jump = signed(last.clone(), &[1]);
        let err = current.verify_update(&jump, now()).unwrap_err();
        assert!(matches!(err, PolicyError::NotNext { next: 2, .. }), "{err}");
        last.version = u64::MAX;
        let err = SignedPolicy::new(last).unwrap_err();
        assert!(
            err.to_string().contains("no room for the next update"),
            "{err}"
        );
        let skip = signed(policy(3, 1, &[1]), &[1]);
        assert!(
            current.verify_update(&skip, now()).is_err(),
            "versions are not skipped"
        );
        let next = signed(policy(2, 1, &[1]), &[1]);
        assert!(current.verify_update(&next, now()).is_ok());
    }

    #[test]
    fn expired_keys_can_still_sign_their_replacement() {
        let mut p = policy(1, 1, &[1]);
        p.keys[0].not_after = Some("2026-01-01T00:00:00Z".into());
        let current = signed(p, &[1]);
        let update = signed(policy(2, 1, &[2]), &[1, 2]);
        assert!(
            current.verify_update(&update, now()).is_ok(),
            "an expired key must not strand the node"
        );
    }

    #[test]
    fn revoked_keys_cannot_authorize_an_update() {
        let mut p = policy(1, 1, &[1, 2]);
        p.revoked.push(p.keys[0].id.clone());
        let current = signed(p, &[2]);
        let update = signed(policy(2, 1, &[1]), &[1]);
        let err = current.verify_update(&update, now()).unwrap_err();
        assert!(err.to_string().contains("revoked"), "{err}");
    }

    #[test]
    fn manifest_checks_name_each_rejection() {
        let mut p = policy(1, 2, &[1, 2, 3, 4]);
        p.keys[1].not_after = Some("2026-01-01T00:00:00Z".into());
        p.keys[2].not_before = Some("2027-01-01T00:00:00Z".into());
        p.revoked.push(p.keys[3].id.clone());
        let sp = signed(p, &[1]);
        let m = b"manifest";
        let sigs = vec![
            signing::sign(&key(1), Purpose::BundleManifest, m),
            signing::sign(&key(1), Purpose::BundleManifest, m),
            signing::sign(&key(2), Purpose::BundleManifest, m),
            signing::sign(&key(3), Purpose::BundleManifest, m),
            signing::sign(&key(4), Purpose::BundleManifest, m),
            signing::sign(&key(5), Purpose::BundleManifest, m),
            signing::sign(&key(1), Purpose::BundleManifest, b"other manifest"),
        ];
        let report = sp.verify_manifest(m, &sigs, now() + Duration::from_secs(1));
        let outcomes: Vec<_> = report.checks.iter().map(|c| c.outcome.clone()).collect();
        assert_eq!(outcomes[0], Ok(()));
        assert_eq!(outcomes[1], Err(Rejection::SameKeyAgain));
        assert!(matches!(outcomes[2], Err(Rejection::Expired { .. })));
        assert!(matches!(outcomes[3], Err(Rejection::NotYetValid { .. })));
        assert_eq!(outcomes[4], Err(Rejection::Revoked));
        assert_eq!(outcomes[5], Err(Rejection::Untrusted));
        assert_eq!(
            outcomes[6],
            Err(Rejection::Invalid(SignatureProblem::Mismatch))
        );
        assert_eq!(report.valid(), 1);
        assert!(!report.is_satisfied());
        let text = report.to_string();
        assert!(
            text.starts_with("1 distinct valid signature(s), 2 needed"),
            "{text}"
        );
        assert!(
            text.contains("(k2): key expired at 2026-01-01T00:00:00Z"),
            "{text}"
        );
    }
}
