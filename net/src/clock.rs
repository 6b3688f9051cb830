//! The wall clock, read in one place: milliseconds since the Unix epoch, the unit of
//! every timestamp in the fleet protocol and the stores. Code that decides on time takes
//! `now` as a parameter; only the edges (a sample, a request) read it here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `ms` since the epoch as RFC 3339 to the second, as logs and tables print times.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
