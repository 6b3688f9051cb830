//! A reference profile comes from a bundle's payload (signed, but written by whoever
//! holds a trusted key), and drift windows reach the controller from nodes: both are
//! untrusted bytes. Reading must never panic; a profile that reads must compare with
//! itself and with its empty window, merge with its empty window, and profile requests
//! without panicking.
#![no_main]

use gantry_shared::bundle::manifest::Tensor;
use gantry_shared::monitoring::drift;
use gantry_shared::monitoring::profile::{Profile, Side, WindowProfiler};
use gantry_shared::tensor::TensorData;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(profile) = Profile::from_slice(data) else {
        return;
    };
    let _ = drift::compare(&profile, &profile, 1);
    let mut window = profile.empty_window();
    window.merge(&profile.empty_window()).unwrap();
    let mut profiler = WindowProfiler::new(&profile, |_, _| Some(TensorData::Float32(Vec::new())));
    for t in &profile.tensors {
        for shape in [vec![2], vec![2, 3], vec![1, 4, 2, 2]] {
            let n = shape.iter().product::<u64>() as usize;
            let tensor = Tensor {
                shape,
                data: TensorData::Float32((0..n).map(|i| i as f32 - 3.0).collect()),
            };
            profiler.observe(Side::Input, [(t.name.as_str(), &tensor)]);
            profiler.observe(Side::Output, [(t.name.as_str(), &tensor)]);
        }
    }
    let seen = profiler.take();
    let _ = drift::compare(&profile, &seen, 1);
});
