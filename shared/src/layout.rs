//! Where the Debian packages and the tarball put the files the binaries look for, so the
//! agent's defaults and `gantry demo` name the same places.

/// The packages' private library directory: ONNX Runtime and the simulated NVML.
pub const LIBRARY_DIR: &str = "/usr/lib/gantry";

/// The same directory under an installed prefix (`<prefix>/bin/gantry-agent` →
/// `<prefix>/lib/gantry`), as an unpacked tarball has it.
pub const PREFIX_LIBRARY_DIR: &str = "lib/gantry";

/// ONNX Runtime's library, in the version the agent is built and tested against.
pub const ONNXRUNTIME_LIBRARY: &str = "libonnxruntime.so.1.31.1";
