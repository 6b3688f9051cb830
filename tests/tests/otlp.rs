//! OTLP/HTTP metrics export from the controller, against a receiver that decodes with
//! the OpenTelemetry project's own protobuf definitions (`tests/python/otlp_receiver.py`,
//! `opentelemetry-proto` from the package index), stopped and started again while an agent keeps
//! streaming: every sample the controller stored arrives once, as one resource per node
//! with the federation's metric names and labels; the outage shows on the controller's
//! `/metrics` and nothing is lost across it.

use std::collections::HashMap;
use std::time::Duration;

use gantry_tests::export::{OtlpReceiver, figure, through_outage};
use gantry_tests::{Agent, Controller, wait_for};

/// GPU 0's temperature points of `node`: how many times each timestamp arrived.
fn temperatures(points: &[serde_json::Value], node: &str) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for p in points {
        if p["name"] == "DCGM_FI_DEV_GPU_TEMP"
            && p["attributes"]["node"] == node
            && p["attributes"]["gpu"] == "0"
        {
            *seen
                .entry(p["time_unix_nano"].as_u64().unwrap())
                .or_insert(0) += 1;
        }
    }
    seen
}

#[test]
fn every_stored_sample_reaches_an_otlp_receiver_once_across_a_receiver_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = OtlpReceiver::start(dir.path(), 0, None);
    let mut controller = Controller::start();
    // No path: OTLP/HTTP's /v1/metrics is taken.
    let url = format!("http://{}", receiver.addr);
    controller.restart_with(&["--otlp", &url, "--otlp-attributes", "site=hall-b"]);
    let mut agent = Agent::enroll(&controller, "otlp-node", "");
    agent.run("200ms");

    wait_for("points at the receiver", Duration::from_secs(60), || {
        (temperatures(&receiver.points(), "otlp-node").len() >= 10).then_some(())
    });
    let points = receiver.points();
    let temp = points
        .iter()
        .find(|p| p["name"] == "DCGM_FI_DEV_GPU_TEMP")
        .unwrap();
    assert_eq!(temp["kind"], "gauge");
    assert_eq!(temp["scope"], "gantry");
    assert_eq!(temp["resource"]["service.name"], "gantry-agent");
    assert_eq!(temp["resource"]["service.instance.id"], "otlp-node");
    assert_eq!(temp["resource"]["host.name"], "otlp-node");
    assert_eq!(temp["resource"]["site"], "hall-b");
    assert_eq!(temp["attributes"]["modelName"], "NVIDIA H100 80GB HBM3");
    assert!(
        temp["attributes"]["UUID"]
            .as_str()
            .is_some_and(|u| u.starts_with("GPU-"))
    );
    assert!(
        temp["description"]
            .as_str()
            .is_some_and(|d| d.contains("temperature")),
        "{temp}"
    );
    let counter = points
        .iter()
        .find(|p| p["kind"] == "sum")
        .expect("the counters arrive as sums");
    assert_eq!(counter["temporality"], 2, "cumulative: {counter}");
    assert_eq!(counter["monotonic"], true, "{counter}");

    // The receiver goes away while the node keeps sending, and comes back: what was
    // stored meanwhile is delivered, and nothing twice.
    let total = {
        let receiver = std::cell::RefCell::new(&mut receiver);
        through_outage(
            &controller,
            &mut agent,
            "otlp-node",
            "otlp",
            || receiver.borrow_mut().stop(),
            || receiver.borrow_mut().start_again(),
            || temperatures(&receiver.borrow().points(), "otlp-node").len(),
        )
    };
    let seen = temperatures(&receiver.points(), "otlp-node");
    assert_eq!(seen.len(), total, "every stored sample arrived");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "arrived more than once: {twice:?}");
    let page = controller.metrics_page();
    println!(
        "{total} records stored, each at the receiver once; {} requests failed during the outage, {} samples delivered",
        figure(
            &page,
            r#"gantry_controller_otlp_requests_total{outcome="failed"}"#
        ),
        figure(&page, "gantry_controller_otlp_samples_total")
    );
    #[allow(clippy::cast_precision_loss)] // a count
    let received = receiver.points().len() as f64;
    assert!(
        (figure(&page, "gantry_controller_otlp_samples_total") - received).abs() < 0.5,
        "the controller counts what the receiver took"
    );
    assert!(figure(&page, "gantry_controller_otlp_refused_records_total") < 0.5);
    assert!(
        figure(
            &page,
            "gantry_controller_otlp_last_success_timestamp_seconds"
        ) > 0.0
    );
}

#[test]
fn a_partial_success_is_counted_and_the_export_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = OtlpReceiver::start(dir.path(), 5, None);
    let mut controller = Controller::start();
    let url = format!("http://{}/v1/metrics", receiver.addr);
    controller.restart_with(&["--otlp", &url]);
    let mut agent = Agent::enroll(&controller, "partial-node", "");
    agent.run("200ms");
    wait_for(
        "requests after the partial success",
        Duration::from_secs(60),
        || {
            let page = controller.metrics_page();
            (figure(
                &page,
                r#"gantry_controller_otlp_requests_total{outcome="ok"}"#,
            ) >= 3.0)
                .then_some(page)
        },
    );
    agent.kill();
    let page = controller.metrics_page();
    assert!(
        (figure(&page, "gantry_controller_otlp_rejected_samples_total") - 5.0).abs() < 0.5,
        "the 5 rejected points are counted: {}",
        page.lines()
            .filter(|l| l.starts_with("gantry_controller_otlp"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(figure(&page, "gantry_controller_otlp_samples_total") > 0.0);
}

#[test]
fn an_otlp_url_it_cannot_use_is_refused_at_start() {
    let controller = Controller::start();
    for (args, names) in [
        (
            vec!["--otlp", "grpc://collector.example:4317"],
            "http:// or https://",
        ),
        (
            vec![
                "--otlp",
                "http://127.0.0.1:4318",
                "--otlp-attributes",
                "site",
            ],
            "\"site\"",
        ),
    ] {
        let stderr = controller.serve_refused(&args);
        assert!(
            stderr.contains("--otlp") && stderr.contains(names),
            "{stderr}"
        );
    }
}
