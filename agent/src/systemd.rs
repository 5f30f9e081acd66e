//! The systemd service protocol (`sd_notify(3)`) spoken directly over `$NOTIFY_SOCKET`, so
//! that `Type=notify` and `WatchdogSec=` work without linking libsystemd.
//!
//! READY=1 is sent once every AG's local replica has been probed (the agent then knows what
//! it should own); WATCHDOG=1 is sent from the driver's own loop, so a loop that hangs (a
//! wedged executor call, a deadlock) stops the pings and systemd restarts the agent. Without
//! `$NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub(crate) struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// The notifier of `$NOTIFY_SOCKET`, `None` when unset; an unusable value is an error
    /// (the unit expects notifications that would never come).
    pub(crate) fn from_env() -> Result<Option<Notifier>, String> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let path = path
            .into_string()
            .map_err(|_| "NOTIFY_SOCKET is not UTF-8".to_owned())?;
        let address = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        } else if path.starts_with('/') {
            std::os::unix::net::SocketAddr::from_pathname(&path)
        } else {
            return Err(format!(
                "NOTIFY_SOCKET {path:?} is neither a path nor @abstract"
            ));
        }
        .map_err(|e| format!("NOTIFY_SOCKET {path:?}: {e}"))?;
        let socket = UnixDatagram::unbound().map_err(|e| format!("sd_notify socket: {e}"))?;
        Ok(Some(Notifier { socket, address }))
    }

    /// Sends one notification (`READY=1`, `WATCHDOG=1`, `STATUS=...`, `STOPPING=1`).
    pub(crate) fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.address) {
            tracing::warn!(error = %e, message, "sd_notify failed");
        }
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC` when it is meant for this
/// process (`$WATCHDOG_PID` absent or ours), as sd_watchdog_enabled(3) advises.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("tdsvip-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            address: std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
        };
        n.send("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
