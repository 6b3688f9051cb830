//! A telemetry export arrives on removable media from a hall: any bytes. Parsing must
//! never panic, and a body that parses keeps its records in strictly increasing order.
#![no_main]

use gantry_shared::telemetry_export::{parse_body, parse_envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = parse_envelope(data) {
        let _ = parse_body(&envelope.body);
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(body) = parse_body(text)
    {
        assert!(body.records.windows(2).all(|w| w[0].seq < w[1].seq));
    }
});
