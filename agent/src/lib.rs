//! The Gantry node agent as a library: everything `gantry-agent` does, so tests and
//! benchmarks can drive it. The binary only parses arguments, sets up logging and maps
//! results to exit codes.
//!
//! Data flows `telemetry` (sampler thread) → `recorder` (health, then the durable
//! `buffer`) → `uplink` and `api` (`/metrics`, `/v1/status` assembled by `status`);
//! `config` is validated before anything is opened or bound. Imports go one way: `cli` →
//! `run` → the daemon parts (`uplink`, `delivery`, `serving`, `recorder`, `api`) → the
//! leaves they use (`buffer`, `bundle`, `inference`, `identity`, `telemetry`);
//! `scripts/module-cycles.py` checks that no module imports one that imports it back.

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
pub mod recorder;
pub mod renewal;
pub mod run;
pub mod serving;
pub mod status;
pub mod telemetry;
pub mod uplink;
