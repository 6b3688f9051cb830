//! `gantry-agent verify --golden`: a verified bundle's golden vectors run in real ONNX
//! Runtime (loaded from the `PyPI` wheel's library; `scripts/test.sh` fetches it and sets
//! `GANTRY_ONNXRUNTIME`).

use std::path::{Path, PathBuf};
use std::process::Command;

use ed25519_dalek::SigningKey;
use gantry_shared::bundle::manifest::{
    FileEntry, GoldenVector, Manifest, ModelEntry, Provenance, Requirements,
};
use gantry_shared::bundle::onnx;
use gantry_shared::bundle::policy::{SignedPolicy, TrustPolicy, TrustedKey};
use gantry_shared::bundle::{self, signing};
use sha2::{Digest, Sha256};

const AGENT: &str = env!("CARGO_BIN_EXE_gantry-agent");

fn onnxruntime() -> PathBuf {
    let path = std::env::var_os("GANTRY_ONNXRUNTIME").map(PathBuf::from).expect(
        "GANTRY_ONNXRUNTIME is not set: run the suite with scripts/test.sh, which fetches ONNX Runtime's library from the PyPI wheel",
    );
    assert!(
        path.is_file(),
        "GANTRY_ONNXRUNTIME={} does not exist",
        path.display()
    );
    path
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models")
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[3; 32])
}

fn write_policy(path: &Path) {
    let public = key().verifying_key();
    let mut policy = SignedPolicy::new(TrustPolicy {
        schema: 1,
        version: 1,
        threshold: 1,
        keys: vec![TrustedKey {
            id: signing::key_id(&public),
            name: "ml".into(),
            public_key: signing::to_hex(public.as_bytes()),
            not_before: None,
            not_after: None,
        }],
        revoked: vec![],
    })
    .unwrap();
    policy.sign(&key()).unwrap();
    std::fs::write(path, policy.to_bytes()).unwrap();
}

fn write_bundle(path: &Path, model: &str, edit_golden: impl FnOnce(&mut Vec<GoldenVector>)) {
    let bytes = std::fs::read(models().join(format!("{model}.onnx"))).unwrap();
    let signature = onnx::read_signature(&bytes[..]).unwrap();
    let mut golden: Vec<GoldenVector> = serde_json::from_slice(
        &std::fs::read(models().join(format!("{model}.golden.json"))).unwrap(),
    )
    .unwrap();
    edit_golden(&mut golden);
    let manifest = Manifest {
        schema: 1,
        name: model.replace('_', "-"),
        version: "1.0.0".into(),
        created_at: "2026-11-21T00:00:00Z".into(),
        files: vec![FileEntry {
            path: "model.onnx".into(),
            size: bytes.len() as u64,
            sha256: signing::to_hex(&Sha256::digest(&bytes)),
        }],
        model: ModelEntry {
            format: "onnx".into(),
            entry: "model.onnx".into(),
            inputs: signature.inputs,
            outputs: signature.outputs,
        },
        golden,
        provenance: Provenance::default(),
        requirements: Requirements::default(),
    };
    let manifest_bytes = manifest.to_bytes().unwrap();
    let sigs = vec![bundle::sign_manifest(&key(), &manifest_bytes)];
    let out = bundle::write(Vec::new(), &manifest_bytes, &sigs, &mut |_| {
        Ok(Box::new(std::io::Cursor::new(bytes.clone())))
    })
    .unwrap();
    std::fs::write(path, out).unwrap();
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
        golden[1].outputs.get_mut("y").unwrap().data[1] += 0.5;
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
