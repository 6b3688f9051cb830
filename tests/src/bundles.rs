//! Bundles for end-to-end tests: a controller that trusts a fresh signing key, signed
//! bundles of the test models, pushes, agent configurations that serve inference, and the
//! inference call the tests make.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Agent, Controller};

pub fn onnxruntime() -> PathBuf {
    let path = std::env::var_os("GANTRY_ONNXRUNTIME").map(PathBuf::from).expect(
        "GANTRY_ONNXRUNTIME is not set: run the suite with scripts/test.sh, which fetches ONNX Runtime's library from the PyPI wheel",
    );
    assert!(
        path.is_file(),
        "GANTRY_ONNXRUNTIME={} does not exist",
        path.display()
    );
    path
}

/// The Python interpreter with Triton's clients and Python ONNX Runtime
/// (`scripts/tools.sh python-clients`, which `scripts/test.sh` runs).
pub fn python_clients() -> PathBuf {
    let path = std::env::var_os("GANTRY_PYTHON").map(PathBuf::from).expect(
        "GANTRY_PYTHON is not set: run the suite with scripts/test.sh, which installs Triton's Python clients from PyPI into .cache/venv",
    );
    assert!(
        path.is_file(),
        "GANTRY_PYTHON={} does not exist",
        path.display()
    );
    path
}

pub fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/models")
}

/// `gantry bundle sign BUNDLE --key KEY`.
pub fn sign(controller: &Controller, bundle: &Path, key: &Path) {
    controller.cli_ok(&[
        "bundle",
        "sign",
        bundle.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
}

/// A signed bundle of `tiny_linear` named `tiny-linear` at `version`, signed with `key`.
pub fn make_bundle(controller: &Controller, dir: &Path, version: &str, key: &Path) -> PathBuf {
    make_bundle_with(
        controller,
        dir,
        version,
        key,
        &models().join("tiny_linear.golden.json"),
        &[],
    )
}

/// A signed `tiny-linear` bundle at `version` whose golden vectors the model does not
/// reproduce (the first expected output changed): it verifies, and a node refuses it.
pub fn make_wrong_golden_bundle(
    controller: &Controller,
    dir: &Path,
    version: &str,
    key: &Path,
) -> PathBuf {
    let mut golden: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models().join("tiny_linear.golden.json")).unwrap())
            .unwrap();
    golden[0]["outputs"]["y"]["data"][0] = serde_json::json!(99.0);
    let wrong = dir.join(format!("wrong-golden-{version}.json"));
    std::fs::write(&wrong, golden.to_string()).unwrap();
    make_bundle_with(controller, dir, version, key, &wrong, &[])
}

pub fn make_bundle_with(
    controller: &Controller,
    dir: &Path,
    version: &str,
    key: &Path,
    golden: &Path,
    extra: &[&str],
) -> PathBuf {
    let out = dir.join(format!("linear-{version}.gbundle"));
    let model = models().join("tiny_linear.onnx");
    let mut args = vec![
        "bundle",
        "create",
        "--model",
        model.to_str().unwrap(),
        "--golden",
        golden.to_str().unwrap(),
        "--name",
        "tiny-linear",
        "--version",
        version,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    controller.cli_ok(&args);
    sign(controller, &out, key);
    out
}

pub fn infer(addr: SocketAddr) -> Option<serde_json::Value> {
    let body = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "POST /v2/models/tiny-linear/infer HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| serde_json::from_str(body).ok())?
}

/// POSTs a JSON `body` to `path` on `addr`: the status code and the answer's JSON (`Null`
/// when it is not JSON). `None` when the connection fails.
pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, serde_json::from_str(body).unwrap_or_default()))
}

pub fn bundles_status(agent: &Agent) -> serde_json::Value {
    agent
        .status()
        .map(|s| s["bundles"].clone())
        .unwrap_or_default()
}

/// An agent configuration serving inference on a free loopback port, trusting `policy`.
pub fn agent_config(library: &Path, policy: &Path) -> (String, SocketAddr) {
    let infer_addr = crate::free_tcp_port();
    let config = format!(
        "[uplink]\nheartbeat = \"200ms\"\nmax_backoff = \"500ms\"\n[inference]\nonnxruntime = \"{}\"\nlisten = \"{infer_addr}\"\ngrpc_listen = \"\"\n[trust]\npolicy = \"{}\"\n",
        library.display(),
        policy.display()
    );
    (config, infer_addr)
}

/// `gantry bundle push --json`, parsed.
pub fn push(controller: &Controller, bundle: &Path) -> serde_json::Value {
    serde_json::from_str(&controller.cli_ok(&[
        "bundle",
        "push",
        bundle.to_str().unwrap(),
        "--json",
    ]))
    .unwrap()
}

/// A controller that trusts a fresh key `ml.key` in `work`; returns it, the key and the
/// signed policy (which the agents use too).
pub fn trusting_controller(work: &Path) -> (Controller, PathBuf, PathBuf) {
    let controller = Controller::start();
    let key = work.join("ml.key");
    controller.cli_ok(&["keygen", "--out", key.to_str().unwrap()]);
    let policy = work.join("trust.json");
    controller.cli_ok(&[
        "policy",
        "create",
        "--key",
        &format!("ml={}.pub", key.display()),
        "--threshold",
        "1",
        "--out",
        policy.to_str().unwrap(),
    ]);
    controller.cli_ok(&[
        "policy",
        "sign",
        policy.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    std::fs::copy(&policy, controller.home().join("trust.json")).unwrap();
    (controller, key, policy)
}

/// `ref.npz` (in `work`) from `NumPy` and Python ONNX Runtime: 4000 rows of N(0, 1) for `tiny_mlp`'s
/// eight inputs, and its three outputs on them.
pub fn reference_data(work: &Path) -> PathBuf {
    let out = work.join("ref.npz");
    let run = Command::new(python_clients())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/reference_data.py"))
        .arg("--model")
        .arg(models().join("tiny_mlp.onnx"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// A signed bundle of `tiny_mlp` named `mlp` at `version`, profiled on `reference`
/// (drift above PSI 0.25 degrades the node).
pub fn monitored_bundle(
    controller: &Controller,
    work: &Path,
    key: &Path,
    reference: &Path,
    version: &str,
) -> PathBuf {
    let out = work.join(format!("mlp-{version}.gbundle"));
    controller.cli_ok(&[
        "bundle",
        "create",
        "--model",
        models().join("tiny_mlp.onnx").to_str().unwrap(),
        "--golden",
        models().join("tiny_mlp.golden.json").to_str().unwrap(),
        "--name",
        "mlp",
        "--version",
        version,
        "--reference-data",
        reference.to_str().unwrap(),
        "--drift-threshold",
        "0.25",
        "--out",
        out.to_str().unwrap(),
    ]);
    sign(controller, &out, key);
    out
}
