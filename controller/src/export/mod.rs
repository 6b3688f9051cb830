//! Telemetry out: the fleet's telemetry, from the controller's store to the time-series
//! engines a site already runs — Prometheus remote-write ([`remote_write`]) and OTLP/HTTP
//! metrics ([`otlp`]).
//!
//! The store is the durable queue for both: every node's telemetry is already kept
//! there by (node, sequence), and each export has a cursor per node recording how far
//! it has delivered. A batch is read after the cursors, sent, and the cursors move only
//! once the receiver accepted it, in one transaction: a crash or a receiver outage
//! resends from the cursors, never skips. An answer that refuses the samples for good
//! (a 4xx other than 429: out of bounds, a label the receiver does not accept) is
//! logged, counted and passed over, or the export would stall behind them; any other
//! failure (no connection, a timeout, 429, 5xx) is retried with backoff, 1 s doubling
//! to 30 s, or the receiver's `Retry-After` where it gives one.
//!
//! Retention deletes telemetry whether or not it was exported: a receiver away for
//! longer than `--retention` loses what retention deleted meanwhile. The retention task
//! logs that loss as an error and counts it (`gantry_controller_*_expired_records_total`,
//! [`Counters::records_expired`]).

#![deny(clippy::disallowed_methods)] // async tasks: file I/O goes through spawn_blocking

pub mod otlp;
pub mod remote_write;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gantry_shared::telemetry::Sample;
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;

use crate::store::{Export, Store, StoreError};

/// Records read per node per batch.
const PER_NODE: usize = 64;
/// Records per request, at most (plus one node's worth): about 10 000 samples for
/// nodes of 8 GPUs, well within what receivers accept in one request.
const PER_REQUEST: usize = 64;
/// How long a request may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Retry backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often to look for new records when there were none.
const IDLE: Duration = Duration::from_secs(1);

/// Where an export sends, and the labels (remote-write) or resource attributes (OTLP)
/// it adds to everything.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` to connect to (the URL's port, or 80 / 443).
    pub authority: String,
    /// The host alone, for the TLS server name.
    host: String,
    /// The request path, e.g. `/api/v1/write`.
    pub path: String,
    /// Added to every series after `node`, e.g. `site="hall-b"`.
    pub labels: Vec<(String, String)>,
    /// For an `https://` URL, the client configuration ([`Target::with_tls`]).
    tls: Option<Arc<rustls::ClientConfig>>,
    https: bool,
}

/// The PEM files an `https://` target is verified and identified with, as read at start.
#[derive(Debug, Clone, Default)]
pub struct TlsPem {
    /// The CAs the receiver's certificate must chain to: the site's file, or the
    /// system's bundle.
    pub ca: String,
    /// A client certificate chain and its key, for a receiver that asks for one.
    pub client: Option<(String, String)>,
}

/// Why an export setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{url:?} is not an http:// or https:// URL like {example}")]
    Url { url: String, example: &'static str },
    #[error(
        "label {0:?} is not name=value with a Prometheus label name (letters, digits, _; not node, not starting with __)"
    )]
    Label(String),
    #[error("{0}")]
    Tls(String),
}

impl Target {
    /// `url` (`http[s]://host[:port][/path]`; `default_path` where it names none) and
    /// `labels` (`name=value,name=value`). `example` is a URL for the error message. An
    /// `https://` target needs [`Target::with_tls`] before it is used.
    pub fn parse(
        url: &str,
        default_path: &str,
        labels: &str,
        example: &'static str,
    ) -> Result<Self, ConfigError> {
        let refused = || ConfigError::Url {
            url: url.to_owned(),
            example,
        };
        let url = url.trim();
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(refused());
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() || authority.contains('@') {
            return Err(refused());
        }
        // host, host:port, [v6], [v6]:port
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !authority.ends_with(']') => {
                (host, port.parse::<u16>().map_err(|_| refused())?)
            }
            _ => (authority, if https { 443 } else { 80 }),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        // An IPv6 address goes in brackets, or its colons read as the port's.
        let unbracketed = bare.contains(':') && !host.starts_with('[');
        if bare.is_empty() || unbracketed || rustls::pki_types::ServerName::try_from(bare).is_err()
        {
            return Err(refused());
        }
        let path = if path.is_empty() {
            default_path.to_owned()
        } else {
            format!("/{path}")
        };
        let mut parsed = Vec::new();
        for pair in labels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| ConfigError::Label(pair.to_owned()))?;
            let valid = name
                .chars()
                .enumerate()
                .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
            if name.is_empty() || !valid || name.starts_with("__") || name == "node" {
                return Err(ConfigError::Label(pair.to_owned()));
            }
            parsed.push((name.to_owned(), value.to_owned()));
        }
        Ok(Self {
            authority: format!("{host}:{port}"),
            host: bare.to_owned(),
            path,
            labels: parsed,
            tls: None,
            https,
        })
    }

    /// Whether the URL is `https://`.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The TLS configuration an `https://` target connects with.
    pub fn with_tls(mut self, pem: &TlsPem) -> Result<Self, ConfigError> {
        let client = pem
            .client
            .as_ref()
            .map(|(cert, key)| (cert.as_str(), key.as_str()));
        let config = gantry_shared::tls::https_client_config(&pem.ca, client)
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        self.tls = Some(Arc::new(config));
        Ok(self)
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

/// An export's figures, for the controller's `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub samples: AtomicU64,
    pub records: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub records_refused: AtomicU64,
    /// Samples a receiver took the request of but refused (OTLP's partial success).
    pub samples_rejected: AtomicU64,
    /// Records retention deleted before they were delivered.
    pub records_expired: AtomicU64,
    pub last_success_ms: AtomicU64,
    pub bytes: AtomicU64,
}

/// A request's body and how many samples it holds.
#[derive(Debug)]
pub struct Encoded {
    pub body: Vec<u8>,
    pub samples: u64,
}

/// What one request came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; `rejected` samples of it were refused all the same (with why).
    Delivered { rejected: u64, why: String },
    /// The receiver refused these samples for good.
    Refused(String),
    /// Try again, after `after` where the receiver said when.
    Retry {
        why: String,
        after: Option<Duration>,
    },
}

/// One export's protocol: how a batch is encoded and what the answer means.
pub trait Protocol: Send + Sync + 'static {
    /// For logs: "remote-write", "OTLP".
    const NAME: &'static str;
    /// Whose cursors it moves.
    const EXPORT: Export;

    /// The request for `samples` of their nodes.
    fn encode(&self, samples: &[(String, Sample)]) -> Encoded;

    /// The request's headers, besides Host and User-Agent.
    fn headers(&self) -> &[(&'static str, &'static str)];

    /// What a 2xx answer's body says of a request of `sent` samples (OTLP's partial
    /// success).
    fn accepted(&self, body: &[u8], sent: u64) -> Outcome;
}

/// An HTTP answer: status, `Retry-After` in seconds where given, body.
struct Answer {
    status: hyper::StatusCode,
    retry_after: Option<Duration>,
    body: Bytes,
}

/// Posts `body` to `target` over a fresh connection, TLS for an `https://` target.
async fn post(target: &Target, headers: &[(&str, &str)], body: Vec<u8>) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
    match (&target.tls, target.https) {
        (Some(config), true) => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| format!("{}: {e}", target.host))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS with {}: {e}", target.authority))?;
            exchange(stream, target, headers, body).await
        }
        (None, true) => Err(format!(
            "{} is https:// but no TLS configuration was given",
            target.url()
        )),
        (_, false) => exchange(stream, target, headers, body).await,
    }
}

/// One HTTP/1.1 request and its answer over `io`.
async fn exchange<IO>(
    io: IO,
    target: &Target,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Answer, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {}", target.authority, causes(&e)))?;
    let connection = tokio::spawn(connection);
    let mut request = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(
            hyper::header::USER_AGENT,
            concat!("gantry/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("sending to {}: {}", target.authority, causes(&e)))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    connection.abort();
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// An error and its sources, "outer: inner: …" (hyper's own says only "connection
/// error" where TLS says which alert the receiver sent).
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let _ = write!(text, ": {inner}");
        source = inner.source();
    }
    text
}

/// Sends one request and reads what its answer means.
async fn send<P: Protocol>(protocol: &P, target: &Target, body: Vec<u8>, sent: u64) -> Outcome {
    let answer = match tokio::time::timeout(TIMEOUT, post(target, protocol.headers(), body)).await {
        Err(_) => {
            return Outcome::Retry {
                why: format!("no answer from {} within {TIMEOUT:?}", target.authority),
                after: None,
            };
        }
        Ok(Err(why)) => return Outcome::Retry { why, after: None },
        Ok(Ok(answer)) => answer,
    };
    let text = || {
        let body = String::from_utf8_lossy(&answer.body);
        let body = body.trim();
        // A protobuf error body (OTLP's Status) reads as text well enough to log.
        let body: String = body.chars().filter(|c| !c.is_control()).take(500).collect();
        format!("{}: {body}", answer.status)
    };
    if answer.status.is_success() {
        protocol.accepted(&answer.body, sent)
    } else if answer.status.is_client_error()
        && answer.status != hyper::StatusCode::TOO_MANY_REQUESTS
    {
        Outcome::Refused(text())
    } else {
        Outcome::Retry {
            why: text(),
            after: answer.retry_after.map(|d| d.min(BACKOFF_MAX)),
        }
    }
}

/// A batch read after the cursors: the samples, and where each node's cursor goes once
/// they are delivered.
struct Batch {
    samples: Vec<(String, Sample)>,
    cursors: Vec<(String, u64)>,
    records: u64,
}

/// The next batch of `export`, starting after `after_node` so that every node takes its
/// turn.
fn read_batch(store: &Store, export: Export, after_node: &str) -> Result<Batch, StoreError> {
    let mut batch = Batch {
        samples: Vec::new(),
        cursors: Vec::new(),
        records: 0,
    };
    for chunk in store.export_batch(export, after_node, PER_NODE, PER_REQUEST)? {
        for (seq, body) in chunk.metrics {
            match serde_json::from_slice::<Sample>(&body) {
                Ok(sample) => batch.samples.push((chunk.node.clone(), sample)),
                Err(e) => {
                    tracing::warn!(node = %chunk.node, seq, error = %e, "the export skips a stored record that is not a sample");
                }
            }
            batch.records += 1;
        }
        batch.cursors.push((chunk.node, chunk.last_seq));
    }
    Ok(batch)
}

/// Delivers the store's telemetry to `target` with `protocol` until `shutdown`.
pub async fn run<P: Protocol>(
    store: Arc<Store>,
    protocol: P,
    target: Target,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let name = P::NAME;
    tracing::info!(export = name, url = %target.url(), "telemetry export on");
    let mut backoff = BACKOFF_MIN;
    // The node the last delivered batch ended with: the next starts after it.
    let mut last_node = String::new();
    loop {
        let read = {
            let store = Arc::clone(&store);
            let after = last_node.clone();
            tokio::task::spawn_blocking(move || read_batch(&store, P::EXPORT, &after)).await
        };
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::error!(export = name, error = %e, "the export cannot read the store; retrying");
                if sleep_or_stop(&shutdown, backoff).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(export = name, error = %e, "the export's store task failed; retrying");
                if sleep_or_stop(&shutdown, backoff).await {
                    return;
                }
                continue;
            }
        };
        if batch.cursors.is_empty() {
            if sleep_or_stop(&shutdown, IDLE).await {
                return;
            }
            continue;
        }
        let Encoded { body, samples } = protocol.encode(&batch.samples);
        let size = body.len() as u64;
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = send(&protocol, &target, body, samples) => outcome,
        };
        let advance = match outcome {
            Outcome::Delivered { rejected, why } => {
                if rejected > 0 {
                    tracing::error!(export = name, rejected, samples, reason = %why, "the receiver took the request but refused some of its samples; they are passed over");
                    counters
                        .samples_rejected
                        .fetch_add(rejected, Ordering::Relaxed);
                }
                counters.requests_ok.fetch_add(1, Ordering::Relaxed);
                counters
                    .samples
                    .fetch_add(samples.saturating_sub(rejected), Ordering::Relaxed);
                counters.records.fetch_add(batch.records, Ordering::Relaxed);
                counters.bytes.fetch_add(size, Ordering::Relaxed);
                counters
                    .last_success_ms
                    .store(gantry_net::clock::now_ms(), Ordering::Relaxed);
                backoff = BACKOFF_MIN;
                true
            }
            Outcome::Refused(why) => {
                tracing::error!(export = name, records = batch.records, samples, reason = %why, "the receiver refused these samples for good; they are passed over (its log says why: out-of-order or too old samples, a label it does not accept)");
                counters
                    .records_refused
                    .fetch_add(batch.records, Ordering::Relaxed);
                counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Outcome::Retry { why, after } => {
                let wait = after.unwrap_or(backoff);
                tracing::warn!(export = name, error = %why, retry_in = ?wait, "the export failed; the records stay in the store and are sent again");
                counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                if sleep_or_stop(&shutdown, wait).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                false
            }
        };
        if advance {
            if let Some((node, _)) = batch.cursors.last() {
                last_node.clone_from(node);
            }
            let store = Arc::clone(&store);
            let cursors = batch.cursors;
            match tokio::task::spawn_blocking(move || store.set_export_cursors(P::EXPORT, &cursors))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(export = name, error = %e, "the export cannot record how far it got; the batch will be sent again");
                }
                Err(e) => {
                    tracing::error!(export = name, error = %e, "the export's store task failed");
                }
            }
        }
    }
}

/// Sleeps `d`; true when shutdown came first.
async fn sleep_or_stop(shutdown: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// Test data for the protocols' encoders.
#[cfg(test)]
pub(crate) mod fixture {
    use gantry_shared::telemetry::{
        GpuFields, GpuIdentity, GpuReading, GpuState, HostReading, NvmlStatus, Sample,
    };

    /// A one-GPU sample taken at `at_ms` with GPU 0 at `temp` °C.
    pub(crate) fn sample(at_ms: u64, temp: u32) -> Sample {
        Sample {
            taken_at_ms: at_ms,
            nvml: NvmlStatus::Available {
                driver_version: None,
                library: "sim".to_owned(),
            },
            gpus: vec![GpuReading {
                identity: GpuIdentity {
                    index: 0,
                    uuid: "GPU-1".to_owned(),
                    name: "NVIDIA H100 80GB HBM3".to_owned(),
                    pci_bus_id: "00000000:18:00.0".to_owned(),
                },
                state: GpuState::Ok,
                fields: GpuFields {
                    temperature_c: Some(temp),
                    ..GpuFields::default()
                },
                mig: Vec::new(),
            }],
            xids: Vec::new(),
            host: HostReading::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_and_prometheus_label_names_are_taken() {
        let t = Target::parse(
            "http://127.0.0.1:9090/api/v1/write",
            "/",
            "site=hall-b, rack=r1",
            "",
        )
        .unwrap();
        assert_eq!(t.authority, "127.0.0.1:9090");
        assert_eq!(t.path, "/api/v1/write");
        assert_eq!(t.labels.len(), 2);
        assert!(!t.is_https());
        let t = Target::parse("http://127.0.0.1:4318", "/v1/metrics", "", "").unwrap();
        assert_eq!(
            t.path, "/v1/metrics",
            "a URL naming no path takes the default"
        );
        let t = Target::parse("https://mimir.example/api/v1/push", "/", "", "").unwrap();
        assert!(t.is_https());
        assert_eq!(t.authority, "mimir.example:443", "https's port");
        assert_eq!(t.host, "mimir.example");
        let t = Target::parse("http://[::1]/w", "/", "", "").unwrap();
        assert_eq!((t.authority.as_str(), t.host.as_str()), ("[::1]:80", "::1"));
        let t = Target::parse("https://[::1]:9443/w", "/", "", "").unwrap();
        assert_eq!(t.authority, "[::1]:9443");
        for bad in [
            "ftp://x:1/w",
            "x:1/w",
            "http:///w",
            "http://user@x:1/w",
            "http://x:port/w",
            "http://x:70000/w",
            "https://bad_host!:1/w",
            "http://::1:9090/w",
        ] {
            assert!(
                matches!(
                    Target::parse(bad, "/", "", ""),
                    Err(ConfigError::Url { .. })
                ),
                "{bad}"
            );
        }
        for bad in ["site", "1a=x", "__name__=x", "node=x", "a-b=x"] {
            assert!(
                matches!(
                    Target::parse("http://x:1/w", "/", bad, ""),
                    Err(ConfigError::Label(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused_naming_it() {
        let t = Target::parse("https://x:1/w", "/", "", "").unwrap();
        let e = t
            .with_tls(&TlsPem {
                ca: "not a certificate".to_owned(),
                client: None,
            })
            .unwrap_err();
        assert!(e.to_string().contains("CA certificate"), "{e}");
    }
}
