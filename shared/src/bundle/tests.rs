//! Bundle reader tests, one per attack, named after it.

use std::time::SystemTime;

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use super::archive::{ArchiveError, ArchiveWriter, BLOCK, hostile};
use super::manifest::{DType, Dim, FileEntry, Manifest, ModelEntry, SCHEMA_VERSION, TensorSpec};
use super::path::PathError;
use super::policy::{Rejection, SignedPolicy, TrustPolicy, TrustedKey};
use super::signing::{self, Signature};
use super::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn now() -> SystemTime {
    humantime::parse_rfc3339("2026-06-01T00:00:00Z").unwrap()
}

/// Policy trusting keys 1, 2, 3 (key 3 expired, when asked), needing `threshold`.
fn policy_with(threshold: u32, edit: impl FnOnce(&mut TrustPolicy)) -> SignedPolicy {
    let mut p = TrustPolicy {
        schema: 1,
        version: 1,
        threshold,
        keys: [1u8, 2, 3]
            .iter()
            .map(|&s| {
                let public = key(s).verifying_key();
                TrustedKey {
                    id: signing::key_id(&public),
                    name: format!("release-{s}"),
                    public_key: signing::to_hex(public.as_bytes()),
                    not_before: None,
                    not_after: None,
                }
            })
            .collect(),
        revoked: Vec::new(),
        golden: None,
    };
    edit(&mut p);
    let mut sp = SignedPolicy::new(p).unwrap();
    sp.sign(&key(1)).unwrap();
    sp.sign(&key(2)).unwrap();
    sp
}

fn policy(threshold: u32) -> SignedPolicy {
    policy_with(threshold, |_| {})
}

const MODEL: &[u8] = b"not really onnx, but bytes with a digest";
const VOCAB: &[u8] = b"a\nb\nc\n";

fn sha(data: &[u8]) -> String {
    signing::to_hex(&Sha256::digest(data))
}

fn manifest() -> Manifest {
    Manifest {
        schema: SCHEMA_VERSION,
        name: "tiny".into(),
        version: "1.0.0".into(),
        created_at: "2026-05-01T00:00:00Z".into(),
        files: vec![
            FileEntry {
                path: "model.onnx".into(),
                size: MODEL.len() as u64,
                sha256: sha(MODEL),
            },
            FileEntry {
                path: "extra/vocab.txt".into(),
                size: VOCAB.len() as u64,
                sha256: sha(VOCAB),
            },
        ],
        model: ModelEntry {
            format: "onnx".into(),
            entry: "model.onnx".into(),
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
        golden: Vec::new(),
        provenance: manifest::Provenance::default(),
        requirements: manifest::Requirements::default(),
        monitoring: None,
        quality: None,
    }
}

fn manifest_bytes() -> Vec<u8> {
    manifest().to_bytes().unwrap()
}

fn sign_by(seeds: &[u8], bytes: &[u8]) -> Vec<Signature> {
    seeds
        .iter()
        .map(|&s| sign_manifest(&key(s), bytes))
        .collect()
}

fn contents(path: &str) -> &'static [u8] {
    match path {
        "model.onnx" => MODEL,
        "extra/vocab.txt" => VOCAB,
        other => panic!("no contents for {other}"),
    }
}

fn good_bundle(signers: &[u8]) -> Vec<u8> {
    let bytes = manifest_bytes();
    write(Vec::new(), &bytes, &sign_by(signers, &bytes), &mut |f| {
        Ok(Box::new(contents(&f.path)))
    })
    .unwrap()
}

/// A bundle built entry by entry, for layouts the writer refuses to produce.
fn raw_bundle(build: impl FnOnce(&mut ArchiveWriter<Vec<u8>>)) -> Vec<u8> {
    let bytes = manifest_bytes();
    let sigs =
        serde_json::to_vec(&serde_json::json!({ "signatures": sign_by(&[1, 2], &bytes) })).unwrap();
    let mut w = ArchiveWriter::new(Vec::new());
    w.append(MANIFEST_ENTRY, bytes.len() as u64, &mut &bytes[..])
        .unwrap();
    w.append(SIGNATURES_ENTRY, sigs.len() as u64, &mut &sigs[..])
        .unwrap();
    build(&mut w);
    w.finish().unwrap()
}

fn append(w: &mut ArchiveWriter<Vec<u8>>, path: &str, data: &[u8]) {
    w.append(path, data.len() as u64, &mut &data[..]).unwrap();
}

fn raw_with_header(header: &[u8; BLOCK]) -> Vec<u8> {
    let mut bytes = raw_bundle(|w| append(w, "files/model.onnx", MODEL));
    let end = bytes.len() - 2 * BLOCK;
    bytes.truncate(end);
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 2 * BLOCK]);
    bytes
}

fn verify_bytes(bytes: &[u8], policy: &SignedPolicy) -> Result<Verified, BundleError> {
    verify(bytes, policy, now(), &mut Discard)
}

fn rejected(bytes: &[u8]) -> BundleError {
    verify_bytes(bytes, &policy(2)).expect_err("the bundle must be refused")
}

#[test]
fn round_trip_with_two_of_three_keys_verifies() {
    let verified = verify_bytes(&good_bundle(&[1, 2]), &policy(2)).unwrap();
    assert_eq!(
        verified.payload,
        PayloadSummary {
            files: 2,
            bytes: (MODEL.len() + VOCAB.len()) as u64
        }
    );
    assert_eq!(verified.signatures.valid(), 2);
    assert_eq!(verified.id, BundleId::of_manifest(&manifest_bytes()));
}

#[test]
fn round_trip_with_one_of_three_keys_verifies_under_threshold_one() {
    assert!(verify_bytes(&good_bundle(&[3]), &policy(1)).is_ok());
}

#[test]
fn too_few_distinct_valid_signatures() {
    let err = verify_bytes(&good_bundle(&[1]), &policy(2)).unwrap_err();
    assert!(matches!(err, BundleError::Untrusted { .. }), "{err}");
}

#[test]
fn same_key_signing_twice_counts_once() {
    let err = verify_bytes(&good_bundle(&[1, 1]), &policy(2)).unwrap_err();
    let BundleError::Untrusted { report } = err else {
        panic!("{err}")
    };
    assert_eq!(report.valid(), 1);
    assert_eq!(report.checks[1].outcome, Err(Rejection::SameKeyAgain));
}

#[test]
fn no_signatures() {
    assert!(matches!(
        verify_bytes(&good_bundle(&[]), &policy(1)),
        Err(BundleError::NoSignatures)
    ));
}

#[test]
fn signature_by_untrusted_key() {
    let err = verify_bytes(&good_bundle(&[1, 9]), &policy(2)).unwrap_err();
    let BundleError::Untrusted { report } = err else {
        panic!("{err}")
    };
    assert_eq!(report.checks[1].outcome, Err(Rejection::Untrusted));
}

#[test]
fn signature_by_revoked_key() {
    let policy = policy_with(2, |p| {
        p.revoked.push(signing::key_id(&key(3).verifying_key()));
    });
    let err = verify_bytes(&good_bundle(&[1, 3]), &policy).unwrap_err();
    assert!(err.to_string().contains("key is revoked"), "{err}");
}

#[test]
fn signature_by_expired_key() {
    let policy = policy_with(2, |p| {
        p.keys[2].not_after = Some("2026-01-01T00:00:00Z".into());
    });
    let err = verify_bytes(&good_bundle(&[1, 3]), &policy).unwrap_err();
    assert!(
        err.to_string()
            .contains("(release-3): key expired at 2026-01-01T00:00:00Z"),
        "{err}"
    );
}

#[test]
fn signature_over_a_different_manifest() {
    let bytes = manifest_bytes();
    let mut other = manifest();
    other.version = "6.6.6".into();
    let other_bytes = other.to_bytes().unwrap();
    let mut sigs = sign_by(&[1], &bytes);
    sigs.extend(sign_by(&[2], &other_bytes));
    let bundle = write(Vec::new(), &bytes, &sigs, &mut |f| {
        Ok(Box::new(contents(&f.path)))
    })
    .unwrap();
    let err = verify_bytes(&bundle, &policy(2)).unwrap_err();
    assert!(
        err.to_string().contains("does not match these bytes"),
        "{err}"
    );
}

#[test]
fn payload_is_not_read_when_signatures_fail() {
    // A bundle whose payload is garbage but whose signatures are short fails on the
    // signatures: the payload is never streamed.
    let bundle = raw_bundle(|w| append(w, "files/model.onnx", b"garbage"));
    let err = verify(&bundle[..], &policy_with(3, |_| {}), now(), &mut Discard).unwrap_err();
    assert!(matches!(err, BundleError::Untrusted { .. }), "{err}");
}

#[test]
fn path_traversal() {
    let bundle = raw_bundle(|w| append(w, "files/../../etc/cron.d/evil", b"x"));
    assert!(matches!(
        rejected(&bundle),
        BundleError::UnsafePath {
            source: PathError::Traversal,
            ..
        }
    ));
}

#[test]
fn absolute_path() {
    let bundle = raw_bundle(|w| append(w, "files//etc/passwd", b"x"));
    assert!(matches!(
        rejected(&bundle),
        BundleError::UnsafePath {
            source: PathError::Absolute,
            ..
        }
    ));
    let outside = raw_bundle(|w| append(w, "/etc/passwd", b"x"));
    assert!(matches!(rejected(&outside), BundleError::Layout { .. }));
}

#[test]
fn symbolic_link() {
    let err = rejected(&raw_with_header(&hostile::header(
        "files/extra/vocab.txt",
        0,
        b'2',
    )));
    assert!(
        matches!(
            err,
            BundleError::Archive(ArchiveError::NotARegularFile {
                kind: "symbolic link",
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn hard_link() {
    let err = rejected(&raw_with_header(&hostile::header(
        "files/extra/vocab.txt",
        0,
        b'1',
    )));
    assert!(
        matches!(
            err,
            BundleError::Archive(ArchiveError::NotARegularFile {
                kind: "hard link",
                ..
            })
        ),
        "{err}"
    );
}

#[test]
fn device_file() {
    for (flag, kind) in [
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "FIFO"),
    ] {
        let err = rejected(&raw_with_header(&hostile::header(
            "files/extra/vocab.txt",
            0,
            flag,
        )));
        assert!(
            matches!(&err, BundleError::Archive(ArchiveError::NotARegularFile { kind: k, .. }) if *k == kind),
            "{err}"
        );
    }
}

#[test]
fn pax_header_is_refused() {
    let err = rejected(&raw_with_header(&hostile::header("files/x", 0, b'x')));
    assert!(err.to_string().contains("pax extended header"), "{err}");
}

#[test]
fn duplicate_entry() {
    let bundle = raw_bundle(|w| {
        append(w, "files/model.onnx", MODEL);
        append(w, "files/model.onnx", MODEL);
    });
    assert!(matches!(
        rejected(&bundle),
        BundleError::DuplicateEntry { .. }
    ));
}

#[test]
fn size_disagrees_with_manifest() {
    let bundle = raw_bundle(|w| append(w, "files/model.onnx", &MODEL[..10]));
    let err = rejected(&bundle);
    assert!(
        matches!(err, BundleError::SizeMismatch { archive: 10, .. }),
        "{err}"
    );
}

#[test]
fn digest_mismatch() {
    let mut altered = MODEL.to_vec();
    altered[0] ^= 1;
    let bundle = raw_bundle(|w| {
        append(w, "files/model.onnx", &altered);
        append(w, "files/extra/vocab.txt", VOCAB);
    });
    let err = rejected(&bundle);
    assert!(
        matches!(&err, BundleError::DigestMismatch { path, .. } if path == "model.onnx"),
        "{err}"
    );
}

#[test]
fn file_missing() {
    let bundle = raw_bundle(|w| append(w, "files/model.onnx", MODEL));
    assert!(
        matches!(rejected(&bundle), BundleError::MissingFile { path } if path == "extra/vocab.txt")
    );
}

#[test]
fn file_not_in_manifest() {
    let bundle = raw_bundle(|w| {
        append(w, "files/model.onnx", MODEL);
        append(w, "files/extra/vocab.txt", VOCAB);
        append(w, "files/backdoor.so", b"\x7fELF");
    });
    assert!(
        matches!(rejected(&bundle), BundleError::NotInManifest { path } if path == "backdoor.so")
    );
}

#[test]
fn truncated() {
    let bundle = good_bundle(&[1, 2]);
    for cut in [10, 600, bundle.len() / 2, bundle.len() - 1] {
        let err = rejected(&bundle[..cut]);
        assert!(
            matches!(err, BundleError::Archive(ArchiveError::Truncated { .. })),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn trailing_garbage() {
    let mut bundle = good_bundle(&[1, 2]);
    bundle.extend_from_slice(b"#!/bin/sh\n");
    assert!(matches!(
        rejected(&bundle),
        BundleError::Archive(ArchiveError::TrailingGarbage)
    ));
}

#[test]
fn oversized_manifest() {
    // The header claims 2 MiB: refused from the header, before reading the contents.
    let mut w = ArchiveWriter::new(Vec::new());
    w.start_file(MANIFEST_ENTRY, 2 << 20).unwrap();
    let bytes = w.finish().unwrap();
    let err = BundleReader::open(&bytes[..]).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Oversized {
                entry: MANIFEST_ENTRY,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unknown_schema_version() {
    let text = br#"{"schema": 99, "name": "tiny"}"#;
    let mut w = ArchiveWriter::new(Vec::new());
    append(&mut w, MANIFEST_ENTRY, text);
    let bytes = w.finish().unwrap();
    let err = BundleReader::open(&bytes[..]).unwrap_err();
    assert!(
        matches!(
            err,
            BundleError::Manifest(ManifestError::UnknownSchema { found: 99 })
        ),
        "{err}"
    );
}

#[test]
fn entries_out_of_order() {
    let mut w = ArchiveWriter::new(Vec::new());
    append(&mut w, SIGNATURES_ENTRY, b"{\"signatures\":[]}");
    let bytes = w.finish().unwrap();
    assert!(matches!(
        BundleReader::open(&bytes[..]),
        Err(BundleError::Layout { position: 1, .. })
    ));
}

#[test]
fn resigning_adds_a_signature_and_keeps_the_identity() {
    let bundle = good_bundle(&[1]);
    let reader = BundleReader::open(&bundle[..]).unwrap();
    let mut sigs = reader.signatures().to_vec();
    sigs.push(sign_manifest(&key(2), reader.manifest_bytes()));
    let before = reader.id().clone();
    let (id, rewritten) = rewrite_signatures(reader, &sigs, Vec::new()).unwrap();
    assert_eq!(id, before);
    assert!(verify_bytes(&rewritten, &policy(2)).is_ok());
}

#[test]
fn resigning_a_tampered_bundle_fails() {
    let mut altered = MODEL.to_vec();
    altered[3] ^= 0x20;
    let bundle = raw_bundle(|w| {
        append(w, "files/model.onnx", &altered);
        append(w, "files/extra/vocab.txt", VOCAB);
    });
    let reader = BundleReader::open(&bundle[..]).unwrap();
    let sigs = reader.signatures().to_vec();
    assert!(matches!(
        rewrite_signatures(reader, &sigs, Vec::new()),
        Err(BundleError::DigestMismatch { .. })
    ));
}

/// A bundle whose manifest carries `golden`, signed by keys 1 and 2.
fn bundle_with_golden(golden: Vec<manifest::GoldenVector>) -> Vec<u8> {
    let mut m = manifest();
    m.golden = golden;
    let bytes = m.to_bytes().unwrap();
    write(Vec::new(), &bytes, &sign_by(&[1, 2], &bytes), &mut |f| {
        Ok(Box::new(contents(&f.path)))
    })
    .unwrap()
}

fn golden_vector(name: &str, x: Vec<f32>, y: Vec<f32>, abs: f64) -> manifest::GoldenVector {
    let tensor = |data: Vec<f32>| {
        manifest::Tensor {
            shape: vec![data.len() as u64],
            data: crate::tensor::TensorData::Float32(data),
        }
        .into()
    };
    manifest::GoldenVector {
        name: name.into(),
        inputs: [("x".to_owned(), tensor(x))].into(),
        outputs: [("y".to_owned(), tensor(y))].into(),
        tolerance: manifest::Tolerance { abs, rel: 0.0 },
    }
}

fn requiring_golden() -> SignedPolicy {
    policy_with(2, |p| p.golden = Some(policy::GoldenRequirement::DEFAULT))
}

#[test]
fn empty_golden_gate_no_vectors_is_refused_when_the_policy_requires_them() {
    let err = verify_bytes(&bundle_with_golden(Vec::new()), &requiring_golden()).unwrap_err();
    assert!(matches!(err, BundleError::GoldenRequirement(_)), "{err}");
    assert!(
        outcome::error_chain(&err).contains("requires 1 golden vector(s)"),
        "{}",
        outcome::error_chain(&err)
    );
    // A policy made before the requirement existed still accepts it.
    assert!(verify_bytes(&bundle_with_golden(Vec::new()), &policy(2)).is_ok());
}

#[test]
fn empty_golden_gate_only_empty_batch_vectors_is_refused() {
    let mut m = manifest();
    m.model.inputs[0].shape = vec![Dim::Named("batch".into())];
    m.model.outputs[0].shape = vec![Dim::Named("batch".into())];
    m.golden = vec![golden_vector("empty", vec![], vec![], 0.0)];
    let bytes = m.to_bytes().unwrap();
    let bundle = write(Vec::new(), &bytes, &sign_by(&[1, 2], &bytes), &mut |f| {
        Ok(Box::new(contents(&f.path)))
    })
    .unwrap();
    let err = verify_bytes(&bundle, &requiring_golden()).unwrap_err();
    assert!(
        outcome::error_chain(&err).contains("the bundle has 0 (1 listed)"),
        "{}",
        outcome::error_chain(&err)
    );
}

#[test]
fn empty_golden_gate_huge_tolerance_is_refused() {
    let bundle = bundle_with_golden(vec![golden_vector("loose", vec![1.0], vec![2.0], 1e300)]);
    let err = verify_bytes(&bundle, &requiring_golden()).unwrap_err();
    assert!(
        outcome::error_chain(&err).contains("golden vector \"loose\" has tolerance abs 1e300"),
        "{}",
        outcome::error_chain(&err)
    );
    let strict = bundle_with_golden(vec![golden_vector("real", vec![1.0], vec![2.0], 1e-5)]);
    assert!(verify_bytes(&strict, &requiring_golden()).is_ok());
}

#[test]
fn weak_key_in_a_policy_is_refused() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let err = SignedPolicy::new(TrustPolicy {
        schema: 1,
        version: 1,
        threshold: 1,
        keys: vec![TrustedKey {
            id: signing::key_id(&ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap()),
            name: "small-order".into(),
            public_key: signing::to_hex(&identity),
            not_before: None,
            not_after: None,
        }],
        revoked: Vec::new(),
        golden: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("weak ed25519 key"), "{err}");
}
