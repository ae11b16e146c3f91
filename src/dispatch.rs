//! The dispatcher: one thread that batches the lines of every source and
//! hands each sealed batch to every sink.
//!
//! ```text
//! loop:
//!     collect sink reports; a batch every sink reported on is complete:
//!         take its arena back (the dispatcher holds the last Arc), reset it
//!     drain source rings round-robin, at most DISPATCH_CHUNKS_PER_SOURCE_MAX
//!         chunks each: copy lines into the open batch, seal it on batch_size
//!         or batch_bytes, give the empty chunk back to its source
//!     seal the open batch once batch_timeout_ms passed since its first entry
//!     nothing to do: park until woken or until the open batch is due
//! ```
//!
//! Invariants: the number of arenas (free, open, or in flight) equals
//! `batches_in_flight`, and so does the number of in-flight slots; a batch in
//! flight occupies one slot and one arena. When no arena is free the
//! dispatcher stops taking chunks, so sources stop reading: backpressure
//! reaches the files without any queue growing.
//!
//! The dispatcher ends when every source has dropped its ring and every
//! batch is complete; dropping its rings then tells the sinks to finish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bumpalo::Bump;
use rtrb::{Consumer, Producer};

use crate::batch::{OpenBatch, SealedBatch};
use crate::labels::LabelSet;
use crate::limits;
use crate::metrics::{DispatcherMetrics, SourceMetrics};
use crate::sink::{Outcome, SinkReport};
use crate::source::SourceChunk;
use crate::telemetry::latency::LatencyPublisher;
use crate::wake::{self, Waker};

/// Batching settings, from `[dispatcher]`.
#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub batch_timeout: Duration,
}

/// The dispatcher's end of one source's rings.
#[derive(Debug)]
pub struct SourceEnd {
    pub chunks: Consumer<SourceChunk>,
    pub returns: Producer<SourceChunk>,
    /// Wakes the source when a chunk comes back.
    pub source: Waker,
    /// A chunk partly copied into batches, and the index of its next line.
    current: Option<(SourceChunk, usize)>,
    /// The source's counters; the dispatcher counts the lines it took.
    metrics: Arc<SourceMetrics>,
}

impl SourceEnd {
    pub fn new(
        chunks: Consumer<SourceChunk>,
        returns: Producer<SourceChunk>,
        source: Waker,
        metrics: Arc<SourceMetrics>,
    ) -> Self {
        Self {
            chunks,
            returns,
            source,
            current: None,
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

/// The dispatcher's end of one sink's rings.
#[derive(Debug)]
pub struct SinkEnd {
    pub batches: Producer<Arc<SealedBatch>>,
    pub reports: Consumer<SinkReport>,
    pub sink: Waker,
    /// The entries this sink failed, per slot (read after a `Failed` report).
    pub failures: Arc<crate::sink::FailureTable>,
    /// Time from a line being read to its batch being reported by this sink.
    pub read_to_ack: LatencyPublisher,
    /// Time from a batch being sealed to this sink's report.
    pub seal_to_ack: LatencyPublisher,
}

/// A sealed batch waiting for reports.
#[derive(Debug)]
struct InFlight {
    batch: Arc<SealedBatch>,
    reports_missing: usize,
}

/// The dispatcher thread's state.
#[derive(Debug)]
pub struct Dispatcher {
    settings: BatchSettings,
    sources: Vec<SourceEnd>,
    sinks: Vec<SinkEnd>,
    /// Label set of each stream, indexed by `StreamId`.
    streams: Arc<[LabelSet]>,
    /// Free arenas, reset.
    arenas: Vec<Bump>,
    open: Option<OpenBatch>,
    /// Indexed by a sealed batch's slot.
    in_flight: Vec<Option<InFlight>>,
    free_slots: Vec<usize>,
    sequence_next: u64,
    /// First source to drain in the next round, for fairness.
    source_first: usize,
    own: Waker,
    metrics: Arc<DispatcherMetrics>,
}

impl Dispatcher {
    /// `arenas` are the preallocated batch arenas; their number is the bound
    /// on batches in flight. Each sink ring must hold that many batches.
    pub fn new(
        settings: BatchSettings,
        sources: Vec<SourceEnd>,
        sinks: Vec<SinkEnd>,
        streams: Arc<[LabelSet]>,
        arenas: Vec<Bump>,
        own: Waker,
        metrics: Arc<DispatcherMetrics>,
    ) -> Self {
        assert!(
            !arenas.is_empty(),
            "batches_in_flight is validated non-zero"
        );
        assert!(!sinks.is_empty(), "a config has at least one sink");
        for sink in &sinks {
            assert!(
                sink.batches.buffer().capacity() >= arenas.len(),
                "a sink ring holds every batch in flight"
            );
            assert!(
                sink.reports.buffer().capacity() >= arenas.len(),
                "a report ring holds every batch in flight"
            );
        }
        let slots = arenas.len();
        Self {
            settings,
            sources,
            sinks,
            streams,
            arenas,
            open: None,
            in_flight: (0..slots).map(|_| None).collect(),
            free_slots: (0..slots).rev().collect(),
            sequence_next: 0,
            source_first: 0,
            own,
            metrics,
        }
    }

    /// The thread body.
    pub fn run(mut self) {
        self.own.register_current();
        loop {
            let mut progressed = self.collect_reports();
            for sink in &mut self.sinks {
                sink.read_to_ack.publish_if_due();
                sink.seal_to_ack.publish_if_due();
            }
            progressed |= self.drain_sources();
            self.seal_if_due();
            if self.sources.iter().all(SourceEnd::is_finished) {
                self.seal_open();
                if self.free_slots.len() == self.in_flight.len() {
                    break;
                }
            }
            if !progressed {
                wake::park(self.park_timeout());
            }
        }
        assert_eq!(
            self.arenas.len(),
            self.in_flight.len(),
            "every arena is back at the end"
        );
        // Drop the rings before the wake-ups, so that each sink sees its ring
        // abandoned at once instead of at its next park timeout.
        let sinks: Vec<Waker> = self.sinks.iter().map(|sink| sink.sink.clone()).collect();
        drop(self);
        for sink in sinks {
            sink.wake();
        }
    }

    fn park_timeout(&self) -> Duration {
        let longest = Duration::from_millis(limits::PARK_TIMEOUT_MS_MAX);
        match &self.open {
            Some(open) if !open.is_empty() => {
                let due = open.opened_at() + self.settings.batch_timeout;
                due.saturating_duration_since(Instant::now()).min(longest)
            }
            _ => longest,
        }
    }

    /// Takes every report; completes batches all sinks reported on.
    fn collect_reports(&mut self) -> bool {
        let mut progressed = false;
        for sink_index in 0..self.sinks.len() {
            while let Ok(report) = self.sinks[sink_index].reports.pop() {
                progressed = true;
                let slot = report.batch.slot();
                let sink = &mut self.sinks[sink_index];
                let lines = report.batch.len() as u64;
                sink.seal_to_ack
                    .record(report.batch.sealed_at().elapsed(), lines);
                let read_to_ack_ns =
                    crate::source::file::now_ns().saturating_sub(report.batch.read_ns_oldest());
                sink.read_to_ack
                    .record(Duration::from_nanos(read_to_ack_ns), lines);
                if let Outcome::Failed {
                    retryable,
                    entries_failed,
                } = report.outcome
                {
                    // The retry wheel will take the failed entries (from the
                    // sink's failure table); until then the sink counts them
                    // and they are logged here.
                    tracing::debug!(
                        sink_index,
                        retryable,
                        entries_failed,
                        sequence = report.batch.sequence(),
                        "batch failed at a sink"
                    );
                }
                drop(report.batch);
                self.complete_report(slot);
            }
        }
        progressed
    }

    fn complete_report(&mut self, slot: usize) {
        let in_flight = self.in_flight[slot]
            .as_mut()
            .expect("a report names a batch in flight");
        assert!(
            in_flight.reports_missing > 0,
            "slot={slot}: more reports than sinks"
        );
        in_flight.reports_missing -= 1;
        if in_flight.reports_missing > 0 {
            return;
        }
        let in_flight = self.in_flight[slot].take().expect("checked above");
        let batch = Arc::try_unwrap(in_flight.batch)
            .expect("every sink handed its reference back with its report");
        self.arenas.push(batch.into_arena());
        self.free_slots.push(slot);
        self.metrics.batches_completed.add(1);
        self.metrics
            .batches_in_flight
            .set((self.in_flight.len() - self.free_slots.len()) as u64);
    }

    /// Copies lines from the source rings into batches. True if any moved.
    fn drain_sources(&mut self) -> bool {
        let mut progressed = false;
        let count = self.sources.len();
        for offset in 0..count {
            let index = (self.source_first + offset) % count;
            for _ in 0..limits::DISPATCH_CHUNKS_PER_SOURCE_MAX {
                match self.drain_one_chunk(index) {
                    Drained::Chunk => progressed = true,
                    Drained::Empty => break,
                    Drained::Stalled => return progressed,
                }
            }
        }
        self.source_first = (self.source_first + 1) % count.max(1);
        progressed
    }

    fn drain_one_chunk(&mut self, index: usize) -> Drained {
        let source = &mut self.sources[index];
        let (chunk, mut next_line) = match source.current.take() {
            Some(current) => current,
            None => match source.chunks.pop() {
                Ok(chunk) => (chunk, 0),
                Err(_) => return Drained::Empty,
            },
        };
        // A local handle, so that `self` stays free for sealing below.
        let streams = Arc::clone(&self.streams);
        let labels = &streams[chunk.stream as usize];
        let lines = chunk.lines();
        let mut appended = 0u64;
        while next_line < lines.len() {
            if !self.ensure_open() {
                self.metrics.lines_processed.add(appended);
                self.sources[index].metrics.lines_dispatched.add(appended);
                self.sources[index].current = Some((chunk, next_line));
                return Drained::Stalled;
            }
            let open = self.open.as_mut().expect("ensure_open opened a batch");
            let span = lines[next_line];
            open.push(
                chunk.line(span),
                (chunk.stream, labels),
                chunk.read_at_ns,
                span.terminated,
            );
            next_line += 1;
            appended += 1;
            if open.is_full(self.settings.batch_bytes) {
                self.seal_open();
            }
        }
        self.metrics.lines_processed.add(appended);
        let source = &mut self.sources[index];
        source.metrics.lines_dispatched.add(appended);
        // A source that has ended no longer takes chunks back; dropping the
        // chunk then frees it, which happens once, at shutdown.
        if source.returns.push(chunk).is_ok() {
            source.source.wake();
        }
        Drained::Chunk
    }

    /// Opens a batch if none is open. False when every arena is in flight.
    fn ensure_open(&mut self) -> bool {
        if self.open.is_some() {
            return true;
        }
        let Some(arena) = self.arenas.pop() else {
            return false;
        };
        self.open = Some(OpenBatch::new(arena, self.settings.batch_size));
        true
    }

    fn seal_if_due(&mut self) {
        let due = match &self.open {
            Some(open) => {
                !open.is_empty() && open.opened_at().elapsed() >= self.settings.batch_timeout
            }
            None => false,
        };
        if due {
            self.seal_open();
        }
    }

    /// Seals the open batch (if it has entries) and hands it to every sink.
    fn seal_open(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if open.is_empty() {
            self.arenas.push(open.into_arena());
            return;
        }
        let slot = self
            .free_slots
            .pop()
            .expect("a free slot exists for every arena taken");
        let batch = Arc::new(open.seal(slot, self.sequence_next));
        self.sequence_next += 1;
        for sink in &mut self.sinks {
            let pushed = sink.batches.push(Arc::clone(&batch));
            assert!(pushed.is_ok(), "a sink ring holds every batch in flight");
            sink.sink.wake();
        }
        self.in_flight[slot] = Some(InFlight {
            batch,
            reports_missing: self.sinks.len(),
        });
        self.metrics.batches_sealed.add(1);
        self.metrics
            .batches_in_flight
            .set((self.in_flight.len() - self.free_slots.len()) as u64);
    }
}

/// What draining one chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// A chunk was fully copied.
    Chunk,
    /// The ring had nothing.
    Empty,
    /// Every arena is in flight; the chunk waits.
    Stalled,
}
