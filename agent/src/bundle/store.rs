//! The node's bundle store: verified bundles, unpacked, addressed by their identity, and
//! which one is active.
//!
//! Layout under `<state_dir>/bundles/`:
//! - `<digest>/` — one verified bundle: `manifest.json` (its exact signed bytes),
//!   `signatures.json`, and `files/…` (the payload);
//! - `.staging-*/` — a bundle being verified; renamed to `<digest>/` only after every
//!   digest, the signatures and the golden vectors passed, removed otherwise;
//! - `current.json` — `{"active": digest, "previous": digest}`, replaced atomically
//!   (write, fsync, rename): the switch between two bundles is one rename.
//!
//! **Invariant:** nothing becomes active that was not verified against this node's policy
//! and did not pass its golden vectors; a failed import leaves the active bundle as it was.
//! The previous bundle stays for `gantry-agent rollback`; older ones are removed.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_shared::bundle::BundleReader;
use gantry_shared::bundle::manifest::Manifest;
use gantry_shared::bundle::outcome::{self, VerifyOutcome};
use serde::{Deserialize, Serialize};

use super::{DirectorySink, VerifyError, load_policy};
use crate::inference::{self, GoldenResult};

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the bundle store {path} cannot be used")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Inference(#[from] inference::InferenceError),
    #[error("there is no previous bundle to roll back to")]
    NothingToRollBack,
}

/// Which bundles are active and previous, by digest (hex, without `sha256:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Current {
    pub active: Option<String>,
    pub previous: Option<String>,
}

/// What an import did.
#[derive(Debug)]
pub struct Imported {
    pub outcome: VerifyOutcome,
    pub golden: Vec<GoldenResult>,
    /// Set when the bundle became active.
    pub activated: Option<String>,
}

/// The store under `<state_dir>/bundles`.
#[derive(Debug, Clone)]
pub struct BundleStore {
    root: PathBuf,
}

fn digest_of(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

impl BundleStore {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            root: state_dir.join("bundles"),
        }
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        let path = path.to_owned();
        move |source| StoreError::Io {
            path: path.clone(),
            source,
        }
    }

    pub fn current_path(&self) -> PathBuf {
        self.root.join("current.json")
    }

    pub fn current(&self) -> Result<Current, StoreError> {
        let path = self.current_path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Current::default()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// The directory of an installed bundle.
    pub fn bundle_dir(&self, digest: &str) -> PathBuf {
        self.root.join(digest)
    }

    /// The manifest of an installed bundle, re-checked from its stored bytes.
    pub fn manifest(&self, digest: &str) -> Result<Manifest, StoreError> {
        let path = self.bundle_dir(digest).join("manifest.json");
        let bytes = std::fs::read(&path).map_err(Self::io(&path))?;
        Manifest::parse(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    /// Verifies the bundle file against `policy`, runs its golden vectors, installs it and
    /// makes it active. Nothing changes unless every step passes.
    pub fn import(
        &self,
        bundle: &Path,
        policy: &Path,
        onnxruntime: &Path,
        hardware: inference::Hardware,
        now: SystemTime,
    ) -> Result<Imported, StoreError> {
        let policy = load_policy(policy)?;
        std::fs::create_dir_all(&self.root).map_err(Self::io(&self.root))?;
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(&self.root)
            .map_err(Self::io(&self.root))?;
        let file = File::open(bundle).map_err(|source| VerifyError::ReadBundle {
            path: bundle.to_owned(),
            source,
        })?;
        // The manifest and signatures, exactly as signed, beside the payload.
        let header = BundleReader::open(BufReader::new(
            File::open(bundle).map_err(Self::io(bundle))?,
        ));
        let mut sink = DirectorySink::new(&staging.path().join("files"));
        let outcome = outcome::verify_bundle(
            BufReader::with_capacity(1 << 20, file),
            &policy,
            now,
            &mut sink,
        );
        let (Some(manifest), Ok(header)) =
            (outcome.manifest.clone().filter(|_| outcome.ok), header)
        else {
            return Ok(Imported {
                outcome,
                golden: Vec::new(),
                activated: None,
            });
        };
        inference::init(onnxruntime)?;
        let mut model = inference::Model::load(
            &staging.path().join("files").join(&manifest.model.entry),
            &manifest.model,
            &manifest.requirements,
            hardware,
        )?;
        let golden = inference::check_golden(&mut model, &manifest.golden);
        drop(model);
        if !golden.iter().all(|g| g.passed) {
            return Ok(Imported {
                outcome,
                golden,
                activated: None,
            });
        }
        let digest = digest_of(outcome.id.as_deref().unwrap_or_default()).to_owned();
        let write = |name: &str, bytes: &[u8]| -> Result<(), StoreError> {
            let path = staging.path().join(name);
            let mut f = File::create(&path).map_err(Self::io(&path))?;
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .map_err(Self::io(&path))
        };
        write("manifest.json", header.manifest_bytes())?;
        write(
            "signatures.json",
            &serde_json::to_vec_pretty(&serde_json::json!({ "signatures": header.signatures() }))
                .expect("signatures serialize"),
        )?;
        let target = self.bundle_dir(&digest);
        if target.exists() {
            tracing::info!(bundle = %digest, "bundle already installed; activating the installed copy");
        } else {
            let staged = staging.keep();
            std::fs::rename(&staged, &target).map_err(Self::io(&target))?;
        }
        self.activate(&digest)?;
        Ok(Imported {
            outcome,
            golden,
            activated: Some(digest),
        })
    }

    /// Makes an installed bundle active; the active one becomes previous.
    pub fn activate(&self, digest: &str) -> Result<(), StoreError> {
        let mut current = self.current()?;
        if current.active.as_deref() == Some(digest) {
            return Ok(());
        }
        current.previous = current.active.take();
        current.active = Some(digest.to_owned());
        self.write_current(&current)?;
        self.collect_garbage(&current);
        Ok(())
    }

    /// Swaps the active and previous bundles.
    pub fn rollback(&self) -> Result<Current, StoreError> {
        let mut current = self.current()?;
        let Some(previous) = current.previous.take() else {
            return Err(StoreError::NothingToRollBack);
        };
        current.previous = current.active.take();
        current.active = Some(previous);
        self.write_current(&current)?;
        Ok(current)
    }

    fn write_current(&self, current: &Current) -> Result<(), StoreError> {
        let path = self.current_path();
        let tmp = self.root.join(".current.json.tmp");
        let mut f = File::create(&tmp).map_err(Self::io(&tmp))?;
        f.write_all(&serde_json::to_vec_pretty(current).expect("current serializes"))
            .and_then(|()| f.sync_all())
            .map_err(Self::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(Self::io(&path))?;
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(Self::io(&self.root))
    }

    /// Removes installed bundles other than the active and previous ones.
    fn collect_garbage(&self, current: &Current) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = name.starts_with('.')
                || name == "current.json"
                || current.active.as_deref() == Some(&name)
                || current.previous.as_deref() == Some(&name);
            if !keep && entry.path().is_dir() {
                match std::fs::remove_dir_all(entry.path()) {
                    Ok(()) => tracing::info!(bundle = %name, "old bundle removed"),
                    Err(e) => {
                        tracing::warn!(bundle = %name, error = %e, "cannot remove an old bundle");
                    }
                }
            }
        }
    }
}
