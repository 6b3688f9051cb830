//! Reference data for model monitoring: a sample of the training or validation data
//! (and the model's outputs on it), read from the files data scientists already have,
//! profiled into the bundle's reference profile.
//!
//! - `.npy`: one array, for a model with one input;
//! - `.npz` (`numpy.savez`, compressed or not): arrays named after the model's inputs
//!   and outputs (`x.npy` in the archive is tensor `x`);
//! - `.csv`: a header row, then one example per row. A column named after a tensor of
//!   one value per row is that tensor; `name[j]` is column `j` of tensor `name`; when the
//!   model has one two-dimensional input, the other columns are its features in order,
//!   named by their headers. Empty cells and `NaN` are missing values.
//!
//! Every array must hold the same number of rows; names that are none of the model's
//! tensors are refused, so a typo does not silently profile nothing.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use gantry_shared::bundle::manifest::{Dim, Tensor, TensorSpec};
use gantry_shared::bundle::onnx::ModelSignature as Signature;
use gantry_shared::monitoring::npy;
use gantry_shared::monitoring::profile::{Profile, ReferenceBuilder, Side};
use gantry_shared::tensor::{DType, TensorData};

/// Largest reference file read.
const MAX_REFERENCE_BYTES: u64 = 4 << 30;

/// Why reference data cannot be profiled.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("cannot read reference data {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reference data {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads reference data at `path` for a model of `signature` and profiles it.
pub fn profile(path: &Path, signature: &Signature) -> Result<Profile, ReferenceError> {
    let invalid = |message: String| ReferenceError::Invalid {
        path: path.to_owned(),
        message,
    };
    let read_err = |source| ReferenceError::Read {
        path: path.to_owned(),
        source,
    };
    let file = gantry_net::files::open_regular(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_REFERENCE_BYTES {
        return Err(invalid(format!(
            "{size} bytes; a reference sample of at most {MAX_REFERENCE_BYTES} bytes is read"
        )));
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let arrays = match extension.as_str() {
        "npy" => read_npy(file, signature).map_err(invalid)?,
        "npz" => read_npz(file, signature).map_err(invalid)?,
        "csv" => read_csv(file, signature).map_err(invalid)?,
        other => {
            return Err(invalid(format!(
                "{other:?} is not a format this reads: .npy, .npz (NumPy) or .csv"
            )));
        }
    };
    let mut builder = ReferenceBuilder::default();
    let mut profiled = 0;
    for (side, specs) in [
        (Side::Input, &signature.inputs),
        (Side::Output, &signature.outputs),
    ] {
        for spec in specs {
            let Some(array) = arrays.get(&spec.name) else {
                continue;
            };
            let tensor = coerce(&array.tensor, spec).map_err(invalid)?;
            builder
                .add(side, &spec.name, &tensor, array.names.as_deref())
                .map_err(|e| invalid(e.to_string()))?;
            profiled += 1;
        }
    }
    if profiled == 0 {
        return Err(invalid("it holds none of the model's tensors".to_owned()));
    }
    Ok(builder.finish())
}

/// An array of reference data, with its features' names where the file had them.
struct Array {
    tensor: Tensor,
    names: Option<Vec<String>>,
}

fn tensor_names(signature: &Signature) -> String {
    signature
        .inputs
        .iter()
        .chain(&signature.outputs)
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn find<'a>(signature: &'a Signature, name: &str) -> Option<&'a TensorSpec> {
    signature
        .inputs
        .iter()
        .chain(&signature.outputs)
        .find(|t| t.name == name)
}

fn read_all(mut file: impl Read) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

fn read_npy(file: std::fs::File, signature: &Signature) -> Result<BTreeMap<String, Array>, String> {
    let [input] = signature.inputs.as_slice() else {
        return Err(format!(
            "one .npy array is the input of a model with one input; this model has {} ({}): use an .npz with an array per tensor",
            signature.inputs.len(),
            tensor_names(signature)
        ));
    };
    let tensor = npy::read(&read_all(file)?).map_err(|e| e.to_string())?;
    Ok(BTreeMap::from([(
        input.name.clone(),
        Array {
            tensor,
            names: None,
        },
    )]))
}

fn read_npz(file: std::fs::File, signature: &Signature) -> Result<BTreeMap<String, Array>, String> {
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("not a valid .npz (zip) archive: {e}"))?;
    let mut arrays = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| format!("entry {i}: {e}"))?;
        let entry_name = entry
            .name()
            .map_err(|e| format!("entry {i}: {e}"))?
            .into_owned();
        let Some(name) = entry_name.strip_suffix(".npy") else {
            return Err(format!("entry {entry_name:?} is not a .npy array"));
        };
        if find(signature, name).is_none() {
            return Err(format!(
                "array {name:?} is none of the model's tensors ({})",
                tensor_names(signature)
            ));
        }
        if entry.size() > MAX_REFERENCE_BYTES {
            return Err(format!("array {name:?} unpacks to {} bytes", entry.size()));
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(MAX_REFERENCE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("array {name:?}: {e}"))?;
        let tensor = npy::read(&bytes).map_err(|e| format!("array {name:?}: {e}"))?;
        arrays.insert(
            name.to_owned(),
            Array {
                tensor,
                names: None,
            },
        );
    }
    Ok(arrays)
}

/// Where a CSV column goes: column `j` of tensor `tensor`.
struct Column {
    tensor: String,
    index: usize,
}

fn read_csv(file: std::fs::File, signature: &Signature) -> Result<BTreeMap<String, Array>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(std::io::BufReader::new(file));
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| format!("no header row: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    // The one two-dimensional input that unnamed columns fill, if there is one.
    let tabular: Vec<&TensorSpec> = signature
        .inputs
        .iter()
        .filter(|t| t.shape.len() == 2)
        .collect();
    let mut columns = Vec::with_capacity(headers.len());
    let mut widths: BTreeMap<String, usize> = BTreeMap::new();
    let mut feature_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for header in &headers {
        let column = if find(signature, header).is_some() {
            Column {
                tensor: header.clone(),
                index: 0,
            }
        } else if let Some((tensor, index)) = header
            .strip_suffix(']')
            .and_then(|h| h.split_once('['))
            .and_then(|(t, i)| Some((t, i.parse::<usize>().ok()?)))
            .filter(|(t, _)| find(signature, t).is_some())
        {
            Column {
                tensor: tensor.to_owned(),
                index,
            }
        } else if let [input] = tabular.as_slice() {
            let index = widths.get(&input.name).copied().unwrap_or(0);
            feature_names
                .entry(input.name.clone())
                .or_default()
                .push(header.clone());
            Column {
                tensor: input.name.clone(),
                index,
            }
        } else {
            return Err(format!(
                "column {header:?} is none of the model's tensors ({}) nor `tensor[j]`",
                tensor_names(signature)
            ));
        };
        let width = widths.entry(column.tensor.clone()).or_default();
        *width = (*width).max(column.index + 1);
        columns.push(column);
    }
    let mut cells: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    let mut rows = 0u64;
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("row {}: {e}", line + 2))?;
        if record.len() != columns.len() {
            return Err(format!(
                "row {} has {} cells; the header has {}",
                line + 2,
                record.len(),
                columns.len()
            ));
        }
        for (cell, column) in record.iter().zip(&columns) {
            let width = widths[&column.tensor];
            let values = cells.entry(column.tensor.clone()).or_default();
            values.resize((rows as usize + 1) * width, None);
            let cell = cell.trim();
            let missing = cell.is_empty() || cell.eq_ignore_ascii_case("nan");
            values[rows as usize * width + column.index] = (!missing).then(|| cell.to_owned());
        }
        rows += 1;
    }
    if rows == 0 {
        return Err("no rows under the header".to_owned());
    }
    let mut arrays = BTreeMap::new();
    for (name, values) in cells {
        let spec = find(signature, &name).expect("columns name tensors");
        let width = widths[&name] as u64;
        let shape = if spec.shape.len() >= 2 || width > 1 {
            vec![rows, width]
        } else {
            vec![rows]
        };
        let data = parse_cells(&values, spec.dtype).map_err(|e| format!("tensor {name:?}: {e}"))?;
        let names = feature_names
            .remove(&name)
            .filter(|n| n.len() as u64 == width);
        arrays.insert(
            name,
            Array {
                tensor: Tensor { shape, data },
                names,
            },
        );
    }
    Ok(arrays)
}

fn parse_cells(cells: &[Option<String>], dtype: DType) -> Result<TensorData, String> {
    let number = |i: usize, c: &Option<String>| -> Result<f64, String> {
        match c {
            None => Ok(f64::NAN),
            Some(text) => text
                .parse()
                .map_err(|_| format!("value {i} ({text:?}) is not a number")),
        }
    };
    Ok(match dtype {
        DType::String => TensorData::Bytes(
            cells
                .iter()
                .map(|c| c.clone().unwrap_or_default().into_bytes())
                .collect(),
        ),
        DType::Bool => TensorData::Bool(
            cells
                .iter()
                .enumerate()
                .map(
                    |(i, c)| match c.as_deref().map(str::to_ascii_lowercase).as_deref() {
                        Some("true" | "1") => Ok(true),
                        Some("false" | "0") => Ok(false),
                        _ => Err(format!("value {i} ({c:?}) is not true or false")),
                    },
                )
                .collect::<Result<_, _>>()?,
        ),
        d if d.is_float() => TensorData::Float64(
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| number(i, c))
                .collect::<Result<_, _>>()?,
        ),
        _ => TensorData::Int64(
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| match c {
                    None => Err(format!(
                        "value {i} is empty; integer tensors have no missing value"
                    )),
                    Some(text) => text
                        .parse()
                        .map_err(|_| format!("value {i} ({text:?}) is not an integer")),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// Reference data as the model's tensor `spec` holds it: numbers as numbers of its
/// kind (floating point or integer), strings as strings.
fn coerce(tensor: &Tensor, spec: &TensorSpec) -> Result<Tensor, String> {
    let rank_ok = spec.shape.len() == tensor.shape.len()
        || (spec.shape.len() <= 1 && tensor.shape.len() <= 1)
        || (spec.shape.len() == 2
            && matches!(spec.shape[1], Dim::Fixed(1))
            && tensor.shape.len() == 1);
    if !rank_ok {
        return Err(format!(
            "tensor {:?} is {}-dimensional in the model; the reference data's array has shape {:?}",
            spec.name,
            spec.shape.len(),
            tensor.shape
        ));
    }
    for (i, (dim, got)) in spec.shape.iter().zip(&tensor.shape).enumerate().skip(1) {
        if let Dim::Fixed(want) = dim
            && want != got
        {
            return Err(format!(
                "tensor {:?} has {want} elements on dimension {i} in the model; the reference data has {got}",
                spec.name
            ));
        }
    }
    let data = &tensor.data;
    let converted = match (spec.dtype.is_float(), data) {
        (_, TensorData::Bytes(_)) if spec.dtype != DType::String => {
            return Err(format!(
                "tensor {:?} holds numbers in the model; the reference data holds strings",
                spec.name
            ));
        }
        (true, d) if !d.dtype().is_float() => TensorData::Float64(
            (0..d.len())
                .map(|i| d.element_f64(i).unwrap_or(f64::NAN))
                .collect(),
        ),
        (false, d) if d.dtype().is_float() && spec.dtype != DType::Bool => {
            let values: Vec<f64> = (0..d.len())
                .map(|i| d.element_f64(i).unwrap_or(f64::NAN))
                .collect();
            if let Some(bad) = values.iter().find(|v| v.fract() != 0.0 || !v.is_finite()) {
                return Err(format!(
                    "tensor {:?} holds integers in the model; the reference data holds {bad}",
                    spec.name
                ));
            }
            TensorData::Int64(values.iter().map(|v| *v as i64).collect())
        }
        _ => data.clone(),
    };
    Ok(Tensor {
        shape: tensor.shape.clone(),
        data: converted,
    })
}
