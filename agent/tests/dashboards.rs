//! NVIDIA's GPU dashboards against the real agent: a real Prometheus (Debian's package,
//! which `scripts/test.sh` unpacks into the cache) scrapes agents on simulated Hopper,
//! Ampere and Volta GPUs, and every GPU panel's query is evaluated through Prometheus'
//! HTTP API, with the dashboards' variables filled in as Grafana would.
//!
//! The queries are those of NVIDIA's dcgm-exporter dashboard
//! (`grafana/dcgm-exporter-dashboard.json` in `NVIDIA/dcgm-exporter`) and of the `DeepOps`
//! GPU dashboard (`src/dashboards/gpu-dashboard.json` in `NVIDIA/deepops`), as published.
//! Its panels over `node_*` series are node-exporter's, not a GPU exporter's, and are
//! left out.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::AgentBuilder;

/// (dashboard, panel title, query), with `$instance`, `$gpu`, `$hostname:9400` and
/// `$__interval` as the dashboards write them.
const PANELS: &[(&str, &str, &str)] = &[
    (
        "dcgm-exporter",
        "GPU Temperature",
        r#"DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"}"#,
    ),
    (
        "dcgm-exporter",
        "GPU Avg. Temp",
        r#"avg(DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"})"#,
    ),
    (
        "dcgm-exporter",
        "GPU Power Usage",
        r#"DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"}"#,
    ),
    (
        "dcgm-exporter",
        "GPU Power Total",
        r#"sum(DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"})"#,
    ),
    (
        "dcgm-exporter",
        "GPU SM Clocks",
        r#"DCGM_FI_DEV_SM_CLOCK{instance=~"$instance", gpu=~"$gpu"} * 1000000"#,
    ),
    (
        "dcgm-exporter",
        "GPU Utilization",
        r#"DCGM_FI_DEV_GPU_UTIL{instance=~"$instance", gpu=~"$gpu"}"#,
    ),
    (
        "dcgm-exporter",
        "GPU Framebuffer Mem Used",
        r#"DCGM_FI_DEV_FB_USED{instance=~"$instance", gpu=~"$gpu"}"#,
    ),
    (
        "dcgm-exporter",
        "Tensor Core Utilization",
        r#"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{instance=~"$instance", gpu=~"$gpu"}"#,
    ),
    (
        "deepops",
        "GPU Power Usage",
        r#"DCGM_FI_DEV_POWER_USAGE{instance="$hostname:9400"}"#,
    ),
    (
        "deepops",
        "GPU Power Total",
        r#"sum(DCGM_FI_DEV_POWER_USAGE{instance="$hostname:9400"})"#,
    ),
    (
        "deepops",
        "NVLINK Bandwidth",
        r#"1e6*sum(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{instance="$hostname:9400"})"#,
    ),
    (
        "deepops",
        "GPU Temperature",
        r#"DCGM_FI_DEV_GPU_TEMP{instance="$hostname:9400"}"#,
    ),
    (
        "deepops",
        "GPU Avg. Temp",
        r#"avg(DCGM_FI_DEV_GPU_TEMP{instance="$hostname:9400"})"#,
    ),
    (
        "deepops",
        "PCIe Throughput (TX)",
        r#"sum(DCGM_FI_PROF_PCIE_TX_BYTES{instance="$hostname:9400"})"#,
    ),
    (
        "deepops",
        "PCIe Throughput (RX)",
        r#"sum(DCGM_FI_PROF_PCIE_RX_BYTES{instance="$hostname:9400"})"#,
    ),
    (
        "deepops",
        "GPU Utilization",
        r#"DCGM_FI_DEV_GPU_UTIL{instance="$hostname:9400"}"#,
    ),
    (
        "deepops",
        "GPU Total Utilization",
        r#"avg(DCGM_FI_DEV_GPU_UTIL{instance="$hostname:9400"})"#,
    ),
    (
        "deepops",
        "GPU Mem Cpy Utilization",
        r#"DCGM_FI_DEV_MEM_COPY_UTIL{instance="$hostname:9400"}"#,
    ),
    (
        "deepops",
        "GPU Avg. Mem. Cpy Utilization",
        r#"avg(DCGM_FI_DEV_MEM_COPY_UTIL{instance="$hostname:9400"})"#,
    ),
    (
        "deepops",
        "GPU Mem Usage",
        r#"DCGM_FI_DEV_FB_USED{instance="$hostname:9400"}/(DCGM_FI_DEV_FB_USED{instance="$hostname:9400"}+DCGM_FI_DEV_FB_FREE{instance="$hostname:9400"})"#,
    ),
    (
        "deepops",
        "GPU SM Clocks",
        r#"avg(DCGM_FI_DEV_SM_CLOCK{instance="$hostname:9400"}*1000000)"#,
    ),
    (
        "deepops",
        "GPU Memory Clocks",
        r#"avg(DCGM_FI_DEV_MEM_CLOCK{instance="$hostname:9400"}*1000000)"#,
    ),
];

/// The panels that need GPU Performance Monitoring (Hopper and later).
fn is_profiling(query: &str) -> bool {
    query.contains("DCGM_FI_PROF_")
}

/// A query with the dashboard variables set to one agent, as Grafana would.
fn instantiate(query: &str, instance: &str) -> String {
    query
        .replace("$hostname:9400", instance)
        .replace("$instance", instance)
        .replace("$gpu", ".*")
        .replace("$__interval", "5s")
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second.
    fn start(targets: &[SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gantry\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let addr = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "prometheus is needed for this test and could not be run ({e}); `scripts/test.sh` \
                     unpacks Debian's `prometheus` package into .cache/tools and puts it on PATH"
                )
            });
        let prometheus = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(addr, "/-/ready").is_none_or(|(status, _)| status != 200) {
            assert!(Instant::now() < deadline, "Prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(200));
        }
        prometheus
    }

    /// Evaluates `query` now; returns the result's values.
    fn query(&self, query: &str) -> Vec<f64> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let (status, body) = get(self.addr, &path).expect("Prometheus answers");
        assert_eq!(status, 200, "{query}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "success", "{query}: {body}");
        json["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .collect()
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 GET; (status, body), or `None` when nothing listens yet.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

#[test]
fn every_gpu_panel_of_nvidias_dashboards_shows_data_for_hopper_and_only_profiling_panels_stay_empty_on_older_gpus()
 {
    let models = ["h100", "a100", "v100"];
    let agents: Vec<_> = models
        .iter()
        .map(|model| AgentBuilder::new().simulate(4, model).start())
        .collect();
    for agent in &agents {
        // GPM and NVLink rates need a second sample before Prometheus' first scrape.
        agent.wait_metrics("rates", |m| {
            !m.values("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", &[])
                .is_empty()
        });
    }
    let addrs: Vec<SocketAddr> = agents.iter().map(|a| a.addr).collect();
    let prometheus = Prometheus::start(&addrs);

    // Wait until every target has been scraped.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prometheus.query("up == 1").len() < agents.len() {
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape all agents"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    for (model, agent) in models.iter().zip(&agents) {
        let instance = agent.addr.to_string();
        for (dashboard, title, query) in PANELS {
            let values = prometheus.query(&instantiate(query, &instance));
            let hopper = *model == "h100";
            if hopper || !is_profiling(query) {
                assert!(
                    !values.is_empty(),
                    "{model}: {dashboard} panel {title:?} shows no data for {query}"
                );
                assert!(
                    values.iter().all(|v| v.is_finite() && *v >= 0.0),
                    "{model}: {dashboard} panel {title:?}: {values:?}"
                );
            } else {
                assert!(
                    values.is_empty(),
                    "{model}: {dashboard} panel {title:?} needs GPM, which {model} lacks, yet shows {values:?}"
                );
            }
        }
    }
    // The Tensor Core panel has one series per GPU, in DCGM's ratio units.
    let tensor = prometheus.query(&instantiate(PANELS[7].2, &agents[0].addr.to_string()));
    assert_eq!(tensor.len(), 4);
    assert!(tensor.iter().all(|v| (0.0..=1.0).contains(v)), "{tensor:?}");
    // A common alert stays quiet on healthy GPUs.
    assert!(
        prometheus
            .query(r#"DCGM_FI_DEV_XID_ERRORS{err_code!="0"}"#)
            .is_empty()
    );
}
