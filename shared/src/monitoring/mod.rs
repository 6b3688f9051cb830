//! Model monitoring's pure part: data profiles ([`profile`]) of a model's inputs and
//! outputs — the bundle's reference, and the windows a node profiles from what it serves
//! — the drift scores between them ([`drift`]), and the `.npy` array format reference
//! data comes in ([`npy`]).

pub mod drift;
pub mod npy;
pub mod profile;
mod sketch;

pub use sketch::Sketch;

#[cfg(test)]
mod tests;
