//! Model bundles: the one-file format Gantry ships models in, and its verification.
//!
//! # Layout
//!
//! A bundle is a strict ustar archive ([`archive`]) with, in this order:
//!
//! 1. `manifest.json` — the [`manifest::Manifest`], at most 1 MiB. Its exact bytes are
//!    signed, and the bundle's identity is `sha256:` + the SHA-256 of those bytes.
//! 2. `signatures.json` — `{"signatures": [...]}`, ed25519 signatures over the manifest
//!    bytes ([`signing`]), at most 64 KiB. Adding a signature rewrites this entry only
//!    in meaning: the identity does not change.
//! 3. `files/<path>` — each payload file the manifest lists, once, in any order.
//!
//! then the end-of-archive marker and nothing else.
//!
//! # Reading
//!
//! A bundle is hostile until verified. [`BundleReader::open`] reads the first two entries
//! with their size caps checked from the headers before any byte is read, parses the
//! manifest strictly, and stops there: signatures can be checked against a trust policy
//! ([`BundleReader::check_signatures`]) before a single payload byte is touched.
//! [`BundleReader::read_payload`] then streams every payload entry once, enforcing that
//! its path is safe and listed, its size is the manifest's, and its SHA-256 matches, while
//! handing the bytes to a [`PayloadSink`] (which decides where they go — the reader does no
//! I/O of its own). A file's bytes reach the sink before its digest is known: a sink
//! writes into a scratch location and only trusts it after `read_payload` returns `Ok`.

pub mod archive;
pub mod manifest;
pub mod onnx;
pub mod outcome;
pub mod path;
pub mod policy;
pub mod signing;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::archive::{ArchiveError, ArchiveReader, ArchiveWriter};
use self::manifest::{FileEntry, MAX_MANIFEST_BYTES, Manifest, ManifestError};
use self::path::{PathError, check_relative_path};
use self::policy::{GoldenShortfall, SignatureReport, SignedPolicy};
use self::signing::{MAX_SIGNATURES, Purpose, Signature};

/// Name of the manifest entry.
pub const MANIFEST_ENTRY: &str = "manifest.json";
/// Name of the signatures entry.
pub const SIGNATURES_ENTRY: &str = "signatures.json";
/// Prefix of payload entries.
pub const PAYLOAD_PREFIX: &str = "files/";
/// Largest signatures entry accepted.
pub const MAX_SIGNATURES_BYTES: u64 = 64 * 1024;
/// Read size while streaming payload.
const CHUNK: usize = 256 * 1024;

/// Why a bundle was refused. Each names the file, key or limit at fault.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("the bundle's manifest is not acceptable")]
    Manifest(#[source] ManifestError),
    #[error("entry {position} should be {expected}, found {found:?}")]
    Layout {
        position: usize,
        expected: &'static str,
        found: String,
    },
    #[error("{entry} is {size} bytes; at most {max} are accepted")]
    Oversized {
        entry: &'static str,
        size: u64,
        max: u64,
    },
    #[error("signatures.json is not valid: {message}")]
    Signatures { message: String },
    #[error("entry {path:?} has an unsafe path")]
    UnsafePath {
        path: String,
        #[source]
        source: PathError,
    },
    #[error("entry {path:?} is not in the manifest")]
    NotInManifest { path: String },
    #[error("entry {path:?} appears more than once")]
    DuplicateEntry { path: String },
    #[error("file {path:?} is {archive} bytes in the bundle but {manifest} in the manifest")]
    SizeMismatch {
        path: String,
        manifest: u64,
        archive: u64,
    },
    #[error(
        "file {path:?} does not match its SHA-256 in the manifest (manifest {expected}, contents {actual})"
    )]
    DigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("file {path:?} is listed in the manifest but missing from the bundle")]
    MissingFile { path: String },
    #[error("the bundle has no signatures")]
    NoSignatures,
    #[error("the bundle's signatures do not satisfy the trust policy: {report}")]
    Untrusted { report: SignatureReport },
    #[error("the bundle's golden vectors do not satisfy the trust policy")]
    GoldenRequirement(#[source] GoldenShortfall),
    #[error("storing file {path:?} failed")]
    Sink {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// The content identity of a bundle: `sha256:` and the hex digest of its manifest bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BundleId(String);

impl BundleId {
    pub fn of_manifest(bytes: &[u8]) -> Self {
        Self(format!(
            "sha256:{}",
            signing::to_hex(&Sha256::digest(bytes))
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BundleId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignaturesFile {
    signatures: Vec<Signature>,
}

/// Where payload bytes go while a bundle is read.
pub trait PayloadSink {
    fn begin(&mut self, file: &FileEntry) -> io::Result<()>;
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// The file is complete and its digest matched.
    fn finish(&mut self, file: &FileEntry) -> io::Result<()>;
}

/// A sink that keeps nothing: verification only.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl PayloadSink for Discard {
    fn begin(&mut self, _: &FileEntry) -> io::Result<()> {
        Ok(())
    }
    fn write(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self, _: &FileEntry) -> io::Result<()> {
        Ok(())
    }
}

/// Totals of a payload that was read and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadSummary {
    pub files: usize,
    pub bytes: u64,
}

/// A bundle whose manifest and signatures have been read; the payload comes next.
#[derive(Debug)]
pub struct BundleReader<R> {
    archive: ArchiveReader<R>,
    manifest_bytes: Vec<u8>,
    manifest: Manifest,
    signatures: Vec<Signature>,
    id: BundleId,
}

fn read_small_entry<R: Read>(
    archive: &mut ArchiveReader<R>,
    position: usize,
    name: &'static str,
    max: u64,
) -> Result<Vec<u8>, BundleError> {
    let header = archive.next_entry()?.ok_or(BundleError::Layout {
        position,
        expected: name,
        found: "the end of the archive".to_owned(),
    })?;
    if header.path != name {
        return Err(BundleError::Layout {
            position,
            expected: name,
            found: header.path,
        });
    }
    if header.size > max {
        return Err(BundleError::Oversized {
            entry: name,
            size: header.size,
            max,
        });
    }
    let mut bytes = vec![0u8; header.size as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        let n = archive.read_entry(&mut bytes[filled..])?;
        filled += n;
    }
    Ok(bytes)
}

/// Parses the `signatures.json` entry.
pub fn parse_signatures(bytes: &[u8]) -> Result<Vec<Signature>, BundleError> {
    let file: SignaturesFile =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Signatures {
            message: e.to_string(),
        })?;
    if file.signatures.len() > MAX_SIGNATURES {
        return Err(BundleError::Signatures {
            message: format!(
                "{} signatures; at most {MAX_SIGNATURES}",
                file.signatures.len()
            ),
        });
    }
    Ok(file.signatures)
}

fn signatures_bytes(signatures: &[Signature]) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(&SignaturesFile {
        signatures: signatures.to_vec(),
    })
    .expect("signatures serialize");
    bytes.push(b'\n');
    bytes
}

impl<R: Read> BundleReader<R> {
    /// Reads and checks the manifest and signatures entries.
    pub fn open(reader: R) -> Result<Self, BundleError> {
        let mut archive = ArchiveReader::new(reader);
        let manifest_bytes = read_small_entry(&mut archive, 1, MANIFEST_ENTRY, MAX_MANIFEST_BYTES)?;
        let manifest = Manifest::parse(&manifest_bytes).map_err(BundleError::Manifest)?;
        let signatures = parse_signatures(&read_small_entry(
            &mut archive,
            2,
            SIGNATURES_ENTRY,
            MAX_SIGNATURES_BYTES,
        )?)?;
        let id = BundleId::of_manifest(&manifest_bytes);
        Ok(Self {
            archive,
            manifest_bytes,
            manifest,
            signatures,
            id,
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    pub fn id(&self) -> &BundleId {
        &self.id
    }

    /// Checks the signatures against `policy` at `now`, then the policy's golden-vector
    /// requirement (a property of the signed manifest, so also before any payload).
    pub fn check_signatures(
        &self,
        policy: &SignedPolicy,
        now: SystemTime,
    ) -> Result<SignatureReport, BundleError> {
        if self.signatures.is_empty() {
            return Err(BundleError::NoSignatures);
        }
        let report = policy.verify_manifest(&self.manifest_bytes, &self.signatures, now);
        if !report.is_satisfied() {
            return Err(BundleError::Untrusted { report });
        }
        policy
            .check_golden(&self.manifest)
            .map_err(BundleError::GoldenRequirement)?;
        Ok(report)
    }

    /// Streams every payload file into `sink`, checking paths, sizes and digests, then
    /// checks that nothing is missing and nothing follows the archive's end.
    pub fn read_payload(
        mut self,
        sink: &mut dyn PayloadSink,
    ) -> Result<PayloadSummary, BundleError> {
        let expected: BTreeMap<&str, &FileEntry> = self
            .manifest
            .files
            .iter()
            .map(|f| (f.path.as_str(), f))
            .collect();
        let mut seen = BTreeSet::new();
        let mut summary = PayloadSummary::default();
        let mut buf = vec![0u8; CHUNK];
        let mut position = 2;
        while let Some(header) = self.archive.next_entry()? {
            position += 1;
            let Some(path) = header.path.strip_prefix(PAYLOAD_PREFIX) else {
                return Err(BundleError::Layout {
                    position,
                    expected: "a payload entry under files/",
                    found: header.path,
                });
            };
            check_relative_path(path).map_err(|source| BundleError::UnsafePath {
                path: header.path.clone(),
                source,
            })?;
            if !seen.insert(path.to_owned()) {
                return Err(BundleError::DuplicateEntry {
                    path: path.to_owned(),
                });
            }
            let file = *expected
                .get(path)
                .ok_or_else(|| BundleError::NotInManifest {
                    path: path.to_owned(),
                })?;
            if header.size != file.size {
                return Err(BundleError::SizeMismatch {
                    path: path.to_owned(),
                    manifest: file.size,
                    archive: header.size,
                });
            }
            let sink_error = |source| BundleError::Sink {
                path: file.path.clone(),
                source,
            };
            sink.begin(file).map_err(sink_error)?;
            let mut hasher = Sha256::new();
            loop {
                let n = self.archive.read_entry(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                sink.write(&buf[..n]).map_err(sink_error)?;
            }
            let actual = signing::to_hex(&hasher.finalize());
            if actual != file.sha256 {
                return Err(BundleError::DigestMismatch {
                    path: file.path.clone(),
                    expected: file.sha256.clone(),
                    actual,
                });
            }
            sink.finish(file).map_err(sink_error)?;
            summary.files += 1;
            summary.bytes += file.size;
        }
        if let Some(missing) = self.manifest.files.iter().find(|f| !seen.contains(&f.path)) {
            return Err(BundleError::MissingFile {
                path: missing.path.clone(),
            });
        }
        self.archive.finish()?;
        Ok(summary)
    }
}

/// A bundle that passed every check.
#[derive(Debug)]
pub struct Verified {
    pub id: BundleId,
    pub manifest: Manifest,
    pub signatures: SignatureReport,
    pub payload: PayloadSummary,
}

/// Verifies a whole bundle against `policy`: signatures first (nothing of the payload is
/// read for a bundle the policy does not accept), then every file into `sink`.
pub fn verify<R: Read>(
    reader: R,
    policy: &SignedPolicy,
    now: SystemTime,
    sink: &mut dyn PayloadSink,
) -> Result<Verified, BundleError> {
    let bundle = BundleReader::open(reader)?;
    let signatures = bundle.check_signatures(policy, now)?;
    let id = bundle.id().clone();
    let manifest = bundle.manifest().clone();
    let payload = bundle.read_payload(sink)?;
    Ok(Verified {
        id,
        manifest,
        signatures,
        payload,
    })
}

/// Writes a bundle: manifest bytes, signatures, then each manifest file, whose contents
/// `open` supplies.
pub fn write<W: Write>(
    out: W,
    manifest_bytes: &[u8],
    signatures: &[Signature],
    open: &mut dyn FnMut(&FileEntry) -> io::Result<Box<dyn Read>>,
) -> Result<W, BundleError> {
    let manifest = Manifest::parse(manifest_bytes).map_err(BundleError::Manifest)?;
    let io_error = |path: &str| {
        let path = path.to_owned();
        move |source| BundleError::Sink { path, source }
    };
    let mut archive = ArchiveWriter::new(out);
    archive
        .append(
            MANIFEST_ENTRY,
            manifest_bytes.len() as u64,
            &mut &manifest_bytes[..],
        )
        .map_err(io_error(MANIFEST_ENTRY))?;
    let sigs = signatures_bytes(signatures);
    archive
        .append(SIGNATURES_ENTRY, sigs.len() as u64, &mut &sigs[..])
        .map_err(io_error(SIGNATURES_ENTRY))?;
    for file in &manifest.files {
        let mut contents = open(file).map_err(io_error(&file.path))?;
        archive
            .append(
                &format!("{PAYLOAD_PREFIX}{}", file.path),
                file.size,
                &mut contents,
            )
            .map_err(io_error(&file.path))?;
    }
    archive.finish().map_err(io_error("end of archive"))
}

/// A sink that copies a verified payload into another bundle archive: re-signing
/// rewrites the signatures entry and checks every file on the way.
struct Rewrap<W: Write> {
    archive: ArchiveWriter<W>,
}

impl<W: Write> PayloadSink for Rewrap<W> {
    fn begin(&mut self, file: &FileEntry) -> io::Result<()> {
        self.archive
            .start_file(&format!("{PAYLOAD_PREFIX}{}", file.path), file.size)
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.archive.write_contents(data)
    }
    fn finish(&mut self, file: &FileEntry) -> io::Result<()> {
        self.archive.end_file(file.size)
    }
}

/// Copies the bundle read from `reader` to `out` with `signatures` as its signatures,
/// verifying every payload file while copying. Returns the bundle's identity.
pub fn rewrite_signatures<R: Read, W: Write>(
    reader: BundleReader<R>,
    signatures: &[Signature],
    out: W,
) -> Result<(BundleId, W), BundleError> {
    let id = reader.id().clone();
    let mut archive = ArchiveWriter::new(out);
    let io_error = |source| BundleError::Sink {
        path: "bundle".to_owned(),
        source,
    };
    archive
        .append(
            MANIFEST_ENTRY,
            reader.manifest_bytes().len() as u64,
            &mut reader.manifest_bytes(),
        )
        .map_err(io_error)?;
    let sigs = signatures_bytes(signatures);
    archive
        .append(SIGNATURES_ENTRY, sigs.len() as u64, &mut &sigs[..])
        .map_err(io_error)?;
    let mut rewrap = Rewrap { archive };
    reader.read_payload(&mut rewrap)?;
    let out = rewrap.archive.finish().map_err(io_error)?;
    Ok((id, out))
}

/// Signs manifest bytes for a bundle.
pub fn sign_manifest(key: &ed25519_dalek::SigningKey, manifest_bytes: &[u8]) -> Signature {
    signing::sign(key, Purpose::BundleManifest, manifest_bytes)
}

#[cfg(test)]
mod tests;
