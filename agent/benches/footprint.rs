//! Agent idle footprint (DESIGN.md "Numbers it must reach"):
//! 8 simulated H100s with every dcgm-exporter default field on (GPM profiling, NVLink,
//! field values), 1 s sampling, no model — RSS and CPU share over a window, CPU time per
//! sample, and CPU per scrape; `prometheus-node-exporter` measured in the same run as the
//! reference.
//!
//! Run: `cargo bench -p gantry-agent --bench footprint` (or `scripts/bench.sh`, which
//! installs node-exporter first). `GANTRY_BENCH_SECONDS` changes the 60 s window.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const AGENT: &str = env!("CARGO_BIN_EXE_gantry-agent");
const TICKS_PER_SECOND: f64 = 100.0;
const SCRAPE_BURST: u32 = 200;

struct Measured {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    rss_max: u64,
}

impl Drop for Measured {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// (CPU seconds, RSS bytes) of a process from /proc.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process alive");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let cpu = (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap())
        / TICKS_PER_SECOND;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, rss_kib * 1024)
}

fn scrape(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
}

fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while scrape(addr).is_none_or(|body| body.is_empty()) {
        assert!(Instant::now() < deadline, "{addr} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn start_agent(state: &std::path::Path) -> Measured {
    let addr = free_port();
    let child = Command::new(AGENT)
        .args([
            "run",
            "--simulate-gpus",
            "8",
            "--simulate-model",
            "h100",
            "--interval",
            "1s",
            "--metrics-listen",
            &addr.to_string(),
        ])
        .arg("--state-dir")
        .arg(state)
        .arg("--config")
        .arg(state.with_extension("toml"))
        .env("GANTRY_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent starts");
    Measured {
        name: "gantry-agent",
        child,
        addr,
        rss_max: 0,
    }
}

fn start_node_exporter() -> Option<Measured> {
    let addr = free_port();
    let child = Command::new("prometheus-node-exporter")
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Measured {
        name: "node-exporter",
        child,
        addr,
        rss_max: 0,
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; nothing to list.
    }
    let seconds: u64 = std::env::var("GANTRY_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(state.with_extension("toml"), "").unwrap();

    let mut procs = vec![start_agent(&state)];
    match start_node_exporter() {
        Some(exporter) => procs.push(exporter),
        None => eprintln!(
            "reference unavailable: prometheus-node-exporter is not installed (scripts/bench.sh installs it)"
        ),
    }
    for p in &procs {
        wait_ready(p.addr);
    }
    // Let start-up allocations and the first samples settle.
    std::thread::sleep(Duration::from_secs(5));

    // Idle window: scraped every 5 s, as a Prometheus job would.
    let agent_page = scrape(procs[0].addr).unwrap();
    let samples_before = metric(&agent_page, "gantry_agent_samples_total");
    let sample_cpu_before = metric(&agent_page, "gantry_agent_sample_cpu_seconds_total");
    let cpu_before: Vec<f64> = procs.iter().map(|p| proc_usage(p.child.id()).0).collect();
    let started = Instant::now();
    let mut next_scrape = started;
    while started.elapsed() < Duration::from_secs(seconds) {
        for p in &mut procs {
            let (_, rss) = proc_usage(p.child.id());
            p.rss_max = p.rss_max.max(rss);
        }
        if Instant::now() >= next_scrape {
            for p in &procs {
                scrape(p.addr).expect("scrape");
            }
            next_scrape += Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let window = started.elapsed().as_secs_f64();
    let cpu_share: Vec<f64> = procs
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| (proc_usage(p.child.id()).0 - before) / window * 100.0)
        .collect();
    let agent_page = scrape(procs[0].addr).unwrap();
    let samples = metric(&agent_page, "gantry_agent_samples_total") - samples_before;
    let sample_cpu =
        metric(&agent_page, "gantry_agent_sample_cpu_seconds_total") - sample_cpu_before;
    let ms_per_sample = sample_cpu / samples * 1000.0;
    let dcgm_families = agent_page
        .lines()
        .filter(|l| l.starts_with("# TYPE DCGM_FI_"))
        .count();
    let dcgm_series = agent_page
        .lines()
        .filter(|l| l.starts_with("DCGM_FI_"))
        .count();

    // Scrape cost: a burst of back-to-back scrapes.
    let per_scrape_ms: Vec<f64> = procs
        .iter()
        .map(|p| {
            let (before, _) = proc_usage(p.child.id());
            for _ in 0..SCRAPE_BURST {
                scrape(p.addr).expect("scrape");
            }
            (proc_usage(p.child.id()).0 - before) / f64::from(SCRAPE_BURST) * 1000.0
        })
        .collect();

    println!();
    println!(
        "agent footprint: 8 simulated GPUs, 1 s sampling, {window:.0} s window scraped every 5 s"
    );
    println!(
        "{:<15} {:>12} {:>18} {:>16} {:>16}",
        "process", "RSS max MiB", "CPU % of one core", "CPU ms/sample", "CPU ms/scrape"
    );
    for (i, p) in procs.iter().enumerate() {
        let per_sample = if i == 0 {
            format!("{ms_per_sample:.3}")
        } else {
            "-".to_owned()
        };
        println!(
            "{:<15} {:>12.1} {:>18.3} {:>16} {:>16.2}",
            p.name,
            p.rss_max as f64 / (1024.0 * 1024.0),
            cpu_share[i],
            per_sample,
            per_scrape_ms[i]
        );
    }
    println!(
        "samples taken in the window: {samples:.0}; fields on: {dcgm_families} DCGM families, {dcgm_series} series"
    );
    let rss_mib = procs[0].rss_max as f64 / (1024.0 * 1024.0);
    println!(
        "targets (DESIGN.md): RSS <= 8 MiB ({}), CPU <= 0.3 % of one core ({}), <= 0.5 ms CPU per 8-GPU sample ({})",
        verdict(rss_mib <= 8.0),
        verdict(cpu_share[0] <= 0.3),
        verdict(ms_per_sample <= 0.5)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}
