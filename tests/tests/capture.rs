//! Payload capture as an ML engineer meets it: a node captures a quarter of a
//! classifier's requests and every request of a model of every tensor type, with one
//! input redacted; labels fed back for some requests travel with them; `gantry capture
//! export` writes `.npz` archives that `NumPy` opens alone, holding exactly the sampled
//! requests, their answers bit for bit and their labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gantry_tests::bundles::{
    agent_config, models, onnxruntime, post_json, push, python_clients, sign, trusting_controller,
};
use gantry_tests::{Agent, Controller, http_status, wait_for};

/// Requests to the classifier; a quarter of them are captured.
const REQUESTS: usize = 40;
/// Rows per classifier request.
const ROWS: usize = 2;

fn bundle(controller: &Controller, work: &Path, key: &Path, args: &[&str], name: &str) -> PathBuf {
    let out = work.join(format!("{name}.gbundle"));
    let mut all = vec!["bundle", "create", "--name", name, "--version", "1.0.0"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--out", out.to_str().unwrap()]);
    controller.cli_ok(&all);
    sign(controller, &out, key);
    out
}

fn deploy(controller: &Controller, model: &str) {
    let r: serde_json::Value = serde_json::from_str(&controller.cli_ok(&[
        "rollout",
        "start",
        &format!("{model}@1.0.0"),
        "--steps",
        "100%",
        "--bake",
        "0s",
        "--json",
    ]))
    .unwrap();
    let id = r["id"].as_str().unwrap().to_owned();
    wait_for(
        &format!("{model} deployed"),
        Duration::from_secs(120),
        || {
            let r: serde_json::Value =
                serde_json::from_str(&controller.cli_ok(&["rollout", "status", &id, "--json"]))
                    .unwrap();
            (r["state"] == "succeeded").then_some(())
        },
    );
}

/// `gantry capture export`'s manifest once `done` says the controller has everything.
fn export(
    controller: &Controller,
    model: &str,
    out: &Path,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    wait_for(
        &format!("{model}'s pairs at the controller"),
        Duration::from_secs(60),
        || {
            let run = controller.cli(&[
                "capture",
                "export",
                model,
                "--out",
                out.to_str().unwrap(),
                "--json",
            ]);
            if !run.status.success() {
                return None;
            }
            let manifest: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
            done(&manifest).then_some(manifest)
        },
    )
}

/// Every array of every archive in `dir`, as `NumPy` reads it.
fn numpy_arrays(dir: &Path) -> serde_json::Value {
    let run = Command::new(python_clients())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/npz_dump.py"))
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A classifier request: the inputs sent (as `f32`, widened) and the scores answered.
fn classify(http: SocketAddr, id: &str, seed: usize) -> (Vec<f64>, Vec<f64>) {
    let data: Vec<f64> = (0..ROWS * 8)
        .map(|i| f64::from(((seed * 31 + i * 7) % 97) as f32 / 13.0 - 3.5))
        .collect();
    let body = serde_json::json!({
        "id": id,
        "inputs": [{"name": "x", "shape": [ROWS, 8], "datatype": "FP32", "data": data}]
    })
    .to_string();
    let (code, answer) = post_json(http, "/v2/models/mlp/infer", &body).expect("the agent answers");
    assert_eq!(code, 200, "{answer}");
    (data, floats(&answer["outputs"][0]["data"]))
}

/// The protocol's datatype of a golden file's `dtype`.
fn datatype(dtype: &str) -> &'static str {
    match dtype {
        "bool" => "BOOL",
        "uint8" => "UINT8",
        "uint16" => "UINT16",
        "uint32" => "UINT32",
        "uint64" => "UINT64",
        "int8" => "INT8",
        "int16" => "INT16",
        "int32" => "INT32",
        "int64" => "INT64",
        "float16" => "FP16",
        "float32" => "FP32",
        "float64" => "FP64",
        "string" => "BYTES",
        other => panic!("no datatype for {other}"),
    }
}

#[test]
fn capture_export_holds_exactly_the_sampled_requests_with_their_answers_and_labels_and_no_redacted_input()
 {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let mlp = bundle(
        &controller,
        work.path(),
        &key,
        &[
            "--model",
            models().join("tiny_mlp.onnx").to_str().unwrap(),
            "--golden",
            models().join("tiny_mlp.golden.json").to_str().unwrap(),
            "--task",
            "classification",
        ],
        "mlp",
    );
    let all_types = bundle(
        &controller,
        work.path(),
        &key,
        &[
            "--model",
            models().join("all_types.onnx").to_str().unwrap(),
            "--golden",
            models().join("all_types.golden.json").to_str().unwrap(),
        ],
        "all-types",
    );
    let (config, http) = agent_config(&onnxruntime(), &policy);
    let config = format!(
        "{config}[monitoring]\nwindow = \"2s\"\n[monitoring.models.mlp]\ncapture_rate = 0.25\n[monitoring.models.all-types]\ncapture_rate = 1.0\ncapture_redact = [\"in_string\"]\n"
    );
    let mut agent = Agent::enroll(&controller, "gpu-a", &config);
    agent.run("1s");
    push(&controller, &mlp);
    push(&controller, &all_types);
    deploy(&controller, "mlp");
    deploy(&controller, "all-types");
    wait_for("both models ready", Duration::from_secs(60), || {
        ["mlp", "all-types"]
            .iter()
            .all(|m| http_status(http, &format!("/v2/models/{m}/ready")) == Some(200))
            .then_some(())
    });

    // The classifier: requests m-0 … m-39; labels come back for the first half.
    let mut sent = BTreeMap::new();
    for i in 0..REQUESTS {
        let id = format!("m-{i}");
        sent.insert(id.clone(), classify(http, &id, i));
    }
    let labels: Vec<(String, Vec<i64>)> = (0..i64::try_from(REQUESTS / 2).unwrap())
        .map(|i| (format!("m-{i}"), vec![i % 3, (i + 1) % 3]))
        .collect();
    let body = serde_json::json!({
        "feedback": labels
            .iter()
            .map(|(id, l)| serde_json::json!({"id": id, "label": l}))
            .collect::<Vec<_>>()
    })
    .to_string();
    let (code, answer) = post_json(http, "/v2/models/mlp/feedback", &body).unwrap();
    assert_eq!(
        (code, answer["joined"].as_u64()),
        (200, Some(20)),
        "{answer}"
    );

    // Systematic sampling at 0.25: every fourth request, m-3, m-7, …, m-39.
    let sampled: Vec<String> = (0..REQUESTS)
        .filter(|i| i % 4 == 3)
        .map(|i| format!("m-{i}"))
        .collect();
    let labeled = sampled
        .iter()
        .filter(|id| labels.iter().any(|(l, _)| l == *id))
        .count();
    assert_eq!(labeled, 5);
    let out = work.path().join("export-mlp");
    let manifest = export(&controller, "mlp", &out, |m| {
        m["pairs"] == sampled.len() && m["files"][0]["labeled"] == labeled
    });
    let file = &manifest["files"][0];
    assert_eq!(file["file"], "mlp-1.0.0.npz", "{manifest}");
    assert_eq!(file["nodes"], serde_json::json!(["gpu-a"]), "{manifest}");
    let arrays = &numpy_arrays(&out)["mlp-1.0.0.npz"];
    let ids: Vec<String> = arrays["id"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| String::from_utf8(hex_bytes(h.as_str().unwrap())).unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    let mut want = sampled.clone();
    want.sort();
    assert_eq!(sorted, want, "exactly the sampled requests");
    assert_eq!(arrays["input/x"]["dtype"], "<f4");
    assert_eq!(
        arrays["input/x"]["shape"],
        serde_json::json!([sampled.len() * ROWS, 8])
    );
    assert_eq!(arrays["output/y"]["dtype"], "<f4");
    let x = floats(&arrays["input/x"]["data"]);
    let y = floats(&arrays["output/y"]["data"]);
    let x_offsets = floats(&arrays["offsets/input/x"]["data"]);
    let label_offsets = floats(&arrays["offsets/label"]["data"]);
    let label = floats(&arrays["label"]["data"]);
    let classes = y.len() / (sampled.len() * ROWS);
    for (i, id) in ids.iter().enumerate() {
        let (rows_from, rows_to) = (x_offsets[i] as usize, x_offsets[i + 1] as usize);
        assert_eq!(rows_to - rows_from, ROWS, "{id}");
        let (inputs, scores) = &sent[id];
        assert_eq!(
            &x[rows_from * 8..rows_to * 8],
            inputs.as_slice(),
            "{id}'s input"
        );
        assert_eq!(
            &y[rows_from * classes..rows_to * classes],
            scores.as_slice(),
            "{id}'s answer, bit for bit"
        );
        let given = labels.iter().find(|(l, _)| l == id).map(|(_, v)| v);
        let (l_from, l_to) = (label_offsets[i] as usize, label_offsets[i + 1] as usize);
        assert_eq!(arrays["labeled"]["data"][i], given.is_some(), "{id}");
        let got: Vec<i64> = label[l_from..l_to].iter().map(|v| *v as i64).collect();
        assert_eq!(got, given.cloned().unwrap_or_default(), "{id}'s label");
    }

    // The model of every type: every request captured, every element exact, the
    // redacted input absent.
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(models().join("all_types.golden.json")).unwrap(),
    )
    .unwrap();
    let golden_inputs = golden[0]["inputs"].as_object().unwrap();
    let inputs: Vec<serde_json::Value> = golden_inputs
        .iter()
        .map(|(name, t)| {
            serde_json::json!({
                "name": name,
                "datatype": datatype(t["dtype"].as_str().unwrap()),
                "shape": t["shape"],
                "data": t["data"],
            })
        })
        .collect();
    for i in 0..3 {
        let body = serde_json::json!({"id": format!("t-{i}"), "inputs": inputs}).to_string();
        let (code, answer) = post_json(http, "/v2/models/all-types/infer", &body).unwrap();
        assert_eq!(code, 200, "{answer}");
    }
    let out = work.path().join("export-all-types");
    let manifest = export(&controller, "all-types", &out, |m| m["pairs"] == 3);
    assert_eq!(
        manifest["files"][0]["redacted"],
        serde_json::json!(["in_string"]),
        "{manifest}"
    );
    let arrays = &numpy_arrays(&out)["all-types-1.0.0.npz"];
    assert!(
        arrays.get("input/in_string").is_none(),
        "the redacted input is absent"
    );
    for (name, t) in golden_inputs {
        if name == "in_string" {
            continue;
        }
        for (kind, array) in [
            ("input", name.clone()),
            ("output", name.replace("in_", "out_")),
        ] {
            let got = &arrays[format!("{kind}/{array}")];
            assert_eq!(got["shape"], serde_json::json!([3, 3]), "{array}");
            let want: Vec<serde_json::Value> = (0..3)
                .flat_map(|_| t["data"].as_array().unwrap().clone())
                .collect();
            assert_eq!(
                got["data"],
                serde_json::Value::Array(want),
                "{kind} {array}"
            );
        }
    }
    let strings = &arrays["output/out_string"];
    assert_eq!(
        hex_bytes(strings["data"][1].as_str().unwrap()),
        "ünïcode".as_bytes(),
        "{strings}"
    );

    // The node counted it, and holds nothing once the controller has it.
    let page = wait_for(
        "the node's captured pairs acknowledged",
        Duration::from_secs(30),
        || {
            let page = agent.metrics_page();
            page.contains("gantry_agent_capture_held_bytes{model=\"mlp\"} 0")
                .then_some(page)
        },
    );
    assert!(
        page.contains("gantry_agent_capture_pairs_total{model=\"mlp\"} 10"),
        "{page}"
    );
    assert!(
        page.contains("gantry_agent_capture_pairs_total{model=\"all-types\"} 3"),
        "{page}"
    );
    let status = agent.status_text();
    assert!(status.contains("capture (25.00 % of requests)"), "{status}");
    assert!(status.contains("in_string redacted"), "{status}");

    // An export of a version nobody ran says so, and fails.
    let none = controller.cli(&[
        "capture",
        "export",
        "mlp",
        "--version",
        "9.9.9",
        "--out",
        work.path().join("none").to_str().unwrap(),
    ]);
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("no captured pairs of mlp 9.9.9"), "{err}");
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
