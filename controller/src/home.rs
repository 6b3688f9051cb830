//! The controller directory (`--dir`, default `/var/lib/gantry-controller`) and the admin
//! identity file the CLI uses.

use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gantry_shared::protocol::admin::Role;
use serde::{Deserialize, Serialize};

use crate::ca::{self, Ca, CaError};
use crate::store::{IdentityRecord, Principal, Store, StoreError};
use gantry_net::atomic;

/// Default controller directory.
pub const DEFAULT_DIR: &str = "/var/lib/gantry-controller";
/// Default QUIC address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7443";
/// File name of the first admin's identity.
pub const ADMIN_IDENTITY: &str = "admin.identity";

/// Problems with the controller directory or an identity file.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("{dir} already holds a fleet CA; refusing to replace it (use another --dir)")]
    AlreadyInitialized { dir: PathBuf },
    #[error("{dir} is not an initialized controller directory (run `gantry init --dir {dir}`)")]
    NotInitialized { dir: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read identity file {path}")]
    ReadIdentity {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file {path} is not valid: {message}")]
    BadIdentity { path: PathBuf, message: String },
    #[error("identity file {path} is readable by others (mode {mode:04o}); run `chmod 600 {path}`")]
    IdentityTooOpen { path: PathBuf, mode: u32 },
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything the CLI needs to call the controller as an admin. Written with mode 0600.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminIdentity {
    pub name: String,
    pub role: Role,
    /// The controller's QUIC address.
    pub controller: SocketAddr,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl AdminIdentity {
    pub fn load(path: &Path) -> Result<Self, HomeError> {
        let read_err = |source| HomeError::ReadIdentity {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path)
            .map_err(read_err)?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(HomeError::IdentityTooOpen {
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
        let text = std::fs::read(path).map_err(read_err)?;
        serde_json::from_slice(&text).map_err(|e| HomeError::BadIdentity {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), HomeError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("identity serializes");
        bytes.push(b'\n');
        atomic::write_bytes(path, 0o600, &bytes).map_err(|source| HomeError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// Paths inside a controller directory.
#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn store_path(&self) -> PathBuf {
        self.path("store.redb")
    }

    /// Fails unless `gantry init` ran here.
    pub fn check_initialized(&self) -> Result<(), HomeError> {
        if self.path("ca.key").is_file() && self.path("controller.crt").is_file() {
            Ok(())
        } else {
            Err(HomeError::NotInitialized {
                dir: self.dir.clone(),
            })
        }
    }

    pub fn read(&self, name: &str) -> Result<String, HomeError> {
        let path = self.path(name);
        std::fs::read_to_string(&path).map_err(|source| HomeError::ReadIdentity { path, source })
    }

    /// `gantry init`: the CA, the controller certificate, the store, and the first
    /// admin's identity file. Returns the identity file's path.
    pub fn init(
        &self,
        listen: SocketAddr,
        admin_name: &str,
        admin_lifetime: std::time::Duration,
    ) -> Result<PathBuf, HomeError> {
        if self.path("ca.key").exists() {
            return Err(HomeError::AlreadyInitialized {
                dir: self.dir.clone(),
            });
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| HomeError::Write {
                path: self.dir.clone(),
                source,
            })?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| HomeError::Write {
                path: self.dir.clone(),
                source,
            },
        )?;
        let now_ms = gantry_net::clock::now_ms();
        let admin_validity = ca::Validity::starting(now_ms, admin_lifetime);
        let fleet = Ca::create_fleet(admin_name, admin_validity)?;
        for (name, mode, text) in [
            ("ca.crt", 0o644, &fleet.ca_cert_pem),
            ("controller.key", 0o600, &fleet.controller_key_pem),
            ("controller.crt", 0o644, &fleet.controller_cert_pem),
        ] {
            let path = self.path(name);
            atomic::write_bytes(&path, mode, text.as_bytes())
                .map_err(|source| HomeError::Write { path, source })?;
        }
        let store = Store::open(&self.store_path())?;
        let fingerprint =
            ca::pem_fingerprint(&fleet.admin_cert_pem).map_err(|e| HomeError::BadIdentity {
                path: self.path(ADMIN_IDENTITY),
                message: e.to_string(),
            })?;
        store.put_identity(
            &fingerprint,
            &IdentityRecord {
                principal: Principal::Admin {
                    name: admin_name.to_owned(),
                    role: Role::Admin,
                },
                issued_at_ms: now_ms,
                revoked: false,
                expires_at_ms: Some(admin_validity.not_after_ms),
            },
        )?;
        let identity_path = self.path(ADMIN_IDENTITY);
        AdminIdentity {
            name: admin_name.to_owned(),
            role: Role::Admin,
            controller: listen,
            ca_pem: fleet.ca_cert_pem.clone(),
            cert_pem: fleet.admin_cert_pem,
            key_pem: fleet.admin_key_pem,
        }
        .save(&identity_path)?;
        // The CA key last: its presence marks a complete initialization.
        let path = self.path("ca.key");
        atomic::write_bytes(&path, 0o600, fleet.ca_key_pem.as_bytes())
            .map_err(|source| HomeError::Write { path, source })?;
        Ok(identity_path)
    }
}
