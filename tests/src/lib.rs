//! Harness for end-to-end tests: the real `gantry` controller and real `gantry-agent`
//! processes (simulated NVML) on loopback, with certificates `gantry init` makes, driven
//! through the CLI and the admin client as operators drive them.
//!
//! The binaries are the workspace's own, found beside the test executable
//! (`target/<profile>/`); `cargo test --workspace` builds them first.

#![allow(missing_docs)]

pub mod bundles;
pub mod export;
pub mod prometheus;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_controller::client::AdminClient;
use gantry_controller::home::AdminIdentity;
use gantry_nvml_sim::ControlFile;
use gantry_shared::protocol::admin::{NodeDetail, NodeSummary, RecordInfo, Request, Response};

/// Path of a workspace binary.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (`cargo build --workspace`)",
        path.display()
    );
    path
}

/// A UDP port free right now on loopback.
pub fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A TCP port free right now on loopback, for a server a test starts later. Taken below
/// the kernel's ephemeral range (32768 and up on Linux): a port the kernel hands out
/// would be free for every outgoing connection's local end too, and a test's own HTTP
/// client can take it in the moment before the server binds it.
pub fn free_tcp_port() -> SocketAddr {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let port = 20_000 + (hasher.finish() % 12_000) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
}

/// Polls `check` until it returns `Some`, or panics naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Child output lines, collected by a thread.
#[derive(Clone, Default, Debug)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn capture(&self, stream: impl Read + Send + 'static) {
        let sink = Arc::clone(&self.0);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, text: &str) -> bool {
        self.lines().iter().any(|l| l.contains(text))
    }

    /// How many lines contain `text`.
    pub fn count(&self, text: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(text)).count()
    }
}

/// One HTTP/1.0 GET; the body, or `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

/// One HTTP/1.0 GET; the status code, or `None` when nothing answers.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split(' ').nth(1)?.parse().ok()
}

fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// A controller: its directory and, while running, its process.
#[allow(missing_debug_implementations)]
pub struct Controller {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    child: Option<Child>,
    pub log: Log,
    runtime: tokio::runtime::Runtime,
}

impl Controller {
    /// `gantry init` then `gantry serve` on free loopback ports. Ports are picked free
    /// and handed to the process, so another test may take one in between: a start that
    /// fails because its address is in use is tried again on other ports.
    pub fn start() -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start() {
                Ok(controller) => return controller,
                Err(log) if attempt < 3 && log.contains("cannot listen") => attempt += 1,
                Err(log) => panic!("the controller did not start:\n{log}"),
            }
        }
    }

    fn try_start() -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_udp_port();
        let out = Command::new(binary("gantry"))
            .args(["init", "--dir"])
            .arg(dir.path().join("ctl"))
            .args(["--listen", &addr.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut controller = Self {
            dir,
            addr,
            metrics: free_tcp_port(),
            child: None,
            log: Log::default(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        controller.try_resume_with(&[])?;
        Ok(controller)
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("ctl")
    }

    pub fn identity_path(&self) -> PathBuf {
        self.home().join("admin.identity")
    }

    /// TLS configurations for a stand-in server with this controller's certificate and a
    /// client with its admin identity: what a test needs to put its own QUIC endpoint
    /// where the controller would be.
    pub fn tls_pair(&self) -> (rustls::ServerConfig, rustls::ClientConfig) {
        let home = self.home();
        let ca = gantry_controller::ca::Ca::load(&home).unwrap();
        let read = |name: &str| std::fs::read_to_string(home.join(name)).unwrap();
        let server = gantry_shared::tls::server_config(
            ca.cert_pem(),
            &read("controller.crt"),
            &read("controller.key"),
        )
        .unwrap();
        let admin = AdminIdentity::load(&self.identity_path()).unwrap();
        let client =
            gantry_shared::tls::client_config(&admin.ca_pem, &admin.cert_pem, &admin.key_pem)
                .unwrap();
        (server, client)
    }

    /// Starts the process again on the same address and directory.
    pub fn resume(&mut self) {
        self.resume_with(&[]);
    }

    /// Stops the process and starts it again with `args` added to `gantry serve`'s (a
    /// shifted clock, other certificate lifetimes).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.kill();
        self.resume_with(args);
    }

    /// [`Self::resume`] with `args` added to `gantry serve`'s.
    pub fn resume_with(&mut self, args: &[&str]) {
        if let Err(log) = self.try_resume_with(args) {
            panic!("the controller did not start:\n{log}");
        }
    }

    /// Starts `gantry serve` and waits until it listens; the log when it exits first or
    /// does not listen within 20 s.
    fn try_resume_with(&mut self, args: &[&str]) -> Result<(), String> {
        assert!(self.child.is_none(), "controller already running");
        let mut child = Command::new(binary("gantry"))
            .args(["serve", "--dir"])
            .arg(self.home())
            .args([
                "--listen",
                &self.addr.to_string(),
                "--metrics-listen",
                &self.metrics.to_string(),
            ])
            .args(args)
            .env("GANTRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.log.capture(child.stderr.take().unwrap());
        let listening = |log: &Log| {
            log.lines()
                .iter()
                .filter(|l| l.contains("controller listening"))
                .count()
        };
        let started = listening(&self.log);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if listening(&self.log) > started {
                self.child = Some(child);
                return Ok(());
            }
            let exited = child.try_wait().unwrap();
            if exited.is_some() || Instant::now() >= deadline {
                if exited.is_none() {
                    kill9(&mut child);
                }
                // The capturing thread reads to the end of the dead process's stderr.
                std::thread::sleep(Duration::from_millis(100));
                let status = exited.map_or_else(
                    || "still not listening after 20 s".to_owned(),
                    |s| s.to_string(),
                );
                return Err(format!("{status}\n{}", self.log.lines().join("\n")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `gantry serve` on this controller's directory with `args`, which must be
    /// refused as a configuration error (exit 64) before it starts; returns its stderr.
    pub fn serve_refused(&self, args: &[&str]) -> String {
        let out = Command::new(binary("gantry"))
            .args(["serve", "--dir"])
            .arg(self.home())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(64),
            "gantry serve {args:?} is a configuration error: {stderr}"
        );
        stderr
    }

    /// Stops the process abruptly.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child);
        }
    }

    /// Runs the `gantry` CLI as the first admin.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary("gantry"))
            .args(args)
            .env("GANTRY_IDENTITY", self.identity_path())
            .output()
            .unwrap()
    }

    /// Runs the CLI and expects success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gantry {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn token(&self, labels: &str) -> String {
        self.cli_ok(&["token", "create", "--labels", labels, "--ttl", "10m"])
            .trim()
            .to_owned()
    }

    /// An admin call with the identity at `identity`.
    pub fn call_as(
        &self,
        identity: &Path,
        request: Request,
    ) -> Result<Response, gantry_controller::client::ClientError> {
        let identity = AdminIdentity::load(identity).expect("identity file");
        self.runtime.block_on(async {
            let client = AdminClient::connect(&identity, Some(self.addr)).await?;
            client.call(request).await
        })
    }

    pub fn call(&self, request: Request) -> Response {
        self.call_as(&self.identity_path(), request)
            .expect("admin call")
    }

    pub fn node(&self, name: &str) -> NodeDetail {
        match self.call(Request::FleetShow {
            node: name.to_owned(),
        }) {
            Response::Node(detail) => *detail,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub fn nodes(&self) -> Vec<NodeSummary> {
        match self.call(Request::FleetList) {
            Response::Nodes(nodes) => nodes,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Every record stored for `node`, in order.
    pub fn records(&self, node: &str) -> Vec<RecordInfo> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |r: &RecordInfo| r.seq);
            match self.call(Request::TelemetryQuery {
                node: node.to_owned(),
                after_seq: after,
                limit: 10_000,
            }) {
                Response::Records(records) if records.is_empty() => return all,
                Response::Records(records) => all.extend(records),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The controller's `/metrics` page.
    pub fn metrics_page(&self) -> String {
        let mut stream = TcpStream::connect(self.metrics).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An agent: its state directory and, while running, its process.
#[allow(missing_debug_implementations)]
pub struct Agent {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub metrics: SocketAddr,
    child: Option<Child>,
    pub log: Log,
}

impl Agent {
    /// Enrolls a new agent named `name` with `controller` through `gantry-agent enroll`.
    pub fn enroll(controller: &Controller, name: &str, config: &str) -> Self {
        Self::enroll_labeled(controller, name, config, "gpu=h100,zone=a")
    }

    /// Enrolls a new agent with the labels `labels` (`k=v,k=v`) in its join token.
    pub fn enroll_labeled(controller: &Controller, name: &str, config: &str, labels: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.toml"), config).unwrap();
        let agent = Self {
            dir,
            name: name.to_owned(),
            metrics: free_tcp_port(),
            child: None,
            log: Log::default(),
        };
        let out = agent.enroll_with(controller.addr, &controller.token(labels));
        assert!(
            out.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        agent
    }

    /// An agent that is not enrolled: it serves and buffers on its own, with `config`.
    pub fn standalone(name: &str, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.toml"), config).unwrap();
        Self {
            dir,
            name: name.to_owned(),
            metrics: free_tcp_port(),
            child: None,
            log: Log::default(),
        }
    }

    pub fn enroll_with(&self, controller: SocketAddr, token: &str) -> Output {
        Command::new(binary("gantry-agent"))
            .args(["enroll", "--config"])
            .arg(self.dir.path().join("agent.toml"))
            .arg("--state-dir")
            .arg(self.state_dir())
            .args([
                "--controller",
                &controller.to_string(),
                "--token",
                token,
                "--name",
                &self.name,
            ])
            .output()
            .unwrap()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn control(&self) -> ControlFile {
        std::fs::create_dir_all(self.state_dir()).unwrap();
        ControlFile::open(self.state_dir().join("nvml-sim.json"))
    }

    /// Starts `gantry-agent run` with 2 simulated GPUs, sampling every `interval`.
    pub fn run(&mut self, interval: &str) {
        assert!(self.child.is_none(), "agent already running");
        let mut child = Command::new(binary("gantry-agent"))
            .args(["run", "--config"])
            .arg(self.dir.path().join("agent.toml"))
            .arg("--state-dir")
            .arg(self.state_dir())
            .args([
                "--simulate-gpus",
                "2",
                "--interval",
                interval,
                "--kernel-log",
                "",
                "--metrics-listen",
                &self.metrics.to_string(),
            ])
            .env("GANTRY_LOG", "info,gantry_agent::uplink=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.log.capture(child.stderr.take().unwrap());
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child);
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The running agent's resident memory (`VmRSS`), in bytes.
    pub fn rss(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    }

    /// `gantry-agent ARGS` against this agent's configuration and state directory.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary("gantry-agent"))
            .args(args)
            .arg("--config")
            .arg(self.dir.path().join("agent.toml"))
            .arg("--state-dir")
            .arg(self.state_dir())
            .output()
            .unwrap()
    }

    /// `gantry-agent status` of the running agent, as an operator reads it.
    pub fn status_text(&self) -> String {
        let out = Command::new(binary("gantry-agent"))
            .args(["status", "--agent", &self.metrics.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The agent's own status (`/v1/status`), once it answers.
    pub fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&http_get(self.metrics, "/v1/status")?).ok()
    }

    /// The agent's `/metrics` page.
    pub fn metrics_page(&self) -> String {
        http_get(self.metrics, "/metrics").unwrap_or_default()
    }

    /// (records waiting, last sequence assigned, connected) from the agent's status.
    pub fn buffer(&self) -> Option<(u64, u64, bool)> {
        let s = self.status()?;
        let b = &s["buffer"];
        Some((
            b["records"].as_u64()?,
            b["last_seq"].as_u64()?,
            s["uplink"]["connected"].as_bool().unwrap_or(false),
        ))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asserts the stored sequences up to `n` are exactly 1..=n, each once, in order (the
/// agent may have sent more since `n` was read).
pub fn assert_contiguous(records: &[RecordInfo], n: u64) {
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).filter(|&s| s <= n).collect();
    let expected: Vec<u64> = (1..=n).collect();
    if seqs != expected {
        let missing: Vec<u64> = expected
            .iter()
            .filter(|s| !seqs.contains(s))
            .copied()
            .take(20)
            .collect();
        panic!(
            "stored {} records for sequences 1..={n}; missing (first 20) {missing:?}",
            seqs.len()
        );
    }
}

/// What a [`LossyRelay`] does to packets: per-packet chances in percent, and a delay with
/// jitter (each packet waits `delay` plus up to `jitter`, so jitter reorders too).
#[derive(Debug, Clone, Copy, Default)]
pub struct Link {
    pub drop_pct: u64,
    pub dup_pct: u64,
    pub reorder_pct: u64,
    pub delay: Duration,
    pub jitter: Duration,
}

/// A UDP relay that drops, duplicates, reorders and delays packets between a client and
/// `target`, counting the bytes it carries.
#[derive(Debug)]
pub struct LossyRelay {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    carried: Arc<std::sync::atomic::AtomicU64>,
}

type Due = std::cmp::Reverse<(std::time::Instant, u64, Vec<u8>, SocketAddr)>;

impl LossyRelay {
    /// `drop_pct`, `dup_pct` and `reorder_pct` are per-packet chances in percent.
    pub fn start(target: SocketAddr, drop_pct: u64, dup_pct: u64, reorder_pct: u64) -> Self {
        Self::with_link(
            target,
            Link {
                drop_pct,
                dup_pct,
                reorder_pct,
                ..Link::default()
            },
        )
    }

    /// Bytes of UDP payload carried so far, both ways (what the link was made to carry).
    pub fn carried(&self) -> u64 {
        self.carried.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn with_link(target: SocketAddr, link: Link) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
        upstream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let carried = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let chaos = move |seed: &mut u64| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let pump = |from: UdpSocket,
                    to: UdpSocket,
                    dest: Arc<Mutex<Option<SocketAddr>>>,
                    fixed: Option<SocketAddr>,
                    remember: bool,
                    mut seed: u64| {
            let stop = Arc::clone(&stop);
            let carried = Arc::clone(&carried);
            // Packets wait here until they are due.
            let (queue, due) = std::sync::mpsc::channel::<Due>();
            let sender_stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut heap = std::collections::BinaryHeap::<Due>::new();
                while !sender_stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let wait = heap.peek().map_or(Duration::from_millis(50), |next| {
                        next.0
                            .0
                            .saturating_duration_since(std::time::Instant::now())
                    });
                    match due.recv_timeout(wait) {
                        Ok(item) => heap.push(item),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    while heap
                        .peek()
                        .is_some_and(|next| next.0.0 <= std::time::Instant::now())
                    {
                        let std::cmp::Reverse((_, _, packet, to_addr)) = heap.pop().unwrap();
                        let _ = to.send_to(&packet, to_addr);
                    }
                }
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                let mut held: Option<Vec<u8>> = None;
                let mut order = 0u64;
                let jitter_us = link.jitter.as_micros() as u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((n, src)) = from.recv_from(&mut buf) else {
                        continue;
                    };
                    if remember {
                        *dest.lock().unwrap() = Some(src);
                    }
                    let Some(to_addr) = fixed.or(*dest.lock().unwrap()) else {
                        continue;
                    };
                    carried.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    let packet = buf[..n].to_vec();
                    if chaos(&mut seed) % 100 < link.drop_pct {
                        continue;
                    }
                    if chaos(&mut seed) % 100 < link.reorder_pct && held.is_none() {
                        held = Some(packet);
                        continue;
                    }
                    let mut send = |packet: Vec<u8>, seed: &mut u64| {
                        let extra = if jitter_us == 0 {
                            0
                        } else {
                            chaos(seed) % jitter_us
                        };
                        let at =
                            std::time::Instant::now() + link.delay + Duration::from_micros(extra);
                        order += 1;
                        let _ = queue.send(std::cmp::Reverse((at, order, packet, to_addr)));
                    };
                    if chaos(&mut seed) % 100 < link.dup_pct {
                        send(packet.clone(), &mut seed);
                    }
                    send(packet, &mut seed);
                    if let Some(late) = held.take() {
                        send(late, &mut seed);
                    }
                }
            });
        };
        let (s1, s2) = (socket.try_clone().unwrap(), socket);
        let (u1, u2) = (upstream.try_clone().unwrap(), upstream);
        pump(
            s1,
            u1,
            Arc::clone(&client),
            Some(target),
            true,
            0x9e37_79b9_7f4a_7c15,
        );
        pump(u2, s2, client, None, false, 0x2545_f491_4f6c_dd1d);
        Self {
            addr,
            stop,
            carried,
        }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
