//! A feedback call's body (`POST /v2/models/NAME/feedback`) comes from any client: any
//! bytes. Reading it must never panic, must bound what it accepts, and every label it
//! lets through must fold into the quality figures without a panic or a figure outside
//! its range, whatever the prediction it meets.
#![no_main]

use gantry_shared::monitoring::quality::{
    MAX_FEEDBACK_ITEMS, MAX_ID_BYTES, Predicted, QualityStats, Task, Truth, parse_feedback,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(items) = parse_feedback(data) else {
        return;
    };
    assert!(!items.is_empty() && items.len() <= MAX_FEEDBACK_ITEMS);
    let predictions = [
        Predicted::Scores {
            classes: 3,
            values: vec![0.1, 0.7, 0.2, 0.5, 0.3, 0.2],
        },
        Predicted::Scores {
            classes: 1,
            values: vec![0.9, f32::NAN],
        },
        Predicted::Labels(vec![1, 0]),
        Predicted::Values(vec![1.5, -2.0]),
    ];
    let mut stats = [
        QualityStats::new(Task::Classification),
        QualityStats::new(Task::Classification),
        QualityStats::new(Task::Classification),
        QualityStats::new(Task::Regression),
    ];
    for item in &items {
        assert!(!item.id.is_empty() && item.id.len() <= MAX_ID_BYTES);
        for (predicted, stats) in predictions.iter().zip(&mut stats) {
            if let Ok(truth) = Truth::read(&item.label, predicted) {
                let _ = stats.add(predicted, &truth);
            }
        }
    }
    for stats in &stats {
        let metrics = stats.metrics();
        for (metric, value) in metrics.present() {
            assert!(!value.is_nan(), "{metric:?} is NaN");
            if metric.higher_is_better() {
                assert!((0.0..=1.0).contains(&value), "{metric:?} {value}");
            } else {
                assert!(value >= 0.0, "{metric:?} {value}");
            }
        }
    }
});
