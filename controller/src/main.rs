//! `gantry`: the controller daemon and fleet CLI. Arguments and commands live in
//! `gantry_controller::cli`; this parses the command line and runs it.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    gantry_controller::cli::run(gantry_controller::cli::Cli::parse())
}
