//! Enrollment files cross the air gap on removable media: the request reaches the
//! controller (`gantry token redeem`), the response reaches the node
//! (`gantry-agent enroll --offline-response`). Parsing either must never panic, and a
//! parsed file re-serializes to one that parses the same. Renewals by file
//! (`gantry-agent renew --offline-request/--offline-response`, `gantry fleet renew`)
//! cross the same way.
#![no_main]

use gantry_shared::protocol::enroll::{
    OfflineRenewRequest, OfflineRenewResponse, OfflineRequest, OfflineResponse, renew_message,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<OfflineRequest>(data) {
        let again: OfflineRequest =
            serde_json::from_slice(&serde_json::to_vec(&request).unwrap()).unwrap();
        assert_eq!(again.request.node_name, request.request.node_name);
    }
    if let Ok(response) = serde_json::from_slice::<OfflineResponse>(data) {
        let again: OfflineResponse =
            serde_json::from_slice(&serde_json::to_vec(&response).unwrap()).unwrap();
        assert_eq!(again.controller, response.controller);
        let _ = gantry_shared::tls::certificates_from_pem(&response.controller_certificate_pem, "c");
    }
    if let Ok(renewal) = serde_json::from_slice::<OfflineRenewRequest>(data) {
        let r = &renewal.request;
        let _ = renew_message(&r.node_name, &r.certificate_sha256, r.at_ms);
        let _ = gantry_shared::bundle::signing::from_hex(&r.signature);
    }
    if let Ok(answer) = serde_json::from_slice::<OfflineRenewResponse>(data) {
        let again: OfflineRenewResponse =
            serde_json::from_slice(&serde_json::to_vec(&answer).unwrap()).unwrap();
        assert_eq!(again.response.node_name, answer.response.node_name);
        let _ = gantry_shared::tls::certificates_from_pem(&answer.response.certificate_pem, "c");
    }
});
