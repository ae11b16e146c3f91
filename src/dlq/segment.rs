//! DLQ segment files: fixed size, preallocated, written through a shared
//! memory map, locked while in use.
//!
//! ```text
//! segment-0000000000000007.dlq
//! +--------------------------------------------+ 0
//! | magic "LCDLQSEG" | version u32 | header u32 |
//! | segment_bytes u64 | sequence u64           |
//! | created_ns u64 | zero padding to 64 bytes   |
//! +--------------------------------------------+ 64
//! | frame | frame | ... | 0u32 (end) | zeroes   |
//! +--------------------------------------------+ segment_bytes
//! ```
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

pub use crate::dlq::header::{
    HeaderDamage, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION, check_header,
};
use crate::dlq::record::Record;
use crate::dlq::scan::scan_reader;
pub use crate::dlq::scan::{SCAN_CHUNK_BYTES, ScanMode, ScanSummary, scan_frames};

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
    /// Next free byte; `SEGMENT_HEADER_BYTES..=map.len()`.
    write_offset: usize,
    /// Bytes before this offset were handed back to the page cache; a
    /// multiple of the page size, at most `write_offset`.
    released_offset: usize,
    /// Bytes before this offset have been faulted in ahead of writing.
    populated_offset: usize,
    pub records: u64,
}

impl WritableSegment {
    /// Creates segment `sequence` in `dir`, preallocated to `segment_bytes`.
    pub fn create(
        dir: &Path,
        sequence: u64,
        segment_bytes: usize,
        created_ns: u64,
    ) -> Result<Self, SegmentError> {
        assert!(
            segment_bytes > SEGMENT_HEADER_BYTES + 4,
            "segment_bytes is validated"
        );
        let path = dir.join(segment_name(sequence));
        let temporary = dir.join(temporary_name(sequence));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temporary)
            .map_err(io_error(&path, "create"))?;
        let prepared = Self::prepare(&file, &path, segment_bytes).and_then(|mut map| {
            write_header(&mut map, segment_bytes, sequence, created_ns);
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
            write_offset: SEGMENT_HEADER_BYTES,
            released_offset: 0,
            populated_offset: 0,
            records: 0,
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

    /// Bytes still free for frames (keeping room for the end marker).
    pub fn free_bytes(&self) -> usize {
        self.map.len().saturating_sub(self.write_offset + 4)
    }

    pub fn len_bytes(&self) -> usize {
        self.map.len()
    }

    /// Appends one encoded frame. The caller checked `free_bytes`.
    pub fn append(&mut self, frame: &[u8]) {
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
        // Body first, length last: a crash between the two leaves a zero
        // length, which reads as the end of the segment.
        self.map[self.write_offset + 4..end].copy_from_slice(&frame[4..]);
        // Readers of the segment being written (`dlq dump`) read the page
        // cache concurrently: the length must not become visible first.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.map[self.write_offset..self.write_offset + 4].copy_from_slice(&frame[..4]);
        self.write_offset = end;
        self.records += 1;
        if self.write_offset - self.released_offset >= RELEASE_BYTES {
            self.release_written();
        }
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

/// Writes the header of a new segment into its map.
fn write_header(map: &mut MmapMut, segment_bytes: usize, sequence: u64, created_ns: u64) {
    let header = &mut map[..SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
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
    /// Bytes of the header read (all of them unless the file is shorter).
    header_bytes: u64,
    /// Bytes after the header.
    body_bytes: u64,
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
        let damage = check_header(&header, named).err();
        let sequence = named.unwrap_or_else(|| {
            header.get(24..32).map_or(0, |bytes| {
                u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
            })
        });
        Ok(Self {
            sequence,
            path: path.to_path_buf(),
            file,
            header: damage,
            header_bytes: header.len() as u64,
            body_bytes: file_bytes.saturating_sub(SEGMENT_HEADER_BYTES as u64),
            mode,
        })
    }

    /// Visits every intact record in order, one chunk of records at a time
    /// (records borrow a buffer that is reused for the next chunk); returns
    /// what the scan found, damage to the header included. See `scan` for
    /// how corrupt regions are crossed.
    pub fn scan_chunks(
        &mut self,
        visit: &mut dyn FnMut(&[Record<'_>]),
    ) -> Result<ScanSummary, SegmentError> {
        let mut summary = scan_reader(
            &mut self.file,
            self.body_bytes,
            SCAN_CHUNK_BYTES,
            self.mode,
            visit,
        )
        .map_err(io_error(&self.path, "read"))?;
        if let Some(damage) = self.header {
            summary.header = Some(damage);
            summary.corrupt += 1;
            summary.corrupt_bytes += self.header_bytes;
        }
        Ok(summary)
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
        let mut segment = WritableSegment::create(dir.path(), 7, 4096, 0).expect("create");
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
        let mut segment = WritableSegment::create(dir.path(), 2, segment_bytes, 0).expect("create");
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
            WritableSegment::create(dir.path(), 3, 8 * SCAN_CHUNK_BYTES, 0).expect("create");
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
