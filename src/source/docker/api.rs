//! A small HTTP/1.1 client of the Docker Engine API over its Unix socket.
//!
//! Thread: the docker source's. Requests (`/_ping`, the container list, a
//! container's inspection) are synchronous, one connection each
//! (`Connection: close`), with [`REQUEST_TIMEOUT`] on every read and write:
//! dockerd answers them in milliseconds, and they happen at start-up, on a
//! container's start and after a reconnect, never per line. The `/events`
//! stream is one long-lived connection read without blocking
//! ([`EventStream::read_events`]); the source thread waits on its
//! descriptor.
//!
//! Limits: a response body is at most [`RESPONSE_BYTES_MAX`]; an event at
//! most [`EVENT_BYTES_MAX`]. Allocations: per request and per event.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The API version asked for: dockerd 20.10 speaks 1.41, and newer ones
/// still serve it.
pub const API_VERSION: &str = "v1.41";

/// Longest a request may take to be written or answered.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest response body taken (a list of a few thousand containers).
pub const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Largest event (an event names the container's labels: a few KiB).
pub const EVENT_BYTES_MAX: usize = 1024 * 1024;

/// What can go wrong talking to dockerd. Every message names the socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to dockerd at {socket}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dockerd at {socket}: {what} failed")]
    Io {
        socket: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("dockerd at {socket} answered {what} with status {status}")]
    Status {
        socket: PathBuf,
        what: &'static str,
        status: u16,
    },
    #[error("dockerd at {socket} sent a malformed answer to {what}: {reason}")]
    Malformed {
        socket: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("dockerd at {socket} closed the event stream")]
    EventsClosed { socket: PathBuf },
}

/// One container of the list (`GET /containers/json`).
#[derive(Debug, Clone, Deserialize)]
pub struct ContainerSummary {
    #[serde(rename = "Id")]
    pub id: String,
}

/// What the source needs of a container's inspection.
#[derive(Debug, Clone, Deserialize)]
pub struct ContainerDetails {
    #[serde(rename = "Id")]
    pub id: String,
    /// With a leading `/`.
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "LogPath", default)]
    pub log_path: String,
    #[serde(rename = "Config")]
    pub config: ContainerConfig,
    #[serde(rename = "HostConfig")]
    pub host_config: HostConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "Image", default)]
    pub image: String,
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HostConfig {
    #[serde(rename = "LogConfig")]
    pub log_config: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
}

/// One container event of the `/events` stream.
#[derive(Debug, Clone, Deserialize)]
pub struct ContainerEvent {
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(rename = "Action", default)]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    /// When it happened, nanoseconds since the epoch (0 if not given).
    #[serde(rename = "timeNano", default)]
    pub time_ns: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventActor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

/// The Engine API at one socket.
#[derive(Debug, Clone)]
pub struct EngineClient {
    socket: PathBuf,
}

impl EngineClient {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /_ping`: whether dockerd answers, and may be talked to.
    pub fn ping(&self) -> Result<(), ApiError> {
        self.get("/_ping", "ping").map(drop)
    }

    /// The running containers.
    pub fn list(&self) -> Result<Vec<ContainerSummary>, ApiError> {
        let path = format!("/{API_VERSION}/containers/json");
        let body = self.get(&path, "the container list")?;
        self.parse(&body, "the container list")
    }

    /// One container's inspection; `Ok(None)` when it is gone already.
    pub fn inspect(&self, id: &str) -> Result<Option<ContainerDetails>, ApiError> {
        if !id.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
            return Err(self.malformed("a container inspection", format!("container id {id:?}")));
        }
        let path = format!("/{API_VERSION}/containers/{id}/json");
        match self.get(&path, "a container inspection") {
            Ok(body) => self.parse(&body, "a container inspection").map(Some),
            Err(ApiError::Status { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Opens the stream of container events, read without blocking.
    /// With `since_ns`, dockerd first sends the events it kept from that
    /// time on (nanoseconds since the epoch).
    pub fn events(&self, since_ns: Option<u64>) -> Result<EventStream, ApiError> {
        let what = "the event stream";
        // filters={"type":["container"]}, URL-encoded.
        let mut path =
            format!("/{API_VERSION}/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D");
        if let Some(since) = since_ns {
            path.push_str(&format!(
                "&since={}.{:09}",
                since / 1_000_000_000,
                since % 1_000_000_000
            ));
        }
        let mut stream = self.connect()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: docker\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|source| self.io(what, source))?;
        let mut buffer = Vec::with_capacity(4096);
        let head_end =
            read_head(&mut stream, &mut buffer).map_err(|source| self.io(what, source))?;
        let head =
            Head::parse(&buffer[..head_end]).map_err(|reason| self.malformed(what, reason))?;
        if head.status != 200 {
            return Err(ApiError::Status {
                socket: self.socket.clone(),
                what,
                status: head.status,
            });
        }
        if !head.chunked {
            return Err(self.malformed(what, "the event stream is not chunked".to_string()));
        }
        stream
            .set_nonblocking(true)
            .map_err(|source| self.io(what, source))?;
        let mut decoder = EventDecoder::default();
        let mut early = Vec::new();
        // Bytes after the head are the stream's first: events they hold
        // are handed out with the first read.
        decoder
            .feed(&buffer[head_end..], &mut early)
            .map_err(|error| self.malformed(what, format!("{error:?}")))?;
        Ok(EventStream {
            socket: self.socket.clone(),
            stream,
            decoder,
            early,
        })
    }

    fn connect(&self) -> Result<UnixStream, ApiError> {
        let stream = UnixStream::connect(&self.socket).map_err(|source| ApiError::Connect {
            socket: self.socket.clone(),
            source,
        })?;
        let timeouts = stream
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REQUEST_TIMEOUT)));
        timeouts.map_err(|source| self.io("setting timeouts", source))?;
        Ok(stream)
    }

    /// One GET on a connection of its own; the body, de-chunked.
    fn get(&self, path: &str, what: &'static str) -> Result<Vec<u8>, ApiError> {
        let mut stream = self.connect()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|source| self.io(what, source))?;
        let mut response = Vec::with_capacity(4096);
        let mut limited = (&mut stream).take((RESPONSE_BYTES_MAX + 64 * 1024) as u64);
        limited
            .read_to_end(&mut response)
            .map_err(|source| self.io(what, source))?;
        let (status, body) =
            parse_response(&response).map_err(|reason| self.malformed(what, reason))?;
        if !(200..300).contains(&status) {
            return Err(ApiError::Status {
                socket: self.socket.clone(),
                what,
                status,
            });
        }
        if body.len() > RESPONSE_BYTES_MAX {
            return Err(self.malformed(
                what,
                format!("a body of more than {RESPONSE_BYTES_MAX} bytes"),
            ));
        }
        Ok(body)
    }

    fn parse<T: for<'de> Deserialize<'de>>(
        &self,
        body: &[u8],
        what: &'static str,
    ) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|error| self.malformed(what, error.to_string()))
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> ApiError {
        ApiError::Io {
            socket: self.socket.clone(),
            what,
            source,
        }
    }

    fn malformed(&self, what: &'static str, reason: String) -> ApiError {
        ApiError::Malformed {
            socket: self.socket.clone(),
            what,
            reason,
        }
    }
}

/// The open `/events` stream.
#[derive(Debug)]
pub struct EventStream {
    socket: PathBuf,
    stream: UnixStream,
    decoder: EventDecoder,
    /// Events that came with the response head.
    early: Vec<ContainerEvent>,
}

impl EventStream {
    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Reads what arrived, without blocking, and appends the container
    /// events it completes to `events`. An error ends the stream: the
    /// caller reconnects. Events that are not container events, or that do
    /// not parse, are skipped (counted in the returned number).
    pub fn read_events(&mut self, events: &mut Vec<ContainerEvent>) -> Result<u64, ApiError> {
        let mut buffer = [0u8; 8192];
        let mut skipped = 0;
        events.append(&mut self.early);
        loop {
            let bytes = match self.stream.read(&mut buffer) {
                Ok(0) => {
                    return Err(ApiError::EventsClosed {
                        socket: self.socket.clone(),
                    });
                }
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => return Ok(skipped),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(ApiError::Io {
                        socket: self.socket.clone(),
                        what: "reading the event stream",
                        source,
                    });
                }
            };
            skipped +=
                self.decoder
                    .feed(&buffer[..bytes], events)
                    .map_err(|error| match error {
                        FeedError::Ended => ApiError::EventsClosed {
                            socket: self.socket.clone(),
                        },
                        FeedError::Malformed(reason) => ApiError::Malformed {
                            socket: self.socket.clone(),
                            what: "the event stream",
                            reason,
                        },
                    })?;
        }
    }
}

/// Why the event stream's bytes end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// The last chunk came: dockerd ended the stream.
    Ended,
    Malformed(String),
}

/// The event stream's body decoder: chunked transfer coding, then one
/// JSON event per line. Apart from the socket so that it can be fuzzed.
///
/// Invariant: `raw` holds less than one chunk-size line plus
/// [`EVENT_BYTES_MAX`], `body` at most [`EVENT_BYTES_MAX`] (a partial
/// event); more is an error.
#[derive(Debug, Default)]
pub struct EventDecoder {
    /// Bytes received and not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked bytes not yet taken as events (a partial event).
    body: Vec<u8>,
    /// Bytes of the current chunk not received yet.
    chunk_left: usize,
}

impl EventDecoder {
    /// Takes `bytes` of the body as received; appends the container events
    /// they complete to `events` and returns how many other lines were
    /// skipped (other event types, lines that do not parse).
    pub fn feed(
        &mut self,
        bytes: &[u8],
        events: &mut Vec<ContainerEvent>,
    ) -> Result<u64, FeedError> {
        self.raw.extend_from_slice(bytes);
        self.dechunk_raw()?;
        let skipped = self.take_events(events);
        if self.body.len() > EVENT_BYTES_MAX || self.raw.len() > EVENT_BYTES_MAX {
            return Err(FeedError::Malformed(format!(
                "an event of more than {EVENT_BYTES_MAX} bytes"
            )));
        }
        Ok(skipped)
    }

    /// Moves whole chunk data from `raw` to `body`.
    fn dechunk_raw(&mut self) -> Result<(), FeedError> {
        let mut at = 0;
        let outcome = loop {
            if self.chunk_left > 0 {
                let take = self.chunk_left.min(self.raw.len() - at);
                self.body.extend_from_slice(&self.raw[at..at + take]);
                at += take;
                self.chunk_left -= take;
                if self.chunk_left > 0 {
                    break Ok(());
                }
                // The CRLF after the data is skipped with the next size line.
            }
            let rest = &self.raw[at..];
            let rest = rest.strip_prefix(b"\r\n").unwrap_or(rest);
            let skipped = self.raw.len() - at - rest.len();
            let Some(line_end) = memchr::memmem::find(rest, b"\r\n") else {
                break Ok(());
            };
            let size = match chunk_size(&rest[..line_end]) {
                Ok(0) => break Err(FeedError::Ended),
                Ok(size) => size,
                Err(reason) => break Err(FeedError::Malformed(reason)),
            };
            at += skipped + line_end + 2;
            self.chunk_left = size;
        };
        self.raw.drain(..at);
        outcome
    }

    /// Parses the complete lines of `body` as events.
    fn take_events(&mut self, events: &mut Vec<ContainerEvent>) -> u64 {
        let mut skipped = 0;
        let mut start = 0;
        while let Some(end) = memchr::memchr(b'\n', &self.body[start..]) {
            let line = &self.body[start..start + end];
            start += end + 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<ContainerEvent>(line) {
                Ok(event) if event.kind == "container" => events.push(event),
                _ => skipped += 1,
            }
        }
        self.body.drain(..start);
        skipped
    }
}

/// A whole response to a request (head and body, as read to its end):
/// its status and its body, de-chunked.
pub fn parse_response(response: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end =
        find_head_end(response).ok_or_else(|| "no end of the response head".to_string())?;
    let head = Head::parse(&response[..head_end])?;
    let body = &response[head_end..];
    let body = if head.chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((head.status, body))
}

/// A response's status line and the headers the client uses.
#[derive(Debug)]
struct Head {
    status: u16,
    chunked: bool,
}

impl Head {
    fn parse(head: &[u8]) -> Result<Head, String> {
        let text = std::str::from_utf8(head).map_err(|_| "a head that is not UTF-8".to_string())?;
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(format!("status line {status_line:?}"));
        }
        let status = parts
            .next()
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("status line {status_line:?}"))?;
        let chunked = lines.any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("transfer-encoding")
                    && value.trim().eq_ignore_ascii_case("chunked")
            })
        });
        Ok(Head { status, chunked })
    }
}

/// Where the head ends (after its blank line), if it is all there.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    memchr::memmem::find(bytes, b"\r\n\r\n").map(|at| at + 4)
}

/// Reads until the whole head is in `buffer`; returns where it ends.
fn read_head(stream: &mut UnixStream, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut piece = [0u8; 4096];
    loop {
        if let Some(end) = find_head_end(buffer) {
            return Ok(end);
        }
        if buffer.len() > 64 * 1024 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "response head longer than 64 KiB",
            ));
        }
        let bytes = stream.read(&mut piece)?;
        if bytes == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&piece[..bytes]);
    }
}

/// The size of a chunk-size line (hex, optional extensions after `;`).
fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let text =
        std::str::from_utf8(line).map_err(|_| "a chunk size that is not UTF-8".to_string())?;
    let digits = text.split(';').next().unwrap_or_default().trim();
    usize::from_str_radix(digits, 16)
        .ok()
        .filter(|&size| size <= RESPONSE_BYTES_MAX)
        .ok_or_else(|| format!("chunk size {digits:?}"))
}

/// A whole chunked body, de-chunked.
fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len());
    loop {
        let line_end = memchr::memmem::find(body, b"\r\n")
            .ok_or_else(|| "a chunk without its size line".to_string())?;
        let size = chunk_size(&body[..line_end])?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("a chunk cut short".to_string());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        let body = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n";
        assert_eq!(dechunk(body).expect("valid"), b"Wikipedia ");
        assert!(dechunk(b"4\r\nWi").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[test]
    fn heads_give_status_and_chunking() {
        let head = Head::parse(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("valid");
        assert_eq!((head.status, head.chunked), (404, true));
        let head = Head::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n").expect("valid");
        assert_eq!((head.status, head.chunked), (200, false));
        assert!(Head::parse(b"SSH-2.0\r\n\r\n").is_err());
    }

    /// Goal: events split anywhere across reads and chunks come out whole,
    /// other event types are skipped, and the end of the stream is an
    /// error. Method: a socket pair fed one byte at a time.
    #[test]
    fn events_are_taken_across_chunk_and_read_boundaries() {
        let (ours, mut theirs) = UnixStream::pair().expect("pair");
        ours.set_nonblocking(true).expect("nonblocking");
        let mut stream = EventStream {
            socket: PathBuf::from("/test.sock"),
            stream: ours,
            decoder: EventDecoder::default(),
            early: Vec::new(),
        };
        let first = br#"{"Type":"container","Action":"start","Actor":{"ID":"abc","Attributes":{"name":"web"}}}"#;
        let second = br#"{"Type":"network","Action":"connect","Actor":{"ID":"n1"}}"#;
        let mut wire = Vec::new();
        for event in [&first[..], &second[..]] {
            let mut text = event.to_vec();
            text.push(b'\n');
            let (head, tail) = text.split_at(10);
            for part in [head, tail] {
                wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                wire.extend_from_slice(part);
                wire.extend_from_slice(b"\r\n");
            }
        }
        let mut events = Vec::new();
        let mut skipped = 0;
        for byte in &wire {
            theirs.write_all(std::slice::from_ref(byte)).expect("write");
            skipped += stream.read_events(&mut events).expect("open");
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action, "start");
        assert_eq!(events[0].actor.id, "abc");
        assert_eq!(events[0].actor.attributes["name"], "web");
        assert_eq!(skipped, 1);
        theirs.write_all(b"0\r\n\r\n").expect("write");
        assert!(matches!(
            stream.read_events(&mut events),
            Err(ApiError::EventsClosed { .. })
        ));
    }
}
