//! Stopping on SIGTERM (systemd) and SIGINT (Ctrl-C), the same way in every daemon and
//! long-running command: the signal cancels a token, and whoever holds it winds down.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM or SIGINT, logging which. Call it inside a
/// runtime; the handlers are installed before it returns, so a signal that arrives
/// afterwards is never lost to the default action (which would kill the process).
pub fn cancel_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        shutdown.cancel();
    });
    Ok(())
}
