//! The XID catalogue: every XID code NVIDIA documents, with its documented meaning, the
//! likely cause and what an operator should do about it. One table serves the health
//! checks (which codes are critical), the remediation shown with every health reason,
//! and the `err_msg` label of `DCGM_FI_DEV_XID_ERRORS`, which renders the meaning exactly
//! as dcgm-exporter does (`"Unknown Error"` past the end of the table).
//!
//! Causes and actions follow NVIDIA's XID documentation: hardware faults (ECC, NVLink,
//! the bus) want a GPU reset or an inspection, driver and firmware faults a reset, and
//! errors an application provoked (page faults, engine exceptions) a look at that
//! application, not at the GPU.
//!
//! [`parse_kernel_xid`] reads an XID report out of a kernel log line: the driver's
//! text, untrusted bytes from `/dev/kmsg` or a log file (fuzzed by `kernel_log_line`).

use serde::{Deserialize, Serialize};

/// What most likely caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Hardware,
    Driver,
    Application,
    /// The host around the GPUs: disk, memory, the agent's own state.
    Host,
    /// The data a model is given: it no longer looks like what the model was made for.
    Data,
    /// Reserved or unused codes, and codes past the catalogue.
    Unknown,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hardware => "hardware",
            Self::Driver => "driver",
            Self::Application => "application",
            Self::Host => "host",
            Self::Data => "data",
            Self::Unknown => "unknown",
        }
    }
}

/// What the operator should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Drain the GPU and reset it (`nvidia-smi -r`).
    ResetGpu,
    /// Drain the node and reboot it.
    RebootNode,
    /// Have the hardware inspected (RMA if it persists).
    InspectHardware,
    /// Look at the application that was running; the GPU is fine.
    CheckApplication,
    /// Free disk space or memory on the host, or fix what the message names.
    CheckHost,
    /// Compare what the model now sees with its reference data; retrain or roll back.
    ReviewData,
    /// Informational; nothing to do.
    None,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResetGpu => "reset_gpu",
            Self::RebootNode => "reboot_node",
            Self::InspectHardware => "inspect_hardware",
            Self::CheckApplication => "check_application",
            Self::CheckHost => "check_host",
            Self::ReviewData => "review_data",
            Self::None => "none",
        }
    }

    /// The advice in words.
    pub fn advice(self) -> &'static str {
        match self {
            Self::ResetGpu => "drain the GPU and reset it (nvidia-smi -r)",
            Self::RebootNode => "drain the node and reboot it",
            Self::InspectHardware => "have the GPU inspected; replace it if the error recurs",
            Self::CheckApplication => {
                "check the application that was running; the GPU itself is not at fault"
            }
            Self::CheckHost => "free disk space or memory on the host as the message says",
            Self::ReviewData => {
                "compare the data the model now sees with its reference data (gantry model drift); retrain it or roll back"
            }
            Self::None => "no action needed",
        }
    }
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xid {
    pub code: u64,
    /// NVIDIA's documented meaning, as dcgm-exporter renders it in `err_msg`.
    pub name: &'static str,
    pub cause: Cause,
    pub action: Action,
    /// The GPU or its memory cannot be trusted until the action is taken: the health
    /// checks make the node unhealthy, per-code counters exist from 0, and the
    /// controller can cordon the node.
    pub critical: bool,
}

/// Likely cause and suggested action: what every health reason carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remedy {
    pub cause: Cause,
    pub action: Action,
}

impl Remedy {
    pub const fn new(cause: Cause, action: Action) -> Self {
        Self { cause, action }
    }

    /// `likely hardware: drain the GPU and reset it (nvidia-smi -r)`.
    pub fn describe(self) -> String {
        format!("likely {}: {}", self.cause.as_str(), self.action.advice())
    }
}

impl Xid {
    pub fn remedy(self) -> Remedy {
        Remedy::new(self.cause, self.action)
    }
}

/// `err_msg` for codes past the catalogue, as dcgm-exporter writes it.
pub const UNKNOWN_NAME: &str = "Unknown Error";

const fn x(code: u64, name: &'static str, cause: Cause, action: Action, critical: bool) -> Xid {
    Xid {
        code,
        name,
        cause,
        action,
        critical,
    }
}

use Action::{CheckApplication, InspectHardware, None, RebootNode, ResetGpu};
use Cause::{Application, Driver, Hardware, Unknown};

/// The catalogue, indexed by code.
#[rustfmt::skip]
const CATALOGUE: &[Xid] = &[
    x(0, "No Error", Unknown, None, false),
    x(1, "Invalid or corrupted push buffer stream", Application, CheckApplication, false),
    x(2, "Invalid or corrupted push buffer stream", Application, CheckApplication, false),
    x(3, "Invalid or corrupted push buffer stream", Application, CheckApplication, false),
    x(4, "Invalid or corrupted push buffer stream", Application, CheckApplication, false),
    x(5, "Unused", Unknown, None, false),
    x(6, "Invalid or corrupted push buffer stream", Application, CheckApplication, false),
    x(7, "Invalid or corrupted push buffer address", Application, CheckApplication, false),
    x(8, "GPU stopped processing", Driver, CheckApplication, false),
    x(9, "Driver error programming GPU", Driver, ResetGpu, false),
    x(10, "Unused", Unknown, None, false),
    x(11, "Invalid or corrupted push buffer stream", Application, CheckApplication, false),
    x(12, "Driver error handling GPU exception", Driver, CheckApplication, false),
    x(13, "Graphics Engine Exception", Application, CheckApplication, false),
    x(14, "Unused", Unknown, None, false),
    x(15, "Unused", Unknown, None, false),
    x(16, "Display engine hung", Driver, None, false),
    x(17, "Unused", Unknown, None, false),
    x(18, "Bus mastering disabled in PCI Config Space", Driver, CheckApplication, false),
    x(19, "Display Engine error", Driver, None, false),
    x(20, "Invalid or corrupted Mpeg push buffer", Application, CheckApplication, false),
    x(21, "Invalid or corrupted Motion Estimation push buffer", Application, CheckApplication, false),
    x(22, "Invalid or corrupted Video Processor push buffer", Application, CheckApplication, false),
    x(23, "Unused", Unknown, None, false),
    x(24, "GPU semaphore timeout", Driver, CheckApplication, false),
    x(25, "Invalid or illegal push buffer stream", Application, CheckApplication, false),
    x(26, "Framebuffer timeout", Driver, CheckApplication, false),
    x(27, "Video processor exception", Application, CheckApplication, false),
    x(28, "Video processor exception", Application, CheckApplication, false),
    x(29, "Video processor exception", Application, CheckApplication, false),
    x(30, "GPU semaphore access error", Driver, CheckApplication, false),
    x(31, "GPU memory page fault", Application, CheckApplication, false),
    x(32, "Invalid or corrupted push buffer stream", Hardware, InspectHardware, false),
    x(33, "Internal micro-controller error", Driver, ResetGpu, false),
    x(34, "Video processor exception", Application, CheckApplication, false),
    x(35, "Video processor exception", Application, CheckApplication, false),
    x(36, "Video processor exception", Application, CheckApplication, false),
    x(37, "Driver firmware error", Driver, ResetGpu, false),
    x(38, "Driver firmware error", Driver, ResetGpu, false),
    x(39, "Unused", Unknown, None, false),
    x(40, "Unused", Unknown, None, false),
    x(41, "Unused", Unknown, None, false),
    x(42, "Video processor exception", Application, CheckApplication, false),
    x(43, "GPU stopped processing", Application, CheckApplication, false),
    x(44, "Graphics Engine fault during context switch", Driver, CheckApplication, false),
    x(45, "Preemptive cleanup, due to previous errors -- Most likely to see when running multiple cuda", Application, None, false),
    x(46, "GPU stopped processing", Driver, CheckApplication, false),
    x(47, "Video processor exception", Application, CheckApplication, false),
    x(48, "Double Bit ECC Error", Hardware, ResetGpu, true),
    x(49, "Unused", Unknown, None, false),
    x(50, "Unused", Unknown, None, false),
    x(51, "Unused", Unknown, None, false),
    x(52, "Unused", Unknown, None, false),
    x(53, "Unused", Unknown, None, false),
    x(54, "Auxiliary power is not connected to the GPU board", Hardware, InspectHardware, false),
    x(55, "Unused", Unknown, None, false),
    x(56, "Display Engine error", Driver, ResetGpu, false),
    x(57, "Error programming video memory interface", Hardware, InspectHardware, false),
    x(58, "Unstable video memory interface detected", Hardware, InspectHardware, false),
    x(59, "Internal micro-controller error", Driver, ResetGpu, false),
    x(60, "Video processor exception", Application, CheckApplication, false),
    x(61, "Internal micro-controller breakpoint/warning", Driver, ResetGpu, false),
    x(62, "Internal micro-controller halt", Driver, ResetGpu, false),
    x(63, "ECC page retirement or row remapping recording event", Hardware, ResetGpu, true),
    x(64, "ECC page retirement or row remapper recording failure", Hardware, InspectHardware, true),
    x(65, "Video processor exception", Application, CheckApplication, false),
    x(66, "Illegal access by driver", Driver, CheckApplication, false),
    x(67, "Illegal access by driver", Driver, CheckApplication, false),
    x(68, "NVDEC0 Exception", Application, CheckApplication, false),
    x(69, "Graphics Engine class error", Application, CheckApplication, false),
    x(70, "CE3: Unknown Error", Application, CheckApplication, false),
    x(71, "CE4: Unknown Error", Application, CheckApplication, false),
    x(72, "CE5: Unknown Error", Application, CheckApplication, false),
    x(73, "NVENC2 Error", Application, CheckApplication, false),
    x(74, "NVLINK Error", Hardware, ResetGpu, true),
    x(75, "CE6: Unknown Error", Application, CheckApplication, false),
    x(76, "CE7: Unknown Error", Application, CheckApplication, false),
    x(77, "CE8: Unknown Error", Application, CheckApplication, false),
    x(78, "vGPU Start Error", Driver, CheckApplication, false),
    x(79, "GPU has fallen off the bus", Hardware, RebootNode, true),
    x(80, "Corrupted data sent to GPU", Hardware, InspectHardware, false),
    x(81, "VGA Subsystem Error", Hardware, InspectHardware, false),
    x(82, "NVJPG0 Error", Application, CheckApplication, false),
    x(83, "NVDEC1 Error", Application, CheckApplication, false),
    x(84, "NVDEC2 Error", Application, CheckApplication, false),
    x(85, "CE9: Unknown Error", Application, CheckApplication, false),
    x(86, "OFA Exception", Application, CheckApplication, false),
    x(87, "Reserved", Unknown, None, false),
    x(88, "NVDEC3 Error", Application, CheckApplication, false),
    x(89, "NVDEC4 Error", Application, CheckApplication, false),
    x(90, "Reserved", Unknown, None, false),
    x(91, "Reserved", Unknown, None, false),
    x(92, "High single-bit ECC error rate", Hardware, InspectHardware, true),
    x(93, "Non-fatal violation of provisioned InfoROM wear limit", Hardware, InspectHardware, false),
    x(94, "Contained ECC error", Hardware, ResetGpu, true),
    x(95, "Uncontained ECC error", Hardware, ResetGpu, true),
    x(96, "NVDEC5 Error", Application, CheckApplication, false),
    x(97, "NVDEC6 Error", Application, CheckApplication, false),
    x(98, "NVDEC7 Error", Application, CheckApplication, false),
    x(99, "NVJPG1 Error", Application, CheckApplication, false),
    x(100, "NVJPG2 Error", Application, CheckApplication, false),
    x(101, "NVJPG3 Error", Application, CheckApplication, false),
    x(102, "NVJPG4 Error", Application, CheckApplication, false),
    x(103, "NVJPG5 Error", Application, CheckApplication, false),
    x(104, "NVJPG6 Error", Application, CheckApplication, false),
    x(105, "NVJPG7 Error", Application, CheckApplication, false),
    x(106, "SMBPBI Test Message", Unknown, None, false),
    x(107, "SMBPBI Test Message Silent", Unknown, None, false),
    x(108, "Reserved", Unknown, None, false),
    x(109, "Context Switch Timeout Error", Application, CheckApplication, false),
    x(110, "Security Fault Error", Driver, ResetGpu, false),
    x(111, "Display Bundle Error Event", Driver, None, false),
    x(112, "Display Supervisor Error", Driver, None, false),
    x(113, "DP Link Training Error", Driver, None, false),
    x(114, "Display Pipeline Underflow Error", Driver, None, false),
    x(115, "Display Core Channel Error", Driver, None, false),
    x(116, "Display Window Channel Error", Driver, None, false),
    x(117, "Display Cursor Channel Error", Driver, None, false),
    x(118, "Display Pixel Pipeline Error", Driver, None, false),
    x(119, "GSP RPC Timeout", Driver, ResetGpu, true),
    x(120, "GSP Error", Driver, ResetGpu, true),
    x(121, "C2C Link Error", Hardware, InspectHardware, false),
    x(122, "SPI PMU RPC Read Failure", Hardware, InspectHardware, false),
    x(123, "SPI PMU RPC Write Failure", Hardware, InspectHardware, false),
    x(124, "SPI PMU RPC Erase Failure", Hardware, InspectHardware, false),
    x(125, "Inforom FS Failure", Hardware, InspectHardware, false),
    x(126, "Robust Channel CE10 Error", Application, CheckApplication, false),
    x(127, "Robust Channel CE11 Error", Application, CheckApplication, false),
    x(128, "Robust Channel CE12 Error", Application, CheckApplication, false),
    x(129, "Robust Channel CE13 Error", Application, CheckApplication, false),
    x(130, "Robust Channel CE14 Error", Application, CheckApplication, false),
    x(131, "Robust Channel CE15 Error", Application, CheckApplication, false),
    x(132, "Robust Channel CE16 Error", Application, CheckApplication, false),
    x(133, "Robust Channel CE17 Error", Application, CheckApplication, false),
    x(134, "Robust Channel CE18 Error", Application, CheckApplication, false),
    x(135, "Robust Channel CE19 Error", Application, CheckApplication, false),
    x(136, "ALI Training Fail", Hardware, InspectHardware, false),
    x(137, "NVLink Privilege Error", Driver, ResetGpu, false),
    x(138, "Robust Channel DLA Error", Application, CheckApplication, false),
    x(139, "Robust Channel OFA1 Error", Application, CheckApplication, false),
    x(140, "Unrecovered ECC Error", Hardware, ResetGpu, false),
    x(141, "Robust Channel Fast Path Error", Application, CheckApplication, false),
    x(142, "Robust Channel NVENVC3 Error", Application, CheckApplication, false),
    x(143, "GPU Initialization Failure", Hardware, RebootNode, false),
    x(144, "NVLINK: Saw Error", Hardware, ResetGpu, false),
    x(145, "NVLINK: RLW Error", Hardware, ResetGpu, false),
    x(146, "NVLINK: TLW Error", Hardware, ResetGpu, false),
    x(147, "NVLINK: TREX Error", Hardware, ResetGpu, false),
    x(148, "NVLINK: NVLPW_CTRL Error", Hardware, ResetGpu, false),
    x(149, "NVLINK: NETIR Error", Hardware, ResetGpu, false),
    x(150, "NVLINK: MSE Error", Hardware, ResetGpu, false),
    x(151, "Robust Channel Key rotation Error", Application, CheckApplication, false),
    x(152, "Robust Channel DLA SMMU Error", Application, CheckApplication, false),
    x(153, "Robust Channel DLA timeout Error", Application, CheckApplication, false),
    x(154, "GPU Recovery Action Changed", Driver, ResetGpu, false),
    x(155, "NVLINK: SW Defined Error", Hardware, ResetGpu, false),
    x(156, "Resource Retirement Event", Hardware, ResetGpu, false),
    x(157, "Resource Retirement Failure", Hardware, InspectHardware, false),
    x(158, "GPU Fatal Timeout", Hardware, ResetGpu, false),
    x(159, "Robust Channel CHI Non-Data Error", Hardware, ResetGpu, false),
    x(160, "Channel Retirement Event", Hardware, ResetGpu, false),
    x(161, "Channel Retirement Failure", Hardware, InspectHardware, false),
    x(162, "Power Smoothing HW Circuitry Reengaged", Hardware, None, false),
    x(163, "Power Smoothing HW Circuitry Disengaged", Hardware, None, false),
    x(164, "Power Smoothing HW Circuitry Low Lifetime", Hardware, InspectHardware, false),
    x(165, "Power Smoothing HW Circuitry Lifetime Exhausted", Hardware, InspectHardware, false),
    x(166, "NVLINK Secure Crypto Error", Hardware, ResetGpu, false),
    x(167, "PCIE Fatal Timeout", Hardware, RebootNode, false),
    x(168, "Reduced GPU Memory Capacity (Errors found in write protection region)", Hardware, InspectHardware, false),
    x(169, "Internal micro-controller halt", Driver, ResetGpu, false),
    x(170, "NVLINK: Interrupt seen in CC mode", Driver, ResetGpu, false),
    x(171, "Uncorrectable DRAM Error", Hardware, ResetGpu, false),
    x(172, "Uncorrectable SRAM Error", Hardware, ResetGpu, false),
];

/// The entry for a code; codes past the catalogue get [`UNKNOWN_NAME`] with an unknown
/// cause, and the advice to inspect the GPU.
pub fn lookup(code: u64) -> Xid {
    usize::try_from(code)
        .ok()
        .and_then(|i| CATALOGUE.get(i))
        .copied()
        .unwrap_or(Xid {
            code,
            name: UNKNOWN_NAME,
            cause: Unknown,
            action: InspectHardware,
            critical: false,
        })
}

/// Every critical code, ascending.
pub fn critical_codes() -> impl Iterator<Item = u64> {
    CATALOGUE.iter().filter(|x| x.critical).map(|x| x.code)
}

/// PCI address (domain, bus, device): the GPU key NVML events and kernel log lines share.
pub type PciAddress = (u32, u8, u8);

/// Parses an XID report from a kernel log line, as the NVIDIA driver writes it:
/// `NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.`
/// Lines from `/dev/kmsg` carry a `pri,seq,time,flags;` prefix, which is skipped.
pub fn parse_kernel_xid(line: &str) -> Option<(PciAddress, u64)> {
    const MARKER: &str = "NVRM: Xid (PCI:";
    let rest = &line[line.find(MARKER)? + MARKER.len()..];
    let (address, rest) = rest.split_once("):")?;
    let pci = crate::telemetry::parse_pci_bus_id(address)?;
    let code_text = rest.trim_start();
    let digits = code_text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(code_text.len());
    let code = code_text[..digits].parse().ok()?;
    Some((pci, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_code() {
        for (i, entry) in CATALOGUE.iter().enumerate() {
            assert_eq!(entry.code, i as u64, "entry {i} is out of place");
        }
    }

    #[test]
    fn names_match_nvidia_documentation_for_common_codes() {
        assert_eq!(lookup(0).name, "No Error");
        assert_eq!(lookup(13).name, "Graphics Engine Exception");
        assert_eq!(lookup(48).name, "Double Bit ECC Error");
        assert_eq!(lookup(79).name, "GPU has fallen off the bus");
        assert_eq!(lookup(9999).name, UNKNOWN_NAME);
    }

    #[test]
    fn critical_codes_are_the_health_checks_set() {
        let codes: Vec<u64> = critical_codes().collect();
        assert_eq!(codes, [48, 63, 64, 74, 79, 92, 94, 95, 119, 120]);
        for code in codes {
            let x = lookup(code);
            assert_ne!(
                x.action,
                Action::None,
                "critical XID {code} needs an action"
            );
            assert_ne!(x.cause, Cause::Application, "XID {code}");
        }
    }

    #[test]
    fn application_errors_point_at_the_application() {
        for code in [13, 31, 43] {
            assert_eq!(lookup(code).cause, Cause::Application);
            assert_eq!(lookup(code).action, Action::CheckApplication);
        }
        assert_eq!(lookup(79).action, Action::RebootNode);
    }

    #[test]
    fn kernel_log_lines_parse() {
        let line = "6,1234,5678901,-;NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.";
        assert_eq!(parse_kernel_xid(line), Some(((0, 0x3b, 0), 79)));
        let dmesg = "[ 12.5] NVRM: Xid (PCI:0000:18:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error";
        assert_eq!(parse_kernel_xid(dmesg), Some(((0, 0x18, 0), 48)));
        assert_eq!(
            parse_kernel_xid("NVRM: loading NVIDIA UNIX x86_64 Kernel Module"),
            Option::None
        );
        assert_eq!(parse_kernel_xid("NVRM: Xid (PCI:zz): 79,"), Option::None);
        assert_eq!(
            parse_kernel_xid("NVRM: Xid (PCI:0000:18:00): , pid"),
            Option::None
        );
        assert_eq!(
            parse_kernel_xid("NVRM: Xid (PCI:0000:18:00): 99999999999999999999999,"),
            Option::None
        );
    }
}
