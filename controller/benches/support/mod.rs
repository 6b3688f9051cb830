//! What the controller benchmarks share: process figures from `/proc`, and simulated
//! nodes enrolled through the real protocol.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gantry_controller::client::AdminClient;
use gantry_controller::home::Home;
use gantry_shared::protocol::admin;
use gantry_shared::protocol::enroll::{self, JoinToken};
use gantry_shared::protocol::{Request, Response};
use gantry_shared::telemetry::{
    GpuFields, GpuIdentity, GpuReading, GpuState, HostReading, NvmlStatus, Sample,
};

/// `gantry init` of a controller directory `dir/ctl` on a free loopback port: its home,
/// its QUIC address and the first admin's identity file.
pub fn init_controller(dir: &std::path::Path) -> (Home, SocketAddr, std::path::PathBuf) {
    let home = Home::new(dir.join("ctl"));
    let addr: SocketAddr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let identity = home
        .init(
            addr,
            "bench",
            gantry_controller::certs::DEFAULT_ADMIN_LIFETIME,
        )
        .unwrap();
    (home, addr, identity)
}

/// `gantry serve --dir HOME ARGS…` as its own process, logging warnings and errors.
pub fn serve(home: &Home, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["serve", "--dir"])
        .arg(&home.dir)
        .args(args)
        .env("GANTRY_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The first admin's client, once the controller at `home` answers, and the pin of its
/// certificate (for enrolling nodes).
pub async fn admin_of(home: &Home, identity: &std::path::Path) -> (AdminClient, String) {
    let identity = gantry_controller::home::AdminIdentity::load(identity).unwrap();
    let admin = loop {
        if let Ok(client) = AdminClient::connect(&identity, None).await {
            break client;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pin = gantry_controller::ca::pem_fingerprint(
        &std::fs::read_to_string(home.path("controller.crt")).unwrap(),
    )
    .unwrap();
    (admin, pin)
}

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (CPU seconds, RSS bytes) of a process.
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    (cpu, rss * 1024)
}

pub struct Node {
    pub name: String,
    pub tls: rustls::ClientConfig,
}

/// Enrolls `count` nodes through one connection without a certificate.
pub async fn enroll_nodes(
    admin: &AdminClient,
    addr: SocketAddr,
    pin: &str,
    prefix: &str,
    count: usize,
    labels: impl Fn(usize) -> String,
) -> Vec<Node> {
    let tls = gantry_shared::tls::pinned_client_config(pin).unwrap();
    let endpoint = gantry_net::client_endpoint(addr, tls).unwrap();
    let conn = gantry_net::connect(&endpoint, addr).await.unwrap();
    let mut nodes = Vec::with_capacity(count);
    let mut pending = Vec::new();
    for i in 0..count {
        let admin::Response::Token { token, .. } = admin
            .call(admin::Request::TokenCreate {
                labels: labels(i)
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                ttl_s: 3600,
            })
            .await
            .unwrap()
        else {
            panic!("no token")
        };
        let token = JoinToken::parse(&token).unwrap();
        let (key_pem, public_key) = gantry_net::new_key_pair().unwrap();
        let name = format!("{prefix}-{i}");
        let conn = conn.clone();
        pending.push(tokio::spawn(async move {
            let request = Request::Enroll(enroll::Request {
                token_id: token.id,
                secret: token.secret,
                node_name: name.clone(),
                public_key,
            });
            let Response::Enrolled(answer) =
                gantry_net::call(&conn, &request, Duration::from_secs(60))
                    .await
                    .unwrap()
            else {
                panic!("enrollment refused")
            };
            let tls = gantry_shared::tls::client_config(
                &answer.ca_pem,
                &answer.certificate_pem,
                &key_pem,
            )
            .unwrap();
            Node { name, tls }
        }));
        if pending.len() >= 64 {
            for p in pending.drain(..) {
                nodes.push(p.await.unwrap());
            }
        }
    }
    for p in pending {
        nodes.push(p.await.unwrap());
    }
    nodes
}

pub fn client_config(tls: rustls::ClientConfig) -> quinn::ClientConfig {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// A node's sample: 8 H100s at work.
pub fn sample(node: usize) -> Sample {
    let gpus = (0..8u32)
        .map(|g| GpuReading {
            identity: GpuIdentity {
                index: g,
                uuid: format!("GPU-5177a7ed-0000-4000-8000-{node:08}{g:04}"),
                name: "NVIDIA H100 80GB HBM3".to_owned(),
                pci_bus_id: format!("00000000:{:02X}:00.0", 0x18 + g * 0x12),
            },
            state: GpuState::Ok,
            fields: GpuFields {
                gpu_util_percent: Some(40 + (g * 7) % 60),
                fb_total_bytes: Some(85_520_809_984),
                fb_used_bytes: Some(43_481_088_000),
                temperature_c: Some(50 + g),
                power_usage_mw: Some(466_000),
                sm_clock_mhz: Some(1782),
                ..GpuFields::default()
            },
            mig: Vec::new(),
        })
        .collect();
    Sample {
        taken_at_ms: gantry_net::clock::now_ms(),
        nvml: NvmlStatus::Available {
            driver_version: Some("560.35.03".to_owned()),
            library: "libnvidia-ml.so.1".to_owned(),
        },
        gpus,
        xids: Vec::new(),
        host: HostReading::default(),
    }
}
