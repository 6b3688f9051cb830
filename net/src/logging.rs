//! Logging set-up shared by `gantry` and `gantry-agent`: `tracing` to stderr (the journal
//! under systemd), filtered by `GANTRY_LOG` (`tracing_subscriber`'s `EnvFilter` syntax),
//! colours only on a terminal without `NO_COLOR`, plain text or one JSON object per line.

use std::path::Path;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

fn filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_from_env("GANTRY_LOG").unwrap_or_else(|_| EnvFilter::new(default_level))
}

/// Logs to stderr at `default_level` unless `GANTRY_LOG` says otherwise.
pub fn init(default_level: &str, format: Format) {
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(default_level))
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        Format::Plain => builder.init(),
        Format::Json => builder.json().flatten_event(true).init(),
    }
}

/// Logs to a new file at `path`, plain text. A subscriber already set (a test harness)
/// is kept.
pub fn init_to_file(path: &Path, default_level: &str) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(default_level))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    Ok(())
}
