//! `gantry-agent verify`: a node checks a bundle file against its own trust policy.

use std::path::Path;
use std::process::Command;

mod support;

use gantry_shared::bundle::manifest::{
    DType, Dim, FileEntry, Manifest, ModelEntry, Provenance, Requirements, TensorSpec,
};
use gantry_shared::bundle::{self, signing};
use sha2::{Digest, Sha256};
use support::bundles::{policy_bytes, seeded_key as key};

use support::AGENT;
const MODEL: &[u8] = b"model bytes";

fn write_policy(path: &Path, trusted: &[u8], threshold: u32) {
    let signers = &trusted[..threshold as usize];
    std::fs::write(path, policy_bytes(1, trusted, threshold, signers)).unwrap();
}

fn write_bundle(path: &Path, signers: &[u8], payload: &[u8]) {
    let manifest = Manifest {
        schema: 1,
        name: "node-test".into(),
        version: "0.1.0".into(),
        created_at: "2026-11-01T00:00:00Z".into(),
        files: vec![FileEntry {
            path: "m.onnx".into(),
            size: MODEL.len() as u64,
            sha256: signing::to_hex(&Sha256::digest(MODEL)),
        }],
        model: ModelEntry {
            format: "onnx".into(),
            entry: "m.onnx".into(),
            inputs: vec![TensorSpec {
                name: "x".into(),
                dtype: DType::Float32,
                shape: vec![Dim::Fixed(1)],
            }],
            outputs: vec![TensorSpec {
                name: "y".into(),
                dtype: DType::Float32,
                shape: vec![Dim::Fixed(1)],
            }],
        },
        golden: vec![],
        provenance: Provenance::default(),
        requirements: Requirements::default(),
        monitoring: None,
        quality: None,
    };
    let bytes = manifest.to_bytes().unwrap();
    let sigs: Vec<_> = signers
        .iter()
        .map(|&s| bundle::sign_manifest(&key(s), &bytes))
        .collect();
    let payload = payload.to_vec();
    let out = bundle::write(Vec::new(), &bytes, &sigs, &mut |_| {
        Ok(Box::new(std::io::Cursor::new(payload.clone())))
    })
    .unwrap();
    std::fs::write(path, out).unwrap();
}

fn verify(dir: &Path, bundle: &str) -> (i32, String) {
    let out = Command::new(AGENT)
        .args(["verify", bundle, "--config"])
        .arg(dir.join("agent.toml"))
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
fn node_verifies_against_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("node-trust.json");
    std::fs::write(
        dir.path().join("agent.toml"),
        format!("[trust]\npolicy = {:?}\n", policy.to_str().unwrap()),
    )
    .unwrap();
    write_policy(&policy, &[1, 2, 3], 2);

    write_bundle(&dir.path().join("good.gbundle"), &[1, 3], MODEL);
    let (code, text) = verify(dir.path(), "good.gbundle");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("VERIFIED") && text.contains("(release-3)"),
        "{text}"
    );

    // Signed by a key this node does not trust.
    write_bundle(&dir.path().join("foreign.gbundle"), &[1, 9], MODEL);
    let (code, text) = verify(dir.path(), "foreign.gbundle");
    assert_eq!(code, 1);
    assert!(
        text.contains("signature 2 by key") && text.contains("key is not trusted by this policy"),
        "{text}"
    );

    // Payload altered after signing.
    write_bundle(&dir.path().join("altered.gbundle"), &[1, 2], b"MODEL BYTES");
    let (code, text) = verify(dir.path(), "altered.gbundle");
    assert_eq!(code, 1);
    assert!(
        text.contains("file \"m.onnx\" does not match its SHA-256"),
        "{text}"
    );

    // JSON for scripts.
    let out = Command::new(AGENT)
        .args(["verify", "good.gbundle", "--json", "--trust"])
        .arg(&policy)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], true);
}

#[test]
fn node_without_a_policy_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agent.toml"),
        format!("state_dir = {:?}\n", dir.path().to_str().unwrap()),
    )
    .unwrap();
    write_bundle(&dir.path().join("b.gbundle"), &[1], MODEL);
    let (code, text) = verify(dir.path(), "b.gbundle");
    assert_eq!(code, 1);
    assert!(
        text.contains("cannot read the node's trust policy") && text.contains("trust.json"),
        "{text}"
    );
}
