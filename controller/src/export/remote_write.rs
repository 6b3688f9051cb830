//! Prometheus remote-write (protocol 1.0: snappy-compressed protobuf `WriteRequest`s),
//! the store's queue and retries being [`super`]'s.
//!
//! Series carry the federation endpoint's names and labels (`node` first, then
//! dcgm-exporter's), the configured extra labels, and the sample's own timestamp. A
//! resent sample has the same series, timestamp and value, which Prometheus-compatible
//! receivers keep once.

use std::collections::BTreeMap;

use gantry_shared::exposition::{self, Exposition, ModelLabel};
use gantry_shared::telemetry::Sample;

use super::{Encoded, Outcome, Protocol};
use crate::store::Export;

/// An example for error messages.
pub const EXAMPLE: &str = "http://127.0.0.1:9090/api/v1/write";
/// The path where a URL names none: Prometheus's receiver.
pub const DEFAULT_PATH: &str = "/api/v1/write";

/// Remote-write, with the labels added to every series.
#[derive(Debug, Clone, Default)]
pub struct RemoteWrite {
    pub labels: Vec<(String, String)>,
}

impl Protocol for RemoteWrite {
    const NAME: &'static str = "remote-write";
    const EXPORT: Export = Export::RemoteWrite;

    fn encode(&self, samples: &[(String, Sample)]) -> Encoded {
        let (body, samples) = encode(samples, &self.labels);
        Encoded { body, samples }
    }

    fn headers(&self) -> &[(&'static str, &'static str)] {
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ]
    }

    fn accepted(&self, _body: &[u8], _sent: u64) -> Outcome {
        Outcome::Delivered {
            rejected: 0,
            why: String::new(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixture::sample;

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
}
