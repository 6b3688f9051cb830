//! The kernel-log XID parser reads lines any driver or process logging to the kernel can
//! shape. It must never panic, and what it accepts must be a well-formed report.
#![no_main]

use gantry_shared::xid::parse_kernel_xid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Some((_, code)) = parse_kernel_xid(&line) {
        assert!(line.contains("NVRM: Xid (PCI:"));
        assert!(line.contains(&code.to_string()));
    }
});
