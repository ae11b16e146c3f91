//! DLQ segment files: fixed size, preallocated, written through a shared
//! memory map, locked while in use.
//!
//! ```text
//! segment-0000000000000007.dlq (version 2, written by this build)
//! +--------------------------------------------+ 0
//! | magic "LCDLQSEG" | version u32 | header u32 |
//! | segment_bytes u64 | sequence u64           |
//! | created_ns u64 | zero padding to 64 bytes   |
//! +--------------------------------------------+ 64
//! | block | block | ... | 0u32 (end) | zeroes   |   blocks (see `block`)
//! +--------------------------------------------+ staging_start
//! | open block: magic u32 | crc32c u32 |        |   staging_bytes(size)
//! |   block_offset u64 | v1 frame | ... | 0... |   (see `header`)
//! +--------------------------------------------+ segment_bytes - 64
//! | seal trailer (zero until sealed)            |   see `header`
//! +--------------------------------------------+ segment_bytes
//!
//! version 1 (written by earlier builds, still read):
//! | header | frame | frame | ... | 0u32 (end) | zeroes |
//! ```
//!
//! The open block. A record is stored as soon as its v1 frame (see
//! `record`) is in the open block area: it is in the page cache, so it
//! survives a crash of the process. The writer also gathers the records in
//! memory; when the block is full (64 KiB of payload, or the area is full)
//! or the segment is sealed, it compresses them into a block, writes the
//! block after the last one (its length last), and only then clears the
//! open block area (its frames first, its header last). The area's header
//! names the offset its block will be written at, so a scan after a crash
//! between the two steps sees the block there and ignores the area: a crash
//! at any point loses no record and repeats none.
//!
//! Sealing writes the trailer: the record count, the bytes used and the
//! records' fingerprint, so that start-up takes a sealed segment's counts
//! from 64 bytes instead of a scan. A segment without a valid trailer (one
//! torn by a crash) is scanned.
//!
//! Invariants: a segment file is created at its full size with
//! `posix_fallocate`, so a full disk is an error at creation and never a
//! SIGBUS on a page fault; it is mapped once and never grows; records never
//! span segments; the process holds an exclusive `flock` on a segment while
//! it maps it, because truncation by another process would also raise SIGBUS.
//!
//! A segment is prepared under a temporary name (`segment-N.dlq.new`) and
//! linked to its final name only once it is locked, preallocated and has its
//! header, so whoever sees a segment name sees a complete header and, while
//! the writer appends, the writer's locks.
//!
//! Readers: replay deletes what it read, so it takes the exclusive `flock`
//! ([`ReadableSegment::open`]). `dlq list`, `dlq dump` and the start-up
//! count take no lock at all ([`ReadableSegment::open_unlocked`]): taking
//! even a shared one for a moment could make the writer's or a replay's
//! lock fail. They read through `read`, never a map, so a truncation cannot
//! fault them. To tell the segment being written from a sealed one, the
//! writer also holds an open-file-description (OFD) write lock on it, which
//! a reader queries with `F_OFD_GETLK` without taking anything.
//!
//! A damaged header does not hide a segment: the damage is reported with
//! the scan's summary, and the frames after the header are scanned anyway
//! (see `scan` for how a scan recovers every intact record).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::{Advice, MmapMut, UncheckedAdvice};

use crate::dlq::ack::Fingerprint;
use crate::dlq::block::check_block;
pub use crate::dlq::header::{
    HeaderDamage, Layout, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION, SEGMENT_VERSION_V1,
    TRAILER_BYTES, Trailer, check_header,
};
use crate::dlq::record::Record;
pub use crate::dlq::scan::{SCAN_CHUNK_BYTES, ScanMode, ScanSummary, scan_blocks, scan_frames};
use crate::dlq::scan::{scan_blocks_reader, scan_reader};

/// Bytes of the open block area's header: magic, CRC32C, block offset.
pub const STAGING_HEADER_BYTES: usize = 16;
const STAGING_MAGIC: u32 = u32::from_le_bytes(*b"LCOB");

/// The header of an open block area whose block goes to `block_offset`.
fn staging_header(block_offset: u64) -> [u8; STAGING_HEADER_BYTES] {
    let mut header = [0u8; STAGING_HEADER_BYTES];
    header[0..4].copy_from_slice(&STAGING_MAGIC.to_le_bytes());
    header[8..16].copy_from_slice(&block_offset.to_le_bytes());
    let checksum = crc32c::crc32c(&header[8..16]);
    header[4..8].copy_from_slice(&checksum.to_le_bytes());
    header
}

/// The block offset an open block area's header names, if intact.
fn staging_block_offset(header: &[u8]) -> Option<u64> {
    let header = header.get(..STAGING_HEADER_BYTES)?;
    let magic = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let checksum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    (magic == STAGING_MAGIC && checksum == crc32c::crc32c(&header[8..16]))
        .then(|| u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")))
}

/// Written bytes after which the pages behind the write offset are handed
/// back to the page cache, so that a segment's mapping does not keep up to
/// `segment_bytes` resident while it fills.
pub const RELEASE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes ahead of the write offset that are faulted in with one
/// `MADV_POPULATE_WRITE` call instead of one page fault per page.
pub const POPULATE_BYTES: usize = 1024 * 1024;

/// Why a segment could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("DLQ segment {path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("DLQ segment {path} is locked by another process")]
    Locked { path: PathBuf },
}

fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> SegmentError + 'a {
    move |source| SegmentError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// True when opening a segment failed because it is gone (a replay or the
/// size bound deleted it after it was listed).
pub fn is_not_found<T>(opened: &Result<T, SegmentError>) -> bool {
    matches!(opened, Err(SegmentError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound)
}

/// The file name of segment `sequence`.
pub fn segment_name(sequence: u64) -> String {
    format!("segment-{sequence:016}.dlq")
}

/// The sequence of a segment file name, if it is one.
pub fn segment_sequence(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".dlq")?
        .parse()
        .ok()
}

/// Segment files in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(sequence) = entry.file_name().to_str().and_then(segment_sequence) {
            segments.push((sequence, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Takes an exclusive, non-blocking `flock` on `file`.
fn lock_exclusive(file: &File, path: &Path) -> Result<(), SegmentError> {
    // SAFETY: flock only reads the descriptor number, which `file` keeps
    // open for the duration of the call.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(SegmentError::Locked {
            path: path.to_path_buf(),
        });
    }
    Err(io_error(path, "lock")(error))
}

/// The whole-file lock record of `F_OFD_SETLK` and `F_OFD_GETLK`.
fn whole_file_lock(lock_type: libc::c_int) -> libc::flock {
    libc::flock {
        l_type: lock_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        // OFD locks require 0 here.
        l_pid: 0,
    }
}

/// Marks `file` as being written: an OFD write lock on the whole file,
/// released when the file is closed. It conflicts with nothing the project
/// takes (`flock` locks are separate); readers only query it. Best effort:
/// on a file system without OFD locks the segment is still written, and
/// readers take it for sealed (its unwritten tail reads as the end).
fn mark_in_use(file: &File, path: &Path) {
    let lock = whole_file_lock(libc::F_WRLCK);
    // SAFETY: fcntl reads `lock`, which lives across the call, and the
    // descriptor, which `file` keeps open.
    let result = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(path = %path.display(), %error, "DLQ segment cannot be marked in use; dlq list and dump will read it as sealed");
    }
}

/// True when a writer holds the in-use mark of `file` (see
/// [`mark_in_use`]). Takes no lock; false where the mark cannot be queried.
fn is_in_use(file: &File) -> bool {
    let mut lock = whole_file_lock(libc::F_WRLCK);
    // SAFETY: fcntl writes into `lock`, a valid `flock` that lives across
    // the call; the descriptor is kept open by `file`.
    let result = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    result == 0 && lock.l_type != libc::F_UNLCK as libc::c_short
}

/// The temporary name a segment is prepared under (not a segment name, so
/// listings ignore it).
fn temporary_name(sequence: u64) -> String {
    format!("{}.new", segment_name(sequence))
}

/// Deletes segments left half-prepared by a crash (`*.dlq.new`). Call only
/// when no writer uses `dir`.
pub fn remove_temporaries(dir: &Path) -> std::io::Result<u64> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_temporary = name
            .to_str()
            .and_then(|name| name.strip_suffix(".new"))
            .and_then(segment_sequence)
            .is_some();
        if is_temporary {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Maps a whole segment file for writing.
fn map(file: &File, path: &Path) -> Result<MmapMut, SegmentError> {
    // SAFETY: the file is open read-write, was created (or checked) at its
    // full length, and this process holds an exclusive flock on it, so no
    // cooperating process truncates it while the map lives; the map is only
    // accessed through this `MmapMut`.
    unsafe { MmapMut::map_mut(file) }.map_err(io_error(path, "map"))
}

/// A segment open for appending.
#[derive(Debug)]
pub struct WritableSegment {
    pub sequence: u64,
    pub path: PathBuf,
    map: MmapMut,
    _file: File,
    /// 2, or 1 for a segment of v1 frames (written only by tests now).
    version: u32,
    /// Where the areas lie (version 2).
    layout: Layout,
    /// Next free byte of the frames (v1) or blocks (v2);
    /// `SEGMENT_HEADER_BYTES..=` the end of that area.
    write_offset: usize,
    /// Bytes of the open block area in use, its header included; 0 when
    /// the area is empty (zeroes).
    staged_bytes: usize,
    /// Bytes before this offset were handed back to the page cache; a
    /// multiple of the page size, at most `write_offset`.
    released_offset: usize,
    /// Bytes before this offset have been faulted in ahead of writing.
    populated_offset: usize,
    /// Records stored: in blocks (or frames) and in the open block.
    pub records: u64,
    /// Message bytes of those records.
    pub input_bytes: u64,
    fingerprint: Fingerprint,
}

impl WritableSegment {
    /// Creates segment `sequence` in `dir`, preallocated to `segment_bytes`.
    pub fn create(
        dir: &Path,
        sequence: u64,
        segment_bytes: usize,
        created_ns: u64,
    ) -> Result<Self, SegmentError> {
        Self::create_version(dir, sequence, segment_bytes, created_ns, SEGMENT_VERSION)
    }

    /// Creates a segment of v1 record frames, as earlier builds wrote them
    /// (kept so that tests can make the segments an upgraded daemon finds).
    #[doc(hidden)]
    pub fn create_v1(
        dir: &Path,
        sequence: u64,
        segment_bytes: usize,
        created_ns: u64,
    ) -> Result<Self, SegmentError> {
        Self::create_version(dir, sequence, segment_bytes, created_ns, SEGMENT_VERSION_V1)
    }

    fn create_version(
        dir: &Path,
        sequence: u64,
        segment_bytes: usize,
        created_ns: u64,
        version: u32,
    ) -> Result<Self, SegmentError> {
        assert!(
            segment_bytes > SEGMENT_HEADER_BYTES + 4,
            "segment_bytes is validated"
        );
        let layout = match version {
            SEGMENT_VERSION_V1 => Layout {
                staging_start: segment_bytes,
                trailer_start: segment_bytes,
            },
            _ => Layout::of(segment_bytes as u64).expect("segment_bytes is validated"),
        };
        let path = dir.join(segment_name(sequence));
        let temporary = dir.join(temporary_name(sequence));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(io_error(&path, "create"))?;
        let prepared = Self::prepare(&file, &path, segment_bytes).and_then(|mut map| {
            write_header(&mut map, segment_bytes, sequence, created_ns, version);
            publish(&temporary, &path)?;
            Ok(map)
        });
        let _ = std::fs::remove_file(&temporary);
        let map = prepared?;
        Ok(Self {
            sequence,
            path,
            map,
            _file: file,
            version,
            layout,
            write_offset: SEGMENT_HEADER_BYTES,
            staged_bytes: 0,
            released_offset: 0,
            populated_offset: 0,
            records: 0,
            input_bytes: 0,
            fingerprint: Fingerprint::default(),
        })
    }

    /// Locks, marks, preallocates and maps a new segment file.
    fn prepare(file: &File, path: &Path, segment_bytes: usize) -> Result<MmapMut, SegmentError> {
        lock_exclusive(file, path)?;
        mark_in_use(file, path);
        // SAFETY: posix_fallocate reads the descriptor and two integers; no
        // memory is shared with the call.
        let result =
            unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, segment_bytes as libc::off_t) };
        if result != 0 {
            return Err(io_error(path, "preallocate")(
                std::io::Error::from_raw_os_error(result),
            ));
        }
        map(file, path)
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Bytes still free for frames (v1) or blocks (v2), keeping room for
    /// the end marker.
    pub fn free_bytes(&self) -> usize {
        self.layout
            .staging_start
            .saturating_sub(self.write_offset + 4)
    }

    /// Bytes of the open block area still free for frames (v2).
    pub fn staging_free_bytes(&self) -> usize {
        let staged = self.staged_bytes.max(STAGING_HEADER_BYTES);
        self.layout.trailer_start - self.layout.staging_start - staged
    }

    /// Bytes of the open block area for frames when it is empty (v2).
    pub fn staging_capacity_bytes(&self) -> usize {
        self.layout.trailer_start - self.layout.staging_start - STAGING_HEADER_BYTES
    }

    /// Bytes in use: the header and the frames or blocks written.
    pub fn used_bytes(&self) -> usize {
        self.write_offset
    }

    pub fn len_bytes(&self) -> usize {
        self.map.len()
    }

    /// Counts a record stored by [`append`](Self::append),
    /// [`stage`](Self::stage) or [`write_block`](Self::write_block).
    pub fn note(&mut self, record: &Record<'_>) {
        self.records += 1;
        self.input_bytes += record.message.len() as u64;
        self.fingerprint.add(record);
    }

    /// Appends one encoded v1 frame to a v1 segment. The caller checked
    /// `free_bytes`.
    pub fn append(&mut self, frame: &[u8]) {
        assert_eq!(self.version, SEGMENT_VERSION_V1, "frames go to v1 segments");
        self.write_at_end(frame);
    }

    /// Writes `frame` (a v1 frame or a v2 block) at the write offset,
    /// length last.
    fn write_at_end(&mut self, frame: &[u8]) {
        assert!(
            frame.len() <= self.free_bytes(),
            "frame of {} bytes, {} free",
            frame.len(),
            self.free_bytes()
        );
        let end = self.write_offset + frame.len();
        if end > self.populated_offset {
            self.populate_ahead(end);
        }
        write_length_last(&mut self.map[self.write_offset..end], frame);
        self.write_offset = end;
        if self.write_offset - self.released_offset >= RELEASE_BYTES {
            self.release_written();
        }
    }

    /// Stores one v1 frame in the open block area of a v2 segment: once
    /// this returns, the record survives a crash of the process. The caller
    /// checked `staging_free_bytes`, and that the blocks' area has room for
    /// the block the open block will become.
    pub fn stage(&mut self, frame: &[u8]) {
        assert_eq!(self.version, SEGMENT_VERSION, "an open block is v2");
        assert!(
            frame.len() <= self.staging_free_bytes(),
            "frame of {} bytes, {} free in the open block",
            frame.len(),
            self.staging_free_bytes()
        );
        let start = self.layout.staging_start;
        if self.staged_bytes == 0 {
            let header = staging_header(self.write_offset as u64);
            self.map[start..start + STAGING_HEADER_BYTES].copy_from_slice(&header);
            self.staged_bytes = STAGING_HEADER_BYTES;
        }
        let at = start + self.staged_bytes;
        write_length_last(&mut self.map[at..at + frame.len()], frame);
        self.staged_bytes += frame.len();
    }

    /// Writes a closed block after the last one, then clears the open block
    /// area (its records are in the block). The caller checked
    /// `free_bytes`.
    pub fn write_block(&mut self, block: &[u8]) {
        assert_eq!(self.version, SEGMENT_VERSION, "blocks go to v2 segments");
        self.write_at_end(block);
        if self.staged_bytes > 0 {
            let start = self.layout.staging_start;
            // Frames first, header last: while the header stands, the block
            // at its offset tells a reader that the frames are in it.
            self.map[start + STAGING_HEADER_BYTES..start + self.staged_bytes].fill(0);
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            self.map[start..start + STAGING_HEADER_BYTES].fill(0);
            self.staged_bytes = 0;
        }
    }

    /// True when records wait in the open block area.
    pub fn has_staged(&self) -> bool {
        self.staged_bytes > 0
    }

    /// Writes the seal trailer of a v2 segment whose open block was
    /// closed, and starts write-back.
    pub fn seal(&mut self) {
        if self.version == SEGMENT_VERSION {
            assert_eq!(self.staged_bytes, 0, "the open block is closed first");
            let trailer = Trailer {
                sequence: self.sequence,
                records: self.records,
                used_bytes: self.write_offset as u64,
                input_bytes: self.input_bytes,
                fingerprint: self.fingerprint.checksum,
            };
            let start = self.layout.trailer_start;
            self.map[start..start + TRAILER_BYTES].copy_from_slice(&trailer.encode());
        }
        self.flush_async();
    }

    /// Faults in the pages up to `POPULATE_BYTES` past `end` in one call.
    /// Best effort: on a kernel without `MADV_POPULATE_WRITE` the writes
    /// fault the pages in one by one, as they would anyway.
    fn populate_ahead(&mut self, end: usize) {
        let page = 4096;
        let start = self.populated_offset.max(self.write_offset / page * page);
        let stop = (end + POPULATE_BYTES).min(self.map.len());
        if stop > start
            && self
                .map
                .advise_range(Advice::PopulateWrite, start, stop - start)
                .is_err()
        {
            // Do not ask again for this window.
        }
        self.populated_offset = stop;
    }

    /// Starts write-back of the written pages and drops them from this
    /// process's resident set. The data stays in the page cache and the
    /// file: this is a shared file mapping, so `MADV_DONTNEED` only unmaps.
    fn release_written(&mut self) {
        let page = 4096;
        let end = self.write_offset / page * page;
        if end <= self.released_offset {
            return;
        }
        let (offset, len) = (self.released_offset, end - self.released_offset);
        if let Err(error) = self.map.flush_async_range(offset, len) {
            tracing::warn!(path = %self.path.display(), %error, "DLQ segment write-back failed");
            return;
        }
        // SAFETY: the map is MAP_SHARED over a file, so MADV_DONTNEED drops
        // only this process's page-table entries; the written bytes live on
        // in the page cache and the file, and a later access would fault
        // them back in. No reference into `offset..offset + len` exists: the
        // map is only touched through `append`, which writes beyond
        // `write_offset >= end`.
        let advised = unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, offset, len)
        };
        if advised.is_ok() {
            self.released_offset = end;
        }
    }

    /// Asks the kernel to write the dirty pages back, without waiting.
    pub fn flush_async(&self) {
        if let Err(error) = self.map.flush_async() {
            tracing::warn!(path = %self.path.display(), %error, "DLQ segment flush failed");
        }
    }
}

/// Gives a prepared segment its final name, never replacing a segment: a
/// hard link fails if the name exists; a file system without hard links
/// gets a rename after a check.
fn publish(temporary: &Path, path: &Path) -> Result<(), SegmentError> {
    match std::fs::hard_link(temporary, path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(io_error(path, "link")(error))
        }
        Err(_) if !path.exists() => {
            std::fs::rename(temporary, path).map_err(io_error(path, "rename"))
        }
        Err(error) => Err(io_error(path, "link")(error)),
    }
}

/// Copies `frame` into `target`, its 4-byte length last: a crash between
/// the two leaves a zero length, which reads as the end of what was
/// written.
fn write_length_last(target: &mut [u8], frame: &[u8]) {
    target[4..].copy_from_slice(&frame[4..]);
    // Readers of the segment being written (`dlq dump`) read the page cache
    // concurrently: the length must not become visible first.
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    target[..4].copy_from_slice(&frame[..4]);
}

/// Writes the header of a new segment into its map.
fn write_header(
    map: &mut MmapMut,
    segment_bytes: usize,
    sequence: u64,
    created_ns: u64,
    version: u32,
) {
    let header = &mut map[..SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&version.to_le_bytes());
    header[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
    header[16..24].copy_from_slice(&(segment_bytes as u64).to_le_bytes());
    header[24..32].copy_from_slice(&sequence.to_le_bytes());
    header[32..40].copy_from_slice(&created_ns.to_le_bytes());
}

impl Drop for WritableSegment {
    fn drop(&mut self) {
        let _ = self.map.flush();
    }
}

/// Deletes a sealed segment without reading it, once its lock can be had
/// (a segment that a replay holds is not deleted under it).
pub fn delete_unread(path: &Path) -> Result<(), SegmentError> {
    let file = OpenOptions::new()
        .read(true)
        .open(path)
        .map_err(io_error(path, "open"))?;
    lock_exclusive(&file, path)?;
    std::fs::remove_file(path).map_err(io_error(path, "delete"))
}

/// A segment opened for reading: by replay (sealed, locked) or by a view
/// (`dlq list`, `dlq dump`, the start-up count; unlocked, possibly being
/// written). It is read in chunks through a reused buffer (not mapped, so a
/// concurrent truncation cannot fault this process; not read whole, so
/// replaying a 64 MiB segment does not take 64 MiB of memory).
#[derive(Debug)]
pub struct ReadableSegment {
    /// The sequence in the file name (or, failing that, the header).
    pub sequence: u64,
    pub path: PathBuf,
    file: File,
    /// Why the header is damaged, if it is.
    header: Option<HeaderDamage>,
    /// The format version: from the header, or from its version field
    /// when the rest is damaged; `None` when that is damaged too (the scan
    /// then tries both formats).
    version: Option<u32>,
    /// Bytes of the header read (all of them unless the file is shorter).
    header_bytes: u64,
    /// Bytes of the file.
    file_bytes: u64,
    mode: ScanMode,
}

impl ReadableSegment {
    /// Opens a sealed segment for replay, taking its exclusive lock: fails
    /// with [`SegmentError::Locked`] while a writer or another replay holds
    /// it. A damaged header is no error (see [`ScanSummary::header`]).
    pub fn open(path: &Path) -> Result<Self, SegmentError> {
        let file = File::open(path).map_err(io_error(path, "open"))?;
        lock_exclusive(&file, path)?;
        Self::read_header(file, path, ScanMode::Sealed)
    }

    /// Opens a segment for a read-only view without taking any lock. A
    /// segment a writer still appends to is scanned up to its last complete
    /// record ([`ScanMode::InUse`]).
    pub fn open_unlocked(path: &Path) -> Result<Self, SegmentError> {
        let file = File::open(path).map_err(io_error(path, "open"))?;
        let mode = if is_in_use(&file) {
            ScanMode::InUse
        } else {
            ScanMode::Sealed
        };
        Self::read_header(file, path, mode)
    }

    fn read_header(mut file: File, path: &Path, mode: ScanMode) -> Result<Self, SegmentError> {
        let file_bytes = file.metadata().map_err(io_error(path, "stat"))?.len();
        let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES);
        (&mut file)
            .take(SEGMENT_HEADER_BYTES as u64)
            .read_to_end(&mut header)
            .map_err(io_error(path, "read"))?;
        let named = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(segment_sequence);
        let checked = check_header(&header, named);
        let version = match checked {
            Ok(version) => Some(version),
            Err(_) => header
                .get(8..12)
                .map(|bytes| u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
                .filter(|&version| version == SEGMENT_VERSION || version == SEGMENT_VERSION_V1),
        };
        let sequence = named.unwrap_or_else(|| {
            header.get(24..32).map_or(0, |bytes| {
                u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
            })
        });
        Ok(Self {
            sequence,
            path: path.to_path_buf(),
            file,
            header: checked.err(),
            version,
            header_bytes: header.len() as u64,
            file_bytes,
            mode,
        })
    }

    /// The format version, if the header tells it.
    pub fn version(&self) -> Option<u32> {
        self.version
    }

    /// The seal trailer of an intact, sealed v2 segment: its counts,
    /// without a scan. `None` for a segment being written, a v1 segment, a
    /// damaged header, or no valid trailer (a segment torn by a crash).
    pub fn trailer(&self) -> Option<Trailer> {
        use std::os::unix::fs::FileExt;
        let intact_v2 = self.header.is_none() && self.version == Some(SEGMENT_VERSION);
        if !intact_v2 || self.mode == ScanMode::InUse {
            return None;
        }
        let start = self.file_bytes.checked_sub(TRAILER_BYTES as u64)?;
        let mut bytes = [0u8; TRAILER_BYTES];
        self.file.read_exact_at(&mut bytes, start).ok()?;
        Trailer::decode(&bytes, self.sequence, self.file_bytes)
    }

    /// Visits every intact record in order, one chunk of records at a time
    /// (records borrow a buffer that is reused for the next chunk); returns
    /// what the scan found, damage to the header included. See `scan` for
    /// how corrupt regions are crossed.
    pub fn scan_chunks(
        &mut self,
        visit: &mut dyn FnMut(&[Record<'_>]),
    ) -> Result<ScanSummary, SegmentError> {
        let version = match self.version {
            Some(version) => version,
            None => self.guess_version()?,
        };
        let mut summary = if version == SEGMENT_VERSION_V1 {
            let body_bytes = self.file_bytes.saturating_sub(SEGMENT_HEADER_BYTES as u64);
            scan_reader(
                &mut self.file,
                body_bytes,
                SCAN_CHUNK_BYTES,
                self.mode,
                visit,
            )
            .map_err(io_error(&self.path, "read"))?
        } else {
            self.scan_v2(visit)?
        };
        summary.used_bytes += SEGMENT_HEADER_BYTES as u64;
        summary.version = version;
        if let Some(damage) = self.header {
            summary.header = Some(damage);
            summary.corrupt += 1;
            summary.corrupt_bytes += self.header_bytes;
        }
        Ok(summary)
    }

    /// The format of a segment whose header does not tell: the one whose
    /// scan recovers more records.
    fn guess_version(&mut self) -> Result<u32, SegmentError> {
        self.version = Some(SEGMENT_VERSION);
        let as_v2 = self.scan_chunks(&mut |_| {})?.records;
        self.rewind()?;
        self.version = Some(SEGMENT_VERSION_V1);
        let as_v1 = self.scan_chunks(&mut |_| {})?.records;
        self.rewind()?;
        let version = if as_v1 > as_v2 {
            SEGMENT_VERSION_V1
        } else {
            SEGMENT_VERSION
        };
        self.version = None;
        Ok(version)
    }

    /// Scans a v2 segment: its blocks, then its open block (the records a
    /// crash left there, or that the writer has not closed yet), then its
    /// trailer.
    fn scan_v2(
        &mut self,
        visit: &mut dyn FnMut(&[Record<'_>]),
    ) -> Result<ScanSummary, SegmentError> {
        let Some(layout) = Layout::of(self.file_bytes) else {
            // Too short for the v2 areas: what there is, as blocks.
            let body_bytes = self.file_bytes.saturating_sub(SEGMENT_HEADER_BYTES as u64);
            return scan_blocks_reader(
                &mut self.file,
                body_bytes,
                SCAN_CHUNK_BYTES,
                self.mode,
                visit,
            )
            .map_err(io_error(&self.path, "read"));
        };
        let blocks_bytes = (layout.staging_start - SEGMENT_HEADER_BYTES) as u64;
        let mut summary = scan_blocks_reader(
            &mut self.file,
            blocks_bytes,
            SCAN_CHUNK_BYTES,
            self.mode,
            visit,
        )
        .map_err(io_error(&self.path, "read"))?;
        self.scan_staging(layout, &mut summary, visit)?;
        if self.mode == ScanMode::Sealed {
            self.check_trailer(layout, &mut summary)?;
        }
        Ok(summary)
    }

    /// Adds the records of the open block area, unless the block they went
    /// into is in place.
    fn scan_staging(
        &mut self,
        layout: Layout,
        summary: &mut ScanSummary,
        visit: &mut dyn FnMut(&[Record<'_>]),
    ) -> Result<(), SegmentError> {
        use std::os::unix::fs::FileExt;
        let mut area = vec![0u8; layout.trailer_start - layout.staging_start];
        self.file
            .read_exact_at(&mut area, layout.staging_start as u64)
            .map_err(io_error(&self.path, "read"))?;
        let Some(block_offset) = staging_block_offset(&area) else {
            if let Some(last) = area.iter().rposition(|&byte| byte != 0) {
                // Damage: the header of an area in use is cleared last.
                summary.corrupt += 1;
                summary.corrupt_bytes += last as u64 + 1;
            }
            return Ok(());
        };
        if self.block_at(block_offset, layout) {
            return Ok(());
        }
        let frames = &area[STAGING_HEADER_BYTES..];
        let staged = scan_reader(
            &mut &frames[..],
            frames.len() as u64,
            frames.len().max(1),
            self.mode,
            visit,
        )
        .expect("reading a slice cannot fail");
        summary.records += staged.records;
        summary.corrupt += staged.corrupt;
        summary.corrupt_bytes += staged.corrupt_bytes;
        summary.torn_tail |= staged.torn_tail;
        summary.input_bytes += staged.input_bytes;
        Ok(())
    }

    /// True when an intact block starts at `offset` of the blocks' area.
    fn block_at(&self, offset: u64, layout: Layout) -> bool {
        use std::os::unix::fs::FileExt;
        let Ok(offset) = usize::try_from(offset) else {
            return false;
        };
        if offset < SEGMENT_HEADER_BYTES || offset >= layout.staging_start {
            return false;
        }
        let mut prefix = [0u8; 4];
        if self.file.read_exact_at(&mut prefix, offset as u64).is_err() {
            return false;
        }
        let length = u32::from_le_bytes(prefix) as usize;
        let frame_bytes = length.saturating_add(crate::dlq::record::FRAME_HEADER_BYTES);
        if length == 0 || frame_bytes > layout.staging_start - offset {
            return false;
        }
        let mut frame = vec![0u8; frame_bytes];
        self.file.read_exact_at(&mut frame, offset as u64).is_ok() && check_block(&frame).is_ok()
    }

    /// Counts a trailer that is neither zero nor valid as damage.
    fn check_trailer(&self, layout: Layout, summary: &mut ScanSummary) -> Result<(), SegmentError> {
        use std::os::unix::fs::FileExt;
        let mut bytes = [0u8; TRAILER_BYTES];
        self.file
            .read_exact_at(&mut bytes, layout.trailer_start as u64)
            .map_err(io_error(&self.path, "read"))?;
        let zero = bytes.iter().all(|&byte| byte == 0);
        if !zero && Trailer::decode(&bytes, self.sequence, self.file_bytes).is_none() {
            summary.corrupt += 1;
            summary.corrupt_bytes += TRAILER_BYTES as u64;
        }
        Ok(())
    }

    /// Visits every intact record in order (see [`scan_chunks`](Self::scan_chunks)).
    pub fn scan(
        &mut self,
        mut visit: impl FnMut(&Record<'_>),
    ) -> Result<ScanSummary, SegmentError> {
        self.scan_chunks(&mut |records| records.iter().for_each(&mut visit))
    }

    /// Goes back to the first record, so that the segment can be scanned
    /// again under the same lock (replay fingerprints it first).
    pub fn rewind(&mut self) -> Result<(), SegmentError> {
        use std::io::Seek;
        self.file
            .seek(std::io::SeekFrom::Start(SEGMENT_HEADER_BYTES as u64))
            .map(|_| ())
            .map_err(io_error(&self.path, "seek"))
    }

    /// Deletes the segment file (after its records were acknowledged).
    pub fn delete(self) -> Result<(), SegmentError> {
        std::fs::remove_file(&self.path).map_err(io_error(&self.path, "delete"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::record::{Reason, encode_frame};

    fn record(number: u32) -> (Vec<u8>, String) {
        let message = format!("line {number}");
        let mut frame = Vec::new();
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
        (frame, message)
    }

    #[test]
    fn written_records_scan_back_and_corruption_is_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut segment = WritableSegment::create_v1(dir.path(), 7, 4096, 0).expect("create");
        let mut offsets = Vec::new();
        let mut count = 0;
        loop {
            let (frame, _) = record(count);
            if frame.len() > segment.free_bytes() {
                break;
            }
            offsets.push(segment.write_offset);
            segment.append(&frame);
            count += 1;
        }
        assert!(count > 50);
        let used_bytes = segment.used_bytes() as u64;
        drop(segment);
        let path = dir.path().join(segment_name(7));
        assert_eq!(std::fs::metadata(&path).expect("file").len(), 4096);
        let mut seen = Vec::new();
        let summary = ReadableSegment::open(&path)
            .expect("open")
            .scan(|record| seen.push(record.attempts))
            .expect("scan");
        assert_eq!(
            summary,
            ScanSummary {
                records: count as u64,
                version: SEGMENT_VERSION_V1,
                used_bytes,
                input_bytes: summary.input_bytes,
                ..ScanSummary::default()
            }
        );
        assert_eq!(seen, (0..count).collect::<Vec<_>>());

        // Flip a byte inside record 3's message and cut the file inside the
        // last record: record 3 is counted corrupt and skipped, the rest of
        // the records before the cut are read.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[offsets[3] + 40] ^= 0x55;
        let cut = offsets[count as usize - 1] + 10;
        bytes.truncate(cut);
        std::fs::write(&path, &bytes).expect("write");
        let mut seen = Vec::new();
        let summary = ReadableSegment::open(&path)
            .expect("open")
            .scan(|record| seen.push(record.attempts))
            .expect("scan");
        assert_eq!(summary.corrupt, 2, "{summary:?}");
        assert!(summary.torn_tail);
        assert_eq!(seen.len() as u32, count - 2);
        assert!(!seen.contains(&3));
    }

    /// Goal: releasing written pages (MADV_DONTNEED on the shared map) keeps
    /// the data. Method: fill a segment past several release points, then
    /// read every record back from the file.
    #[test]
    fn released_pages_keep_their_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment_bytes = 3 * RELEASE_BYTES;
        let mut segment =
            WritableSegment::create_v1(dir.path(), 2, segment_bytes, 0).expect("create");
        let mut count = 0u32;
        loop {
            let (frame, _) = record(count);
            if frame.len() > segment.free_bytes() {
                break;
            }
            segment.append(&frame);
            count += 1;
        }
        assert!(
            segment.released_offset >= 2 * RELEASE_BYTES,
            "released {}",
            segment.released_offset
        );
        drop(segment);
        let mut seen = 0u32;
        let summary = ReadableSegment::open(&dir.path().join(segment_name(2)))
            .expect("open")
            .scan(|record| {
                assert_eq!(record.attempts, seen);
                seen += 1;
            })
            .expect("scan");
        assert_eq!((summary.records, summary.corrupt), (u64::from(count), 0));
    }

    /// Goal: the chunked scan handles a record longer than its buffer and
    /// records that straddle chunk boundaries. Method: a 1.5 MiB record
    /// between many small ones, scanned back in order.
    #[test]
    fn scan_reads_records_longer_than_a_chunk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut segment =
            WritableSegment::create_v1(dir.path(), 3, 8 * SCAN_CHUNK_BYTES, 0).expect("create");
        let big = vec![b'b'; SCAN_CHUNK_BYTES * 3 / 2];
        let mut expected = Vec::new();
        for number in 0..20_000u32 {
            let message = if number == 7_000 {
                big.clone()
            } else {
                format!("small {number}").into_bytes()
            };
            let mut frame = Vec::new();
            encode_frame(
                &mut frame,
                &Record {
                    timestamp_ns: 1,
                    attempts: number,
                    reason: Reason::Shutdown,
                    terminated: true,
                    sink: "k",
                    labels: vec![],
                    message: &message,
                },
            );
            segment.append(&frame);
            expected.push((number, message.len()));
        }
        drop(segment);
        let mut seen = Vec::new();
        let summary = ReadableSegment::open(&dir.path().join(segment_name(3)))
            .expect("open")
            .scan(|record| seen.push((record.attempts, record.message.len())))
            .expect("scan");
        assert_eq!(
            (summary.records, summary.corrupt, summary.torn_tail),
            (20_000, 0, false)
        );
        assert_eq!(seen, expected);
    }

    #[test]
    fn second_writer_cannot_lock_a_segment_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _segment = WritableSegment::create(dir.path(), 1, 4096, 0).expect("create");
        let error = ReadableSegment::open(&dir.path().join(segment_name(1))).expect_err("locked");
        assert!(matches!(error, SegmentError::Locked { .. }), "{error}");
    }
}
