//! Bundle delivery (DESIGN.md: bundle transfer on loopback ≥ 80 % of raw QUIC throughput
//! measured in the same run; time from assignment to serving).
//!
//! Starts the real `gantry serve` and `gantry-agent run` (release builds) on loopback and,
//! in each of five rounds, pushes a signed bundle of the test model plus
//! `GANTRY_BENCH_MIB` (default 256) MiB of payload, assigns it, and polls the agent's
//! `/v1/status` every 20 ms:
//! - transfer: the agent's own measurement (`last_transfer`), from its fetch request to
//!   the last byte written to the download file (the fsync after it is printed apart);
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

use gantry_tests::{Agent, Controller, wait_for};

fn payload_mib() -> usize {
    std::env::var("GANTRY_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Bytes per second of one QUIC stream carrying `bytes` over loopback.
fn raw_quic(controller: &Controller, bytes: usize) -> f64 {
    let (server_tls, client_tls) = controller.tls_pair();
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
    let size_mib = payload_mib();
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
    let infer = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "[uplink]\nheartbeat = \"200ms\"\n[inference]\nonnxruntime = \"{library}\"\nlisten = \"{infer}\"\ngrpc_listen = \"\"\n[trust]\npolicy = \"{}\"\n",
        p("trust.json")
    );
    let mut agent = Agent::enroll(&controller, "bench-node", &config);
    agent.run("1s");
    wait_for("the agent to answer", Duration::from_secs(20), || {
        agent.status()
    });

    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        let bundle = p(&format!("big-{round}.gbundle"));
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
            &format!("1.0.{round}"),
            "--out",
            &bundle,
        ]);
        controller.cli_ok(&["bundle", "sign", &bundle, "--key", &p("ml.key")]);
        let size = std::fs::metadata(&bundle).unwrap().len();

        let started = Instant::now();
        let pushed: serde_json::Value =
            serde_json::from_str(&controller.cli_ok(&["bundle", "push", &bundle, "--json"]))
                .unwrap();
        let push_s = started.elapsed().as_secs_f64();
        let id = pushed["id"].as_str().unwrap().to_owned();

        // Earlier rounds' files are written back now, not during the measurement.
        assert!(
            std::process::Command::new("sync")
                .status()
                .unwrap()
                .success()
        );
        controller.cli_ok(&["bundle", "assign", &id, "--node", "bench-node"]);
        let assigned = Instant::now();
        let (serving, transfer) = loop {
            let status = agent.status().unwrap_or_default();
            let b = &status["bundles"];
            if b["active"].as_str() == Some(id.as_str()) {
                break (assigned.elapsed(), b["last_transfer"].clone());
            }
            assert!(b["failed"].is_null(), "the bundle was refused: {b}");
            assert!(
                assigned.elapsed() < Duration::from_secs(300),
                "not serving after 300 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(transfer["id"].as_str(), Some(id.as_str()));
        assert_eq!(transfer["bytes"].as_u64(), Some(size), "a whole transfer");
        let transfer_s = transfer["seconds"].as_f64().unwrap();
        let sync_s = transfer["sync_seconds"].as_f64().unwrap();
        let raw = raw_quic(&controller, size as usize);
        let round = Round {
            size,
            push_s,
            transfer_s,
            sync_s,
            raw,
            serving_s: serving.as_secs_f64(),
        };
        round.print();
        rounds.push(round);
    }
    agent.kill();

    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio = median(&|r| r.ratio());
    println!("median of {ROUNDS} rounds");
    println!(
        "  transfer / raw QUIC:   {ratio:.1} % (DESIGN.md: ≥ 80 %) {}",
        if ratio >= 80.0 { "met" } else { "MISSED" }
    );
    println!(
        "  transfer:              {:.0} MiB/s; raw QUIC {:.0} MiB/s",
        median(&|r| mib(r.size as f64 / r.transfer_s)),
        median(&|r| mib(r.raw))
    );
    println!(
        "  assignment → serving:  {:.2} s (heartbeat 200 ms, verify, golden, activate)",
        median(&|r| r.serving_s)
    );
}

/// Transfers, each followed by the raw reference, so both see the same machine state.
const ROUNDS: usize = 5;

fn mib(bytes_per_second: f64) -> f64 {
    bytes_per_second / 1_048_576.0
}

struct Round {
    size: u64,
    push_s: f64,
    /// As the agent measured it: fetch request to the last byte written.
    transfer_s: f64,
    /// The fsync of the download after that.
    sync_s: f64,
    /// Raw QUIC bytes per second.
    raw: f64,
    serving_s: f64,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.size as f64 / self.transfer_s / self.raw * 100.0
    }

    fn print(&self) {
        println!(
            "{:.1} MiB bundle: push {:.0} MiB/s, transfer {:.0} MiB/s in {:.2} s (+ fsync {:.2} s), raw QUIC {:.0} MiB/s = {:.1} %, assignment → serving {:.2} s",
            self.size as f64 / 1_048_576.0,
            mib(self.size as f64 / self.push_s),
            mib(self.size as f64 / self.transfer_s),
            self.transfer_s,
            self.sync_s,
            mib(self.raw),
            self.ratio(),
            self.serving_s
        );
    }
}
