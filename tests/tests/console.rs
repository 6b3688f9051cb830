//! The web console in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven through Selenium: `tests/console/browser.py`) against a real
//! controller with four real agents serving a model: sign-in by a link from
//! `gantry console login`, every page with live data, a rollout paused and resumed from
//! its page, the signed audit report downloaded and verified with
//! `gantry audit verify-report`; a replayed link, a forged cookie and a viewer's action
//! refused, each audited. Screenshots of every page are kept in
//! `target/tmp/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gantry_tests::bundles::{
    agent_config, infer, make_bundle, onnxruntime, push, python_clients, trusting_controller,
};
use gantry_tests::{Agent, Controller, free_tcp_port, wait_for};

/// Debian's Chromium and its `WebDriver`, as `scripts/tools.sh chromium` installs them.
fn browser() -> (PathBuf, PathBuf) {
    let path = |var: &str, default: &str| {
        let p = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        assert!(
            p.is_file(),
            "{} is missing: run the suite with scripts/test.sh, which installs Debian's chromium and chromium-driver (or set {var})",
            p.display()
        );
        p
    };
    (
        path("GANTRY_CHROMIUM", "/usr/bin/chromium"),
        path("GANTRY_CHROMEDRIVER", "/usr/bin/chromedriver"),
    )
}

fn login_link(controller: &Controller, identity: &Path) -> String {
    let out = controller.cli_ok(&[
        "console",
        "login",
        "--identity",
        identity.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["url"].as_str().unwrap().to_owned()
}

fn start_rollout(controller: &Controller, args: &[&str]) -> String {
    let mut all = vec!["rollout", "start"];
    all.extend_from_slice(args);
    all.push("--json");
    let r: serde_json::Value = serde_json::from_str(&controller.cli_ok(&all)).unwrap();
    r["id"].as_str().unwrap().to_owned()
}

fn rollout_state(controller: &Controller, id: &str) -> String {
    let r: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["rollout", "status", id, "--json"])).unwrap();
    r["state"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn the_console_in_a_real_browser_signs_in_shows_every_page_acts_and_refuses() {
    let (chromium, chromedriver) = browser();
    let python = python_clients();
    let work = tempfile::tempdir().unwrap();
    let (mut controller, key, policy) = trusting_controller(work.path());
    let console = free_tcp_port();
    controller.restart_with(&["--console-listen", &console.to_string()]);

    // Four nodes serving the model; gpu-03 will report an XID.
    let library = onnxruntime();
    let racks = ["r0", "r1", "r0", "r2"];
    let mut agents = Vec::new();
    let mut inference = Vec::new();
    for (i, rack) in racks.iter().enumerate() {
        let (config, addr) = agent_config(&library, &policy);
        let mut agent = Agent::enroll_labeled(
            &controller,
            &format!("gpu-{i:02}"),
            &config,
            &format!("gpu=h100,rack={rack}"),
        );
        agent.run("1s");
        agents.push(agent);
        inference.push(addr);
    }
    let nodes: Vec<String> = (0..racks.len()).map(|i| format!("gpu-{i:02}")).collect();
    wait_for("every node connected", Duration::from_secs(60), || {
        let seen = controller.nodes();
        nodes
            .iter()
            .all(|n| seen.iter().any(|s| &s.name == n && s.connected))
            .then_some(())
    });

    // v1 everywhere (a finished rollout for the KPIs), then v2 baking on rack r0.
    push(
        &controller,
        &make_bundle(&controller, work.path(), "1.0.0", &key),
    );
    push(
        &controller,
        &make_bundle(&controller, work.path(), "2.0.0", &key),
    );
    let done = start_rollout(
        &controller,
        &["tiny-linear@1.0.0", "--steps", "100%", "--bake", "0s"],
    );
    wait_for(
        "the first rollout succeeded",
        Duration::from_secs(120),
        || (rollout_state(&controller, &done) == "succeeded").then_some(()),
    );
    for addr in &inference {
        wait_for("the model answers", Duration::from_secs(30), || {
            infer(*addr)
        });
    }
    let baking = start_rollout(
        &controller,
        &[
            "tiny-linear@2.0.0",
            "--selector",
            "rack=r0",
            "--steps",
            "1,100%",
            "--bake",
            "30m",
        ],
    );
    let xid = 13;
    agents[3].control().inject_xid(0, xid).unwrap();
    wait_for(
        "gpu-03's XID reached the controller",
        Duration::from_secs(30),
        || {
            let n = controller.node("gpu-03");
            n.health
                .is_some_and(|h| h.reasons.iter().any(|r| r.check == "gpu.xid"))
                .then_some(())
        },
    );

    // An operator and a viewer besides the first admin.
    let operator = work.path().join("olivia.identity");
    let viewer = work.path().join("victor.identity");
    for (name, role, file) in [
        ("olivia", "operator", &operator),
        ("victor", "viewer", &viewer),
    ] {
        controller.cli_ok(&[
            "admin",
            "add",
            name,
            "--role",
            role,
            "--out",
            file.to_str().unwrap(),
        ]);
    }

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let plan = serde_json::json!({
        "base": format!("http://{console}"),
        "operator_link": login_link(&controller, &operator),
        "viewer_link": login_link(&controller, &viewer),
        "nodes": nodes,
        "rollout": baking,
        "done_rollout": done,
        "model": "tiny-linear",
        "versions": ["1.0.0", "2.0.0"],
        "xid_node": "gpu-03",
        "xid": xid,
    });
    let plan_path = work.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("console/browser.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&plan_path)
        .arg(&shots)
        .env("GANTRY_CHROMIUM", &chromium)
        .env("GANTRY_CHROMEDRIVER", &chromedriver)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}\nscreenshots: {}", shots.display());
    assert!(out.status.success(), "the browser run failed:\n{said}");

    // Every page left a real screenshot.
    for page in [
        "sign-in",
        "fleet",
        "fleet-search",
        "node",
        "rollouts",
        "rollout",
        "rollout-paused",
        "rollout-resumed",
        "models",
        "model",
        "kpis",
        "audit",
        "replayed-sign-in",
        "forged-cookie",
        "rollout-as-viewer",
        "viewer-refused",
    ] {
        let png = std::fs::read(shots.join(format!("{page}.png")))
            .unwrap_or_else(|e| panic!("no screenshot of {page}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{page}.png is not a page's screenshot ({} bytes)",
            png.len()
        );
    }

    // The rollout resumed, not left paused, and still holds rack r0.
    assert_ne!(rollout_state(&controller, &baking), "paused");

    // The downloaded report is the controller's, and any edit breaks it.
    let report = shots.join("report.signed.json");
    let verified = controller.cli_ok(&["audit", "verify-report", report.to_str().unwrap()]);
    assert!(
        verified.contains("signed by this fleet's controller") && verified.contains("intact"),
        "{verified}"
    );
    let edited = work.path().join("edited.json");
    let text = std::fs::read_to_string(&report).unwrap();
    std::fs::write(&edited, text.replacen("\"from_ms\": ", "\"from_ms\": 1", 1)).unwrap();
    let refused = controller.cli(&["audit", "verify-report", edited.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("altered"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Everything is in the audit log under the admins' names.
    controller.kill();
    let store = gantry_controller::audit_cmd::open_store(&controller.home()).unwrap();
    let mut entries = Vec::new();
    store.scan_audit(|e| entries.push(e)).unwrap();
    let has = |actor: &str, action: &str, detail: &str| {
        entries.iter().any(|e| {
            e.actor == actor && e.action == action && e.details.to_string().contains(detail)
        })
    };
    assert!(has("olivia", "console.sign_in", "operator"));
    assert!(has("victor", "console.sign_in", "viewer"));
    assert!(has("olivia", "console.sign_out", ""));
    assert!(
        entries
            .iter()
            .any(|e| e.actor == "olivia" && e.action == "rollout.paused" && e.subject == baking),
        "the pause is audited under olivia"
    );
    assert!(has("olivia", "console.refused", "already used"));
    assert!(has(
        "console",
        "console.refused",
        "not one this controller issued"
    ));
    assert!(has("victor", "console.refused", "needs the operator role"));
}
