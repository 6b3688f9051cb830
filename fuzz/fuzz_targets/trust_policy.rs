//! Trust policy files arrive on removable media and over the network. Parsing must never
//! panic, and an accepted file must re-serialize to something that parses the same.
#![no_main]

use gantry_shared::bundle::policy::SignedPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = SignedPolicy::parse(data) {
        let again = SignedPolicy::parse(&policy.to_bytes()).expect("round trip");
        assert_eq!(again.policy(), policy.policy());
        let _ = policy.verify_installed();
    }
});
