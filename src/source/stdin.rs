//! The stdin source: lines from standard input, until its end.
//!
//! For pipes and backfills: `tail -F app.log | log-capturer run …`, or
//! `log-capturer run … < old.log`. The thread waits for input with
//! `poll(2)` (so that a stop is seen within [`POLL_TIMEOUT`] even while
//! the writer is silent), reads into a pooled chunk after the carried
//! partial line, splits it as a file source does and hands it on. At the
//! end of input it emits a final line without newline as it is, hands over
//! its last chunk and ends; the dispatcher sees its ring abandoned. When
//! it was the only source, the daemon then drains and exits 0.
//!
//! Not durable: standard input cannot be read again, so there are no
//! positions; what was read is delivered or, past the shutdown deadline,
//! stored in the DLQ like any other line.
//!
//! Limits: the chunk pool (from `queue_capacity`), and a carried tail of at
//! most one read plus a partial line of `max_line_bytes`. Allocations: the
//! carried-tail buffer, once; none per line.

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::now_ns;
use crate::labels::{LabelSet, Symbol, SymbolTable};
use crate::limits;
use crate::metrics::SourceMetrics;
use crate::source::split::{carries_spans, next_read_bytes};
use crate::source::{SourceChunk, SourceLinks};
use crate::wake;

/// Longest a wait for input lasts before the stop flag is looked at.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Settings of the stdin source.
#[derive(Debug, Clone)]
pub struct StdinSettings {
    pub id: String,
    /// Static labels, besides `source_id`.
    pub labels: Vec<(String, String)>,
    pub max_line_bytes: usize,
}

/// The stdin source thread's state.
#[derive(Debug)]
pub struct StdinSource {
    settings: StdinSettings,
    labels: LabelSet,
    inline: Vec<(Symbol, Arc<str>)>,
    links: SourceLinks,
    spare: Vec<SourceChunk>,
    /// Bytes read and not yet part of a line.
    carried: Vec<u8>,
    read_bytes_next: usize,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
}

/// What one step of reading found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Lines,
    Quiet,
    End,
}

impl StdinSource {
    pub fn new(
        settings: StdinSettings,
        symbols: &SymbolTable,
        links: SourceLinks,
        chunks: Vec<SourceChunk>,
        stop: Arc<AtomicBool>,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        let pairs = std::iter::once(("source_id", settings.id.as_str())).chain(
            settings
                .labels
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        let (labels, overflow) = symbols.label_set_with_overflow(pairs);
        let inline = overflow
            .into_iter()
            .map(|(key, value)| (key, Arc::from(value)))
            .collect();
        Self {
            settings,
            labels,
            inline,
            links,
            spare: chunks,
            carried: Vec::new(),
            read_bytes_next: limits::CHUNK_BYTES,
            stop,
            metrics,
        }
    }

    /// The thread body: returns at the end of input or when stopped.
    pub fn run(mut self) {
        self.links.own.register_current();
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let descriptor = stdin.as_raw_fd();
        // Acquire pairs with the Release store of the shutdown path.
        while !self.stop.load(Ordering::Acquire) {
            match self.step(&mut input, descriptor) {
                Input::Lines => {}
                Input::Quiet => {}
                Input::End => break,
            }
        }
        self.emit_carried();
        drop(self.links.chunks.take());
        self.links.dispatcher.wake();
    }

    fn step(&mut self, input: &mut impl Read, descriptor: RawFd) -> Input {
        let Some(mut chunk) = self.take_chunk() else {
            wake::park(POLL_TIMEOUT);
            return Input::Quiet;
        };
        // Lines carried over (the span table filled up) go first, before
        // more is read.
        let must_read = !carries_spans(&self.carried, self.settings.max_line_bytes);
        if must_read && !wait_readable(descriptor, POLL_TIMEOUT) {
            self.spare.push(chunk);
            return Input::Quiet;
        }
        chunk.reset(0, &self.labels, &self.inline, now_ns());
        chunk.append(&self.carried);
        self.carried.clear();
        let mut at_end = false;
        if must_read {
            match read_into(input, chunk.spare_mut(self.read_bytes_next)) {
                Ok(0) => at_end = true,
                Ok(bytes) => {
                    chunk.commit_read(bytes);
                    self.metrics.bytes_read.add(bytes as u64);
                }
                Err(error) => {
                    tracing::error!(source = %self.settings.id, %error, "standard input: read failed; the source ends");
                    self.metrics.read_errors.add(1);
                    at_end = true;
                }
            }
        }
        let outcome = chunk.split(self.settings.max_line_bytes, at_end);
        self.carried.extend_from_slice(chunk.tail(outcome.consumed));
        self.read_bytes_next = next_read_bytes(chunk.lines().len(), outcome.consumed);
        self.metrics.lines_split.add(outcome.pieces_split);
        self.hand_on(chunk);
        if at_end && self.carried.is_empty() {
            Input::End
        } else {
            Input::Lines
        }
    }

    /// A stop before the end of input: the partial line read so far is
    /// emitted as it is (it cannot be read again), waiting for a chunk for
    /// as long as the dispatcher takes.
    fn emit_carried(&mut self) {
        while !self.carried.is_empty() {
            let Some(mut chunk) = self.take_chunk() else {
                if self.links.returns.is_abandoned() {
                    return;
                }
                wake::park(POLL_TIMEOUT);
                continue;
            };
            chunk.reset(0, &self.labels, &self.inline, now_ns());
            chunk.append(&self.carried);
            self.carried.clear();
            let outcome = chunk.split(self.settings.max_line_bytes, true);
            self.carried.extend_from_slice(chunk.tail(outcome.consumed));
            self.hand_on(chunk);
        }
    }

    fn take_chunk(&mut self) -> Option<SourceChunk> {
        while let Ok(chunk) = self.links.returns.pop() {
            self.spare.push(chunk);
        }
        self.spare.pop()
    }

    fn hand_on(&mut self, chunk: SourceChunk) {
        let lines = chunk.lines().len() as u64;
        if lines == 0 {
            self.spare.push(chunk);
            return;
        }
        self.metrics.lines_read.add(lines);
        let Some(ring) = self.links.chunks.as_mut() else {
            return;
        };
        if ring.push(chunk).is_err() {
            unreachable!("the chunk ring holds the whole pool");
        }
        self.links.dispatcher.wake();
    }
}

fn read_into(input: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match input.read(buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// Waits up to `timeout` for `descriptor` to have input (or its end, or an
/// error, which the read then reports).
fn wait_readable(descriptor: RawFd, timeout: Duration) -> bool {
    let mut poll = libc::pollfd {
        fd: descriptor,
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd on the stack, its count 1; the kernel writes only
    // its `revents`. The descriptor need not be valid: poll reports POLLNVAL.
    let ready = unsafe { libc::poll(&raw mut poll, 1, timeout_ms) };
    ready > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// Goal: the `unsafe` poll call. Method: a socket pair, polled before
    /// and after the other end writes, and after it closes.
    #[test]
    fn wait_readable_sees_input_and_its_end() {
        let (mut writer, reader) = UnixStream::pair().expect("socket pair");
        let descriptor = reader.as_raw_fd();
        assert!(!wait_readable(descriptor, Duration::from_millis(10)));
        writer.write_all(b"line\n").expect("write");
        assert!(wait_readable(descriptor, Duration::from_millis(1000)));
        let mut buffer = [0u8; 16];
        assert_eq!((&reader).read(&mut buffer).expect("read"), 5);
        drop(writer);
        assert!(wait_readable(descriptor, Duration::from_millis(1000)));
    }
}
