//! The Open Inference Protocol (`KServe` v2, as Triton speaks it): inference requests and
//! responses apart from their transport: the JSON body with the
//! binary tensor data extension, inputs checked against the model, outputs chosen as
//! asked. Every byte here comes from a local client and is treated as untrusted: sizes
//! are checked before they are used and every refusal names the input and the problem.
//!
//! Binary tensor data (Triton's extension): the body is a JSON header of
//! `Inference-Header-Content-Length` bytes, then the inputs that carry
//! `parameters.binary_data_size` in the order they are listed, back to back. An output
//! comes back binary when its `parameters.binary_data` says so, or, when it does not say,
//! when the request's `parameters.binary_data_output` does.

use crate::bundle::manifest::{Dim, Tensor, TensorSpec, check_tensor};
use crate::tensor::{JsonValues, TensorData, datatype_name, parse_datatype};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What kind of refusal an [`ApiError`] is; each transport maps it to its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: fix it.
    BadRequest,
    /// No such model, version or output.
    NotFound,
    /// Nothing can serve it right now.
    Unavailable,
    /// The model or the node failed.
    Internal,
    /// Something the protocol allows that this endpoint does not do.
    Unsupported,
}

/// A refused or failed request: the protocol's `{"error": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }
}

/// One input as the request gives it, decoded but not yet checked against the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    pub shape: Vec<u64>,
    pub data: TensorData,
}

/// An output the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    /// `parameters.binary_data`; `None` follows the request's `binary_data_output`.
    pub binary: Option<bool>,
}

/// A decoded inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<String>,
    pub inputs: Vec<Input>,
    /// Empty: every output, in the model's order.
    pub outputs: Vec<RequestedOutput>,
    /// `parameters.binary_data_output`.
    pub binary_output: bool,
}

/// An output to send, and whether as binary data.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub name: String,
    pub tensor: Tensor,
    pub binary: bool,
}

#[derive(Deserialize)]
struct RequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

#[derive(Deserialize)]
struct InputJson {
    name: String,
    shape: Vec<u64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    #[serde(default)]
    data: Option<JsonValues>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// Parameters this endpoint does not implement: refused, never ignored, since ignoring
/// them would answer something other than what was asked.
const UNSUPPORTED: [(&str, &str); 3] = [
    ("shared_memory_region", "shared-memory tensors"),
    ("classification", "the classification extension"),
    ("sequence_id", "sequence batching"),
];

/// Refuses a request (or one of its tensors, `whose`) that carries a parameter this
/// endpoint does not implement; `has` says whether a parameter is present, whatever the
/// transport's map.
pub fn refuse_unsupported(has: impl Fn(&str) -> bool, whose: &str) -> Result<(), ApiError> {
    for (key, what) in UNSUPPORTED {
        if has(key) {
            return Err(ApiError::new(
                ErrorKind::Unsupported,
                format!(
                    "{whose}: parameter {key:?} asks for {what}, which this endpoint does not provide"
                ),
            ));
        }
    }
    Ok(())
}

fn flag(parameters: &Map<String, Value>, key: &str, whose: &str) -> Result<Option<bool>, ApiError> {
    match parameters.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::bad(format!(
            "{whose}: parameter {key:?} must be true or false, not {other}"
        ))),
    }
}

/// Decodes an HTTP request body: JSON, or a JSON header of `header_length` bytes then
/// binary tensor data.
pub fn decode_http(body: &[u8], header_length: Option<usize>) -> Result<Request, ApiError> {
    let (header, mut binary) = match header_length {
        None => (body, &[][..]),
        Some(n) if n <= body.len() => body.split_at(n),
        Some(n) => {
            return Err(ApiError::bad(format!(
                "Inference-Header-Content-Length is {n}, but the body is only {} bytes",
                body.len()
            )));
        }
    };
    let json: RequestJson = serde_json::from_slice(header)
        .map_err(|e| ApiError::bad(format!("the request is not a valid inference request: {e}")))?;
    refuse_unsupported(|k| json.parameters.contains_key(k), "the request")?;
    let binary_output =
        flag(&json.parameters, "binary_data_output", "the request")?.unwrap_or(false);
    let mut inputs = Vec::with_capacity(json.inputs.len());
    for input in json.inputs {
        let whose = format!("input {:?}", input.name);
        refuse_unsupported(|k| input.parameters.contains_key(k), &whose)?;
        let dtype = parse_datatype(&input.datatype).ok_or_else(|| {
            ApiError::bad(format!(
                "{whose}: datatype {:?} is not one the protocol names (BOOL, UINT8…UINT64, INT8…INT64, FP16, BF16, FP32, FP64, BYTES)",
                input.datatype
            ))
        })?;
        let size = match input.parameters.get("binary_data_size") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        ApiError::bad(format!(
                            "{whose}: binary_data_size must be a byte count, not {v}"
                        ))
                    })?,
            ),
        };
        let data = match (input.data, size) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(format!(
                    "{whose}: has both data and binary_data_size; send one"
                )));
            }
            (None, None) => {
                return Err(ApiError::bad(format!(
                    "{whose}: has no data (give data, or binary_data_size and the bytes)"
                )));
            }
            (Some(values), None) => TensorData::from_json(dtype, &values.0)
                .map_err(|e| ApiError::bad(format!("{whose}: {e}")))?,
            (None, Some(size)) => {
                if size > binary.len() {
                    return Err(ApiError::bad(format!(
                        "{whose}: binary_data_size is {size}, but only {} bytes of binary data remain",
                        binary.len()
                    )));
                }
                let (mine, rest) = binary.split_at(size);
                binary = rest;
                TensorData::from_le_bytes(dtype, mine)
                    .map_err(|e| ApiError::bad(format!("{whose}: {e}")))?
            }
        };
        inputs.push(Input {
            name: input.name,
            shape: input.shape,
            data,
        });
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!(
            "{} bytes of binary data follow the inputs' binary_data_size; the request is malformed",
            binary.len()
        )));
    }
    let mut outputs = Vec::with_capacity(json.outputs.len());
    for output in json.outputs {
        let whose = format!("output {:?}", output.name);
        refuse_unsupported(|k| output.parameters.contains_key(k), &whose)?;
        outputs.push(RequestedOutput {
            binary: flag(&output.parameters, "binary_data", &whose)?,
            name: output.name,
        });
    }
    Ok(Request {
        id: json.id,
        inputs,
        outputs,
        binary_output,
    })
}

/// Checks inputs against the model (known, each once, type, shape, element count) and
/// returns them in the model's order, with the batch size the request holds.
pub fn model_inputs(
    specs: &[TensorSpec],
    inputs: Vec<Input>,
) -> Result<(Vec<(String, Tensor)>, u64), ApiError> {
    let mut given: Vec<Option<Tensor>> = vec![None; specs.len()];
    for input in inputs {
        let Some(i) = specs.iter().position(|s| s.name == input.name) else {
            return Err(ApiError::bad(format!(
                "the model has no input {:?} (its inputs: {})",
                input.name,
                names(specs)
            )));
        };
        if given[i].is_some() {
            return Err(ApiError::bad(format!(
                "input {:?} is given twice",
                input.name
            )));
        }
        let tensor = Tensor {
            shape: input.shape,
            data: input.data,
        };
        check_tensor(&specs[i], &tensor)
            .map_err(|problem| ApiError::bad(format!("input {:?}: {problem}", input.name)))?;
        given[i] = Some(tensor);
    }
    let mut ordered = Vec::with_capacity(given.len());
    for (spec, tensor) in specs.iter().zip(given) {
        let tensor =
            tensor.ok_or_else(|| ApiError::bad(format!("input {:?} is missing", spec.name)))?;
        ordered.push((spec.name.clone(), tensor));
    }
    let batch_size = if batches(specs) {
        ordered
            .first()
            .and_then(|(_, t)| t.shape.first().copied())
            .unwrap_or(1)
    } else {
        1
    };
    Ok((ordered, batch_size))
}

/// A declared shape as the protocol writes it: -1 for a dimension the model leaves open.
pub fn protocol_shape(shape: &[Dim]) -> Vec<i64> {
    shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => i64::try_from(*n).unwrap_or(i64::MAX),
            Dim::Named(_) => -1,
        })
        .collect()
}

/// Whether every input leaves its first dimension open: the batch dimension.
pub fn batches(specs: &[TensorSpec]) -> bool {
    !specs.is_empty()
        && specs
            .iter()
            .all(|s| matches!(s.shape.first(), Some(Dim::Named(_))))
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{:?}", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that the requested outputs exist, before the model runs.
pub fn check_requested(
    specs: &[TensorSpec],
    requested: &[RequestedOutput],
) -> Result<(), ApiError> {
    for (i, r) in requested.iter().enumerate() {
        if !specs.iter().any(|s| s.name == r.name) {
            return Err(ApiError::bad(format!(
                "the model has no output {:?} (its outputs: {})",
                r.name,
                names(specs)
            )));
        }
        if requested[..i].iter().any(|earlier| earlier.name == r.name) {
            return Err(ApiError::bad(format!(
                "output {:?} is requested twice",
                r.name
            )));
        }
    }
    Ok(())
}

/// The outputs to send: those requested, in the order requested, else all of them in the
/// model's order; binary where asked.
pub fn choose_outputs(
    outputs: Vec<(String, Tensor)>,
    requested: &[RequestedOutput],
    binary_output: bool,
) -> Vec<Chosen> {
    if requested.is_empty() {
        return outputs
            .into_iter()
            .map(|(name, tensor)| Chosen {
                name,
                tensor,
                binary: binary_output,
            })
            .collect();
    }
    let mut outputs: Vec<Option<(String, Tensor)>> = outputs.into_iter().map(Some).collect();
    requested
        .iter()
        .filter_map(|r| {
            let slot = outputs
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|(n, _)| *n == r.name))?;
            let (name, tensor) = slot.take()?;
            Some(Chosen {
                name,
                tensor,
                binary: r.binary.unwrap_or(binary_output),
            })
        })
        .collect()
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputOut<'a>>,
}

#[derive(Serialize)]
struct OutputOut<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [u64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a TensorData>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

/// The HTTP response body, and the JSON header's length when binary data follows it.
pub fn encode_http(
    (model_name, model_version): (&str, &str),
    id: Option<&str>,
    chosen: &[Chosen],
) -> Result<(Vec<u8>, Option<usize>), ApiError> {
    for c in chosen.iter().filter(|c| !c.binary) {
        c.tensor
            .data
            .check_json()
            .map_err(|e| ApiError::bad(format!("output {:?}: {e}", c.name)))?;
    }
    let response = ResponseJson {
        model_name,
        model_version,
        id,
        outputs: chosen
            .iter()
            .map(|c| OutputOut {
                name: &c.name,
                datatype: datatype_name(c.tensor.dtype()),
                shape: &c.tensor.shape,
                parameters: c.binary.then(|| BinarySize {
                    binary_data_size: c.tensor.data.binary_len(),
                }),
                data: (!c.binary).then_some(&c.tensor.data),
            })
            .collect(),
    };
    let mut body = serde_json::to_vec(&response).map_err(|e| {
        ApiError::new(
            ErrorKind::Internal,
            format!("cannot write the response: {e}"),
        )
    })?;
    if !chosen.iter().any(|c| c.binary) {
        return Ok((body, None));
    }
    let header = body.len();
    for c in chosen.iter().filter(|c| c.binary) {
        c.tensor.data.write_le_bytes(&mut body);
    }
    Ok((body, Some(header)))
}

#[cfg(test)]
mod tests;
