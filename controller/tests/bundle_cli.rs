//! The bundle and policy commands as an ML engineer and a release manager run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models")
}

struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn gantry(&self, args: &[&str]) -> Output {
        Command::new(GANTRY)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("gantry runs")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.gantry(args);
        assert!(
            out.status.success(),
            "gantry {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit code 1; returns stdout + stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.gantry(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "gantry {args:?} should fail with 1: {text}"
        );
        text
    }

    /// Three keys and a 2-of-3 policy signed by keys 1 and 2.
    fn release_setup(&self, threshold: &str) {
        for k in ["r1", "r2", "r3"] {
            self.ok(&["keygen", "--out", &format!("{k}.key")]);
        }
        self.ok(&[
            "policy",
            "create",
            "--threshold",
            threshold,
            "--key",
            "release-1=r1.key.pub",
            "--key",
            "release-2=r2.key.pub",
            "--key",
            "release-3=r3.key.pub",
            "--out",
            "trust.json",
        ]);
        self.ok(&["policy", "sign", "trust.json", "--key", "r1.key"]);
        self.ok(&["policy", "sign", "trust.json", "--key", "r2.key"]);
    }

    fn create_bundle(&self, out: &str) {
        let model = models().join("tiny_linear.onnx");
        let golden = models().join("tiny_linear.golden.json");
        std::fs::write(self.path("vocab.txt"), "a\nb\n").unwrap();
        self.ok(&[
            "bundle",
            "create",
            "--model",
            model.to_str().unwrap(),
            "--name",
            "tiny-linear",
            "--version",
            "1.2.0",
            "--golden",
            golden.to_str().unwrap(),
            "--file",
            "vocab.txt=assets/vocab.txt",
            "--source-revision",
            "git:3f2c1e0",
            "--training-data-digest",
            "sha256:feedbeef",
            "--param",
            "lr=0.01",
            "--param",
            "optimizer=adam",
            "--metric",
            "accuracy=0.97",
            "--execution-provider",
            "cuda,cpu",
            "--min-gpu-memory",
            "1GiB",
            "--out",
            out,
        ]);
    }
}

#[test]
fn create_sign_with_one_and_two_of_three_keys_and_verify() {
    let w = Workdir::new();
    w.release_setup("2");
    w.create_bundle("tiny.gbundle");

    let unsigned = w.fails(&["bundle", "verify", "tiny.gbundle", "--trust", "trust.json"]);
    assert!(
        unsigned.contains("FAILED: the bundle has no signatures"),
        "{unsigned}"
    );

    w.ok(&["bundle", "sign", "tiny.gbundle", "--key", "r1.key"]);
    let one = w.fails(&["bundle", "verify", "tiny.gbundle", "--trust", "trust.json"]);
    assert!(
        one.contains("1 distinct valid signature(s), 2 needed"),
        "{one}"
    );

    w.ok(&["bundle", "sign", "tiny.gbundle", "--key", "r3.key"]);
    let two = w.ok(&["bundle", "verify", "tiny.gbundle", "--trust", "trust.json"]);
    assert!(two.contains("VERIFIED"), "{two}");
    assert!(
        two.contains("(release-1)") && two.contains("(release-3)"),
        "{two}"
    );
    assert!(two.contains("files       2 verified"), "{two}");

    let json: serde_json::Value = serde_json::from_str(&w.ok(&[
        "bundle",
        "verify",
        "tiny.gbundle",
        "--trust",
        "trust.json",
        "--json",
    ]))
    .unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["signatures"].as_array().unwrap().len(), 2);
    assert_eq!(json["name"], "tiny-linear");

    // Under a 1-of-3 policy, a single signature suffices.
    let w1 = Workdir::new();
    w1.release_setup("1");
    w1.create_bundle("one.gbundle");
    w1.ok(&["bundle", "sign", "one.gbundle", "--key", "r2.key"]);
    assert!(
        w1.ok(&["bundle", "verify", "one.gbundle", "--trust", "trust.json"])
            .contains("VERIFIED")
    );
}

#[test]
fn inspect_shows_what_the_bundle_claims_and_tar_can_list_it() {
    let w = Workdir::new();
    w.release_setup("2");
    w.create_bundle("tiny.gbundle");
    w.ok(&["bundle", "sign", "tiny.gbundle", "--key", "r1.key"]);
    let text = w.ok(&["bundle", "inspect", "tiny.gbundle"]);
    for expected in [
        "tiny-linear 1.2.0",
        "input     x Float32 [batch, 4]",
        "output    y Float32 [batch, 2]",
        "git:3f2c1e0",
        "optimizer = adam",
        "accuracy = 0.97",
        "3 vector(s)",
        "not verified",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&w.ok(&["bundle", "inspect", "tiny.gbundle", "--json"])).unwrap();
    assert_eq!(json["manifest"]["files"][1]["path"], "assets/vocab.txt");
    assert_eq!(
        json["manifest"]["provenance"]["hyperparameters"]["lr"],
        0.01
    );
    assert_eq!(
        json["manifest"]["requirements"]["min_gpu_memory_bytes"],
        1u64 << 30
    );
    assert_eq!(
        json["manifest"]["requirements"]["execution_providers"],
        serde_json::json!(["cuda", "cpu"])
    );
    assert_eq!(json["signatures"].as_array().unwrap().len(), 1);

    let tar = Command::new("tar")
        .arg("-tf")
        .arg(w.path("tiny.gbundle"))
        .output()
        .unwrap();
    assert!(tar.status.success());
    assert_eq!(
        String::from_utf8(tar.stdout).unwrap(),
        "manifest.json\nsignatures.json\nfiles/tiny_linear.onnx\nfiles/assets/vocab.txt\n"
    );
}

#[test]
fn a_byte_changed_on_disk_is_named() {
    let w = Workdir::new();
    w.release_setup("2");
    w.create_bundle("tiny.gbundle");
    w.ok(&["bundle", "sign", "tiny.gbundle", "--key", "r1.key"]);
    w.ok(&["bundle", "sign", "tiny.gbundle", "--key", "r2.key"]);
    let mut bytes = std::fs::read(w.path("tiny.gbundle")).unwrap();
    let vocab = bytes
        .windows(4)
        .position(|win| win == b"a\nb\n")
        .expect("payload is stored verbatim");
    bytes[vocab] = b'z';
    std::fs::write(w.path("tiny.gbundle"), &bytes).unwrap();
    let text = w.fails(&["bundle", "verify", "tiny.gbundle", "--trust", "trust.json"]);
    assert!(
        text.contains("file \"assets/vocab.txt\" does not match its SHA-256"),
        "{text}"
    );
}

#[test]
fn private_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let w = Workdir::new();
    w.release_setup("1");
    w.create_bundle("tiny.gbundle");
    std::fs::set_permissions(w.path("r1.key"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = w.fails(&["bundle", "sign", "tiny.gbundle", "--key", "r1.key"]);
    assert!(
        text.contains("readable by others (mode 0640)") && text.contains("chmod 600"),
        "{text}"
    );
}

#[test]
fn keygen_never_overwrites_a_key() {
    let w = Workdir::new();
    w.ok(&["keygen", "--out", "k"]);
    let before = std::fs::read(w.path("k")).unwrap();
    let text = w.fails(&["keygen", "--out", "k"]);
    assert!(text.contains("already exists"), "{text}");
    assert_eq!(std::fs::read(w.path("k")).unwrap(), before);
}

#[test]
fn signing_twice_with_one_key_changes_nothing() {
    let w = Workdir::new();
    w.release_setup("1");
    w.create_bundle("tiny.gbundle");
    w.ok(&["bundle", "sign", "tiny.gbundle", "--key", "r1.key"]);
    let before = std::fs::read(w.path("tiny.gbundle")).unwrap();
    let text = w.ok(&["bundle", "sign", "tiny.gbundle", "--key", "r1.key"]);
    assert!(text.contains("already carries a signature"), "{text}");
    assert_eq!(std::fs::read(w.path("tiny.gbundle")).unwrap(), before);
}

#[test]
fn expired_key_is_named_in_the_refusal() {
    let w = Workdir::new();
    for k in ["r1", "r2"] {
        w.ok(&["keygen", "--out", &format!("{k}.key")]);
    }
    w.ok(&[
        "policy",
        "create",
        "--threshold",
        "1",
        "--key",
        "current=r1.key.pub",
        "--key",
        "retired=r2.key.pub,not-after=2025-01-01T00:00:00Z",
        "--out",
        "trust.json",
    ]);
    w.ok(&["policy", "sign", "trust.json", "--key", "r1.key"]);
    w.create_bundle("tiny.gbundle");
    w.ok(&["bundle", "sign", "tiny.gbundle", "--key", "r2.key"]);
    let text = w.fails(&["bundle", "verify", "tiny.gbundle", "--trust", "trust.json"]);
    assert!(
        text.contains("(retired): key expired at 2025-01-01T00:00:00Z"),
        "{text}"
    );
    // As of a time inside its window, the same signature counts.
    assert!(
        w.ok(&[
            "bundle",
            "verify",
            "tiny.gbundle",
            "--trust",
            "trust.json",
            "--at",
            "2024-06-01T00:00:00Z"
        ])
        .contains("VERIFIED")
    );
}

#[test]
fn unsigned_policy_is_not_usable() {
    let w = Workdir::new();
    w.ok(&["keygen", "--out", "r1.key"]);
    w.ok(&[
        "policy",
        "create",
        "--key",
        "a=r1.key.pub",
        "--out",
        "trust.json",
    ]);
    w.create_bundle("tiny.gbundle");
    let text = w.fails(&["bundle", "verify", "tiny.gbundle", "--trust", "trust.json"]);
    assert!(
        text.contains("not signed by enough of its own keys"),
        "{text}"
    );
    assert!(
        w.ok(&["policy", "inspect", "trust.json"])
            .contains("usable      NO")
    );
}

#[test]
fn policy_rotation_through_the_cli() {
    let w = Workdir::new();
    w.release_setup("2");
    w.ok(&["keygen", "--out", "r4.key"]);
    let r3_id = serde_json::from_str::<serde_json::Value>(&w.ok(&[
        "policy",
        "inspect",
        "trust.json",
        "--json",
    ]))
    .unwrap()["policy"]["keys"][2]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Version 2: r3 revoked, r4 added. One current key and the new one are not enough:
    // an update needs two signatures by keys the current policy trusts.
    w.ok(&[
        "policy",
        "create",
        "--from",
        "trust.json",
        "--key",
        "release-4=r4.key.pub",
        "--revoke",
        &r3_id,
        "--out",
        "trust-v2.json",
    ]);
    w.ok(&["policy", "sign", "trust-v2.json", "--key", "r1.key"]);
    w.ok(&["policy", "sign", "trust-v2.json", "--key", "r4.key"]);
    let short = w.fails(&["policy", "verify", "trust-v2.json", "--trust", "trust.json"]);
    assert!(
        short.contains("1 distinct valid signature(s), 2 needed"),
        "{short}"
    );
    w.ok(&["policy", "sign", "trust-v2.json", "--key", "r2.key"]);
    let text = w.ok(&["policy", "verify", "trust-v2.json", "--trust", "trust.json"]);
    assert!(text.contains("is a valid update of trust.json"), "{text}");
    let inspect = w.ok(&["policy", "inspect", "trust-v2.json"]);
    assert!(
        inspect.contains("version 2") && inspect.contains("REVOKED"),
        "{inspect}"
    );

    // An update signed by only one current key (and the attacker's) is refused.
    w.ok(&["keygen", "--out", "evil.key"]);
    w.ok(&[
        "policy",
        "create",
        "--from",
        "trust.json",
        "--key",
        "evil=evil.key.pub",
        "--threshold",
        "1",
        "--out",
        "evil.json",
    ]);
    w.ok(&["policy", "sign", "evil.json", "--key", "evil.key"]);
    w.ok(&["policy", "sign", "evil.json", "--key", "r1.key"]);
    let text = w.fails(&["policy", "verify", "evil.json", "--trust", "trust.json"]);
    assert!(
        text.contains("not signed by enough keys the current policy trusts"),
        "{text}"
    );
    assert!(text.contains("key is not trusted by this policy"), "{text}");
}

#[test]
fn golden_vectors_that_do_not_fit_the_model_are_refused_at_creation() {
    let w = Workdir::new();
    std::fs::write(
        w.path("golden.json"),
        r#"[{"name":"wrong","inputs":{"x":{"dtype":"float32","shape":[1,3],"data":[1,2,3]}},
            "outputs":{"y":{"dtype":"float32","shape":[1,2],"data":[0,0]}},"tolerance":{"abs":0,"rel":0}}]"#,
    )
    .unwrap();
    let model = models().join("tiny_linear.onnx");
    let text = w.fails(&[
        "bundle",
        "create",
        "--model",
        model.to_str().unwrap(),
        "--name",
        "t",
        "--version",
        "1.0.0",
        "--golden",
        "golden.json",
        "--out",
        "t.gbundle",
    ]);
    assert!(
        text.contains("dimension 1 is 3, the model fixes it at 4"),
        "{text}"
    );
    assert!(
        !w.path("t.gbundle").exists(),
        "nothing is written for a refused bundle"
    );
}

#[test]
fn a_file_that_is_not_onnx_is_refused() {
    let w = Workdir::new();
    std::fs::write(w.path("model.onnx"), "#!/bin/sh\necho not a model\n").unwrap();
    let text = w.fails(&[
        "bundle",
        "create",
        "--model",
        "model.onnx",
        "--name",
        "t",
        "--version",
        "1.0.0",
        "--out",
        "t.gbundle",
    ]);
    assert!(
        text.contains("cannot read the model signature from model.onnx"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let w = Workdir::new();
    let out = w.gantry(&["bundle", "verify", "x.gbundle"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "missing --trust is a usage error"
    );
}

#[test]
fn weak_key_is_refused_by_policy_create() {
    let w = Workdir::new();
    // The identity point: a public key of small order, for which anyone can forge.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity).unwrap();
    std::fs::write(
        w.path("weak.pub"),
        gantry_shared::bundle::signing::public_key_to_pem(&weak),
    )
    .unwrap();
    let text = w.fails(&[
        "policy",
        "create",
        "--key",
        "mallory=weak.pub",
        "--out",
        "trust.json",
    ]);
    assert!(text.contains("weak ed25519 key"), "{text}");
    assert!(!w.path("trust.json").exists(), "nothing written");
}

#[test]
fn new_policies_require_golden_vectors_and_an_empty_gate_is_refused() {
    let w = Workdir::new();
    w.release_setup("2");
    let inspect = w.ok(&["policy", "inspect", "trust.json"]);
    assert!(
        inspect.contains(
            "golden      at least 1 vector(s) per bundle, tolerance at most abs 1e-2, rel 1e-2"
        ),
        "{inspect}"
    );
    // A bundle without golden vectors, properly signed: refused by the policy's gate.
    let model = models().join("tiny_linear.onnx");
    std::fs::write(w.path("none.json"), "[]").unwrap();
    w.ok(&[
        "bundle",
        "create",
        "--model",
        model.to_str().unwrap(),
        "--name",
        "tiny-linear",
        "--version",
        "1.0.0",
        "--golden",
        "none.json",
        "--out",
        "empty.gbundle",
    ]);
    w.ok(&["bundle", "sign", "empty.gbundle", "--key", "r1.key"]);
    w.ok(&["bundle", "sign", "empty.gbundle", "--key", "r2.key"]);
    let text = w.fails(&["bundle", "verify", "empty.gbundle", "--trust", "trust.json"]);
    assert!(
        text.contains("requires 1 golden vector(s) with non-empty inputs and outputs"),
        "{text}"
    );
    // The requirement can be set, and turned off by name.
    w.ok(&[
        "policy",
        "create",
        "--from",
        "trust.json",
        "--no-golden-requirement",
        "--out",
        "v2.json",
    ]);
    assert!(
        w.ok(&["policy", "inspect", "v2.json"])
            .contains("golden      not required")
    );
    w.ok(&[
        "policy",
        "create",
        "--from",
        "trust.json",
        "--golden-min",
        "3",
        "--golden-max-abs",
        "1e-4",
        "--out",
        "v3.json",
    ]);
    assert!(
        w.ok(&["policy", "inspect", "v3.json"])
            .contains("at least 3 vector(s)"),
    );
}

#[test]
fn fifo_bundle_is_refused_without_hanging() {
    let w = Workdir::new();
    w.release_setup("1");
    let status = Command::new("mkfifo")
        .arg(w.path("bundle.fifo"))
        .status()
        .unwrap();
    assert!(status.success());
    // No writer: a plain open would block forever.
    for args in [
        &["bundle", "verify", "bundle.fifo", "--trust", "trust.json"][..],
        &["bundle", "inspect", "bundle.fifo"][..],
    ] {
        let mut child = Command::new(GANTRY)
            .args(args)
            .current_dir(w.dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(20) {
                child.kill().unwrap();
                panic!("gantry {args:?} hung on a FIFO");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is a FIFO, not a regular file"),
            "{args:?}: {stderr}"
        );
    }
}
