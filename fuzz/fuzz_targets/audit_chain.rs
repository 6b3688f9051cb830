//! An audit store handed to an auditor (`gantry audit verify --dir`, or a copy) is
//! untrusted: any bytes under any keys. Verification must never panic, must name a break
//! for anything that is not a chain, and must accept a chain built by the writer.
#![no_main]

use gantry_shared::audit::{self, GENESIS, NewEntry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Entries: the input split at newlines, keyed 1, 2, … — with a key skipped where a
    // line starts with '!', to reach the ordering checks.
    let mut key = 0u64;
    let mut entries = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        key += if line.first() == Some(&b'!') { 2 } else { 1 };
        entries.push(Ok::<_, ()>((key, line.to_vec())));
    }
    let v = audit::verify(entries.into_iter(), None).unwrap();
    assert!(v.head_seq <= key);

    // The writer's own chain over the same text always verifies.
    let mut chain: Vec<audit::Entry> = Vec::new();
    for line in data.split(|&b| b == b'\n').take(16) {
        let (seq, hash) = chain
            .last()
            .map_or((0, GENESIS.to_owned()), |e| (e.seq, e.hash.clone()));
        chain.push(audit::chain(
            seq,
            &hash,
            NewEntry {
                at_ms: 1,
                actor: String::from_utf8_lossy(line).into_owned(),
                action: "fuzz".into(),
                subject: String::new(),
                details: serde_json::Value::Null,
            },
        ));
    }
    let head = chain.last().map(|e| (e.seq, e.hash.clone()));
    let stored = chain
        .iter()
        .map(|e| Ok::<_, ()>((e.seq, serde_json::to_vec(e).unwrap())));
    assert!(audit::verify(stored, head).unwrap().ok());
});
