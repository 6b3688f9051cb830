//! The IO-binding path that models on CUDA run through, exercised on the CPU (no GPU
//! here): bound to host memory, every tensor type gives exactly what an unbound run
//! gives and passes its golden vectors, in real ONNX Runtime.

use gantry_agent::inference::{self, Golden, Hardware, Model, Threads, check_golden};
use gantry_shared::bundle::manifest::{ExecutionProvider, GoldenVector, ModelEntry, Requirements};
use gantry_shared::bundle::onnx;

mod support;

use support::bundles::{models, onnxruntime};

fn load(model: &str) -> (Model, Vec<Golden>) {
    inference::init(&onnxruntime()).unwrap();
    let path = models().join(format!("{model}.onnx"));
    let sig = onnx::read_signature(&std::fs::read(&path).unwrap()[..]).unwrap();
    let entry = ModelEntry {
        format: "onnx".into(),
        entry: format!("{model}.onnx"),
        inputs: sig.inputs,
        outputs: sig.outputs,
    };
    let requirements = Requirements {
        execution_providers: vec![ExecutionProvider::Cpu],
        ..Requirements::default()
    };
    let golden: Vec<GoldenVector> = serde_json::from_slice(
        &std::fs::read(models().join(format!("{model}.golden.json"))).unwrap(),
    )
    .unwrap();
    let golden = Golden::read_all(&golden, &models()).unwrap();
    let model = Model::load(
        &path,
        &entry,
        &requirements,
        Hardware::default(),
        Threads::default(),
    )
    .unwrap();
    (model, golden)
}

#[test]
fn a_bound_run_answers_exactly_as_an_unbound_one_for_every_tensor_type() {
    for name in ["all_types", "bfloat16", "tiny_linear"] {
        let (mut plain, golden) = load(name);
        let (bound, _) = load(name);
        assert!(!plain.io_bound(), "a CPU model runs unbound");
        let mut bound = bound.with_io_binding(inference::host_memory().unwrap());
        assert!(bound.io_bound());
        for g in &golden {
            let expected = plain.run(g.inputs.clone()).unwrap();
            let got = bound.run(g.inputs.clone()).unwrap();
            assert_eq!(got, expected, "{name}: vector {:?}", g.name);
        }
        let results = check_golden(&mut bound, &golden);
        assert!(
            results.iter().all(|r| r.passed),
            "{name}: {:?}",
            results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| (&r.name, &r.error))
                .collect::<Vec<_>>()
        );
    }
}
