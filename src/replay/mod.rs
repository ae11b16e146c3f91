//! The replay stage: reads a sink's DLQ segments back and delivers their
//! records through that sink's own thread (its replay lane, see
//! `sink::link`): the same ring, encoder, key, producer and delivery
//! reports as live traffic. A segment is deleted only after every record
//! recovered from it is settled.
//!
//! Thread: the daemon's automatic replay (`auto`) runs one per sink;
//! `log-capturer dlq replay` runs one on the command's thread beside a
//! one-sink pipeline (`pipeline::replay`). A segment the daemon still
//! writes is locked and skipped.
//!
//! ```text
//! replay_segment:
//!     lock the segment; scan it once to fingerprint the records it holds
//!     load its acknowledgement file (`ack`): records already settled
//!     scan again; for every step of records not yet settled (at most
//!         REPLAY_CHUNK_RECORDS, batch_size and batch_bytes):
//!         copy them into the replay arena as one batch, interning their
//!             labels into the step's own symbol table
//!         hand the batch to the sink on its replay lane; wait for its report
//!         delivered: settled
//!         failed for good (the sink's failure table says why): append to
//!             `<sink>/rejected/` with that reason; settled once stored
//!         failed, retryable: not settled; stop this segment (the sink is
//!             unwell) and keep it for the next replay
//!         write the acknowledgement file
//!     every record settled: delete the acknowledgement file, then the
//!         segment; else keep both for the next replay
//! ```
//!
//! Settled means delivered, or durably stored again in `rejected/`. A
//! record that fails again is not copied anywhere: it stays in its segment,
//! which is durable storage already, and the segment waits for the next
//! replay (the retry); so no record is ever in two live segments, and a
//! sink that keeps failing cannot grow the DLQ by replaying it.
//!
//! Duplicates: a record is sent again only if it was in flight when a
//! replay stopped without its acknowledgement being written: the step being
//! delivered at a `kill -9` or power loss (at most REPLAY_CHUNK_RECORDS
//! records). A damaged acknowledgement file is ignored, so its segment is
//! sent again whole: duplicates, never loss.
//!
//! Allocation: one arena (grown to a step's size and reused), and per step
//! a symbol table of the step's label strings and a vector of outcomes;
//! none per record beyond the label interning.

pub mod auto;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bumpalo::Bump;

use crate::batch::{OpenBatch, SOURCE_REPLAYED, SealedBatch, StreamId, arena_capacity_bytes};
use crate::dlq::ack::{AckState, Fingerprint};
use crate::dlq::record::{Reason, Record};
use crate::dlq::segment::{ReadableSegment, SegmentError};
use crate::dlq::{DlqMetrics, DlqSettings, DlqWriter};
use crate::labels::{LabelSet, SymbolTableBuilder};
use crate::sink::link::{FailureTable, LaneEnd, Outcome, Rejection, SinkJob};
use crate::wake::{self, Waker};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no sink {0:?} in the config")]
    UnknownSink(String),
    #[error("DLQ directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkBuildError),
    #[error("cannot start thread {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sink {sink}: thread panicked during the replay")]
    Panicked { sink: String },
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayReport {
    pub segments_deleted: u64,
    /// Segments kept: locked by a running daemon, or not fully acknowledged.
    pub segments_kept: u64,
    pub records_delivered: u64,
    pub records_failed: u64,
    /// Records that can never be delivered, moved to `rejected/`.
    pub records_rejected: u64,
    /// Records an earlier replay had handled, not sent again.
    pub records_skipped: u64,
    /// Corrupt or torn records skipped (counted, never delivered).
    pub records_corrupt: u64,
}

/// What became of one record handed to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No answer (yet); counts as failed.
    Pending,
    Acknowledged,
    /// Not delivered; a later replay may succeed.
    Failed,
    /// Can never be delivered as it is.
    Rejected(Rejection),
}

/// What replaying one segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentReplay {
    /// Locked: the daemon still writes it, or another replay holds it.
    Locked,
    /// Could not be opened or read.
    Unreadable,
    /// Replay was asked to stop part-way; the segment is kept (what was
    /// handled is recorded).
    Stopped,
    Replayed(SegmentCounts),
}

/// Records of one segment by what a replay did with them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SegmentCounts {
    pub delivered: u64,
    /// Not delivered; the segment is kept. The records after the first step
    /// with a failure are not tried (and not counted).
    pub failed: u64,
    pub rejected: u64,
    /// Handled by an earlier replay.
    pub skipped: u64,
    pub corrupt: u64,
    pub corrupt_bytes: u64,
    /// Every record was handled and the segment deleted.
    pub deleted: bool,
}

/// What a replay stage delivers with: the producer's end of one sink's
/// replay lane and what the sink marks there.
#[derive(Debug)]
pub struct ReplayLink {
    pub lane: LaneEnd,
    pub failures: Arc<FailureTable>,
    /// The lane's slot (the replay stage keeps one batch in flight).
    pub slot: usize,
    /// Wakes the thread that runs the replay; the sink wakes it after a
    /// report. Registered by [`Replayer::run_on_current_thread`].
    pub own: Waker,
}

/// How a replay sizes its steps, from `[dispatcher]`.
#[derive(Debug, Clone, Copy)]
pub struct StepLimits {
    /// Entries of a batch: the failure table has room for this many.
    pub batch_size: usize,
    /// Bytes of lines at which a step ends.
    pub batch_bytes: usize,
}

/// Replays segments of one sink's DLQ into that sink.
#[derive(Debug)]
pub struct Replayer {
    sink: String,
    link: ReplayLink,
    limits: StepLimits,
    /// The replay batch's arena, `None` while a batch is at the sink.
    arena: Option<Bump>,
    sequence_next: u64,
    /// Most records per second, or `None` for as fast as the sink takes them.
    rate: Option<u64>,
    settings: DlqSettings,
    /// `rejected/` writer, opened at the first rejection and kept for the
    /// replayer's life: a writer per replayed segment would start a new
    /// preallocated segment each time and reach `max_bytes` with a few
    /// records.
    rejected: Option<DlqWriter>,
    metrics: Arc<DlqMetrics>,
    /// Set when a batch's report did not come in time: the sink is stuck,
    /// and nothing more is handed to it until that report comes (the
    /// replay slot and the arena are still the sink's).
    abandoned: bool,
}

/// Most records delivered in one step: the acknowledgement file is written
/// after each step, so this bounds the records sent again after a `kill -9`.
pub const REPLAY_CHUNK_RECORDS: usize = 1000;

/// How long a step's report is waited for once a stop was asked for; a
/// sink that does not answer by then is abandoned (its records stay in
/// their segment).
const REPORT_WAIT_AT_STOP: Duration = Duration::from_secs(2);

/// How long a step's report is waited for at most: the longest a sink
/// holds a batch (librdkafka's `message.timeout.ms` defaults to 30 s here).
const REPORT_WAIT_MAX: Duration = Duration::from_secs(120);

/// The state of one pass over a segment.
struct Pass<'a> {
    acks: AckState,
    stop: &'a dyn Fn() -> bool,
    counts: SegmentCounts,
    /// Index of the next record the scan hands over.
    index_next: u64,
    /// A step failed: the rest of the segment waits for the next replay.
    halted: bool,
    stopped: bool,
    /// The second scan found more records than the first.
    mismatched: bool,
    started: Instant,
    sent: u64,
}

impl Replayer {
    pub fn new(
        sink: &str,
        link: ReplayLink,
        limits: StepLimits,
        settings: DlqSettings,
        rate: Option<u64>,
    ) -> Self {
        assert!(
            limits.batch_size > 0 && link.failures.entries_per_slot() >= limits.batch_size,
            "a replay batch fits the sink's failure table"
        );
        Self {
            sink: sink.to_string(),
            arena: Some(Bump::with_capacity(arena_capacity_bytes(
                limits.batch_size.min(REPLAY_CHUNK_RECORDS),
                0,
            ))),
            link,
            limits,
            sequence_next: 0,
            rate: rate.filter(|&rate| rate > 0),
            metrics: Arc::new(DlqMetrics {
                sink: sink.to_string(),
                ..DlqMetrics::default()
            }),
            settings,
            rejected: None,
            abandoned: false,
        }
    }

    /// Binds the replay to the calling thread, which the sink wakes with
    /// its reports. Called once, by the thread that replays.
    pub fn run_on_current_thread(&self) {
        self.link.own.register_current();
    }

    /// Most records per second from now on (`None`: as fast as the sink
    /// takes them).
    pub fn set_rate(&mut self, rate: Option<u64>) {
        self.rate = rate.filter(|&rate| rate > 0);
    }

    /// Counts replayed, failed and rejected records (and the records left)
    /// into the daemon's metrics of this sink's DLQ.
    pub fn count_into(&mut self, metrics: Arc<DlqMetrics>) {
        self.metrics = metrics;
    }

    /// Replays one segment, a step of records at a time, recording which
    /// records were handled; deletes it when every record was. `stop` is
    /// checked between steps.
    pub fn replay_segment(&mut self, path: &Path, stop: &dyn Fn() -> bool) -> SegmentReplay {
        let mut segment = match ReadableSegment::open(path) {
            Ok(segment) => segment,
            Err(SegmentError::Locked { .. }) => return SegmentReplay::Locked,
            Err(error) => {
                tracing::warn!(error = %crate::error_chain::ErrorChain(&error), "DLQ segment skipped");
                return SegmentReplay::Unreadable;
            }
        };
        let mut fingerprint = Fingerprint::default();
        let fingerprinted = segment
            .scan(|record| fingerprint.add(record))
            .and_then(|_| segment.rewind());
        if let Err(error) = fingerprinted {
            tracing::warn!(%error, "DLQ segment could not be read to its end");
            return SegmentReplay::Unreadable;
        }
        let mut pass = Pass {
            acks: AckState::load(path, segment.sequence, fingerprint),
            stop,
            counts: SegmentCounts::default(),
            index_next: 0,
            halted: false,
            stopped: false,
            mismatched: false,
            started: Instant::now(),
            sent: 0,
        };
        let scanned = segment.scan_chunks(&mut |records| self.replay_records(records, &mut pass));
        if pass.counts.rejected > 0 {
            tracing::warn!(sink = %self.sink, path = %path.display(), records = pass.counts.rejected, "DLQ records refused for good by the sink moved to rejected/");
        }
        let summary = match scanned {
            Ok(summary) => summary,
            Err(error) => {
                tracing::warn!(error = %crate::error_chain::ErrorChain(&error), "DLQ segment could not be read to its end");
                return SegmentReplay::Unreadable;
            }
        };
        if pass.stopped {
            return SegmentReplay::Stopped;
        }
        pass.counts.corrupt = summary.corrupt;
        pass.counts.corrupt_bytes = summary.corrupt_bytes;
        // `summary.records` is every intact record the scan recovered
        // (corrupt regions and a damaged header hide none): the segment
        // goes only when each of them was handled.
        let complete = !pass.halted && !pass.mismatched && pass.acks.is_complete();
        pass.counts.deleted = complete && delete(segment, &pass.acks);
        if pass.counts.deleted {
            self.metrics.used_bytes.subtract(summary.used_bytes);
            self.metrics.input_bytes.subtract(summary.input_bytes);
        }
        if pass.counts.deleted && summary.corrupt > 0 {
            tracing::warn!(path = %path.display(), records = summary.records, corrupt = summary.corrupt, corrupt_bytes = summary.corrupt_bytes, "DLQ segment with corrupt regions replayed and deleted: its intact records were handled, the damaged ones could not be read");
        }
        SegmentReplay::Replayed(pass.counts)
    }

    /// Delivers the records of one scanned chunk that are not yet settled,
    /// a step at a time.
    fn replay_records(&mut self, records: &[Record<'_>], pass: &mut Pass<'_>) {
        let first = pass.index_next;
        pass.index_next += records.len() as u64;
        if pass.halted || pass.stopped {
            return;
        }
        let mut waiting: Vec<(u64, &Record<'_>)> = Vec::with_capacity(records.len());
        for (offset, record) in records.iter().enumerate() {
            let index = first + offset as u64;
            if pass.acks.is_handled(index) {
                pass.counts.skipped += 1;
            } else {
                pass.mismatched |= index >= pass.acks.records();
                waiting.push((index, record));
            }
        }
        let mut rest = &waiting[..];
        while !rest.is_empty() {
            if (pass.stop)() {
                pass.stopped = true;
                return;
            }
            let step_len = self.step_len(rest);
            let failed = self.replay_step(&rest[..step_len], pass);
            rest = &rest[step_len..];
            if let Err(error) = pass.acks.save() {
                tracing::warn!(%error, "DLQ replay progress not recorded; its records may be sent again");
            }
            if failed > 0 {
                pass.halted = true;
                return;
            }
            self.pace(pass, step_len as u64);
        }
    }

    /// Records in the next step: at most a step's count (less under a
    /// rate), `batch_size`, and the records whose bytes reach `batch_bytes`.
    fn step_len(&self, waiting: &[(u64, &Record<'_>)]) -> usize {
        let records_max = match self.rate {
            Some(rate) => (rate as usize / 10).clamp(1, REPLAY_CHUNK_RECORDS),
            None => REPLAY_CHUNK_RECORDS,
        }
        .min(self.limits.batch_size);
        let mut bytes = 0;
        let mut len = 0;
        for (_, record) in waiting.iter().take(records_max) {
            len += 1;
            bytes += record.message.len();
            if bytes >= self.limits.batch_bytes {
                break;
            }
        }
        len
    }

    /// Delivers one step through the sink; returns how many records failed.
    fn replay_step(&mut self, step: &[(u64, &Record<'_>)], pass: &mut Pass<'_>) -> u64 {
        let mut outcomes = vec![Delivery::Pending; step.len()];
        self.deliver(step, &mut outcomes, pass.stop);
        let (mut delivered, mut rejected, mut failed) = (0, 0, 0);
        for (&(index, record), outcome) in step.iter().zip(&outcomes) {
            let handled = match *outcome {
                Delivery::Acknowledged => {
                    delivered += 1;
                    true
                }
                Delivery::Rejected(rejection) if self.reject(record, rejection) => {
                    rejected += 1;
                    true
                }
                Delivery::Rejected(_) | Delivery::Pending | Delivery::Failed => {
                    failed += 1;
                    false
                }
            };
            if handled && index < pass.acks.records() {
                pass.acks.mark(index);
            }
        }
        pass.counts.delivered += delivered;
        pass.counts.rejected += rejected;
        pass.counts.failed += failed;
        self.metrics.replayed.add(delivered);
        self.metrics.replay_failed.add(failed);
        self.metrics.entries.subtract(delivered + rejected);
        failed
    }

    /// Hands the step to the sink as one batch and reads its report into
    /// `outcomes` (left `Pending` if no report came).
    fn deliver(
        &mut self,
        step: &[(u64, &Record<'_>)],
        outcomes: &mut [Delivery],
        stop: &dyn Fn() -> bool,
    ) {
        if self.abandoned && !self.take_late_report() {
            return;
        }
        let Some(arena) = self.arena.take() else {
            return;
        };
        // The step's labels are interned into a table of their own: the
        // strings of a DLQ record need not be known to this process.
        let mut symbols = SymbolTableBuilder::new();
        let mut streams: Vec<LabelSet> = Vec::new();
        let mut stream_of = Vec::with_capacity(step.len());
        for (_, record) in step {
            let labels = symbols.label_set(record.labels.iter().copied());
            let stream = match streams.iter().position(|known| *known == labels) {
                Some(stream) => stream,
                None => {
                    streams.push(labels);
                    streams.len() - 1
                }
            };
            stream_of.push(stream as StreamId);
        }
        let mut batch = OpenBatch::new(arena, self.limits.batch_size, symbols.freeze());
        for ((_, record), &stream) in step.iter().zip(&stream_of) {
            // Addressed to this sink already, whatever its `inputs`.
            batch.push(
                record.message,
                &streams[stream as usize],
                SOURCE_REPLAYED,
                record.timestamp_ns,
                record.terminated,
            );
        }
        let batch = Arc::new(batch.seal(self.link.slot, self.sequence_next));
        self.sequence_next += 1;
        self.link.lane.send(SinkJob {
            batch,
            retry: false,
        });
        self.await_report(outcomes, stop);
    }

    /// Takes the report of an abandoned step if it has come since; its
    /// records stayed in their segment (counted failed), so the report
    /// only gives the slot and the arena back. True if it came.
    fn take_late_report(&mut self) -> bool {
        let Ok(report) = self.link.lane.reports.pop() else {
            return false;
        };
        self.reclaim_arena(report.batch);
        self.abandoned = false;
        tracing::info!(sink = %self.sink, "sink reported the abandoned replay step; replay resumes");
        true
    }

    /// Waits for the step's report and records what became of each entry.
    fn await_report(&mut self, outcomes: &mut [Delivery], stop: &dyn Fn() -> bool) {
        let started = Instant::now();
        let report = loop {
            if let Ok(report) = self.link.lane.reports.pop() {
                break report;
            }
            let waited = started.elapsed();
            if waited >= REPORT_WAIT_MAX || (waited >= REPORT_WAIT_AT_STOP && stop()) {
                tracing::warn!(sink = %self.sink, "sink did not report a replayed batch; replay stops");
                self.abandoned = true;
                return;
            }
            wake::park(Duration::from_millis(crate::limits::PARK_TIMEOUT_MS_MAX));
        };
        let slot = report.batch.slot();
        assert_eq!(slot, self.link.slot, "a report of the replay slot");
        match report.outcome {
            Outcome::Delivered => outcomes.fill(Delivery::Acknowledged),
            Outcome::Failed { .. } => {
                let failures = &self.link.failures;
                for (entry, outcome) in outcomes.iter_mut().enumerate() {
                    *outcome = if !failures.is_failed(slot, entry) {
                        Delivery::Acknowledged
                    } else if failures.is_permanent(slot, entry) {
                        Delivery::Rejected(failures.rejection(slot, entry))
                    } else {
                        Delivery::Failed
                    };
                }
            }
        }
        self.reclaim_arena(report.batch);
    }

    /// Takes the replay arena back from a reported batch: the sink handed
    /// its reference back with the report, so this is the last one.
    fn reclaim_arena(&mut self, batch: Arc<SealedBatch>) {
        let batch = Arc::try_unwrap(batch).expect("the sink handed its reference back");
        self.arena = Some(batch.into_arena());
    }

    /// Appends a record that can never be delivered to `rejected/`. False
    /// if it could not be stored (it stays in the segment).
    fn reject(&mut self, record: &Record<'_>, rejection: Rejection) -> bool {
        if self.rejected.is_none() {
            let opened =
                DlqWriter::open_rejected(&self.sink, &self.settings, Arc::clone(&self.metrics));
            match opened {
                Ok(writer) => self.rejected = Some(writer),
                Err(error) => {
                    tracing::warn!(%error, "cannot open the DLQ's rejected/ directory");
                    return false;
                }
            }
        }
        let writer = self.rejected.as_mut().expect("opened above");
        let moved = Record {
            reason: Reason::from(rejection),
            labels: record.labels.clone(),
            ..*record
        };
        match writer.append(&moved) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "rejected DLQ record not moved aside; it stays in its segment");
                false
            }
        }
    }

    /// Sleeps as long as the rate asks for.
    fn pace(&self, pass: &mut Pass<'_>, records: u64) {
        pass.sent += records;
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(pass.sent as f64 / rate as f64);
            std::thread::sleep(due.saturating_sub(pass.started.elapsed()));
        }
    }
}

/// Deletes a fully handled segment: its acknowledgement file first, so that
/// no crash leaves a segment with acknowledgements that are not its own.
fn delete(segment: ReadableSegment, acks: &AckState) -> bool {
    if let Err(error) = acks.remove() {
        tracing::warn!(%error, "cannot delete a DLQ acknowledgement file; the segment is kept");
        return false;
    }
    match segment.delete() {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "cannot delete a replayed DLQ segment");
            false
        }
    }
}
