//! A full disk under the agent's state directory, on a real file system (a small tmpfs
//! mounted by the test, which needs root: CI runs as root; elsewhere it says it skips):
//! the buffer stops taking samples and counts them as dropped, the health names the
//! problem, and once space is freed the buffer reopens itself and everything buffered
//! before reaches the controller, once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gantry_tests::{Agent, Controller, assert_contiguous, wait_for};

const FAST: &str = "[uplink]\nheartbeat = \"200ms\"\nmax_backoff = \"500ms\"\n";

/// Mounts a tmpfs of `size` at `dir`; `false` (and why, on stderr) when this host cannot.
fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    let out = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .output();
    match out {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs for the full-disk test (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run mount for the full-disk test: {e}");
            false
        }
    }
}

struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes a file until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

fn dropped_metrics(agent: &Agent) -> Option<u64> {
    agent.status()?["buffer"]["dropped_metrics"].as_u64()
}

fn health_reasons(agent: &Agent) -> String {
    agent
        .status()
        .map(|s| s["health"]["reasons"].to_string())
        .unwrap_or_default()
}

#[test]
fn a_full_disk_drops_and_counts_samples_and_the_buffer_recovers_when_space_returns() {
    let mut controller = Controller::start();
    let mut agent = Agent::enroll(&controller, "full-disk", FAST);
    // The enrolled state directory, moved onto a small file system of its own.
    let state = agent.state_dir();
    let kept = agent.dir.path().join("state.kept");
    std::fs::rename(&state, &kept).unwrap();
    std::fs::create_dir(&state).unwrap();
    if !mount_tmpfs(&state, "6m") {
        return;
    }
    let _mounted = Mounted(state.clone());
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", kept.display()))
        .arg(&state)
        .status()
        .unwrap();
    assert!(copied.success());

    agent.run("100ms");
    wait_for("records stored", Duration::from_secs(30), || {
        (controller.node(&agent.name).summary.last_seq >= 5).then_some(())
    });

    // The controller goes away and the disk fills up: samples keep being taken, cannot
    // be kept, and are counted.
    controller.kill();
    fill(&state.join("filler"));
    wait_for(
        "the health to name the buffer",
        Duration::from_secs(30),
        || {
            let reasons = health_reasons(&agent);
            reasons
                .contains("the telemetry buffer cannot be written")
                .then_some(reasons)
        },
    );
    let reasons = health_reasons(&agent);
    assert!(
        reasons.to_lowercase().contains("no space left on device")
            || reasons.contains("is its file system full"),
        "the reason names the disk: {reasons}"
    );
    let first = dropped_metrics(&agent).unwrap();
    wait_for("drops to be counted", Duration::from_secs(30), || {
        (dropped_metrics(&agent)? > first + 5).then_some(())
    });
    assert!(
        agent.metrics_page().lines().any(|l| l
            .starts_with("gantry_agent_buffer_dropped_total{class=\"metrics\"}")
            && !l.ends_with(" 0")),
        "drops on /metrics"
    );

    // The controller comes back while the disk is still full, then space is freed: the
    // buffer reopens itself and what it held, and what it takes from now on, arrives.
    controller.resume();
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(state.join("filler")).unwrap();
    wait_for("the buffer writable again", Duration::from_secs(30), || {
        (!health_reasons(&agent).contains("cannot be written")).then_some(())
    });
    assert!(
        agent
            .log
            .contains("telemetry buffer reopened after a failed write")
    );
    let (_, last_seq, _) = agent.buffer().unwrap();
    wait_for(
        "everything buffered to arrive",
        Duration::from_secs(60),
        || {
            let (waiting, last, _) = agent.buffer()?;
            let stored = controller.node(&agent.name).summary.last_seq;
            (waiting == 0 && last > last_seq + 3 && stored == last).then_some(())
        },
    );
    let (_, last, _) = agent.buffer().unwrap();
    assert_contiguous(&controller.records(&agent.name), last);
    // The controller sees the drops too, from the heartbeats.
    let dropped = dropped_metrics(&agent).unwrap();
    assert!(dropped > first, "{dropped}");
    wait_for(
        "fleet show to report the drops",
        Duration::from_secs(10),
        || {
            let shown = controller.cli_ok(&["fleet", "show", "full-disk", "--json"]);
            let detail: serde_json::Value = serde_json::from_str(&shown).ok()?;
            (detail["dropped_metrics"].as_u64()? >= dropped).then_some(())
        },
    );
}
