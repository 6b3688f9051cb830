//! Production model quality as an ML engineer meets it: a classifier bundled with
//! `--task classification` serves on two nodes; clients send requests with an `id` and
//! later the true labels to `POST /v2/models/mlp/feedback`; the precision, recall, F1,
//! accuracy and ROC AUC the nodes and the controller compute are exactly scikit-learn's
//! on the same predictions and labels; duplicate and unknown ids are counted; a canary
//! whose production recall misses `--min-quality` rolls back naming the metric, and one
//! whose accuracy falls behind the nodes still on the previous version's over the same
//! windows (`--max-quality-drop`) rolls back too; the audit report flags both.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use gantry_tests::bundles::{
    agent_config, models, onnxruntime, post_json, push, python_clients, sign, trusting_controller,
};
use gantry_tests::{Agent, Controller, http_status, wait_for};

const CLASSES: usize = 3;
/// [`CLASSES`] as a label.
const CLASS_COUNT: i64 = 3;
/// Rows (examples) per inference request.
const ROWS: usize = 20;
/// Requests each node answers before their labels come back.
const REQUESTS: usize = 30;

fn classifier_bundle(controller: &Controller, work: &Path, key: &Path, version: &str) -> PathBuf {
    let out = work.join(format!("mlp-{version}.gbundle"));
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
        "--task",
        "classification",
        "--out",
        out.to_str().unwrap(),
    ]);
    sign(controller, &out, key);
    out
}

/// A deterministic source of inputs and labels.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }

    fn class(&mut self) -> i64 {
        ((self.next() * CLASSES as f64) as i64).min(CLASS_COUNT - 1)
    }
}

/// One answered row: the model's scores and the label the client later sends.
#[derive(Clone)]
struct Row {
    scores: Vec<f64>,
    label: i64,
}

fn argmax(scores: &[f64]) -> i64 {
    let mut best = 0;
    for (i, s) in (0..).zip(scores) {
        if *s > scores[usize::try_from(best).unwrap()] {
            best = i;
        }
    }
    best
}

/// Sends request `id` of [`ROWS`] rows to `mlp` on `http`: the scores it answered.
fn infer(http: SocketAddr, id: &str, rng: &mut Rng) -> Vec<Vec<f64>> {
    let data: Vec<f64> = (0..ROWS * 8).map(|_| rng.normal()).collect();
    let body = serde_json::json!({
        "id": id,
        "inputs": [{"name": "x", "shape": [ROWS, 8], "datatype": "FP32", "data": data}]
    })
    .to_string();
    let (code, answer) = post_json(http, "/v2/models/mlp/infer", &body).expect("the agent answers");
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["id"], id, "{answer}");
    let output = &answer["outputs"][0];
    assert_eq!(
        output["shape"],
        serde_json::json!([ROWS, CLASSES]),
        "{answer}"
    );
    let values: Vec<f64> = output["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    values.chunks(CLASSES).map(<[f64]>::to_vec).collect()
}

/// Posts `(id, labels)` as one feedback call: the agent's answer.
fn feedback(http: SocketAddr, items: &[(String, Vec<i64>)]) -> serde_json::Value {
    let body = serde_json::json!({
        "feedback": items
            .iter()
            .map(|(id, labels)| serde_json::json!({"id": id, "label": labels}))
            .collect::<Vec<_>>()
    })
    .to_string();
    let (code, answer) =
        post_json(http, "/v2/models/mlp/feedback", &body).expect("the agent answers");
    assert_eq!(code, 200, "{answer}");
    answer
}

/// [`REQUESTS`] requests to `http`, labelled like a decent model's world: the predicted
/// class 70 % of the time, else any class. Feedback goes back in calls of ten ids.
fn serve_and_label(http: SocketAddr, node: &str, rng: &mut Rng) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for i in 0..REQUESTS {
        let id = format!("{node}-{i}");
        let mut labels = Vec::new();
        for scores in infer(http, &id, rng) {
            let label = if rng.next() < 0.7 {
                argmax(&scores)
            } else {
                rng.class()
            };
            labels.push(label);
            rows.push(Row { scores, label });
        }
        items.push((id, labels));
    }
    for chunk in items.chunks(10) {
        let answer = feedback(http, chunk);
        assert_eq!(answer["joined"], chunk.len(), "{answer}");
        assert!(
            answer["results"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["outcome"] == "joined" && r["version"] == "1.0.0"),
            "{answer}"
        );
    }
    // The same labels again are duplicates, an id never answered is unknown: counted,
    // not joined twice.
    let again = feedback(http, &items[..10]);
    assert_eq!(
        (again["joined"].as_u64(), again["duplicate"].as_u64()),
        (Some(0), Some(10)),
        "{again}"
    );
    let unknown = feedback(http, &[("never-asked".to_owned(), vec![0])]);
    assert_eq!(unknown["unknown"], 1, "{unknown}");
    rows
}

/// scikit-learn's figures on `rows`.
fn sklearn(work: &Path, rows: &[Row]) -> serde_json::Value {
    let file = work.join(format!("rows-{}.json", rows.len()));
    let json = serde_json::json!({
        "scores": rows.iter().map(|r| r.scores.clone()).collect::<Vec<_>>(),
        "labels": rows.iter().map(|r| r.label).collect::<Vec<_>>(),
    });
    std::fs::write(&file, json.to_string()).unwrap();
    let run = Command::new(python_clients())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/quality_reference.py"))
        .arg("--rows")
        .arg(&file)
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

const METRICS: [&str; 5] = ["accuracy", "precision", "recall", "f1", "roc_auc"];

/// Every metric of `got` equals scikit-learn's `want` (to float rounding).
fn assert_same(got: &serde_json::Value, want: &serde_json::Value, whose: &str) {
    for metric in METRICS {
        let (g, w) = (got[metric].as_f64(), want[metric].as_f64().unwrap());
        assert!(
            g.is_some_and(|g| (g - w).abs() < 1e-9),
            "{whose}: {metric} {g:?}, scikit-learn {w}\ngot {got}\nscikit-learn {want}"
        );
    }
}

/// `name{…}` on `page` whose labels include every `want`.
fn sample(page: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| {
            want.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

fn rollout(controller: &Controller, id: &str) -> serde_json::Value {
    serde_json::from_str(&controller.cli_ok(&["rollout", "status", id, "--json"])).unwrap()
}

fn quality(controller: &Controller, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["model", "quality", "mlp", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&controller.cli_ok(&all)).unwrap()
}

#[test]
fn feedback_labels_give_scikit_learns_figures_on_each_node_and_fleet_wide_and_a_quality_gate_rolls_back()
 {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let v1 = classifier_bundle(&controller, work.path(), &key, "1.0.0");
    let v2 = classifier_bundle(&controller, work.path(), &key, "1.1.0");
    let inspect = controller.cli_ok(&["bundle", "inspect", v1.to_str().unwrap()]);
    assert!(inspect.contains("classification"), "{inspect}");

    let mut agents = Vec::new();
    let mut endpoints = Vec::new();
    for name in ["gpu-a", "gpu-b"] {
        let (config, http) = agent_config(&onnxruntime(), &policy);
        let config = format!("{config}[monitoring]\nwindow = \"2s\"\n");
        let mut agent = Agent::enroll(&controller, name, &config);
        agent.run("1s");
        agents.push(agent);
        endpoints.push(http);
    }
    push(&controller, &v1);
    let id2 = push(&controller, &v2)["id"].as_str().unwrap().to_owned();
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
        endpoints
            .iter()
            .all(|h| http_status(*h, "/v2/models/mlp/ready") == Some(200))
            .then_some(())
    });

    // Requests, then their labels, on each node.
    let mut rng = Rng(20_261_203);
    let per_node: Vec<Vec<Row>> = ["gpu-a", "gpu-b"]
        .iter()
        .zip(&endpoints)
        .map(|(node, http)| serve_and_label(*http, node, &mut rng))
        .collect();
    let all: Vec<Row> = per_node.iter().flatten().cloned().collect();
    let classes: BTreeSet<i64> = all.iter().map(|r| r.label).collect();
    assert_eq!(classes.len(), CLASSES, "every class among the labels");

    // Each node: its cumulative figures on /metrics are scikit-learn's on its rows.
    for ((agent, rows), node) in agents.iter().zip(&per_node).zip(["gpu-a", "gpu-b"]) {
        let want = sklearn(work.path(), rows);
        let page = wait_for(
            "every joined row in the node's figures",
            Duration::from_secs(30),
            || {
                let page = agent.metrics_page();
                (sample(
                    &page,
                    "gantry_agent_model_quality_rows",
                    &[("model", "mlp"), ("scope", "cumulative")],
                ) == Some(rows.len() as f64))
                .then_some(page)
            },
        );
        let mut got = serde_json::Map::new();
        for metric in METRICS {
            let value = sample(
                &page,
                "gantry_agent_model_quality",
                &[
                    ("model", "mlp"),
                    ("version", "1.0.0"),
                    ("metric", metric),
                    ("scope", "cumulative"),
                ],
            );
            got.insert(metric.to_owned(), serde_json::json!(value));
        }
        assert_same(&serde_json::Value::Object(got), &want, node);
        for truth in 0..CLASSES {
            for predicted in 0..CLASSES {
                let (t, p) = (truth.to_string(), predicted.to_string());
                let cell = sample(
                    &page,
                    "gantry_agent_model_confusion_rows",
                    &[("model", "mlp"), ("truth", &t), ("predicted", &p)],
                );
                let want = want["confusion"][truth][predicted].as_u64().unwrap();
                // Counts: exact in an f64.
                let got = cell.map_or(0, |v| v as u64);
                assert_eq!(got, want, "{node}: confusion[{t}][{p}]");
            }
        }
        for (outcome, n) in [
            ("joined", REQUESTS as f64),
            ("duplicate", 10.0),
            ("unknown", 1.0),
        ] {
            assert_eq!(
                sample(
                    &page,
                    "gantry_agent_model_feedback_total",
                    &[("model", "mlp"), ("outcome", outcome)]
                ),
                Some(n),
                "{node} {outcome}"
            );
        }
    }

    // The controller: the windows of both nodes, merged, are scikit-learn's on all rows.
    let want = sklearn(work.path(), &all);
    let report = wait_for(
        "both nodes' feedback windows at the controller",
        Duration::from_secs(60),
        || {
            let report = quality(&controller, &["--version", "1.0.0"]);
            let v = report["versions"].as_array()?.first()?.clone();
            (v["metrics"]["rows"].as_u64() == Some(all.len() as u64)).then_some(report)
        },
    );
    let v = &report["versions"][0];
    assert_eq!(v["nodes"], 2, "{report}");
    assert_same(&v["metrics"], &want, "the controller, fleet-wide");
    let mut matrix = vec![vec![0u64; CLASSES]; CLASSES];
    for cell in v["confusion"].as_array().unwrap() {
        let (t, p) = (
            cell["truth"].as_u64().unwrap(),
            cell["predicted"].as_u64().unwrap(),
        );
        matrix[usize::try_from(t).unwrap()][usize::try_from(p).unwrap()] =
            cell["rows"].as_u64().unwrap();
    }
    assert_eq!(
        serde_json::json!(matrix),
        want["confusion"],
        "the fleet-wide confusion matrix is scikit-learn's"
    );
    assert_eq!(report["feedback"]["joined"], 2 * REQUESTS, "{report}");
    assert_eq!(report["feedback"]["duplicate"], 20, "{report}");
    assert_eq!(report["feedback"]["unknown"], 2, "{report}");
    let nodes: BTreeSet<&str> = report["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, BTreeSet::from(["gpu-a", "gpu-b"]), "{report}");
    let text = controller.cli_ok(&["model", "quality", "mlp"]);
    assert!(
        text.contains("per version")
            && text.contains("per node")
            && text.contains("recall")
            && text.contains("confusion matrix of 1.0.0 (rows: true label, columns: predicted)"),
        "{text}"
    );

    // The federation endpoint and the KPIs carry it.
    wait_for(
        "quality on the federation endpoint",
        Duration::from_secs(20),
        || {
            sample(
                &controller.metrics_page(),
                "gantry_node_model_quality",
                &[
                    ("node", "gpu-a"),
                    ("model", "mlp"),
                    ("metric", "recall"),
                    ("scope", "cumulative"),
                ],
            )
        },
    );
    let kpis: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["report", "kpis", "--json"])).unwrap();
    let kpi = &kpis["model_quality"]["mlp"][0];
    assert_eq!(kpi["version"], "1.0.0", "{kpis}");
    assert_same(&kpi["metrics"], &want, "gantry report kpis");
    let text = controller.cli_ok(&["report", "kpis"]);
    assert!(text.contains("model performance in production"), "{text}");

    // A canary of v1.1.0 gated on recall; its clients' labels say it is always wrong.
    let r2 = start(&[
        "mlp@1.1.0",
        "--steps",
        "1,100%",
        "--bake",
        "60s",
        "--min-quality",
        "recall=0.5",
        "--min-quality",
        "auc=0.1",
        "--min-quality-rows",
        "40",
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
    let http = endpoints[["gpu-a", "gpu-b"]
        .iter()
        .position(|n| *n == canary)
        .unwrap()];
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut i = 0;
    let failed = loop {
        let r = rollout(&controller, &r2);
        if r["state"] == "rolled-back" {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the quality gate did not roll back: {r}"
        );
        let id = format!("canary-{i}");
        i += 1;
        let wrong: Vec<i64> = infer(http, &id, &mut rng)
            .iter()
            .map(|s| (argmax(s) + 1) % CLASS_COUNT)
            .collect();
        let answer = feedback(http, &[(id, wrong)]);
        assert!(
            answer["joined"] == 1 || answer["late"] == 1 || answer["unknown"] == 1,
            "{answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let failure = failed["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains(&format!("{canary}: production quality below the gate"))
            && failure.contains("recall 0.0000 (gate ≥ 0.5)"),
        "{failed}"
    );
    assert!(!failure.contains("roc_auc"), "AUC meets its gate: {failed}");
    assert_eq!(failed["failed_gates"], serde_json::json!(["quality"]));
    assert_eq!(failed["touched"].as_array().unwrap().len(), 1, "{failed}");
    let text = controller.cli_ok(&["rollout", "status", &r2]);
    assert!(
        text.contains("recall ≥ 0.5") && text.contains("quality   worst"),
        "{text}"
    );

    // The audit report flags the quality gate's failure; the chain is intact.
    let report: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
    let flags: Vec<&serde_json::Value> = report["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "quality-gate-failed")
        .collect();
    assert_eq!(flags.len(), 1, "{report}");
    assert_eq!(flags[0]["subject"], r2.as_str());
    assert!(
        flags[0]["message"].as_str().unwrap().contains("recall"),
        "{flags:?}"
    );

    // The same canary again, now compared with the node still on v1.0.0 over the same
    // windows: its clients' labels say it is always wrong, the baseline's always right.
    let r3 = start(&[
        "mlp@1.1.0",
        "--steps",
        "1,100%",
        "--bake",
        "60s",
        "--max-quality-drop",
        "accuracy=0.2",
        "--min-compare-rows",
        "40",
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
    let (canary_http, baseline_http) = (endpoints[at], endpoints[1 - at]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let failed = loop {
        let r = rollout(&controller, &r3);
        if r["state"] == "rolled-back" {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the canary comparison did not roll back: {r}"
        );
        let id = format!("canary-{i}");
        let wrong: Vec<i64> = infer(canary_http, &id, &mut rng)
            .iter()
            .map(|s| (argmax(s) + 1) % CLASS_COUNT)
            .collect();
        feedback(canary_http, &[(id, wrong)]);
        let id = format!("baseline-{i}");
        i += 1;
        let right: Vec<i64> = infer(baseline_http, &id, &mut rng)
            .iter()
            .map(|s| argmax(s))
            .collect();
        feedback(baseline_http, &[(id, right)]);
        std::thread::sleep(Duration::from_millis(100));
    };
    let failure = failed["failure"].as_str().unwrap_or_default();
    assert!(
        failure.contains("the canary against the nodes still on the previous version")
            && failure.contains("its accuracy 0.0000 against the previous version's 1.0000"),
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
    assert!(
        c["baseline_quality"]["rows"].as_u64() >= Some(40),
        "{failed}"
    );
    let text = controller.cli_ok(&["rollout", "status", &r3]);
    assert!(
        text.contains("accuracy at most 0.2 lower than the previous version")
            && text.contains("compared  1 canary against 1 baseline node(s)"),
        "{text}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
    assert!(
        report["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "canary-comparison-failed" && f["subject"] == r3.as_str()),
        "{report}"
    );
    let verified = controller.cli_ok(&["audit", "verify"]);
    assert!(verified.starts_with("audit chain intact"), "{verified}");
}
