//! The syslog source: one thread that receives messages over UDP, TCP and
//! a local datagram socket, and hands them to the dispatcher in chunks.
//!
//! The thread waits in one `mio` poll on its sockets and on a waker that
//! the dispatcher rings when it gives a chunk back (and the shutdown path
//! when it stops). Each turn it accepts connections, receives datagrams and
//! reads the connections that are readable. The chunk being filled is
//! handed to the dispatcher when it is full or when its first message has
//! waited [`HANDOVER_AFTER`] (1 ms): a quiet sender's message is not held
//! back, and a busy source costs at most a thousand hand-overs a second.
//!
//! A message becomes one line of a chunk, exactly as received (a datagram
//! without its trailing `LF`/`NUL`, a TCP frame without its framing; see
//! `framing`), with its own labels and timestamp (see `labeler`). A
//! datagram is received straight into the chunk; a TCP frame is copied
//! there once from the thread's read buffer.
//!
//! Backpressure: when every chunk of the pool is at the dispatcher, TCP
//! connections are not read (the kernel's buffers fill and the senders
//! wait), while datagrams are still received and dropped, counted in
//! `log_capturer_errors_total{component="syslog",error_type="queue_full"}`:
//! a datagram sender cannot be held back, and leaving them to the kernel
//! would only move the drop to where it is counted less precisely. The
//! kernel's own drops on the UDP socket are read from `/proc/net/udp`.
//!
//! Limits: `max_connections` connections (more are accepted and closed at
//! once, counted); a connection keeps at most one partial message of
//! `max_message_bytes` between reads; the read buffer is one
//! [`READ_BYTES`] read plus one message. A connection silent for
//! `idle_timeout_ms` is closed. Allocations: per connection (its entry and
//! partial-message buffer), none per message once the chunks' label
//! vectors have grown.
//!
//! Stopping: the thread receives what the sockets hold (for at most
//! [`STOP_DRAIN_MAX`]), delivers partial TCP frames as they are, hands
//! over its last chunk, closes every socket and removes the Unix socket,
//! unless a reload hands the sockets to the next process
//! ([`crate::handover`]): then the path stays, and the duplicates kept for
//! the handover hold the sockets open, so the kernel goes on queueing what
//! arrives. At bind time a socket inherited from the previous process for
//! the same address or path is used instead of a new one.

mod framing;
mod labeler;
pub mod message;

pub use framing::{FrameEnd, Framer, Framing, Step};
pub use labeler::{Labeler, Peer};

use serde::Deserialize;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram};
use mio::{Events, Interest, Poll, Token};

use crate::clock::now_ns;
use crate::handover::{Handover, ListenerKey, Listeners};
use crate::labels::SymbolTable;
use crate::metrics::SourceMetrics;
use crate::source::{SourceChunk, SourceLinks};

use message::TimeContext;

/// Bytes asked for by one read of a TCP connection.
pub const READ_BYTES: usize = 64 * 1024;

/// Reads of one connection before the next one gets its turn.
pub const READS_PER_CONNECTION_MAX: usize = 4;

/// Datagrams received from one socket before the others get their turn.
pub const DATAGRAMS_PER_TURN_MAX: usize = 4096;

/// Longest a stop spends receiving what the sockets still hold.
pub const STOP_DRAIN_MAX: Duration = Duration::from_secs(1);

/// Longest a message waits in the chunk being filled before the chunk is
/// handed to the dispatcher, unless the chunk fills first. Handing over
/// after every wake-up would cost two thread wake-ups (there and back) per
/// few messages at moderate rates; this bound makes it at most a thousand
/// per second, for a millisecond of latency.
pub const HANDOVER_AFTER: Duration = Duration::from_millis(1);

/// How long accepting waits after it failed (out of descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How often idle connections are looked for and the kernel's drop count
/// is read.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

const WAKE: Token = Token(0);
const UDP: Token = Token(1);
const UNIX: Token = Token(2);
const LISTENER: Token = Token(3);
/// Connection `n` has token `CONNECTION_FIRST + n`.
const CONNECTION_FIRST: usize = 16;

/// What becomes of RFC 5424 structured data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StructuredData {
    /// Kept in the message as sent, and nowhere else.
    #[default]
    Message,
    /// Also flattened into labels `sd_<id>_<param>` (see README).
    Labels,
}

/// Settings of one syslog source, from its config table.
#[derive(Debug, Clone)]
pub struct SyslogSettings {
    pub id: String,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub unix: Option<PathBuf>,
    pub unix_mode: u32,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub recv_buffer_bytes: Option<usize>,
    pub structured_data: StructuredData,
    /// An IANA zone for RFC 3164 timestamps; the host's when `None`.
    pub timezone: Option<String>,
    /// Static labels, besides `source_id`.
    pub labels: Vec<(String, String)>,
}

/// Why a syslog source could not start; each names the source and the
/// address or path.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("syslog source {id}: cannot receive on UDP {address}")]
    Udp {
        id: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("syslog source {id}: cannot listen on TCP {address}")]
    Tcp {
        id: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("syslog source {id}: cannot create Unix socket {}", path.display())]
    Unix {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("syslog source {id}: {} exists and is not a socket", path.display())]
    NotASocket { id: String, path: PathBuf },
    #[error("syslog source {id}: socket {} is in use by another process", path.display())]
    SocketInUse { id: String, path: PathBuf },
    #[error("syslog source {id}: cannot set up its event poll")]
    Poll {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("syslog source {id}: time zone {zone:?} is not known")]
    TimeZone { id: String, zone: String },
}

/// One TCP connection.
#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    peer: IpAddr,
    framer: Framer,
    /// Bytes received and not yet framed: at most one partial message (or
    /// more while no chunk is free).
    pending: Vec<u8>,
    /// The socket may have bytes (edge-triggered: until a read would block).
    readable: bool,
    /// Frames are waiting for a chunk.
    blocked: bool,
    last_active: Instant,
}

/// The Unix socket's path, removed when the source ends unless `keep`
/// is set (the socket is handed to the next process).
#[derive(Debug)]
struct SocketPath {
    path: PathBuf,
    keep: Arc<AtomicBool>,
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        // Acquire pairs with the Release store of `Listeners::keep_paths`.
        if !self.keep.load(Ordering::Acquire) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The sockets of a source, bound.
#[derive(Debug)]
struct Sockets {
    udp: Option<UdpSocket>,
    unix: Option<(UnixDatagram, SocketPath)>,
    listener: Option<TcpListener>,
}

/// What happened to one connection in a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Open,
    Closed,
}

/// A syslog source thread's state.
#[derive(Debug)]
pub struct SyslogSource {
    settings: SyslogSettings,
    poll: Poll,
    sockets: Sockets,
    connections: Vec<Option<Connection>>,
    connections_open: usize,
    udp_ready: bool,
    unix_ready: bool,
    accept_ready: bool,
    /// When accepting is tried again after a failure.
    accept_retry_at: Option<Instant>,
    /// Accepting failed and was logged; cleared by the next success.
    accept_failing: bool,
    /// Stopping: a frame cut off by the stop is counted as truncated.
    stopping: bool,
    /// The UDP socket's inode, to find its drop count in `/proc/net/udp`.
    udp_inode: Option<u64>,
    links: SourceLinks,
    spare: Vec<SourceChunk>,
    current: Option<SourceChunk>,
    /// When the first message went into `current`.
    current_since: Option<Instant>,
    labeler: Labeler,
    /// Where TCP reads land: one read plus a connection's partial message.
    read_buffer: Vec<u8>,
    /// Where a datagram lands when no chunk is free, to be dropped.
    drop_buffer: Vec<u8>,
    next_sweep: Instant,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
}

impl SyslogSource {
    /// Binds every configured socket, or takes the one `handover` inherited
    /// for its address or path, and keeps a duplicate of each in
    /// `handover` for the next process. Errors name the address or path.
    pub fn bind(
        settings: SyslogSettings,
        symbols: Arc<SymbolTable>,
        links: SourceLinks,
        chunks: Vec<SourceChunk>,
        stop: Arc<AtomicBool>,
        metrics: Arc<SourceMetrics>,
        handover: &mut Handover,
    ) -> Result<Self, SyslogError> {
        assert!(settings.max_connections > 0, "max_connections is validated");
        let id = settings.id.clone();
        let poll = Poll::new().map_err(|source| SyslogError::Poll {
            id: id.clone(),
            source,
        })?;
        let waker = mio::Waker::new(poll.registry(), WAKE).map_err(|source| SyslogError::Poll {
            id: id.clone(),
            source,
        })?;
        links.own.register_poll(waker);
        let sockets = bind_sockets(&settings, &poll, handover)?;
        sockets.keep_duplicates(&settings, &mut handover.listeners);
        let time = match &settings.timezone {
            Some(zone) => TimeContext::named(zone).map_err(|_| SyslogError::TimeZone {
                id: id.clone(),
                zone: zone.clone(),
            })?,
            None => TimeContext::system(),
        };
        let labeler = Labeler::new(
            symbols,
            &settings.id,
            &settings.labels,
            settings.structured_data,
            time,
        );
        let udp_inode = sockets.udp.as_ref().and_then(socket_inode);
        Ok(Self {
            read_buffer: Vec::with_capacity(READ_BYTES + settings.max_message_bytes + 16),
            drop_buffer: vec![0; settings.max_message_bytes + 2],
            connections: Vec::new(),
            connections_open: 0,
            udp_ready: true,
            unix_ready: true,
            accept_ready: true,
            accept_retry_at: None,
            accept_failing: false,
            stopping: false,
            udp_inode,
            poll,
            sockets,
            links,
            spare: chunks,
            current: None,
            current_since: None,
            labeler,
            next_sweep: Instant::now() + SWEEP_INTERVAL,
            settings,
            stop,
            metrics,
        })
    }

    /// The thread body: returns when stopped, after the last chunk is
    /// handed over.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // Acquire pairs with the Release store of the shutdown path.
        while !self.stop.load(Ordering::Acquire) {
            self.take_returns();
            let timeout = if self.has_work() {
                Duration::ZERO
            } else {
                let wake_at = [
                    Some(self.next_sweep),
                    self.current_since.map(|since| since + HANDOVER_AFTER),
                    self.accept_retry_at,
                ]
                .into_iter()
                .flatten()
                .min()
                .expect("the sweep is always due");
                wake_at.saturating_duration_since(Instant::now())
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout))
                && error.kind() != ErrorKind::Interrupted
            {
                tracing::error!(source = %self.settings.id, %error, "syslog source: poll failed");
                self.metrics.read_errors.add(1);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            self.note_events(&events);
            if self
                .accept_retry_at
                .is_some_and(|retry_at| Instant::now() >= retry_at)
            {
                self.accept_retry_at = None;
                self.accept_ready = true;
            }
            self.turn(false);
            if self
                .current_since
                .is_some_and(|since| since.elapsed() >= HANDOVER_AFTER)
            {
                self.hand_over();
            }
            if Instant::now() >= self.next_sweep {
                self.sweep();
            }
        }
        self.finish();
    }

    /// True when something can be done without waiting: a socket not yet
    /// read to its end, with a chunk to read into (datagrams are read
    /// anyway: they are dropped when no chunk is free).
    fn has_work(&self) -> bool {
        let datagrams = (self.udp_ready && self.sockets.udp.is_some())
            || (self.unix_ready && self.sockets.unix.is_some());
        let chunk_free = !self.spare.is_empty() || self.current.is_some();
        let connections = self
            .connections
            .iter()
            .flatten()
            .any(|connection| connection.readable || connection.blocked);
        datagrams || self.accept_ready || (chunk_free && connections)
    }

    fn note_events(&mut self, events: &Events) {
        for event in events {
            match event.token() {
                WAKE => {}
                UDP => self.udp_ready = true,
                UNIX => self.unix_ready = true,
                LISTENER => self.accept_ready = true,
                Token(token) => {
                    if let Some(Some(connection)) =
                        self.connections.get_mut(token - CONNECTION_FIRST)
                    {
                        connection.readable = true;
                    }
                }
            }
        }
    }

    /// One round over every socket, then the filled chunk is handed on.
    /// `at_end`: stopping, so partial TCP frames are delivered as they are.
    fn turn(&mut self, at_end: bool) {
        if self.accept_ready {
            self.accept();
        }
        if self.udp_ready {
            self.udp_ready = self.receive_datagrams(UDP);
        }
        if self.unix_ready {
            self.unix_ready = self.receive_datagrams(UNIX);
        }
        for index in 0..self.connections.len() {
            let Some(connection) = &self.connections[index] else {
                continue;
            };
            if !(connection.readable || connection.blocked || at_end) {
                continue;
            }
            if self.serve(index, at_end) == Served::Closed {
                self.close(index);
            }
        }
    }

    fn take_returns(&mut self) {
        while let Ok(mut chunk) = self.links.returns.pop() {
            // Emptied now rather than when next used: a chunk that held a
            // very long message rests in the pool at its usual size.
            chunk.reset(0, &Default::default(), &[], 0);
            self.spare.push(chunk);
        }
    }

    /// The chunk to put a message of `bytes` in: the current one if it has
    /// room, else a fresh one (the current one handed over). `None` when
    /// every chunk is at the dispatcher.
    fn chunk_for(&mut self, bytes: usize) -> Option<&mut SourceChunk> {
        if self
            .current
            .as_ref()
            .is_some_and(|chunk| chunk.is_full_for(bytes))
        {
            self.hand_over();
        }
        if self.current.is_none() {
            if self.spare.is_empty() {
                self.take_returns();
            }
            let mut chunk = self.spare.pop()?;
            chunk.reset(0, &Default::default(), &[], now_ns());
            self.current = Some(chunk);
        }
        self.current.as_mut()
    }

    /// Pushes the current chunk to the dispatcher if it holds messages.
    fn hand_over(&mut self) {
        let Some(chunk) = self.current.take() else {
            return;
        };
        if chunk.line_count() == 0 {
            self.current = Some(chunk);
            return;
        }
        self.current_since = None;
        let Some(ring) = self.links.chunks.as_mut() else {
            return;
        };
        // The ring holds the whole pool, so a push cannot find it full.
        if ring.push(chunk).is_err() {
            unreachable!("the chunk ring holds the whole pool");
        }
        self.links.dispatcher.wake();
    }

    fn accept(&mut self) {
        if self.sockets.listener.is_none() {
            self.accept_ready = false;
            return;
        }
        loop {
            let listener = self.sockets.listener.as_ref().expect("checked above");
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.accept_failing {
                        self.accept_failing = false;
                        tracing::info!(source = %self.settings.id, "syslog source: accepting connections again");
                    }
                    if self.connections_open >= self.settings.max_connections {
                        self.metrics.syslog.connections_refused.add(1);
                        drop(stream);
                        continue;
                    }
                    self.add_connection(stream, peer.ip());
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    // Out of descriptors (EMFILE), say: the connection
                    // waits in the backlog, and is tried again after
                    // ACCEPT_RETRY instead of at once (which would spin).
                    // Logged once until an accept succeeds.
                    if !self.accept_failing {
                        self.accept_failing = true;
                        tracing::warn!(source = %self.settings.id, %error, "syslog source: cannot accept connections; retrying every 100 ms");
                    }
                    self.metrics.read_errors.add(1);
                    self.accept_ready = false;
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn add_connection(&mut self, mut stream: TcpStream, peer: IpAddr) {
        let index = match self.connections.iter().position(Option::is_none) {
            Some(index) => index,
            None => {
                self.connections.push(None);
                self.connections.len() - 1
            }
        };
        let token = Token(CONNECTION_FIRST + index);
        if let Err(error) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            tracing::warn!(source = %self.settings.id, %error, "syslog source: cannot watch a connection");
            self.metrics.read_errors.add(1);
            return;
        }
        self.connections[index] = Some(Connection {
            stream,
            peer,
            framer: Framer::new(self.settings.max_message_bytes),
            pending: Vec::new(),
            readable: true,
            blocked: false,
            last_active: Instant::now(),
        });
        self.connections_open += 1;
        self.metrics
            .syslog
            .connections_active
            .set(self.connections_open as u64);
    }

    fn close(&mut self, index: usize) {
        if let Some(mut connection) = self.connections[index].take() {
            let _ = self.poll.registry().deregister(&mut connection.stream);
            self.connections_open -= 1;
            self.metrics
                .syslog
                .connections_active
                .set(self.connections_open as u64);
        }
    }

    /// Receives datagrams from one socket until it would block (false) or
    /// the turn's share is used up (true: more may wait).
    fn receive_datagrams(&mut self, token: Token) -> bool {
        let bound = match token {
            UDP => self.sockets.udp.is_some(),
            _ => self.sockets.unix.is_some(),
        };
        if !bound {
            return false;
        }
        for _ in 0..DATAGRAMS_PER_TURN_MAX {
            match self.receive_datagram(token) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::WouldBlock => return false,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    tracing::warn!(source = %self.settings.id, %error, "syslog source: receive failed");
                    self.metrics.read_errors.add(1);
                    return false;
                }
            }
        }
        true
    }

    /// Receives one datagram into the current chunk, or drops it when no
    /// chunk is free.
    fn receive_datagram(&mut self, token: Token) -> std::io::Result<()> {
        let max = self.settings.max_message_bytes;
        // Room for a whole message and a `CR LF` after it: a longer
        // datagram fills it, and is cut.
        let room = max + 2;
        if self.chunk_for(room).is_none() {
            let (received, _) = recv(&self.sockets, token, &mut self.drop_buffer)?;
            self.metrics.syslog.queue_full.add(1);
            self.metrics.bytes_read.add(received as u64);
            return Ok(());
        }
        let chunk = self.current.as_mut().expect("chunk_for made one current");
        let (received, peer) = recv(&self.sockets, token, chunk.message_room(room))?;
        let mut line = framing::message_length(chunk.received(received));
        if line > max {
            self.metrics.syslog.truncated.add(1);
            line = max;
        }
        self.metrics.bytes_read.add(received as u64);
        if line == 0 {
            self.metrics.syslog.empty.add(1);
            return Ok(());
        }
        let timestamp_ns = self.labeler.label(
            &chunk.received(received)[..line],
            peer,
            now_ns(),
            &self.metrics,
        );
        chunk.commit_message(
            received,
            line,
            &self.labeler.labels,
            self.labeler.inline(),
            timestamp_ns,
        );
        self.message_taken();
        Ok(())
    }

    /// Frames and delivers what connection `index` has, reading it while
    /// it has bytes, for up to [`READS_PER_CONNECTION_MAX`] reads.
    fn serve(&mut self, index: usize, at_end: bool) -> Served {
        let mut buffer = std::mem::take(&mut self.read_buffer);
        buffer.clear();
        let connection = self.connections[index].as_mut().expect("served while open");
        buffer.extend_from_slice(&connection.pending);
        connection.pending.clear();
        let mut reads = 0;
        let mut closed = at_end;
        let served = loop {
            let delivered = self.deliver_frames(index, &mut buffer, closed);
            let connection = self.connections[index].as_mut().expect("served while open");
            connection.blocked = !delivered;
            if !delivered {
                break Served::Open;
            }
            if closed {
                break Served::Closed;
            }
            if reads == READS_PER_CONNECTION_MAX || !connection.readable {
                break Served::Open;
            }
            let filled = buffer.len();
            buffer.resize(filled + READ_BYTES, 0);
            match connection.stream.read(&mut buffer[filled..]) {
                Ok(0) => {
                    buffer.truncate(filled);
                    closed = true;
                }
                Ok(bytes) => {
                    buffer.truncate(filled + bytes);
                    reads += 1;
                    connection.last_active = Instant::now();
                    self.metrics.bytes_read.add(bytes as u64);
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    buffer.truncate(filled);
                    connection.readable = false;
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => buffer.truncate(filled),
                Err(_) => {
                    // Reset by the peer, say: what it sent is framed as
                    // it is, as at a close.
                    buffer.truncate(filled);
                    closed = true;
                }
            }
        };
        let connection = self.connections[index].as_mut().expect("served while open");
        connection.pending.extend_from_slice(&buffer);
        if connection.pending.is_empty() && connection.pending.capacity() > READ_BYTES {
            connection.pending = Vec::new();
        }
        self.read_buffer = buffer;
        served
    }

    /// Delivers the complete frames at the front of `buffer` and removes
    /// what they used. False when a frame waits for a chunk.
    fn deliver_frames(&mut self, index: usize, buffer: &mut Vec<u8>, at_end: bool) -> bool {
        let mut start = 0;
        let mut delivered = true;
        loop {
            // Asked before framing: the framer moves on past a frame it
            // returns, so a frame must find a chunk once framed.
            if !self.can_take(self.settings.max_message_bytes) {
                delivered = false;
                break;
            }
            let connection = self.connections[index].as_mut().expect("served while open");
            let peer = Peer::Address(connection.peer);
            match connection.framer.next(&buffer[start..], at_end) {
                Step::NeedMore => break,
                Step::Skipped { consumed } => start += consumed,
                Step::Frame {
                    start: offset,
                    len,
                    consumed,
                    end,
                } => {
                    let frame = start + offset..start + offset + len;
                    if len == 0 {
                        // `1 \n`: a counted frame of nothing but a newline.
                        self.metrics.syslog.empty.add(1);
                        start += consumed;
                        continue;
                    }
                    let taken = self.deliver(&buffer[frame], peer);
                    assert!(taken, "can_take found room for the longest frame");
                    match end {
                        FrameEnd::Truncated => self.metrics.syslog.truncated.add(1),
                        FrameEnd::Malformed => self.metrics.syslog.framing_errors.add(1),
                        // Cut off by the stop, not ended by its sender.
                        FrameEnd::Unterminated if self.stopping => {
                            self.metrics.syslog.truncated.add(1);
                        }
                        FrameEnd::Complete | FrameEnd::Unterminated => {}
                    }
                    start += consumed;
                }
            }
        }
        buffer.drain(..start);
        delivered
    }

    /// Counts a message put in the current chunk; the first one starts
    /// the chunk's hand-over clock.
    fn message_taken(&mut self) {
        self.metrics.lines_read.add(1);
        if self.current_since.is_none() {
            self.current_since = Some(Instant::now());
        }
    }

    /// True when a message of `bytes` would find a chunk.
    fn can_take(&mut self, bytes: usize) -> bool {
        if self
            .current
            .as_ref()
            .is_some_and(|chunk| !chunk.is_full_for(bytes))
        {
            return true;
        }
        if self.spare.is_empty() {
            self.take_returns();
        }
        !self.spare.is_empty()
    }

    /// Copies one message into the current chunk with its labels. False
    /// when no chunk is free.
    fn deliver(&mut self, message: &[u8], peer: Peer) -> bool {
        if self.chunk_for(message.len()).is_none() {
            return false;
        }
        let timestamp_ns = self.labeler.label(message, peer, now_ns(), &self.metrics);
        let chunk = self.current.as_mut().expect("chunk_for made one current");
        chunk.push_message(
            message,
            &self.labeler.labels,
            self.labeler.inline(),
            timestamp_ns,
        );
        self.message_taken();
        true
    }

    /// Closes connections silent for `idle_timeout`; reads the kernel's
    /// drop count.
    fn sweep(&mut self) {
        self.next_sweep = Instant::now() + SWEEP_INTERVAL;
        let idle_timeout = self.settings.idle_timeout;
        for index in 0..self.connections.len() {
            let idle = self.connections[index].as_ref().is_some_and(|connection| {
                !connection.blocked && connection.last_active.elapsed() >= idle_timeout
            });
            if idle {
                // What it sent of a last message is delivered first.
                if self.serve(index, true) == Served::Closed {
                    self.close(index);
                    self.metrics.syslog.connections_idle_closed.add(1);
                }
            }
        }
        if let Some(drops) = self.udp_inode.and_then(kernel_udp_drops) {
            self.metrics.syslog.kernel_drops.set(drops);
        }
    }

    /// Receives what the sockets still hold, for at most
    /// [`STOP_DRAIN_MAX`], hands over the last chunk and lets the
    /// dispatcher see the ring abandoned.
    fn finish(&mut self) {
        self.stopping = true;
        let deadline = Instant::now() + STOP_DRAIN_MAX;
        loop {
            self.take_returns();
            self.udp_ready = true;
            self.unix_ready = true;
            self.turn(false);
            let busy = self.udp_ready || self.unix_ready || self.has_blocked_connection();
            if !busy || Instant::now() >= deadline {
                break;
            }
            crate::wake::park(Duration::from_millis(1));
        }
        self.take_returns();
        self.turn(true);
        self.hand_over();
        let mut unread_bytes = 0;
        for connection in self.connections.iter().flatten() {
            unread_bytes += connection.pending.len() as u64 + unread(&connection.stream);
        }
        if unread_bytes > 0 {
            // Received by the kernel, not read before the stop (the
            // dispatcher had no chunk free): the senders think it sent.
            self.metrics.syslog.unread_at_stop_bytes.add(unread_bytes);
            tracing::warn!(source = %self.settings.id, bytes = unread_bytes, "syslog source: TCP bytes received but not read by the stop are discarded");
        }
        for index in 0..self.connections.len() {
            self.close(index);
        }
        drop(self.links.chunks.take());
        self.links.dispatcher.wake();
    }

    fn has_blocked_connection(&self) -> bool {
        self.connections
            .iter()
            .flatten()
            .any(|connection| connection.blocked)
    }
}

/// Receives one datagram from the UDP or Unix socket.
fn recv(sockets: &Sockets, token: Token, buffer: &mut [u8]) -> std::io::Result<(usize, Peer)> {
    match token {
        UDP => {
            let socket = sockets.udp.as_ref().expect("UDP token for a UDP socket");
            let (received, from) = socket.recv_from(buffer)?;
            Ok((received, Peer::Address(from.ip())))
        }
        _ => {
            let (socket, _) = sockets.unix.as_ref().expect("Unix token for a Unix socket");
            let (received, _) = socket.recv_from(buffer)?;
            Ok((received, Peer::Local))
        }
    }
}

fn bind_sockets(
    settings: &SyslogSettings,
    poll: &Poll,
    handover: &mut Handover,
) -> Result<Sockets, SyslogError> {
    let id = &settings.id;
    let mut sockets = Sockets {
        udp: None,
        unix: None,
        listener: None,
    };
    if let Some(address) = settings.udp {
        let udp_error = |source| SyslogError::Udp {
            id: id.clone(),
            address,
            source,
        };
        let inherited = handover
            .inherited
            .take(&ListenerKey::udp(address))
            .map(std::net::UdpSocket::from)
            .filter(|socket| socket.local_addr().is_ok_and(|bound| bound == address));
        let mut socket = match inherited {
            Some(socket) => {
                socket.set_nonblocking(true).map_err(udp_error)?;
                tracing::info!(source = %id, %address, "syslog source: UDP socket taken over from the previous process");
                UdpSocket::from_std(socket)
            }
            None => UdpSocket::bind(address).map_err(udp_error)?,
        };
        if let Some(bytes) = settings.recv_buffer_bytes {
            request_recv_buffer(id, &socket, bytes).map_err(udp_error)?;
        }
        poll.registry()
            .register(&mut socket, UDP, Interest::READABLE)
            .map_err(udp_error)?;
        sockets.udp = Some(socket);
    }
    if let Some(address) = settings.tcp {
        let tcp_error = |source| SyslogError::Tcp {
            id: id.clone(),
            address,
            source,
        };
        let inherited = handover
            .inherited
            .take(&ListenerKey::tcp(address))
            .map(std::net::TcpListener::from)
            .filter(|listener| listener.local_addr().is_ok_and(|bound| bound == address));
        let mut listener = match inherited {
            Some(listener) => {
                listener.set_nonblocking(true).map_err(tcp_error)?;
                tracing::info!(source = %id, %address, "syslog source: TCP listener taken over from the previous process");
                TcpListener::from_std(listener)
            }
            None => TcpListener::bind(address).map_err(tcp_error)?,
        };
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(tcp_error)?;
        sockets.listener = Some(listener);
    }
    if let Some(path) = &settings.unix {
        let keep = handover.listeners.keep_paths_flag();
        let inherited = ListenerKey::unix(path)
            .and_then(|key| handover.inherited.take(&key))
            .map(std::os::unix::net::UnixDatagram::from)
            .filter(|socket| {
                socket
                    .local_addr()
                    .is_ok_and(|bound| bound.as_pathname() == Some(path.as_path()))
            });
        sockets.unix = Some(match inherited {
            Some(socket) => adopt_unix(settings, path, socket, poll, keep)?,
            None => bind_unix(settings, path, poll, keep)?,
        });
    }
    Ok(sockets)
}

impl Sockets {
    /// Keeps a duplicate of every socket in `listeners`, for a reload.
    fn keep_duplicates(&self, settings: &SyslogSettings, listeners: &mut Listeners) {
        use std::os::fd::AsFd;
        if let (Some(socket), Some(address)) = (&self.udp, settings.udp) {
            listeners.push(
                Some(ListenerKey::udp(address)),
                socket.as_fd().try_clone_to_owned(),
            );
        }
        if let (Some(listener), Some(address)) = (&self.listener, settings.tcp) {
            listeners.push(
                Some(ListenerKey::tcp(address)),
                listener.as_fd().try_clone_to_owned(),
            );
        }
        if let Some((socket, path)) = &self.unix {
            listeners.push(
                ListenerKey::unix(&path.path),
                socket.as_fd().try_clone_to_owned(),
            );
        }
    }
}

/// Uses the Unix datagram socket the previous process bound at `path`:
/// its permissions and receive buffer are set as configured now.
fn adopt_unix(
    settings: &SyslogSettings,
    path: &std::path::Path,
    socket: std::os::unix::net::UnixDatagram,
    poll: &Poll,
    keep: Arc<AtomicBool>,
) -> Result<(UnixDatagram, SocketPath), SyslogError> {
    use std::os::unix::fs::PermissionsExt;
    let unix_error = |source| SyslogError::Unix {
        id: settings.id.clone(),
        path: path.to_path_buf(),
        source,
    };
    socket.set_nonblocking(true).map_err(unix_error)?;
    let mut socket = UnixDatagram::from_std(socket);
    let guard = SocketPath {
        path: path.to_path_buf(),
        keep,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.unix_mode))
        .map_err(unix_error)?;
    if let Some(bytes) = settings.recv_buffer_bytes {
        request_recv_buffer(&settings.id, &socket, bytes).map_err(unix_error)?;
    }
    poll.registry()
        .register(&mut socket, UNIX, Interest::READABLE)
        .map_err(unix_error)?;
    tracing::info!(source = %settings.id, path = %path.display(), "syslog source: Unix socket taken over from the previous process");
    Ok((socket, guard))
}

/// Creates the Unix datagram socket at `path` (its directory too), with
/// `unix_mode`. A stale socket left by a daemon that was killed is
/// replaced; any other file is an error.
fn bind_unix(
    settings: &SyslogSettings,
    path: &std::path::Path,
    poll: &Poll,
    keep: Arc<AtomicBool>,
) -> Result<(UnixDatagram, SocketPath), SyslogError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let unix_error = |source| SyslogError::Unix {
        id: settings.id.clone(),
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if socket_in_use(path) {
                return Err(SyslogError::SocketInUse {
                    id: settings.id.clone(),
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(unix_error)?;
        }
        Ok(_) => {
            return Err(SyslogError::NotASocket {
                id: settings.id.clone(),
                path: path.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    if let Some(directory) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(directory).map_err(unix_error)?;
    }
    let mut socket = UnixDatagram::bind(path).map_err(unix_error)?;
    let guard = SocketPath {
        path: path.to_path_buf(),
        keep,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.unix_mode))
        .map_err(unix_error)?;
    if let Some(bytes) = settings.recv_buffer_bytes {
        request_recv_buffer(&settings.id, &socket, bytes).map_err(unix_error)?;
    }
    poll.registry()
        .register(&mut socket, UNIX, Interest::READABLE)
        .map_err(unix_error)?;
    Ok((socket, guard))
}

/// Whether a process holds the socket at `path`. A connect to a socket
/// nobody holds (left by a daemon that was killed) is refused; any other
/// outcome means a process holds it: a datagram socket takes the connect,
/// a stream or seqpacket listener answers that the type is wrong.
pub fn socket_in_use(path: &std::path::Path) -> bool {
    let Ok(probe) = std::os::unix::net::UnixDatagram::unbound() else {
        return false;
    };
    match probe.connect(path) {
        Ok(()) => true,
        Err(error) => !matches!(
            error.kind(),
            ErrorKind::ConnectionRefused | ErrorKind::NotFound
        ),
    }
}

/// Asks for a receive buffer of `bytes` (`SO_RCVBUF`) and warns when the
/// kernel grants less: it caps the request at `net.core.rmem_max`.
fn request_recv_buffer(id: &str, socket: &impl AsRawFd, bytes: usize) -> std::io::Result<()> {
    set_recv_buffer(socket, bytes)?;
    // The kernel reports twice what it grants (the other half is for its
    // bookkeeping).
    let granted = recv_buffer(socket)? / 2;
    if granted < bytes {
        tracing::warn!(source = %id, asked = bytes, granted, "syslog source: the kernel granted a smaller receive buffer than recv_buffer_bytes (raise net.core.rmem_max)");
    }
    Ok(())
}

/// The receive buffer the kernel reports for `socket` (`SO_RCVBUF`).
fn recv_buffer(socket: &impl AsRawFd) -> std::io::Result<usize> {
    let mut value: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is open (owned by `socket`, borrowed for the
    // call); the kernel writes at most `length` bytes into `value`, a
    // c_int on the stack, and the new length into `length`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut value).cast(),
            &raw mut length,
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(usize::try_from(value).unwrap_or(0))
}

/// Sets `SO_RCVBUF` to `bytes`.
fn set_recv_buffer(socket: &impl AsRawFd, bytes: usize) -> std::io::Result<()> {
    let value = libc::c_int::try_from(bytes).map_err(|_| ErrorKind::InvalidInput)?;
    // SAFETY: the descriptor is open (owned by `socket`, borrowed for the
    // call); the option value is a c_int on the stack whose size is
    // passed, and the kernel only reads it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Bytes the kernel holds for `stream` that were not read (FIONREAD).
fn unread(stream: &TcpStream) -> u64 {
    let mut bytes: libc::c_int = 0;
    // SAFETY: the descriptor is open (owned by `stream`, borrowed for the
    // call); FIONREAD writes one c_int, which lives on the stack.
    let result = unsafe { libc::ioctl(stream.as_raw_fd(), libc::FIONREAD, &raw mut bytes) };
    if result == 0 {
        u64::try_from(bytes).unwrap_or(0)
    } else {
        0
    }
}

/// The inode of a socket, which `/proc/net/udp` lists it by.
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/self/fd/{}", socket.as_raw_fd());
    std::fs::metadata(path).ok().map(|metadata| metadata.ino())
}

/// The kernel's drop count of the UDP socket with `inode`, from
/// `/proc/net/udp` or `/proc/net/udp6` (its last column).
fn kernel_udp_drops(inode: u64) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            udp_drops_in(&text, inode)
        })
}

/// The drops of the socket with `inode` in the text of `/proc/net/udp`.
fn udp_drops_in(text: &str, inode: u64) -> Option<u64> {
    text.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
        let found: u64 = fields.get(9)?.parse().ok()?;
        if found != inode {
            return None;
        }
        fields.last()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_length_drops_trailing_newlines_and_nuls_only() {
        assert_eq!(framing::message_length(b"<13>a\n"), 5);
        assert_eq!(framing::message_length(b"<13>a\r\n"), 5);
        assert_eq!(framing::message_length(b"<13>a\0\0"), 5);
        assert_eq!(framing::message_length(b"<13>a b\n c"), 10);
        assert_eq!(framing::message_length(b"\n"), 0);
    }

    #[test]
    fn udp_drops_are_found_by_inode() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                    1234: 0100007F:15810 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 98765 2 0000000000000000 42\n";
        assert_eq!(udp_drops_in(text, 98765), Some(42));
        assert_eq!(udp_drops_in(text, 1), None);
    }

    /// Goal: the `unsafe` setsockopt and getsockopt calls. Method: ask
    /// for a buffer and read back what the kernel set (twice the request,
    /// below `net.core.rmem_max`).
    #[test]
    fn receive_buffer_is_set_and_read_back() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        set_recv_buffer(&socket, 100_000).expect("setsockopt");
        assert_eq!(recv_buffer(&socket).expect("getsockopt"), 200_000);
        request_recv_buffer("test", &socket, 1 << 30).expect("a capped request is no error");
        assert!(recv_buffer(&socket).expect("getsockopt") < 1 << 31);
    }

    /// Goal: the `unsafe` FIONREAD call. Method: bytes written to a
    /// connection and not read are reported.
    #[test]
    fn unread_bytes_are_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            std::net::TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        let stream = TcpStream::from_std(accepted);
        std::io::Write::write_all(&mut client, b"0123456789").expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        while unread(&stream) < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(unread(&stream), 10);
    }

    /// Goal: a socket another process receives on is in use; one left by
    /// a process that ended is not.
    #[test]
    fn live_and_stale_sockets_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let live = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        assert!(socket_in_use(&path));
        drop(live);
        assert!(path.exists(), "the file stays after its socket closed");
        assert!(!socket_in_use(&path));
        std::fs::remove_file(&path).expect("remove");
        let listener = std::os::unix::net::UnixListener::bind(&path).expect("stream listener");
        assert!(socket_in_use(&path), "a stream listener holds it too");
        drop(listener);
        assert!(!socket_in_use(&path));
    }
}
