//! OTLP/HTTP metrics export (`ExportMetricsServiceRequest`, binary protobuf, gzip), the
//! store's queue and retries being [`super`]'s.
//!
//! Each node is one resource (`service.name="gantry-agent"`, `service.instance.id` and
//! `host.name` the node's name, then the configured attributes); its metrics keep the
//! federation endpoint's names, and each data point the federation's labels as
//! attributes, `node` included, so that a collector exporting to Prometheus gives back
//! the same series. Counters become cumulative monotonic sums, everything else gauges;
//! a family's help text is the metric's description. The receiver's partial success
//! (`rejected_data_points`) is logged and counted; OTLP receivers do not deduplicate, so a
//! batch resent after a crash between delivery and the cursor's move arrives twice —
//! the only case where it can.

use std::collections::BTreeMap;
use std::io::Write;

use gantry_shared::exposition::{self, Collected, Exposition, Kind, ModelLabel};
use gantry_shared::telemetry::Sample;

use super::{Encoded, Outcome, Protocol};
use crate::store::Export;

/// An example for error messages.
pub const EXAMPLE: &str = "http://127.0.0.1:4318/v1/metrics";
/// The path where a URL names none, as OTLP/HTTP's `OTEL_EXPORTER_OTLP_ENDPOINT` takes.
pub const DEFAULT_PATH: &str = "/v1/metrics";

/// OTLP export, with the resource attributes added to every node.
#[derive(Debug, Clone, Default)]
pub struct Otlp {
    pub attributes: Vec<(String, String)>,
}

impl Protocol for Otlp {
    const NAME: &'static str = "OTLP";
    const EXPORT: Export = Export::Otlp;

    fn encode(&self, samples: &[(String, Sample)]) -> Encoded {
        let (request, samples) = request(samples, &self.attributes);
        let raw = prost::Message::encode_to_vec(&request);
        let mut gzip = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4),
            flate2::Compression::fast(),
        );
        gzip.write_all(&raw).expect("writing to memory");
        let body = gzip.finish().expect("writing to memory");
        Encoded { body, samples }
    }

    fn headers(&self) -> &[(&'static str, &'static str)] {
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ]
    }

    fn accepted(&self, body: &[u8], sent: u64) -> Outcome {
        let partial = gantry_shared::otlp_response::read(body, sent);
        Outcome::Delivered {
            rejected: partial.rejected,
            why: partial.message,
        }
    }
}

/// The request's messages (opentelemetry-proto `collector/metrics/v1`, `metrics/v1`,
/// `common/v1`, `resource/v1`; only the fields used here). The answer is read by
/// [`gantry_shared::otlp_response`].
mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ExportMetricsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub(super) resource_metrics: Vec<ResourceMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ResourceMetrics {
        #[prost(message, optional, tag = "1")]
        pub(super) resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub(super) scope_metrics: Vec<ScopeMetrics>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub(super) attributes: Vec<KeyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ScopeMetrics {
        #[prost(message, optional, tag = "1")]
        pub(super) scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub(super) metrics: Vec<Metric>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(string, tag = "2")]
        pub(super) version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Metric {
        #[prost(string, tag = "1")]
        pub(super) name: String,
        #[prost(string, tag = "2")]
        pub(super) description: String,
        #[prost(string, tag = "3")]
        pub(super) unit: String,
        #[prost(oneof = "Data", tags = "5, 7")]
        pub(super) data: Option<Data>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(super) enum Data {
        #[prost(message, tag = "5")]
        Gauge(Gauge),
        #[prost(message, tag = "7")]
        Sum(Sum),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Gauge {
        #[prost(message, repeated, tag = "1")]
        pub(super) data_points: Vec<NumberDataPoint>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Sum {
        #[prost(message, repeated, tag = "1")]
        pub(super) data_points: Vec<NumberDataPoint>,
        #[prost(int32, tag = "2")]
        pub(super) aggregation_temporality: i32,
        #[prost(bool, tag = "3")]
        pub(super) is_monotonic: bool,
    }

    /// `AGGREGATION_TEMPORALITY_CUMULATIVE`.
    pub(super) const CUMULATIVE: i32 = 2;

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct NumberDataPoint {
        #[prost(message, repeated, tag = "7")]
        pub(super) attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "3")]
        pub(super) time_unix_nano: u64,
        #[prost(double, tag = "4")]
        pub(super) as_double: f64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct KeyValue {
        #[prost(string, tag = "1")]
        pub(super) key: String,
        #[prost(message, optional, tag = "2")]
        pub(super) value: Option<AnyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct AnyValue {
        #[prost(string, tag = "1")]
        pub(super) string_value: String,
    }
}

fn attribute(key: &str, value: &str) -> proto::KeyValue {
    proto::KeyValue {
        key: key.to_owned(),
        value: Some(proto::AnyValue {
            string_value: value.to_owned(),
        }),
    }
}

/// One metric's declaration and data points as they are gathered.
struct Gathered {
    kind: Kind,
    help: String,
    points: Vec<proto::NumberDataPoint>,
}

/// The request for `samples` of their nodes: a resource per node (in name order), its
/// metrics in name order, each metric's data points in time order. Returns it and how
/// many data points it holds.
fn request(
    samples: &[(String, Sample)],
    attributes: &[(String, String)],
) -> (proto::ExportMetricsServiceRequest, u64) {
    let mut nodes: BTreeMap<&str, BTreeMap<String, Gathered>> = BTreeMap::new();
    for (node, sample) in samples {
        let mut e = Exposition::collecting(vec![("node".to_owned(), node.clone())]);
        exposition::render_gpus(&mut e, sample, ModelLabel::Dcgm);
        exposition::render_host(&mut e, sample);
        let Collected { families, series } = e.into_collected();
        let metrics = nodes.entry(node).or_default();
        for family in families {
            metrics.entry(family.name).or_insert_with(|| Gathered {
                kind: family.kind,
                help: family.help,
                points: Vec::new(),
            });
        }
        let time_unix_nano = sample.taken_at_ms.saturating_mul(1_000_000);
        for s in series {
            let gathered = metrics.entry(s.name).or_insert_with(|| Gathered {
                kind: Kind::Gauge,
                help: String::new(),
                points: Vec::new(),
            });
            gathered.points.push(proto::NumberDataPoint {
                attributes: s.labels.iter().map(|(k, v)| attribute(k, v)).collect(),
                time_unix_nano,
                as_double: s.value,
            });
        }
    }
    let mut count = 0;
    let scope = proto::InstrumentationScope {
        name: "gantry".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let resource_metrics = nodes
        .into_iter()
        .map(|(node, metrics)| {
            let mut resource = vec![
                attribute("service.name", "gantry-agent"),
                attribute("service.instance.id", node),
                attribute("host.name", node),
            ];
            resource.extend(attributes.iter().map(|(k, v)| attribute(k, v)));
            let metrics = metrics
                .into_iter()
                .filter(|(_, g)| !g.points.is_empty())
                .map(|(name, mut g)| {
                    g.points.sort_by_key(|p| p.time_unix_nano);
                    count += g.points.len() as u64;
                    let data = if g.kind == Kind::Counter {
                        proto::Data::Sum(proto::Sum {
                            data_points: g.points,
                            aggregation_temporality: proto::CUMULATIVE,
                            is_monotonic: true,
                        })
                    } else {
                        proto::Data::Gauge(proto::Gauge {
                            data_points: g.points,
                        })
                    };
                    proto::Metric {
                        name,
                        description: g.help,
                        unit: String::new(),
                        data: Some(data),
                    }
                })
                .collect();
            proto::ResourceMetrics {
                resource: Some(proto::Resource {
                    attributes: resource,
                }),
                scope_metrics: vec![proto::ScopeMetrics {
                    scope: Some(scope.clone()),
                    metrics,
                }],
            }
        })
        .collect();
    (
        proto::ExportMetricsServiceRequest { resource_metrics },
        count,
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::export::fixture::sample;

    fn decode(body: &[u8]) -> proto::ExportMetricsServiceRequest {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut raw)
            .unwrap();
        prost::Message::decode(raw.as_slice()).unwrap()
    }

    fn string(attributes: &[proto::KeyValue], key: &str) -> Option<String> {
        attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(|v| v.string_value.clone())
    }

    #[test]
    fn each_node_is_a_resource_and_each_family_one_metric_in_time_order() {
        let otlp = Otlp {
            attributes: vec![("site".to_owned(), "hall-b".to_owned())],
        };
        let encoded = otlp.encode(&[
            ("n2".to_owned(), sample(1000, 70)),
            ("n1".to_owned(), sample(2000, 61)),
            ("n1".to_owned(), sample(1000, 60)),
        ]);
        let request = decode(&encoded.body);
        let nodes: Vec<String> = request
            .resource_metrics
            .iter()
            .map(|r| string(&r.resource.as_ref().unwrap().attributes, "host.name").unwrap())
            .collect();
        assert_eq!(nodes, ["n1", "n2"]);
        let n1 = &request.resource_metrics[0];
        let resource = &n1.resource.as_ref().unwrap().attributes;
        assert_eq!(string(resource, "service.name").unwrap(), "gantry-agent");
        assert_eq!(string(resource, "service.instance.id").unwrap(), "n1");
        assert_eq!(string(resource, "site").unwrap(), "hall-b");

        let metrics = &n1.scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "one metric per name, in name order");
        let temp = metrics
            .iter()
            .find(|m| m.name == "DCGM_FI_DEV_GPU_TEMP")
            .unwrap();
        assert!(temp.description.contains("temperature"), "{temp:?}");
        let Some(proto::Data::Gauge(gauge)) = &temp.data else {
            panic!("a gauge: {temp:?}");
        };
        let points: Vec<(u64, f64)> = gauge
            .data_points
            .iter()
            .map(|p| (p.time_unix_nano, p.as_double))
            .collect();
        assert_eq!(points, [(1_000_000_000, 60.0), (2_000_000_000, 61.0)]);
        let attributes = &gauge.data_points[0].attributes;
        assert_eq!(string(attributes, "node").unwrap(), "n1");
        assert_eq!(string(attributes, "gpu").unwrap(), "0");
        assert_eq!(
            string(attributes, "modelName").unwrap(),
            "NVIDIA H100 80GB HBM3"
        );

        let total: usize = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(proto::Data::Gauge(g)) => g.data_points.len(),
                Some(proto::Data::Sum(s)) => s.data_points.len(),
                None => 0,
            })
            .sum();
        assert_eq!(total as u64, encoded.samples);
    }

    #[test]
    fn counters_become_cumulative_monotonic_sums() {
        let (request, _) = request(&[("n".to_owned(), sample(1000, 60))], &[]);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let sums: Vec<&proto::Metric> = metrics
            .iter()
            .filter(|m| matches!(m.data, Some(proto::Data::Sum(_))))
            .collect();
        assert!(!sums.is_empty(), "the host counters are sums");
        for m in sums {
            let Some(proto::Data::Sum(sum)) = &m.data else {
                unreachable!()
            };
            assert_eq!(sum.aggregation_temporality, proto::CUMULATIVE, "{}", m.name);
            assert!(sum.is_monotonic, "{}", m.name);
        }
    }

    #[test]
    fn a_partial_success_counts_the_rejected_points() {
        let otlp = Otlp::default();
        let body = gantry_shared::otlp_response::encode(3, "too old");
        assert_eq!(
            otlp.accepted(&body, 10),
            Outcome::Delivered {
                rejected: 3,
                why: "too old".to_owned()
            }
        );
    }
}
