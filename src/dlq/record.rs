//! The DLQ record format: encoding and a decoder that trusts nothing.
//!
//! ```text
//! frame   := length u32 LE | crc32c u32 LE (of body) | body[length]
//! body v1 := version u8 (=1) | reason u8 | flags u8 | reserved u8
//!          | attempts u32 | timestamp_ns u64
//!          | sink_len u16 | label_count u16 | message_len u32
//!          | sink[sink_len]
//!          | (key_len u16 | key | value_len u16 | value) x label_count
//!          | message[message_len]
//! ```
//!
//! All integers are little-endian. A record is self-describing: the sink id
//! and labels are strings, never process-local symbols. A frame whose length
//! is 0 marks the end of the written part of a segment (segments are
//! preallocated with zeroes). The decoder checks every length against the
//! bytes it has and the checksum before it returns anything, so a torn or
//! corrupt record is an error, never a panic or a wrong record.

/// Bytes of the frame header (length and checksum).
pub const FRAME_HEADER_BYTES: usize = 8;
/// Bytes of the fixed part of a v1 body.
pub const BODY_FIXED_BYTES: usize = 24;
/// The only body version this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Largest body accepted, so that a corrupt length cannot claim the disk.
pub const BODY_BYTES_MAX: usize = 256 * 1024 * 1024;

const FLAG_TERMINATED: u8 = 1;

/// Why an entry went to the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// The retry wheel had no room.
    RetryQueueFull = 1,
    /// `max_attempts` were used up.
    AttemptsExhausted = 2,
    /// The sink said retrying cannot help (written by earlier versions;
    /// such entries now go to `rejected/` with one of the reasons below).
    Permanent = 3,
    /// Not delivered before the shutdown deadline.
    Shutdown = 4,
    /// Rejected (kept in `rejected/`, never replayed automatically): the
    /// encoded message is longer than the sink's message limit.
    MessageTooLarge = 5,
    /// Rejected: the sink is not authorized for its topic or cluster.
    NotAuthorized = 6,
    /// Rejected: the sink's topic is invalid.
    InvalidTopic = 7,
    /// Rejected: another error that retrying the same message cannot fix.
    Refused = 8,
    /// Rejected: the entry's time is older than the destination accepts
    /// (Loki: behind its stream's window, or past `max_entry_age_ms`).
    EntryTooOld = 9,
    /// Rejected: the entry's time is further ahead than the destination
    /// accepts.
    EntryTooNew = 10,
    /// Rejected: the destination's line size limit.
    LineTooLong = 11,
    /// Rejected: the destination refuses the entry's stream labels.
    InvalidLabels = 12,
}

impl Reason {
    /// Every reason an entry is stored in the replayable DLQ for, in code
    /// order.
    pub const ALL: [Reason; 4] = [
        Reason::RetryQueueFull,
        Reason::AttemptsExhausted,
        Reason::Permanent,
        Reason::Shutdown,
    ];

    /// Every reason a record is moved to `rejected/` for, in code order.
    pub const REJECTED: [Reason; 8] = [
        Reason::MessageTooLarge,
        Reason::NotAuthorized,
        Reason::InvalidTopic,
        Reason::Refused,
        Reason::EntryTooOld,
        Reason::EntryTooNew,
        Reason::LineTooLong,
        Reason::InvalidLabels,
    ];

    pub fn from_code(code: u8) -> Option<Reason> {
        Some(match code {
            1 => Reason::RetryQueueFull,
            2 => Reason::AttemptsExhausted,
            3 => Reason::Permanent,
            4 => Reason::Shutdown,
            5 => Reason::MessageTooLarge,
            6 => Reason::NotAuthorized,
            7 => Reason::InvalidTopic,
            8 => Reason::Refused,
            9 => Reason::EntryTooOld,
            10 => Reason::EntryTooNew,
            11 => Reason::LineTooLong,
            12 => Reason::InvalidLabels,
            _ => return None,
        })
    }

    /// True for the reasons of `rejected/` segments.
    pub fn is_rejection(self) -> bool {
        self as u8 >= Reason::MessageTooLarge as u8
    }

    /// The label value used in metrics and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RetryQueueFull => "retry_queue_full",
            Reason::AttemptsExhausted => "attempts_exhausted",
            Reason::Permanent => "permanent_error",
            Reason::Shutdown => "shutdown",
            Reason::MessageTooLarge => "message_too_large",
            Reason::NotAuthorized => "not_authorized",
            Reason::InvalidTopic => "invalid_topic",
            Reason::Refused => "refused",
            Reason::EntryTooOld => "entry_too_old",
            Reason::EntryTooNew => "entry_too_new",
            Reason::LineTooLong => "line_too_long",
            Reason::InvalidLabels => "invalid_labels",
        }
    }
}

/// One record, borrowed from the bytes it was decoded from (or from the
/// entry it will be encoded from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub timestamp_ns: u64,
    pub attempts: u32,
    pub reason: Reason,
    /// The line ended with `\n` in the input.
    pub terminated: bool,
    pub sink: &'a str,
    pub labels: Vec<(&'a str, &'a str)>,
    pub message: &'a [u8],
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record truncated: needs {needed} bytes, {available} remain")]
    Truncated { needed: usize, available: usize },
    #[error("record length {0} is out of range")]
    Length(usize),
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record version {0} is not supported")]
    Version(u8),
    #[error("record reason code {0} is unknown")]
    Reason(u8),
    #[error("record field {0} is not UTF-8")]
    Utf8(&'static str),
    #[error("record has {0} bytes after its message")]
    Trailing(usize),
}

/// Bytes the frame of a record will take.
pub fn frame_bytes(sink: &str, labels: &[(&str, &str)], message: &[u8]) -> usize {
    let labels_bytes: usize = labels
        .iter()
        .map(|(key, value)| 4 + key.len() + value.len())
        .sum();
    FRAME_HEADER_BYTES + BODY_FIXED_BYTES + sink.len() + labels_bytes + message.len()
}

/// Encodes a frame into `out` (cleared first). Strings longer than a u16
/// (sink id, label keys and values) are cut at 65,535 bytes on a character
/// boundary; they come from the config and the file system, which keep them
/// far shorter.
pub fn encode_frame(out: &mut Vec<u8>, record: &Record<'_>) {
    out.clear();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    out.push(RECORD_VERSION);
    out.push(record.reason as u8);
    out.push(if record.terminated {
        FLAG_TERMINATED
    } else {
        0
    });
    out.push(0);
    out.extend_from_slice(&record.attempts.to_le_bytes());
    out.extend_from_slice(&record.timestamp_ns.to_le_bytes());
    let sink = short(record.sink);
    let label_count = record.labels.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(sink.len() as u16).to_le_bytes());
    out.extend_from_slice(&(label_count as u16).to_le_bytes());
    out.extend_from_slice(&(record.message.len() as u32).to_le_bytes());
    out.extend_from_slice(sink.as_bytes());
    for (key, value) in &record.labels[..label_count] {
        for text in [short(key), short(value)] {
            out.extend_from_slice(&(text.len() as u16).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.extend_from_slice(record.message);
    let body_bytes = out.len() - FRAME_HEADER_BYTES;
    assert!(
        body_bytes <= BODY_BYTES_MAX,
        "a DLQ record body is at most {BODY_BYTES_MAX} bytes"
    );
    let checksum = crc32c::crc32c(&out[FRAME_HEADER_BYTES..]);
    out[0..4].copy_from_slice(&(body_bytes as u32).to_le_bytes());
    out[4..8].copy_from_slice(&checksum.to_le_bytes());
}

fn short(text: &str) -> &str {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What the start of `bytes` holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A zero length: nothing more was written.
    End,
    /// A valid record and the bytes its frame takes.
    Record(Record<'a>, usize),
}

/// Bytes [`frame_prefix`] looks at: the frame header and the fixed part of
/// the body.
pub const FRAME_PREFIX_BYTES: usize = FRAME_HEADER_BYTES + BODY_FIXED_BYTES;

/// What the first [`FRAME_PREFIX_BYTES`] of some bytes say about a frame
/// starting there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// Fewer than [`FRAME_PREFIX_BYTES`] bytes were given.
    Short,
    /// No frame this build writes starts like this.
    Implausible,
    /// A frame of this many bytes may start here; only its checksum and
    /// [`decode_frame`] can tell.
    Plausible(usize),
}

/// Checks, without reading the body, whether a frame no longer than
/// `limit_bytes` may start at `bytes`: its length is in range and fits, the
/// version, reason, flags and reserved byte are ones [`encode_frame`]
/// writes, and the string and message lengths add up to the body length.
/// The scanner runs this at every offset it resynchronises over, so it is
/// cheap and strict; the checksum is computed only when it passes.
pub fn frame_prefix(bytes: &[u8], limit_bytes: usize) -> Prefix {
    if limit_bytes < FRAME_PREFIX_BYTES {
        return Prefix::Implausible;
    }
    let Some(prefix) = bytes.get(..FRAME_PREFIX_BYTES) else {
        return Prefix::Short;
    };
    let field = |start: usize, bytes: usize| {
        prefix[start..start + bytes]
            .iter()
            .rev()
            .fold(0usize, |value, &byte| value << 8 | usize::from(byte))
    };
    let length = field(0, 4);
    let frame_bytes = FRAME_HEADER_BYTES + length;
    if !(BODY_FIXED_BYTES..=BODY_BYTES_MAX).contains(&length) || frame_bytes > limit_bytes {
        return Prefix::Implausible;
    }
    let body = &prefix[FRAME_HEADER_BYTES..];
    let fixed_valid = body[0] == RECORD_VERSION
        && Reason::from_code(body[1]).is_some()
        && body[2] & !FLAG_TERMINATED == 0
        && body[3] == 0;
    if !fixed_valid {
        return Prefix::Implausible;
    }
    let sink_bytes = field(FRAME_HEADER_BYTES + 16, 2);
    let label_count = field(FRAME_HEADER_BYTES + 18, 2);
    let message_bytes = field(FRAME_HEADER_BYTES + 20, 4);
    // Each label takes two u16 lengths besides its text.
    let variable_bytes_min = sink_bytes + message_bytes + 4 * label_count;
    let variable_bytes = length - BODY_FIXED_BYTES;
    let lengths_add_up = if label_count == 0 {
        variable_bytes_min == variable_bytes
    } else {
        variable_bytes_min <= variable_bytes
    };
    if !lengths_add_up {
        return Prefix::Implausible;
    }
    Prefix::Plausible(frame_bytes)
}

/// Decodes the frame at the start of `bytes`.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let mut reader = Reader { bytes, offset: 0 };
    let length = reader.u32()? as usize;
    if length == 0 {
        return Ok(Frame::End);
    }
    if !(BODY_FIXED_BYTES..=BODY_BYTES_MAX).contains(&length) {
        return Err(DecodeError::Length(length));
    }
    let stored = reader.u32()?;
    let body = reader.take(length)?;
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    let record = decode_body(body)?;
    Ok(Frame::Record(record, FRAME_HEADER_BYTES + length))
}

fn decode_body(body: &[u8]) -> Result<Record<'_>, DecodeError> {
    let mut reader = Reader {
        bytes: body,
        offset: 0,
    };
    let version = reader.u8()?;
    if version != RECORD_VERSION {
        return Err(DecodeError::Version(version));
    }
    let reason_code = reader.u8()?;
    let reason = Reason::from_code(reason_code).ok_or(DecodeError::Reason(reason_code))?;
    let flags = reader.u8()?;
    let _reserved = reader.u8()?;
    let attempts = reader.u32()?;
    let timestamp_ns = reader.u64()?;
    let sink_len = usize::from(reader.u16()?);
    let label_count = usize::from(reader.u16()?);
    let message_len = reader.u32()? as usize;
    let sink = reader.text(sink_len, "sink")?;
    let mut labels = Vec::with_capacity(label_count.min(64));
    for _ in 0..label_count {
        let key_len = usize::from(reader.u16()?);
        let key = reader.text(key_len, "label key")?;
        let value_len = usize::from(reader.u16()?);
        let value = reader.text(value_len, "label value")?;
        labels.push((key, value));
    }
    let message = reader.take(message_len)?;
    let trailing = body.len() - reader.offset;
    if trailing != 0 {
        return Err(DecodeError::Trailing(trailing));
    }
    Ok(Record {
        timestamp_ns,
        attempts,
        reason,
        terminated: flags & FLAG_TERMINATED != 0,
        sink,
        labels,
        message,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let available = self.bytes.len() - self.offset;
        if count > available {
            return Err(DecodeError::Truncated {
                needed: count,
                available,
            });
        }
        let taken = &self.bytes[self.offset..self.offset + count];
        self.offset += count;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn text(&mut self, count: usize, field: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(count)?).map_err(|_| DecodeError::Utf8(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record<'static> {
        Record {
            timestamp_ns: 1_795_737_599_123_456_789,
            attempts: 3,
            reason: Reason::AttemptsExhausted,
            terminated: true,
            sink: "kafka",
            labels: vec![("file", "/var/log/a.log"), ("service", "app")],
            message: b"seq=1 \xff not utf-8 is fine in a message",
        }
    }

    #[test]
    fn round_trips() {
        let mut frame = Vec::new();
        encode_frame(&mut frame, &sample());
        assert_eq!(
            frame.len(),
            frame_bytes("kafka", &sample().labels, sample().message)
        );
        let decoded = decode_frame(&frame).expect("valid frame");
        assert_eq!(decoded, Frame::Record(sample(), frame.len()));
        assert_eq!(decode_frame(&[0; 16]), Ok(Frame::End));
    }

    /// Every single-byte corruption and every truncation is detected.
    #[test]
    fn every_flip_and_cut_is_detected() {
        let mut frame = Vec::new();
        encode_frame(&mut frame, &sample());
        for index in 0..frame.len() {
            for bit in 0..8 {
                let mut corrupt = frame.clone();
                corrupt[index] ^= 1 << bit;
                match decode_frame(&corrupt) {
                    Ok(Frame::Record(record, _)) => {
                        panic!("flip at {index} bit {bit} accepted: {record:?}")
                    }
                    Ok(Frame::End) => assert!(index < 4, "only a zeroed length reads as the end"),
                    Err(_) => {}
                }
            }
        }
        for cut in 1..frame.len() {
            assert!(
                decode_frame(&frame[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
    }
}
