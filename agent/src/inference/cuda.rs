//! The CUDA runtime for ONNX Runtime's GPU build.
//!
//! The GPU build of ONNX Runtime goes in `<libdir>/cuda/` (`/usr/lib/gantry/cuda/`) with
//! the CUDA runtime libraries of NVIDIA's wheels beside it
//! ([`layout::CUDA_RUNTIME_LIBRARIES`]; `scripts/tools.sh onnxruntime-cuda` assembles
//! it). ONNX Runtime opens its CUDA provider library from its own directory, but that library finds its CUDA dependencies only on the
//! loader's search path, where a private directory is not — so, as ONNX Runtime's own
//! Python package does, the agent loads them first, by path, from beside the ONNX Runtime
//! library it loaded. Then the provider's dependencies are already in the process.
//!
//! Nothing is loaded until a model first tries CUDA, and not before the NVIDIA driver
//! (`libcuda.so.1`) was found: a node without a GPU never maps two gigabytes of CUDA
//! libraries it cannot use. A library directory without these files (an ONNX Runtime built
//! by the operator against a system CUDA) is left to the loader's own search path.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use gantry_shared::layout;
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

/// Why CUDA cannot run in this process, or `None` when it may be tried; `onnxruntime` is
/// the library ONNX Runtime was loaded from. The answer is found once.
pub(super) fn problem(onnxruntime: &Path) -> Option<String> {
    static PROBLEM: OnceLock<Option<String>> = OnceLock::new();
    PROBLEM
        .get_or_init(|| {
            driver_problem().or_else(|| {
                let dir = onnxruntime.parent().unwrap_or_else(|| Path::new("."));
                preload(dir)
            })
        })
        .clone()
}

/// Whether the NVIDIA driver's CUDA library loads; it stays loaded when it does.
fn driver_problem() -> Option<String> {
    // SAFETY: loading the driver's library runs its initialisers, as any CUDA program does.
    #[allow(unsafe_code)]
    match unsafe { Library::open(Some("libcuda.so.1"), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(library) => {
            std::mem::forget(library);
            None
        }
        Err(e) => Some(format!(
            "no NVIDIA driver on this node: libcuda.so.1 does not load ({})",
            describe(&e)
        )),
    }
}

/// The loader's own words (libloading keeps them in the error's source).
fn describe(e: &libloading::Error) -> String {
    std::error::Error::source(e).map_or_else(|| e.to_string(), ToString::to_string)
}

/// Loads the CUDA runtime libraries found in `dir` (kept for the life of the process);
/// what did not load, and why.
fn preload(dir: &Path) -> Option<String> {
    let mut pending: Vec<PathBuf> = layout::CUDA_RUNTIME_LIBRARIES
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.is_file())
        .collect();
    if pending.is_empty() {
        return None;
    }
    let found = pending.len();
    // In passes until none loads: a library whose dependency among them comes later in
    // the list loads in the next pass.
    let mut errors = Vec::new();
    loop {
        errors.clear();
        let before = pending.len();
        pending.retain(|path| {
            // SAFETY: NVIDIA's runtime libraries, loaded as ONNX Runtime's provider would
            // load them; their initialisers touch no GPU before a call.
            #[allow(unsafe_code)]
            match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(library) => {
                    std::mem::forget(library);
                    false
                }
                Err(e) => {
                    errors.push(describe(&e));
                    true
                }
            }
        });
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    if pending.is_empty() {
        tracing::info!(dir = %dir.display(), libraries = found, "CUDA runtime loaded beside ONNX Runtime");
        return None;
    }
    Some(format!(
        "the CUDA runtime in {} does not load ({} of {found} libraries: {}); put back the CUDA runtime libraries beside the GPU build",
        dir.display(),
        pending.len(),
        errors.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_runtime_is_left_to_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(preload(dir.path()), None);
    }

    #[test]
    fn a_damaged_runtime_library_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libcudart.so.13"), b"not an ELF file").unwrap();
        let problem = preload(dir.path()).unwrap();
        assert!(problem.contains("1 of 1 libraries"), "{problem}");
        assert!(problem.contains("libcudart.so.13"), "{problem}");
        assert!(
            problem.contains("put back the CUDA runtime libraries beside the GPU build"),
            "{problem}"
        );
    }
}
