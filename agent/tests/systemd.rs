//! systemd integration against a real notification socket: readiness once serving,
//! watchdog pings while the sampler works, none once it hangs, and the stopping notice.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::AgentBuilder;

/// Messages received on the socket within `window`.
fn receive(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    messages
}

#[test]
fn ready_watchdog_and_stopping_reach_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let builder = AgentBuilder::new()
        .simulate(2, "h100")
        .env("NOTIFY_SOCKET", path.to_str().unwrap())
        .env("WATCHDOG_USEC", "400000");
    let control = builder.control();
    let agent = builder.start();

    let first = receive(&socket, Duration::from_secs(2));
    assert!(
        first[0].starts_with("READY=1\n"),
        "readiness first: {first:?}"
    );
    assert!(first[0].contains(&format!("MAINPID={}", agent.pid())));
    let pings = first.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 3, "pings every 200 ms while sampling: {first:?}");

    // The driver hangs: the sampler is stuck in an NVML call, so the pings stop.
    control.update_device(0, |d| d.hang = true).unwrap();
    let during = receive(&socket, Duration::from_secs(14));
    let last_ping = during.iter().rposition(|m| m == "WATCHDOG=1");
    let tail = &during[last_ping.map_or(0, |i| i + 1)..];
    assert!(
        tail.iter().any(|m| m.contains("STATUS=sampler stalled")),
        "the stall is reported: {during:?}"
    );
    assert!(
        during.iter().filter(|m| *m == "WATCHDOG=1").count() < 60,
        "pings stop while the sampler hangs: {during:?}"
    );
    assert!(
        agent
            .logs()
            .iter()
            .any(|l| l.contains("withholding watchdog pings"))
    );

    control.update_device(0, |d| d.hang = false).unwrap();
    let after = receive(&socket, Duration::from_secs(2));
    assert!(
        after.iter().any(|m| m == "WATCHDOG=1"),
        "pings resume once samples flow: {after:?}"
    );

    let status = agent.terminate();
    assert!(status.success());
    let last = receive(&socket, Duration::from_millis(500));
    assert!(
        last.iter().any(|m| m.starts_with("STOPPING=1")),
        "stopping notice: {last:?}"
    );
}
