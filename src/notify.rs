//! The service manager's notification protocol (`sd_notify(3)`): a few
//! words over the datagram socket named by `NOTIFY_SOCKET`.
//!
//! A unit of `Type=notify` is started when the daemon sends `READY=1`;
//! `STOPPING=1` tells the manager it is stopping, `RELOADING=1` that it
//! reloads its configuration (followed by `READY=1` once it runs again),
//! and `WATCHDOG=1`, sent at least every `WATCHDOG_USEC` microseconds when
//! the unit sets `WatchdogSec`, that it is alive. Without `NOTIFY_SOCKET`
//! (not under systemd) every call here does nothing.
//!
//! Thread: any. A [`Notifier`] is a connectionless socket; sending takes
//! no lock and never blocks (a full socket buffer is an error, reported,
//! not waited on). Allocations: none per message.
//!
//! The address is a file system path (`/run/systemd/notify`) or, with a
//! leading `@`, a Linux abstract socket name. The environment is left as
//! it is: a re-executed daemon keeps talking to the same manager.

#![forbid(unsafe_code)]

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The variable naming the manager's socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// The watchdog timeout in microseconds, when the unit has `WatchdogSec`.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// The process the watchdog timeout is meant for, when set.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";

/// Why the notification socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor `@name`.
    #[error(
        "{NOTIFY_SOCKET_ENV}={value:?} is neither an absolute path nor an abstract name (@name)"
    )]
    Address {
        value: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// No datagram socket could be created (out of descriptors).
    #[error("cannot create a socket for {NOTIFY_SOCKET_ENV}")]
    Socket(#[source] std::io::Error),
}

/// Sends notifications to the service manager.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, or `None` when it is not set
    /// (not started by a service manager, or by one that does not listen).
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        match std::env::var(NOTIFY_SOCKET_ENV) {
            Ok(value) if !value.is_empty() => Notifier::to(&value).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier sending to `value`, written as `NOTIFY_SOCKET` is.
    pub fn to(value: &str) -> Result<Notifier, NotifyError> {
        let address_error = |source| NotifyError::Address {
            value: value.to_string(),
            source,
        };
        let address = if let Some(name) = value.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(|error| address_error(Some(error)))?
        } else if value.starts_with('/') {
            SocketAddr::from_pathname(value).map_err(|error| address_error(Some(error)))?
        } else {
            return Err(address_error(None));
        };
        let socket = UnixDatagram::unbound().map_err(NotifyError::Socket)?;
        socket.set_nonblocking(true).map_err(NotifyError::Socket)?;
        Ok(Notifier { socket, address })
    }

    /// Sends one notification, e.g. `READY=1` or `STATUS=...`, as one
    /// datagram (lines separated by `\n`).
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.address)
            .map(drop)
    }
}

/// How often `WATCHDOG=1` must be sent: half the manager's timeout (the
/// margin `sd_watchdog_enabled(3)` recommends), or `None` when the unit has
/// no watchdog or the timeout is meant for another process.
pub fn watchdog_interval() -> Option<Duration> {
    let timeout_us: u64 = std::env::var(WATCHDOG_USEC_ENV).ok()?.parse().ok()?;
    if timeout_us == 0 {
        return None;
    }
    if let Ok(pid) = std::env::var(WATCHDOG_PID_ENV)
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    Some(Duration::from_micros(timeout_us) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a notification arrives as one datagram at the path named.
    /// Method: bind a datagram socket in a temporary directory, send.
    #[test]
    fn notification_reaches_a_path_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::to(path.to_str().expect("utf-8")).expect("notifier");
        notifier.notify("READY=1\nSTATUS=running").expect("send");
        let mut buffer = [0u8; 64];
        let received = receiver.recv(&mut buffer).expect("receive");
        assert_eq!(&buffer[..received], b"READY=1\nSTATUS=running");
    }

    /// Goal: an abstract name (`@name`) is used as one. Method: bind an
    /// abstract socket, send to `@` and its name.
    #[test]
    fn notification_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("log-capturer-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind");
        let notifier = Notifier::to(&format!("@{name}")).expect("notifier");
        notifier.notify("WATCHDOG=1").expect("send");
        let mut buffer = [0u8; 64];
        let received = receiver.recv(&mut buffer).expect("receive");
        assert_eq!(&buffer[..received], b"WATCHDOG=1");
    }

    /// Goal: a relative address is refused with a message naming it.
    #[test]
    fn relative_address_is_refused() {
        let error = Notifier::to("notify.sock").expect_err("relative");
        assert!(error.to_string().contains("notify.sock"), "{error}");
    }
}
