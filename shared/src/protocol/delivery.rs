//! Bundle delivery: operators upload bundles to the controller in chunks, assign them to
//! nodes, and each node fetches its assigned bundle, resuming where a broken transfer
//! stopped.
//!
//! # Uploads
//!
//! Admin requests carry chunks of at most [`CHUNK_SIZE`] bytes, base64-encoded inside the
//! JSON frames (`admin::Request::BundleUpload`).
//!
//! # Fetches
//!
//! A node fetches on one stream, the one exchange whose response is more than a frame:
//!
//! ```text
//! node → controller   frame {"bundle_fetch": {"id": "sha256:…", "offset": N}}, finish
//! controller → node   frame {"bundle_stream": {"offset": N, "size": S}}
//!                     S − N raw bytes of the bundle file from offset N, finish
//! ```
//!
//! or a single [`super::Response::Error`] frame when the fetch is refused. The node checks
//! that the header repeats its offset and the size it was told in the heartbeat, takes at
//! most `S − N` bytes (more is a protocol violation), treats a stream that ends early as a
//! broken transfer to resume, and checks the whole file's SHA-256 before anything reads it
//! as a bundle. Raw bytes, not frames, so a transfer runs at the speed of the stream.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Bytes per upload chunk: far below [`super::MAX_FRAME`] once base64-encoded.
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// A bundle the controller holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BundleInfo {
    /// The bundle id, `sha256:<hex>` of its manifest.
    pub id: String,
    pub name: String,
    pub version: String,
    /// SHA-256 of the whole bundle file, hex.
    pub file_sha256: String,
    pub size: u64,
    pub pushed_at_ms: u64,
    pub pushed_by: String,
    /// Nodes this bundle is assigned to.
    pub assigned: Vec<String>,
    /// The keys whose valid signatures admitted it, `name (key id)`.
    pub signers: Vec<String>,
    /// SHA-256 of the controller's trust policy it was verified against at the push.
    pub policy_sha256: String,
}

/// What the controller wants a node to run, in every heartbeat reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Desired {
    pub id: String,
    pub file_sha256: String,
    pub size: u64,
    /// The model it serves (the bundle's name): a node runs one bundle per model.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
}

/// The node's view of delivery, in every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeBundles {
    /// The bundle activated last (`sha256:<hex>`), of any model.
    pub active: Option<String>,
    /// Every model the node serves, with its active and previous bundle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelBundles>,
    /// The bundle being fetched and the bytes received so far.
    pub downloading: Option<String>,
    pub downloaded_bytes: u64,
    /// Where the current (or last) transfer started: non-zero when it resumed.
    pub resumed_at: u64,
    /// Why the last assigned bundle was not activated.
    pub failed: Option<FailedBundle>,
    /// Every assigned bundle the node refused and still does not fetch again (at most
    /// one per model), with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<FailedBundle>,
    /// The last transfer that delivered a whole file.
    pub last_transfer: Option<Transfer>,
}

/// One model on a node: its active bundle and the previous one (ids, `sha256:<hex>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelBundles {
    pub name: String,
    pub active: Option<String>,
    pub previous: Option<String>,
}

impl NodeBundles {
    /// Whether `id` is active on the node, for its model.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.as_deref() == Some(id)
            || self.models.iter().any(|m| m.active.as_deref() == Some(id))
    }

    /// Every refusal the node reports, each bundle once: those it still holds to, and the
    /// last one (from nodes that report only that).
    pub fn refusals(&self) -> impl Iterator<Item = &FailedBundle> {
        self.refused.iter().chain(
            self.failed
                .iter()
                .filter(|f| !self.refused.iter().any(|r| r.id == f.id)),
        )
    }

    /// Why the node refused bundle `id`, while it does.
    pub fn refusal(&self, id: &str) -> Option<&FailedBundle> {
        self.refusals().find(|f| f.id == id)
    }
}

/// One completed transfer, as the node measured it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Transfer {
    pub id: String,
    /// Bytes received in this transfer (less than the file when it resumed).
    pub bytes: u64,
    /// From the fetch request to the last byte written to the download file.
    pub seconds: f64,
    /// Then the time to make the file durable (fsync).
    pub sync_seconds: f64,
}

impl Transfer {
    /// Throughput in MiB/s.
    pub fn mib_per_second(&self) -> f64 {
        self.bytes as f64 / 1_048_576.0 / self.seconds.max(1e-9)
    }
}

/// A bundle the node refused or could not fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedBundle {
    pub id: String,
    pub reason: String,
    /// The model it was assigned for (empty from nodes that serve one model).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
}

/// Node → controller: the bundle assigned to it, from byte `offset` to its end.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FetchRequest {
    pub id: String,
    pub offset: u64,
}

/// The header before the raw bytes of a fetch: they run from `offset` to `size`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamHeader {
    pub offset: u64,
    /// The whole file's size.
    pub size: u64,
}

/// Whether `text` is a SHA-256 digest as the delivery protocol writes it: 64 lowercase
/// hex digits. Bundle ids and file digests name files on both sides, so nothing else passes.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Encodes chunk bytes for a frame.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes chunk bytes from a frame, refusing more than `max` bytes.
pub fn decode(data: &str, max: usize) -> Result<Vec<u8>, String> {
    if data.len() / 4 * 3 > max + 3 {
        return Err(format!("a chunk larger than {max} bytes"));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("chunk data is not base64: {e}"))?;
    if bytes.len() > max {
        return Err(format!("a chunk larger than {max} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_round_trips() {
        let bytes: Vec<u8> = (0..=255).cycle().take(1000).collect();
        assert_eq!(decode(&encode(&bytes), CHUNK_SIZE).unwrap(), bytes);
    }

    #[test]
    fn oversized_chunk_is_refused_before_decoding() {
        let big = encode(&vec![0u8; 2048]);
        assert!(decode(&big, 1024).unwrap_err().contains("larger than 1024"));
    }

    #[test]
    fn non_base64_chunk_is_refused() {
        assert!(
            decode("not base64!", 1024)
                .unwrap_err()
                .contains("not base64")
        );
    }
}
