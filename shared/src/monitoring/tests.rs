use super::drift::{self, Metric};
use super::npy::{self, NpyError};
use super::profile::{
    Layout, Profile, ProfileError, ReferenceBuilder, Side, Values, WindowProfiler,
};
use crate::bundle::manifest::Tensor;
use crate::tensor::TensorData;

/// A deterministic stream of values spread like a normal(mean, 1) (sum of uniforms).
fn normalish(n: usize, mean: f64, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| (mean + (0..12).map(|_| next()).sum::<f64>() - 6.0) as f32)
        .collect()
}

fn table(rows: usize, mean: f64, seed: u64) -> Tensor {
    // Two columns: one drifting with `mean`, one steady.
    let a = normalish(rows, mean, seed);
    let b = normalish(rows, 0.0, seed + 1);
    Tensor {
        shape: vec![rows as u64, 2],
        data: TensorData::Float32(a.iter().zip(&b).flat_map(|(x, y)| [*x, *y]).collect()),
    }
}

fn reference() -> Profile {
    let mut b = ReferenceBuilder::default();
    b.add(
        Side::Input,
        "x",
        &table(5000, 0.0, 1),
        Some(&["age".to_owned(), "income".to_owned()]),
    )
    .unwrap();
    let labels = Tensor {
        shape: vec![5000],
        data: TensorData::Int64((0..5000).map(|i| i % 3).collect()),
    };
    b.add(Side::Output, "label", &labels, None).unwrap();
    b.finish()
}

fn window_of(reference: &Profile, x: &Tensor, labels: &Tensor) -> Profile {
    let mut w = WindowProfiler::new(reference, |side, _| {
        Some(match side {
            Side::Input => TensorData::Float32(Vec::new()),
            Side::Output => TensorData::Int64(Vec::new()),
        })
    });
    w.count_rows(x.shape[0]);
    w.observe(Side::Input, [("x", x)]);
    w.observe(Side::Output, [("label", labels)]);
    w.take()
}

#[test]
fn the_reference_profiles_columns_by_name_and_small_integer_outputs_as_categories() {
    let r = reference();
    assert_eq!(r.rows, 5000);
    let x = r.tensor(Side::Input, "x").unwrap();
    assert_eq!(x.layout, Layout::Columns { width: 2 });
    assert_eq!(x.features[0].name, "age");
    let Values::Numeric(n) = &x.features[0].values else {
        panic!("numeric")
    };
    assert_eq!(n.bins.len(), 10);
    // Deciles: each bin holds a tenth of the reference.
    assert!(
        n.bins.iter().all(|b| (450..=550).contains(b)),
        "{:?}",
        n.bins
    );
    let label = r.tensor(Side::Output, "label").unwrap();
    let Values::Categorical(c) = &label.features[0].values else {
        panic!("categorical")
    };
    assert_eq!(c.labels, ["0", "1", "2"]);
    assert_eq!(c.counts, [1667, 1667, 1666]);
    // A file round trip keeps it whole.
    assert_eq!(Profile::from_slice(&r.to_vec()).unwrap(), r);
}

#[test]
fn the_same_distribution_scores_low_and_a_shifted_one_high_on_every_metric() {
    let r = reference();
    let labels = Tensor {
        shape: vec![2000],
        data: TensorData::Int64((0..2000).map(|i| i % 3).collect()),
    };
    let same = drift::compare(&r, &window_of(&r, &table(2000, 0.0, 7), &labels), 100);
    let shifted_labels = Tensor {
        shape: vec![2000],
        data: TensorData::Int64(vec![2; 2000]),
    };
    let moved = drift::compare(
        &r,
        &window_of(&r, &table(2000, 1.5, 7), &shifted_labels),
        100,
    );
    let by = |s: &[drift::FeatureDrift], name: &str| {
        s.iter().find(|f| f.feature == name).cloned().unwrap()
    };
    let (age, income) = (by(&same, "age"), by(&same, "income"));
    assert!(
        age.psi < 0.05 && age.ks.unwrap() < 0.06 && age.js < 0.1,
        "{age:?}"
    );
    assert!(income.psi < 0.05, "{income:?}");
    let age = by(&moved, "age");
    assert!(
        age.psi > 1.0 && age.ks.unwrap() > 0.45 && age.js > 0.4,
        "{age:?}"
    );
    assert!(age.out_of_range > 0, "{age:?}");
    assert!(by(&moved, "income").psi < 0.05);
    let label = by(&moved, "label");
    assert!(label.psi > 1.0 && label.ks.is_none(), "{label:?}");
    let over = drift::over(&moved, Metric::Psi, 0.25);
    assert_eq!(
        over.iter()
            .map(|f| f.feature.as_str())
            .collect::<Vec<_>>()
            .len(),
        2
    );
    assert_eq!(drift::worst(&moved, Metric::Ks).unwrap().feature, "age");
}

#[test]
fn windows_merge_into_the_window_of_both() {
    let reference = reference();
    let labels = Tensor {
        shape: vec![1000],
        data: TensorData::Int64(vec![1; 1000]),
    };
    let first = window_of(&reference, &table(1000, 0.0, 3), &labels);
    let second = window_of(&reference, &table(1000, 0.5, 4), &labels);
    let mut merged = first.clone();
    merged.merge(&second).unwrap();
    assert_eq!(merged.rows, 2000);
    let feature = &merged.tensors[0].features[0];
    assert_eq!(feature.count, 2000);
    let Values::Numeric(n) = &feature.values else {
        panic!()
    };
    assert_eq!(n.bins.iter().sum::<u64>(), 2000);
    assert_eq!(n.sketch.count(), 2000);
    // Merging windows of another reference is refused, not summed.
    let mut other = ReferenceBuilder::default();
    other
        .add(Side::Input, "x", &table(100, 3.0, 9), None)
        .unwrap();
    let mut foreign = other.finish();
    foreign.tensors[0].features.truncate(2);
    foreign.tensors.push(reference.tensors[1].clone());
    assert!(merged.merge(&foreign.empty_window()).is_err());
}

#[test]
fn missing_and_misshapen_requests_are_counted_not_profiled() {
    let r = reference();
    let mut w = WindowProfiler::new(&r, |_, _| Some(TensorData::Float32(Vec::new())));
    let nan = Tensor {
        shape: vec![1, 2],
        data: TensorData::Float32(vec![f32::NAN, 1.0]),
    };
    let wide = Tensor {
        shape: vec![1, 3],
        data: TensorData::Float32(vec![1.0; 3]),
    };
    w.observe(Side::Input, [("x", &nan), ("x", &wide), ("unknown", &nan)]);
    let window = w.take();
    let x = window.tensor(Side::Input, "x").unwrap();
    assert_eq!(x.unprofiled, 1);
    assert_eq!((x.features[0].count, x.features[0].missing), (1, 1));
    assert_eq!(x.features[1].count, 1);
}

#[test]
fn images_are_profiled_by_channel_means_and_wide_tensors_by_row_means() {
    let image = Tensor {
        shape: vec![2, 3, 2, 2],
        data: TensorData::Float32((0..24).map(|i| i as f32).collect()),
    };
    let mut b = ReferenceBuilder::default();
    b.add(Side::Input, "image", &image, None).unwrap();
    let wide = Tensor {
        shape: vec![2, 100],
        data: TensorData::Float32(vec![1.0; 200]),
    };
    b.add(Side::Input, "embedding", &wide, None).unwrap();
    let p = b.finish();
    let image = p.tensor(Side::Input, "image").unwrap();
    assert_eq!(image.layout, Layout::Channels { channels: 3 });
    assert_eq!(image.features[1].name, "image[1]");
    let Values::Numeric(n) = &image.features[1].values else {
        panic!()
    };
    // Channel 1 of row 0 is 4..8 (mean 5.5), of row 1 16..20 (mean 17.5).
    assert_eq!((n.min, n.max), (Some(5.5), Some(17.5)));
    assert_eq!(
        p.tensor(Side::Input, "embedding").unwrap().layout,
        Layout::RowMean
    );
}

#[test]
fn strings_are_categories_cut_to_the_most_frequent() {
    let words: Vec<Vec<u8>> = (0..100)
        .map(|i| format!("w{}", i % 40).into_bytes())
        .collect();
    let mut b = ReferenceBuilder::default();
    b.add(
        Side::Input,
        "text",
        &Tensor {
            shape: vec![100],
            data: TensorData::Bytes(words),
        },
        None,
    )
    .unwrap();
    let p = b.finish();
    let Values::Categorical(c) = &p.tensors[0].features[0].values else {
        panic!()
    };
    assert_eq!(c.labels.len(), 32);
    assert_eq!(c.counts.iter().sum::<u64>() + c.other, 100);
}

#[test]
fn a_profile_with_bins_that_do_not_match_its_edges_is_refused() {
    let mut p = reference();
    let Values::Numeric(n) = &mut p.tensors[0].features[0].values else {
        panic!()
    };
    n.bins.pop();
    let e = Profile::from_slice(&p.to_vec()).unwrap_err();
    assert!(matches!(e, ProfileError::Inconsistent(_)), "{e}");
}

#[test]
fn a_profile_with_decreasing_edges_is_refused() {
    let mut p = reference();
    let Values::Numeric(n) = &mut p.tensors[0].features[0].values else {
        panic!()
    };
    n.edges.swap(0, 1);
    assert!(Profile::from_slice(&p.to_vec()).is_err());
}

#[test]
fn a_profile_with_unknown_fields_or_another_schema_is_refused() {
    let r = reference();
    let mut json: serde_json::Value = serde_json::from_slice(&r.to_vec()).unwrap();
    json["extra"] = serde_json::json!(1);
    assert!(Profile::from_slice(json.to_string().as_bytes()).is_err());
    json.as_object_mut().unwrap().remove("extra");
    json["schema"] = serde_json::json!(99);
    assert_eq!(
        Profile::from_slice(json.to_string().as_bytes()).unwrap_err(),
        ProfileError::Schema(99)
    );
}

#[test]
fn an_oversized_profile_is_refused_before_parsing() {
    let big = vec![b' '; super::profile::MAX_PROFILE_BYTES + 1];
    assert!(matches!(
        Profile::from_slice(&big),
        Err(ProfileError::TooLarge { .. })
    ));
}

#[test]
fn a_profile_claiming_more_features_than_its_layout_is_refused() {
    let mut p = reference();
    let extra = p.tensors[0].features[0].clone();
    p.tensors[0].features.push(extra);
    assert!(Profile::from_slice(&p.to_vec()).is_err());
}

#[test]
fn npy_round_trips_every_plain_type() {
    for data in [
        TensorData::Float32(vec![1.5, -2.0, 3.25, 0.0, 7.0, 8.0]),
        TensorData::Float64(vec![1.0; 6]),
        TensorData::Int64(vec![-1, 2, -3, 4, 5, 6]),
        TensorData::Uint8(vec![1, 2, 3, 4, 5, 6]),
        TensorData::Bool(vec![true, false, true, false, true, true]),
        TensorData::Bytes(vec![
            b"a".to_vec(),
            b"bc".to_vec(),
            b"".to_vec(),
            b"def".to_vec(),
            b"g".to_vec(),
            b"h".to_vec(),
        ]),
    ] {
        let t = Tensor {
            shape: vec![3, 2],
            data,
        };
        assert_eq!(npy::read(&npy::write(&t)).unwrap(), t);
    }
}

/// A version 1.0 file with `header` and `data`.
fn npy_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(data);
    out
}

#[test]
fn npy_unicode_strings_read_as_utf8() {
    let mut data = Vec::new();
    for word in ["hé", "x"] {
        for c in word.chars().chain(std::iter::repeat('\0')).take(2) {
            data.extend((c as u32).to_le_bytes());
        }
    }
    let t = npy::read(&npy_file(
        "{'descr': '<U2', 'fortran_order': False, 'shape': (2,), }\n",
        &data,
    ))
    .unwrap();
    assert_eq!(
        t.data,
        TensorData::Bytes(vec!["hé".as_bytes().to_vec(), b"x".to_vec()])
    );
}

#[test]
fn npy_object_arrays_are_refused_as_pickles() {
    let e = npy::read(&npy_file(
        "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
        &[0; 8],
    ))
    .unwrap_err();
    assert!(e.to_string().contains("pickled"), "{e}");
}

#[test]
fn npy_big_endian_and_fortran_order_are_refused_with_the_fix() {
    let e = npy::read(&npy_file(
        "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    ))
    .unwrap_err();
    assert!(e.to_string().contains("little-endian"), "{e}");
    let e = npy::read(&npy_file(
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
        &[0; 16],
    ))
    .unwrap_err();
    assert_eq!(e, NpyError::FortranOrder);
}

#[test]
fn npy_with_a_shape_larger_than_its_data_is_refused_without_allocating() {
    let e = npy::read(&npy_file(
        "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
        &[0; 8],
    ))
    .unwrap_err();
    assert!(matches!(e, NpyError::Size { .. }), "{e}");
    let e = npy::read(&npy_file(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }",
        &[0; 9],
    ))
    .unwrap_err();
    assert!(matches!(e, NpyError::Size { found: 9, .. }), "{e}");
}

#[test]
fn npy_truncated_headers_and_bad_magic_are_refused() {
    assert_eq!(npy::read(b"PK\x03\x04").unwrap_err(), NpyError::Magic);
    assert!(matches!(
        npy::read(b"\x93NUMPY\x01"),
        Err(NpyError::Truncated(_))
    ));
    assert!(matches!(
        npy::read(b"\x93NUMPY\x01\x00\xff\x00{"),
        Err(NpyError::Truncated(_))
    ));
    assert!(matches!(
        npy::read(b"\x93NUMPY\x09\x00\x00\x00"),
        Err(NpyError::Version(9, 0))
    ));
    let mut huge = b"\x93NUMPY\x02\x00".to_vec();
    huge.extend(u32::MAX.to_le_bytes());
    assert!(matches!(npy::read(&huge), Err(NpyError::HeaderTooLarge(_))));
}

#[test]
fn npy_headers_that_are_not_plain_dicts_are_refused() {
    for header in [
        "{'descr': '<f4', 'fortran_order': False}",
        "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'evil': __import__('os')}",
        "{'descr': '<f4' 'fortran_order': False, 'shape': (1,)}",
        "{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
        "not a dict",
    ] {
        assert!(npy::read(&npy_file(header, &[0; 4])).is_err(), "{header}");
    }
}

#[test]
fn npy_files_written_by_numpy_itself_read_back() {
    let float = npy::read(include_bytes!(
        "../../../fuzz/seeds/npy_array/float32_2x3.npy"
    ))
    .unwrap();
    assert_eq!(float.shape, [2, 3]);
    assert_eq!(
        float.data,
        TensorData::Float32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    );
    let ints = npy::read(include_bytes!("../../../fuzz/seeds/npy_array/int64.npy")).unwrap();
    assert_eq!(ints.data, TensorData::Int64(vec![1, -2, 3]));
    let text = npy::read(include_bytes!("../../../fuzz/seeds/npy_array/unicode.npy")).unwrap();
    assert_eq!(
        text.data,
        TensorData::Bytes(vec![b"ab".to_vec(), "é".as_bytes().to_vec()])
    );
    let bytes = npy::read(include_bytes!("../../../fuzz/seeds/npy_array/bytes.npy")).unwrap();
    assert_eq!(
        bytes.data,
        TensorData::Bytes(vec![b"ab".to_vec(), b"c".to_vec()])
    );
    let flags = npy::read(include_bytes!("../../../fuzz/seeds/npy_array/bool.npy")).unwrap();
    assert_eq!(flags.data, TensorData::Bool(vec![true, false]));
    let image = npy::read(include_bytes!(
        "../../../fuzz/seeds/npy_array/float16_image.npy"
    ))
    .unwrap();
    assert_eq!(image.shape, [1, 3, 2, 2]);
    // And a profile written by `gantry bundle create` reads back.
    let profile = Profile::from_slice(include_bytes!(
        "../../../fuzz/seeds/drift_profile/tabular.json"
    ))
    .unwrap();
    assert_eq!(profile.rows, 40);
}

#[test]
fn a_window_counts_strings_on_the_reference_labels_and_the_rest_as_other() {
    let words = |list: &[&str]| Tensor {
        shape: vec![list.len() as u64],
        data: TensorData::Bytes(list.iter().map(|w| w.as_bytes().to_vec()).collect()),
    };
    let mut b = ReferenceBuilder::default();
    b.add(Side::Input, "text", &words(&["a", "a", "b"]), None)
        .unwrap();
    let reference = b.finish();
    let mut w = WindowProfiler::new(&reference, |_, _| Some(TensorData::Bytes(Vec::new())));
    w.observe(Side::Input, [("text", &words(&["b", "c", "a", "b"]))]);
    let window = w.take();
    let Values::Categorical(c) = &window.tensors[0].features[0].values else {
        panic!()
    };
    assert_eq!(c.labels, ["a", "b"]);
    assert_eq!((c.counts.as_slice(), c.other), (&[1, 2][..], 1));
}

mod quality {
    use serde_json::json;

    use crate::bundle::manifest::Tensor;
    use crate::monitoring::quality::*;
    use crate::tensor::TensorData;

    fn scores(classes: u32, values: &[f32]) -> Predicted {
        Predicted::Scores {
            classes,
            values: values.to_vec(),
        }
    }

    fn joined(pairs: &[(Predicted, serde_json::Value)]) -> QualityStats {
        let mut stats = QualityStats::new(Task::Classification);
        for (p, label) in pairs {
            let truth = Truth::read(label, p).unwrap();
            stats.add(p, &truth).unwrap();
        }
        stats
    }

    #[test]
    fn binary_metrics_follow_the_definitions_with_tied_scores_counted_half() {
        // Probabilities of class 1; two rows tie at 0.4 across the classes.
        let p = Predicted::Scores {
            classes: 1,
            values: vec![0.1, 0.4, 0.4, 0.8, 0.6, 0.3],
        };
        let stats = joined(&[(p, json!([0, 0, 1, 1, 0, 1]))]);
        let m = stats.metrics();
        // Predicted 0,0,0,1,1,0: tp 1, fp 1, fn 2, tn 2.
        assert_eq!(m.accuracy, Some(0.5));
        assert_eq!(m.precision, Some(0.5));
        assert_eq!(m.recall, Some(1.0 / 3.0));
        assert_eq!(m.f1, Some(0.4));
        // Positives 0.4, 0.8, 0.3 against negatives 0.1, 0.4, 0.6:
        // 0.4 beats 0.1, ties 0.4 (½); 0.8 beats all three; 0.3 beats 0.1 → 5.5 / 9.
        assert!((m.roc_auc.unwrap() - 5.5 / 9.0).abs() < 1e-12);
        assert!(!m.multiclass);
    }

    #[test]
    fn multiclass_metrics_are_macro_averages_and_one_vs_rest_auc() {
        let rows = [
            (scores(3, &[0.7, 0.2, 0.1]), json!(0)),
            (scores(3, &[0.2, 0.5, 0.3]), json!(1)),
            (scores(3, &[0.1, 0.3, 0.6]), json!(1)),
            (scores(3, &[0.3, 0.3, 0.4]), json!(2)),
        ];
        let m = joined(&rows).metrics();
        assert!(m.multiclass);
        assert_eq!(m.accuracy, Some(0.75));
        // Class 0: p 1, r 1; class 1: p 1, r ½; class 2: p ½, r 1.
        assert!((m.precision.unwrap() - 2.5 / 3.0).abs() < 1e-12);
        assert!((m.recall.unwrap() - 2.5 / 3.0).abs() < 1e-12);
        let f1 = (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0;
        assert!((m.f1.unwrap() - f1).abs() < 1e-12);
        // OvR: class 0 1.0; class 1: positives 0.5, 0.3 vs 0.2, 0.3 → 3.5/4; class 2:
        // 0.4 against 0.1, 0.3, 0.6 → 2/3.
        let auc = (1.0 + 3.5 / 4.0 + 2.0 / 3.0) / 3.0;
        assert!((m.roc_auc.unwrap() - auc).abs() < 1e-12);
    }

    #[test]
    fn regression_gives_mae_and_rmse() {
        let p = Predicted::Values(vec![1.0, 2.0, 4.0]);
        let mut stats = QualityStats::new(Task::Regression);
        stats
            .add(&p, &Truth::read(&json!([1.5, 2.0, 2.0]), &p).unwrap())
            .unwrap();
        let m = stats.metrics();
        assert_eq!(m.mae, Some(2.5 / 3.0));
        assert_eq!(m.rmse, Some((4.25f64 / 3.0).sqrt()));
        assert_eq!(m.accuracy, None);
    }

    #[test]
    fn windows_merge_to_the_metrics_of_all_their_rows() {
        let a = [
            (scores(2, &[0.8, 0.2]), json!(0)),
            (scores(2, &[0.3, 0.7]), json!(0)),
        ];
        let b = [
            (scores(2, &[0.4, 0.6]), json!(1)),
            (scores(2, &[0.9, 0.1]), json!(1)),
        ];
        let mut merged = joined(&a);
        merged.merge(&joined(&b), MAX_SCORED);
        let all: Vec<_> = a.iter().chain(&b).cloned().collect();
        assert_eq!(merged.metrics(), joined(&all).metrics());
    }

    #[test]
    fn scores_beyond_the_cap_are_a_sample_and_say_so() {
        let mut stats = QualityStats::new(Task::Classification);
        for i in 0..(MAX_SCORED + 500) {
            let s = (i % 100) as f32 / 100.0;
            let p = scores(1, &[s]);
            let label = json!(i64::from(s > 0.5));
            stats.add(&p, &Truth::read(&label, &p).unwrap()).unwrap();
        }
        let m = stats.metrics();
        assert_eq!(m.rows, (MAX_SCORED + 500) as u64);
        assert_eq!(m.roc_auc_rows, MAX_SCORED as u64);
        assert!(m.roc_auc_sampled);
        // Perfectly separated rows stay perfectly separated in any sample.
        assert_eq!(m.roc_auc, Some(1.0));
        let mut merged = stats.clone();
        merged.merge(&stats, MAX_SCORED);
        assert_eq!(merged.scored.as_ref().unwrap().labels.len(), MAX_SCORED);
    }

    #[test]
    fn predictions_are_read_from_scores_labels_or_values() {
        let t = |shape: Vec<u64>, data| Tensor { shape, data };
        let probs = t(
            vec![2, 3],
            TensorData::Float32(vec![0.1, 0.2, 0.7, 0.5, 0.4, 0.1]),
        );
        assert_eq!(
            Predicted::from_output(Task::Classification, &probs)
                .unwrap()
                .rows(),
            2
        );
        let labels = t(vec![3], TensorData::Int64(vec![2, 0, 1]));
        assert_eq!(
            Predicted::from_output(Task::Classification, &labels).unwrap(),
            Predicted::Labels(vec![2, 0, 1])
        );
        let values = t(vec![2, 1], TensorData::Float64(vec![1.5, -2.0]));
        assert_eq!(
            Predicted::from_output(Task::Regression, &values).unwrap(),
            Predicted::Values(vec![1.5, -2.0])
        );
    }

    #[test]
    fn prediction_with_a_shape_that_lies_about_its_data_is_refused() {
        let t = Tensor {
            shape: vec![4, 2],
            data: TensorData::Float32(vec![0.0; 6]),
        };
        assert!(matches!(
            Predicted::from_output(Task::Classification, &t),
            Err(QualityError::Shape { .. })
        ));
        let three = Tensor {
            shape: vec![1, 2, 3],
            data: TensorData::Float32(vec![0.0; 6]),
        };
        assert!(Predicted::from_output(Task::Classification, &three).is_err());
        let strings = Tensor {
            shape: vec![1],
            data: TensorData::Bytes(vec![b"cat".to_vec()]),
        };
        assert!(Predicted::from_output(Task::Classification, &strings).is_err());
    }

    #[test]
    fn feedback_with_the_wrong_row_count_class_or_type_is_refused() {
        let p = scores(3, &[0.2, 0.3, 0.5, 0.6, 0.2, 0.2]);
        assert_eq!(
            Truth::read(&json!(1), &p),
            Err(QualityError::Rows { given: 1, rows: 2 })
        );
        assert_eq!(
            Truth::read(&json!([0, 3]), &p),
            Err(QualityError::Class(3, 2))
        );
        assert!(matches!(
            Truth::read(&json!([0, "cat"]), &p),
            Err(QualityError::Label(_))
        ));
        assert!(matches!(
            Truth::read(&json!([0, 1.5]), &p),
            Err(QualityError::Label(_))
        ));
        let v = Predicted::Values(vec![1.0]);
        assert!(Truth::read(&json!("1.0"), &v).is_err());
        assert_eq!(Truth::read(&json!(2), &v), Ok(Truth::Values(vec![2.0])));
    }

    #[test]
    fn feedback_body_that_is_not_json_or_not_feedback_is_refused() {
        assert!(matches!(parse_feedback(b"{"), Err(QualityError::Json(_))));
        assert_eq!(parse_feedback(b"[1, 2]"), Err(QualityError::Body));
        assert_eq!(
            parse_feedback(br#"{"feedback": {"id": "a"}}"#),
            Err(QualityError::Body)
        );
        assert!(matches!(
            parse_feedback(br#"{"id": "a"}"#),
            Err(QualityError::Item { index: 0, .. })
        ));
        assert!(matches!(
            parse_feedback(br#"{"id": 7, "label": 1}"#),
            Err(QualityError::Item { .. })
        ));
        assert!(matches!(
            parse_feedback(br#"{"id": "a", "label": 1, "labels": 2}"#),
            Err(QualityError::Item { .. })
        ));
        let one = parse_feedback(br#"{"id": "r-1", "label": [1, 0]}"#).unwrap();
        assert_eq!(one[0].id, "r-1");
        let many =
            parse_feedback(br#"{"feedback": [{"id": "a", "label": 1}, {"id": "b", "label": 0}]}"#)
                .unwrap();
        assert_eq!(many.len(), 2);
    }

    #[test]
    fn feedback_with_an_oversized_id_or_too_many_items_is_refused() {
        let id = "x".repeat(MAX_ID_BYTES + 1);
        let body = format!(r#"{{"id": "{id}", "label": 1}}"#);
        assert!(matches!(
            parse_feedback(body.as_bytes()),
            Err(QualityError::Item { .. })
        ));
        let items: Vec<_> = (0..=MAX_FEEDBACK_ITEMS)
            .map(|i| json!({"id": i.to_string(), "label": 0}))
            .collect();
        let body = serde_json::to_vec(&json!({ "feedback": items })).unwrap();
        assert_eq!(
            parse_feedback(&body),
            Err(QualityError::TooMany(MAX_FEEDBACK_ITEMS + 1))
        );
    }

    #[test]
    fn feedback_nested_past_the_json_depth_limit_is_refused_not_a_stack_overflow() {
        let depth = 100_000;
        let body = format!(
            r#"{{"id": "a", "label": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert!(matches!(
            parse_feedback(body.as_bytes()),
            Err(QualityError::Json(_))
        ));
    }

    #[test]
    fn the_fuzz_seeds_for_feedback_bodies_are_feedback() {
        let batch = parse_feedback(include_bytes!(
            "../../../fuzz/seeds/feedback_body/batch.json"
        ))
        .unwrap();
        assert_eq!(batch.len(), 4);
        let single = parse_feedback(include_bytes!(
            "../../../fuzz/seeds/feedback_body/single.json"
        ))
        .unwrap();
        assert_eq!(single[0].id, "req-7");
    }

    #[test]
    fn labels_from_unbounded_classes_are_refused_past_the_cap() {
        let mut stats = QualityStats::new(Task::Classification);
        let mut refused = 0;
        for i in 0..(i64::try_from(MAX_CLASSES).unwrap() + 10) {
            let p = Predicted::Labels(vec![0]);
            if stats.add(&p, &Truth::Labels(vec![i])).is_err() {
                refused += 1;
            }
        }
        // Labels 0 to 1023 fit (the prediction 0 among them); the ten after do not.
        assert_eq!(refused, 10);
        assert_eq!(stats.requests, MAX_CLASSES as u64);
    }

    #[test]
    fn gates_read_errors_as_at_most_and_scores_as_at_least() {
        assert!(QualityMetric::parse("auc").unwrap().meets(0.9, 0.8));
        assert!(!QualityMetric::Rmse.meets(0.9, 0.8));
        assert!(QualityMetric::Mae.meets(0.1, 0.8));
        assert_eq!(QualityMetric::parse("roc-auc"), Some(QualityMetric::RocAuc));
        assert_eq!(QualityMetric::parse("loss"), None);
    }
}

mod capture {
    use base64::Engine as _;

    use crate::bundle::manifest::Tensor;
    use crate::monitoring::capture::*;
    use crate::tensor::TensorData;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn tensor(datatype: &str, shape: Vec<u64>, data: &[u8]) -> CapturedTensor {
        CapturedTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape,
            data: b64(data),
        }
    }

    #[test]
    fn every_element_type_comes_back_with_its_exact_bits() {
        for t in [
            Tensor {
                shape: vec![1, 3],
                data: TensorData::Float32(vec![f32::NAN, -0.0, 1.5e-40]),
            },
            Tensor {
                shape: vec![2],
                data: TensorData::Int64(vec![i64::MIN, i64::MAX]),
            },
            Tensor {
                shape: vec![2],
                data: TensorData::Bytes(vec![b"".to_vec(), vec![0, 255, 10]]),
            },
            Tensor {
                shape: vec![],
                data: TensorData::Bool(vec![true]),
            },
        ] {
            let back = CapturedTensor::new("x", &t).tensor().unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            t.data.write_le_bytes(&mut a);
            back.data.write_le_bytes(&mut b);
            assert_eq!((a, &back.shape), (b, &t.shape));
        }
    }

    #[test]
    fn a_shape_whose_product_overflows_is_refused_not_a_panic() {
        let t = tensor("FP32", vec![u64::MAX, u64::MAX, 2], &[0; 4]);
        assert!(matches!(t.tensor(), Err(CaptureError::Shape { .. })));
        let huge = tensor("UINT8", vec![1 << 40], &[0; 4]);
        assert!(matches!(huge.tensor(), Err(CaptureError::Shape { .. })));
    }

    #[test]
    fn data_shorter_or_longer_than_its_shape_is_refused() {
        let short = tensor("FP32", vec![2, 2], &[0; 12]);
        let err = short.tensor().unwrap_err().to_string();
        assert!(err.contains("holds 4 elements, its data 3"), "{err}");
        let ragged = tensor("FP32", vec![1], &[0; 5]);
        assert!(matches!(ragged.tensor(), Err(CaptureError::Data { .. })));
    }

    #[test]
    fn truncated_bytes_elements_are_refused() {
        let mut data = 10u32.to_le_bytes().to_vec();
        data.extend(b"abc");
        let t = tensor("BYTES", vec![1], &data);
        assert!(matches!(t.tensor(), Err(CaptureError::Data { .. })));
    }

    #[test]
    fn an_unknown_datatype_or_data_that_is_not_base64_is_refused() {
        let t = tensor("FP128", vec![1], &[0; 16]);
        assert!(matches!(t.tensor(), Err(CaptureError::Datatype { .. })));
        let mut bad = tensor("FP32", vec![1], &[0; 4]);
        bad.data = "not base64!".into();
        assert!(matches!(bad.tensor(), Err(CaptureError::Base64 { .. })));
    }

    #[test]
    fn a_pair_with_unknown_fields_or_a_lying_tensor_is_refused_whole() {
        let good = include_str!("../../../fuzz/seeds/captured_pair/pair.json");
        let pair = CapturedPair::parse(good).unwrap();
        assert_eq!(pair.inputs.len(), 2);
        assert_eq!(pair.redacted, ["card"]);
        let extra = good.replacen('{', "{\"admin\":true,", 1);
        assert!(matches!(
            CapturedPair::parse(&extra),
            Err(CaptureError::Json(_))
        ));
        let lying = good.replacen("[2, 2]", "[3, 2]", 1);
        assert!(matches!(
            CapturedPair::parse(&lying),
            Err(CaptureError::Shape { .. })
        ));
        let scalar = include_str!("../../../fuzz/seeds/captured_pair/scalar.json");
        assert!(CapturedPair::parse(scalar).unwrap().id.is_none());
    }
}

mod canary {
    use super::*;

    fn scores(values: Vec<f32>) -> Tensor {
        Tensor {
            shape: vec![values.len() as u64],
            data: TensorData::Float32(values),
        }
    }

    fn labels(values: Vec<i64>) -> Tensor {
        Tensor {
            shape: vec![values.len() as u64],
            data: TensorData::Int64(values),
        }
    }

    /// A bundle's reference: its outputs on its own reference data.
    fn reference_of(mean: f64, seed: u64) -> Profile {
        let mut b = ReferenceBuilder::default();
        b.add(
            Side::Output,
            "score",
            &scores(normalish(4000, mean, seed)),
            None,
        )
        .unwrap();
        b.add(
            Side::Output,
            "label",
            &labels((0..4000).map(|i| i % 3).collect()),
            None,
        )
        .unwrap();
        b.finish()
    }

    fn window(reference: &Profile, score: Vec<f32>, label: Vec<i64>) -> Profile {
        let mut w = WindowProfiler::new(reference, |_, name| {
            Some(if name == "score" {
                TensorData::Float32(Vec::new())
            } else {
                TensorData::Int64(Vec::new())
            })
        });
        w.count_rows(score.len() as u64);
        let (score, label) = (scores(score), labels(label));
        w.observe(Side::Output, [("score", &score), ("label", &label)]);
        w.take()
    }

    #[test]
    fn a_canary_s_predictions_compare_with_the_baseline_s_whatever_their_references() {
        let (old, new) = (reference_of(0.0, 1), reference_of(0.7, 2));
        let uniform = |n: i64| (0..n).map(|i| i % 3).collect::<Vec<_>>();
        let baseline = [
            window(&old, normalish(1500, 0.0, 3), uniform(1500)),
            window(&old, normalish(1500, 0.0, 4), uniform(1500)),
        ];
        // The same predictions through a bundle with other bins: no shift.
        let same = [window(&new, normalish(2000, 0.0, 5), uniform(2000))];
        let shifts = drift::compare_outputs(same.iter(), baseline.iter(), 100);
        assert_eq!(shifts.len(), 2, "{shifts:?}");
        assert!(shifts.iter().all(|s| s.score < 0.1), "{shifts:?}");
        let score = shifts.iter().find(|s| s.feature == "score").unwrap();
        assert_eq!(
            (score.statistic.as_str(), score.baseline_values),
            ("ks", 3000)
        );
        assert_eq!(score.canary_values, 2000);

        // Scores a standard deviation and a half higher, and always class 0.
        let moved = [window(&new, normalish(2000, 1.5, 6), vec![0; 2000])];
        let shifts = drift::compare_outputs(moved.iter(), baseline.iter(), 100);
        let score = shifts.iter().find(|s| s.feature == "score").unwrap();
        assert!(score.score > 0.45, "{shifts:?}");
        let label = shifts.iter().find(|s| s.feature == "label").unwrap();
        assert_eq!(label.statistic, "js");
        assert!(label.score > 0.5, "{shifts:?}");
        assert!(shifts[0].score >= shifts[1].score, "worst first");

        // Too few canary values: nothing judged.
        let few = [window(&new, normalish(50, 1.5, 7), vec![0; 50])];
        assert!(drift::compare_outputs(few.iter(), baseline.iter(), 100).is_empty());
    }
}
