//! Types and formats that the Gantry agent and controller both speak: telemetry samples,
//! the bundle format with its signatures and trust policy.
//!
//! This crate does no I/O and knows no async runtime: it holds data types and the
//! pure logic over them, so that both sides (and their tests) agree on one definition.
//! Only types that cross a process boundary derive `Serialize`; each such type is a
//! compatibility promise.

#![forbid(unsafe_code)]

pub mod audit;
pub mod bundle;
pub mod exposition;
pub mod health;
pub mod layout;
pub mod monitoring;
pub mod oip;
pub mod otlp_response;
pub mod protocol;
pub mod signed_report;
pub mod telemetry;
pub mod telemetry_export;
pub mod tensor;
pub mod tls;
pub mod units;
pub mod xid;
