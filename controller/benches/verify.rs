//! Bundle verification speed (DESIGN.md: ≥ 90 % of `openssl dgst -sha256` on the same
//! payload). Builds a bundle with a 1 GiB payload signed 2-of-3, then times
//! `gantry bundle verify` against `openssl dgst -sha256` of the payload file, both from a
//! warm page cache, best of three runs each.
//!
//! Run: `cargo bench -p gantry-controller --bench verify` (`GANTRY_BENCH_GIB` changes the size).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use gantry_shared::bundle::manifest::{
    DType, Dim, FileEntry, Manifest, ModelEntry, Provenance, Requirements, TensorSpec,
};
use gantry_shared::bundle::policy::{SignedPolicy, TrustPolicy, TrustedKey};
use gantry_shared::bundle::{self, signing};
use sha2::{Digest, Sha256};

const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let gib: u64 = std::env::var("GANTRY_BENCH_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let size = gib << 30;
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("weights.bin");

    // Pseudo-random payload (incompressible, so no layer can shortcut it), hashed as written.
    let mut hasher = Sha256::new();
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&payload).unwrap());
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..(size >> 20) {
            for chunk in block.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            hasher.update(&block);
            out.write_all(&block).unwrap();
        }
        out.flush().unwrap();
    }
    let digest = signing::to_hex(&hasher.finalize());

    let manifest = Manifest {
        schema: 1,
        name: "bench".into(),
        version: "1.0.0".into(),
        created_at: "2026-11-21T00:00:00Z".into(),
        files: vec![FileEntry {
            path: "weights.bin".into(),
            size,
            sha256: digest,
        }],
        model: ModelEntry {
            format: "onnx".into(),
            entry: "weights.bin".into(),
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
    let manifest_bytes = manifest.to_bytes().unwrap();
    let sigs = vec![
        bundle::sign_manifest(&key(1), &manifest_bytes),
        bundle::sign_manifest(&key(2), &manifest_bytes),
    ];
    let bundle_path = dir.path().join("bench.gbundle");
    let out = BufWriter::with_capacity(1 << 20, File::create(&bundle_path).unwrap());
    bundle::write(out, &manifest_bytes, &sigs, &mut |_| {
        Ok(Box::new(File::open(&payload)?))
    })
    .unwrap();

    let keys = [1u8, 2, 3]
        .iter()
        .map(|&s| {
            let public = key(s).verifying_key();
            TrustedKey {
                id: signing::key_id(&public),
                name: format!("k{s}"),
                public_key: signing::to_hex(public.as_bytes()),
                not_before: None,
                not_after: None,
            }
        })
        .collect();
    let mut policy = SignedPolicy::new(TrustPolicy {
        schema: 1,
        version: 1,
        threshold: 2,
        keys,
        revoked: vec![],
        golden: None,
    })
    .unwrap();
    policy.sign(&key(1)).unwrap();
    policy.sign(&key(2)).unwrap();
    let policy_path = dir.path().join("trust.json");
    std::fs::write(&policy_path, policy.to_bytes()).unwrap();

    // Warm the page cache for both files.
    for path in [&payload, &bundle_path] {
        std::io::copy(&mut File::open(path).unwrap(), &mut std::io::sink()).unwrap();
    }

    let openssl = best_of(3, || {
        let start = Instant::now();
        let out = Command::new("openssl")
            .arg("dgst")
            .arg("-sha256")
            .arg(&payload)
            .output()
            .expect("openssl runs");
        assert!(out.status.success());
        start.elapsed()
    });
    let gantry = best_of(3, || {
        let start = Instant::now();
        let out = Command::new(GANTRY)
            .args(["bundle", "verify"])
            .arg(&bundle_path)
            .arg("--trust")
            .arg(&policy_path)
            .output()
            .expect("gantry runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        start.elapsed()
    });

    let rate = |d: Duration| size as f64 / d.as_secs_f64() / f64::from(1u32 << 30);
    println!();
    println!(
        "bundle verification, {gib} GiB payload, 2-of-3 signatures, warm page cache, best of 3"
    );
    println!("{:<28} {:>10} {:>10}", "", "seconds", "GiB/s");
    println!(
        "{:<28} {:>10.3} {:>10.2}",
        "openssl dgst -sha256",
        openssl.as_secs_f64(),
        rate(openssl)
    );
    println!(
        "{:<28} {:>10.3} {:>10.2}",
        "gantry bundle verify",
        gantry.as_secs_f64(),
        rate(gantry)
    );
    let ratio = rate(gantry) / rate(openssl) * 100.0;
    println!(
        "gantry / openssl: {ratio:.1} % (target >= 90 %: {})",
        if ratio >= 90.0 { "met" } else { "MISSED" }
    );
}
