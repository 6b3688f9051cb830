//! `gantry-agent import` against a hostile file and a hostile history: a FIFO that answers
//! two reads differently, a stored manifest swapped after verification, an old but validly
//! signed version, imports racing each other, and staging left by a killed import.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry_agent::bundle::store::{BundleStore, ModelBundles};
use support::AGENT;
use support::bundles::{onnxruntime, write_bundle, write_policy};

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        write_policy(&dir.path().join("trust.json"));
        std::fs::write(
            dir.path().join("agent.toml"),
            format!(
                "[inference]\nonnxruntime = \"{}\"\n[trust]\npolicy = \"{}\"\n",
                onnxruntime().display(),
                dir.path().join("trust.json").display()
            ),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store(&self) -> BundleStore {
        BundleStore::new(&self.path("state"))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(AGENT);
        command
            .args(args)
            .arg("--config")
            .arg(self.path("agent.toml"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if args[0] != "verify" {
            command.arg("--state-dir").arg(self.path("state"));
        }
        command
    }

    /// Runs the command, failing the test if it takes longer than `limit` (a hang).
    fn run(&self, args: &[&str], limit: Duration) -> (i32, String) {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                child.kill().unwrap();
                panic!("`gantry-agent {}` hung for {limit:?}", args.join(" "));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn import(&self, file: &str) -> (i32, String) {
        self.run(&["import", file], Duration::from_secs(60))
    }

    fn bundle(&self, file: &str, version: &str) -> PathBuf {
        let path = self.path(file);
        write_bundle(&path, "tiny_linear", "tiny-linear", version, |_| {});
        path
    }

    fn active(&self) -> String {
        self.linear().active.expect("an active bundle")
    }

    /// The `tiny-linear` model's bundles in the store.
    fn linear(&self) -> ModelBundles {
        self.store()
            .current()
            .unwrap()
            .models
            .get("tiny-linear")
            .cloned()
            .unwrap_or_default()
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn fifo_bundle_is_refused_without_hanging() {
    let node = Node::new();
    mkfifo(&node.path("bundle.fifo"));
    // No writer: a plain open would block forever.
    for args in [
        &["import", "bundle.fifo"][..],
        &["verify", "bundle.fifo"][..],
        &["verify", "bundle.fifo", "--golden"][..],
    ] {
        let (code, text) = node.run(args, Duration::from_secs(20));
        assert_eq!(code, 1, "{args:?}: {text}");
        assert!(
            text.contains("bundle.fifo is a FIFO, not a regular file"),
            "{args:?}: {text}"
        );
    }
    assert!(node.store().current().unwrap().models.is_empty());
}

#[test]
fn verify_then_use_the_stored_manifest_is_the_one_verified() {
    let node = Node::new();
    let bundle = node.bundle("v1.bundle", "1.0.0");
    let (code, text) = node.import("v1.bundle");
    assert_eq!(code, 0, "{text}");
    let digest = node.active();
    let stored = std::fs::read(node.store().bundle_dir(&digest).join("manifest.json")).unwrap();
    let reader =
        gantry_shared::bundle::BundleReader::open(std::fs::File::open(&bundle).unwrap()).unwrap();
    assert_eq!(
        stored,
        reader.manifest_bytes(),
        "exactly the verified bytes"
    );
    assert_eq!(reader.id().as_str(), format!("sha256:{digest}"));
}

#[test]
fn verify_then_use_a_swapped_stored_manifest_is_refused_when_loaded() {
    let node = Node::new();
    node.bundle("v1.bundle", "1.0.0");
    let (code, text) = node.import("v1.bundle");
    assert_eq!(code, 0, "{text}");
    let digest = node.active();
    // An unsigned manifest put in the verified bundle's place: golden vectors removed.
    let path = node.store().bundle_dir(&digest).join("manifest.json");
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["golden"] = serde_json::json!([]);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    let err = node.store().manifest(&digest).unwrap_err().to_string();
    assert!(
        err.contains("the stored bundle was altered") && err.contains(&digest),
        "{err}"
    );
}

#[test]
fn downgrade_to_an_older_validly_signed_version_is_refused() {
    let node = Node::new();
    node.bundle("v1.bundle", "1.0.0");
    node.bundle("v2.bundle", "1.1.0");
    node.bundle("v0.bundle", "0.9.0");
    assert_eq!(node.import("v1.bundle").0, 0);
    let v1 = node.active();
    assert_eq!(node.import("v2.bundle").0, 0);
    let v2 = node.active();

    // The node's own previous bundle: the controller's rollback, allowed.
    let (code, text) = node.import("v1.bundle");
    assert_eq!(code, 0, "{text}");
    assert_eq!(node.active(), v1);

    // Older than the newest this node ran, and not its previous: refused, nothing changes.
    let (code, text) = node.import("v0.bundle");
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("downgrade refused: tiny-linear 0.9.0 is older than 1.1.0"),
        "{text}"
    );
    let current = node.store().current().unwrap();
    let linear = node.linear();
    assert_eq!(linear.active.as_deref(), Some(v1.as_str()));
    assert_eq!(linear.previous.as_deref(), Some(v2.as_str()));
    assert_eq!(
        current.newest.get("tiny-linear").map(String::as_str),
        Some("1.1.0")
    );

    // The operator at the node can still decide otherwise, by name.
    let (code, text) = node.run(
        &["import", "v0.bundle", "--allow-downgrade"],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{text}");
    assert_ne!(node.active(), v1);
}

#[test]
fn concurrent_imports_never_lose_an_activation_or_delete_the_active_bundle() {
    let node = Node::new();
    let files: Vec<String> = (0..4).map(|i| format!("b{i}.bundle")).collect();
    for (i, file) in files.iter().enumerate() {
        write_bundle(
            &node.path(file),
            "tiny_linear",
            "tiny-linear",
            "1.0.0",
            |m| {
                m.created_at = format!("2026-11-2{i}T00:00:00Z");
            },
        );
    }
    let children: Vec<_> = files
        .iter()
        .map(|file| {
            node.command(&["import", file])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let linear = node.linear();
    let (active, previous) = (linear.active.unwrap(), linear.previous.unwrap());
    assert_ne!(active, previous);
    for digest in [&active, &previous] {
        assert!(
            node.store().manifest(digest).is_ok(),
            "bundle {digest} named in current.json is installed"
        );
    }
    let installed = std::fs::read_dir(node.path("state/bundles"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            (!name.starts_with('.') && name != "current.json").then_some(name)
        })
        .count();
    assert_eq!(
        installed, 2,
        "only the active and previous bundles are kept"
    );
}

#[test]
fn staging_left_by_a_killed_import_is_removed() {
    let node = Node::new();
    let stale = node.path("state/bundles/.staging-killed");
    std::fs::create_dir_all(stale.join("files")).unwrap();
    std::fs::write(stale.join("files/model.onnx"), vec![0u8; 1 << 20]).unwrap();
    node.bundle("v1.bundle", "1.0.0");
    let (code, text) = node.import("v1.bundle");
    assert_eq!(code, 0, "{text}");
    assert!(
        !stale.exists(),
        "the interrupted import's staging is removed"
    );
    let left: Vec<_> = std::fs::read_dir(node.path("state/bundles"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".staging-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn staging_left_by_a_killed_import_is_removed_when_the_agent_starts() {
    let builder = support::AgentBuilder::new().simulate(1, "h100");
    let stale = builder.state_dir().join("bundles/.staging-killed");
    std::fs::create_dir_all(stale.join("files")).unwrap();
    std::fs::write(stale.join("files/model.onnx"), vec![0u8; 1 << 20]).unwrap();
    let agent = builder.start();
    assert!(!stale.exists(), "removed before the agent listens");
    assert!(
        agent
            .logs()
            .iter()
            .any(|l| l.contains("removed an interrupted import's staging directory")),
        "{:?}",
        agent.logs()
    );
}

#[test]
fn onnx_runtime_writes_nothing_outside_the_state_directory() {
    let node = Node::new();
    node.bundle("v1.bundle", "1.0.0");
    let (home, tmp) = (node.path("home"), node.path("tmp"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    let out = node
        .command(&["import", "v1.bundle"])
        .env("HOME", &home)
        .env("TMPDIR", &tmp)
        .env_remove("XDG_CACHE_HOME")
        .env_remove("ORT_DISABLE_TELEMETRY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for dir in [&home, &tmp] {
        let written: Vec<_> = walk(dir);
        assert!(
            written.is_empty(),
            "written outside the state directory: {written:?}"
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        }
        found.push(path);
    }
    found
}

/// A store written by a version that served one model (`{"active", "previous"}` at the
/// top of `current.json`) is read as that model's bundles, and the next import of
/// another model adds it beside them.
#[test]
fn a_one_model_store_from_an_earlier_version_is_kept_as_that_models() {
    let node = Node::new();
    let v1 = node.bundle("v1.gbundle", "1.0.0");
    let v2 = node.bundle("v2.gbundle", "2.0.0");
    for bundle in [&v1, &v2] {
        let (code, text) = node.import(bundle.to_str().unwrap());
        assert_eq!(code, 0, "{text}");
    }
    let linear = node.linear();
    let (active, previous) = (linear.active.unwrap(), linear.previous.unwrap());
    std::fs::write(
        node.store().current_path(),
        format!(r#"{{"active": "{active}", "previous": "{previous}", "newest": {{"tiny-linear": "2.0.0"}}}}"#),
    )
    .unwrap();
    let current = node.store().current().unwrap();
    assert_eq!(
        current.models["tiny-linear"].active.as_deref(),
        Some(active.as_str())
    );
    assert_eq!(
        current.models["tiny-linear"].previous.as_deref(),
        Some(previous.as_str())
    );
    assert_eq!(current.last.as_deref(), Some(active.as_str()));

    let mlp = node.path("mlp.gbundle");
    write_bundle(&mlp, "tiny_mlp", "tiny-mlp", "1.0.0", |_| {});
    let (code, text) = node.import(mlp.to_str().unwrap());
    assert_eq!(code, 0, "{text}");
    let current = node.store().current().unwrap();
    assert_eq!(current.models.len(), 2, "{current:?}");
    assert_eq!(
        current.models["tiny-linear"].active.as_deref(),
        Some(active.as_str())
    );
    assert!(
        node.store().bundle_dir(&previous).is_dir(),
        "tiny-linear's previous bundle is kept"
    );
}
