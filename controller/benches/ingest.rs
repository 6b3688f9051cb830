//! Controller ingest and connection capacity (DESIGN.md: ≥ 500 k samples/s on 2 cores;
//! 10 k connected agents).
//!
//! Runs the real `gantry serve` as its own process on loopback and measures it from
//! `/proc`: CPU and RSS. Simulated agents are enrolled through the real protocol (join
//! tokens, enrollment, node certificates) and connect over real QUIC with mutual TLS.
//!
//! 1. Ingest: `GANTRY_BENCH_SENDERS` (default 32) nodes send batches of 1 000 records of
//!    about 200 bytes, one batch in flight each, for `GANTRY_BENCH_SECONDS` (default 10).
//! 2. Connections: `GANTRY_BENCH_AGENTS` (default 10 000) nodes connect and each sends a
//!    heartbeat; the controller's RSS is read with all of them connected.
//!
//! Run: `cargo bench -p gantry-controller --bench ingest`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gantry_shared::protocol::telemetry::{Batch, Record, RecordClass};
use gantry_shared::protocol::{Request, Response, heartbeat};
use serde_json::value::RawValue;

mod support;

use support::{admin_of, client_config, enroll_nodes, env_or, init_controller, serve, usage};

fn batch(first_seq: u64, body: &str, n: usize) -> Batch {
    Batch {
        records: (0..n as u64)
            .map(|i| Record {
                seq: first_seq + i,
                at_ms: 1_700_000_000_000 + i,
                class: RecordClass::Metrics,
                body: RawValue::from_string(body.to_owned()).unwrap(),
            })
            .collect(),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let senders = env_or("GANTRY_BENCH_SENDERS", 32) as usize;
    let seconds = env_or("GANTRY_BENCH_SECONDS", 10);
    let agents = env_or("GANTRY_BENCH_AGENTS", 10_000) as usize;

    let dir = tempfile::tempdir().unwrap();
    let (home, addr, identity_path) = init_controller(dir.path());
    let mut server = serve(
        &home,
        &["--listen", &addr.to_string(), "--metrics-listen", ""],
    );
    let pid = server.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let (admin, pin) = admin_of(&home, &identity_path).await;
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();

        // 1. Ingest.
        let nodes = enroll_nodes(&admin, addr, &pin, "sender", senders, |_| String::new()).await;
        let body = r#"{"gpu":0,"uuid":"GPU-5177a7ed-0000-4000-8000-000000000000","util":63,"mem_used":43481088000,"temp":55,"power_mw":466000,"sm_clock":1782,"ecc_dbe":0,"xid":0,"throttle":0,"n":1}"#;
        let stored = Arc::new(AtomicU64::new(0));
        let (cpu_before, _) = usage(pid);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for node in nodes {
            let conn = endpoint.connect_with(client_config(node.tls), addr, gantry_shared::protocol::CONTROLLER_SERVER_NAME).unwrap().await.unwrap();
            let stored = Arc::clone(&stored);
            tasks.push(tokio::spawn(async move {
                // One batch, renumbered for each send: the load generator shares the
                // controller's cores, so it does as little work as it can.
                let mut request = Request::Telemetry(batch(1, body, 1000));
                while Instant::now() < deadline {
                    match gantry_net::call(&conn, &request, Duration::from_secs(30)).await.unwrap() {
                        Response::Telemetry(ack) => stored.fetch_add(ack.stored, Ordering::Relaxed),
                        other => panic!("{} batch refused: {other:?}", node.name),
                    };
                    if let Request::Telemetry(batch) = &mut request {
                        for record in &mut batch.records {
                            record.seq += 1000;
                        }
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (cpu_after, rss_ingest) = usage(pid);
        let total = stored.load(Ordering::Relaxed);

        // 2. Connections.
        let start_enroll = Instant::now();
        let fleet = enroll_nodes(&admin, addr, &pin, "agent", agents, |_| String::new()).await;
        let enroll_time = start_enroll.elapsed();
        let (cpu_idle, rss_idle) = usage(pid);
        let start_connect = Instant::now();
        let mut conns = Vec::with_capacity(fleet.len());
        let mut pending = Vec::new();
        for node in fleet {
            let connecting = endpoint.connect_with(client_config(node.tls), addr, gantry_shared::protocol::CONTROLLER_SERVER_NAME).unwrap();
            pending.push(tokio::spawn(async move {
                let conn = connecting.await.unwrap();
                let hb = Request::Heartbeat(Box::new(heartbeat::Request { agent_version: "bench".into(), ..Default::default() }));
                assert!(matches!(gantry_net::call(&conn, &hb, Duration::from_secs(60)).await.unwrap(), Response::Heartbeat(_)));
                conn
            }));
            if pending.len() >= 32 {
                for p in pending.drain(..) {
                    conns.push(p.await.unwrap());
                }
            }
        }
        for p in pending {
            conns.push(p.await.unwrap());
        }
        let connect_time = start_connect.elapsed();
        let connect_cpu = usage(pid).0 - cpu_idle;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, rss_connected) = usage(pid);
        let connected = conns.iter().filter(|c| c.close_reason().is_none()).count();

        println!();
        println!("controller ingest: {senders} nodes over QUIC, batches of 1000 records of {} bytes, {elapsed:.1} s", body.len());
        println!("  stored            {total} records");
        println!("  rate              {:.0} records/s (target >= 500k: {})", total as f64 / elapsed, if total as f64 / elapsed >= 500_000.0 { "met" } else { "MISSED" });
        println!("  controller CPU    {:.2} cores", (cpu_after - cpu_before) / elapsed);
        println!("  controller RSS    {:.1} MiB", rss_ingest as f64 / 1_048_576.0);
        println!("connections: {agents} nodes enrolled in {:.1} s, connected with a heartbeat each in {:.1} s", enroll_time.as_secs_f64(), connect_time.as_secs_f64());
        println!("  connected         {connected} (target 10k: {}); controller CPU while connecting {:.2} cores", if connected >= 10_000 { "met" } else { "MISSED" }, connect_cpu / connect_time.as_secs_f64());
        println!("  controller RSS    {:.1} MiB before, {:.1} MiB with all connected ({:.1} KiB per connection)",
            rss_idle as f64 / 1_048_576.0, rss_connected as f64 / 1_048_576.0, (rss_connected.saturating_sub(rss_idle)) as f64 / 1024.0 / connected.max(1) as f64);
        drop(conns);
    });
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();
}
