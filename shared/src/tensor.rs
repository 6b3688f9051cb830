//! Tensor values of every element type the Open Inference Protocol names, and their two
//! encodings: JSON (the protocol's `data` arrays, golden vectors) and raw little-endian
//! bytes (the binary tensor data extension, golden vector files).
//!
//! **Lossless by construction.** Integers are kept as integers end to end (an `INT64`
//! above 2⁵³ stays exact); a JSON number given for an integer type must be that integer
//! exactly; a float type takes the nearest value and refuses one beyond its range, never
//! saturating or overflowing to infinity. Floats are written as the exact decimal of
//! their value widened to `f64`, which reads back to the same bits. NaN and ±∞ have no
//! JSON form: they travel only as binary data, and a JSON answer that would hold one is
//! refused naming the element.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

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
    /// Whether elements are floating point (FP16, BF16, FP32, FP64).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            Self::Float16 | Self::Bfloat16 | Self::Float32 | Self::Float64
        )
    }

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

/// Why values could not become a tensor, or a tensor could not be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    #[error("element {index}: {value} is out of range for {dtype}")]
    OutOfRange {
        index: usize,
        value: String,
        dtype: &'static str,
    },
    #[error("element {index}: {value} is not an integer, and {dtype} holds integers")]
    NotInteger {
        index: usize,
        value: String,
        dtype: &'static str,
    },
    #[error("element {index}: a {found} where {dtype} needs {wanted}")]
    WrongKind {
        index: usize,
        found: &'static str,
        dtype: &'static str,
        wanted: &'static str,
    },
    #[error("{bytes} bytes of binary data are not a whole number of {size}-byte {dtype} elements")]
    BinarySize {
        bytes: usize,
        size: usize,
        dtype: &'static str,
    },
    #[error(
        "binary BYTES data is cut short at element {index} (each element is a 4-byte little-endian length, then that many bytes)"
    )]
    BytesTruncated { index: usize },
    #[error("element {index}: byte {byte} is not a BOOL (0 or 1)")]
    BoolByte { index: usize, byte: u8 },
    #[error(
        "element {index} is {value}, which JSON cannot carry (ask for binary data: binary_data_output)"
    )]
    NonFinite { index: usize, value: f64 },
    #[error(
        "element {index} is not UTF-8, which a JSON string cannot carry (ask for binary data: binary_data_output)"
    )]
    NotUtf8 { index: usize },
}

/// A tensor's elements, row-major, in their own type.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Float16(Vec<half::f16>),
    Bfloat16(Vec<half::bf16>),
    Float32(Vec<f32>),
    Float64(Vec<f64>),
    /// `BYTES`: each element a byte string.
    Bytes(Vec<Vec<u8>>),
}

/// The protocol's name of an element type (`FP32`, `BYTES`, …).
pub fn datatype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::Bool => "BOOL",
        DType::Uint8 => "UINT8",
        DType::Uint16 => "UINT16",
        DType::Uint32 => "UINT32",
        DType::Uint64 => "UINT64",
        DType::Int8 => "INT8",
        DType::Int16 => "INT16",
        DType::Int32 => "INT32",
        DType::Int64 => "INT64",
        DType::Float16 => "FP16",
        DType::Float32 => "FP32",
        DType::Float64 => "FP64",
        DType::Bfloat16 => "BF16",
        DType::String => "BYTES",
    }
}

/// The element type the protocol names `name`, if any.
pub fn parse_datatype(name: &str) -> Option<DType> {
    ALL_DTYPES
        .iter()
        .copied()
        .find(|&d| datatype_name(d) == name)
}

/// Every element type, in the protocol's order.
pub const ALL_DTYPES: [DType; 14] = [
    DType::Bool,
    DType::Uint8,
    DType::Uint16,
    DType::Uint32,
    DType::Uint64,
    DType::Int8,
    DType::Int16,
    DType::Int32,
    DType::Int64,
    DType::Float16,
    DType::Float32,
    DType::Float64,
    DType::Bfloat16,
    DType::String,
];

/// Bytes per element in binary form; `None` for `BYTES` (length-prefixed).
pub fn element_size(dtype: DType) -> Option<usize> {
    Some(match dtype {
        DType::Bool | DType::Uint8 | DType::Int8 => 1,
        DType::Uint16 | DType::Int16 | DType::Float16 | DType::Bfloat16 => 2,
        DType::Uint32 | DType::Int32 | DType::Float32 => 4,
        DType::Uint64 | DType::Int64 | DType::Float64 => 8,
        DType::String => return None,
    })
}

/// Applies `$body` to the vector inside any variant, bound as `$v`.
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Float16($v) => $body,
            TensorData::Bfloat16($v) => $body,
            TensorData::Float32($v) => $body,
            TensorData::Float64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

/// Builds the same variant from `$body`, with the vector inside bound as `$v`.
macro_rules! map_same {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Uint8($v) => TensorData::Uint8($body),
            TensorData::Uint16($v) => TensorData::Uint16($body),
            TensorData::Uint32($v) => TensorData::Uint32($body),
            TensorData::Uint64($v) => TensorData::Uint64($body),
            TensorData::Int8($v) => TensorData::Int8($body),
            TensorData::Int16($v) => TensorData::Int16($body),
            TensorData::Int32($v) => TensorData::Int32($body),
            TensorData::Int64($v) => TensorData::Int64($body),
            TensorData::Float16($v) => TensorData::Float16($body),
            TensorData::Bfloat16($v) => TensorData::Bfloat16($body),
            TensorData::Float32($v) => TensorData::Float32($body),
            TensorData::Float64($v) => TensorData::Float64($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
}

/// Builds the variant of `$dtype` from `$f($arg…)`, a generic `Result<Vec<T>, _>`.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident, $($arg:expr),*) => {
        match $dtype {
            DType::Bool => TensorData::Bool($f($($arg),*)?),
            DType::Uint8 => TensorData::Uint8($f($($arg),*)?),
            DType::Uint16 => TensorData::Uint16($f($($arg),*)?),
            DType::Uint32 => TensorData::Uint32($f($($arg),*)?),
            DType::Uint64 => TensorData::Uint64($f($($arg),*)?),
            DType::Int8 => TensorData::Int8($f($($arg),*)?),
            DType::Int16 => TensorData::Int16($f($($arg),*)?),
            DType::Int32 => TensorData::Int32($f($($arg),*)?),
            DType::Int64 => TensorData::Int64($f($($arg),*)?),
            DType::Float16 => TensorData::Float16($f($($arg),*)?),
            DType::Bfloat16 => TensorData::Bfloat16($f($($arg),*)?),
            DType::Float32 => TensorData::Float32($f($($arg),*)?),
            DType::Float64 => TensorData::Float64($f($($arg),*)?),
            DType::String => TensorData::Bytes($f($($arg),*)?),
        }
    };
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            Self::Bool(_) => DType::Bool,
            Self::Uint8(_) => DType::Uint8,
            Self::Uint16(_) => DType::Uint16,
            Self::Uint32(_) => DType::Uint32,
            Self::Uint64(_) => DType::Uint64,
            Self::Int8(_) => DType::Int8,
            Self::Int16(_) => DType::Int16,
            Self::Int32(_) => DType::Int32,
            Self::Int64(_) => DType::Int64,
            Self::Float16(_) => DType::Float16,
            Self::Bfloat16(_) => DType::Bfloat16,
            Self::Float32(_) => DType::Float32,
            Self::Float64(_) => DType::Float64,
            Self::Bytes(_) => DType::String,
        }
    }

    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No elements of `dtype`.
    pub fn empty(dtype: DType) -> Self {
        Self::from_le_bytes(dtype, &[]).expect("no bytes are always whole elements")
    }

    /// Reads values as the protocol's JSON gives them (module docs: lossless).
    pub fn from_json(dtype: DType, values: &[JsonScalar]) -> Result<Self, TensorError> {
        Ok(by_dtype!(dtype, convert_all, values))
    }

    /// Reads binary data: little-endian elements; `BYTES` as a 4-byte little-endian
    /// length before each element.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Result<Self, TensorError> {
        if dtype == DType::String {
            return Ok(Self::Bytes(read_length_prefixed(bytes)?));
        }
        Ok(by_dtype!(dtype, read_fixed, bytes))
    }

    /// Appends the binary form [`from_le_bytes`](Self::from_le_bytes) reads.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.binary_len());
        each!(self, v => v.iter().for_each(|e| e.put(out)));
    }

    /// Length of the binary form.
    pub fn binary_len(&self) -> usize {
        match self {
            Self::Bytes(v) => v.iter().map(|e| 4 + e.len()).sum(),
            other => other.len() * element_size(other.dtype()).unwrap_or(0),
        }
    }

    /// Element `index` as a number for tolerance checks (`BYTES` have none; `BOOL` is 0/1).
    pub fn element_f64(&self, index: usize) -> Option<f64> {
        Some(match self {
            Self::Bool(v) => f64::from(u8::from(*v.get(index)?)),
            Self::Uint8(v) => f64::from(*v.get(index)?),
            Self::Uint16(v) => f64::from(*v.get(index)?),
            Self::Uint32(v) => f64::from(*v.get(index)?),
            Self::Uint64(v) => *v.get(index)? as f64,
            Self::Int8(v) => f64::from(*v.get(index)?),
            Self::Int16(v) => f64::from(*v.get(index)?),
            Self::Int32(v) => f64::from(*v.get(index)?),
            Self::Int64(v) => *v.get(index)? as f64,
            Self::Float16(v) => v.get(index)?.to_f64(),
            Self::Bfloat16(v) => v.get(index)?.to_f64(),
            Self::Float32(v) => f64::from(*v.get(index)?),
            Self::Float64(v) => *v.get(index)?,
            Self::Bytes(_) => return None,
        })
    }

    /// Whether element `index` of both equals exactly (floats bit for bit, except
    /// that a NaN equals any NaN).
    pub fn element_eq(&self, other: &Self, index: usize) -> bool {
        fn at<T: Element>(ours: &[T], theirs: &[T], index: usize) -> bool {
            match (ours.get(index), theirs.get(index)) {
                (Some(mine), Some(other)) => mine.same(other),
                _ => false,
            }
        }
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => at(a, b, index),
            (Self::Uint8(a), Self::Uint8(b)) => at(a, b, index),
            (Self::Uint16(a), Self::Uint16(b)) => at(a, b, index),
            (Self::Uint32(a), Self::Uint32(b)) => at(a, b, index),
            (Self::Uint64(a), Self::Uint64(b)) => at(a, b, index),
            (Self::Int8(a), Self::Int8(b)) => at(a, b, index),
            (Self::Int16(a), Self::Int16(b)) => at(a, b, index),
            (Self::Int32(a), Self::Int32(b)) => at(a, b, index),
            (Self::Int64(a), Self::Int64(b)) => at(a, b, index),
            (Self::Float16(a), Self::Float16(b)) => at(a, b, index),
            (Self::Bfloat16(a), Self::Bfloat16(b)) => at(a, b, index),
            (Self::Float32(a), Self::Float32(b)) => at(a, b, index),
            (Self::Float64(a), Self::Float64(b)) => at(a, b, index),
            (Self::Bytes(a), Self::Bytes(b)) => at(a, b, index),
            _ => false,
        }
    }

    /// Checks that JSON can carry every element ([`Serialize`] fails on the same).
    pub fn check_json(&self) -> Result<(), TensorError> {
        each!(self, v => v.iter().enumerate().try_for_each(|(i, e)| e.json_ok(i)))
    }

    /// Elements `start..end` (clamped to the length), of the same type.
    #[must_use]
    pub fn slice(&self, start: usize, end: usize) -> Self {
        let end = end.min(self.len());
        let start = start.min(end);
        map_same!(self, v => v[start..end].to_vec())
    }

    /// Appends `other`'s elements; `false` (and nothing appended) when the types differ.
    pub fn extend_from(&mut self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
            (Self::Uint8(a), Self::Uint8(b)) => a.extend_from_slice(b),
            (Self::Uint16(a), Self::Uint16(b)) => a.extend_from_slice(b),
            (Self::Uint32(a), Self::Uint32(b)) => a.extend_from_slice(b),
            (Self::Uint64(a), Self::Uint64(b)) => a.extend_from_slice(b),
            (Self::Int8(a), Self::Int8(b)) => a.extend_from_slice(b),
            (Self::Int16(a), Self::Int16(b)) => a.extend_from_slice(b),
            (Self::Int32(a), Self::Int32(b)) => a.extend_from_slice(b),
            (Self::Int64(a), Self::Int64(b)) => a.extend_from_slice(b),
            (Self::Float16(a), Self::Float16(b)) => a.extend_from_slice(b),
            (Self::Bfloat16(a), Self::Bfloat16(b)) => a.extend_from_slice(b),
            (Self::Float32(a), Self::Float32(b)) => a.extend_from_slice(b),
            (Self::Float64(a), Self::Float64(b)) => a.extend_from_slice(b),
            (Self::Bytes(a), Self::Bytes(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }
}

/// The JSON form: an array of numbers, booleans or strings; refuses NaN, ±∞ and
/// non-UTF-8 strings (see [`TensorData::check_json`]).
impl Serialize for TensorData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn all<S: Serializer, T: Element>(serializer: S, v: &[T]) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(v.len()))?;
            for (i, e) in v.iter().enumerate() {
                e.json_ok(i).map_err(S::Error::custom)?;
                e.serialize_json(&mut seq)?;
            }
            seq.end()
        }
        each!(self, v => all(serializer, v))
    }
}

/// A JSON value as the protocol's `data` array holds it, kept exact: integers as
/// integers, other numbers as `f64`.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonScalar {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    Text(String),
}

impl JsonScalar {
    fn kind(&self) -> &'static str {
        match self {
            Self::Unsigned(_) | Self::Signed(_) | Self::Float(_) => "number",
            Self::Bool(_) => "boolean",
            Self::Text(_) => "string",
        }
    }

    fn shown(&self) -> String {
        match self {
            Self::Unsigned(v) => v.to_string(),
            Self::Signed(v) => v.to_string(),
            Self::Float(v) => v.to_string(),
            Self::Bool(v) => v.to_string(),
            Self::Text(v) => format!("{v:?}"),
        }
    }

    /// The exact integer this value is, if it is one.
    fn integer(&self) -> Option<i128> {
        match *self {
            Self::Unsigned(v) => Some(i128::from(v)),
            Self::Signed(v) => Some(i128::from(v)),
            // Every f64 of magnitude below 2^64 converts to i128 exactly.
            Self::Float(v) if v.fract() == 0.0 && v.abs() < 1.9e19 => Some(v as i128),
            _ => None,
        }
    }
}

/// A `data` array: numbers, booleans or strings, nested arrays flattened row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonValues(pub Vec<JsonScalar>);

impl<'de> Deserialize<'de> for JsonValues {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        deserializer.deserialize_seq(Flatten { out: &mut out })?;
        Ok(Self(out))
    }
}

/// Appends a (possibly nested) array's scalars to `out`.
struct Flatten<'a> {
    out: &'a mut Vec<JsonScalar>,
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of numbers, booleans or strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.out.reserve(n);
        }
        while seq.next_element_seed(Element1 { out: self.out })?.is_some() {}
        Ok(())
    }
}

/// One element of a `data` array: a scalar, or a nested array to flatten.
struct Element1<'a> {
    out: &'a mut Vec<JsonScalar>,
}

impl<'de> de::DeserializeSeed<'de> for Element1<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element1<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number, boolean, string or array")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.out.push(JsonScalar::Unsigned(v));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.out.push(JsonScalar::Signed(v));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.out.push(JsonScalar::Float(v));
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.out.push(JsonScalar::Bool(v));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.out.push(JsonScalar::Text(v.to_owned()));
        Ok(())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
        self.out.push(JsonScalar::Text(v));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Flatten { out: self.out }.visit_seq(seq)
    }
}

/// An element type: its JSON and binary forms.
trait Element: Sized + Clone {
    const DTYPE: DType;
    fn from_json(value: &JsonScalar, index: usize) -> Result<Self, TensorError>;
    fn put(&self, out: &mut Vec<u8>);
    fn serialize_json<S: SerializeSeq>(&self, seq: &mut S) -> Result<(), S::Error>;
    fn json_ok(&self, _index: usize) -> Result<(), TensorError> {
        Ok(())
    }
    /// Equal for golden checks and round-trip tests.
    fn same(&self, other: &Self) -> bool;
    /// From exactly `element_size` little-endian bytes.
    fn get(bytes: &[u8], index: usize) -> Result<Self, TensorError>;
}

fn name<T: Element>() -> &'static str {
    datatype_name(T::DTYPE)
}

fn wrong_kind<T: Element>(value: &JsonScalar, index: usize, wanted: &'static str) -> TensorError {
    TensorError::WrongKind {
        index,
        found: value.kind(),
        dtype: name::<T>(),
        wanted,
    }
}

macro_rules! integer_element {
    ($t:ty, $dtype:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            fn from_json(value: &JsonScalar, index: usize) -> Result<Self, TensorError> {
                let Some(integer) = value.integer() else {
                    return Err(match value {
                        JsonScalar::Float(_) => TensorError::NotInteger {
                            index,
                            value: value.shown(),
                            dtype: name::<Self>(),
                        },
                        _ => wrong_kind::<Self>(value, index, "integers"),
                    });
                };
                <$t>::try_from(integer).map_err(|_| TensorError::OutOfRange {
                    index,
                    value: value.shown(),
                    dtype: name::<Self>(),
                })
            }
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn serialize_json<S: SerializeSeq>(&self, seq: &mut S) -> Result<(), S::Error> {
                seq.serialize_element(self)
            }
            fn same(&self, other: &Self) -> bool {
                self == other
            }
            fn get(bytes: &[u8], _index: usize) -> Result<Self, TensorError> {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                Ok(<$t>::from_le_bytes(raw))
            }
        }
    };
}

integer_element!(u8, Uint8);
integer_element!(u16, Uint16);
integer_element!(u32, Uint32);
integer_element!(u64, Uint64);
integer_element!(i8, Int8);
integer_element!(i16, Int16);
integer_element!(i32, Int32);
integer_element!(i64, Int64);

/// Refuses a finite JSON value that became infinite in a narrower type.
fn finite_or_range<T: Element>(
    value: &JsonScalar,
    index: usize,
    narrowed_infinite: bool,
) -> Result<(), TensorError> {
    if narrowed_infinite {
        return Err(TensorError::OutOfRange {
            index,
            value: value.shown(),
            dtype: name::<T>(),
        });
    }
    Ok(())
}

fn json_finite(value: f64, index: usize) -> Result<(), TensorError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(TensorError::NonFinite { index, value })
    }
}

macro_rules! float_element {
    ($t:ty, $dtype:ident, $from_f64:expr, $from_u64:expr, $from_i64:expr, $to_f64:expr, $bits:ident, $from_bits:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            fn from_json(value: &JsonScalar, index: usize) -> Result<Self, TensorError> {
                let converted: $t = match *value {
                    JsonScalar::Float(v) => $from_f64(v),
                    JsonScalar::Unsigned(v) => $from_u64(v),
                    JsonScalar::Signed(v) => $from_i64(v),
                    _ => return Err(wrong_kind::<Self>(value, index, "numbers")),
                };
                finite_or_range::<Self>(value, index, $to_f64(converted).is_infinite())?;
                Ok(converted)
            }
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.$bits().to_le_bytes());
            }
            fn serialize_json<S: SerializeSeq>(&self, seq: &mut S) -> Result<(), S::Error> {
                seq.serialize_element(&$to_f64(*self))
            }
            fn json_ok(&self, index: usize) -> Result<(), TensorError> {
                json_finite($to_f64(*self), index)
            }
            fn same(&self, other: &Self) -> bool {
                self.$bits() == other.$bits()
                    || ($to_f64(*self).is_nan() && $to_f64(*other).is_nan())
            }
            fn get(bytes: &[u8], _index: usize) -> Result<Self, TensorError> {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                Ok($from_bits(raw))
            }
        }
    };
}

float_element!(
    f32,
    Float32,
    |v: f64| v as f32,
    |v: u64| v as f32,
    |v: i64| v as f32,
    f64::from,
    to_bits,
    |raw| f32::from_bits(u32::from_le_bytes(raw))
);
float_element!(
    f64,
    Float64,
    |v: f64| v,
    |v: u64| v as f64,
    |v: i64| v as f64,
    |v: f64| v,
    to_bits,
    |raw| f64::from_bits(u64::from_le_bytes(raw))
);
float_element!(
    half::f16,
    Float16,
    half::f16::from_f64,
    |v: u64| half::f16::from_f64(v as f64),
    |v: i64| half::f16::from_f64(v as f64),
    half::f16::to_f64,
    to_bits,
    |raw| half::f16::from_bits(u16::from_le_bytes(raw))
);
float_element!(
    half::bf16,
    Bfloat16,
    half::bf16::from_f64,
    |v: u64| half::bf16::from_f64(v as f64),
    |v: i64| half::bf16::from_f64(v as f64),
    half::bf16::to_f64,
    to_bits,
    |raw| half::bf16::from_bits(u16::from_le_bytes(raw))
);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn from_json(value: &JsonScalar, index: usize) -> Result<Self, TensorError> {
        match value {
            JsonScalar::Bool(b) => Ok(*b),
            // 0 and 1 as numbers, as golden vectors of earlier versions wrote them.
            other => match other.integer() {
                Some(0) => Ok(false),
                Some(1) => Ok(true),
                _ => Err(wrong_kind::<Self>(value, index, "true or false")),
            },
        }
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn serialize_json<S: SerializeSeq>(&self, seq: &mut S) -> Result<(), S::Error> {
        seq.serialize_element(self)
    }
    fn same(&self, other: &Self) -> bool {
        self == other
    }
    fn get(bytes: &[u8], index: usize) -> Result<Self, TensorError> {
        match bytes[0] {
            0 => Ok(false),
            1 => Ok(true),
            byte => Err(TensorError::BoolByte { index, byte }),
        }
    }
}

impl Element for Vec<u8> {
    const DTYPE: DType = DType::String;
    fn from_json(value: &JsonScalar, index: usize) -> Result<Self, TensorError> {
        match value {
            JsonScalar::Text(text) => Ok(text.as_bytes().to_vec()),
            other => Err(wrong_kind::<Self>(other, index, "strings")),
        }
    }
    fn put(&self, out: &mut Vec<u8>) {
        let len = u32::try_from(self.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self);
    }
    fn serialize_json<S: SerializeSeq>(&self, seq: &mut S) -> Result<(), S::Error> {
        match std::str::from_utf8(self) {
            Ok(text) => seq.serialize_element(text),
            Err(_) => Err(S::Error::custom("a BYTES element is not UTF-8")),
        }
    }
    fn json_ok(&self, index: usize) -> Result<(), TensorError> {
        std::str::from_utf8(self)
            .map(|_| ())
            .map_err(|_| TensorError::NotUtf8 { index })
    }
    fn same(&self, other: &Self) -> bool {
        self == other
    }
    fn get(_bytes: &[u8], index: usize) -> Result<Self, TensorError> {
        Err(TensorError::BytesTruncated { index })
    }
}

fn convert_all<T: Element>(values: &[JsonScalar]) -> Result<Vec<T>, TensorError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| T::from_json(v, i))
        .collect()
}

fn read_fixed<T: Element>(bytes: &[u8]) -> Result<Vec<T>, TensorError> {
    let size = element_size(T::DTYPE).unwrap_or(1);
    if !bytes.len().is_multiple_of(size) {
        return Err(TensorError::BinarySize {
            bytes: bytes.len(),
            size,
            dtype: name::<T>(),
        });
    }
    bytes
        .chunks_exact(size)
        .enumerate()
        .map(|(i, chunk)| T::get(chunk, i))
        .collect()
}

fn read_length_prefixed(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, TensorError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let index = out.len();
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or(TensorError::BytesTruncated { index })?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(TensorError::BytesTruncated { index });
        }
        out.push(rest[..len].to_vec());
        bytes = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
