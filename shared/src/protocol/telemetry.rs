//! Telemetry upload: a batch of buffered records, in sequence order; the controller
//! stores them idempotently by (node, sequence) and acknowledges the batch.
//!
//! The agent deletes records only after the acknowledgement says they are stored. A
//! batch redelivered after a lost acknowledgement is stored once: records whose
//! (node, sequence) the controller already holds are counted as duplicates, not again.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 4096;

/// What a record holds; decides what is dropped first when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordClass {
    /// A telemetry sample (bulk; dropped first).
    Metrics,
    /// A health event or an XID (kept longest).
    Event,
}

impl RecordClass {
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Metrics => 0,
            Self::Event => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Metrics),
            1 => Some(Self::Event),
            _ => None,
        }
    }
}

/// One buffered record. `body` is JSON: a [`crate::telemetry::Sample`] for metrics, an
/// [`crate::telemetry::Event`] for events; kept as raw JSON so the controller stores it
/// without re-encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub at_ms: u64,
    pub class: RecordClass,
    pub body: Box<RawValue>,
}

/// Records in strictly increasing sequence order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Batch {
    pub records: Vec<Record>,
}

/// The controller stored every record of the batch through `through_seq`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Ack {
    pub through_seq: u64,
    /// Records newly stored.
    pub stored: u64,
    /// Records it already held.
    pub duplicates: u64,
}

/// A batch that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the batch is empty")]
    Empty,
    #[error("the batch has {0} records; at most {MAX_BATCH_RECORDS}")]
    TooLarge(usize),
    #[error(
        "sequence {seq} does not follow {previous}: records must be in strictly increasing order"
    )]
    OutOfOrder { previous: u64, seq: u64 },
    #[error("sequence 0 is not valid; sequences start at 1")]
    ZeroSequence,
}

impl Batch {
    /// Checks order and size.
    pub fn validate(&self) -> Result<(), BatchError> {
        if self.records.is_empty() {
            return Err(BatchError::Empty);
        }
        if self.records.len() > MAX_BATCH_RECORDS {
            return Err(BatchError::TooLarge(self.records.len()));
        }
        let mut previous = 0;
        for r in &self.records {
            if r.seq == 0 {
                return Err(BatchError::ZeroSequence);
            }
            if r.seq <= previous {
                return Err(BatchError::OutOfOrder {
                    previous,
                    seq: r.seq,
                });
            }
            previous = r.seq;
        }
        Ok(())
    }
}
