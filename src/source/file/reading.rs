//! Reading followed files into pooled chunks and handing them on.

use std::io::Read;
use std::time::{Duration, Instant};

use super::{FileSource, POLL_BACKOFF_MAX, POLL_SLOW_BYTES, READS_PER_FILE_MAX, ReadStep};

/// Chunks pushed in one round before the dispatcher is woken for them
/// (besides the wake at the round's end): a quarter of the default pool.
const WAKE_AFTER_CHUNKS: usize = 4;
use crate::clock::now_ns;
use crate::limits;
use crate::source::SourceChunk;
use crate::source::split::{carries_spans, next_read_bytes};

impl FileSource {
    /// Reads what is new in one open file. True if lines were produced.
    pub(super) fn poll_file(&mut self, index: usize) -> bool {
        if self.files[index].file.is_none() {
            return false;
        }
        let mut progressed = false;
        for _ in 0..READS_PER_FILE_MAX {
            match self.read_once(index) {
                Ok(ReadStep::Progress) => {
                    let file = &mut self.files[index];
                    file.at_eof = false;
                    file.last_read = Instant::now();
                    progressed = true;
                }
                Ok(ReadStep::ProgressToEnd) => {
                    // The file grew: it was not truncated below the offset.
                    self.files[index].last_read = Instant::now();
                    progressed = true;
                    self.reached_end(index);
                    break;
                }
                Ok(ReadStep::EndOfFile) => {
                    self.reached_end(index);
                    self.check_moved(index);
                    break;
                }
                Ok(ReadStep::NoChunk) => break,
                Err(error) => {
                    self.metrics.read_errors.add(1);
                    let file = &mut self.files[index];
                    tracing::warn!(source = %self.settings.id, path = %file.path.display(), %error, "read failed; reopening");
                    file.unread_carried();
                    file.wants_open = true;
                    self.close(index);
                    break;
                }
            }
        }
        progressed
    }

    /// One read into a fresh chunk after the carried-over tail. No read
    /// happens while the tail still holds a whole span.
    pub(super) fn read_once(&mut self, index: usize) -> std::io::Result<ReadStep> {
        let file = &self.files[index];
        // A carried tail that still holds a whole span is taken before
        // anything new is read, so that it cannot grow.
        let read_nothing = carries_spans(&file.pending, self.split_bytes());
        let read_room = if read_nothing {
            0
        } else {
            limits::READ_BYTES_MIN
        };
        let Some(mut chunk) = self.take_chunk(file.pending.len() + read_room, false) else {
            return Ok(ReadStep::NoChunk);
        };
        let file = &mut self.files[index];
        chunk.reset(file.stream, &file.labels, &file.inline, now_ns());
        let base_offset = file.offset - file.pending.len() as u64;
        chunk.append(&file.pending);
        file.pending.clear();
        let (bytes, asked) = if read_nothing {
            (0, 0)
        } else {
            let handle = file
                .file
                .as_mut()
                .expect("read_once is called on open files");
            let spare = chunk.spare_mut(limits::READ_BYTES_MIN);
            let read_bytes = spare
                .len()
                .min(file.read_bytes_next.max(limits::READ_BYTES_MIN));
            match handle.read(&mut spare[..read_bytes]) {
                Ok(bytes) => (bytes, read_bytes),
                Err(error) => {
                    file.pending.extend_from_slice(chunk.filled());
                    self.spare.push(chunk);
                    return Err(error);
                }
            }
        };
        chunk.commit_read(bytes);
        file.offset += bytes as u64;
        file.bytes_since_end += bytes as u64;
        // A regular file that gives less than was asked is at its end now:
        // no second read to learn it.
        let short = bytes < asked;
        self.metrics.bytes_read.add(bytes as u64);
        let (consumed, split_lines) = self.split_read(index, &mut chunk, base_offset, false);
        let split_bytes = self.split_bytes();
        let file = &mut self.files[index];
        file.read_bytes_next = next_read_bytes(split_lines, consumed);
        debug_assert!(
            file.pending.len() <= 2 * limits::CHUNK_BYTES + split_bytes,
            "carried tail {} bytes",
            file.pending.len()
        );
        let has_lines = split_lines > 0;
        self.hand_on(chunk);
        Ok(if bytes == 0 && !has_lines {
            ReadStep::EndOfFile
        } else if short && !carries_spans(&self.files[index].pending, self.split_bytes()) {
            ReadStep::ProgressToEnd
        } else {
            ReadStep::Progress
        })
    }

    /// A file is read to its end: it is polled again after its interval,
    /// stretched while its polls bring little (see `POLL_SLOW_BYTES`).
    fn reached_end(&mut self, index: usize) {
        let base = self.settings.poll_interval;
        let file = &mut self.files[index];
        file.at_eof = true;
        file.poll_every = if file.bytes_since_end < POLL_SLOW_BYTES {
            (file.poll_every * 2).min(base * POLL_BACKOFF_MAX)
        } else {
            base
        };
        // A file found grown in two reads within two write waits is busy:
        // it is read again after the write wait, without waiting for
        // inotify to report each write. A file written less often is left
        // to inotify: reading it every write wait would mostly find
        // nothing (a thousand files written once a second each).
        let now = Instant::now();
        let write_wait = self.settings.write_wait;
        let grown = file.bytes_since_end > 0;
        let busy = grown
            && file
                .grown_at
                .is_some_and(|grown_at| now.duration_since(grown_at) <= write_wait * 2);
        if grown {
            file.grown_at = Some(now);
        }
        let wait = if busy {
            file.poll_every.min(write_wait)
        } else {
            file.poll_every
        };
        file.bytes_since_end = 0;
        // Busy files read in one round stay together on their own; the
        // others join the grid (measured: a single busy file on the grid
        // cost 8% more CPU at 50k lines/s).
        let next_poll = if busy {
            now + wait
        } else {
            self.on_grid(now + wait)
        };
        self.files[index].next_poll = next_poll;
    }

    /// Hands on a chunk with lines (held back as the round's last until
    /// the next one comes or the round ends), or keeps an empty one.
    fn hand_on(&mut self, chunk: SourceChunk) {
        let lines = chunk.lines().len() as u64;
        if lines == 0 {
            self.spare.push(chunk);
            return;
        }
        self.metrics.lines_read.add(lines);
        if let Some(previous) = self.held.replace(chunk) {
            self.push_chunk(previous, false);
        }
    }

    /// Ends the round: the held chunk goes to the dispatcher marked as the
    /// round's last, and the dispatcher is woken.
    pub(super) fn end_round(&mut self) {
        if let Some(chunk) = self.held.take() {
            self.push_chunk(chunk, true);
        }
    }

    /// Pushes a chunk to the dispatcher. It is woken at the round's end,
    /// and every [`WAKE_AFTER_CHUNKS`] chunks of a long round (a backlog),
    /// so that it batches while the source reads on.
    fn push_chunk(&mut self, mut chunk: SourceChunk, ends_round: bool) {
        chunk.ends_round = ends_round;
        let ring = self
            .links
            .chunks
            .as_mut()
            .expect("chunks are handed on before the ring is dropped");
        let pushed = ring.push(chunk);
        assert!(pushed.is_ok(), "the ring holds the whole chunk pool");
        self.pushed_unwoken += 1;
        if ends_round || self.pushed_unwoken >= WAKE_AFTER_CHUNKS {
            self.wake_dispatcher();
        }
    }

    fn wake_dispatcher(&mut self) {
        self.pushed_unwoken = 0;
        self.links.dispatcher.wake();
    }

    /// An empty chunk from the local spares or from the dispatcher, able to
    /// hold `bytes`. Waits while the dispatcher holds them all: the file is
    /// the buffer. Gives up when the dispatcher is gone, or when stopping
    /// unless `while_stopping`.
    ///
    /// A chunk that must grow past [`limits::CHUNK_BYTES`] (for a line
    /// longer than a chunk) is handed out only once every other chunk of the
    /// pool is back, and it shrinks back when it is reset: so at most one
    /// chunk of the pool is oversized at a time, and a backlog of long lines
    /// costs one long line more than the pool, not one per chunk.
    fn take_chunk(&mut self, bytes: usize, while_stopping: bool) -> Option<SourceChunk> {
        let exclusive = bytes > limits::CHUNK_BYTES;
        let mut asked = false;
        loop {
            while let Ok(chunk) = self.links.returns.pop() {
                self.spare.push(chunk);
            }
            debug_assert!(
                self.spare.len() <= self.pool_size,
                "spares {}",
                self.spare.len()
            );
            if (!exclusive || self.spare.len() == self.pool_size)
                && let Some(chunk) = self.spare.pop()
            {
                if asked {
                    self.links.want_returns(false);
                }
                return Some(chunk);
            }
            if !asked {
                // Ask to be woken, then look once more before waiting.
                self.links.want_returns(true);
                asked = true;
                continue;
            }
            // Waiting for the dispatcher: it must have every chunk, woken.
            if let Some(held) = self.held.take() {
                self.push_chunk(held, false);
                if self.pushed_unwoken > 0 {
                    self.wake_dispatcher();
                }
                continue;
            }
            if self.links.returns.is_abandoned() {
                return None;
            }
            let stopping = self.stop.load(std::sync::atomic::Ordering::Acquire);
            if !while_stopping && !self.finishing && stopping {
                return None;
            }
            // Receipts keep coming while the source waits for chunks.
            self.take_commits();
            self.wait(Duration::from_millis(limits::PARK_TIMEOUT_MS_MAX));
        }
    }

    /// Emits a file's carried-over bytes as final lines (unterminated tail):
    /// for a file that is gone, truncated, or at `exit_on_eof`.
    pub(super) fn emit_pending(&mut self, index: usize) {
        while !self.files[index].pending.is_empty() || Self::is_joining(&self.files[index]) {
            let bytes = self.files[index].pending.len();
            let Some(mut chunk) = self.take_chunk(bytes, true) else {
                tracing::error!(source = %self.settings.id, path = %self.files[index].path.display(), bytes, "dispatcher gone; last partial line not delivered");
                return;
            };
            let file = &mut self.files[index];
            chunk.reset(file.stream, &file.labels, &file.inline, now_ns());
            let base_offset = file.offset - file.pending.len() as u64;
            chunk.append(&file.pending);
            file.pending.clear();
            self.split_read(index, &mut chunk, base_offset, true);
            self.hand_on(chunk);
        }
    }
}
