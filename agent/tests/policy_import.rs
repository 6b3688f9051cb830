//! `gantry-agent import POLICY`: a signed trust-policy update carried in on removable
//! media. It replaces the node's policy only when the policy in force authorizes it; a
//! refused update leaves the node's policy byte for byte as it was.

use std::path::Path;
use std::process::Command;

mod support;

use support::bundles::policy_bytes;

use support::AGENT;

/// A policy of `version` trusting the keys of `trusted`, one signature needed, signed by
/// `signers`.
fn policy(version: u64, trusted: &[u8], signers: &[u8]) -> Vec<u8> {
    policy_bytes(version, trusted, 1, signers)
}

fn import(dir: &Path, file: &str) -> (i32, String) {
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[trust]\npolicy = \"{}\"\n",
            dir.join("trust.json").display()
        ),
    )
    .unwrap();
    let out = Command::new(AGENT)
        .args(["import", file, "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .current_dir(dir)
        .output()
        .unwrap();
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
fn an_authorized_update_replaces_the_policy_and_keeps_the_previous() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = policy(1, &[1], &[1]);
    std::fs::write(dir.path().join("trust.json"), &v1).unwrap();
    // Version 2 adds key 2; key 1, trusted by version 1, signs it.
    let v2 = policy(2, &[1, 2], &[1]);
    std::fs::write(dir.path().join("update.json"), &v2).unwrap();
    let (code, text) = import(dir.path(), "update.json");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("version 1 → 2") && text.contains("authorized by release-1"),
        "{text}"
    );
    assert_eq!(std::fs::read(dir.path().join("trust.json")).unwrap(), v2);
    assert_eq!(
        std::fs::read(dir.path().join("trust.json.previous")).unwrap(),
        v1
    );
}

#[test]
fn an_update_signed_by_a_key_the_node_does_not_trust_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = policy(1, &[1], &[1]);
    std::fs::write(dir.path().join("trust.json"), &v1).unwrap();
    // A foreign policy naming only its own key, signed by it.
    std::fs::write(dir.path().join("foreign.json"), policy(2, &[9], &[9])).unwrap();
    let (code, text) = import(dir.path(), "foreign.json");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("not signed by enough keys the current policy trusts")
            && text.contains("NOT updated"),
        "{text}"
    );
    assert_eq!(std::fs::read(dir.path().join("trust.json")).unwrap(), v1);
}

#[test]
fn an_update_that_is_not_newer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v3 = policy(3, &[1], &[1]);
    std::fs::write(dir.path().join("trust.json"), &v3).unwrap();
    // A genuinely signed but older policy: replaying it would roll keys back.
    std::fs::write(dir.path().join("old.json"), policy(2, &[1, 5], &[1])).unwrap();
    let (code, text) = import(dir.path(), "old.json");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not replace version 3"), "{text}");
    assert_eq!(std::fs::read(dir.path().join("trust.json")).unwrap(), v3);
}

#[test]
fn a_malformed_update_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = policy(1, &[1], &[1]);
    std::fs::write(dir.path().join("trust.json"), &v1).unwrap();
    std::fs::write(dir.path().join("broken.json"), b"{\"schema\": 1, ").unwrap();
    let (code, text) = import(dir.path(), "broken.json");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("broken.json is not a usable trust policy"),
        "{text}"
    );
    assert_eq!(std::fs::read(dir.path().join("trust.json")).unwrap(), v1);
}
