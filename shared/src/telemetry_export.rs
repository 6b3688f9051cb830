//! Telemetry carried out of an air-gapped hall by file: `gantry-agent export-telemetry`
//! writes it, `gantry telemetry import` reads it.
//!
//! # Format
//!
//! One JSON object, the envelope:
//!
//! ```text
//! {"format": "gantry-telemetry-export", "version": 1,
//!  "body": "<the body, JSON, as a string>",
//!  "certificate_pem": "<the node's certificate>",
//!  "signature": "<hex DER ECDSA P-256/SHA-256 over SIGNING_CONTEXT ‖ body>"}
//! ```
//!
//! The body names the node, the sequence range and the records exactly as the uplink
//! sends them (metrics and events — XIDs, GPU and health changes — with their per-node
//! sequence numbers), plus the node's health when exported. The signature covers the
//! body's exact bytes, so the body is never re-serialized before it is checked. The
//! controller accepts a file only when the certificate is the one it issued to that node
//! and the signature verifies with its key; records are stored by (node, sequence), so a
//! file imported twice, or overlapping what the uplink delivered, changes nothing.

use serde::{Deserialize, Serialize};

use crate::protocol::telemetry::Record;

pub const FORMAT: &str = "gantry-telemetry-export";
pub const VERSION: u32 = 1;
/// Prefixed to the body before signing, so the node key's signature can mean nothing else.
pub const SIGNING_CONTEXT: &[u8] = b"gantry telemetry export v1\n";
/// Largest file accepted (it travels to the controller in one admin frame).
pub const MAX_EXPORT_BYTES: usize = 5 << 20;

/// The signed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub format: String,
    pub version: u32,
    pub body: String,
    pub certificate_pem: String,
    pub signature: String,
}

/// What the node exported.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub node: String,
    pub created_at_ms: u64,
    /// First and last sequence numbers in `records` (0, 0 when empty).
    pub from_seq: u64,
    pub to_seq: u64,
    #[serde(default)]
    pub health: Option<crate::health::Health>,
    pub records: Vec<Record>,
}

/// Why a file is not a usable export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the file is {size} bytes; an export is at most {max}")]
    Oversized { size: usize, max: usize },
    #[error("not a telemetry export: {0}")]
    Malformed(String),
    #[error("export format {format:?} version {version} is not {FORMAT:?} version {VERSION}")]
    Format { format: String, version: u32 },
    #[error(
        "the export's records are not in increasing sequence order (sequence {seq} after {after})"
    )]
    Order { seq: u64, after: u64 },
    #[error(
        "the export says it holds sequences {from}..={to} but its records run {first}..={last}"
    )]
    Range {
        from: u64,
        to: u64,
        first: u64,
        last: u64,
    },
}

/// The bytes the signature covers.
pub fn signed_message(body: &str) -> Vec<u8> {
    let mut out = SIGNING_CONTEXT.to_vec();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Parses a file's envelope, checking its size and format first.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, ExportError> {
    if bytes.len() > MAX_EXPORT_BYTES {
        return Err(ExportError::Oversized {
            size: bytes.len(),
            max: MAX_EXPORT_BYTES,
        });
    }
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| ExportError::Malformed(e.to_string()))?;
    if envelope.format != FORMAT || envelope.version != VERSION {
        return Err(ExportError::Format {
            format: envelope.format,
            version: envelope.version,
        });
    }
    Ok(envelope)
}

/// Parses a body (after its signature was checked): records strictly increasing and
/// within the range it states.
pub fn parse_body(body: &str) -> Result<Body, ExportError> {
    let body: Body =
        serde_json::from_str(body).map_err(|e| ExportError::Malformed(e.to_string()))?;
    let mut after = 0;
    for r in &body.records {
        if r.seq <= after {
            return Err(ExportError::Order { seq: r.seq, after });
        }
        after = r.seq;
    }
    if let (Some(first), Some(last)) = (body.records.first(), body.records.last())
        && (first.seq != body.from_seq || last.seq != body.to_seq)
    {
        return Err(ExportError::Range {
            from: body.from_seq,
            to: body.to_seq,
            first: first.seq,
            last: last.seq,
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(seqs: &[u64], from: u64, to: u64) -> String {
        let records: Vec<String> = seqs
            .iter()
            .map(|s| format!(r#"{{"seq":{s},"at_ms":1,"class":"metrics","body":{{}}}}"#))
            .collect();
        format!(
            r#"{{"node":"n1","created_at_ms":1,"from_seq":{from},"to_seq":{to},"records":[{}]}}"#,
            records.join(",")
        )
    }

    #[test]
    fn a_well_formed_body_parses() {
        let b = parse_body(&body(&[3, 4, 9], 3, 9)).unwrap();
        assert_eq!(b.records.len(), 3);
    }

    #[test]
    fn records_out_of_order_or_repeated_are_refused() {
        assert!(matches!(
            parse_body(&body(&[3, 3], 3, 3)),
            Err(ExportError::Order { seq: 3, after: 3 })
        ));
        assert!(matches!(
            parse_body(&body(&[5, 4], 5, 4)),
            Err(ExportError::Order { .. })
        ));
    }

    #[test]
    fn a_range_that_disagrees_with_the_records_is_refused() {
        assert!(matches!(
            parse_body(&body(&[3, 4], 1, 4)),
            Err(ExportError::Range { .. })
        ));
    }

    #[test]
    fn an_oversized_or_foreign_file_is_refused_before_parsing() {
        let big = vec![b' '; MAX_EXPORT_BYTES + 1];
        assert!(matches!(
            parse_envelope(&big),
            Err(ExportError::Oversized { .. })
        ));
        let other =
            br#"{"format":"other","version":1,"body":"","certificate_pem":"","signature":""}"#;
        assert!(matches!(
            parse_envelope(other),
            Err(ExportError::Format { .. })
        ));
        assert!(matches!(
            parse_envelope(b"{\"format\":"),
            Err(ExportError::Malformed(_))
        ));
    }
}
