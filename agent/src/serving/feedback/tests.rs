use std::time::Duration;

use gantry_shared::monitoring::quality::{FeedbackItem, Predicted};
use serde_json::json;

use super::*;

fn store(dir: &Path, settings: FeedbackSettings) -> Arc<Feedback> {
    Feedback::open(
        &dir.join("predictions.redb"),
        settings,
        Duration::from_secs(60),
    )
    .unwrap()
}

fn kept(at_ms: u64, p: f32) -> Kept {
    Kept {
        version: "1.0.0".into(),
        bundle: "sha256:ab".into(),
        at_ms,
        predicted: Predicted::Scores {
            classes: 1,
            values: vec![p],
        },
        joined: false,
        captured: false,
    }
}

fn item(id: &str, label: serde_json::Value) -> FeedbackItem {
    FeedbackItem {
        id: id.into(),
        label,
    }
}

#[tokio::test]
async fn feedback_joins_kept_predictions_once_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let fb = store(dir.path(), FeedbackSettings::default());
    let now = gantry_net::clock::now_ms();
    fb.keep("m", "a", kept(now, 0.9));
    fb.keep("m", "b", kept(now, 0.2));
    let outcomes = fb
        .feedback(
            "m",
            vec![
                item("a", json!(1)),
                item("a", json!(1)),
                item("zzz", json!(0)),
                item("b", json!([0, 1])),
                item("b", json!(0)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Joined {
                version: "1.0.0".into()
            },
            Outcome::Duplicate,
            Outcome::Unknown,
            Outcome::Invalid {
                reason: "the label gives 2 rows; the request had 1".into()
            },
            Outcome::Joined {
                version: "1.0.0".into()
            },
        ]
    );
    let c = &fb.counters()["m"];
    assert_eq!(c.kept, 2);
    assert_eq!(
        (
            c.feedback.joined,
            c.feedback.duplicate,
            c.feedback.unknown,
            c.feedback.invalid
        ),
        (2, 1, 1, 1)
    );
    // Nothing closes before the window's end; everything after.
    assert!(fb.close(now).unwrap().windows.is_empty());
    let closed = fb.close(now + 61_000).unwrap();
    assert_eq!(closed.windows.len(), 1);
    let w = &closed.windows[0];
    assert_eq!(w.end_ms % 60_000, 0);
    assert_eq!(w.feedback.total(), 5);
    assert_eq!(w.versions[0].stats.rows, 2);
    assert_eq!(w.versions[0].stats.metrics().accuracy, Some(1.0));
    // Closing again before consuming gives the same window; consuming empties the log.
    assert_eq!(fb.close(now + 61_000).unwrap().windows, closed.windows);
    fb.consume(&closed).unwrap();
    assert_eq!(log_len(&fb), 0);
    let summary = fb.summary("m", "sha256:ab").unwrap();
    assert_eq!(summary.metrics.rows, 2);
    assert_eq!(summary.cumulative.rows, 2);
}

#[tokio::test]
async fn predictions_and_unclosed_feedback_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = gantry_net::clock::now_ms();
    {
        let fb = store(dir.path(), FeedbackSettings::default());
        fb.keep("m", "a", kept(now, 0.9));
        fb.keep("m", "b", kept(now, 0.1));
        fb.feedback("m", vec![item("a", json!(1))]).await.unwrap();
        fb.flush().await;
    }
    // The writer thread of the first store ends with its sender; redb takes the file
    // once it is closed.
    let fb = loop {
        match Feedback::open(
            &dir.path().join("predictions.redb"),
            FeedbackSettings::default(),
            Duration::from_secs(60),
        ) {
            Ok(fb) => break fb,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert_eq!(fb.held(), 2);
    let outcomes = fb
        .feedback("m", vec![item("a", json!(1)), item("b", json!(0))])
        .await
        .unwrap();
    assert_eq!(outcomes[0], Outcome::Duplicate);
    assert!(matches!(outcomes[1], Outcome::Joined { .. }));
    let closed = fb.close(now + 61_000).unwrap();
    assert_eq!(closed.windows[0].feedback.joined, 2);
}

#[tokio::test]
async fn feedback_for_an_expired_or_evicted_prediction_counts_as_late() {
    let dir = tempfile::tempdir().unwrap();
    let fb = store(
        dir.path(),
        FeedbackSettings {
            ttl: Duration::from_secs(3600),
            max_predictions: 2,
        },
    );
    let now = gantry_net::clock::now_ms();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        fb.keep("m", id, kept(now + i as u64, 0.5));
    }
    fb.flush().await;
    assert_eq!(fb.held(), 2);
    assert_eq!(fb.counters()["m"].evicted, 1);
    let outcomes = fb
        .feedback("m", vec![item("a", json!(1)), item("c", json!(1))])
        .await
        .unwrap();
    assert_eq!(outcomes[0], Outcome::Late);
    assert!(matches!(outcomes[1], Outcome::Joined { .. }));
}

#[tokio::test]
async fn feedback_committed_after_its_window_was_buffered_goes_into_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let fb = store(dir.path(), FeedbackSettings::default());
    let now = gantry_net::clock::now_ms();
    fb.keep("m", "a", kept(now, 0.9));
    fb.keep("m", "b", kept(now, 0.9));
    fb.feedback("m", vec![item("a", json!(1))]).await.unwrap();
    let first = fb.close(now + 61_000).unwrap();
    fb.consume(&first).unwrap();
    let end = first.windows[0].end_ms;
    // Logged with a time inside the buffered window (a commit that came late).
    fb.feedback("m", vec![item("b", json!(1))]).await.unwrap();
    assert!(fb.close(end).unwrap().windows.is_empty());
    let second = fb.close(end + 60_000).unwrap();
    assert_eq!(second.windows.len(), 1);
    assert_eq!(second.windows[0].end_ms, end + 60_000);
    assert_eq!(second.windows[0].feedback.joined, 1);
}

#[tokio::test]
async fn the_label_of_a_captured_request_goes_with_its_window_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let fb = store(dir.path(), FeedbackSettings::default());
    let now = gantry_net::clock::now_ms();
    fb.keep(
        "m",
        "captured",
        Kept {
            captured: true,
            ..kept(now, 0.9)
        },
    );
    fb.keep("m", "not captured", kept(now, 0.1));
    fb.feedback(
        "m",
        vec![item("captured", json!(1)), item("not captured", json!(0))],
    )
    .await
    .unwrap();
    let closed = fb.close(now + 61_000).unwrap();
    let labels = &closed.windows[0].labels;
    assert_eq!(labels.len(), 1);
    assert_eq!(labels[0].id, "captured");
    assert_eq!(labels[0].bundle, "sha256:ab");
    assert_eq!(
        labels[0].truth,
        gantry_shared::monitoring::quality::Truth::Labels(vec![1])
    );
}
