//! Bundle delivery end to end, as an operator runs it: `gantry bundle push` → `bundle
//! assign` → the agent fetches over QUIC (resuming a broken transfer), verifies against its
//! own policy, runs the golden vectors, activates, and serves the right numbers; a bundle
//! altered on the controller after the push is refused while the old model keeps serving;
//! a bundle the controller's policy does not trust is never kept.

use std::time::Duration;

use gantry_tests::bundles::{
    agent_config, bundles_status, infer, make_bundle, make_bundle_with, models, onnxruntime, push,
    trusting_controller,
};
use gantry_tests::{Agent, wait_for};

#[test]
fn push_assign_fetch_resume_activate_serve_and_refuse_tampering() {
    let library = onnxruntime();
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());

    let (config, infer_addr) = agent_config(&library, &policy);
    let mut agent = Agent::enroll(&controller, "n1", &config);

    // Push v1 (with 64 KiB of weights, so half of it spans several blocks) and assign it.
    let weights = work.path().join("weights.bin");
    std::fs::write(&weights, vec![0x5a; 64 << 10]).unwrap();
    let file_arg = format!("{}=weights.bin", weights.display());
    let v1 = make_bundle_with(
        &controller,
        work.path(),
        "1.0.0",
        &key,
        &models().join("tiny_linear.golden.json"),
        &["--file", &file_arg],
    );
    let pushed = push(&controller, &v1);
    let id1 = pushed["id"].as_str().unwrap().to_owned();
    let sha1 = pushed["file_sha256"].as_str().unwrap().to_owned();
    assert_eq!(pushed["name"], "tiny-linear");

    // A transfer broken half-way: the first half of the file is already on the node. It
    // resumes from the last whole 4 KiB block of it (downloads append in blocks).
    let bytes = std::fs::read(&v1).unwrap();
    let half = bytes.len() / 2;
    let downloads = agent.state_dir().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(downloads.join(format!("{sha1}.partial")), &bytes[..half]).unwrap();

    agent.run("1s");
    controller.cli_ok(&["bundle", "assign", &id1, "--node", "n1"]);
    let ls = controller.cli_ok(&["bundle", "ls"]);
    assert!(ls.contains("tiny-linear") && ls.contains("n1"), "{ls}");

    let answer = wait_for(
        "the assigned bundle to serve",
        Duration::from_secs(30),
        || infer(infer_addr),
    );
    let data: Vec<f64> = serde_json::from_value(answer["outputs"][0]["data"].clone()).unwrap();
    assert_eq!(data, vec![-3.5, 14.0]);
    let status = bundles_status(&agent);
    assert_eq!(status["active"], id1.as_str(), "{status}");
    assert_eq!(
        status["resumed_at"],
        (half - half % 4096) as u64,
        "the transfer restarted instead of resuming: {status}"
    );
    assert!(
        half >= 4096,
        "the test bundle is too small to resume within"
    );
    assert!(agent.log.contains("resuming bundle transfer"));
    assert!(
        !downloads.join(format!("{sha1}.partial")).exists(),
        "the finished download was left behind"
    );
    // The controller sees what the node runs.
    wait_for(
        "the heartbeat to report the active bundle",
        Duration::from_secs(10),
        || {
            let node = serde_json::to_value(controller.node("n1")).unwrap();
            (node.to_string().contains(&id1)).then_some(())
        },
    );

    // v2 is pushed, then altered on the controller's disk: the node refuses it and keeps
    // serving v1.
    let v2 = make_bundle(&controller, work.path(), "2.0.0", &key);
    let pushed = push(&controller, &v2);
    let id2 = pushed["id"].as_str().unwrap().to_owned();
    let stored = controller
        .home()
        .join("bundles")
        .join(format!("{}.gbundle", id2.trim_start_matches("sha256:")));
    let mut tampered = std::fs::read(&stored).unwrap();
    // One bit of the model's contents, the block after its header.
    let header = tampered
        .windows(22)
        .position(|w| w == b"files/tiny_linear.onnx")
        .unwrap();
    tampered[header + 512 + 20] ^= 0x01;
    std::fs::write(&stored, tampered).unwrap();
    controller.cli_ok(&["bundle", "assign", &id2, "--node", "n1"]);
    let failed = wait_for(
        "the node to refuse the altered bundle",
        Duration::from_secs(30),
        || {
            let s = bundles_status(&agent);
            (s["failed"]["id"] == id2.as_str())
                .then(|| s["failed"]["reason"].as_str().unwrap().to_owned())
        },
    );
    assert!(failed.contains("does not match its SHA-256"), "{failed}");
    assert_eq!(bundles_status(&agent)["active"], id1.as_str());
    assert!(infer(infer_addr).is_some(), "the old model stopped serving");
    wait_for(
        "the refusal to reach the controller",
        Duration::from_secs(10),
        || {
            let node = serde_json::to_value(controller.node("n1")).unwrap();
            node.to_string()
                .contains("does not match its SHA-256")
                .then_some(())
        },
    );

    // A correctly signed bundle whose golden vectors the model does not reproduce is
    // fetched, verified, and never activated.
    let v4 =
        gantry_tests::bundles::make_wrong_golden_bundle(&controller, work.path(), "4.0.0", &key);
    let pushed = push(&controller, &v4);
    let id4 = pushed["id"].as_str().unwrap().to_owned();
    controller.cli_ok(&["bundle", "assign", &id4, "--node", "n1"]);
    let failed = wait_for(
        "the node to refuse the golden mismatch",
        Duration::from_secs(30),
        || {
            let s = bundles_status(&agent);
            (s["failed"]["id"] == id4.as_str())
                .then(|| s["failed"]["reason"].as_str().unwrap().to_owned())
        },
    );
    assert!(failed.contains("golden vector \"ones\""), "{failed}");
    assert_eq!(bundles_status(&agent)["active"], id1.as_str());
    let data: Vec<f64> =
        serde_json::from_value(infer(infer_addr).unwrap()["outputs"][0]["data"].clone()).unwrap();
    assert_eq!(data, vec![-3.5, 14.0]);
    let show = controller.cli_ok(&["fleet", "show", "n1"]);
    assert!(show.contains("REFUSED") && show.contains(&id4), "{show}");

    // A bundle signed by a key the controller does not trust is never kept.
    let rogue = work.path().join("rogue.key");
    controller.cli_ok(&["keygen", "--out", rogue.to_str().unwrap()]);
    let v3 = make_bundle(&controller, work.path(), "3.0.0", &rogue);
    let out = controller.cli(&["bundle", "push", v3.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("trust policy"), "{stderr}");
    let ls = controller.cli_ok(&["bundle", "ls", "--json"]);
    let held: Vec<serde_json::Value> = serde_json::from_str(&ls).unwrap();
    assert_eq!(held.len(), 3, "{ls}");

    // Assigning to a node that does not exist names the problem.
    let out = controller.cli(&["bundle", "assign", &id1, "--node", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    agent.kill();
}

#[test]
fn a_transfer_cut_mid_way_resumes_where_it_stopped() {
    let library = onnxruntime();
    let work = tempfile::tempdir().unwrap();
    let (mut controller, key, policy) = trusting_controller(work.path());
    // 96 MiB of incompressible payload, so the transfer lasts long enough to cut.
    let weights = work.path().join("weights.bin");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let payload: Vec<u8> = (0..(96usize << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(&weights, payload).unwrap();
    let file_arg = format!("{}=weights.bin", weights.display());
    let bundle = make_bundle_with(
        &controller,
        work.path(),
        "1.0.0",
        &key,
        &models().join("tiny_linear.golden.json"),
        &["--file", &file_arg],
    );
    let size = std::fs::metadata(&bundle).unwrap().len();
    let (config, infer_addr) = agent_config(&library, &policy);
    let mut agent = Agent::enroll(&controller, "n1", &config);
    agent.run("1s");
    let pushed = push(&controller, &bundle);
    let id = pushed["id"].as_str().unwrap().to_owned();
    controller.cli_ok(&["bundle", "assign", &id, "--node", "n1"]);

    // Cut the transfer: the controller dies once some, not all, bytes have arrived.
    wait_for("the transfer to start", Duration::from_secs(30), || {
        let got = bundles_status(&agent)["downloaded_bytes"].as_u64()?;
        (got > 0 && got < size).then_some(())
    });
    controller.kill();
    std::thread::sleep(Duration::from_millis(500));
    let cut_at = bundles_status(&agent)["downloaded_bytes"].as_u64().unwrap();
    assert!(cut_at > 0 && cut_at < size, "cut at {cut_at} of {size}");
    assert!(infer(infer_addr).is_none(), "nothing should serve yet");

    controller.resume();
    wait_for(
        "the bundle to serve after the cut",
        Duration::from_secs(60),
        || infer(infer_addr),
    );
    let status = bundles_status(&agent);
    assert_eq!(status["active"], id.as_str(), "{status}");
    let resumed_at = status["resumed_at"].as_u64().unwrap();
    assert!(
        resumed_at >= cut_at - cut_at % 4096 && resumed_at < size,
        "resumed at {resumed_at}, cut at {cut_at}, size {size}: the transfer restarted"
    );
    assert!(agent.log.contains("resuming bundle transfer"));
    agent.kill();
}
