//! The web console on a large fleet (issue: loads fast on 10 000 nodes).
//!
//! Runs the real `gantry serve --console-listen` as its own process on loopback.
//! `GANTRY_BENCH_AGENTS` (default 10 000) simulated nodes are enrolled through the real
//! protocol, labelled `rack=r<i % 100>`, and each connects over real QUIC with mutual TLS,
//! sends a heartbeat (one in ten degraded, with a reason) and one telemetry sample of 8
//! GPUs, and stays connected. Then the benchmark signs in as the console's users do
//! (`gantry console login`'s admin call, then the sign-in form) and times, over
//! `GANTRY_BENCH_REQUESTS` (default 50) requests each: the fleet page's first page, a
//! label search, a state filter, a page deep in the list, one node's page, the live
//! refresh of the fleet page (`<main>` only), the rollouts and audit pages. It prints the
//! median and 99th percentile of the time to the last byte and the page's size, and the
//! controller's RSS with the fleet connected.
//!
//! Run: `cargo bench -p gantry-controller --bench console`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_shared::health::{Health, HealthState};
use gantry_shared::protocol::telemetry::{Batch, Record, RecordClass};
use gantry_shared::protocol::{Request, Response, heartbeat};
use serde_json::value::RawValue;

mod support;

use support::{
    admin_of, client_config, enroll_nodes, env_or, init_controller, sample, serve, usage,
};

/// `GET path` with `cookie`: (status, body length, time to the last byte).
fn get(addr: SocketAddr, path: &str, cookie: &str, live: bool) -> (u16, usize, Duration) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    let extra = if live { "X-Gantry-Live: 1\r\n" } else { "" };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
    (status, body, took)
}

/// Signs in with a one-time code: the session cookie (`name=value`).
fn sign_in(addr: SocketAddr, code: &str) -> String {
    let body = format!("code={code}");
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let cookie = response
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next());
    match cookie {
        Some(c) => c.to_owned(),
        None => panic!("sign-in refused:\n{response}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[allow(clippy::too_many_lines)]
fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let agents = env_or("GANTRY_BENCH_AGENTS", 10_000) as usize;
    let requests = env_or("GANTRY_BENCH_REQUESTS", 50) as usize;

    let dir = tempfile::tempdir().unwrap();
    let (home, addr, identity_path) = init_controller(dir.path());
    let console: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = serve(
        &home,
        &[
            "--listen",
            &addr.to_string(),
            "--metrics-listen",
            "",
            "--console-listen",
            &console.to_string(),
        ],
    );
    let pid = server.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, conns) = rt.block_on(async {
        let (admin, pin) = admin_of(&home, &identity_path).await;
        let start = Instant::now();
        let fleet = enroll_nodes(&admin, addr, &pin, "node", agents, |i| {
            format!("rack=r{},gpu=h100", i % 100)
        })
        .await;
        eprintln!(
            "console bench: {agents} nodes enrolled in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut conns = Vec::with_capacity(fleet.len());
        let mut pending = Vec::new();
        for (i, node) in fleet.into_iter().enumerate() {
            let connecting = endpoint
                .connect_with(
                    client_config(node.tls),
                    addr,
                    gantry_shared::protocol::CONTROLLER_SERVER_NAME,
                )
                .unwrap();
            pending.push(tokio::spawn(async move {
                let conn = connecting.await.unwrap();
                let mut health = Health::default();
                if i % 10 == 3 {
                    health.reasons.push(gantry_shared::health::Reason {
                        check: "gpu.temperature".to_owned(),
                        state: HealthState::Degraded,
                        message: "GPU 3 at 88 °C, above its slowdown threshold".to_owned(),
                        remedy: None,
                    });
                    health.state = HealthState::Degraded;
                }
                let hb = Request::Heartbeat(Box::new(heartbeat::Request {
                    agent_version: "bench".into(),
                    health: Some(health),
                    ..Default::default()
                }));
                let answer = gantry_net::call(&conn, &hb, Duration::from_secs(60))
                    .await
                    .unwrap();
                assert!(matches!(answer, Response::Heartbeat(_)), "{answer:?}");
                let body = serde_json::to_string(&sample(i)).unwrap();
                let batch = Request::Telemetry(Batch {
                    records: vec![Record {
                        seq: 1,
                        at_ms: gantry_net::clock::now_ms(),
                        class: RecordClass::Metrics,
                        body: RawValue::from_string(body).unwrap(),
                    }],
                });
                let answer = gantry_net::call(&conn, &batch, Duration::from_secs(60))
                    .await
                    .unwrap();
                assert!(matches!(answer, Response::Telemetry(_)), "{answer:?}");
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
        let (_, code, _) = admin.console_login().await.unwrap();
        (code, conns)
    });
    let cookie = sign_in(console, &code);
    let (_, rss) = usage(pid);

    let middle = agents / 2;
    let deep = (agents / 50).max(1) / 2 + 1;
    let pages: Vec<(String, String, bool)> = vec![
        ("fleet, first page".into(), "/".into(), false),
        ("fleet, live refresh".into(), "/".into(), true),
        (
            "fleet, search rack=r7".into(),
            "/?q=rack%3Dr7".into(),
            false,
        ),
        (
            "fleet, degraded only".into(),
            "/?state=degraded".into(),
            false,
        ),
        (
            format!("fleet, page {deep}"),
            format!("/?page={deep}"),
            false,
        ),
        ("node page".into(), format!("/nodes/node-{middle}"), false),
        ("rollouts".into(), "/rollouts".into(), false),
        ("audit".into(), "/audit".into(), false),
    ];
    println!();
    println!(
        "console: {agents} connected nodes of 8 GPUs each, {requests} requests per page, sequential, over loopback"
    );
    println!(
        "  {:<26} {:>10} {:>10} {:>10}",
        "page", "median", "p99", "bytes"
    );
    for (name, path, live) in &pages {
        let mut times = Vec::with_capacity(requests);
        let mut size = 0;
        for _ in 0..requests {
            let (status, bytes, took) = get(console, path, &cookie, *live);
            assert_eq!(status, 200, "{path}");
            size = bytes;
            times.push(took);
        }
        times.sort();
        println!(
            "  {:<26} {:>8.1} ms {:>7.1} ms {:>10}",
            name,
            percentile(&times, 0.5).as_secs_f64() * 1000.0,
            percentile(&times, 0.99).as_secs_f64() * 1000.0,
            size
        );
    }
    println!(
        "  controller RSS with the fleet connected: {:.1} MiB",
        rss as f64 / 1_048_576.0
    );
    drop(conns);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();
}
