//! `gantry capture export`: a model's captured request/answer pairs, read from the
//! controller page by page, written as `NumPy` `.npz` archives data scientists open with
//! `numpy.load` alone — one archive per model version (its tensors' shapes are the
//! version's), and `manifest.json` describing them.
//!
//! In `<model>-<version>.npz`, for `P` pairs, oldest first:
//!
//! | array | shape | what |
//! | --- | --- | --- |
//! | `node`, `id` | `(P,)` bytes | the node that captured the pair; the request's `id` (empty without one) |
//! | `at_ms`, `seq` | `(P,)` uint64 | when it was captured; its record's sequence number on the node |
//! | `labeled` | `(P,)` bool | whether feedback gave its true label or value |
//! | `input/NAME`, `output/NAME` | `(rows, …)` | the pairs' tensors, concatenated along the first axis |
//! | `offsets/input/NAME`, … | `(P+1,)` int64 | pair `i`'s rows are `offsets[i]:offsets[i+1]` |
//! | `label`, `offsets/label` | `(rows,)` | the labels fed back, by pair as above (no rows when unlabeled) |
//!
//! A tensor whose pairs differ in shape beyond the first axis (or that has no axes) is
//! written per pair instead, `input/NAME/i`, without offsets. Inputs the nodes redacted
//! are absent and named in the manifest. Every file is replaced atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use gantry_shared::bundle::manifest::Tensor;
use gantry_shared::monitoring::capture::CapturedTensor;
use gantry_shared::monitoring::npy;
use gantry_shared::monitoring::quality::Truth;
use gantry_shared::protocol::monitoring::ExportedPair;
use gantry_shared::tensor::TensorData;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a captured pair from node {node} (sequence {seq}) does not decode: {source}")]
    Pair {
        node: String,
        seq: u64,
        source: gantry_shared::monitoring::capture::CaptureError,
    },
}

/// One archive written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportedFile {
    pub file: String,
    pub version: String,
    pub bundles: Vec<String>,
    pub pairs: usize,
    pub labeled: usize,
    pub nodes: Vec<String>,
    pub first_at_ms: u64,
    pub last_at_ms: u64,
    /// Inputs the nodes left out.
    pub redacted: Vec<String>,
    /// Array name → shape and element type.
    pub arrays: BTreeMap<String, ArrayInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArrayInfo {
    pub shape: Vec<u64>,
    pub dtype: String,
}

/// What an export wrote: `manifest.json`'s content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    pub model: String,
    pub exported_at: String,
    pub pairs: usize,
    pub files: Vec<ExportedFile>,
}

/// Writes `pairs` of `model` into `dir` (created when missing); returns the manifest,
/// also written there as `manifest.json`.
pub fn write(dir: &Path, model: &str, pairs: &[ExportedPair]) -> Result<Manifest, ExportError> {
    std::fs::create_dir_all(dir).map_err(|source| ExportError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut by_version: BTreeMap<&str, Vec<&ExportedPair>> = BTreeMap::new();
    for p in pairs {
        by_version.entry(&p.pair.version).or_default().push(p);
    }
    let mut files = Vec::new();
    for (version, pairs) in by_version {
        let name = format!("{}-{}.npz", file_part(model), file_part(version));
        let (arrays, info) = archive(&pairs)?;
        let path = dir.join(&name);
        gantry_net::atomic::write_atomically(&path, 0o640, |w| write_npz(w, &arrays)).map_err(
            |source| ExportError::Write {
                path: path.clone(),
                source,
            },
        )?;
        let mut bundles: Vec<String> = pairs.iter().map(|p| p.pair.bundle.clone()).collect();
        bundles.sort();
        bundles.dedup();
        let mut nodes: Vec<String> = pairs.iter().map(|p| p.node.clone()).collect();
        nodes.sort();
        nodes.dedup();
        let mut redacted: Vec<String> = pairs
            .iter()
            .flat_map(|p| p.pair.redacted.iter().cloned())
            .collect();
        redacted.sort();
        redacted.dedup();
        files.push(ExportedFile {
            file: name,
            version: version.to_owned(),
            bundles,
            pairs: pairs.len(),
            labeled: pairs.iter().filter(|p| p.label.is_some()).count(),
            nodes,
            first_at_ms: pairs.iter().map(|p| p.pair.at_ms).min().unwrap_or(0),
            last_at_ms: pairs.iter().map(|p| p.pair.at_ms).max().unwrap_or(0),
            redacted,
            arrays: info,
        });
    }
    let manifest = Manifest {
        model: model.to_owned(),
        exported_at: gantry_net::clock::rfc3339(gantry_net::clock::now_ms()),
        pairs: pairs.len(),
        files,
    };
    let path = dir.join("manifest.json");
    let mut json = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
    json.push(b'\n');
    gantry_net::atomic::write_bytes(&path, 0o640, &json)
        .map_err(|source| ExportError::Write { path, source })?;
    Ok(manifest)
}

/// `text` as part of a file name: anything but letters, digits, `.`, `-` and `_` is `_`.
fn file_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

type Arrays = Vec<(String, Tensor)>;

/// The arrays of one version's archive.
fn archive(pairs: &[&ExportedPair]) -> Result<(Arrays, BTreeMap<String, ArrayInfo>), ExportError> {
    let n = pairs.len() as u64;
    let mut arrays: Arrays = vec![
        (
            "node".into(),
            bytes(pairs.iter().map(|p| p.node.as_bytes().to_vec())),
        ),
        (
            "id".into(),
            bytes(
                pairs
                    .iter()
                    .map(|p| p.pair.id.clone().unwrap_or_default().into_bytes()),
            ),
        ),
        (
            "at_ms".into(),
            Tensor {
                shape: vec![n],
                data: TensorData::Uint64(pairs.iter().map(|p| p.pair.at_ms).collect()),
            },
        ),
        (
            "seq".into(),
            Tensor {
                shape: vec![n],
                data: TensorData::Uint64(pairs.iter().map(|p| p.seq).collect()),
            },
        ),
        (
            "labeled".into(),
            Tensor {
                shape: vec![n],
                data: TensorData::Bool(pairs.iter().map(|p| p.label.is_some()).collect()),
            },
        ),
    ];
    for (kind, pick) in [
        (
            "input",
            (|p: &ExportedPair| &p.pair.inputs) as fn(&ExportedPair) -> &Vec<CapturedTensor>,
        ),
        ("output", |p: &ExportedPair| &p.pair.outputs),
    ] {
        let mut names: Vec<&str> = pairs
            .iter()
            .flat_map(|p| pick(p).iter().map(|t| t.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let mut tensors = Vec::with_capacity(pairs.len());
            for p in pairs {
                let t = pick(p)
                    .iter()
                    .find(|t| t.name == name)
                    .map(CapturedTensor::tensor)
                    .transpose()
                    .map_err(|source| ExportError::Pair {
                        node: p.node.clone(),
                        seq: p.seq,
                        source,
                    })?;
                tensors.push(t);
            }
            arrays.extend(stack(&format!("{kind}/{name}"), &tensors));
        }
    }
    let labels: Vec<Option<Tensor>> = pairs
        .iter()
        .map(|p| {
            p.label.as_ref().map(|truth| match truth {
                Truth::Labels(v) => Tensor {
                    shape: vec![v.len() as u64],
                    data: TensorData::Int64(v.clone()),
                },
                Truth::Values(v) => Tensor {
                    shape: vec![v.len() as u64],
                    data: TensorData::Float64(v.clone()),
                },
            })
        })
        .collect();
    if labels.iter().any(Option::is_some) {
        arrays.extend(stack("label", &labels));
    }
    let info = arrays
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                ArrayInfo {
                    shape: t.shape.clone(),
                    dtype: gantry_shared::tensor::datatype_name(t.dtype()).to_owned(),
                },
            )
        })
        .collect();
    Ok((arrays, info))
}

/// A byte-string array of one element per pair.
fn bytes(items: impl Iterator<Item = Vec<u8>>) -> Tensor {
    let items: Vec<Vec<u8>> = items.collect();
    Tensor {
        shape: vec![items.len() as u64],
        data: TensorData::Bytes(items),
    }
}

/// Pair tensors (`None` where a pair has none) concatenated along their first axis with
/// their offsets, or, when their shapes beyond it differ, one array per pair.
fn stack(name: &str, tensors: &[Option<Tensor>]) -> Arrays {
    let present: Vec<&Tensor> = tensors.iter().flatten().collect();
    let Some(first) = present.first() else {
        return Vec::new();
    };
    let uniform = !first.shape.is_empty()
        && present
            .iter()
            .all(|t| t.shape.len() == first.shape.len() && t.shape[1..] == first.shape[1..])
        && present.iter().all(|t| t.dtype() == first.dtype());
    if !uniform {
        return tensors
            .iter()
            .enumerate()
            .filter_map(|(i, t)| Some((format!("{name}/{i}"), t.clone()?)))
            .collect();
    }
    let mut data = TensorData::empty(first.dtype());
    let mut offsets = Vec::with_capacity(tensors.len() + 1);
    let mut rows = 0u64;
    offsets.push(0i64);
    for t in tensors {
        if let Some(t) = t {
            data.extend_from(&t.data);
            rows += t.shape[0];
        }
        offsets.push(i64::try_from(rows).unwrap_or(i64::MAX));
    }
    let mut shape = first.shape.clone();
    shape[0] = rows;
    vec![
        (name.to_owned(), Tensor { shape, data }),
        (
            format!("offsets/{name}"),
            Tensor {
                shape: vec![offsets.len() as u64],
                data: TensorData::Int64(offsets),
            },
        ),
    ]
}

/// Writes `arrays` as a `.npz` (a zip of `.npy` files, deflated as
/// `numpy.savez_compressed` writes them).
fn write_npz(w: &mut (impl Write + std::io::Seek), arrays: &Arrays) -> std::io::Result<()> {
    let mut zip = zip::ZipWriter::new(w);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for (name, tensor) in arrays {
        zip.start_file(format!("{name}.npy"), options)
            .map_err(std::io::Error::other)?;
        zip.write_all(&npy::write(tensor))?;
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use gantry_shared::monitoring::capture::CapturedPair;

    use super::*;

    fn pair(node: &str, seq: u64, rows: u64, label: Option<Vec<i64>>) -> ExportedPair {
        let x = Tensor {
            shape: vec![rows, 2],
            data: TensorData::Float32((0..rows * 2).map(|v| v as f32).collect()),
        };
        ExportedPair {
            node: node.into(),
            seq,
            pair: CapturedPair {
                model: "m".into(),
                version: "1.0.0".into(),
                bundle: "sha256:ab".into(),
                at_ms: seq,
                id: Some(format!("r{seq}")),
                inputs: vec![CapturedTensor::new("x", &x)],
                outputs: vec![],
                redacted: vec!["secret".into()],
            },
            label: label.map(Truth::Labels),
        }
    }

    #[test]
    fn pairs_of_different_batch_sizes_concatenate_with_offsets() {
        let pairs = [pair("a", 1, 1, Some(vec![2])), pair("b", 2, 3, None)];
        let refs: Vec<&ExportedPair> = pairs.iter().collect();
        let (arrays, info) = archive(&refs).expect("archives");
        assert_eq!(info["input/x"].shape, vec![4, 2]);
        let offsets = arrays
            .iter()
            .find(|(n, _)| n == "offsets/input/x")
            .expect("offsets");
        assert_eq!(offsets.1.data, TensorData::Int64(vec![0, 1, 4]));
        let label = arrays
            .iter()
            .find(|(n, _)| n == "offsets/label")
            .expect("labels");
        assert_eq!(label.1.data, TensorData::Int64(vec![0, 1, 1]));
        assert_eq!(info["labeled"].shape, vec![2]);
    }

    #[test]
    fn pairs_whose_trailing_shapes_differ_are_written_one_by_one() {
        let mut odd = pair("b", 2, 1, None);
        odd.pair.inputs = vec![CapturedTensor::new(
            "x",
            &Tensor {
                shape: vec![1, 3],
                data: TensorData::Float32(vec![1.0, 2.0, 3.0]),
            },
        )];
        let pairs = [pair("a", 1, 1, None), odd];
        let refs: Vec<&ExportedPair> = pairs.iter().collect();
        let (_, info) = archive(&refs).expect("archives");
        assert_eq!(info["input/x/0"].shape, vec![1, 2]);
        assert_eq!(info["input/x/1"].shape, vec![1, 3]);
        assert!(!info.contains_key("offsets/input/x"));
    }

    #[test]
    fn a_pair_whose_tensor_lies_about_its_shape_fails_the_export_naming_it() {
        let mut bad = pair("b", 7, 1, None);
        bad.pair.inputs[0].shape = vec![5, 2];
        let pairs = [bad];
        let refs: Vec<&ExportedPair> = pairs.iter().collect();
        let err = archive(&refs).expect_err("refused");
        assert!(err.to_string().contains("node b (sequence 7)"), "{err}");
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(file_part("../etc/passwd"), ".._etc_passwd");
        assert_eq!(file_part("1.2.0+build"), "1.2.0_build");
    }
}
