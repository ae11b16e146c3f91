//! Turning a chunk of `json-file` lines into the entries they encode.
//!
//! Thread: the docker source's, right after a chunk is read and split into
//! its JSON lines. Each line is decoded in place ([`decode_in_place`]): its
//! span is replaced by the span of its un-escaped `log` text, with its own
//! time and the label set of its stream, both stored once per chunk
//! ([`SourceChunk::add_label_set`]). Nothing is allocated per line.
//!
//! Partial lines: Docker cuts a line longer than 16 KiB into pieces, all
//! but the last without a trailing newline. The pieces of each stream are
//! joined in that stream's [`Joining`] buffer (the two streams interleave
//! freely) and the whole line is appended to the chunk that holds its last
//! piece. A line longer than `max_line_bytes` is handed on in pieces of
//! that size, counted as split lines, as the file source does. While a
//! line is being joined, the chunk's receipt stops at the first piece's
//! offset ([`JsonLines::hold_back`]): a restart reads the pieces again
//! rather than losing the start of the line.
//!
//! A line that does not decode (a torn write, a foreign file) is handed on
//! as read, labelled `parse_error = "true"` and with the read time, and
//! counted: nothing is dropped.
//!
//! Limits: a joining buffer holds at most `max_line_bytes`; a chunk that
//! takes a joined line grows by that line (and shrinks back when reused).

use crate::labels::{LabelSet, Symbol};
use crate::limits;
use crate::source::{LineSpan, SharedLabels, SourceChunk};

use super::json_file::{LogStream, decode_in_place};

/// Smallest `max_line_bytes` of a docker source: a JSON line of
/// [`RAW_LINE_BYTES_MAX`] then makes at most 130 entries, so any chunk
/// can take at least one.
pub const MAX_LINE_BYTES_MIN: usize = 1024;

/// Longest JSON line taken whole: Docker writes at most 16 KiB of text per
/// line, which escaping can make six times as long.
pub const RAW_LINE_BYTES_MAX: usize = 128 * 1024;

/// Label sets of one container's lines: one per stream, and one for lines
/// that do not decode.
#[derive(Debug, Clone, Default)]
pub struct StreamLabels {
    pub stdout: LabelSet,
    pub stderr: LabelSet,
    pub undecoded: LabelSet,
    /// Values the symbol table had no room for, shared by all three.
    pub inline: Vec<(Symbol, std::sync::Arc<str>)>,
}

impl StreamLabels {
    /// Stores the three sets in `chunk`, once for all its lines: stdout,
    /// stderr, undecoded.
    fn store_in(&self, chunk: &mut SourceChunk) -> [SharedLabels; 3] {
        let inline = || self.inline.iter().map(|(key, value)| (*key, &**value));
        [
            chunk.add_label_set(&self.stdout, inline()),
            chunk.add_label_set(&self.stderr, inline()),
            chunk.add_label_set(&self.undecoded, inline()),
        ]
    }
}

/// Which streams a source takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamFilter {
    pub stdout: bool,
    pub stderr: bool,
}

impl StreamFilter {
    fn takes(self, stream: LogStream) -> bool {
        match stream {
            LogStream::Stdout => self.stdout,
            LogStream::Stderr => self.stderr,
        }
    }
}

/// A line of one stream being joined from its pieces.
#[derive(Debug, Default)]
struct Joining {
    text: Vec<u8>,
    /// File offset of the first piece not yet handed on whole; `None`
    /// while nothing is being joined.
    start_offset: Option<u64>,
    timestamp_ns: u64,
}

/// What one file's decoding carries from chunk to chunk, and counts.
#[derive(Debug, Default)]
pub struct JsonLines {
    joining: [Joining; 2],
    /// Lines handed on per stream (stdout, stderr) since last taken.
    pub collected: [u64; 2],
    /// Lines that did not decode, since last taken.
    pub undecoded: u64,
    /// Extra pieces of joined lines longer than `max_line_bytes`.
    pub split: u64,
}

/// What decoding a chunk needs besides the chunk.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'a> {
    pub labels: &'a StreamLabels,
    pub streams: StreamFilter,
    pub max_line_bytes: usize,
    /// Offset in the file of the chunk's first byte.
    pub base_offset: u64,
}

fn stream_index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

impl JsonLines {
    /// Where the receipt of the chunk just decoded must stop: the first
    /// piece of a line still being joined, if any.
    pub fn hold_back(&self) -> Option<u64> {
        self.joining
            .iter()
            .filter_map(|joining| joining.start_offset)
            .min()
    }

    /// Forgets the lines being joined: the file is read again from the
    /// receipt (a reopen after the descriptor limit, a truncation).
    pub fn forget_joining(&mut self) {
        for joining in &mut self.joining {
            joining.text = Vec::new();
            joining.start_offset = None;
        }
    }

    /// Whether a line is being joined.
    pub fn is_joining(&self) -> bool {
        self.hold_back().is_some()
    }

    /// Replaces the chunk's split JSON lines with the entries they encode.
    /// `scratch` is an empty span vector kept by the caller. Returns where
    /// the JSON lines left undecoded start, when the span table could not
    /// be sure to hold their entries: the caller carries them (still as
    /// read) into the next chunk.
    pub fn decode_chunk(
        &mut self,
        chunk: &mut SourceChunk,
        scratch: &mut Vec<LineSpan>,
        context: DecodeContext<'_>,
    ) -> Option<usize> {
        assert!(
            context.max_line_bytes >= MAX_LINE_BYTES_MIN,
            "max_line_bytes is validated"
        );
        debug_assert!(scratch.is_empty(), "the scratch spans are empty");
        chunk.swap_lines(scratch);
        let labels = context.labels;
        let sets = labels.store_in(chunk);
        let read_at_ns = chunk.read_at_ns;
        let mut carried = None;
        for &raw in scratch.iter() {
            // The most entries one JSON line can make: a joined line cut
            // where it reaches `max_line_bytes`, and its rest.
            let entries_max = 2 + raw.len as usize / context.max_line_bytes;
            if chunk.line_count() + entries_max > limits::CHUNK_LINES_MAX {
                carried = Some(raw.start as usize);
                break;
            }
            let start = raw.start as usize;
            let bytes = &mut chunk.filled_mut()[start..start + raw.len as usize];
            let line = match decode_in_place(bytes) {
                Ok(line) if raw.terminated => line,
                // A cut line (longer than any Docker writes) or an
                // undecodable one is handed on as it was read.
                _ => {
                    self.undecoded += 1;
                    chunk.push_line_with(raw, sets[2], read_at_ns);
                    continue;
                }
            };
            if !context.streams.takes(line.stream) {
                continue;
            }
            let index = stream_index(line.stream);
            let text = LineSpan {
                start: raw.start + line.log.start as u32,
                len: (line.log.end - line.log.start) as u32,
                terminated: true,
            };
            let joining = &self.joining[index];
            if joining.start_offset.is_none()
                && !line.partial
                && text.len as usize <= context.max_line_bytes
            {
                self.collected[index] += 1;
                chunk.push_line_with(text, sets[index], line.time_ns);
                continue;
            }
            let offset = context.base_offset + u64::from(raw.start);
            self.join(
                chunk,
                index,
                text,
                offset,
                line.time_ns,
                line.partial,
                sets[index],
                context.max_line_bytes,
            );
        }
        scratch.clear();
        carried
    }

    /// Adds one piece to its stream's line; hands on the line when the
    /// piece ends it, and full `max_line_bytes` pieces as they fill.
    #[allow(clippy::too_many_arguments)]
    fn join(
        &mut self,
        chunk: &mut SourceChunk,
        index: usize,
        text: LineSpan,
        offset: u64,
        time_ns: u64,
        partial: bool,
        set: SharedLabels,
        max_line_bytes: usize,
    ) {
        let mut piece = chunk.line(text).len();
        let mut from = text.start as usize;
        loop {
            let joining = &mut self.joining[index];
            if joining.start_offset.is_none() {
                joining.start_offset = Some(offset);
                joining.timestamp_ns = time_ns;
            }
            let room = max_line_bytes - joining.text.len();
            let take = room.min(piece);
            joining
                .text
                .extend_from_slice(&chunk.filled()[from..from + take]);
            from += take;
            piece -= take;
            let full = joining.text.len() == max_line_bytes;
            let ends = !partial && piece == 0;
            if !full && !ends {
                return;
            }
            // A full piece of an over-long line is cut there, unless this
            // is its very end.
            let terminated = ends;
            if !ends {
                self.split += 1;
            }
            self.hand_on_joined(chunk, index, set, terminated);
            if ends {
                return;
            }
            if piece == 0 {
                // The line goes on in the next piece, which starts anew.
                return;
            }
        }
    }

    /// Appends a joined line to the chunk as one of its lines.
    fn hand_on_joined(
        &mut self,
        chunk: &mut SourceChunk,
        index: usize,
        set: SharedLabels,
        terminated: bool,
    ) {
        let joining = &mut self.joining[index];
        let start = chunk.filled().len();
        chunk.append(&joining.text);
        let span = LineSpan {
            start: u32::try_from(start).expect("a chunk is smaller than 4 GiB"),
            len: u32::try_from(joining.text.len()).expect("a line is smaller than 4 GiB"),
            terminated,
        };
        chunk.push_line_with(span, set, joining.timestamp_ns);
        self.collected[index] += 1;
        joining.text.clear();
        if joining.text.capacity() > limits::CHUNK_BYTES {
            joining.text = Vec::new();
        }
        joining.start_offset = None;
    }

    /// Hands on the lines still being joined, unfinished (their file is
    /// gone and read to its end): returns false when the chunk has no room
    /// for them.
    pub fn flush_joining(&mut self, chunk: &mut SourceChunk, labels: &StreamLabels) -> bool {
        let sets = labels.store_in(chunk);
        for (index, set) in sets.into_iter().take(2).enumerate() {
            if self.joining[index].start_offset.is_some() {
                if chunk.line_count() >= limits::CHUNK_LINES_MAX {
                    return false;
                }
                self.hand_on_joined(chunk, index, set, false);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
