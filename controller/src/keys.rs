//! Signing keys on disk: PKCS#8 PEM private keys readable by their owner only, and PEM
//! public keys beside them (`KEY.pub`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use gantry_shared::bundle::signing::{self, KeyError};

/// Problems with key files. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path} already exists; keys are never overwritten (choose another path or remove it)")]
    Exists { path: PathBuf },
    #[error("cannot access key file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("private key {path} is readable by others (mode {mode:04o}); run `chmod 600 {path}`")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path} is not a usable key")]
    Parse {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("cannot read random bytes for a new key: {0}")]
    Random(String),
}

/// A newly written key pair.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub key_id: String,
    pub private_path: PathBuf,
    pub public_path: PathBuf,
}

/// Path of the public key that goes with `private`.
pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn create_new(path: &Path, mode: u32, contents: &str) -> Result<(), KeyFileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists {
                    path: path.to_owned(),
                }
            } else {
                KeyFileError::Io {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
    // The mode given to open() is filtered by the umask; make it exact.
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Generates a key pair: `path` (private, mode 0600) and `path.pub` (public, 0644).
pub fn generate(path: &Path) -> Result<NewKey, KeyFileError> {
    let public_path = public_path(path);
    if public_path.exists() {
        return Err(KeyFileError::Exists { path: public_path });
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyFileError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    create_new(path, 0o600, &signing::private_key_to_pem(&key))?;
    if let Err(e) = create_new(
        &public_path,
        0o644,
        &signing::public_key_to_pem(&key.verifying_key()),
    ) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(NewKey {
        key_id: signing::key_id(&key.verifying_key()),
        private_path: path.to_owned(),
        public_path,
    })
}

/// Loads a private key, refusing a file that group or others can read.
pub fn load_private(path: &Path) -> Result<SigningKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyFileError::TooOpen {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let pem = std::fs::read_to_string(path).map_err(io)?;
    signing::private_key_from_pem(&pem).map_err(|source| KeyFileError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Loads a public key (`KEY.pub`).
pub fn load_public(path: &Path) -> Result<VerifyingKey, KeyFileError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    signing::public_key_from_pem(&pem).map_err(|source| KeyFileError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.key");
        let new = generate(&path).unwrap();
        let private = load_private(&path).unwrap();
        let public = load_public(&new.public_path).unwrap();
        assert_eq!(private.verifying_key(), public);
        assert_eq!(new.key_id, signing::key_id(&public));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn existing_key_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        generate(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(generate(&path), Err(KeyFileError::Exists { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        generate(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_private(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
