//! The link protocol between a sink thread and the stages that hand it
//! batches, owned by neither side.
//!
//! A sink has two lanes in: the dispatcher's (live traffic, retries) and
//! the replay stage's (records read back from the sink's DLQ). Each lane is
//! a pair of SPSC rings, jobs in and reports out, and owns a range of batch
//! slots ([`SlotPlan`]); the sink answers every job with one
//! [`SinkReport`] on the ring of the lane the batch's slot belongs to.
//! Which entries failed, and why, the sink marks in the [`FailureTable`]
//! at the batch's slot, before it pushes the report. Which entries a job
//! asks for is its [`Selection`] ([`SinkLinks::selection`]): a sink with
//! `inputs` takes only the entries of its [`SourceSet`] from live batches;
//! the others are done for it without being delivered.
//!
//! ```text
//!  dispatcher ──jobs──►┐                 ┌──reports──► dispatcher
//!                      ├─► sink thread ──┤
//!  replay stage ─jobs─►┘   (live first)  └──reports──► replay stage
//! ```
//!
//! Invariants: a lane's rings hold as many elements as the lane has slots,
//! and a producer keeps at most one batch per slot in flight, so no push
//! can fail (each is asserted). A sink takes live jobs before replay jobs,
//! so replay never delays live traffic by more than one batch. A sink ends
//! when its live lane is abandoned and empty, no replay job waits, and
//! every batch it took has been reported: the end of live traffic ends the
//! sink, and a replay job pushed after that is never answered (its replay
//! stops waiting and leaves the records in their segment).

pub mod failures;
pub mod sources;

pub use failures::{FailureTable, Rejection};
pub use sources::SourceSet;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use rtrb::{Consumer, Producer, RingBuffer};

use crate::batch::{Entry, SealedBatch};
use crate::wake::Waker;

/// A batch for a sink: the whole batch, or (a retry) only the entries
/// marked failed in the sink's failure table.
#[derive(Debug)]
pub struct SinkJob {
    pub batch: Arc<SealedBatch>,
    pub retry: bool,
}

/// What became of one batch at one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Some or all entries were not delivered. Which ones, and which of
    /// those failed for good, is in the sink's [`FailureTable`] at the
    /// batch's slot. `retryable` is true when no failed entry failed for good.
    Failed {
        retryable: bool,
        entries_failed: u32,
    },
}

/// One sink's answer for one batch. The batch's `Arc` comes back with it,
/// so that the producer holds the last reference once every sink answered.
#[derive(Debug)]
pub struct SinkReport {
    pub batch: Arc<SealedBatch>,
    pub outcome: Outcome,
}

/// Which entries of a batch a job asks a sink to deliver.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// Every entry: a live batch's first delivery at a sink that takes
    /// every source, or a replayed batch (addressed to this sink already).
    All,
    /// The entries of the sources the sink takes (a live batch's first
    /// delivery at a sink with `inputs`); the others are skipped.
    Sources(&'a SourceSet),
    /// The entries marked failed at the batch's slot (a retry). A sink
    /// marks only entries it took, so a retry never reaches a skipped one.
    Failed(&'a FailureTable),
}

impl Selection<'_> {
    /// Whether `entry`, at `index` in the batch in `slot`, is selected.
    #[inline]
    pub fn includes(&self, slot: usize, index: usize, entry: &Entry<'_>) -> bool {
        match self {
            Selection::All => true,
            Selection::Sources(sources) => sources.takes_entry(entry),
            Selection::Failed(failures) => failures.is_failed(slot, index),
        }
    }

    /// How many entries of `batch` are selected.
    pub fn count(&self, batch: &SealedBatch) -> usize {
        match self {
            Selection::All => batch.len(),
            Selection::Sources(sources) => sources.entries_taken(batch),
            Selection::Failed(failures) => failures.failed_entries(batch.slot()).count(),
        }
    }
}

/// The batch slots of a sink's lanes: the live lane's come first, the
/// replay lane's after them. Named once here, so that every table indexed
/// by slot (failure table, delivery books) is sized the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPlan {
    /// Batches the dispatcher may have in flight at once: those at sinks
    /// plus those the retry wheel holds (`batches_in_flight +
    /// retry.max_batches`).
    pub live_slots: usize,
    /// Batches the replay stage may have in flight at once.
    pub replay_slots: usize,
}

impl SlotPlan {
    pub fn slots_total(&self) -> usize {
        self.live_slots + self.replay_slots
    }

    pub fn live(&self) -> Range<usize> {
        0..self.live_slots
    }

    pub fn replay(&self) -> Range<usize> {
        self.live_slots..self.slots_total()
    }
}

/// Batches the replay stage keeps in flight: one, so that a step is
/// acknowledged before the next is read (the acknowledgement file records
/// whole steps).
pub const REPLAY_SLOTS: usize = 1;

/// The sink's end of one lane.
#[derive(Debug)]
pub struct Lane {
    jobs: Consumer<SinkJob>,
    reports: Producer<SinkReport>,
    /// Wakes the lane's producer after a report.
    producer: Waker,
    slots: Range<usize>,
}

/// The producer's end of one lane.
#[derive(Debug)]
pub struct LaneEnd {
    pub jobs: Producer<SinkJob>,
    pub reports: Consumer<SinkReport>,
    /// Wakes the sink after a job.
    pub sink: Waker,
}

impl LaneEnd {
    /// Hands a job to the sink; a full ring is a broken invariant.
    pub fn send(&mut self, job: SinkJob) {
        let pushed = self.jobs.push(job);
        assert!(pushed.is_ok(), "a sink ring holds every slot of its lane");
        self.sink.wake();
    }
}

/// A lane over `slots`: rings as long as the lane has slots.
pub fn lane(slots: Range<usize>, producer: Waker, sink: Waker) -> (LaneEnd, Lane) {
    assert!(!slots.is_empty(), "a lane has at least one slot");
    let (jobs_producer, jobs_consumer) = RingBuffer::new(slots.len());
    let (reports_producer, reports_consumer) = RingBuffer::new(slots.len());
    (
        LaneEnd {
            jobs: jobs_producer,
            reports: reports_consumer,
            sink,
        },
        Lane {
            jobs: jobs_consumer,
            reports: reports_producer,
            producer,
            slots,
        },
    )
}

impl Lane {
    /// Abandoned and empty: the producer has ended and sent nothing more.
    /// The abandonment is read before emptiness: a producer pushes, then
    /// drops its end, so an abandoned ring that is empty stays empty.
    fn is_finished(&self) -> bool {
        self.jobs.is_abandoned() && self.jobs.is_empty()
    }
}

/// Everything a sink thread is linked by.
#[derive(Debug)]
pub struct SinkLinks {
    live: Lane,
    replay: Option<Lane>,
    /// This thread's own waker, registered at start.
    pub own: Waker,
    /// Where this sink marks the entries it failed, per batch slot.
    pub failures: Arc<FailureTable>,
    /// The sources whose entries this sink takes from live batches.
    inputs: SourceSet,
    /// Bumped once per reopen request (SIGHUP); a sink that sees a value
    /// it has not handled yet reopens its output before its next job.
    pub reopen_requests: Arc<AtomicU64>,
}

impl SinkLinks {
    pub fn new(
        live: Lane,
        replay: Option<Lane>,
        own: Waker,
        failures: Arc<FailureTable>,
        inputs: SourceSet,
        reopen_requests: Arc<AtomicU64>,
    ) -> Self {
        let slots_end = replay
            .as_ref()
            .map_or(live.slots.end, |lane| lane.slots.end);
        assert!(
            failures.slots() >= slots_end,
            "the failure table covers every slot of every lane"
        );
        Self {
            live,
            replay,
            own,
            failures,
            inputs,
            reopen_requests,
        }
    }

    /// The entries a job for the batch in `slot` asks this sink to
    /// deliver: on a retry, the ones it failed; on a live batch's first
    /// delivery, those of its inputs; on a replayed batch, every one (the
    /// replay lane carries only what this sink's DLQ held).
    pub fn selection(&self, slot: usize, retry: bool) -> Selection<'_> {
        if retry {
            Selection::Failed(&self.failures)
        } else if self.inputs.takes_every_source() || !self.is_live(slot) {
            Selection::All
        } else {
            Selection::Sources(&self.inputs)
        }
    }

    /// The next job, live lane first.
    pub fn take_job(&mut self) -> Option<SinkJob> {
        if let Ok(job) = self.live.jobs.pop() {
            return Some(job);
        }
        self.replay.as_mut().and_then(|lane| lane.jobs.pop().ok())
    }

    /// The next job; `None` when the lanes are finished (see
    /// [`is_finished`](Self::is_finished)), `Some(None)` when none is
    /// waiting yet.
    pub fn next_job(&mut self) -> Option<Option<SinkJob>> {
        let finished = self.is_finished();
        match self.take_job() {
            Some(job) => Some(Some(job)),
            None if finished => None,
            None => Some(None),
        }
    }

    /// Whether a job waits in any lane.
    pub fn has_jobs(&self) -> bool {
        !self.live.jobs.is_empty()
            || self
                .replay
                .as_ref()
                .is_some_and(|lane| !lane.jobs.is_empty())
    }

    /// The live lane is abandoned and empty and no replay job waits. The
    /// replay lane's abandonment is not waited for: a replay runs until a
    /// stop is asked for, and the sink must end when live traffic does.
    pub fn is_finished(&self) -> bool {
        self.live.is_finished() && self.replay.as_ref().is_none_or(|lane| lane.jobs.is_empty())
    }

    /// Whether a slot belongs to the live lane (the dispatcher's): replayed
    /// batches are counted by the replay stage, not in the sink's counters.
    pub fn is_live(&self, slot: usize) -> bool {
        self.live.slots.contains(&slot)
    }

    /// Sends a report back on the lane its batch came from.
    pub fn report(&mut self, report: SinkReport) {
        let slot = report.batch.slot();
        let lane = match &mut self.replay {
            Some(lane) if lane.slots.contains(&slot) => lane,
            _ => {
                assert!(self.live.slots.contains(&slot), "slot {slot} is in no lane");
                &mut self.live
            }
        };
        let pushed = lane.reports.push(report);
        assert!(pushed.is_ok(), "a report ring holds every slot of its lane");
        lane.producer.wake();
    }
}
