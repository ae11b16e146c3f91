//! Splitting a buffer into lines.
//!
//! ```text
//! for each '\n' at position e (memchr), line = [s, e):
//!     while line is longer than max_line_bytes:
//!         emit [s, s + max) as an unterminated piece; s += max
//!     emit [s, e) terminated; s = e + 1
//! tail = [s, end): while longer than max_line_bytes, emit unterminated pieces
//! if this is the last read: emit the rest of the tail unterminated
//! ```
//!
//! Splitting stops early when the span table is full; what was not consumed
//! stays for the next chunk. The `raw` encoding writes a `\n` only after a
//! terminated span, so pieces are written back to back and the output equals
//! the input byte for byte.

use memchr::memchr_iter;

/// One line (or piece of an over-long line) inside a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSpan {
    /// Offset of the first byte in the chunk.
    pub start: u32,
    /// Length in bytes, without the `\n`.
    pub len: u32,
    /// The line ended with `\n` in the input. False for the pieces of a line
    /// longer than `max_line_bytes` (but the last) and for a final line
    /// without newline.
    pub terminated: bool,
}

/// The result of one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitOutcome {
    /// Offset of the first byte not covered by an emitted span; bytes from
    /// here on belong to the next chunk.
    pub consumed: usize,
    /// Pieces cut off because a line was longer than `max_line_bytes`.
    pub pieces_split: u64,
}

/// Options of one split: whether the tail is final, and the line bound.
#[derive(Debug, Clone, Copy)]
pub struct SplitOptions {
    pub max_line_bytes: usize,
    pub spans_max: usize,
    /// Emit an unterminated tail as a line (at end of input).
    pub flush_tail: bool,
}

/// Appends the spans of `data` to `spans`, up to `options.spans_max` spans.
pub fn split_lines(data: &[u8], spans: &mut Vec<LineSpan>, options: SplitOptions) -> SplitOutcome {
    assert!(
        options.max_line_bytes > 0,
        "max_line_bytes is validated non-zero"
    );
    assert!(
        data.len() <= u32::MAX as usize,
        "a chunk is smaller than 4 GiB"
    );
    let mut splitter = Splitter {
        spans,
        options,
        start: 0,
        pieces_split: 0,
    };
    let mut full = false;
    for newline in memchr_iter(b'\n', data) {
        if !splitter.emit_line(newline) {
            full = true;
            break;
        }
    }
    if !full {
        splitter.emit_tail(data.len());
    }
    SplitOutcome {
        consumed: splitter.start,
        pieces_split: splitter.pieces_split,
    }
}

struct Splitter<'a> {
    spans: &'a mut Vec<LineSpan>,
    options: SplitOptions,
    /// Start of the first byte not yet covered by a span.
    start: usize,
    pieces_split: u64,
}

impl Splitter<'_> {
    fn has_room(&self) -> bool {
        self.spans.len() < self.options.spans_max
    }

    fn push(&mut self, len: usize, terminated: bool) {
        debug_assert!(len <= self.options.max_line_bytes, "len={len}");
        self.spans.push(LineSpan {
            start: self.start as u32,
            len: len as u32,
            terminated,
        });
        self.start += len + usize::from(terminated);
    }

    /// Emits pieces while more than `max_line_bytes` remain before `end`.
    fn emit_pieces(&mut self, end: usize) -> bool {
        while end - self.start > self.options.max_line_bytes {
            if !self.has_room() {
                return false;
            }
            self.push(self.options.max_line_bytes, false);
            self.pieces_split += 1;
        }
        true
    }

    /// Emits the line ending at the `\n` at `newline`. False when full.
    fn emit_line(&mut self, newline: usize) -> bool {
        if !self.emit_pieces(newline) || !self.has_room() {
            return false;
        }
        self.push(newline - self.start, true);
        true
    }

    fn emit_tail(&mut self, end: usize) {
        if !self.emit_pieces(end) {
            return;
        }
        if self.options.flush_tail && end > self.start && self.has_room() {
            self.push(end - self.start, false);
        }
    }
}

/// Whether a carried tail holds at least one span: a complete line, or a
/// piece of `max_line_bytes` of a longer one.
pub fn carries_spans(pending: &[u8], max_line_bytes: usize) -> bool {
    pending.len() > max_line_bytes || memchr::memchr(b'\n', pending).is_some()
}

/// The size of the next read after a split that produced `lines` spans
/// from the first `consumed` bytes: when the span table filled up, about
/// the bytes it covered (so the next read brings about one table of lines);
/// otherwise a whole chunk.
pub fn next_read_bytes(lines: usize, consumed: usize) -> usize {
    if lines < crate::limits::CHUNK_LINES_MAX {
        return crate::limits::CHUNK_BYTES;
    }
    consumed.clamp(crate::limits::READ_BYTES_MIN, crate::limits::CHUNK_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(
        data: &[u8],
        max_line_bytes: usize,
        spans_max: usize,
        flush_tail: bool,
    ) -> (Vec<LineSpan>, SplitOutcome) {
        let mut spans = Vec::new();
        let options = SplitOptions {
            max_line_bytes,
            spans_max,
            flush_tail,
        };
        let outcome = split_lines(data, &mut spans, options);
        (spans, outcome)
    }

    /// Rebuilds the raw output the way the `raw` encoding writes it.
    fn rebuild(data: &[u8], spans: &[LineSpan]) -> Vec<u8> {
        let mut out = Vec::new();
        for span in spans {
            let start = span.start as usize;
            out.extend_from_slice(&data[start..start + span.len as usize]);
            if span.terminated {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn splits_plain_and_empty_lines_and_keeps_tail() {
        let (spans, outcome) = split(b"a\n\nbc\ntail", 100, 100, false);
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[1].len, 0);
        assert_eq!(outcome.consumed, 6);
        assert_eq!(outcome.pieces_split, 0);
    }

    #[test]
    fn flushes_tail_unterminated() {
        let (spans, outcome) = split(b"a\ntail", 100, 100, true);
        assert_eq!(spans.len(), 2);
        assert!(!spans[1].terminated);
        assert_eq!(outcome.consumed, 6);
    }

    #[test]
    fn long_line_is_cut_into_pieces_at_every_boundary() {
        for max in 1..=7 {
            for len in 0..=15 {
                let mut data = vec![b'x'; len];
                data.push(b'\n');
                let (spans, outcome) = split(&data, max, 1000, false);
                assert_eq!(rebuild(&data, &spans), data, "max={max} len={len}");
                assert_eq!(outcome.consumed, data.len());
                let expected = if len > max { len.div_ceil(max) - 1 } else { 0 };
                assert_eq!(
                    outcome.pieces_split as usize, expected,
                    "max={max} len={len}"
                );
                assert!(spans.iter().all(|span| span.len as usize <= max));
            }
        }
    }

    #[test]
    fn full_span_table_stops_and_resumes_without_loss() {
        let data = b"1\n22\n333\n4444\n55555";
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < data.len() {
            let (spans, outcome) = split(&data[offset..], 3, 2, true);
            out.extend(rebuild(&data[offset..], &spans));
            assert!(outcome.consumed > 0);
            offset += outcome.consumed;
        }
        assert_eq!(out, data);
    }

    #[test]
    fn matches_naive_split_on_generated_inputs() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let data: Vec<u8> = (0..len)
                .map(|index| {
                    if (seed >> (index % 60)) & 3 == 0 {
                        b'\n'
                    } else {
                        b'a'
                    }
                })
                .collect();
            let max = 1 + (seed % 9) as usize;
            let (spans, outcome) = split(&data, max, usize::MAX, true);
            assert_eq!(rebuild(&data, &spans), data);
            assert_eq!(outcome.consumed, data.len());
            let newlines = data.iter().filter(|&&byte| byte == b'\n').count();
            let terminated = spans.iter().filter(|span| span.terminated).count();
            assert_eq!(terminated, newlines);
        }
    }
}
