//! Test harness: starts the real `gantry-agent` binary with the simulated NVML on a
//! loopback port chosen by the kernel, and reads its endpoint like Prometheus would.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_nvml_sim::ControlFile;

pub mod bundles;

pub const AGENT: &str = env!("CARGO_BIN_EXE_gantry-agent");

/// A running agent; killed when dropped.
pub struct Agent {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    pub dir: tempfile::TempDir,
}

/// Builds an agent command line.
pub struct AgentBuilder {
    args: Vec<String>,
    dir: tempfile::TempDir,
    config: Option<String>,
    env: Vec<(String, String)>,
}

impl AgentBuilder {
    pub fn new() -> Self {
        Self {
            args: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            config: None,
            env: Vec::new(),
        }
    }

    /// The simulated NVML with `gpus` GPUs of `model`.
    pub fn simulate(mut self, gpus: u32, model: &str) -> Self {
        self.args.extend([
            "--simulate-gpus".into(),
            gpus.to_string(),
            "--simulate-model".into(),
            model.into(),
        ]);
        self
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the agent.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes a configuration file and passes it with `--config`.
    pub fn config(mut self, text: &str) -> Self {
        self.config = Some(text.to_owned());
        self
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The simulated NVML's control file, created before the agent starts.
    pub fn control(&self) -> ControlFile {
        std::fs::create_dir_all(self.state_dir()).unwrap();
        ControlFile::open(self.state_dir().join("nvml-sim.json"))
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(AGENT);
        cmd.args(["--log-format", "json", "run"]);
        if !self.args.iter().any(|a| a == "--state-dir") {
            cmd.arg("--state-dir").arg(self.state_dir());
        }
        for (flag, default) in [
            ("--metrics-listen", "127.0.0.1:0"),
            ("--interval", "100ms"),
            ("--kernel-log", ""),
        ] {
            if !self.args.iter().any(|a| a == flag) {
                cmd.args([flag, default]);
            }
        }
        if let Some(text) = &self.config {
            let path = self.dir.path().join("agent.toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        } else {
            // Never pick up a configuration installed on the machine running the tests.
            let path = self.dir.path().join("empty.toml");
            std::fs::write(&path, "").unwrap();
            cmd.arg("--config").arg(path);
        }
        cmd.args(&self.args)
            .env("GANTRY_LOG", "info")
            .env_remove("GANTRY_AGENT_CONFIG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs the agent to completion (for configuration errors).
    pub fn run_to_exit(self) -> (ExitStatus, String) {
        let output = self
            .command()
            .stdout(Stdio::null())
            .output()
            .expect("agent runs");
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Starts the agent and waits until its endpoint listens.
    pub fn start(self) -> Agent {
        let mut child = self
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                    && event["message"] == "metrics endpoint listening"
                {
                    let addr: SocketAddr = event["addr"].as_str().unwrap().parse().unwrap();
                    let _ = addr_tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = addr_rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!(
                "agent did not start listening; log:\n{}",
                logs.lock().unwrap().join("\n")
            );
        };
        Agent {
            child,
            addr,
            logs,
            dir: self.dir,
        }
    }
}

/// One HTTP/1.0 GET against the agent; returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to agent");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

impl Agent {
    pub fn metrics(&self) -> Metrics {
        Metrics(http_get(self.addr, "/metrics"))
    }

    /// Polls `/metrics` until `check` holds; panics with the last page otherwise.
    pub fn wait_metrics(&self, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let metrics = self.metrics();
            if check(&metrics) {
                return metrics;
            }
            assert!(
                Instant::now() <= deadline,
                "timed out waiting for {what}; last /metrics:\n{}",
                metrics.0
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until at least `n` more samples were taken than now.
    pub fn wait_samples(&self, n: f64) -> Metrics {
        let start = self
            .metrics()
            .value("gantry_agent_samples_total", &[])
            .unwrap_or(0.0);
        self.wait_metrics("more samples", |m| {
            m.value("gantry_agent_samples_total", &[])
                .is_some_and(|v| v >= start + n)
        })
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Runs `gantry-agent status` against this agent.
    pub fn status_cli(&self, json: bool) -> String {
        let mut cmd = Command::new(AGENT);
        cmd.args(["status", "--agent", &self.addr.to_string()]);
        if json {
            cmd.arg("--json");
        }
        let output = cmd.output().expect("status runs");
        assert!(
            output.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn control(&self) -> ControlFile {
        ControlFile::open(self.state_dir().join("nvml-sim.json"))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/metrics` page.
pub struct Metrics(pub String);

impl Metrics {
    /// Samples of `name` whose labels include all of `labels`.
    pub fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                let matches = labels.iter().all(|(k, v)| {
                    label_text
                        .split(',')
                        .any(|pair| pair == format!("{k}=\"{v}\""))
                });
                matches.then(|| (label_text.to_owned(), value.parse().unwrap()))
            })
            .collect()
    }

    /// The single sample of `name` with `labels`, if present.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let values = self.values(name, labels);
        assert!(
            values.len() <= 1,
            "{name} {labels:?} matches {} series",
            values.len()
        );
        values.first().map(|(_, v)| *v)
    }

    pub fn has_family(&self, name: &str) -> bool {
        self.0.lines().any(|l| {
            l == format!("# TYPE {name} gauge") || l.starts_with(&format!("# TYPE {name} "))
        })
    }
}

/// Path of the simulated library the agent finds on its own.
pub fn sim_library_path() -> PathBuf {
    Path::new(AGENT)
        .parent()
        .unwrap()
        .join("deps")
        .join(gantry_nvml_sim::LIBRARY_FILE_NAME)
}

/// Runs `promtool check metrics` on `page`; returns its exit code and findings.
pub fn promtool(page: &str) -> (i32, String) {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool is needed for this test and could not be run ({e}); `scripts/test.sh` installs \
             Debian's `prometheus` package, which provides it"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), findings)
}
