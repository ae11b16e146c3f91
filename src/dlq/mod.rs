//! The dead-letter queue: entries that could not be delivered, kept on disk
//! in fixed-size, preallocated, memory-mapped segment files, one directory
//! per sink (`<dir>/<sink id>/segment-NNNN.dlq`).
//!
//! Entries that can never be delivered as they are (the sink refused them
//! for good: too large, not authorized, invalid topic) go to the sink's
//! `rejected/` directory instead (`<dir>/<sink id>/rejected/segment-NNNN.dlq`,
//! same format, reason codes 5 to 8): listed and dumped by `dlq list|dump`,
//! counted in `log_capturer_dlq_rejected_total`, never replayed
//! automatically. Its size is bounded by the same `max_bytes` and policy,
//! separately per writer.
//!
//! Invariants (see `segment`, `block` and `record` for the byte layouts):
//! * a segment is preallocated at its full size and never grows; a full disk
//!   is an error when a segment is created, never a SIGBUS;
//! * records are written in compressed blocks (format v2) that each carry a
//!   CRC32C over their compressed bytes; a torn or corrupt block (or v1
//!   record) is detected, counted and skipped, never trusted; a corrupt
//!   region or a damaged segment header hides no intact block (the scan
//!   resynchronises, see `scan`);
//! * a record is stored once its frame is in the segment's open block area
//!   (see `segment`): a crash loses no record counted as stored;
//! * records are self-describing: sink id and labels are strings, the
//!   labels in a dictionary of the block that holds them;
//! * a sealed segment's trailer holds its counts, so that start-up reads 64
//!   bytes of it instead of scanning it; a segment without one is scanned;
//! * v1 segments (a frame per record, from earlier builds) are read,
//!   listed, dumped and replayed like v2 ones;
//! * records never span segments;
//! * the writer (the dispatcher) creates segments; replay deletes a segment
//!   only after every record recovered from it was acknowledged (delivered,
//!   or moved to `rejected/`), and records which ones were in an `ack` file
//!   beside it as it goes (see `ack`), so that no replay sends an
//!   acknowledged record again; both hold an exclusive `flock` on a segment
//!   while they use it; `dlq list` and `dlq dump` read without any lock;
//! * the total size is bounded by `max_bytes`; at the bound, `drop_oldest`
//!   deletes the oldest sealed segment and `drop_new` refuses the new
//!   entries; both count what they drop.
//!
//! Durability: records reach the page cache when appended (a shared map),
//! so they survive a crash of the process; the map is flushed
//! asynchronously when a segment is sealed and once a second, and
//! synchronously when the writer is dropped (which seals its segment).
//!
//! Thread: a writer belongs to the dispatcher (or, for `rejected/`, to a
//! replay). Allocations: at open, the writer's buffers (a frame, a block
//! builder, a zstd context of about 1 MiB); they grow to the largest record
//! once. Appending allocates nothing. Limits: a block closes at 64 KiB of
//! lines (`block::BLOCK_INPUT_BYTES`) or when the open block area (an eighth
//! of a segment, at most 128 KiB) is full; a record too large for that area
//! is a block of its own, up to the segment's size ([`line_bytes_max`]).

pub mod ack;
pub mod block;
pub mod header;
pub mod inspect;
pub mod record;
pub mod scan;
pub mod segment;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use crate::metrics::{Counter, Gauge};
use block::{BlockBuilder, block_frame_bound, record_payload_bound};
use header::Layout;
use record::{Reason, Record, encode_frame};
use segment::{ReadableSegment, SegmentError, WritableSegment, list_segments};

/// What became of a record handed to [`DlqSink::store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Stored {
    /// In a segment (in the page cache: it survives a crash of the process).
    Stored,
    /// Dropped by the size policy (`drop_new`, or a record larger than a
    /// segment), counted: what the operator chose.
    Dropped,
    /// Not written (an I/O error, no directory, no segment): counted and
    /// logged, and not accounted for.
    Lost,
}

/// Why an entry could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("DLQ directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("DLQ for sink {sink} is full ({max_bytes} bytes, policy drop_new)")]
    Full { sink: String, max_bytes: u64 },
    #[error("DLQ record of {bytes} bytes does not fit a segment of {segment_bytes} bytes")]
    TooLarge { bytes: usize, segment_bytes: usize },
}

/// Counters of one sink's DLQ.
#[derive(Debug, Default)]
pub struct DlqMetrics {
    pub sink: String,
    /// Stored records by reason: retry queue full, attempts exhausted,
    /// permanent error, shutdown (`Reason` codes 1 to 4).
    pub stored: [Counter; 4],
    /// Records in the segments on disk.
    pub entries: Gauge,
    /// Bytes of the segment files on disk (preallocated: a multiple of
    /// `segment_bytes`).
    pub size_bytes: Gauge,
    /// Bytes of those files holding data: segment headers and closed
    /// blocks (v1 segments: their frames).
    pub used_bytes: Gauge,
    /// Bytes of the lines (messages) of the records in those blocks, before
    /// compression: with `used_bytes`, the compression ratio.
    pub input_bytes: Gauge,
    /// The configured bound, `max_bytes`.
    pub max_bytes: Gauge,
    /// Records dropped at the size bound (either policy).
    pub dropped: Counter,
    /// Records that could not be written (disk full, read-only, ...).
    pub write_errors: Counter,
    /// Corrupt regions (each hid at least one record; a torn record is
    /// one) and damaged segment headers found when scanning.
    pub corrupt: Counter,
    /// Bytes of those regions and headers.
    pub corrupt_bytes: Counter,
    /// Records replayed and acknowledged (`reprocess_attempts{result="success"}`).
    pub replayed: Counter,
    /// Records replayed and not acknowledged (`result="failure"`).
    pub replay_failed: Counter,
    /// Records moved to `rejected/`, by reason (`Reason::REJECTED` order,
    /// codes 5 to 12).
    pub rejected: [Counter; Reason::REJECTED.len()],
}

impl DlqMetrics {
    pub fn stored_for(&self, reason: Reason) -> &Counter {
        assert!(!reason.is_rejection(), "{reason:?} is counted as rejected");
        &self.stored[reason as usize - 1]
    }

    pub fn rejected_for(&self, reason: Reason) -> &Counter {
        assert!(reason.is_rejection(), "{reason:?} is not a rejection");
        &self.rejected[reason as usize - Reason::MessageTooLarge as usize]
    }

    /// Records stored, all reasons.
    pub fn stored_total(&self) -> u64 {
        self.stored.iter().map(Counter::get).sum()
    }
}

/// The `rejected/` directory of a sink's DLQ directory.
pub fn rejected_dir(sink_dir: &Path) -> PathBuf {
    sink_dir.join(REJECTED_DIR_NAME)
}

pub const REJECTED_DIR_NAME: &str = "rejected";

/// What the DLQ does when it reaches `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DlqPolicy {
    /// Delete the oldest segment to make room (counted).
    #[default]
    DropOldest,
    /// Refuse new entries (counted).
    DropNew,
}

/// Settings of the DLQ, from `[dlq]`.
#[derive(Debug, Clone)]
pub struct DlqSettings {
    pub dir: PathBuf,
    pub segment_bytes: usize,
    pub max_bytes: u64,
    pub policy: DlqPolicy,
}

/// A segment the writer no longer writes, as the writer accounts for it.
#[derive(Debug)]
struct SealedSegment {
    path: PathBuf,
    /// Records not yet acknowledged by a replay.
    records: u64,
    used_bytes: u64,
    input_bytes: u64,
}

/// What start-up learned of one segment already on disk.
#[derive(Debug, Default)]
struct Found {
    records: u64,
    used_bytes: u64,
    input_bytes: u64,
    fingerprint: ack::Fingerprint,
    in_use: bool,
}

/// One sink's DLQ writer, owned by the dispatcher (and, for `rejected/`,
/// by a replay too).
#[derive(Debug)]
pub struct DlqWriter {
    sink: String,
    dir: PathBuf,
    /// Writes `rejected/`: counts into `rejected`, not `stored`, and leaves
    /// the `entries`, `size_bytes`, `used_bytes` and `input_bytes` gauges
    /// (replayable records) alone.
    rejected: bool,
    /// Writes v1 segments, as earlier builds did (tests only).
    v1: bool,
    settings: DlqSettings,
    active: Option<WritableSegment>,
    sealed: VecDeque<SealedSegment>,
    sequence_next: u64,
    /// The v1 frame of the record being stored.
    frame: Vec<u8>,
    /// The records of the open block (v2).
    builder: BlockBuilder,
    /// The frame of the block being closed.
    block: Vec<u8>,
    /// Message bytes of the records of the open block.
    block_input_bytes: u64,
    flushed_at: Instant,
    metrics: Arc<DlqMetrics>,
}

impl DlqWriter {
    /// Opens `<dir>/<sink>`, creating it, and takes stock of the segments
    /// already there (they are kept for replay; new records go to a new
    /// segment).
    pub fn open(sink: &str, settings: &DlqSettings) -> Result<Self, DlqError> {
        let metrics = Arc::new(DlqMetrics {
            sink: sink.to_string(),
            ..DlqMetrics::default()
        });
        Self::open_with_metrics(sink, settings, metrics)
    }

    /// [`open`](Self::open), counting into existing metrics.
    pub fn open_with_metrics(
        sink: &str,
        settings: &DlqSettings,
        metrics: Arc<DlqMetrics>,
    ) -> Result<Self, DlqError> {
        Self::open_in(sink, settings.dir.join(sink), false, settings, metrics)
    }

    /// A writer of v1 segments, as earlier builds wrote them: for tests of
    /// an upgrade with a DLQ on disk.
    #[doc(hidden)]
    pub fn open_v1(sink: &str, settings: &DlqSettings) -> Result<Self, DlqError> {
        let mut writer = Self::open(sink, settings)?;
        writer.v1 = true;
        Ok(writer)
    }

    /// Opens the sink's `rejected/` directory, counting into `metrics`.
    pub fn open_rejected(
        sink: &str,
        settings: &DlqSettings,
        metrics: Arc<DlqMetrics>,
    ) -> Result<Self, DlqError> {
        let dir = rejected_dir(&settings.dir.join(sink));
        Self::open_in(sink, dir, true, settings, metrics)
    }

    fn open_in(
        sink: &str,
        dir: PathBuf,
        rejected: bool,
        settings: &DlqSettings,
        metrics: Arc<DlqMetrics>,
    ) -> Result<Self, DlqError> {
        let directory_error = |source| DlqError::Directory {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(directory_error)?;
        if let Err(error) = ack::remove_orphans(&dir) {
            tracing::warn!(path = %dir.display(), %error, "cannot remove stale DLQ acknowledgement files");
        }
        segment::remove_temporaries(&dir).map_err(directory_error)?;
        let mut sealed = VecDeque::new();
        let mut sequence_next = 1;
        for (sequence, path) in list_segments(&dir).map_err(directory_error)? {
            sequence_next = sequence_next.max(sequence + 1);
            match take_stock(&path, &metrics) {
                // Another writer's active segment (`rejected/` is shared
                // with a replay); it is that writer's to bound.
                Ok(found) if rejected && found.in_use => {}
                Ok(found) => {
                    let handled = ack::AckState::load(&path, sequence, found.fingerprint).handled();
                    sealed.push_back(SealedSegment {
                        path,
                        records: found.records - handled,
                        used_bytes: found.used_bytes,
                        input_bytes: found.input_bytes,
                    });
                }
                // Kept in the sealed list: replay and the size bound still
                // see it, and the next start-up tries again.
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain::ErrorChain(&error), "DLQ segment could not be read; its records are not counted");
                    sealed.push_back(SealedSegment {
                        path,
                        records: 0,
                        used_bytes: 0,
                        input_bytes: 0,
                    });
                }
            }
        }
        if !rejected {
            let sum = |field: fn(&SealedSegment) -> u64| sealed.iter().map(field).sum::<u64>();
            metrics.entries.set(sum(|segment| segment.records));
            metrics.used_bytes.set(sum(|segment| segment.used_bytes));
            metrics.input_bytes.set(sum(|segment| segment.input_bytes));
            metrics.max_bytes.set(settings.max_bytes);
        }
        let writer = Self {
            sink: sink.to_string(),
            dir,
            rejected,
            v1: false,
            settings: settings.clone(),
            active: None,
            sealed,
            sequence_next,
            frame: Vec::with_capacity(64 * 1024),
            builder: BlockBuilder::new(),
            block: Vec::new(),
            block_input_bytes: 0,
            flushed_at: Instant::now(),
            metrics,
        };
        writer.publish_size();
        Ok(writer)
    }

    pub fn metrics(&self) -> Arc<DlqMetrics> {
        Arc::clone(&self.metrics)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores one record. On error the record is counted (dropped or
    /// write error) by this writer; the caller only logs.
    pub fn append(&mut self, record: &Record<'_>) -> Result<(), DlqError> {
        encode_frame(&mut self.frame, record);
        assert_eq!(
            record.reason.is_rejection(),
            self.rejected,
            "{:?} written to the right directory",
            record.reason
        );
        let result = if self.v1 {
            self.append_frame()
        } else {
            self.append_record(record)
        };
        match &result {
            Ok(()) => {
                let active = self.active.as_mut().expect("a record was stored");
                active.note(record);
                if self.rejected {
                    self.metrics.rejected_for(record.reason).add(1);
                } else {
                    self.metrics.stored_for(record.reason).add(1);
                    self.metrics.entries.add(1);
                    if self.v1 {
                        // v1 frames are stored as they are: no block to
                        // count them at.
                        self.metrics.input_bytes.add(record.message.len() as u64);
                    }
                }
            }
            Err(DlqError::Full { .. }) => self.metrics.dropped.add(1),
            Err(_) => self.metrics.write_errors.add(1),
        }
        result
    }

    fn append_frame(&mut self) -> Result<(), DlqError> {
        let capacity = self.settings.segment_bytes - segment::SEGMENT_HEADER_BYTES - 4;
        if self.frame.len() > capacity {
            return Err(DlqError::TooLarge {
                bytes: self.frame.len(),
                segment_bytes: self.settings.segment_bytes,
            });
        }
        self.make_room(self.frame.len())?;
        let active = self.active.as_mut().expect("make_room opened a segment");
        active.append(&self.frame);
        self.add_used(self.frame.len() as u64);
        Ok(())
    }

    /// Stores a record in the open block of the active segment (format
    /// v2), closing the block first when it is full; a record too large
    /// for the open block area becomes a block of its own at once.
    fn append_record(&mut self, record: &Record<'_>) -> Result<(), DlqError> {
        let alone_bytes = block_frame_bound(record_payload_bound(record));
        if alone_bytes > block_room_bytes(self.settings.segment_bytes) {
            return Err(DlqError::TooLarge {
                bytes: alone_bytes,
                segment_bytes: self.settings.segment_bytes,
            });
        }
        let staging_bytes = Layout::of(self.settings.segment_bytes as u64)
            .map_or(0, |layout| layout.trailer_start - layout.staging_start);
        if self.frame.len() + segment::STAGING_HEADER_BYTES > staging_bytes {
            self.close_block();
            self.make_room(alone_bytes)?;
            self.builder.add(record);
            self.block_input_bytes += record.message.len() as u64;
            self.close_block();
            return Ok(());
        }
        let close = self.active.as_ref().is_some_and(|active| {
            !self.builder.is_empty()
                && (self.builder.is_full()
                    || active.staging_free_bytes() < self.frame.len()
                    || self.builder.sink() != record.sink)
        });
        if close {
            self.close_block();
        }
        let payload_bytes = self.builder.payload_bytes() + record_payload_bound(record);
        self.make_room(block_frame_bound(payload_bytes))?;
        let active = self.active.as_mut().expect("make_room opened a segment");
        active.stage(&self.frame);
        self.builder.add(record);
        self.block_input_bytes += record.message.len() as u64;
        Ok(())
    }

    /// Makes sure the active segment has `bytes` free for frames or
    /// blocks, rolling to a new one if not.
    fn make_room(&mut self, bytes: usize) -> Result<(), DlqError> {
        let needs_roll = self
            .active
            .as_ref()
            .is_none_or(|active| active.free_bytes() < bytes);
        if needs_roll {
            self.roll()?;
        }
        Ok(())
    }

    /// Compresses the open block into the active segment.
    fn close_block(&mut self) {
        if self.builder.is_empty() {
            return;
        }
        let active = self
            .active
            .as_mut()
            .expect("an open block lives in the active segment");
        self.builder.finish(&mut self.block);
        active.write_block(&self.block);
        self.add_used(self.block.len() as u64);
        if !self.rejected {
            self.metrics.input_bytes.add(self.block_input_bytes);
        }
        self.block_input_bytes = 0;
    }

    fn add_used(&self, bytes: u64) {
        if !self.rejected {
            self.metrics.used_bytes.add(bytes);
        }
    }

    /// Seals the active segment and creates the next one, making room at
    /// the size bound first.
    fn roll(&mut self) -> Result<(), DlqError> {
        self.seal();
        let segment_bytes = self.settings.segment_bytes as u64;
        while (self.sealed.len() as u64 + 1) * segment_bytes > self.settings.max_bytes {
            if self.settings.policy == DlqPolicy::DropNew || !self.drop_oldest() {
                self.publish_size();
                return Err(DlqError::Full {
                    sink: self.sink.clone(),
                    max_bytes: self.settings.max_bytes,
                });
            }
        }
        let segment = self.create_next()?;
        self.add_used(segment::SEGMENT_HEADER_BYTES as u64);
        self.active = Some(segment);
        self.publish_size();
        Ok(())
    }

    /// Creates the next segment. A sequence another writer took meanwhile
    /// (a replay writes `rejected/` too) is skipped.
    fn create_next(&mut self) -> Result<WritableSegment, DlqError> {
        const SEQUENCES_TRIED_MAX: u32 = 64;
        let mut tried = 0;
        loop {
            let sequence = self.sequence_next;
            self.sequence_next += 1;
            // A stale acknowledgement file would be ignored (its fingerprint
            // cannot match), but it must not linger either.
            let path = self.dir.join(segment::segment_name(sequence));
            let _ = ack::remove_for(&path);
            let create = if self.v1 {
                WritableSegment::create_v1
            } else {
                WritableSegment::create
            };
            let created = create(
                &self.dir,
                sequence,
                self.settings.segment_bytes,
                crate::clock::now_ns(),
            );
            match created {
                Err(SegmentError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists
                        && tried < SEQUENCES_TRIED_MAX =>
                {
                    tried += 1;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Deletes the oldest sealed segment. False if none can be deleted.
    fn drop_oldest(&mut self) -> bool {
        let Some(oldest) = self.sealed.pop_front() else {
            return false;
        };
        match segment::delete_unread(&oldest.path) {
            Ok(()) => {
                let _ = ack::remove_for(&oldest.path);
                let records = oldest.records;
                self.metrics.dropped.add(records);
                self.forget(&oldest);
                tracing::warn!(sink = %self.sink, path = %oldest.path.display(), records, "DLQ full: oldest segment dropped (policy drop_oldest)");
                true
            }
            // Already gone (replayed and deleted): that freed the room.
            Err(SegmentError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                true
            }
            Err(error) => {
                tracing::warn!(error = %crate::error_chain::ErrorChain(&error), "cannot drop the oldest DLQ segment");
                self.sealed.push_front(oldest);
                false
            }
        }
    }

    /// Takes a deleted segment out of the gauges.
    fn forget(&self, segment: &SealedSegment) {
        if !self.rejected {
            self.metrics.entries.subtract(segment.records);
            self.metrics.used_bytes.subtract(segment.used_bytes);
            self.metrics.input_bytes.subtract(segment.input_bytes);
        }
    }

    fn publish_size(&self) {
        if self.rejected {
            return;
        }
        let segments = self.sealed.len() as u64 + u64::from(self.active.is_some());
        self.metrics
            .size_bytes
            .set(segments * self.settings.segment_bytes as u64);
    }

    /// Flushes the active segment about once a second (call freely).
    pub fn flush_if_due(&mut self) {
        if self.flushed_at.elapsed().as_secs() >= 1 {
            if let Some(active) = &self.active {
                active.flush_async();
            }
            self.flushed_at = Instant::now();
        }
    }

    /// Seals the active segment so that replay can take it: closes its
    /// open block and writes its trailer.
    pub fn seal(&mut self) {
        self.close_block();
        if let Some(mut active) = self.active.take() {
            active.seal();
            self.sealed.push_back(SealedSegment {
                path: active.path.clone(),
                records: active.records,
                used_bytes: active.used_bytes() as u64,
                input_bytes: active.input_bytes,
            });
        }
    }
}

impl Drop for DlqWriter {
    /// Seals the active segment, so that the next start-up reads its
    /// counts from its trailer.
    fn drop(&mut self) {
        self.seal();
    }
}

/// Bytes a block may take in a v2 segment of `segment_bytes`.
fn block_room_bytes(segment_bytes: usize) -> usize {
    Layout::of(segment_bytes as u64).map_or(0, |layout| {
        layout.staging_start - segment::SEGMENT_HEADER_BYTES - 4
    })
}

/// The longest line a DLQ segment of `segment_bytes` stores, with room for
/// a generous label set: what the config check warns against.
pub fn line_bytes_max(segment_bytes: usize) -> usize {
    let room = block_room_bytes(segment_bytes).saturating_sub(64 * 1024);
    // zstd's bound adds 1/256 of the payload.
    room - room / 255
}

/// The counts of a segment found at start-up: from its trailer when it is
/// sealed and intact, else from a scan (which counts damage).
fn take_stock(path: &Path, metrics: &DlqMetrics) -> Result<Found, SegmentError> {
    let mut segment = ReadableSegment::open_unlocked(path)?;
    if let Some(trailer) = segment.trailer() {
        return Ok(Found {
            records: trailer.records,
            used_bytes: trailer.used_bytes,
            input_bytes: trailer.input_bytes,
            fingerprint: ack::Fingerprint {
                records: trailer.records,
                checksum: trailer.fingerprint,
            },
            in_use: false,
        });
    }
    let mut fingerprint = ack::Fingerprint::default();
    let summary = segment.scan(|record| fingerprint.add(record))?;
    if !summary.in_use {
        count_damage(metrics, path, &summary);
    }
    Ok(Found {
        records: summary.records,
        used_bytes: summary.used_bytes,
        input_bytes: summary.input_bytes,
        fingerprint,
        in_use: summary.in_use,
    })
}

/// Counts and logs what a start-up scan found damaged in one segment.
fn count_damage(metrics: &DlqMetrics, path: &Path, summary: &segment::ScanSummary) {
    metrics.corrupt.add(summary.corrupt);
    metrics.corrupt_bytes.add(summary.corrupt_bytes);
    if let Some(damage) = summary.header {
        tracing::warn!(path = %path.display(), %damage, records = summary.records, "DLQ segment header is damaged; its records were scanned anyway");
    }
    if summary.corrupt > u64::from(summary.header.is_some()) {
        tracing::warn!(path = %path.display(), corrupt = summary.corrupt, corrupt_bytes = summary.corrupt_bytes, torn_tail = summary.torn_tail, records = summary.records, "DLQ segment has corrupt regions; the intact records around them were recovered");
    }
}

/// A sink's DLQ as the dispatcher uses it: never fails to exist. When the
/// directory cannot be opened (read-only, missing mount) the records are
/// counted as write errors and opening is tried again every 10 s; when a
/// segment cannot be created in it (read-only, immutable, disk full) the
/// records are counted as write errors and creating is tried again after
/// 1 s. Errors are logged at most every 10 s, with the count of those not
/// logged. Meanwhile a record is counted without building an error or
/// touching the disk: no allocation and no system call per record while
/// the disk is in trouble. The record that is logged is the one tried, so
/// that the line logged carries the error of the moment.
#[derive(Debug)]
pub struct DlqSink {
    /// Set by the replay thread when only the active segment holds
    /// records: the dispatcher then seals it so that replay can take it.
    pub seal_request: Arc<std::sync::atomic::AtomicBool>,
    sink: String,
    settings: DlqSettings,
    writer: Option<DlqWriter>,
    /// The `rejected/` writer, opened at the first rejected record.
    rejected: Option<DlqWriter>,
    metrics: Arc<DlqMetrics>,
    reopen_at: Instant,
    /// Set when a segment could not be created: until then records are
    /// counted as write errors without a new try.
    create_retry_at: Option<Instant>,
    logged_at: Option<Instant>,
    unlogged: u64,
    rejected_logged_at: Option<Instant>,
    rejected_unlogged: u64,
}

const DLQ_RETRY_OPEN: std::time::Duration = std::time::Duration::from_secs(10);
const DLQ_RETRY_CREATE: std::time::Duration = std::time::Duration::from_secs(1);
const DLQ_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

impl DlqSink {
    pub fn open(sink: &str, settings: &DlqSettings) -> Self {
        let metrics = Arc::new(DlqMetrics {
            sink: sink.to_string(),
            ..DlqMetrics::default()
        });
        let mut dlq = Self {
            seal_request: Arc::default(),
            sink: sink.to_string(),
            settings: settings.clone(),
            writer: None,
            rejected: None,
            metrics,
            reopen_at: Instant::now(),
            create_retry_at: None,
            logged_at: None,
            unlogged: 0,
            rejected_logged_at: None,
            rejected_unlogged: 0,
        };
        dlq.try_open();
        // Rejected segments from an earlier run are scanned now, at
        // start-up, rather than on the dispatcher thread at the first
        // rejection.
        if rejected_dir(&settings.dir.join(sink)).is_dir() {
            dlq.open_rejected();
        }
        dlq
    }

    fn open_rejected(&mut self) -> bool {
        match DlqWriter::open_rejected(&self.sink, &self.settings, Arc::clone(&self.metrics)) {
            Ok(writer) => {
                self.rejected = Some(writer);
                true
            }
            Err(error) => {
                self.log_rate_limited(&error);
                false
            }
        }
    }

    fn try_open(&mut self) {
        match DlqWriter::open_with_metrics(&self.sink, &self.settings, Arc::clone(&self.metrics)) {
            Ok(writer) => self.writer = Some(writer),
            Err(error) => {
                tracing::error!(sink = %self.sink, error = %crate::error_chain::ErrorChain(&error), "dead-letter queue unavailable; undeliverable entries are counted as DLQ write errors until it opens");
                self.reopen_at = Instant::now() + DLQ_RETRY_OPEN;
            }
        }
    }

    pub fn metrics(&self) -> Arc<DlqMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Stores one record; a failure is counted and logged (rate-limited).
    /// A rejected record (reason codes 5 to 8) goes to `rejected/`. Says
    /// whether the record is accounted for: stored, or dropped by the
    /// size policy (counted, as configured); `Lost` when it could not be
    /// written, which must keep its file's position from moving past it.
    pub fn store(&mut self, record: &Record<'_>) -> Stored {
        if record.reason.is_rejection() {
            return self.store_rejected(record);
        }
        if self.writer.is_none() && Instant::now() >= self.reopen_at {
            self.try_open();
        }
        if self.writer.is_none() {
            self.metrics.write_errors.add(1);
            if self.error_log_due() {
                let error = DlqError::Directory {
                    path: self.settings.dir.join(&self.sink),
                    source: std::io::Error::other("not open"),
                };
                self.log_error(&error);
            }
            return Stored::Lost;
        }
        let waiting = self.create_retry_at.is_some_and(|at| Instant::now() < at);
        // Without a segment, an append would only try to create one again.
        if waiting && !self.error_log_due_peek() {
            self.metrics.write_errors.add(1);
            self.unlogged += 1;
            return Stored::Lost;
        }
        let writer = self.writer.as_mut().expect("checked above");
        let result = writer.append(record);
        match &result {
            Ok(()) => self.create_retry_at = None,
            Err(DlqError::Segment(_)) => {
                self.create_retry_at = Some(Instant::now() + DLQ_RETRY_CREATE);
            }
            Err(_) => {}
        }
        let stored = match &result {
            Ok(()) => Stored::Stored,
            Err(DlqError::Full { .. } | DlqError::TooLarge { .. }) => Stored::Dropped,
            Err(_) => Stored::Lost,
        };
        if let Err(error) = result {
            self.log_rate_limited(&error);
        }
        stored
    }

    fn store_rejected(&mut self, record: &Record<'_>) -> Stored {
        if self.rejected.is_none() && !self.open_rejected() {
            self.metrics.write_errors.add(1);
            return Stored::Lost;
        }
        let writer = self.rejected.as_mut().expect("opened above");
        if let Err(error) = writer.append(record) {
            let stored = match error {
                DlqError::Full { .. } | DlqError::TooLarge { .. } => Stored::Dropped,
                _ => Stored::Lost,
            };
            self.log_rate_limited(&error);
            return stored;
        }
        let due = self
            .rejected_logged_at
            .is_none_or(|at| at.elapsed() >= DLQ_LOG_INTERVAL);
        if !due {
            self.rejected_unlogged += 1;
            return Stored::Stored;
        }
        tracing::warn!(sink = %self.sink, reason = record.reason.as_str(), bytes = record.message.len(), not_logged_since_last = self.rejected_unlogged, "entry refused for good by the sink; kept in the DLQ's rejected/ directory, not retried (counted)");
        self.rejected_logged_at = Some(Instant::now());
        self.rejected_unlogged = 0;
        Stored::Stored
    }

    fn log_rate_limited(&mut self, error: &DlqError) {
        if self.error_log_due() {
            self.log_error(error);
        }
    }

    /// Whether an entry not stored is to be logged now; if not, it is
    /// counted among those not logged.
    fn error_log_due(&mut self) -> bool {
        let due = self.error_log_due_peek();
        if !due {
            self.unlogged += 1;
        }
        due
    }

    fn error_log_due_peek(&self) -> bool {
        self.logged_at
            .is_none_or(|at| at.elapsed() >= DLQ_LOG_INTERVAL)
    }

    fn log_error(&mut self, error: &DlqError) {
        tracing::error!(sink = %self.sink, error = %crate::error_chain::ErrorChain(error), not_logged_since_last = self.unlogged, "entry not stored in the dead-letter queue (counted)");
        self.logged_at = Some(Instant::now());
        self.unlogged = 0;
    }

    /// Flushes about once a second, and seals the active segment when
    /// the replay thread asked for it.
    pub fn flush_if_due(&mut self) {
        if let Some(rejected) = self.rejected.as_mut() {
            rejected.flush_if_due();
        }
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        writer.flush_if_due();
        if self
            .seal_request
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            writer.seal();
            writer.publish_size();
        }
    }
}

/// Bytes of the segment files in one sink's directory (a replay may have
/// deleted some since the writer last looked).
pub fn dir_size_bytes(dir: &Path) -> u64 {
    list_segments(dir)
        .map(|segments| {
            segments
                .iter()
                .filter_map(|(_, path)| std::fs::metadata(path).ok())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0)
}

/// What a scan of every segment in `dir` (one sink's directory) found,
/// oldest first: `(segment sequence, path, summary)`. Takes no lock: works
/// while the daemon writes (see [`ReadableSegment::open_unlocked`]); a
/// segment deleted meanwhile (replayed, dropped) is left out.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf, segment::ScanSummary)>, DlqError> {
    let directory_error = |source| DlqError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    let mut listing = Vec::new();
    for (sequence, path) in list_segments(dir).map_err(directory_error)? {
        let opened = ReadableSegment::open_unlocked(&path);
        if segment::is_not_found(&opened) {
            continue;
        }
        let summary = opened?.scan(|_| {})?;
        listing.push((sequence, path, summary));
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, max_segments: u64, policy: DlqPolicy) -> DlqSettings {
        DlqSettings {
            dir: dir.to_path_buf(),
            segment_bytes: 4096,
            max_bytes: 4096 * max_segments,
            policy,
        }
    }

    fn record(message: &str) -> Record<'_> {
        Record {
            timestamp_ns: 5,
            attempts: 1,
            reason: Reason::AttemptsExhausted,
            terminated: true,
            sink: "k",
            labels: vec![("file", "/x")],
            message: message.as_bytes(),
        }
    }

    fn write(writer: &mut DlqWriter, count: usize) -> (usize, usize) {
        let (mut stored, mut refused) = (0, 0);
        for index in 0..count {
            match writer.append(&record(&format!("message {index:06} {}", "p".repeat(100)))) {
                Ok(()) => stored += 1,
                Err(DlqError::Full { .. }) => refused += 1,
                Err(error) => panic!("{error}"),
            }
        }
        (stored, refused)
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer =
            DlqWriter::open("k", &settings(dir.path(), 3, DlqPolicy::DropOldest)).expect("open");
        let (stored, refused) = write(&mut writer, 500);
        assert_eq!((stored, refused), (500, 0));
        let metrics = writer.metrics();
        drop(writer);
        let listing = list(&dir.path().join("k")).expect("list");
        assert_eq!(listing.len(), 3, "bounded to three segments");
        let kept: u64 = listing.iter().map(|(_, _, summary)| summary.records).sum();
        assert_eq!(
            kept + metrics.dropped.get(),
            500,
            "every record is kept or counted dropped"
        );
        assert_eq!(metrics.entries.get(), kept);
    }

    #[test]
    fn drop_new_refuses_and_counts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer =
            DlqWriter::open("k", &settings(dir.path(), 2, DlqPolicy::DropNew)).expect("open");
        let (stored, refused) = write(&mut writer, 500);
        assert!(refused > 0);
        assert_eq!(writer.metrics().dropped.get(), refused as u64);
        drop(writer);
        let kept: u64 = list(&dir.path().join("k"))
            .expect("list")
            .iter()
            .map(|(_, _, summary)| summary.records)
            .sum();
        assert_eq!(kept, stored as u64);
    }

    #[test]
    fn reopening_keeps_old_segments_and_starts_a_new_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = settings(dir.path(), 100, DlqPolicy::DropOldest);
        let mut writer = DlqWriter::open("k", &settings).expect("open");
        write(&mut writer, 10);
        drop(writer);
        let mut writer = DlqWriter::open("k", &settings).expect("reopen");
        assert_eq!(writer.metrics().entries.get(), 10);
        write(&mut writer, 5);
        drop(writer);
        let listing = list(&dir.path().join("k")).expect("list");
        let counts: Vec<u64> = listing
            .iter()
            .map(|(_, _, summary)| summary.records)
            .collect();
        assert_eq!(counts, vec![10, 5]);
    }

    #[test]
    fn unwritable_directory_is_an_error_not_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, "x").expect("file");
        let error = DlqWriter::open("k", &settings(&file, 2, DlqPolicy::DropNew))
            .expect_err("a file is no directory");
        assert!(error.to_string().contains("not-a-directory"), "{error}");
    }

    /// A DLQ whose directory cannot be opened counts every record, logs
    /// the first, and does not try to open again before its time.
    #[test]
    fn unopened_sink_counts_records_without_trying_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, "x").expect("file");
        let mut dlq = DlqSink::open("k", &settings(&file, 2, DlqPolicy::DropNew));
        for _ in 0..1000 {
            assert_eq!(dlq.store(&record("lost")), Stored::Lost);
        }
        assert!(dlq.writer.is_none());
        let metrics = dlq.metrics();
        assert_eq!(metrics.write_errors.get(), 1000);
        assert_eq!(metrics.stored_total(), 0);
        assert!(dlq.logged_at.is_some(), "the first record was logged");
        assert_eq!(dlq.unlogged, 999, "the others are counted as not logged");
    }

    /// A DLQ that cannot create a segment (here: the preallocation is
    /// refused) tries once, counts the records that follow without trying
    /// again until the retry time, then stores again once it can.
    #[test]
    fn failed_segment_creation_is_retried_after_a_pause() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = settings(dir.path(), 2, DlqPolicy::DropNew);
        settings.segment_bytes = 1 << 50;
        settings.max_bytes = 1 << 52;
        let mut dlq = DlqSink::open("k", &settings);
        let sequence_first = dlq.writer.as_ref().expect("opened").sequence_next;
        for _ in 0..1000 {
            assert_eq!(dlq.store(&record("lost")), Stored::Lost);
        }
        assert_eq!(
            dlq.writer.as_ref().expect("still open").sequence_next,
            sequence_first + 1,
            "one segment creation tried"
        );
        let metrics = dlq.metrics();
        assert_eq!(metrics.write_errors.get(), 1000);
        assert_eq!(dlq.unlogged, 999);
        assert!(dlq.create_retry_at.is_some());

        // The disk has room again and the pause is over.
        let writer = dlq.writer.as_mut().expect("still open");
        writer.settings.segment_bytes = 64 * 1024;
        writer.settings.max_bytes = 2 * 64 * 1024;
        dlq.create_retry_at = Some(Instant::now());
        assert_eq!(dlq.store(&record("kept")), Stored::Stored);
        assert_eq!(metrics.stored_total(), 1);
        assert_eq!(metrics.write_errors.get(), 1000);
        assert!(dlq.create_retry_at.is_none());
    }
}
