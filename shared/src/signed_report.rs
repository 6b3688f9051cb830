//! The signed audit report: the report an auditor downloads from the console, signed by
//! the controller's key so that a copy handed on (by mail, on a stick, into a ticket)
//! can be proven to be the controller's, unaltered, by anyone holding the fleet's CA
//! certificate (`gantry audit verify-report FILE`).
//!
//! The file is JSON: the report exactly as signed (its bytes kept verbatim in the
//! `report` member, so no re-serialization stands between what was signed and what is
//! checked), the controller's certificate, and an ECDSA P-256 signature over
//! [`CONTEXT`] followed by those bytes. The certificate must chain to the CA and be a
//! controller certificate, valid when the report says it was generated.

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::audit::Report;
use crate::tls;

/// What a signed report's `format` member says.
pub const FORMAT: &str = "gantry signed audit report v1";
/// Prefixed to the report's bytes before signing: a signature made for anything else
/// the controller signs (enrollment responses) never counts as one on a report.
pub const CONTEXT: &[u8] = b"gantry audit report v1\0";
/// Largest signed report file read (a year of a large fleet stays well under it).
pub const MAX_BYTES: usize = 256 << 20;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    format: String,
    signed_by: String,
    /// The controller's certificate, PEM.
    certificate_pem: String,
    /// ECDSA P-256 SHA-256, ASN.1 DER, lowercase hexadecimal.
    signature: String,
    #[serde(borrow)]
    report: &'a RawValue,
}

/// Why a signed report is not accepted. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SignedReportError {
    #[error("the file is {0} bytes; a signed audit report is at most {MAX_BYTES}")]
    TooLarge(usize),
    #[error(
        "not a signed audit report (JSON with format, signed_by, certificate_pem, signature, report): {0}"
    )]
    Malformed(String),
    #[error(
        "format {0:?} is not {FORMAT:?}: this file is not a signed audit report, or is from a newer Gantry"
    )]
    Format(String),
    #[error("the report inside is not an audit report: {0}")]
    Report(String),
    #[error("the signature is not hexadecimal")]
    Encoding,
    #[error(
        "the certificate in the file is not one of this fleet's controller certificates: {0}; check that --ca is the fleet's CA certificate"
    )]
    Certificate(tls::TlsError),
    #[error(
        "the signature does not match the report: the report was altered after it was signed, or signed by another key"
    )]
    Signature,
}

/// The bytes the controller signs for `report_text`.
pub fn message(report_text: &str) -> Vec<u8> {
    [CONTEXT, report_text.as_bytes()].concat()
}

/// The report as text to sign: pretty JSON, as an auditor reads it.
pub fn report_text(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report always serializes")
}

/// The signed file, from the report text that was signed, the controller's
/// certificate and its signature over [`message`].
pub fn envelope(report_text: &str, certificate_pem: &str, signature: &[u8]) -> String {
    let report = RawValue::from_string(report_text.to_owned())
        .expect("report_text is JSON made by report_text()");
    let envelope = Envelope {
        format: FORMAT.to_owned(),
        signed_by: "controller".to_owned(),
        certificate_pem: certificate_pem.to_owned(),
        signature: crate::bundle::signing::to_hex(signature),
        report: &report,
    };
    let mut text = serde_json::to_string_pretty(&envelope).expect("an envelope serializes");
    text.push('\n');
    text
}

/// A verified report and who signed it.
#[derive(Debug)]
pub struct Verified {
    pub report: Report,
    /// SHA-256 of the signing certificate's DER.
    pub certificate_sha256: String,
}

/// Checks a signed report against the fleet's CA certificate.
pub fn verify(bytes: &[u8], ca_pem: &str) -> Result<Verified, SignedReportError> {
    if bytes.len() > MAX_BYTES {
        return Err(SignedReportError::TooLarge(bytes.len()));
    }
    let envelope: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| SignedReportError::Malformed(e.to_string()))?;
    if envelope.format != FORMAT {
        return Err(SignedReportError::Format(envelope.format));
    }
    let report: Report = serde_json::from_str(envelope.report.get())
        .map_err(|e| SignedReportError::Report(e.to_string()))?;
    let signature =
        crate::bundle::signing::from_hex(&envelope.signature).ok_or(SignedReportError::Encoding)?;
    let certs = tls::certificates_from_pem(&envelope.certificate_pem, "signing certificate")
        .map_err(SignedReportError::Certificate)?;
    let cert: &CertificateDer<'_> = &certs[0];
    // The certificate had to be valid when the report was made; it may have been
    // renewed or have expired since, and the report stays provable.
    let generated =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(report.generated_at_ms);
    tls::verify_issued_by(ca_pem, cert, tls::Role::Controller, generated)
        .map_err(SignedReportError::Certificate)?;
    tls::verify_signed_by(
        cert,
        "controller certificate",
        &message(envelope.report.get()),
        &signature,
    )
    .map_err(|_| SignedReportError::Signature)?;
    Ok(Verified {
        report,
        certificate_sha256: tls::fingerprint(cert),
    })
}
