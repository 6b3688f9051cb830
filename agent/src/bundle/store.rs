//! The node's bundle store: verified bundles, unpacked, addressed by their identity, and
//! which one is active.
//!
//! Layout under `<state_dir>/bundles/`:
//! - `<digest>/` — one verified bundle: `manifest.json` (its exact signed bytes),
//!   `signatures.json`, and `files/…` (the payload);
//! - `.staging-*/` — a bundle being verified; renamed to `<digest>/` only after every
//!   digest, the signatures and the golden vectors passed, removed otherwise;
//! - `current.json` — per model name, its active and previous bundle
//!   (`{"models": {"resnet": {"active": digest, "previous": digest}}, …}`), replaced
//!   atomically (write, fsync, rename): the switch between two bundles is one rename, and
//!   activating one model's bundle never touches another's.
//!
//! **Invariant:** nothing becomes active that was not verified against this node's policy
//! and did not pass its golden vectors; a failed import leaves the active bundle as it was.
//! Each model's previous bundle stays for `gantry-agent rollback MODEL`; older ones are
//! removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_shared::bundle::BundleId;
use gantry_shared::bundle::manifest::{self, Manifest};
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
    #[error("this node serves several models ({models}): name the one to roll back")]
    WhichModel { models: String },
    #[error("this node serves no model {model:?} (it serves: {models})")]
    UnknownModel { model: String, models: String },
    #[error(
        "downgrade refused: {model} {version} is older than {newest}, which this node already ran; publish a newer version, or run `gantry-agent import --allow-downgrade` at the node"
    )]
    Downgrade {
        model: String,
        version: String,
        newest: String,
    },
}

/// How an import runs.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub policy: PathBuf,
    pub onnxruntime: PathBuf,
    pub hardware: inference::Hardware,
    pub now: SystemTime,
    /// Accept a version older than the newest this node ran (the operator's explicit call).
    pub allow_downgrade: bool,
}

impl ImportOptions {
    pub fn new(
        policy: &Path,
        onnxruntime: &Path,
        hardware: inference::Hardware,
        now: SystemTime,
    ) -> Self {
        Self {
            policy: policy.to_owned(),
            onnxruntime: onnxruntime.to_owned(),
            hardware,
            now,
            allow_downgrade: false,
        }
    }
}

/// The store's lock, held while it lives.
#[derive(Debug)]
struct StoreLock {
    _file: File,
}

/// A `.staging-*` directory, locked while its import runs so that the clean-up of
/// abandoned ones never touches it; removed when dropped unless installed.
#[derive(Debug)]
struct Staging {
    dir: Option<tempfile::TempDir>,
    _lock: File,
}

impl Staging {
    fn create(root: &Path) -> Result<Self, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(root)
            .map_err(BundleStore::io(root))?;
        let lock = File::open(dir.path()).map_err(BundleStore::io(dir.path()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| StoreError::Io {
                path: dir.path().to_owned(),
                source: e.into(),
            },
        )?;
        Ok(Self {
            dir: Some(dir),
            _lock: lock,
        })
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("staging directory").path()
    }

    /// Renames the staged bundle to `target`; it is no longer removed on drop.
    fn install(mut self, target: &Path) -> std::io::Result<()> {
        let staged = self.dir.take().expect("staging directory").keep();
        std::fs::rename(&staged, target)
    }

    /// Whether an import still holds the staging directory at `path`.
    fn in_use(path: &Path) -> bool {
        let Ok(dir) = File::open(path) else {
            return false;
        };
        rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err()
    }
}

/// Which bundles are active and previous, per model, by digest (hex, without `sha256:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Current {
    /// Per model name: its active bundle and the one before it.
    pub models: BTreeMap<String, ModelBundles>,
    /// The bundle activated last, of any model (what heartbeats call the node's active
    /// bundle, for controllers that track one bundle per node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    /// Per model name, the newest version this node ever activated: the floor of the
    /// anti-rollback rule (see [`BundleStore::import_file`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub newest: BTreeMap<String, String>,
}

/// One model's active bundle and the previous one, kept for rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelBundles {
    pub active: Option<String>,
    pub previous: Option<String>,
}

/// `current.json` as written by this version, or by one that served one model
/// (`{"active", "previous"}` at the top).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CurrentFile {
    models: BTreeMap<String, ModelBundles>,
    last: Option<String>,
    newest: BTreeMap<String, String>,
    active: Option<String>,
    previous: Option<String>,
}

impl Current {
    /// Whether `digest` is the active bundle of its model.
    pub fn is_active(&self, digest: &str) -> bool {
        self.models
            .values()
            .any(|m| m.active.as_deref() == Some(digest))
    }

    /// Every model's active bundle: (model, digest).
    pub fn active(&self) -> impl Iterator<Item = (&str, &str)> {
        self.models
            .iter()
            .filter_map(|(name, m)| Some((name.as_str(), m.active.as_deref()?)))
    }

    /// Whether `digest` is some model's active or previous bundle.
    fn keeps(&self, digest: &str) -> bool {
        self.models
            .values()
            .any(|m| m.active.as_deref() == Some(digest) || m.previous.as_deref() == Some(digest))
    }
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
        let file: CurrentFile = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Current::default()),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        let mut current = Current {
            models: file.models,
            last: file.last,
            newest: file.newest,
        };
        // Written by a version that served one model: its bundles are that model's.
        if let Some(active) = file.active {
            let name = self.manifest(&active)?.name;
            current.last.get_or_insert_with(|| active.clone());
            current.models.entry(name).or_insert(ModelBundles {
                active: Some(active),
                previous: file.previous,
            });
        }
        Ok(current)
    }

    /// The directory of an installed bundle.
    pub fn bundle_dir(&self, digest: &str) -> PathBuf {
        self.root.join(digest)
    }

    /// The manifest of an installed bundle, re-checked from its stored bytes: they must be
    /// the manifest whose digest names the directory (the one that was verified).
    pub fn manifest(&self, digest: &str) -> Result<Manifest, StoreError> {
        let path = self.bundle_dir(digest).join("manifest.json");
        let bytes = std::fs::read(&path).map_err(Self::io(&path))?;
        let id = BundleId::of_manifest(&bytes);
        if digest_of(id.as_str()) != digest {
            return Err(StoreError::Corrupt {
                path,
                message: format!(
                    "its digest is {id}, not the sha256:{digest} its directory names; the stored bundle was altered: remove the directory and import the bundle again"
                ),
            });
        }
        Manifest::parse(&bytes).map_err(|e| StoreError::Corrupt {
            path,
            message: e.to_string(),
        })
    }

    /// Verifies the bundle file against `policy`, runs its golden vectors, installs it and
    /// makes it active. Nothing changes unless every step passes. The file is opened once
    /// (a regular file only) and what is stored is exactly what that one read verified.
    pub fn import(
        &self,
        bundle: &Path,
        policy: &Path,
        onnxruntime: &Path,
        hardware: inference::Hardware,
        now: SystemTime,
    ) -> Result<Imported, StoreError> {
        let file = super::open_regular(bundle)?;
        self.import_file(
            file,
            &ImportOptions::new(policy, onnxruntime, hardware, now),
        )
    }

    /// [`Self::import`] of an already opened bundle file.
    pub fn import_file(&self, file: File, options: &ImportOptions) -> Result<Imported, StoreError> {
        let policy = load_policy(&options.policy)?;
        std::fs::create_dir_all(&self.root).map_err(Self::io(&self.root))?;
        let staging = {
            let _shared = self.lock_with(rustix::fs::FlockOperation::LockShared)?;
            Staging::create(&self.root)?
        };
        let mut sink = DirectorySink::new(&staging.path().join("files"));
        let outcome = outcome::verify_bundle(
            BufReader::with_capacity(1 << 20, file),
            &policy,
            options.now,
            &mut sink,
        );
        let (Some(manifest), Some(signed)) = (
            outcome.manifest.clone().filter(|_| outcome.ok),
            outcome.signed.clone(),
        ) else {
            return Ok(Imported {
                outcome,
                golden: Vec::new(),
                activated: None,
            });
        };
        let digest = digest_of(outcome.id.as_deref().unwrap_or_default()).to_owned();
        // Refused before the model is even loaded: a downgrade is a policy decision.
        self.check_version(&digest, &manifest, options.allow_downgrade)?;
        inference::init(&options.onnxruntime)?;
        let mut model = inference::Model::load(
            &staging.path().join("files").join(&manifest.model.entry),
            &manifest.model,
            &manifest.requirements,
            options.hardware,
            inference::Threads::default(),
        )?;
        let vectors = inference::Golden::read_all(&manifest.golden, &staging.path().join("files"))?;
        let golden = inference::check_golden(&mut model, &vectors);
        drop(model);
        if !golden.iter().all(|g| g.passed) {
            return Ok(Imported {
                outcome,
                golden,
                activated: None,
            });
        }
        let write = |name: &str, bytes: &[u8]| -> Result<(), StoreError> {
            let path = staging.path().join(name);
            let mut f = File::create(&path).map_err(Self::io(&path))?;
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .map_err(Self::io(&path))
        };
        write("manifest.json", &signed.manifest_bytes)?;
        write(
            "signatures.json",
            &serde_json::to_vec_pretty(&serde_json::json!({ "signatures": signed.signatures }))
                .expect("signatures serialize"),
        )?;
        let lock = self.lock()?;
        // Checked again under the lock: another import may have raised the floor meanwhile.
        self.check_version(&digest, &manifest, options.allow_downgrade)?;
        let target = self.bundle_dir(&digest);
        if target.exists() {
            tracing::info!(bundle = %digest, "bundle already installed; activating the installed copy");
            drop(staging);
        } else {
            staging.install(&target).map_err(Self::io(&target))?;
        }
        self.activate_locked(&lock, &digest, &manifest)?;
        drop(lock);
        self.remove_abandoned_staging();
        Ok(Imported {
            outcome,
            golden,
            activated: Some(digest),
        })
    }

    /// The anti-rollback rule: a bundle older (by semantic-version precedence) than the
    /// newest version of its model this node ever activated is refused, unless it is this
    /// node's own previous (or active) bundle — the controller's automatic rollback and
    /// `gantry-agent rollback` go back one step, never further — or the operator at the
    /// node allowed it explicitly (`gantry-agent import --allow-downgrade`).
    fn check_version(
        &self,
        digest: &str,
        manifest: &Manifest,
        allow_downgrade: bool,
    ) -> Result<(), StoreError> {
        let current = self.current()?;
        let Some(newest) = current.newest.get(&manifest.name) else {
            return Ok(());
        };
        let older = manifest::version_precedence(&manifest.version, newest)
            .is_some_and(|o| o == std::cmp::Ordering::Less);
        let own = current.models.get(&manifest.name).is_some_and(|m| {
            m.previous.as_deref() == Some(digest) || m.active.as_deref() == Some(digest)
        });
        if !older || own {
            return Ok(());
        }
        if allow_downgrade {
            tracing::warn!(model = %manifest.name, version = %manifest.version, newest = %newest, "downgrade allowed by the operator");
            return Ok(());
        }
        Err(StoreError::Downgrade {
            model: manifest.name.clone(),
            version: manifest.version.clone(),
            newest: newest.clone(),
        })
    }

    /// Makes an installed bundle active; the active one becomes previous.
    pub fn activate(&self, digest: &str) -> Result<(), StoreError> {
        let lock = self.lock()?;
        let manifest = self.manifest(digest)?;
        self.activate_locked(&lock, digest, &manifest)
    }

    fn activate_locked(
        &self,
        _lock: &StoreLock,
        digest: &str,
        manifest: &Manifest,
    ) -> Result<(), StoreError> {
        let mut current = self.current()?;
        let newer = current.newest.get(&manifest.name).is_none_or(|newest| {
            manifest::version_precedence(&manifest.version, newest)
                .is_some_and(|o| o == std::cmp::Ordering::Greater)
        });
        if newer {
            current
                .newest
                .insert(manifest.name.clone(), manifest.version.clone());
        }
        let model = current.models.entry(manifest.name.clone()).or_default();
        if model.active.as_deref() != Some(digest) {
            model.previous = model.active.take();
            model.active = Some(digest.to_owned());
        }
        current.last = Some(digest.to_owned());
        self.write_current(&current)?;
        self.collect_garbage(&current);
        Ok(())
    }

    /// Swaps a model's active and previous bundles; `model` may be left out when the
    /// node serves one model. Returns the model rolled back and its bundles now.
    pub fn rollback(&self, model: Option<&str>) -> Result<(String, ModelBundles), StoreError> {
        let _lock = self.lock()?;
        let mut current = self.current()?;
        let name = if let Some(name) = model {
            name.to_owned()
        } else {
            let mut names = current.models.keys();
            match (names.next(), names.next()) {
                (Some(only), None) => only.clone(),
                (None, _) => return Err(StoreError::NothingToRollBack),
                (Some(_), Some(_)) => {
                    return Err(StoreError::WhichModel {
                        models: current
                            .models
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        };
        let Some(bundles) = current.models.get_mut(&name) else {
            return Err(StoreError::UnknownModel {
                model: name,
                models: current
                    .models
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let Some(previous) = bundles.previous.take() else {
            return Err(StoreError::NothingToRollBack);
        };
        bundles.previous = bundles.active.take();
        bundles.active = Some(previous.clone());
        let rolled = bundles.clone();
        current.last = Some(previous);
        self.write_current(&current)?;
        Ok((name, rolled))
    }

    /// Serialises every change of `current.json` and of the installed bundles between
    /// this process and any other (the daemon's delivery, a CLI `import` or `rollback`).
    fn lock(&self) -> Result<StoreLock, StoreError> {
        self.lock_with(rustix::fs::FlockOperation::LockExclusive)
    }

    fn lock_with(&self, operation: rustix::fs::FlockOperation) -> Result<StoreLock, StoreError> {
        std::fs::create_dir_all(&self.root).map_err(Self::io(&self.root))?;
        let path = self.root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Self::io(&path))?;
        rustix::fs::flock(&file, operation).map_err(|e| StoreError::Io {
            path,
            source: e.into(),
        })?;
        Ok(StoreLock { _file: file })
    }

    /// Removes `.staging-*` directories left by imports that were killed: any one whose
    /// lock nobody holds. Run at start and after every import.
    pub fn remove_abandoned_staging(&self) {
        // Exclusive: no import is between creating its staging directory and locking it.
        let Ok(_lock) = self.lock() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(".staging-") {
                continue;
            }
            let path = entry.path();
            if Staging::in_use(&path) {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed an interrupted import's staging directory");
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an interrupted import's staging directory");
                }
            }
        }
    }

    fn write_current(&self, current: &Current) -> Result<(), StoreError> {
        let path = self.current_path();
        let bytes = serde_json::to_vec_pretty(current).expect("current serializes");
        gantry_net::atomic::write_bytes(&path, 0o644, &bytes).map_err(Self::io(&path))
    }

    /// Removes installed bundles other than the active and previous ones.
    fn collect_garbage(&self, current: &Current) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let keep = name.starts_with('.') || name == "current.json" || current.keeps(&name);
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
