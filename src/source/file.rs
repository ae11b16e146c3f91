//! The file source: one thread that follows a list of files as they grow.
//!
//! Each round, the thread reads every file it follows, up to
//! [`READS_PER_FILE_MAX`] chunks per file so that one busy file does not
//! starve the others. A read goes straight into a pooled [`SourceChunk`]
//! after the file's carried-over partial line; the chunk is split into lines
//! and pushed to the dispatcher. When a round finds nothing new the thread
//! parks for `poll_interval_ms`, so an idle source costs nothing.
//!
//! At end of file the source checks whether the path now names another file
//! (rotation: the old file's last partial line is emitted, then the new file
//! is read from its start) or whether the file shrank below the read
//! position (truncation: reading restarts at 0). Both are counted.
//!
//! At shutdown, or at end of input with `exit_on_eof`, the partial last line
//! of each file is emitted unterminated, so that nothing read is lost.
//!
//! Limits: the chunk pool (from `queue_capacity`) bounds what the source
//! holds. A chunk's span table holds [`limits::CHUNK_LINES_MAX`] lines, so a
//! read of short lines can bring more lines than one chunk can carry; what
//! does not fit is carried into the next chunk, and no new bytes are read
//! while the carried tail still holds a complete line (or a piece of a
//! longer one). A file's carried-over tail is therefore at most one read
//! plus a partial line of at most `max_line_bytes`, whatever the line
//! length; and only one chunk of the pool at a time grows past
//! [`limits::CHUNK_BYTES`] to hold a long line. The read size follows the
//! line length seen last (about one span table's worth of bytes), so short
//! lines are not read far ahead only to be copied forward chunk by chunk.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rtrb::{Consumer, Producer};

use serde::Deserialize;

use crate::clock::now_ns;
use crate::limits;
use crate::metrics::SourceMetrics;
use crate::source::{SourceChunk, StreamId};
use crate::wake::{self, Waker};

/// Chunks read from one file before the next file gets its turn.
pub const READS_PER_FILE_MAX: usize = 8;

/// Where a file source starts in a file it has no position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    Beginning,
    End,
}

/// Settings of one file source, from its config table.
#[derive(Debug, Clone)]
pub struct FileSourceSettings {
    pub start_at: StartAt,
    pub max_line_bytes: usize,
    pub poll_interval: Duration,
    pub exit_on_eof: bool,
}

/// The rings and wake-ups of one source thread.
#[derive(Debug)]
pub struct SourceLinks {
    /// Filled chunks to the dispatcher.
    pub chunks: Producer<SourceChunk>,
    /// Empty chunks back from the dispatcher.
    pub returns: Consumer<SourceChunk>,
    pub dispatcher: Waker,
    pub own: Waker,
}

/// One followed path and where reading stands in it.
#[derive(Debug)]
struct FollowedFile {
    path: PathBuf,
    stream: StreamId,
    file: Option<File>,
    /// Device and inode of the open file, to notice rotation.
    identity: (u64, u64),
    /// Bytes read from the open file.
    offset: u64,
    /// Bytes read but not yet part of a line: a partial last line, or
    /// complete lines that did not fit the last chunk's span table.
    pending: Vec<u8>,
    /// Bytes the next read asks for: about what one span table of lines
    /// took last time, between [`limits::READ_BYTES_MIN`] and
    /// [`limits::CHUNK_BYTES`].
    read_bytes_next: usize,
    at_eof: bool,
    /// Whether the first open (which honours `start_at`) has happened.
    opened_before: bool,
    missing_reported: bool,
}

/// What one read produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadStep {
    Progress,
    EndOfFile,
    /// No chunk could be had (stopping, or the dispatcher is gone).
    NoChunk,
}

/// A file source thread's state.
#[derive(Debug)]
pub struct FileSource {
    settings: FileSourceSettings,
    files: Vec<FollowedFile>,
    links: SourceLinks,
    /// Empty chunks this thread holds; at most `pool_size`.
    spare: Vec<SourceChunk>,
    /// Chunks in the pool: in `spare`, in either ring, or at the dispatcher.
    pool_size: usize,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
}

impl FileSource {
    /// `files` pairs each path with its stream; `chunks` is the pool, which
    /// the source owns until it pushes a chunk.
    pub fn new(
        settings: FileSourceSettings,
        files: Vec<(PathBuf, StreamId)>,
        links: SourceLinks,
        chunks: Vec<SourceChunk>,
        stop: Arc<AtomicBool>,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        assert!(
            links.chunks.buffer().capacity() >= chunks.len(),
            "the ring holds the whole pool"
        );
        let files = files
            .into_iter()
            .map(|(path, stream)| FollowedFile {
                path,
                stream,
                file: None,
                identity: (0, 0),
                offset: 0,
                pending: Vec::with_capacity(4096),
                read_bytes_next: limits::CHUNK_BYTES,
                at_eof: false,
                opened_before: false,
                missing_reported: false,
            })
            .collect();
        Self {
            settings,
            files,
            links,
            pool_size: chunks.len(),
            spare: chunks,
            stop,
            metrics,
        }
    }

    /// The thread body. Returns when stopped, or at end of input with
    /// `exit_on_eof`; the dispatcher sees the ring abandoned afterwards.
    pub fn run(mut self) {
        self.links.own.register_current();
        // Acquire pairs with the Release store of the shutdown path, so a
        // stop seen here is a stop requested before.
        while !self.stop.load(Ordering::Acquire) {
            let mut progressed = false;
            for index in 0..self.files.len() {
                progressed |= self.poll_file(index);
            }
            if self.settings.exit_on_eof && self.files.iter().all(|file| file.at_eof) {
                break;
            }
            if !progressed {
                wake::park(self.settings.poll_interval);
            }
        }
        for index in 0..self.files.len() {
            self.complete_partial_line(index);
            self.emit_pending(index);
        }
        // Drop the ring before the wake-up, so that the dispatcher sees it
        // abandoned at once instead of at its next park timeout.
        let dispatcher = self.links.dispatcher.clone();
        drop(self);
        dispatcher.wake();
    }

    /// Reads what is new in one file. True if lines were produced.
    fn poll_file(&mut self, index: usize) -> bool {
        if self.files[index].file.is_none() && !self.open(index) {
            // A missing file counts as finished for `exit_on_eof`.
            self.files[index].at_eof = true;
            return false;
        }
        let mut progressed = false;
        for _ in 0..READS_PER_FILE_MAX {
            match self.read_once(index) {
                Ok(ReadStep::Progress) => {
                    self.files[index].at_eof = false;
                    progressed = true;
                }
                Ok(ReadStep::EndOfFile) => {
                    self.files[index].at_eof = true;
                    self.check_moved(index);
                    break;
                }
                Ok(ReadStep::NoChunk) => break,
                Err(error) => {
                    self.metrics.read_errors.add(1);
                    tracing::warn!(source = %self.metrics.id, path = %self.files[index].path.display(), %error, "read failed; reopening");
                    self.close(index);
                    break;
                }
            }
        }
        progressed
    }

    fn open(&mut self, index: usize) -> bool {
        let file = &mut self.files[index];
        let opened = File::open(&file.path).and_then(|mut handle| {
            let metadata = handle.metadata()?;
            let offset = match (file.opened_before, self.settings.start_at) {
                (false, StartAt::End) => handle.seek(SeekFrom::End(0))?,
                _ => 0,
            };
            Ok((handle, (metadata.dev(), metadata.ino()), offset))
        });
        match opened {
            Ok((handle, identity, offset)) => {
                file.file = Some(handle);
                file.identity = identity;
                file.offset = offset;
                file.opened_before = true;
                file.missing_reported = false;
                file.at_eof = false;
                if let Some(file_metrics) = self.metrics.files.get(index) {
                    file_metrics.open.set(1);
                }
                true
            }
            Err(error) => {
                if !file.missing_reported {
                    tracing::warn!(source = %self.metrics.id, path = %file.path.display(), %error, "cannot open file; will retry");
                    file.missing_reported = true;
                }
                false
            }
        }
    }

    fn close(&mut self, index: usize) {
        if self.files[index].file.take().is_some()
            && let Some(file_metrics) = self.metrics.files.get(index)
        {
            file_metrics.open.set(0);
        }
    }

    /// One read into a fresh chunk after the carried-over tail. No read
    /// happens while the tail still holds a whole span.
    fn read_once(&mut self, index: usize) -> std::io::Result<ReadStep> {
        let file = &self.files[index];
        // A carried tail that still holds a whole span is taken before
        // anything new is read, so that it cannot grow.
        let read_nothing = carries_spans(&file.pending, self.settings.max_line_bytes);
        let read_room = if read_nothing {
            0
        } else {
            limits::READ_BYTES_MIN
        };
        let Some(mut chunk) = self.take_chunk(file.pending.len() + read_room, false) else {
            return Ok(ReadStep::NoChunk);
        };
        let file = &mut self.files[index];
        chunk.reset(file.stream, now_ns());
        chunk.append(&file.pending);
        file.pending.clear();
        let bytes = if read_nothing {
            0
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
                Ok(bytes) => bytes,
                Err(error) => {
                    file.pending.extend_from_slice(chunk.filled());
                    self.spare.push(chunk);
                    return Err(error);
                }
            }
        };
        chunk.commit_read(bytes);
        file.offset += bytes as u64;
        self.metrics.bytes_read.add(bytes as u64);
        let outcome = chunk.split(self.settings.max_line_bytes, false);
        file.pending.extend_from_slice(chunk.tail(outcome.consumed));
        file.read_bytes_next = next_read_bytes(chunk.lines().len(), outcome.consumed);
        debug_assert!(
            file.pending.len() <= limits::CHUNK_BYTES + self.settings.max_line_bytes,
            "carried tail {} bytes",
            file.pending.len()
        );
        self.metrics.lines_split.add(outcome.pieces_split);
        let has_lines = !chunk.lines().is_empty();
        self.hand_on(chunk);
        Ok(if bytes == 0 && !has_lines {
            ReadStep::EndOfFile
        } else {
            ReadStep::Progress
        })
    }

    /// Pushes a chunk with lines to the dispatcher, or keeps an empty one.
    fn hand_on(&mut self, chunk: SourceChunk) {
        let lines = chunk.lines().len() as u64;
        if lines == 0 {
            self.spare.push(chunk);
            return;
        }
        let pushed = self.links.chunks.push(chunk);
        assert!(pushed.is_ok(), "the ring holds the whole chunk pool");
        self.metrics.lines_read.add(lines);
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
                return Some(chunk);
            }
            if self.links.returns.is_abandoned() {
                return None;
            }
            if !while_stopping && self.stop.load(Ordering::Acquire) {
                return None;
            }
            wake::park(Duration::from_millis(limits::PARK_TIMEOUT_MS_MAX));
        }
    }

    /// At a stop, reads on to the end of the partial line the carried tail
    /// ends with, if the file holds it (a stop in the middle of a backlog):
    /// otherwise the fragment would be shipped as a line of its own. Reads
    /// at most up to `max_line_bytes` of the line, and stops at end of file,
    /// where a partial line is really the file's last.
    fn complete_partial_line(&mut self, index: usize) {
        let max_line_bytes = self.settings.max_line_bytes;
        let file = &mut self.files[index];
        let Some(handle) = file.file.as_mut() else {
            return;
        };
        let mut block = [0u8; 4096];
        loop {
            let line_start = memchr::memrchr(b'\n', &file.pending).map_or(0, |at| at + 1);
            let line_bytes = file.pending.len() - line_start;
            if file.pending.is_empty() || line_bytes == 0 || line_bytes >= max_line_bytes {
                return;
            }
            let wanted = block.len().min(max_line_bytes - line_bytes);
            let read = match handle.read(&mut block[..wanted]) {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let taken = memchr::memchr(b'\n', &block[..read]).map_or(read, |at| at + 1);
            file.pending.extend_from_slice(&block[..taken]);
            file.offset += taken as u64;
            self.metrics.bytes_read.add(taken as u64);
        }
    }

    /// Emits a file's carried-over bytes as final lines (unterminated tail).
    fn emit_pending(&mut self, index: usize) {
        while !self.files[index].pending.is_empty() {
            let bytes = self.files[index].pending.len();
            let Some(mut chunk) = self.take_chunk(bytes, true) else {
                tracing::error!(source = %self.metrics.id, path = %self.files[index].path.display(), bytes = self.files[index].pending.len(), "dispatcher gone; last partial line not delivered");
                return;
            };
            let file = &mut self.files[index];
            chunk.reset(file.stream, now_ns());
            chunk.append(&file.pending);
            file.pending.clear();
            let outcome = chunk.split(self.settings.max_line_bytes, true);
            file.pending.extend_from_slice(chunk.tail(outcome.consumed));
            self.metrics.lines_split.add(outcome.pieces_split);
            self.hand_on(chunk);
        }
    }

    /// At end of file: has the path been rotated to a new file, or the file
    /// truncated below our position?
    fn check_moved(&mut self, index: usize) {
        let file = &self.files[index];
        let Ok(path_metadata) = std::fs::metadata(&file.path) else {
            return;
        };
        if (path_metadata.dev(), path_metadata.ino()) != file.identity {
            if let Some(file_metrics) = self.metrics.files.get(index) {
                file_metrics.rotations.add(1);
            }
            tracing::info!(source = %self.metrics.id, path = %file.path.display(), "file rotated; following the new file");
            self.emit_pending(index);
            self.close(index);
            if self.open(index) && self.settings.exit_on_eof {
                self.files[index].at_eof = false;
            }
            return;
        }
        if path_metadata.len() < file.offset {
            if let Some(file_metrics) = self.metrics.files.get(index) {
                file_metrics.truncations.add(1);
            }
            tracing::warn!(source = %self.metrics.id, path = %file.path.display(), offset = file.offset, length = path_metadata.len(), "file truncated; reading from its start");
            self.emit_pending(index);
            let file = &mut self.files[index];
            if let Some(handle) = file.file.as_mut()
                && handle.seek(SeekFrom::Start(0)).is_ok()
            {
                file.offset = 0;
                file.at_eof = false;
            }
        }
    }
}

/// Whether a carried tail holds at least one span: a complete line, or a
/// piece of `max_line_bytes` of a longer one.
fn carries_spans(pending: &[u8], max_line_bytes: usize) -> bool {
    pending.len() > max_line_bytes || memchr::memchr(b'\n', pending).is_some()
}

/// The size of the next read after a split that produced `lines` spans
/// from the first `consumed` bytes: when the span table filled up, about
/// the bytes it covered (so the next read brings about one table of lines);
/// otherwise a whole chunk.
fn next_read_bytes(lines: usize, consumed: usize) -> usize {
    if lines < limits::CHUNK_LINES_MAX {
        return limits::CHUNK_BYTES;
    }
    consumed.clamp(limits::READ_BYTES_MIN, limits::CHUNK_BYTES)
}
