//! The ONNX reader walks protobuf from model files of unknown origin. It must never
//! panic, loop, or allocate beyond its caps.
#![no_main]

use gantry_shared::bundle::onnx::read_signature;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_signature(data);
});
