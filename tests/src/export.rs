//! Telemetry export tests' common parts: an export's figures on the controller's
//! `/metrics`, a receiver outage while a node streams, and the OTLP receiver.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gantry_shared::protocol::telemetry::RecordClass;

use crate::{Agent, Controller, free_tcp_port, wait_for};

/// A counter or gauge of a `/metrics` page (0 where absent).
pub fn figure(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Metrics records the controller stored for `node`.
pub fn stored(controller: &Controller, node: &str) -> usize {
    controller
        .records(node)
        .iter()
        .filter(|r| r.class == RecordClass::Metrics)
        .count()
}

/// The receiver goes away while `agent` (streaming as `node`) keeps sending: waits until
/// the export `prefix` (`remote_write`, `otlp`) counts failed requests and the node
/// stored 10 records more, brings the receiver back, stops the agent, and waits until
/// the export delivered every stored record and `received()` holds them all. Returns
/// how many metrics records the controller stored.
pub fn through_outage(
    controller: &Controller,
    agent: &mut Agent,
    node: &str,
    prefix: &str,
    stop: impl FnOnce(),
    start: impl FnOnce(),
    received: impl Fn() -> usize,
) -> usize {
    stop();
    let before = stored(controller, node);
    let failed = format!(r#"gantry_controller_{prefix}_requests_total{{outcome="failed"}}"#);
    wait_for(
        "the outage to show on the controller's /metrics",
        Duration::from_secs(60),
        || {
            let page = controller.metrics_page();
            (figure(&page, &failed) >= 2.0 && stored(controller, node) >= before + 10).then_some(())
        },
    );
    start();
    std::thread::sleep(Duration::from_secs(2));
    agent.kill();
    let total = stored(controller, node);
    let records = format!("gantry_controller_{prefix}_records_total");
    wait_for(
        "every stored sample at the receiver",
        Duration::from_secs(90),
        || {
            let page = controller.metrics_page();
            #[allow(clippy::cast_precision_loss)] // a count
            let all = total as f64;
            (figure(&page, &records) >= all && received() >= total).then_some(())
        },
    );
    total
}

/// TLS files for the OTLP receiver: its certificate and key, and the CA its clients'
/// certificates must come from.
#[derive(Debug, Clone)]
pub struct ReceiverTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

/// `tests/python/otlp_receiver.py`: decodes with the OpenTelemetry project's protobuf
/// definitions and appends every data point to `out` as a JSON line.
#[allow(missing_debug_implementations)]
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    out: PathBuf,
    reject_first: u32,
    tls: Option<ReceiverTls>,
    child: Option<Child>,
}

impl OtlpReceiver {
    /// Starts it in `dir`; the first answer rejects `reject_first` points (a partial
    /// success); on TLS, requiring a client certificate, with `tls`.
    pub fn start(dir: &Path, reject_first: u32, tls: Option<ReceiverTls>) -> Self {
        let mut receiver = Self {
            addr: free_tcp_port(),
            out: dir.join("points.jsonl"),
            reject_first,
            tls,
            child: None,
        };
        receiver.start_again();
        receiver
    }

    pub fn start_again(&mut self) {
        let mut command = Command::new(crate::bundles::python_clients());
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("python/otlp_receiver.py"))
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--out")
            .arg(&self.out)
            .arg("--reject-first")
            .arg(self.reject_first.to_string());
        if let Some(tls) = &self.tls {
            command
                .arg("--tls-cert")
                .arg(&tls.cert)
                .arg("--tls-key")
                .arg(&tls.key)
                .arg("--tls-client-ca")
                .arg(&tls.client_ca);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the OTLP receiver starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening", "the receiver did not come up");
        self.child = Some(child);
    }

    /// SIGTERM: the receiver answers the request in hand before it exits, so a stop
    /// never leaves points recorded whose sender saw no answer.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Every data point received so far.
    pub fn points(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("the receiver writes JSON lines"))
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}
