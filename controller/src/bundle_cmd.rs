//! `gantry bundle create | sign | verify | inspect`: building, signing and checking
//! bundle files on disk.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_shared::bundle::manifest::{
    ExecutionProvider, FileEntry, GoldenValues, GoldenVector, Manifest, ManifestError, ModelEntry,
    Monitoring, ParamValue, Provenance, QualitySpec, Requirements, SCHEMA_VERSION,
};
use gantry_shared::bundle::onnx::{self, OnnxError};
use gantry_shared::bundle::outcome::{self, VerifyOutcome};
use gantry_shared::bundle::policy::{PolicyError, SignedPolicy};
use gantry_shared::bundle::{self, BundleError, BundleId, BundleReader, Discard, signing};
use gantry_shared::monitoring::drift::Metric;
use gantry_shared::monitoring::profile::{Layout, Profile, Values};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::keys::{self, KeyFileError};
use gantry_net::atomic;
use gantry_net::trust;

/// Why a bundle command failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleCmdError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the model signature from {path}")]
    Model {
        path: PathBuf,
        #[source]
        source: OnnxError,
    },
    #[error("golden vectors in {path} are not valid: {message}")]
    Golden { path: PathBuf, message: String },
    #[error("provenance in {path} is not valid: {message}")]
    Provenance { path: PathBuf, message: String },
    #[error("the bundle would not be valid")]
    Manifest(#[source] ManifestError),
    #[error("bundle {path} is not valid")]
    Bundle {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error(transparent)]
    Key(#[from] KeyFileError),
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    #[error("trust policy {path} is not usable")]
    Policy {
        path: PathBuf,
        #[source]
        source: PolicyError,
    },
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error("{0}")]
    Usage(String),
}

/// What `bundle create` needs.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub model: PathBuf,
    pub name: String,
    pub version: String,
    /// Extra payload files: (local path, path inside the bundle).
    pub files: Vec<(PathBuf, String)>,
    pub golden: Option<PathBuf>,
    pub provenance_file: Option<PathBuf>,
    pub source_revision: Option<String>,
    pub training_data_digest: Option<String>,
    pub params: Vec<(String, String)>,
    pub metrics: Vec<(String, f64)>,
    pub min_gpu_memory_bytes: u64,
    pub execution_providers: Vec<ExecutionProvider>,
    /// Sessions and threads per session the node should give the model; 0 leaves it to the node.
    pub instances: u32,
    pub intra_op_threads: u32,
    pub inter_op_threads: u32,
    /// Dynamic batching, for a model with a batch dimension.
    pub dynamic_batching: Option<gantry_shared::bundle::manifest::DynamicBatching>,
    /// Reference data to profile for drift monitoring, and when drift counts.
    pub reference_data: Option<PathBuf>,
    pub drift_metric: Option<Metric>,
    pub drift_threshold: Option<f64>,
    /// What the model predicts, and from which output (default the first).
    pub task: Option<gantry_shared::bundle::manifest::Task>,
    pub prediction_output: Option<String>,
    pub out: PathBuf,
}

/// Where the reference profile goes in a bundle.
pub const REFERENCE_PROFILE_PATH: &str = "monitoring/reference-profile.json";

/// Size and SHA-256 of a file, streamed.
fn digest_file(path: &Path) -> Result<(u64, String), BundleCmdError> {
    let read_err = |source| BundleCmdError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = gantry_net::files::open_regular(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, signing::to_hex(&hasher.finalize())))
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Golden tensors larger than this go into payload files; smaller ones stay inline in
/// the manifest, where agents of every version read them.
pub const GOLDEN_INLINE_MAX: usize = 4096;

/// Moves every golden tensor of more than [`GOLDEN_INLINE_MAX`] bytes out of the manifest
/// into a payload file of its raw little-endian elements (`golden/<vector>/<side>/<n>.bin`,
/// signed like every file through its digest); returns those files by path.
fn move_golden_to_files(
    golden: &mut [GoldenVector],
    files: &[FileEntry],
) -> Result<BTreeMap<String, Vec<u8>>, BundleCmdError> {
    let mut moved = BTreeMap::new();
    for (v, vector) in golden.iter_mut().enumerate() {
        for (side, tensors) in [
            ("inputs", &mut vector.inputs),
            ("outputs", &mut vector.outputs),
        ] {
            for (n, tensor) in tensors.values_mut().enumerate() {
                let Some(data) = tensor
                    .inline()
                    .filter(|d| d.binary_len() > GOLDEN_INLINE_MAX)
                else {
                    continue;
                };
                let path = format!("golden/{v}/{side}/{n}.bin");
                if files.iter().any(|f| f.path == path || f.path == "golden") {
                    return Err(BundleCmdError::Usage(format!(
                        "the payload path {path:?} is taken by a --file; golden vectors are stored there"
                    )));
                }
                let mut bytes = Vec::with_capacity(data.binary_len());
                data.write_le_bytes(&mut bytes);
                tensor.values = GoldenValues::File(path.clone());
                moved.insert(path, bytes);
            }
        }
    }
    Ok(moved)
}

/// Builds and writes an unsigned bundle; returns its identity.
pub fn create(req: &CreateRequest) -> Result<BundleId, BundleCmdError> {
    let model_name = req
        .model
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| BundleCmdError::Usage(format!("{} is not a file", req.model.display())))?;
    let model_file = File::open(&req.model).map_err(|source| BundleCmdError::Read {
        path: req.model.clone(),
        source,
    })?;
    let signature = onnx::read_signature(BufReader::new(model_file)).map_err(|source| {
        BundleCmdError::Model {
            path: req.model.clone(),
            source,
        }
    })?;

    let mut sources: Vec<(PathBuf, String)> = vec![(req.model.clone(), model_name.clone())];
    sources.extend(req.files.iter().cloned());
    let mut files = Vec::with_capacity(sources.len());
    for (local, inside) in &sources {
        let (size, sha256) = digest_file(local)?;
        files.push(FileEntry {
            path: inside.clone(),
            size,
            sha256,
        });
    }

    let mut golden: Vec<GoldenVector> = match &req.golden {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read(path).map_err(|source| BundleCmdError::Read {
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&text).map_err(|e| BundleCmdError::Golden {
                path: path.clone(),
                message: e.to_string(),
            })?
        }
    };
    let mut provenance: Provenance = match &req.provenance_file {
        None => Provenance::default(),
        Some(path) => {
            let text = std::fs::read(path).map_err(|source| BundleCmdError::Read {
                path: path.clone(),
                source,
            })?;
            serde_json::from_slice(&text).map_err(|e| BundleCmdError::Provenance {
                path: path.clone(),
                message: e.to_string(),
            })?
        }
    };
    if let Some(rev) = &req.source_revision {
        provenance.source_revision = Some(rev.clone());
    }
    if let Some(digest) = &req.training_data_digest {
        provenance.training_data_digest = Some(digest.clone());
    }
    for (key, value) in &req.params {
        provenance
            .hyperparameters
            .insert(key.clone(), ParamValue::parse(value));
    }
    for (key, value) in &req.metrics {
        provenance.metrics.insert(key.clone(), *value);
    }

    let mut golden_files = move_golden_to_files(&mut golden, &files)?;
    let monitoring = match &req.reference_data {
        None => None,
        Some(path) => {
            if files
                .iter()
                .any(|f| f.path == REFERENCE_PROFILE_PATH || f.path == "monitoring")
            {
                return Err(BundleCmdError::Usage(format!(
                    "the payload path {REFERENCE_PROFILE_PATH:?} is taken by a --file; the reference profile is stored there"
                )));
            }
            let profile = crate::reference::profile(path, &signature)?;
            golden_files.insert(REFERENCE_PROFILE_PATH.to_owned(), profile.to_vec());
            let drift_metric = req.drift_metric.unwrap_or_default();
            Some(Monitoring {
                reference_profile: REFERENCE_PROFILE_PATH.to_owned(),
                drift_metric,
                drift_threshold: req
                    .drift_threshold
                    .unwrap_or_else(|| drift_metric.default_threshold()),
            })
        }
    };
    let quality = req.task.map(|task| QualitySpec {
        task,
        output: req
            .prediction_output
            .clone()
            .or_else(|| signature.outputs.first().map(|o| o.name.clone()))
            .unwrap_or_default(),
    });
    for (path, bytes) in &golden_files {
        files.push(FileEntry {
            path: path.clone(),
            size: bytes.len() as u64,
            sha256: signing::to_hex(&Sha256::digest(bytes)),
        });
    }
    let manifest = Manifest {
        schema: SCHEMA_VERSION,
        name: req.name.clone(),
        version: req.version.clone(),
        created_at: now_rfc3339(),
        files,
        model: ModelEntry {
            format: "onnx".to_owned(),
            entry: model_name,
            inputs: signature.inputs,
            outputs: signature.outputs,
        },
        golden,
        provenance,
        requirements: Requirements {
            min_gpu_memory_bytes: req.min_gpu_memory_bytes,
            execution_providers: req.execution_providers.clone(),
            instances: req.instances,
            intra_op_threads: req.intra_op_threads,
            inter_op_threads: req.inter_op_threads,
            dynamic_batching: req.dynamic_batching.clone(),
        },
        monitoring,
        quality,
    };
    let manifest_bytes = manifest.to_bytes().map_err(BundleCmdError::Manifest)?;
    let by_path: BTreeMap<&str, &Path> = sources
        .iter()
        .map(|(local, inside)| (inside.as_str(), local.as_path()))
        .collect();
    atomic::write_atomically(&req.out, 0o644, |out| {
        bundle::write(out, &manifest_bytes, &[], &mut |entry| {
            if let Some(bytes) = golden_files.get(&entry.path) {
                return Ok(Box::new(io::Cursor::new(bytes.clone())));
            }
            let local = by_path[entry.path.as_str()];
            Ok(Box::new(BufReader::new(File::open(local)?)))
        })
        .map(drop)
        .map_err(io::Error::other)
    })
    .map_err(|source| BundleCmdError::Write {
        path: req.out.clone(),
        source,
    })?;
    Ok(BundleId::of_manifest(&manifest_bytes))
}

fn open_bundle(path: &Path) -> Result<BundleReader<BufReader<File>>, BundleCmdError> {
    let file = gantry_net::files::open_regular(path).map_err(|source| BundleCmdError::Read {
        path: path.to_owned(),
        source,
    })?;
    BundleReader::open(BufReader::with_capacity(1 << 20, file)).map_err(|source| {
        BundleCmdError::Bundle {
            path: path.to_owned(),
            source,
        }
    })
}

/// What signing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignOutcome {
    Added { key_id: String, signatures: usize },
    AlreadySigned { key_id: String },
}

/// Adds a signature by the key at `key_path` to the bundle at `path` (in place, or to
/// `out`). The payload is verified while it is copied.
pub fn sign(
    path: &Path,
    key_path: &Path,
    out: Option<&Path>,
) -> Result<SignOutcome, BundleCmdError> {
    let key = keys::load_private(key_path)?;
    let key_id = signing::key_id(&key.verifying_key());
    let reader = open_bundle(path)?;
    if reader.signatures().iter().any(|s| s.key_id == key_id) && out.is_none() {
        return Ok(SignOutcome::AlreadySigned { key_id });
    }
    let mut signatures = reader.signatures().to_vec();
    signatures.retain(|s| s.key_id != key_id);
    signatures.push(bundle::sign_manifest(&key, reader.manifest_bytes()));
    let count = signatures.len();
    let target = out.unwrap_or(path);
    atomic::write_atomically(target, 0o644, |w| {
        bundle::rewrite_signatures(reader, &signatures, w)
            .map(drop)
            .map_err(io::Error::other)
    })
    .map_err(|source| match source.downcast::<BundleError>() {
        Ok(source) => BundleCmdError::Bundle {
            path: path.to_owned(),
            source,
        },
        Err(source) => BundleCmdError::Write {
            path: target.to_owned(),
            source,
        },
    })?;
    Ok(SignOutcome::Added {
        key_id,
        signatures: count,
    })
}

/// Reads a trust policy file, checking its own signatures.
pub fn load_policy(path: &Path) -> Result<SignedPolicy, BundleCmdError> {
    Ok(trust::load_policy(path, trust::Owner::Controller)?)
}

/// Verifies the bundle at `path` against the policy at `trust`, at `now`.
pub fn verify(
    path: &Path,
    policy: &Path,
    now: SystemTime,
) -> Result<VerifyOutcome, BundleCmdError> {
    let policy = load_policy(policy)?;
    Ok(trust::verify_file(path, &policy, now)?)
}

/// `bundle inspect --json`: the manifest as written, the identity and the signatures.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub id: String,
    pub verified: bool,
    pub manifest: Manifest,
    pub signatures: Vec<signing::Signature>,
    /// The drift reference, read from its payload file (digest checked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_profile: Option<Profile>,
}

/// Keeps one payload file's bytes.
struct Keep<'a> {
    path: &'a str,
    bytes: Vec<u8>,
    keeping: bool,
    complete: bool,
}

impl bundle::PayloadSink for Keep<'_> {
    fn begin(&mut self, file: &FileEntry) -> io::Result<()> {
        self.keeping = file.path == self.path;
        if self.keeping && file.size > gantry_shared::monitoring::profile::MAX_PROFILE_BYTES as u64
        {
            return Err(io::Error::other(format!(
                "{} is {} bytes",
                file.path, file.size
            )));
        }
        Ok(())
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.keeping {
            self.bytes.extend_from_slice(data);
        }
        Ok(())
    }
    fn finish(&mut self, _: &FileEntry) -> io::Result<()> {
        self.complete |= self.keeping;
        self.keeping = false;
        Ok(())
    }
}

/// Reads a bundle's manifest and signatures without verifying any signature, and its
/// reference profile (checked against the manifest's digest) when it has one.
pub fn inspect(path: &Path) -> Result<Inspection, BundleCmdError> {
    let reader = open_bundle(path)?;
    let mut inspection = Inspection {
        id: reader.id().to_string(),
        verified: false,
        manifest: reader.manifest().clone(),
        signatures: reader.signatures().to_vec(),
        reference_profile: None,
    };
    if let Some(m) = &inspection.manifest.monitoring {
        let mut keep = Keep {
            path: &m.reference_profile,
            bytes: Vec::new(),
            keeping: false,
            complete: false,
        };
        let bundle_err = |source| BundleCmdError::Bundle {
            path: path.to_owned(),
            source,
        };
        reader.read_payload(&mut keep).map_err(bundle_err)?;
        let profile = Profile::from_slice(&keep.bytes).map_err(|e| {
            BundleCmdError::Usage(format!(
                "bundle {}: its reference profile {} is not valid: {e}",
                path.display(),
                m.reference_profile
            ))
        })?;
        inspection.reference_profile = Some(profile);
    }
    Ok(inspection)
}

fn dims(shape: &[gantry_shared::bundle::manifest::Dim]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|d| match d {
            gantry_shared::bundle::manifest::Dim::Fixed(n) => n.to_string(),
            gantry_shared::bundle::manifest::Dim::Named(name) => name.clone(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// The readable form of an inspection.
pub fn render_inspection(i: &Inspection) -> String {
    use std::fmt::Write as _;
    let m = &i.manifest;
    let mut out = String::new();
    let _ = writeln!(out, "bundle      {} {}", m.name, m.version);
    let _ = writeln!(out, "id          {}", i.id);
    let _ = writeln!(out, "created     {}", m.created_at);
    let _ = writeln!(out, "model       {} ({})", m.model.entry, m.model.format);
    for t in &m.model.inputs {
        let _ = writeln!(
            out,
            "  input     {} {:?} {}",
            t.name,
            t.dtype,
            dims(&t.shape)
        );
    }
    for t in &m.model.outputs {
        let _ = writeln!(
            out,
            "  output    {} {:?} {}",
            t.name,
            t.dtype,
            dims(&t.shape)
        );
    }
    let _ = writeln!(out, "files       {}", m.files.len());
    for f in &m.files {
        let _ = writeln!(out, "  {:>12}  {}  {}", f.size, &f.sha256[..16], f.path);
    }
    let _ = writeln!(
        out,
        "golden      {} vector(s){}",
        m.golden.len(),
        if m.golden.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                m.golden
                    .iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let p = &m.provenance;
    if let Some(rev) = &p.source_revision {
        let _ = writeln!(out, "source      {rev}");
    }
    if let Some(d) = &p.training_data_digest {
        let _ = writeln!(out, "data        {d}");
    }
    for (k, v) in &p.hyperparameters {
        let _ = writeln!(out, "  param     {k} = {v}");
    }
    for (k, v) in &p.metrics {
        let _ = writeln!(out, "  metric    {k} = {v}");
    }
    let r = &m.requirements;
    if r.min_gpu_memory_bytes > 0 || !r.execution_providers.is_empty() {
        let _ = writeln!(
            out,
            "requires    {} bytes of GPU memory, providers {:?}",
            r.min_gpu_memory_bytes, r.execution_providers
        );
    }
    if let (Some(m), Some(profile)) = (&m.monitoring, &i.reference_profile) {
        render_profile(&mut out, m, profile);
    }
    if let Some(q) = &m.quality {
        let _ = writeln!(
            out,
            "quality     {} read from output {:?}; nodes keep each answer with an id for feedback",
            q.task.as_str(),
            q.output
        );
    }
    let _ = writeln!(out, "signatures  {}", i.signatures.len());
    for s in &i.signatures {
        let _ = writeln!(out, "  key {}", s.key_id);
    }
    out.push_str("(not verified: run `gantry bundle verify --trust POLICY` to check digests and signatures)\n");
    out
}

/// The reference profile's lines of `bundle inspect`.
fn render_profile(out: &mut String, m: &Monitoring, profile: &Profile) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "monitoring  drift against {} rows of reference data ({}); degraded above {} {}",
        profile.rows,
        m.reference_profile,
        m.drift_metric.as_str(),
        m.drift_threshold
    );
    for t in &profile.tensors {
        let layout = match t.layout {
            Layout::Whole => "one feature".to_owned(),
            Layout::Columns { width } => format!("{width} columns"),
            Layout::Channels { channels } => format!("{channels} channels, by their means"),
            Layout::RowMean => "by row means".to_owned(),
        };
        let _ = writeln!(out, "  {} {} ({layout})", t.side.as_str(), t.name);
        for f in &t.features {
            let missing = if f.missing > 0 {
                format!(", {} missing", f.missing)
            } else {
                String::new()
            };
            match &f.values {
                Values::Numeric(n) => {
                    let q = |r: f64| {
                        n.sketch
                            .quantile(r)
                            .map_or("-".to_owned(), |v| format!("{v:.4}"))
                    };
                    let _ = writeln!(
                        out,
                        "    {:<24} numeric      n={}{missing}  min {:.4}  p50 {}  p95 {}  max {:.4}  mean {}",
                        f.name,
                        f.count,
                        n.expected_min,
                        q(0.5),
                        q(0.95),
                        n.expected_max,
                        n.mean(f.count - f.missing)
                            .map_or("-".to_owned(), |v| format!("{v:.4}")),
                    );
                }
                Values::Categorical(c) => {
                    let top: Vec<String> = c
                        .labels
                        .iter()
                        .zip(&c.counts)
                        .take(5)
                        .map(|(l, n)| format!("{l:?} {n}"))
                        .collect();
                    let more = match (c.labels.len().saturating_sub(5), c.other) {
                        (0, 0) => String::new(),
                        (labels, 0) => format!(" (+{labels} labels)"),
                        (labels, other) => format!(" (+{labels} labels, {other} rarer values)"),
                    };
                    let _ = writeln!(
                        out,
                        "    {:<24} categorical  n={}{missing}  {}{more}",
                        f.name,
                        f.count,
                        top.join(", ")
                    );
                }
            }
        }
    }
}

/// What `bundle export` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub id: String,
    pub name: String,
    pub version: String,
    pub size: u64,
    /// The keys whose valid signatures it carries under the controller's policy.
    pub signers: Vec<String>,
}

/// Reads through to `copy` everything it reads.
struct Tee<R, W> {
    inner: R,
    copy: W,
}

impl<R: io::Read, W: io::Write> io::Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// What `bundle export` needs to know of a held bundle, read from the bundle file itself.
struct Held {
    id: String,
}

/// The bundle file the controller in `bundles` holds for `reference` (`sha256:<id>`, or
/// `NAME@VERSION`: the latest written when several carry it). Read from the files, not
/// the controller's store, so it works while the controller runs.
fn find_held(bundles: &Path, reference: &str) -> Result<(Held, PathBuf), BundleCmdError> {
    if let Some(hex) = reference.strip_prefix("sha256:") {
        let path = bundles.join(format!("{hex}.gbundle"));
        if gantry_shared::protocol::delivery::is_sha256_hex(hex) && path.is_file() {
            return Ok((
                Held {
                    id: reference.to_owned(),
                },
                path,
            ));
        }
        return Err(BundleCmdError::Usage(format!(
            "no bundle {reference} is held; `gantry bundle ls` lists them"
        )));
    }
    let Some((name, version)) = reference.split_once('@') else {
        return Err(BundleCmdError::Usage(format!(
            "{reference:?} names no bundle: write NAME@VERSION or sha256:<id>"
        )));
    };
    let entries = std::fs::read_dir(bundles).map_err(|source| BundleCmdError::Read {
        path: bundles.to_owned(),
        source,
    })?;
    let mut best: Option<(SystemTime, Held, PathBuf)> = None;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("gbundle") {
            continue;
        }
        let Ok(reader) = open_bundle(&path) else {
            continue;
        };
        let manifest = reader.manifest();
        if manifest.name != name || manifest.version != version {
            continue;
        }
        let written = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(at, _, _)| written >= *at) {
            let id = reader.id().to_string();
            best = Some((written, Held { id }, path));
        }
    }
    best.map(|(_, held, path)| (held, path)).ok_or_else(|| {
        BundleCmdError::Usage(format!(
            "no bundle {name}@{version} is held; push it first (`gantry bundle ls` lists them)"
        ))
    })
}

/// Writes the bundle `reference` (`NAME@VERSION` or `sha256:<id>`) that the controller in
/// `dir` holds to `out` for removable media. The bytes written are the bytes verified, in
/// one pass, against the controller's trust policy; a bundle that does not verify is not
/// written.
pub fn export(dir: &Path, reference: &str, out: &Path) -> Result<Exported, BundleCmdError> {
    let (info, source) = find_held(&dir.join("bundles"), reference)?;
    let trust = dir.join("trust.json");
    let policy = load_policy(&trust)?;
    let file = File::open(&source).map_err(|e| BundleCmdError::Read {
        path: source.clone(),
        source: e,
    })?;
    let verified = atomic::write_atomically(out, 0o644, |w| {
        let tee = Tee {
            inner: BufReader::with_capacity(1 << 20, file),
            copy: w,
        };
        let outcome = outcome::verify_bundle(tee, &policy, SystemTime::now(), &mut Discard);
        if outcome.ok && outcome.id.as_deref() == Some(info.id.as_str()) {
            Ok(outcome)
        } else {
            Err(io::Error::other(format!(
                "the controller's copy of {} does not verify against {}:\n{}",
                info.id,
                trust.display(),
                outcome.render_text()
            )))
        }
    })
    .map_err(|source| BundleCmdError::Write {
        path: out.to_owned(),
        source,
    })?;
    let size = std::fs::metadata(&source).map_or(0, |m| m.len());
    Ok(Exported {
        id: info.id,
        name: verified.name.clone().unwrap_or_default(),
        version: verified.version.clone().unwrap_or_default(),
        size,
        signers: verified
            .signatures
            .iter()
            .filter(|s| s.valid)
            .map(|s| s.key_name.clone().unwrap_or_else(|| s.key_id.clone()))
            .collect(),
    })
}
