//! Telemetry export tests' common steps: an export's figures on the controller's
//! `/metrics`, and a receiver outage while a node streams.

use std::time::Duration;

use gantry_shared::protocol::telemetry::RecordClass;

use crate::{Agent, Controller, wait_for};

/// A counter or gauge of a `/metrics` page (0 where absent).
pub fn figure(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Metrics records the controller stored for `node`.
pub fn stored(controller: &Controller, node: &str) -> usize {
    controller
        .records(node)
        .iter()
        .filter(|r| r.class == RecordClass::Metrics)
        .count()
}

/// The receiver goes away while `agent` (streaming as `node`) keeps sending: waits until
/// the export `prefix` (`remote_write`, `otlp`) counts failed requests and the node
/// stored 10 records more, brings the receiver back, stops the agent, and waits until
/// the export delivered every stored record and `received()` holds them all. Returns
/// how many metrics records the controller stored.
pub fn through_outage(
    controller: &Controller,
    agent: &mut Agent,
    node: &str,
    prefix: &str,
    stop: impl FnOnce(),
    start: impl FnOnce(),
    received: impl Fn() -> usize,
) -> usize {
    stop();
    let before = stored(controller, node);
    let failed = format!(r#"gantry_controller_{prefix}_requests_total{{outcome="failed"}}"#);
    wait_for(
        "the outage to show on the controller's /metrics",
        Duration::from_secs(60),
        || {
            let page = controller.metrics_page();
            (figure(&page, &failed) >= 2.0 && stored(controller, node) >= before + 10).then_some(())
        },
    );
    start();
    std::thread::sleep(Duration::from_secs(2));
    agent.kill();
    let total = stored(controller, node);
    let records = format!("gantry_controller_{prefix}_records_total");
    wait_for(
        "every stored sample at the receiver",
        Duration::from_secs(90),
        || {
            let page = controller.metrics_page();
            #[allow(clippy::cast_precision_loss)] // a count
            let all = total as f64;
            (figure(&page, &records) >= all && received() >= total).then_some(())
        },
    );
    total
}
