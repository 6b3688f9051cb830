//! `gantry`: the Gantry controller daemon and fleet CLI.
//!
//! The controller's subcommands (`init`, `serve`, `token`, `bundle`, `rollout`, `fleet`,
//! `audit`, `telemetry`, `demo`) are built on the agent's foundations and are not part of
//! this binary yet; today it answers `--help` and `--version` only.

use clap::Parser;

/// The Gantry controller and fleet CLI.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about)]
struct Cli {}

fn main() {
    Cli::parse();
}
