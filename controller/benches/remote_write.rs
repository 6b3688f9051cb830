//! Prometheus remote-write and OTLP export throughput (issue: remote-write samples/s,
//! beside the embedded store in the same run).
//!
//! Runs the real `gantry serve --remote-write` as its own process, writing to Debian's
//! Prometheus with its remote-write receiver on (`prometheus` on PATH: `scripts/bench.sh`
//! unpacks it). `GANTRY_BENCH_NODES` (default 50) simulated nodes enroll through the real
//! protocol and each sends `GANTRY_BENCH_RECORDS` (default 200) samples of 8 GPUs over
//! real QUIC. Printed: how fast the controller stored them (the embedded store, the
//! reference), then how fast remote-write delivered them, in records and samples per
//! second, with the controller's CPU while it did. Then the controller is started again
//! with `--otlp` alone against `tests/python/otlp_receiver.py --count-only` (the
//! OpenTelemetry protobuf definitions from the Python package index decoding every
//! request; `GANTRY_PYTHON` names the interpreter, `scripts/bench.sh` sets it), and
//! exports the whole store from its first record.
//!
//! Run: `cargo bench -p gantry-controller --bench remote_write`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry_shared::protocol::telemetry::{Batch, Record, RecordClass};
use gantry_shared::protocol::{Request, Response};
use serde_json::value::RawValue;

mod support;

use support::{
    admin_of, client_config, enroll_nodes, env_or, init_controller, sample, serve, usage,
};

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

fn figure(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn free_tcp() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until the export `prefix` (`remote_write`, `otlp`) delivered `total` records;
/// then (records, samples) it delivered.
fn wait_delivered(metrics: SocketAddr, prefix: &str, total: u64, start: Instant) -> (f64, f64) {
    loop {
        let page = http_get(metrics, "/metrics").unwrap_or_default();
        let records = figure(&page, &format!("gantry_controller_{prefix}_records_total"));
        #[allow(clippy::cast_precision_loss)]
        if records >= total as f64 {
            return (
                records,
                figure(&page, &format!("gantry_controller_{prefix}_samples_total")),
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "{prefix} did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[allow(clippy::too_many_lines)]
fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let nodes = env_or("GANTRY_BENCH_NODES", 50) as usize;
    let per_node = env_or("GANTRY_BENCH_RECORDS", 200);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prometheus.yml"), "global: {}\n").unwrap();
    let receiver = free_tcp();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={receiver}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus on PATH (scripts/bench.sh unpacks Debian's package)");
    while http_get(receiver, "/-/ready").is_none() {
        std::thread::sleep(Duration::from_millis(200));
    }

    let (home, addr, identity_path) = init_controller(dir.path());
    let metrics = free_tcp();
    let mut server = serve(
        &home,
        &[
            "--listen",
            &addr.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
            "--remote-write",
            &format!("http://{receiver}/api/v1/write"),
        ],
    );
    let pid = server.id();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (start, store_time, cpu_before) = rt.block_on(async {
        let (admin, pin) = admin_of(&home, &identity_path).await;
        let fleet = enroll_nodes(&admin, addr, &pin, "node", nodes, |_| String::new()).await;
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let cpu_before = usage(pid).0;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (i, node) in fleet.into_iter().enumerate() {
            let conn = endpoint
                .connect_with(
                    client_config(node.tls),
                    addr,
                    gantry_shared::protocol::CONTROLLER_SERVER_NAME,
                )
                .unwrap()
                .await
                .unwrap();
            tasks.push(tokio::spawn(async move {
                let base = sample(i);
                for chunk in 0..per_node / 50 {
                    let records = (0..50)
                        .map(|j| {
                            let seq = chunk * 50 + j + 1;
                            let mut s = base.clone();
                            s.taken_at_ms = base.taken_at_ms - (per_node - seq) * 1000;
                            Record {
                                seq,
                                at_ms: s.taken_at_ms,
                                class: RecordClass::Metrics,
                                body: RawValue::from_string(serde_json::to_string(&s).unwrap())
                                    .unwrap(),
                            }
                        })
                        .collect();
                    let answer = gantry_net::call(
                        &conn,
                        &Request::Telemetry(Batch { records }),
                        Duration::from_secs(60),
                    )
                    .await
                    .unwrap();
                    assert!(matches!(answer, Response::Telemetry(_)), "{answer:?}");
                }
                conn
            }));
        }
        let mut conns = Vec::new();
        for t in tasks {
            conns.push(t.await.unwrap());
        }
        (start, start.elapsed(), cpu_before)
    });
    let total = nodes as u64 * (per_node / 50 * 50);
    // Remote-write started with the first stored record; wait until it has all of them.
    let (delivered, samples) = wait_delivered(metrics, "remote_write", total, start);
    let drain = start.elapsed().as_secs_f64();
    let cpu = usage(pid).0 - cpu_before;
    #[allow(clippy::cast_precision_loss)]
    let stored_rate = total as f64 / store_time.as_secs_f64();
    println!();
    println!(
        "remote-write: {nodes} nodes × {} samples of 8 GPUs to Prometheus 2.42's receiver on loopback",
        per_node / 50 * 50
    );
    println!(
        "  embedded store (reference)  {total} records stored in {:.2} s: {stored_rate:.0} records/s",
        store_time.as_secs_f64()
    );
    println!(
        "  remote-write                {delivered:.0} records, {samples:.0} samples delivered {drain:.2} s after the first was sent: {:.0} records/s, {:.0} samples/s",
        delivered / drain,
        samples / drain
    );
    println!(
        "  controller CPU              {:.2} cores over both",
        cpu / drain
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();
    let _ = prometheus.kill();
    let _ = prometheus.wait();

    let Some(python) = std::env::var_os("GANTRY_PYTHON") else {
        println!(
            "  OTLP                        not measured: GANTRY_PYTHON is not set (scripts/bench.sh sets it)"
        );
        return;
    };
    let receiver = free_tcp();
    let mut collector = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/python/otlp_receiver.py"
        ))
        .arg("--listen")
        .arg(receiver.to_string())
        .arg("--out")
        .arg(dir.path().join("otlp.jsonl"))
        .arg("--count-only")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the OTLP receiver starts");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(collector.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "listening");
    let mut server = serve(
        &home,
        &[
            "--listen",
            &addr.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
            "--otlp",
            &format!("http://{receiver}/v1/metrics"),
        ],
    );
    let pid = server.id();
    let cpu_before = usage(pid).0;
    let start = Instant::now();
    let (delivered, samples) = wait_delivered(metrics, "otlp", total, start);
    let drain = start.elapsed().as_secs_f64();
    let cpu = usage(pid).0 - cpu_before;
    println!(
        "  OTLP (store → receiver)     {delivered:.0} records, {samples:.0} samples delivered in {drain:.2} s from start: {:.0} records/s, {:.0} samples/s; controller {:.2} cores",
        delivered / drain,
        samples / drain,
        cpu / drain
    );
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = server.wait();
    let _ = collector.kill();
    let _ = collector.wait();
}
