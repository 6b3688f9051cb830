//! `gantry-agent import POLICY`: a signed trust-policy update, carried in on removable
//! media like a bundle. It replaces the node's policy only when the policy in force
//! authorizes it (signed by enough keys the current policy trusts, a higher version, and
//! signed by enough of its own keys); the file is replaced atomically and the policy it
//! replaces is kept beside it as `<file>.previous`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_shared::bundle::policy::{MAX_POLICY_BYTES, PolicyError, SignedPolicy};

use super::{VerifyError, load_policy};

/// Why an update was not installed; the installed policy is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Installed(#[from] VerifyError),
    #[error("cannot read the policy update {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a usable trust policy")]
    Parse {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error("the node's policy (version {current}) does not accept {path} (version {update})")]
    Refused {
        path: PathBuf,
        current: u64,
        update: u64,
        #[source]
        source: PolicyError,
    },
    #[error("cannot write the new policy to {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An installed update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub from_version: u64,
    pub to_version: u64,
    /// The keys of the policy in force that authorized it.
    pub authorized_by: Vec<String>,
}

/// Installs the update read from `file` (opened from `update`, named in messages) over the
/// node's policy at `installed`, if the policy in force accepts it at `now`.
pub fn install(
    installed: &Path,
    update: &Path,
    file: std::fs::File,
    now: SystemTime,
) -> Result<Installed, UpdateError> {
    use std::io::Read as _;
    let current = load_policy(installed)?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| UpdateError::Read {
            path: update.to_owned(),
            source,
        })?;
    let next = SignedPolicy::parse(&bytes).map_err(|source| UpdateError::Parse {
        path: update.to_owned(),
        source,
    })?;
    let report = current
        .verify_update(&next, now)
        .map_err(|source| UpdateError::Refused {
            path: update.to_owned(),
            current: current.policy().version,
            update: next.policy().version,
            source,
        })?;
    let write = |source| UpdateError::Write {
        path: installed.to_owned(),
        source,
    };
    let dir = installed.parent().unwrap_or(Path::new("."));
    let previous = previous_path(installed);
    std::fs::copy(installed, &previous).map_err(write)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
    tmp.write_all(&next.to_bytes()).map_err(write)?;
    tmp.as_file().sync_all().map_err(write)?;
    tmp.persist(installed).map_err(|e| write(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(write)?;
    Ok(Installed {
        from_version: current.policy().version,
        to_version: next.policy().version,
        authorized_by: report
            .checks
            .iter()
            .filter(|c| c.outcome.is_ok())
            .map(|c| c.key_name.clone().unwrap_or_else(|| c.key_id.clone()))
            .collect(),
    })
}

/// Where the replaced policy is kept: `<file>.previous`.
pub fn previous_path(installed: &Path) -> PathBuf {
    let mut name = installed.as_os_str().to_owned();
    name.push(".previous");
    PathBuf::from(name)
}

/// Whether `file` looks like a trust policy (JSON) rather than a bundle (tar); it is left
/// at its start for whichever reader follows.
pub fn looks_like_policy(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _};
    let mut head = [0u8; 64];
    let n = file.read(&mut head)?;
    file.rewind()?;
    Ok(head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{'))
}
