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

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::{Advice, MmapMut, UncheckedAdvice};

use crate::dlq::record::{DecodeError, Frame, Record, decode_frame};

pub const SEGMENT_MAGIC: &[u8; 8] = b"LCDLQSEG";
pub const SEGMENT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_BYTES: usize = 64;
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
    #[error("DLQ segment {path} has no valid header")]
    Header { path: PathBuf },
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
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error(&path, "create"))?;
        lock_exclusive(&file, &path)?;
        // SAFETY: posix_fallocate reads the descriptor and two integers; no
        // memory is shared with the call.
        let result =
            unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, segment_bytes as libc::off_t) };
        if result != 0 {
            let _ = std::fs::remove_file(&path);
            return Err(io_error(&path, "preallocate")(
                std::io::Error::from_raw_os_error(result),
            ));
        }
        let mut map = match map(&file, &path) {
            Ok(map) => map,
            Err(error) => {
                let _ = std::fs::remove_file(&path);
                return Err(error);
            }
        };
        let header = &mut map[..SEGMENT_HEADER_BYTES];
        header[0..8].copy_from_slice(SEGMENT_MAGIC);
        header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        header[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        header[16..24].copy_from_slice(&(segment_bytes as u64).to_le_bytes());
        header[24..32].copy_from_slice(&sequence.to_le_bytes());
        header[32..40].copy_from_slice(&created_ns.to_le_bytes());
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

impl Drop for WritableSegment {
    fn drop(&mut self) {
        let _ = self.map.flush();
    }
}

/// What a scan of a segment found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanSummary {
    pub records: u64,
    /// Records whose frame failed to decode; the scan resynchronises on the
    /// next plausible frame when the length itself was intact, else stops.
    pub corrupt: u64,
    /// Bytes after the last readable record that are not zero: a torn tail.
    pub torn_tail: bool,
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

/// A sealed segment, read-only, for listing, dumping and replay. It is read
/// in chunks through a reused buffer (not mapped, so a concurrent truncation
/// cannot fault this process; not read whole, so replaying a 64 MiB segment
/// does not take 64 MiB of memory).
#[derive(Debug)]
pub struct ReadableSegment {
    pub sequence: u64,
    pub path: PathBuf,
    file: File,
}

/// Bytes read at a time by a scan (a longer record grows the buffer once).
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;

impl ReadableSegment {
    /// Opens and locks a segment and checks its header.
    pub fn open(path: &Path) -> Result<Self, SegmentError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path, "open"))?;
        lock_exclusive(&file, path)?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        let read = file.read_exact(&mut header);
        if read.is_err() || &header[0..8] != SEGMENT_MAGIC {
            return Err(SegmentError::Header {
                path: path.to_path_buf(),
            });
        }
        let sequence = u64::from_le_bytes(header[24..32].try_into().expect("8 bytes"));
        Ok(Self {
            sequence,
            path: path.to_path_buf(),
            file,
        })
    }

    /// Visits every valid record in order, one chunk of records at a time
    /// (records borrow a buffer that is reused for the next chunk); returns
    /// what the scan found. A frame with a bad checksum but a plausible
    /// length is counted and skipped; an implausible or cut-off one ends the
    /// scan (a torn tail).
    pub fn scan_chunks(
        &mut self,
        visit: &mut dyn FnMut(&[Record<'_>]),
    ) -> Result<ScanSummary, SegmentError> {
        let mut summary = ScanSummary::default();
        let mut buffer: Vec<u8> = Vec::with_capacity(SCAN_CHUNK_BYTES);
        let mut end_of_file = false;
        loop {
            end_of_file |= self.fill(&mut buffer)?;
            let (consumed, finished) = scan_buffer(&buffer, end_of_file, &mut summary, visit);
            if finished || (end_of_file && consumed == 0) {
                return Ok(summary);
            }
            if consumed == 0 {
                // One frame is longer than the buffer: make room for it.
                buffer.reserve(buffer.capacity());
            }
            buffer.drain(..consumed);
        }
    }

    /// Visits every valid record in order (see [`scan_chunks`](Self::scan_chunks)).
    pub fn scan(
        &mut self,
        mut visit: impl FnMut(&Record<'_>),
    ) -> Result<ScanSummary, SegmentError> {
        self.scan_chunks(&mut |records| records.iter().for_each(&mut visit))
    }

    /// Reads until the buffer's capacity is used; true at end of file.
    fn fill(&mut self, buffer: &mut Vec<u8>) -> Result<bool, SegmentError> {
        while buffer.len() < buffer.capacity() {
            let start = buffer.len();
            buffer.resize(buffer.capacity(), 0);
            let read = self.file.read(&mut buffer[start..]);
            let bytes = match read {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => 0,
                Err(error) => {
                    buffer.truncate(start);
                    return Err(io_error(&self.path, "read")(error));
                }
            };
            buffer.truncate(start + bytes);
            if bytes == 0 {
                return Ok(true);
            }
        }
        Ok(false)
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

/// Decodes the whole frames at the start of `buffer`, hands their records to
/// `visit`, and returns (bytes consumed, scan finished).
fn scan_buffer(
    buffer: &[u8],
    end_of_file: bool,
    summary: &mut ScanSummary,
    visit: &mut dyn FnMut(&[Record<'_>]),
) -> (usize, bool) {
    let mut records = Vec::new();
    let mut offset = 0;
    let mut finished = false;
    while offset + 4 <= buffer.len() {
        match decode_frame(&buffer[offset..]) {
            Ok(Frame::End) => {
                finished = true;
                break;
            }
            Ok(Frame::Record(record, taken)) => {
                records.push(record);
                offset += taken;
            }
            Err(DecodeError::Truncated { .. }) if !end_of_file => break,
            Err(DecodeError::Length(_) | DecodeError::Truncated { .. }) => {
                summary.corrupt += 1;
                summary.torn_tail = buffer[offset..].iter().any(|&byte| byte != 0);
                finished = true;
                break;
            }
            Err(_) => {
                summary.corrupt += 1;
                let length =
                    u32::from_le_bytes(buffer[offset..offset + 4].try_into().expect("4 bytes"))
                        as usize;
                offset += 8 + length;
            }
        }
    }
    if end_of_file && !finished && offset + 4 > buffer.len() {
        finished = true;
    }
    summary.records += records.len() as u64;
    if !records.is_empty() {
        visit(&records);
    }
    (offset, finished)
}

/// Walks the frames of a whole segment body held in memory (see
/// [`ReadableSegment::scan_chunks`] for the rules).
pub fn scan_frames(bytes: &[u8], visit: &mut dyn FnMut(&[Record<'_>])) -> ScanSummary {
    let mut summary = ScanSummary::default();
    scan_buffer(bytes, true, &mut summary, visit);
    summary
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
                corrupt: 0,
                torn_tail: false
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
