//! Sources: threads that read lines and hand them to the dispatcher.
//!
//! A source reads large blocks into a [`SourceChunk`] taken from its own
//! pool, splits them into [`LineSpan`]s and pushes the chunk into its SPSC
//! ring to the dispatcher. The dispatcher copies the lines into a batch and
//! pushes the chunk back on a second ring, so chunks circulate and nothing is
//! allocated per line. The pool is allocated at start-up: its size bounds the
//! memory of a source and the entries waiting in its ring.
//!
//! When the ring is full (no chunk comes back) a file source stops reading:
//! the file is the buffer.
//!
//! A chunk of a durable source carries a [`Receipt`]: where its last line
//! ends in its file. The dispatcher keeps the receipts of a batch until the
//! batch is complete (every sink delivered it or holds it in its DLQ) and
//! every batch sealed before it is complete too; then it hands them back on
//! the source's commit ring, and the source may store that position.

pub mod file;
pub mod positions;
pub mod syslog;
pub mod split;

pub use split::{LineSpan, SplitOptions, SplitOutcome, split_lines};

use std::sync::Arc;

use crate::labels::{LabelSet, Symbol};
use crate::limits;

pub use crate::batch::StreamId;

/// Where the lines of a chunk end in their file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Device and inode of the file.
    pub device: u64,
    pub inode: u64,
    /// The source's number for this reading of the file: a new number after
    /// a truncation, so that the receipts of the old content are ignored.
    pub serial: u64,
    /// Offset of the byte after the chunk's last line.
    pub end_offset: u64,
}

/// Receipts waiting on one source's commit ring; the dispatcher holds back
/// the rest when the ring is full.
pub const COMMITS_RING_CAPACITY: usize = 1024;

/// A block of input bytes and the lines found in it.
///
/// Invariant: `filled <= data.len()`, every span lies inside
/// `data[..filled]`, and `lines.len() <= limits::CHUNK_LINES_MAX`.
#[derive(Debug)]
pub struct SourceChunk {
    /// Zero-initialised at allocation so that reads need no `unsafe`; only
    /// `data[..filled]` is meaningful.
    data: Vec<u8>,
    filled: usize,
    lines: Vec<LineSpan>,
    /// The stream every line of this chunk belongs to.
    pub stream: StreamId,
    /// The labels of that stream.
    pub labels: LabelSet,
    /// Labels whose values the symbol table had no room for: (key, value).
    /// Empty unless `[daemon] label_symbols_max` or `label_bytes_max` is
    /// reached.
    pub inline: Vec<(Symbol, Arc<str>)>,
    /// Where the chunk's last line ends in its file, for a durable source.
    pub receipt: Option<Receipt>,
    /// When the bytes were read, nanoseconds since the Unix epoch.
    pub read_at_ns: u64,
}

impl SourceChunk {
    /// Allocates a chunk of [`limits::CHUNK_BYTES`]. Called at start-up only.
    pub fn new() -> Self {
        Self {
            data: vec![0; limits::CHUNK_BYTES],
            filled: 0,
            lines: Vec::with_capacity(limits::CHUNK_LINES_MAX),
            stream: 0,
            labels: LabelSet::new(),
            inline: Vec::new(),
            receipt: None,
            read_at_ns: 0,
        }
    }

    /// Empties the chunk for reuse by `stream`. A chunk that grew for a long
    /// line gives the extra memory back, so that one long line does not pin
    /// memory for the rest of the run.
    pub fn reset(
        &mut self,
        stream: StreamId,
        labels: &LabelSet,
        inline: &[(Symbol, Arc<str>)],
        read_at_ns: u64,
    ) {
        self.filled = 0;
        self.lines.clear();
        self.stream = stream;
        self.labels.clone_from(labels);
        self.inline.clear();
        self.inline.extend_from_slice(inline);
        self.receipt = None;
        self.read_at_ns = read_at_ns;
        if self.data.len() > 2 * limits::CHUNK_BYTES {
            self.data.truncate(limits::CHUNK_BYTES);
            self.data.shrink_to_fit();
        }
    }

    pub fn lines(&self) -> &[LineSpan] {
        &self.lines
    }

    /// The bytes of one span of this chunk.
    pub fn line(&self, span: LineSpan) -> &[u8] {
        let start = span.start as usize;
        &self.data[start..start + span.len as usize]
    }

    /// Bytes read into the chunk, lines and tail.
    pub fn filled(&self) -> &[u8] {
        &self.data[..self.filled]
    }

    /// Appends bytes (a carried-over tail), growing the chunk if needed.
    pub fn append(&mut self, bytes: &[u8]) {
        self.ensure_spare(bytes.len());
        self.data[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    /// Makes room for at least `bytes` more, then returns the unused room
    /// for a read. Grows only past a carried-over long line.
    pub fn spare_mut(&mut self, bytes: usize) -> &mut [u8] {
        self.ensure_spare(bytes);
        &mut self.data[self.filled..]
    }

    /// Records that `bytes` of the spare room were filled by a read.
    pub fn commit_read(&mut self, bytes: usize) {
        assert!(
            self.filled + bytes <= self.data.len(),
            "read past the chunk"
        );
        self.filled += bytes;
    }

    fn ensure_spare(&mut self, bytes: usize) {
        let needed = self.filled + bytes;
        if needed > self.data.len() {
            self.data.resize(needed.next_power_of_two(), 0);
        }
    }

    /// Splits the filled bytes into spans and returns the outcome; the bytes
    /// from `outcome.consumed` on are not part of any span.
    pub fn split(&mut self, max_line_bytes: usize, flush_tail: bool) -> SplitOutcome {
        debug_assert!(self.lines.is_empty(), "a chunk is split once");
        let options = SplitOptions {
            max_line_bytes,
            spans_max: limits::CHUNK_LINES_MAX,
            flush_tail,
        };
        split_lines(&self.data[..self.filled], &mut self.lines, options)
    }

    /// Bytes from `offset` to the end of what was read.
    pub fn tail(&self, offset: usize) -> &[u8] {
        &self.data[offset..self.filled]
    }
}

impl Default for SourceChunk {
    fn default() -> Self {
        Self::new()
    }
}
