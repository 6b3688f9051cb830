//! An OTLP receiver's answer is read by the controller after every export request:
//! reading any bytes must never panic, the rejected count never exceeds what was sent,
//! and the message that reaches the log is printable and short.
#![no_main]

use gantry_shared::otlp_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sent = data.first().map_or(0, |b| u64::from(*b));
    let partial = otlp_response::read(data, sent);
    assert!(partial.rejected <= sent);
    assert!(!partial.message.chars().any(char::is_control));
    assert!(partial.message.chars().count() <= 500);
});
