//! The metrics endpoint: a small HTTP/1.1 server on one thread (mio).
//!
//! `GET /metrics` answers the Prometheus text exposition, `GET /health` a
//! JSON summary (200 when every stage runs and no breaker is open, 503 with
//! the reasons otherwise), anything else 404 (405 for other methods). Every
//! answer closes the connection.
//!
//! Hostile clients are bounded: at most [`CONNECTIONS_MAX`] connections are
//! held (a new one evicts the oldest), a request head is at most
//! [`REQUEST_BYTES_MAX`] bytes (431 beyond), and a connection that has not
//! sent its request head within [`REQUEST_TIMEOUT`] is closed. So idle or
//! slow connections cost a bounded amount of memory and descriptors, and
//! the stages never wait on this thread: it only reads atomics and takes
//! histograms from rings.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::telemetry::exposition::Exporter;
use crate::telemetry::{AllocatorFigures, Telemetry};

/// Connections held at once.
pub const CONNECTIONS_MAX: usize = 64;
/// Longest request head accepted.
pub const REQUEST_BYTES_MAX: usize = 8 * 1024;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_secs(1);
const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen for metrics on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the metrics thread")]
    Thread(#[source] std::io::Error),
}

/// A running endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `address` (port 0 picks a free port) and starts the thread.
    pub fn start(
        address: SocketAddr,
        telemetry: Telemetry,
        allocator: Option<AllocatorFigures>,
    ) -> Result<Self, EndpointError> {
        let bind_error = |source| EndpointError::Bind { address, source };
        let mut listener = TcpListener::bind(address).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let poll = Poll::new().map_err(EndpointError::Thread)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(EndpointError::Thread)?;
        let waker =
            Arc::new(mio::Waker::new(poll.registry(), WAKER).map_err(EndpointError::Thread)?);
        let stop = Arc::new(AtomicBool::new(false));
        let server = Server {
            poll,
            listener,
            connections: (0..CONNECTIONS_MAX).map(|_| None).collect(),
            exporter: Exporter::new(telemetry, allocator),
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name("metrics".to_string())
            .spawn(move || server.run())
            .map_err(EndpointError::Thread)?;
        Ok(Self {
            address: bound,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// The address actually bound.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Debug)]
struct Connection {
    stream: TcpStream,
    accepted_at: Instant,
    request: Vec<u8>,
    response: Vec<u8>,
    written: usize,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    connections: Vec<Option<Connection>>,
    exporter: Exporter,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn run(mut self) {
        let mut events = Events::with_capacity(CONNECTIONS_MAX + 2);
        let mut ticked_at = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            if let Err(error) = self.poll.poll(&mut events, Some(TICK))
                && error.kind() != ErrorKind::Interrupted
            {
                tracing::error!(%error, "metrics endpoint poll failed; endpoint stopped");
                return;
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(index) => self.serve(index),
                }
            }
            self.close_expired();
            if ticked_at.elapsed() >= TICK {
                self.exporter.tick();
                ticked_at = Instant::now();
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) => {
                    tracing::debug!(%error, "metrics endpoint accept failed");
                    return;
                }
            };
            let index = match self.connections.iter().position(Option::is_none) {
                Some(index) => index,
                None => self.evict_oldest(),
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut stream, Token(index), interest)
                .is_err()
            {
                continue;
            }
            self.connections[index] = Some(Connection {
                stream,
                accepted_at: Instant::now(),
                request: Vec::with_capacity(1024),
                response: Vec::new(),
                written: 0,
            });
        }
    }

    fn evict_oldest(&mut self) -> usize {
        let index = self
            .connections
            .iter()
            .enumerate()
            .filter_map(|(index, connection)| {
                connection
                    .as_ref()
                    .map(|connection| (index, connection.accepted_at))
            })
            .min_by_key(|&(_, accepted_at)| accepted_at)
            .map(|(index, _)| index)
            .expect("eviction happens only when every slot is taken");
        self.close(index);
        index
    }

    fn close(&mut self, index: usize) {
        if let Some(mut connection) = self.connections[index].take() {
            let _ = self.poll.registry().deregister(&mut connection.stream);
        }
    }

    fn close_expired(&mut self) {
        for index in 0..self.connections.len() {
            let expired = self.connections[index].as_ref().is_some_and(|connection| {
                connection.response.is_empty() && connection.accepted_at.elapsed() > REQUEST_TIMEOUT
            });
            if expired {
                self.close(index);
            }
        }
    }

    /// Reads the request head, answers it, writes the answer.
    fn serve(&mut self, index: usize) {
        let Some(connection) = self.connections.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        if connection.response.is_empty() {
            match read_head(connection) {
                HeadRead::Pending => return,
                HeadRead::Closed => {
                    self.close(index);
                    return;
                }
                HeadRead::TooLarge => {
                    connection.response = response(431, "text/plain", b"request head too large\n")
                }
                HeadRead::Complete => {
                    let request = std::mem::take(&mut connection.request);
                    let answer = answer(&mut self.exporter, &request);
                    let connection = self.connections[index].as_mut().expect("still open");
                    connection.response = answer;
                }
            }
        }
        let connection = self.connections[index].as_mut().expect("still open");
        match write_response(connection) {
            Written::Pending => {}
            Written::Done | Written::Failed => self.close(index),
        }
    }
}

enum HeadRead {
    Pending,
    Complete,
    TooLarge,
    Closed,
}

fn read_head(connection: &mut Connection) -> HeadRead {
    let mut buffer = [0u8; 1024];
    loop {
        match connection.stream.read(&mut buffer) {
            Ok(0) => return HeadRead::Closed,
            Ok(bytes) => {
                connection.request.extend_from_slice(&buffer[..bytes]);
                if connection
                    .request
                    .windows(4)
                    .any(|window| window == b"\r\n\r\n")
                {
                    return HeadRead::Complete;
                }
                if connection.request.len() > REQUEST_BYTES_MAX {
                    return HeadRead::TooLarge;
                }
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => return HeadRead::Pending,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return HeadRead::Closed,
        }
    }
}

enum Written {
    Pending,
    Done,
    Failed,
}

fn write_response(connection: &mut Connection) -> Written {
    while connection.written < connection.response.len() {
        match connection
            .stream
            .write(&connection.response[connection.written..])
        {
            Ok(0) => return Written::Failed,
            Ok(bytes) => connection.written += bytes,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Written::Pending,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Written::Failed,
        }
    }
    Written::Done
}

/// The answer to one request head.
fn answer(exporter: &mut Exporter, request: &[u8]) -> Vec<u8> {
    let line_end = request
        .iter()
        .position(|&byte| byte == b'\r')
        .unwrap_or(request.len());
    let line = String::from_utf8_lossy(&request[..line_end]);
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return response(405, "text/plain", b"only GET and HEAD\n");
    }
    let full = match path {
        "/metrics" => {
            exporter.tick();
            response(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                exporter.render().as_bytes(),
            )
        }
        "/health" => {
            let (healthy, body) = exporter.health_json();
            response(
                if healthy { 200 } else { 503 },
                "application/json",
                body.as_bytes(),
            )
        }
        _ => response(404, "text/plain", b"not found: try /metrics or /health\n"),
    };
    if method == "HEAD" {
        let head_end = full
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .map_or(full.len(), |at| at + 4);
        return full[..head_end].to_vec();
    }
    full
}

fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}
