//! The manifest parser reads bytes from bundles of unknown origin. It must never panic,
//! and a manifest it accepts must satisfy its own validation and round-trip.
#![no_main]

use gantry_shared::bundle::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::parse(data) {
        manifest.validate().expect("an accepted manifest is valid");
        let bytes = manifest.to_bytes().expect("an accepted manifest serializes");
        assert_eq!(Manifest::parse(&bytes).expect("and parses again"), manifest);
    }
});
