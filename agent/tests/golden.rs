//! `gantry-agent verify --golden`: a verified bundle's golden vectors run in real ONNX
//! Runtime (loaded from the `PyPI` wheel's library; `scripts/test.sh` fetches it and sets
//! `GANTRY_ONNXRUNTIME`).

use std::path::Path;
use std::process::Command;

use gantry_shared::bundle::manifest::{GoldenValues, GoldenVector};
use gantry_shared::tensor::TensorData;

mod support;

use support::AGENT;
use support::bundles::{onnxruntime, write_policy};

/// A signed bundle of `model` named after it (`tiny_linear` → `tiny-linear`), version 1.0.0.
fn write_bundle(path: &Path, model: &str, edit_golden: impl FnOnce(&mut Vec<GoldenVector>)) {
    support::bundles::write_bundle(path, model, &model.replace('_', "-"), "1.0.0", |m| {
        edit_golden(&mut m.golden);
    });
}

fn verify(dir: &Path, bundle: &str, library: &Path) -> (i32, String) {
    let out = Command::new(AGENT)
        .args([
            "verify",
            bundle,
            "--golden",
            "--config",
            "/dev/null",
            "--trust",
        ])
        .arg(dir.join("trust.json"))
        .arg("--onnxruntime")
        .arg(library)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn golden_vectors_pass_in_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(&dir.path().join("trust.json"));
    for model in ["tiny_linear", "tiny_mlp"] {
        write_bundle(&dir.path().join(format!("{model}.gbundle")), model, |_| {});
        let (code, text) = verify(dir.path(), &format!("{model}.gbundle"), &onnxruntime());
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("VERIFIED"), "{text}");
        assert!(!text.contains("FAILED"), "{text}");
        assert!(text.matches("golden      ").count() >= 1, "{text}");
    }
}

#[test]
fn a_golden_mismatch_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(&dir.path().join("trust.json"));
    write_bundle(&dir.path().join("wrong.gbundle"), "tiny_linear", |golden| {
        let y = golden[1].outputs.get_mut("y").unwrap();
        if let GoldenValues::Inline(TensorData::Float32(data)) = &mut y.values {
            data[1] += 0.5;
        }
    });
    let (code, text) = verify(dir.path(), "wrong.gbundle", &onnxruntime());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("golden      ones: ok"), "{text}");
    assert!(
        text.contains("golden      counting: FAILED: output \"y\" element 1"),
        "{text}"
    );
}

#[test]
fn a_missing_runtime_library_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_policy(&dir.path().join("trust.json"));
    write_bundle(&dir.path().join("b.gbundle"), "tiny_linear", |_| {});
    let (code, text) = verify(
        dir.path(),
        "b.gbundle",
        Path::new("/nonexistent/libonnxruntime.so.1.31.1"),
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("ONNX Runtime library /nonexistent/libonnxruntime.so.1.31.1 does not exist"),
        "{text}"
    );
}
