//! The audit log as an auditor meets it: `gantry audit verify` proves the chain intact and
//! names the first broken entry after each kind of tampering with the store — an edit, a
//! deletion, a reordering, entries cut off the end — each done to the store file directly,
//! as someone with disk access would.

use gantry_tests::Controller;
use redb::ReadableTable as _;

/// A controller with a few audited actions (token creations), then stopped; returns it
/// and the number of entries.
fn stopped_controller_with_entries() -> (Controller, u64) {
    let mut controller = Controller::start();
    for _ in 0..5 {
        controller.token("gpu=h100");
    }
    let out = controller.cli_ok(&["audit", "verify", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["first_break"].is_null(), "{v}");
    let entries = v["entries"].as_u64().unwrap();
    assert!(entries >= 5, "{v}");
    controller.kill();
    (controller, entries)
}

/// Applies `change` to the audit table of the stopped controller's store.
fn tamper(controller: &Controller, change: impl FnOnce(&mut redb::Table<u64, &[u8]>)) {
    let db = redb::Database::open(controller.home().join("store.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(gantry_controller::store::AUDIT).unwrap();
        change(&mut table);
    }
    txn.commit().unwrap();
}

fn entry(table: &redb::Table<u64, &[u8]>, seq: u64) -> serde_json::Value {
    serde_json::from_slice(table.get(seq).unwrap().unwrap().value()).unwrap()
}

fn put(table: &mut redb::Table<u64, &[u8]>, seq: u64, value: &serde_json::Value) {
    table
        .insert(seq, serde_json::to_vec(value).unwrap().as_slice())
        .unwrap();
}

/// `gantry audit verify --dir` on the stopped controller: exit code and output.
fn verify_offline(controller: &Controller) -> (i32, String) {
    let out = controller.cli(&[
        "audit",
        "verify",
        "--dir",
        controller.home().to_str().unwrap(),
    ]);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn an_intact_chain_verifies_offline_and_through_the_controller() {
    let (mut controller, entries) = stopped_controller_with_entries();
    let (code, text) = verify_offline(&controller);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("audit chain intact: {entries} entries")),
        "{text}"
    );
    controller.resume();
    let text = controller.cli_ok(&["audit", "verify"]);
    assert!(text.contains("audit chain intact"), "{text}");
}

#[test]
fn an_edited_audit_entry_is_pinpointed() {
    let (controller, _) = stopped_controller_with_entries();
    tamper(&controller, |table| {
        let mut e = entry(table, 3);
        e["actor"] = serde_json::json!("someone-else");
        put(table, 3, &e);
    });
    let (code, text) = verify_offline(&controller);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("BROKEN at entry 3") && text.contains("altered"),
        "{text}"
    );
    assert!(text.contains("intact up to entry 2"), "{text}");
}

#[test]
fn an_edited_audit_entry_with_its_hash_recomputed_is_pinpointed_by_the_next_link() {
    let (controller, _) = stopped_controller_with_entries();
    tamper(&controller, |table| {
        let mut e: gantry_controller::audit::Entry =
            serde_json::from_value(entry(table, 3)).unwrap();
        e.actor = "someone-else".into();
        let new = gantry_controller::audit::NewEntry {
            at_ms: e.at_ms,
            actor: e.actor.clone(),
            action: e.action.clone(),
            subject: e.subject.clone(),
            details: e.details.clone(),
        };
        e.hash = gantry_controller::audit::entry_hash(&e.prev, e.seq, &new);
        put(table, 3, &serde_json::to_value(&e).unwrap());
    });
    let (code, text) = verify_offline(&controller);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("BROKEN at entry 4") && text.contains("does not follow entry 3"),
        "{text}"
    );
}

#[test]
fn a_deleted_audit_entry_is_pinpointed() {
    let (controller, _) = stopped_controller_with_entries();
    tamper(&controller, |table| {
        table.remove(2).unwrap();
    });
    let (code, text) = verify_offline(&controller);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("BROKEN at entry 2") && text.contains("missing"),
        "{text}"
    );
}

#[test]
fn reordered_audit_entries_are_pinpointed() {
    let (controller, _) = stopped_controller_with_entries();
    tamper(&controller, |table| {
        let (mut a, mut b) = (entry(table, 2), entry(table, 3));
        a["seq"] = serde_json::json!(3);
        b["seq"] = serde_json::json!(2);
        put(table, 2, &b);
        put(table, 3, &a);
    });
    let (code, text) = verify_offline(&controller);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("BROKEN at entry 2"), "{text}");
}

#[test]
fn audit_entries_cut_off_the_end_are_pinpointed() {
    let (controller, entries) = stopped_controller_with_entries();
    tamper(&controller, |table| {
        table.remove(entries).unwrap();
    });
    let (code, text) = verify_offline(&controller);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("BROKEN at entry {entries}")) && text.contains("cut off"),
        "{text}"
    );
}

#[test]
fn a_running_controller_s_store_is_not_opened_behind_its_back() {
    let controller = Controller::start();
    let out = controller.cli(&[
        "audit",
        "verify",
        "--dir",
        controller.home().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("drop --dir"), "{stderr}");
}

#[test]
fn a_change_of_the_controllers_trust_policy_is_recorded_with_the_pushes_after_it() {
    use gantry_tests::bundles::{make_bundle, push, trusting_controller};
    let work = tempfile::tempdir().unwrap();
    let (controller, key, policy) = trusting_controller(work.path());
    let v1 = make_bundle(&controller, work.path(), "1.0.0", &key);
    push(&controller, &v1);
    // A second key joins the policy (version 2, signed by the first).
    let key2 = work.path().join("ml2.key");
    controller.cli_ok(&["keygen", "--out", key2.to_str().unwrap()]);
    let p2 = work.path().join("trust-v2.json");
    controller.cli_ok(&[
        "policy",
        "create",
        "--from",
        policy.to_str().unwrap(),
        "--key",
        &format!("ml2={}.pub", key2.display()),
        "--out",
        p2.to_str().unwrap(),
    ]);
    controller.cli_ok(&[
        "policy",
        "sign",
        p2.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    std::fs::copy(&p2, controller.home().join("trust.json")).unwrap();
    let v2 = make_bundle(&controller, work.path(), "2.0.0", &key2);
    push(&controller, &v2);

    let report: serde_json::Value =
        serde_json::from_str(&controller.cli_ok(&["audit", "report", "--json"])).unwrap();
    let policies = report["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2, "{policies:?}");
    assert_eq!(policies[0]["version"], 1);
    assert_eq!(policies[1]["version"], 2);
    assert!(
        policies[1]["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k.as_str().unwrap().starts_with("ml2 (")),
        "{policies:?}"
    );
    // Each push names the policy it passed, as recorded.
    let mut bundles: Vec<&serde_json::Value> =
        report["bundles"].as_object().unwrap().values().collect();
    bundles.sort_by_key(|b| b["pushed_at_ms"].as_u64());
    for (bundle, policy) in bundles.iter().zip(policies) {
        assert_eq!(bundle["policy_sha256"], policy["sha256"]);
    }
    let markdown = controller.cli_ok(&["audit", "report"]);
    assert!(
        markdown.contains("## Trust policy of the controller"),
        "{markdown}"
    );
}

fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest as _;
    gantry_shared::bundle::signing::to_hex(&sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// `gantry audit ARGS --dir` on `dir`: exit code, stdout and stderr together.
fn offline(controller: &Controller, args: &[&str]) -> (i32, String) {
    let home = controller.home();
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--dir", home.to_str().unwrap()]);
    let out = controller.cli(&all);
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn verifying_evidence_never_changes_a_byte_of_the_store() {
    let (controller, entries) = stopped_controller_with_entries();
    let store = controller.home().join("store.redb");
    let before = sha256_of(&store);
    let (code, text) = offline(&controller, &["verify"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("intact: {entries} entries")),
        "{text}"
    );
    let (code, text) = offline(&controller, &["report", "--json"]);
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        sha256_of(&store),
        before,
        "the evidence is opened read-only"
    );
}

#[test]
fn missing_or_empty_evidence_is_an_error_and_nothing_is_created() {
    let (mut controller, _) = stopped_controller_with_entries();
    let store = controller.home().join("store.redb");
    let kept = controller.home().join("store.redb.kept");
    std::fs::rename(&store, &kept).unwrap();
    for args in [&["verify"][..], &["report"][..]] {
        let (code, text) = offline(&controller, args);
        assert_eq!(code, 1, "{args:?}: {text}");
        assert!(text.contains("does not exist"), "{args:?}: {text}");
        assert!(!text.contains("intact"), "{text}");
        assert!(!store.exists(), "no store is created");
    }
    std::fs::File::create(&store).unwrap();
    let (code, text) = offline(&controller, &["verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("is empty"), "{text}");
    assert_eq!(std::fs::metadata(&store).unwrap().len(), 0);

    // The daemon refuses the same, once the directory was initialized.
    let out = controller.cli(&["serve", "--dir", controller.home().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is empty") && stderr.contains("--new-store"),
        "{stderr}"
    );
    std::fs::rename(&kept, &store).unwrap();
    controller.resume();
    assert!(controller.cli_ok(&["audit", "verify"]).contains("intact"));
}

#[test]
fn truncated_or_bit_flipped_store_is_a_clear_error_never_a_panic() {
    let (controller, _) = stopped_controller_with_entries();
    let store = controller.home().join("store.redb");
    let pristine = std::fs::read(&store).unwrap();
    let truncated = pristine[..pristine.len() / 2].to_vec();
    let mut flipped = pristine.clone();
    for i in (4096..flipped.len()).step_by(4096) {
        flipped[i] ^= 0xff;
    }
    for (damage, bytes) in [("truncated", truncated), ("bit-flipped", flipped)] {
        std::fs::write(&store, &bytes).unwrap();
        for args in [&["verify"][..], &["report"][..]] {
            let (code, text) = offline(&controller, args);
            assert_ne!(code, 101, "{damage} {args:?} panicked: {text}");
            assert_eq!(code, 1, "{damage} {args:?}: {text}");
            assert!(
                text.contains("store.redb") && !text.contains("panicked"),
                "{damage} {args:?}: {text}"
            );
            assert_eq!(std::fs::read(&store).unwrap(), bytes, "{damage}: unchanged");
        }
        let out = controller.cli(&["serve", "--dir", controller.home().to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{damage} serve: {stderr}");
        assert!(
            stderr.contains("store.redb is damaged") && !stderr.contains("panicked"),
            "{damage} serve: {stderr}"
        );
    }
}
