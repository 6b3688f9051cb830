//! End-to-end telemetry tests: the real agent binary, the real NVML code path against the
//! simulated NVML library, read over HTTP the way Prometheus and operators read it.

mod support;

use std::io::Write;
use std::time::Duration;

use gantry_nvml_sim::model;
use support::{AgentBuilder, Metrics, promtool};

const H100: &str = "NVIDIA H100 80GB HBM3";

fn uuid(model_key: &str, gpu: u32) -> String {
    model::uuid(model::find(model_key).unwrap(), gpu)
}

#[test]
fn simulated_gpu_readings_arrive_in_metrics_and_status() {
    let agent = AgentBuilder::new().simulate(4, "h100").start();
    let m = agent.wait_metrics("four GPUs", |m| {
        m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 4
    });

    for gpu in 0..4u32 {
        let id = gpu.to_string();
        let device = format!("nvidia{gpu}");
        let labels = [
            ("gpu", id.as_str()),
            ("UUID", &uuid("h100", gpu)),
            ("device", &device),
            ("modelName", H100),
        ];
        let util = m
            .value("DCGM_FI_DEV_GPU_UTIL", &labels)
            .expect("utilisation");
        assert!((0.0..=100.0).contains(&util));
        assert_eq!(m.value("DCGM_FI_DEV_FB_TOTAL", &labels), Some(81_559.0));
        let used = m.value("DCGM_FI_DEV_FB_USED", &labels).unwrap();
        let free = m.value("DCGM_FI_DEV_FB_FREE", &labels).unwrap();
        assert!(used > 0.0 && free > 0.0 && used + free <= 81_559.0);
        let power = m.value("DCGM_FI_DEV_POWER_USAGE", &labels).unwrap();
        assert!((70.0..=700.0).contains(&power), "power {power}");
        assert_eq!(
            m.value("DCGM_FI_DEV_POWER_MGMT_LIMIT", &labels),
            Some(700.0)
        );
        assert!(m.value("DCGM_FI_DEV_GPU_TEMP", &labels).unwrap() > 30.0);
        assert!(m.value("DCGM_FI_DEV_SM_CLOCK", &labels).unwrap() > 1000.0);
        assert_eq!(m.value("DCGM_FI_DEV_MEM_CLOCK", &labels), Some(2619.0));
        assert_eq!(m.value("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &labels), Some(0.0));
        assert_eq!(
            m.value("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", &labels),
            Some(f64::from(gpu * 3))
        );
        assert_eq!(
            m.value("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", &labels),
            Some(0.0)
        );
        assert!(m.value("DCGM_FI_DEV_PCIE_RX_THROUGHPUT", &labels).unwrap() > 0.0);
        assert!(
            m.value("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &labels)
                .unwrap()
                > 0.0
        );
        assert_eq!(m.value("DCGM_FI_DEV_XID_ERRORS", &labels), Some(0.0));
        assert_eq!(m.value("gantry_gpu_up", &labels), Some(1.0));
    }
    assert_eq!(m.value("gantry_agent_nvml_up", &[]), Some(1.0));
    assert_eq!(m.value("gantry_agent_gpus", &[]), Some(4.0));
    assert!(m.value("gantry_host_memory_total_bytes", &[]).unwrap() > 0.0);
    assert!(
        m.value(
            "gantry_host_network_receive_bytes_total",
            &[("interface", "lo")]
        )
        .is_some()
    );
    assert!(m.values("gantry_agent_state_dir_free_bytes", &[])[0].1 > 0.0);
    assert!(m.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);

    // Values move over time.
    let first: Vec<f64> = m
        .values("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &[])
        .iter()
        .map(|v| v.1)
        .collect();
    let later = agent.wait_samples(3.0);
    let second: Vec<f64> = later
        .values("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &[])
        .iter()
        .map(|v| v.1)
        .collect();
    assert!(
        first.iter().zip(&second).all(|(a, b)| b > a),
        "{first:?} then {second:?}"
    );

    // `status --json` carries the same GPUs.
    let status: serde_json::Value = serde_json::from_str(&agent.status_cli(true)).unwrap();
    let gpus = status["sample"]["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 4);
    for (i, gpu) in gpus.iter().enumerate() {
        assert_eq!(gpu["uuid"], uuid("h100", i as u32));
        assert_eq!(gpu["name"], H100);
        assert_eq!(gpu["state"]["state"], "ok");
        assert!(gpu["fields"]["temperature_c"].as_u64().unwrap() > 30);
    }
    assert_eq!(status["simulated"]["gpus"], 4);

    // The readable table lists every GPU.
    let table = agent.status_cli(false);
    for gpu in 0..4 {
        assert!(table.contains(&uuid("h100", gpu)), "{table}");
    }
    assert!(table.contains(H100), "{table}");
    assert!(table.contains("simulated 4 x h100"), "{table}");
}

#[test]
fn fields_a_gpu_does_not_support_are_left_out_not_zero() {
    // H100 SXM: no fans, row remapping instead of page retirement.
    let h100 = AgentBuilder::new().simulate(2, "h100").start();
    let m = h100.wait_metrics("GPUs", |m| m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 2);
    assert!(
        !m.has_family("DCGM_FI_DEV_FAN_SPEED"),
        "fan speed reported for a fanless GPU"
    );
    assert!(!m.has_family("DCGM_FI_DEV_RETIRED_DBE"));
    assert!(!m.has_family("DCGM_FI_DEV_RETIRED_PENDING"));
    assert_eq!(
        m.values("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", &[])
            .len(),
        2
    );
    let status: serde_json::Value = serde_json::from_str(&h100.status_cli(true)).unwrap();
    let fields = &status["sample"]["gpus"][0]["fields"];
    assert!(fields.get("fan_speed_percent").is_none(), "{fields}");
    assert!(fields.get("retired_pages_dbe").is_none(), "{fields}");

    // V100: page retirement, no row remapping, no fans.
    let v100 = AgentBuilder::new().simulate(1, "v100").start();
    let m = v100.wait_metrics("GPU", |m| m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 1);
    assert_eq!(m.values("DCGM_FI_DEV_RETIRED_DBE", &[]).len(), 1);
    assert!(!m.has_family("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"));

    // L40S: a fan.
    let l40s = AgentBuilder::new().simulate(1, "l40s").start();
    let m = l40s.wait_metrics("GPU", |m| m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 1);
    let fan = m.value("DCGM_FI_DEV_FAN_SPEED", &[("gpu", "0")]).unwrap();
    assert!((30.0..=100.0).contains(&fan));
}

#[test]
fn overheating_gpu_shows_thermal_throttling_and_recovers() {
    let builder = AgentBuilder::new().simulate(3, "h100");
    let control = builder.control();
    let agent = builder.start();
    agent.wait_metrics("GPUs", |m| m.values("DCGM_FI_DEV_GPU_TEMP", &[]).len() == 3);

    control.update_device(1, |d| d.overheat = true).unwrap();
    let m = agent.wait_metrics("GPU 1 hot", |m| {
        m.value("DCGM_FI_DEV_GPU_TEMP", &[("gpu", "1")]) == Some(93.0)
    });
    let reasons = m
        .value("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", &[("gpu", "1")])
        .unwrap() as u64;
    assert_eq!(
        reasons & 0x60,
        0x60,
        "thermal throttle bits in {reasons:#x}"
    );
    for cool in ["0", "2"] {
        assert!(m.value("DCGM_FI_DEV_GPU_TEMP", &[("gpu", cool)]).unwrap() < 80.0);
        let bits = m
            .value("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", &[("gpu", cool)])
            .unwrap() as u64;
        assert_eq!(bits & 0x60, 0);
    }
    let table = agent.status_cli(false);
    assert!(table.contains("hw_thermal_slowdown"), "{table}");

    control.update_device(1, |d| d.overheat = false).unwrap();
    let m = agent.wait_metrics("GPU 1 cool", |m| {
        m.value("DCGM_FI_DEV_GPU_TEMP", &[("gpu", "1")])
            .is_some_and(|t| t < 80.0)
    });
    let bits = m
        .value("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", &[("gpu", "1")])
        .unwrap() as u64;
    assert_eq!(bits & 0x60, 0);
}

#[test]
fn uncorrectable_ecc_errors_are_counted_with_remapped_rows() {
    let builder = AgentBuilder::new().simulate(3, "h100");
    let control = builder.control();
    let agent = builder.start();
    agent.wait_metrics("GPUs", |m| m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 3);

    control
        .update_device(2, |d| d.ecc_uncorrectable = 3)
        .unwrap();
    let m = agent.wait_metrics("ECC errors", |m| {
        m.value("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &[("gpu", "2")]) == Some(3.0)
    });
    assert_eq!(
        m.value("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", &[("gpu", "2")]),
        Some(3.0)
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", &[("gpu", "2")]),
        Some(3.0)
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_ROW_REMAP_PENDING", &[("gpu", "2")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", &[("gpu", "0")]),
        Some(0.0)
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_ROW_REMAP_PENDING", &[("gpu", "0")]),
        Some(0.0)
    );
}

fn xid_count(m: &Metrics, gpu: &str, code: &str) -> Option<f64> {
    m.value(
        "gantry_gpu_xid_errors_total",
        &[("gpu", gpu), ("xid", code)],
    )
}

#[test]
fn xid_counters_count_each_event_once_and_a_lost_gpu_does_not_stop_the_others() {
    let builder = AgentBuilder::new().simulate(4, "h100");
    let control = builder.control();
    let agent = builder.start();
    agent.wait_metrics("GPUs", |m| m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 4);

    control.inject_xid(0, 48).unwrap();
    agent.wait_metrics("first XID 48", |m| xid_count(m, "0", "48") == Some(1.0));
    control.inject_xid(0, 48).unwrap();
    let m = agent.wait_metrics("second XID 48", |m| xid_count(m, "0", "48") == Some(2.0));
    assert_eq!(
        m.value("DCGM_FI_DEV_XID_ERRORS", &[("gpu", "0")]),
        Some(48.0)
    );
    // Further samples do not count the same events again.
    let m = agent.wait_samples(5.0);
    assert_eq!(xid_count(&m, "0", "48"), Some(2.0));
    let counted: Vec<_> = m
        .values("gantry_gpu_xid_errors_total", &[])
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .collect();
    assert_eq!(
        counted.len(),
        1,
        "only XID 48 on GPU 0 counted: {counted:?}"
    );
    // Critical codes are there from 0 on every GPU, so the first one counts in increase().
    assert_eq!(xid_count(&m, "1", "79"), Some(0.0));
    assert_eq!(xid_count(&m, "3", "48"), Some(0.0));
    assert_eq!(
        xid_count(&m, "1", "13"),
        None,
        "non-critical codes appear when seen"
    );

    // GPU 2 falls off the bus.
    control.fall_off_bus(2).unwrap();
    let m = agent.wait_metrics("GPU 2 lost", |m| {
        m.value("gantry_gpu_lost", &[("gpu", "2")]) == Some(1.0)
    });
    assert_eq!(xid_count(&m, "2", "79"), Some(1.0));
    assert_eq!(
        m.value("DCGM_FI_DEV_XID_ERRORS", &[("gpu", "2")]),
        Some(79.0)
    );
    assert_eq!(
        m.value("gantry_gpu_up", &[("gpu", "2"), ("UUID", &uuid("h100", 2))]),
        Some(0.0)
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_GPU_UTIL", &[("gpu", "2")]),
        None,
        "a lost GPU reports no readings"
    );
    let before: Vec<f64> = m
        .values("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &[])
        .iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(before.len(), 3, "the three other GPUs keep reporting");
    let m = agent.wait_samples(3.0);
    let after: Vec<f64> = m
        .values("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", &[])
        .iter()
        .map(|v| v.1)
        .collect();
    assert_eq!(after.len(), 3);
    assert!(
        before.iter().zip(&after).all(|(a, b)| b > a),
        "others still sampled: {before:?} {after:?}"
    );
    let table = agent.status_cli(false);
    assert!(table.contains("LOST"), "{table}");
    assert!(table.contains("xid 79 x1"), "{table}");
    assert!(
        agent
            .logs()
            .iter()
            .any(|l| l.contains("GPU has fallen off the bus") && l.contains("ERROR")),
        "the loss is logged at ERROR"
    );

    // A reset brings it back; its counters are kept.
    control.update_device(2, |d| d.lost = false).unwrap();
    let m = agent.wait_metrics("GPU 2 back", |m| {
        m.value("gantry_gpu_up", &[("gpu", "2")]) == Some(1.0)
    });
    assert_eq!(m.value("gantry_gpu_lost", &[("gpu", "2")]), Some(0.0));
    assert_eq!(xid_count(&m, "2", "79"), Some(1.0));
}

#[test]
fn kernel_log_xids_are_counted_and_not_double_counted_with_nvml_events() {
    let builder = AgentBuilder::new().simulate(4, "h100");
    let kernel_log = builder.state_dir().parent().unwrap().join("kern.log");
    std::fs::write(&kernel_log, "boot messages\n").unwrap();
    let control = builder.control();
    let agent = builder
        .arg("--kernel-log")
        .arg(kernel_log.to_str().unwrap())
        .start();
    let m = agent.wait_metrics("GPUs", |m| m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 4);
    assert_eq!(m.value("gantry_agent_kernel_log_readable", &[]), Some(1.0));

    // The same XID 48 on GPU 1 (bus 2A), seen by NVML and then logged by the kernel.
    control.inject_xid(1, 48).unwrap();
    agent.wait_metrics("NVML XID", |m| xid_count(m, "1", "48") == Some(1.0));
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&kernel_log)
        .unwrap();
    writeln!(
        log,
        "NVRM: Xid (PCI:0000:2a:00): 48, pid=4242, name=python3, An uncorrectable double bit error"
    )
    .unwrap();
    let m = agent.wait_metrics("kernel log read", |m| {
        m.value("gantry_agent_xid_events_total", &[("source", "kernel_log")]) == Some(1.0)
    });
    assert_eq!(
        xid_count(&m, "1", "48"),
        Some(1.0),
        "one event, two reports, counted once"
    );
    assert_eq!(m.value("gantry_agent_xid_duplicates_total", &[]), Some(1.0));

    // An XID only the kernel log knows about, on GPU 3 (bus 5D).
    writeln!(
        log,
        "NVRM: Xid (PCI:0000:5d:00): 13, pid=1, name=train, Graphics SM Warp Exception"
    )
    .unwrap();
    let m = agent.wait_metrics("kernel-only XID", |m| xid_count(m, "3", "13") == Some(1.0));
    assert_eq!(
        m.value("gantry_agent_xid_events_total", &[("source", "nvml")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_XID_ERRORS", &[("gpu", "3")]),
        Some(13.0)
    );
}

#[test]
fn without_nvml_the_agent_warns_once_and_reports_host_metrics() {
    let agent = AgentBuilder::new()
        .config(
            "[nvml]\nlibrary = \"/nonexistent/libnvidia-ml.so.1\"\nretry_interval = \"100ms\"\n",
        )
        .start();
    // Several retries happen; the warning is still said once.
    let m = agent.wait_metrics("host metrics", |m| {
        m.value("gantry_agent_samples_total", &[])
            .is_some_and(|n| n >= 5.0)
    });
    assert_eq!(m.value("gantry_agent_nvml_up", &[]), Some(0.0));
    assert!(m.value("gantry_host_memory_total_bytes", &[]).unwrap() > 0.0);
    assert!(!m.0.contains("DCGM_FI_DEV"), "no GPU metrics without NVML");
    let warnings: Vec<String> = agent
        .logs()
        .into_iter()
        .filter(|l| l.contains("\"WARN\"") && l.contains("NVML is not available"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("/nonexistent/libnvidia-ml.so.1"),
        "the warning names the library"
    );
    let table = agent.status_cli(false);
    assert!(table.contains("NVML unavailable"), "{table}");
}

#[test]
fn nvml_init_failure_is_survived_and_gpus_appear_when_it_clears() {
    let builder = AgentBuilder::new()
        .simulate(2, "a100")
        .config("[nvml]\nretry_interval = \"200ms\"\n");
    let control = builder.control();
    control.update(|c| c.init_failure = true).unwrap();
    let agent = builder.start();
    let m = agent.wait_samples(3.0);
    assert_eq!(m.value("gantry_agent_nvml_up", &[]), Some(0.0));
    assert!(m.value("gantry_host_cpus", &[]).unwrap() >= 1.0);

    control.update(|c| c.init_failure = false).unwrap();
    let m = agent.wait_metrics("NVML up", |m| {
        m.value("gantry_agent_nvml_up", &[]) == Some(1.0)
    });
    agent.wait_metrics("GPUs", |m| {
        m.values(
            "DCGM_FI_DEV_GPU_UTIL",
            &[("modelName", "NVIDIA A100-SXM4-80GB")],
        )
        .len()
            == 2
    });
    drop(m);
    assert!(agent.logs().iter().any(|l| l.contains("NVML initialised")));
}

#[test]
fn invalid_configuration_exits_64_naming_the_key() {
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "[telemetry]\nintervall = \"1s\"\n",
            &[],
            "telemetry.intervall",
        ),
        ("", &["--interval", "50ms"], "telemetry.interval"),
        (
            "",
            &["--metrics-listen", "localhost:9400"],
            "metrics.listen",
        ),
        ("[nvml.simulate]\ngpus = 200\n", &[], "nvml.simulate.gpus"),
        (
            "[metrics]\nmodel_label = \"model\"\n",
            &[],
            "metrics.model_label",
        ),
    ];
    for (config, args, key) in cases {
        let mut builder = AgentBuilder::new().config(config);
        for arg in args {
            builder = builder.arg(*arg);
        }
        let (status, stderr) = builder.run_to_exit();
        assert_eq!(status.code(), Some(64), "{key}: {stderr}");
        assert!(
            stderr.contains(&format!("`{key}`")),
            "{key} not named in: {stderr}"
        );
    }

    let missing = std::process::Command::new(support::AGENT)
        .args(["run", "--config", "/nonexistent/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/agent.toml"));

    let usage = std::process::Command::new(support::AGENT)
        .args(["run", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
}

/// dcgm-exporter's own name for `PCIe` replays contains a type word, which promtool
/// flags; renaming it would break dashboards, so it is the one name finding allowed.
const DCGM_NAME_FINDING: &str =
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'";

#[test]
fn promtool_checks_the_real_metrics_page() {
    // Every family present: XIDs (counter), lost GPU, ECC, both XID sources.
    let builder = AgentBuilder::new().simulate(3, "l40s");
    let control = builder.control();
    let agent = builder.start();
    agent.wait_metrics("GPUs", |m| m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 3);
    control.inject_xid(0, 31).unwrap();
    control
        .update_device(1, |d| d.ecc_uncorrectable = 1)
        .unwrap();
    control.fall_off_bus(2).unwrap();
    let m = agent.wait_metrics("faults", |m| {
        m.value("gantry_gpu_lost", &[("gpu", "2")]) == Some(1.0)
            && xid_count(m, "0", "31") == Some(1.0)
    });

    // Default labels are dcgm-exporter's; its camelCase `modelName` is the one finding.
    let (code, findings) = promtool(&m.0);
    assert_eq!(code, 3, "lint findings only, no parse errors: {findings}");
    for line in findings.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.ends_with("label names should be written in 'snake_case' not 'camelCase'")
                || line.starts_with(DCGM_NAME_FINDING),
            "unexpected promtool finding: {line}"
        );
    }
    assert!(m.0.contains("modelName=\"NVIDIA L40S\""));

    // With `metrics.model_label = "model_name"` the page passes promtool outright.
    let builder = AgentBuilder::new()
        .simulate(3, "l40s")
        .config("[metrics]\nmodel_label = \"model_name\"\n");
    let control = builder.control();
    let agent = builder.start();
    agent.wait_metrics("GPUs", |m| m.values("DCGM_FI_DEV_GPU_UTIL", &[]).len() == 3);
    control.inject_xid(0, 31).unwrap();
    control.fall_off_bus(2).unwrap();
    let m = agent.wait_metrics("faults", |m| {
        m.value("gantry_gpu_lost", &[("gpu", "2")]) == Some(1.0)
            && xid_count(m, "0", "31") == Some(1.0)
    });
    assert!(m.0.contains("model_name=\"NVIDIA L40S\""));
    let (code, findings) = promtool(&m.0);
    assert_eq!(code, 0, "promtool findings: {findings}");
}

#[test]
fn sigterm_stops_the_agent_cleanly() {
    let agent = AgentBuilder::new().simulate(2, "h100").start();
    agent.wait_samples(2.0);
    let started = std::time::Instant::now();
    let status = agent.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stopped in {:?}",
        started.elapsed()
    );
}

#[test]
fn status_without_a_running_agent_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let output = std::process::Command::new(support::AGENT)
        .args(["status", "--agent", &addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to the agent"), "{stderr}");
}

#[test]
fn simulated_library_is_found_beside_the_agent() {
    assert!(
        support::sim_library_path().is_file(),
        "{} missing: the agent's --simulate-gpus relies on it",
        support::sim_library_path().display()
    );
}

#[test]
fn health_follows_gpu_faults_and_recovers() {
    let builder = AgentBuilder::new().simulate(3, "h100");
    let control = builder.control();
    let agent = builder.start();
    agent.wait_metrics("healthy", |m| {
        m.value("gantry_agent_health", &[("state", "healthy")]) == Some(1.0)
    });

    control.update_device(1, |d| d.overheat = true).unwrap();
    let m = agent.wait_metrics("degraded", |m| {
        m.value("gantry_agent_health", &[("state", "degraded")]) == Some(1.0)
    });
    assert_eq!(
        m.value("gantry_agent_health_reasons", &[("check", "gpu.thermal")]),
        Some(1.0)
    );
    control
        .update_device(2, |d| d.ecc_uncorrectable = 1)
        .unwrap();
    agent.wait_metrics("unhealthy", |m| {
        m.value("gantry_agent_health", &[("state", "unhealthy")]) == Some(1.0)
    });
    let status: serde_json::Value = serde_json::from_str(&agent.status_cli(true)).unwrap();
    assert_eq!(status["health"]["state"], "unhealthy");
    let table = agent.status_cli(false);
    assert!(
        table.contains("unhealthy gpu.ecc: GPU 2 has 1 uncorrectable ECC error(s)"),
        "{table}"
    );
    assert!(
        table.contains("degraded gpu.thermal: GPU 1 is thermally throttled"),
        "{table}"
    );

    control.update(|c| c.devices.clear()).unwrap();
    agent.wait_metrics("healthy again", |m| {
        m.value("gantry_agent_health", &[("state", "healthy")]) == Some(1.0)
    });
    assert!(
        agent
            .logs()
            .iter()
            .any(|l| l.contains("node health worsened"))
    );
    assert!(
        agent
            .logs()
            .iter()
            .any(|l| l.contains("node health improved"))
    );
}
