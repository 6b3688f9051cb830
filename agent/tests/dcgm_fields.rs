//! dcgm-exporter's default fields and labels, read from the real agent over HTTP, with
//! the real NVML code path against the simulated NVML: every field on Hopper, exactly
//! the profiling fields absent (and explained) on Ampere and Volta, MIG instances, vGPU
//! licensing, and the label formats dashboards and alerts match on.

mod support;

use support::{AgentBuilder, Metrics, promtool};

/// The simulated driver's version, as NVML reports it.
const DRIVER: &str = "560.35.03";

/// dcgm-exporter's default fields (its `default-counters.csv`), with the Hopper GPUs
/// that give them: everything but the encoder (H100 has no NVENC) and the vGPU license
/// (not a vGPU guest).
const HOPPER_FIELDS: &[&str] = &[
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
    "DCGM_FI_DEV_MEMORY_TEMP",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_RESERVED",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE",
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES",
];

const PROFILING_FIELDS: &[&str] = &[
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "DCGM_FI_PROF_DRAM_ACTIVE",
    "DCGM_FI_PROF_PCIE_TX_BYTES",
    "DCGM_FI_PROF_PCIE_RX_BYTES",
];

fn value(m: &Metrics, name: &str, gpu: &str) -> f64 {
    m.value(name, &[("gpu", gpu)])
        .unwrap_or_else(|| panic!("{name} for GPU {gpu} is missing:\n{}", m.0))
}

#[test]
fn hopper_gpus_give_every_dcgm_exporter_default_field_in_dcgm_units() {
    for model in ["h100", "h200"] {
        let agent = AgentBuilder::new().simulate(2, model).start();
        // Rates (NVLink, GPM) need two samples.
        let m = agent.wait_metrics("profiling fields", |m| {
            m.values("DCGM_FI_PROF_PCIE_RX_BYTES", &[]).len() == 2
                && m.values("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", &[]).len() == 2
        });
        for field in HOPPER_FIELDS {
            assert_eq!(
                m.values(field, &[]).len(),
                2,
                "{model}: {field} on both GPUs:\n{}",
                m.0
            );
        }
        for gpu in ["0", "1"] {
            for ratio in &PROFILING_FIELDS[..3] {
                let v = value(&m, ratio, gpu);
                assert!((0.0..=1.0).contains(&v), "{ratio} is a ratio: {v}");
            }
            // GPM's graphics activity tracks utilisation; PCIe bytes/s match the KB/s
            // throughput counter (both move with load, so within a margin).
            let util = value(&m, "DCGM_FI_DEV_GPU_UTIL", gpu) / 100.0;
            let active = value(&m, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", gpu);
            assert!((active - util).abs() < 0.25, "{active} vs {util}");
            let tx_kbps = value(&m, "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", gpu);
            let tx_bytes = value(&m, "DCGM_FI_PROF_PCIE_TX_BYTES", gpu);
            assert!(
                (tx_bytes / (tx_kbps * 1024.0) - 1.0).abs() < 0.5,
                "PCIe {tx_bytes} B/s vs {tx_kbps} KB/s"
            );
            let nvlink = value(&m, "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", gpu);
            assert!(nvlink > 0.0, "NVLink MB/s: {nvlink}");
            let memory = value(&m, "DCGM_FI_DEV_MEMORY_TEMP", gpu);
            let core = value(&m, "DCGM_FI_DEV_GPU_TEMP", gpu);
            assert!(
                (memory - core).abs() <= 10.0,
                "HBM {memory} °C, GPU {core} °C"
            );
        }
        assert!(
            m.values("DCGM_FI_DEV_ENC_UTIL", &[]).is_empty(),
            "H100 has no NVENC"
        );
        assert!(m.values("DCGM_FI_DEV_VGPU_LICENSE_STATUS", &[]).is_empty());
        let status = agent.status_cli(false);
        assert!(
            status.contains("DCGM_FI_DEV_VGPU_LICENSE_STATUS on GPU 0,1: not a vGPU guest"),
            "{status}"
        );
        assert!(
            !status.contains("DCGM_FI_PROF_"),
            "no profiling field is absent on {model}: {status}"
        );
    }
}

#[test]
fn ampere_and_volta_leave_exactly_the_profiling_fields_absent_and_status_says_why() {
    for model in ["a100", "v100"] {
        let agent = AgentBuilder::new().simulate(2, model).start();
        let m = agent.wait_metrics("NVLink rate", |m| {
            m.values("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", &[]).len() == 2
        });
        for field in PROFILING_FIELDS {
            assert!(
                m.values(field, &[]).is_empty(),
                "{model}: {field} is absent"
            );
            assert!(!m.has_family(field), "{model}: no empty {field} family");
        }
        for field in HOPPER_FIELDS
            .iter()
            .filter(|f| !PROFILING_FIELDS.contains(f))
        {
            // Volta retires pages instead of remapping rows.
            let expect_absent = model == "v100"
                && (field.contains("REMAPPED_ROWS") || *field == "DCGM_FI_DEV_ROW_REMAP_FAILURE");
            assert_eq!(
                m.values(field, &[]).is_empty(),
                expect_absent,
                "{model}: {field}"
            );
        }
        let status = agent.status_cli(false);
        for field in PROFILING_FIELDS {
            let line = format!(
                "{field} on GPU 0,1: GPU Performance Monitoring needs a Hopper or later GPU"
            );
            assert_eq!(
                status.matches(&line).count(),
                1,
                "{model}: once per field:\n{status}"
            );
        }
    }
    // A PCIe card has no NVLink; it has video encoders.
    let agent = AgentBuilder::new().simulate(1, "l40s").start();
    let m = agent.wait_samples(3.0);
    assert!(
        m.values("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", &[])
            .is_empty()
    );
    assert!(m.value("DCGM_FI_DEV_ENC_UTIL", &[("gpu", "0")]).is_some());
    let status = agent.status_cli(false);
    assert!(
        status.contains("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL on GPU 0: the GPU has no NVLink"),
        "{status}"
    );
}

#[test]
fn every_series_carries_the_driver_version_label_in_dcgm_exporter_order() {
    let agent = AgentBuilder::new().simulate(2, "h100").start();
    let m = agent.wait_samples(2.0);
    let dcgm_lines: Vec<&str> = m.0.lines().filter(|l| l.starts_with("DCGM_FI_")).collect();
    assert!(dcgm_lines.len() > 40);
    let uuid = gantry_nvml_sim::model::uuid(gantry_nvml_sim::model::find("h100").unwrap(), 1);
    for line in dcgm_lines {
        let labels = line.split_once('{').unwrap().1;
        assert!(
            labels.contains(&format!(",DCGM_FI_DRIVER_VERSION=\"{DRIVER}\"")),
            "{line}"
        );
        if line.starts_with("DCGM_FI_DEV_GPU_TEMP{gpu=\"1\"") {
            let hostname = labels
                .split("Hostname=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            assert_eq!(
                labels.split_once('}').unwrap().0,
                format!(
                    "gpu=\"1\",UUID=\"{uuid}\",pci_bus_id=\"00000000:2A:00.0\",device=\"nvidia1\",\
                     modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"{hostname}\",\
                     DCGM_FI_DRIVER_VERSION=\"{DRIVER}\""
                )
            );
        }
    }
}

#[test]
fn xid_errors_carry_err_code_and_err_msg_as_dcgm_exporter_renders_them() {
    let builder = AgentBuilder::new().simulate(2, "h100");
    let control = builder.control();
    let agent = builder.start();
    let m = agent.wait_samples(2.0);
    // The alert `DCGM_FI_DEV_XID_ERRORS{err_code!="0"}` stays quiet on healthy GPUs.
    for gpu in ["0", "1"] {
        assert_eq!(
            m.value(
                "DCGM_FI_DEV_XID_ERRORS",
                &[("gpu", gpu), ("err_code", "0"), ("err_msg", "No Error")]
            ),
            Some(0.0)
        );
    }
    control.inject_xid(1, 13).unwrap();
    let m = agent.wait_metrics("XID 13", |m| {
        m.value("DCGM_FI_DEV_XID_ERRORS", &[("gpu", "1")]) == Some(13.0)
    });
    let line =
        m.0.lines()
            .find(|l| l.starts_with("DCGM_FI_DEV_XID_ERRORS{gpu=\"1\""))
            .unwrap();
    assert!(
        line.ends_with(&format!(
            ",DCGM_FI_DRIVER_VERSION=\"{DRIVER}\",err_code=\"13\",err_msg=\"Graphics Engine Exception\"}} 13"
        )),
        "{line}"
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_XID_ERRORS", &[("gpu", "0"), ("err_code", "0")]),
        Some(0.0)
    );
}

#[test]
fn mig_instances_get_their_own_series_with_gpu_i_id_and_gpu_i_profile() {
    let builder = AgentBuilder::new().simulate(2, "h100");
    builder
        .control()
        .update_device(0, |d| d.mig = vec!["3g.40gb".into(), "1g.10gb".into()])
        .unwrap();
    let agent = builder.start();
    let m = agent.wait_metrics("MIG profiling", |m| {
        m.values("DCGM_FI_PROF_GR_ENGINE_ACTIVE", &[("GPU_I_ID", "2")])
            .len()
            == 1
    });
    let instance = |id: &str, profile: &str, name: &str| {
        m.value(
            name,
            &[("gpu", "0"), ("GPU_I_ID", id), ("GPU_I_PROFILE", profile)],
        )
    };
    assert_eq!(
        instance("1", "3g.40gb", "DCGM_FI_DEV_FB_TOTAL"),
        Some(40_960.0)
    );
    assert_eq!(
        instance("2", "1g.10gb", "DCGM_FI_DEV_FB_TOTAL"),
        Some(10_240.0)
    );
    let used = instance("1", "3g.40gb", "DCGM_FI_DEV_FB_USED").unwrap();
    let free = instance("1", "3g.40gb", "DCGM_FI_DEV_FB_FREE").unwrap();
    assert!(used > 0.0 && used + free <= 40_960.0);
    for id in ["1", "2"] {
        let active = m
            .values(
                "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
                &[("gpu", "0"), ("GPU_I_ID", id)],
            )
            .first()
            .map(|v| v.1)
            .expect("per-instance tensor activity");
        assert!((0.0..=1.0).contains(&active));
    }
    // GPU-level series stay; NVML has no GPU-wide utilisation in MIG mode.
    let gpu0_series = |name: &str| {
        m.values(name, &[("gpu", "0")])
            .into_iter()
            .filter(|(labels, _)| !labels.contains("GPU_I_ID"))
            .count()
    };
    assert_eq!(gpu0_series("DCGM_FI_DEV_FB_TOTAL"), 1);
    assert_eq!(gpu0_series("DCGM_FI_PROF_GR_ENGINE_ACTIVE"), 1);
    assert_eq!(gpu0_series("DCGM_FI_DEV_GPU_TEMP"), 1);
    assert_eq!(gpu0_series("DCGM_FI_DEV_GPU_UTIL"), 0);
    assert!(m.value("DCGM_FI_DEV_GPU_UTIL", &[("gpu", "1")]).is_some());
    assert!(
        m.values("DCGM_FI_DEV_FB_TOTAL", &[("gpu", "1"), ("GPU_I_ID", "1")])
            .is_empty()
    );
    // The label order puts the MIG labels before Hostname, as dcgm-exporter does.
    let line = m
        .0
        .lines()
        .find(|l| l.starts_with("DCGM_FI_DEV_FB_TOTAL{gpu=\"0\"") && l.contains("GPU_I_ID=\"2\""))
        .unwrap();
    assert!(
        line.contains(
            "modelName=\"NVIDIA H100 80GB HBM3\",GPU_I_PROFILE=\"1g.10gb\",GPU_I_ID=\"2\",Hostname="
        ),
        "{line}"
    );
    let status = agent.status_cli(false);
    assert!(status.contains("MIG instance 1 (3g.40gb)"), "{status}");
}

#[test]
fn vgpu_guests_report_their_license_state() {
    let builder = AgentBuilder::new().simulate(3, "h100");
    let control = builder.control();
    control
        .update_device(0, |d| d.vgpu_licensed = Some(true))
        .unwrap();
    control
        .update_device(1, |d| d.vgpu_licensed = Some(false))
        .unwrap();
    let agent = builder.start();
    let m = agent.wait_samples(2.0);
    assert_eq!(
        m.value("DCGM_FI_DEV_VGPU_LICENSE_STATUS", &[("gpu", "0")]),
        Some(1.0)
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_VGPU_LICENSE_STATUS", &[("gpu", "1")]),
        Some(0.0)
    );
    assert_eq!(
        m.value("DCGM_FI_DEV_VGPU_LICENSE_STATUS", &[("gpu", "2")]),
        None
    );
}

#[test]
fn lint_clean_pages_keep_the_fields_with_labels_promtool_accepts() {
    // Every field on, MIG labels and an XID's err_msg included.
    let builder = AgentBuilder::new()
        .simulate(2, "h100")
        .config("[metrics]\nmodel_label = \"model_name\"\n");
    let control = builder.control();
    control
        .update_device(1, |d| d.mig = vec!["2g.20gb".into()])
        .unwrap();
    let agent = builder.start();
    // Events already in the control file when NVML starts count as before boot: inject
    // once the agent samples.
    agent.wait_metrics("GPUs", |m| {
        !m.values("DCGM_FI_DEV_GPU_TEMP", &[]).is_empty()
    });
    control.inject_xid(0, 31).unwrap();
    let m = agent.wait_metrics("profiling", |m| {
        m.values("DCGM_FI_PROF_GR_ENGINE_ACTIVE", &[]).len() == 3
            && m.value("DCGM_FI_DEV_XID_ERRORS", &[("gpu", "0")]) == Some(31.0)
    });
    let (code, findings) = promtool(&m.0);
    assert_eq!(code, 0, "promtool findings: {findings}");
    assert!(
        m.value("gantry_gpu_pcie_replays_total", &[("gpu", "0")])
            .is_some()
    );
    assert!(m.values("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", &[]).is_empty());
    assert!(m.0.contains("model_name=\"NVIDIA H100 80GB HBM3\""));
}
