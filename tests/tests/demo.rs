//! `gantry demo` as a newcomer runs it: the whole job end to end, then nothing left
//! running or lying around; and a failure that names its reason and still cleans up.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use gantry_tests::binary;

fn demo(args: &[&str]) -> Output {
    Command::new(binary("gantry"))
        .arg("demo")
        .args(args)
        .env_remove("GANTRY_IDENTITY")
        .output()
        .unwrap()
}

/// `$DEMO`, as the demo printed it.
fn demo_dir(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("$DEMO"))
        .unwrap_or_else(|| panic!("the demo names its directory: {stdout}"));
    PathBuf::from(line.trim())
}

/// Processes whose command line mentions `dir`.
fn processes_using(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let cmdline = std::fs::read(e.ok()?.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&dir).then_some(cmdline)
        })
        .collect()
}

#[test]
fn the_demo_runs_the_main_job_end_to_end_and_leaves_nothing_behind() {
    let started = Instant::now();
    let out = demo(&[]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");

    // Every step ran, in order, and said what it showed.
    let mut at = 0;
    for step in [
        "[1/11] A signing key and the trust policy",
        "[2/11] The controller",
        "[3/11] Nodes enroll and start",
        "[4/11] The fleet",
        "[5/11] A signed model bundle",
        "[6/11] A canary rollout",
        "[7/11] An inference request",
        "[8/11] A rollout that fails its gate, rolled back automatically",
        "[9/11] The fleet afterwards, and the rollout KPIs",
        "[10/11] The audit log",
        "[11/11] Stopping",
    ] {
        let found = stdout[at..]
            .find(step)
            .unwrap_or_else(|| panic!("step {step:?} missing or out of order:\n{stdout}"));
        at += found + step.len();
    }
    for node in ["gpu-node-1", "gpu-node-2", "gpu-node-3"] {
        assert!(
            stdout.contains(&format!("enrolled    as {node}")),
            "{node} enrolled:\n{stdout}"
        );
        assert!(stdout.contains(&format!("{node} stopped cleanly")));
    }
    // The fleet table lists the three nodes connected.
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains("gpu-node-") && l.contains(" connected "))
            .count(),
        6,
        "fleet ls, twice, three connected nodes each:\n{stdout}"
    );
    assert!(stdout.contains("succeeded: 2 nodes run the bundle"));
    // The golden answer, before and after the automatic rollback.
    assert_eq!(
        stdout
            .matches("tiny-linear 1.0.0 answered y = [-3.5, 14.0]")
            .count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("gate failed at step 1"));
    // The critical XID cordoned the canary; the demo lifts it as an operator would.
    assert!(
        stdout.contains("the controller cordoned gpu-node-")
            && stdout.contains("automatic, gpu.xid:")
            && stdout.contains("uncordoned  gpu-node-"),
        "{stdout}"
    );
    assert!(stdout.contains("has fallen off the bus"));
    assert!(stdout.contains("ROLLED-BACK"));
    assert!(stdout.contains("change failure rate    50.0 %"));
    assert!(stdout.contains("audit chain intact"));
    assert!(stdout.contains("| rollout r2 rollback |"), "{stdout}");
    assert!(stdout.contains("controller stopped"));
    assert!(stdout.contains("Demo finished in"));
    assert!(
        took < Duration::from_secs(120),
        "the demo takes under two minutes on a built tree: {took:?}"
    );

    let dir = demo_dir(&stdout);
    assert!(!dir.exists(), "{} is removed", dir.display());
    assert_eq!(processes_using(&dir), Vec::<String>::new());
}

#[test]
fn a_demo_that_cannot_start_its_agents_says_why_and_cleans_up() {
    let out = demo(&["--agent-binary", "/bin/false"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("error: step 3 of 11 failed; the logs are kept in"),
        "{stderr}"
    );
    assert!(
        stderr.contains("caused by: `gantry-agent enroll --config $DEMO/gpu-node-1/agent.toml"),
        "the failed command is named: {stderr}"
    );
    assert!(stdout.contains("controller stopped"), "{stdout}");
    let dir = demo_dir(&stdout);
    assert!(dir.join("controller.log").is_file(), "the logs are kept");
    assert_eq!(processes_using(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_demo_without_onnx_runtime_or_with_too_few_agents_is_refused_before_starting() {
    let out = demo(&["--onnxruntime", "/nonexistent/libonnxruntime.so"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "ONNX Runtime's library is not at /nonexistent/libonnxruntime.so: run scripts/demo.sh"
        ),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing started");

    let out = demo(&["--agents", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--agents 1: the demo runs 2 to 8 agents")
    );
}

#[test]
fn ctrl_c_stops_everything_the_demo_started_and_removes_its_directory() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    // A process group of its own, as a terminal gives a command: Ctrl-C reaches the demo
    // and everything it started at once.
    let mut child = Command::new(binary("gantry"))
        .arg("demo")
        .process_group(0)
        .env_remove("GANTRY_IDENTITY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    // Once the agents run, Ctrl-C.
    loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the demo ended early:\n{seen}"
        );
        seen.push_str(&line);
        if line.starts_with("[4/11]") {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{seen}{rest}\n{stderr}");
    assert!(
        stderr.contains(
            "interrupted; everything the demo started is stopped and its directory removed"
        ),
        "{stderr}"
    );
    assert!(rest.contains("Stopping what the demo started"), "{rest}");
    let dir = demo_dir(&seen);
    assert!(!dir.exists(), "{} is removed", dir.display());
    assert_eq!(processes_using(&dir), Vec::<String>::new());
}
