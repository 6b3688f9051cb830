//! The control file: how tests, benchmarks and operators script the simulated GPUs.
//!
//! A JSON document, replaced atomically (write a temporary file, rename over) so the
//! library never reads half of it. Example:
//!
//! ```json
//! {
//!   "gpus": 4,
//!   "model": "h100",
//!   "devices": { "1": { "overheat": true }, "2": { "ecc_uncorrectable": 3 } },
//!   "xid_events": [ { "gpu": 0, "code": 48 }, { "gpu": 3, "code": 79 } ]
//! }
//! ```
//!
//! Per device, besides faults: `"mig": ["3g.40gb", "1g.10gb"]` puts the GPU in MIG mode
//! with those instances (read at init), `"vgpu_licensed": true` makes it a vGPU guest.
//!
//! ```json
//! { "devices": { "0": { "mig": ["3g.40gb", "1g.10gb"] } } }
//! ```
//!
//! `xid_events` is append-only: the library delivers each entry once, in order, and
//! remembers how many it has delivered; appending entries injects new events.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole control document. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Control {
    /// Number of GPUs, read at `nvmlInit_v2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// GPU model name (see [`crate::model::MODELS`]), read at `nvmlInit_v2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Make `nvmlInit_v2` fail as if no driver were loaded.
    pub init_failure: bool,
    /// Faults per GPU index.
    pub devices: BTreeMap<u32, DeviceFaults>,
    /// XID events to deliver, in order; append-only.
    pub xid_events: Vec<XidEvent>,
}

/// Faults injected into one GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceFaults {
    /// Temperature at 93 °C with thermal throttling and reduced SM clock.
    pub overheat: bool,
    /// Uncorrectable (double-bit) ECC errors to add to the counters.
    pub ecc_uncorrectable: u64,
    /// Correctable (single-bit) ECC errors to add to the counters.
    pub ecc_correctable: u64,
    /// The GPU has fallen off the bus: every query answers `GPU_IS_LOST`.
    pub lost: bool,
    /// The driver hangs: every query of this GPU blocks until the fault is cleared.
    pub hang: bool,
    /// Pin GPU utilisation to this percentage instead of the moving wave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utilization: Option<u32>,
    /// MIG mode with these GPU instances, by profile name (`1g.10gb`, `3g.40gb`), on
    /// models that support MIG; read at `nvmlInit_v2` like a real mode change, which
    /// needs a GPU reset.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mig: Vec<String>,
    /// Make the GPU a vGPU guest whose license is held (`true`) or not (`false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vgpu_licensed: Option<bool>,
}

/// One XID event on one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct XidEvent {
    pub gpu: u32,
    pub code: u64,
}

impl Control {
    /// Parses a control document.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Faults for one GPU (none when not listed).
    pub fn faults(&self, gpu: u32) -> DeviceFaults {
        self.devices.get(&gpu).cloned().unwrap_or_default()
    }
}

/// A control file on disk, edited atomically. Used by tests and tools to inject faults
/// into a running simulated NVML.
#[derive(Debug, Clone)]
pub struct ControlFile {
    path: PathBuf,
}

impl ControlFile {
    /// Creates (or replaces) the control file at `path` with `control`.
    pub fn create(path: impl Into<PathBuf>, control: &Control) -> io::Result<Self> {
        let file = Self { path: path.into() };
        file.write(control)?;
        Ok(file)
    }

    /// Refers to an existing control file.
    pub fn open(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the current document; a missing file reads as the default document.
    pub fn read(&self) -> io::Result<Control> {
        match fs::read_to_string(&self.path) {
            Ok(text) => {
                Control::from_json(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Control::default()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the document atomically.
    pub fn write(&self, control: &Control) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(control).map_err(io::Error::other)?;
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)
    }

    /// Reads, changes and writes back the document.
    pub fn update(&self, change: impl FnOnce(&mut Control)) -> io::Result<()> {
        let mut control = self.read()?;
        change(&mut control);
        self.write(&control)
    }

    /// Changes the faults of one GPU.
    pub fn update_device(
        &self,
        gpu: u32,
        change: impl FnOnce(&mut DeviceFaults),
    ) -> io::Result<()> {
        self.update(|control| change(control.devices.entry(gpu).or_default()))
    }

    /// Appends an XID event for delivery.
    pub fn inject_xid(&self, gpu: u32, code: u64) -> io::Result<()> {
        self.update(|control| control.xid_events.push(XidEvent { gpu, code }))
    }

    /// Makes a GPU fall off the bus: XID 79 is delivered and the GPU turns lost, in one
    /// atomic write. Setting `lost` back to false brings it back, as a GPU reset would.
    pub fn fall_off_bus(&self, gpu: u32) -> io::Result<()> {
        self.update(|control| {
            control.xid_events.push(XidEvent { gpu, code: 79 });
            control.devices.entry(gpu).or_default().lost = true;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = ControlFile::create(dir.path().join("c.json"), &Control::default()).unwrap();
        file.update_device(2, |d| d.overheat = true).unwrap();
        file.inject_xid(1, 79).unwrap();
        let control = file.read().unwrap();
        assert!(control.faults(2).overheat);
        assert!(!control.faults(0).overheat);
        assert_eq!(control.xid_events, vec![XidEvent { gpu: 1, code: 79 }]);
    }

    #[test]
    fn missing_file_reads_as_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = ControlFile::open(dir.path().join("absent.json"));
        assert_eq!(file.read().unwrap(), Control::default());
    }
}
