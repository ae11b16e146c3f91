//! Record format v2: records grouped into compressed, checksummed blocks
//! that carry their own label dictionary.
//!
//! ```text
//! frame   := length u32 LE | crc32c u32 LE (of body) | body[length]
//! body v2 := version u8 (=2) | codec u8 (=1, zstd) | flags u8 (=0)
//!          | reserved u8 (=0) | records u32 | payload_bytes u32
//!          | compressed payload[length - 12]
//! payload := sink_len u16 | sink[sink_len]
//!          | set_count u16 | label set x set_count
//!          | timestamp_base u64
//!          | record head x records
//!          | message x records (concatenated)
//! label set   := pair_count u16 | (key_len u16 | key | value_len u16 | value) x pair_count
//! record head := timestamp delta (zigzag varint, from the previous record,
//!                the first from timestamp_base) | attempts (varint)
//!              | reason u8 | flags u8 | label set index (varint)
//!              | message_len (varint)
//! ```
//!
//! The frame header is the one of v1 records (see `record`): a scan tells a
//! v2 block from a v1 record by the version byte, and resynchronises over
//! blocks exactly as over records. The CRC32C covers the body, so the
//! compressed bytes are checked before they are decompressed.
//!
//! The label dictionary of a block holds the label sets its records use,
//! written once per block: a block is self-describing, so a scan that
//! resynchronises after a damaged block loses nothing but that block, and
//! labels first seen in the middle of a segment (a new file, a new syslog
//! host) are simply in the next block's dictionary.
//!
//! Codec: zstd level 1. On the VoIP corpus of `perf/voip_lines.py` (144-byte
//! lines, a third random) in 64 KiB blocks it stores 40 bytes per line,
//! where lz4 stores 70 (lz4 has no entropy coder, and random hexadecimal
//! identifiers only compress by entropy coding); at 3.2 M lines/s per core
//! it is fast enough (see `docs/PERFORMANCE.md`).
//!
//! Thread: a [`BlockBuilder`] belongs to its writer (the dispatcher, or a
//! replay writing `rejected/`). Allocations: the builder's buffers and the
//! zstd context grow to the largest block once and are reused; decoding
//! allocates the decompression buffer once per reader and one label vector
//! per record. The decoder trusts nothing: every length is checked against
//! the bytes it has, the payload must decompress to exactly
//! `payload_bytes`, and every byte of it must be used.

use crate::dlq::record::{DecodeError, FRAME_HEADER_BYTES, Prefix, Reason, Record};

/// The version byte of a block.
pub const BLOCK_VERSION: u8 = 2;
/// The only codec: zstd.
pub const CODEC_ZSTD: u8 = 1;
/// zstd level: see the module doc for why 1.
pub const ZSTD_LEVEL: i32 = 1;
/// Bytes of the fixed part of a block body.
pub const BLOCK_FIXED_BYTES: usize = 12;
/// Bytes [`block_prefix`] looks at.
pub const BLOCK_PREFIX_BYTES: usize = FRAME_HEADER_BYTES + BLOCK_FIXED_BYTES;
/// Payload bytes after which a writer closes a block: large enough for
/// zstd to find the repetitions between lines, small enough that a damaged
/// block costs a few hundred lines.
pub const BLOCK_INPUT_BYTES: usize = 64 * 1024;
/// Largest payload accepted, so that a corrupt header cannot claim memory
/// (a single record as large as the largest segment fits).
pub const PAYLOAD_BYTES_MAX: usize = crate::dlq::record::BODY_BYTES_MAX;
/// Label sets a new record's labels are compared with before a new entry
/// is added to the block's dictionary (a duplicate entry is harmless).
const SETS_SEARCHED_MAX: usize = 16;
/// Label sets after which a writer closes a block (the count is a u16).
const SETS_MAX: usize = 4096;
const _: () = assert!(SETS_MAX < u16::MAX as usize);

const FLAG_TERMINATED: u8 = 1;

/// Most bytes the frame of a block whose payload is `payload_bytes` takes.
pub fn block_frame_bound(payload_bytes: usize) -> usize {
    BLOCK_PREFIX_BYTES + zstd::zstd_safe::compress_bound(payload_bytes)
}

/// Most payload bytes a record adds to a block: its label set counted as
/// new, and the block's fixed fields and sink as if it were the first.
pub fn record_payload_bound(record: &Record<'_>) -> usize {
    let labels: usize = record
        .labels
        .iter()
        .map(|(key, value)| 4 + key.len() + value.len())
        .sum();
    // Head: 10 + 5 + 1 + 1 + 3 + 10 bytes at most; a set: 2 bytes of
    // count; the block: 12 bytes and the sink.
    30 + 2 + labels + record.message.len() + 12 + record.sink.len()
}

/// Gathers records into the payload of one block and compresses it.
pub struct BlockBuilder {
    sink: String,
    /// Encoded label sets, back to back.
    sets: Vec<u8>,
    /// `sets[ranges[i].0..ranges[i].1]` is set `i`.
    ranges: Vec<(u32, u32)>,
    heads: Vec<u8>,
    messages: Vec<u8>,
    /// The payload assembled for compression.
    payload: Vec<u8>,
    scratch: Vec<u8>,
    records: u32,
    timestamp_base: u64,
    timestamp_last: u64,
    set_last: usize,
    compressor: zstd::bulk::Compressor<'static>,
}

impl std::fmt::Debug for BlockBuilder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BlockBuilder")
            .field("records", &self.records)
            .field("payload_bytes", &self.payload_bytes())
            .finish_non_exhaustive()
    }
}

impl BlockBuilder {
    pub fn new() -> Self {
        Self {
            sink: String::new(),
            sets: Vec::new(),
            ranges: Vec::new(),
            heads: Vec::new(),
            messages: Vec::new(),
            payload: Vec::new(),
            scratch: Vec::new(),
            records: 0,
            timestamp_base: 0,
            timestamp_last: 0,
            set_last: 0,
            compressor: zstd::bulk::Compressor::new(ZSTD_LEVEL)
                .expect("zstd accepts level 1 and has memory for a context"),
        }
    }

    pub fn records(&self) -> u32 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The sink of the records gathered (a block holds one sink's).
    pub fn sink(&self) -> &str {
        &self.sink
    }

    /// Payload bytes gathered so far (what the block will decompress to).
    pub fn payload_bytes(&self) -> usize {
        if self.records == 0 {
            return 0;
        }
        2 + self.sink.len() + 2 + self.sets.len() + 8 + self.heads.len() + self.messages.len()
    }

    /// Adds a record. The caller keeps blocks to one sink and under
    /// [`PAYLOAD_BYTES_MAX`].
    pub fn add(&mut self, record: &Record<'_>) {
        if self.records == 0 {
            self.sink.clear();
            self.sink.push_str(short(record.sink));
            self.timestamp_base = record.timestamp_ns;
            self.timestamp_last = record.timestamp_ns;
        }
        debug_assert_eq!(self.sink, short(record.sink), "one sink per block");
        let set = self.set_of(&record.labels);
        let delta = record.timestamp_ns.wrapping_sub(self.timestamp_last) as i64;
        self.timestamp_last = record.timestamp_ns;
        put_varint(&mut self.heads, zigzag(delta));
        put_varint(&mut self.heads, u64::from(record.attempts));
        self.heads.push(record.reason as u8);
        self.heads.push(if record.terminated {
            FLAG_TERMINATED
        } else {
            0
        });
        put_varint(&mut self.heads, set as u64);
        put_varint(&mut self.heads, record.message.len() as u64);
        self.messages.extend_from_slice(record.message);
        self.records += 1;
    }

    /// The index of `labels` in the block's dictionary, added if new.
    fn set_of(&mut self, labels: &[(&str, &str)]) -> usize {
        self.scratch.clear();
        let count = labels.len().min(usize::from(u16::MAX));
        self.scratch
            .extend_from_slice(&(count as u16).to_le_bytes());
        for (key, value) in &labels[..count] {
            for text in [short(key), short(value)] {
                self.scratch
                    .extend_from_slice(&(text.len() as u16).to_le_bytes());
                self.scratch.extend_from_slice(text.as_bytes());
            }
        }
        let matches = |ranges: &[(u32, u32)], sets: &[u8], index: usize| {
            let (start, end) = ranges[index];
            sets[start as usize..end as usize] == self.scratch[..]
        };
        if self.set_last < self.ranges.len() && matches(&self.ranges, &self.sets, self.set_last) {
            return self.set_last;
        }
        let searched_from = self.ranges.len().saturating_sub(SETS_SEARCHED_MAX);
        for index in (searched_from..self.ranges.len()).rev() {
            if matches(&self.ranges, &self.sets, index) {
                self.set_last = index;
                return index;
            }
        }
        // The writer closes a block at `SETS_MAX` sets (see `is_full`).
        assert!(
            self.ranges.len() < usize::from(u16::MAX),
            "{} label sets in a block",
            self.ranges.len()
        );
        let start = self.sets.len() as u32;
        self.sets.extend_from_slice(&self.scratch);
        self.ranges.push((start, self.sets.len() as u32));
        self.set_last = self.ranges.len() - 1;
        self.set_last
    }

    /// True when the block should be closed before another record is
    /// added.
    pub fn is_full(&self) -> bool {
        self.payload_bytes() >= BLOCK_INPUT_BYTES || self.ranges.len() >= SETS_MAX
    }

    /// Compresses the gathered records into a block frame in `out`
    /// (cleared first) and empties the builder.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        assert!(self.records > 0, "a block holds at least one record");
        self.payload.clear();
        self.payload
            .extend_from_slice(&(self.sink.len() as u16).to_le_bytes());
        self.payload.extend_from_slice(self.sink.as_bytes());
        self.payload
            .extend_from_slice(&(self.ranges.len() as u16).to_le_bytes());
        self.payload.extend_from_slice(&self.sets);
        self.payload
            .extend_from_slice(&self.timestamp_base.to_le_bytes());
        self.payload.extend_from_slice(&self.heads);
        self.payload.extend_from_slice(&self.messages);
        assert!(
            self.payload.len() <= PAYLOAD_BYTES_MAX,
            "a block payload is at most {PAYLOAD_BYTES_MAX} bytes"
        );
        out.clear();
        out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
        out.extend_from_slice(&[BLOCK_VERSION, CODEC_ZSTD, 0, 0]);
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.resize(block_frame_bound(self.payload.len()), 0);
        let compressed = self
            .compressor
            .compress_to_buffer(&self.payload, &mut out[BLOCK_PREFIX_BYTES..])
            .expect("the output has room for zstd's bound");
        debug_assert!(compressed > 0, "zstd writes a frame header");
        out.truncate(BLOCK_PREFIX_BYTES + compressed);
        let body_bytes = out.len() - FRAME_HEADER_BYTES;
        let checksum = crc32c::crc32c(&out[FRAME_HEADER_BYTES..]);
        out[0..4].copy_from_slice(&(body_bytes as u32).to_le_bytes());
        out[4..8].copy_from_slice(&checksum.to_le_bytes());
        self.clear();
    }

    /// Forgets the gathered records.
    pub fn clear(&mut self) {
        self.sets.clear();
        self.ranges.clear();
        self.heads.clear();
        self.messages.clear();
        self.records = 0;
        self.set_last = 0;
    }
}

impl Default for BlockBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn short(text: &str) -> &str {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// What the fixed part of a block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    pub records: u32,
    pub payload_bytes: usize,
}

/// Checks, without reading the compressed bytes, whether a block frame no
/// longer than `limit_bytes` may start at `bytes` (see
/// [`frame_prefix`](crate::dlq::record::frame_prefix), its v1 twin).
pub fn block_prefix(bytes: &[u8], limit_bytes: usize) -> Prefix {
    if limit_bytes < BLOCK_PREFIX_BYTES {
        return Prefix::Implausible;
    }
    let Some(prefix) = bytes.get(..BLOCK_PREFIX_BYTES) else {
        return Prefix::Short;
    };
    match check_head(prefix) {
        Some((frame_bytes, _)) if frame_bytes <= limit_bytes => Prefix::Plausible(frame_bytes),
        _ => Prefix::Implausible,
    }
}

/// The frame length and head of a block prefix, if plausible.
fn check_head(prefix: &[u8]) -> Option<(usize, BlockHead)> {
    let u32_at =
        |at: usize| u32::from_le_bytes(prefix[at..at + 4].try_into().expect("4 bytes")) as usize;
    let length = u32_at(0);
    let body = &prefix[FRAME_HEADER_BYTES..];
    let fixed_valid =
        body[0] == BLOCK_VERSION && body[1] == CODEC_ZSTD && body[2] == 0 && body[3] == 0;
    let records = u32_at(FRAME_HEADER_BYTES + 4);
    let payload_bytes = u32_at(FRAME_HEADER_BYTES + 8);
    let compressed = length.checked_sub(BLOCK_FIXED_BYTES)?;
    let plausible = fixed_valid
        && compressed > 0
        && records > 0
        && (12 + 5 * records..=PAYLOAD_BYTES_MAX).contains(&payload_bytes)
        && compressed <= zstd::zstd_safe::compress_bound(payload_bytes);
    plausible.then_some((
        FRAME_HEADER_BYTES + length,
        BlockHead {
            records: records as u32,
            payload_bytes,
        },
    ))
}

/// A block frame whose header and checksum hold (its payload is not yet
/// decompressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedBlock<'a> {
    pub head: BlockHead,
    /// The whole frame.
    pub frame: &'a [u8],
}

/// Checks the block frame at the start of `bytes`: prefix, length and
/// checksum.
pub fn check_block(bytes: &[u8]) -> Result<CheckedBlock<'_>, DecodeError> {
    if bytes.len() < BLOCK_PREFIX_BYTES {
        return Err(DecodeError::Truncated {
            needed: BLOCK_PREFIX_BYTES,
            available: bytes.len(),
        });
    }
    let (frame_bytes, head) = check_head(&bytes[..BLOCK_PREFIX_BYTES]).ok_or(
        DecodeError::Length(u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize),
    )?;
    let frame = bytes.get(..frame_bytes).ok_or(DecodeError::Truncated {
        needed: frame_bytes,
        available: bytes.len(),
    })?;
    let stored = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&frame[FRAME_HEADER_BYTES..]);
    if stored != computed {
        return Err(DecodeError::Checksum { stored, computed });
    }
    Ok(CheckedBlock { head, frame })
}

/// Why a checked block does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block payload does not decompress to its {0} bytes")]
    Decompress(usize),
    #[error("block payload: {0}")]
    Payload(#[from] DecodeError),
    #[error("block payload label set index {index} of {sets}")]
    LabelSet { index: usize, sets: usize },
}

/// Decompresses a checked block into `payload` and decodes its records
/// into `records` (cleared first); the records borrow `payload`.
pub fn decode_block<'p>(
    block: &CheckedBlock<'_>,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    payload: &'p mut Vec<u8>,
    records: &mut Vec<Record<'p>>,
) -> Result<(), BlockError> {
    records.clear();
    payload.clear();
    let expected = block.head.payload_bytes;
    payload.reserve(expected);
    let compressed = &block.frame[BLOCK_PREFIX_BYTES..];
    match decompressor.decompress_to_buffer(compressed, &mut *payload) {
        Ok(bytes) if bytes == expected => {}
        _ => return Err(BlockError::Decompress(expected)),
    }
    decode_payload(payload, block.head.records as usize, records)
}

/// Decodes the records of a decompressed payload.
pub fn decode_payload<'p>(
    payload: &'p [u8],
    count: usize,
    records: &mut Vec<Record<'p>>,
) -> Result<(), BlockError> {
    let mut reader = Reader {
        bytes: payload,
        offset: 0,
    };
    let sink_len = usize::from(reader.u16()?);
    let sink = reader.text(sink_len, "sink")?;
    let set_count = usize::from(reader.u16()?);
    let sets_start = reader.offset;
    for _ in 0..set_count {
        let pairs = usize::from(reader.u16()?);
        for _ in 0..2 * pairs {
            let len = usize::from(reader.u16()?);
            reader.text(len, "label")?;
        }
    }
    let sets = &payload[sets_start..reader.offset];
    let mut timestamp = reader.u64()?;
    let mut heads = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let delta = unzigzag(reader.varint()?);
        timestamp = timestamp.wrapping_add(delta as u64);
        let attempts = u32::try_from(reader.varint()?).map_err(|_| DecodeError::Length(0))?;
        let reason_code = reader.u8()?;
        let reason = Reason::from_code(reason_code).ok_or(DecodeError::Reason(reason_code))?;
        let flags = reader.u8()?;
        if flags & !FLAG_TERMINATED != 0 {
            return Err(DecodeError::Version(flags).into());
        }
        let set = usize::try_from(reader.varint()?).unwrap_or(usize::MAX);
        if set >= set_count {
            return Err(BlockError::LabelSet {
                index: set,
                sets: set_count,
            });
        }
        let message_len = usize::try_from(reader.varint()?).unwrap_or(usize::MAX);
        heads.push((timestamp, attempts, reason, flags, set, message_len));
    }
    // Label sets are walked once more per record that uses them; sets are
    // few and short.
    let mut set_starts = Vec::with_capacity(set_count);
    let mut set_reader = Reader {
        bytes: sets,
        offset: 0,
    };
    for _ in 0..set_count {
        set_starts.push(set_reader.offset);
        let pairs = usize::from(set_reader.u16()?);
        for _ in 0..2 * pairs {
            let len = usize::from(set_reader.u16()?);
            set_reader.take(len)?;
        }
    }
    for (timestamp_ns, attempts, reason, flags, set, message_len) in heads {
        let message = reader.take(message_len)?;
        let mut labels_reader = Reader {
            bytes: sets,
            offset: set_starts[set],
        };
        let pairs = usize::from(labels_reader.u16()?);
        let mut labels = Vec::with_capacity(pairs);
        for _ in 0..pairs {
            let key_len = usize::from(labels_reader.u16()?);
            let key = labels_reader.text(key_len, "label key")?;
            let value_len = usize::from(labels_reader.u16()?);
            let value = labels_reader.text(value_len, "label value")?;
            labels.push((key, value));
        }
        records.push(Record {
            timestamp_ns,
            attempts,
            reason,
            terminated: flags & FLAG_TERMINATED != 0,
            sink,
            labels,
            message,
        });
    }
    let trailing = payload.len() - reader.offset;
    if trailing != 0 {
        records.clear();
        return Err(DecodeError::Trailing(trailing).into());
    }
    Ok(())
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

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.u8()?;
            if shift == 63 && byte > 1 {
                return Err(DecodeError::Length(usize::from(byte)));
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Length(0))
    }

    fn text(&mut self, count: usize, field: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(count)?).map_err(|_| DecodeError::Utf8(field))
    }
}

/// A block decoder with its reusable buffers, for readers.
pub struct BlockDecoder {
    decompressor: zstd::bulk::Decompressor<'static>,
    payload: Vec<u8>,
    /// Where each block's payload lies in `payload` (`None`: it did not
    /// decompress).
    spans: Vec<Option<(usize, usize)>>,
}

impl std::fmt::Debug for BlockDecoder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BlockDecoder")
            .finish_non_exhaustive()
    }
}

impl BlockDecoder {
    pub fn new() -> Self {
        Self {
            decompressor: zstd::bulk::Decompressor::new()
                .expect("zstd has memory for a decompression context"),
            payload: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// Decodes a checked block and hands its records to `visit`.
    pub fn decode(
        &mut self,
        block: &CheckedBlock<'_>,
        visit: &mut dyn FnMut(&[Record<'_>]),
    ) -> Result<(), BlockError> {
        let mut failed = None;
        self.decode_many(std::slice::from_ref(block), visit, &mut |_, error| {
            failed = Some(error)
        });
        failed.map_or(Ok(()), Err)
    }

    /// Decodes checked blocks and hands all their records to `visit` at
    /// once (so that a replay sends them in steps as large as a v1 scan
    /// gives); a block that does not decode goes to `failed` with its
    /// index, and its records are left out.
    pub fn decode_many(
        &mut self,
        blocks: &[CheckedBlock<'_>],
        visit: &mut dyn FnMut(&[Record<'_>]),
        failed: &mut dyn FnMut(usize, BlockError),
    ) {
        self.payload.clear();
        self.spans.clear();
        for block in blocks {
            let start = self.payload.len();
            let expected = block.head.payload_bytes;
            self.payload.resize(start + expected, 0);
            let compressed = &block.frame[BLOCK_PREFIX_BYTES..];
            let decompressed = self
                .decompressor
                .decompress_to_buffer(compressed, &mut self.payload[start..]);
            if matches!(decompressed, Ok(bytes) if bytes == expected) {
                self.spans.push(Some((start, start + expected)));
            } else {
                self.payload.truncate(start);
                self.spans.push(None);
            }
        }
        let mut records = Vec::new();
        for (index, (block, span)) in blocks.iter().zip(&self.spans).enumerate() {
            let Some((start, end)) = *span else {
                failed(index, BlockError::Decompress(block.head.payload_bytes));
                continue;
            };
            let before = records.len();
            let payload = &self.payload[start..end];
            let mut decoded = Vec::new();
            match decode_payload(payload, block.head.records as usize, &mut decoded) {
                Ok(()) => records.extend(decoded),
                Err(error) => {
                    records.truncate(before);
                    failed(index, error);
                }
            }
        }
        if !records.is_empty() {
            visit(&records);
        }
    }
}

impl Default for BlockDecoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(number: u32, labels: Vec<(&'static str, &'static str)>) -> Record<'static> {
        let message: &'static [u8] = Box::leak(format!("line {number} \u{e9}").into_bytes().into());
        Record {
            timestamp_ns: 1_795_737_599_000_000_000 + u64::from(number) * 7 - 50,
            attempts: number % 5,
            reason: Reason::ALL[number as usize % 4],
            terminated: !number.is_multiple_of(3),
            sink: "kafka",
            labels,
            message,
        }
    }

    fn records() -> Vec<Record<'static>> {
        (0..300)
            .map(|number| {
                let labels = match number % 4 {
                    0 => vec![("file", "/var/log/a.log")],
                    1 => vec![],
                    2 => vec![("file", "/var/log/b.log"), ("host", "sbc01")],
                    _ => vec![("file", "/var/log/a.log")],
                };
                record(number, labels)
            })
            .collect()
    }

    fn build(records: &[Record<'_>]) -> Vec<u8> {
        let mut builder = BlockBuilder::new();
        for record in records {
            builder.add(record);
        }
        let mut frame = Vec::new();
        builder.finish(&mut frame);
        assert!(builder.is_empty());
        frame
    }

    fn decode_all(frame: &[u8]) -> Result<Vec<String>, String> {
        let block = check_block(frame).map_err(|error| error.to_string())?;
        let mut seen = Vec::new();
        BlockDecoder::new()
            .decode(&block, &mut |records| {
                seen.extend(records.iter().map(|record| format!("{record:?}")))
            })
            .map_err(|error| error.to_string())?;
        Ok(seen)
    }

    #[test]
    fn round_trips_with_a_dictionary() {
        let records = records();
        let frame = build(&records);
        let expected: Vec<String> = records.iter().map(|record| format!("{record:?}")).collect();
        assert_eq!(decode_all(&frame), Ok(expected));
        assert!(frame.len() < records.len() * 10, "{} bytes", frame.len());
        assert_eq!(
            block_prefix(&frame, frame.len()),
            Prefix::Plausible(frame.len())
        );
        assert_eq!(block_prefix(&frame, frame.len() - 1), Prefix::Implausible);
    }

    /// Every single-bit flip of a block is caught before or by the
    /// decoder; every cut too.
    #[test]
    fn every_flip_and_cut_is_detected() {
        let frame = build(&records()[..40]);
        for index in 0..frame.len() {
            for bit in 0..8 {
                let mut corrupt = frame.clone();
                corrupt[index] ^= 1 << bit;
                assert!(
                    decode_all(&corrupt).is_err(),
                    "flip at {index} bit {bit} accepted"
                );
            }
        }
        for cut in 0..frame.len() {
            assert!(decode_all(&frame[..cut]).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for value in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut reader = Reader {
                bytes: &out,
                offset: 0,
            };
            assert_eq!(reader.varint(), Ok(value));
        }
        for value in [0i64, 1, -1, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(value)), value);
        }
    }
}
