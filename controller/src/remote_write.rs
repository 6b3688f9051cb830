//! Prometheus remote-write (protocol 1.0: snappy-compressed protobuf `WriteRequest`s) of
//! the fleet's telemetry, from the controller's store to the site's time-series database.
//!
//! The store is the durable queue: every node's telemetry is already kept there by
//! (node, sequence), and a cursor per node (`remote_write_cursors`) records how far
//! remote-write has delivered. A batch is read after the cursors, sent, and the cursors
//! move only once the receiver answered 2xx, in one transaction: a crash or a receiver
//! outage resends from the cursors, never skips. A resent sample has the same series,
//! timestamp and value, which Prometheus-compatible receivers keep once. A 4xx other
//! than 429 is the receiver refusing those samples for good (out of bounds, say): they
//! are logged, counted and passed over, or remote-write would stall behind them. Any
//! other failure is retried with backoff (1 s doubling to 30 s).
//!
//! Series carry the federation endpoint's names and labels (`node` first, then
//! dcgm-exporter's), the configured extra labels, and the sample's own timestamp.

#![deny(clippy::disallowed_methods)] // async task: file I/O goes through spawn_blocking

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gantry_shared::exposition::{self, Exposition, ModelLabel};
use gantry_shared::telemetry::Sample;
use http_body_util::{BodyExt, Full};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

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

/// Where to write, and what to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `host:port` to connect to.
    pub authority: String,
    /// The request path, e.g. `/api/v1/write`.
    pub path: String,
    /// Labels added to every series (after `node`), e.g. `site="hall-b"`.
    pub labels: Vec<(String, String)>,
}

/// Why a remote-write setting was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "{0:?} is not an http:// URL like http://127.0.0.1:9090/api/v1/write (remote-write speaks plain HTTP: point it at a receiver on this host or the site's network, or at a local Prometheus agent or vmagent that forwards over TLS)"
    )]
    Url(String),
    #[error("remote-write label {0:?} is not name=value with a Prometheus label name")]
    Label(String),
}

impl Config {
    /// `url` (`http://host:port/path`) and `labels` (`name=value,name=value`).
    pub fn parse(url: &str, labels: &str) -> Result<Self, ConfigError> {
        let rest = url
            .trim()
            .strip_prefix("http://")
            .ok_or_else(|| ConfigError::Url(url.to_owned()))?;
        let (authority, path) = rest.split_once('/').map_or((rest, "/"), |(a, p)| (a, p));
        if authority.is_empty() || authority.contains('@') || !authority.contains(':') {
            return Err(ConfigError::Url(url.to_owned()));
        }
        let path = if path.starts_with('/') {
            path.to_owned()
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
            authority: authority.to_owned(),
            path,
            labels: parsed,
        })
    }
}

/// Remote-write's figures, for the controller's `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub samples: AtomicU64,
    pub records: AtomicU64,
    pub requests_ok: AtomicU64,
    pub requests_failed: AtomicU64,
    pub records_refused: AtomicU64,
    pub last_success_ms: AtomicU64,
    pub bytes: AtomicU64,
}

/// The protocol's messages (prometheus/prompb `types.proto` and `remote.proto`).
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub(super) timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub(super) labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub(super) samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Label {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(string, tag = "2")]
        pub(super) value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Sample {
        #[prost(double, tag = "1")]
        pub(super) value: f64,
        #[prost(int64, tag = "2")]
        pub(super) timestamp: i64,
    }
}

/// The write request for `samples` of their nodes: one time series per label set, its
/// samples in time order, labels sorted by name as the protocol requires. Returns the
/// snappy-compressed protobuf and how many samples it holds.
pub fn encode(samples: &[(String, Sample)], extra: &[(String, String)]) -> (Vec<u8>, u64) {
    let mut series: BTreeMap<Vec<(String, String)>, Vec<proto::Sample>> = BTreeMap::new();
    for (node, sample) in samples {
        let mut labels = vec![("node".to_owned(), node.clone())];
        labels.extend(extra.iter().cloned());
        let mut e = Exposition::collecting(labels);
        exposition::render_gpus(&mut e, sample, ModelLabel::Dcgm);
        exposition::render_host(&mut e, sample);
        let timestamp = i64::try_from(sample.taken_at_ms).unwrap_or(i64::MAX);
        for s in e.into_series() {
            let mut labels = s.labels;
            labels.push(("__name__".to_owned(), s.name));
            labels.sort();
            series.entry(labels).or_default().push(proto::Sample {
                value: s.value,
                timestamp,
            });
        }
    }
    let mut count = 0;
    let request = proto::WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(labels, mut samples)| {
                samples.sort_by_key(|s| s.timestamp);
                samples.dedup_by_key(|s| s.timestamp);
                count += samples.len() as u64;
                proto::TimeSeries {
                    labels: labels
                        .into_iter()
                        .map(|(name, value)| proto::Label { name, value })
                        .collect(),
                    samples,
                }
            })
            .collect(),
    };
    let raw = prost::Message::encode_to_vec(&request);
    let compressed = snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any input");
    (compressed, count)
}

/// A batch read after the cursors: the samples, and where each node's cursor goes once
/// they are delivered.
struct Batch {
    samples: Vec<(String, Sample)>,
    cursors: Vec<(String, u64)>,
    records: u64,
}

/// The next batch, starting after `after_node` so that every node takes its turn.
fn read_batch(store: &Store, after_node: &str) -> Result<Batch, StoreError> {
    let mut batch = Batch {
        samples: Vec::new(),
        cursors: Vec::new(),
        records: 0,
    };
    for chunk in store.remote_write_batch(after_node, PER_NODE, PER_REQUEST)? {
        for (seq, body) in chunk.metrics {
            match serde_json::from_slice::<Sample>(&body) {
                Ok(sample) => batch.samples.push((chunk.node.clone(), sample)),
                Err(e) => {
                    tracing::warn!(node = %chunk.node, seq, error = %e, "remote-write skips a stored record that is not a sample");
                }
            }
            batch.records += 1;
        }
        batch.cursors.push((chunk.node, chunk.last_seq));
    }
    Ok(batch)
}

/// What one request came to.
enum Outcome {
    Delivered,
    /// The receiver refused these samples for good (a 4xx other than 429).
    Refused(String),
    Retry(String),
}

async fn send(config: &Config, body: Vec<u8>) -> Outcome {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&config.authority)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", config.authority))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {}: {e}", config.authority))?;
        let connection = tokio::spawn(connection);
        let request = hyper::Request::post(config.path.as_str())
            .header(hyper::header::HOST, config.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
            .header(hyper::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header(
                hyper::header::USER_AGENT,
                concat!("gantry/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("sending to {}: {e}", config.authority))?;
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        connection.abort();
        Ok::<_, String>((status, text))
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Err(_) => Outcome::Retry(format!(
            "no answer from {} within {TIMEOUT:?}",
            config.authority
        )),
        Ok(Err(e)) => Outcome::Retry(e),
        Ok(Ok((status, _))) if status.is_success() => Outcome::Delivered,
        Ok(Ok((status, text)))
            if status.is_client_error() && status != hyper::StatusCode::TOO_MANY_REQUESTS =>
        {
            Outcome::Refused(format!("{status}: {text}"))
        }
        Ok(Ok((status, text))) => Outcome::Retry(format!("{status}: {text}")),
    }
}

/// Delivers the store's telemetry to `config` until `shutdown`.
pub async fn run(
    store: Arc<Store>,
    config: Config,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    tracing::info!(url = %format!("http://{}{}", config.authority, config.path), "remote-write on");
    let mut backoff = BACKOFF_MIN;
    // The node the last delivered batch ended with: the next starts after it.
    let mut last_node = String::new();
    loop {
        let read = {
            let store = Arc::clone(&store);
            let after = last_node.clone();
            tokio::task::spawn_blocking(move || read_batch(&store, &after)).await
        };
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "remote-write cannot read the store; retrying");
                if sleep_or_stop(&shutdown, backoff).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "remote-write's store task failed; retrying");
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
        let (body, count) = encode(&batch.samples, &config.labels);
        let size = body.len() as u64;
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = send(&config, body) => outcome,
        };
        let advance = match outcome {
            Outcome::Delivered => {
                counters.requests_ok.fetch_add(1, Ordering::Relaxed);
                counters.samples.fetch_add(count, Ordering::Relaxed);
                counters.records.fetch_add(batch.records, Ordering::Relaxed);
                counters.bytes.fetch_add(size, Ordering::Relaxed);
                counters
                    .last_success_ms
                    .store(gantry_net::clock::now_ms(), Ordering::Relaxed);
                backoff = BACKOFF_MIN;
                true
            }
            Outcome::Refused(why) => {
                tracing::error!(records = batch.records, samples = count, reason = %why, "the remote-write receiver refused these samples for good; they are passed over (its log says why: out-of-order or too old samples, a label it does not accept)");
                counters
                    .records_refused
                    .fetch_add(batch.records, Ordering::Relaxed);
                counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Outcome::Retry(why) => {
                tracing::warn!(error = %why, retry_in = ?backoff, "remote-write failed; the records stay in the store and are sent again");
                counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                if sleep_or_stop(&shutdown, backoff).await {
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
            match tokio::task::spawn_blocking(move || store.set_remote_write_cursors(&cursors))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "remote-write cannot record how far it got; the batch will be sent again");
                }
                Err(e) => tracing::error!(error = %e, "remote-write's store task failed"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_shared::telemetry::{
        GpuFields, GpuIdentity, GpuReading, GpuState, HostReading, NvmlStatus,
    };

    fn sample(at_ms: u64, temp: u32) -> Sample {
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

    fn decode(body: &[u8]) -> proto::WriteRequest {
        let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
        prost::Message::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn samples_become_one_series_per_label_set_in_time_order_with_sorted_labels() {
        let extra = vec![("site".to_owned(), "hall-b".to_owned())];
        let (body, count) = encode(
            &[
                ("n1".to_owned(), sample(2000, 61)),
                ("n1".to_owned(), sample(1000, 60)),
                ("n2".to_owned(), sample(1000, 70)),
            ],
            &extra,
        );
        let request = decode(&body);
        let temp: Vec<&proto::TimeSeries> = request
            .timeseries
            .iter()
            .filter(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == "DCGM_FI_DEV_GPU_TEMP")
            })
            .collect();
        assert_eq!(temp.len(), 2, "one series per node");
        let n1 = temp
            .iter()
            .find(|t| t.labels.iter().any(|l| l.name == "node" && l.value == "n1"))
            .unwrap();
        assert_eq!(
            n1.samples,
            vec![
                proto::Sample {
                    value: 60.0,
                    timestamp: 1000
                },
                proto::Sample {
                    value: 61.0,
                    timestamp: 2000
                }
            ]
        );
        for t in &request.timeseries {
            let names: Vec<&str> = t.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted, "labels sorted by name");
            assert!(names.contains(&"site") && names.contains(&"gpu") || !names.contains(&"gpu"));
        }
        let total: usize = request.timeseries.iter().map(|t| t.samples.len()).sum();
        assert_eq!(total as u64, count);
    }

    #[test]
    fn only_plain_http_urls_and_prometheus_label_names_are_taken() {
        let c =
            Config::parse("http://127.0.0.1:9090/api/v1/write", "site=hall-b, rack=r1").unwrap();
        assert_eq!(c.authority, "127.0.0.1:9090");
        assert_eq!(c.path, "/api/v1/write");
        assert_eq!(c.labels.len(), 2);
        for bad in [
            "https://x:1/w",
            "x:1/w",
            "http:///w",
            "http://user@x:1/w",
            "http://x/w",
        ] {
            assert!(
                matches!(Config::parse(bad, ""), Err(ConfigError::Url(_))),
                "{bad}"
            );
        }
        for bad in ["site", "1a=x", "__name__=x", "node=x", "a-b=x"] {
            assert!(
                matches!(
                    Config::parse("http://x:1/w", bad),
                    Err(ConfigError::Label(_))
                ),
                "{bad}"
            );
        }
    }
}
