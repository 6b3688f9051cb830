//! `gantry-agent`: the node agent. Arguments and commands live in `gantry_agent::cli`;
//! this makes the process safe for them (environment, allocator) and runs the command
//! line.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    keep_onnxruntime_in_the_state_dir();
    gantry_agent::memory::limit_arenas();
    gantry_agent::cli::run(gantry_agent::cli::Cli::parse())
}

/// ONNX Runtime's own telemetry writes a device id and a database under
/// `~/.cache/Microsoft/DeveloperTools` and a session file in `/tmp` as soon as its
/// environment is created (turning it off through the API comes too late): the agent
/// writes nothing outside its state directory, so it is switched off before the library
/// can ever load.
fn keep_onnxruntime_in_the_state_dir() {
    #[allow(unsafe_code)]
    // SAFETY: the first thing `main` does, before any other thread exists, so nothing can
    // read the environment concurrently.
    unsafe {
        std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
    }
}
