//! Audit log at scale (issue target: `audit verify` and `audit report` over 1 000 000
//! entries — time and memory).
//!
//! Builds a store with `GANTRY_BENCH_ENTRIES` (default 1 000 000) chained entries in
//! batches of 10 000 — a fleet of 1 000 nodes connecting, receiving assignments from
//! rollouts and reporting activations of 20 pushed bundles — then times
//! [`Store::verify_audit`] and the report over the whole range, with this process's RSS
//! after each (the store's page cache is capped at 64 MiB).
//!
//! Run: `cargo bench -p gantry-controller --bench audit`.

mod support;

use std::time::Instant;

use gantry_controller::audit::{NewEntry, details};
use gantry_controller::store::Store;
use serde_json::json;
use support::{env_or, usage};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total = env_or("GANTRY_BENCH_ENTRIES", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store.redb")).unwrap();
    let pid = std::process::id();
    let (_, rss_start) = usage(pid);

    let started = Instant::now();
    let mut seq = 0u64;
    let bundle = |i: u64| format!("sha256:{:064x}", i % 20);
    while seq < total {
        let batch: Vec<NewEntry> = (seq..(seq + 10_000).min(total))
            .map(|i| {
                let node = format!("gpu-{:04}", i % 1000);
                let mut e = match i % 10 {
                    0 if i % 50_000 == 0 => gantry_controller::audit::entry(
                        "alice",
                        "bundle.push",
                        bundle(i / 50_000),
                        details([
                            ("name", json!("fraud-scorer")),
                            ("version", json!(format!("1.{}.0", i / 50_000))),
                            ("signers", json!(["release-1 (1dc5f4fc64ea4f24)"])),
                            ("signatures_valid", json!(true)),
                        ]),
                    ),
                    1..=3 => gantry_controller::audit::entry(
                        "rollout r1",
                        "bundle.assign",
                        bundle(i / 50_000),
                        details([("nodes", json!([node])), ("rollout", json!("r1"))]),
                    ),
                    4..=6 => gantry_controller::audit::entry(
                        format!("node {node}"),
                        "node.activated",
                        &node,
                        details([("bundle", json!(bundle(i / 50_000)))]),
                    ),
                    7 => gantry_controller::audit::entry(
                        format!("node {node}"),
                        "node.disconnect",
                        &node,
                        details([("remote", json!("10.0.0.1:4433"))]),
                    ),
                    _ => gantry_controller::audit::entry(
                        format!("node {node}"),
                        "node.connect",
                        &node,
                        details([("remote", json!("10.0.0.1:4433"))]),
                    ),
                };
                e.at_ms = 1_700_000_000_000 + i * 100;
                e
            })
            .collect();
        seq += batch.len() as u64;
        store.append_audit(batch).unwrap();
    }
    let build_s = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(dir.path().join("store.redb"))
        .unwrap()
        .len();

    let started = Instant::now();
    let v = store.verify_audit().unwrap();
    let verify_s = started.elapsed().as_secs_f64();
    let (_, rss_verify) = usage(pid);
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.entries, total);

    let started = Instant::now();
    let report = gantry_controller::audit::report(&store, 0, u64::MAX / 2, 3_600_000).unwrap();
    let report_s = started.elapsed().as_secs_f64();
    let (_, rss_report) = usage(pid);
    let intervals: usize = report.nodes.values().map(|n| n.ran.len()).sum();
    let json_bytes = serde_json::to_vec(&report).unwrap().len();

    let mib = |b: u64| b as f64 / 1_048_576.0;
    println!();
    println!(
        "audit log: {total} entries ({:.0} MiB store), appended in batches of 10 000 in {build_s:.1} s ({:.0} entries/s)",
        mib(size),
        total as f64 / build_s
    );
    println!(
        "  audit verify:  {verify_s:.2} s = {:.0} entries/s; process RSS {:.1} MiB (start {:.1} MiB)",
        total as f64 / verify_s,
        mib(rss_verify),
        mib(rss_start)
    );
    println!(
        "  audit report:  {report_s:.2} s (verify included) for {} nodes, {intervals} intervals, {} bundles, {:.1} MiB of JSON; process RSS {:.1} MiB",
        report.nodes.len(),
        report.bundles.len(),
        mib(json_bytes as u64),
        mib(rss_report)
    );
}
