//! The bundle manifest: what a bundle holds and claims, as signed bytes.
//!
//! The manifest is JSON. Its exact bytes are what signatures cover and what the bundle's
//! identity is computed from, so it is never re-serialized after signing: readers keep
//! the bytes they parsed. Parsing is strict — unknown fields are errors within a schema
//! version, and an unknown schema version is refused before anything else is read — so a
//! node never ignores a claim it does not understand.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::path::{PathError, check_relative_path};
pub use crate::tensor::DType;
use crate::tensor::{JsonValues, TensorData};

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Most files a bundle may hold.
pub const MAX_FILES: usize = 4096;

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is {size} bytes; at most {max} are accepted")]
    Oversized { size: u64, max: u64 },
    #[error("the manifest is not valid JSON for schema {SCHEMA_VERSION}: {message}")]
    Malformed { message: String },
    #[error(
        "the manifest has schema version {found}; this version of Gantry reads schema {SCHEMA_VERSION}"
    )]
    UnknownSchema { found: u64 },
    #[error("manifest field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
    #[error("manifest file entry {path:?} has an unsafe path")]
    UnsafePath {
        path: String,
        #[source]
        source: PathError,
    },
    #[error("manifest lists {path:?} more than once")]
    DuplicatePath { path: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A bundle manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    /// Bundle name: lowercase letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Semantic version, `MAJOR.MINOR.PATCH[-PRE][+BUILD]`.
    pub version: String,
    /// RFC 3339 time of creation.
    pub created_at: String,
    pub files: Vec<FileEntry>,
    pub model: ModelEntry,
    #[serde(default)]
    pub golden: Vec<GoldenVector>,
    #[serde(default)]
    pub provenance: Provenance,
    #[serde(default)]
    pub requirements: Requirements,
    /// Model monitoring: the reference profile drift is measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<Monitoring>,
    /// Production quality: what the model predicts, so ground-truth feedback can be
    /// joined with its answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualitySpec>,
}

/// What a served model's answers are judged as when feedback gives the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySpec {
    pub task: Task,
    /// The output the prediction is read from: for classification class scores
    /// (`[N, K]`, K ≥ 2), the probability of class 1 (`[N]` or `[N, 1]`), or predicted
    /// class labels (an integer tensor); for regression the predicted value.
    pub output: String,
}

/// The kind of prediction a model makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Classification,
    Regression,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Regression => "regression",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "classification" => Some(Self::Classification),
            "regression" => Some(Self::Regression),
            _ => None,
        }
    }
}

/// What a node measures the served model's drift against, and when drift counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// The payload file holding the reference profile
    /// ([`crate::monitoring::profile::Profile`], JSON).
    pub reference_profile: String,
    /// The statistic the threshold applies to.
    #[serde(default)]
    pub drift_metric: DriftMetric,
    /// A feature whose score passes this makes the model's health degraded.
    pub drift_threshold: f64,
}

/// The statistic a drift threshold applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMetric {
    #[default]
    Psi,
    Ks,
    Js,
}

impl DriftMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Psi => "psi",
            Self::Ks => "ks",
            Self::Js => "js",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "psi" => Some(Self::Psi),
            "ks" => Some(Self::Ks),
            "js" => Some(Self::Js),
            _ => None,
        }
    }

    /// A default threshold: PSI's "shifted", and comparable cut-offs for the others.
    pub fn default_threshold(self) -> f64 {
        match self {
            Self::Psi => 0.25,
            Self::Ks | Self::Js => 0.2,
        }
    }
}

/// One payload file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path inside the bundle's payload.
    pub path: String,
    pub size: u64,
    /// Lowercase hexadecimal SHA-256 of the contents.
    pub sha256: String,
}

/// The model the bundle serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Always `onnx` in schema 1.
    pub format: String,
    /// The payload file holding the model.
    pub entry: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Name, element type and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A symbolic size (`batch`), or `?` when the model leaves it unnamed.
    Named(String),
}

/// A test case: inputs, the outputs they must produce, and how close is close enough.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenVector {
    pub name: String,
    pub inputs: BTreeMap<String, GoldenTensor>,
    pub outputs: BTreeMap<String, GoldenTensor>,
    pub tolerance: Tolerance,
}

/// A tensor: element type, shape, and its elements row-major in that type.
///
/// JSON: `{"dtype": "float32", "shape": [1, 4], "data": [...]}`, read losslessly
/// ([`crate::tensor`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<u64>,
    pub data: TensorData,
}

impl Tensor {
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
}

/// A golden vector's tensor: its values inline, or in a payload file of the bundle
/// (raw little-endian elements, as the binary tensor extension carries them), which
/// keeps the manifest small whatever the tensor's size.
///
/// JSON: `{"dtype", "shape", "data": [...]}` or `{"dtype", "shape", "file": "golden/0/x.bin"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenTensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub values: GoldenValues,
}

/// Where a golden tensor's elements are.
#[derive(Debug, Clone, PartialEq)]
pub enum GoldenValues {
    Inline(TensorData),
    /// A payload file listed in the manifest's `files`.
    File(String),
}

impl GoldenTensor {
    /// Elements the shape holds (`None` when it overflows).
    pub fn elements(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }

    /// The elements, when they are inline.
    pub fn inline(&self) -> Option<&TensorData> {
        match &self.values {
            GoldenValues::Inline(data) => Some(data),
            GoldenValues::File(_) => None,
        }
    }

    /// The tensor, reading a file's bytes with `read` (given the payload path).
    pub fn resolve(
        &self,
        read: &mut dyn FnMut(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Tensor, String> {
        let data = match &self.values {
            GoldenValues::Inline(data) => data.clone(),
            GoldenValues::File(path) => {
                let bytes = read(path)?;
                TensorData::from_le_bytes(self.dtype, &bytes)
                    .map_err(|e| format!("golden file {path:?}: {e}"))?
            }
        };
        let tensor = Tensor {
            shape: self.shape.clone(),
            data,
        };
        if Some(tensor.data.len() as u64) != self.elements() {
            return Err(format!(
                "shape {:?} needs {} values, {} given",
                self.shape,
                self.elements()
                    .map_or("too many".to_owned(), |n| n.to_string()),
                tensor.data.len()
            ));
        }
        Ok(tensor)
    }
}

impl From<Tensor> for GoldenTensor {
    fn from(t: Tensor) -> Self {
        Self {
            dtype: t.dtype(),
            shape: t.shape,
            values: GoldenValues::Inline(t.data),
        }
    }
}

/// The JSON form of [`Tensor`] and [`GoldenTensor`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorJson<D> {
    dtype: DType,
    shape: Vec<u64>,
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    data: Option<D>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<String>,
}

impl Serialize for Tensor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TensorJson {
            dtype: self.dtype(),
            shape: self.shape.clone(),
            data: Some(&self.data),
            file: None,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let golden = GoldenTensor::deserialize(deserializer)?;
        match golden.values {
            GoldenValues::Inline(data) => Ok(Self {
                shape: golden.shape,
                data,
            }),
            GoldenValues::File(_) => Err(serde::de::Error::custom(
                "a tensor here carries its values in `data`",
            )),
        }
    }
}

impl Serialize for GoldenTensor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (data, file) = match &self.values {
            GoldenValues::Inline(data) => (Some(data), None),
            GoldenValues::File(path) => (None, Some(path.clone())),
        };
        TensorJson {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data,
            file,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for GoldenTensor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let json = TensorJson::<JsonValues>::deserialize(deserializer)?;
        let values = match (json.data, json.file) {
            (Some(values), None) => GoldenValues::Inline(
                TensorData::from_json(json.dtype, &values.0).map_err(D::Error::custom)?,
            ),
            (None, Some(file)) => GoldenValues::File(file),
            (Some(_), Some(_)) => {
                return Err(D::Error::custom("a tensor has `data` or `file`, not both"));
            }
            (None, None) => return Err(D::Error::custom("a tensor needs `data` or `file`")),
        };
        Ok(Self {
            dtype: json.dtype,
            shape: json.shape,
            values,
        })
    }
}

/// An output element passes when `|got - want| <= abs + rel * |want|`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub abs: f64,
    pub rel: f64,
}

/// Where the model came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Provenance {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_data_digest: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub hyperparameters: BTreeMap<String, ParamValue>,
    /// Evaluation metrics, e.g. `accuracy`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// A hyperparameter: free-form, but typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl ParamValue {
    /// Reads a command-line value: boolean, integer, float, else text.
    pub fn parse(text: &str) -> Self {
        if let Ok(b) = text.parse::<bool>() {
            return Self::Bool(b);
        }
        if let Ok(i) = text.parse::<i64>() {
            return Self::Int(i);
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Self::Float(f),
            _ => Self::Text(text.to_owned()),
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bool(v) => write!(f, "{v}"),
            Self::Int(v) => write!(f, "{v}"),
            Self::Float(v) => write!(f, "{v}"),
            Self::Text(v) => write!(f, "{v}"),
        }
    }
}

/// What the node must have to run the bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Requirements {
    /// GPU memory the model needs; 0 when it runs on CPU.
    pub min_gpu_memory_bytes: u64,
    /// Execution providers it may run on, in preference order; empty means any.
    pub execution_providers: Vec<ExecutionProvider>,
    /// Sessions of the model a node keeps, so that as many requests run at once
    /// (Triton's instance count); 0 leaves it to the node (1 unless configured).
    #[serde(skip_serializing_if = "is_zero")]
    pub instances: u32,
    /// Threads ONNX Runtime uses within one operator, per session; 0 is its default.
    #[serde(skip_serializing_if = "is_zero")]
    pub intra_op_threads: u32,
    /// Threads ONNX Runtime uses across independent operators, per session; 0 is its default.
    #[serde(skip_serializing_if = "is_zero")]
    pub inter_op_threads: u32,
    /// Requests of a model with a batch dimension gathered into one run (Triton's
    /// dynamic batcher); absent runs each request alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_batching: Option<DynamicBatching>,
}

/// Triton's dynamic batching: requests queue for a free session; a run takes as many
/// queued rows as fit `max_batch_size`, waiting at most `max_queue_delay_us` for more,
/// and stops early at a preferred size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicBatching {
    /// Most rows (the first dimension, summed over requests) of one run.
    pub max_batch_size: u32,
    /// Longest a request waits for others to join its batch, in microseconds.
    #[serde(default)]
    pub max_queue_delay_us: u64,
    /// Batch sizes a run prefers: one is sent as soon as it is reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_batch_sizes: Vec<u32>,
    /// Most requests waiting; more are refused at once. 0: no limit.
    #[serde(default)]
    pub max_queue_size: u32,
    /// Longest a request may wait in the queue before it is refused, in microseconds.
    /// 0: no limit.
    #[serde(default)]
    pub queue_timeout_us: u64,
}

/// Most rows one batched run may hold.
pub const MAX_BATCH_SIZE: u32 = 1 << 16;

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Most sessions of one model a bundle may ask for, and most threads per session.
pub const MAX_INSTANCES: u32 = 64;
pub const MAX_THREADS: u32 = 256;

/// ONNX Runtime execution providers Gantry selects between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    Cuda,
    Cpu,
}

/// Just the schema version, read before the rest so an unknown schema is named as such.
#[derive(Deserialize)]
struct SchemaOnly {
    schema: serde_json::Value,
}

impl Manifest {
    /// Parses and validates manifest bytes as found in a bundle.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Oversized {
                size: bytes.len() as u64,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let probe: SchemaOnly =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed {
                message: e.to_string(),
            })?;
        match probe.schema.as_u64() {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            Some(found) => return Err(ManifestError::UnknownSchema { found }),
            None => return Err(invalid("schema", "must be a number")),
        }
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed {
                message: e.to_string(),
            })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Serializes a new manifest (pretty JSON, then these bytes are what gets signed).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        self.validate()?;
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| ManifestError::Malformed {
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::Oversized {
                size: bytes.len() as u64,
                max: MAX_MANIFEST_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Checks every rule a manifest must satisfy.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.schema != SCHEMA_VERSION {
            return Err(ManifestError::UnknownSchema {
                found: u64::from(self.schema),
            });
        }
        validate_name(&self.name)?;
        validate_semver(&self.version).map_err(|problem| invalid("version", problem))?;
        humantime::parse_rfc3339(&self.created_at).map_err(|e| {
            invalid(
                "created_at",
                format!("{:?} is not an RFC 3339 time ({e})", self.created_at),
            )
        })?;

        if self.files.is_empty() {
            return Err(invalid("files", "a bundle holds at least the model file"));
        }
        if self.files.len() > MAX_FILES {
            return Err(invalid(
                "files",
                format!("{} files; at most {MAX_FILES}", self.files.len()),
            ));
        }
        let mut seen = BTreeSet::new();
        for file in &self.files {
            check_relative_path(&file.path).map_err(|source| ManifestError::UnsafePath {
                path: file.path.clone(),
                source,
            })?;
            if !seen.insert(file.path.as_str()) {
                return Err(ManifestError::DuplicatePath {
                    path: file.path.clone(),
                });
            }
            if !is_sha256_hex(&file.sha256) {
                return Err(invalid(
                    format!("files[{}].sha256", file.path),
                    "must be 64 lowercase hexadecimal digits",
                ));
            }
        }
        // A path may not be both a file and a directory ("a" and "a/b").
        for file in &self.files {
            let mut prefix = file.path.as_str();
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                if seen.contains(parent) {
                    return Err(invalid(
                        "files",
                        format!("{parent:?} is listed as a file and used as a directory"),
                    ));
                }
                prefix = parent;
            }
        }

        if self.model.format != "onnx" {
            return Err(invalid(
                "model.format",
                format!(
                    "{:?} is not supported; schema 1 bundles hold ONNX models",
                    self.model.format
                ),
            ));
        }
        if !seen.contains(self.model.entry.as_str()) {
            return Err(invalid(
                "model.entry",
                format!("{:?} is not one of the bundle's files", self.model.entry),
            ));
        }
        if self.model.inputs.is_empty() || self.model.outputs.is_empty() {
            return Err(invalid(
                "model",
                "a model declares at least one input and one output",
            ));
        }
        for golden in &self.golden {
            self.validate_golden(golden)?;
        }
        if let Some(m) = &self.monitoring {
            if !seen.contains(m.reference_profile.as_str()) {
                return Err(invalid(
                    "monitoring.reference_profile",
                    format!("{:?} is not one of the bundle's files", m.reference_profile),
                ));
            }
            if !(m.drift_threshold.is_finite() && m.drift_threshold > 0.0) {
                return Err(invalid(
                    "monitoring.drift_threshold",
                    format!("{} is not a positive number", m.drift_threshold),
                ));
            }
        }
        if let Some(q) = &self.quality {
            self.validate_quality(q)?;
        }
        let r = &self.requirements;
        if let Some(b) = &r.dynamic_batching {
            let field = "requirements.dynamic_batching";
            if b.max_batch_size == 0 || b.max_batch_size > MAX_BATCH_SIZE {
                return Err(invalid(
                    format!("{field}.max_batch_size"),
                    format!("{} rows; 1 to {MAX_BATCH_SIZE}", b.max_batch_size),
                ));
            }
            if let Some(p) = b
                .preferred_batch_sizes
                .iter()
                .find(|&&p| p == 0 || p > b.max_batch_size)
            {
                return Err(invalid(
                    format!("{field}.preferred_batch_sizes"),
                    format!(
                        "{p} is not between 1 and max_batch_size {}",
                        b.max_batch_size
                    ),
                ));
            }
            let batches = |specs: &[TensorSpec]| {
                specs
                    .iter()
                    .all(|s| matches!(s.shape.first(), Some(Dim::Named(_))))
            };
            if !batches(&self.model.inputs) || !batches(&self.model.outputs) {
                return Err(invalid(
                    field,
                    "the model has no batch dimension: every input and output must leave its first dimension open",
                ));
            }
        }
        if r.instances > MAX_INSTANCES {
            return Err(invalid(
                "requirements.instances",
                format!("{} sessions; at most {MAX_INSTANCES}", r.instances),
            ));
        }
        for (field, threads) in [
            ("requirements.intra_op_threads", r.intra_op_threads),
            ("requirements.inter_op_threads", r.inter_op_threads),
        ] {
            if threads > MAX_THREADS {
                return Err(invalid(
                    field,
                    format!("{threads} threads; at most {MAX_THREADS}"),
                ));
            }
        }
        for (key, value) in &self.provenance.metrics {
            if !value.is_finite() {
                return Err(invalid(
                    format!("provenance.metrics.{key}"),
                    "must be a finite number",
                ));
            }
        }
        Ok(())
    }

    fn validate_quality(&self, q: &QualitySpec) -> Result<(), ManifestError> {
        let Some(output) = self.model.outputs.iter().find(|o| o.name == q.output) else {
            return Err(invalid(
                "quality.output",
                format!("{:?} is not one of the model's outputs", q.output),
            ));
        };
        let numeric = !matches!(output.dtype, DType::Bool | DType::String);
        if !numeric || (q.task == Task::Regression && !output.dtype.is_float()) {
            return Err(invalid(
                "quality.output",
                format!(
                    "{:?} holds {:?}; {} is read from {}",
                    q.output,
                    output.dtype,
                    q.task.as_str(),
                    if q.task == Task::Regression {
                        "a float tensor"
                    } else {
                        "float scores or integer labels"
                    }
                ),
            ));
        }
        if output.shape.len() > 2 {
            return Err(invalid(
                "quality.output",
                format!(
                    "{:?} has {} dimensions; predictions are read from [N] or [N, K]",
                    q.output,
                    output.shape.len()
                ),
            ));
        }
        Ok(())
    }

    fn validate_golden(&self, golden: &GoldenVector) -> Result<(), ManifestError> {
        let field = |rest: &str| format!("golden[{}]{rest}", golden.name);
        if golden.name.is_empty() {
            return Err(invalid("golden", "every golden vector needs a name"));
        }
        let t = golden.tolerance;
        if !(t.abs.is_finite() && t.rel.is_finite() && t.abs >= 0.0 && t.rel >= 0.0) {
            return Err(invalid(
                field(".tolerance"),
                "abs and rel must be finite and not negative",
            ));
        }
        for (specs, tensors, side) in [
            (&self.model.inputs, &golden.inputs, "inputs"),
            (&self.model.outputs, &golden.outputs, "outputs"),
        ] {
            for spec in specs {
                if !tensors.contains_key(&spec.name) {
                    return Err(invalid(
                        field(&format!(".{side}")),
                        format!("has no value for model {side} {:?}", spec.name),
                    ));
                }
            }
            for (name, tensor) in tensors {
                let spec = specs.iter().find(|s| &s.name == name).ok_or_else(|| {
                    invalid(
                        field(&format!(".{side}.{name}")),
                        format!("the model has no {side} of that name"),
                    )
                })?;
                self.check_golden_tensor(spec, tensor)
                    .map_err(|problem| invalid(field(&format!(".{side}.{name}")), problem))?;
            }
        }
        Ok(())
    }

    fn check_golden_tensor(&self, spec: &TensorSpec, tensor: &GoldenTensor) -> Result<(), String> {
        let elements = check_shape(spec, tensor.dtype, &tensor.shape)?;
        match &tensor.values {
            GoldenValues::Inline(data) => check_count(&tensor.shape, elements, data.len()),
            GoldenValues::File(path) => {
                let file = self
                    .files
                    .iter()
                    .find(|f| &f.path == path)
                    .ok_or_else(|| format!("file {path:?} is not one of the bundle's files"))?;
                if path == &self.model.entry {
                    return Err(format!("file {path:?} is the model"));
                }
                match crate::tensor::element_size(tensor.dtype) {
                    Some(size) if elements.checked_mul(size as u64) != Some(file.size) => {
                        Err(format!(
                            "file {path:?} is {} bytes; shape {:?} of {} needs {}",
                            file.size,
                            tensor.shape,
                            crate::tensor::datatype_name(tensor.dtype),
                            elements.saturating_mul(size as u64)
                        ))
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

/// Checks a concrete tensor against a declared spec.
pub fn check_tensor(spec: &TensorSpec, tensor: &Tensor) -> Result<(), String> {
    let elements = check_shape(spec, tensor.dtype(), &tensor.shape)?;
    check_count(&tensor.shape, elements, tensor.data.len())
}

/// Checks element type and shape against a spec; returns how many elements the shape holds.
pub fn check_shape(spec: &TensorSpec, dtype: DType, shape: &[u64]) -> Result<u64, String> {
    if spec.dtype != dtype {
        return Err(format!(
            "datatype {} does not match the model's {}",
            crate::tensor::datatype_name(dtype),
            crate::tensor::datatype_name(spec.dtype)
        ));
    }
    if spec.shape.len() != shape.len() {
        return Err(format!(
            "shape {shape:?} has rank {}, the model's has rank {}",
            shape.len(),
            spec.shape.len()
        ));
    }
    for (i, (declared, actual)) in spec.shape.iter().zip(shape).enumerate() {
        if let Dim::Fixed(size) = declared
            && size != actual
        {
            return Err(format!(
                "dimension {i} is {actual}, the model fixes it at {size}"
            ));
        }
    }
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| "shape overflows".to_owned())
}

fn check_count(shape: &[u64], elements: u64, given: usize) -> Result<(), String> {
    if elements == given as u64 {
        Ok(())
    } else {
        Err(format!(
            "shape {shape:?} needs {elements} values, {given} given"
        ))
    }
}

fn validate_name(name: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            format!(
                "{name:?} must be 1-128 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
            ),
        ))
    }
}

/// Checks `MAJOR.MINOR.PATCH[-PRE][+BUILD]` as semver.org defines it.
pub fn validate_semver(version: &str) -> Result<(), String> {
    let bad = || format!("{version:?} is not a semantic version like 1.4.0 or 2.0.0-rc.1");
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    if numbers.len() != 3
        || numbers.iter().any(|n| {
            n.is_empty()
                || !n.bytes().all(|b| b.is_ascii_digit())
                || (n.len() > 1 && n.starts_with('0'))
        })
    {
        return Err(bad());
    }
    let ident_ok = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    for extra in [pre, build].into_iter().flatten() {
        if !extra.split('.').all(ident_ok) {
            return Err(bad());
        }
    }
    Ok(())
}

/// Orders two versions by semantic-version precedence (build metadata ignored, a
/// pre-release before its release). `None` when either is not a semantic version.
pub fn version_precedence(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let a = semver::Version::parse(a).ok()?;
    let b = semver::Version::parse(b).ok()?;
    Some(a.cmp_precedence(&b))
}

/// Whether `text` is 64 lowercase hexadecimal digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            schema: SCHEMA_VERSION,
            name: "tiny-linear".into(),
            version: "1.0.0".into(),
            created_at: "2026-11-21T07:00:00Z".into(),
            files: vec![FileEntry {
                path: "model.onnx".into(),
                size: 3,
                sha256: "a".repeat(64),
            }],
            model: ModelEntry {
                format: "onnx".into(),
                entry: "model.onnx".into(),
                inputs: vec![TensorSpec {
                    name: "x".into(),
                    dtype: DType::Float32,
                    shape: vec![Dim::Named("batch".into()), Dim::Fixed(2)],
                }],
                outputs: vec![TensorSpec {
                    name: "y".into(),
                    dtype: DType::Float32,
                    shape: vec![Dim::Named("batch".into()), Dim::Fixed(1)],
                }],
            },
            golden: vec![GoldenVector {
                name: "ones".into(),
                inputs: [("x".to_owned(), f32_tensor(&[1, 2], vec![1.0, 1.0]))].into(),
                outputs: [("y".to_owned(), f32_tensor(&[1, 1], vec![3.0]))].into(),
                tolerance: Tolerance {
                    abs: 1e-5,
                    rel: 1e-4,
                },
            }],
            provenance: Provenance::default(),
            requirements: Requirements::default(),
            monitoring: None,
            quality: None,
        }
    }

    fn f32_tensor(shape: &[u64], data: Vec<f32>) -> GoldenTensor {
        Tensor {
            shape: shape.to_vec(),
            data: TensorData::Float32(data),
        }
        .into()
    }

    #[test]
    fn round_trip_keeps_the_manifest() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), sample());
    }

    #[test]
    fn versions_order_by_precedence() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        assert_eq!(version_precedence("1.2.0", "1.10.0"), Some(Less));
        assert_eq!(version_precedence("2.0.0", "2.0.0-rc.1"), Some(Greater));
        assert_eq!(version_precedence("1.0.0+a", "1.0.0+b"), Some(Equal));
        assert_eq!(version_precedence("1.0", "1.0.0"), None);
    }

    #[test]
    fn unknown_schema_version_is_refused_first() {
        let text = r#"{"schema": 2, "whatever": "a future schema may hold"}"#;
        assert!(matches!(
            Manifest::parse(text.as_bytes()),
            Err(ManifestError::UnknownSchema { found: 2 })
        ));
    }

    #[test]
    fn unknown_field_is_refused() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value["run_as_root"] = serde_json::json!(true);
        let err = Manifest::parse(&serde_json::to_vec(&value).unwrap()).unwrap_err();
        assert!(matches!(err, ManifestError::Malformed { .. }), "{err}");
    }

    #[test]
    fn oversized_manifest_is_refused_before_parsing() {
        let bytes = vec![b' '; MAX_MANIFEST_BYTES as usize + 1];
        assert!(matches!(
            Manifest::parse(&bytes),
            Err(ManifestError::Oversized { .. })
        ));
    }

    #[test]
    fn path_traversal_in_manifest_is_refused() {
        for path in [
            "../etc/passwd",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a\\b",
        ] {
            let mut m = sample();
            m.files.push(FileEntry {
                path: path.into(),
                size: 1,
                sha256: "b".repeat(64),
            });
            assert!(
                matches!(m.validate(), Err(ManifestError::UnsafePath { .. })),
                "{path}"
            );
        }
    }

    #[test]
    fn duplicate_manifest_entry_is_refused() {
        let mut m = sample();
        m.files.push(m.files[0].clone());
        assert!(matches!(
            m.validate(),
            Err(ManifestError::DuplicatePath { .. })
        ));
    }

    #[test]
    fn file_and_directory_of_the_same_name_are_refused() {
        let mut m = sample();
        m.files.push(FileEntry {
            path: "model.onnx/inner".into(),
            size: 1,
            sha256: "b".repeat(64),
        });
        assert!(matches!(m.validate(), Err(ManifestError::Invalid { .. })));
    }

    #[test]
    fn golden_file_pointing_at_a_missing_file_the_model_or_the_wrong_size_is_refused() {
        let by_file = |path: &str| {
            let mut m = sample();
            m.golden[0].inputs.get_mut("x").unwrap().values = GoldenValues::File(path.into());
            m
        };
        let e = by_file("golden/x.bin").validate().unwrap_err().to_string();
        assert!(
            e.contains("\"golden/x.bin\" is not one of the bundle's files"),
            "{e}"
        );
        let e = by_file("model.onnx").validate().unwrap_err().to_string();
        assert!(e.contains("is the model"), "{e}");
        let mut m = by_file("golden/x.bin");
        m.files.push(FileEntry {
            path: "golden/x.bin".into(),
            size: 7,
            sha256: "b".repeat(64),
        });
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("is 7 bytes; shape [1, 2] of FP32 needs 8"),
            "{e}"
        );
        m.files.last_mut().unwrap().size = 8;
        m.validate().unwrap();
        // Round trip: the reference is what the manifest says.
        let bytes = m.to_bytes().unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        assert!(
            String::from_utf8(bytes)
                .unwrap()
                .contains("\"file\": \"golden/x.bin\"")
        );
    }

    #[test]
    fn dynamic_batching_needs_a_batch_dimension_and_sane_sizes() {
        let batching = |max, preferred: Vec<u32>| {
            let mut m = sample();
            m.requirements.dynamic_batching = Some(DynamicBatching {
                max_batch_size: max,
                preferred_batch_sizes: preferred,
                ..DynamicBatching::default()
            });
            m
        };
        batching(8, vec![4, 8]).validate().unwrap();
        assert!(batching(0, vec![]).validate().is_err());
        let e = batching(8, vec![16]).validate().unwrap_err().to_string();
        assert!(
            e.contains("16 is not between 1 and max_batch_size 8"),
            "{e}"
        );
        let mut fixed = batching(8, vec![]);
        fixed.model.inputs[0].shape[0] = Dim::Fixed(1);
        let e = fixed.validate().unwrap_err().to_string();
        assert!(e.contains("the model has no batch dimension"), "{e}");
    }

    #[test]
    fn golden_vectors_must_match_the_model() {
        let mut m = sample();
        m.golden[0].inputs.get_mut("x").unwrap().values =
            GoldenValues::Inline(TensorData::Float32(vec![1.0]));
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("needs 2 values")
        );
        let mut m = sample();
        m.golden[0].outputs.get_mut("y").unwrap().dtype = DType::Int64;
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("datatype INT64")
        );
        let mut m = sample();
        m.golden[0]
            .inputs
            .insert("z".into(), f32_tensor(&[1], vec![0.0]));
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("no inputs of that name")
        );
    }

    #[test]
    fn semver_rules() {
        for ok in [
            "1.0.0",
            "0.1.2",
            "10.20.30",
            "1.0.0-rc.1",
            "1.0.0+build.5",
            "1.0.0-alpha-1+x",
        ] {
            assert!(validate_semver(ok).is_ok(), "{ok}");
        }
        for bad in [
            "1.0",
            "1.0.0.0",
            "01.0.0",
            "1.0.0-",
            "1.0.0-a..b",
            "v1.0.0",
            "",
        ] {
            assert!(validate_semver(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn param_values_are_typed() {
        assert_eq!(ParamValue::parse("true"), ParamValue::Bool(true));
        assert_eq!(ParamValue::parse("32"), ParamValue::Int(32));
        assert_eq!(ParamValue::parse("0.001"), ParamValue::Float(0.001));
        assert_eq!(ParamValue::parse("adam"), ParamValue::Text("adam".into()));
        assert_eq!(ParamValue::parse("inf"), ParamValue::Text("inf".into()));
    }
}
