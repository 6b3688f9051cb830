//! Signed audit reports are handed on as files (mail, removable media, tickets) and
//! checked by `gantry audit verify-report`: parsing and checking any bytes must never
//! panic, and nothing but a real signature by a controller of the CA passes.
#![no_main]

use gantry_shared::signed_report;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // No CA: every certificate is refused, so every input must be refused, after the
    // envelope, the report, the signature's hex and the PEM are all parsed.
    assert!(signed_report::verify(data, "").is_err());
});
