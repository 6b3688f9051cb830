//! Bundles on the node: checking a bundle file against the node's own trust policy.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_shared::bundle::Discard;
use gantry_shared::bundle::outcome::{self, VerifyOutcome};
use gantry_shared::bundle::policy::{PolicyError, SignedPolicy};

/// Why a bundle could not be checked at all (as opposed to failing the check).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "cannot read the node's trust policy {path}; install one (see `gantry policy create`) or set trust.policy"
    )]
    ReadPolicy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the node's trust policy {path} is not usable")]
    Policy {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("cannot read bundle {path}")]
    ReadBundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the node's trust policy, checking its own signatures.
pub fn load_policy(path: &Path) -> Result<SignedPolicy, VerifyError> {
    let bytes = std::fs::read(path).map_err(|source| VerifyError::ReadPolicy {
        path: path.to_owned(),
        source,
    })?;
    SignedPolicy::load_installed(&bytes).map_err(|source| VerifyError::Policy {
        path: path.to_owned(),
        source,
    })
}

/// Verifies the bundle file at `bundle` against the policy file at `policy`, at `now`.
/// Nothing is written anywhere: the payload is hashed and discarded.
pub fn verify_file(
    bundle: &Path,
    policy: &Path,
    now: SystemTime,
) -> Result<VerifyOutcome, VerifyError> {
    let policy = load_policy(policy)?;
    let file = File::open(bundle).map_err(|source| VerifyError::ReadBundle {
        path: bundle.to_owned(),
        source,
    })?;
    Ok(outcome::verify_bundle(
        BufReader::with_capacity(1 << 20, file),
        &policy,
        now,
        &mut Discard,
    ))
}
