//! The segment scanner: walks the frames of a segment body and recovers
//! every intact record, whatever happened to the bytes around it.
//!
//! Runs on the thread that reads a segment (a `dlq` command, a replay
//! thread, the dispatcher at start-up). A scan of a file allocates one read
//! buffer of [`SCAN_CHUNK_BYTES`], grown only to hold a frame longer than
//! that (so at most the segment's size), and one vector of the records of a
//! chunk.
//!
//! Rules (the byte layouts are in `record` and `segment`):
//! * A frame is accepted only when its length fits in what is left of the
//!   segment, its prefix is one the writer produces
//!   ([`frame_prefix`]), its CRC32C matches and its body decodes. A region
//!   of bytes can therefore never be read as a record by accident, short of
//!   a CRC32C collision on a plausible prefix.
//! * A zero length ends the written part of a segment only when every byte
//!   after it is zero as well (segments are preallocated with zeroes). A
//!   zero run followed by data is a hole, for example a page that did not
//!   reach the disk before a crash: it is corrupt.
//! * Anything else at a frame boundary starts a corrupt region. The scanner
//!   resynchronises: it tries every later offset whose version byte is
//!   right (found with `memchr`) until a frame is accepted, so a damaged
//!   length hides no record after it. Each region counts as one corrupt
//!   record (it hid at least one; how many cannot be known) and its bytes as
//!   corrupt bytes. A region that runs to the end of the written part is a
//!   torn tail.
//! * A segment a writer still appends to ([`ScanMode::InUse`]) is read up to
//!   its last complete record: the first zero length or invalid frame is
//!   where the writer is, so the scan ends there and counts nothing corrupt.
//!
//! Cost, linear in the segment: an intact segment costs one CRC32C over its
//! records, plus a check that its zero tail is zero. Resynchronising costs a
//! `memchr` over the region plus a prefix check per candidate offset; the
//! checksum runs only on candidates whose prefix passes, which in damaged
//! data written by this daemon are the real frames. Log lines could be
//! crafted to hold plausible prefixes that claim the rest of the segment at
//! every few bytes; checking each of those directly would cost the square of
//! the segment. So a long candidate (over [`CHECKPOINT_FRAME_BYTES`]) is
//! checked from running checksums kept at every [`CHECKPOINT_BLOCK_BYTES`]
//! of the body (CRC32C of a range = CRC of the prefix up to its end
//! combined with the CRC of the prefix up to its start): at most two blocks
//! and one `crc32c_combine` per candidate, and each byte is added to the
//! running checksum once.

use std::io::Read;

use crate::dlq::block::{
    BLOCK_PREFIX_BYTES, BLOCK_VERSION, BlockDecoder, CheckedBlock, block_prefix, check_block,
};
use crate::dlq::header::HeaderDamage;
use crate::dlq::record::{
    FRAME_HEADER_BYTES, FRAME_PREFIX_BYTES, Frame, Prefix, RECORD_VERSION, Record, decode_frame,
    frame_prefix,
};

/// What a scan needs to know of a frame format: v1 records (one record a
/// frame) or v2 blocks (many). Both share the frame header (length, CRC32C)
/// and put their version byte right after it, which resynchronising
/// searches for.
pub trait Framing: 'static {
    /// The version byte at [`VERSION_OFFSET`].
    const VERSION: u8;
    /// Bytes the prefix check looks at.
    const PREFIX_BYTES: usize;
    /// What an accepted frame yields.
    type Item<'a>;
    /// See [`frame_prefix`] and [`block_prefix`].
    fn prefix(bytes: &[u8], limit_bytes: usize) -> Prefix;
    /// The frame at the start of `frame` (exactly one frame's bytes), if
    /// its checksum holds and it decodes.
    fn accept(frame: &[u8]) -> Option<Self::Item<'_>>;
    /// Records an accepted frame holds.
    fn records(item: &Self::Item<'_>) -> u64;
    /// Message bytes an accepted frame holds, if known without decoding.
    fn input_bytes(item: &Self::Item<'_>) -> u64;
}

/// Format v1: one record per frame.
#[derive(Debug)]
pub enum RecordFrames {}

impl Framing for RecordFrames {
    const VERSION: u8 = RECORD_VERSION;
    const PREFIX_BYTES: usize = FRAME_PREFIX_BYTES;
    type Item<'a> = Record<'a>;

    fn prefix(bytes: &[u8], limit_bytes: usize) -> Prefix {
        frame_prefix(bytes, limit_bytes)
    }

    fn accept(frame: &[u8]) -> Option<Record<'_>> {
        match decode_frame(frame) {
            Ok(Frame::Record(record, taken)) => {
                debug_assert_eq!(taken, frame.len(), "the prefix and the decoder agree");
                debug_assert!(
                    taken >= FRAME_PREFIX_BYTES,
                    "an accepted frame is not empty"
                );
                Some(record)
            }
            Ok(Frame::End) | Err(_) => None,
        }
    }

    fn records(_: &Record<'_>) -> u64 {
        1
    }

    fn input_bytes(record: &Record<'_>) -> u64 {
        record.message.len() as u64
    }
}

/// Format v2: compressed blocks of records (see `block`). A block is
/// accepted on its header and checksum; decompressing it is the caller's
/// (see [`scan_blocks`]).
#[derive(Debug)]
pub enum BlockFrames {}

impl Framing for BlockFrames {
    const VERSION: u8 = BLOCK_VERSION;
    const PREFIX_BYTES: usize = BLOCK_PREFIX_BYTES;
    type Item<'a> = CheckedBlock<'a>;

    fn prefix(bytes: &[u8], limit_bytes: usize) -> Prefix {
        block_prefix(bytes, limit_bytes)
    }

    fn accept(frame: &[u8]) -> Option<CheckedBlock<'_>> {
        let block = check_block(frame).ok()?;
        debug_assert_eq!(
            block.frame.len(),
            frame.len(),
            "the prefix and the check agree"
        );
        debug_assert!(block.frame.len() > BLOCK_PREFIX_BYTES);
        Some(block)
    }

    fn records(block: &CheckedBlock<'_>) -> u64 {
        u64::from(block.head.records)
    }

    fn input_bytes(_: &CheckedBlock<'_>) -> u64 {
        0
    }
}

/// Bytes read at a time by a scan of a file (a longer frame grows the
/// buffer once).
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

/// Offset of the version byte in a frame, which resynchronising searches
/// for.
const VERSION_OFFSET: usize = FRAME_HEADER_BYTES;

/// Distance between running checksums. A scan drops read bytes only up to
/// a multiple of it, so the bytes from the last checkpoint on stay at hand.
#[cfg(not(any(test, fuzzing)))]
pub const CHECKPOINT_BLOCK_BYTES: usize = 1024;
/// Candidates longer than this are checked from the running checksums; a
/// direct CRC32C of this many bytes costs about one `crc32c_combine`.
#[cfg(not(any(test, fuzzing)))]
pub const CHECKPOINT_FRAME_BYTES: usize = 256 * 1024;
// Small under test and fuzzing, so that small inputs take both paths.
#[cfg(any(test, fuzzing))]
pub const CHECKPOINT_BLOCK_BYTES: usize = 16;
#[cfg(any(test, fuzzing))]
pub const CHECKPOINT_FRAME_BYTES: usize = 64;
const _: () = assert!(CHECKPOINT_BLOCK_BYTES.is_power_of_two());
const _: () = assert!(CHECKPOINT_FRAME_BYTES > 2 * CHECKPOINT_BLOCK_BYTES);

/// How a scan treats what follows the last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Nothing writes the segment any more: everything after the last
    /// record must be zero, anything else is corrupt.
    Sealed,
    /// A writer appends to the segment: the scan ends at the first zero
    /// length or invalid frame, the writer's position.
    InUse,
}

/// What a scan of a segment found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanSummary {
    /// Intact records recovered: every record in the segment whose frame is
    /// undamaged. Replay may delete a segment only after this many of its
    /// records were acknowledged.
    pub records: u64,
    /// Corrupt regions (each hid at least one record), plus one for a
    /// damaged segment header.
    pub corrupt: u64,
    /// Bytes in the corrupt regions and the damaged header.
    pub corrupt_bytes: u64,
    /// The last corrupt region runs to the end of the written part: the
    /// last record was cut off (or the region is damage at the end).
    pub torn_tail: bool,
    /// Why the segment header is not valid, if it is not (the records are
    /// scanned anyway).
    pub header: Option<HeaderDamage>,
    /// A writer held the segment: it was read up to its last complete
    /// record ([`ScanMode::InUse`]).
    pub in_use: bool,
    /// Bytes of the segment file in use: its header, the frames and blocks
    /// read and, in a segment not sealed, its open block (see `segment`).
    pub used_bytes: u64,
    /// Bytes of the messages of the records recovered.
    pub input_bytes: u64,
    /// The segment's format version (1: a frame per record, 2: blocks);
    /// 0 where a body was scanned without its segment header.
    pub version: u32,
}

/// Walks the frames of a whole segment body held in memory (the bytes after
/// the segment header), as a sealed segment.
pub fn scan_frames(bytes: &[u8], visit: &mut dyn FnMut(&[Record<'_>])) -> ScanSummary {
    let mut scanner = Scanner::<RecordFrames>::new(ScanMode::Sealed, bytes.len() as u64);
    let mut records = Vec::new();
    scanner.walk(bytes, 0, true, &mut records);
    if !records.is_empty() {
        visit(&records);
    }
    assert!(scanner.done, "a walk over all the bytes finishes");
    scanner.summary.used_bytes = scanner.used_end;
    scanner.summary.input_bytes = scanner.input_bytes;
    scanner.summary
}

/// Walks the frames of a segment body read from `reader`, which holds
/// `total_bytes` (fewer if it ends early: a file truncated under the scan),
/// `chunk_bytes` at a time; `visit` gets the records of each chunk, which
/// borrow a buffer reused for the next one.
pub fn scan_reader(
    reader: &mut dyn Read,
    total_bytes: u64,
    chunk_bytes: usize,
    mode: ScanMode,
    visit: &mut dyn FnMut(&[Record<'_>]),
) -> std::io::Result<ScanSummary> {
    scan_reader_with::<RecordFrames>(reader, total_bytes, chunk_bytes, mode, visit)
}

/// Walks the v2 blocks of a whole segment body held in memory, as a sealed
/// segment, handing the records of each block to `visit`.
pub fn scan_blocks(bytes: &[u8], visit: &mut dyn FnMut(&[Record<'_>])) -> ScanSummary {
    scan_blocks_reader(
        &mut &bytes[..],
        bytes.len() as u64,
        SCAN_CHUNK_BYTES,
        ScanMode::Sealed,
        visit,
    )
    .expect("reading a slice cannot fail")
}

/// [`scan_reader`] for a body of v2 blocks: each accepted block is
/// decompressed and its records handed to `visit`. A block whose checksum
/// holds but whose payload does not decode (a checksum collision, or a
/// writer's bug) is counted as a corrupt region, and its records are not
/// counted as recovered.
pub fn scan_blocks_reader(
    reader: &mut dyn Read,
    total_bytes: u64,
    chunk_bytes: usize,
    mode: ScanMode,
    visit: &mut dyn FnMut(&[Record<'_>]),
) -> std::io::Result<ScanSummary> {
    let mut decoder = BlockDecoder::new();
    let (mut records_lost, mut corrupt, mut corrupt_bytes, mut input_bytes) = (0, 0, 0, 0u64);
    let mut summary =
        scan_reader_with::<BlockFrames>(reader, total_bytes, chunk_bytes, mode, &mut |blocks| {
            decoder.decode_many(
                blocks,
                &mut |records| {
                    input_bytes += records
                        .iter()
                        .map(|record| record.message.len() as u64)
                        .sum::<u64>();
                    visit(records)
                },
                &mut |index, _| {
                    records_lost += u64::from(blocks[index].head.records);
                    corrupt += 1;
                    corrupt_bytes += blocks[index].frame.len() as u64;
                },
            );
        })?;
    summary.records -= records_lost;
    summary.corrupt += corrupt;
    summary.corrupt_bytes += corrupt_bytes;
    summary.input_bytes = input_bytes;
    Ok(summary)
}

/// [`scan_reader`] over any frame format.
pub fn scan_reader_with<F: Framing>(
    reader: &mut dyn Read,
    total_bytes: u64,
    chunk_bytes: usize,
    mode: ScanMode,
    visit: &mut dyn FnMut(&[F::Item<'_>]),
) -> std::io::Result<ScanSummary> {
    assert!(chunk_bytes > 0, "a scan reads at least one byte at a time");
    let mut scanner = Scanner::<F>::new(mode, total_bytes);
    let mut buffer: Vec<u8> = Vec::with_capacity(chunk_bytes);
    // Offset in the body of `buffer[0]`, and of the end of what was read.
    let (mut base, mut read_end) = (0u64, 0u64);
    let mut end_of_data = false;
    loop {
        if !end_of_data {
            let wanted = (buffer.capacity() - buffer.len()).min((total_bytes - read_end) as usize);
            let got = fill(reader, &mut buffer, wanted)?;
            read_end += got as u64;
            end_of_data = got < wanted || read_end == total_bytes;
        }
        let mut records = Vec::new();
        let progress = scanner.walk(&buffer, base, end_of_data, &mut records);
        if !records.is_empty() {
            visit(&records);
        }
        if scanner.done {
            scanner.summary.used_bytes = scanner.used_end;
            scanner.summary.input_bytes = scanner.input_bytes;
            return Ok(scanner.summary);
        }
        drop(records);
        assert!(!end_of_data, "a walk to the end of the data finishes");
        // Keep the bytes from the checkpoint before the scan's position.
        let keep_from = base + progress.consumed as u64;
        let drain_to = keep_from / CHECKPOINT_BLOCK_BYTES as u64 * CHECKPOINT_BLOCK_BYTES as u64;
        buffer.drain(..(drain_to - base) as usize);
        base = drain_to;
        let needed = (keep_from - drain_to) as usize + progress.needed;
        if needed > buffer.capacity() {
            buffer.reserve(needed - buffer.len());
        }
    }
}

/// Reads up to `wanted` bytes onto the end of `buffer`; fewer only at the
/// end of the reader.
fn fill(reader: &mut dyn Read, buffer: &mut Vec<u8>, wanted: usize) -> std::io::Result<usize> {
    let start = buffer.len();
    buffer.resize(start + wanted, 0);
    let mut got = 0;
    while got < wanted {
        match reader.read(&mut buffer[start + got..]) {
            Ok(0) => break,
            Ok(bytes) => got += bytes,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                buffer.truncate(start);
                return Err(error);
            }
        }
    }
    buffer.truncate(start + got);
    Ok(got)
}

/// Where a walk over a window stopped when it needs more bytes.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Bytes at the start of the window that are done with (the scan goes
    /// on from there).
    consumed: usize,
    /// Bytes wanted from `consumed` on before the walk can go on.
    needed: usize,
}

/// What the bytes at one offset hold.
enum Candidate<'a, F: Framing> {
    Frame(F::Item<'a>, usize),
    Invalid,
    /// More bytes are needed from this offset (a frame or prefix this long).
    Needs(usize),
}

/// The state of a scan between windows of the body.
struct Scanner<F: Framing> {
    mode: ScanMode,
    /// Body offset of the end of the last accepted frame.
    used_end: u64,
    /// Message bytes of the v1 records accepted.
    input_bytes: u64,
    format: std::marker::PhantomData<F>,
    total_bytes: u64,
    summary: ScanSummary,
    /// Start of the corrupt region being crossed.
    corrupt_from: Option<u64>,
    /// One past the last nonzero byte of that region seen so far.
    corrupt_nonzero_end: u64,
    /// Bytes of that region before this offset were checked for nonzero.
    corrupt_swept_to: u64,
    /// Body offset the next walk goes on from.
    position: u64,
    checkpoints: Checkpoints,
    done: bool,
}

impl<F: Framing> Scanner<F> {
    fn new(mode: ScanMode, total_bytes: u64) -> Self {
        Self {
            mode,
            used_end: 0,
            input_bytes: 0,
            format: std::marker::PhantomData,
            total_bytes,
            summary: ScanSummary {
                in_use: mode == ScanMode::InUse,
                ..ScanSummary::default()
            },
            corrupt_from: None,
            corrupt_nonzero_end: 0,
            corrupt_swept_to: 0,
            position: 0,
            checkpoints: Checkpoints::default(),
            done: false,
        }
    }

    /// Walks `window` (body bytes from offset `base`; `end_of_data` when no
    /// bytes follow it), pushing the records it accepts. Sets `done` at the
    /// end of the scan, else says how far it got.
    fn walk<'a>(
        &mut self,
        window: &'a [u8],
        base: u64,
        end_of_data: bool,
        records: &mut Vec<F::Item<'a>>,
    ) -> Progress {
        debug_assert!(!self.done, "walk after the scan finished");
        assert!(
            self.position >= base && self.position <= base + window.len() as u64,
            "the window ({base}, {} bytes) holds the position {}",
            window.len(),
            self.position
        );
        let mut at = (self.position - base) as usize;
        loop {
            let step = if self.corrupt_from.is_some() {
                self.resync(window, base, at, end_of_data)
            } else {
                self.frame_at(window, base, at, end_of_data)
            };
            match step {
                Step::Record(record, next) => {
                    self.summary.records += F::records(&record);
                    self.input_bytes += F::input_bytes(&record);
                    self.used_end = base + next as u64;
                    records.push(record);
                    at = next;
                }
                Step::Moved(next) => at = next,
                Step::Wait(progress) => {
                    self.sweep(window, base, progress.consumed);
                    self.position = base + progress.consumed as u64;
                    return progress;
                }
                Step::Finish => {
                    self.finish(window, base);
                    return Progress {
                        consumed: window.len(),
                        needed: 0,
                    };
                }
            }
        }
    }

    /// One step at a frame boundary (no corrupt region open).
    fn frame_at<'a>(
        &mut self,
        window: &'a [u8],
        base: u64,
        at: usize,
        end_of_data: bool,
    ) -> Step<'a, F> {
        let rest = &window[at..];
        if rest.is_empty() {
            return if end_of_data {
                Step::Finish
            } else {
                Step::wait(at, 1)
            };
        }
        let zero_length = rest.len() >= 4 && rest[..4] == [0; 4];
        let candidate = if zero_length {
            Candidate::Invalid
        } else {
            self.candidate(window, base, at, end_of_data)
        };
        match candidate {
            Candidate::Frame(record, frame_bytes) => Step::Record(record, at + frame_bytes),
            Candidate::Needs(bytes) => Step::wait(at, bytes),
            Candidate::Invalid if self.mode == ScanMode::InUse => Step::Finish,
            Candidate::Invalid => {
                // A zero length opens a region too: it is the end of the
                // written part if nothing but zeroes follows, which only
                // the end of the data can tell (see `finish`).
                self.open_region(base + at as u64);
                Step::Moved(at + 1)
            }
        }
    }

    /// One step of resynchronising: finds the next offset whose version
    /// byte is right and tries it.
    fn resync<'a>(
        &mut self,
        window: &'a [u8],
        base: u64,
        at: usize,
        end_of_data: bool,
    ) -> Step<'a, F> {
        let search_from = at + VERSION_OFFSET;
        let found = window
            .get(search_from..)
            .and_then(|rest| memchr::memchr(F::VERSION, rest));
        let Some(found) = found else {
            if end_of_data {
                return Step::Finish;
            }
            // No candidate starts before the last VERSION_OFFSET bytes.
            let consumed = window.len().saturating_sub(VERSION_OFFSET).max(at);
            return Step::wait(consumed, window.len() - consumed + 1);
        };
        let candidate_at = at + found;
        match self.candidate(window, base, candidate_at, end_of_data) {
            Candidate::Frame(record, frame_bytes) => {
                self.close_region(base + candidate_at as u64);
                Step::Record(record, candidate_at + frame_bytes)
            }
            Candidate::Invalid => Step::Moved(candidate_at + 1),
            Candidate::Needs(bytes) => Step::wait(candidate_at, bytes),
        }
    }

    /// Checks whether an accepted frame starts at `window[at]`.
    fn candidate<'a>(
        &mut self,
        window: &'a [u8],
        base: u64,
        at: usize,
        end_of_data: bool,
    ) -> Candidate<'a, F> {
        let rest = &window[at..];
        let limit_bytes = self.total_bytes - (base + at as u64);
        let limit_bytes = usize::try_from(limit_bytes).unwrap_or(usize::MAX);
        let frame_bytes = match F::prefix(rest, limit_bytes) {
            Prefix::Plausible(frame_bytes) => frame_bytes,
            Prefix::Implausible => return Candidate::Invalid,
            Prefix::Short if end_of_data => return Candidate::Invalid,
            Prefix::Short => return Candidate::Needs(F::PREFIX_BYTES),
        };
        if rest.len() < frame_bytes {
            return if end_of_data {
                Candidate::Invalid
            } else {
                Candidate::Needs(frame_bytes)
            };
        }
        let resynchronising = self.corrupt_from.is_some();
        if resynchronising && frame_bytes > CHECKPOINT_FRAME_BYTES {
            let stored = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
            let body = at + FRAME_HEADER_BYTES..at + frame_bytes;
            if self.checkpoints.checksum(window, base, body) != stored {
                return Candidate::Invalid;
            }
        }
        match F::accept(&rest[..frame_bytes]) {
            Some(item) => Candidate::Frame(item, frame_bytes),
            None => Candidate::Invalid,
        }
    }

    fn open_region(&mut self, offset: u64) {
        debug_assert!(self.corrupt_from.is_none(), "one region at a time");
        self.corrupt_from = Some(offset);
        self.corrupt_nonzero_end = offset;
        self.corrupt_swept_to = offset;
    }

    /// Counts the open region, which ends where a frame was accepted.
    fn close_region(&mut self, end: u64) {
        let start = self.corrupt_from.take().expect("a region is open");
        self.summary.corrupt += 1;
        self.summary.corrupt_bytes += end - start;
    }

    /// Notes the last nonzero byte of the open region up to `window[to]`,
    /// before those bytes leave the buffer. Every byte is looked at once.
    fn sweep(&mut self, window: &[u8], base: u64, to: usize) {
        if self.corrupt_from.is_none() {
            return;
        }
        let from = self.corrupt_swept_to.saturating_sub(base) as usize;
        if from >= to {
            return;
        }
        if let Some(last) = last_nonzero(&window[from..to]) {
            self.corrupt_nonzero_end = base + (from + last + 1) as u64;
        }
        self.corrupt_swept_to = base + to as u64;
    }

    /// Ends the scan at the end of the data. An open region is corrupt (a
    /// torn tail) up to its last nonzero byte; a region of zeroes only was
    /// the end of the written part.
    fn finish(&mut self, window: &[u8], base: u64) {
        self.sweep(window, base, window.len());
        if let Some(start) = self.corrupt_from.take()
            && self.corrupt_nonzero_end > start
        {
            self.summary.corrupt += 1;
            self.summary.corrupt_bytes += self.corrupt_nonzero_end - start;
            self.summary.torn_tail = true;
        }
        self.done = true;
    }
}

/// What one step of a walk did.
enum Step<'a, F: Framing> {
    /// An accepted frame, and the index after it.
    Record(F::Item<'a>, usize),
    /// Go on at this index of the window.
    Moved(usize),
    /// Stop this window: more bytes are needed.
    Wait(Progress),
    /// The end of the scan.
    Finish,
}

impl<F: Framing> Step<'_, F> {
    fn wait(consumed: usize, needed: usize) -> Self {
        Step::Wait(Progress { consumed, needed })
    }
}

/// Running CRC32C of the body from an origin to every block boundary after
/// it, for checking long candidate frames in constant time (see the module
/// doc).
#[derive(Debug, Default)]
struct Checkpoints {
    /// Body offset the checksums start from: a multiple of the block.
    origin: u64,
    /// `crcs[k]` is the CRC32C of the body from `origin` to
    /// `origin + k * CHECKPOINT_BLOCK_BYTES`; empty until first needed.
    crcs: Vec<u32>,
}

impl Checkpoints {
    /// The CRC32C of `window[range]`, `window` starting at body offset
    /// `base` (a multiple of the block).
    fn checksum(&mut self, window: &[u8], base: u64, range: std::ops::Range<usize>) -> u32 {
        debug_assert_eq!(
            base % CHECKPOINT_BLOCK_BYTES as u64,
            0,
            "drains keep blocks whole"
        );
        let block = CHECKPOINT_BLOCK_BYTES as u64;
        let frontier = self.origin + (self.crcs.len() as u64).saturating_sub(1) * block;
        if self.crcs.is_empty() || frontier < base {
            // The bytes after the last checkpoint are gone: start again here.
            self.origin = base;
            self.crcs.clear();
            self.crcs.push(0);
        }
        let to_start = self.prefix(window, base, base + range.start as u64);
        let to_end = self.prefix(window, base, base + range.end as u64);
        // crc(A B) = combine(crc(A), crc(B), |B|) = shift(crc(A), |B|) ^ crc(B).
        to_end ^ crc32c::crc32c_combine(to_start, 0, range.len())
    }

    /// The CRC32C of the body from `origin` to `offset`, which lies in the
    /// window.
    fn prefix(&mut self, window: &[u8], base: u64, offset: u64) -> u32 {
        let block_bytes = CHECKPOINT_BLOCK_BYTES as u64;
        let index = |offset: u64| (offset - base) as usize;
        let block = ((offset - self.origin) / block_bytes) as usize;
        while self.crcs.len() <= block {
            let start = self.origin + (self.crcs.len() as u64 - 1) * block_bytes;
            let previous = *self.crcs.last().expect("the origin's checksum");
            let bytes = &window[index(start)..index(start + block_bytes)];
            self.crcs.push(crc32c::crc32c_append(previous, bytes));
        }
        let start = self.origin + block as u64 * block_bytes;
        assert!(
            start >= base,
            "checkpoint {start} is in the window at {base}"
        );
        crc32c::crc32c_append(self.crcs[block], &window[index(start)..index(offset)])
    }
}

/// Index of the last nonzero byte, comparing 16 bytes at a time (zero tails
/// of preallocated segments are megabytes long).
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    let mut end = bytes.len();
    while end >= 16 {
        let block: [u8; 16] = bytes[end - 16..end].try_into().expect("16 bytes");
        if u128::from_ne_bytes(block) != 0 {
            break;
        }
        end -= 16;
    }
    bytes[..end].iter().rposition(|&byte| byte != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::record::{Reason, encode_frame};

    /// A body of `count` frames of varied sizes and a zero tail.
    fn body(count: u32, tail_bytes: usize) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut bytes = Vec::new();
        let mut ranges = Vec::new();
        let mut frame = Vec::new();
        for number in 0..count {
            let message = format!("line {number} {}", "y".repeat((number as usize * 13) % 300));
            encode_frame(
                &mut frame,
                &Record {
                    timestamp_ns: 1,
                    attempts: number,
                    reason: Reason::RetryQueueFull,
                    terminated: true,
                    sink: "kafka",
                    labels: vec![("file", "/a")],
                    message: message.as_bytes(),
                },
            );
            ranges.push(bytes.len()..bytes.len() + frame.len());
            bytes.extend_from_slice(&frame);
        }
        bytes.resize(bytes.len() + tail_bytes, 0);
        (bytes, ranges)
    }

    fn scan_in_chunks(bytes: &[u8], chunk_bytes: usize, mode: ScanMode) -> (Vec<u32>, ScanSummary) {
        let mut seen = Vec::new();
        let summary = scan_reader(
            &mut &bytes[..],
            bytes.len() as u64,
            chunk_bytes,
            mode,
            &mut |records| seen.extend(records.iter().map(|record| record.attempts)),
        )
        .expect("reading a slice cannot fail");
        (seen, summary)
    }

    fn scan_whole(bytes: &[u8]) -> (Vec<u32>, ScanSummary) {
        let mut seen = Vec::new();
        let summary = scan_frames(bytes, &mut |records| {
            seen.extend(records.iter().map(|record| record.attempts))
        });
        (seen, summary)
    }

    #[test]
    fn intact_body_reads_every_record_and_nothing_corrupt() {
        let (bytes, ranges) = body(40, 5000);
        let (seen, summary) = scan_whole(&bytes);
        assert_eq!(seen, (0..40).collect::<Vec<_>>());
        assert_eq!(
            summary,
            ScanSummary {
                records: 40,
                used_bytes: ranges[39].end as u64,
                input_bytes: summary.input_bytes,
                ..ScanSummary::default()
            }
        );
        assert_eq!(ranges.len(), 40);
    }

    /// Goal: chunking never changes what a scan finds. Method: damaged
    /// bodies (a flipped length, a zeroed hole, a cut, garbage after the
    /// end) scanned whole and in chunks of 1 to 4096 bytes.
    #[test]
    fn chunked_scans_agree_with_whole_scans() {
        let (intact, ranges) = body(30, 700);
        let mut cases = Vec::new();
        let mut flipped = intact.clone();
        flipped[ranges[0].start + 2] ^= 0x40;
        cases.push(flipped);
        let mut hole = intact.clone();
        hole[ranges[5].start..ranges[8].start + 3].fill(0);
        cases.push(hole);
        cases.push(intact[..ranges[29].start + 20].to_vec());
        let mut garbage_after = intact.clone();
        let end = ranges[29].end + 100;
        garbage_after[end] = 7;
        cases.push(garbage_after);
        cases.push(intact);
        for (index, case) in cases.iter().enumerate() {
            let whole = scan_whole(case);
            for chunk_bytes in [1, 2, 3, 7, 31, 32, 33, 100, 4096] {
                let chunked = scan_in_chunks(case, chunk_bytes, ScanMode::Sealed);
                assert_eq!(chunked, whole, "case {index}, chunks of {chunk_bytes}");
            }
        }
    }

    #[test]
    fn damage_is_located_and_measured() {
        let (intact, ranges) = body(30, 700);
        // A zeroed hole over records 5 to 7 and the length of record 8.
        let mut hole = intact.clone();
        hole[ranges[5].start..ranges[8].start + 3].fill(0);
        let (seen, summary) = scan_whole(&hole);
        let expected: Vec<u32> = (0..5).chain(9..30).collect();
        assert_eq!(seen, expected);
        assert_eq!(summary.corrupt, 1);
        assert_eq!(
            summary.corrupt_bytes,
            (ranges[9].start - ranges[5].start) as u64
        );
        assert!(!summary.torn_tail);
        // A byte after the end marker: every record, and the byte counted.
        let mut after = intact.clone();
        after[ranges[29].end + 100] = 7;
        let (seen, summary) = scan_whole(&after);
        assert_eq!(seen.len(), 30);
        assert_eq!((summary.corrupt, summary.corrupt_bytes), (1, 101));
        assert!(summary.torn_tail);
    }

    /// Goal: a segment being written is read up to its last complete record
    /// and nothing in it is counted corrupt. Method: a body cut inside a
    /// frame, scanned in use and sealed.
    #[test]
    fn in_use_scan_stops_at_the_writer() {
        let (intact, ranges) = body(10, 0);
        let cut = &intact[..ranges[9].start + 12];
        let (seen, summary) = scan_in_chunks(cut, 64, ScanMode::InUse);
        assert_eq!(seen, (0..9).collect::<Vec<_>>());
        assert_eq!((summary.corrupt, summary.in_use), (0, true));
        let (_, sealed) = scan_in_chunks(cut, 64, ScanMode::Sealed);
        assert_eq!((sealed.corrupt, sealed.torn_tail), (1, true));
    }

    /// Goal: the running checksums give the CRC32C of any range, whatever
    /// the window's base. Method: ranges of a pseudo-random body compared
    /// with a direct CRC32C, from windows starting at several blocks.
    #[test]
    fn checkpoint_checksums_match_direct_ones() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let bytes: Vec<u8> = (0..4000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        for base_blocks in [0usize, 1, 5, 40] {
            let base = base_blocks * CHECKPOINT_BLOCK_BYTES;
            let window = &bytes[base..];
            let mut checkpoints = Checkpoints::default();
            for (start, length) in [(0, 1), (3, 200), (17, 1000), (100, 2500), (0, 3000)] {
                let range = start..(start + length).min(window.len());
                let direct = crc32c::crc32c(&window[range.clone()]);
                let combined = checkpoints.checksum(window, base as u64, range.clone());
                assert_eq!(combined, direct, "base {base}, range {range:?}");
            }
        }
    }

    /// Goal: content crafted to look like long frames at every few bytes of
    /// a damaged record neither hides the records after it nor is trusted.
    /// Method: record 0's message is 4,000 fake prefixes, each claiming a
    /// frame to near the end of the body; record 0's length is flipped; the
    /// scan must return records 1 to 49 and nothing else.
    #[test]
    fn crafted_prefixes_in_a_damaged_record_are_checked_and_skipped() {
        let fake_frame_bytes = 200_000usize;
        let mut message = Vec::new();
        for _ in 0..4000 {
            let length = (fake_frame_bytes - FRAME_HEADER_BYTES) as u32;
            message.extend_from_slice(&length.to_le_bytes());
            message.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
            message.extend_from_slice(&[RECORD_VERSION, 1, 0, 0]);
            message.extend_from_slice(&[0; 12]);
            message.extend_from_slice(&[0, 0, 0, 0]);
            message.extend_from_slice(&(length - 24).to_le_bytes());
        }
        let mut bytes = Vec::new();
        let mut frame = Vec::new();
        for number in 0..50u32 {
            let filler = format!("line {number} {}", "f".repeat(5000));
            encode_frame(
                &mut frame,
                &Record {
                    timestamp_ns: 1,
                    attempts: number,
                    reason: Reason::Permanent,
                    terminated: false,
                    sink: "kafka",
                    labels: vec![],
                    message: if number == 0 {
                        &message
                    } else {
                        filler.as_bytes()
                    },
                },
            );
            bytes.extend_from_slice(&frame);
        }
        bytes.resize(bytes.len() + 64, 0);
        bytes[3] ^= 0x01;
        let started = std::time::Instant::now();
        let (seen, summary) = scan_whole(&bytes);
        assert_eq!(seen, (1..50).collect::<Vec<_>>(), "{summary:?}");
        assert_eq!(summary.corrupt, 1);
        let (chunked, _) = scan_in_chunks(&bytes, 4096, ScanMode::Sealed);
        assert_eq!(chunked, seen);
        println!("crafted record scanned in {:?}", started.elapsed());
    }

    #[test]
    fn last_nonzero_finds_the_last_byte() {
        for length in 0..70 {
            for position in 0..length {
                let mut bytes = vec![0u8; length];
                bytes[position] = 1;
                assert_eq!(last_nonzero(&bytes), Some(position));
            }
            assert_eq!(last_nonzero(&vec![0u8; length]), None);
        }
    }
}
