//! ONNX Runtime through `ort` with `load-dynamic`: the library is loaded at run time from
//! a path (`ort::init_from`), so a missing or wrong library is an error the operator can
//! act on, never a panic. [`Model`] runs golden vectors (import, `verify --golden`) and
//! serves the endpoint (`server`).
//!
//! # Execution providers
//!
//! A bundle lists the providers it may run on, in preference order
//! (`requirements.execution_providers`; none listed means CUDA where it works, else CPU).
//! Each is tried in turn: CUDA needs a library built with its provider, enough free GPU
//! memory for `requirements.min_gpu_memory_bytes` when the caller knows the GPUs, and a
//! session that registers and loads on it; CPU always works when listed. The first that
//! loads is the model's [`Placement`], with the reason each one before it was passed
//! over; a bundle whose every listed provider is unusable does not load, and says why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gantry_shared::bundle::manifest::{
    DType, ExecutionProvider, GoldenVector, ModelEntry, Requirements, Tensor,
};

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
    #[error(
        "model {path} needs execution provider {wanted}, and none is usable on this node: {reasons}"
    )]
    NoProvider {
        path: PathBuf,
        wanted: String,
        reasons: String,
    },
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
    let environment = builder
        .with_name("gantry-agent")
        .with_telemetry(false)
        .build()?;
    let _ = ENVIRONMENT.set((library.to_owned(), environment));
    Ok(())
}

/// A loaded model and what the bundle declares about it.
#[derive(Debug)]
pub struct Model {
    session: Session,
    entry: ModelEntry,
    placement: Placement,
}

/// What the node offers a model, as far as the caller knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hardware {
    /// Free memory of the GPU with the most of it; `None` when the GPUs were not read
    /// (the CLI) — the memory requirement is then left to CUDA itself.
    pub gpu_free_bytes: Option<u64>,
}

impl Hardware {
    /// What the latest sample says: the most free memory on one GPU, or nothing known
    /// before the first sample or without NVML.
    pub fn from_snapshots(snapshots: &crate::telemetry::SnapshotReceiver) -> Self {
        let snapshot = snapshots.borrow().clone();
        let Some(snapshot) = snapshot else {
            return Self::default();
        };
        let sample = &snapshot.sample;
        if !matches!(
            sample.nvml,
            gantry_shared::telemetry::NvmlStatus::Available { .. }
        ) {
            return Self::default();
        }
        Self {
            gpu_free_bytes: Some(
                sample
                    .gpus
                    .iter()
                    .filter_map(|g| g.fields.fb_free_bytes)
                    .max()
                    .unwrap_or(0),
            ),
        }
    }
}

/// Where a loaded model runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub provider: ExecutionProvider,
    /// Providers preferred to it that were passed over, each as `name: reason`.
    pub passed_over: Vec<String>,
    /// Whether the bundle listed its providers (else CUDA was tried as the default).
    pub listed: bool,
}

/// The provider's name as bundles and `status` write it.
pub fn provider_name(provider: ExecutionProvider) -> &'static str {
    match provider {
        ExecutionProvider::Cuda => "cuda",
        ExecutionProvider::Cpu => "cpu",
    }
}

/// Why CUDA cannot take this model before a session is even tried; `None` to try it.
fn cuda_unusable(requirements: &Requirements, hardware: Hardware) -> Option<String> {
    use ort::ep::ExecutionProvider as _;
    let need = requirements.min_gpu_memory_bytes;
    if let Some(free) = hardware.gpu_free_bytes.filter(|&free| need > free) {
        return Some(format!(
            "the bundle needs {need} bytes of GPU memory and the most free on a GPU here is {free}"
        ));
    }
    match ort::ep::CUDA::is_available() {
        Ok(true) => None,
        Ok(false) => Some(
            "the ONNX Runtime library was built without the CUDA provider (install the GPU build)"
                .to_owned(),
        ),
        Err(e) => Some(format!("ONNX Runtime cannot list its providers: {e}")),
    }
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
    /// Loads the model file at `path`, declared by `entry`, on the first usable provider
    /// of `requirements` (module docs). [`init`] must have run.
    pub fn load(
        path: &Path,
        entry: &ModelEntry,
        requirements: &Requirements,
        hardware: Hardware,
    ) -> Result<Self, InferenceError> {
        let (_, environment) = ENVIRONMENT
            .get()
            .ok_or_else(|| InferenceError::Runtime("ONNX Runtime is not loaded".to_owned()))?;
        let load = |message: String| InferenceError::Load {
            path: path.to_owned(),
            message,
        };
        let candidates = if requirements.execution_providers.is_empty() {
            vec![ExecutionProvider::Cuda, ExecutionProvider::Cpu]
        } else {
            requirements.execution_providers.clone()
        };
        let mut passed_over = Vec::new();
        for &provider in &candidates {
            // No spinning between runs: the agent serves requests one by one with HTTP
            // work in between, and a spinning pool thread would take that time from the
            // other core.
            let builder = Session::builder(environment)
                .map_err(|e| load(e.to_string()))?
                .with_intra_op_spinning(false)
                .map_err(|e| load(e.to_string()))?;
            let mut builder = match provider {
                ExecutionProvider::Cpu => builder,
                ExecutionProvider::Cuda => {
                    if let Some(reason) = cuda_unusable(requirements, hardware) {
                        passed_over.push(format!("cuda: {reason}"));
                        continue;
                    }
                    let cuda = ort::ep::CUDA::default().build().error_on_failure();
                    match builder.with_execution_providers([cuda]) {
                        Ok(builder) => builder,
                        Err(e) => {
                            passed_over.push(format!("cuda: the provider did not register: {e}"));
                            continue;
                        }
                    }
                }
            };
            match builder.commit_from_file(path) {
                Ok(session) => {
                    return Ok(Self {
                        session,
                        entry: entry.clone(),
                        placement: Placement {
                            provider,
                            passed_over,
                            listed: !requirements.execution_providers.is_empty(),
                        },
                    });
                }
                Err(e) if provider == ExecutionProvider::Cuda => {
                    passed_over.push(format!("cuda: the model did not load on it: {e}"));
                }
                Err(e) => return Err(load(e.to_string())),
            }
        }
        Err(InferenceError::NoProvider {
            path: path.to_owned(),
            wanted: candidates
                .iter()
                .map(|&p| provider_name(p))
                .collect::<Vec<_>>()
                .join(" or "),
            reasons: passed_over.join("; "),
        })
    }

    /// Where the model runs.
    pub fn placement(&self) -> &Placement {
        &self.placement
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
