//! Synchronous sinks (file, stdout, null): a [`Sink`] takes a batch and
//! returns when it is written, and [`run_sink`] is the thread that feeds it
//! from its lanes and reports each batch. [`WriterSink`] is the writer
//! behind file and stdout.
//!
//! Thread: one per sink. Allocation: one encode buffer per sink, sized for
//! a full batch at start-up and shrunk back after a batch with a very long
//! line. Limits: a batch is written with one `write_all`; nothing is held
//! between batches.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::batch::SealedBatch;
use crate::labels::SymbolTable;
use crate::limits;
use crate::metrics::SinkMetrics;
use crate::sink::encode::{Encoder, Encoding};
use crate::sink::link::{FailureTable, Outcome, Selection, SinkJob, SinkLinks, SinkReport};
use crate::sink::{BuiltSink, SinkContext, SinkHealth};
use crate::wake;

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

/// Encodes batches into a buffer and writes them to `W`.
#[derive(Debug)]
pub struct WriterSink<W: Write + Send> {
    pub(crate) id: String,
    target: String,
    pub(crate) writer: W,
    encoder: Encoder,
    buffer: Vec<u8>,
    buffer_bytes_initial: usize,
    bytes_last: usize,
}

impl<W: Write + Send> WriterSink<W> {
    /// `target` names the destination in error messages.
    pub fn new(
        id: &str,
        target: String,
        writer: W,
        encoding: Encoding,
        symbols: Arc<SymbolTable>,
        buffer_bytes: usize,
    ) -> Self {
        Self {
            id: id.to_string(),
            target,
            writer,
            encoder: Encoder::new(encoding, symbols),
            buffer: Vec::with_capacity(buffer_bytes),
            buffer_bytes_initial: buffer_bytes,
            bytes_last: 0,
        }
    }

    fn write_error(&self, source: std::io::Error) -> SinkError {
        SinkError::Write {
            sink: self.id.clone(),
            target: self.target.clone(),
            source,
        }
    }
}

impl<W: Write + Send> Sink for WriterSink<W> {
    fn deliver(&mut self, batch: &SealedBatch, selection: Selection<'_>) -> Result<(), SinkError> {
        self.buffer.clear();
        self.encoder.use_symbols(batch.symbols());
        for (index, entry) in batch.entries().iter().enumerate() {
            if selection.includes(batch.slot(), index, entry) {
                self.encoder.encode(&mut self.buffer, entry);
            }
        }
        let written = self.writer.write_all(&self.buffer);
        self.bytes_last = self.buffer.len();
        if self.buffer.capacity() > 8 * self.buffer_bytes_initial {
            self.buffer = Vec::with_capacity(self.buffer_bytes_initial);
        }
        written.map_err(|source| self.write_error(source))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer
            .flush()
            .map_err(|source| self.write_error(source))
    }

    fn bytes_written_last(&self) -> usize {
        self.bytes_last
    }
}

/// Most often a sink logs that a batch was not delivered: a full disk
/// fails every batch, and one line per batch would flood the log.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The rate limit of a sink's "batch not delivered" warning.
#[derive(Debug, Default)]
struct FailureLog {
    logged_at: Option<Instant>,
    /// Failed batches not logged since the last line.
    batches_held_back: u64,
}

impl FailureLog {
    fn warn(&mut self, sink: &str, error: &SinkError, lines: u64) {
        if self
            .logged_at
            .is_some_and(|at| at.elapsed() < FAILURE_LOG_INTERVAL)
        {
            self.batches_held_back += 1;
            return;
        }
        tracing::warn!(sink, error = %crate::error_chain::ErrorChain(error), lines, batches_not_logged = self.batches_held_back, "batch not delivered");
        self.logged_at = Some(Instant::now());
        self.batches_held_back = 0;
    }
}

/// A synchronous sink ready for its thread: [`run_sink`] around it, and
/// its failures as its health.
pub fn built_writer(sink: Box<dyn Sink>, context: SinkContext) -> BuiltSink {
    let metrics = context.metrics;
    BuiltSink {
        health: Arc::clone(&metrics) as Arc<dyn SinkHealth>,
        run: Box::new(move |links| run_sink(sink, links, metrics)),
        kafka: None,
        loki: None,
    }
}

/// The body of a synchronous sink thread: deliver jobs until every lane is
/// abandoned and empty, then flush.
pub fn run_sink(mut sink: Box<dyn Sink>, mut links: SinkLinks, metrics: Arc<SinkMetrics>) {
    links.own.register_current();
    let mut reopen_handled = links.reopen_requests.load(Ordering::Acquire);
    let mut failure_log = FailureLog::default();
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
        // Replayed batches are counted by the replay stage, not here.
        let live = links.is_live(job.batch.slot());
        let selection = links.selection(job.batch.slot(), job.retry);
        let outcome = deliver_one(
            sink.as_mut(),
            &job,
            selection,
            &metrics,
            live,
            &links.failures,
            &mut failure_log,
        );
        links.report(SinkReport {
            batch: job.batch,
            outcome,
        });
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
    selection: Selection<'_>,
    metrics: &SinkMetrics,
    live: bool,
    failures: &FailureTable,
    failure_log: &mut FailureLog,
) -> Outcome {
    let batch = &job.batch;
    let slot = batch.slot();
    let lines = selection.count(batch) as u64;
    if lines == 0 {
        // Nothing of this batch is for this sink (no entry of its inputs):
        // it is done with the batch without writing anything.
        return Outcome::Delivered;
    }
    match sink.deliver(batch, selection) {
        Ok(()) => {
            if job.retry {
                failures.clear(slot);
            }
            if live {
                metrics.lines_sent.add(lines);
                metrics.batches_sent.add(1);
                metrics.bytes_written.add(sink.bytes_written_last() as u64);
            }
            Outcome::Delivered
        }
        Err(error) => {
            // An attempt, not an outcome: the dispatcher counts the lines
            // that end in the DLQ.
            if live {
                metrics.line_attempts_failed.add(lines);
                metrics.batches_failed.add(1);
            }
            failure_log.warn(&metrics.id, &error, lines);
            if !job.retry {
                // A retry leaves the marks of the entries it tried as they
                // are. A first delivery marks the entries it tried, never
                // one it skipped.
                failures.clear(slot);
                for (index, entry) in batch.entries().iter().enumerate() {
                    if selection.includes(slot, index, entry) {
                        failures.mark(slot, index, true);
                    }
                }
            }
            Outcome::Failed {
                retryable: true,
                entries_failed: lines as u32,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::time::Instant;

    use bumpalo::Bump;

    use crate::batch::{OpenBatch, SOURCE_REPLAYED, SourceIndex};
    use crate::labels::{LabelSet, SymbolTableBuilder};
    use crate::sink::link::{self, LaneEnd, SourceSet};
    use crate::wake::Waker;

    /// An output the test reads while the sink thread writes it, failing
    /// every write while `fail` is set.
    #[derive(Debug, Clone, Default)]
    struct Output {
        bytes: Arc<Mutex<Vec<u8>>>,
        fail: Arc<AtomicBool>,
    }

    impl Write for Output {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("refused"));
            }
            self.bytes.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Output {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().expect("lock").clone()).expect("UTF-8")
        }
    }

    /// A batch in `slot` of the lines `(text, source)`.
    fn batch(slot: usize, lines: &[(&str, SourceIndex)]) -> Arc<SealedBatch> {
        let labels = LabelSet::new();
        let mut open = OpenBatch::new(Bump::new(), 8, SymbolTableBuilder::new().freeze());
        for (line, source) in lines {
            open.push(line.as_bytes(), &labels, *source, 0, true);
        }
        Arc::new(open.seal(slot, 0))
    }

    /// Sends a job on `lane` and waits (at most 10 s) for its report.
    fn round_trip(lane: &mut LaneEnd, batch: Arc<SealedBatch>, retry: bool) -> Outcome {
        lane.send(SinkJob { batch, retry });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(report) = lane.reports.pop() {
                return report.outcome;
            }
            assert!(Instant::now() < deadline, "no report");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Goal: a sink with `inputs` writes and counts only the entries of
    /// its sources, is done at once with a batch that has none of them,
    /// marks only those when a write fails, and takes every entry of a
    /// replayed batch. Method: a raw writer sink taking source 1, on its
    /// thread, fed hand-made batches on its live and replay lanes.
    #[test]
    fn writer_sink_takes_only_its_inputs() {
        let slots = link::SlotPlan {
            live_slots: 2,
            replay_slots: 1,
        };
        let failures = Arc::new(FailureTable::new(slots.slots_total(), 8));
        let metrics = Arc::new(SinkMetrics::default());
        let output = Output::default();
        let sink = WriterSink::new(
            "out",
            "memory".to_string(),
            output.clone(),
            Encoding::Raw,
            SymbolTableBuilder::new().freeze(),
            1024,
        );
        let waker = Waker::new();
        let (mut live, live_lane) = link::lane(slots.live(), Waker::new(), waker.clone());
        let (mut replay, replay_lane) = link::lane(slots.replay(), Waker::new(), waker.clone());
        let links = SinkLinks::new(
            live_lane,
            Some(replay_lane),
            waker.clone(),
            Arc::clone(&failures),
            SourceSet::of([1]),
            Arc::new(AtomicU64::new(0)),
        );
        let thread = {
            let metrics = Arc::clone(&metrics);
            std::thread::spawn(move || run_sink(Box::new(sink), links, metrics))
        };
        let mixed = [("a0", 0), ("b0", 1), ("a1", 0), ("b1", 1)];

        assert_eq!(
            round_trip(&mut live, batch(0, &mixed), false),
            Outcome::Delivered
        );
        assert_eq!(output.text(), "b0\nb1\n");
        assert_eq!(metrics.lines_sent.get(), 2);
        assert_eq!(metrics.bytes_written.get(), 6);

        let none_taken = [("a2", 0), ("a3", 0)];
        assert_eq!(
            round_trip(&mut live, batch(1, &none_taken), false),
            Outcome::Delivered
        );
        assert_eq!(output.text(), "b0\nb1\n");
        assert_eq!(
            (metrics.lines_sent.get(), metrics.batches_sent.get()),
            (2, 1)
        );

        output.fail.store(true, Ordering::Relaxed);
        assert_eq!(
            round_trip(&mut live, batch(0, &mixed), false),
            Outcome::Failed {
                retryable: true,
                entries_failed: 2
            }
        );
        assert_eq!(failures.failed_entries(0).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(metrics.line_attempts_failed.get(), 2);
        output.fail.store(false, Ordering::Relaxed);
        assert_eq!(
            round_trip(&mut live, batch(0, &mixed), true),
            Outcome::Delivered
        );
        assert_eq!(output.text(), "b0\nb1\nb0\nb1\n");

        let replayed = [("r0", SOURCE_REPLAYED), ("r1", 0)];
        assert_eq!(
            round_trip(&mut replay, batch(slots.replay().start, &replayed), false),
            Outcome::Delivered
        );
        assert_eq!(output.text(), "b0\nb1\nb0\nb1\nr0\nr1\n");
        assert_eq!(
            metrics.lines_sent.get(),
            4,
            "replayed lines are not counted here"
        );

        drop(live);
        drop(replay);
        waker.wake();
        thread.join().expect("sink thread");
    }

    /// Goal: a sink whose every batch fails logs one line per interval, not
    /// one per batch. Method: three failures in a row.
    #[test]
    fn failure_warning_is_rate_limited() {
        let mut log = FailureLog::default();
        let error = SinkError::Write {
            sink: "out".to_string(),
            target: "/full/disk".to_string(),
            source: std::io::Error::other("no space left"),
        };
        log.warn("out", &error, 10);
        let first = log.logged_at.expect("the first failure is logged");
        log.warn("out", &error, 10);
        log.warn("out", &error, 10);
        assert_eq!(
            log.logged_at,
            Some(first),
            "no second line within the interval"
        );
        assert_eq!(log.batches_held_back, 2);
    }
}
