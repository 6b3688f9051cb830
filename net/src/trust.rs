//! Trust on the host: reading a trust policy file and checking a bundle file against it,
//! the same way for the controller (pushes, `gantry bundle verify`) and the agent
//! (`gantry-agent verify`, imports, deliveries). The rules are pure and live in
//! `gantry_shared::bundle`; this is the file I/O around them.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_shared::bundle::Discard;
use gantry_shared::bundle::outcome::{self, VerifyOutcome};
use gantry_shared::bundle::policy::{PolicyError, SignedPolicy};

/// Whose policy a file is, for messages that say what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The node's own policy (`trust.policy` in the agent's configuration).
    Node,
    /// The controller's policy (`<home>/trust.json`) or one named on the command line.
    Controller,
}

impl Owner {
    fn describe(self) -> &'static str {
        match self {
            Owner::Node => "the node's trust policy",
            Owner::Controller => "the trust policy",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Owner::Node => "install one (see `gantry policy create`) or set trust.policy",
            Owner::Controller => "create one with `gantry policy create`",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {} {path}; {}", .owner.describe(), .owner.hint())]
    ReadPolicy {
        owner: Owner,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} {path} is not usable", .owner.describe())]
    Policy {
        owner: Owner,
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
    /// A FIFO, a device, a directory: refused before a byte is read.
    #[error("{message}")]
    NotRegularFile { path: PathBuf, message: String },
}

/// Opens a bundle (or policy update) for reading: a regular file only, refused before a
/// byte is read otherwise (see [`crate::files::open_regular`]).
pub fn open_bundle(path: &Path) -> Result<std::fs::File, TrustError> {
    crate::files::open_regular(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::InvalidInput {
            TrustError::NotRegularFile {
                path: path.to_owned(),
                message: source.to_string(),
            }
        } else {
            TrustError::ReadBundle {
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// Reads the policy at `path` and checks it stands on its own (its signatures by its own
/// root keys, its version).
pub fn load_policy(path: &Path, owner: Owner) -> Result<SignedPolicy, TrustError> {
    let bytes = std::fs::read(path).map_err(|source| TrustError::ReadPolicy {
        owner,
        path: path.to_owned(),
        source,
    })?;
    SignedPolicy::load_installed(&bytes).map_err(|source| TrustError::Policy {
        owner,
        path: path.to_owned(),
        source,
    })
}

/// Verifies the bundle file at `bundle` against `policy`, at `now`. Nothing is written
/// anywhere: the payload is hashed and discarded.
pub fn verify_file(
    bundle: &Path,
    policy: &SignedPolicy,
    now: SystemTime,
) -> Result<VerifyOutcome, TrustError> {
    let file = open_bundle(bundle)?;
    Ok(outcome::verify_bundle(
        BufReader::with_capacity(1 << 20, file),
        policy,
        now,
        &mut Discard,
    ))
}
