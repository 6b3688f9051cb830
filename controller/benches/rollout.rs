//! Rollout of 1 000 simulated agents in three steps with zero bake (DESIGN.md: limited by
//! bake time, not by the controller).
//!
//! Runs the real `gantry serve` on loopback and measures it from `/proc`. The agents are
//! simulated in this process but speak the real protocol: enrolled with join tokens
//! (labels `rack=r0…r9`), connected over QUIC with mutual TLS, each sending a heartbeat
//! every `GANTRY_BENCH_HEARTBEAT_MS` (default 500) that reports as active whatever the
//! previous reply desired — activation is instant, so what remains is the controller's
//! work and the heartbeat round trips. A baseline bundle goes everywhere first (one step),
//! then the measured rollout: steps `1,50%,100%`, bake 0.
//!
//! Printed: time per step (assignment → every node of the step reports the bundle), the
//! heartbeat interval it is bounded by, and the controller's CPU and RSS during the
//! rollout.
//!
//! Run: `cargo bench -p gantry-controller --bench rollout`.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gantry_controller::client::AdminClient;
use gantry_controller::home::Home;
use gantry_shared::health::Health;
use gantry_shared::protocol::delivery::NodeBundles;
use gantry_shared::protocol::rollout::{Rollout, Spec, State, parse_steps};
use gantry_shared::protocol::{Request, Response, admin, heartbeat};
use support::{admin_of, client_config, enroll_nodes, env_or, init_controller, serve, usage};

const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

fn cli(home: &Home, args: &[&str]) -> String {
    let out = Command::new(GANTRY)
        .args(args)
        .env(
            "GANTRY_IDENTITY",
            home.dir.join(gantry_controller::home::ADMIN_IDENTITY),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gantry {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A signed bundle of the test model at `version`, pushed; returns its id.
fn push_bundle(home: &Home, work: &std::path::Path, version: &str) -> String {
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models");
    let out = work.join(format!("b-{version}.gbundle"));
    let p = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    cli(
        home,
        &[
            "bundle",
            "create",
            "--model",
            &p(&models.join("tiny_linear.onnx")),
            "--golden",
            &p(&models.join("tiny_linear.golden.json")),
            "--name",
            "bench",
            "--version",
            version,
            "--out",
            &p(&out),
        ],
    );
    cli(
        home,
        &[
            "bundle",
            "sign",
            &p(&out),
            "--key",
            &p(&work.join("ml.key")),
        ],
    );
    let pushed: serde_json::Value =
        serde_json::from_str(&cli(home, &["bundle", "push", &p(&out), "--json"])).unwrap();
    pushed["id"].as_str().unwrap().to_owned()
}

async fn wait_done(admin: &AdminClient, id: &str) -> Rollout {
    loop {
        let admin::Response::Rollout(r) = admin
            .call(admin::Request::RolloutStatus {
                id: Some(id.to_owned()),
            })
            .await
            .unwrap()
        else {
            panic!("no rollout")
        };
        match r.state() {
            State::Succeeded => return *r,
            State::Rolling | State::Baking => {}
            other => panic!("rollout {id} ended {}: {:?}", other.as_str(), r.failure),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(admin: &AdminClient, bundle: &str, steps: &str) -> String {
    let spec = Spec {
        bundle: bundle.to_owned(),
        steps: parse_steps(steps).unwrap(),
        bake_ms: 0,
        ..Spec::default()
    };
    let admin::Response::Rollout(r) = admin
        .call(admin::Request::RolloutStart(Box::new(spec)))
        .await
        .unwrap()
    else {
        panic!("rollout refused")
    };
    r.id
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let agents = env_or("GANTRY_BENCH_AGENTS", 1000) as usize;
    let heartbeat_ms = env_or("GANTRY_BENCH_HEARTBEAT_MS", 500);

    let work = tempfile::tempdir().unwrap();
    let (home, addr, identity_path) = init_controller(work.path());
    let key = work.path().join("ml.key");
    let policy = work.path().join("trust.json");
    let k = key.to_str().unwrap();
    cli(&home, &["keygen", "--out", k]);
    cli(
        &home,
        &[
            "policy",
            "create",
            "--key",
            &format!("ml={k}.pub"),
            "--threshold",
            "1",
            "--out",
            policy.to_str().unwrap(),
        ],
    );
    cli(
        &home,
        &["policy", "sign", policy.to_str().unwrap(), "--key", k],
    );
    std::fs::copy(&policy, home.path("trust.json")).unwrap();
    let mut server = serve(
        &home,
        &["--listen", &addr.to_string(), "--metrics-listen", ""],
    );
    let pid = server.id();
    // Stopped however this ends, so a failed run leaves no controller behind.
    let guard = KillOnDrop(pid);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (admin, pin) = admin_of(&home, &identity_path).await;
        let v1 = push_bundle(&home, work.path(), "1.0.0");
        let v2 = push_bundle(&home, work.path(), "2.0.0");

        let nodes = enroll_nodes(&admin, addr, &pin, "sim", agents, |i| {
            format!("rack=r{}", i % 10)
        })
        .await;
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for node in nodes {
            let conn = endpoint
                .connect_with(
                    client_config(node.tls),
                    addr,
                    gantry_shared::protocol::CONTROLLER_SERVER_NAME,
                )
                .unwrap()
                .await
                .unwrap();
            let stop = Arc::clone(&stop);
            tasks.push(tokio::spawn(async move {
                let mut active: Option<String> = None;
                let mut tick = tokio::time::interval(Duration::from_millis(heartbeat_ms));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let request = Request::Heartbeat(Box::new(heartbeat::Request {
                        agent_version: "sim".into(),
                        health: Some(Health::default()),
                        bundles: NodeBundles {
                            active: active.clone(),
                            ..NodeBundles::default()
                        },
                        ..heartbeat::Request::default()
                    }));
                    if let Ok(Response::Heartbeat(reply)) =
                        gantry_net::call(&conn, &request, Duration::from_secs(30)).await
                    {
                        active = reply.desired.map(|d| d.id);
                    }
                }
            }));
        }

        // Baseline, then the measured rollout.
        let baseline = start(&admin, &v1, "100%").await;
        let started = Instant::now();
        wait_done(&admin, &baseline).await;
        let baseline_s = started.elapsed().as_secs_f64();

        let (cpu_before, rss_before) = usage(pid);
        let started = Instant::now();
        let id = start(&admin, &v2, "1,50%,100%").await;
        let r = wait_done(&admin, &id).await;
        let elapsed = started.elapsed().as_secs_f64();
        let (cpu_after, rss_after) = usage(pid);
        stop.store(true, Ordering::Relaxed);

        // Step k starts when its nodes are assigned and ends when they all run it.
        let mut steps = Vec::new();
        let mut step_start = r.created_at_ms;
        for e in &r.events {
            if e.message.contains("runs the bundle") {
                steps.push((e.at_ms - step_start) as f64 / 1e3);
            }
            if e.message.contains("baked; step") {
                step_start = e.at_ms;
            }
        }
        println!();
        println!(
            "rollout: {agents} simulated agents over QUIC, heartbeat every {heartbeat_ms} ms, steps 1,50%,100%, bake 0"
        );
        println!("  baseline (one step to all {agents}):   {baseline_s:.2} s");
        for (i, s) in steps.iter().enumerate() {
            let label = format!("step {} ({} nodes):", i + 1, [1, agents / 2, agents][i.min(2)]);
            println!(
                "  {label:<36}{s:.2} s = {:.1} heartbeat intervals",
                s * 1000.0 / heartbeat_ms as f64
            );
        }
        println!("  whole rollout:                      {elapsed:.2} s");
        let cores = (cpu_after - cpu_before) / elapsed;
        println!(
            "  controller CPU during it:           {cores:.2} cores ({} heartbeats/s)",
            agents as u64 * 1000 / heartbeat_ms
        );
        println!(
            "  controller RSS:                     {:.1} MiB → {:.1} MiB",
            rss_before as f64 / 1_048_576.0,
            rss_after as f64 / 1_048_576.0
        );
        let worst = steps.iter().copied().fold(0.0, f64::max);
        println!(
            "  bounded by:                         {}",
            if worst * 1000.0 <= 4.0 * heartbeat_ms as f64 {
                "heartbeats (each step within 4 intervals: assignment seen, activation reported), not the controller"
            } else {
                "the controller (a step took longer than 4 heartbeat intervals)"
            }
        );
        for t in tasks {
            let _ = t.await;
        }
    });
    drop(guard);
    let _ = server.wait();
}
