//! Bundle delivery (DESIGN.md: bundle transfer on loopback ≥ 80 % of raw QUIC throughput
//! measured in the same run; time from assignment to serving).
//!
//! Starts the real `gantry serve` and `gantry-agent run` (release builds) on loopback,
//! pushes a signed bundle of the test model plus `GANTRY_BENCH_MIB` (default 256) MiB of
//! payload, assigns it, and polls the agent's `/v1/status` every 2 ms:
//! - transfer: bundle bytes over the time `downloaded_bytes` takes from 0 to the size;
//! - assignment → serving: from `gantry bundle assign` returning to the agent reporting the
//!   bundle active (includes up to one heartbeat interval, 200 ms here, and verification,
//!   golden vectors and activation).
//!
//! The reference is raw QUIC on the same machine in the same run: one stream of the same
//! number of bytes between endpoints built by `gantry-net` with the fleet's certificates.
//!
//! Run: `cargo build --release --workspace && cargo bench -p gantry-tests --bench delivery`
//! (`scripts/bench.sh` does both).

use std::path::Path;
use std::time::{Duration, Instant};

use gantry_controller::home::AdminIdentity;
use gantry_tests::{Agent, Controller, wait_for};

fn mib() -> usize {
    std::env::var("GANTRY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Bytes per second of one QUIC stream carrying `bytes` over loopback.
fn raw_quic(controller: &Controller, bytes: usize) -> f64 {
    let home = controller.home();
    let ca = gantry_controller::ca::Ca::load(&home).unwrap();
    let read = |name: &str| std::fs::read_to_string(home.join(name)).unwrap();
    let server_tls = gantry_shared::tls::server_config(
        ca.cert_pem(),
        &read("controller.crt"),
        &read("controller.key"),
    )
    .unwrap();
    let admin = AdminIdentity::load(&controller.identity_path()).unwrap();
    let client_tls =
        gantry_shared::tls::client_config(&admin.ca_pem, &admin.cert_pem, &admin.key_pem).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let server =
            gantry_net::server_endpoint("127.0.0.1:0".parse().unwrap(), server_tls).unwrap();
        let addr = server.local_addr().unwrap();
        let sink = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let mut total = 0usize;
            let mut buf = vec![0u8; 1 << 20];
            while let Some(n) = recv.read(&mut buf).await.unwrap() {
                total += n;
            }
            send.write_all(&(total as u64).to_le_bytes()).await.unwrap();
            send.finish().unwrap();
            conn.closed().await;
        });
        let client = gantry_net::client_endpoint(addr, client_tls).unwrap();
        let conn = gantry_net::connect(&client, addr).await.unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        let started = Instant::now();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            send.write_all(&chunk[..n]).await.unwrap();
            sent += n;
        }
        send.finish().unwrap();
        let ack = recv.read_to_end(8).await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(u64::from_le_bytes(ack.try_into().unwrap()), bytes as u64);
        conn.close(0u32.into(), b"done");
        let _ = sink.await;
        bytes as f64 / elapsed.as_secs_f64()
    })
}

fn main() {
    let library = std::env::var("GANTRY_ONNXRUNTIME")
        .expect("GANTRY_ONNXRUNTIME is not set: run scripts/bench.sh, which fetches ONNX Runtime");
    let size_mib = mib();
    let controller = Controller::start();
    let work = tempfile::tempdir().unwrap();
    let p = |name: &str| work.path().join(name).to_str().unwrap().to_owned();
    controller.cli_ok(&["keygen", "--out", &p("ml.key")]);
    controller.cli_ok(&[
        "policy",
        "create",
        "--key",
        &format!("ml={}.pub", p("ml.key")),
        "--threshold",
        "1",
        "--out",
        &p("trust.json"),
    ]);
    controller.cli_ok(&["policy", "sign", &p("trust.json"), "--key", &p("ml.key")]);
    std::fs::copy(p("trust.json"), controller.home().join("trust.json")).unwrap();

    // Incompressible payload so nothing on the path gets it for free.
    let mut payload = vec![0u8; size_mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in &mut payload {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(p("weights.bin"), &payload).unwrap();
    drop(payload);
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models");
    controller.cli_ok(&[
        "bundle",
        "create",
        "--model",
        models.join("tiny_linear.onnx").to_str().unwrap(),
        "--golden",
        models.join("tiny_linear.golden.json").to_str().unwrap(),
        "--file",
        &format!("{}=weights.bin", p("weights.bin")),
        "--name",
        "tiny-linear",
        "--version",
        "1.0.0",
        "--out",
        &p("big.gbundle"),
    ]);
    controller.cli_ok(&["bundle", "sign", &p("big.gbundle"), "--key", &p("ml.key")]);
    let size = std::fs::metadata(p("big.gbundle")).unwrap().len();

    let infer = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "[uplink]\nheartbeat = \"200ms\"\n[inference]\nonnxruntime = \"{library}\"\nlisten = \"{infer}\"\n[trust]\npolicy = \"{}\"\n",
        p("trust.json")
    );
    let mut agent = Agent::enroll(&controller, "bench-node", &config);
    agent.run("1s");
    wait_for("the agent to answer", Duration::from_secs(20), || {
        agent.status()
    });

    let started = Instant::now();
    let pushed: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["bundle", "push", &p("big.gbundle"), "--json"]))
            .unwrap();
    let push_s = started.elapsed().as_secs_f64();
    let id = pushed["id"].as_str().unwrap().to_owned();

    controller.cli_ok(&["bundle", "assign", &id, "--node", "bench-node"]);
    let assigned = Instant::now();
    let mut first_bytes: Option<Instant> = None;
    let mut all_bytes: Option<Instant> = None;
    let serving = loop {
        let status = agent.status().unwrap_or_default();
        let b = &status["bundles"];
        let got = b["downloaded_bytes"].as_u64().unwrap_or(0);
        let now = Instant::now();
        if b["downloading"].as_str() == Some(id.as_str()) && first_bytes.is_none() {
            first_bytes = Some(now);
        }
        if got >= size && all_bytes.is_none() {
            all_bytes = Some(now);
        }
        if b["active"].as_str() == Some(id.as_str()) {
            break now;
        }
        assert!(b["failed"].is_null(), "the bundle was refused: {b}");
        assert!(
            assigned.elapsed() < Duration::from_secs(300),
            "not serving after 300 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    agent.kill();
    let transfer_s = match (first_bytes, all_bytes) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    let transfer = size as f64 / transfer_s;
    let raw = raw_quic(&controller, size as usize);
    let ratio = transfer / raw * 100.0;
    let mb = |bps: f64| bps / 1_048_576.0;
    println!(
        "bundle delivery, {:.1} MiB bundle on loopback",
        size as f64 / 1_048_576.0
    );
    println!(
        "  push (CLI → controller, incl. policy check): {push_s:.2} s = {:.0} MiB/s",
        mb(size as f64 / push_s)
    );
    println!(
        "  transfer controller → agent:                 {transfer_s:.2} s = {:.0} MiB/s",
        mb(transfer)
    );
    println!(
        "  raw QUIC, one stream, same run:              {:.0} MiB/s",
        mb(raw)
    );
    println!(
        "  transfer / raw QUIC:                         {ratio:.1} % (DESIGN.md: ≥ 80 %) {}",
        if ratio >= 80.0 { "met" } else { "MISSED" }
    );
    println!(
        "  assignment → serving:                        {:.2} s (heartbeat 200 ms, verify, golden, activate)",
        serving.duration_since(assigned).as_secs_f64()
    );
}
