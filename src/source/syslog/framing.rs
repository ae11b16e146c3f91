//! Syslog over TCP: finding the messages in a byte stream (RFC 6587).
//!
//! Two framings exist, and a connection uses one, told by its first byte:
//!
//! * **octet counting** (§3.4.1), `MSG-LEN SP SYSLOG-MSG`, when the first
//!   byte is a digit `1`–`9` (a message itself begins with `<`);
//! * **delimiters** (§3.4.2) otherwise: a message ends at `LF` or `NUL`; a
//!   `CR` before the `LF` is part of the delimiter. Empty frames are skipped.
//!
//! A frame longer than `max_message_bytes` is cut to that length, reported
//! as truncated, and the rest of it skipped: the remaining `MSG-LEN` bytes,
//! or up to the next delimiter. So a connection resynchronises on the next
//! frame and the framer never holds more than `max_message_bytes` plus the
//! header. A trailing `LF` (or `CR LF`, `NUL`) counted into a frame is
//! not part of the message. Octet counting that goes wrong (a length that is not a number,
//! or has more than [`LENGTH_DIGITS_MAX`] digits) is reported as a framing
//! error and that frame is read up to the next `LF` instead; the `LF`,
//! `CR` or `NUL` some senders put between counted frames is skipped.
//!
//! Thread: the syslog source's. Allocations: none; the framer is a small
//! state machine over the caller's buffer.

/// Most digits of a `MSG-LEN`: ten digits exceed any sane message.
pub const LENGTH_DIGITS_MAX: usize = 10;

/// How the connection frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    OctetCounting,
    Delimited,
}

/// How a frame ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameEnd {
    /// Whole, as its sender framed it.
    Complete,
    /// Cut at `max_message_bytes`; the rest is skipped.
    Truncated,
    /// Its octet count was malformed: read up to the next `LF` instead.
    Malformed,
    /// The connection ended before the frame did.
    Unterminated,
}

/// What [`Framer::next`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A message at `buffer[start..start + len]`; `consumed` bytes of the
    /// buffer are done with.
    Frame {
        start: usize,
        len: usize,
        consumed: usize,
        end: FrameEnd,
    },
    /// `consumed` bytes that belong to no message (the rest of a cut
    /// frame, an empty frame, a separator).
    Skipped { consumed: usize },
    /// The buffer holds no complete frame yet; nothing consumed.
    NeedMore,
}

/// What is being skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    None,
    /// The rest of a counted frame, in bytes.
    Bytes(u64),
    /// Up to and including the next delimiter.
    ToDelimiter,
}

/// The framing state of one connection.
///
/// Invariant: a [`Step::Frame`] has `len <= max_message_bytes` and lies
/// within the `consumed` bytes; `consumed <= buffer.len()`.
#[derive(Debug, Clone)]
pub struct Framer {
    max_message_bytes: usize,
    framing: Option<Framing>,
    skip: Skip,
    /// Bytes at the front of the buffer already searched for a delimiter
    /// without finding one: a frame that arrives in many reads is not
    /// searched again from its start each time.
    searched: usize,
}

impl Framer {
    pub fn new(max_message_bytes: usize) -> Self {
        assert!(max_message_bytes > 0, "max_message_bytes is validated");
        Self {
            max_message_bytes,
            framing: None,
            skip: Skip::None,
            searched: 0,
        }
    }

    /// The connection's framing, once its first byte arrived.
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    /// The next step over `buffer`, the connection's unconsumed bytes in
    /// order. `at_end`: no more bytes will come, so a partial frame is
    /// delivered as [`FrameEnd::Unterminated`]. The caller drops the
    /// `consumed` bytes from the front before the next call.
    pub fn next(&mut self, buffer: &[u8], at_end: bool) -> Step {
        let step = self.step(buffer, at_end);
        if let Step::Frame {
            start,
            len,
            consumed,
            ..
        } = step
        {
            debug_assert!(len <= self.max_message_bytes && start + len <= consumed);
        }
        match step {
            Step::Frame { consumed, .. } | Step::Skipped { consumed } => {
                debug_assert!(consumed > 0 && consumed <= buffer.len());
                self.searched = 0;
            }
            Step::NeedMore => {}
        }
        step
    }

    fn step(&mut self, buffer: &[u8], at_end: bool) -> Step {
        if buffer.is_empty() {
            return Step::NeedMore;
        }
        match self.skip {
            Skip::Bytes(left) => {
                let consumed = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(buffer.len());
                self.skip = match left - consumed as u64 {
                    0 => Skip::None,
                    rest => Skip::Bytes(rest),
                };
                return Step::Skipped { consumed };
            }
            Skip::ToDelimiter => {
                return match memchr::memchr2(b'\n', 0, buffer) {
                    Some(at) => {
                        self.skip = Skip::None;
                        Step::Skipped { consumed: at + 1 }
                    }
                    None => Step::Skipped {
                        consumed: buffer.len(),
                    },
                };
            }
            Skip::None => {}
        }
        let framing = *self
            .framing
            .get_or_insert(if matches!(buffer[0], b'1'..=b'9') {
                Framing::OctetCounting
            } else {
                Framing::Delimited
            });
        match framing {
            Framing::OctetCounting => self.counted(buffer, at_end),
            Framing::Delimited => self.delimited(buffer, at_end, FrameEnd::Complete),
        }
    }

    /// `MSG-LEN SP SYSLOG-MSG`.
    fn counted(&mut self, buffer: &[u8], at_end: bool) -> Step {
        if matches!(buffer[0], b'\n' | b'\r' | 0) {
            return Step::Skipped { consumed: 1 };
        }
        let digits = buffer
            .iter()
            .take(LENGTH_DIGITS_MAX + 1)
            .take_while(|byte| byte.is_ascii_digit())
            .count();
        let header_complete = digits < buffer.len();
        if digits <= LENGTH_DIGITS_MAX && !header_complete && !at_end {
            return Step::NeedMore;
        }
        let well_formed = digits > 0
            && digits <= LENGTH_DIGITS_MAX
            && buffer[0] != b'0'
            && buffer.get(digits) == Some(&b' ');
        if !well_formed {
            return self.delimited(buffer, at_end, FrameEnd::Malformed);
        }
        let length: u64 = buffer[..digits]
            .iter()
            .fold(0, |total, digit| total * 10 + u64::from(digit - b'0'));
        let start = digits + 1;
        let available = buffer.len() - start;
        let kept = usize::try_from(length)
            .unwrap_or(usize::MAX)
            .min(self.max_message_bytes);
        if available < kept {
            if !at_end {
                return Step::NeedMore;
            }
            return Step::Frame {
                start,
                len: available,
                consumed: buffer.len(),
                end: FrameEnd::Unterminated,
            };
        }
        let rest = length - kept as u64;
        if rest > 0 {
            self.skip = Skip::Bytes(rest);
        }
        Step::Frame {
            start,
            len: message_length(&buffer[start..start + kept]),
            consumed: start + kept,
            end: if rest > 0 {
                FrameEnd::Truncated
            } else {
                FrameEnd::Complete
            },
        }
    }

    /// A frame up to `LF` or `NUL`; `end` is how a frame that ends there
    /// is reported.
    fn delimited(&mut self, buffer: &[u8], at_end: bool, end: FrameEnd) -> Step {
        // Room for a whole message and its `CR LF`: a message of exactly
        // `max_message_bytes` is not cut.
        let window = &buffer[..buffer.len().min(self.max_message_bytes + 2)];
        let from = self.searched.min(window.len());
        match memchr::memchr2(b'\n', 0, &window[from..]) {
            Some(found) => {
                let at = from + found;
                let len = if at > 0 && buffer[at - 1] == b'\r' && buffer[at] == b'\n' {
                    at - 1
                } else {
                    at
                };
                if len == 0 {
                    return Step::Skipped { consumed: at + 1 };
                }
                if len > self.max_message_bytes {
                    // One byte over, its delimiter in the window: cut, and
                    // nothing left of it to skip.
                    return Step::Frame {
                        start: 0,
                        len: self.max_message_bytes,
                        consumed: at + 1,
                        end: FrameEnd::Truncated,
                    };
                }
                Step::Frame {
                    start: 0,
                    len,
                    consumed: at + 1,
                    end,
                }
            }
            None if window.len() > self.max_message_bytes + 1 => {
                self.skip = Skip::ToDelimiter;
                Step::Frame {
                    start: 0,
                    len: self.max_message_bytes,
                    consumed: self.max_message_bytes,
                    end: FrameEnd::Truncated,
                }
            }
            // At most one byte over the bound is left here (more would
            // have been cut above).
            None if at_end => Step::Frame {
                start: 0,
                len: buffer.len().min(self.max_message_bytes),
                consumed: buffer.len(),
                end: if buffer.len() > self.max_message_bytes {
                    FrameEnd::Truncated
                } else {
                    FrameEnd::Unterminated
                },
            },
            None => {
                self.searched = window.len();
                Step::NeedMore
            }
        }
    }
}

/// The length of a message without the trailing `LF`, `CR LF` or `NUL`s
/// some senders put in a counted frame (rsyslog's
/// `RSYSLOG_SyslogProtocol23Format` ends with `LF`) or a datagram: a
/// delimiter, not part of the message.
pub fn message_length(frame: &[u8]) -> usize {
    let mut length = frame.len();
    while length > 0 && matches!(frame[length - 1], b'\n' | 0) {
        length -= 1;
        if length > 0 && frame[length - 1] == b'\r' {
            length -= 1;
        }
    }
    length
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a framer in pieces of `piece` bytes, as a reader
    /// that keeps unconsumed bytes would, and returns the frames.
    fn frames(input: &[u8], piece: usize, max: usize) -> Vec<(Vec<u8>, FrameEnd)> {
        let mut framer = Framer::new(max);
        let mut buffer = Vec::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            let at_end = fed == input.len();
            match framer.next(&buffer, at_end) {
                Step::Frame {
                    start,
                    len,
                    consumed,
                    end,
                } => {
                    out.push((buffer[start..start + len].to_vec(), end));
                    buffer.drain(..consumed);
                }
                Step::Skipped { consumed } => {
                    buffer.drain(..consumed);
                }
                Step::NeedMore if at_end => {
                    assert!(buffer.is_empty(), "at the end every byte is consumed");
                    return out;
                }
                Step::NeedMore => {
                    let next = (fed + piece).min(input.len());
                    buffer.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    fn texts(frames: &[(Vec<u8>, FrameEnd)]) -> Vec<String> {
        frames
            .iter()
            .map(|(bytes, _)| String::from_utf8_lossy(bytes).into_owned())
            .collect()
    }

    #[test]
    fn octet_counted_frames_split_at_every_byte_come_out_whole() {
        let input = b"5 <13>a11 <13>b c d e\n3 xyz";
        for piece in 1..=input.len() {
            let found = frames(input, piece, 1024);
            assert_eq!(
                texts(&found),
                vec!["<13>a", "<13>b c d e", "xyz"],
                "piece {piece}"
            );
            assert!(found.iter().all(|(_, end)| *end == FrameEnd::Complete));
        }
    }

    #[test]
    fn delimited_frames_end_at_lf_crlf_and_nul_and_skip_empty_ones() {
        let input = b"<13>one\n<13>two\r\n\n<13>three\0<13>four";
        for piece in 1..=input.len() {
            let found = frames(input, piece, 1024);
            assert_eq!(
                texts(&found),
                vec!["<13>one", "<13>two", "<13>three", "<13>four"]
            );
            assert_eq!(found[3].1, FrameEnd::Unterminated);
        }
    }

    #[test]
    fn long_delimited_frame_is_cut_and_the_stream_resynchronises() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\n<13>next\n");
        let found = frames(&input, 4096, 100);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0], (vec![b'x'; 100], FrameEnd::Truncated));
        assert_eq!(found[1], (b"<13>next".to_vec(), FrameEnd::Complete));
    }

    #[test]
    fn frame_of_exactly_the_bound_is_not_cut() {
        let found = frames(b"<13>abcd\n", 3, 8);
        assert_eq!(found, vec![(b"<13>abcd".to_vec(), FrameEnd::Complete)]);
        let found = frames(b"<13>abcd\r\n<13>abcde\n", 1, 8);
        assert_eq!(
            found,
            vec![
                (b"<13>abcd".to_vec(), FrameEnd::Complete),
                (b"<13>abcd".to_vec(), FrameEnd::Truncated),
            ]
        );
        let found = frames(b"8 <13>abcd9 <13>abcde", 2, 8);
        assert_eq!(
            found,
            vec![
                (b"<13>abcd".to_vec(), FrameEnd::Complete),
                (b"<13>abcd".to_vec(), FrameEnd::Truncated),
            ]
        );
    }

    #[test]
    fn long_counted_frame_is_cut_and_its_rest_skipped() {
        let mut input = b"1000 ".to_vec();
        input.extend(std::iter::repeat_n(b'y', 1000));
        input.extend_from_slice(b"4 <1>z");
        let found = frames(&input, 7, 10);
        assert_eq!(found[0], (vec![b'y'; 10], FrameEnd::Truncated));
        assert_eq!(found[1], (b"<1>z".to_vec(), FrameEnd::Complete));
    }

    #[test]
    fn malformed_count_falls_back_to_the_next_line() {
        let found = frames(b"12x <13>bad\n5 <13>a", 1, 1024);
        assert_eq!(found[0], (b"12x <13>bad".to_vec(), FrameEnd::Malformed));
        assert_eq!(found[1], (b"<13>a".to_vec(), FrameEnd::Complete));
        let found = frames(b"99999999999 x\n", 4, 1024);
        assert_eq!(found[0].1, FrameEnd::Malformed);
    }

    #[test]
    fn newline_counted_into_a_frame_is_not_part_of_the_message() {
        let found = frames(b"6 <13>a\n7 <13>b\r\n4 <1>c", 1, 1024);
        assert_eq!(texts(&found), vec!["<13>a", "<13>b", "<1>c"]);
    }

    #[test]
    fn separators_between_counted_frames_are_skipped() {
        let found = frames(b"3 abc\n3 def\r\n", 1, 1024);
        assert_eq!(texts(&found), vec!["abc", "def"]);
    }

    /// Found by the fuzzer: a connection that ends one byte past the
    /// bound, without a delimiter.
    #[test]
    fn unterminated_frame_one_byte_over_the_bound_is_cut() {
        let found = frames(b"ab", 1, 1);
        assert_eq!(found, vec![(b"a".to_vec(), FrameEnd::Truncated)]);
    }

    #[test]
    fn connection_ending_inside_a_counted_frame_delivers_what_came() {
        let found = frames(b"10 <13>ab", 3, 1024);
        assert_eq!(found, vec![(b"<13>ab".to_vec(), FrameEnd::Unterminated)]);
    }

    #[test]
    fn huge_input_without_delimiter_holds_at_most_the_bound() {
        let mut framer = Framer::new(64);
        let mut frames_seen = 0;
        let mut skipped = 0;
        let block = vec![b'z'; 1000];
        let mut buffer: Vec<u8> = Vec::new();
        for _ in 0..100 {
            buffer.extend_from_slice(&block);
            loop {
                match framer.next(&buffer, false) {
                    Step::Frame { consumed, len, .. } => {
                        assert_eq!(len, 64);
                        frames_seen += 1;
                        buffer.drain(..consumed);
                    }
                    Step::Skipped { consumed } => {
                        skipped += consumed;
                        buffer.drain(..consumed);
                    }
                    Step::NeedMore => break,
                }
                assert!(buffer.len() <= 1000);
            }
        }
        assert_eq!(frames_seen, 1);
        assert_eq!(skipped, 100_000 - 64);
    }
}
