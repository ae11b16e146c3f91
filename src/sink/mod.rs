//! Sinks: one thread each, fed sealed batches through an SPSC ring, and
//! answering every batch with one [`SinkReport`] on a ring back to the
//! dispatcher.
//!
//! A sink never blocks the dispatcher: both rings hold `batches_in_flight`
//! elements, so neither push can fail while the dispatcher keeps at most that
//! many batches in flight. A sink reports a batch only when it is done with
//! it, and hands its `Arc` back in the report, so that the dispatcher holds
//! the last reference once every sink has reported.

pub mod encode;
pub mod failures;
pub mod file;
pub mod kafka;
pub mod null;
pub mod stdout;

pub use failures::FailureTable;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rtrb::{Consumer, Producer};

use crate::batch::SealedBatch;
use crate::dispatch::SinkJob;
use crate::limits;
use crate::metrics::SinkMetrics;
use crate::wake::{self, Waker};

/// Why a sink could not deliver a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: cannot write {target}")]
    Write {
        sink: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sink {sink}: cannot open {target}")]
    Open {
        sink: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
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

/// One sink's answer for one batch.
#[derive(Debug)]
pub struct SinkReport {
    pub batch: Arc<SealedBatch>,
    pub outcome: Outcome,
}

/// Which entries of a batch a job asks a sink to deliver.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// Every entry (a batch's first delivery).
    All,
    /// The entries marked failed at the batch's slot (a retry).
    Failed(&'a FailureTable),
}

impl Selection<'_> {
    pub fn includes(&self, slot: usize, entry: usize) -> bool {
        match self {
            Selection::All => true,
            Selection::Failed(failures) => failures.is_failed(slot, entry),
        }
    }
}

/// A destination that takes batches synchronously.
pub trait Sink: Send {
    /// Writes the selected entries of `batch`, in order.
    fn deliver(&mut self, batch: &SealedBatch, selection: Selection<'_>) -> Result<(), SinkError>;

    /// Makes what was delivered durable as far as the sink can (at shutdown).
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Bytes the last `deliver` wrote, for metrics.
    fn bytes_written_last(&self) -> usize {
        0
    }

    /// Opens the output again (a file moved away by logrotate). Sinks
    /// without a reopenable output do nothing.
    fn reopen(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// The path [`reopen`](Self::reopen) opens, if any, for log lines.
    fn describe_output(&self) -> Option<&std::path::Path> {
        None
    }
}

/// The rings and wake-ups of one sink thread.
#[derive(Debug)]
pub struct SinkLinks {
    pub jobs: Consumer<SinkJob>,
    pub reports: Producer<SinkReport>,
    /// Wakes the dispatcher after a report.
    pub dispatcher: Waker,
    /// This thread's own waker, registered at start.
    pub own: Waker,
    /// Where this sink marks the entries it failed, per batch slot.
    pub failures: Arc<FailureTable>,
    /// Bumped once per reopen request (SIGHUP); a sink that sees a value
    /// it has not handled yet reopens its output before its next job.
    pub reopen_requests: Arc<AtomicU64>,
}

impl SinkLinks {
    /// The next job; `None` when the dispatcher has dropped its end and the
    /// ring is empty (abandonment is read before emptiness).
    pub fn next_job(&mut self) -> Option<Option<SinkJob>> {
        match self.jobs.pop() {
            Ok(job) => Some(Some(job)),
            Err(_) if self.jobs.is_abandoned() => self.jobs.pop().ok().map(Some),
            Err(_) => Some(None),
        }
    }
}

/// The body of a synchronous sink thread: deliver jobs until the dispatcher
/// drops its end of the ring and the ring is empty, then flush.
pub fn run_sink(mut sink: Box<dyn Sink>, mut links: SinkLinks, metrics: Arc<SinkMetrics>) {
    links.own.register_current();
    let mut reopen_handled = links.reopen_requests.load(Ordering::Acquire);
    while let Some(job) = links.next_job() {
        let reopen_requested = links.reopen_requests.load(Ordering::Acquire);
        if reopen_requested != reopen_handled {
            reopen_handled = reopen_requested;
            reopen(sink.as_mut(), &metrics);
        }
        let Some(job) = job else {
            wake::park(Duration::from_millis(limits::PARK_TIMEOUT_MS_MAX));
            continue;
        };
        let outcome = deliver_one(sink.as_mut(), &job, &metrics, &links.failures);
        let pushed = links.reports.push(SinkReport {
            batch: job.batch,
            outcome,
        });
        assert!(pushed.is_ok(), "a report ring holds every slot");
        links.dispatcher.wake();
    }
    if let Err(error) = sink.flush() {
        tracing::error!(sink = %metrics.id, error = %crate::error_chain::ErrorChain(&error), "flush at shutdown failed");
    }
}

fn reopen(sink: &mut dyn Sink, metrics: &SinkMetrics) {
    let Some(path) = sink
        .describe_output()
        .map(|path| path.display().to_string())
    else {
        return;
    };
    match sink.reopen() {
        Ok(()) => tracing::info!(sink = %metrics.id, file = %path, "output file reopened"),
        Err(error) => {
            tracing::error!(error = %crate::error_chain::ErrorChain(&error), "output not reopened; writing on to the file open before")
        }
    }
}

fn deliver_one(
    sink: &mut dyn Sink,
    job: &SinkJob,
    metrics: &SinkMetrics,
    failures: &FailureTable,
) -> Outcome {
    let batch = &job.batch;
    let slot = batch.slot();
    let selection = if job.retry {
        Selection::Failed(failures)
    } else {
        Selection::All
    };
    let lines = match selection {
        Selection::All => batch.len(),
        Selection::Failed(failures) => failures.failed_entries(slot).count(),
    } as u64;
    match sink.deliver(batch, selection) {
        Ok(()) => {
            if job.retry {
                failures.clear(slot);
            }
            metrics.lines_sent.add(lines);
            metrics.batches_sent.add(1);
            metrics.bytes_written.add(sink.bytes_written_last() as u64);
            Outcome::Delivered
        }
        Err(error) => {
            // An attempt, not an outcome: the dispatcher counts the lines
            // that end in the DLQ.
            metrics.line_attempts_failed.add(lines);
            metrics.batches_failed.add(1);
            tracing::warn!(sink = %metrics.id, error = %crate::error_chain::ErrorChain(&error), lines, "batch not delivered");
            if !job.retry {
                // A retry leaves the marks of the entries it tried as they are.
                failures.clear(slot);
                for entry in 0..batch.len() {
                    failures.mark(slot, entry, true);
                }
            }
            Outcome::Failed {
                retryable: true,
                entries_failed: lines as u32,
            }
        }
    }
}
