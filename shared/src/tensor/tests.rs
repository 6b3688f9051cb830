use super::*;

fn through_json(data: &TensorData) -> Result<TensorData, String> {
    let text = serde_json::to_string(data).map_err(|e| e.to_string())?;
    let values: JsonValues = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    TensorData::from_json(data.dtype(), &values.0).map_err(|e| e.to_string())
}

fn through_binary(data: &TensorData) -> TensorData {
    let mut bytes = Vec::new();
    data.write_le_bytes(&mut bytes);
    assert_eq!(bytes.len(), data.binary_len());
    TensorData::from_le_bytes(data.dtype(), &bytes).unwrap()
}

fn json(text: &str, dtype: DType) -> Result<TensorData, TensorError> {
    let values: JsonValues = serde_json::from_str(text).unwrap();
    TensorData::from_json(dtype, &values.0)
}

/// The extremes of every type, as JSON can carry them.
fn extremes() -> Vec<TensorData> {
    use half::{bf16, f16};
    vec![
        TensorData::Bool(vec![true, false, true]),
        TensorData::Uint8(vec![0, 1, u8::MAX]),
        TensorData::Uint16(vec![0, u16::MAX]),
        TensorData::Uint32(vec![0, u32::MAX]),
        TensorData::Uint64(vec![0, (1 << 53) + 1, u64::MAX]),
        TensorData::Int8(vec![i8::MIN, -1, i8::MAX]),
        TensorData::Int16(vec![i16::MIN, i16::MAX]),
        TensorData::Int32(vec![i32::MIN, i32::MAX]),
        TensorData::Int64(vec![i64::MIN, -(1 << 53) - 1, i64::MAX]),
        TensorData::Float16(vec![
            f16::MIN,
            f16::MIN_POSITIVE_SUBNORMAL,
            f16::MAX,
            f16::NEG_ZERO,
        ]),
        TensorData::Bfloat16(vec![bf16::MIN, bf16::from_bits(1), bf16::MAX]),
        TensorData::Float32(vec![f32::MIN, 0.1, f32::from_bits(1), f32::MAX, -0.0]),
        TensorData::Float64(vec![f64::MIN, 0.1, 1.0 / 3.0, f64::from_bits(1), f64::MAX]),
        TensorData::Bytes(vec![
            b"".to_vec(),
            "ünïcode".as_bytes().to_vec(),
            b"x".repeat(300),
        ]),
    ]
}

#[test]
fn every_type_round_trips_through_json_bit_for_bit() {
    for data in extremes() {
        let back = through_json(&data).unwrap();
        for i in 0..data.len() {
            assert!(data.element_eq(&back, i), "{data:?} came back as {back:?}");
        }
        // -0.0 keeps its sign: compare the bits, not the values.
        if let (TensorData::Float32(a), TensorData::Float32(b)) = (&data, &back) {
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn every_type_round_trips_through_binary_with_nan_and_infinities() {
    let mut all = extremes();
    all.push(TensorData::Float32(vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]));
    all.push(TensorData::Float64(vec![f64::NAN, f64::NEG_INFINITY]));
    all.push(TensorData::Float16(vec![
        half::f16::NAN,
        half::f16::INFINITY,
    ]));
    all.push(TensorData::Bytes(vec![vec![0, 255, 0xc3]]));
    for data in all {
        let back = through_binary(&data);
        assert_eq!(back.len(), data.len());
        for i in 0..data.len() {
            assert!(data.element_eq(&back, i), "{data:?} came back as {back:?}");
        }
    }
}

#[test]
fn integers_above_2_pow_53_stay_exact() {
    let big = "[9007199254740993, 18446744073709551615]";
    assert_eq!(
        json(big, DType::Uint64).unwrap(),
        TensorData::Uint64(vec![9_007_199_254_740_993, u64::MAX])
    );
    assert_eq!(
        json("[-9223372036854775808, 9007199254740993]", DType::Int64).unwrap(),
        TensorData::Int64(vec![i64::MIN, 9_007_199_254_740_993])
    );
    let text = serde_json::to_string(&TensorData::Int64(vec![9_007_199_254_740_993])).unwrap();
    assert_eq!(
        text, "[9007199254740993]",
        "integers are written as integers"
    );
}

#[test]
fn out_of_range_values_are_refused_never_saturated() {
    for (text, dtype) in [
        ("[256]", DType::Uint8),
        ("[-1]", DType::Uint32),
        ("[128]", DType::Int8),
        ("[2147483648]", DType::Int32),
        ("[18446744073709551615]", DType::Int64),
        ("[1e39]", DType::Float32),
        ("[70000]", DType::Float16),
        ("[1e300]", DType::Bfloat16),
    ] {
        let err = json(text, dtype).unwrap_err();
        assert!(
            matches!(err, TensorError::OutOfRange { index: 0, .. }),
            "{text} as {dtype:?}: {err}"
        );
        assert!(err.to_string().contains("out of range for"), "{err}");
    }
}

#[test]
fn fractions_given_for_integer_types_are_refused_and_whole_floats_accepted() {
    let err = json("[1, 2.5]", DType::Int32).unwrap_err();
    assert_eq!(
        err.to_string(),
        "element 1: 2.5 is not an integer, and INT32 holds integers"
    );
    assert_eq!(
        json("[3.0, -4.0]", DType::Int16).unwrap(),
        TensorData::Int16(vec![3, -4])
    );
}

#[test]
fn values_of_the_wrong_kind_are_refused_naming_the_element() {
    let err = json(r#"[1, "two"]"#, DType::Float32).unwrap_err();
    assert_eq!(
        err.to_string(),
        "element 1: a string where FP32 needs numbers"
    );
    let err = json("[true]", DType::Int8).unwrap_err();
    assert!(
        matches!(
            err,
            TensorError::WrongKind {
                found: "boolean",
                ..
            }
        ),
        "{err}"
    );
    let err = json("[1]", DType::String).unwrap_err();
    assert!(
        matches!(
            err,
            TensorError::WrongKind {
                found: "number",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        json("[true, 0, 1]", DType::Bool).unwrap(),
        TensorData::Bool(vec![true, false, true])
    );
    assert!(json("[2]", DType::Bool).is_err());
}

#[test]
fn nested_arrays_are_read_row_major() {
    assert_eq!(
        json("[[1, 2], [3, [4]]]", DType::Uint8).unwrap(),
        TensorData::Uint8(vec![1, 2, 3, 4])
    );
}

#[test]
fn nan_and_infinity_are_refused_in_json_naming_the_way_out() {
    let data = TensorData::Float32(vec![1.0, f32::NAN]);
    let err = data.check_json().unwrap_err();
    assert!(
        matches!(err, TensorError::NonFinite { index: 1, value } if value.is_nan()),
        "{err}"
    );
    assert!(err.to_string().contains("binary_data_output"), "{err}");
    assert!(
        serde_json::to_string(&data).is_err(),
        "never written as null"
    );
    let err = TensorData::Bytes(vec![vec![0xff]])
        .check_json()
        .unwrap_err();
    assert_eq!(err, TensorError::NotUtf8 { index: 0 });
}

#[test]
fn binary_data_cut_mid_element_is_refused() {
    let err = TensorData::from_le_bytes(DType::Float32, &[0, 0, 128, 63, 0]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "5 bytes of binary data are not a whole number of 4-byte FP32 elements"
    );
}

#[test]
fn bytes_length_prefix_past_the_end_is_refused() {
    // Claims 4 GiB, holds 3 bytes: refused without allocating what it claims.
    let mut bytes = u32::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"abc");
    assert_eq!(
        TensorData::from_le_bytes(DType::String, &bytes).unwrap_err(),
        TensorError::BytesTruncated { index: 0 }
    );
    // A length cut in half.
    let mut bytes = vec![1, 0, 0, 0, b'a'];
    bytes.extend_from_slice(&[7, 0]);
    assert_eq!(
        TensorData::from_le_bytes(DType::String, &bytes).unwrap_err(),
        TensorError::BytesTruncated { index: 1 }
    );
}

#[test]
fn bool_bytes_other_than_0_and_1_are_refused() {
    assert_eq!(
        TensorData::from_le_bytes(DType::Bool, &[1, 0, 2]).unwrap_err(),
        TensorError::BoolByte { index: 2, byte: 2 }
    );
}

#[test]
fn datatype_names_are_the_protocols() {
    for dtype in ALL_DTYPES {
        assert_eq!(parse_datatype(datatype_name(dtype)), Some(dtype));
    }
    assert_eq!(parse_datatype("FP8"), None);
    assert_eq!(
        parse_datatype("fp32"),
        None,
        "the protocol's names are upper case"
    );
}

#[test]
fn slices_and_extensions_keep_the_type() {
    let mut a = TensorData::Int64(vec![1, 2, 3, 4]);
    assert_eq!(a.slice(1, 3), TensorData::Int64(vec![2, 3]));
    assert_eq!(a.slice(3, 10), TensorData::Int64(vec![4]));
    assert!(a.extend_from(&TensorData::Int64(vec![5])));
    assert!(!a.extend_from(&TensorData::Int32(vec![6])));
    assert_eq!(a, TensorData::Int64(vec![1, 2, 3, 4, 5]));
}

quickcheck::quickcheck! {
    fn any_finite_f64_round_trips_through_json(values: Vec<f64>) -> bool {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        let data = TensorData::Float64(values);
        through_json(&data).is_ok_and(|back| back == data)
    }

    fn any_finite_f32_round_trips_through_json(bits: Vec<u32>) -> bool {
        let values: Vec<f32> = bits.into_iter().map(f32::from_bits).filter(|v| v.is_finite()).collect();
        let data = TensorData::Float32(values.clone());
        through_json(&data).is_ok_and(|back| match back {
            TensorData::Float32(b) => b.iter().map(|v| v.to_bits()).eq(values.iter().map(|v| v.to_bits())),
            _ => false,
        })
    }

    fn any_i64_and_u64_round_trip_through_json(a: Vec<i64>, b: Vec<u64>) -> bool {
        let a = TensorData::Int64(a);
        let b = TensorData::Uint64(b);
        through_json(&a).is_ok_and(|back| back == a) && through_json(&b).is_ok_and(|back| back == b)
    }

    fn arbitrary_bytes_never_panic_the_binary_reader(bytes: Vec<u8>) -> bool {
        ALL_DTYPES.iter().all(|&dtype| {
            match TensorData::from_le_bytes(dtype, &bytes) {
                Ok(data) => {
                    let mut again = Vec::new();
                    data.write_le_bytes(&mut again);
                    again == bytes
                }
                Err(_) => true,
            }
        })
    }
}
