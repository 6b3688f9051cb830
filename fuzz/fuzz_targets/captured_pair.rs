//! A captured pair arrives from a node as an event record: any bytes, as far as the
//! controller knows. Reading it must never panic or allocate past what its data holds;
//! a pair it accepts has tensors with exactly as many elements as their shapes say,
//! and writes back to the same pair.
#![no_main]

use gantry_shared::monitoring::capture::{CapturedPair, CapturedTensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pair) = CapturedPair::parse(text) else {
        return;
    };
    for t in pair.inputs.iter().chain(&pair.outputs) {
        let tensor = t.tensor().expect("checked by parse");
        let elements: u64 = tensor.shape.iter().product();
        assert_eq!(elements, tensor.data.len() as u64);
        let again = CapturedTensor::new(&t.name, &tensor);
        assert_eq!(again.tensor().expect("written back"), tensor);
    }
    let json = serde_json::to_string(&pair).expect("pairs serialize");
    assert_eq!(CapturedPair::parse(&json).expect("reads back"), pair);
});
