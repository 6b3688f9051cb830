//! The controller's side of the audit log: entries stamped with the controller's clock,
//! and the auditor's report read from the store. The chain itself — hashing, linking,
//! verification, report folding — is pure and lives in [`gantry_shared::audit`].

pub use gantry_shared::audit::*;
use gantry_shared::protocol::audit::Report;

/// An action to record, taken now.
pub fn entry(
    actor: impl Into<String>,
    action: impl Into<String>,
    subject: impl Into<String>,
    details: serde_json::Value,
) -> NewEntry {
    NewEntry::at(gantry_net::clock::now_ms(), actor, action, subject, details)
}

/// Verifies the store's chain and builds the report over `[from_ms, to_ms]` from it.
pub fn report(
    store: &crate::store::Store,
    from_ms: u64,
    to_ms: u64,
    silence_ms: u64,
) -> Result<Report, crate::store::StoreError> {
    let chain = store.verify_audit()?;
    let mut builder = ReportBuilder::new(
        from_ms,
        to_ms,
        silence_ms,
        chain,
        gantry_net::clock::now_ms(),
    );
    store.scan_audit(|e| builder.add(&e))?;
    Ok(builder.finish())
}

/// The report as a file signed by the controller's key
/// ([`gantry_shared::signed_report`]), which `gantry audit verify-report` checks.
pub fn sign_report(
    report: &Report,
    key_pem: &str,
    certificate_pem: &str,
) -> Result<String, gantry_net::NetError> {
    use gantry_shared::signed_report;
    let text = signed_report::report_text(report);
    let signature = gantry_net::sign(key_pem, &signed_report::message(&text))?;
    Ok(signed_report::envelope(&text, certificate_pem, &signature))
}

#[cfg(test)]
mod tests {
    use gantry_shared::signed_report::{self, SignedReportError};

    use super::*;
    use crate::ca::{Ca, Validity};

    fn fleet() -> crate::ca::NewFleet {
        Ca::create_fleet(
            "alice",
            Validity::starting(1_800_000_000_000, std::time::Duration::from_secs(86_400)),
        )
        .unwrap()
    }

    fn report() -> Report {
        Report {
            from_ms: 1_799_000_000_000,
            to_ms: 1_800_000_000_000,
            generated_at_ms: 1_800_000_000_000,
            ..Report::default()
        }
    }

    fn signed(fleet: &crate::ca::NewFleet) -> String {
        sign_report(
            &report(),
            &fleet.controller_key_pem,
            &fleet.controller_cert_pem,
        )
        .unwrap()
    }

    #[test]
    fn a_signed_report_verifies_against_its_fleets_ca() {
        let fleet = fleet();
        let verified =
            signed_report::verify(signed(&fleet).as_bytes(), &fleet.ca_cert_pem).unwrap();
        assert_eq!(verified.report, report());
        assert_eq!(
            verified.certificate_sha256,
            crate::ca::pem_fingerprint(&fleet.controller_cert_pem).unwrap()
        );
    }

    #[test]
    fn report_altered_after_signing_is_refused() {
        let fleet = fleet();
        let text = signed(&fleet).replace("1799000000000", "1799000000001");
        let e = signed_report::verify(text.as_bytes(), &fleet.ca_cert_pem).unwrap_err();
        assert!(matches!(e, SignedReportError::Signature), "{e}");
    }

    #[test]
    fn report_reformatted_after_signing_is_refused() {
        // Whitespace is part of what was signed: the bytes are checked, not a re-encoding.
        let fleet = fleet();
        let text = signed(&fleet).replace("\"from_ms\": ", "\"from_ms\":");
        let e = signed_report::verify(text.as_bytes(), &fleet.ca_cert_pem).unwrap_err();
        assert!(matches!(e, SignedReportError::Signature), "{e}");
    }

    #[test]
    fn report_signed_by_another_fleets_controller_is_refused() {
        let (ours, theirs) = (fleet(), fleet());
        let e = signed_report::verify(signed(&theirs).as_bytes(), &ours.ca_cert_pem).unwrap_err();
        assert!(matches!(e, SignedReportError::Certificate(_)), "{e}");
    }

    #[test]
    fn report_signed_by_an_admin_certificate_is_refused() {
        // An admin's key is issued by the same CA, but only the controller signs reports.
        let fleet = fleet();
        let text = sign_report(&report(), &fleet.admin_key_pem, &fleet.admin_cert_pem).unwrap();
        let e = signed_report::verify(text.as_bytes(), &fleet.ca_cert_pem).unwrap_err();
        assert!(matches!(e, SignedReportError::Certificate(_)), "{e}");
    }

    #[test]
    fn certificate_swapped_for_another_controllers_is_refused() {
        let (ours, theirs) = (fleet(), fleet());
        let text = signed(&theirs).replace(
            &serde_json::to_string(&theirs.controller_cert_pem).unwrap(),
            &serde_json::to_string(&ours.controller_cert_pem).unwrap(),
        );
        let e = signed_report::verify(text.as_bytes(), &ours.ca_cert_pem).unwrap_err();
        assert!(matches!(e, SignedReportError::Signature), "{e}");
    }

    #[test]
    fn signature_made_without_the_report_context_is_refused() {
        // A signature the controller made over the same bytes for another purpose.
        let fleet = fleet();
        let text = signed_report::report_text(&report());
        let bare = gantry_net::sign(&fleet.controller_key_pem, text.as_bytes()).unwrap();
        let file = signed_report::envelope(&text, &fleet.controller_cert_pem, &bare);
        let e = signed_report::verify(file.as_bytes(), &fleet.ca_cert_pem).unwrap_err();
        assert!(matches!(e, SignedReportError::Signature), "{e}");
    }

    #[test]
    fn truncated_unknown_format_and_extra_members_are_refused() {
        let fleet = fleet();
        let text = signed(&fleet);
        let truncated = &text.as_bytes()[..text.len() / 2];
        assert!(matches!(
            signed_report::verify(truncated, &fleet.ca_cert_pem).unwrap_err(),
            SignedReportError::Malformed(_)
        ));
        let newer = text.replace(signed_report::FORMAT, "gantry signed audit report v9");
        assert!(matches!(
            signed_report::verify(newer.as_bytes(), &fleet.ca_cert_pem).unwrap_err(),
            SignedReportError::Format(_)
        ));
        let extra = text.replacen('{', "{\"trusted\": true,", 1);
        assert!(matches!(
            signed_report::verify(extra.as_bytes(), &fleet.ca_cert_pem).unwrap_err(),
            SignedReportError::Malformed(_)
        ));
        let bad_hex = text.replacen("\"signature\": \"3", "\"signature\": \"z", 1);
        assert!(signed_report::verify(bad_hex.as_bytes(), &fleet.ca_cert_pem).is_err());
    }

    #[test]
    fn oversized_file_is_refused_before_parsing() {
        let fleet = fleet();
        let huge = vec![b' '; signed_report::MAX_BYTES + 1];
        assert!(matches!(
            signed_report::verify(&huge, &fleet.ca_cert_pem).unwrap_err(),
            SignedReportError::TooLarge(_)
        ));
    }
}
