//! Bundles on the node: checking a bundle file against the node's own trust policy, and
//! (with `--golden`) running its golden vectors in this node's ONNX Runtime.

pub mod policy_update;
pub mod store;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_shared::bundle::PayloadSink;
use gantry_shared::bundle::manifest::FileEntry;
use gantry_shared::bundle::outcome::{self, VerifyOutcome};
use gantry_shared::bundle::policy::SignedPolicy;

/// Why a bundle could not be checked at all (as opposed to failing the check).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Trust(#[from] gantry_net::trust::TrustError),
    #[error("cannot unpack the bundle into a scratch directory")]
    Scratch(#[source] std::io::Error),
    #[error(transparent)]
    Inference(#[from] crate::inference::InferenceError),
}

/// Opens a bundle (or policy update) for reading: a regular file only.
pub fn open_regular(path: &Path) -> Result<File, VerifyError> {
    Ok(gantry_net::trust::open_bundle(path)?)
}

/// Loads the node's trust policy, checking its own signatures.
pub fn load_policy(path: &Path) -> Result<SignedPolicy, VerifyError> {
    Ok(gantry_net::trust::load_policy(
        path,
        gantry_net::trust::Owner::Node,
    )?)
}

/// Verifies the bundle file at `bundle` against the policy file at `policy`, at `now`.
/// Nothing is written anywhere: the payload is hashed and discarded.
pub fn verify_file(
    bundle: &Path,
    policy: &Path,
    now: SystemTime,
) -> Result<VerifyOutcome, VerifyError> {
    let policy = load_policy(policy)?;
    Ok(gantry_net::trust::verify_file(bundle, &policy, now)?)
}

/// Writes a payload under a scratch directory. Paths reach it already checked by the
/// reader (relative, normalized, listed in the signed manifest), so nothing lands
/// outside `root`; files count only once `read_payload` returned `Ok`.
#[derive(Debug)]
pub struct DirectorySink {
    root: PathBuf,
    current: Option<std::io::BufWriter<File>>,
}

impl DirectorySink {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            current: None,
        }
    }
}

impl PayloadSink for DirectorySink {
    fn begin(&mut self, file: &FileEntry) -> std::io::Result<()> {
        let path = self.root.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        self.current = Some(std::io::BufWriter::with_capacity(1 << 20, out));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        match &mut self.current {
            Some(out) => out.write_all(data),
            None => Err(std::io::Error::other("write outside a file")),
        }
    }

    fn finish(&mut self, _file: &FileEntry) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(mut out) = self.current.take() {
            out.flush()?;
        }
        Ok(())
    }
}

/// Verifies the bundle, then runs its golden vectors on ONNX Runtime loaded from
/// `onnxruntime`. The payload is unpacked in a scratch directory removed afterwards.
pub fn verify_with_golden(
    bundle: &Path,
    policy: &Path,
    onnxruntime: &Path,
    now: SystemTime,
) -> Result<(VerifyOutcome, Vec<crate::inference::GoldenResult>), VerifyError> {
    let policy = load_policy(policy)?;
    let file = open_regular(bundle)?;
    let scratch = tempfile::Builder::new()
        .prefix("gantry-verify-")
        .tempdir()
        .map_err(VerifyError::Scratch)?;
    let mut sink = DirectorySink::new(scratch.path());
    let outcome = outcome::verify_bundle(
        BufReader::with_capacity(1 << 20, file),
        &policy,
        now,
        &mut sink,
    );
    let Some(manifest) = outcome.manifest.clone().filter(|_| outcome.ok) else {
        return Ok((outcome, Vec::new()));
    };
    crate::inference::init(onnxruntime)?;
    let mut model = crate::inference::Model::load(
        &scratch.path().join(&manifest.model.entry),
        &manifest.model,
        &manifest.requirements,
        crate::inference::Hardware::default(),
        crate::inference::Threads::default(),
    )?;
    let golden = crate::inference::Golden::read_all(&manifest.golden, scratch.path())?;
    let results = crate::inference::check_golden(&mut model, &golden);
    Ok((outcome, results))
}
