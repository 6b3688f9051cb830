//! Prometheus remote-write from the controller, against a real receiver: Debian's
//! Prometheus with `--web.enable-remote-write-receiver`, restarted while an agent keeps
//! streaming. Queried back through its API, every sample the controller stored arrived
//! exactly once, with the federation's names and labels and the configured extra ones;
//! the outage shows on the controller's `/metrics` and nothing is lost across it.

use std::time::Duration;

use gantry_tests::export::{figure, through_outage};
use gantry_tests::prometheus::Prometheus;
use gantry_tests::{Agent, Controller, wait_for};

/// Samples of GPU 0's temperature of `node` the receiver holds over the last hour.
fn received(prometheus: &Prometheus, node: &str) -> usize {
    let query = format!(
        r#"count_over_time(DCGM_FI_DEV_GPU_TEMP{{node="{node}",gpu="0",site="hall-b"}}[1h])"#
    );
    prometheus
        .query(&query)
        .ok()
        .and_then(|r| r.first().map(|(_, v)| *v))
        .map_or(0, |v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a count
            let n = v as usize;
            n
        })
}

#[test]
fn every_stored_sample_reaches_a_real_prometheus_exactly_once_across_a_receiver_restart() {
    let mut prometheus = Prometheus::receiver();
    let mut controller = Controller::start();
    let url = format!("http://{}/api/v1/write", prometheus.addr);
    controller.restart_with(&[
        "--remote-write",
        &url,
        "--remote-write-labels",
        "site=hall-b",
    ]);
    let mut agent = Agent::enroll(&controller, "rw-node", "");
    agent.run("200ms");

    // Flowing: the receiver holds the node's series under the federation's names.
    wait_for("samples at the receiver", Duration::from_secs(60), || {
        (received(&prometheus, "rw-node") >= 10).then_some(())
    });
    let labels = prometheus
        .query(r#"DCGM_FI_DEV_GPU_TEMP{node="rw-node",gpu="0"}"#)
        .unwrap();
    let (metric, _) = &labels[0];
    assert_eq!(metric["site"], "hall-b");
    assert_eq!(metric["modelName"], "NVIDIA H100 80GB HBM3");
    assert!(
        metric["UUID"]
            .as_str()
            .is_some_and(|u| u.starts_with("GPU-"))
    );

    // The receiver goes away while the node keeps sending, and comes back: what was
    // stored meanwhile is delivered, and nothing twice.
    let total = {
        let prometheus = std::cell::RefCell::new(&mut prometheus);
        through_outage(
            &controller,
            &mut agent,
            "rw-node",
            "remote_write",
            || prometheus.borrow_mut().stop(),
            || prometheus.borrow_mut().start_again(),
            || received(&prometheus.borrow(), "rw-node"),
        )
    };
    assert_eq!(
        received(&prometheus, "rw-node"),
        total,
        "every stored sample exactly once"
    );
    let page = controller.metrics_page();
    println!(
        "{total} records stored, each at the receiver once; {} requests failed during the outage, {} samples delivered",
        figure(
            &page,
            r#"gantry_controller_remote_write_requests_total{outcome="failed"}"#
        ),
        figure(&page, "gantry_controller_remote_write_samples_total")
    );
    assert!(figure(&page, "gantry_controller_remote_write_samples_total") > 0.0);
    assert!(
        figure(
            &page,
            "gantry_controller_remote_write_refused_records_total"
        ) < 0.5,
        "nothing refused"
    );
    assert!(
        figure(
            &page,
            "gantry_controller_remote_write_last_success_timestamp_seconds"
        ) > 0.0
    );
}

#[test]
fn a_remote_write_url_it_cannot_use_is_refused_at_start() {
    let controller = Controller::start();
    let stderr = controller.serve_refused(&["--remote-write", "tsdb.example:9090/api/v1/write"]);
    assert!(
        stderr.contains("--remote-write") && stderr.contains("http:// or https://"),
        "{stderr}"
    );
    let stderr = controller.serve_refused(&[
        "--remote-write",
        "http://127.0.0.1:9090/api/v1/write",
        "--remote-write-labels",
        "node=x",
    ]);
    assert!(stderr.contains("node=x"), "{stderr}");
}

#[test]
fn telemetry_retention_deletes_before_delivery_is_counted_and_logged_as_lost_to_the_export() {
    let mut controller = Controller::start();
    // Nothing listens there: remote-write fails until retention takes the records.
    let dead = gantry_tests::free_tcp_port();
    controller.restart_with(&[
        "--remote-write",
        &format!("http://{dead}/api/v1/write"),
        "--retention",
        "3s",
    ]);
    let mut agent = Agent::enroll(&controller, "expiring-node", "");
    agent.run("200ms");
    let expired = wait_for(
        "records expired before delivery",
        Duration::from_secs(60),
        || {
            let n = figure(
                &controller.metrics_page(),
                "gantry_controller_remote_write_expired_records_total",
            );
            (n >= 1.0).then_some(n)
        },
    );
    agent.kill();
    assert!(
        figure(
            &controller.metrics_page(),
            "gantry_controller_remote_write_samples_total"
        ) < 0.5,
        "nothing was delivered"
    );
    assert!(
        controller
            .log
            .contains("retention deleted telemetry this export had not delivered"),
        "the loss is logged:\n{}",
        controller.log.lines().join("\n")
    );
    println!("{expired} records expired before remote-write could deliver them");
}
