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

/// Tensor element types, named as the `KServe` v2 protocol names them (lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Float16,
    Float32,
    Float64,
    Bfloat16,
    String,
}

impl DType {
    /// From ONNX's `TensorProto.DataType` number.
    pub fn from_onnx(code: i64) -> Option<Self> {
        Some(match code {
            1 => Self::Float32,
            2 => Self::Uint8,
            3 => Self::Int8,
            4 => Self::Uint16,
            5 => Self::Int16,
            6 => Self::Int32,
            7 => Self::Int64,
            8 => Self::String,
            9 => Self::Bool,
            10 => Self::Float16,
            11 => Self::Float64,
            12 => Self::Uint32,
            13 => Self::Uint64,
            16 => Self::Bfloat16,
            _ => return None,
        })
    }
}

/// A test case: inputs, the outputs they must produce, and how close is close enough.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenVector {
    pub name: String,
    pub inputs: BTreeMap<String, Tensor>,
    pub outputs: BTreeMap<String, Tensor>,
    pub tolerance: Tolerance,
}

/// Tensor values, row-major. Integers and booleans (0/1) are carried as JSON numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<u64>,
    pub data: Vec<f64>,
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
}

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
                check_tensor(spec, tensor)
                    .map_err(|problem| invalid(field(&format!(".{side}.{name}")), problem))?;
            }
        }
        Ok(())
    }
}

/// Checks a concrete tensor against a declared spec.
pub fn check_tensor(spec: &TensorSpec, tensor: &Tensor) -> Result<(), String> {
    if spec.dtype != tensor.dtype {
        return Err(format!(
            "dtype {:?} does not match the model's {:?}",
            tensor.dtype, spec.dtype
        ));
    }
    if spec.shape.len() != tensor.shape.len() {
        return Err(format!(
            "shape {:?} has rank {}, the model's has rank {}",
            tensor.shape,
            tensor.shape.len(),
            spec.shape.len()
        ));
    }
    for (i, (declared, actual)) in spec.shape.iter().zip(&tensor.shape).enumerate() {
        if let Dim::Fixed(size) = declared
            && size != actual
        {
            return Err(format!(
                "dimension {i} is {actual}, the model fixes it at {size}"
            ));
        }
    }
    let elements = tensor
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or("shape overflows")?;
    if elements != tensor.data.len() as u64 {
        return Err(format!(
            "shape {:?} needs {elements} values, {} given",
            tensor.shape,
            tensor.data.len()
        ));
    }
    if tensor.data.iter().any(|v| !v.is_finite()) {
        return Err("values must be finite".to_owned());
    }
    Ok(())
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
                inputs: [(
                    "x".to_owned(),
                    Tensor {
                        dtype: DType::Float32,
                        shape: vec![1, 2],
                        data: vec![1.0, 1.0],
                    },
                )]
                .into(),
                outputs: [(
                    "y".to_owned(),
                    Tensor {
                        dtype: DType::Float32,
                        shape: vec![1, 1],
                        data: vec![3.0],
                    },
                )]
                .into(),
                tolerance: Tolerance {
                    abs: 1e-5,
                    rel: 1e-4,
                },
            }],
            provenance: Provenance::default(),
            requirements: Requirements::default(),
        }
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
    fn golden_vectors_must_match_the_model() {
        let mut m = sample();
        m.golden[0].inputs.get_mut("x").unwrap().data.pop();
        assert!(
            m.validate()
                .unwrap_err()
                .to_string()
                .contains("needs 2 values")
        );
        let mut m = sample();
        m.golden[0].outputs.get_mut("y").unwrap().dtype = DType::Int64;
        assert!(m.validate().unwrap_err().to_string().contains("dtype"));
        let mut m = sample();
        m.golden[0].inputs.insert(
            "z".into(),
            Tensor {
                dtype: DType::Float32,
                shape: vec![1],
                data: vec![0.0],
            },
        );
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
