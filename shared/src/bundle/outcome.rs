//! The result of verifying a bundle, as both CLIs print it (readable or JSON): which
//! bundle, how each signature fared, how many files were checked, and — on failure —
//! exactly which check failed.

use std::io::Read;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::policy::{SignatureReport, SignedPolicy};
use super::{BundleError, BundleReader, PayloadSink};

/// What verification found. Serialized for `--json`; a compatibility promise to scripts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyOutcome {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    pub signatures: Vec<SignatureOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The failed check, with its causes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The manifest, once it was read (for callers that go on, e.g. to run golden vectors).
    #[serde(skip)]
    pub manifest: Option<super::manifest::Manifest>,
    /// The manifest's exact bytes and the signatures, from the same read that was
    /// verified: what a store keeps must be what was checked, never a second read.
    #[serde(skip)]
    pub signed: Option<SignedManifest>,
}

/// A manifest's signed bytes and its signatures, as read from the bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignedManifest {
    pub manifest_bytes: Vec<u8>,
    pub signatures: Vec<super::signing::Signature>,
}

/// One signature's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureOutcome {
    pub position: usize,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An error and its chain of causes on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl VerifyOutcome {
    fn record_signatures(&mut self, report: &SignatureReport) {
        self.threshold = Some(report.threshold);
        self.signatures = report
            .checks
            .iter()
            .map(|c| SignatureOutcome {
                position: c.position,
                key_id: c.key_id.clone(),
                key_name: c.key_name.clone(),
                valid: c.outcome.is_ok(),
                reason: c.outcome.as_ref().err().map(ToString::to_string),
            })
            .collect();
    }

    fn fail(mut self, error: &BundleError) -> Self {
        if let BundleError::Untrusted { report } = error {
            self.record_signatures(report);
        }
        self.ok = false;
        self.error = Some(error_chain(error));
        self
    }

    /// The readable form.
    pub fn render_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        if let (Some(name), Some(version)) = (&self.name, &self.version) {
            let _ = writeln!(out, "bundle      {name} {version}");
        }
        if let Some(id) = &self.id {
            let _ = writeln!(out, "id          {id}");
        }
        if let Some(threshold) = self.threshold {
            let valid = self.signatures.iter().filter(|s| s.valid).count();
            let _ = writeln!(out, "signatures  {valid} valid, {threshold} needed");
            for s in &self.signatures {
                let name = s
                    .key_name
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                match &s.reason {
                    None => {
                        let _ = writeln!(out, "  ok       #{} key {}{name}", s.position, s.key_id);
                    }
                    Some(reason) => {
                        let _ = writeln!(
                            out,
                            "  refused  #{} key {}{name}: {reason}",
                            s.position, s.key_id
                        );
                    }
                }
            }
        }
        if let (Some(files), Some(bytes)) = (self.files, self.bytes) {
            let _ = writeln!(out, "files       {files} verified, {bytes} bytes");
        }
        match &self.error {
            None => out.push_str("VERIFIED\n"),
            Some(error) => {
                let _ = writeln!(out, "FAILED: {error}");
            }
        }
        out
    }
}

/// Verifies the bundle in `reader` against `policy` at `now`, recording every step.
pub fn verify_bundle<R: Read>(
    reader: R,
    policy: &SignedPolicy,
    now: SystemTime,
    sink: &mut dyn PayloadSink,
) -> VerifyOutcome {
    let mut outcome = VerifyOutcome::default();
    let bundle = match BundleReader::open(reader) {
        Ok(bundle) => bundle,
        Err(e) => return outcome.fail(&e),
    };
    outcome.id = Some(bundle.id().to_string());
    outcome.name = Some(bundle.manifest().name.clone());
    outcome.version = Some(bundle.manifest().version.clone());
    outcome.manifest = Some(bundle.manifest().clone());
    outcome.signed = Some(SignedManifest {
        manifest_bytes: bundle.manifest_bytes().to_vec(),
        signatures: bundle.signatures().to_vec(),
    });
    match bundle.check_signatures(policy, now) {
        Ok(report) => outcome.record_signatures(&report),
        Err(e) => return outcome.fail(&e),
    }
    match bundle.read_payload(sink) {
        Ok(summary) => {
            outcome.files = Some(summary.files);
            outcome.bytes = Some(summary.bytes);
            outcome.ok = true;
            outcome
        }
        Err(e) => outcome.fail(&e),
    }
}
