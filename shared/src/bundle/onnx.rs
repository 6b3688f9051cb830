//! Reads a model's inputs and outputs from an ONNX file (a `ModelProto` protobuf), so
//! bundle creation declares exactly what the model takes and returns.
//!
//! Only the fields needed are decoded; everything else — including the weights, which
//! may be gigabytes — is skipped while streaming, never held in memory. Fields read:
//! `ModelProto.graph` (7) → `GraphProto.initializer` (5, for `TensorProto.name` = 8),
//! `input` (11), `output` (12) → `ValueInfoProto.name` (1), `type` (2) →
//! `TypeProto.tensor_type` (1) → `elem_type` (1), `shape` (2) → `dim` (1) →
//! `dim_value` (1) | `dim_param` (2). Graph inputs that are initializers (older exporters
//! list weights as inputs) are not model inputs.

use std::collections::BTreeSet;
use std::io::{self, Read};

use super::manifest::{DType, Dim, TensorSpec};

/// Largest `ValueInfoProto` (an input or output declaration) read into memory.
const MAX_VALUE_INFO: u64 = 64 * 1024;
/// Largest name read.
const MAX_NAME: u64 = 4096;
/// Most graph inputs or outputs accepted.
const MAX_IO: usize = 1024;
/// Deepest dimension list accepted.
const MAX_RANK: usize = 64;

/// Why a model's signature could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("reading the model failed")]
    Io(#[source] io::Error),
    #[error("not an ONNX model: {0}")]
    Malformed(&'static str),
    #[error("the model has no graph")]
    NoGraph,
    #[error("model {side} {name:?} is not a tensor; Gantry serves tensor inputs and outputs")]
    NotATensor { side: &'static str, name: String },
    #[error("model {side} {name:?} has element type {code}, which Gantry does not know")]
    UnknownElementType {
        side: &'static str,
        name: String,
        code: i64,
    },
    #[error("the model declares more than {MAX_IO} {side}")]
    TooMany { side: &'static str },
}

impl From<io::Error> for OnnxError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Self::Malformed("truncated protobuf")
        } else {
            Self::Io(e)
        }
    }
}

/// The inputs and outputs of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// A protobuf reader over at most `remaining` bytes of `inner`.
struct Fields<'r, R> {
    inner: &'r mut R,
    remaining: u64,
    /// Whether the end of `inner` is a valid end (top level: the file has no length).
    open_ended: bool,
}

#[derive(Debug, Clone, Copy)]
enum Wire {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

impl<R: Read> Fields<'_, R> {
    fn byte(&mut self) -> Result<Option<u8>, OnnxError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut b = [0u8; 1];
        match self.inner.read(&mut b)? {
            0 if self.open_ended => Ok(None),
            0 => Err(OnnxError::Malformed("truncated protobuf")),
            _ => {
                self.remaining -= 1;
                Ok(Some(b[0]))
            }
        }
    }

    fn varint(&mut self) -> Result<u64, OnnxError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self
                .byte()?
                .ok_or(OnnxError::Malformed("truncated varint"))?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(OnnxError::Malformed("varint longer than 10 bytes"))
    }

    /// The next field's number and wire type; `None` at the end.
    fn next(&mut self) -> Result<Option<(u64, Wire)>, OnnxError> {
        let Some(first) = self.byte()? else {
            return Ok(None);
        };
        let key = if first & 0x80 == 0 {
            u64::from(first)
        } else {
            let rest = self.varint()?;
            u64::from(first & 0x7f)
                | rest
                    .checked_shl(7)
                    .ok_or(OnnxError::Malformed("field key overflows"))?
        };
        let wire = match key & 7 {
            0 => Wire::Varint,
            1 => Wire::Fixed64,
            2 => Wire::Len,
            5 => Wire::Fixed32,
            _ => return Err(OnnxError::Malformed("unsupported protobuf wire type")),
        };
        Ok(Some((key >> 3, wire)))
    }

    fn take(&mut self, n: u64) -> Result<(), OnnxError> {
        if n > self.remaining {
            return Err(OnnxError::Malformed("field longer than its container"));
        }
        let copied = io::copy(&mut (&mut *self.inner).take(n), &mut io::sink())?;
        if copied != n {
            return Err(OnnxError::Malformed("truncated protobuf"));
        }
        self.remaining -= n;
        Ok(())
    }

    fn skip(&mut self, wire: Wire) -> Result<(), OnnxError> {
        match wire {
            Wire::Varint => self.varint().map(drop),
            Wire::Fixed64 => self.take(8),
            Wire::Fixed32 => self.take(4),
            Wire::Len => {
                let n = self.varint()?;
                self.take(n)
            }
        }
    }

    /// A nested message of the current length-delimited field.
    fn nested(&mut self) -> Result<Fields<'_, R>, OnnxError> {
        let n = self.varint()?;
        if n > self.remaining {
            return Err(OnnxError::Malformed("message longer than its container"));
        }
        self.remaining -= n;
        Ok(Fields {
            inner: &mut *self.inner,
            remaining: n,
            open_ended: false,
        })
    }

    fn bytes(&mut self, max: u64) -> Result<Vec<u8>, OnnxError> {
        let n = self.varint()?;
        if n > max {
            return Err(OnnxError::Malformed("field larger than accepted"));
        }
        if n > self.remaining {
            return Err(OnnxError::Malformed("field longer than its container"));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner.read_exact(&mut buf)?;
        self.remaining -= n;
        Ok(buf)
    }

    fn string(&mut self, max: u64) -> Result<String, OnnxError> {
        String::from_utf8(self.bytes(max)?).map_err(|_| OnnxError::Malformed("name is not UTF-8"))
    }
}

struct RawValueInfo {
    name: String,
    /// `None` when the type is not a tensor.
    tensor: Option<(i64, Vec<Dim>)>,
}

/// Reads the inputs and outputs of the ONNX model in `reader`.
pub fn read_signature<R: Read>(mut reader: R) -> Result<ModelSignature, OnnxError> {
    let mut top = Fields {
        inner: &mut reader,
        remaining: u64::MAX,
        open_ended: true,
    };
    let mut graph_found = false;
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let mut initializers = BTreeSet::new();
    while let Some((field, wire)) = top.next()? {
        match (field, wire) {
            (7, Wire::Len) => {
                graph_found = true;
                let mut graph = top.nested()?;
                while let Some((field, wire)) = graph.next()? {
                    match (field, wire) {
                        (5, Wire::Len) => {
                            let mut tensor = graph.nested()?;
                            while let Some((field, wire)) = tensor.next()? {
                                if (field, matches!(wire, Wire::Len)) == (8, true) {
                                    initializers.insert(tensor.string(MAX_NAME)?);
                                } else {
                                    tensor.skip(wire)?;
                                }
                            }
                        }
                        (11 | 12, Wire::Len) => {
                            let side = if field == 11 {
                                &mut inputs
                            } else {
                                &mut outputs
                            };
                            if side.len() >= MAX_IO {
                                return Err(OnnxError::TooMany {
                                    side: if field == 11 { "inputs" } else { "outputs" },
                                });
                            }
                            let bytes = graph.bytes(MAX_VALUE_INFO)?;
                            side.push(parse_value_info(&bytes)?);
                        }
                        _ => graph.skip(wire)?,
                    }
                }
            }
            _ => top.skip(wire)?,
        }
    }
    if !graph_found {
        return Err(OnnxError::NoGraph);
    }
    let convert = |raw: RawValueInfo, side: &'static str| -> Result<TensorSpec, OnnxError> {
        let (code, shape) = raw.tensor.ok_or_else(|| OnnxError::NotATensor {
            side,
            name: raw.name.clone(),
        })?;
        let dtype = DType::from_onnx(code).ok_or_else(|| OnnxError::UnknownElementType {
            side,
            name: raw.name.clone(),
            code,
        })?;
        Ok(TensorSpec {
            name: raw.name,
            dtype,
            shape,
        })
    };
    let inputs = inputs
        .into_iter()
        .filter(|i| !initializers.contains(&i.name))
        .map(|i| convert(i, "input"))
        .collect::<Result<_, _>>()?;
    let outputs = outputs
        .into_iter()
        .map(|o| convert(o, "output"))
        .collect::<Result<_, _>>()?;
    Ok(ModelSignature { inputs, outputs })
}

fn parse_value_info(bytes: &[u8]) -> Result<RawValueInfo, OnnxError> {
    let mut reader = bytes;
    let mut info = Fields {
        inner: &mut reader,
        remaining: bytes.len() as u64,
        open_ended: false,
    };
    let mut name = String::new();
    let mut tensor = None;
    while let Some((field, wire)) = info.next()? {
        match (field, wire) {
            (1, Wire::Len) => name = info.string(MAX_NAME)?,
            (2, Wire::Len) => {
                let mut ty = info.nested()?;
                while let Some((field, wire)) = ty.next()? {
                    if let (1, Wire::Len) = (field, wire) {
                        tensor = Some(parse_tensor_type(&mut ty.nested()?)?);
                    } else {
                        ty.skip(wire)?;
                    }
                }
            }
            _ => info.skip(wire)?,
        }
    }
    Ok(RawValueInfo { name, tensor })
}

fn parse_tensor_type<R: Read>(t: &mut Fields<'_, R>) -> Result<(i64, Vec<Dim>), OnnxError> {
    let mut elem_type = 0i64;
    let mut dims = Vec::new();
    while let Some((field, wire)) = t.next()? {
        match (field, wire) {
            (1, Wire::Varint) => elem_type = t.varint()?.cast_signed(),
            (2, Wire::Len) => {
                let mut shape = t.nested()?;
                while let Some((field, wire)) = shape.next()? {
                    if let (1, Wire::Len) = (field, wire) {
                        if dims.len() >= MAX_RANK {
                            return Err(OnnxError::Malformed("more dimensions than accepted"));
                        }
                        dims.push(parse_dim(&mut shape.nested()?)?);
                    } else {
                        shape.skip(wire)?;
                    }
                }
            }
            _ => t.skip(wire)?,
        }
    }
    Ok((elem_type, dims))
}

fn parse_dim<R: Read>(d: &mut Fields<'_, R>) -> Result<Dim, OnnxError> {
    let mut dim = Dim::Named("?".to_owned());
    while let Some((field, wire)) = d.next()? {
        match (field, wire) {
            (1, Wire::Varint) => {
                let value = d.varint()?.cast_signed();
                dim = if value >= 0 {
                    Dim::Fixed(value.cast_unsigned())
                } else {
                    Dim::Named("?".to_owned())
                };
            }
            (2, Wire::Len) => {
                let name = d.string(MAX_NAME)?;
                dim = Dim::Named(if name.is_empty() {
                    "?".to_owned()
                } else {
                    name
                });
            }
            _ => d.skip(wire)?,
        }
    }
    Ok(dim)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protobuf encoding helpers for hand-built models.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn len_field(field: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }
    fn varint_field(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }
    fn value_info(name: &str, elem: u64, dims: &[Result<u64, &str>]) -> Vec<u8> {
        let mut shape = Vec::new();
        for d in dims {
            let mut dim = Vec::new();
            match d {
                Ok(v) => varint_field(1, *v, &mut dim),
                Err(p) => len_field(2, p.as_bytes(), &mut dim),
            }
            len_field(1, &dim, &mut shape);
        }
        let mut tensor = Vec::new();
        varint_field(1, elem, &mut tensor);
        len_field(2, &shape, &mut tensor);
        let mut ty = Vec::new();
        len_field(1, &tensor, &mut ty);
        let mut vi = Vec::new();
        len_field(1, name.as_bytes(), &mut vi);
        len_field(2, &ty, &mut vi);
        vi
    }

    fn model() -> Vec<u8> {
        let mut init = Vec::new();
        len_field(8, b"W", &mut init);
        len_field(9, &[0u8; 4096], &mut init); // raw_data, skipped
        let mut graph = Vec::new();
        len_field(1, b"node bytes", &mut graph);
        len_field(5, &init, &mut graph);
        len_field(11, &value_info("x", 1, &[Err("batch"), Ok(4)]), &mut graph);
        len_field(11, &value_info("W", 1, &[Ok(4), Ok(2)]), &mut graph);
        len_field(12, &value_info("y", 1, &[Err("batch"), Ok(2)]), &mut graph);
        let mut m = Vec::new();
        varint_field(1, 8, &mut m); // ir_version
        len_field(2, b"gantry-test", &mut m); // producer_name
        len_field(7, &graph, &mut m);
        m
    }

    #[test]
    fn inputs_outputs_and_shapes_are_read_and_initializers_skipped() {
        let sig = read_signature(&model()[..]).unwrap();
        assert_eq!(
            sig.inputs,
            vec![TensorSpec {
                name: "x".into(),
                dtype: DType::Float32,
                shape: vec![Dim::Named("batch".into()), Dim::Fixed(4)]
            }]
        );
        assert_eq!(sig.outputs[0].name, "y");
        assert_eq!(
            sig.outputs[0].shape,
            vec![Dim::Named("batch".into()), Dim::Fixed(2)]
        );
    }

    #[test]
    fn generated_test_model_is_read() {
        let bytes = include_bytes!("../../../testdata/models/tiny_linear.onnx");
        let sig = read_signature(&bytes[..]).unwrap();
        assert_eq!(
            sig.inputs.len(),
            1,
            "the weight W is listed as an input but is an initializer"
        );
        assert_eq!(sig.inputs[0].name, "x");
        assert_eq!(
            sig.inputs[0].shape,
            vec![Dim::Named("batch".into()), Dim::Fixed(4)]
        );
        assert_eq!(
            sig.outputs[0].shape,
            vec![Dim::Named("batch".into()), Dim::Fixed(2)]
        );
    }

    #[test]
    fn truncated_model_is_refused() {
        let m = model();
        for cut in [3, m.len() / 2, m.len() - 1] {
            assert!(read_signature(&m[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn not_a_model_is_refused() {
        assert!(matches!(read_signature(&b""[..]), Err(OnnxError::NoGraph)));
        assert!(read_signature(&b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..]).is_err());
        assert!(read_signature(&b"hello world, this is text"[..]).is_err());
    }

    #[test]
    fn nested_length_beyond_container_is_refused() {
        let mut m = Vec::new();
        varint(7 << 3 | 2, &mut m);
        varint(10, &mut m);
        len_field(11, &[0u8; 50], &mut m);
        assert!(matches!(
            read_signature(&m[..]),
            Err(OnnxError::Malformed(_))
        ));
    }
}
