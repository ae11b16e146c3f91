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
//!
//! A file chunk's lines share one label set and one read time. A syslog
//! chunk's messages each have their own (host, app, severity, their own
//! timestamp): such a chunk carries a [`LineMeta`] per line, its label
//! pairs in one vector and the values the symbol table had no room for in
//! one string, all reused with the chunk, so that a message costs no
//! allocation once the vectors have grown to their working size.

pub mod docker;
pub mod file;
pub mod positions;
pub mod split;
pub mod stdin;
pub mod syslog;

pub use split::{LineSpan, SplitOptions, SplitOutcome, split_lines};

use std::sync::Arc;

use crate::labels::{Label, LabelSet, Symbol};
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

/// The labels and time of one line of a chunk whose lines differ: ranges
/// into the chunk's `meta_labels` and `meta_inline`.
#[derive(Debug, Clone, Copy)]
struct LineMeta {
    labels_start: u32,
    labels_len: u16,
    inline_start: u32,
    inline_len: u16,
    timestamp_ns: u64,
}

/// A label set stored once in a chunk and shared by several of its lines.
#[derive(Debug, Clone, Copy)]
pub struct SharedLabels {
    labels_start: u32,
    labels_len: u16,
    inline_start: u32,
    inline_len: u16,
}

/// A label value carried as a string: key, and where the value lies in the
/// chunk's `meta_text`.
#[derive(Debug, Clone, Copy)]
pub struct InlineValue {
    key: Symbol,
    start: u32,
    len: u32,
}

/// What one line of a chunk is labelled with.
#[derive(Debug, Clone, Copy)]
pub struct LineLabels<'chunk> {
    /// Interned labels, sorted by key.
    pub labels: &'chunk [Label],
    /// Values the symbol table had no room for.
    pub inline: InlineLabels<'chunk>,
    /// The line's time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
}

/// Label values carried as strings, by key.
#[derive(Debug, Clone, Copy)]
pub enum InlineLabels<'chunk> {
    /// The chunk's own, shared by all its lines (a file chunk).
    Shared(&'chunk [(Symbol, Arc<str>)]),
    /// One line's (a syslog chunk).
    Line {
        values: &'chunk [InlineValue],
        text: &'chunk str,
    },
}

impl<'chunk> InlineLabels<'chunk> {
    pub fn is_empty(&self) -> bool {
        match self {
            InlineLabels::Shared(values) => values.is_empty(),
            InlineLabels::Line { values, .. } => values.is_empty(),
        }
    }

    /// The (key, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (Symbol, &'chunk str)> + 'chunk {
        let (shared, line, text) = match *self {
            InlineLabels::Shared(values) => (values, &[][..], ""),
            InlineLabels::Line { values, text } => (&[][..], values, text),
        };
        shared
            .iter()
            .map(|(key, value)| (*key, &**value))
            .chain(line.iter().map(move |value| {
                let start = value.start as usize;
                (value.key, &text[start..start + value.len as usize])
            }))
    }
}

/// The rings and wake-ups of one source thread.
#[derive(Debug)]
pub struct SourceLinks {
    /// Filled chunks to the dispatcher; dropped when the source ends.
    pub chunks: Option<rtrb::Producer<SourceChunk>>,
    /// Empty chunks back from the dispatcher.
    pub returns: rtrb::Consumer<SourceChunk>,
    /// Receipts of complete batches from the dispatcher.
    pub commits: rtrb::Consumer<Receipt>,
    pub dispatcher: crate::wake::Waker,
    pub own: crate::wake::Waker,
    /// Whether the dispatcher wakes the source when it hands a chunk back:
    /// true unless the source clears it (the file source does, and sets it
    /// only while it waits for a chunk), so that a source with spares is
    /// not woken for every chunk. Shared with the dispatcher's end.
    pub returns_wanted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SourceLinks {
    /// Asks to be woken for returned chunks (`wanted`), or not. Asking is
    /// followed by a fence that pairs with the dispatcher's after its push,
    /// so that a source that then finds the return ring empty is woken by
    /// the next push.
    pub fn want_returns(&self, wanted: bool) {
        use std::sync::atomic::{Ordering, fence};
        self.returns_wanted.store(wanted, Ordering::Relaxed);
        if wanted {
            fence(Ordering::SeqCst);
        }
    }
}

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
    /// The source sends nothing more until its next read round: the
    /// dispatcher may seal a batch it ends at once, instead of waiting
    /// `latency_target_ms` for more. Only a source that paces its own reads
    /// (the file source, every `write_wait`) sets it; a source woken by
    /// each arrival (syslog) would make a batch of every message.
    pub ends_round: bool,
    /// One entry per line when the lines differ in labels or time (a
    /// syslog chunk); empty otherwise. Grown on first use, kept with the
    /// chunk.
    metas: Vec<LineMeta>,
    meta_labels: Vec<Label>,
    meta_inline: Vec<InlineValue>,
    meta_text: String,
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
            ends_round: false,
            metas: Vec::new(),
            meta_labels: Vec::new(),
            meta_inline: Vec::new(),
            meta_text: String::new(),
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
        self.ends_round = false;
        self.metas.clear();
        self.meta_labels.clear();
        self.meta_inline.clear();
        self.meta_text.clear();
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

    /// The labels and time of line `index`.
    pub fn line_labels(&self, index: usize) -> LineLabels<'_> {
        match self.metas.get(index) {
            None => {
                debug_assert!(
                    self.metas.is_empty(),
                    "every line of a message chunk has its meta"
                );
                LineLabels {
                    labels: &self.labels,
                    inline: InlineLabels::Shared(&self.inline),
                    timestamp_ns: self.read_at_ns,
                }
            }
            Some(meta) => {
                let labels = meta.labels_start as usize;
                let inline = meta.inline_start as usize;
                LineLabels {
                    labels: &self.meta_labels[labels..labels + usize::from(meta.labels_len)],
                    inline: InlineLabels::Line {
                        values: &self.meta_inline[inline..inline + usize::from(meta.inline_len)],
                        text: &self.meta_text,
                    },
                    timestamp_ns: meta.timestamp_ns,
                }
            }
        }
    }

    /// True when a message of `bytes` does not fit: the span table is full,
    /// or the bytes would not fit without growing a chunk that holds lines
    /// already. An empty chunk takes any message (it grows, as for a long
    /// line).
    pub fn is_full_for(&self, bytes: usize) -> bool {
        self.lines.len() >= limits::CHUNK_LINES_MAX
            || (!self.lines.is_empty() && self.filled + bytes > self.data.len())
    }

    /// Room for a message of at most `bytes`, to receive into; then
    /// [`received`](Self::received) and [`commit_message`](Self::commit_message).
    pub fn message_room(&mut self, bytes: usize) -> &mut [u8] {
        self.spare_mut(bytes)
    }

    /// The `bytes` received into the room.
    pub fn received(&self, bytes: usize) -> &[u8] {
        &self.data[self.filled..self.filled + bytes]
    }

    /// Keeps `line_bytes` of the `received_bytes` just received as one
    /// message line with its own labels and time.
    pub fn commit_message<'inline>(
        &mut self,
        received_bytes: usize,
        line_bytes: usize,
        labels: &[Label],
        inline: impl IntoIterator<Item = (Symbol, &'inline str)>,
        timestamp_ns: u64,
    ) {
        assert!(
            line_bytes <= received_bytes,
            "a line lies within what was received"
        );
        let start = self.filled;
        self.commit_read(received_bytes);
        let span = LineSpan {
            start: u32::try_from(start).expect("a chunk is smaller than 4 GiB"),
            len: u32::try_from(line_bytes).expect("a line is smaller than 4 GiB"),
            terminated: true,
        };
        let labels = self.add_label_set(labels, inline);
        self.push_line_with(span, labels, timestamp_ns);
    }

    /// Copies `message` in as one line with its own labels and time.
    pub fn push_message<'inline>(
        &mut self,
        message: &[u8],
        labels: &[Label],
        inline: impl IntoIterator<Item = (Symbol, &'inline str)>,
        timestamp_ns: u64,
    ) {
        self.message_room(message.len())[..message.len()].copy_from_slice(message);
        self.commit_message(message.len(), message.len(), labels, inline, timestamp_ns);
    }

    /// The filled bytes, to be rewritten in place (a decoder that leaves
    /// each line's text where its encoded form was).
    pub fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[..self.filled]
    }

    /// Exchanges the chunk's spans with `other` (emptied first if it is
    /// to receive spans): lets a decoder walk the split spans while it
    /// pushes the decoded ones, with no allocation.
    pub fn swap_lines(&mut self, other: &mut Vec<LineSpan>) {
        std::mem::swap(&mut self.lines, other);
    }

    /// Stores a label set that lines of this chunk will share (see
    /// [`push_line_with`](Self::push_line_with)): copied once per chunk,
    /// not per line.
    pub fn add_label_set<'inline>(
        &mut self,
        labels: &[Label],
        inline: impl IntoIterator<Item = (Symbol, &'inline str)>,
    ) -> SharedLabels {
        let labels_start = self.meta_labels.len();
        self.meta_labels.extend_from_slice(labels);
        let inline_start = self.meta_inline.len();
        for (key, value) in inline {
            self.meta_inline.push(InlineValue {
                key,
                start: u32::try_from(self.meta_text.len()).expect("inline text is bounded"),
                len: u32::try_from(value.len()).expect("a label value is bounded"),
            });
            self.meta_text.push_str(value);
        }
        SharedLabels {
            labels_start: u32::try_from(labels_start).expect("labels are bounded"),
            labels_len: u16::try_from(labels.len()).expect("a line has few labels"),
            inline_start: u32::try_from(inline_start).expect("inline values are bounded"),
            inline_len: u16::try_from(self.meta_inline.len() - inline_start)
                .expect("a line has few labels"),
        }
    }

    /// Adds a line of bytes already in the chunk, with a label set stored
    /// by [`add_label_set`](Self::add_label_set) and its own time.
    pub fn push_line_with(&mut self, span: LineSpan, labels: SharedLabels, timestamp_ns: u64) {
        assert!(
            span.start as usize + span.len as usize <= self.filled,
            "a line lies within the filled bytes"
        );
        assert!(
            self.lines.len() < limits::CHUNK_LINES_MAX,
            "the span table has room"
        );
        assert!(
            self.metas.len() == self.lines.len(),
            "a chunk holds lines with metas only"
        );
        self.lines.push(span);
        self.metas.push(LineMeta {
            labels_start: labels.labels_start,
            labels_len: labels.labels_len,
            inline_start: labels.inline_start,
            inline_len: labels.inline_len,
            timestamp_ns,
        });
    }

    /// Lines in the chunk.
    pub fn line_count(&self) -> usize {
        self.lines.len()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{SymbolLimits, SymbolTable};

    /// Goal: a message chunk keeps each line's labels, carried values and
    /// time apart, and a reset forgets them all. Method: three messages
    /// with different label sets, one with a value carried as a string.
    #[test]
    fn message_lines_keep_their_own_labels_and_times() {
        let table = SymbolTable::new(SymbolLimits::default());
        let symbol = |text: &str| table.intern(text).expect("room");
        let (host, app) = (symbol("host"), symbol("app"));
        let first = [(app, symbol("cron")), (host, symbol("a"))];
        let second = [(host, symbol("b"))];
        let mut chunk = SourceChunk::new();
        chunk.reset(0, &LabelSet::new(), &[], 5);
        chunk.push_message(b"one", &first, [], 10);
        chunk.push_message(b"two", &second, [(app, "carried")], 20);
        let room = chunk.message_room(8);
        room[..6].copy_from_slice(b"three\n");
        assert_eq!(chunk.received(6), b"three\n");
        chunk.commit_message(6, 5, &[], [], 30);
        assert_eq!(chunk.line_count(), 3);
        let lines: Vec<&[u8]> = chunk.lines().iter().map(|span| chunk.line(*span)).collect();
        assert_eq!(lines, [&b"one"[..], b"two", b"three"]);
        let labels: Vec<_> = (0..3).map(|index| chunk.line_labels(index)).collect();
        assert_eq!(labels[0].labels, &first);
        assert!(labels[0].inline.is_empty());
        assert_eq!(labels[1].labels, &second);
        assert_eq!(
            labels[1].inline.iter().collect::<Vec<_>>(),
            [(app, "carried")]
        );
        assert!(labels[2].labels.is_empty());
        let times: Vec<u64> = labels.iter().map(|line| line.timestamp_ns).collect();
        assert_eq!(times, [10, 20, 30]);
        chunk.reset(0, &LabelSet::from_slice(&second), &[], 7);
        assert_eq!(chunk.line_count(), 0);
        chunk.append(b"file line\n");
        chunk.split(100, false);
        let line = chunk.line_labels(0);
        assert_eq!((line.labels, line.timestamp_ns), (&second[..], 7));
    }

    /// Goal: a chunk that holds messages takes no message it has no room
    /// for, while an empty one takes any (it grows, as for a long line).
    #[test]
    fn full_chunk_refuses_and_empty_chunk_grows() {
        let mut chunk = SourceChunk::new();
        assert!(!chunk.is_full_for(4 * limits::CHUNK_BYTES));
        chunk.push_message(&vec![b'x'; limits::CHUNK_BYTES - 10], &[], [], 0);
        assert!(chunk.is_full_for(11));
        assert!(!chunk.is_full_for(10));
        let mut lines = SourceChunk::new();
        for _ in 0..limits::CHUNK_LINES_MAX {
            lines.push_message(b"m", &[], [], 0);
        }
        assert!(lines.is_full_for(1));
    }
}
