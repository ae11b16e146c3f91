//! A fake Loki push endpoint for what the real Loki of `../shared/loki`
//! will not do on demand: answer 503 for ten seconds, 429 with
//! `Retry-After`, hang, reset connections, or refuse one stream with a
//! Loki-like 400 while "storing" the rest of the request.
//!
//! It listens on `127.0.0.1:<ephemeral>` and speaks enough HTTP/1.1 for a
//! push client: keep-alive, `Content-Length` or chunked bodies. One thread
//! accepts, one thread serves each connection. Every request is decoded
//! (protobuf + snappy block format, or JSON, optionally gzipped) and
//! recorded; a behaviour the test sets, and may change while the fake runs,
//! chooses the [`Reply`] from the decoded request. Dropping the fake stops
//! every thread (read timeouts of 50 ms let them see the stop).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The push path a client is expected to use.
pub const PUSH_PATH: &str = "/loki/api/v1/push";

/// Longest request head accepted, bytes.
const HEAD_BYTES_MAX: usize = 64 * 1024;

/// How often a blocked connection thread looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// One decoded entry of a push request.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    /// The labels of the entry's stream.
    pub labels: BTreeMap<String, String>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub line: Vec<u8>,
}

impl Entry {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// The line as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.line).into_owned()
    }
}

/// What the fake does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Answer `status` with `headers` and `body`. `stored` lists the
    /// indices (into the request's entries) that count as accepted; `None`
    /// means all of them for a 2xx and none otherwise.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        stored: Option<Vec<usize>>,
    },
    /// Read the request and never answer: until the client closes the
    /// connection, the duration (if any) passes, or the fake is dropped;
    /// then close the connection.
    Hang(Option<Duration>),
    /// Close the connection right after reading the request, with a TCP
    /// reset (`SO_LINGER` 0) and no answer.
    Reset,
}

impl Reply {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: String::new(),
            stored: None,
        }
    }

    /// The same answer with one more header (only for [`Reply::Respond`]).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Respond { headers, .. } = &mut self {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// The same answer with `text` as its body.
    pub fn body(mut self, text: &str) -> Reply {
        if let Reply::Respond { body, .. } = &mut self {
            *body = text.to_string();
        }
        self
    }

    /// The same answer, declaring the entries at `indices` stored (what
    /// Loki does with the good entries of a request it answers 400).
    pub fn storing(mut self, indices: Vec<usize>) -> Reply {
        if let Reply::Respond { stored, .. } = &mut self {
            *stored = Some(indices);
        }
        self
    }
}

/// What the behaviour sees of a request.
pub struct RequestView<'a> {
    /// Position of the request among all requests to this fake, from 0.
    pub index: usize,
    pub arrived: Instant,
    /// Time from the first request's arrival to this one's.
    pub since_first: Duration,
    pub method: &'a str,
    pub path: &'a str,
    /// Header names in lower case, in the order received.
    pub headers: &'a [(String, String)],
    pub entries: &'a [Entry],
}

impl RequestView<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(self.headers, name)
    }
}

/// Chooses the reply to a request.
pub type Behaviour = Box<dyn FnMut(&RequestView<'_>) -> Reply + Send>;

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Being decided or written.
    Pending,
    Status(u16),
    /// Never answered (see [`Reply::Hang`]).
    Hung,
    /// The connection was reset.
    Reset,
}

/// One request as the fake received and answered it.
#[derive(Debug, Clone)]
pub struct Request {
    pub index: usize,
    /// When the first byte of the request arrived.
    pub arrived: Instant,
    /// When the answer was written or the connection reset (None while
    /// pending and for a hung request).
    pub answered: Option<Instant>,
    /// For a hung request: when the client closed the connection, if it
    /// did before the hang ended.
    pub client_closed: Option<Instant>,
    /// Number of the connection (from 0, in accept order).
    pub connection: usize,
    pub method: String,
    pub path: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// Length of the body as received (before any decompression).
    pub body_bytes: usize,
    pub entries: Vec<Entry>,
    /// Why the body could not be decoded; such a request is answered 400
    /// without asking the behaviour.
    pub decode_error: Option<String>,
    pub outcome: Outcome,
    /// Indices into `entries` of the entries that count as accepted.
    pub stored: Vec<usize>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The status sent, if an answer was sent.
    pub fn status(&self) -> Option<u16> {
        match self.outcome {
            Outcome::Status(status) => Some(status),
            _ => None,
        }
    }

    pub fn org_id(&self) -> Option<&str> {
        self.header("x-scope-orgid")
    }

    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }

    pub fn content_encoding(&self) -> Option<&str> {
        self.header("content-encoding")
    }

    /// The entries that count as accepted.
    pub fn stored_entries(&self) -> impl Iterator<Item = &Entry> {
        self.stored.iter().map(|&index| &self.entries[index])
    }
}

fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

struct Shared {
    stop: AtomicBool,
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Request>>,
    first_arrival: Mutex<Option<Instant>>,
    connections: AtomicUsize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// A poisoned lock (a panicking behaviour) still gives its data: the test
/// that panicked reports, the others keep their fake.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The running fake; stopped on drop.
pub struct FakeLoki {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeLoki {
    /// A fake that answers every request 204.
    pub fn start() -> FakeLoki {
        FakeLoki::with_behaviour(always(Reply::status(204)))
    }

    /// A fake whose replies `behaviour` chooses.
    pub fn with_behaviour(
        behaviour: impl FnMut(&RequestView<'_>) -> Reply + Send + 'static,
    ) -> FakeLoki {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake Loki");
        let addr = listener.local_addr().expect("fake Loki address");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            behaviour: Mutex::new(Box::new(behaviour)),
            requests: Mutex::new(Vec::new()),
            first_arrival: Mutex::new(None),
            connections: AtomicUsize::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("fake-loki-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn the fake Loki")
        };
        FakeLoki {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Replaces the behaviour; requests already being answered keep theirs.
    pub fn set_behaviour(&self, behaviour: impl FnMut(&RequestView<'_>) -> Reply + Send + 'static) {
        *lock(&self.shared.behaviour) = Box::new(behaviour);
    }

    /// Answers every further request with `reply`.
    pub fn reply_always(&self, reply: Reply) {
        self.set_behaviour(always(reply));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/loki/api/v1/push`.
    pub fn url(&self) -> String {
        format!("http://{}{PUSH_PATH}", self.addr)
    }

    /// Every request so far (including ones still hanging), in arrival
    /// order of their completion.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.shared.requests).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.requests).len()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// The accepted entries of every request, in request order: all entries
    /// of requests answered 2xx, and those a partial reply declared stored.
    pub fn accepted(&self) -> Vec<Entry> {
        lock(&self.shared.requests)
            .iter()
            .flat_map(|request| request.stored_entries().cloned())
            .collect()
    }

    /// Number of accepted entries so far (cheaper than `accepted().len()`).
    pub fn accepted_count(&self) -> usize {
        lock(&self.shared.requests)
            .iter()
            .map(|request| request.stored.len())
            .sum()
    }

    /// Number of requests whose body could not be decoded.
    pub fn decode_errors(&self) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|request| request.decode_error.is_some())
            .count()
    }
}

impl Drop for FakeLoki {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let number = shared.connections.fetch_add(1, Ordering::SeqCst);
        let connection_shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("fake-loki-{number}"))
            .spawn(move || serve(stream, number, &connection_shared));
        if let Ok(handle) = spawned {
            let mut threads = lock(&shared.threads);
            threads.retain(|thread| !thread.is_finished());
            threads.push(handle);
        }
    }
}

/// A request as read off the wire.
struct RawRequest {
    arrived: Instant,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

struct Connection<'s> {
    stream: TcpStream,
    buffer: Vec<u8>,
    shared: &'s Shared,
}

impl Connection<'_> {
    /// One read of at most one poll interval: Ok(None) if nothing came,
    /// Ok(Some(0)) at end of stream.
    fn read_some(&mut self) -> std::io::Result<Option<usize>> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(read) => {
                self.buffer.extend_from_slice(&chunk[..read]);
                Ok(Some(read))
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Reads more bytes into the buffer: Ok(0) at end of stream or stop.
    fn fill(&mut self) -> std::io::Result<usize> {
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return Ok(0);
            }
            if let Some(read) = self.read_some()? {
                return Ok(read);
            }
        }
    }

    /// The next request, or None when the client closed the connection
    /// (or the fake stops) between requests.
    fn read_request(&mut self) -> std::io::Result<Option<RawRequest>> {
        let mut arrived = (!self.buffer.is_empty()).then(Instant::now);
        let head_end = loop {
            if let Some(at) = find(&self.buffer, b"\r\n\r\n") {
                break at;
            }
            if self.buffer.len() > HEAD_BYTES_MAX {
                return Err(std::io::Error::other("request head too long"));
            }
            if self.fill()? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::Error::other(
                        "connection closed inside a request head",
                    ))
                };
            }
            arrived.get_or_insert_with(Instant::now);
        };
        let arrived = arrived.unwrap_or_else(Instant::now);
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_string();
        let path = request_line.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let body_start = head_end + 4;
        let chunked = find_header(&headers, "transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
        let body = if chunked {
            loop {
                match parse_chunked(&self.buffer[body_start..]) {
                    Some(Ok((body, used))) => {
                        self.buffer.drain(..body_start + used);
                        break body;
                    }
                    Some(Err(error)) => return Err(std::io::Error::other(error)),
                    None => {
                        if self.fill()? == 0 {
                            return Err(std::io::Error::other("connection closed inside a body"));
                        }
                    }
                }
            }
        } else {
            let length: usize = match find_header(&headers, "content-length") {
                Some(value) => value
                    .parse()
                    .map_err(|_| std::io::Error::other("bad Content-Length"))?,
                None => 0,
            };
            while self.buffer.len() < body_start + length {
                if self.fill()? == 0 {
                    return Err(std::io::Error::other("connection closed inside a body"));
                }
            }
            let body = self.buffer[body_start..body_start + length].to_vec();
            self.buffer.drain(..body_start + length);
            body
        };
        Ok(Some(RawRequest {
            arrived,
            method,
            path,
            headers,
            body,
        }))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A complete chunked body at the start of `data`: (body, bytes used);
/// None if more bytes are needed.
fn parse_chunked(data: &[u8]) -> Option<Result<(Vec<u8>, usize), String>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&data[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&data[at..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Some(Err(format!("bad chunk size {size_text:?}")));
        };
        at = line_end + 2;
        if size == 0 {
            // Trailer lines up to an empty one.
            loop {
                let end = at + find(&data[at..], b"\r\n")?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(Ok((body, at)));
                }
            }
        }
        if data.len() < at + size + 2 {
            return None;
        }
        body.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
}

fn serve(stream: TcpStream, number: usize, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(POLL));
    let _ = stream.set_nodelay(true);
    let mut connection = Connection {
        stream,
        buffer: Vec::new(),
        shared,
    };
    loop {
        let raw = match connection.read_request() {
            Ok(Some(raw)) => raw,
            Ok(None) | Err(_) => return,
        };
        let close_asked = find_header(&raw.headers, "connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close"));
        let (entries, decode_error) = match decode(&raw.headers, &raw.body) {
            Ok(entries) => (entries, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        let since_first = {
            let mut first = lock(&shared.first_arrival);
            let first = first.get_or_insert(raw.arrived);
            *first = (*first).min(raw.arrived);
            raw.arrived.saturating_duration_since(*first)
        };
        let index = {
            let mut requests = lock(&shared.requests);
            let index = requests.len();
            requests.push(Request {
                index,
                arrived: raw.arrived,
                answered: None,
                client_closed: None,
                connection: number,
                method: raw.method.clone(),
                path: raw.path.clone(),
                headers: raw.headers.clone(),
                body_bytes: raw.body.len(),
                entries: entries.clone(),
                decode_error: decode_error.clone(),
                outcome: Outcome::Pending,
                stored: Vec::new(),
            });
            index
        };
        let reply = match &decode_error {
            Some(error) => Reply::status(400).body(&format!("fake Loki: {error}")),
            None => {
                let view = RequestView {
                    index,
                    arrived: raw.arrived,
                    since_first,
                    method: &raw.method,
                    path: &raw.path,
                    headers: &raw.headers,
                    entries: &entries,
                };
                (lock(&shared.behaviour))(&view)
            }
        };
        let record = |outcome: Outcome, stored: Vec<usize>, client_closed: Option<Instant>| {
            let mut requests = lock(&shared.requests);
            let request = &mut requests[index];
            request.outcome = outcome;
            request.stored = stored;
            request.answered = (outcome != Outcome::Hung).then(Instant::now);
            request.client_closed = client_closed;
        };
        match reply {
            Reply::Respond {
                status,
                headers,
                body,
                stored,
            } => {
                let stored = match stored {
                    Some(mut indices) => {
                        indices.retain(|&at| at < entries.len());
                        indices.sort_unstable();
                        indices.dedup();
                        indices
                    }
                    None if (200..300).contains(&status) => (0..entries.len()).collect(),
                    None => Vec::new(),
                };
                // Recorded before it is written: a client that reads the
                // answer finds it recorded, and what Loki stored stays
                // stored though the answer never arrives.
                record(Outcome::Status(status), stored, None);
                let response = response_bytes(status, &headers, &body, close_asked);
                let written = connection
                    .stream
                    .write_all(&response)
                    .and_then(|()| connection.stream.flush());
                if written.is_err() || close_asked {
                    return;
                }
            }
            Reply::Hang(limit) => {
                record(Outcome::Hung, Vec::new(), None);
                let client_closed = hang(&mut connection, limit);
                let mut requests = lock(&shared.requests);
                requests[index].client_closed = client_closed;
                return;
            }
            Reply::Reset => {
                reset(&connection.stream);
                record(Outcome::Reset, Vec::new(), None);
                return;
            }
        }
    }
}

/// Waits without answering until the client closes (returns when it did),
/// `limit` passes, or the fake stops.
fn hang(connection: &mut Connection<'_>, limit: Option<Duration>) -> Option<Instant> {
    let deadline = limit.map(|limit| Instant::now() + limit);
    loop {
        if connection.shared.stop.load(Ordering::SeqCst)
            || deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            return None;
        }
        match connection.read_some() {
            Ok(Some(0)) | Err(_) => return Some(Instant::now()),
            // Nothing yet, or bytes a client should not send before an
            // answer: keep hanging.
            Ok(_) => {}
        }
    }
}

/// Closes the connection with a TCP reset rather than a FIN.
fn reset(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor this function borrows, with a
    // pointer to a live `linger` and its exact size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn response_bytes(status: u16, headers: &[(String, String)], body: &str, close: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n");
    // A 204 (and 1xx, 304) carries neither a body nor Content-Length.
    let bodiless = status == 204 || status == 304 || (100..200).contains(&status);
    if !bodiless {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        if !body.is_empty() {
            out.push_str("Content-Type: text/plain; charset=utf-8\r\n");
        }
    }
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if !bodiless {
        out.push_str(body);
    }
    out.into_bytes()
}

// ---------------------------------------------------------------------
// Decoding.

/// Loki's `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamAdapter {
    /// The selector text `{key="value", ...}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(bytes = "vec", tag = "2")]
    pub line: Vec<u8>,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The entries of a push body, by its `Content-Type` (protobuf when
/// absent, as Loki reads it) and `Content-Encoding` (gzip or none).
pub fn decode(headers: &[(String, String)], body: &[u8]) -> Result<Vec<Entry>, String> {
    let body = match find_header(headers, "content-encoding").map(str::to_ascii_lowercase) {
        None => body.to_vec(),
        Some(encoding) if encoding.is_empty() || encoding == "identity" => body.to_vec(),
        Some(encoding) if encoding == "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|error| format!("gzip: {error}"))?;
            out
        }
        Some(other) => return Err(format!("unsupported Content-Encoding {other:?}")),
    };
    let content_type = find_header(headers, "content-type")
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|| "application/x-protobuf".to_string());
    match content_type.as_str() {
        "application/x-protobuf" => decode_protobuf(&body),
        "application/json" => decode_json(&body),
        other => Err(format!("unsupported Content-Type {other:?}")),
    }
}

/// A snappy (block format) `PushRequest`.
pub fn decode_protobuf(body: &[u8]) -> Result<Vec<Entry>, String> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|error| format!("snappy: {error}"))?;
    let request = <PushRequest as prost::Message>::decode(raw.as_slice())
        .map_err(|error| format!("protobuf: {error}"))?;
    let mut entries = Vec::new();
    for stream in request.streams {
        let labels = parse_selector(&stream.labels)?;
        for entry in stream.entries {
            let timestamp = entry
                .timestamp
                .ok_or_else(|| "entry without a timestamp".to_string())?;
            let (Ok(seconds), Ok(nanos)) = (
                u64::try_from(timestamp.seconds),
                u64::try_from(timestamp.nanos),
            ) else {
                return Err(format!("negative timestamp {timestamp:?}"));
            };
            if nanos >= 1_000_000_000 {
                return Err(format!("nanos out of range {timestamp:?}"));
            }
            entries.push(Entry {
                labels: labels.clone(),
                timestamp_ns: seconds * 1_000_000_000 + nanos,
                line: entry.line,
            });
        }
    }
    Ok(entries)
}

/// Loki's JSON push: `{"streams":[{"stream":{..},"values":[["ns","line"],..]}]}`.
pub fn decode_json(body: &[u8]) -> Result<Vec<Entry>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|error| format!("JSON: {error}"))?;
    let streams = value["streams"]
        .as_array()
        .ok_or_else(|| "JSON: no `streams` array".to_string())?;
    let mut entries = Vec::new();
    for stream in streams {
        let labels = stream["stream"]
            .as_object()
            .ok_or_else(|| "JSON: a stream without a `stream` object".to_string())?
            .iter()
            .map(|(key, value)| {
                value
                    .as_str()
                    .map(|value| (key.clone(), value.to_string()))
                    .ok_or_else(|| format!("JSON: label {key} is not a string"))
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let values = stream["values"]
            .as_array()
            .ok_or_else(|| "JSON: a stream without `values`".to_string())?;
        for pair in values {
            let timestamp_ns = pair[0]
                .as_str()
                .and_then(|text| text.parse::<u64>().ok())
                .ok_or_else(|| format!("JSON: bad timestamp in {pair}"))?;
            let line = pair[1]
                .as_str()
                .ok_or_else(|| format!("JSON: bad line in {pair}"))?;
            entries.push(Entry {
                labels: labels.clone(),
                timestamp_ns,
                line: line.as_bytes().to_vec(),
            });
        }
    }
    Ok(entries)
}

/// `{a="b", c="d"}` with Go string escapes (`\\`, `\"`, `\n`, `\t`, `\r`)
/// into its label map.
pub fn parse_selector(text: &str) -> Result<BTreeMap<String, String>, String> {
    let error = |what: &str| format!("selector {text:?}: {what}");
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| error("not in braces"))?;
    let mut labels = BTreeMap::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(labels);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
            key.push(c);
        }
        if key.is_empty() {
            return Err(error("empty label name"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') || chars.next() != Some('"') {
            return Err(error("expected =\""));
        }
        let mut value = String::new();
        loop {
            match chars.next().ok_or_else(|| error("unterminated value"))? {
                '"' => break,
                '\\' => match chars.next().ok_or_else(|| error("dangling escape"))? {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    'r' => value.push('\r'),
                    other => return Err(error(&format!("unknown escape \\{other}"))),
                },
                c => value.push(c),
            }
        }
        if labels.insert(key, value).is_some() {
            return Err(error("repeated label"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.next() {
            None => return Ok(labels),
            Some(',') => {}
            Some(other) => return Err(error(&format!("unexpected {other:?}"))),
        }
    }
}

/// The selector text of `labels` as Loki writes it (sorted, Go escapes).
pub fn selector(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{key}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

// ---------------------------------------------------------------------
// Behaviours.

/// Answers every request with `reply`.
pub fn always(reply: Reply) -> impl FnMut(&RequestView<'_>) -> Reply + Send + 'static {
    move |_| reply.clone()
}

/// `during` for requests arriving less than `period` after the first
/// request, then `after`.
pub fn for_period(
    period: Duration,
    during: Reply,
    after: Reply,
) -> impl FnMut(&RequestView<'_>) -> Reply + Send + 'static {
    move |request| {
        if request.since_first < period {
            during.clone()
        } else {
            after.clone()
        }
    }
}

/// `during` for the first `count` requests, then `after`.
pub fn first_requests(
    count: usize,
    during: Reply,
    after: Reply,
) -> impl FnMut(&RequestView<'_>) -> Reply + Send + 'static {
    move |request| {
        if request.index < count {
            during.clone()
        } else {
            after.clone()
        }
    }
}

/// Like Loki refusing one stream's entries as too new: a request holding
/// any entry whose label `key` is `value` is answered 400 with a Loki-like
/// body (naming the last such entry, and `total ignored: N out of M`) and
/// its other entries count as stored; any other request is answered 204.
pub fn reject_stream(
    key: &str,
    value: &str,
) -> impl FnMut(&RequestView<'_>) -> Reply + Send + 'static {
    let (key, value) = (key.to_string(), value.to_string());
    move |request| {
        let (bad, good): (Vec<usize>, Vec<usize>) = (0..request.entries.len())
            .partition(|&at| request.entries[at].label(&key) == Some(value.as_str()));
        match bad.last() {
            None => Reply::status(204),
            Some(&last) => Reply::status(400)
                .body(&too_new_body(
                    &request.entries[last],
                    bad.len(),
                    request.entries.len(),
                ))
                .storing(good),
        }
    }
}

/// Loki's 400 body for ignored entries, naming `last` as too new.
pub fn too_new_body(last: &Entry, ignored: usize, total: usize) -> String {
    let stream = selector(&last.labels);
    format!(
        "entry with timestamp {} ignored, reason: 'entry for stream '{stream}' has timestamp too new: {}' for stream: {stream},\ntotal ignored: {ignored} out of {total}",
        go_time_string(last.timestamp_ns),
        rfc3339(last.timestamp_ns),
    )
}

/// Go's `time.Time.String()` of a UTC time: `2026-11-27 12:00:00.5 +0000 UTC`.
pub fn go_time_string(timestamp_ns: u64) -> String {
    let time = jiff::Timestamp::from_nanosecond(i128::from(timestamp_ns)).expect("time in range");
    let mut text = time.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let nanos = timestamp_ns % 1_000_000_000;
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        text.push('.');
        text.push_str(fraction.trim_end_matches('0'));
    }
    text.push_str(" +0000 UTC");
    text
}

/// RFC 3339 in UTC to the second, as Loki's validation message prints it.
pub fn rfc3339(timestamp_ns: u64) -> String {
    let time = jiff::Timestamp::from_nanosecond(i128::from(timestamp_ns)).expect("time in range");
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
