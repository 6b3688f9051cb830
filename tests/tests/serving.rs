//! The inference data plane as its users meet it: bundles made with `gantry bundle create`
//! for every tensor type, imported into a node that serves several models at once, and
//! Triton's own Python clients (`tritonclient[http,grpc]` from the Python package index) run unchanged
//! against it, with answers compared bit for bit with Python ONNX Runtime.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gantry_tests::bundles::{models, onnxruntime, python_clients, sign, trusting_controller};
use gantry_tests::{Agent, Controller, wait_for};

fn free_port() -> SocketAddr {
    gantry_tests::free_tcp_port()
}

/// `gantry bundle create` + `sign` of test model `model` (with its golden vectors) as
/// `name` at `version`.
fn bundle(
    controller: &Controller,
    work: &Path,
    key: &Path,
    model: &str,
    name: &str,
    version: &str,
) -> PathBuf {
    let out = work.join(format!("{name}-{version}.gbundle"));
    let golden = models().join(format!("{model}.golden.json"));
    let mut args = vec![
        "bundle".to_owned(),
        "create".to_owned(),
        "--model".to_owned(),
        models().join(format!("{model}.onnx")).display().to_string(),
        "--name".to_owned(),
        name.to_owned(),
        "--version".to_owned(),
        version.to_owned(),
        "--out".to_owned(),
        out.display().to_string(),
    ];
    if golden.is_file() {
        args.extend(["--golden".to_owned(), golden.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    controller.cli_ok(&args);
    sign(controller, &out, key);
    out
}

/// A node serving over HTTP and gRPC on free loopback ports, not enrolled.
fn node(policy: &Path, extra: &str) -> (Agent, SocketAddr, SocketAddr) {
    let (http, grpc) = (free_port(), free_port());
    let config = format!(
        "[inference]\nonnxruntime = \"{}\"\nlisten = \"{http}\"\ngrpc_listen = \"{grpc}\"\n{extra}[trust]\npolicy = \"{}\"\n",
        onnxruntime().display(),
        policy.display()
    );
    (Agent::standalone("serving", &config), http, grpc)
}

fn import(agent: &Agent, bundle: &Path) {
    let out = agent.cli(&["import", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `model` answers its readiness probe with 200.
fn ready(http: SocketAddr, model: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(http) else {
        return false;
    };
    let path = format!("/v2/models/{model}/ready");
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).is_ok() && response.split(' ').nth(1) == Some("200")
}

#[test]
fn tritons_python_clients_work_unchanged_against_two_models_served_at_once() {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let all_types = bundle(
        &controller,
        work.path(),
        &key,
        "all_types",
        "all-types",
        "1.0.0",
    );
    let bf16 = bundle(
        &controller,
        work.path(),
        &key,
        "bfloat16",
        "bfloat16",
        "2.1.0",
    );
    let (mut agent, http, grpc) = node(&policy, "");
    import(&agent, &all_types);
    import(&agent, &bf16);
    agent.run("1s");
    wait_for("both models to serve", Duration::from_secs(60), || {
        (ready(http, "all-types") && ready(http, "bfloat16")).then_some(())
    });

    let out = Command::new(python_clients())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/triton_clients.py"))
        .args(["--http", &http.to_string(), "--grpc", &grpc.to_string()])
        .arg("--model")
        .arg(format!(
            "all-types=1.0.0={}",
            models().join("all_types.onnx").display()
        ))
        .arg("--model")
        .arg(format!(
            "bfloat16=2.1.0={}",
            models().join("bfloat16.onnx").display()
        ))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "Triton's clients found a fault:\n{text}"
    );
    assert!(text.contains("all checks passed"), "{text}");
    // Every type was compared, over both protocols.
    for output in [
        "out_bool",
        "out_uint64",
        "out_int64",
        "out_float16",
        "out_float64",
        "out_string",
        "out_bfloat16",
    ] {
        assert!(
            text.contains(&format!("{output} bit-exact"))
                || text.contains(&format!("{output} (BF16) bit-exact")),
            "{output}: {text}"
        );
    }
    assert!(text.contains("grpc (NaN, inf, extremes)"), "{text}");
}

/// An image model's golden vector (1×3×224×224 FP32, 588 KiB of values) goes into a
/// signed payload file instead of the manifest (which stays small), and the node checks
/// it before activating.
#[test]
fn an_image_sized_golden_vector_travels_as_a_payload_file_and_is_checked_on_import() {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let plane = 224 * 224;
    let x: Vec<f32> = (0..3 * plane)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let y: Vec<f32> = x
        .chunks(plane)
        .map(|c| (c.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32)
        .collect();
    let golden = serde_json::json!([{
        "name": "image",
        "inputs": {"x": {"dtype": "float32", "shape": [1, 3, 224, 224], "data": x}},
        "outputs": {"y": {"dtype": "float32", "shape": [1, 3], "data": y}},
        "tolerance": {"abs": 1e-4, "rel": 1e-4},
    }]);
    let golden_file = work.path().join("image.golden.json");
    std::fs::write(&golden_file, serde_json::to_vec(&golden).unwrap()).unwrap();
    assert!(
        std::fs::metadata(&golden_file).unwrap().len() > 1 << 20,
        "the vector alone is larger than a manifest may be"
    );
    let out = work.path().join("image.gbundle");
    controller.cli_ok(&[
        "bundle",
        "create",
        "--model",
        models().join("image_pool.onnx").to_str().unwrap(),
        "--golden",
        golden_file.to_str().unwrap(),
        "--name",
        "image-pool",
        "--version",
        "1.0.0",
        "--out",
        out.to_str().unwrap(),
    ]);
    sign(&controller, &out, &key);
    let inspected: serde_json::Value = serde_json::from_str(&controller.cli_ok(&[
        "bundle",
        "inspect",
        out.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let manifest = &inspected["manifest"];
    assert_eq!(
        manifest["golden"][0]["inputs"]["x"]["file"], "golden/0/inputs/0.bin",
        "{manifest}"
    );
    assert!(
        manifest["golden"][0]["outputs"]["y"]["data"].is_array(),
        "a small tensor stays inline: {manifest}"
    );
    let listed = manifest["files"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|f| f["path"] == "golden/0/inputs/0.bin" && f["size"] == 3 * plane * 4),
        "{manifest}"
    );
    assert!(
        serde_json::to_vec(manifest).unwrap().len() < 16 << 10,
        "the manifest stays small"
    );

    let (agent, _, _) = node(&policy, "");
    let imported = agent.cli(&["import", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&imported.stdout);
    assert!(imported.status.success(), "{text}");
    assert!(text.contains("golden      image: ok"), "{text}");
}

/// The controller's desired state is per (node, model): two models assigned to one node
/// are both fetched and served; a rollout of one model — one that succeeds, then one that
/// fails its gate and is rolled back automatically — never touches the other, which
/// keeps answering the same throughout; `fleet show`, the audit report and the KPIs tell
/// the models apart.
#[test]
fn a_rollout_of_one_model_leaves_the_other_serving() {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let (config, infer) = gantry_tests::bundles::agent_config(&onnxruntime(), &policy);
    let mut agent = Agent::enroll(&controller, "two-models", &config);
    agent.run("200ms");
    let push_id = |bundle: &Path| -> String {
        gantry_tests::bundles::push(&controller, bundle)["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // Both models assigned by the controller, one `bundle assign` each.
    let mlp1 = push_id(&bundle(
        &controller,
        work.path(),
        &key,
        "tiny_mlp",
        "tiny-mlp",
        "1.0.0",
    ));
    let linear1 = push_id(&gantry_tests::bundles::make_bundle(
        &controller,
        work.path(),
        "1.0.0",
        &key,
    ));
    for id in [&mlp1, &linear1] {
        let said = controller.cli_ok(&["bundle", "assign", id, "--node", "two-models"]);
        assert!(said.contains("their other models are unchanged"), "{said}");
    }
    wait_for("both models to serve", Duration::from_secs(60), || {
        (ready(infer, "tiny-mlp") && ready(infer, "tiny-linear")).then_some(())
    });
    let mlp_body =
        r#"{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}"#;
    let answer = |model: &str, body: &str| post(infer, &format!("/v2/models/{model}/infer"), body);
    let first = answer("tiny-mlp", mlp_body).expect("tiny-mlp answers");
    let rollout = |bundle: &str| -> String {
        let started: serde_json::Value = serde_json::from_str(&controller.cli_ok(&[
            "rollout", "start", bundle, "--steps", "100%", "--bake", "1s", "--json",
        ]))
        .unwrap();
        started["id"].as_str().unwrap().to_owned()
    };
    let until = |id: &str, state: &str| {
        wait_for(
            &format!("rollout {id} to be {state}"),
            Duration::from_secs(90),
            || {
                // tiny-mlp answers the same all the way through.
                assert_eq!(
                    answer("tiny-mlp", mlp_body).as_ref(),
                    Some(&first),
                    "tiny-mlp was disturbed"
                );
                let r: serde_json::Value =
                    serde_json::from_str(&controller.cli_ok(&["rollout", "status", id, "--json"]))
                        .ok()?;
                (r["state"] == state).then_some(r)
            },
        )
    };
    let assigned = || -> Vec<(String, String)> {
        controller
            .node("two-models")
            .assigned
            .into_iter()
            .map(|d| (d.model, d.id))
            .collect()
    };

    // A rollout of tiny-linear that succeeds.
    let linear2 = push_id(&gantry_tests::bundles::make_bundle(
        &controller,
        work.path(),
        "2.0.0",
        &key,
    ));
    let r1 = rollout("tiny-linear@2.0.0");
    until(&r1, "succeeded");
    assert_eq!(
        assigned(),
        [
            ("tiny-linear".to_owned(), linear2.clone()),
            ("tiny-mlp".to_owned(), mlp1.clone())
        ]
    );

    // One that fails its gate (golden vectors the model does not reproduce): rolled back
    // automatically, to tiny-linear's previous bundle; tiny-mlp's assignment stays.
    push_id(&gantry_tests::bundles::make_wrong_golden_bundle(
        &controller,
        work.path(),
        "3.0.0",
        &key,
    ));
    let r2 = rollout("tiny-linear@3.0.0");
    let failed = until(&r2, "rolled-back");
    assert!(
        failed["failure"]
            .as_str()
            .unwrap()
            .contains("refused the bundle"),
        "{failed}"
    );
    assert_eq!(
        assigned(),
        [
            ("tiny-linear".to_owned(), linear2.clone()),
            ("tiny-mlp".to_owned(), mlp1.clone())
        ]
    );
    assert!(
        gantry_tests::bundles::infer(infer).is_some(),
        "tiny-linear serves"
    );
    assert_eq!(answer("tiny-mlp", mlp_body), Some(first.clone()));

    // The node reports both models, each as assigned.
    wait_for(
        "fleet show to list both models as assigned",
        Duration::from_secs(30),
        || {
            let show = controller.cli_ok(&["fleet", "show", "two-models"]);
            (show.contains(&format!(
                "  model     tiny-linear: {linear2} (previous {linear1}), as assigned"
            )) && show.contains(&format!(
                "  model     tiny-mlp: {mlp1} (previous -), as assigned"
            )) && show.contains("REFUSED"))
            .then_some(show)
        },
    );
    let models: Vec<String> = agent.status().unwrap()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(models, ["tiny-linear 2.0.0", "tiny-mlp 1.0.0"]);

    // The audit report keeps one interval per model: tiny-linear 2.0.0 ended 1.0.0's,
    // and tiny-mlp's is still open however often tiny-linear changed.
    let intervals = wait_for(
        "the activations in the audit log",
        Duration::from_secs(30),
        || {
            let report: serde_json::Value =
                serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).ok()?;
            let ran: Vec<(String, bool, String)> = report["nodes"]["two-models"]["ran"]
                .as_array()?
                .iter()
                .map(|i| {
                    (
                        i["bundle"].as_str().unwrap_or_default().to_owned(),
                        i["to_ms"].is_null(),
                        i["cause"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            (ran.len() == 3).then_some(ran)
        },
    );
    let open = |id: &str| {
        intervals
            .iter()
            .find(|(b, _, _)| b == id)
            .map(|(_, open, _)| *open)
    };
    assert_eq!(open(&mlp1), Some(true), "{intervals:?}");
    assert_eq!(open(&linear1), Some(false), "{intervals:?}");
    assert_eq!(open(&linear2), Some(true), "{intervals:?}");
    assert!(
        intervals
            .iter()
            .any(|(b, _, cause)| *b == linear2 && cause == &format!("rollout {r1}")),
        "{intervals:?}"
    );

    // KPIs per model: tiny-linear had one success and one failure.
    let kpis: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["report", "kpis", "--json"])).unwrap();
    assert_eq!(
        kpis["models"]["tiny-linear"]["change_failure_rate"], 0.5,
        "{kpis}"
    );
    let text = controller.cli_ok(&["report", "kpis"]);
    assert!(text.contains("tiny-linear"), "{text}");
}

/// The outputs of a JSON inference answer, or `None` unless it is a 200.
fn post(addr: SocketAddr, path: &str, body: &str) -> Option<serde_json::Value> {
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
    let (head, body) = response.split_once("\r\n\r\n")?;
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    head.starts_with("HTTP/1.0 200")
        .then(|| answer["outputs"].clone())
}
