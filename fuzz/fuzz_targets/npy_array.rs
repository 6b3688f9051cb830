//! `.npy` reference data is read by `gantry bundle create --reference-data` from files
//! of any origin. Reading must never panic nor allocate more than the file's size, and
//! an array that reads writes back to the same array.
#![no_main]

use gantry_shared::monitoring::npy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensor) = npy::read(data) {
        assert_eq!(tensor.shape.iter().product::<u64>() as usize, tensor.data.len());
        if !matches!(tensor.data, gantry_shared::tensor::TensorData::Float16(_)) {
            // NaN payloads aside, the array survives a round trip.
            let again = npy::read(&npy::write(&tensor)).unwrap();
            assert_eq!(again.shape, tensor.shape);
        }
    }
});
