//! The systemd notification protocol (`sd_notify`): readiness, watchdog pings and the
//! stopping notice, sent as datagrams to `$NOTIFY_SOCKET` (a path, or an abstract
//! socket written `@name`). Outside systemd the variable is unset and nothing is sent.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when not running under a service manager.
    pub fn from_env() -> Option<Self> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let text = path.to_string_lossy();
        let target = if let Some(name) = text.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&*path).ok()?
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Self { socket, target })
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.target) {
            tracing::debug!(error = %e, "could not notify the service manager");
        }
    }

    /// The service is ready; `status` is shown by `systemctl status`.
    pub fn ready(&self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// A watchdog ping: the main loop is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// The service is stopping.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when it is set for this
/// process (`$WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
