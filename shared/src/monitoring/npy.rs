//! `NumPy`'s `.npy` array format (versions 1.0, 2.0 and 3.0): a magic string, a header
//! that is a Python dict literal (`{'descr': '<f4', 'fortran_order': False, 'shape':
//! (100, 4), }`), then the elements. Read into a [`Tensor`], refusing what is not plain
//! data: object arrays (pickles), Fortran order, big-endian or unknown element types,
//! and any byte count that does not match the shape.

use crate::bundle::manifest::Tensor;
use crate::tensor::TensorData;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Largest header read (`NumPy` itself refuses more than 10 000 bytes by default).
const MAX_HEADER: usize = 64 << 10;

/// Why bytes are not a usable `.npy` array.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NpyError {
    #[error("not a .npy file (no \\x93NUMPY magic)")]
    Magic,
    #[error(".npy version {0}.{1} is not one this reads (1.0, 2.0, 3.0)")]
    Version(u8, u8),
    #[error("the .npy file ends inside its {0}")]
    Truncated(&'static str),
    #[error("the .npy header is {0} bytes; at most {MAX_HEADER}")]
    HeaderTooLarge(usize),
    #[error("the .npy header is not valid: {0}")]
    Header(String),
    #[error("the array's element type {0:?} is not supported: {1}")]
    Dtype(String, &'static str),
    #[error("the array is in Fortran order; save it C-contiguous (numpy.ascontiguousarray)")]
    FortranOrder,
    #[error("the shape {shape:?} needs {needed} bytes of data; the file has {found}")]
    Size {
        shape: Vec<u64>,
        needed: u128,
        found: usize,
    },
}

/// An element type as the header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    /// `S<n>`: byte strings of `n` bytes, NUL-padded.
    Bytes(usize),
    /// `U<n>`: strings of `n` UTF-32 code points.
    Unicode(usize),
}

impl Dtype {
    fn parse(descr: &str) -> Result<Self, NpyError> {
        let bad = |why| Err(NpyError::Dtype(descr.to_owned(), why));
        let (order, code) = descr.split_at(descr.len().min(1));
        let little = match order {
            "<" | "|" | "=" => true,
            ">" => false,
            _ => return bad("no byte order"),
        };
        let (kind, size) = code.split_at(code.len().min(1));
        if kind == "O" {
            return bad(
                "object arrays are pickled Python objects; save strings with a fixed-width dtype (astype('U'))",
            );
        }
        let size: usize = match size.parse() {
            Ok(n) => n,
            Err(_) => return bad("no element size"),
        };
        if !little && size > 1 && kind != "S" {
            return bad("big-endian data; save it little-endian (array.astype('<f4'))");
        }
        Ok(match (kind, size) {
            ("b", 1) => Self::Bool,
            ("u", 1) => Self::U8,
            ("u", 2) => Self::U16,
            ("u", 4) => Self::U32,
            ("u", 8) => Self::U64,
            ("i", 1) => Self::I8,
            ("i", 2) => Self::I16,
            ("i", 4) => Self::I32,
            ("i", 8) => Self::I64,
            ("f", 2) => Self::F16,
            ("f", 4) => Self::F32,
            ("f", 8) => Self::F64,
            ("S", n) if n > 0 => Self::Bytes(n),
            ("U", n) if n > 0 && little => Self::Unicode(n),
            _ => return bad("not a plain numeric, boolean or string type"),
        })
    }

    fn size(self) -> usize {
        match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 | Self::F16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
            Self::Bytes(n) => n,
            Self::Unicode(n) => n * 4,
        }
    }
}

/// Reads a whole `.npy` file.
pub fn read(bytes: &[u8]) -> Result<Tensor, NpyError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(NpyError::Magic)?;
    let version = rest.get(..2).ok_or(NpyError::Truncated("version"))?;
    let (major, minor) = (version[0], version[1]);
    let rest = &rest[2..];
    let (header_len, rest) = match (major, minor) {
        (1, 0) => {
            let len = rest.get(..2).ok_or(NpyError::Truncated("header length"))?;
            (
                usize::from(u16::from_le_bytes([len[0], len[1]])),
                &rest[2..],
            )
        }
        (2 | 3, 0) => {
            let len = rest.get(..4).ok_or(NpyError::Truncated("header length"))?;
            (
                u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize,
                &rest[4..],
            )
        }
        _ => return Err(NpyError::Version(major, minor)),
    };
    if header_len > MAX_HEADER {
        return Err(NpyError::HeaderTooLarge(header_len));
    }
    let header = rest
        .get(..header_len)
        .ok_or(NpyError::Truncated("header"))?;
    let data = &rest[header_len..];
    let header =
        std::str::from_utf8(header).map_err(|_| NpyError::Header("not UTF-8".to_owned()))?;
    let (descr, fortran, shape) = parse_header(header)?;
    let dtype = Dtype::parse(&descr)?;
    if fortran && shape.iter().filter(|d| **d > 1).count() > 1 {
        return Err(NpyError::FortranOrder);
    }
    let elements: u128 = shape.iter().map(|d| u128::from(*d)).product();
    let needed = elements * dtype.size() as u128;
    if needed != data.len() as u128 {
        return Err(NpyError::Size {
            shape,
            needed,
            found: data.len(),
        });
    }
    let n = elements as usize;
    let data = decode(dtype, data, n);
    Ok(Tensor { shape, data })
}

fn decode(dtype: Dtype, data: &[u8], n: usize) -> TensorData {
    macro_rules! le {
        ($variant:ident, $t:ty, $size:expr) => {
            TensorData::$variant(
                data.chunks_exact($size)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("sized")))
                    .collect(),
            )
        };
    }
    match dtype {
        Dtype::Bool => TensorData::Bool(data.iter().map(|b| *b != 0).collect()),
        Dtype::U8 => TensorData::Uint8(data.to_vec()),
        Dtype::I8 => TensorData::Int8(data.iter().map(|b| b.cast_signed()).collect()),
        Dtype::U16 => le!(Uint16, u16, 2),
        Dtype::U32 => le!(Uint32, u32, 4),
        Dtype::U64 => le!(Uint64, u64, 8),
        Dtype::I16 => le!(Int16, i16, 2),
        Dtype::I32 => le!(Int32, i32, 4),
        Dtype::I64 => le!(Int64, i64, 8),
        Dtype::F16 => TensorData::Float16(
            data.chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                .collect(),
        ),
        Dtype::F32 => le!(Float32, f32, 4),
        Dtype::F64 => le!(Float64, f64, 8),
        Dtype::Bytes(w) => TensorData::Bytes(
            data.chunks_exact(w)
                .map(|c| {
                    let end = c.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
                    c[..end].to_vec()
                })
                .collect(),
        ),
        Dtype::Unicode(w) => TensorData::Bytes(
            data.chunks_exact(w * 4)
                .take(n)
                .map(|c| {
                    c.chunks_exact(4)
                        .map(|u| u32::from_le_bytes([u[0], u[1], u[2], u[3]]))
                        .take_while(|u| *u != 0)
                        .map(|u| char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER))
                        .collect::<String>()
                        .into_bytes()
                })
                .collect(),
        ),
    }
}

/// `(descr, fortran_order, shape)` from the header's dict literal.
fn parse_header(header: &str) -> Result<(String, bool, Vec<u64>), NpyError> {
    let bad = |why: &str| NpyError::Header(why.to_owned());
    let body = header
        .trim_end_matches(['\n', ' ', '\x00'])
        .trim()
        .strip_prefix('{')
        .and_then(|b| b.strip_suffix('}'))
        .ok_or_else(|| bad("not a dict"))?;
    let mut parser = Literal { text: body };
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        parser.skip_space();
        if parser.text.is_empty() {
            break;
        }
        let key = parser
            .string()
            .ok_or_else(|| bad("a key is not a string"))?;
        parser
            .expect(':')
            .ok_or_else(|| bad("no ':' after a key"))?;
        match key.as_str() {
            "descr" => {
                descr = Some(
                    parser
                        .string()
                        .ok_or_else(|| bad("'descr' is not a string (a structured dtype?)"))?,
                );
            }
            "fortran_order" => {
                fortran = Some(
                    parser
                        .boolean()
                        .ok_or_else(|| bad("'fortran_order' is not True or False"))?,
                );
            }
            "shape" => {
                shape = Some(
                    parser
                        .tuple()
                        .ok_or_else(|| bad("'shape' is not a tuple of integers"))?,
                );
            }
            other => return Err(NpyError::Header(format!("unknown key {other:?}"))),
        }
        parser.skip_space();
        if parser.expect(',').is_none() {
            parser.skip_space();
            if !parser.text.is_empty() {
                return Err(bad("entries are not separated by ','"));
            }
        }
    }
    Ok((
        descr.ok_or_else(|| bad("no 'descr'"))?,
        fortran.ok_or_else(|| bad("no 'fortran_order'"))?,
        shape.ok_or_else(|| bad("no 'shape'"))?,
    ))
}

/// A cursor over a Python literal.
struct Literal<'a> {
    text: &'a str,
}

impl Literal<'_> {
    fn skip_space(&mut self) {
        self.text = self.text.trim_start();
    }

    fn expect(&mut self, c: char) -> Option<()> {
        self.skip_space();
        self.text = self.text.strip_prefix(c)?;
        Some(())
    }

    fn string(&mut self) -> Option<String> {
        self.skip_space();
        let quote = self
            .text
            .chars()
            .next()
            .filter(|q| *q == '\'' || *q == '"')?;
        let rest = &self.text[1..];
        let end = rest.find(quote)?;
        let value = &rest[..end];
        if value.contains('\\') {
            return None;
        }
        self.text = &rest[end + 1..];
        Some(value.to_owned())
    }

    fn boolean(&mut self) -> Option<bool> {
        self.skip_space();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.text.strip_prefix(word) {
                self.text = rest;
                return Some(value);
            }
        }
        None
    }

    fn tuple(&mut self) -> Option<Vec<u64>> {
        self.expect('(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_space();
            if let Some(rest) = self.text.strip_prefix(')') {
                self.text = rest;
                return Some(dims);
            }
            let digits = self
                .text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(self.text.len());
            if digits == 0 || dims.len() >= 32 {
                return None;
            }
            dims.push(self.text[..digits].parse().ok()?);
            self.text = &self.text[digits..];
            self.skip_space();
            if let Some(rest) = self.text.strip_prefix(',') {
                self.text = rest;
            } else if !self.text.starts_with(')') {
                return None;
            }
        }
    }
}

/// Writes `tensor` as a `.npy` file (version 1.0); strings are written as `S<n>`.
pub fn write(tensor: &Tensor) -> Vec<u8> {
    let (descr, width) = match &tensor.data {
        TensorData::Bool(_) => ("|b1".to_owned(), 1),
        TensorData::Uint8(_) => ("|u1".to_owned(), 1),
        TensorData::Int8(_) => ("|i1".to_owned(), 1),
        TensorData::Uint16(_) => ("<u2".to_owned(), 2),
        TensorData::Int16(_) => ("<i2".to_owned(), 2),
        TensorData::Float16(_) | TensorData::Bfloat16(_) => ("<f2".to_owned(), 2),
        TensorData::Uint32(_) => ("<u4".to_owned(), 4),
        TensorData::Int32(_) => ("<i4".to_owned(), 4),
        TensorData::Float32(_) => ("<f4".to_owned(), 4),
        TensorData::Uint64(_) => ("<u8".to_owned(), 8),
        TensorData::Int64(_) => ("<i8".to_owned(), 8),
        TensorData::Float64(_) => ("<f8".to_owned(), 8),
        TensorData::Bytes(items) => {
            let w = items.iter().map(Vec::len).max().unwrap_or(1).max(1);
            (format!("|S{w}"), w)
        }
    };
    let shape = match tensor.shape.len() {
        1 => format!("({},)", tensor.shape[0]),
        _ => format!(
            "({})",
            tensor
                .shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(MAGIC.len() + 4 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend([1, 0]);
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    match &tensor.data {
        TensorData::Bytes(items) => {
            for item in items {
                out.extend(item);
                out.extend(std::iter::repeat_n(0, width - item.len()));
            }
        }
        TensorData::Bfloat16(v) => v
            .iter()
            .for_each(|x| out.extend(half::f16::from_f32(x.to_f32()).to_le_bytes())),
        data => data.write_le_bytes(&mut out),
    }
    out
}
