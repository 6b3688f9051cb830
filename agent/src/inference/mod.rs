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
//!
//! # IO binding
//!
//! A model on CUDA runs through an IO binding: ONNX Runtime writes its outputs into
//! pinned host memory (`CudaPinned`), which the GPU fills by DMA and the agent reads
//! without a staging copy, and takes the inputs from host memory in one transfer each.
//! String tensors, which ONNX Runtime keeps on the host, are bound to host memory. A model
//! on the CPU runs unbound: there is nothing to move.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gantry_shared::bundle::manifest::{
    DType, ExecutionProvider, GoldenTensor, GoldenVector, ModelEntry, Requirements, Tensor,
    TensorSpec, Tolerance,
};
use gantry_shared::tensor::TensorData;

use ort::memory::{AllocationDevice, MemoryType};
use ort::session::Session;
use ort::value::Tensor as OrtTensor;

mod cuda;

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
    /// Where a bound run has ONNX Runtime put the outputs; `None` runs unbound.
    bound_outputs: Option<ort::memory::MemoryInfo<'static>>,
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

/// Threads of one session; 0 leaves the number to ONNX Runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Threads {
    pub intra_op: usize,
    pub inter_op: usize,
}

/// How a model is served: sessions and their threads. The bundle's requirements say
/// what it needs; the node's configuration overrides them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    /// Sessions kept, so that as many requests run at once.
    pub instances: usize,
    pub threads: Threads,
}

/// The node's overrides of a bundle's execution settings (`[inference]`); `None` keeps
/// the bundle's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecutionOverrides {
    pub instances: Option<u32>,
    pub intra_op_threads: Option<u32>,
    pub inter_op_threads: Option<u32>,
}

impl Execution {
    pub fn new(requirements: &Requirements, overrides: ExecutionOverrides) -> Self {
        let pick = |node: Option<u32>, bundle: u32| node.unwrap_or(bundle) as usize;
        Self {
            instances: pick(overrides.instances, requirements.instances).max(1),
            threads: Threads {
                intra_op: pick(overrides.intra_op_threads, requirements.intra_op_threads),
                inter_op: pick(overrides.inter_op_threads, requirements.inter_op_threads),
            },
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
        Ok(true) => ENVIRONMENT
            .get()
            .and_then(|(library, _)| cuda::problem(library)),
        Ok(false) => Some(
            "the ONNX Runtime library was built without the CUDA provider (install the GPU build: the gantry-agent-cuda package)"
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
        threads: Threads,
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
            let mut builder = Session::builder(environment)
                .map_err(|e| load(e.to_string()))?
                .with_intra_op_spinning(false)
                .map_err(|e| load(e.to_string()))?;
            if threads.intra_op > 0 {
                builder = builder
                    .with_intra_threads(threads.intra_op)
                    .map_err(|e| load(e.to_string()))?;
            }
            if threads.inter_op > 0 {
                // Inter-op threads only run operators side by side in parallel mode.
                builder = builder
                    .with_parallel_execution(threads.inter_op > 1)
                    .map_err(|e| load(e.to_string()))?
                    .with_inter_threads(threads.inter_op)
                    .map_err(|e| load(e.to_string()))?;
            }
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
                    let bound_outputs = match provider {
                        ExecutionProvider::Cpu => None,
                        ExecutionProvider::Cuda => Some(pinned_output_memory()?),
                    };
                    return Ok(Self {
                        session,
                        entry: entry.clone(),
                        placement: Placement {
                            provider,
                            passed_over,
                            listed: !requirements.execution_providers.is_empty(),
                        },
                        bound_outputs,
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

    /// Runs this model through an IO binding with its outputs put in `memory` (module
    /// docs): CUDA models are bound to pinned host memory on load; a CPU model can be
    /// bound to host memory to run the same path.
    #[must_use]
    pub fn with_io_binding(mut self, memory: ort::memory::MemoryInfo<'static>) -> Self {
        self.bound_outputs = Some(memory);
        self
    }

    /// Whether runs go through an IO binding.
    pub fn io_bound(&self) -> bool {
        self.bound_outputs.is_some()
    }

    /// The declared inputs and outputs.
    pub fn entry(&self) -> &ModelEntry {
        &self.entry
    }

    /// Runs the model on `inputs`; returns every declared output, in the model's order.
    pub fn run(
        &mut self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<Vec<(String, Tensor)>, InferenceError> {
        self.run_timed(inputs).map(|(outputs, _)| outputs)
    }

    /// [`run`](Self::run), timing its three phases.
    pub fn run_timed(
        &mut self,
        inputs: Vec<(String, Tensor)>,
    ) -> Result<(Vec<(String, Tensor)>, RunTimes), InferenceError> {
        let started = std::time::Instant::now();
        let mut values: Vec<(String, ort::value::DynValue)> = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let value = to_value(&name, tensor)?;
            values.push((name, value));
        }
        let converted = std::time::Instant::now();
        let binding = match &self.bound_outputs {
            Some(memory) => Some(self.bind(&values, memory)?),
            None => None,
        };
        let outputs = match &binding {
            Some(binding) => self.session.run_binding(binding)?,
            None => self.session.run(
                values
                    .into_iter()
                    .map(|(name, value)| (name, ort::session::SessionInputValue::from(value)))
                    .collect::<Vec<_>>(),
            )?,
        };
        let ran = std::time::Instant::now();
        let mut result = Vec::with_capacity(self.entry.outputs.len());
        for spec in &self.entry.outputs {
            let value = outputs
                .get(spec.name.as_str())
                .ok_or_else(|| InferenceError::Tensor {
                    name: spec.name.clone(),
                    problem: "the model did not produce it".to_owned(),
                })?;
            result.push((spec.name.clone(), from_value(spec, value)?));
        }
        let times = RunTimes {
            input: converted - started,
            infer: ran - converted,
            output: ran.elapsed(),
        };
        Ok((result, times))
    }
}

impl Model {
    /// An IO binding of `inputs` with every declared output put in `memory` (strings on
    /// the host).
    fn bind(
        &self,
        inputs: &[(String, ort::value::DynValue)],
        memory: &ort::memory::MemoryInfo<'static>,
    ) -> Result<ort::session::IoBinding, InferenceError> {
        let mut binding = self.session.create_binding()?;
        for (name, value) in inputs {
            binding.bind_input(name.as_str(), value)?;
        }
        let host = host_memory()?;
        for spec in &self.entry.outputs {
            let memory = if spec.dtype == DType::String {
                &host
            } else {
                memory
            };
            binding.bind_output_to_device(spec.name.as_str(), memory)?;
        }
        Ok(binding)
    }
}

/// Pinned host memory the GPU writes outputs into (device 0, the CUDA provider's).
fn pinned_output_memory() -> Result<ort::memory::MemoryInfo<'static>, InferenceError> {
    memory_info(AllocationDevice::CUDA_PINNED, MemoryType::CPUOutput)
}

/// Plain host memory.
pub fn host_memory() -> Result<ort::memory::MemoryInfo<'static>, InferenceError> {
    memory_info(AllocationDevice::CPU, MemoryType::Default)
}

/// Device-allocated memory of `device` (device 0), of `kind`.
fn memory_info(
    device: AllocationDevice<'static>,
    kind: MemoryType,
) -> Result<ort::memory::MemoryInfo<'static>, InferenceError> {
    Ok(ort::memory::MemoryInfo::new(
        device,
        0,
        ort::memory::AllocatorType::Device,
        kind,
    )?)
}

/// Where one run spent its time: preparing inputs, in ONNX Runtime, reading outputs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTimes {
    pub input: std::time::Duration,
    pub infer: std::time::Duration,
    pub output: std::time::Duration,
}

impl RunTimes {
    /// The whole run: converting inputs, inferring, converting outputs.
    pub fn total(&self) -> std::time::Duration {
        self.input + self.infer + self.output
    }
}

/// A tensor as ONNX Runtime takes it; the elements move, never copied twice.
fn to_value(name: &str, tensor: Tensor) -> Result<ort::value::DynValue, InferenceError> {
    let shape = shape_i64(name, &tensor.shape)?;
    Ok(match tensor.data {
        TensorData::Bool(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint8(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Uint64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int8(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Int64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Float16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Bfloat16(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Float32(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Float64(v) => OrtTensor::from_array((shape, v))?.into_dyn(),
        TensorData::Bytes(v) => {
            // ONNX Runtime's strings are C strings: UTF-8 without NUL bytes.
            let mut strings = Vec::with_capacity(v.len());
            for (index, bytes) in v.into_iter().enumerate() {
                let problem = if bytes.contains(&0) {
                    Some("holds a NUL byte")
                } else {
                    None
                };
                match (problem, String::from_utf8(bytes)) {
                    (None, Ok(text)) => strings.push(text),
                    (problem, _) => {
                        return Err(InferenceError::Tensor {
                            name: name.to_owned(),
                            problem: format!(
                                "element {index} {}; ONNX Runtime's string tensors take UTF-8 text without NUL bytes",
                                problem.unwrap_or("is not UTF-8")
                            ),
                        });
                    }
                }
            }
            OrtTensor::from_string_array((shape, strings.as_slice()))?.into_dyn()
        }
    })
}

/// An output of the declared type, read out of ONNX Runtime.
fn from_value(spec: &TensorSpec, value: &ort::value::DynValue) -> Result<Tensor, InferenceError> {
    fn take<T: ort::value::PrimitiveTensorElementType + Clone>(
        value: &ort::value::DynValue,
    ) -> Result<(Vec<u64>, Vec<T>), InferenceError> {
        let (shape, data) = value.try_extract_tensor::<T>()?;
        Ok((dims(shape), data.to_vec()))
    }
    fn dims(shape: &[i64]) -> Vec<u64> {
        shape.iter().map(|&d| d.max(0) as u64).collect()
    }
    let (shape, data) = match spec.dtype {
        DType::Bool => take(value).map(|(s, d)| (s, TensorData::Bool(d)))?,
        DType::Uint8 => take(value).map(|(s, d)| (s, TensorData::Uint8(d)))?,
        DType::Uint16 => take(value).map(|(s, d)| (s, TensorData::Uint16(d)))?,
        DType::Uint32 => take(value).map(|(s, d)| (s, TensorData::Uint32(d)))?,
        DType::Uint64 => take(value).map(|(s, d)| (s, TensorData::Uint64(d)))?,
        DType::Int8 => take(value).map(|(s, d)| (s, TensorData::Int8(d)))?,
        DType::Int16 => take(value).map(|(s, d)| (s, TensorData::Int16(d)))?,
        DType::Int32 => take(value).map(|(s, d)| (s, TensorData::Int32(d)))?,
        DType::Int64 => take(value).map(|(s, d)| (s, TensorData::Int64(d)))?,
        DType::Float16 => take(value).map(|(s, d)| (s, TensorData::Float16(d)))?,
        DType::Bfloat16 => take(value).map(|(s, d)| (s, TensorData::Bfloat16(d)))?,
        DType::Float32 => take(value).map(|(s, d)| (s, TensorData::Float32(d)))?,
        DType::Float64 => take(value).map(|(s, d)| (s, TensorData::Float64(d)))?,
        DType::String => {
            let (shape, strings) = value.try_extract_strings()?;
            (
                dims(shape),
                TensorData::Bytes(strings.into_iter().map(String::into_bytes).collect()),
            )
        }
    };
    Ok(Tensor { shape, data })
}

/// A golden vector with its tensors read (from the manifest, or from the payload files).
#[derive(Debug, Clone, PartialEq)]
pub struct Golden {
    pub name: String,
    pub inputs: Vec<(String, Tensor)>,
    pub outputs: BTreeMap<String, Tensor>,
    pub tolerance: Tolerance,
}

impl Golden {
    /// Reads every vector's tensors; files come from `payload`, the bundle's verified
    /// payload directory.
    pub fn read_all(vectors: &[GoldenVector], payload: &Path) -> Result<Vec<Self>, InferenceError> {
        let mut read = |path: &str| -> Result<Vec<u8>, String> {
            std::fs::read(payload.join(path)).map_err(|e| format!("cannot read {path:?}: {e}"))
        };
        vectors
            .iter()
            .map(|v| {
                let mut resolve = |side: &BTreeMap<String, GoldenTensor>| {
                    side.iter()
                        .map(|(name, t)| {
                            t.resolve(&mut read)
                                .map(|t| (name.clone(), t))
                                .map_err(|problem| InferenceError::Tensor {
                                    name: format!("golden[{}].{name}", v.name),
                                    problem,
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()
                };
                Ok(Self {
                    name: v.name.clone(),
                    inputs: resolve(&v.inputs)?,
                    outputs: resolve(&v.outputs)?.into_iter().collect(),
                    tolerance: v.tolerance,
                })
            })
            .collect()
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

/// Runs every golden vector. Float outputs pass within the vector's tolerance; integer,
/// boolean and `BYTES` outputs must be exactly equal.
pub fn check_golden(model: &mut Model, golden: &[Golden]) -> Vec<GoldenResult> {
    golden
        .iter()
        .map(|g| match model.run(g.inputs.clone()) {
            Err(e) => GoldenResult {
                name: g.name.clone(),
                passed: false,
                max_abs_error: f64::NAN,
                first_mismatch: None,
                error: Some(e.to_string()),
            },
            Ok(outputs) => compare(g, &outputs.into_iter().collect()),
        })
        .collect()
}

/// One vector's outputs against what it expects.
fn compare(g: &Golden, outputs: &BTreeMap<String, Tensor>) -> GoldenResult {
    let mut max_abs_error = 0.0f64;
    let mut first_mismatch = None;
    let mut error = None;
    for (name, want) in &g.outputs {
        let Some(got) = outputs.get(name) else {
            error = Some(format!("output {name:?} missing"));
            continue;
        };
        if got.shape != want.shape || got.dtype() != want.dtype() {
            error.get_or_insert_with(|| {
                format!(
                    "output {name:?} is {:?} {:?}, expected {:?} {:?}",
                    got.dtype(),
                    got.shape,
                    want.dtype(),
                    want.shape
                )
            });
            continue;
        }
        let float = want.dtype().is_float();
        for i in 0..want.data.len() {
            let (a, b) = (
                got.data.element_f64(i).unwrap_or(f64::NAN),
                want.data.element_f64(i).unwrap_or(f64::NAN),
            );
            let within = if float {
                let diff = (a - b).abs();
                max_abs_error = max_abs_error.max(diff);
                // NaN fails too: it is never within tolerance.
                diff <= g.tolerance.abs + g.tolerance.rel * b.abs()
            } else {
                got.data.element_eq(&want.data, i)
            };
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
