//! Bundle delivery: operators upload bundles to the controller in chunks, assign them to
//! nodes, and each node fetches its assigned bundle in chunks, resuming where a broken
//! transfer stopped. Chunk payloads travel base64-encoded inside the JSON frames.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Bytes per chunk: far below [`super::MAX_FRAME`] once base64-encoded.
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
}

/// What the controller wants a node to run, in every heartbeat reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Desired {
    pub id: String,
    pub file_sha256: String,
    pub size: u64,
}

/// The node's view of delivery, in every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeBundles {
    /// Active bundle id (`sha256:<hex>`).
    pub active: Option<String>,
    /// The bundle being fetched and the bytes received so far.
    pub downloading: Option<String>,
    pub downloaded_bytes: u64,
    /// Where the current (or last) transfer started: non-zero when it resumed.
    pub resumed_at: u64,
    /// Why the last assigned bundle was not activated.
    pub failed: Option<FailedBundle>,
}

/// A bundle the node refused or could not fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailedBundle {
    pub id: String,
    pub reason: String,
}

/// Node → controller: bytes `offset..offset+len` of bundle `id`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ChunkRequest {
    pub id: String,
    pub offset: u64,
    pub len: u32,
}

/// The bytes asked for (fewer at the end of the file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Chunk {
    pub offset: u64,
    /// Base64 (standard alphabet, padded).
    pub data: String,
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
