//! Identities that expire and renew, with real processes. Certificates are issued in the
//! past by a controller whose clock is shifted (`gantry serve --clock-offset`), then
//! judged by one on the real clock: no test waits for a certificate to age.

use std::time::Duration;

use gantry_tests::{Agent, Controller, binary, wait_for};

const FAST: &str = "[uplink]\nheartbeat = \"200ms\"\nmax_backoff = \"500ms\"\n";
const DAY_MS: u64 = 86_400_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A controller that enrolls `name` with its clock shifted by `offset` (so the node's
/// certificate was issued then), and then runs on the real clock with `serve_args`.
fn enrolled_in_the_past(offset: &str, name: &str, serve_args: &[&str]) -> (Controller, Agent) {
    let mut controller = Controller::start();
    controller.restart_with(&["--clock-offset", offset]);
    let agent = Agent::enroll(&controller, name, FAST);
    controller.restart_with(serve_args);
    (controller, agent)
}

fn enrollment(agent: &Agent) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(agent.state_dir().join("identity/enrollment.json")).unwrap(),
    )
    .unwrap()
}

fn expires_at(agent: &Agent) -> u64 {
    enrollment(agent)["certificate_expires_at_ms"]
        .as_u64()
        .unwrap()
}

/// Waits until the controller stored at least `n` records of the agent, in order, once.
fn wait_stored(controller: &Controller, agent: &Agent, n: u64) {
    wait_for(
        "telemetry to reach the controller",
        Duration::from_secs(60),
        || (controller.node(&agent.name).summary.last_seq >= n).then_some(()),
    );
    let records = controller.records(&agent.name);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every record stored once, none missing");
}

/// Lines of the controller's log that mention `what` and `also`.
fn logged(controller: &Controller, what: &str, also: &str) -> bool {
    controller
        .log
        .lines()
        .iter()
        .any(|l| l.contains(what) && l.contains(also))
}

#[test]
fn renew_online_before_the_certificate_expires() {
    // Issued five days ago for seven: two thirds of its life are over.
    let (controller, mut agent) = enrolled_in_the_past("-5d", "renew-online", &[]);
    let before = expires_at(&agent);
    assert!(
        before > now_ms() && before < now_ms() + 3 * DAY_MS,
        "{before}"
    );
    agent.run("100ms");
    wait_for("the online renewal", Duration::from_secs(30), || {
        (expires_at(&agent) > now_ms() + 6 * DAY_MS).then_some(())
    });
    assert!(agent.log.contains("node certificate renewed"));
    assert!(
        logged(&controller, "node certificate renewed", "online"),
        "{:?}",
        controller.log.lines()
    );
    assert!(controller.cli_ok(&["audit", "verify"]).contains("intact"));
    // The next connection presents the new certificate, and telemetry flows.
    wait_for(
        "a connection with the renewed certificate",
        Duration::from_secs(30),
        || {
            (controller
                .log
                .lines()
                .iter()
                .filter(|l| l.contains("node connected") && l.contains("renew-online"))
                .count()
                >= 2)
                .then_some(())
        },
    );
    let status = agent.status().unwrap();
    assert_eq!(
        status["uplink"]["certificate_expires_at_ms"].as_u64(),
        Some(expires_at(&agent)),
        "{status}"
    );
    wait_stored(&controller, &agent, 10);
}

#[test]
fn renew_after_expiry_within_grace_and_nothing_is_lost_meanwhile() {
    // Issued ten days ago for seven: expired three days ago, well within the grace.
    let (mut controller, mut agent) = enrolled_in_the_past("-10d", "renew-late", &[]);
    assert!(expires_at(&agent) < now_ms());
    controller.kill();
    agent.run("100ms");
    // Offline and expired: it keeps sampling into its buffer.
    wait_for(
        "records buffered while offline",
        Duration::from_secs(30),
        || {
            let (waiting, _, _) = agent.buffer()?;
            (waiting >= 10).then_some(())
        },
    );
    controller.resume();
    wait_for(
        "the renewal by proof of possession",
        Duration::from_secs(30),
        || (expires_at(&agent) > now_ms() + 6 * DAY_MS).then_some(()),
    );
    assert!(
        agent
            .log
            .contains("expired node certificate renewed by proof of possession")
    );
    assert!(
        logged(
            &controller,
            "node certificate renewed",
            "proof of possession"
        ),
        "{:?}",
        controller.log.lines()
    );
    wait_stored(&controller, &agent, 15);
}

#[test]
fn refuse_renewal_after_the_grace_period() {
    let (controller, mut agent) =
        enrolled_in_the_past("-40d", "renew-too-late", &["--renewal-grace", "30d"]);
    agent.run("100ms");
    wait_for("the refusal", Duration::from_secs(30), || {
        let status = agent.status()?;
        let error = status["uplink"]["last_error"].as_str()?.to_owned();
        error.contains("renewal grace of 30 days").then_some(())
    });
    assert!(
        agent
            .log
            .contains("the node certificate expired and cannot be renewed")
    );
    // It never stops buffering, and nothing reached the controller.
    let (_, first, _) = agent.buffer().unwrap();
    wait_for("sampling to go on", Duration::from_secs(20), || {
        let (_, last, _) = agent.buffer()?;
        (last > first + 5).then_some(())
    });
    assert_eq!(controller.node(&agent.name).summary.last_seq, 0);
    assert!(expires_at(&agent) < now_ms(), "nothing was installed");
    let text = agent.status_text();
    assert!(text.contains("EXPIRED"), "{text}");
}

#[test]
fn refuse_renewal_of_a_revoked_node() {
    let (controller, mut agent) = enrolled_in_the_past("-10d", "renew-revoked", &[]);
    controller.cli_ok(&["fleet", "revoke", "renew-revoked"]);
    agent.run("100ms");
    wait_for("the refusal", Duration::from_secs(30), || {
        let status = agent.status()?;
        let error = status["uplink"]["last_error"].as_str()?.to_owned();
        error.contains("revoked nodes never renew").then_some(())
    });
    assert!(expires_at(&agent) < now_ms(), "nothing was installed");
}

#[test]
fn renew_by_file_for_a_node_that_never_connects() {
    let (controller, mut agent) = enrolled_in_the_past("-10d", "renew-hall", &[]);
    let work = tempfile::tempdir().unwrap();
    let (request, response) = (work.path().join("req.json"), work.path().join("resp.json"));
    let out = agent.cli(&["renew", "--offline-request", request.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&request).unwrap();
    assert!(
        !text.contains("PRIVATE KEY"),
        "the key never leaves the node"
    );
    let answered = controller.cli_ok(&[
        "fleet",
        "renew",
        request.to_str().unwrap(),
        "--out",
        response.to_str().unwrap(),
    ]);
    assert!(
        answered.contains("renewed     renew-hall (by file)"),
        "{answered}"
    );

    // An answer altered for another node is refused; the identity stays as it was.
    let mut forged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&response).unwrap()).unwrap();
    forged["response"]["node_name"] = serde_json::json!("someone-else");
    let forged_path = work.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let out = agent.cli(&["renew", "--offline-response", forged_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not this node"));
    assert!(expires_at(&agent) < now_ms());

    let out = agent.cli(&["renew", "--offline-response", response.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(expires_at(&agent) > now_ms() + 6 * DAY_MS);
    // The renewed certificate connects as it is.
    agent.run("100ms");
    wait_stored(&controller, &agent, 5);
    assert!(!agent.log.contains("renewed by proof of possession"));
}

#[test]
fn admin_certificates_have_a_lifetime_and_rotate() {
    let mut controller = Controller::start();
    controller.restart_with(&["--admin-cert-lifetime", "30d"]);
    let work = tempfile::tempdir().unwrap();
    let ops = work.path().join("ops.identity");
    let out = controller.cli_ok(&[
        "admin",
        "add",
        "ops",
        "--role",
        "operator",
        "--out",
        ops.to_str().unwrap(),
    ]);
    assert!(out.contains("valid until"), "{out}");
    let before = std::fs::read(&ops).unwrap();
    let old = work.path().join("old.identity");
    std::fs::write(&old, &before).unwrap();
    let as_ops = |identity: &std::path::Path, args: &[&str]| {
        std::process::Command::new(binary("gantry"))
            .args(args)
            .env("GANTRY_IDENTITY", identity)
            .output()
            .unwrap()
    };
    let out = as_ops(&ops, &["admin", "rotate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rotated     ops (operator)") && stdout.contains("valid until"),
        "{stdout}"
    );
    assert_ne!(
        std::fs::read(&ops).unwrap(),
        before,
        "a new key and certificate"
    );
    assert!(as_ops(&ops, &["fleet", "ls"]).status.success());
    let out = as_ops(&old, &["fleet", "ls"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the rotated-out certificate is revoked"
    );
}
