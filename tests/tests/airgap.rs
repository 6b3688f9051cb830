//! Bundles across an air gap: `gantry bundle export` writes a verified bundle file for
//! removable media; a node that never talks to a controller activates it with
//! `gantry-agent import`; an air-gapped controller loads it with `gantry bundle import`,
//! which the audit log records as an import. A file altered on the way is refused by both.

use std::process::Command;
use std::time::Duration;

use gantry_tests::bundles::{make_bundle, onnxruntime, push, trusting_controller};
use gantry_tests::{Agent, Controller, binary, wait_for};

/// `gantry-agent` run against the node directory `dir` with `args`.
fn agent_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(binary("gantry-agent"))
        .args(args)
        .arg("--config")
        .arg(dir.join("agent.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .output()
        .unwrap()
}

/// Enrolls the node in `dir` by file as `name`: its request, redeemed by `controller`,
/// and the response installed. Returns the request's and the response's paths.
fn enroll_by_file(
    controller: &Controller,
    dir: &std::path::Path,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let request = dir.join("enroll-request.json");
    let response = dir.join("enroll-response.json");
    let out = agent_cli(
        dir,
        &[
            "enroll",
            "--offline-request",
            request.to_str().unwrap(),
            "--token",
            &controller.token("hall=c"),
            "--name",
            name,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    controller.cli_ok(&[
        "token",
        "redeem",
        request.to_str().unwrap(),
        "--out",
        response.to_str().unwrap(),
    ]);
    (request, response)
}

#[test]
fn an_exported_bundle_crosses_the_gap_to_a_node_and_a_controller() {
    let work = tempfile::tempdir().unwrap();
    let (connected, key, policy) = trusting_controller(work.path());
    let bundle = make_bundle(&connected, work.path(), "1.0.0", &key);
    let id = push(&connected, &bundle)["id"].as_str().unwrap().to_owned();

    // Out of the connected controller, onto "removable media".
    let media = work.path().join("media");
    std::fs::create_dir(&media).unwrap();
    let exported = media.join("tiny-linear-1.0.0.gbundle");
    let text = connected.cli_ok(&[
        "bundle",
        "export",
        "tiny-linear@1.0.0",
        "--out",
        exported.to_str().unwrap(),
        "--dir",
        connected.home().to_str().unwrap(),
    ]);
    assert!(
        text.contains(&id) && text.contains("signatures  ml valid"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        std::fs::read(&bundle).unwrap(),
        "the export is the pushed bundle, byte for byte"
    );

    // A node that never enrolled: verified against its own policy, activated.
    let node = work.path().join("node");
    std::fs::create_dir(&node).unwrap();
    std::fs::write(
        node.join("agent.toml"),
        format!(
            "[trust]\npolicy = \"{}\"\n[inference]\nonnxruntime = \"{}\"\n",
            policy.display(),
            onnxruntime().display()
        ),
    )
    .unwrap();
    let agent_import =
        |file: &std::path::Path| agent_cli(&node, &["import", file.to_str().unwrap()]);
    let out = agent_import(&exported);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("activated   {id}")), "{stdout}");

    // An air-gapped controller with the same trust policy loads it from the file.
    let gapped = Controller::start();
    std::fs::copy(&policy, gapped.home().join("trust.json")).unwrap();
    let imported = gapped.cli_ok(&["bundle", "import", exported.to_str().unwrap()]);
    assert!(imported.contains(&format!("id: {id}")), "{imported}");
    assert!(gapped.cli_ok(&["bundle", "ls"]).contains("tiny-linear"));
    let report: serde_json::Value =
        serde_json::from_str(&gapped.cli_ok(&["audit", "report", "--json"])).unwrap();
    assert_eq!(report["bundles"][&id]["signatures_valid"], true, "{report}");
    let verify = gapped.cli_ok(&["audit", "verify"]);
    assert!(verify.contains("audit chain intact"), "{verify}");

    // Altered on the way: both sides refuse it, nothing changes.
    let mut bytes = std::fs::read(&exported).unwrap();
    let at = bytes
        .windows(22)
        .position(|w| w == b"files/tiny_linear.onnx")
        .unwrap()
        + 512
        + 20;
    bytes[at] ^= 1;
    let altered = media.join("altered.gbundle");
    std::fs::write(&altered, bytes).unwrap();
    let out = agent_import(&altered);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not match its SHA-256"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = gapped.cli(&["bundle", "import", altered.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("does not pass the controller's trust policy"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Both refusals are in the auditor's report, the import told from the push.
    let out = connected.cli(&["bundle", "push", altered.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    for (controller, via, accepted) in [
        (&gapped, "import", "imported"),
        (&connected, "push", "pushed"),
    ] {
        let report: serde_json::Value =
            serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
        let refused = report["refused_uploads"].as_array().unwrap();
        assert_eq!(refused.len(), 1, "{report}");
        assert_eq!(refused[0]["via"], via, "{report}");
        assert!(
            refused[0]["reason"]
                .as_str()
                .unwrap()
                .contains("does not match its SHA-256"),
            "{report}"
        );
        assert_eq!(report["bundles"][&id]["via"], via, "{report}");
        assert!(
            report["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == format!("refused-{via}")),
            "{report}"
        );
        let markdown = controller.cli_ok(&["audit", "report"]);
        assert!(
            markdown.contains("## Refused pushes and imports")
                && markdown.contains(&format!("| {via} |"))
                && markdown.contains(&format!("- {accepted} ")),
            "{markdown}"
        );
    }
}

#[test]
fn exporting_a_bundle_the_controller_does_not_hold_names_it() {
    let work = tempfile::tempdir().unwrap();
    let (controller, _, _) = trusting_controller(work.path());
    let out = controller.cli(&[
        "bundle",
        "export",
        "missing@9.9.9",
        "--out",
        work.path().join("x.gbundle").to_str().unwrap(),
        "--dir",
        controller.home().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no bundle missing@9.9.9 is held"),
        "{stderr}"
    );
    assert!(!work.path().join("x.gbundle").exists());
}

/// `gantry-agent export-telemetry` for `agent`, asking it while it runs.
fn export(agent: &Agent, out: &std::path::Path, after_seq: u64) -> std::process::Output {
    agent_cli(
        agent.dir.path(),
        &[
            "export-telemetry",
            "--out",
            out.to_str().unwrap(),
            "--agent",
            &agent.metrics.to_string(),
            "--after-seq",
            &after_seq.to_string(),
        ],
    )
}

#[test]
fn telemetry_carried_out_by_file_is_ingested_once_and_tampering_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let mut controller = Controller::start();
    let config = "[uplink]\nheartbeat = \"200ms\"\nmax_backoff = \"500ms\"\n";
    let mut agent = Agent::enroll(&controller, "hall-1", config);
    // The hall loses its link: the agent buffers.
    controller.kill();
    agent.run("200ms");
    let (_, last_seq, _) = wait_for("records to buffer", Duration::from_secs(30), || {
        agent.buffer().filter(|(records, _, _)| *records >= 10)
    });

    let file = work.path().join("hall-1.telemetry.json");
    let out = export(&agent, &file, 0);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("records of node hall-1, sequences 1..="),
        "{stdout}"
    );
    let exported: u64 = stdout
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(exported >= last_seq, "{stdout}");
    // Nothing was taken out of the buffer by exporting.
    assert!(agent.buffer().unwrap().0 >= exported);
    agent.kill();

    // Carried to the controller: stored once, however often it is imported.
    controller.resume();
    let first = controller.cli_ok(&["telemetry", "import", file.to_str().unwrap()]);
    assert!(
        first.contains(&format!("stored      {exported} new, 0 already held")),
        "{first}"
    );
    let again = controller.cli_ok(&["telemetry", "import", file.to_str().unwrap()]);
    assert!(
        again.contains(&format!("stored      0 new, {exported} already held")),
        "{again}"
    );
    gantry_tests::assert_contiguous(&controller.records("hall-1"), exported);

    // The uplink delivers the same records (and newer ones) later: nothing twice.
    agent.run("200ms");
    wait_for("the uplink to drain", Duration::from_secs(30), || {
        agent
            .buffer()
            .filter(|(records, seq, connected)| *connected && *records == 0 && *seq > exported)
            .map(|(_, seq, _)| seq)
    });
    agent.kill();
    let records = controller.records("hall-1");
    let last = records.last().unwrap().seq;
    gantry_tests::assert_contiguous(&records, last);
    assert_eq!(records.len() as u64, last, "no record stored twice");

    // A byte of the body changed: the node's signature no longer verifies.
    let text = std::fs::read_to_string(&file).unwrap();
    let tampered = work.path().join("tampered.json");
    std::fs::write(
        &tampered,
        text.replacen("\\\"at_ms\\\":", "\\\"at_ms\\\":1", 1),
    )
    .unwrap();
    let out = controller.cli(&["telemetry", "import", tampered.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("signature does not verify with node hall-1's key"),
        "{stderr}"
    );

    // A foreign export: another fleet's node of the same name.
    let other = Controller::start();
    let mut impostor = Agent::enroll(&other, "hall-1", config);
    impostor.run("200ms");
    wait_for("the impostor to buffer", Duration::from_secs(30), || {
        impostor.buffer().filter(|(records, _, _)| *records >= 1)
    });
    let foreign = work.path().join("foreign.json");
    assert!(export(&impostor, &foreign, 0).status.success());
    impostor.kill();
    let out = controller.cli(&["telemetry", "import", foreign.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not the one node hall-1 enrolled with"),
        "{stderr}"
    );

    // Every import, and every refusal's absence of effect, is in the audit log.
    let report: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
    assert!(report["chain"]["first_break"].is_null());
    assert!(controller.cli_ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn a_hall_node_s_local_import_reaches_the_audit_report_through_its_telemetry_export() {
    let work = tempfile::tempdir().unwrap();
    let (mut controller, key, policy) = trusting_controller(work.path());
    let bundle = make_bundle(&controller, work.path(), "1.0.0", &key);
    let id = push(&controller, &bundle)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let config = format!(
        "[uplink]\nheartbeat = \"200ms\"\nmax_backoff = \"500ms\"\n[trust]\npolicy = \"{}\"\n[inference]\nonnxruntime = \"{}\"\nlisten = \"\"\n",
        policy.display(),
        onnxruntime().display()
    );
    // Enrolled once at installation; then the hall is cut off for good.
    let mut agent = Agent::enroll(&controller, "hall-2", &config);
    controller.kill();
    agent.run("200ms");
    // The bundle comes in by file and is activated on the node.
    let out = agent_cli(agent.dir.path(), &["import", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The node's journal records the activation with its next sample.
    wait_for(
        "the next samples after the activation",
        Duration::from_secs(30),
        || {
            let before = agent.buffer()?.1;
            std::thread::sleep(Duration::from_millis(600));
            (agent.buffer()?.1 > before + 1).then_some(())
        },
    );
    let file = work.path().join("hall-2.telemetry.json");
    assert!(export(&agent, &file, 0).status.success());
    agent.kill();

    // Telemetry out by file: the controller's audit report shows what ran in the hall.
    controller.resume();
    controller.cli_ok(&["telemetry", "import", file.to_str().unwrap()]);
    let report: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
    let ran = &report["nodes"]["hall-2"]["ran"];
    assert_eq!(ran[0]["bundle"], id.as_str(), "{report}");
    assert_eq!(
        ran[0]["cause"], "activated on the node (local import or rollback)",
        "{report}"
    );
    assert_eq!(ran[0]["signatures_valid"], true, "{report}");
    assert!(ran[0]["signers"][0].as_str().unwrap().starts_with("ml"));
    // Importing the same file again adds nothing to the report.
    controller.cli_ok(&["telemetry", "import", file.to_str().unwrap()]);
    let again: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
    assert_eq!(
        again["nodes"]["hall-2"]["ran"],
        report["nodes"]["hall-2"]["ran"]
    );
}

#[test]
fn a_node_that_never_connects_enrolls_by_file_and_its_bundle_and_telemetry_cross_the_gap() {
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let bundle = make_bundle(&controller, work.path(), "1.0.0", &key);
    let id = push(&controller, &bundle)["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The hall's node: its uplink points nowhere reachable, so it never talks to the
    // controller; everything crosses by file.
    let node = work.path().join("hall-3");
    std::fs::create_dir(&node).unwrap();
    let metrics = gantry_tests::free_tcp_port();
    std::fs::write(
        node.join("agent.toml"),
        format!(
            "[uplink]\ncontroller = \"127.0.0.1:9\"\n[metrics]\nlisten = \"{metrics}\"\n[trust]\npolicy = \"{}\"\n[inference]\nonnxruntime = \"{}\"\nlisten = \"\"\n",
            policy.display(),
            onnxruntime().display()
        ),
    )
    .unwrap();
    let (request, response) = enroll_by_file(&controller, &node, "hall-3");
    let key_text = std::fs::read_to_string(&request).unwrap();
    assert!(
        !key_text.contains("PRIVATE KEY"),
        "the node key never leaves the node"
    );
    let out = agent_cli(
        &node,
        &["enroll", "--offline-response", response.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A response replayed, or meant for another node, is refused.
    let again = agent_cli(
        &node,
        &["enroll", "--offline-response", response.to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(1));

    // Bundle in by file, activated on the node; the daemon runs, cut off.
    let out = agent_cli(&node, &["import", bundle.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut daemon = Command::new(binary("gantry-agent"))
        .args(["run", "--config"])
        .arg(node.join("agent.toml"))
        .arg("--state-dir")
        .arg(node.join("state"))
        .args([
            "--simulate-gpus",
            "1",
            "--interval",
            "200ms",
            "--kernel-log",
            "",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = || -> Option<serde_json::Value> {
        serde_json::from_str(&gantry_tests::http_get(metrics, "/v1/status")?).ok()
    };
    wait_for("samples with the journal", Duration::from_secs(30), || {
        status().filter(|s| s["buffer"]["last_seq"].as_u64() >= Some(5))
    });

    // Telemetry out by file.
    let file = work.path().join("hall-3.telemetry.json");
    let out = agent_cli(
        &node,
        &["export-telemetry", "--out", file.to_str().unwrap()],
    );
    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = controller.cli_ok(&["telemetry", "import", file.to_str().unwrap()]);
    assert!(imported.contains("records of node hall-3"), "{imported}");

    // The audit report shows both: the bundle that ran in the hall, from the node's
    // journal, and that the node never connected.
    let report: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
    let ran = &report["nodes"]["hall-3"]["ran"];
    assert_eq!(ran[0]["bundle"], id.as_str(), "{report}");
    assert_eq!(ran[0]["signatures_valid"], true, "{report}");
    assert!(
        !controller
            .log
            .lines()
            .iter()
            .any(|l| l.contains("node connected") && l.contains("hall-3")),
        "the node never connected"
    );
}

#[test]
fn an_enrollment_response_for_another_node_or_from_another_controller_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let controller = Controller::start();
    let node = work.path().join("node");
    std::fs::create_dir(&node).unwrap();
    std::fs::write(node.join("agent.toml"), "").unwrap();
    let (request, response) = enroll_by_file(&controller, &node, "hall-4");
    let genuine: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&response).unwrap()).unwrap();
    let refused = |value: &serde_json::Value, expect: &str| {
        let forged = work.path().join("forged.json");
        std::fs::write(&forged, value.to_string()).unwrap();
        let out = agent_cli(
            &node,
            &["enroll", "--offline-response", forged.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{stderr}");
    };
    // Meant for another node.
    let mut other_node = genuine.clone();
    other_node["response"]["node_name"] = serde_json::json!("hall-5");
    refused(&other_node, "asked to enroll as \"hall-4\"");
    // Signed by another fleet's controller (not the one the token pinned).
    let other = Controller::start();
    let mut other_controller = genuine.clone();
    other_controller["controller_certificate_pem"] =
        serde_json::json!(std::fs::read_to_string(other.home().join("controller.crt")).unwrap());
    refused(&other_controller, "does not match the token's pin");
    // Not a response at all.
    refused(
        &serde_json::json!({"format": "x"}),
        "is not an enrollment response",
    );
    // Nothing was installed by the refusals; the genuine response still works, once.
    let out = agent_cli(
        &node,
        &["enroll", "--offline-response", response.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A request cannot be redeemed twice: the token is single-use.
    let out = controller.cli(&[
        "token",
        "redeem",
        request.to_str().unwrap(),
        "--out",
        response.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already used"));
}

#[test]
fn forged_offline_enrollment_from_another_controller_with_the_pinned_certificate_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let pinned = Controller::start();
    let node = work.path().join("node");
    std::fs::create_dir(&node).unwrap();
    std::fs::write(node.join("agent.toml"), "").unwrap();
    let (_request, response) = enroll_by_file(&pinned, &node, "hall-6");
    let genuine: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&response).unwrap()).unwrap();

    // Another controller answers a request of its own, then dresses the answer up with
    // the pinned controller's certificate, which is public.
    let attacker = Controller::start();
    let decoy = work.path().join("decoy");
    std::fs::create_dir(&decoy).unwrap();
    std::fs::write(decoy.join("agent.toml"), "").unwrap();
    let (_, decoy_response) = enroll_by_file(&attacker, &decoy, "hall-6");
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&decoy_response).unwrap()).unwrap();
    forged["controller_certificate_pem"] = genuine["controller_certificate_pem"].clone();

    let refused = |value: &serde_json::Value, expect: &str| {
        let path = work.path().join("forged.json");
        std::fs::write(&path, value.to_string()).unwrap();
        let out = agent_cli(
            &node,
            &["enroll", "--offline-response", path.to_str().unwrap()],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
        assert!(
            node.join("state/identity/pending.key").is_file(),
            "the pending request stays"
        );
        assert!(!node.join("state/identity/node.crt").exists());
    };
    refused(
        &forged,
        "is not signed by the controller the join token names",
    );
    // The genuine signature kept, but the node certificate and CA swapped for the other
    // fleet's: the signature covers them.
    let mut swapped = genuine.clone();
    swapped["response"]["certificate_pem"] = forged["response"]["certificate_pem"].clone();
    swapped["response"]["ca_pem"] = forged["response"]["ca_pem"].clone();
    refused(
        &swapped,
        "is not signed by the controller the join token names",
    );
    // No signature at all.
    let mut unsigned = genuine.clone();
    unsigned["controller_signature"] = serde_json::json!("00");
    refused(
        &unsigned,
        "is not signed by the controller the join token names",
    );

    // The genuine response still enrolls the node.
    let out = agent_cli(
        &node,
        &["enroll", "--offline-response", response.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
