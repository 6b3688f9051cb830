//! The Gantry controller and fleet CLI as a library; `main.rs` parses arguments and maps
//! results to exit codes.
//!
//! Signing keys (`keys`), bundles (`bundle_cmd`), trust policies (`policy_cmd`), the fleet
//! CA (`ca`) and controller directory (`home`), the daemon (`server`) with its store
//! (`store`), the admin client (`client`) with its readable output (`fleet_cmd`), and
//! `gantry demo` (`demo`).

pub mod audit;
pub mod audit_cmd;
pub mod bundle_cmd;
pub mod bundles;
pub mod ca;
pub mod capture;
pub mod certs;
pub mod cli;
pub mod client;
pub mod cordon;
pub mod demo;
pub mod drift;
pub mod export;
pub mod fleet_cmd;
pub mod home;
pub mod keys;
pub mod policy_cmd;
pub mod push;
pub mod quality;
pub mod reference;
pub mod rollout_cmd;
pub mod rollouts;
pub mod server;
pub mod store;
