//! What the controller's and the agent's units rely on: `gantry serve` tells a real
//! notification socket when it is ready, pings the watchdog while it serves and says when
//! it stops; and the commands an operator runs by hand refuse to leave root-owned files
//! in a service user's directory.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gantry_tests::{binary, free_udp_port};

/// Datagrams received on `socket` within `window`.
fn receive(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    messages
}

#[test]
fn the_controller_reports_ready_pings_the_watchdog_and_says_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("ctl");
    let addr = free_udp_port();
    let init = Command::new(binary("gantry"))
        .args(["init", "--dir"])
        .arg(&home)
        .args(["--listen", &addr.to_string()])
        .output()
        .unwrap();
    assert!(init.status.success());
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();

    let mut serve = Command::new(binary("gantry"))
        .args(["serve", "--dir"])
        .arg(&home)
        .args(["--listen", &addr.to_string(), "--metrics-listen", ""])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let messages = receive(&socket, Duration::from_secs(3));
    assert!(
        messages.first().is_some_and(|m| m.starts_with("READY=1\n")
            && m.contains(&format!("listening on {addr}"))
            && m.contains(&format!("MAINPID={}", serve.id()))),
        "readiness first, once listening: {messages:?}"
    );
    let pings = messages.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        pings >= 5,
        "a ping every 200 ms (half of WATCHDOG_USEC): {messages:?}"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "stops within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean stop exits 0: {status}");
    let last = receive(&socket, Duration::from_millis(300));
    assert!(
        last.iter().any(|m| m.starts_with("STOPPING=1")),
        "stopping notice: {last:?}"
    );
}

#[test]
fn root_writing_into_a_service_users_directory_is_refused_naming_the_user() {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED root_writing_into_a_service_users_directory_is_refused_naming_the_user: \
             runs only as root (it checks what root may not do)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let owned = dir.path().join("state");
    std::fs::create_dir(&owned).unwrap();
    // 65534 is `nobody` on Debian.
    rustix::fs::chown(
        &owned,
        Some(rustix::fs::Uid::from_raw(65534)),
        Some(rustix::fs::Gid::from_raw(65534)),
    )
    .unwrap();

    let enroll = Command::new(binary("gantry-agent"))
        .args(["enroll", "--state-dir"])
        .arg(&owned)
        .args([
            "--controller",
            "127.0.0.1:9",
            "--token",
            "gantry-join-1.x.y",
        ])
        .output()
        .unwrap();
    assert_eq!(enroll.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&enroll.stderr);
    assert!(
        stderr.contains(&format!(
            "{} belongs to user nobody: files written there as root could not be read by the service; run it as that user: sudo -u nobody gantry-agent enroll",
            owned.display()
        )),
        "{stderr}"
    );

    let init = Command::new(binary("gantry"))
        .args(["init", "--dir"])
        .arg(&owned)
        .output()
        .unwrap();
    assert_eq!(init.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&init.stderr).contains("sudo -u nobody gantry init"));
    assert_eq!(
        std::fs::read_dir(&owned).unwrap().count(),
        0,
        "nothing was written"
    );
}

#[test]
fn the_packaged_defaults_file_documents_exactly_the_settings_gantry_serve_reads() {
    let defaults = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/gantry-controller.default"),
    )
    .unwrap();
    let documented: std::collections::BTreeSet<String> = defaults
        .lines()
        .filter_map(|l| l.trim_start_matches('#').split_once('='))
        .map(|(name, _)| name.to_owned())
        .filter(|name| name.starts_with("GANTRY_"))
        .collect();
    let help = Command::new(gantry_tests::binary("gantry"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let read: std::collections::BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name.to_owned()))
        // The unit gives the directory as --dir; the log filter is read by every command.
        .filter(|name| name != "GANTRY_DIR")
        .chain(std::iter::once("GANTRY_LOG".to_owned()))
        .collect();
    assert_eq!(
        documented, read,
        "packaging/gantry-controller.default and `gantry serve --help` disagree"
    );
}
