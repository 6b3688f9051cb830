//! The frame decoder reads bytes from any peer that completes a handshake. It must never
//! panic, and a frame it accepts must re-encode and decode to the same kind of message.
#![no_main]

use gantry_shared::protocol::{self, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = protocol::decode::<Request>(data) {
        if let Request::Telemetry(batch) = &request {
            let _ = batch.validate();
        }
        let again = protocol::encode(&request).expect("an accepted request encodes");
        protocol::decode::<Request>(&again).expect("and decodes again");
    }
    let _ = protocol::decode::<Response>(data);
    if data.len() >= 4 {
        let _ = protocol::frame_length([data[0], data[1], data[2], data[3]]);
    }
});
