//! The Grafana dashboards and Prometheus alerting rules the `gantry` package installs
//! under /usr/share/gantry/ (from packaging/monitoring/), held to what the endpoints
//! really serve: `promtool check rules` and `promtool test rules` pass, every alert has
//! a unit test that fires and one that stays quiet, over series shaped like the real
//! endpoints'; and against a real fleet — a controller, an agent serving a drift-profiled
//! model and another, a rollout that fails its gate, an XID — scraped by a real
//! Prometheus with the rules loaded, every dashboard query names only metrics its
//! endpoint serves and shows data, every rule reads only served metrics and evaluates,
//! and the XID and the failed rollout fire their alerts (and nothing else fires).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gantry_tests::bundles::{
    agent_config, infer, make_bundle, make_wrong_golden_bundle, monitored_bundle, onnxruntime,
    post_json, push, reference_data, trusting_controller,
};
use gantry_tests::prometheus::{Prometheus, metric_names};
use gantry_tests::{Agent, Controller, wait_for};

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/monitoring")
}

fn rules() -> PathBuf {
    monitoring().join("prometheus/gantry-alerts.yml")
}

fn rule_tests() -> PathBuf {
    monitoring().join("prometheus/gantry-alerts.test.yml")
}

/// (dashboard file, the endpoint its queries read).
const DASHBOARDS: [(&str, Endpoint); 2] = [
    ("gantry-fleet-gpus.json", Endpoint::Agent),
    ("gantry-serving-rollouts.json", Endpoint::Controller),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Agent,
    Controller,
}

fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed for this test and could not be run ({e}); `scripts/test.sh` \
                 unpacks Debian's `prometheus` package into .cache/tools and puts it on PATH"
            )
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The alert names a rule file defines.
fn alerts_defined(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|a| a.trim().to_owned())
        .collect()
}

/// From the unit-test file: (alerts a test expects to fire, alerts a test expects quiet).
fn alerts_tested(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut fires, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            name.trim().clone_into(&mut current);
        } else if line == "exp_alerts: []" {
            quiet.insert(current.clone());
        } else if line == "exp_alerts:" {
            fires.insert(current.clone());
        }
    }
    (fires, quiet)
}

/// The `xid=~"…"` list of critical codes in `text`, as numbers.
fn critical_list(text: &str) -> BTreeSet<u64> {
    let start = text
        .find(r#"xid=~\""#)
        .map_or_else(|| text.find(r#"xid=~""#).map(|i| i + 6), |i| Some(i + 7));
    let start = start.expect("a xid=~ selector");
    let list: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '|')
        .collect();
    list.split('|').map(|c| c.parse().unwrap()).collect()
}

#[test]
fn the_alert_rules_pass_promtool_and_every_alert_is_unit_tested_firing_and_quiet() {
    let dir = rules().parent().unwrap().to_owned();
    let (ok, out) = promtool(&["check", "rules", "gantry-alerts.yml"], &dir);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "gantry-alerts.test.yml"], &dir);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    let defined = alerts_defined(&std::fs::read_to_string(rules()).unwrap());
    assert!(defined.len() >= 14, "{defined:?}");
    let (fires, quiet) = alerts_tested(&std::fs::read_to_string(rule_tests()).unwrap());
    for alert in &defined {
        assert!(fires.contains(alert), "no unit test where {alert} fires");
        assert!(
            quiet.contains(alert),
            "no unit test where {alert} stays quiet"
        );
    }
    let unknown: Vec<_> = fires
        .union(&quiet)
        .filter(|a| !defined.contains(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts not defined: {unknown:?}"
    );

    // The critical XIDs the rules and the fleet dashboard count are the health check's.
    let critical: BTreeSet<u64> = gantry_shared::xid::critical_codes().collect();
    assert_eq!(
        critical_list(&std::fs::read_to_string(rules()).unwrap()),
        critical
    );
    let fleet =
        std::fs::read_to_string(monitoring().join("grafana/gantry-fleet-gpus.json")).unwrap();
    assert_eq!(critical_list(&fleet), critical);
}

#[test]
fn the_dashboards_are_what_their_generator_writes() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/grafana-dashboards.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Families served on a `/metrics` page: name → the label-name sets of its samples.
fn served(page: &str) -> BTreeMap<String, BTreeSet<BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeSet<BTreeSet<String>>> = BTreeMap::new();
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..end];
        let labels = if line[end..].starts_with('{') {
            label_names(&line[end..])
        } else {
            BTreeSet::new()
        };
        out.entry(name.to_owned()).or_default().insert(labels);
    }
    out
}

/// The label names of a `{a="x",b="y"}` block.
fn label_names(block: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = block.trim_start_matches('{').chars();
    let mut name = String::new();
    while let Some(c) = chars.next() {
        match c {
            '=' => {
                names.insert(std::mem::take(&mut name).trim().to_owned());
                // Skip the quoted value.
                let _ = chars.next();
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == '"' {
                        break;
                    }
                }
            }
            ',' | ' ' => {}
            '}' => break,
            _ => name.push(c),
        }
    }
    names
}

/// `label_values(SELECTOR, label)` of a Grafana variable: the selector, as a query.
fn variable_selector(query: &str) -> Option<&str> {
    let inner = query.strip_prefix("label_values(")?.strip_suffix(')')?;
    Some(inner.rsplit_once(',')?.0.trim())
}

/// A dashboard query with its variables set as Grafana's "All" would.
fn instantiate(expr: &str) -> String {
    let mut out = expr.replace("$__rate_interval", "30s");
    for v in ["$job", "$instance", "$gpu", "$node", "$model"] {
        out = out.replace(v, ".*");
    }
    out
}

/// Every query of a dashboard: (where, expression).
fn dashboard_queries(board: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        format!("panel {:?} {}", p["title"], t["refId"]),
                        expr.to_owned(),
                    ));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&board["panels"], &mut out);
    for v in board["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().unwrap_or_default();
            let selector = variable_selector(q)
                .unwrap_or_else(|| panic!("variable {} is not label_values(…): {q}", v["name"]));
            out.push((format!("variable ${}", v["name"]), selector.to_owned()));
        }
    }
    out
}

/// Sends `mlp` requests (50 rows of N(0, 1)-ish inputs) and `tiny-linear` ones until
/// stopped, so the serving and drift figures have data.
fn traffic(http: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut state = 11u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            #[allow(clippy::cast_precision_loss)] // a test's pseudo-random inputs
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            (u - 0.5) * 3.4
        };
        while !stop.load(Ordering::Relaxed) {
            let data: Vec<f64> = (0..50 * 8).map(|_| next()).collect();
            let body = serde_json::json!({
                "inputs": [{"name": "x", "shape": [50, 8], "datatype": "FP32", "data": data}]
            })
            .to_string();
            let _ = post_json(http, "/v2/models/mlp/infer", &body);
            let _ = infer(http);
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn start_rollout(controller: &Controller, args: &[&str]) -> String {
    let mut all = vec!["rollout", "start"];
    all.extend_from_slice(args);
    all.push("--json");
    let r: serde_json::Value = serde_json::from_str(&controller.cli_ok(&all)).unwrap();
    r["id"].as_str().unwrap().to_owned()
}

fn wait_rollout(controller: &Controller, id: &str, state: &str) {
    wait_for(
        &format!("rollout {id} {state}"),
        Duration::from_secs(120),
        || {
            let r: serde_json::Value =
                serde_json::from_str(&controller.cli_ok(&["rollout", "status", id, "--json"]))
                    .unwrap();
            (r["state"] == state).then_some(())
        },
    );
}

#[test]
fn on_a_real_fleet_the_dashboards_and_alerts_read_only_served_metrics_show_data_and_fire() {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let reference = reference_data(work.path());
    for bundle in [
        monitored_bundle(&controller, work.path(), &key, &reference, "1.0.0"),
        make_bundle(&controller, work.path(), "1.0.0", &key),
        make_wrong_golden_bundle(&controller, work.path(), "2.0.0", &key),
    ] {
        push(&controller, &bundle);
    }
    let (config, http) = agent_config(&onnxruntime(), &policy);
    let config = format!("{config}[monitoring]\nwindow = \"2s\"\n");
    let mut agent = Agent::enroll(&controller, "gpu-node-07", &config);
    agent.run("1s");

    // Both models everywhere, then traffic; a tiny-linear release whose golden vectors
    // the model does not reproduce fails its gate and rolls back.
    for model in ["mlp@1.0.0", "tiny-linear@1.0.0"] {
        let id = start_rollout(&controller, &[model, "--steps", "100%", "--bake", "0s"]);
        wait_rollout(&controller, &id, "succeeded");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(http, Arc::clone(&stop));

    // Prometheus scrapes both before anything goes wrong (a counter's first increase
    // is seen only from a sample before it).
    let prometheus = Prometheus::start(
        &[
            ("gantry-agent", vec![agent.metrics]),
            ("gantry-controller", vec![controller.metrics]),
        ],
        &[&rules()],
    );
    wait_for("both endpoints scraped", Duration::from_secs(30), || {
        let up = prometheus.query("up == 1").ok()?;
        (up.len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let failing = start_rollout(
        &controller,
        &["tiny-linear@2.0.0", "--steps", "100%", "--bake", "0s"],
    );
    wait_rollout(&controller, &failing, "rolled-back");
    agent.control().inject_xid(0, 79).unwrap();

    // Wait until both endpoints serve what only a live fleet has: a drift window, the
    // XID's health finding, the failed rollout.
    let (agent_page, controller_page) = wait_for(
        "drift, the XID and the failed rollout on both endpoints",
        Duration::from_secs(90),
        || {
            let a = agent.metrics_page();
            let c = controller.metrics_page();
            (a.contains("gantry_agent_model_drift_window_end_timestamp_seconds{")
                && a.contains("gantry_agent_health_reasons{")
                && a.contains("gantry_agent_inference_latency_p99_seconds{")
                && c.contains("gantry_node_model_drift_worst{")
                && c.contains("gantry_node_model_latency_p99_seconds{")
                && c.contains("gantry_rollout_failed_timestamp_seconds{"))
            .then_some((a, c))
        },
    );
    let agent_served = served(&agent_page);
    let controller_served = served(&controller_page);

    // Every dashboard query names only metrics its endpoint serves.
    let mut boards = Vec::new();
    for (file, endpoint) in DASHBOARDS {
        let board: serde_json::Value = serde_json::from_slice(
            &std::fs::read(monitoring().join("grafana").join(file)).unwrap(),
        )
        .unwrap();
        let serving = match endpoint {
            Endpoint::Agent => &agent_served,
            Endpoint::Controller => &controller_served,
        };
        let queries = dashboard_queries(&board);
        assert!(queries.len() >= 20, "{file}: {} queries", queries.len());
        for (place, expr) in &queries {
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{file} {place} reads no metric: {expr}");
            for name in names {
                assert!(
                    serving.contains_key(&name),
                    "{file} {place} reads {name}, which the {endpoint:?}'s /metrics does not serve: {expr}"
                );
            }
        }
        boards.push((file, queries));
    }

    // Every query evaluates in Prometheus and shows data, once a few scrapes are in.
    wait_for(
        "every dashboard query to show data",
        Duration::from_secs(60),
        || {
            let mut missing = Vec::new();
            for (file, queries) in &boards {
                for (place, expr) in queries {
                    match prometheus.query(&instantiate(expr)) {
                        Ok(result) if !result.is_empty() => {}
                        Ok(_) => missing.push(format!("{file} {place}: no data for {expr}")),
                        Err(e) => panic!("{file} {place}: Prometheus refuses {expr}: {e}"),
                    }
                }
            }
            if missing.is_empty() {
                Some(())
            } else {
                eprintln!("still without data:\n  {}", missing.join("\n  "));
                None
            }
        },
    );

    // Every rule loaded, reads only served metrics (or Prometheus' own `up`) and
    // evaluates without error.
    let groups = wait_for("the rules evaluated", Duration::from_secs(30), || {
        let data = prometheus.api("/api/v1/rules").ok()?;
        let groups = data["groups"].as_array()?.clone();
        let rules: Vec<&serde_json::Value> = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        (!rules.is_empty() && rules.iter().all(|r| r["health"] == "ok")).then_some(groups)
    });
    let mut rule_names = BTreeSet::new();
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
    {
        let name = rule["name"].as_str().unwrap().to_owned();
        let query = rule["query"].as_str().unwrap();
        for metric in metric_names(query) {
            assert!(
                metric == "up"
                    || agent_served.contains_key(&metric)
                    || controller_served.contains_key(&metric),
                "alert {name} reads {metric}, which no endpoint serves: {query}"
            );
        }
        rule_names.insert(name);
    }
    assert_eq!(
        rule_names,
        alerts_defined(&std::fs::read_to_string(rules()).unwrap())
    );

    // The XID and the failed rollout fire; nothing else does on this fleet.
    let firing = wait_for(
        "the XID and rollout alerts firing",
        Duration::from_secs(60),
        || {
            let alerts = prometheus.query(r#"ALERTS{alertstate="firing"}"#).ok()?;
            let names: BTreeSet<String> = alerts
                .iter()
                .filter_map(|(m, _)| m["alertname"].as_str().map(str::to_owned))
                .collect();
            let done =
                names.contains("GantryGPUCriticalXID") && names.contains("GantryRolloutFailed");
            if !done {
                eprintln!("firing so far: {names:?}");
            }
            done.then_some(alerts)
        },
    );
    let names: BTreeSet<&str> = firing
        .iter()
        .filter_map(|(m, _)| m["alertname"].as_str())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["GantryGPUCriticalXID", "GantryRolloutFailed"]),
        "{firing:?}"
    );
    let xid = firing
        .iter()
        .find(|(m, _)| m["alertname"] == "GantryGPUCriticalXID")
        .unwrap();
    assert_eq!(xid.0["xid"], "79");
    assert_eq!(xid.0["gpu"], "0");
    let rollout = firing
        .iter()
        .find(|(m, _)| m["alertname"] == "GantryRolloutFailed")
        .unwrap();
    assert_eq!(rollout.0["rollout"], failing.as_str());

    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();

    // The unit tests' input series have the names and label names of the real series
    // (plus the job and instance Prometheus adds).
    let text = std::fs::read_to_string(rule_tests()).unwrap();
    let mut checked = 0;
    for line in text.lines().map(str::trim) {
        let Some(quoted) = line.strip_prefix("- series: ") else {
            continue;
        };
        let series: String = serde_json::from_str(quoted).unwrap();
        let end = series.find('{').unwrap_or(series.len());
        let name = &series[..end];
        let mut labels = label_names(&series[end..]);
        assert!(
            labels.remove("job") && labels.remove("instance"),
            "{series}: a scraped series has job and instance"
        );
        if name == "up" {
            assert!(labels.is_empty(), "{series}");
            continue;
        }
        let real = agent_served
            .get(name)
            .or_else(|| controller_served.get(name))
            .unwrap_or_else(|| panic!("{series}: no endpoint serves {name}"));
        assert!(
            real.contains(&labels),
            "{series}: its labels {labels:?} are not those of any real {name} series: {real:?}"
        );
        checked += 1;
    }
    assert!(checked >= 25, "{checked} series checked");
}
