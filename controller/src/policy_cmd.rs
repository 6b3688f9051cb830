//! `gantry policy create | sign | inspect | verify`: the trust policy nodes verify bundles
//! against, and its signed updates.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_shared::bundle::policy::{
    GoldenRequirement, POLICY_SCHEMA, PolicyError, SignatureReport, SignedPolicy, TrustPolicy,
    TrustedKey,
};
use gantry_shared::bundle::signing;
use serde::Serialize;

use crate::bundle_cmd::{BundleCmdError, load_policy};
use crate::keys;
use gantry_net::atomic;

/// A key to trust, as given on the command line: `NAME=PUBFILE[,not-before=T][,not-after=T]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub public_key: PathBuf,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
}

impl std::str::FromStr for KeySpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.split(',');
        let first = parts.next().unwrap_or_default();
        let (name, path) = first
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            .ok_or_else(|| {
                format!("{text:?} is not NAME=PUBLIC_KEY_FILE[,not-before=TIME][,not-after=TIME]")
            })?;
        let mut spec = Self {
            name: name.to_owned(),
            public_key: PathBuf::from(path),
            not_before: None,
            not_after: None,
        };
        for option in parts {
            match option.split_once('=') {
                Some(("not-before", t)) => spec.not_before = Some(t.to_owned()),
                Some(("not-after", t)) => spec.not_after = Some(t.to_owned()),
                _ => {
                    return Err(format!(
                        "{option:?} is not not-before=TIME or not-after=TIME (RFC 3339)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

/// What `policy create` needs.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    /// Start from this policy (its keys, threshold, revocations; version + 1).
    pub from: Option<PathBuf>,
    pub version: Option<u64>,
    pub threshold: Option<u32>,
    pub add_keys: Vec<KeySpec>,
    pub remove_keys: Vec<String>,
    pub revoke: Vec<String>,
    pub golden: GoldenChoice,
    pub out: PathBuf,
}

/// What the command line says of the golden-vector requirement; unset values keep the
/// `--from` policy's (or the default for a new policy, or a policy that had none).
#[derive(Debug, Clone, Copy, Default)]
pub struct GoldenChoice {
    pub min_vectors: Option<u32>,
    pub max_abs_tolerance: Option<f64>,
    pub max_rel_tolerance: Option<f64>,
    /// Require none.
    pub none: bool,
}

impl GoldenChoice {
    fn apply(self, current: Option<GoldenRequirement>) -> Option<GoldenRequirement> {
        if self.none {
            return None;
        }
        let asked = self.min_vectors.is_some()
            || self.max_abs_tolerance.is_some()
            || self.max_rel_tolerance.is_some();
        let mut golden = match current {
            Some(golden) => golden,
            None if asked => GoldenRequirement::DEFAULT,
            None => return None,
        };
        golden.min_vectors = self.min_vectors.unwrap_or(golden.min_vectors);
        golden.max_abs_tolerance = self.max_abs_tolerance.unwrap_or(golden.max_abs_tolerance);
        golden.max_rel_tolerance = self.max_rel_tolerance.unwrap_or(golden.max_rel_tolerance);
        Some(golden)
    }
}

fn policy_error(path: &Path) -> impl Fn(PolicyError) -> BundleCmdError + '_ {
    move |source| BundleCmdError::Policy {
        path: path.to_owned(),
        source,
    }
}

fn read_policy(path: &Path) -> Result<SignedPolicy, BundleCmdError> {
    let bytes = std::fs::read(path).map_err(|source| BundleCmdError::Read {
        path: path.to_owned(),
        source,
    })?;
    SignedPolicy::parse(&bytes).map_err(policy_error(path))
}

/// Writes a new, unsigned policy; it needs `policy sign` by enough keys before use.
pub fn create(req: &CreateRequest) -> Result<TrustPolicy, BundleCmdError> {
    let mut policy = match &req.from {
        Some(path) => {
            let mut p = read_policy(path)?.policy().clone();
            p.version += 1;
            p
        }
        None => TrustPolicy {
            schema: POLICY_SCHEMA,
            version: 1,
            threshold: 1,
            keys: Vec::new(),
            revoked: Vec::new(),
            golden: Some(GoldenRequirement::DEFAULT),
        },
    };
    if let Some(version) = req.version {
        policy.version = version;
    }
    if let Some(threshold) = req.threshold {
        policy.threshold = threshold;
    }
    policy.golden = req.golden.apply(policy.golden);
    for id in &req.remove_keys {
        let before = policy.keys.len();
        policy.keys.retain(|k| &k.id != id);
        if policy.keys.len() == before {
            return Err(BundleCmdError::Usage(format!(
                "--remove-key {id}: the policy has no such key"
            )));
        }
    }
    for spec in &req.add_keys {
        let public = keys::load_public(&spec.public_key)?;
        policy.keys.push(TrustedKey {
            id: signing::key_id(&public),
            name: spec.name.clone(),
            public_key: signing::to_hex(public.as_bytes()),
            not_before: spec.not_before.clone(),
            not_after: spec.not_after.clone(),
        });
    }
    for id in &req.revoke {
        if !policy.revoked.contains(id) {
            policy.revoked.push(id.clone());
        }
    }
    let signed = SignedPolicy::new(policy).map_err(policy_error(&req.out))?;
    atomic::write_bytes(&req.out, 0o644, &signed.to_bytes()).map_err(|source| {
        BundleCmdError::Write {
            path: req.out.clone(),
            source,
        }
    })?;
    Ok(signed.policy().clone())
}

/// Adds a signature to a policy file in place.
pub fn sign(path: &Path, key_path: &Path) -> Result<(String, usize), BundleCmdError> {
    let key = keys::load_private(key_path)?;
    let mut policy = read_policy(path)?;
    policy.sign(&key).map_err(policy_error(path))?;
    atomic::write_bytes(path, 0o644, &policy.to_bytes()).map_err(|source| {
        BundleCmdError::Write {
            path: path.to_owned(),
            source,
        }
    })?;
    Ok((
        signing::key_id(&key.verifying_key()),
        policy.signatures().len(),
    ))
}

/// `policy inspect --json`.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub policy: TrustPolicy,
    pub signed_by: Vec<String>,
    /// Whether the policy carries `threshold` signatures by its own keys.
    pub self_signed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

pub fn inspect(path: &Path) -> Result<Inspection, BundleCmdError> {
    let policy = read_policy(path)?;
    let check = policy.verify_installed();
    Ok(Inspection {
        policy: policy.policy().clone(),
        signed_by: policy
            .signatures()
            .iter()
            .map(|s| s.key_id.clone())
            .collect(),
        self_signed: check.is_ok(),
        problem: check.err().map(|e| e.to_string()),
    })
}

pub fn render_inspection(i: &Inspection) -> String {
    use std::fmt::Write as _;
    let p = &i.policy;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trust policy version {} (schema {})",
        p.version, p.schema
    );
    let _ = writeln!(
        out,
        "threshold   {} distinct valid signature(s) per bundle and per policy update",
        p.threshold
    );
    match &p.golden {
        Some(g) => {
            let _ = writeln!(
                out,
                "golden      at least {} vector(s) per bundle, tolerance at most abs {:e}, rel {:e}",
                g.min_vectors, g.max_abs_tolerance, g.max_rel_tolerance
            );
        }
        None => out.push_str("golden      not required\n"),
    }
    let _ = writeln!(out, "keys        {}", p.keys.len());
    for k in &p.keys {
        let window = match (&k.not_before, &k.not_after) {
            (None, None) => "always".to_owned(),
            (b, a) => format!(
                "{} .. {}",
                b.as_deref().unwrap_or("-"),
                a.as_deref().unwrap_or("-")
            ),
        };
        let revoked = if p.revoked.contains(&k.id) {
            "  REVOKED"
        } else {
            ""
        };
        let _ = writeln!(out, "  {}  {:<20} valid {window}{revoked}", k.id, k.name);
    }
    for id in p
        .revoked
        .iter()
        .filter(|id| !p.keys.iter().any(|k| &k.id == *id))
    {
        let _ = writeln!(out, "  {id}  (not listed)          REVOKED");
    }
    let _ = writeln!(
        out,
        "signed by   {}",
        if i.signed_by.is_empty() {
            "nobody yet".to_owned()
        } else {
            i.signed_by.join(", ")
        }
    );
    match &i.problem {
        None => out.push_str("usable      yes: signed by enough of its own keys\n"),
        Some(problem) => {
            let _ = writeln!(out, "usable      NO: {problem}");
        }
    }
    out
}

/// Checks a policy: as an update of `trust` when given, else as an installed policy.
pub fn verify(
    path: &Path,
    trust: Option<&Path>,
    now: SystemTime,
) -> Result<SignatureReport, BundleCmdError> {
    let candidate = read_policy(path)?;
    match trust {
        None => candidate.verify_installed().map_err(policy_error(path)),
        Some(current) => {
            let current = load_policy(current)?;
            current
                .verify_update(&candidate, now)
                .map_err(policy_error(path))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_specs_parse() {
        let spec: KeySpec = "release-1=keys/r1.pub,not-after=2027-01-01T00:00:00Z"
            .parse()
            .unwrap();
        assert_eq!(spec.name, "release-1");
        assert_eq!(spec.public_key, Path::new("keys/r1.pub"));
        assert_eq!(spec.not_after.as_deref(), Some("2027-01-01T00:00:00Z"));
        assert!("noequals".parse::<KeySpec>().is_err());
        assert!("a=b,expires=x".parse::<KeySpec>().is_err());
    }
}
