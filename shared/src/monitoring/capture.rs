//! Payload capture for retraining loops: a sampled request and the answer a node gave
//! it ([`CapturedPair`]), and the label fed back for a captured request
//! ([`CaptureLabel`], carried in the feedback window that joined it).
//!
//! A pair travels from the node's buffer to the controller as an event record; the
//! controller decodes it (untrusted bytes: fuzzed by `captured_pair`) before it keeps it.
//! Tensors keep their exact bits: elements as the binary tensor extension carries them
//! (little-endian; `BYTES` length-prefixed), in base64.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::bundle::manifest::Tensor;
use crate::tensor::{self, TensorData};

/// Largest pair a node captures (its JSON): a larger one is counted, not captured, so
/// every pair fits a telemetry batch and an admin answer.
pub const MAX_PAIR_BYTES: usize = 1 << 20;

/// Most elements a captured tensor's shape may announce.
const MAX_ELEMENTS: u64 = 1 << 28;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CaptureError {
    #[error("captured tensor {name}: unknown datatype {datatype}")]
    Datatype { name: String, datatype: String },
    #[error("captured tensor {name}: its data is not base64 ({message})")]
    Base64 { name: String, message: String },
    #[error("captured tensor {name}: {source}")]
    Data {
        name: String,
        source: tensor::TensorError,
    },
    #[error("captured tensor {name}: shape {shape:?} holds {wanted} elements, its data {given}")]
    Shape {
        name: String,
        shape: Vec<u64>,
        wanted: String,
        given: usize,
    },
    #[error("the captured pair does not read: {0}")]
    Json(String),
}

/// One tensor of a captured request or answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedTensor {
    pub name: String,
    /// The protocol's name of its element type (`FP32`, `INT64`, `BYTES`, …).
    pub datatype: String,
    pub shape: Vec<u64>,
    /// The elements' binary form, base64.
    pub data: String,
}

impl CapturedTensor {
    pub fn new(name: &str, t: &Tensor) -> Self {
        let mut bytes = Vec::new();
        t.data.write_le_bytes(&mut bytes);
        Self {
            name: name.to_owned(),
            datatype: tensor::datatype_name(t.dtype()).to_owned(),
            shape: t.shape.clone(),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The tensor, checked: a known datatype, well-formed data, as many elements as its
    /// shape holds.
    pub fn tensor(&self) -> Result<Tensor, CaptureError> {
        let dtype =
            tensor::parse_datatype(&self.datatype).ok_or_else(|| CaptureError::Datatype {
                name: self.name.clone(),
                datatype: self.datatype.clone(),
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| CaptureError::Base64 {
                name: self.name.clone(),
                message: e.to_string(),
            })?;
        let data =
            TensorData::from_le_bytes(dtype, &bytes).map_err(|source| CaptureError::Data {
                name: self.name.clone(),
                source,
            })?;
        let wanted = self
            .shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS);
        if wanted != Some(data.len() as u64) {
            return Err(CaptureError::Shape {
                name: self.name.clone(),
                shape: self.shape.clone(),
                wanted: wanted.map_or_else(|| "too many".to_owned(), |n| n.to_string()),
                given: data.len(),
            });
        }
        Ok(Tensor {
            shape: self.shape.clone(),
            data,
        })
    }
}

/// A sampled request to a served model and the answer it got, as the node captured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedPair {
    pub model: String,
    pub version: String,
    /// Bundle id, `sha256:<hex>`.
    pub bundle: String,
    pub at_ms: u64,
    /// The request's `id`, which feedback names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub inputs: Vec<CapturedTensor>,
    pub outputs: Vec<CapturedTensor>,
    /// Inputs the node left out (its `capture_redact` setting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

impl CapturedPair {
    /// Reads a pair from a node and checks every tensor decodes.
    pub fn parse(body: &str) -> Result<Self, CaptureError> {
        let pair: Self =
            serde_json::from_str(body).map_err(|e| CaptureError::Json(e.to_string()))?;
        pair.check()?;
        Ok(pair)
    }

    /// Every tensor decodes to as many elements as its shape holds.
    pub fn check(&self) -> Result<(), CaptureError> {
        for t in self.inputs.iter().chain(&self.outputs) {
            t.tensor()?;
        }
        Ok(())
    }
}

/// The label fed back for a captured request: joined on the node, carried in the
/// feedback window that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureLabel {
    pub id: String,
    /// The bundle that answered the request.
    pub bundle: String,
    pub truth: super::quality::Truth,
}
