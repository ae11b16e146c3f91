//! Position files: how far each followed file is known delivered, kept on
//! disk so that a restart resumes where delivery stopped.
//!
//! A durable file source keeps one file, `<data_dir>/positions/<name>`,
//! holding one [`PositionRecord`] per followed file: the file's identity
//! (device, inode and a fingerprint of its first bytes, so that a reused
//! inode is not mistaken for the old file), the path it was found at, the
//! offset of the first byte not known delivered and when it was last seen.
//! `<name>` is the source id escaped by [`escape_source_id`], so that any id
//! makes one safe file name.
//!
//! Thread: a [`PositionStore`] belongs to its source's thread; nothing here
//! is shared or locked. A [`PositionStore::write`] blocks for two `fsync`s
//! (milliseconds, more on a busy disk), so the caller writes at its own pace
//! (say once a second), not once per batch.
//!
//! # Format
//!
//! ```text
//! file    := header | frame*
//! header  := magic "LCPOSITN" (8 bytes) | version u8 (= 1)          9 bytes
//! frame   := length u32 | crc32c u32 (of the payload) | payload[length]
//! payload := device u64 | inode u64 | fingerprint u32             @ 0, 8, 16
//!          | fingerprint_bytes u16 | offset u64 | seen_at_ns u64   @ 20, 22, 30
//!          | path_length u16 | path[path_length]                  @ 38, 40
//! ```
//!
//! All integers are little-endian. `length` is exactly
//! `40 + path_length`, so it lies in `40..=40 + PATH_BYTES_MAX`;
//! `fingerprint_bytes <= FINGERPRINT_BYTES_MAX`. The path is stored as the
//! bytes of its `OsStr`, so a path that is not UTF-8 survives. A file is
//! canonical: the records a clean decode returns encode to the same bytes.
//!
//! # What a decode trusts
//!
//! The decoder trusts nothing: it never panics, and it returns the records
//! it can vouch for plus one description per part it could not use, so that
//! a damaged file never stops the daemon from starting.
//!
//! * Empty file (a crash between create and write on a file system that
//!   does not order them): reported, no records.
//! * Wrong magic (a foreign file) or a header cut short: "not a position
//!   file" or "torn header", no records.
//! * Unknown version (a newer build wrote it): reported, no records.
//! * A frame length outside `40..=4136`: the framing is lost and cannot be
//!   found again (no frame marker), so the rest of the file is reported
//!   once, as one unusable part.
//! * A final frame shorter than its length (torn): reported.
//! * A checksum mismatch under a plausible length: that frame is skipped,
//!   and decoding goes on after it. If the corruption hit the length field,
//!   the next frames read from the wrong place and fail their checksums or
//!   their length bound: more unusable parts, never a wrong record (CRC32C
//!   detects every error of up to 3 bits in frames this short, and any
//!   other with probability 1 - 2^-32).
//! * A frame whose checksum holds but whose fields disagree (`path_length`
//!   not filling the frame, `fingerprint_bytes` above the maximum): skipped
//!   and reported.
//!
//! Limit: a file cut exactly at a frame boundary (or just after the header)
//! is undetectable: it decodes as fewer records and nothing unusable. The
//! header holds no record count, by design of the format; such a cut takes
//! file-system damage, since every write replaces the whole file. The files
//! whose records were lost are then treated as never seen.
//!
//! # Durability
//!
//! [`PositionStore::write`] encodes every record into `<name>.tmp`,
//! `fsync`s it, renames it over `<name>` and `fsync`s the directory. A
//! `kill -9` or a power loss at any point leaves the old file or the new
//! one, whole (given a file system that honours `fsync`), and at worst a
//! stale `<name>.tmp`, which is never read and is overwritten by the next
//! write. A failed write leaves the old file in place.
//!
//! # Limits
//!
//! [`PATH_BYTES_MAX`] (4096, Linux's `PATH_MAX`: every path the kernel
//! opened fits), [`PAYLOAD_BYTES_MAX`], [`FILE_BYTES_MAX`] (what
//! [`PositionStore::open`] reads and [`PositionStore::write`] writes at
//! most) and [`NAME_BYTES_MAX`] (the escaped id plus `.tmp`).
//!
//! # Allocations
//!
//! [`decode`] allocates the records and descriptions it returns: at most a
//! small multiple of its input, because every record or description stands
//! for at least one 48-byte frame of input (but for the one description
//! that ends a decode early) and no length read from the input is used to
//! reserve memory. [`PositionStore::open`] allocates the
//! store's paths and reads the file into the buffer the store keeps;
//! [`PositionStore::write`] encodes into that buffer, which only grows when
//! the records outgrow every earlier write. Fingerprints are computed from a
//! 1 KiB stack buffer.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Device, inode and a fingerprint of a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
    /// CRC32C of the file's first `fingerprint_bytes` bytes.
    pub fingerprint: u32,
    /// Bytes the fingerprint covers: `min(file length, FINGERPRINT_BYTES_MAX)`
    /// when it was taken; 0 for a file that was empty.
    pub fingerprint_bytes: u16,
}

impl FileIdentity {
    /// The identity of an open file: its device and inode from `fstat`, and
    /// a fingerprint of its first bytes.
    pub fn of(file: &File) -> std::io::Result<FileIdentity> {
        let metadata = file.metadata()?;
        let (fingerprint, fingerprint_bytes) = fingerprint(file)?;
        Ok(FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
            fingerprint,
            fingerprint_bytes,
        })
    }
}

/// Bytes the fingerprint covers once a file has them. Enough to tell apart
/// two log files that start with timestamped lines, small enough for a
/// stack buffer and one `pread`.
pub const FINGERPRINT_BYTES_MAX: u16 = 1024;

/// Longest path a record stores, in bytes: Linux's `PATH_MAX` (which counts
/// the terminating NUL), so every path the kernel could open fits.
pub const PATH_BYTES_MAX: usize = 4096;

/// Bytes of the fixed part of a payload (every field before the path).
pub const PAYLOAD_FIXED_BYTES: usize = 40;

/// Largest payload: the fixed fields and the longest path.
pub const PAYLOAD_BYTES_MAX: usize = PAYLOAD_FIXED_BYTES + PATH_BYTES_MAX;

/// Bytes of a frame's length and checksum.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The first bytes of every position file.
pub const MAGIC: &[u8; 8] = b"LCPOSITN";

/// The only format version this build writes and reads.
pub const VERSION: u8 = 1;

/// Bytes of the file header: magic and version.
pub const HEADER_BYTES: usize = MAGIC.len() + 1;

/// Largest position file read or written. 64 MiB holds 16,000 records of
/// maximal paths, or about 500,000 records of 80-byte paths: far more files
/// than one source follows; a file beyond it is not ours or is damaged, and
/// is not read into memory whole. Smaller under test, so that tests can
/// cross it.
#[cfg(not(test))]
pub const FILE_BYTES_MAX: usize = 64 * 1024 * 1024;
#[cfg(test)]
pub const FILE_BYTES_MAX: usize = 64 * 1024;

/// Longest file name (Linux's `NAME_MAX`): the escaped source id plus
/// [`TEMPORARY_SUFFIX`] must fit. Config ids (at most 64 bytes of
/// `[A-Za-z0-9_-]`) are never escaped, so they always fit.
pub const NAME_BYTES_MAX: usize = 255;

/// Appended to a position file's name while it is being written.
pub const TEMPORARY_SUFFIX: &str = ".tmp";

/// The directory under `data_dir` that holds position files.
pub const DIRECTORY_NAME: &str = "positions";

/// The name of the empty source id: `%` is never followed by anything but
/// two hex digits in another escaped id, so no other id escapes to it.
const EMPTY_ID_NAME: &str = "%";

const _: () = assert!(PATH_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(HEADER_BYTES + FRAME_HEADER_BYTES + PAYLOAD_BYTES_MAX <= FILE_BYTES_MAX);
const _: () = assert!(
    PAYLOAD_FIXED_BYTES == 8 + 8 + 4 + 2 + 8 + 8 + 2,
    "the fixed fields of the drawn layout"
);

/// CRC32C of the first `min(len, FINGERPRINT_BYTES_MAX)` bytes of `file`,
/// and how many bytes that is. Reads with `pread`, so the file's cursor
/// does not move. A file shorter than [`FINGERPRINT_BYTES_MAX`] gets a
/// fingerprint of what it has (an empty file: `(0, 0)`).
pub fn fingerprint(file: &File) -> std::io::Result<(u32, u16)> {
    let mut head = [0u8; FINGERPRINT_BYTES_MAX as usize];
    let filled = read_head(file, &mut head)?;
    let covered = u16::try_from(filled).expect("at most FINGERPRINT_BYTES_MAX bytes were read");
    Ok((crc32c::crc32c(&head[..filled]), covered))
}

/// Whether `file` still starts with the bytes `identity` fingerprinted: the
/// CRC32C of exactly `identity.fingerprint_bytes` bytes, false if the file
/// is now shorter. A fingerprint of 0 bytes always matches. The caller has
/// already compared device and inode; this tells a file that kept its inode
/// from a new file that reused it (or one truncated and rewritten).
///
/// An identity covering more than [`FINGERPRINT_BYTES_MAX`] bytes is never
/// made by this build, and never matches.
pub fn fingerprint_matches(file: &File, identity: &FileIdentity) -> std::io::Result<bool> {
    if identity.fingerprint_bytes == 0 {
        return Ok(true);
    }
    if identity.fingerprint_bytes > FINGERPRINT_BYTES_MAX {
        return Ok(false);
    }
    let wanted = usize::from(identity.fingerprint_bytes);
    let mut head = [0u8; FINGERPRINT_BYTES_MAX as usize];
    let filled = read_head(file, &mut head[..wanted])?;
    Ok(filled == wanted && crc32c::crc32c(&head[..wanted]) == identity.fingerprint)
}

/// Fills `buffer` from the start of `file` with `pread`, stopping early at
/// end of file; returns the bytes read. Every pass of the loop either reads
/// something, stops, or retries an interrupted call.
fn read_head(file: &File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], filled as u64) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Where one followed file's delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRecord {
    pub identity: FileIdentity,
    /// The path the file was found at (kept as bytes on disk: OsStr bytes).
    /// At most [`PATH_BYTES_MAX`] bytes.
    pub path: PathBuf,
    /// Offset of the first byte not known to be delivered.
    pub offset: u64,
    /// When the file was last seen present, ns since the Unix epoch (drives
    /// `positions_forget_after_ms`).
    pub seen_at_ns: u64,
}

/// Why a record cannot be stored (or, read back, used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The path is longer than [`PATH_BYTES_MAX`]: no path the kernel can
    /// open is, so the caller built it by hand.
    #[error("path of {path_bytes} bytes is longer than {}", PATH_BYTES_MAX)]
    PathTooLong { path_bytes: usize },
    /// The fingerprint claims to cover more than [`FINGERPRINT_BYTES_MAX`].
    #[error(
        "fingerprint covers {fingerprint_bytes} bytes, more than {}",
        FINGERPRINT_BYTES_MAX
    )]
    FingerprintTooLong { fingerprint_bytes: u16 },
}

impl PositionRecord {
    /// Whether [`encode`] can store this record.
    pub fn check(&self) -> Result<(), RecordError> {
        let path_bytes = self.path.as_os_str().len();
        if path_bytes > PATH_BYTES_MAX {
            return Err(RecordError::PathTooLong { path_bytes });
        }
        check_fingerprint_bytes(self.identity.fingerprint_bytes)
    }
}

fn check_fingerprint_bytes(fingerprint_bytes: u16) -> Result<(), RecordError> {
    if fingerprint_bytes > FINGERPRINT_BYTES_MAX {
        return Err(RecordError::FingerprintTooLong { fingerprint_bytes });
    }
    Ok(())
}

/// What a decode could use and what it could not.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The records whose frames were whole, matched their checksums and
    /// held consistent fields, in file order.
    pub records: Vec<PositionRecord>,
    /// One description per unusable part, e.g. "record 3 at byte 412:
    /// checksum mismatch", "header: unknown version 7", "torn record at
    /// byte 900 (truncated: ...)". Records are counted from 0, bytes from
    /// the start of the file.
    pub unusable: Vec<String>,
}

/// Appends a whole position file holding `records` to `out`.
///
/// Panics if a record fails [`PositionRecord::check`]: writing it would make
/// a file whose record the decoder rejects. [`PositionStore::write`] checks
/// first and returns an error instead.
pub fn encode(records: &[PositionRecord], out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    for record in records {
        encode_record(record, out);
    }
}

fn encode_record(record: &PositionRecord, out: &mut Vec<u8>) {
    if let Err(error) = record.check() {
        panic!(
            "record of {} cannot be encoded: {error}",
            record.path.display()
        );
    }
    let path = record.path.as_os_str().as_bytes();
    let frame_start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    let identity = &record.identity;
    out.extend_from_slice(&identity.device.to_le_bytes());
    out.extend_from_slice(&identity.inode.to_le_bytes());
    out.extend_from_slice(&identity.fingerprint.to_le_bytes());
    out.extend_from_slice(&identity.fingerprint_bytes.to_le_bytes());
    out.extend_from_slice(&record.offset.to_le_bytes());
    out.extend_from_slice(&record.seen_at_ns.to_le_bytes());
    let path_length = u16::try_from(path.len()).expect("checked: at most PATH_BYTES_MAX");
    out.extend_from_slice(&path_length.to_le_bytes());
    out.extend_from_slice(path);
    let payload = &out[frame_start + FRAME_HEADER_BYTES..];
    assert_eq!(
        payload.len(),
        PAYLOAD_FIXED_BYTES + path.len(),
        "the payload follows the drawn layout"
    );
    let length = u32::try_from(payload.len()).expect("at most PAYLOAD_BYTES_MAX");
    let checksum = crc32c::crc32c(payload);
    out[frame_start..frame_start + 4].copy_from_slice(&length.to_le_bytes());
    out[frame_start + 4..frame_start + 8].copy_from_slice(&checksum.to_le_bytes());
}

/// Decodes a position file: the records it can trust, and a description of
/// each part it cannot use (see the module doc for what is trusted).
///
/// Never panics, never allocates more than a small multiple of
/// `bytes.len()` (lengths read from input are bounded by what remains).
pub fn decode(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    match check_header(bytes) {
        Ok(()) => decode_frames(bytes, &mut decoded),
        Err(problem) => decoded.unusable.push(problem),
    }
    decoded
}

fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.is_empty() {
        return Err("empty file".to_string());
    }
    let magic_bytes = bytes.len().min(MAGIC.len());
    if bytes[..magic_bytes] != MAGIC[..magic_bytes] {
        return Err("header: not a position file (wrong magic)".to_string());
    }
    if bytes.len() < HEADER_BYTES {
        return Err(format!(
            "torn header: {} of {HEADER_BYTES} bytes",
            bytes.len()
        ));
    }
    let version = bytes[MAGIC.len()];
    if version != VERSION {
        return Err(format!("header: unknown version {version}"));
    }
    Ok(())
}

/// One step of the frame walk.
enum Frame<'a> {
    /// A whole frame whose checksum holds.
    Intact(&'a [u8]),
    /// A whole frame of a plausible length whose checksum does not hold.
    ChecksumMismatch { payload_bytes: usize },
    /// Fewer bytes remain than a frame header, or than the frame's length.
    Torn { needed: usize },
    /// A length no frame can have: where the next frame starts is unknown.
    LengthOutOfRange { length: u32 },
}

impl Frame<'_> {
    /// The frame at the start of `rest` (which is not empty).
    fn read(rest: &[u8]) -> Frame<'_> {
        let Some((header, after)) = rest.split_first_chunk::<FRAME_HEADER_BYTES>() else {
            return Frame::Torn {
                needed: FRAME_HEADER_BYTES,
            };
        };
        let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
        let length = u32::from_le_bytes([l0, l1, l2, l3]);
        let checksum = u32::from_le_bytes([c0, c1, c2, c3]);
        let payload_bytes = length as usize;
        if !(PAYLOAD_FIXED_BYTES..=PAYLOAD_BYTES_MAX).contains(&payload_bytes) {
            return Frame::LengthOutOfRange { length };
        }
        let Some(payload) = after.get(..payload_bytes) else {
            return Frame::Torn {
                needed: FRAME_HEADER_BYTES + payload_bytes,
            };
        };
        if crc32c::crc32c(payload) != checksum {
            return Frame::ChecksumMismatch { payload_bytes };
        }
        Frame::Intact(payload)
    }
}

/// Walks the frames after the header. Every pass consumes a whole frame of
/// at least `FRAME_HEADER_BYTES + PAYLOAD_FIXED_BYTES` bytes or ends the
/// walk, so the loop runs at most `bytes.len() / 48` times.
fn decode_frames(bytes: &[u8], decoded: &mut Decoded) {
    let mut at = HEADER_BYTES;
    let mut index = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let payload_bytes = match Frame::read(rest) {
            Frame::Intact(payload) => {
                match decode_payload(payload) {
                    Ok(record) => decoded.records.push(record),
                    Err(reason) => decoded
                        .unusable
                        .push(format!("record {index} at byte {at}: {reason}")),
                }
                payload.len()
            }
            Frame::ChecksumMismatch { payload_bytes } => {
                decoded
                    .unusable
                    .push(format!("record {index} at byte {at}: checksum mismatch"));
                payload_bytes
            }
            Frame::Torn { needed } => {
                decoded.unusable.push(format!(
                    "torn record at byte {at} (truncated: needs {needed} bytes, {} remain)",
                    rest.len()
                ));
                return;
            }
            Frame::LengthOutOfRange { length } => {
                decoded.unusable.push(format!(
                    "record {index} at byte {at}: length {length} out of range \
                     {PAYLOAD_FIXED_BYTES}..={PAYLOAD_BYTES_MAX}: the {} bytes from byte {at} on are unusable",
                    rest.len()
                ));
                return;
            }
        };
        at += FRAME_HEADER_BYTES + payload_bytes;
        index += 1;
    }
}

/// Reads the fields of a payload front to back.
struct FieldReader<'a> {
    rest: &'a [u8],
}

impl FieldReader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (field, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| format!("payload ends inside a {N}-byte field"))?;
        self.rest = rest;
        Ok(*field)
    }

    fn u16(&mut self) -> Result<u16, String> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }
}

/// The record of an intact payload, or why its fields disagree.
fn decode_payload(payload: &[u8]) -> Result<PositionRecord, String> {
    let mut reader = FieldReader { rest: payload };
    let device = reader.u64()?;
    let inode = reader.u64()?;
    let fingerprint = reader.u32()?;
    let fingerprint_bytes = reader.u16()?;
    let offset = reader.u64()?;
    let seen_at_ns = reader.u64()?;
    let path_length = usize::from(reader.u16()?);
    let path = reader.rest;
    if path_length != path.len() {
        return Err(format!(
            "path length {path_length} does not fill the {}-byte payload",
            payload.len()
        ));
    }
    check_fingerprint_bytes(fingerprint_bytes).map_err(|error| error.to_string())?;
    Ok(PositionRecord {
        identity: FileIdentity {
            device,
            inode,
            fingerprint,
            fingerprint_bytes,
        },
        path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
        offset,
        seen_at_ns,
    })
}

/// The file name of a source's position file: bytes of `[A-Za-z0-9_.-]`
/// are kept, every other byte becomes `%XX` (upper-case hex). So the name
/// never holds `/` or NUL, and two ids never share a name (`%` is always
/// escaped, so the name decodes back to the id). Besides:
///
/// * the ids `.` and `..` are escaped whole (`%2E`, `%2E%2E`), as they name
///   directories;
/// * an id ending in `.tmp` has that dot escaped (`x.tmp` -> `x%2Etmp`), so
///   that no position file is named like another's temporary file;
/// * the empty id is `%`, which no other id escapes to.
pub fn escape_source_id(source_id: &str) -> String {
    if source_id.is_empty() {
        return EMPTY_ID_NAME.to_string();
    }
    let bytes = source_id.as_bytes();
    let escape_all = source_id == "." || source_id == "..";
    let suffix_dot_index = source_id
        .ends_with(TEMPORARY_SUFFIX)
        .then(|| bytes.len() - TEMPORARY_SUFFIX.len());
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut name = String::with_capacity(bytes.len());
    for (index, &byte) in bytes.iter().enumerate() {
        let kept = byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-');
        if kept && !escape_all && Some(index) != suffix_dot_index {
            name.push(char::from(byte));
        } else {
            name.push('%');
            name.push(char::from(HEX[usize::from(byte >> 4)]));
            name.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
    name
}

/// Why a position file or its directory could not be used. Every variant
/// names the path it concerns; an I/O cause is kept as the source, for
/// [`crate::error_chain::ErrorChain`] to print.
#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    /// `<data_dir>/positions/` could not be created, opened or made durable.
    #[error("position directory {}: {action} failed", path.display())]
    Directory {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The source id escapes to a name too long for a file name (only an id
    /// the config would refuse can).
    #[error(
        "position directory {}: source id {source_id:?} escapes to a {name_bytes}-byte file name, \
         too long for a file name with its {:?} suffix (at most {} bytes)",
        path.display(),
        TEMPORARY_SUFFIX,
        NAME_BYTES_MAX
    )]
    SourceIdTooLong {
        path: PathBuf,
        source_id: String,
        name_bytes: usize,
    },
    /// The position file exists but could not be read.
    #[error("cannot read position file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A step of a write failed. Before the rename, the old file is intact;
    /// when only the directory sync failed ("sync directory"), the new file
    /// is in place but may not survive a power loss.
    #[error("cannot write position file {}: {action} failed", path.display())]
    Write {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A record cannot be stored; nothing was written.
    #[error(
        "cannot write position file {}: the record of {} cannot be stored",
        path.display(),
        record_path.display()
    )]
    Record {
        path: PathBuf,
        record_path: PathBuf,
        #[source]
        source: RecordError,
    },
    /// The records encode to more than [`FILE_BYTES_MAX`]; nothing was
    /// written.
    #[error(
        "cannot write position file {}: {file_bytes} bytes of records, more than {}",
        path.display(),
        FILE_BYTES_MAX
    )]
    TooLarge { path: PathBuf, file_bytes: usize },
}

impl PositionsError {
    /// The file or directory the error concerns.
    pub fn path(&self) -> &Path {
        match self {
            PositionsError::Directory { path, .. }
            | PositionsError::SourceIdTooLong { path, .. }
            | PositionsError::Read { path, .. }
            | PositionsError::Write { path, .. }
            | PositionsError::Record { path, .. }
            | PositionsError::TooLarge { path, .. } => path,
        }
    }
}

/// One source's position file.
#[derive(Debug)]
pub struct PositionStore {
    /// `<data_dir>/positions/<escaped source id>`.
    path: PathBuf,
    /// `path` with [`TEMPORARY_SUFFIX`] appended: where a write goes before
    /// its rename.
    temporary_path: PathBuf,
    /// `<data_dir>/positions/`, kept open to `fsync` after each rename.
    directory: File,
    /// Encoded records of the last write (or the bytes read by `open`);
    /// only its capacity matters between calls.
    buffer: Vec<u8>,
}

impl PositionStore {
    /// Creates `<data_dir>/positions/` if missing (mode 0755, and `data_dir`
    /// with it), and reads `<data_dir>/positions/<escaped id>`. A missing
    /// file is an empty [`Decoded`] (nothing unusable). A read error other
    /// than NotFound is returned as Err (the caller logs it and starts with
    /// no positions). A file longer than [`FILE_BYTES_MAX`] is decoded up to
    /// that length and the rest reported unusable.
    pub fn open(data_dir: &Path, source_id: &str) -> Result<(Self, Decoded), PositionsError> {
        let directory_path = data_dir.join(DIRECTORY_NAME);
        let name = escape_source_id(source_id);
        if name.len() + TEMPORARY_SUFFIX.len() > NAME_BYTES_MAX {
            return Err(PositionsError::SourceIdTooLong {
                path: directory_path,
                source_id: source_id.to_string(),
                name_bytes: name.len(),
            });
        }
        let directory = open_directory(data_dir, &directory_path)?;
        let path = directory_path.join(&name);
        let temporary_path = directory_path.join(name + TEMPORARY_SUFFIX);
        let mut buffer = Vec::new();
        let decoded = read_file(&path, &mut buffer)?;
        let store = PositionStore {
            path,
            temporary_path,
            directory,
            buffer,
        };
        Ok((store, decoded))
    }

    /// The position file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes all records atomically: encode into a reused buffer, write
    /// `<file>.tmp`, fsync it, rename over the file, fsync the directory.
    /// Returns Err naming the file on failure (the old file stays intact,
    /// and the temporary file is removed). Reuses its buffer: no allocation
    /// per call once warm except what std's file APIs do.
    pub fn write(&mut self, records: &[PositionRecord]) -> Result<(), PositionsError> {
        for record in records {
            record.check().map_err(|source| PositionsError::Record {
                path: self.path.clone(),
                record_path: record.path.clone(),
                source,
            })?;
        }
        self.buffer.clear();
        encode(records, &mut self.buffer);
        if self.buffer.len() > FILE_BYTES_MAX {
            return Err(PositionsError::TooLarge {
                path: self.path.clone(),
                file_bytes: self.buffer.len(),
            });
        }
        let replaced = self
            .write_temporary()
            .and_then(|()| rename(&self.temporary_path, &self.path));
        if let Err((action, source)) = replaced {
            // Best effort: a partial temporary file only wastes space (the
            // next write truncates it), and the error to report is the first.
            let _ = std::fs::remove_file(&self.temporary_path);
            return Err(self.write_error(action, source));
        }
        self.directory
            .sync_all()
            .map_err(|source| self.write_error("sync directory", source))
    }

    /// Writes the buffer to the temporary file and makes it durable.
    /// `sync_data` suffices: it also writes the file size back, and no
    /// other metadata is needed to read the file.
    /// Writes the buffer to a new temporary file. Whatever is at its path
    /// (a leftover, or a symbolic link planted there) is removed first, and
    /// the file is created exclusively without following a link, so that
    /// the write can never land in another file.
    fn write_temporary(&self) -> Result<(), (&'static str, std::io::Error)> {
        match std::fs::remove_file(&self.temporary_path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(("remove leftover temporary file", error)),
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o644)
            .open(&self.temporary_path)
            .map_err(|error| ("create temporary file", error))?;
        file.write_all(&self.buffer)
            .map_err(|error| ("write temporary file", error))?;
        file.sync_data()
            .map_err(|error| ("sync temporary file", error))
    }

    fn write_error(&self, action: &'static str, source: std::io::Error) -> PositionsError {
        PositionsError::Write {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), (&'static str, std::io::Error)> {
    std::fs::rename(from, to).map_err(|error| ("rename", error))
}

/// Creates the positions directory if needed and opens it. A directory
/// this call created is made durable in its parent, or a power loss could
/// take it, and every position file written into it, away.
fn open_directory(data_dir: &Path, directory_path: &Path) -> Result<File, PositionsError> {
    let error = |action| {
        move |source| PositionsError::Directory {
            path: directory_path.to_path_buf(),
            action,
            source,
        }
    };
    let existed = directory_path.is_dir();
    if !existed {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(directory_path)
            .map_err(error("create"))?;
    }
    let directory = File::open(directory_path).map_err(error("open"))?;
    if !existed {
        File::open(data_dir)
            .and_then(|parent| parent.sync_all())
            .map_err(error("sync parent directory"))?;
    }
    Ok(directory)
}

/// Reads and decodes the position file at `path` into `buffer`; a missing
/// file decodes as nothing. At most [`FILE_BYTES_MAX`] bytes are decoded.
fn read_file(path: &Path, buffer: &mut Vec<u8>) -> Result<Decoded, PositionsError> {
    let error = |source| PositionsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Decoded::default());
        }
        Err(source) => return Err(error(source)),
    };
    // One byte past the bound tells a file of exactly FILE_BYTES_MAX from a
    // longer one.
    file.take(FILE_BYTES_MAX as u64 + 1)
        .read_to_end(buffer)
        .map_err(error)?;
    let decoded_bytes = buffer.len().min(FILE_BYTES_MAX);
    let mut decoded = decode(&buffer[..decoded_bytes]);
    if buffer.len() > FILE_BYTES_MAX {
        decoded.unusable.push(format!(
            "file is longer than {FILE_BYTES_MAX} bytes: the bytes after byte {FILE_BYTES_MAX} were not read"
        ));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn record(path: &[u8], seed: u64) -> PositionRecord {
        PositionRecord {
            identity: FileIdentity {
                device: 0x0803 + seed,
                inode: 1_234_567 * (seed + 1),
                fingerprint: 0xDEAD_BEEF ^ seed as u32,
                fingerprint_bytes: (100 * seed as u16).min(FINGERPRINT_BYTES_MAX),
            },
            path: PathBuf::from(OsStr::from_bytes(path)),
            offset: 1 << (10 + seed),
            seen_at_ns: 1_795_737_599_123_456_789 + seed,
        }
    }

    /// Three records of different path lengths, one of them not UTF-8.
    fn three() -> Vec<PositionRecord> {
        vec![
            record(b"/var/log/app.log", 0),
            record(b"/var/log/\xff\xfe-not-utf8.log", 1),
            record(b"/srv/a/much/longer/path/to/some/service.log.1", 2),
        ]
    }

    fn encoded(records: &[PositionRecord]) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode(records, &mut bytes);
        bytes
    }

    /// A file with the header and one frame around `payload`, with its
    /// correct checksum: for payloads whose fields disagree.
    fn file_with_payload(payload: &[u8]) -> Vec<u8> {
        let mut bytes = encoded(&[]);
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Whether `part` is `whole` with some elements left out, in order.
    fn is_subsequence(part: &[PositionRecord], whole: &[PositionRecord]) -> bool {
        let mut remaining = whole.iter();
        part.iter()
            .all(|wanted| remaining.any(|candidate| candidate == wanted))
    }

    /// Goal: every field survives a round trip, whatever the path's bytes.
    /// Method: records with a non-UTF-8 path, an empty path, a path of
    /// PATH_BYTES_MAX bytes and extreme numbers; the encoding's length is
    /// the drawn layout's.
    #[test]
    fn round_trip_keeps_every_field() {
        let mut records = three();
        records.push(record(b"", 3));
        records.push(record(&[b'x'; PATH_BYTES_MAX], 4));
        records.push(PositionRecord {
            identity: FileIdentity {
                device: u64::MAX,
                inode: u64::MAX,
                fingerprint: u32::MAX,
                fingerprint_bytes: FINGERPRINT_BYTES_MAX,
            },
            path: PathBuf::from("/"),
            offset: u64::MAX,
            seen_at_ns: u64::MAX,
        });
        let bytes = encoded(&records);
        let path_bytes: usize = records.iter().map(|r| r.path.as_os_str().len()).sum();
        assert_eq!(
            bytes.len(),
            HEADER_BYTES + records.len() * (FRAME_HEADER_BYTES + PAYLOAD_FIXED_BYTES) + path_bytes
        );
        let decoded = decode(&bytes);
        assert_eq!(decoded.unusable, Vec::<String>::new());
        assert_eq!(decoded.records, records);
        assert_eq!(decode(&encoded(&[])), Decoded::default());
    }

    /// Goal: the layout is the one the module doc draws. Method: decode the
    /// fields of an encoded record at their documented offsets.
    #[test]
    fn encoding_follows_the_drawn_layout() {
        let sample = record(b"/a", 1);
        let bytes = encoded(std::slice::from_ref(&sample));
        assert_eq!(&bytes[..8], b"LCPOSITN");
        assert_eq!(bytes[8], 1);
        let frame = &bytes[HEADER_BYTES..];
        let payload = &frame[8..];
        assert_eq!(u32::from_le_bytes(frame[..4].try_into().unwrap()), 42);
        assert_eq!(
            u32::from_le_bytes(frame[4..8].try_into().unwrap()),
            crc32c::crc32c(payload)
        );
        let u64_at = |at: usize| u64::from_le_bytes(payload[at..at + 8].try_into().unwrap());
        assert_eq!(u64_at(0), sample.identity.device);
        assert_eq!(u64_at(8), sample.identity.inode);
        assert_eq!(
            u32::from_le_bytes(payload[16..20].try_into().unwrap()),
            sample.identity.fingerprint
        );
        assert_eq!(
            u16::from_le_bytes(payload[20..22].try_into().unwrap()),
            sample.identity.fingerprint_bytes
        );
        assert_eq!(u64_at(22), sample.offset);
        assert_eq!(u64_at(30), sample.seen_at_ns);
        assert_eq!(u16::from_le_bytes(payload[38..40].try_into().unwrap()), 2);
        assert_eq!(&payload[40..], b"/a");
    }

    /// Goal: no single-bit corruption anywhere yields a wrong record.
    /// Method: flip every bit of every byte of a 3-record file; the result
    /// must be all 3 records and nothing unusable, or an in-order subset of
    /// them with at least one unusable part.
    #[test]
    fn every_flipped_bit_gives_the_records_or_reports_damage() {
        let records = three();
        let bytes = encoded(&records);
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[index] ^= 1 << bit;
                let decoded = decode(&corrupt);
                if decoded.unusable.is_empty() {
                    assert_eq!(decoded.records, records, "flip at {index} bit {bit}");
                } else {
                    assert!(
                        decoded.records.len() < records.len(),
                        "flip at {index} bit {bit}: {decoded:?}"
                    );
                    assert!(
                        is_subsequence(&decoded.records, &records),
                        "flip at {index} bit {bit} made a wrong record: {decoded:?}"
                    );
                }
            }
        }
    }

    /// Goal: a file cut anywhere yields a prefix of its records, and the cut
    /// is reported unless it falls exactly on a frame boundary (where it is
    /// undetectable, as the module doc says). Method: decode every prefix of
    /// a 3-record file.
    #[test]
    fn truncation_gives_a_prefix_and_reports_it() {
        let records = three();
        let bytes = encoded(&records);
        let boundaries: Vec<usize> = (0..=records.len())
            .map(|count| encoded(&records[..count]).len())
            .collect();
        for cut in 0..=bytes.len() {
            let decoded = decode(&bytes[..cut]);
            let count = decoded.records.len();
            assert_eq!(decoded.records, records[..count], "cut at {cut}");
            if let Some(at_boundary) = boundaries.iter().position(|&end| end == cut) {
                assert_eq!(count, at_boundary, "cut at {cut}");
                assert!(decoded.unusable.is_empty(), "cut at {cut}: {decoded:?}");
            } else {
                assert_eq!(decoded.unusable.len(), 1, "cut at {cut}: {decoded:?}");
                let frames_before = boundaries.iter().filter(|&&end| end <= cut).count();
                assert_eq!(count, frames_before.saturating_sub(1), "cut at {cut}");
            }
        }
        let torn = decode(&bytes[..bytes.len() - 1]);
        assert!(
            torn.unusable[0].starts_with(&format!("torn record at byte {}", boundaries[2])),
            "{torn:?}"
        );
    }

    /// Goal: each kind of unusable header is told apart. Method: an empty
    /// file, JSON text, a header cut short, a version from the future.
    #[test]
    fn unusable_headers_are_reported() {
        let cases: [(&[u8], &str); 4] = [
            (b"", "empty file"),
            (
                br#"{"positions": [{"path": "/var/log/app.log", "offset": 12}]}"#,
                "header: not a position file (wrong magic)",
            ),
            (b"LCPOS", "torn header: 5 of 9 bytes"),
            (b"LCPOSITN\x07rest", "header: unknown version 7"),
        ];
        for (bytes, expected) in cases {
            let decoded = decode(bytes);
            assert!(decoded.records.is_empty(), "{expected}");
            assert_eq!(decoded.unusable, [expected]);
        }
    }

    /// Goal: a checksum mismatch costs only its own record. Method: corrupt
    /// one payload byte of the middle record.
    #[test]
    fn checksum_mismatch_skips_one_record() {
        let records = three();
        let mut bytes = encoded(&records);
        let second_frame_at = encoded(&records[..1]).len();
        bytes[second_frame_at + FRAME_HEADER_BYTES + 3] ^= 0x40;
        let decoded = decode(&bytes);
        assert_eq!(decoded.records, [records[0].clone(), records[2].clone()]);
        assert_eq!(
            decoded.unusable,
            [format!(
                "record 1 at byte {second_frame_at}: checksum mismatch"
            )]
        );
    }

    /// Goal: a length no frame can have ends the walk with one report of
    /// the rest. Method: a good record followed by frame lengths 39, 0 and
    /// one past PAYLOAD_BYTES_MAX, each followed by enough bytes for it.
    #[test]
    fn length_out_of_range_reports_the_rest_once() {
        let records = three();
        for length in [39u32, 0, PAYLOAD_BYTES_MAX as u32 + 1, u32::MAX] {
            let mut bytes = encoded(&records[..1]);
            let frame_at = bytes.len();
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(&[0; 4]);
            bytes.extend_from_slice(&encoded(&records)[HEADER_BYTES..]);
            let decoded = decode(&bytes);
            assert_eq!(decoded.records, records[..1]);
            let rest = bytes.len() - frame_at;
            assert_eq!(
                decoded.unusable,
                [format!(
                    "record 1 at byte {frame_at}: length {length} out of range 40..=4136: \
                     the {rest} bytes from byte {frame_at} on are unusable"
                )]
            );
        }
    }

    /// Goal: an intact frame whose fields disagree is skipped, and the next
    /// frame is still read. Method: frames with correct checksums but a path
    /// length that does not fill the payload, or a fingerprint over more
    /// than FINGERPRINT_BYTES_MAX bytes (and exactly that many, accepted).
    #[test]
    fn inconsistent_fields_are_unusable() {
        let good = record(b"/next", 1);
        let good_frame = &encoded(std::slice::from_ref(&good))[HEADER_BYTES..];
        let payload_of = |fingerprint_bytes: u16, path_length: u16| {
            let mut bytes = encoded(&[record(b"/var/log/x", 0)]);
            let payload = &mut bytes[HEADER_BYTES + FRAME_HEADER_BYTES..];
            payload[20..22].copy_from_slice(&fingerprint_bytes.to_le_bytes());
            payload[38..40].copy_from_slice(&path_length.to_le_bytes());
            payload.to_vec()
        };
        let cases = [
            (
                payload_of(0, 9),
                Some("path length 9 does not fill the 50-byte payload"),
            ),
            (
                payload_of(0, 11),
                Some("path length 11 does not fill the 50-byte payload"),
            ),
            (
                payload_of(1025, 10),
                Some("fingerprint covers 1025 bytes, more than 1024"),
            ),
            (payload_of(1024, 10), None),
        ];
        for (payload, problem) in cases {
            let mut bytes = file_with_payload(&payload);
            bytes.extend_from_slice(good_frame);
            let decoded = decode(&bytes);
            match problem {
                Some(problem) => {
                    assert_eq!(decoded.records, std::slice::from_ref(&good));
                    assert_eq!(decoded.unusable, [format!("record 0 at byte 9: {problem}")]);
                }
                None => {
                    assert_eq!(decoded.records.len(), 2);
                    assert!(decoded.unusable.is_empty());
                }
            }
        }
    }

    /// Goal: encode refuses records the decoder would reject, and `check`
    /// names why. Method: a path one byte too long, a fingerprint too long.
    #[test]
    fn check_refuses_what_decode_would_reject() {
        let mut long_path = record(&[b'x'; PATH_BYTES_MAX + 1], 0);
        assert_eq!(
            long_path.check(),
            Err(RecordError::PathTooLong {
                path_bytes: PATH_BYTES_MAX + 1
            })
        );
        long_path.path = PathBuf::from(OsStr::from_bytes(&[b'x'; PATH_BYTES_MAX]));
        assert_eq!(long_path.check(), Ok(()));
        let mut wide = record(b"/a", 0);
        wide.identity.fingerprint_bytes = FINGERPRINT_BYTES_MAX + 1;
        assert_eq!(
            wide.check(),
            Err(RecordError::FingerprintTooLong {
                fingerprint_bytes: 1025
            })
        );
    }

    /// Goal: encode never writes a record the decoder would reject.
    /// Method: hand it a path one byte too long.
    #[test]
    #[should_panic(expected = "cannot be encoded: path of 4097 bytes")]
    fn encode_panics_on_an_unstorable_record() {
        encoded(&[record(&[b'x'; PATH_BYTES_MAX + 1], 0)]);
    }

    /// Goal: any id makes one safe file name, and different ids make
    /// different names. Method: the documented examples, then tricky ids
    /// checked against a decoder of the escaping and against each other.
    #[test]
    fn escaping_makes_one_safe_distinct_name_per_id() {
        let examples = [
            ("app-1_x.log", "app-1_x.log"),
            ("a/b", "a%2Fb"),
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("...", "..."),
            ("ünï", "%C3%BCn%C3%AF"),
            ("a b%", "a%20b%25"),
            ("x.tmp", "x%2Etmp"),
            (".tmp", "%2Etmp"),
            ("", "%"),
        ];
        for (id, name) in examples {
            assert_eq!(escape_source_id(id), name, "{id:?}");
        }
        let ids = [
            "",
            ".",
            "..",
            "...",
            "%",
            "%2E",
            "a/b",
            "a%2Fb",
            "x",
            "x.tmp",
            "x%2Etmp",
            "\0",
            "\u{7f}",
            "ünï",
            "a\nb",
            ".hidden",
            "tmp",
            "x.tmp.tmp",
        ];
        let mut names = std::collections::HashSet::new();
        for id in ids {
            let name = escape_source_id(id);
            assert!(names.insert(name.clone()), "{id:?} shares {name:?}");
            assert!(!name.is_empty() && name != "." && name != "..", "{id:?}");
            assert!(!name.contains('/') && !name.contains('\0'), "{id:?}");
            assert!(!name.ends_with(TEMPORARY_SUFFIX), "{id:?} -> {name:?}");
            if !id.is_empty() {
                assert_eq!(unescape(&name), id.as_bytes(), "{id:?}");
            }
        }
    }

    /// The inverse of `escape_source_id` for non-empty ids.
    fn unescape(name: &str) -> Vec<u8> {
        let bytes = name.as_bytes();
        let mut id = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            if bytes[at] == b'%' {
                let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).unwrap();
                id.push(u8::from_str_radix(hex, 16).unwrap());
                at += 3;
            } else {
                id.push(bytes[at]);
                at += 1;
            }
        }
        id
    }

    /// Goal: a fresh data directory gets `positions/` and no position yet.
    /// Method: open under a data_dir that does not exist yet.
    #[test]
    fn open_on_a_fresh_dir_creates_the_directory() {
        let temporary = tempfile::tempdir().unwrap();
        let data_dir = temporary.path().join("data");
        let (store, decoded) = PositionStore::open(&data_dir, "app").unwrap();
        assert_eq!(decoded, Decoded::default());
        let directory = data_dir.join("positions");
        assert!(directory.is_dir());
        let mode = std::fs::metadata(&directory).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o700, 0o700, "mode {mode:o}");
        assert_eq!(mode & !0o755, 0, "mode {mode:o} (0755 less the umask)");
        assert_eq!(store.path(), directory.join("app"));
        assert!(!store.path().exists(), "open writes nothing");
    }

    /// Goal: what is written is what the next open reads, and a later write
    /// replaces it whole. Method: write three records, reopen, write one,
    /// reopen, write none, reopen.
    #[test]
    fn write_then_reopen_returns_the_records() {
        let temporary = tempfile::tempdir().unwrap();
        let records = three();
        let (mut store, _) = PositionStore::open(temporary.path(), "app").unwrap();
        store.write(&records).unwrap();
        let (mut store, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records, records);
        assert!(decoded.unusable.is_empty());
        store.write(&records[1..2]).unwrap();
        let (mut store, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records, records[1..2]);
        store.write(&[]).unwrap();
        let (_, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded, Decoded::default());
        let (_, other) = PositionStore::open(temporary.path(), "other").unwrap();
        assert_eq!(other, Decoded::default(), "each source has its own file");
    }

    /// Goal: a temporary file left by a crash mid-write is never read and
    /// does not stop the next write. Method: leave garbage in `<file>.tmp`
    /// (once beside a good file, once alone), open, write, reopen.
    #[test]
    fn leftover_temporary_file_is_ignored_then_overwritten() {
        let temporary = tempfile::tempdir().unwrap();
        let records = three();
        let (mut store, _) = PositionStore::open(temporary.path(), "app").unwrap();
        store.write(&records[..1]).unwrap();
        let leftover = temporary.path().join("positions/app.tmp");
        std::fs::write(&leftover, b"LCPOSITN\x01 half a frame").unwrap();
        let (mut store, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records, records[..1]);
        assert!(decoded.unusable.is_empty());
        store.write(&records).unwrap();
        assert!(!leftover.exists(), "the rename consumed the temporary file");
        let (_, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records, records);

        std::fs::write(temporary.path().join("positions/fresh.tmp"), b"junk").unwrap();
        let (_, decoded) = PositionStore::open(temporary.path(), "fresh").unwrap();
        assert_eq!(decoded, Decoded::default());
    }

    /// Goal: a symbolic link planted at the temporary file's path is not
    /// followed: the file it names stays untouched, and the positions are
    /// written. Method: `app.tmp` links to a victim file; write; compare.
    #[test]
    fn temporary_file_link_is_not_followed() {
        let temporary = tempfile::tempdir().unwrap();
        let records = three();
        let (mut store, _) = PositionStore::open(temporary.path(), "app").unwrap();
        let victim = temporary.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let link = temporary.path().join("positions/app.tmp");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        store.write(&records).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let (_, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records, records);
    }

    /// Goal: ids that are not plain names stay one file inside
    /// `positions/`. Method: open and write under "a/b", "..", "." and
    /// "ünï", then look at the directory's entries.
    #[test]
    fn store_escapes_ids_into_one_file_name() {
        let temporary = tempfile::tempdir().unwrap();
        let directory = temporary.path().join("positions");
        let records = three();
        for (id, name) in [
            ("a/b", "a%2Fb"),
            ("..", "%2E%2E"),
            (".", "%2E"),
            ("ünï", "%C3%BCn%C3%AF"),
        ] {
            let (mut store, _) = PositionStore::open(temporary.path(), id).unwrap();
            assert_eq!(store.path(), directory.join(name));
            store.write(&records[..1]).unwrap();
            let (_, decoded) = PositionStore::open(temporary.path(), id).unwrap();
            assert_eq!(decoded.records, records[..1], "{id:?}");
        }
        let mut entries: Vec<String> = std::fs::read_dir(&directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        entries.sort();
        assert_eq!(entries, ["%2E", "%2E%2E", "%C3%BCn%C3%AF", "a%2Fb"]);
        let entries_above = std::fs::read_dir(temporary.path()).unwrap().count();
        assert_eq!(entries_above, 1, "nothing written beside positions/");
        let long_id = "ü".repeat(50);
        let refused = PositionStore::open(temporary.path(), &long_id).unwrap_err();
        assert!(matches!(
            refused,
            PositionsError::SourceIdTooLong {
                name_bytes: 300,
                ..
            }
        ));
    }

    /// Goal: a position file that cannot be read is an error naming it, not
    /// an empty start in disguise. Method: make the file's name a directory.
    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let temporary = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(temporary.path().join("positions/app")).unwrap();
        let error = PositionStore::open(temporary.path(), "app").unwrap_err();
        assert!(matches!(error, PositionsError::Read { .. }), "{error:?}");
        assert_eq!(error.path(), temporary.path().join("positions/app"));
        let text = error.to_string();
        assert!(text.starts_with("cannot read position file "), "{text}");
        assert!(
            !text.contains("Is a directory"),
            "the cause is left to the chain: {text}"
        );
    }

    /// Goal: a damaged file on disk decodes what it can at open. Method:
    /// corrupt the middle record of a written file.
    #[test]
    fn open_reports_a_damaged_file() {
        let temporary = tempfile::tempdir().unwrap();
        let records = three();
        let (mut store, _) = PositionStore::open(temporary.path(), "app").unwrap();
        store.write(&records).unwrap();
        let mut bytes = std::fs::read(store.path()).unwrap();
        let second_frame_at = encoded(&records[..1]).len();
        bytes[second_frame_at + 20] ^= 1;
        std::fs::write(store.path(), &bytes).unwrap();
        let (_, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records, [records[0].clone(), records[2].clone()]);
        assert_eq!(decoded.unusable.len(), 1);
    }

    /// Goal: the size bound holds both ways: open reads at most
    /// FILE_BYTES_MAX, write refuses more and leaves the old file. Method:
    /// records of maximal paths past the (test-sized) bound.
    #[test]
    fn file_size_is_bounded() {
        let temporary = tempfile::tempdir().unwrap();
        let big = record(&[b'x'; PATH_BYTES_MAX], 0);
        let fitting = (FILE_BYTES_MAX - HEADER_BYTES) / (FRAME_HEADER_BYTES + PAYLOAD_BYTES_MAX);
        let too_many = vec![big.clone(); fitting + 1];
        let (mut store, _) = PositionStore::open(temporary.path(), "app").unwrap();
        store.write(&too_many[..fitting]).unwrap();
        let refused = store.write(&too_many).unwrap_err();
        assert!(
            matches!(refused, PositionsError::TooLarge { .. }),
            "{refused:?}"
        );
        let (_, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records.len(), fitting, "the old file stayed");

        std::fs::write(store.path(), encoded(&too_many)).unwrap();
        let (_, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records.len(), fitting);
        assert_eq!(decoded.unusable.len(), 2, "{:?}", decoded.unusable);
        assert!(decoded.unusable[0].starts_with("torn record"));
        assert!(decoded.unusable[1].starts_with("file is longer than 65536 bytes"));
    }

    /// Goal: a record that cannot be stored fails the write with an error
    /// naming both paths, and the old file stays. Method: a record with a
    /// path past PATH_BYTES_MAX.
    #[test]
    fn write_refuses_an_unstorable_record() {
        let temporary = tempfile::tempdir().unwrap();
        let records = three();
        let (mut store, _) = PositionStore::open(temporary.path(), "app").unwrap();
        store.write(&records).unwrap();
        let mut bad = records.clone();
        bad[1].path = PathBuf::from("/".repeat(PATH_BYTES_MAX + 1));
        let error = store.write(&bad).unwrap_err();
        assert!(matches!(error, PositionsError::Record { .. }), "{error:?}");
        assert_eq!(error.path(), store.path());
        let (_, decoded) = PositionStore::open(temporary.path(), "app").unwrap();
        assert_eq!(decoded.records, records);
    }

    /// Goal: a warm write does not grow its buffer. Method: the buffer's
    /// address and capacity stay the same across writes of the same size.
    #[test]
    fn write_reuses_its_buffer() {
        let temporary = tempfile::tempdir().unwrap();
        let records = three();
        let (mut store, _) = PositionStore::open(temporary.path(), "app").unwrap();
        store.write(&records).unwrap();
        let (address, capacity) = (store.buffer.as_ptr(), store.buffer.capacity());
        for _ in 0..3 {
            store.write(&records).unwrap();
            store.write(&records[..1]).unwrap();
            assert_eq!(store.buffer.as_ptr(), address);
            assert_eq!(store.buffer.capacity(), capacity);
        }
    }

    /// Goal: a write into a directory that vanished fails naming the file
    /// and leaves no temporary file. Method: remove `positions/` under an
    /// open store.
    #[test]
    fn failed_write_is_an_error_naming_the_file() {
        let temporary = tempfile::tempdir().unwrap();
        let (mut store, _) = PositionStore::open(temporary.path(), "app").unwrap();
        std::fs::remove_dir(temporary.path().join("positions")).unwrap();
        let error = store.write(&three()).unwrap_err();
        assert!(
            matches!(
                error,
                PositionsError::Write {
                    action: "create temporary file",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.path(), store.path());
        assert!(std::error::Error::source(&error).is_some());
    }

    /// A file holding `bytes`, open for reading and positioned writes (not
    /// O_APPEND, under which Linux's pwrite ignores its offset).
    fn file_with(directory: &Path, bytes: &[u8]) -> (PathBuf, File) {
        let path = directory.join("followed.log");
        std::fs::write(&path, bytes).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (path, file)
    }

    /// Goal: a short file's fingerprint covers what it has, and still
    /// matches once the file grows; rewriting its first byte breaks it.
    /// Method: fingerprint a 10-byte file, append, then rewrite byte 0.
    #[test]
    fn fingerprint_covers_a_short_file_and_survives_appends() {
        let temporary = tempfile::tempdir().unwrap();
        let (path, file) = file_with(temporary.path(), b"0123456789");
        let identity = FileIdentity::of(&file).unwrap();
        assert_eq!(identity.fingerprint_bytes, 10);
        assert_eq!(identity.fingerprint, crc32c::crc32c(b"0123456789"));
        assert_eq!(
            identity.inode,
            std::fs::metadata(&path).unwrap().ino(),
            "identity is fstat's"
        );
        let mut writer = OpenOptions::new().append(true).open(&path).unwrap();
        writer.write_all(&[b'a'; 3000]).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 3010);
        assert!(fingerprint_matches(&file, &identity).unwrap());
        file.write_all_at(b"X", 0).unwrap();
        assert!(!fingerprint_matches(&file, &identity).unwrap());
    }

    /// Goal: a file shorter than its fingerprint does not match, and a
    /// fingerprint of nothing matches anything. Method: truncate a file
    /// below its fingerprint's bytes; fingerprint an empty file.
    #[test]
    fn fingerprint_of_a_shrunk_file_does_not_match() {
        let temporary = tempfile::tempdir().unwrap();
        let (_, file) = file_with(temporary.path(), b"0123456789");
        let identity = FileIdentity::of(&file).unwrap();
        file.set_len(9).unwrap();
        assert!(!fingerprint_matches(&file, &identity).unwrap());
        file.set_len(0).unwrap();
        assert!(!fingerprint_matches(&file, &identity).unwrap());
        assert_eq!(fingerprint(&file).unwrap(), (0, 0));
        let empty = FileIdentity::of(&file).unwrap();
        file.set_len(50).unwrap();
        assert!(fingerprint_matches(&file, &empty).unwrap());
        let impossible = FileIdentity {
            fingerprint_bytes: FINGERPRINT_BYTES_MAX + 1,
            ..identity
        };
        assert!(!fingerprint_matches(&file, &impossible).unwrap());
    }

    /// Goal: a long file's fingerprint covers exactly its first
    /// FINGERPRINT_BYTES_MAX bytes and does not move the file's cursor.
    /// Method: a 5000-byte file read part-way, fingerprinted, read on.
    #[test]
    fn fingerprint_covers_the_first_kilobyte_without_moving_the_cursor() {
        let temporary = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..5000u32).map(|index| (index % 251) as u8).collect();
        let (_, mut file) = file_with(temporary.path(), &content);
        let mut first = [0u8; 100];
        file.read_exact(&mut first).unwrap();
        let (checksum, covered) = fingerprint(&file).unwrap();
        assert_eq!(covered, FINGERPRINT_BYTES_MAX);
        assert_eq!(checksum, crc32c::crc32c(&content[..1024]));
        let mut next = [0u8; 100];
        file.read_exact(&mut next).unwrap();
        assert_eq!(next[..], content[100..200]);
        file.write_all_at(b"changed beyond the fingerprint", 2000)
            .unwrap();
        let identity = FileIdentity::of(&file).unwrap();
        assert!(fingerprint_matches(&file, &identity).unwrap());
        file.write_all_at(b"!", 1023).unwrap();
        assert!(!fingerprint_matches(&file, &identity).unwrap());
    }
}
