//! A simulated NVML.
//!
//! Built as `libgantry_nvml_sim.so`, this library exports the NVML C functions that
//! `nvml-wrapper` (and so the Gantry agent) calls, answering them from scripted GPUs.
//! The agent's real NVML code path — library loading, `nvmlInit_v2`, every device query,
//! the XID event API — runs unchanged on machines without GPUs: in tests, benchmarks
//! and `gantry demo`.
//!
//! # Configuration
//!
//! Read when `nvmlInit_v2` is called:
//! - `GANTRY_NVML_SIM_GPUS`: number of GPUs (default 8, at most [`MAX_GPUS`]).
//! - `GANTRY_NVML_SIM_MODEL`: one of [`model::MODELS`] (default `h100`).
//! - `GANTRY_NVML_SIM_CONTROL`: path of a JSON control file ([`Control`]). Its `gpus`
//!   and `model` override the variables above at init; its per-GPU faults and XID
//!   events are re-read whenever the file changes, while the library is loaded.
//!
//! # Behaviour
//!
//! Values move over time (utilisation follows slow waves, power, temperature and clocks
//! follow utilisation, energy accumulates), each GPU with its own phase. Fields a model
//! does not support answer `NVML_ERROR_NOT_SUPPORTED`, as real NVML does: SXM boards
//! have no fans, Ampere and later retire rows instead of pages. Faults:
//! - `overheat`: 93 °C, SM clock cut to 60 %, thermal throttle reasons set;
//! - `ecc_uncorrectable` / `ecc_correctable`: added to the volatile and aggregate ECC
//!   counters, with remapped rows (or retired pages on older models) to match;
//! - `lost`: every query of that GPU answers `NVML_ERROR_GPU_IS_LOST`;
//! - `hang`: every query of that GPU blocks until the fault is cleared (a hung driver);
//! - XID events, delivered once each through `nvmlEventSetWait_v2`
//!   ([`ControlFile::fall_off_bus`] writes XID 79 together with `lost`, as a real
//!   GPU that falls off the bus does both);
//! - `init_failure`: `nvmlInit_v2` fails with `NVML_ERROR_DRIVER_NOT_LOADED`.

pub mod control;
mod ffi;
pub mod model;
mod sim;

pub use control::{Control, ControlFile, DeviceFaults, XidEvent};

/// Largest number of simulated GPUs.
pub const MAX_GPUS: u32 = 64;

/// File name of the built library, as the agent looks for it next to its executable.
pub const LIBRARY_FILE_NAME: &str = "libgantry_nvml_sim.so";

/// Environment variable naming the GPU count.
pub const ENV_GPUS: &str = "GANTRY_NVML_SIM_GPUS";
/// Environment variable naming the GPU model.
pub const ENV_MODEL: &str = "GANTRY_NVML_SIM_MODEL";
/// Environment variable naming the control file.
pub const ENV_CONTROL: &str = "GANTRY_NVML_SIM_CONTROL";
