//! The Gantry node agent as a library: everything `gantry-agent` does, so tests and
//! benchmarks can drive it. The binary only parses arguments, sets up logging and maps
//! results to exit codes.
//!
//! Data flows `telemetry` (sampler thread) → `api` (`/metrics`, `/v1/status`); `config`
//! is validated before anything is opened or bound.

pub mod api;
pub mod buffer;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod export;
pub mod health;
pub mod identity;
pub mod inference;
pub mod memory;
pub mod metrics;
pub mod renewal;
pub mod run;
pub mod serving;
pub mod status;
pub mod telemetry;
pub mod uplink;
