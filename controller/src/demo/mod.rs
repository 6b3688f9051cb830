//! `gantry demo`: the main job on one machine. The controller runs embedded in this
//! process; a few `gantry-agent` processes run on simulated GPUs; everything talks over
//! loopback QUIC with mutual TLS, exactly as a fleet does. The demo drives them with the
//! commands an operator types (`gantry …`, `gantry-agent …`), printing each and what it
//! answered: keys and a trust policy, enrollment, the fleet table, a signed bundle, a
//! canary rollout, an inference request, a rollout rolled back automatically when the
//! canary's GPU falls off the bus, the KPIs, `audit verify` and the audit report.
//!
//! Everything lives in one temporary directory (`$DEMO` in the output). Agents are
//! stopped with SIGTERM and the controller shut down whatever happens; the directory is
//! removed on success and kept, with every log, on failure or with `--keep`.

mod console;
mod node;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gantry_shared::bundle::manifest::GoldenVector;
use gantry_shared::layout;
use gantry_shared::protocol::admin::{Request, Response};
use gantry_shared::protocol::rollout::{Rollout, State};
use tokio_util::sync::CancellationToken;

use crate::client::{AdminClient, ClientError};
use crate::home::{AdminIdentity, Home};
use crate::server::{self, ServeConfig, ServeError};
use console::{Console, arg};
use node::Node;

/// The sample model every bundle of the demo carries: a 4 → 2 linear layer.
const MODEL: &[u8] = include_bytes!("../../../testdata/models/tiny_linear.onnx");
/// Its golden vectors (inputs and the outputs they must give).
const GOLDEN: &[u8] = include_bytes!("../../../testdata/models/tiny_linear.golden.json");
const MODEL_NAME: &str = "tiny-linear";
const STEPS: usize = 11;

/// `gantry demo`'s options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Agents to start, 2 to 8.
    pub agents: usize,
    /// `gantry-agent`; default: beside this executable, else on `PATH`.
    pub agent_binary: Option<PathBuf>,
    /// ONNX Runtime's library; default: `GANTRY_ONNXRUNTIME`, else the packaged one.
    pub onnxruntime: Option<PathBuf>,
    /// Keep the working directory (configuration, state, logs) after a successful run.
    pub keep: bool,
}

/// A condition the demo waits for: met, or how far it got.
enum Poll<T> {
    Done(T),
    Waiting(String),
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("--agents {0}: the demo runs 2 to 8 agents")]
    Agents(usize),
    #[error(
        "gantry-agent is not beside {beside} nor on PATH: build the workspace (`cargo build --workspace`), install the gantry-agent package, or pass --agent-binary"
    )]
    AgentMissing { beside: PathBuf },
    #[error("{path} does not exist (--agent-binary)")]
    AgentNotFound { path: PathBuf },
    #[error(
        "ONNX Runtime's library is not at {looked}: run scripts/demo.sh (it fetches the library), install the gantry-agent package, or pass --onnxruntime PATH (or set GANTRY_ONNXRUNTIME)"
    )]
    OnnxRuntimeMissing { looked: String },
    #[error("cannot {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("the embedded controller stopped")]
    Controller(#[source] ServeError),
    #[error("admin call to the embedded controller failed")]
    Client(#[from] ClientError),
    #[error("{node}'s agent exited ({status}); its log is {log}")]
    AgentExited {
        node: String,
        status: String,
        log: PathBuf,
    },
    #[error("inference request to {node}: {message}")]
    Inference { node: String, message: String },
    #[error("{what} within {}s; {detail}", timeout.as_secs())]
    Timeout {
        what: String,
        timeout: Duration,
        detail: String,
    },
    #[error("rollout {id} ended {state}{}", failure.as_deref().map(|f| format!(": {f}")).unwrap_or_default())]
    Rollout {
        id: String,
        state: &'static str,
        failure: Option<String>,
    },
    #[error("{0}")]
    Unexpected(String),
    #[error("interrupted; everything the demo started is stopped and its directory removed")]
    Interrupted,
    #[error("step {step} of {STEPS} failed; the logs are kept in {dir}")]
    Failed {
        step: usize,
        dir: PathBuf,
        #[source]
        source: Box<DemoError>,
    },
}

impl DemoError {
    fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            action: action.into(),
            source,
        }
    }
}

/// Runs the demo. Prints as it goes; returns once everything it started is stopped.
pub fn run(options: &Options) -> Result<(), DemoError> {
    if !(2..=8).contains(&options.agents) {
        return Err(DemoError::Agents(options.agents));
    }
    let gantry = console::this_executable()?;
    let agent = find_agent(&gantry, options.agent_binary.as_deref())?;
    let onnxruntime = find_onnxruntime(options.onnxruntime.as_deref())?;
    let work = tempfile::Builder::new()
        .prefix("gantry-demo-")
        .tempdir()
        .map_err(|e| DemoError::io("create a temporary directory", e))?;
    log_to(&work.path().join("controller.log"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DemoError::io("start the controller's runtime", e))?;
    let interrupted = watch_signals(&runtime)?;

    println!(
        "Gantry demo: an embedded controller and {} agents on simulated GPUs, over loopback QUIC with mutual TLS.",
        options.agents
    );
    println!("  $DEMO         {}", work.path().display());
    println!("  gantry-agent  {}", agent.display());
    println!("  ONNX Runtime  {}", onnxruntime.display());

    let mut demo = Demo {
        console: Console::new(work.path(), STEPS),
        work: work.path().to_owned(),
        identity: work.path().join("controller").join("admin.identity"),
        gantry,
        agent,
        onnxruntime,
        runtime,
        interrupted,
        controller: None,
        nodes: Vec::new(),
        events_seen: HashMap::new(),
    };
    let outcome = demo.steps(options.agents);
    // The commands the demo runs are in process groups of their own, so a Ctrl-C does not
    // fail them; a step that fails while one arrives is still reported as the interruption.
    let outcome = if demo.interrupted.is_cancelled() {
        Err(DemoError::Interrupted)
    } else {
        outcome
    };
    let failed_step = demo.console.current();
    let stopped = demo.stop_all(outcome.is_err());
    let outcome = outcome.and(stopped);
    match outcome {
        Ok(()) => {
            let took = demo.console.elapsed_s();
            if options.keep {
                let dir = work.keep();
                println!(
                    "\nDemo finished in {took:.1} s; everything it started is stopped. Kept: {}",
                    dir.display()
                );
            } else {
                println!(
                    "\nDemo finished in {took:.1} s; everything it started is stopped and $DEMO is removed."
                );
            }
            Ok(())
        }
        Err(DemoError::Interrupted) => {
            drop(work);
            Err(DemoError::Interrupted)
        }
        Err(error) => {
            demo.print_logs();
            Err(DemoError::Failed {
                step: failed_step,
                dir: work.keep(),
                source: Box::new(error),
            })
        }
    }
}

/// A token cancelled by SIGINT (Ctrl-C) or SIGTERM: the demo then stops what it started
/// and cleans up instead of dying with its agents left behind.
fn watch_signals(runtime: &tokio::runtime::Runtime) -> Result<CancellationToken, DemoError> {
    let token = CancellationToken::new();
    runtime
        .block_on(async { gantry_net::signals::cancel_on_signals(token.clone()) })
        .map_err(|e| DemoError::io("watch for Ctrl-C", e))?;
    Ok(token)
}

/// The controller's log goes to a file: the demo's output is the commands and answers.
fn log_to(path: &Path) -> Result<(), DemoError> {
    gantry_net::logging::init_to_file(path, "info")
        .map_err(|e| DemoError::io(format!("create {}", path.display()), e))
}

fn find_agent(gantry: &Path, explicit: Option<&Path>) -> Result<PathBuf, DemoError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(DemoError::AgentNotFound {
                path: path.to_owned(),
            })
        };
    }
    let beside = gantry.with_file_name("gantry-agent");
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("gantry-agent"))
        .find(|p| p.is_file())
        .ok_or(DemoError::AgentMissing { beside })
}

fn find_onnxruntime(explicit: Option<&Path>) -> Result<PathBuf, DemoError> {
    let path = explicit
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("GANTRY_ONNXRUNTIME").map(PathBuf::from))
        // Where the gantry-agent package installs it.
        .unwrap_or_else(|| Path::new(layout::LIBRARY_DIR).join(layout::ONNXRUNTIME_LIBRARY));
    if path.is_file() {
        Ok(path)
    } else {
        Err(DemoError::OnnxRuntimeMissing {
            looked: path.display().to_string(),
        })
    }
}

/// The controller, running in this process on its own runtime.
struct Embedded {
    runtime: tokio::runtime::Handle,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    client: Option<AdminClient>,
}

impl Embedded {
    fn start(
        runtime: tokio::runtime::Handle,
        home: Home,
        listen: SocketAddr,
    ) -> Result<Self, DemoError> {
        let shutdown = CancellationToken::new();
        let (ready, bound) = tokio::sync::oneshot::channel();
        let config = ServeConfig {
            home,
            listen,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            retention: Duration::from_secs(7 * 24 * 3600),
            new_store: false,
            certs: crate::certs::CertPolicy::default(),
            clock: crate::certs::Clock::default(),
            auto_cordon: crate::cordon::AutoCordon::parse("gpu.xid").expect("default rules"),
            console_listen: None,
            console_session: Duration::from_secs(8 * 3600),
            remote_write: None,
            otlp: None,
        };
        let task = runtime.spawn(server::serve(config, shutdown.clone(), Some(ready)));
        match runtime.block_on(bound) {
            Ok((addr, metrics)) => Ok(Self {
                runtime,
                shutdown,
                task: Some(task),
                addr,
                metrics,
                client: None,
            }),
            Err(_) => match runtime.block_on(task) {
                Ok(Err(e)) => Err(DemoError::Controller(e)),
                _ => Err(DemoError::Unexpected(
                    "the embedded controller stopped before listening".into(),
                )),
            },
        }
    }

    fn call(&mut self, identity: &Path, request: Request) -> Result<Response, DemoError> {
        if self
            .task
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
        {
            let task = self.task.take().expect("checked above");
            return Err(match self.runtime.block_on(task) {
                Ok(Err(e)) => DemoError::Controller(e),
                _ => DemoError::Unexpected("the embedded controller stopped".into()),
            });
        }
        if self.client.is_none() {
            let identity = AdminIdentity::load(identity).map_err(ClientError::from)?;
            self.client = Some(
                self.runtime
                    .block_on(AdminClient::connect(&identity, Some(self.addr)))?,
            );
        }
        let client = self.client.as_ref().expect("connected above");
        Ok(self.runtime.block_on(client.call(request))?)
    }

    /// Shuts the controller down and waits for it.
    fn stop(&mut self) -> Result<(), DemoError> {
        self.client = None;
        self.shutdown.cancel();
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match self.runtime.block_on(task) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DemoError::Controller(e)),
            Err(e) => Err(DemoError::Unexpected(format!(
                "the embedded controller failed: {e}"
            ))),
        }
    }
}

struct Demo {
    console: Console,
    work: PathBuf,
    identity: PathBuf,
    gantry: PathBuf,
    agent: PathBuf,
    onnxruntime: PathBuf,
    /// Runs the embedded controller and watches for Ctrl-C.
    runtime: tokio::runtime::Runtime,
    interrupted: CancellationToken,
    controller: Option<Embedded>,
    nodes: Vec<Node>,
    /// Rollout events already printed, per rollout.
    events_seen: HashMap<String, usize>,
}

impl Demo {
    fn steps(&mut self, agents: usize) -> Result<(), DemoError> {
        self.keys_and_policy()?;
        self.start_controller()?;
        self.enroll_nodes(agents)?;
        self.console.step(
            "The fleet",
            "Every node reports its GPUs over its uplink; the controller keeps the latest \
             sample of each and the history.",
        );
        self.gantry(&["fleet", "ls"])?;
        self.gantry(&["fleet", "top", "--once"])?;
        let golden = self.bundles()?;
        let canary = self.canary_rollout()?;
        self.console.step(
            "An inference request",
            "Local applications call the active model over the KServe v2 / Open Inference \
             Protocol, so clients such as Triton's work unchanged.",
        );
        self.inference(&canary, &golden, "1.0.0")?;
        self.failed_rollout(&golden)?;
        self.console.step(
            "The fleet afterwards, and the rollout KPIs",
            "Deployment frequency, lead time, change failure rate and time to recovery, from \
             the controller's records of the two rollouts.",
        );
        self.gantry(&["fleet", "ls"])?;
        self.gantry(&["report", "kpis", "--window", "1h"])?;
        self.console.step(
            "The audit log",
            "Every action above — the trust policy, enrollments, pushes with their signers, \
             assignments, rollout steps, the nodes' activations and the rollback — is in a \
             hash-chained log. `audit verify` proves the chain intact; `audit report` answers \
             the auditor: what ran where, since when, signed by whom, valid under which policy.",
        );
        self.gantry(&["audit", "verify"])?;
        self.gantry(&["audit", "report", "--since", "1h"])?;
        Ok(())
    }

    fn check_interrupted(&self) -> Result<(), DemoError> {
        if self.interrupted.is_cancelled() {
            Err(DemoError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// `gantry ARGS`, shown with what it answered.
    fn gantry(&self, args: &[&str]) -> Result<String, DemoError> {
        self.check_interrupted()?;
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        self.console.run(
            "gantry",
            &self.gantry,
            &args,
            &[("GANTRY_IDENTITY", self.identity.as_os_str())],
        )
    }

    fn gantry_quiet(&self, args: &[String]) -> Result<String, DemoError> {
        console::run_quiet(
            &self.gantry,
            args,
            &[("GANTRY_IDENTITY", self.identity.as_os_str())],
        )
    }

    fn path(&self, name: &str) -> String {
        arg(&self.work.join(name))
    }

    fn keys_and_policy(&mut self) -> Result<(), DemoError> {
        self.console.step(
            "A signing key and the trust policy",
            "The ML team's ed25519 key signs bundles. The trust policy names the keys a \
             node (and the controller) accepts and how many signatures a bundle needs; it is \
             signed itself, so later changes must come from keys already trusted.",
        );
        let key = self.path("ml.key");
        let trust = self.path("trust.json");
        self.gantry(&["keygen", "--out", &key])?;
        self.gantry(&[
            "policy",
            "create",
            "--key",
            &format!("ml={key}.pub"),
            "--threshold",
            "1",
            "--out",
            &trust,
        ])?;
        self.gantry(&["policy", "sign", &trust, "--key", &key])?;
        Ok(())
    }

    fn start_controller(&mut self) -> Result<(), DemoError> {
        self.console.step(
            "The controller",
            "`gantry init` makes the fleet CA, the controller's certificate and the first \
             admin's identity; the controller then runs embedded in this process \
             (`gantry serve` on a real site), with the embedded store.",
        );
        let listen = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map_err(|e| DemoError::io("find a free UDP port on 127.0.0.1", e))?;
        let dir = self.work.join("controller");
        self.gantry(&["init", "--dir", &arg(&dir), "--listen", &listen.to_string()])?;
        let trust = dir.join("trust.json");
        std::fs::copy(self.work.join("trust.json"), &trust).map_err(|e| {
            DemoError::io(format!("copy the trust policy to {}", trust.display()), e)
        })?;
        self.console.say(&format!(
            "$ cp {} {}   # pushes are checked against it",
            self.path("trust.json"),
            arg(&trust)
        ));
        let controller = Embedded::start(self.runtime.handle().clone(), Home::new(dir), listen)?;
        self.console.say(&format!(
            "controller listening on {} (QUIC, mutual TLS); fleet metrics on http://{}/metrics",
            controller.addr,
            controller
                .metrics
                .map_or_else(|| "-".to_owned(), |m| m.to_string())
        ));
        self.controller = Some(controller);
        Ok(())
    }

    fn call(&mut self, request: Request) -> Result<Response, DemoError> {
        let identity = self.identity.clone();
        self.controller
            .as_mut()
            .ok_or_else(|| DemoError::Unexpected("the controller is not running".into()))?
            .call(&identity, request)
    }

    fn enroll_nodes(&mut self, agents: usize) -> Result<(), DemoError> {
        self.console.step(
            "Nodes enroll and start",
            "Each node gets a single-use join token that pins the controller's certificate. \
             `gantry-agent enroll` makes the node's key on the node (it never leaves it) and \
             gets a certificate naming the node; `gantry-agent run` then samples its GPUs \
             (here: the simulated NVML library), buffers every sample durably and streams \
             them to the controller.",
        );
        let addr = self
            .controller
            .as_ref()
            .map(|c| c.addr)
            .ok_or_else(|| DemoError::Unexpected("the controller is not running".into()))?;
        let trust = self.work.join("trust.json");
        for index in 0..agents {
            let mut node = Node::prepare(&self.work, index, &trust, &self.onnxruntime)?;
            let args = [
                "token".to_owned(),
                "create".into(),
                "--labels".into(),
                node.labels.clone(),
                "--ttl".into(),
                "10m".into(),
            ];
            self.console.say(&format!(
                "$ gantry token create --labels {} --ttl 10m",
                node.labels
            ));
            let token = self.gantry_quiet(&args)?.trim().to_owned();
            let alias = format!("$TOKEN_{}", index + 1);
            self.console.say(&format!(
                "  {alias}={}…  (single use, expires in 10 min)",
                token.chars().take(32).collect::<String>()
            ));
            self.console.alias(&token, &alias);
            let enroll: Vec<String> = [
                "enroll",
                "--config",
                &arg(&node.config()),
                "--state-dir",
                &arg(&node.state_dir()),
                "--controller",
                &addr.to_string(),
                "--token",
                &token,
                "--name",
                &node.name,
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            self.console
                .run("gantry-agent", &self.agent, &enroll, &[])?;
            self.console.say(&format!(
                "$ gantry-agent {} &   # {} x {}, KServe v2 on {}",
                node.run_args()
                    .iter()
                    .map(|a| if a.is_empty() {
                        "\"\"".to_owned()
                    } else {
                        a.clone()
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                node.gpus,
                node.model,
                node.inference
            ));
            node.start(&self.agent)?;
            self.nodes.push(node);
        }
        let expected: HashMap<String, u32> = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.gpus))
            .collect();
        self.wait(
            "every node connected with its GPUs reported",
            Duration::from_secs(30),
            |demo| {
                let Response::Nodes(nodes) = demo.call(Request::FleetList)? else {
                    return Err(DemoError::Unexpected("fleet ls: unexpected answer".into()));
                };
                let ready = nodes
                    .iter()
                    .filter(|n| {
                        n.connected
                            && expected.get(&n.name) == Some(&n.gpus)
                            && n.records_stored > 0
                    })
                    .count();
                Ok(if ready == expected.len() {
                    Poll::Done(())
                } else {
                    Poll::Waiting(format!("{ready} of {} are", expected.len()))
                })
            },
        )?;
        self.console
            .say(&format!("all {agents} nodes connected and reporting"));
        Ok(())
    }

    /// Polls `check` every 200 ms until it is [`Poll::Done`]; [`Poll::Waiting`] says how
    /// far it got. Fails as soon as an agent exits.
    fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut Self) -> Result<Poll<T>, DemoError>,
    ) -> Result<T, DemoError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_interrupted()?;
            for node in &mut self.nodes {
                node.check_running()?;
            }
            let progress = match check(self)? {
                Poll::Done(value) => return Ok(value),
                Poll::Waiting(progress) => progress,
            };
            if Instant::now() >= deadline {
                return Err(DemoError::Timeout {
                    what: format!("not {what}"),
                    timeout,
                    detail: progress,
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for rollout `id` to reach `until`, printing its events as they happen.
    fn follow(&mut self, id: &str, until: State, timeout: Duration) -> Result<Rollout, DemoError> {
        let id = id.to_owned();
        self.wait(
            &format!("rollout {id} {}", until.as_str()),
            timeout,
            |demo| {
                let Response::Rollout(rollout) = demo.call(Request::RolloutStatus {
                    id: Some(id.clone()),
                })?
                else {
                    return Err(DemoError::Unexpected(
                        "rollout status: unexpected answer".into(),
                    ));
                };
                let seen = demo.events_seen.entry(id.clone()).or_default();
                for event in rollout.events.iter().skip(*seen) {
                    demo.console.event(&event.message);
                }
                *seen = rollout.events.len();
                let state = rollout.state();
                if state == until {
                    Ok(Poll::Done(*rollout))
                } else if state.is_active() {
                    Ok(Poll::Waiting(format!("it is {}", state.as_str())))
                } else {
                    Err(DemoError::Rollout {
                        id: id.clone(),
                        state: state.as_str(),
                        failure: rollout.failure.clone(),
                    })
                }
            },
        )
    }

    /// Two versions of the sample model, signed and pushed; returns the golden vector
    /// the inference step sends.
    fn bundles(&mut self) -> Result<GoldenVector, DemoError> {
        self.console.step(
            "A signed model bundle",
            "A bundle is one file: the ONNX model, golden input/output vectors, provenance, \
             and signatures over its manifest. The controller checks every push against its \
             trust policy; each node checks again against its own before running anything.",
        );
        let models = self.work.join("model");
        std::fs::create_dir_all(&models)
            .map_err(|e| DemoError::io(format!("create {}", models.display()), e))?;
        let (model, golden) = (models.join("tiny_linear.onnx"), models.join("golden.json"));
        std::fs::write(&model, MODEL)
            .and_then(|()| std::fs::write(&golden, GOLDEN))
            .map_err(|e| {
                DemoError::io(
                    format!("write the sample model into {}", models.display()),
                    e,
                )
            })?;
        self.console.say(
            "the sample model: $DEMO/model/tiny_linear.onnx (a 4 -> 2 linear layer) and its \
             golden vectors in $DEMO/model/golden.json",
        );
        for version in ["1.0.0", "2.0.0"] {
            let bundle = self.path(&format!("{MODEL_NAME}-{version}.gbundle"));
            let create = [
                "bundle",
                "create",
                "--model",
                &arg(&model),
                "--golden",
                &arg(&golden),
                "--name",
                MODEL_NAME,
                "--version",
                version,
                "--source-revision",
                "demo",
                "--out",
                &bundle,
            ];
            let sign = ["bundle", "sign", &bundle, "--key", &self.path("ml.key")];
            let verify = [
                "bundle",
                "verify",
                &bundle,
                "--trust",
                &self.path("trust.json"),
            ];
            let push = ["bundle", "push", &bundle];
            if version == "1.0.0" {
                for args in [&create[..], &sign, &verify, &push] {
                    self.gantry(args)?;
                }
            } else {
                for args in [&create[..], &sign, &push] {
                    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
                    self.gantry_quiet(&args)?;
                }
                self.console.say(&format!(
                    "({MODEL_NAME} {version} is created, signed and pushed the same way, for a later rollout)"
                ));
            }
        }
        self.gantry(&["bundle", "ls"])?;
        let vectors: Vec<GoldenVector> = serde_json::from_slice(GOLDEN)
            .map_err(|e| DemoError::Unexpected(format!("the sample golden vectors: {e}")))?;
        vectors
            .into_iter()
            .find(|v| v.name == "counting")
            .ok_or_else(|| DemoError::Unexpected("the sample has no `counting` vector".into()))
    }

    /// `gantry rollout start` of the sample at `version` to the H100 nodes, a canary
    /// first; returns the rollout's id.
    fn start_rollout(&mut self, version: &str, bake: &str) -> Result<String, DemoError> {
        let out = self.gantry(&[
            "rollout",
            "start",
            &format!("{MODEL_NAME}@{version}"),
            "--selector",
            "gpu=h100",
            "--steps",
            "1,100%",
            "--bake",
            bake,
        ])?;
        // "rollout r1: NAME@VERSION (…)"; its events so far (the start) are shown.
        let id = out
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.strip_suffix(':'))
            .ok_or_else(|| DemoError::Unexpected(format!("rollout start answered {out:?}")))?
            .to_owned();
        self.events_seen.insert(id.clone(), 1);
        Ok(id)
    }

    /// The first rollout, through a canary; returns the canary's name.
    fn canary_rollout(&mut self) -> Result<String, DemoError> {
        self.console.step(
            "A canary rollout",
            "To the H100 nodes: one canary first, baked with health gates (node and GPU \
             health, the model's golden vectors, error rate), then the rest. Each node \
             downloads the bundle over QUIC, verifies it against its own trust policy, runs \
             the golden vectors in ONNX Runtime, and only then switches to it.",
        );
        let id = self.start_rollout("1.0.0", "3s")?;
        let rollout = self.follow(&id, State::Succeeded, Duration::from_secs(90))?;
        rollout
            .touched
            .first()
            .map(|t| t.node.clone())
            .ok_or_else(|| DemoError::Unexpected(format!("rollout {id} touched no node")))
    }

    /// One request to `node`'s `KServe` v2 endpoint; the answer must be the golden output
    /// and come from `version`.
    fn inference(
        &mut self,
        node: &str,
        golden: &GoldenVector,
        version: &str,
    ) -> Result<(), DemoError> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == node)
            .ok_or_else(|| DemoError::Unexpected(format!("no node {node}")))?;
        let (input, data) = golden
            .inputs
            .iter()
            .next()
            .map(|(name, t)| (name.clone(), numbers(t)))
            .ok_or_else(|| DemoError::Unexpected("golden vector without inputs".into()))?;
        self.console.say(&format!(
            "POST http://{}/v2/models/{MODEL_NAME}/infer  ({}: {input} = {data:?})",
            node.inference, node.name
        ));
        let answer = node.infer(MODEL_NAME, golden)?;
        self.console.say(&format!(
            "{MODEL_NAME} {} answered {} = {:?}",
            answer.model_version, answer.output, answer.data
        ));
        let want = golden
            .outputs
            .get(&answer.output)
            .ok_or_else(|| DemoError::Unexpected(format!("unexpected output {}", answer.output)))?;
        let want = numbers(want);
        let close = want.len() == answer.data.len()
            && want.iter().zip(&answer.data).all(|(w, g)| {
                (g - w).abs() <= golden.tolerance.abs + golden.tolerance.rel * w.abs()
            });
        if !close || answer.model_version != version {
            return Err(DemoError::Inference {
                node: node.name.clone(),
                message: format!(
                    "expected {MODEL_NAME} {version} to answer {:?}, got {} {:?}",
                    want, answer.model_version, answer.data
                ),
            });
        }
        self.console
            .say("= the golden output the bundle records for this input");
        Ok(())
    }

    /// Rollout r2: the canary's GPU falls off the bus while it bakes; the gate fails and
    /// the canary goes back to 1.0.0 on its own.
    fn failed_rollout(&mut self, golden: &GoldenVector) -> Result<(), DemoError> {
        self.console.step(
            "A rollout that fails its gate, rolled back automatically",
            "tiny-linear 2.0.0 goes to a canary; while it bakes, one of the canary's GPUs \
             falls off the bus (XID 79, injected through the simulated NVML). The node \
             reports itself unhealthy, the gate fails, and the controller puts every \
             touched node back on its previous bundle; it also cordons the node, which \
             takes no new rollouts until an operator lifts the cordon.",
        );
        let id = self.start_rollout("2.0.0", "20s")?;
        let rollout = self.follow(&id, State::Baking, Duration::from_secs(60))?;
        let canary = rollout
            .touched
            .first()
            .map(|t| t.node.clone())
            .ok_or_else(|| DemoError::Unexpected(format!("rollout {id} touched no node")))?;
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == canary)
            .ok_or_else(|| DemoError::Unexpected(format!("no node {canary}")))?;
        let gpu = node.gpus.min(6) - 1;
        self.console.say(&format!(
            "fault: GPU {gpu} of {canary} falls off the bus (XID 79), written to $DEMO/{canary}/state/nvml-sim.json"
        ));
        node.set_faults(&serde_json::json!({
            "devices": { gpu.to_string(): { "lost": true } },
            "xid_events": [ { "gpu": gpu, "code": 79 } ],
        }))?;
        self.follow(&id, State::RollingBack, Duration::from_secs(30))?;
        self.console.say(&format!(
            "the GPU is reset: {canary} comes back healthy, on its previous bundle"
        ));
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == canary)
            .ok_or_else(|| DemoError::Unexpected(format!("no node {canary}")))?;
        node.set_faults(&serde_json::json!({ "devices": { gpu.to_string(): { "lost": false } } }))?;
        self.follow(&id, State::RolledBack, Duration::from_secs(60))?;
        self.gantry(&["rollout", "status", &id])?;
        self.console.say(&format!("{canary} serves 1.0.0 again:"));
        self.inference(&canary, golden, "1.0.0")?;
        self.lift_automatic_cordon(&canary)
    }

    /// XID 79 is critical, so the controller cordoned the canary on its own: it shows the
    /// cordon, then lifts it as the operator does once the GPU has been looked at.
    fn lift_automatic_cordon(&mut self, node: &str) -> Result<(), DemoError> {
        let name = node.to_owned();
        let reason = self.wait(
            &format!("{node} cordoned"),
            Duration::from_secs(30),
            |demo| {
                let Response::Nodes(nodes) = demo.call(Request::FleetList)? else {
                    return Err(DemoError::Unexpected("fleet ls: unexpected answer".into()));
                };
                Ok(nodes
                    .iter()
                    .find(|n| n.name == name)
                    .and_then(|n| n.cordon.as_ref())
                    .map_or_else(
                        || Poll::Waiting("not yet".to_owned()),
                        |c| Poll::Done(c.reason.clone()),
                    ))
            },
        )?;
        self.console.say(&format!(
            "the controller cordoned {node} on the critical XID (no new rollouts until an operator lifts it): {reason}"
        ));
        self.gantry(&["fleet", "uncordon", node])?;
        Ok(())
    }

    /// Stops every agent (SIGTERM) and the controller; fails when one did not stop cleanly.
    fn stop_all(&mut self, after_failure: bool) -> Result<(), DemoError> {
        if self.controller.is_none() && self.nodes.is_empty() {
            return Ok(());
        }
        let what = "SIGTERM to each agent, as systemd does: it stops taking work, drains \
                    inference, flushes its buffer and exits; then the controller shuts down.";
        if after_failure {
            self.console.heading("Stopping what the demo started", what);
        } else {
            self.console.step("Stopping", what);
        }
        let mut problems = Vec::new();
        for node in &mut self.nodes {
            let started = Instant::now();
            match node.stop() {
                Some(Ok(status)) if status.success() => self.console.say(&format!(
                    "{} stopped cleanly in {:.1} s",
                    node.name,
                    started.elapsed().as_secs_f64()
                )),
                Some(Ok(status)) => problems.push(format!("{}: {status}", node.name)),
                Some(Err(e)) => problems.push(format!("{}: {e}", node.name)),
                None => {}
            }
        }
        if let Some(mut controller) = self.controller.take() {
            match controller.stop() {
                Ok(()) => self.console.say("controller stopped"),
                Err(e) => problems.push(format!("controller: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DemoError::Unexpected(format!(
                "not everything stopped cleanly: {}",
                problems.join("; ")
            )))
        }
    }

    /// The end of every log, after a failure.
    fn print_logs(&self) {
        let controller = self.work.join("controller.log");
        let text = std::fs::read_to_string(&controller).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("\n--- last lines of {} ---", controller.display());
        for line in &lines[lines.len().saturating_sub(10)..] {
            eprintln!("{line}");
        }
        for node in &self.nodes {
            eprintln!("--- last lines of {} ---", node.log().display());
            for line in node.log_tail(10) {
                eprintln!("{line}");
            }
        }
    }
}

/// A demo golden tensor's elements as numbers (the demo's vectors are inline FP32).
fn numbers(t: &gantry_shared::bundle::manifest::GoldenTensor) -> Vec<f64> {
    t.inline()
        .map(|data| {
            (0..data.len())
                .filter_map(|i| data.element_f64(i))
                .collect()
        })
        .unwrap_or_default()
}
