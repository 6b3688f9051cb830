//! Offline buffer throughput (DESIGN.md: ≥ 200 k samples/s appended durably in batches;
//! replay ≥ 500 k/s). Records of about 200 bytes, appended in durable batches of 1 000;
//! then replayed in order as the uplink reads them, and drained (read + acknowledge).
//!
//! Run: `cargo bench -p gantry-agent --bench buffer` (`GANTRY_BENCH_RECORDS` changes the count).

use std::time::Instant;

use gantry_agent::buffer::{Buffer, Limits, NewRecord};
use gantry_shared::protocol::telemetry::RecordClass;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total: usize = std::env::var("GANTRY_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let batch = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 4 << 30,
        ..Limits::default()
    };
    let buffer = Buffer::open(&dir.path().join("buffer.redb"), limits).unwrap();
    let body = br#"{"gpu":0,"uuid":"GPU-5177a7ed-0000-4000-8000-000000000000","util":63,"mem_used":43481088000,"temp":55,"power_mw":466000,"sm_clock":1782,"ecc_dbe":0,"xid":0,"throttle":0,"pcie_rx":3871000,"n":1}"#;
    let records: Vec<NewRecord> = (0..batch)
        .map(|i| NewRecord {
            class: RecordClass::Metrics,
            at_ms: 1_700_000_000_000 + i as u64,
            body: body.to_vec(),
        })
        .collect();

    let start = Instant::now();
    for _ in 0..total / batch {
        buffer.append(&records, 1_700_000_000_000).unwrap();
    }
    let append = start.elapsed();

    // Replay: read every record in order, as the uplink does, without deleting.
    let start = Instant::now();
    let replayed = buffer.peek(usize::MAX, usize::MAX).unwrap().len();
    let replay = start.elapsed();
    assert_eq!(replayed, total / batch * batch);

    // Drain: read the oldest 4 096, acknowledge them (a durable delete), repeat.
    let start = Instant::now();
    let mut drained = 0;
    loop {
        let chunk = buffer.peek(4096, 4 << 20).unwrap();
        let Some(last) = chunk.last().map(|r| r.seq) else {
            break;
        };
        drained += chunk.len();
        buffer.ack(last).unwrap();
    }
    let drain = start.elapsed();
    assert_eq!(drained, replayed);

    let rate = |n: usize, d: std::time::Duration| n as f64 / d.as_secs_f64();
    println!();
    println!(
        "durable buffer, {replayed} records of {} bytes, batches of {batch}",
        body.len()
    );
    println!("{:<44} {:>12} {:>10}", "", "records/s", "target");
    println!(
        "{:<44} {:>12.0} {:>10}",
        "append (durable commit per batch)",
        rate(replayed, append),
        ">= 200k"
    );
    println!(
        "{:<44} {:>12.0} {:>10}",
        "replay (read in order)",
        rate(replayed, replay),
        ">= 500k"
    );
    println!(
        "{:<44} {:>12.0} {:>10}",
        "drain (read 4096 + acknowledge, durable)",
        rate(drained, drain),
        "-"
    );
    println!(
        "targets: append {}, replay {}",
        if rate(replayed, append) >= 200_000.0 {
            "met"
        } else {
            "MISSED"
        },
        if rate(replayed, replay) >= 500_000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
}
