//! Listening sockets handed from a daemon to the daemon that replaces it
//! (a reload re-executes the binary), so that no datagram is refused and
//! no connection attempt turned away while the new one starts.
//!
//! The old process duplicates each listening socket when its syslog source
//! binds it ([`Listeners`]). At a reload it clears `FD_CLOEXEC` on those
//! duplicates and names them in [`LISTEN_FDS_ENV`], one line per socket,
//! `<descriptor> <kind> <address>` (`7 udp 127.0.0.1:5514`, `9 unix
//! /run/log-capturer/syslog.sock`), with [`LISTEN_PID_ENV`] set to its
//! process id, which `execve` keeps. The new process takes the list only
//! when that id is its own (a child that inherited the environment must
//! not take descriptors it does not have), checks that each descriptor is
//! a socket of the kind named ([`Inherited::take`]), and its syslog
//! sources use those instead of binding. While the old source has stopped
//! and the new one has not started, the kernel keeps queueing datagrams
//! and connections on the shared socket; nothing sees a closed port.
//!
//! What cannot be handed over is counted: an inherited socket the new
//! config no longer names is closed (its queued datagrams with it), a
//! descriptor that is not the socket named is closed, and a Unix socket
//! whose path contains a newline is not handed over (it is bound anew).
//!
//! Thread: the main thread (reload) and the pipeline's builder; nothing
//! here runs on the data path. Limits: at most [`LISTENERS_MAX`] sockets
//! are handed over; more are closed and counted.

use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Names the inherited descriptors, one line per socket.
pub const LISTEN_FDS_ENV: &str = "LOG_CAPTURER_LISTEN_FDS";
/// The process the descriptors were handed to.
pub const LISTEN_PID_ENV: &str = "LOG_CAPTURER_LISTEN_PID";

/// Sockets handed over at most; a source has at most three, and a config
/// rarely more than a few sources.
pub const LISTENERS_MAX: usize = 256;

/// The kind of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Udp,
    Tcp,
    /// A Unix datagram socket bound to a path.
    Unix,
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Udp => "udp",
            ListenerKind::Tcp => "tcp",
            ListenerKind::Unix => "unix",
        }
    }

    fn parse(word: &str) -> Option<ListenerKind> {
        match word {
            "udp" => Some(ListenerKind::Udp),
            "tcp" => Some(ListenerKind::Tcp),
            "unix" => Some(ListenerKind::Unix),
            _ => None,
        }
    }

    /// `SO_TYPE` and whether `SO_DOMAIN` is `AF_UNIX`, as the kernel
    /// reports them for a socket of this kind.
    fn expected(self) -> (libc::c_int, bool) {
        match self {
            ListenerKind::Udp => (libc::SOCK_DGRAM, false),
            ListenerKind::Tcp => (libc::SOCK_STREAM, false),
            ListenerKind::Unix => (libc::SOCK_DGRAM, true),
        }
    }
}

/// What a listening socket is bound to: the key by which the new process
/// finds it, whatever source id the new config gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerKey {
    pub kind: ListenerKind,
    /// A socket address as `SocketAddr` prints it, or a path.
    pub address: String,
}

impl ListenerKey {
    pub fn udp(address: std::net::SocketAddr) -> Self {
        Self {
            kind: ListenerKind::Udp,
            address: address.to_string(),
        }
    }

    pub fn tcp(address: std::net::SocketAddr) -> Self {
        Self {
            kind: ListenerKind::Tcp,
            address: address.to_string(),
        }
    }

    /// `None` for a path that is not UTF-8 or holds a newline: it cannot
    /// be written in the list (such a socket is bound anew).
    pub fn unix(path: &Path) -> Option<Self> {
        let address = path.to_str()?;
        if address.contains('\n') || address.is_empty() {
            return None;
        }
        Some(Self {
            kind: ListenerKind::Unix,
            address: address.to_string(),
        })
    }
}

impl fmt::Display for ListenerKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.kind.as_str(), self.address)
    }
}

/// Why a socket could not be prepared for the next process.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("cannot keep socket {key} open across exec")]
    Inherit {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

/// Duplicates of the listening sockets of the running sources, and the
/// flag that tells syslog sources to leave their Unix socket's path in
/// place when they stop (the next process goes on receiving on it).
#[derive(Debug, Default)]
pub struct Listeners {
    sockets: Vec<(ListenerKey, OwnedFd)>,
    keep_paths: Arc<AtomicBool>,
    /// Sockets that could not be duplicated or listed.
    not_kept: u64,
}

impl Listeners {
    pub fn new() -> Self {
        Self::default()
    }

    /// The flag a syslog source reads when it stops: set, it leaves its
    /// Unix socket's path for the next process.
    pub fn keep_paths_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.keep_paths)
    }

    /// Keeps a duplicate of `fd` to hand over. `None` as key: the socket
    /// cannot be listed, counted in [`not_kept`](Self::not_kept).
    pub fn push(&mut self, key: Option<ListenerKey>, fd: std::io::Result<OwnedFd>) {
        match (key, fd) {
            (Some(key), Ok(fd)) if self.sockets.len() < LISTENERS_MAX => {
                self.sockets.push((key, fd));
            }
            _ => self.not_kept += 1,
        }
    }

    /// Whether a socket bound to `key` is kept.
    pub fn contains(&self, key: &ListenerKey) -> bool {
        self.sockets.iter().any(|(known, _)| known == key)
    }

    /// Sockets that will not be handed over.
    pub fn not_kept(&self) -> u64 {
        self.not_kept
    }

    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// From now on, stopping sources leave their Unix socket paths.
    pub fn keep_paths(&self) {
        // Release pairs with the Acquire load of the stopping source.
        self.keep_paths.store(true, Ordering::Release);
    }

    /// Makes every socket survive `execve` and returns the environment
    /// variables that name them to the next process (`pid` is this one,
    /// which `execve` keeps).
    pub fn prepare_exec(&self, pid: u32) -> Result<Vec<(String, String)>, HandoverError> {
        let mut list = String::new();
        for (key, fd) in &self.sockets {
            clear_close_on_exec(fd.as_raw_fd()).map_err(|source| HandoverError::Inherit {
                key: key.to_string(),
                source,
            })?;
            list.push_str(&format!("{} {key}\n", fd.as_raw_fd()));
        }
        Ok(vec![
            (LISTEN_FDS_ENV.to_string(), list),
            (LISTEN_PID_ENV.to_string(), pid.to_string()),
        ])
    }

    /// The sockets, for a pipeline restarted in this process (when
    /// `execve` failed).
    pub fn into_inherited(self) -> Inherited {
        Inherited {
            sockets: self.sockets,
            refused: 0,
        }
    }
}

/// What the pipeline's builder needs to hand sockets over: the sockets
/// inherited from the previous process, and the duplicates it keeps for
/// the next one.
#[derive(Debug, Default)]
pub struct Handover {
    pub inherited: Inherited,
    pub listeners: Listeners,
}

/// Sockets inherited from the process this one replaced, not yet taken.
#[derive(Debug, Default)]
pub struct Inherited {
    sockets: Vec<(ListenerKey, OwnedFd)>,
    /// Descriptors named in the list that were not the socket named, or
    /// lines that could not be read; closed.
    refused: u64,
}

impl Inherited {
    /// No sockets: a daemon started afresh.
    pub fn none() -> Self {
        Self::default()
    }

    /// The sockets named by [`LISTEN_FDS_ENV`], if [`LISTEN_PID_ENV`] is
    /// this process.
    pub fn from_env() -> Self {
        let Ok(pid) = std::env::var(LISTEN_PID_ENV) else {
            return Self::none();
        };
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return Self::none();
        }
        let list = std::env::var(LISTEN_FDS_ENV).unwrap_or_default();
        let mut inherited = Self::none();
        for line in list.lines().filter(|line| !line.is_empty()) {
            match parse_line(line) {
                // SAFETY: the previous image of this process (same pid,
                // checked above) listed this descriptor as a socket it
                // kept open across execve for us, and nothing in this
                // process has opened or closed descriptors under that
                // number before the pipeline is built: it is owned by
                // nobody else. `take` checks it is a socket of the kind
                // named before using it.
                Some((fd, key)) if inherited.sockets.len() < LISTENERS_MAX => inherited
                    .sockets
                    .push((key, unsafe { OwnedFd::from_raw_fd(fd) })),
                _ => inherited.refused += 1,
            }
        }
        inherited
    }

    /// The inherited socket bound to `key`, if there is one and it is a
    /// socket of that kind (close-on-exec set again). A descriptor that is
    /// not is closed and counted.
    pub fn take(&mut self, key: &ListenerKey) -> Option<OwnedFd> {
        let position = self.sockets.iter().position(|(known, _)| known == key)?;
        let (_, fd) = self.sockets.swap_remove(position);
        let kind_matches =
            socket_kind(fd.as_raw_fd()).is_ok_and(|kind| kind == key.kind.expected());
        if !kind_matches || set_close_on_exec(fd.as_raw_fd()).is_err() {
            self.refused += 1;
            return None;
        }
        Some(fd)
    }

    /// Sockets inherited and not taken: the new config no longer names
    /// them. Closed here; returns their keys, to be logged and counted.
    pub fn close_rest(&mut self) -> Vec<ListenerKey> {
        self.sockets.drain(..).map(|(key, _)| key).collect()
    }

    /// Descriptors refused (not the socket named, or an unreadable line).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }
}

/// `<fd> <kind> <address>`; the address may hold spaces (a path).
fn parse_line(line: &str) -> Option<(RawFd, ListenerKey)> {
    let mut words = line.splitn(3, ' ');
    let fd: RawFd = words.next()?.parse().ok()?;
    let kind = ListenerKind::parse(words.next()?)?;
    let address = words.next()?.to_string();
    // 0, 1 and 2 are standard streams, never a handed-over socket.
    (fd > 2 && !address.is_empty()).then_some((fd, ListenerKey { kind, address }))
}

fn clear_close_on_exec(fd: RawFd) -> std::io::Result<()> {
    change_fd_flags(fd, |flags| flags & !libc::FD_CLOEXEC)
}

fn set_close_on_exec(fd: RawFd) -> std::io::Result<()> {
    change_fd_flags(fd, |flags| flags | libc::FD_CLOEXEC)
}

fn change_fd_flags(fd: RawFd, change: impl Fn(libc::c_int) -> libc::c_int) -> std::io::Result<()> {
    // SAFETY: F_GETFD takes no argument and only reads the descriptor's
    // flags; `fd` is owned by the caller for the duration of the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: F_SETFD takes an int of flags and changes only this
    // descriptor's close-on-exec flag; `fd` is owned as above.
    let result = unsafe { libc::fcntl(fd, libc::F_SETFD, change(flags)) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `SO_TYPE`, and whether the socket's domain is `AF_UNIX`.
fn socket_kind(fd: RawFd) -> std::io::Result<(libc::c_int, bool)> {
    let option = |name| -> std::io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `fd` is owned by the caller for the call; the kernel
        // writes at most `length` bytes into `value`, a c_int on the
        // stack, and its length into `length`.
        let result = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&raw mut value).cast(),
                &raw mut length,
            )
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(value)
    };
    let socket_type = option(libc::SO_TYPE)?;
    let domain = option(libc::SO_DOMAIN)?;
    Ok((socket_type, domain == libc::AF_UNIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Goal: a line of the list is read back as written, a path with
    /// spaces included; malformed lines and standard streams are refused.
    #[test]
    fn list_lines_round_trip() {
        let key = ListenerKey::unix(Path::new("/run/log capturer/syslog.sock")).expect("key");
        let line = format!("9 {key}");
        assert_eq!(parse_line(&line), Some((9, key)));
        let udp = ListenerKey::udp("[::1]:5514".parse().expect("address"));
        assert_eq!(parse_line(&format!("12 {udp}")), Some((12, udp)));
        for bad in [
            "",
            "x udp 1.2.3.4:5",
            "7 sctp 1.2.3.4:5",
            "7 udp",
            "2 udp 1.2.3.4:5",
        ] {
            assert_eq!(parse_line(bad), None, "{bad:?}");
        }
        assert!(ListenerKey::unix(Path::new("/tmp/a\nb")).is_none());
    }

    /// Goal: `take` gives a socket of the kind named and refuses one of
    /// another kind (a TCP listener named as UDP). Method: real sockets.
    #[test]
    fn take_checks_the_socket_kind() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
        let udp_key = ListenerKey::udp(udp.local_addr().expect("address"));
        let tcp_as_udp = ListenerKey::udp(tcp.local_addr().expect("address"));
        let mut inherited = Inherited {
            sockets: vec![
                (
                    udp_key.clone(),
                    udp.as_fd().try_clone_to_owned().expect("dup"),
                ),
                (
                    tcp_as_udp.clone(),
                    tcp.as_fd().try_clone_to_owned().expect("dup"),
                ),
            ],
            refused: 0,
        };
        assert!(inherited.take(&udp_key).is_some());
        assert!(inherited.take(&tcp_as_udp).is_none());
        assert_eq!(inherited.refused(), 1);
        assert!(inherited.is_empty());
    }

    /// Goal: `prepare_exec` clears close-on-exec and lists each socket.
    #[test]
    fn prepare_exec_lists_sockets_and_clears_cloexec() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let key = ListenerKey::udp(udp.local_addr().expect("address"));
        let mut listeners = Listeners::new();
        listeners.push(Some(key.clone()), udp.as_fd().try_clone_to_owned());
        listeners.push(None, udp.as_fd().try_clone_to_owned());
        assert_eq!(listeners.not_kept(), 1);
        let variables = listeners.prepare_exec(42).expect("prepare");
        let (fd, listed) = parse_line(variables[0].1.trim_end()).expect("one line");
        assert_eq!(listed, key);
        // SAFETY: F_GETFD only reads the flags of a descriptor that
        // `listeners` owns for the rest of this test.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, 0);
        assert_eq!(variables[1], (LISTEN_PID_ENV.to_string(), "42".to_string()));
    }
}
