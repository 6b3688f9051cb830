//! The Gantry controller and fleet CLI as a library; `main.rs` parses arguments and maps
//! results to exit codes.
//!
//! Today: signing keys (`keys`), bundles (`bundle_cmd`) and trust policies (`policy_cmd`).

pub mod atomic_file;
pub mod bundle_cmd;
pub mod ca;
pub mod keys;
pub mod policy_cmd;
pub mod store;
