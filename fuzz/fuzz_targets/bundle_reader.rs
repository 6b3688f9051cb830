//! The bundle reader streams hostile archives. It must never panic, never read past its
//! caps, and accept only what a fixed policy's keys signed: with a policy no fuzzer input
//! can satisfy, every input must be refused.
#![no_main]

use std::sync::LazyLock;
use std::time::SystemTime;

use ed25519_dalek::SigningKey;
use gantry_shared::bundle::policy::{SignedPolicy, TrustPolicy, TrustedKey};
use gantry_shared::bundle::{BundleReader, Discard, signing};
use libfuzzer_sys::fuzz_target;

static POLICY: LazyLock<SignedPolicy> = LazyLock::new(|| {
    let key = SigningKey::from_bytes(&[42; 32]);
    let public = key.verifying_key();
    let mut policy = SignedPolicy::new(TrustPolicy {
        schema: 1,
        version: 1,
        threshold: 1,
        keys: vec![TrustedKey {
            id: signing::key_id(&public),
            name: "fuzz".into(),
            public_key: signing::to_hex(public.as_bytes()),
            not_before: None,
            not_after: None,
        }],
        revoked: vec![],
        golden: None,
    })
    .unwrap();
    policy.sign(&key).unwrap();
    policy
});

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = BundleReader::open(data) {
        // Structure alone: the payload must be readable or refused, without panicking.
        let signed = bundle.check_signatures(&POLICY, SystemTime::now()).is_ok();
        assert!(!signed, "the fuzzer cannot forge an ed25519 signature");
        let _ = bundle.read_payload(&mut Discard);
    }
});
