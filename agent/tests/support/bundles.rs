//! Signed test bundles of the models in `testdata/models`, the trust policy that accepts
//! them, and ONNX Runtime's library from `GANTRY_ONNXRUNTIME`.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use gantry_shared::bundle::manifest::{
    FileEntry, GoldenVector, Manifest, ModelEntry, Provenance, Requirements,
};
use gantry_shared::bundle::policy::{SignedPolicy, TrustPolicy, TrustedKey};
use gantry_shared::bundle::{self, onnx, signing};
use sha2::{Digest, Sha256};

/// ONNX Runtime's shared library, which `scripts/test.sh` fetches.
pub fn onnxruntime() -> PathBuf {
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

/// Test models and their golden vectors (`testdata/models`).
pub fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models")
}

/// A test signing key, from its seed.
pub fn seeded_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The release key every test bundle is signed with.
pub fn key() -> SigningKey {
    seeded_key(5)
}

/// A trust policy of `version` trusting the keys seeded by `trusted` (named
/// `release-<seed>`), needing `threshold` signatures, signed by the keys of `signers`.
pub fn policy_bytes(version: u64, trusted: &[u8], threshold: u32, signers: &[u8]) -> Vec<u8> {
    let keys = trusted
        .iter()
        .map(|&s| {
            let public = seeded_key(s).verifying_key();
            TrustedKey {
                id: signing::key_id(&public),
                name: format!("release-{s}"),
                public_key: signing::to_hex(public.as_bytes()),
                not_before: None,
                not_after: None,
            }
        })
        .collect();
    let mut policy = SignedPolicy::new(TrustPolicy {
        schema: 1,
        version,
        threshold,
        keys,
        revoked: vec![],
        golden: None,
    })
    .unwrap();
    for &s in signers {
        policy.sign(&seeded_key(s)).unwrap();
    }
    policy.to_bytes()
}

/// The node policy the tests use: the release key [`key`], one signature needed.
pub fn write_policy(path: &Path) {
    std::fs::write(path, policy_bytes(1, &[5], 1, &[5])).unwrap();
}

/// A signed bundle of a test model, named `name` at `version`; `edit` changes the
/// manifest before it is signed.
pub fn write_bundle(
    path: &Path,
    model: &str,
    name: &str,
    version: &str,
    edit: impl FnOnce(&mut Manifest),
) {
    let models = models();
    let bytes = std::fs::read(models.join(format!("{model}.onnx"))).unwrap();
    let sig = onnx::read_signature(&bytes[..]).unwrap();
    let golden: Vec<GoldenVector> = serde_json::from_slice(
        &std::fs::read(models.join(format!("{model}.golden.json"))).unwrap(),
    )
    .unwrap();
    let mut manifest = Manifest {
        schema: 1,
        name: name.into(),
        version: version.into(),
        created_at: "2026-11-21T00:00:00Z".into(),
        files: vec![FileEntry {
            path: "model.onnx".into(),
            size: bytes.len() as u64,
            sha256: signing::to_hex(&Sha256::digest(&bytes)),
        }],
        model: ModelEntry {
            format: "onnx".into(),
            entry: "model.onnx".into(),
            inputs: sig.inputs,
            outputs: sig.outputs,
        },
        golden,
        provenance: Provenance::default(),
        requirements: Requirements::default(),
        monitoring: None,
        quality: None,
    };
    edit(&mut manifest);
    let manifest_bytes = manifest.to_bytes().unwrap();
    let sigs = vec![bundle::sign_manifest(&key(), &manifest_bytes)];
    let out = bundle::write(Vec::new(), &manifest_bytes, &sigs, &mut |_| {
        Ok(Box::new(std::io::Cursor::new(bytes.clone())))
    })
    .unwrap();
    std::fs::write(path, out).unwrap();
}
