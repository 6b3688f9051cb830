//! Model monitoring as an ML engineer meets it: reference data saved by `NumPy` (with the
//! model's outputs from Python ONNX Runtime) profiled into a signed bundle by `gantry
//! bundle create --reference-data`; a node serving it profiles what it sees; when the
//! input distribution shifts mid-run the drift scores cross the threshold on the node —
//! in `/metrics`, `status` and its health — and clear when it shifts back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use gantry_tests::bundles::{models, onnxruntime, python_clients, trusting_controller};
use gantry_tests::{Agent, Controller, wait_for};

/// Input feature the test shifts.
const SHIFTED: usize = 3;

/// `ref.npz` from `NumPy` and Python ONNX Runtime: 4000 rows of N(0, 1) for `tiny_mlp`'s
/// eight inputs, and its three outputs on them.
fn reference_data(work: &Path) -> PathBuf {
    let out = work.join("ref.npz");
    let run = Command::new(python_clients())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/reference_data.py"))
        .arg("--model")
        .arg(models().join("tiny_mlp.onnx"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

fn monitored_bundle(controller: &Controller, work: &Path, key: &Path, version: &str) -> PathBuf {
    let out = work.join(format!("mlp-{version}.gbundle"));
    let reference = reference_data(work);
    controller.cli_ok(&[
        "bundle",
        "create",
        "--model",
        models().join("tiny_mlp.onnx").to_str().unwrap(),
        "--golden",
        models().join("tiny_mlp.golden.json").to_str().unwrap(),
        "--name",
        "mlp",
        "--version",
        version,
        "--reference-data",
        reference.to_str().unwrap(),
        "--drift-threshold",
        "0.25",
        "--out",
        out.to_str().unwrap(),
    ]);
    controller.cli_ok(&[
        "bundle",
        "sign",
        out.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    out
}

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
    let bundle = monitored_bundle(&controller, work.path(), &key, "1.0.0");

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
