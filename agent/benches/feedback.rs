//! The prediction store behind `POST /v2/models/NAME/feedback` (DESIGN.md: feedback join
//! rate), in-process on a temporary directory:
//!
//! - what keeping a prediction costs the request path (`keep` only enqueues), and how
//!   many predictions per second the writer thread makes durable;
//! - feedback joined per second with 1, 100 and 1 000 ids per call, each call answered
//!   after its commit (what a client waits for);
//! - closing the joined rows into a quality window (what the recorder does each window);
//! - disk bytes per kept prediction.
//!
//! Run: `cargo bench -p gantry-agent --bench feedback`.

use std::time::{Duration, Instant};

use gantry_agent::serving::feedback::{Feedback, FeedbackSettings, Kept};
use gantry_shared::monitoring::quality::{FeedbackItem, Predicted};

/// Predictions kept per round; below the writer's queue so none is turned away.
const KEPT: usize = 50_000;

fn kept(at_ms: u64, i: usize) -> Kept {
    let p = (i % 97) as f32 / 97.0;
    Kept {
        version: "1.0.0".into(),
        bundle: "sha256:0123456789abcdef".into(),
        at_ms,
        predicted: Predicted::Scores {
            classes: 3,
            values: vec![p, 1.0 - p, 0.5],
        },
        joined: false,
        captured: false,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("predictions.redb");
    let store = Feedback::open(
        &path,
        FeedbackSettings {
            ttl: Duration::from_secs(3600),
            max_predictions: 10_000_000,
        },
        Duration::from_secs(3600),
    )
    .unwrap();
    let now = gantry_net::clock::now_ms();
    println!("prediction store: {KEPT} predictions of 3 class scores per round");

    let mut next = 0;
    let mut keep_round = |label: &str| {
        let started = Instant::now();
        for i in next..next + KEPT {
            store.keep("m", &format!("req-{i}"), kept(now, i));
        }
        let enqueued = started.elapsed();
        runtime.block_on(store.flush());
        let durable = started.elapsed();
        next += KEPT;
        println!(
            "  keep ({label}): {:.0} ns per prediction on the request path; {:.0} predictions/s made durable",
            enqueued.as_secs_f64() * 1e9 / KEPT as f64,
            KEPT as f64 / durable.as_secs_f64()
        );
    };
    keep_round("empty store");
    keep_round("after 50 000");
    keep_round("after 100 000");
    let counters = store.counters()["m"].clone();
    assert_eq!(counters.kept, 3 * KEPT as u64, "every prediction kept");

    let mut id = 0;
    for batch in [1usize, 100, 1000] {
        let calls = (if batch == 1 { 2_000 } else { 40_000 }) / batch;
        let started = Instant::now();
        for _ in 0..calls {
            let items: Vec<FeedbackItem> = (0..batch)
                .map(|_| {
                    id += 1;
                    FeedbackItem {
                        id: format!("req-{}", id - 1),
                        label: serde_json::json!(i64::from(id % 3)),
                    }
                })
                .collect();
            let outcomes = runtime.block_on(store.feedback("m", items)).unwrap();
            assert_eq!(outcomes.len(), batch);
        }
        let took = started.elapsed().as_secs_f64();
        println!(
            "  feedback joined, {batch:>4} ids per call: {:>8.0} ids/s ({:.2} ms per call)",
            (calls * batch) as f64 / took,
            took * 1e3 / calls as f64
        );
    }
    let joined = store.counters()["m"].feedback.joined;
    assert_eq!(joined, id as u64, "every feedback joined");

    let started = Instant::now();
    let closed = store.close(now + 2 * 3_600_000).unwrap();
    let close_took = started.elapsed();
    store.consume(&closed).unwrap();
    let rows: u64 = closed
        .windows
        .iter()
        .flat_map(|w| &w.versions)
        .map(|v| v.stats.metrics().rows)
        .sum();
    assert_eq!(rows, joined, "the window holds every joined row");
    println!(
        "  window closed over {joined} joined rows in {:.1} ms, consumed in {:.1} ms",
        close_took.as_secs_f64() * 1e3,
        started.elapsed().saturating_sub(close_took).as_secs_f64() * 1e3
    );
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "  disk: {:.1} MiB for {} predictions held ({:.0} bytes each, redb's pages included)",
        bytes as f64 / f64::from(1 << 20),
        store.held(),
        bytes as f64 / store.held().max(1) as f64
    );
}
