//! The file source: one thread that finds files by glob, follows them as
//! they grow and rotate, and remembers how far each one is delivered.
//!
//! Each round, the thread takes the receipts the dispatcher handed back
//! (positions that became delivered), scans its patterns when a scan is due
//! (see `discovery`), opens files waiting for a descriptor, and reads every
//! open file, up to [`READS_PER_FILE_MAX`] chunks per file so that one busy
//! file does not starve the others. A read goes straight into a pooled
//! [`SourceChunk`] after the file's carried-over partial line; the chunk is
//! split into lines, stamped with a [`Receipt`] (where its last line ends)
//! and pushed to the dispatcher; the round's last chunk is marked as its
//! end, and the dispatcher is woken once for the round. When a round finds
//! nothing new the thread parks for `poll_interval_ms`, so an idle source
//! costs nothing.
//!
//! Pacing: a write that inotify reports is read `write_wait` later (three
//! fifths of `[dispatcher] latency_target_ms`) or a little sooner: reads
//! are planned on a grid of write waits, so that the writes to many files
//! (and their slow polls) are read together, in one round; a busy file (found grown twice within two write
//! waits) is read again after `write_wait` without waiting for inotify, so
//! that it costs one wake-up per `write_wait`, not two per write. The first
//! round that finds it unchanged hands it back to inotify and its poll
//! interval.
//!
//! Files are known by device and inode, and a fingerprint of their first
//! KiB (see `positions`). Where a file starts:
//!
//! * a file with a stored position whose fingerprint still matches resumes
//!   at it (the first byte not known delivered);
//! * a stored file whose fingerprint no longer matches (the inode was
//!   reused) is a new file, read from 0, counted;
//! * a file found at start-up with no stored position starts at `start_at`;
//! * a file found later (created or moved in while running) is read from 0.
//!
//! Rotation: when a followed file is no longer at a matching path (renamed
//! away, as logrotate's `create` mode does, or deleted), it is still read:
//! the writer may append to it until it reopens its log. It is released
//! once read to its end and quiet for `rotate_wait_ms` (counted from when
//! it was found gone at the earliest, so a file quiet before its rename
//! still gets the writer's late lines), or at once when it is deleted and
//! read to its end (its descriptor is then the last holder
//! of its bytes). Unread bytes are never dropped by a timer. The new file at
//! the path is found by the scan that the rename prompts and read from 0.
//! A file found shorter than the read offset was truncated (copytruncate):
//! it is read again from 0, under a new reading number (`serial`) so that
//! receipts of the old content do not move the new position. Both counted.
//!
//! Positions: a file's position advances only when the dispatcher hands
//! back a receipt, that is once the batch holding the line and every batch
//! before it are complete. They are written to `<data_dir>/positions/<id>`
//! every `positions_interval_ms` (when something changed) and once more at
//! the end, after the dispatcher has finished. A final unterminated line is
//! not emitted at shutdown unless its file is gone or `exit_on_eof` is set:
//! it stays in the file, after the stored position, and is read whole after
//! a restart.
//!
//! Limits: `max_files` descriptors at once, counting the one that looks at
//! a newly found file; past it the file idle longest (at its end, at its
//! path) is closed and reopened later at its offset. A file found while
//! none is idle is followed unstarted: its position is looked up and its
//! fingerprint taken when it gets a descriptor.
//! The chunk pool (from `queue_capacity`) bounds what the source holds. A
//! chunk's span table holds [`limits::CHUNK_LINES_MAX`] lines; what does
//! not fit is carried into the next chunk, and no new bytes are read while
//! the carried tail still holds a complete line (or a piece of a longer
//! one). A file's carried-over tail is therefore at most one read plus a
//! partial line of at most `max_line_bytes`; a closed file carries none
//! (its offset is moved back instead). Only one chunk of the pool at a time
//! grows past [`limits::CHUNK_BYTES`] to hold a long line.
//!
//! Allocations: per new file (its entry, labels and buffers), per scan,
//! and per position write; none per line.

mod containers;
mod discovery;
mod ledger;
mod reading;
mod tracking;
mod waiting;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::clock::now_ns;
use crate::labels::{LabelSet, Symbol, SymbolTable};
use crate::limits;
use crate::metrics::{FileStatus, SourceMetrics};
pub use crate::source::SourceLinks;
use crate::source::positions::{FileIdentity, PositionRecord, PositionStore};
use crate::source::{Receipt, SourceChunk, StreamId};

pub use containers::DockerSettings;
use discovery::Discovery;
pub use discovery::is_glob;
use ledger::{FileKey, Ledger};

/// Chunks read from one file before the next file gets its turn.
pub const READS_PER_FILE_MAX: usize = 8;

/// A file whose poll brought fewer bytes than this is polled half as often
/// next time, down to once per [`POLL_BACKOFF_MAX`] poll intervals; a poll
/// that brings more polls at the full rate again. So a thousand slow files
/// cost about what one busy file does, and a slow file's lines wait at
/// most `POLL_BACKOFF_MAX × poll_interval_ms`.
pub const POLL_SLOW_BYTES: u64 = 4096;

/// Longest a stop spends reading rotated files (no longer at a followed
/// path) to their end: after a restart they would not be found again.
pub const STOP_DRAIN_MAX: Duration = Duration::from_secs(2);

/// Delivered bytes that make a position write due before its interval: a
/// backlog read flat out (after a restart, say) is stored as it goes, so
/// that a daemon killed again soon after does not send it all once more.
/// At 50,000 lines/s of 120 bytes the interval comes first.
pub const POSITIONS_WRITE_BYTES: u64 = 4 * 1024 * 1024;

/// The longest a file's polls are stretched, in poll intervals.
pub const POLL_BACKOFF_MAX: u32 = 8;

/// Where a file source starts in a file it has no position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    Beginning,
    End,
}

/// Where and how often positions are stored.
#[derive(Debug, Clone)]
pub struct PositionSettings {
    pub data_dir: PathBuf,
    pub interval: Duration,
    pub forget_after: Duration,
}

/// Settings of one file source, from its config table.
#[derive(Debug, Clone)]
pub struct FileSourceSettings {
    pub id: String,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    /// Static labels, besides `source_id` and `file`.
    pub labels: Vec<(String, String)>,
    pub start_at: StartAt,
    pub max_line_bytes: usize,
    pub poll_interval: Duration,
    /// How long after inotify reports a write the file is read, and how
    /// often a busy file is read: the writes of that time are read together
    /// (from `[dispatcher] latency_target_ms`).
    pub write_wait: Duration,
    pub glob_interval: Duration,
    pub max_files: usize,
    pub rotate_wait: Duration,
    pub exit_on_eof: bool,
    pub positions: PositionSettings,
    /// A docker source: the container logs to follow come from dockerd,
    /// not from `paths`.
    pub docker: Option<DockerSettings>,
}

/// Stream numbers, unique in the process: a batch reuses a label slice
/// while consecutive entries carry the same number.
static STREAM_NEXT: AtomicU32 = AtomicU32::new(0);

/// One file and where reading stands in it.
#[derive(Debug)]
struct FollowedFile {
    key: FileKey,
    identity: FileIdentity,
    /// This reading of the file (a truncation starts another).
    serial: u64,
    /// The path it was found at: its `file` label.
    path: PathBuf,
    label: Arc<str>,
    stream: StreamId,
    labels: LabelSet,
    /// Labels carried as strings: the symbol table was full.
    inline: Vec<(Symbol, Arc<str>)>,
    file: Option<File>,
    /// Bytes read from the file (into chunks or `pending`).
    offset: u64,
    /// The size last seen.
    size: u64,
    /// Bytes read but not yet part of a line: a partial last line, or
    /// complete lines that did not fit the last chunk's span table.
    pending: Vec<u8>,
    /// Bytes the next read asks for: about what one span table of lines
    /// took last time, between [`limits::READ_BYTES_MIN`] and
    /// [`limits::CHUNK_BYTES`].
    read_bytes_next: usize,
    at_eof: bool,
    /// When the file is read next, and how long it waits after a poll that
    /// reached its end (see [`POLL_SLOW_BYTES`]).
    next_poll: Instant,
    poll_every: Duration,
    /// Bytes read since the file's last end.
    bytes_since_end: u64,
    /// When a read last reached the file's end having found it grown: a
    /// file found grown again within two write waits is busy (see
    /// `reached_end`).
    grown_at: Option<Instant>,
    /// Its change time (seconds, nanoseconds) when it was closed for the
    /// descriptor limit: a scan that sees another reopens it.
    changed_at: (i64, i64),
    /// Closed for the descriptor limit with bytes to read.
    wants_open: bool,
    /// Found while no descriptor was to spare: its position is looked up
    /// and its fingerprint taken when it gets one.
    unstarted: Option<Unstarted>,
    /// Since when the file is no longer at a followed path.
    gone_since: Option<Instant>,
    /// Its last link was removed.
    deleted: bool,
    last_read: Instant,
    rotations: u64,
    truncations: u64,
    /// A container log's decoding state and labels (docker source).
    docker: Option<Box<containers::DockerFile>>,
}

/// A file followed before it had a descriptor.
#[derive(Debug, Clone, Copy)]
struct Unstarted {
    /// Its size at the first scan, if it was found then: its end for
    /// `start_at = "end"`.
    startup_size: Option<u64>,
}

impl FollowedFile {
    /// Gives the carried tail back to the file: the offset moves back over
    /// it and its buffer is freed, so a closed file holds none. It is read
    /// again when the file is read next.
    fn unread_carried(&mut self) {
        self.offset = self.receipt().end_offset;
        self.pending = Vec::new();
        if let Some(docker) = self.docker.as_mut() {
            docker.lines.forget_joining();
        }
    }

    /// Where the lines read so far end: the offset before the carried
    /// tail, or before the first piece of a container log's line still
    /// being joined.
    fn receipt(&self) -> Receipt {
        let carried = self.offset - self.pending.len() as u64;
        let joining = self
            .docker
            .as_ref()
            .and_then(|docker| docker.lines.hold_back());
        Receipt {
            device: self.key.0,
            inode: self.key.1,
            serial: self.serial,
            end_offset: joining.map_or(carried, |start| start.min(carried)),
        }
    }
}

/// What one read produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadStep {
    Progress,
    /// Lines, and the file is at its end.
    ProgressToEnd,
    EndOfFile,
    /// No chunk could be had (stopping, or the dispatcher is gone).
    NoChunk,
}

/// A file source thread's state.
#[derive(Debug)]
pub struct FileSource {
    settings: FileSourceSettings,
    symbols: Arc<SymbolTable>,
    files: Vec<FollowedFile>,
    /// Index into `files` by device and inode.
    index: HashMap<FileKey, usize>,
    open_files: usize,
    serial_next: u64,
    ledger: Ledger,
    store: Option<PositionStore>,
    records: Vec<PositionRecord>,
    /// When positions may be written next (when they changed).
    next_write: Instant,
    /// When the file metrics are published and gone files forgotten next.
    next_publish: Instant,
    discovery: Discovery,
    scanned: Vec<PathBuf>,
    /// Whether the first scan (which honours `start_at`) happened.
    scanned_once: bool,
    /// Stopping, and reading rotated files to their end.
    finishing: bool,
    links: SourceLinks,
    /// Empty chunks this thread holds; at most `pool_size`.
    spare: Vec<SourceChunk>,
    /// Chunks in the pool: in `spare`, in either ring, or at the dispatcher.
    pool_size: usize,
    stop: Arc<AtomicBool>,
    metrics: Arc<SourceMetrics>,
    /// Set when the thread starts.
    waiter: Option<waiting::Waiter>,
    /// The last chunk of the round so far, held back so that it can be
    /// marked as the round's end (`SourceChunk::ends_round`) when the
    /// round ends: one wake-up of the dispatcher per round, and a batch it
    /// may seal at once.
    held: Option<SourceChunk>,
    /// Chunks pushed since the dispatcher was last woken.
    pushed_unwoken: usize,
    /// Where the grid of read rounds starts (see `on_grid`).
    started: Instant,
    /// A docker source's containers.
    containers: Option<Box<containers::Containers>>,
}

impl FileSource {
    /// `chunks` is the pool, which the source owns until it pushes a chunk.
    pub fn new(
        settings: FileSourceSettings,
        symbols: Arc<SymbolTable>,
        links: SourceLinks,
        chunks: Vec<SourceChunk>,
        stop: Arc<AtomicBool>,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        assert!(
            links
                .chunks
                .as_ref()
                .is_some_and(|ring| ring.buffer().capacity() >= chunks.len()),
            "the ring holds the whole pool"
        );
        assert!(settings.max_files > 0, "max_files is validated non-zero");
        let discovery = Discovery::new(&settings.paths, &settings.exclude, settings.glob_interval);
        let containers = settings
            .docker
            .as_ref()
            .map(|docker| Box::new(containers::Containers::new(docker, Arc::clone(&metrics))));
        Self {
            containers,
            discovery,
            settings,
            symbols,
            files: Vec::new(),
            index: HashMap::new(),
            open_files: 0,
            serial_next: 1,
            ledger: Ledger::default(),
            store: None,
            records: Vec::new(),
            next_write: Instant::now(),
            next_publish: Instant::now(),
            scanned: Vec::new(),
            scanned_once: false,
            finishing: false,
            links,
            pool_size: chunks.len(),
            spare: chunks,
            stop,
            metrics,
            waiter: None,
            held: None,
            pushed_unwoken: 0,
            started: Instant::now(),
        }
    }

    /// Waits at most `timeout` for the dispatcher, or also for a watched
    /// write when no read is due within the write wait.
    fn wait(&mut self, timeout: Duration) {
        let watch_writes = timeout > self.settings.write_wait;
        self.waiter
            .as_mut()
            .expect("the waiter is bound when the thread starts")
            .wait(timeout, watch_writes);
    }

    /// The read round at or before `at`: rounds fall on a grid of write
    /// waits from the source's start, so that the reads planned for many
    /// files (after their writes, and their slow polls) come together, one
    /// round and one batch for all of them, however many files there are.
    fn on_grid(&self, at: Instant) -> Instant {
        let step = self.settings.write_wait.as_nanos();
        if step == 0 {
            return at;
        }
        let since = at.saturating_duration_since(self.started).as_nanos();
        let rounds = u32::try_from(since / step).unwrap_or(u32::MAX);
        self.started + self.settings.write_wait * rounds
    }

    /// Brings forward the next read of every file inotify saw written, to
    /// the round before the write wait from now.
    fn note_writes(&mut self, now: Instant) {
        let due = self.on_grid(now + self.settings.write_wait);
        let files = &mut self.files;
        self.discovery.read_events(now, |directory, name| {
            for file in files.iter_mut() {
                if file.next_poll > due
                    && file.path.file_name() == Some(name)
                    && file.path.parent() == Some(directory)
                {
                    file.next_poll = due;
                }
            }
        });
    }

    /// The thread body. Returns when stopped, or at end of input with
    /// `exit_on_eof`, once the dispatcher has finished and the last
    /// positions are written.
    pub fn run(mut self) {
        self.waiter = Some(waiting::Waiter::bind(
            &self.links.own,
            self.discovery.raw_fd(),
        ));
        // Chunks coming back wake this thread only while it waits for one
        // (`take_chunk`): with spares, it takes them at its next round.
        self.links.want_returns(false);
        self.load_positions();
        // Acquire pairs with the Release store of the shutdown path, so a
        // stop seen here is a stop requested before.
        while !self.stop.load(Ordering::Acquire) {
            self.take_commits();
            let now = Instant::now();
            self.poll_containers(now);
            self.note_writes(now);
            if self.discovery.is_due(now) {
                self.discover();
            }
            self.open_waiting();
            let mut progressed = false;
            // Files bring their own poll times; past them, an idle source
            // looks at its scans and positions at the slowest poll rate.
            let mut next_due = now + self.settings.poll_interval * POLL_BACKOFF_MAX;
            if let Some(due) = self.containers_due() {
                next_due = next_due.min(due);
            }
            for index in 0..self.files.len() {
                if self.files[index].next_poll <= now {
                    progressed |= self.poll_file(index);
                }
                next_due = next_due.min(self.files[index].next_poll);
            }
            self.release_finished();
            if now >= self.next_publish {
                self.publish();
                self.write_positions();
            } else if self.ledger.has_moved()
                && (now >= self.next_write || self.ledger.moved_bytes() >= POSITIONS_WRITE_BYTES)
            {
                self.write_positions();
            }
            if self.settings.exit_on_eof && self.is_at_end() {
                break;
            }
            if !progressed {
                self.end_round();
                self.wait(next_due.saturating_duration_since(Instant::now()));
            }
        }
        self.end_round();
        self.finish();
    }

    /// Every file read to its end (for `exit_on_eof`).
    fn is_at_end(&self) -> bool {
        self.scanned_once
            && self
                .files
                .iter()
                .all(|file| file.at_eof && !file.wants_open)
    }

    /// Ends the source: emits the final lines of files that are gone (and
    /// of all files with `exit_on_eof`), lets the dispatcher finish, takes
    /// its last receipts and writes the positions.
    fn finish(&mut self) {
        self.drain_gone_files();
        for index in 0..self.files.len() {
            let file = &self.files[index];
            if file.at_eof && (self.settings.exit_on_eof || file.gone_since.is_some()) {
                self.emit_pending(index);
            }
        }
        self.end_round();
        // Drop the ring before the wake-up, so that the dispatcher sees it
        // abandoned at once instead of at its next park timeout.
        drop(self.links.chunks.take());
        self.links.dispatcher.wake();
        // The dispatcher hands back receipts until it ends; its end bounds
        // this wait (`shutdown_timeout_ms`).
        loop {
            self.take_commits();
            while self.links.returns.pop().is_ok() {}
            if self.links.commits.is_abandoned() && self.links.commits.is_empty() {
                break;
            }
            self.wait(Duration::from_millis(limits::PARK_TIMEOUT_MS_MAX));
        }
        self.take_commits();
        self.publish();
        self.write_positions();
        for index in 0..self.files.len() {
            self.close(index);
        }
    }

    /// Reads rotated files on to their end, for at most [`STOP_DRAIN_MAX`]:
    /// a file renamed to a name no pattern matches is not found again
    /// after a restart, so its unread lines must be read now.
    fn drain_gone_files(&mut self) {
        self.finishing = true;
        // A rename just before the stop may not have been scanned yet.
        self.discover();
        let deadline = Instant::now() + STOP_DRAIN_MAX;
        for index in 0..self.files.len() {
            let file = &self.files[index];
            if file.gone_since.is_none() || file.file.is_none() {
                continue;
            }
            while Instant::now() < deadline {
                match self.read_once(index) {
                    Ok(ReadStep::Progress) => {}
                    Ok(ReadStep::ProgressToEnd | ReadStep::EndOfFile) => {
                        self.files[index].at_eof = true;
                        break;
                    }
                    Ok(ReadStep::NoChunk) | Err(_) => break,
                }
            }
        }
    }

    fn take_commits(&mut self) {
        while let Ok(receipt) = self.links.commits.pop() {
            self.ledger.commit(receipt);
        }
    }

    /// Reads the stored positions. Whatever cannot be used is logged and
    /// counted, and those files start at `start_at`: a damaged position
    /// file never keeps the daemon from starting.
    fn load_positions(&mut self) {
        let settings = &self.settings.positions;
        match PositionStore::open(&settings.data_dir, &self.settings.id) {
            Ok((store, decoded)) => {
                for what in &decoded.unusable {
                    tracing::warn!(source = %self.settings.id, path = %store.path().display(), unusable = %what, "position file: entries not used; those files start at start_at");
                }
                self.metrics
                    .positions_corrupt
                    .add(decoded.unusable.len() as u64);
                self.ledger = Ledger::from_records(decoded.records);
                self.store = Some(store);
            }
            Err(error) => {
                self.metrics.position_write_errors.add(1);
                tracing::error!(source = %self.settings.id, error = %crate::error_chain::ErrorChain(&error), "positions cannot be stored; files start at start_at after a restart");
            }
        }
        // The first delivery is written at once: a daemon that crashes
        // again and again within `positions_interval_ms` of its start must
        // still store how far it got, or its duplicates would add up.
        self.next_write = Instant::now();
        self.next_publish = Instant::now() + self.settings.positions.interval;
    }

    /// Forgets long-gone files and publishes the file metrics, once per
    /// `positions_interval_ms`.
    fn publish(&mut self) {
        self.next_publish = Instant::now() + self.settings.positions.interval;
        let index = &self.index;
        self.ledger
            .forget_gone(now_ns(), self.settings.positions.forget_after, |key| {
                index.contains_key(&key)
            });
        self.publish_files();
        self.publish_containers();
    }

    /// Writes the positions if something changed. A delivery is written at
    /// most once per `positions_interval_ms` (the first one at once);
    /// other changes (files found, forgotten) with the next publication.
    fn write_positions(&mut self) {
        if !self.ledger.is_dirty() {
            return;
        }
        self.next_write = Instant::now() + self.settings.positions.interval;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if !self.ledger.take_changes(&mut self.records) {
            return;
        }
        let started = Instant::now();
        match store.write(&self.records) {
            Ok(()) => {
                self.metrics.position_writes.add(1);
                let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.metrics.position_write_ns.add(nanos);
            }
            Err(error) => {
                self.ledger.mark_dirty();
                if self.metrics.position_write_errors.get() == 0 {
                    tracing::error!(source = %self.settings.id, error = %crate::error_chain::ErrorChain(&error), "cannot write positions; will retry");
                }
                self.metrics.position_write_errors.add(1);
            }
        }
    }

    /// Publishes the state of every file with a descriptor for the
    /// endpoint: at most `max_files` series per family, however many files
    /// wait closed.
    fn publish_files(&self) {
        self.metrics.files_watched.set(self.files.len() as u64);
        self.metrics.files_open.set(self.open_files as u64);
        let mut statuses = self
            .metrics
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        statuses.clear();
        let open = self.files.iter().filter(|file| file.file.is_some());
        statuses.extend(open.map(|file| {
            let delivered = self
                .ledger
                .get(file.key)
                .map_or(0, |position| position.delivered);
            FileStatus {
                path: Arc::clone(&file.label),
                open: file.file.is_some(),
                rotations: file.rotations,
                truncations: file.truncations,
                lag_bytes: file.size.max(file.offset).saturating_sub(delivered),
            }
        }));
        // A rotated file and its successor share a label: one series.
        statuses.sort_unstable_by(|left, right| left.path.cmp(&right.path));
        statuses.dedup_by(|later, kept| {
            if later.path != kept.path {
                return false;
            }
            kept.open |= later.open;
            kept.rotations = kept.rotations.max(later.rotations);
            kept.truncations = kept.truncations.max(later.truncations);
            kept.lag_bytes += later.lag_bytes;
            true
        });
    }
}
