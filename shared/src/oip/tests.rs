use crate::bundle::manifest::DType;

use super::*;

fn spec(name: &str, dtype: DType, shape: Vec<Dim>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype,
        shape,
    }
}

fn batch(n: u64) -> Vec<Dim> {
    vec![Dim::Named("batch".into()), Dim::Fixed(n)]
}

/// A body with a JSON header and binary data after it, as Triton's client sends it.
fn binary_body(header: &serde_json::Value, data: &[u8]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(header).unwrap();
    let len = body.len();
    body.extend_from_slice(data);
    (body, len)
}

fn err(body: &[u8], header: Option<usize>) -> ApiError {
    decode_http(body, header).unwrap_err()
}

#[test]
fn json_and_binary_inputs_decode_to_the_same_tensors() {
    let json = serde_json::json!({
        "id": "7",
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [[1.5, -2.0]]}],
    });
    let from_json = decode_http(&serde_json::to_vec(&json).unwrap(), None).unwrap();
    let header = serde_json::json!({
        "id": "7",
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}],
    });
    let bytes: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (body, len) = binary_body(&header, &bytes);
    let from_binary = decode_http(&body, Some(len)).unwrap();
    assert_eq!(from_json, from_binary);
    assert_eq!(from_json.id.as_deref(), Some("7"));
    assert_eq!(
        from_json.inputs[0].data,
        TensorData::Float32(vec![1.5, -2.0])
    );
}

#[test]
fn header_length_past_the_end_of_the_body_is_refused() {
    let e = err(b"{}", Some(100));
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains("only 2 bytes"), "{e}");
}

#[test]
fn binary_data_size_past_the_end_of_the_body_is_refused() {
    let header = serde_json::json!({
        "inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "parameters": {"binary_data_size": 1_000_000}}],
    });
    let (body, len) = binary_body(&header, &[0; 16]);
    let e = err(&body, Some(len));
    assert!(
        e.message
            .contains("binary_data_size is 1000000, but only 16 bytes"),
        "{e}"
    );
}

#[test]
fn trailing_binary_bytes_nobody_claims_are_refused() {
    let header = serde_json::json!({
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}],
    });
    let (body, len) = binary_body(&header, &[0; 9]);
    let e = err(&body, Some(len));
    assert!(e.message.contains("5 bytes of binary data follow"), "{e}");
}

#[test]
fn negative_or_fractional_binary_data_size_is_refused() {
    for size in [
        serde_json::json!(-4),
        serde_json::json!(2.5),
        serde_json::json!("4"),
    ] {
        let header = serde_json::json!({
            "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": size}}],
        });
        let (body, len) = binary_body(&header, &[0; 4]);
        let e = err(&body, Some(len));
        assert!(e.message.contains("must be a byte count"), "{e}");
    }
}

#[test]
fn binary_bytes_length_prefix_lying_about_its_size_is_refused() {
    let header = serde_json::json!({
        "inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}],
    });
    // Claims 100 bytes, carries 2.
    let mut data = 100u32.to_le_bytes().to_vec();
    data.extend_from_slice(b"hi");
    let (body, len) = binary_body(&header, &data);
    let e = err(&body, Some(len));
    assert!(
        e.message
            .starts_with("input \"s\": binary BYTES data is cut short"),
        "{e}"
    );
}

#[test]
fn data_and_binary_data_together_or_neither_are_refused() {
    let both = serde_json::json!({
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": 4}}],
    });
    let (body, len) = binary_body(&both, &[0; 4]);
    assert!(
        err(&body, Some(len))
            .message
            .contains("both data and binary_data_size")
    );
    let neither = serde_json::json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]});
    assert!(
        err(&serde_json::to_vec(&neither).unwrap(), None)
            .message
            .contains("has no data")
    );
}

#[test]
fn unknown_datatypes_and_unsupported_parameters_are_refused_never_ignored() {
    let body = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}"#;
    assert!(
        err(body, None)
            .message
            .contains("datatype \"FP8\" is not one the protocol names")
    );
    let body = br#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}}]}"#;
    let e = err(body, None);
    assert_eq!(e.kind, ErrorKind::Unsupported);
    assert!(e.message.contains("shared-memory tensors"), "{e}");
    let body =
        br#"{"inputs": [], "outputs": [{"name": "y", "parameters": {"classification": 3}}]}"#;
    assert_eq!(err(body, None).kind, ErrorKind::Unsupported);
    let body = br#"{"inputs": [], "parameters": {"binary_data_output": "yes"}}"#;
    assert!(err(body, None).message.contains("must be true or false"));
}

#[test]
fn values_out_of_the_datatypes_range_are_refused_naming_input_and_element() {
    let body = br#"{"inputs": [{"name": "ids", "shape": [2], "datatype": "INT32", "data": [1, 4294967296]}]}"#;
    assert_eq!(
        err(body, None).message,
        "input \"ids\": element 1: 4294967296 is out of range for INT32"
    );
}

#[test]
fn inputs_are_checked_against_the_model_and_put_in_its_order() {
    let specs = [
        spec("a", DType::Float32, batch(2)),
        spec("b", DType::Int64, batch(1)),
    ];
    let input = |name: &str, shape: Vec<u64>, data: TensorData| Input {
        name: name.into(),
        shape,
        data,
    };
    let (ordered, batch_size) = model_inputs(
        &specs,
        vec![
            input("b", vec![3, 1], TensorData::Int64(vec![1, 2, 3])),
            input("a", vec![3, 2], TensorData::Float32(vec![0.0; 6])),
        ],
    )
    .unwrap();
    assert_eq!(
        ordered.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(batch_size, 3);

    let e = model_inputs(
        &specs,
        vec![input("a", vec![1, 2], TensorData::Float32(vec![0.0; 2]))],
    )
    .unwrap_err();
    assert_eq!(e.message, "input \"b\" is missing");
    let e = model_inputs(
        &specs,
        vec![input("c", vec![1], TensorData::Float32(vec![0.0]))],
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("no input \"c\" (its inputs: \"a\", \"b\")"),
        "{e}"
    );
    let twice = vec![
        input("a", vec![1, 2], TensorData::Float32(vec![0.0; 2])),
        input("a", vec![1, 2], TensorData::Float32(vec![0.0; 2])),
    ];
    assert!(
        model_inputs(&specs, twice)
            .unwrap_err()
            .message
            .contains("given twice")
    );
    let e = model_inputs(
        &specs,
        vec![input("a", vec![1, 3], TensorData::Float32(vec![0.0; 3]))],
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("dimension 1 is 3, the model fixes it at 2"),
        "{e}"
    );
    let e = model_inputs(
        &specs,
        vec![input("a", vec![1, 2], TensorData::Float64(vec![0.0; 2]))],
    )
    .unwrap_err();
    assert!(
        e.message
            .contains("datatype FP64 does not match the model's FP32"),
        "{e}"
    );
    // A shape whose element count overflows is refused, never allocated.
    let e = model_inputs(
        &specs,
        vec![input("a", vec![u64::MAX, 2], TensorData::Float32(vec![]))],
    )
    .unwrap_err();
    assert!(e.message.contains("overflows"), "{e}");
}

#[test]
fn requested_outputs_come_in_the_order_asked_and_unknown_ones_are_refused() {
    let specs = [
        spec("y", DType::Float32, batch(1)),
        spec("z", DType::Int64, batch(1)),
    ];
    let asked = |name: &str, binary| RequestedOutput {
        name: name.into(),
        binary,
    };
    assert!(
        check_requested(&specs, &[asked("w", None)])
            .unwrap_err()
            .message
            .contains("no output \"w\"")
    );
    assert!(check_requested(&specs, &[asked("y", None), asked("y", None)]).is_err());
    let outputs = || {
        vec![
            (
                "y".to_owned(),
                Tensor {
                    shape: vec![1, 1],
                    data: TensorData::Float32(vec![1.0]),
                },
            ),
            (
                "z".to_owned(),
                Tensor {
                    shape: vec![1, 1],
                    data: TensorData::Int64(vec![2]),
                },
            ),
        ]
    };
    let all = choose_outputs(outputs(), &[], true);
    assert_eq!(
        all.iter()
            .map(|c| (c.name.as_str(), c.binary))
            .collect::<Vec<_>>(),
        [("y", true), ("z", true)]
    );
    let some = choose_outputs(
        outputs(),
        &[asked("z", Some(false)), asked("y", None)],
        true,
    );
    assert_eq!(
        some.iter()
            .map(|c| (c.name.as_str(), c.binary))
            .collect::<Vec<_>>(),
        [("z", false), ("y", true)]
    );
}

#[test]
fn responses_put_binary_outputs_after_the_json_header_in_order() {
    let chosen = vec![
        Chosen {
            name: "a".into(),
            tensor: Tensor {
                shape: vec![2],
                data: TensorData::Int64(vec![1 << 60, -1]),
            },
            binary: false,
        },
        Chosen {
            name: "b".into(),
            tensor: Tensor {
                shape: vec![1],
                data: TensorData::Float32(vec![f32::NAN]),
            },
            binary: true,
        },
    ];
    let (body, header) = encode_http(("m", "1.0.0"), Some("q"), &chosen).unwrap();
    let header = header.unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body[..header]).unwrap();
    assert_eq!(json["id"], "q");
    assert_eq!(
        json["outputs"][0]["data"],
        serde_json::json!([1_152_921_504_606_846_976_i64, -1])
    );
    assert_eq!(json["outputs"][1]["parameters"]["binary_data_size"], 4);
    assert!(json["outputs"][1].get("data").is_none());
    assert_eq!(&body[header..], &f32::NAN.to_le_bytes());

    // The same NaN as JSON: refused, naming the way out.
    let mut json_only = chosen;
    json_only[1].binary = false;
    let e = encode_http(("m", "1.0.0"), None, &json_only).unwrap_err();
    assert!(
        e.message.contains("output \"b\"") && e.message.contains("binary_data_output"),
        "{e}"
    );
    // All JSON: no header length, a plain JSON body.
    json_only.pop();
    let (body, header) = encode_http(("m", "1.0.0"), None, &json_only).unwrap();
    assert!(header.is_none());
    assert!(
        serde_json::from_slice::<serde_json::Value>(&body)
            .unwrap()
            .get("id")
            .is_none()
    );
}

#[test]
fn models_batch_only_when_every_input_leaves_its_first_dimension_open() {
    assert!(batches(&[spec("a", DType::Float32, batch(2))]));
    assert!(!batches(&[
        spec("a", DType::Float32, batch(2)),
        spec("b", DType::Float32, vec![Dim::Fixed(1)])
    ]));
    assert!(!batches(&[]));
}

quickcheck::quickcheck! {
    fn arbitrary_bodies_never_panic_the_decoder(body: Vec<u8>, header: Option<usize>) -> bool {
        let _ = decode_http(&body, header);
        true
    }
}
