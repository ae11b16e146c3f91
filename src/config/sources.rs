//! The config of the message sources: `type = "syslog"` and
//! `type = "stdin"` (the file source's is in the parent module).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::limits;
pub use crate::source::syslog::StructuredData;

/// Labels a syslog source sets on every message from the message itself;
/// a static label of the same name would hide them.
pub const SYSLOG_LABELS: [&str; 8] = [
    "source_id",
    "host",
    "app",
    "procid",
    "msgid",
    "severity",
    "facility",
    "parse_error",
];

/// Largest `max_message_bytes`: a TCP connection holds up to one message
/// of this size while it is framed.
pub const MESSAGE_BYTES_LIMIT: usize = 16 * 1024 * 1024;

/// Smallest `max_message_bytes`: RFC 5424 §6.1 requires receivers to take
/// messages of 480 bytes; a smaller bound would cut ordinary messages.
pub const MESSAGE_BYTES_MIN: usize = 480;

/// `type = "syslog"`: receive syslog messages over UDP, TCP and a local
/// datagram socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogSourceConfig {
    /// UDP address to receive on.
    #[serde(default)]
    pub udp: Option<SocketAddr>,
    /// TCP address to listen on (octet-counted or newline-framed).
    #[serde(default)]
    pub tcp: Option<SocketAddr>,
    /// Path of a Unix datagram socket to create, as `/dev/log` is.
    #[serde(default)]
    pub unix: Option<PathBuf>,
    /// Permissions of the Unix socket.
    #[serde(default = "default_unix_mode", deserialize_with = "file_mode")]
    pub unix_mode: u32,
    /// Longest message kept whole; a longer one is truncated and counted.
    #[serde(
        default = "default_max_message_bytes",
        deserialize_with = "message_bytes"
    )]
    pub max_message_bytes: usize,
    /// Most TCP connections at once; more are accepted and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroUsize,
    /// A TCP connection that sends nothing for this long is closed.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: NonZeroU64,
    /// `SO_RCVBUF` asked for the UDP and Unix sockets; the kernel's
    /// default when left out.
    #[serde(default)]
    pub recv_buffer_bytes: Option<NonZeroUsize>,
    #[serde(default)]
    pub structured_data: StructuredData,
    /// Time zone of RFC 3164 timestamps (which carry none): an IANA name
    /// such as `Europe/Berlin`; the host's zone when left out.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Static labels attached to every message.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `type = "stdin"`: read lines from standard input until its end.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdinSourceConfig {
    /// Static labels attached to every line, besides `source_id`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Longest line kept whole; a longer one is split, as for files.
    #[serde(
        default = "super::default_max_line_bytes",
        deserialize_with = "super::line_bytes"
    )]
    pub max_line_bytes: usize,
}

fn default_unix_mode() -> u32 {
    0o666
}

fn default_max_message_bytes() -> usize {
    64 * 1024
}

fn default_max_connections() -> NonZeroUsize {
    NonZeroUsize::new(256).expect("not zero")
}

fn default_idle_timeout_ms() -> NonZeroU64 {
    NonZeroU64::new(300_000).expect("not zero")
}

fn message_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let bytes = usize::deserialize(deserializer)?;
    if !(MESSAGE_BYTES_MIN..=MESSAGE_BYTES_LIMIT).contains(&bytes) {
        return Err(serde::de::Error::custom(format!(
            "{bytes} is out of range {MESSAGE_BYTES_MIN}..={MESSAGE_BYTES_LIMIT}"
        )));
    }
    Ok(bytes)
}

/// A file mode: a string of octal digits (`"0660"`) or a TOML octal
/// integer (`0o660`). A decimal integer such as `660` is refused: it would
/// not mean what it looks like.
fn file_mode<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Text(String),
        Number(u32),
    }
    let mode = match Mode::deserialize(deserializer)? {
        Mode::Text(text) => u32::from_str_radix(&text, 8).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not an octal file mode such as \"0660\""
            ))
        })?,
        Mode::Number(number) => number,
    };
    if mode > 0o777 {
        return Err(serde::de::Error::custom(format!(
            "{mode} is not a file mode: write it in octal, as \"0660\" or 0o660"
        )));
    }
    Ok(mode)
}

impl SyslogSourceConfig {
    /// Why the table cannot be used, as (key, reason), if it cannot.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, address) in [("udp", self.udp), ("tcp", self.tcp)] {
            if let Some(address) = address
                && address.port() == 0
            {
                return Err((
                    key,
                    format!("{address}: port 0 would be a random port no sender knows"),
                ));
            }
        }
        if self.udp.is_none() && self.tcp.is_none() && self.unix.is_none() {
            return Err((
                "type",
                "a syslog source needs at least one of `udp`, `tcp` and `unix`".to_string(),
            ));
        }
        if let Some(path) = &self.unix {
            if path.as_os_str().is_empty() || path.file_name().is_none() {
                return Err(("unix", format!("{} is not a socket path", path.display())));
            }
            // sockaddr_un holds 108 bytes, the terminating NUL included.
            if path.as_os_str().len() > 107 {
                return Err((
                    "unix",
                    format!(
                        "{} is {} bytes long; a Unix socket path holds at most 107",
                        path.display(),
                        path.as_os_str().len()
                    ),
                ));
            }
        }
        if let Some(zone) = &self.timezone
            && let Err(error) = jiff::tz::TimeZone::get(zone)
        {
            return Err((
                "timezone",
                format!("{zone:?} is not a known time zone: {error}"),
            ));
        }
        if let Some(bytes) = self.recv_buffer_bytes
            && bytes.get() > i32::MAX as usize
        {
            return Err((
                "recv_buffer_bytes",
                format!("{bytes} is larger than the kernel takes"),
            ));
        }
        const _: () = assert!(MESSAGE_BYTES_LIMIT <= limits::LINE_BYTES_LIMIT);
        Ok(())
    }
}

/// Labels a docker source sets on every line itself.
pub const DOCKER_LABELS: [&str; 6] = [
    "source_id",
    "container_id",
    "container_name",
    "image",
    "stream",
    "parse_error",
];

/// `type = "docker"`: follow the `json-file` logs of Docker containers
/// found through the Engine API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSourceConfig {
    /// The Engine API's Unix socket.
    #[serde(default = "default_docker_socket")]
    pub socket: PathBuf,
    /// Container name globs to follow; every container when empty.
    #[serde(default)]
    pub include_containers: Vec<String>,
    /// Container name globs not to follow, though `include_containers`
    /// match them.
    #[serde(default)]
    pub exclude_containers: Vec<String>,
    /// `key=value` container labels a container must all carry.
    #[serde(default)]
    pub include_labels: Vec<String>,
    /// Which output streams to take: `stdout`, `stderr`.
    #[serde(default = "default_streams")]
    pub streams: Vec<String>,
    /// Static labels attached to every line.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Longest line kept whole once Docker's 16 KiB pieces are joined; a
    /// longer one is handed on in pieces of this size.
    #[serde(
        default = "super::default_max_line_bytes",
        deserialize_with = "super::line_bytes"
    )]
    pub max_line_bytes: usize,
    /// Container labels copied onto its lines (`com.example.service`
    /// becomes the label `com_example_service`).
    #[serde(default)]
    pub container_labels: Vec<String>,
    /// Where the container directories are, when not where dockerd says
    /// (the daemon sees them mounted elsewhere).
    #[serde(default)]
    pub containers_root: Option<PathBuf>,
    /// Where a container log with no stored position starts when the
    /// daemon starts (logs of containers started later are read whole).
    #[serde(default = "super::default_start_at")]
    pub start_at: crate::source::file::StartAt,
    /// How often an idle log is looked at when inotify says nothing.
    #[serde(default = "super::default_poll_interval_ms")]
    pub poll_interval_ms: NonZeroU64,
    /// Most log files open at once (current and rotated ones).
    #[serde(default = "super::default_max_files")]
    pub max_files: NonZeroUsize,
}

fn default_docker_socket() -> PathBuf {
    PathBuf::from("/var/run/docker.sock")
}

fn default_streams() -> Vec<String> {
    vec!["stdout".to_string(), "stderr".to_string()]
}

impl DockerSourceConfig {
    /// Checks what serde cannot: globs, selectors, streams, label names.
    /// Returns the key at fault and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, globs) in [
            ("include_containers", &self.include_containers),
            ("exclude_containers", &self.exclude_containers),
        ] {
            for (index, pattern) in globs.iter().enumerate() {
                if let Err(error) = glob::Pattern::new(pattern) {
                    return Err((
                        key,
                        format!("entry {index} {pattern:?} is not a glob pattern: {error}"),
                    ));
                }
            }
        }
        for (index, selector) in self.include_labels.iter().enumerate() {
            if selector
                .split_once('=')
                .is_none_or(|(key, _)| key.is_empty())
            {
                return Err((
                    "include_labels",
                    format!("entry {index} {selector:?} is not key=value"),
                ));
            }
        }
        if self.streams.is_empty() {
            return Err(("streams", "must name stdout, stderr or both".to_string()));
        }
        if let Some(stream) = self
            .streams
            .iter()
            .find(|stream| !matches!(stream.as_str(), "stdout" | "stderr"))
        {
            return Err((
                "streams",
                format!("{stream:?} is neither \"stdout\" nor \"stderr\""),
            ));
        }
        if self.max_line_bytes < crate::source::docker::lines::MAX_LINE_BYTES_MIN {
            return Err((
                "max_line_bytes",
                format!(
                    "{} is below the least of {} for a docker source",
                    self.max_line_bytes,
                    crate::source::docker::lines::MAX_LINE_BYTES_MIN
                ),
            ));
        }
        let mut names = std::collections::BTreeMap::new();
        for key in &self.container_labels {
            let name = crate::source::docker::watch::label_name(key);
            if let Some(other) = names.insert(name.clone(), key) {
                return Err((
                    "container_labels",
                    format!("{other:?} and {key:?} would both be the label {name:?}"),
                ));
            }
            if key.is_empty() || DOCKER_LABELS.contains(&name.as_str()) {
                return Err((
                    "container_labels",
                    format!("{key:?} would be the label {name:?}, which the daemon sets itself"),
                ));
            }
            if self.labels.contains_key(&name) {
                return Err((
                    "container_labels",
                    format!("{key:?} would be the label {name:?}, a static label already"),
                ));
            }
        }
        if self.socket.as_os_str().is_empty() {
            return Err(("socket", "is empty".to_string()));
        }
        Ok(())
    }

    /// The `include_labels` pairs.
    pub fn label_selectors(&self) -> Vec<(String, String)> {
        self.include_labels
            .iter()
            .filter_map(|selector| selector.split_once('='))
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }
}
