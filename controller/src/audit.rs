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
