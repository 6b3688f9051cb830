//! The demo's nodes: `gantry-agent` processes on simulated GPUs, each with its own
//! directory (configuration, state, log), its `KServe` v2 endpoint and its fault file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use gantry_shared::bundle::manifest::GoldenVector;

use super::DemoError;

/// How long an agent has to stop after SIGTERM before it is killed (the unit's
/// `TimeoutStopSec`).
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What an agent looks like to the demo.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) name: String,
    pub(super) gpus: u32,
    pub(super) model: &'static str,
    pub(super) labels: String,
    pub(super) dir: PathBuf,
    pub(super) inference: SocketAddr,
    pub(super) metrics: SocketAddr,
    child: Option<Child>,
}

/// A model's answer over `KServe` v2.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) model_version: String,
    pub(super) output: String,
    pub(super) data: Vec<f64>,
}

impl Node {
    /// Lays out the node's directory and configuration; nothing runs yet.
    pub(super) fn prepare(
        work: &Path,
        index: usize,
        trust: &Path,
        onnxruntime: &Path,
    ) -> Result<Self, DemoError> {
        let name = format!("gpu-node-{}", index + 1);
        // Every third node carries other GPUs, so a selector has something to leave out.
        let (model, gpus) = match index % 3 {
            0 => ("h100", 8),
            1 => ("h100", 4),
            _ => ("a100", 4),
        };
        let dir = work.join(&name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| DemoError::io(format!("create {}", dir.display()), e))?;
        let inference = free_tcp_port()?;
        let metrics = free_tcp_port()?;
        let config = format!(
            "# {name}: written by `gantry demo`\n\
             [uplink]\nheartbeat = \"500ms\"\nmax_backoff = \"2s\"\n\
             [trust]\npolicy = \"{}\"\n\
             [inference]\nonnxruntime = \"{}\"\nlisten = \"{inference}\"\ngrpc_listen = \"\"\n\
             [health]\nxid_window = \"5s\"\n",
            trust.display(),
            onnxruntime.display(),
        );
        let path = dir.join("agent.toml");
        std::fs::write(&path, config)
            .map_err(|e| DemoError::io(format!("write {}", path.display()), e))?;
        Ok(Self {
            labels: format!("gpu={model},rack=r{}", index + 1),
            name,
            gpus,
            model,
            dir,
            inference,
            metrics,
            child: None,
        })
    }

    pub(super) fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    pub(super) fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub(super) fn log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// `gantry-agent run`'s arguments for this node.
    pub(super) fn run_args(&self) -> Vec<String> {
        vec![
            "run".into(),
            "--config".into(),
            self.config().display().to_string(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
            "--simulate-gpus".into(),
            self.gpus.to_string(),
            "--simulate-model".into(),
            self.model.into(),
            "--interval".into(),
            "1s".into(),
            "--metrics-listen".into(),
            self.metrics.to_string(),
            "--kernel-log".into(),
            String::new(),
        ]
    }

    /// Starts `gantry-agent run`, its log going to `agent.log`.
    pub(super) fn start(&mut self, agent: &Path) -> Result<(), DemoError> {
        let log = std::fs::File::create(self.log())
            .map_err(|e| DemoError::io(format!("create {}", self.log().display()), e))?;
        let child = Command::new(agent)
            .args(self.run_args())
            .env("GANTRY_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            // Its own process group, as every command the demo runs (see `run_quiet`): a
            // Ctrl-C is the demo's to handle, and the demo stops its agents itself.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| DemoError::io(format!("start {}", agent.display()), e))?;
        self.child = Some(child);
        Ok(())
    }

    /// Fails when the agent has exited.
    pub(super) fn check_running(&mut self) -> Result<(), DemoError> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            if super::console::killed_by_interruption(status) {
                return Err(DemoError::Interrupted);
            }
            return Err(DemoError::AgentExited {
                node: self.name.clone(),
                status: status.to_string(),
                log: self.log(),
            });
        }
        Ok(())
    }

    /// Scripts the simulated GPUs (the NVML library re-reads this file every sample).
    pub(super) fn set_faults(&self, faults: &serde_json::Value) -> Result<(), DemoError> {
        let path = self.state_dir().join("nvml-sim.json");
        let staged = path.with_extension("json.new");
        std::fs::write(&staged, faults.to_string())
            .and_then(|()| std::fs::rename(&staged, &path))
            .map_err(|e| DemoError::io(format!("write {}", path.display()), e))
    }

    /// Sends a golden vector's inputs to the node's `KServe` v2 endpoint.
    pub(super) fn infer(&self, model: &str, golden: &GoldenVector) -> Result<Answer, DemoError> {
        let inputs: Vec<serde_json::Value> = golden
            .inputs
            .iter()
            .map(|(name, t)| {
                serde_json::json!({
                    "name": name,
                    "shape": t.shape,
                    "datatype": gantry_shared::tensor::datatype_name(t.dtype),
                    "data": t.inline(),
                })
            })
            .collect();
        let body = serde_json::json!({ "inputs": inputs });
        let path = format!("/v2/models/{model}/infer");
        let answer = post_json(self.inference, &path, &body).map_err(|e| DemoError::Inference {
            node: self.name.clone(),
            message: gantry_shared::bundle::outcome::error_chain(&e),
        })?;
        let bad = |what: &str| DemoError::Inference {
            node: self.name.clone(),
            message: format!("the answer has no {what}: {answer}"),
        };
        let output = &answer["outputs"][0];
        Ok(Answer {
            model_version: answer["model_version"]
                .as_str()
                .ok_or_else(|| bad("model_version"))?
                .to_owned(),
            output: output["name"]
                .as_str()
                .ok_or_else(|| bad("output name"))?
                .to_owned(),
            data: output["data"]
                .as_array()
                .ok_or_else(|| bad("output data"))?
                .iter()
                .filter_map(serde_json::Value::as_f64)
                .collect(),
        })
    }

    /// The last `n` lines of the agent's log.
    pub(super) fn log_tail(&self, n: usize) -> Vec<String> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| (*l).to_owned())
            .collect()
    }

    /// SIGTERM, then the exit status; killed when it does not stop in time. `None` when
    /// it was not running.
    pub(super) fn stop(&mut self) -> Option<Result<ExitStatus, StopError>> {
        let mut child = self.child.take()?;
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).ok()?)?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(Ok(status)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Some(Err(StopError::Killed));
                }
                Err(e) => return Some(Err(StopError::Wait(e))),
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP port free on loopback right now, and not handed out before in this demo: the
/// kernel may offer a port again as soon as its probe socket closes, and two agents given
/// the same port would collide when they bind it.
fn free_tcp_port() -> Result<SocketAddr, DemoError> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().expect("ports handed out");
    for _ in 0..100 {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| DemoError::io("find a free port on 127.0.0.1", e))?;
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return Ok(addr);
        }
    }
    Err(DemoError::io(
        "find a free port on 127.0.0.1",
        std::io::Error::other("the kernel kept offering ports already handed out"),
    ))
}

/// Why an agent did not stop on its own.
#[derive(Debug, thiserror::Error)]
pub(super) enum StopError {
    #[error("did not stop within {}s of SIGTERM; killed", STOP_TIMEOUT.as_secs())]
    Killed,
    #[error("cannot wait for it")]
    Wait(#[source] std::io::Error),
}

/// Why an HTTP exchange with an agent's inference endpoint failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot exchange with {addr}")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} answered something that is not HTTP")]
    NotHttp { addr: SocketAddr },
    #[error("{addr} answered {status}: {body}")]
    Status {
        addr: SocketAddr,
        status: String,
        body: String,
    },
    #[error("{addr} answered with invalid JSON")]
    Json {
        addr: SocketAddr,
        #[source]
        source: serde_json::Error,
    },
}

/// `POST path` with a JSON body over HTTP/1.0; the answer's JSON body when it is 200.
fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, HttpError> {
    let body = body.to_string();
    let exchange = |source| HttpError::Exchange { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|source| HttpError::Connect { addr, source })?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(exchange)?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(exchange)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or(HttpError::NotHttp { addr })?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(HttpError::Status {
            addr,
            status: status.to_owned(),
            body: body.to_owned(),
        });
    }
    serde_json::from_str(body).map_err(|source| HttpError::Json { addr, source })
}
