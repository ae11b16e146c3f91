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
use std::time::Duration;

use rtrb::{Consumer, Producer};

use crate::batch::SealedBatch;
use crate::limits;
use crate::metrics::SinkMetrics;
use crate::wake::{self, Waker};

/// Why a sink could not deliver a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink}: cannot write {target}: {source}")]
    Write {
        sink: String,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sink {sink}: cannot open {target}: {source}")]
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

/// A destination that takes whole batches synchronously.
pub trait Sink: Send {
    /// Writes every entry of `batch`.
    fn deliver(&mut self, batch: &SealedBatch) -> Result<(), SinkError>;

    /// Makes what was delivered durable as far as the sink can (at shutdown).
    fn flush(&mut self) -> Result<(), SinkError>;

    /// Bytes the last `deliver` wrote, for metrics.
    fn bytes_written_last(&self) -> usize {
        0
    }
}

/// The rings and wake-ups of one sink thread.
#[derive(Debug)]
pub struct SinkLinks {
    pub batches: Consumer<Arc<SealedBatch>>,
    pub reports: Producer<SinkReport>,
    /// Wakes the dispatcher after a report.
    pub dispatcher: Waker,
    /// This thread's own waker, registered at start.
    pub own: Waker,
    /// Where this sink marks the entries it failed, per batch slot.
    pub failures: Arc<FailureTable>,
}

/// The body of a sink thread: deliver batches until the dispatcher drops
/// its end of the ring and the ring is empty, then flush.
pub fn run_sink(mut sink: Box<dyn Sink>, mut links: SinkLinks, metrics: Arc<SinkMetrics>) {
    links.own.register_current();
    loop {
        let batch = match links.batches.pop() {
            Ok(batch) => batch,
            Err(_) if links.batches.is_abandoned() => match links.batches.pop() {
                Ok(batch) => batch,
                Err(_) => break,
            },
            Err(_) => {
                wake::park(Duration::from_millis(limits::PARK_TIMEOUT_MS_MAX));
                continue;
            }
        };
        let outcome = deliver_one(sink.as_mut(), &batch, &metrics, &links.failures);
        let pushed = links.reports.push(SinkReport { batch, outcome });
        assert!(
            pushed.is_ok(),
            "report ring holds batches_in_flight reports"
        );
        links.dispatcher.wake();
    }
    if let Err(error) = sink.flush() {
        tracing::error!(sink = %metrics.id, %error, "flush at shutdown failed");
    }
}

fn deliver_one(
    sink: &mut dyn Sink,
    batch: &SealedBatch,
    metrics: &SinkMetrics,
    failures: &FailureTable,
) -> Outcome {
    let lines = batch.len() as u64;
    match sink.deliver(batch) {
        Ok(()) => {
            metrics.lines_sent.add(lines);
            metrics.batches_sent.add(1);
            metrics.bytes_written.add(sink.bytes_written_last() as u64);
            Outcome::Delivered
        }
        Err(error) => {
            metrics.lines_failed.add(lines);
            metrics.batches_failed.add(1);
            tracing::warn!(sink = %metrics.id, %error, lines, "batch not delivered");
            failures.clear(batch.slot());
            for entry in 0..batch.len() {
                failures.mark(batch.slot(), entry, true);
            }
            Outcome::Failed {
                retryable: true,
                entries_failed: batch.len() as u32,
            }
        }
    }
}
