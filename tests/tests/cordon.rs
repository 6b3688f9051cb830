//! Cordoning with a real controller and real agents: an operator cordons a node and new
//! rollouts pass it over (or are refused, naming it, when nothing else matches); a
//! critical XID cordons a node automatically, a lesser one does not; `--auto-cordon
//! none` turns that off; every cordon and uncordon is in the audit report.

use std::time::Duration;

use gantry_tests::bundles::{agent_config, make_bundle, onnxruntime, push, trusting_controller};
use gantry_tests::{Agent, Controller, wait_for};

fn fleet(controller: &Controller, policy: &std::path::Path, names: &[&str]) -> Vec<Agent> {
    let library = onnxruntime();
    names
        .iter()
        .map(|name| {
            // Heartbeats every 200 ms, so cordons follow within a second.
            let (config, _) = agent_config(&library, policy);
            let mut agent = Agent::enroll(controller, name, &config);
            agent.run("200ms");
            agent
        })
        .collect()
}

/// Waits until `n` agents are connected and have reported their GPUs (so NVML runs, and
/// XIDs injected from now on are delivered, not taken as from before boot).
fn wait_connected(controller: &Controller, n: usize) {
    wait_for("the agents to connect", Duration::from_secs(60), || {
        let ready = controller
            .nodes()
            .iter()
            .filter(|node| node.connected && node.gpus > 0)
            .count();
        (ready == n).then_some(())
    });
}

fn cordon_of(controller: &Controller, node: &str) -> Option<serde_json::Value> {
    let nodes: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["fleet", "ls", "--json"])).unwrap();
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .and_then(|n| n.get("cordon").cloned())
        .filter(|c| !c.is_null())
}

#[test]
fn cordoned_nodes_take_no_new_rollouts_and_critical_xids_cordon_automatically() {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let agents = fleet(&controller, &policy, &["c1", "c2", "c3"]);
    wait_connected(&controller, 3);

    // An operator cordons c2 for maintenance.
    let out = controller.cli_ok(&["fleet", "cordon", "c2", "--reason", "fan replacement"]);
    assert!(
        out.contains("takes no new rollouts (fan replacement)"),
        "{out}"
    );
    let ls = controller.cli_ok(&["fleet", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("c2 ") && l.contains("connected,cordoned")),
        "{ls}"
    );
    let show = controller.cli_ok(&["fleet", "show", "c2"]);
    assert!(
        show.contains("fan replacement") && show.contains("fleet uncordon c2"),
        "{show}"
    );

    // A new rollout passes c2 over.
    push(
        &controller,
        &make_bundle(&controller, work.path(), "1.0.0", &key),
    );
    let r: serde_json::Value = serde_json::from_str(&controller.cli_ok(&[
        "rollout",
        "start",
        "tiny-linear@1.0.0",
        "--steps",
        "100%",
        "--bake",
        "1s",
        "--json",
    ]))
    .unwrap();
    let plan: Vec<&str> = r["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(plan, ["c1", "c3"]);
    let id = r["id"].as_str().unwrap().to_owned();
    wait_for("the rollout to succeed", Duration::from_secs(60), || {
        let r: serde_json::Value =
            serde_json::from_str(&controller.cli_ok(&["rollout", "status", &id, "--json"])).ok()?;
        (r["state"] == "succeeded").then_some(())
    });
    assert_eq!(
        controller.node("c2").bundles.active,
        None,
        "c2 was left alone"
    );

    // Nothing but cordoned nodes matches: refused, naming them and the way out.
    controller.cli_ok(&["fleet", "cordon", "c1"]);
    controller.cli_ok(&["fleet", "cordon", "c3"]);
    let refused = controller.cli(&["rollout", "start", "tiny-linear@1.0.0", "--steps", "100%"]);
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        text.contains("3 cordoned node(s) match")
            && text.contains("c2")
            && text.contains("gantry fleet uncordon"),
        "{text}"
    );
    for node in ["c1", "c2", "c3"] {
        controller.cli_ok(&["fleet", "uncordon", node]);
        assert_eq!(cordon_of(&controller, node), None);
    }
    // Uncordoning an uncordoned node changes nothing.
    controller.cli_ok(&["fleet", "uncordon", "c1"]);
    let unknown = controller.cli(&["fleet", "cordon", "nope"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no node named \"nope\""));

    // A non-critical XID (13, an application's fault) does not cordon; a critical one does.
    // The controller stores a heartbeat's cordon before it shows that heartbeat's health,
    // so once the health is visible the decision is on record.
    agents[0].control().inject_xid(0, 13).unwrap();
    wait_for("XID 13 in the heartbeat", Duration::from_secs(20), || {
        let health = controller.node("c1").health?;
        health
            .reasons
            .iter()
            .any(|r| r.message.contains("XID 13"))
            .then_some(())
    });
    assert_eq!(
        cordon_of(&controller, "c1"),
        None,
        "XID 13 is the application's"
    );
    agents[2].control().inject_xid(1, 48).unwrap();
    let cordon = wait_for("c3 cordoned automatically", Duration::from_secs(20), || {
        cordon_of(&controller, "c3")
    });
    assert_eq!(cordon["by"], "controller");
    assert_eq!(cordon["automatic"], true);
    let reason = cordon["reason"].as_str().unwrap();
    assert!(
        reason.contains("XID 48 (Double Bit ECC Error)") && reason.contains("reset it"),
        "{reason}"
    );

    // The audit report has every cordon, who set it and who lifted it.
    let report: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--since", "1h", "--json"]))
            .unwrap();
    let c2 = report["nodes"]["c2"]["cordons"].as_array().unwrap();
    assert_eq!(c2.len(), 1);
    assert_eq!(c2[0]["reason"], "fan replacement");
    assert_eq!(c2[0]["automatic"], false);
    assert!(c2[0]["lifted_at_ms"].as_u64().is_some());
    let c3 = report["nodes"]["c3"]["cordons"].as_array().unwrap();
    assert_eq!(c3.len(), 2, "by hand, then automatically: {c3:?}");
    assert_eq!(c3[1]["by"], "controller");
    assert!(c3[1]["lifted_at_ms"].is_null(), "still cordoned");
    let markdown = controller.cli_ok(&["audit", "report", "--since", "1h"]);
    assert!(
        markdown.contains("(automatic)") && markdown.contains("still cordoned"),
        "{markdown}"
    );
    assert!(
        controller
            .cli_ok(&["audit", "verify"])
            .contains("audit chain intact")
    );
}

#[test]
fn auto_cordon_none_leaves_nodes_to_the_operator_and_bad_rules_are_refused() {
    let mut controller = Controller::start();
    controller.restart_with(&["--auto-cordon", "none"]);
    let mut agent = Agent::enroll(&controller, "solo", "[uplink]\nheartbeat = \"200ms\"\n");
    agent.run("200ms");
    wait_connected(&controller, 1);
    agent.control().fall_off_bus(0).unwrap();
    wait_for("the node unhealthy", Duration::from_secs(20), || {
        let health = controller.node("solo").health?;
        health
            .reasons
            .iter()
            .any(|r| r.check == "gpu.xid")
            .then_some(())
    });
    // The heartbeat's cordon, had there been one, is stored before its health shows.
    assert_eq!(cordon_of(&controller, "solo"), None);

    let stderr = controller.serve_refused(&["--auto-cordon", "gpu.xid,Bad Name"]);
    assert!(
        stderr.contains("\"Bad Name\" is not a health check name"),
        "{stderr}"
    );
}
