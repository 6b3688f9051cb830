//! A local client's inference request is untrusted: any body, any claimed header length.
//! Decoding must never panic or allocate what a size field claims before the bytes are
//! there; whatever decodes must check against a model without panicking, and every
//! tensor it holds must write back to the binary form it was read from.
#![no_main]

use gantry_shared::bundle::manifest::{DType, Dim, TensorSpec};
use gantry_shared::oip;
use gantry_shared::tensor::{ALL_DTYPES, TensorData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First two bytes: the header length to claim (0xffff: none).
    let (claim, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => return,
    };
    let header = (claim != u16::MAX).then_some(usize::from(claim));
    if let Ok(request) = oip::decode_http(body, header) {
        let specs = [TensorSpec {
            name: "x".into(),
            dtype: DType::Float32,
            shape: vec![Dim::Named("batch".into()), Dim::Fixed(4)],
        }];
        let _ = oip::check_requested(&specs, &request.outputs);
        let _ = oip::model_inputs(&specs, request.inputs);
    }
    // The same bytes as binary tensor data of every type.
    for dtype in ALL_DTYPES {
        if let Ok(tensor) = TensorData::from_le_bytes(dtype, body) {
            let mut again = Vec::new();
            tensor.write_le_bytes(&mut again);
            assert_eq!(again, body);
            let _ = tensor.check_json();
        }
    }
});
