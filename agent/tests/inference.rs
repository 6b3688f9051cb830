//! Air-gapped activation and the `KServe` v2 endpoint, with real ONNX Runtime:
//! `gantry-agent import` → the running agent serves the model; a golden mismatch is never
//! activated; rollback; bundle switches under load fail no request; a stop drains the
//! request in flight.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gantry_shared::bundle::manifest::{DynamicBatching, ExecutionProvider, GoldenValues};
use gantry_shared::tensor::TensorData;
use support::bundles::{onnxruntime, write_bundle, write_policy};
use support::{AGENT, AgentBuilder};

struct Node {
    dir: tempfile::TempDir,
    port: u16,
}

impl Node {
    fn new() -> Self {
        Self::with_library(&onnxruntime())
    }

    /// A node whose agent loads ONNX Runtime from `library`.
    fn with_library(library: &std::path::Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        write_policy(&dir.path().join("trust.json"));
        std::fs::write(
            dir.path().join("agent.toml"),
            format!(
                "[inference]\nonnxruntime = \"{}\"\nlisten = \"127.0.0.1:{port}\"\ngrpc_listen = \"\"\n[trust]\npolicy = \"{}\"\n",
                library.display(),
                dir.path().join("trust.json").display()
            ),
        )
        .unwrap();
        Self { dir, port }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn cli(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(AGENT)
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .arg("--state-dir")
            .arg(self.state_dir())
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Waits until the endpoint answers and a model is ready.
    fn wait_ready(&self) {
        wait_until("the model to be ready", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.http("GET", "/v2/health/ready", "").0 == 200
        });
    }

    /// A `tiny-linear` bundle at `version` that may run on `providers` only, needing
    /// `min_gpu_memory_bytes` of GPU memory.
    fn bundle_requiring(
        &self,
        file: &str,
        version: &str,
        providers: &[ExecutionProvider],
        min_gpu_memory_bytes: u64,
    ) -> String {
        write_bundle(
            &self.dir.path().join(file),
            "tiny_linear",
            "tiny-linear",
            version,
            |manifest| {
                manifest.requirements.execution_providers = providers.to_vec();
                manifest.requirements.min_gpu_memory_bytes = min_gpu_memory_bytes;
            },
        );
        file.to_owned()
    }

    fn bundle(&self, file: &str, model: &str, name: &str, version: &str) -> String {
        write_bundle(&self.dir.path().join(file), model, name, version, |_| {});
        file.to_owned()
    }

    fn http(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        // A server refusing an oversized body may answer and close before it is all sent.
        let _ = write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    fn infer_linear(&self) -> (u16, serde_json::Value) {
        self.http("POST", "/v2/models/tiny-linear/infer", r#"{"id":"r1","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#)
    }
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn agent_metrics_addr(agent: &support::Agent) -> std::net::SocketAddr {
    agent.addr
}

fn start_agent(node: &Node) -> support::Agent {
    AgentBuilder::new()
        .config(&std::fs::read_to_string(node.dir.path().join("agent.toml")).unwrap())
        .arg("--state-dir")
        .arg(node.state_dir().to_str().unwrap())
        .arg("--simulate-gpus")
        .arg("1")
        .start()
}

#[test]
fn imported_bundle_is_served_over_kserve_v2() {
    let node = Node::new();
    let bundle = node.bundle("linear.gbundle", "tiny_linear", "tiny-linear", "1.0.0");
    let (code, text) = node.cli(&["import", &bundle]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("golden      counting: ok") && text.contains("activated   sha256:"),
        "{text}"
    );

    let agent = start_agent(&node);
    node.wait_ready();
    assert_eq!(node.http("GET", "/v2/health/live", "").0, 200);
    assert_eq!(node.http("GET", "/v2/models/tiny-linear/ready", "").0, 200);
    let (status, meta) = node.http("GET", "/v2/models/tiny-linear", "");
    assert_eq!(status, 200);
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 4]));
    assert_eq!(meta["versions"][0], "1.0.0");

    let (status, body) = node.infer_linear();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["name"], "y");
    assert_eq!(body["outputs"][0]["shape"], serde_json::json!([1, 2]));
    assert_eq!(
        body["outputs"][0]["data"],
        serde_json::json!([-3.5, 14.0]),
        "x @ W + b for x = [1, 2, 3, 4]"
    );
    assert_eq!(body["id"], "r1");

    // The protocol's error shapes.
    let wrong_shape = node.http(
        "POST",
        "/v2/models/tiny-linear/infer",
        r#"{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
    );
    assert_eq!(wrong_shape.0, 400);
    assert!(
        wrong_shape.1["error"]
            .as_str()
            .unwrap()
            .contains("dimension 1 is 3")
    );
    let wrong_type = node.http(
        "POST",
        "/v2/models/tiny-linear/infer",
        r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}"#,
    );
    assert_eq!(wrong_type.0, 400);
    assert!(
        wrong_type.1["error"]
            .as_str()
            .unwrap()
            .contains("datatype INT64 does not match the model's FP32")
    );
    let missing = node.http("POST", "/v2/models/tiny-linear/infer", r#"{"inputs":[]}"#);
    assert_eq!(missing.0, 400);
    assert_eq!(
        node.http("POST", "/v2/models/other/infer", r#"{"inputs":[]}"#)
            .0,
        404
    );
    assert_eq!(node.http("GET", "/v2/models/other/ready", "").0, 404);
    let garbage = node.http("POST", "/v2/models/tiny-linear/infer", "{not json");
    assert_eq!(garbage.0, 400);
    // Serving is measured, and the model's golden vectors ran when it loaded.
    let page = support::http_get(agent_metrics_addr(&agent), "/metrics");
    assert!(
        page.contains(
            "gantry_agent_inference_requests_total{model=\"tiny-linear\",outcome=\"ok\"} 1"
        ),
        "{page}"
    );
    assert!(
        page.contains(
            "gantry_agent_inference_requests_total{model=\"tiny-linear\",outcome=\"rejected\"} 4"
        ),
        "{page}"
    );
    assert!(
        page.contains("gantry_agent_model_golden_ok{model=\"tiny-linear\"} 1"),
        "{page}"
    );
    assert!(
        page.contains("gantry_agent_inference_latency_p99_seconds"),
        "{page}"
    );
    let huge = format!(
        r#"{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP32","data":[{}]}}]}}"#,
        "1,".repeat(40 << 20)
    );
    assert_eq!(
        node.http("POST", "/v2/models/tiny-linear/infer", &huge).0,
        413,
        "oversized body"
    );
}

#[test]
fn a_golden_mismatch_is_never_activated() {
    let node = Node::new();
    let good = node.bundle("good.gbundle", "tiny_linear", "tiny-linear", "1.0.0");
    assert_eq!(node.cli(&["import", &good]).0, 0);
    let before = std::fs::read_to_string(node.state_dir().join("bundles/current.json")).unwrap();
    write_bundle(
        &node.dir.path().join("bad.gbundle"),
        "tiny_linear",
        "tiny-linear",
        "1.1.0",
        |manifest| {
            let y = manifest.golden[0].outputs.get_mut("y").unwrap();
            if let GoldenValues::Inline(TensorData::Float32(data)) = &mut y.values {
                data[0] += 1.0;
            }
        },
    );
    let (code, text) = node.cli(&["import", "bad.gbundle"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("NOT ACTIVATED") && text.contains("golden      ones: FAILED"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(node.state_dir().join("bundles/current.json")).unwrap(),
        before,
        "the active bundle is unchanged"
    );
    let leftovers: Vec<_> = std::fs::read_dir(node.state_dir().join("bundles"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".lock")
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only the good bundle and current.json remain (and the store's lock): {leftovers:?}"
    );
}

#[test]
fn rollback_and_switches_under_8_concurrent_clients_fail_no_request() {
    let node = Node::new();
    let v1 = node.bundle("v1.gbundle", "tiny_linear", "tiny-linear", "1.0.0");
    let v2 = node.bundle("v2.gbundle", "tiny_linear", "tiny-linear", "2.0.0");
    assert_eq!(node.cli(&["import", &v1]).0, 0);
    let _agent = start_agent(&node);
    node.wait_ready();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = node.port;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let probe = Node {
                    dir: tempfile::tempdir().unwrap(),
                    port,
                };
                let (mut ok, mut versions) = (0u32, std::collections::BTreeSet::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (status, body) = probe.infer_linear();
                    assert_eq!(status, 200, "a request failed during a switch: {body}");
                    assert_eq!(body["outputs"][0]["data"], serde_json::json!([-3.5, 14.0]));
                    versions.insert(body["model_version"].as_str().unwrap().to_owned());
                    ok += 1;
                }
                (ok, versions)
            })
        })
        .collect();
    for _ in 0..2 {
        assert_eq!(node.cli(&["import", &v2]).0, 0);
        wait_until("version 2 to serve", || {
            node.http("GET", "/v2/models/tiny-linear", "").1["versions"][0] == "2.0.0"
        });
        let (code, text) = node.cli(&["rollback"]);
        assert_eq!(code, 0, "{text}");
        wait_until("version 1 to serve again", || {
            node.http("GET", "/v2/models/tiny-linear", "").1["versions"][0] == "1.0.0"
        });
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = std::collections::BTreeSet::new();
    for client in clients {
        let (ok, versions) = client.join().expect("no client saw a failed request");
        assert!(ok > 0);
        seen.extend(versions);
    }
    assert_eq!(
        seen.len(),
        2,
        "requests were served by both versions: {seen:?}"
    );
}

/// The suite runs ONNX Runtime's CPU build (the `onnxruntime` wheel from `PyPI`), which has no
/// CUDA provider: a bundle that prefers CUDA runs on CPU, and `status` and `/metrics` say
/// where it runs and why not on CUDA.
/// Imports a `tiny-linear` bundle preferring CUDA over the CPU into `node`, starts its
/// agent and checks the answer; the running agent and the model's status.
fn serve_preferring_cuda(node: &Node) -> (support::Agent, serde_json::Value) {
    let bundle = node.bundle_requiring(
        "prefers-cuda.gbundle",
        "1.0.0",
        &[ExecutionProvider::Cuda, ExecutionProvider::Cpu],
        0,
    );
    let (code, text) = node.cli(&["import", &bundle]);
    assert_eq!(code, 0, "{text}");
    let agent = start_agent(node);
    node.wait_ready();
    let (status, body) = node.infer_linear();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], serde_json::json!([-3.5, 14.0]));
    let doc: serde_json::Value = serde_json::from_str(&agent.status_cli(true)).unwrap();
    let model = doc["models"][0].clone();
    (agent, model)
}

#[test]
fn a_bundle_preferring_cuda_runs_on_cpu_where_cuda_is_unusable_and_says_why() {
    let node = Node::new();
    let (agent, model) = serve_preferring_cuda(&node);
    assert_eq!(model["execution_provider"], "cpu", "{model}");
    assert_eq!(model["model"], "tiny-linear 1.0.0", "{model}");
    let passed_over = model["passed_over"][0].as_str().unwrap_or_default();
    assert!(
        passed_over.starts_with("cuda: ") && passed_over.contains("without the CUDA provider"),
        "{model}"
    );
    let table = agent.status_cli(false);
    assert!(
        table.contains("serving tiny-linear 1.0.0") && table.contains("on cpu"),
        "{table}"
    );
    assert!(table.contains("not on cuda: "), "{table}");
    let page = support::http_get(agent_metrics_addr(&agent), "/metrics");
    assert!(
        page.lines()
            .any(|l| l.starts_with("gantry_agent_model_info{")
                && l.contains("execution_provider=\"cpu\"")
                && l.contains("model=\"tiny-linear\"")
                && l.contains("version=\"1.0.0\"")
                && l.ends_with(" 1")),
        "{page}"
    );
}

/// The GPU build of ONNX Runtime as the CUDA component packages it (its CUDA runtime
/// beside it; `scripts/tools.sh onnxruntime-cuda`): on a node with an NVIDIA driver the
/// model runs on CUDA through the endpoint; without one (CI), CUDA is passed over naming
/// the missing driver and the GPU build's CPU provider serves the same answer.
#[test]
fn the_gpu_build_serves_on_cuda_where_a_driver_is_and_on_cpu_saying_why_where_none_is() {
    let library = PathBuf::from(std::env::var_os("GANTRY_ONNXRUNTIME_CUDA").expect(
        "GANTRY_ONNXRUNTIME_CUDA is not set: run the suite with scripts/test.sh, which fetches the GPU build of ONNX Runtime and its CUDA runtime",
    ));
    let driver = [
        "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
        "/usr/lib64/libcuda.so.1",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists());
    let node = Node::with_library(&library);
    let (_agent, model) = serve_preferring_cuda(&node);
    if driver {
        eprintln!("an NVIDIA driver is here: the model must run on CUDA");
        assert_eq!(model["execution_provider"], "cuda", "{model}");
    } else {
        eprintln!(
            "no NVIDIA driver here: checking that CUDA is passed over for the right reason (the CUDA run needs a GPU)"
        );
        assert_eq!(model["execution_provider"], "cpu", "{model}");
        let passed_over = model["passed_over"][0].as_str().unwrap_or_default();
        assert!(
            passed_over.starts_with("cuda: no NVIDIA driver on this node: libcuda.so.1"),
            "{model}"
        );
    }
}

/// A bundle that may run on CUDA only is refused where CUDA is unusable: never activated,
/// the reason names the provider, and the active bundle stays.
#[test]
fn a_bundle_requiring_cuda_only_is_not_activated_on_a_node_without_it() {
    let node = Node::new();
    let good = node.bundle("good.gbundle", "tiny_linear", "tiny-linear", "1.0.0");
    assert_eq!(node.cli(&["import", &good]).0, 0);
    let current = node.state_dir().join("bundles/current.json");
    let before = std::fs::read_to_string(&current).unwrap();
    let bundle = node.bundle_requiring("cuda-only.gbundle", "2.0.0", &[ExecutionProvider::Cuda], 0);
    let (code, text) = node.cli(&["import", &bundle]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("needs execution provider cuda")
            && text.contains("without the CUDA provider"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&current).unwrap(),
        before,
        "the active bundle changed"
    );
}

/// The running agent knows its GPUs: a bundle needing more GPU memory than any GPU has
/// free is passed over for CUDA with that reason (checked before the library is asked).
#[test]
fn a_bundle_needing_more_gpu_memory_than_is_free_is_not_placed_on_cuda() {
    let node = Node::new();
    let bundle = node.bundle_requiring(
        "big.gbundle",
        "1.0.0",
        &[ExecutionProvider::Cuda, ExecutionProvider::Cpu],
        1 << 40,
    );
    assert_eq!(node.cli(&["import", &bundle]).0, 0);
    let agent = start_agent(&node);
    node.wait_ready();
    let doc: serde_json::Value = serde_json::from_str(&agent.status_cli(true)).unwrap();
    let model = &doc["models"][0];
    assert_eq!(model["execution_provider"], "cpu", "{model}");
    let passed_over = model["passed_over"][0].as_str().unwrap_or_default();
    assert!(
        passed_over.contains("needs 1099511627776 bytes of GPU memory")
            && passed_over.contains("most free on a GPU here is"),
        "{model}"
    );
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_before_the_agent_exits() {
    let node = Node::new();
    let file = node.bundle("slow.gbundle", "slow_compute", "slow-compute", "1.0.0");
    let (code, out) = node.cli(&["import", &file]);
    assert_eq!(code, 0, "{out}");
    let agent = start_agent(&node);
    node.wait_ready();

    // About a second of work (x of ones: the answer is exactly 2048²).
    let ones = vec!["1"; 2048].join(",");
    let body = format!(
        r#"{{"inputs":[{{"name":"x","shape":[1,2048],"datatype":"FP32","data":[{ones}]}}]}}"#
    );
    let (answered, (code, answer), signalled, status) = std::thread::scope(|scope| {
        let request = scope.spawn(|| {
            let answer = node.http("POST", "/v2/models/slow-compute/infer", &body);
            (std::time::Instant::now(), answer)
        });
        // The request is being computed when the agent is told to stop.
        std::thread::sleep(Duration::from_millis(300));
        let signalled = std::time::Instant::now();
        let status = agent.terminate();
        let (answered, answer) = request.join().unwrap();
        (answered, answer, signalled, status)
    });
    assert_eq!(code, 200, "the request in flight is answered: {answer}");
    assert_eq!(answer["outputs"][0]["data"][0], 4_194_304.0, "{answer}");
    assert!(
        answered > signalled,
        "the answer came after SIGTERM, {:?} later",
        answered.saturating_duration_since(signalled)
    );
    assert!(status.success(), "a clean exit after draining: {status:?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", node.port)).is_err(),
        "nothing listens once the agent has stopped"
    );
}

/// Runs of a slow model (about a second each) go on blocking threads while a quick
/// model's (µs) go in place on the async workers: with the slow model's every session
/// busy and a request queued behind it, health, readiness, `/metrics` and the quick
/// model all answer before the slow requests do.
#[test]
fn a_busy_slow_model_never_holds_up_health_or_a_quick_model() {
    let node = Node::new();
    // One thread per run: the slow model takes about as long on any number of cores.
    let config = node.dir.path().join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[inference]\n", "[inference]\nintra_op_threads = 1\n"),
    )
    .unwrap();
    let slow = node.bundle("slow.gbundle", "slow_compute", "slow-compute", "1.0.0");
    let quick = node.bundle("quick.gbundle", "tiny_linear", "tiny-linear", "1.0.0");
    for file in [&slow, &quick] {
        let (code, out) = node.cli(&["import", file]);
        assert_eq!(code, 0, "{out}");
    }
    let agent = start_agent(&node);
    node.wait_ready();
    for model in ["slow-compute", "tiny-linear"] {
        wait_until(&format!("{model} to be ready"), || {
            node.http("GET", &format!("/v2/models/{model}/ready"), "").0 == 200
        });
    }
    // The quick model's first run measures it; the next ones run in place.
    for _ in 0..3 {
        assert_eq!(node.infer_linear().0, 200);
    }
    let ones = vec!["1"; 2048].join(",");
    let body = format!(
        r#"{{"inputs":[{{"name":"x","shape":[1,2048],"datatype":"FP32","data":[{ones}]}}]}}"#
    );
    let slow_done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let requests: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let answer = node.http("POST", "/v2/models/slow-compute/infer", &body);
                    slow_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    answer
                })
            })
            .collect();
        // Both slow requests are in: one runs, one waits for the session.
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..5 {
            assert_eq!(node.http("GET", "/v2/health/ready", "").0, 200);
            let (code, answer) = node.infer_linear();
            assert_eq!(code, 200, "{answer}");
            assert_eq!(
                answer["outputs"][0]["data"],
                serde_json::json!([-3.5, 14.0])
            );
        }
        let metrics = agent.metrics().0;
        assert!(
            metrics.contains("gantry_agent_inference_requests_total"),
            "{metrics}"
        );
        assert_eq!(
            slow_done.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "health, the quick model and /metrics answered only after a slow request"
        );
        for request in requests {
            let (code, answer) = request.join().unwrap();
            assert_eq!(code, 200, "{answer}");
            assert_eq!(answer["outputs"][0]["data"][0], 4_194_304.0, "{answer}");
        }
    });
}

/// Two bundles of different models serve side by side: importing one never replaces the
/// other, each has its own versions, statistics and rollback, and status, `/metrics` and
/// the repository index list both.
#[test]
fn several_models_serve_at_once_each_with_its_own_versions_and_rollback() {
    let node = Node::new();
    let linear1 = node.bundle("l1.gbundle", "tiny_linear", "tiny-linear", "1.0.0");
    let linear2 = node.bundle("l2.gbundle", "tiny_linear", "tiny-linear", "2.0.0");
    let mlp = node.bundle("m1.gbundle", "tiny_mlp", "tiny-mlp", "1.0.0");
    for bundle in [&linear1, &mlp] {
        let (code, text) = node.cli(&["import", bundle]);
        assert_eq!(code, 0, "{text}");
    }
    let agent = start_agent(&node);
    node.wait_ready();
    wait_until("both models to serve", || {
        node.http("GET", "/v2/models/tiny-mlp/ready", "").0 == 200
            && node.http("GET", "/v2/models/tiny-linear/ready", "").0 == 200
    });
    let mlp_input =
        r#"{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#;
    let (status, mlp_answer) = node.http("POST", "/v2/models/tiny-mlp/infer", mlp_input);
    assert_eq!(status, 200, "{mlp_answer}");
    assert_eq!(node.infer_linear().0, 200);

    // A new version of one model replaces only that model.
    assert_eq!(node.cli(&["import", &linear2]).0, 0);
    wait_until("tiny-linear 2.0.0 to serve", || {
        node.http("GET", "/v2/models/tiny-linear", "").1["versions"][0] == "2.0.0"
    });
    let (status, again) = node.http("POST", "/v2/models/tiny-mlp/infer", mlp_input);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["outputs"], mlp_answer["outputs"],
        "tiny-mlp was not disturbed"
    );
    let index = node.http("POST", "/v2/repository/index", "{}").1;
    let listed: Vec<(String, String)> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("tiny-linear".to_owned(), "2.0.0".to_owned()),
            ("tiny-mlp".to_owned(), "1.0.0".to_owned())
        ]
    );

    // Rollback needs the model's name when there are several, and touches that one only.
    let (code, text) = node.cli(&["rollback"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("several models (tiny-linear, tiny-mlp): name the one"),
        "{text}"
    );
    let (code, text) = node.cli(&["rollback", "tiny-mlp"]);
    assert_eq!(code, 1, "tiny-mlp has no previous bundle: {text}");
    let (code, text) = node.cli(&["rollback", "tiny-linear"]);
    assert_eq!(code, 0, "{text}");
    wait_until("tiny-linear 1.0.0 to serve again", || {
        node.http("GET", "/v2/models/tiny-linear", "").1["versions"][0] == "1.0.0"
    });
    assert_eq!(
        node.http("GET", "/v2/models/tiny-mlp", "").1["versions"][0],
        "1.0.0"
    );

    let doc: serde_json::Value = serde_json::from_str(&agent.status_cli(true)).unwrap();
    let served: Vec<&str> = doc["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(served, ["tiny-linear 1.0.0", "tiny-mlp 1.0.0"], "{doc}");
    let page = support::http_get(agent_metrics_addr(&agent), "/metrics");
    for model in ["tiny-linear", "tiny-mlp"] {
        assert!(
            page.contains(&format!(
                "gantry_agent_model_golden_ok{{model=\"{model}\"}} 1"
            )),
            "{page}"
        );
    }
}

fn batching_bundle(node: &Node, file: &str, batching: DynamicBatching) -> String {
    write_bundle(
        &node.dir.path().join(file),
        "tiny_linear",
        "tiny-linear",
        "1.0.0",
        |manifest| {
            manifest.requirements.instances = 1;
            manifest.requirements.dynamic_batching = Some(batching);
        },
    );
    file.to_owned()
}

/// Concurrent single-row requests to a batching model run together: each gets exactly
/// its own rows back, and the statistics show fewer runs than inferences.
#[test]
fn dynamic_batching_joins_concurrent_requests_and_answers_each_its_own_rows() {
    let node = Node::new();
    let bundle = batching_bundle(
        &node,
        "batched.gbundle",
        DynamicBatching {
            max_batch_size: 8,
            max_queue_delay_us: 300_000,
            preferred_batch_sizes: vec![8],
            ..DynamicBatching::default()
        },
    );
    assert_eq!(node.cli(&["import", &bundle]).0, 0);
    let _agent = start_agent(&node);
    node.wait_ready();
    let config = node.http("GET", "/v2/models/tiny-linear/config", "").1;
    assert_eq!(config["max_batch_size"], 8, "{config}");
    assert_eq!(
        config["input"][0]["dims"],
        serde_json::json!([4]),
        "{config}"
    );
    assert_eq!(
        config["dynamic_batching"]["preferred_batch_size"],
        serde_json::json!([8])
    );

    let port = node.port;
    let clients: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let probe = Node {
                    dir: tempfile::tempdir().unwrap(),
                    port,
                };
                let body = format!(
                    r#"{{"inputs":[{{"name":"x","shape":[1,4],"datatype":"FP32","data":[{i},1,2,3]}}]}}"#
                );
                let (status, answer) = probe.http("POST", "/v2/models/tiny-linear/infer", &body);
                assert_eq!(status, 200, "{answer}");
                // y = x·W + b for x = [i, 1, 2, 3]: exactly [i - 3, 10.75 - i].
                let i = f64::from(i);
                assert_eq!(answer["outputs"][0]["shape"], serde_json::json!([1, 2]));
                assert_eq!(answer["outputs"][0]["data"], serde_json::json!([i - 3.0, 10.75 - i]));
            })
        })
        .collect();
    for client in clients {
        client.join().expect("every request got its own rows");
    }
    let stats = node.http("GET", "/v2/models/tiny-linear/stats", "").1;
    let s = &stats["model_stats"][0];
    assert_eq!(s["inference_count"], 8, "{stats}");
    let runs = s["execution_count"].as_u64().unwrap();
    assert!(
        runs < 8,
        "the requests were batched: {runs} runs for 8 requests: {stats}"
    );
    assert!(
        s["batch_stats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["batch_size"].as_u64().unwrap() > 1),
        "{stats}"
    );
}

/// The batch queue is bounded and timed: a request past the queue's size is refused at
/// once, one that waits past its timeout is refused rather than run late; both say why.
#[test]
fn a_full_batch_queue_and_a_queue_timeout_refuse_with_503_and_the_reason() {
    let node = Node::new();
    let bundle = batching_bundle(
        &node,
        "bounded.gbundle",
        DynamicBatching {
            max_batch_size: 8,
            max_queue_delay_us: 1_500_000,
            max_queue_size: 1,
            queue_timeout_us: 1_000_000,
            ..DynamicBatching::default()
        },
    );
    assert_eq!(node.cli(&["import", &bundle]).0, 0);
    let _agent = start_agent(&node);
    node.wait_ready();
    let port = node.port;
    let waiting = std::thread::spawn(move || {
        Node {
            dir: tempfile::tempdir().unwrap(),
            port,
        }
        .infer_linear()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (status, full) = node.infer_linear();
    assert_eq!(status, 503, "{full}");
    assert!(
        full["error"]
            .as_str()
            .unwrap()
            .contains("queue is full (1 requests wait)"),
        "{full}"
    );
    let (status, late) = waiting.join().unwrap();
    assert_eq!(status, 503, "{late}");
    assert!(
        late["error"]
            .as_str()
            .unwrap()
            .contains("longer than its timeout"),
        "{late}"
    );
}
