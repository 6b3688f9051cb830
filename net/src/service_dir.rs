//! Commands an operator runs by hand against a service's directory (`gantry-agent
//! enroll`, `gantry init`, …). Run as root against a directory the service's own user
//! owns, they would leave root-owned files the service cannot read, and the service would
//! fail at its next start. They refuse instead and say whom to run as.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Root was about to write into a directory that belongs to a service user.
#[derive(Debug, thiserror::Error)]
#[error(
    "{dir} belongs to user {owner}: files written there as root could not be read by the service; run it as that user: sudo -u {owner} {command}"
)]
pub struct ForeignOwner {
    pub dir: PathBuf,
    pub owner: String,
    pub command: String,
}

/// Fails when this process runs as root and `dir` exists and belongs to another user.
/// `command` is what to run instead, after `sudo -u OWNER`.
pub fn check_writer(dir: &Path, command: &str) -> Result<(), ForeignOwner> {
    let Ok(metadata) = std::fs::metadata(dir) else {
        return Ok(());
    };
    if !rustix::process::geteuid().is_root() || metadata.uid() == 0 {
        return Ok(());
    }
    Err(ForeignOwner {
        dir: dir.to_owned(),
        owner: user_name(metadata.uid()).unwrap_or_else(|| metadata.uid().to_string()),
        command: command.to_owned(),
    })
}

/// The account name of `uid`, from `/etc/passwd`.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_named_from_the_password_file() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_name(u32::MAX - 7), None);
    }

    #[test]
    fn a_missing_directory_or_a_non_root_writer_passes() {
        assert!(check_writer(Path::new("/nonexistent/gantry"), "x").is_ok());
        let dir = tempfile::tempdir().unwrap();
        // Owned by whoever runs the test: root writing into root's directory passes too.
        assert!(check_writer(dir.path(), "x").is_ok());
    }
}
