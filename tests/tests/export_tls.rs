//! Telemetry export over TLS to a real receiver: Debian's Prometheus with its
//! remote-write receiver behind `--web.config.file`, serving a certificate from a site CA
//! the test makes and requiring a client certificate from it (mutual TLS). A controller
//! given another CA refuses the receiver; one without a client certificate is refused by
//! it; neither moves the cursors, so once the right files are given every stored sample
//! arrives, each once (queried back over the same TLS). OTLP export reaches the test
//! suite's receiver on HTTPS that requires a client certificate the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gantry_tests::export::{OtlpReceiver, ReceiverTls, figure, stored};
use gantry_tests::{Agent, Controller, free_tcp_port, wait_for};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA the test makes, able to issue server and client certificates.
struct SiteCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl SiteCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for `names`, for a server or a client.
    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "gantry test");
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name` and returns the path.
fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// GET over HTTPS with the client certificate, through Python's own `ssl` (the body, or
/// `None` when the request fails).
fn https_get(dir: &Path, url: &str) -> Option<String> {
    let script = "import ssl, sys, urllib.request\n\
        c = ssl.create_default_context(cafile=sys.argv[2])\n\
        c.load_cert_chain(sys.argv[3], sys.argv[4])\n\
        print(urllib.request.urlopen(sys.argv[1], context=c, timeout=10).read().decode())";
    let out = Command::new(gantry_tests::bundles::python_clients())
        .args(["-c", script, url])
        .arg(dir.join("ca.pem"))
        .arg(dir.join("client.pem"))
        .arg(dir.join("client.key"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Prometheus as a remote-write receiver on TLS that requires a client certificate.
struct TlsPrometheus {
    child: Child,
    addr: SocketAddr,
}

impl TlsPrometheus {
    fn start(dir: &Path) -> Self {
        file(
            dir,
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: {server}\n  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca}\n",
                server = dir.join("server.pem").display(),
                key = dir.join("server.key").display(),
                ca = dir.join("ca.pem").display(),
            ),
        );
        file(
            dir,
            "prometheus.yml",
            "global:\n  evaluation_interval: 1s\n",
        );
        let addr = free_tcp_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--web.config.file={}",
                dir.join("web.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus on PATH (scripts/test.sh unpacks Debian's package)");
        let prometheus = Self { child, addr };
        wait_for("Prometheus on TLS", Duration::from_secs(30), || {
            https_get(dir, &format!("https://{addr}/-/ready"))
        });
        prometheus
    }

    /// Samples of GPU 0's temperature of `node` it holds over the last hour.
    fn received(&self, dir: &Path, node: &str) -> usize {
        let query =
            format!("count_over_time(DCGM_FI_DEV_GPU_TEMP{{node=\"{node}\",gpu=\"0\"}}[1h])");
        let url = format!(
            "https://{}/api/v1/query?query={}",
            self.addr,
            query
                .bytes()
                .map(|b| if b.is_ascii_alphanumeric() || b == b'_' {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                })
                .collect::<String>()
        );
        https_get(dir, &url)
            .and_then(|body| {
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
            })
            .unwrap_or(0)
    }
}

impl Drop for TlsPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn remote_write_over_mutual_tls_reaches_a_real_prometheus_and_refusals_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let site = SiteCa::new("site CA");
    file(d, "ca.pem", &site.pem);
    let (server, server_key) = site.issue(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    file(d, "server.pem", &server);
    file(d, "server.key", &server_key);
    let (client, client_key) =
        site.issue(&["gantry-controller"], ExtendedKeyUsagePurpose::ClientAuth);
    file(d, "client.pem", &client);
    file(d, "client.key", &client_key);
    file(d, "other-ca.pem", &SiteCa::new("another CA").pem);
    let prometheus = TlsPrometheus::start(d);
    let url = format!("https://{}/api/v1/write", prometheus.addr);
    let path = |name: &str| d.join(name).display().to_string();

    let mut controller = Controller::start();
    let mut agent = Agent::enroll(&controller, "tls-node", "");
    agent.run("200ms");
    let failed = r#"gantry_controller_remote_write_requests_total{outcome="failed"}"#;
    let ok = r#"gantry_controller_remote_write_requests_total{outcome="ok"}"#;

    // The receiver's certificate is not from the CA given: the controller refuses it.
    controller.restart_with(&[
        "--remote-write",
        &url,
        "--remote-write-ca",
        &path("other-ca.pem"),
        "--remote-write-cert",
        &path("client.pem"),
        "--remote-write-key",
        &path("client.key"),
    ]);
    wait_for(
        "refused receiver certificates",
        Duration::from_secs(60),
        || (figure(&controller.metrics_page(), failed) >= 2.0).then_some(()),
    );
    assert!(figure(&controller.metrics_page(), ok) < 0.5);
    let lines = controller.log.lines();
    let refusal = lines
        .iter()
        .find(|l| l.contains("TLS with") && l.contains("certificate"))
        .unwrap_or_else(|| {
            panic!(
                "the log names the certificate problem:\n{}",
                lines.join("\n")
            )
        });
    println!("wrong CA: {refusal}");

    // The right CA but no client certificate: the receiver refuses the controller.
    controller.restart_with(&["--remote-write", &url, "--remote-write-ca", &path("ca.pem")]);
    wait_for("refusals by the receiver", Duration::from_secs(60), || {
        (figure(&controller.metrics_page(), failed) >= 2.0).then_some(())
    });
    assert!(figure(&controller.metrics_page(), ok) < 0.5);
    assert_eq!(prometheus.received(d, "tls-node"), 0, "nothing arrived yet");
    if let Some(line) = controller
        .log
        .lines()
        .iter()
        .rev()
        .find(|l| l.contains("export failed"))
    {
        println!("no client certificate: {line}");
    }

    // Both right: everything stored meanwhile arrives, once.
    controller.restart_with(&[
        "--remote-write",
        &url,
        "--remote-write-ca",
        &path("ca.pem"),
        "--remote-write-cert",
        &path("client.pem"),
        "--remote-write-key",
        &path("client.key"),
    ]);
    wait_for("samples over mutual TLS", Duration::from_secs(60), || {
        (prometheus.received(d, "tls-node") >= 5).then_some(())
    });
    agent.kill();
    let total = stored(&controller, "tls-node");
    wait_for(
        "every stored sample at the receiver",
        Duration::from_secs(90),
        || (prometheus.received(d, "tls-node") >= total).then_some(()),
    );
    assert_eq!(
        prometheus.received(d, "tls-node"),
        total,
        "each stored sample once"
    );
    println!("{total} records stored, each at the TLS receiver once");
}

#[test]
fn otlp_over_mutual_tls_reaches_a_receiver_that_requires_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let site = SiteCa::new("site CA");
    file(d, "ca.pem", &site.pem);
    let (server, server_key) = site.issue(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client, client_key) =
        site.issue(&["gantry-controller"], ExtendedKeyUsagePurpose::ClientAuth);
    let receiver = OtlpReceiver::start(
        d,
        0,
        Some(ReceiverTls {
            cert: file(d, "server.pem", &server),
            key: file(d, "server.key", &server_key),
            client_ca: d.join("ca.pem"),
        }),
    );
    let path = |name: &str| d.join(name).display().to_string();
    let mut controller = Controller::start();
    controller.restart_with(&[
        "--otlp",
        &format!("https://{}/v1/metrics", receiver.addr),
        "--otlp-ca",
        &path("ca.pem"),
        "--otlp-cert",
        &file(d, "client.pem", &client).display().to_string(),
        "--otlp-key",
        &file(d, "client.key", &client_key).display().to_string(),
    ]);
    let mut agent = Agent::enroll(&controller, "otlp-tls-node", "");
    agent.run("200ms");
    // The receiver records the points before it answers: wait for the answer too.
    wait_for("points over mutual TLS", Duration::from_secs(60), || {
        let ok = figure(
            &controller.metrics_page(),
            r#"gantry_controller_otlp_requests_total{outcome="ok"}"#,
        );
        (ok >= 1.0
            && receiver
                .points()
                .iter()
                .any(|p| p["attributes"]["node"] == "otlp-tls-node"))
        .then_some(())
    });
    agent.kill();
}

#[test]
fn tls_files_that_cannot_work_are_refused_at_start_naming_the_flag() {
    let controller = Controller::start();
    let dir = tempfile::tempdir().unwrap();
    let garbage = file(dir.path(), "garbage.pem", "not a certificate");
    let garbage = garbage.display().to_string();
    let missing = dir.path().join("missing.pem").display().to_string();
    for (args, names) in [
        (
            vec![
                "--remote-write",
                "https://127.0.0.1:9090/api/v1/write",
                "--remote-write-ca",
                &missing,
            ],
            "missing.pem",
        ),
        (
            vec!["--otlp", "https://127.0.0.1:4318", "--otlp-ca", &garbage],
            "CA certificate",
        ),
        (
            vec!["--otlp", "https://127.0.0.1:4318", "--otlp-cert", &garbage],
            "--otlp-key",
        ),
        (
            vec![
                "--remote-write",
                "http://127.0.0.1:9090/api/v1/write",
                "--remote-write-ca",
                &garbage,
            ],
            "plain HTTP",
        ),
    ] {
        let stderr = controller.serve_refused(&args);
        assert!(stderr.contains(names), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[0]),
            "{args:?} names its flag: {stderr}"
        );
    }
}
