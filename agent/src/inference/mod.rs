//! ONNX Runtime through `ort` with `load-dynamic`: the library is loaded at run time from
//! a path (`ort::init_from`), so a missing or wrong library is an error the operator can
//! act on, never a panic. Today this runs a bundle's golden vectors
//! (`gantry-agent verify --golden`); the inference endpoint builds on the same [`Model`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gantry_shared::bundle::manifest::{DType, GoldenVector, ModelEntry, Tensor};
pub mod server;

use ort::session::Session;
use ort::value::Tensor as OrtTensor;

/// Inference failures, each naming what to fix.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "ONNX Runtime library {path} does not exist (install it, or set inference.onnxruntime / --onnxruntime)"
    )]
    MissingLibrary { path: PathBuf },
    #[error(
        "cannot load ONNX Runtime from {path} (install it, or set inference.onnxruntime / --onnxruntime)"
    )]
    Library {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },
    #[error(
        "ONNX Runtime was already loaded from {loaded}; one process uses one library (asked for {asked})"
    )]
    OtherLibrary { loaded: PathBuf, asked: PathBuf },
    #[error("ONNX Runtime failed: {0}")]
    Runtime(String),
    #[error("model {path} cannot be loaded: {message}")]
    Load { path: PathBuf, message: String },
    #[error("tensor {name:?}: {problem}")]
    Tensor { name: String, problem: String },
}

impl From<ort::Error> for InferenceError {
    fn from(e: ort::Error) -> Self {
        Self::Runtime(e.to_string())
    }
}

static ENVIRONMENT: OnceLock<(PathBuf, ort::environment::Environment)> = OnceLock::new();

/// Loads ONNX Runtime from `library` once per process.
pub fn init(library: &Path) -> Result<(), InferenceError> {
    if let Some((loaded, _)) = ENVIRONMENT.get() {
        return if loaded == library {
            Ok(())
        } else {
            Err(InferenceError::OtherLibrary {
                loaded: loaded.clone(),
                asked: library.to_owned(),
            })
        };
    }
    if !library.is_file() {
        return Err(InferenceError::MissingLibrary {
            path: library.to_owned(),
        });
    }
    let builder = ort::init_from(library).map_err(|source| InferenceError::Library {
        path: library.to_owned(),
        source,
    })?;
    let environment = builder.with_name("gantry-agent").build()?;
    let _ = ENVIRONMENT.set((library.to_owned(), environment));
    Ok(())
}

/// A loaded model and what the bundle declares about it.
#[derive(Debug)]
pub struct Model {
    session: Session,
    entry: ModelEntry,
}

fn shape_i64(name: &str, shape: &[u64]) -> Result<Vec<i64>, InferenceError> {
    shape
        .iter()
        .map(|&d| {
            i64::try_from(d).map_err(|_| InferenceError::Tensor {
                name: name.to_owned(),
                problem: format!("dimension {d} too large"),
            })
        })
        .collect()
}

impl Model {
    /// Loads the model file at `path`, declared by `entry`. [`init`] must have run.
    pub fn load(path: &Path, entry: &ModelEntry) -> Result<Self, InferenceError> {
        let (_, environment) = ENVIRONMENT
            .get()
            .ok_or_else(|| InferenceError::Runtime("ONNX Runtime is not loaded".to_owned()))?;
        let load = |message: String| InferenceError::Load {
            path: path.to_owned(),
            message,
        };
        // No spinning between runs: the agent serves requests one by one with HTTP work in
        // between, and a spinning pool thread would take that time from the other core.
        let session = Session::builder(environment)
            .map_err(|e| load(e.to_string()))?
            .with_intra_op_spinning(false)
            .map_err(|e| load(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| load(e.to_string()))?;
        Ok(Self {
            session,
            entry: entry.clone(),
        })
    }

    /// Runs the model on `inputs`; returns every declared output.
    pub fn run(
        &mut self,
        inputs: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>, InferenceError> {
        let mut values: Vec<(String, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let shape = shape_i64(name, &tensor.shape)?;
            let unsupported = || InferenceError::Tensor {
                name: name.clone(),
                problem: format!("element type {:?} is not supported yet", tensor.dtype),
            };
            #[allow(clippy::cast_possible_truncation)]
            let value: ort::session::SessionInputValue<'_> = match tensor.dtype {
                DType::Float32 => OrtTensor::from_array((
                    shape,
                    tensor.data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                ))?
                .into(),
                DType::Float64 => OrtTensor::from_array((shape, tensor.data.clone()))?.into(),
                DType::Int64 => OrtTensor::from_array((
                    shape,
                    tensor.data.iter().map(|&v| v as i64).collect::<Vec<_>>(),
                ))?
                .into(),
                DType::Int32 => OrtTensor::from_array((
                    shape,
                    tensor.data.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                ))?
                .into(),
                _ => return Err(unsupported()),
            };
            values.push((name.clone(), value));
        }
        let outputs = self.session.run(values)?;
        let mut result = BTreeMap::new();
        for spec in &self.entry.outputs {
            let value = outputs
                .get(spec.name.as_str())
                .ok_or_else(|| InferenceError::Tensor {
                    name: spec.name.clone(),
                    problem: "the model did not produce it".to_owned(),
                })?;
            let (shape, data): (Vec<u64>, Vec<f64>) = match spec.dtype {
                DType::Float32 => {
                    let (shape, data) = value.try_extract_tensor::<f32>()?;
                    (
                        shape.iter().map(|&d| d.max(0) as u64).collect(),
                        data.iter().map(|&v| f64::from(v)).collect(),
                    )
                }
                DType::Float64 => {
                    let (shape, data) = value.try_extract_tensor::<f64>()?;
                    (
                        shape.iter().map(|&d| d.max(0) as u64).collect(),
                        data.to_vec(),
                    )
                }
                DType::Int64 => {
                    let (shape, data) = value.try_extract_tensor::<i64>()?;
                    (
                        shape.iter().map(|&d| d.max(0) as u64).collect(),
                        data.iter().map(|&v| v as f64).collect(),
                    )
                }
                DType::Int32 => {
                    let (shape, data) = value.try_extract_tensor::<i32>()?;
                    (
                        shape.iter().map(|&d| d.max(0) as u64).collect(),
                        data.iter().map(|&v| f64::from(v)).collect(),
                    )
                }
                other => {
                    return Err(InferenceError::Tensor {
                        name: spec.name.clone(),
                        problem: format!("element type {other:?} is not supported yet"),
                    });
                }
            };
            result.insert(
                spec.name.clone(),
                Tensor {
                    dtype: spec.dtype,
                    shape,
                    data,
                },
            );
        }
        Ok(result)
    }
}

/// How one golden vector fared.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GoldenResult {
    pub name: String,
    pub passed: bool,
    /// Largest `|got - want|` over all outputs.
    pub max_abs_error: f64,
    /// The first element out of tolerance: output, flat index, got, want.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_mismatch: Option<(String, usize, f64, f64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs every golden vector and compares the outputs within each vector's tolerance.
pub fn check_golden(model: &mut Model, golden: &[GoldenVector]) -> Vec<GoldenResult> {
    golden
        .iter()
        .map(|g| match model.run(&g.inputs) {
            Err(e) => GoldenResult {
                name: g.name.clone(),
                passed: false,
                max_abs_error: f64::NAN,
                first_mismatch: None,
                error: Some(e.to_string()),
            },
            Ok(outputs) => {
                let mut max_abs_error = 0.0f64;
                let mut first_mismatch = None;
                let mut error = None;
                for (name, want) in &g.outputs {
                    let Some(got) = outputs.get(name) else {
                        error = Some(format!("output {name:?} missing"));
                        continue;
                    };
                    if got.shape != want.shape {
                        error.get_or_insert_with(|| {
                            format!(
                                "output {name:?} has shape {:?}, expected {:?}",
                                got.shape, want.shape
                            )
                        });
                        continue;
                    }
                    for (i, (&a, &b)) in got.data.iter().zip(&want.data).enumerate() {
                        let diff = (a - b).abs();
                        max_abs_error = max_abs_error.max(diff);
                        // NaN fails too: it is never within tolerance.
                        let within = diff <= g.tolerance.abs + g.tolerance.rel * b.abs();
                        if !within && first_mismatch.is_none() {
                            first_mismatch = Some((name.clone(), i, a, b));
                        }
                    }
                }
                GoldenResult {
                    name: g.name.clone(),
                    passed: first_mismatch.is_none() && error.is_none(),
                    max_abs_error,
                    first_mismatch,
                    error,
                }
            }
        })
        .collect()
}
