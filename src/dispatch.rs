//! The dispatcher: one thread that batches the lines of every source, hands
//! each sealed batch to every sink, retries per sink through the timing
//! wheel, and stores what cannot be delivered in the DLQ.
//!
//! ```text
//! loop:
//!     collect sink reports:
//!         delivered          -> that sink is done with the batch
//!         failed, permanent  -> those entries to the sink's `rejected/`
//!                               segments, with the sink's reason
//!         failed, retryable  -> into the retry wheel for that sink only, or
//!                               to the DLQ when attempts are used up or the
//!                               wheel is full
//!         a batch every sink is done with is complete: its arena returns
//!     hand every retry that came due to its sink (failed entries only)
//!     drain source rings round-robin into the open batch; seal it on
//!         batch_size, batch_bytes or batch_timeout_ms, or once it has
//!         waited latency_target_ms when the source rings are empty
//!     nothing to do: park until woken, the batch deadline or the next retry
//! ```
//!
//! Routing: every batch goes to every sink, and each entry carries the
//! index of its source (the position of its `SourceEnd`). A sink with
//! `inputs` skips the entries of other sources; whatever this stage stores
//! in a sink's DLQ on its behalf (shutdown) leaves those entries out too.
//!
//! Invariants: arenas (free, open, or held by a batch) and batch slots both
//! number `batches_in_flight + retry.max_batches`; a batch holds one slot and
//! one arena from seal to completion. At most `batches_in_flight` sealed
//! batches wait for a sink's first answer ("fresh"): a new batch is opened
//! only below that, so a slow sink holds the live path at that many batches
//! and the other slots stay for the retry wheel. Every sink ring and report ring holds
//! that many elements, so no push can fail (each is asserted). When no arena
//! is free the dispatcher stops taking chunks and sources stop reading:
//! backpressure reaches the files, no queue grows.
//!
//! Positions: a chunk's [`Receipt`] joins the open batch when the chunk's
//! last line does. A batch's receipts are handed back to their sources
//! (on each source's commit ring) once the batch is complete and so is
//! every batch sealed before it: the receipt log keeps sealed batches in
//! sequence order, so a source never hears of a position past a line that
//! is still at a sink or in the retry wheel. Lines stored straight from the
//! chunks into the DLQ at shutdown complete at once.
//!
//! Shutdown: once every source has ended, the open batch is sealed, the
//! wheel is emptied into the DLQ, and what is still at a sink after
//! `drain_timeout` goes to the DLQ too (reason `shutdown`). A batch stored
//! in the DLQ counts as complete. `drain_timeout` runs from the stop
//! request: a sink that never returns its batches (a stdout nobody reads)
//! holds every arena, so the lines still in the source rings could never be
//! batched; past the deadline they go straight from the chunks into the
//! DLQ of every sink that takes their source (reason `shutdown`), which
//! lets the sources end.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bumpalo::Bump;
use rtrb::{Consumer, Producer};

use crate::batch::{OpenBatch, SealedBatch, SourceIndex, arena_capacity_bytes, reclaim_arena};
use crate::clock::now_ns;
use crate::dlq::record::{Reason, Record};
use crate::dlq::{DlqSink, Stored};
use crate::labels::SymbolTable;
use crate::limits;
use crate::metrics::{DispatcherMetrics, SinkMetrics, SourceMetrics};
use crate::retry::wheel::RetryItem;
use crate::retry::{Backoff, RetryWheel};
use crate::sink::link::{FailureTable, LaneEnd, Outcome, Rejection, SinkJob, SourceSet};
use crate::source::{Receipt, SourceChunk};
use crate::telemetry::latency::LatencyPublisher;
use crate::wake::{self, Waker};

/// Batching settings, from `[dispatcher]`.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub batch_timeout: Duration,
    /// An open batch is sealed this long after its first entry when the
    /// sources have nothing more (`[dispatcher] latency_target_ms`).
    pub latency_target: Duration,
    /// Most sealed batches some sink has not answered for the first time
    /// (`[dispatcher] batches_in_flight`); the other slots are for batches
    /// the retry wheel holds.
    pub fresh_max: usize,
}

/// Retry settings, from `[retry]`, and the shutdown bound.
#[derive(Debug)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub wheel_capacity: usize,
    /// How long, after the sources ended, batches at sinks are waited for
    /// before they go to the DLQ.
    pub drain_timeout: Duration,
}

/// The dispatcher's end of one source's rings.
#[derive(Debug)]
pub struct SourceEnd {
    pub chunks: Consumer<SourceChunk>,
    pub returns: Producer<SourceChunk>,
    /// Receipts of complete batches, back to the source.
    pub commits: Producer<Receipt>,
    /// Wakes the source when a chunk comes back.
    pub source: Waker,
    /// Whether the source wants that wake (see `SourceLinks::returns_wanted`).
    pub returns_wanted: Arc<std::sync::atomic::AtomicBool>,
    /// A chunk partly copied into batches, and the index of its next line.
    current: Option<(SourceChunk, usize)>,
    /// The last chunk taken did not end the source's read round
    /// (`SourceChunk::ends_round`): more may come before it waits.
    round_open: bool,
    /// Lines of this source are in the open batch.
    in_open_batch: bool,
    /// The source's counters; the dispatcher counts the lines it took.
    metrics: Arc<SourceMetrics>,
}

impl SourceEnd {
    /// After a push to `returns`: whether to wake the source for it. The
    /// fence pairs with `SourceLinks::want_returns`: either the source sees
    /// the chunk when it looks again, or this sees its wish.
    fn wants_return_wake(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.returns_wanted.load(Ordering::Relaxed)
    }

    pub fn new(
        chunks: Consumer<SourceChunk>,
        returns: Producer<SourceChunk>,
        commits: Producer<Receipt>,
        source: Waker,
        returns_wanted: Arc<std::sync::atomic::AtomicBool>,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        Self {
            chunks,
            returns,
            commits,
            source,
            returns_wanted,
            current: None,
            round_open: false,
            in_open_batch: false,
            metrics,
        }
    }

    /// The source has ended and everything it sent has been taken. The
    /// abandonment is read before emptiness: a source pushes, then drops its
    /// end, so an abandoned ring that is empty stays empty.
    fn is_finished(&self) -> bool {
        self.chunks.is_abandoned() && self.chunks.is_empty() && self.current.is_none()
    }
}

/// The dispatcher's end of one sink's rings, and its DLQ.
#[derive(Debug)]
pub struct SinkEnd {
    pub id: String,
    /// The sink's live lane.
    pub lane: LaneEnd,
    /// The entries this sink failed, per slot (read after a `Failed` report).
    pub failures: Arc<FailureTable>,
    /// The sources whose entries the sink takes (its `inputs`): what is
    /// stored in its DLQ on its behalf leaves the others out.
    pub inputs: SourceSet,
    /// Time from a line being read to its batch being reported by this sink.
    pub read_to_ack: LatencyPublisher,
    /// Time from a batch being sealed to this sink's report.
    pub seal_to_ack: LatencyPublisher,
    pub dlq: DlqSink,
    /// The sink's counters: the dispatcher counts the lines whose outcome
    /// at this sink is the DLQ (`lines_failed`), once each.
    pub metrics: Arc<SinkMetrics>,
}

/// What the dispatcher knows of one batch slot.
#[derive(Debug, Default)]
struct SlotState {
    batch: Option<Arc<SealedBatch>>,
    /// Bit per sink that has not finished with the batch (delivered it, or
    /// had its failed entries stored in the DLQ).
    sinks_pending: u64,
    /// Jobs handed to sinks and not yet reported.
    reports_missing: u32,
    /// Sealed and not yet answered by every sink: counts against
    /// `fresh_max`. Cleared once no report is missing, so that a batch
    /// waiting in the retry wheel holds a retry slot only.
    fresh: bool,
}

/// The receipts of one sealed batch, kept in sequence order.
#[derive(Debug)]
struct LoggedBatch {
    sequence: u64,
    complete: bool,
    /// (source position, receipt), in the order the chunks ended.
    receipts: Vec<(usize, Receipt)>,
    /// Receipts already handed back (a full commit ring stops the rest).
    released: usize,
    /// Some of its lines could not be written to a DLQ: its files'
    /// positions stay where they are.
    held: bool,
}

/// Sealed batches in sequence order with the receipts of their chunks.
///
/// Bounded: one entry per batch in flight (the slots), plus one for the
/// chunks spilled at shutdown. The receipt vectors are reused.
#[derive(Debug, Default)]
struct ReceiptLog {
    batches: VecDeque<LoggedBatch>,
    /// Receipts of the open batch.
    open: Vec<(usize, Receipt)>,
    spare: Vec<Vec<(usize, Receipt)>>,
    /// Readings of files (source, device, inode, serial) whose positions
    /// no longer move in this run: a line of theirs was lost on the way to
    /// a DLQ, so a restart must read it again. Grows only with such losses.
    held_files: HashSet<(usize, u64, u64, u64)>,
}

impl ReceiptLog {
    fn with_capacity(batches: usize) -> Self {
        Self {
            batches: VecDeque::with_capacity(batches + 1),
            open: Vec::new(),
            spare: Vec::with_capacity(batches + 1),
            held_files: HashSet::new(),
        }
    }

    /// A chunk of `source` ended in the open batch.
    fn note(&mut self, source: usize, receipt: Receipt) {
        // The latest receipt of a file covers its earlier ones: a file read
        // in many small chunks keeps one receipt per batch.
        let recent = self.open.iter_mut().rev().take(8);
        for (known_source, known) in recent {
            if *known_source == source
                && (known.device, known.inode, known.serial)
                    == (receipt.device, receipt.inode, receipt.serial)
            {
                known.end_offset = known.end_offset.max(receipt.end_offset);
                return;
            }
        }
        self.open.push((source, receipt));
    }

    /// The open batch was sealed as `sequence`.
    fn sealed(&mut self, sequence: u64) {
        let receipts = std::mem::replace(&mut self.open, self.spare.pop().unwrap_or_default());
        if let Some(last) = self.batches.back() {
            assert_eq!(last.sequence + 1, sequence, "batches are logged in order");
        }
        self.batches.push_back(LoggedBatch {
            sequence,
            complete: false,
            receipts,
            released: 0,
            held: false,
        });
    }

    /// Lines of batch `sequence` could not be written to a DLQ.
    fn hold(&mut self, sequence: u64) {
        if let Some(batch) = self.batch_mut(sequence) {
            batch.held = true;
        }
    }

    /// The logged batch `sequence`, if it is still in the log.
    fn batch_mut(&mut self, sequence: u64) -> Option<&mut LoggedBatch> {
        let front = self.batches.front()?.sequence;
        let index = usize::try_from(sequence.checked_sub(front)?).ok()?;
        let batch = self.batches.get_mut(index)?;
        assert_eq!(batch.sequence, sequence, "the log is contiguous");
        Some(batch)
    }

    fn complete(&mut self, sequence: u64) {
        self.batch_mut(sequence)
            .expect("a batch completes once, while logged")
            .complete = true;
    }

    fn complete_all(&mut self) {
        for batch in &mut self.batches {
            batch.complete = true;
        }
    }

    /// Hands back the receipts of the complete batches at the front.
    fn release(&mut self, sources: &mut [SourceEnd]) {
        while let Some(batch) = self.batches.front_mut() {
            if !batch.complete {
                return;
            }
            if batch.held {
                for &(source, receipt) in &batch.receipts {
                    let file = (source, receipt.device, receipt.inode, receipt.serial);
                    if self.held_files.insert(file) {
                        tracing::warn!(source = %sources[source].metrics.id, inode = receipt.inode, offset = receipt.end_offset, "lines could not be stored in a DLQ; this file's position stays put until a restart reads them again");
                    }
                }
                batch.released = batch.receipts.len();
            }
            while batch.released < batch.receipts.len() {
                let (source, receipt) = batch.receipts[batch.released];
                let file = (source, receipt.device, receipt.inode, receipt.serial);
                if self.held_files.contains(&file) {
                    batch.released += 1;
                    continue;
                }
                let end = &mut sources[source];
                if end.commits.push(receipt).is_err() && !end.commits.is_abandoned() {
                    // Full: the source takes them at its next round.
                    end.source.wake();
                    return;
                }
                batch.released += 1;
            }
            // No wake-up: a source takes its receipts at its next round,
            // and waking an idle source for them would cost a round of
            // end-of-file checks per batch.
            let mut batch = self.batches.pop_front().expect("front exists");
            batch.receipts.clear();
            self.spare.push(batch.receipts);
        }
    }
}

/// The dispatcher thread's state.
#[derive(Debug)]
pub struct Dispatcher {
    settings: BatchSettings,
    retry: RetrySettings,
    sources: Vec<SourceEnd>,
    sinks: Vec<SinkEnd>,
    receipts: ReceiptLog,
    /// To write labels as strings into DLQ records.
    symbols: Arc<SymbolTable>,
    /// The label buffer of DLQ records, kept between uses (always empty
    /// here; see [`recycle_labels`]), so that storing an entry in the DLQ
    /// allocates nothing.
    dlq_labels: Vec<(&'static str, &'static str)>,
    /// Free arenas, reset.
    arenas: Vec<Bump>,
    open: Option<OpenBatch>,
    slots: Vec<SlotState>,
    free_slots: Vec<usize>,
    /// Deliveries tried, per slot and sink (`slot * sinks + sink`).
    attempts: Vec<u32>,
    wheel: RetryWheel,
    /// Items the wheel found due, taken out before any is handled.
    due: Vec<RetryItem>,
    sequence_next: u64,
    /// First source to drain in the next round, for fairness.
    source_first: usize,
    /// Set when every source has ended.
    draining_since: Option<Instant>,
    /// The sources' stop flag (set at SIGTERM), and when it was first seen.
    stop: Arc<AtomicBool>,
    stop_seen_at: Option<Instant>,
    own: Waker,
    metrics: Arc<DispatcherMetrics>,
}

/// The parts a dispatcher is built from.
#[derive(Debug)]
pub struct DispatcherParts {
    pub settings: BatchSettings,
    pub retry: RetrySettings,
    /// Source `i` of the config is at position `i`: the position is the
    /// `SourceIndex` its entries carry and sinks' `inputs` name.
    pub sources: Vec<SourceEnd>,
    pub sinks: Vec<SinkEnd>,
    pub symbols: Arc<SymbolTable>,
    /// The preallocated arenas; their number is the number of slots.
    pub arenas: Vec<Bump>,
    /// The sources' stop flag: the shutdown deadline runs from it.
    pub stop: Arc<AtomicBool>,
    pub own: Waker,
    pub metrics: Arc<DispatcherMetrics>,
}

impl Dispatcher {
    pub fn new(parts: DispatcherParts) -> Self {
        let slots = parts.arenas.len();
        assert!(slots > 0, "batches_in_flight is validated non-zero");
        assert!(!parts.sinks.is_empty(), "a config has at least one sink");
        assert!(
            parts.sinks.len() <= limits::SINKS_MAX,
            "config validation bounds the sinks (one bit each)"
        );
        assert!(
            parts.sources.len() <= limits::SOURCES_MAX,
            "a source index fits a SourceIndex"
        );
        for sink in &parts.sinks {
            assert!(
                sink.lane.jobs.buffer().capacity() >= slots,
                "a sink ring holds every slot"
            );
            assert!(
                sink.lane.reports.buffer().capacity() >= slots,
                "a report ring holds every slot"
            );
        }
        let sink_count = parts.sinks.len();
        Self {
            settings: parts.settings,
            wheel: RetryWheel::new(parts.retry.wheel_capacity),
            due: Vec::with_capacity(parts.retry.wheel_capacity),
            retry: parts.retry,
            sources: parts.sources,
            sinks: parts.sinks,
            receipts: ReceiptLog::with_capacity(slots),
            symbols: parts.symbols,
            dlq_labels: Vec::with_capacity(crate::labels::LABELS_INLINE),
            arenas: parts.arenas,
            open: None,
            slots: (0..slots).map(|_| SlotState::default()).collect(),
            free_slots: (0..slots).rev().collect(),
            attempts: vec![0; slots * sink_count],
            sequence_next: 0,
            source_first: 0,
            draining_since: None,
            stop: parts.stop,
            stop_seen_at: None,
            own: parts.own,
            metrics: parts.metrics,
        }
    }

    /// The thread body.
    pub fn run(mut self) {
        self.own.register_current();
        loop {
            let mut progressed = self.collect_reports();
            self.receipts.release(&mut self.sources);
            progressed |= self.send_due_retries();
            for sink in &mut self.sinks {
                sink.read_to_ack.publish_if_due();
                sink.seal_to_ack.publish_if_due();
                sink.dlq.flush_if_due();
            }
            if self.draining_since.is_none() {
                let (moved, sources_idle) = self.drain_sources();
                progressed |= moved;
                self.seal_if_due(sources_idle);
                if self.past_stop_deadline() && !self.may_open() {
                    progressed |= self.spill_sources();
                }
                if self.sources.iter().all(SourceEnd::is_finished) {
                    self.start_draining();
                }
            }
            if self.draining_since.is_some()
                && let Some(drain) = self.finish_draining()
            {
                if drain == Drain::Complete {
                    assert_eq!(
                        self.arenas.len(),
                        self.slots.len(),
                        "every arena is back at the end"
                    );
                }
                // Every batch is delivered or in the DLQ now.
                self.receipts.complete_all();
                self.release_last_receipts();
                break;
            }
            if !progressed {
                wake::park(self.park_timeout());
            }
        }
        // Drop the rings before the wake-ups, so that each sink sees its ring
        // abandoned at once instead of at its next park timeout. The sources
        // wait for their commit rings to be abandoned before they write
        // their last positions.
        let wakers: Vec<Waker> = self
            .sinks
            .iter()
            .map(|sink| sink.lane.sink.clone())
            .chain(self.sources.iter().map(|source| source.source.clone()))
            .collect();
        drop(self);
        for waker in wakers {
            waker.wake();
        }
    }

    /// Hands back every receipt still logged, at the end. One pass is not
    /// enough: a commit ring holds [`COMMITS_RING_CAPACITY`] receipts, a
    /// batch up to one per file it has lines of, and the batches completed
    /// last (all of them at once when the drain timed out) can hold more
    /// than the rings have room for at once. The sources take receipts
    /// until this stage ends (each waits for its commit ring to be
    /// abandoned), and `release` wakes a source whose ring is full, so
    /// every pass makes room. Bounded by an eighth of `drain_timeout` (the
    /// shutdown timeout leaves a quarter of it after the drain), in case a
    /// source no longer takes them: what is left is then logged, and those
    /// lines are read again after a restart.
    ///
    /// [`COMMITS_RING_CAPACITY`]: crate::source::COMMITS_RING_CAPACITY
    fn release_last_receipts(&mut self) {
        let deadline = Instant::now() + self.retry.drain_timeout / 8;
        loop {
            self.receipts.release(&mut self.sources);
            if self.receipts.batches.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                let receipts: usize = self
                    .receipts
                    .batches
                    .iter()
                    .map(|batch| batch.receipts.len() - batch.released)
                    .sum();
                tracing::warn!(
                    receipts,
                    "sources did not take the last positions in time; their lines will be read again after a restart"
                );
                return;
            }
            wake::park(Duration::from_millis(1));
        }
    }

    fn park_timeout(&self) -> Duration {
        let mut timeout = Duration::from_millis(limits::PARK_TIMEOUT_MS_MAX);
        if let Some(open) = self.open.as_ref().filter(|open| !open.is_empty()) {
            // Parking means the sources have nothing more: the latency
            // target is the batch's deadline then.
            let wait = self
                .settings
                .batch_timeout
                .min(self.settings.latency_target);
            let due = open.opened_at() + wait;
            timeout = timeout.min(due.saturating_duration_since(Instant::now()));
        }
        if let Some(retry_in) = self.wheel.next_due_in(Instant::now()) {
            timeout = timeout.min(retry_in);
        }
        if let Some(since) = self.draining_since.or(self.stop_seen_at) {
            // The drain deadline is kept to the millisecond: the shutdown
            // timeout leaves only a fifth of itself after it.
            let deadline = since + self.retry.drain_timeout;
            let until = deadline.saturating_duration_since(Instant::now());
            timeout = timeout.min(until.max(Duration::from_millis(1)));
        }
        timeout
    }

    /// Whether a stop was requested more than `drain_timeout` ago.
    fn past_stop_deadline(&mut self) -> bool {
        // Acquire pairs with the Release store of the shutdown path.
        if self.stop_seen_at.is_none() && self.stop.load(Ordering::Acquire) {
            self.stop_seen_at = Some(Instant::now());
        }
        self.stop_seen_at
            .is_some_and(|since| since.elapsed() >= self.retry.drain_timeout)
    }

    /// Past the stop deadline with no batch to be opened (every arena, or
    /// `fresh_max` batches, held by sinks): stores the
    /// lines waiting in the source rings in every sink's DLQ (reason
    /// `shutdown`) and gives the chunks back, so that the sources can end.
    /// True if any chunk was taken.
    fn spill_sources(&mut self) -> bool {
        let mut progressed = false;
        let mut spilled = 0;
        for index in 0..self.sources.len() {
            loop {
                let source = &mut self.sources[index];
                let (chunk, next_line) = match source.current.take() {
                    Some(current) => current,
                    None => match source.chunks.pop() {
                        Ok(chunk) => (chunk, 0),
                        Err(_) => break,
                    },
                };
                progressed = true;
                spilled += self.spill_chunk(index, &chunk, next_line);
                let source = &mut self.sources[index];
                if source.returns.push(chunk).is_ok() {
                    source.source.wake();
                }
            }
        }
        if spilled > 0 {
            tracing::warn!(
                lines = spilled,
                "sinks did not take batches before the shutdown deadline; lines read stored in the DLQ"
            );
        }
        progressed
    }

    /// Stores the lines of `chunk` from `first_line` on in the DLQ of every
    /// sink that takes `source`; returns how many lines.
    fn spill_chunk(&mut self, source: usize, chunk: &SourceChunk, first_line: usize) -> u64 {
        let spans = &chunk.lines()[first_line..];
        let symbols = Arc::clone(&self.symbols);
        let mut labels = recycle_labels(std::mem::take(&mut self.dlq_labels));
        let mut lost = false;
        for end in &mut self.sinks {
            if !end.inputs.takes(source as SourceIndex) {
                continue;
            }
            for (offset, &span) in spans.iter().enumerate() {
                let line = chunk.line_labels(first_line + offset);
                symbols.resolve_labels_into(line.labels, &mut labels);
                labels.extend(
                    line.inline
                        .iter()
                        .map(|(key, value)| (symbols.resolve(key), value)),
                );
                labels.sort_by(|left, right| left.0.cmp(right.0));
                let record = Record {
                    timestamp_ns: line.timestamp_ns,
                    attempts: 0,
                    reason: Reason::Shutdown,
                    terminated: span.terminated,
                    sink: &end.id,
                    labels,
                    message: chunk.line(span),
                };
                lost |= end.dlq.store(&record) == Stored::Lost;
                labels = record.labels;
            }
            end.metrics.lines_failed.add(spans.len() as u64);
        }
        self.dlq_labels = recycle_labels(labels);
        self.count_dispatched(source, spans.len() as u64);
        if let Some(receipt) = chunk.receipt {
            // In the DLQ of every sink that takes it: complete, once the
            // batches sealed before it are.
            self.seal_open();
            self.receipts.note(source, receipt);
            self.receipts.sealed(self.sequence_next);
            if lost {
                self.receipts.hold(self.sequence_next);
            }
            self.receipts.complete(self.sequence_next);
            self.sequence_next += 1;
        }
        spans.len() as u64
    }

    fn start_draining(&mut self) {
        self.seal_open();
        // The drain deadline runs from the stop request when there was one.
        self.draining_since = Some(self.stop_seen_at.unwrap_or_else(Instant::now));
        let mut waiting = Vec::with_capacity(self.wheel.len());
        self.wheel.drain(&mut waiting);
        self.metrics.retry_queue_size.set(0);
        for item in waiting {
            let (slot, sink) = (item.batch_slot as usize, usize::from(item.sink));
            self.store_failed(slot, sink, Reason::Shutdown);
            self.finish_sink(slot, sink);
        }
    }

    /// Whether draining is over: every batch complete, or the drain timeout
    /// passed, in which case what is still at a sink goes to the DLQ (those
    /// batches' arenas stay with the sinks that hold them).
    fn finish_draining(&mut self) -> Option<Drain> {
        if self.free_slots.len() == self.slots.len() {
            return Some(Drain::Complete);
        }
        let since = self.draining_since.expect("draining");
        if since.elapsed() < self.retry.drain_timeout {
            return None;
        }
        for slot in 0..self.slots.len() {
            for sink in 0..self.sinks.len() {
                if self.slots[slot].sinks_pending & (1 << sink) != 0 {
                    tracing::warn!(sink = %self.sinks[sink].id, slot, "sink did not finish before the shutdown deadline; batch stored in the DLQ");
                    // The entries of sources the sink does not take are
                    // done for it: they stay out of its DLQ.
                    let batch = Arc::clone(self.slots[slot].batch.as_ref().expect("pending"));
                    let inputs = self.sinks[sink].inputs.clone();
                    let taken = |index: usize| inputs.takes_entry(&batch.entries()[index]);
                    self.store_entries(slot, sink, |_| Reason::Shutdown, taken);
                }
            }
        }
        Some(Drain::TimedOut)
    }

    /// Takes every report and acts on it. True if any came.
    fn collect_reports(&mut self) -> bool {
        let mut progressed = false;
        for sink in 0..self.sinks.len() {
            while let Ok(report) = self.sinks[sink].lane.reports.pop() {
                progressed = true;
                let slot = report.batch.slot();
                let end = &mut self.sinks[sink];
                // The lines of this batch this sink took (its inputs).
                let lines = end.inputs.entries_taken(&report.batch) as u64;
                if lines > 0 {
                    end.seal_to_ack
                        .record(report.batch.sealed_at().elapsed(), lines);
                    let read_to_ack_ns = now_ns().saturating_sub(report.batch.read_ns_oldest());
                    end.read_to_ack
                        .record(Duration::from_nanos(read_to_ack_ns), lines);
                }
                drop(report.batch);
                let state = &mut self.slots[slot];
                assert!(
                    state.reports_missing > 0,
                    "slot {slot}: a report nobody waited for"
                );
                state.reports_missing -= 1;
                if state.reports_missing == 0 {
                    state.fresh = false;
                }
                match report.outcome {
                    Outcome::Delivered => self.finish_sink(slot, sink),
                    Outcome::Failed { .. } => self.handle_failure(slot, sink),
                }
            }
        }
        progressed
    }

    /// A sink failed some entries of a batch: permanent ones to its
    /// `rejected/` segments (never retried), the rest to the wheel or, when
    /// that cannot be, to the DLQ.
    fn handle_failure(&mut self, slot: usize, sink: usize) {
        let failures = Arc::clone(&self.sinks[sink].failures);
        self.store_entries(
            slot,
            sink,
            |entry| Reason::from(failures.rejection(slot, entry)),
            |entry| failures.is_failed(slot, entry) && failures.is_permanent(slot, entry),
        );
        if failures.failed_entries(slot).next().is_none() {
            self.finish_sink(slot, sink);
            return;
        }
        let attempts = &mut self.attempts[slot * self.sinks.len() + sink];
        *attempts += 1;
        let attempts = *attempts;
        if self.draining_since.is_some() {
            self.store_failed(slot, sink, Reason::Shutdown);
        } else if attempts >= self.retry.max_attempts {
            self.store_failed(slot, sink, Reason::AttemptsExhausted);
        } else {
            let item = RetryItem {
                batch_slot: slot as u32,
                sink: sink as u16,
            };
            let delay = self.retry.backoff.delay(attempts);
            match self.wheel.insert(item, delay, Instant::now()) {
                Ok(()) => {
                    self.metrics.retry_queue_size.set(self.wheel.len() as u64);
                    return;
                }
                Err(_) => {
                    let entries = failures.failed_entries(slot).count() as u64;
                    self.metrics.retry_drops.add(entries);
                    self.store_failed(slot, sink, Reason::RetryQueueFull);
                }
            }
        }
        self.finish_sink(slot, sink);
    }

    /// Hands every due retry to its sink. True if any.
    fn send_due_retries(&mut self) -> bool {
        self.wheel.expire(Instant::now(), &mut self.due);
        if self.due.is_empty() {
            return false;
        }
        self.metrics.retry_queue_size.set(self.wheel.len() as u64);
        for index in 0..self.due.len() {
            let item = self.due[index];
            let (slot, sink) = (item.batch_slot as usize, usize::from(item.sink));
            let batch = Arc::clone(
                self.slots[slot]
                    .batch
                    .as_ref()
                    .expect("a waiting retry holds its batch"),
            );
            self.slots[slot].reports_missing += 1;
            self.sinks[sink].lane.send(SinkJob { batch, retry: true });
            self.metrics.retries_sent.add(1);
        }
        self.due.clear();
        true
    }

    /// Stores a sink's failed entries of a batch in its DLQ.
    fn store_failed(&mut self, slot: usize, sink: usize, reason: Reason) {
        let failures = Arc::clone(&self.sinks[sink].failures);
        self.store_entries(
            slot,
            sink,
            |_| reason,
            |entry| failures.is_failed(slot, entry),
        );
    }

    /// Stores the entries of a batch that `select` picks in a sink's DLQ,
    /// each with its `reason`, and clears their failure marks. This is
    /// where a line's outcome at a sink becomes "not delivered", so it is
    /// counted here, once per line; a line that is retried and then
    /// delivered never reaches this point.
    fn store_entries(
        &mut self,
        slot: usize,
        sink: usize,
        reason: impl Fn(usize) -> Reason,
        select: impl Fn(usize) -> bool,
    ) {
        let batch = Arc::clone(
            self.slots[slot]
                .batch
                .as_ref()
                .expect("the slot holds a batch"),
        );
        let attempts = self.attempts[slot * self.sinks.len() + sink].max(1);
        // The batch's own table: it resolves values carried inline too.
        let symbols = Arc::clone(batch.symbols());
        let mut labels = recycle_labels(std::mem::take(&mut self.dlq_labels));
        let end = &mut self.sinks[sink];
        let mut stored = 0u64;
        let mut lost = false;
        for (index, entry) in batch.entries().iter().enumerate() {
            if !select(index) {
                continue;
            }
            stored += 1;
            symbols.resolve_labels_into(entry.labels, &mut labels);
            // The time the sink sent the entry with, if it chose one: a
            // replay sends it again unchanged.
            let timestamp_ns = end
                .failures
                .sent_timestamp(slot, index)
                .unwrap_or(entry.timestamp_ns);
            let record = Record {
                timestamp_ns,
                attempts,
                reason: reason(index),
                terminated: entry.terminated,
                sink: &end.id,
                labels,
                message: entry.line,
            };
            lost |= end.dlq.store(&record) == Stored::Lost;
            labels = record.labels;
            end.failures.unmark(slot, index);
        }
        self.dlq_labels = recycle_labels(labels);
        end.metrics.lines_failed.add(stored);
        if lost {
            self.receipts.hold(batch.sequence());
        }
    }

    /// A sink is done with a batch; complete the batch if all are.
    fn finish_sink(&mut self, slot: usize, sink: usize) {
        let state = &mut self.slots[slot];
        state.sinks_pending &= !(1 << sink);
        if state.sinks_pending != 0 || state.reports_missing != 0 {
            return;
        }
        let batch = state.batch.take().expect("a pending batch");
        let batch =
            Arc::try_unwrap(batch).expect("every sink handed its reference back with its report");
        self.receipts.complete(batch.sequence());
        let arena = reclaim_arena(batch.into_arena(), self.arena_bytes());
        self.arenas.push(arena);
        self.free_slots.push(slot);
        let sinks = self.sinks.len();
        self.attempts[slot * sinks..(slot + 1) * sinks].fill(0);
        self.metrics.batches_completed.add(1);
        self.metrics
            .batches_in_flight
            .set((self.slots.len() - self.free_slots.len()) as u64);
    }

    /// Copies lines from the source rings into batches. Returns whether
    /// any moved, and whether every ring was left empty (the sources have
    /// nothing more to give for now).
    fn drain_sources(&mut self) -> (bool, bool) {
        let mut progressed = false;
        let mut idle = true;
        let count = self.sources.len();
        for offset in 0..count {
            let index = (self.source_first + offset) % count;
            let mut emptied = false;
            for _ in 0..limits::DISPATCH_CHUNKS_PER_SOURCE_MAX {
                match self.drain_one_chunk(index) {
                    Drained::Chunk => progressed = true,
                    Drained::Empty => {
                        emptied = true;
                        break;
                    }
                    Drained::Stalled => return (progressed, false),
                }
            }
            idle &= emptied;
        }
        self.source_first = (self.source_first + 1) % count.max(1);
        (progressed, idle)
    }

    fn drain_one_chunk(&mut self, index: usize) -> Drained {
        let source = &mut self.sources[index];
        let (chunk, mut next_line) = match source.current.take() {
            Some(current) => current,
            None => match source.chunks.pop() {
                Ok(chunk) => {
                    source.round_open = !chunk.ends_round;
                    (chunk, 0)
                }
                Err(_) => return Drained::Empty,
            },
        };
        let lines = chunk.lines();
        let mut appended = 0u64;
        while next_line < lines.len() {
            if !self.ensure_open() {
                self.count_dispatched(index, appended);
                self.sources[index].current = Some((chunk, next_line));
                return Drained::Stalled;
            }
            let open = self.open.as_mut().expect("ensure_open opened a batch");
            let span = lines[next_line];
            let line = chunk.line_labels(next_line);
            let with_inline;
            let labels = if line.inline.is_empty() {
                line.labels
            } else {
                with_inline = open.labels_with_inline(line.labels, line.inline.iter());
                &with_inline
            };
            open.push(
                chunk.line(span),
                labels,
                index as SourceIndex,
                line.timestamp_ns,
                span.terminated,
            );
            next_line += 1;
            appended += 1;
            if next_line == lines.len()
                && let Some(receipt) = chunk.receipt
            {
                self.receipts.note(index, receipt);
            }
            if open.is_full(self.settings.batch_bytes) {
                self.seal_open();
            }
        }
        self.count_dispatched(index, appended);
        let source = &mut self.sources[index];
        // Also when the chunk's last line filled a batch: then the open
        // batch waits as if it had lines of this source, which is safe.
        source.in_open_batch |= appended > 0;
        // A source that has ended no longer takes chunks back; dropping the
        // chunk then frees it, which happens once, at shutdown.
        if source.returns.push(chunk).is_ok() && source.wants_return_wake() {
            source.source.wake();
        }
        Drained::Chunk
    }

    fn count_dispatched(&self, source: usize, lines: u64) {
        self.metrics.lines_processed.add(lines);
        self.sources[source].metrics.lines_dispatched.add(lines);
    }

    /// What an arena is sized for: a full batch.
    fn arena_bytes(&self) -> usize {
        arena_capacity_bytes(self.settings.batch_size, self.settings.batch_bytes)
    }

    /// Whether a new batch may be opened: an arena is free and fewer than
    /// `fresh_max` batches wait for a first answer.
    fn may_open(&self) -> bool {
        let fresh = self.slots.iter().filter(|state| state.fresh).count();
        fresh < self.settings.fresh_max && !self.arenas.is_empty()
    }

    /// Opens a batch if none is open. False when every arena is taken, or
    /// when `fresh_max` sealed batches wait for their sinks' first answer:
    /// a slow sink then holds the sources back at `batches_in_flight`
    /// batches (and their arenas, and the messages in librdkafka's queue)
    /// rather than at every slot.
    fn ensure_open(&mut self) -> bool {
        if self.open.is_some() {
            return true;
        }
        if !self.may_open() {
            return false;
        }
        let Some(arena) = self.arenas.pop() else {
            return false;
        };
        self.open = Some(OpenBatch::new(
            arena,
            self.settings.batch_size,
            Arc::clone(&self.symbols),
        ));
        true
    }

    /// Seals the open batch when it has waited `batch_timeout`, or with
    /// `sources_idle` (every ring emptied): at once when every source with
    /// lines in it ended its read round, else after `latency_target`.
    fn seal_if_due(&mut self, sources_idle: bool) {
        let wait = if sources_idle && self.rounds_ended() {
            Duration::ZERO
        } else if sources_idle {
            self.settings
                .batch_timeout
                .min(self.settings.latency_target)
        } else {
            self.settings.batch_timeout
        };
        let due = match &self.open {
            Some(open) => !open.is_empty() && open.opened_at().elapsed() >= wait,
            None => false,
        };
        if due {
            self.seal_open();
        }
    }

    /// Whether every source with lines in the open batch has ended its
    /// read round: nothing more is coming until its next read.
    fn rounds_ended(&self) -> bool {
        self.sources
            .iter()
            .all(|source| !source.in_open_batch || !source.round_open)
    }

    /// Seals the open batch (if it has entries) and hands it to every sink.
    fn seal_open(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        for source in &mut self.sources {
            source.in_open_batch = false;
        }
        if open.is_empty() {
            debug_assert!(self.receipts.open.is_empty(), "receipts come with lines");
            let arena = reclaim_arena(open.into_arena(), self.arena_bytes());
            self.arenas.push(arena);
            return;
        }
        let slot = self
            .free_slots
            .pop()
            .expect("a free slot exists for every arena taken");
        let batch = Arc::new(open.seal(slot, self.sequence_next));
        self.receipts.sealed(self.sequence_next);
        self.sequence_next += 1;
        for sink in &mut self.sinks {
            // Times a sink chose for the slot's previous batch must not be
            // taken for this one's if it is stored before the sink sees it.
            sink.failures.forget_sent_timestamps(slot);
            sink.lane.send(SinkJob {
                batch: Arc::clone(&batch),
                retry: false,
            });
        }
        let sink_count = self.sinks.len();
        self.slots[slot] = SlotState {
            batch: Some(batch),
            sinks_pending: if sink_count == 64 {
                u64::MAX
            } else {
                (1u64 << sink_count) - 1
            },
            reports_missing: sink_count as u32,
            fresh: true,
        };
        self.metrics.batches_sealed.add(1);
        self.metrics
            .batches_in_flight
            .set((self.slots.len() - self.free_slots.len()) as u64);
    }
}

/// The DLQ reason under which an entry a sink refused for good is stored
/// in that sink's `rejected/` segments (by this stage and by the replay
/// stage).
impl From<Rejection> for Reason {
    fn from(rejection: Rejection) -> Reason {
        match rejection {
            Rejection::TooLarge => Reason::MessageTooLarge,
            Rejection::NotAuthorized => Reason::NotAuthorized,
            Rejection::InvalidTopic => Reason::InvalidTopic,
            Rejection::Refused => Reason::Refused,
            Rejection::TooOld => Reason::EntryTooOld,
            Rejection::TooNew => Reason::EntryTooNew,
            Rejection::LineTooLong => Reason::LineTooLong,
            Rejection::InvalidLabels => Reason::InvalidLabels,
        }
    }
}

/// Empties a label buffer and returns its allocation under a new lifetime,
/// so that the dispatcher can keep it between DLQ writes although the
/// strings it held were borrowed from a local handle of the symbol table.
/// Collecting a `vec::IntoIter` into a `Vec` whose element has the same
/// layout reuses the buffer in place (`tests/allocations.rs` and the test
/// below check that it does); were it not to, the buffer would be
/// allocated again once per call, still never per entry.
fn recycle_labels<'to>(mut labels: Vec<(&str, &str)>) -> Vec<(&'to str, &'to str)> {
    labels.clear();
    labels
        .into_iter()
        .map(|_| unreachable!("the buffer was cleared"))
        .collect()
}

/// How draining ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// Every batch was reported on.
    Complete,
    /// The drain timeout passed; the rest went to the DLQ.
    TimedOut,
}

/// What draining one chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// A chunk was fully copied.
    Chunk,
    /// The ring had nothing.
    Empty,
    /// Every arena is taken; the chunk waits.
    Stalled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_labels_keep_their_buffer() {
        let owner = String::from("value");
        let mut labels: Vec<(&str, &str)> = Vec::with_capacity(8);
        labels.push(("key", owner.as_str()));
        let buffer = labels.as_ptr().cast::<u8>();
        let recycled: Vec<(&'static str, &'static str)> = recycle_labels(labels);
        drop(owner);
        assert!(recycled.is_empty());
        assert_eq!(recycled.capacity(), 8);
        assert_eq!(
            recycled.as_ptr().cast::<u8>(),
            buffer,
            "the allocation is kept"
        );
    }
}
