//! Model monitoring as an ML engineer meets it: reference data saved by `NumPy` (with the
//! model's outputs from Python ONNX Runtime) profiled into a signed bundle by `gantry
//! bundle create --reference-data`; a node serving it profiles what it sees; when the
//! input distribution shifts mid-run the drift scores cross the threshold on the node —
//! in `/metrics`, `status` and its health — and clear when it shifts back; a rollout gate
//! fails on it and rolls back, and the controller shows the windows per node and merged
//! fleet-wide; a canary whose predictions move away from the nodes still on the previous
//! version's (`--max-prediction-shift`) rolls back too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gantry_tests::bundles::{monitored_bundle, onnxruntime, reference_data, trusting_controller};
use gantry_tests::{Agent, Controller, wait_for};

/// Input feature the test shifts.
const SHIFTED: usize = 3;

/// Sends `tiny_mlp` requests of 50 rows to `http` until stopped: N(0, 1) inputs, with
/// feature [`SHIFTED`] moved by `shift / 100` while `shift` is non-zero.
struct Traffic {
    shift: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(http: SocketAddr) -> Self {
        let shift = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (s, st, n) = (Arc::clone(&shift), Arc::clone(&stop), Arc::clone(&sent));
        let thread = std::thread::spawn(move || {
            let mut state = 7u64;
            let mut normal = move || {
                let mut sum = 0.0;
                for _ in 0..12 {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    sum += (state >> 11) as f64 / (1u64 << 53) as f64;
                }
                sum - 6.0
            };
            while !st.load(Ordering::Relaxed) {
                let shift = s.load(Ordering::Relaxed) as f64 / 100.0;
                let data: Vec<f64> = (0..50 * 8)
                    .map(|i| normal() + if i % 8 == SHIFTED { shift } else { 0.0 })
                    .collect();
                let body = serde_json::json!({
                    "inputs": [{"name": "x", "shape": [50, 8], "datatype": "FP32", "data": data}]
                })
                .to_string();
                if post(http, "/v2/models/mlp/infer", &body) == Some(200) {
                    n.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            shift,
            stop,
            sent,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

/// `name{labels…}` values on a metrics page whose labels include every `want`.
fn values(page: &str, name: &str, want: &[(&str, &str)]) -> Vec<(String, f64)> {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            want.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn score(page: &str, feature: &str, metric: &str) -> Option<f64> {
    values(
        page,
        "gantry_agent_model_drift_score",
        &[("model", "mlp"), ("feature", feature), ("metric", metric)],
    )
    .first()
    .map(|(_, v)| *v)
}

/// The end of the latest drift window on `page`, when it saw at least `rows` rows.
fn window_end(page: &str, rows: f64) -> Option<f64> {
    let seen = values(
        page,
        "gantry_agent_model_drift_window_rows",
        &[("model", "mlp")],
    );
    if seen.first()?.1 < rows {
        return None;
    }
    values(
        page,
        "gantry_agent_model_drift_window_end_timestamp_seconds",
        &[("model", "mlp")],
    )
    .first()
    .map(|(_, v)| *v)
}

fn drift_reasons(agent: &Agent) -> Vec<String> {
    let status = agent.status().unwrap_or_default();
    status["health"]["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["check"] == "model.drift")
        .map(|r| r["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_shifted_input_distribution_crosses_the_drift_threshold_on_the_node_and_clears_when_it_returns()
{
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let reference = reference_data(work.path());
    let bundle = monitored_bundle(&controller, work.path(), &key, &reference, "1.0.0");

    // The profile is signed into the bundle, and inspect shows it.
    let inspect = controller.cli_ok(&["bundle", "inspect", bundle.to_str().unwrap()]);
    assert!(
        inspect.contains("drift against 4000 rows of reference data"),
        "{inspect}"
    );
    assert!(inspect.contains("degraded above psi 0.25"), "{inspect}");
    for line in [
        "input x (8 columns)",
        "x[3]",
        "output y (3 columns)",
        "y[2]",
    ] {
        assert!(inspect.contains(line), "{line}: {inspect}");
    }
    let json: serde_json::Value = serde_json::from_str(&controller.cli_ok(&[
        "bundle",
        "inspect",
        bundle.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["reference_profile"]["rows"], 4000);
    assert_eq!(json["manifest"]["monitoring"]["drift_metric"], "psi");

    let http = gantry_tests::free_tcp_port();
    let config = format!(
        "[inference]\nonnxruntime = \"{}\"\nlisten = \"{http}\"\ngrpc_listen = \"\"\n[monitoring]\nwindow = \"2s\"\n[trust]\npolicy = \"{}\"\n",
        onnxruntime().display(),
        policy.display()
    );
    let mut agent = Agent::standalone("drift", &config);
    let out = agent.cli(&["import", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.run("1s");
    let traffic = Traffic::start(http);

    // In distribution: a full window scores low on every feature and output.
    let page = wait_for(
        "a window of in-distribution traffic",
        Duration::from_secs(60),
        || {
            let page = agent.metrics_page();
            window_end(&page, 1000.0).map(|_| page)
        },
    );
    for f in (0..8)
        .map(|j| format!("x[{j}]"))
        .chain((0..3).map(|j| format!("y[{j}]")))
    {
        let psi = score(&page, &f, "psi").unwrap_or_else(|| panic!("no psi for {f}:\n{page}"));
        let ks = score(&page, &f, "ks").unwrap();
        let js = score(&page, &f, "js").unwrap();
        assert!(
            psi < 0.1 && ks < 0.1 && js < 0.15,
            "{f}: psi {psi} ks {ks} js {js}"
        );
    }
    let drifted = values(
        &page,
        "gantry_agent_model_drifted_features",
        &[("model", "mlp")],
    );
    assert!(drifted[0].1 < 0.5, "{drifted:?}");
    assert!(drift_reasons(&agent).is_empty());

    // Feature 3 moves by 1.5 standard deviations: the next full window has drifted.
    traffic.shift.store(150, Ordering::Relaxed);
    let shifted_at = gantry_net::clock::now_ms() as f64 / 1000.0;
    let page = wait_for(
        "a window of shifted traffic",
        Duration::from_secs(60),
        || {
            let page = agent.metrics_page();
            // The first window after the shift may mix both; wait for one that opened after.
            window_end(&page, 1000.0)
                .filter(|end| *end > shifted_at + 3.5)
                .map(|_| page)
        },
    );
    let psi = score(&page, "x[3]", "psi").unwrap();
    let ks = score(&page, "x[3]", "ks").unwrap();
    assert!(psi > 0.25 && ks > 0.4, "x[3]: psi {psi} ks {ks}");
    for j in [0, 1, 2, 4, 5, 6, 7] {
        let psi = score(&page, &format!("x[{j}]"), "psi").unwrap();
        assert!(psi < 0.1, "x[{j}] did not move, yet psi {psi}");
    }
    assert!(
        values(
            &page,
            "gantry_agent_model_drifted_features",
            &[("model", "mlp")]
        )[0]
        .1 >= 1.0
    );
    let out_of_range = values(
        &page,
        "gantry_agent_model_feature_out_of_range",
        &[("model", "mlp"), ("feature", "x[3]")],
    );
    assert!(out_of_range[0].1 > 0.0, "{out_of_range:?}");
    // The node's health names the feature, and so does status.
    let reasons = wait_for(
        "drift in the health reasons",
        Duration::from_secs(10),
        || {
            let r = drift_reasons(&agent);
            (!r.is_empty()).then_some(r)
        },
    );
    assert!(
        reasons[0].contains("mlp 1.0.0") && reasons[0].contains("x[3] psi"),
        "{reasons:?}"
    );
    let status = agent.status().unwrap();
    assert_eq!(status["health"]["state"], "degraded", "{status}");
    let text = agent.status_text();
    println!("{text}");
    for line in page
        .lines()
        .filter(|l| l.contains("x[3]") || l.contains("drifted_features"))
    {
        println!("{line}");
    }
    assert!(text.contains("DRIFTED: x[3]"), "{text}");
    let summary = &status["models"][0]["drift"];
    assert_eq!(summary["drifted"][0][0], "x[3]", "{summary}");

    // Back in distribution: the next full window clears it.
    traffic.shift.store(0, Ordering::Relaxed);
    let back_at = gantry_net::clock::now_ms() as f64 / 1000.0;
    wait_for(
        "a window of traffic back in distribution",
        Duration::from_secs(60),
        || {
            let page = agent.metrics_page();
            window_end(&page, 1000.0)
                .filter(|end| *end > back_at + 3.5)
                .map(|_| ())
        },
    );
    wait_for("the drift reason to clear", Duration::from_secs(10), || {
        drift_reasons(&agent).is_empty().then_some(())
    });
    assert!(traffic.sent.load(Ordering::Relaxed) > 0);
    drop(traffic);
}

fn ready(http: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(http) else {
        return false;
    };
    if write!(
        stream,
        "GET /v2/models/mlp/ready HTTP/1.0\r\nHost: x\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).is_ok() && response.split(' ').nth(1) == Some("200")
}

fn rollout(controller: &Controller, id: &str) -> serde_json::Value {
    serde_json::from_str(&controller.cli_ok(&["rollout", "status", id, "--json"])).unwrap()
}

fn drift_report(controller: &Controller, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["model", "drift", "mlp", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&controller.cli_ok(&all)).unwrap()
}

#[test]
fn a_rollout_gate_fails_on_drift_and_rolls_back_and_the_controller_shows_it_per_node_and_fleet_wide()
 {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let reference = reference_data(work.path());
    let v1 = monitored_bundle(&controller, work.path(), &key, &reference, "1.0.0");
    let v2 = monitored_bundle(&controller, work.path(), &key, &reference, "1.1.0");
    let mut agents = Vec::new();
    let mut endpoints = Vec::new();
    for name in ["gpu-a", "gpu-b"] {
        let (config, http) = gantry_tests::bundles::agent_config(&onnxruntime(), &policy);
        let config = format!("{config}[monitoring]\nwindow = \"2s\"\n");
        let mut agent = Agent::enroll(&controller, name, &config);
        agent.run("1s");
        agents.push(agent);
        endpoints.push(http);
    }
    gantry_tests::bundles::push(&controller, &v1);
    let id2 = gantry_tests::bundles::push(&controller, &v2)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = |args: &[&str]| -> String {
        let mut all = vec!["rollout", "start"];
        all.extend_from_slice(args);
        all.push("--json");
        let r: serde_json::Value = serde_json::from_str(&controller.cli_ok(&all)).unwrap();
        r["id"].as_str().unwrap().to_owned()
    };
    let r1 = start(&["mlp@1.0.0", "--steps", "100%", "--bake", "0s"]);
    wait_for("v1 everywhere", Duration::from_secs(120), || {
        (rollout(&controller, &r1)["state"] == "succeeded").then_some(())
    });
    wait_for("both nodes to serve", Duration::from_secs(60), || {
        endpoints.iter().all(|h| ready(*h)).then_some(())
    });
    let traffic: Vec<Traffic> = endpoints.iter().map(|h| Traffic::start(*h)).collect();

    // Windows reach the controller through the uplink.
    wait_for(
        "windows of both nodes at the controller",
        Duration::from_secs(60),
        || {
            let report = drift_report(&controller, &[]);
            let nodes: std::collections::BTreeSet<String> = report["windows"]
                .as_array()?
                .iter()
                .filter(|w| w["rows"].as_u64() > Some(0))
                .map(|w| w["node"].as_str().unwrap_or_default().to_owned())
                .collect();
            (nodes.len() == 2).then_some(())
        },
    );

    // A canary of v1.1.0 with a drift gate; the inputs shift once it serves.
    let r2 = start(&[
        "mlp@1.1.0",
        "--steps",
        "1,100%",
        "--bake",
        "60s",
        "--max-drift",
        "0.25",
    ]);
    let canary = wait_for(
        "the canary to serve v1.1.0",
        Duration::from_secs(60),
        || {
            let r = rollout(&controller, &r2);
            let node = r["touched"].as_array()?.first()?["node"]
                .as_str()?
                .to_owned();
            (controller.node(&node).bundles.active.as_deref() == Some(id2.as_str())).then_some(node)
        },
    );
    for t in &traffic {
        t.shift.store(150, Ordering::Relaxed);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let failed = loop {
        let r = rollout(&controller, &r2);
        if r["state"] == "rolled-back" {
            break r;
        }
        if std::time::Instant::now() > deadline {
            let node = controller.node(&canary);
            panic!(
                "the drift gate did not roll back: {r}\ncanary {canary}: {:?}\n{}",
                node.bundles,
                agents
                    .iter()
                    .find(|a| a.name == canary)
                    .map(Agent::status_text)
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let failure = failed["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains(&format!(
            "{canary}: drift from the reference data: x[3] psi"
        )) && failure.contains("(gate 0.25)"),
        "{failed}"
    );
    assert_eq!(
        failed["touched"].as_array().unwrap().len(),
        1,
        "only the canary was touched"
    );
    let text = controller.cli_ok(&["rollout", "status", &r2]);
    assert!(text.contains("drift ≤ 0.25"), "{text}");

    // The federation endpoint carries each node's latest window.
    let page = wait_for(
        "drift on the federation endpoint",
        Duration::from_secs(20),
        || {
            let page = controller.metrics_page();
            page.lines()
                .any(|l| {
                    l.starts_with("gantry_node_model_drift_worst{")
                        && l.contains("feature=\"x[3]\"")
                })
                .then_some(page)
        },
    );
    assert!(
        page.contains("gantry_node_model_drifted_features{"),
        "{page}"
    );

    // `gantry model drift`: node windows over time, drifted ones named; fleet-wide
    // windows that are exactly the merge of the nodes'.
    wait_for(
        "drifted v1.0.0 windows from both nodes",
        Duration::from_secs(60),
        || {
            let report = drift_report(&controller, &["--version", "1.0.0"]);
            let drifted: std::collections::BTreeSet<String> = report["windows"]
                .as_array()?
                .iter()
                .filter(|w| {
                    w["drift"].as_array().into_iter().flatten().any(|f| {
                        f["feature"] == "x[3]" && f["psi"].as_f64().is_some_and(|p| p > 0.25)
                    })
                })
                .map(|w| w["node"].as_str().unwrap_or_default().to_owned())
                .collect();
            (drifted.len() == 2).then_some(())
        },
    );
    for t in &traffic {
        t.stop.store(true, Ordering::Relaxed);
    }
    let report = drift_report(&controller, &["--period", "1m"]);
    let windows = report["windows"].as_array().unwrap();
    assert!(
        windows
            .iter()
            .any(|w| w["version"] == "1.1.0" && w["node"] == canary.as_str()),
        "{report}"
    );
    let fleet = report["fleet"].as_array().unwrap();
    assert!(!fleet.is_empty(), "{report}");
    assert!(fleet.iter().any(|f| f["nodes"] == 2), "{report}");
    for f in fleet {
        let (start, end) = (
            f["start_ms"].as_u64().unwrap(),
            f["end_ms"].as_u64().unwrap(),
        );
        let rows: u64 = windows
            .iter()
            .filter(|w| w["version"] == f["version"])
            .filter(|w| (start..end).contains(&w["end_ms"].as_u64().unwrap()))
            .map(|w| w["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(
            f["rows"].as_u64(),
            Some(rows),
            "fleet window {f} is the sum of its nodes'"
        );
        let x3 = f["drift"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["feature"] == "x[3]");
        assert!(x3.is_some(), "{f}");
    }
    // The audit log records each node's drift alert once, and the report flags it.
    let report: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
    let flagged: Vec<&serde_json::Value> = report["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "model-drift")
        .collect();
    for node in ["gpu-a", "gpu-b"] {
        let flags: Vec<_> = flagged.iter().filter(|f| f["subject"] == node).collect();
        assert!(!flags.is_empty(), "no drift flag for {node}: {report}");
        assert!(
            flags[0]["message"].as_str().unwrap().contains("x[3]"),
            "{flags:?}"
        );
    }
    // Alerts on transitions only: never more than the windows that changed the verdict.
    assert!(flagged.len() <= 4, "{flagged:?}");
    let verified = controller.cli_ok(&["audit", "verify"]);
    assert!(verified.starts_with("audit chain intact"), "{verified}");
    let text = controller.cli_ok(&["model", "drift", "mlp"]);
    println!("{text}");
    assert!(
        text.contains("per node") && text.contains("DRIFTED x[3]"),
        "{text}"
    );
    assert!(text.contains("gpu-a") && text.contains("gpu-b"), "{text}");
    drop(traffic);

    // The canary again, compared with the node still on v1.0.0: only the canary's
    // traffic moves, so its predictions leave the baseline's over the same windows.
    let r3 = start(&[
        "mlp@1.1.0",
        "--steps",
        "1,100%",
        "--bake",
        "60s",
        "--max-prediction-shift",
        "0.2",
        "--min-compare-rows",
        "500",
    ]);
    let canary = wait_for(
        "the canary to serve v1.1.0 again",
        Duration::from_secs(60),
        || {
            let r = rollout(&controller, &r3);
            let node = r["touched"].as_array()?.first()?["node"]
                .as_str()?
                .to_owned();
            (controller.node(&node).bundles.active.as_deref() == Some(id2.as_str())).then_some(node)
        },
    );
    let at = ["gpu-a", "gpu-b"]
        .iter()
        .position(|n| *n == canary)
        .unwrap();
    let traffic: Vec<Traffic> = endpoints.iter().map(|h| Traffic::start(*h)).collect();
    traffic[at].shift.store(400, Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let failed = loop {
        let r = rollout(&controller, &r3);
        if r["state"] == "rolled-back" {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the canary comparison did not roll back: {r}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(traffic);
    let failure = failed["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("its predictions moved from the previous version's: y[")
            && failure.contains(" ks ")
            && failure.contains("(gate 0.2)"),
        "{failed}"
    );
    assert_eq!(
        failed["failed_gates"],
        serde_json::json!(["canary-comparison"])
    );
    let c = &failed["gates"]["comparison"];
    assert_eq!(
        (c["canary_nodes"].as_u64(), c["baseline_nodes"].as_u64()),
        (Some(1), Some(1)),
        "{failed}"
    );
    let worst = &c["prediction_shift"][0];
    assert!(worst["score"].as_f64() > Some(0.2), "{failed}");
    assert!(worst["canary_values"].as_u64() >= Some(500), "{failed}");
    assert!(worst["baseline_values"].as_u64() >= Some(500), "{failed}");
    let text = controller.cli_ok(&["rollout", "status", &r3]);
    println!("{text}");
    assert!(text.contains("largest prediction shift y["), "{text}");
}
