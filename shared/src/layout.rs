//! Where the Debian packages and the tarball put the files the binaries look for, so the
//! agent's defaults and `gantry demo` name the same places.

/// The packages' private library directory: ONNX Runtime and the simulated NVML.
pub const LIBRARY_DIR: &str = "/usr/lib/gantry";

/// The same directory under an installed prefix (`<prefix>/bin/gantry-agent` →
/// `<prefix>/lib/gantry`), as an unpacked tarball has it.
pub const PREFIX_LIBRARY_DIR: &str = "lib/gantry";

/// ONNX Runtime's library, in the version the agent is built and tested against.
pub const ONNXRUNTIME_LIBRARY: &str = "libonnxruntime.so.1.31.1";

/// Where ONNX Runtime's GPU build goes, under the library directory, with the CUDA runtime
/// libraries it links beside it. The agent takes that build by default when it is there.
pub const CUDA_SUBDIR: &str = "cuda";

/// The CUDA runtime libraries (from NVIDIA's wheels) the GPU build of ONNX Runtime needs
/// beside it: its CUDA provider links the first ones, and cuDNN is opened by name when a
/// session starts. The driver's `libcuda.so.1` is the node's own.
pub const CUDA_RUNTIME_LIBRARIES: &[&str] = &[
    "libcudart.so.13",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libcurand.so.10",
    "libnvJitLink.so.13",
    "libcufft.so.12",
    "libnvrtc.so.13",
    "libnvrtc-builtins.so.13.5",
    "libcudnn_graph.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_adv.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
    "libcudnn_engines_tensor_ir.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_ext.so.9",
    "libcudnn.so.9",
];
