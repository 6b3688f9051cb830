//! `gantry-agent export-telemetry`: buffered telemetry written to a file signed by the
//! node key, for halls with no network (format in `gantry_shared::telemetry_export`).
//! Exporting reads the buffer and deletes nothing: the uplink, if it ever connects, still
//! delivers every record, and the controller stores each (node, sequence) once.

use gantry_shared::health::Health;
use gantry_shared::protocol::telemetry::Record;
use gantry_shared::telemetry_export::{self, Body, Envelope, MAX_EXPORT_BYTES};
use serde_json::value::RawValue;

use crate::buffer::{Buffer, BufferError};
use crate::identity::NodeIdentity;

/// Why no export was written.
#[derive(Debug, thiserror::Error)]
pub enum ExportBuildError {
    #[error(
        "this node is not enrolled, so it has no key the controller knows: enroll it once (`gantry-agent enroll`), then export"
    )]
    NotEnrolled,
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("cannot sign the export with the node key")]
    Sign(#[source] gantry_net::NetError),
}

/// What an export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: usize,
    pub from_seq: u64,
    pub to_seq: u64,
}

/// Builds a signed export of the records after `after_seq` (at most `max_records`, and
/// no more than fit a file of [`MAX_EXPORT_BYTES`]).
pub fn build(
    buffer: &Buffer,
    identity: Option<&NodeIdentity>,
    health: Option<Health>,
    after_seq: u64,
    max_records: usize,
    now_ms: u64,
) -> Result<(Vec<u8>, Summary), ExportBuildError> {
    let identity = identity.ok_or(ExportBuildError::NotEnrolled)?;
    // The body is escaped into the envelope as a string: keep its records well inside.
    let budget = (MAX_EXPORT_BYTES - (64 << 10)) * 2 / 3;
    let buffered = buffer.read_after(after_seq, max_records, budget)?;
    let records: Vec<Record> = buffered
        .into_iter()
        .filter_map(|r| {
            let body = String::from_utf8(r.body)
                .ok()
                .and_then(|text| RawValue::from_string(text).ok())?;
            Some(Record {
                seq: r.seq,
                at_ms: r.at_ms,
                class: r.class,
                body,
            })
        })
        .collect();
    let summary = Summary {
        records: records.len(),
        from_seq: records.first().map_or(0, |r| r.seq),
        to_seq: records.last().map_or(0, |r| r.seq),
    };
    let body = Body {
        node: identity.enrollment.name.clone(),
        created_at_ms: now_ms,
        from_seq: summary.from_seq,
        to_seq: summary.to_seq,
        health,
        records,
    };
    let body = serde_json::to_string(&body).expect("export body serializes");
    let signature = gantry_net::sign(&identity.key_pem, &telemetry_export::signed_message(&body))
        .map_err(ExportBuildError::Sign)?;
    let envelope = Envelope {
        format: telemetry_export::FORMAT.to_owned(),
        version: telemetry_export::VERSION,
        body,
        certificate_pem: identity.cert_pem.clone(),
        signature: gantry_shared::bundle::signing::to_hex(&signature),
    };
    Ok((
        serde_json::to_vec_pretty(&envelope).expect("envelope serializes"),
        summary,
    ))
}
