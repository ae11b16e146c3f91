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
use std::time::Duration;

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
            if selection.includes(batch.slot(), index) {
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

/// A synchronous sink ready for its thread: [`run_sink`] around it, and
/// its failures as its health.
pub fn built_writer(sink: Box<dyn Sink>, context: SinkContext) -> BuiltSink {
    let metrics = context.metrics;
    BuiltSink {
        health: Arc::clone(&metrics) as Arc<dyn SinkHealth>,
        run: Box::new(move |links| run_sink(sink, links, metrics)),
        kafka: None,
    }
}

/// The body of a synchronous sink thread: deliver jobs until every lane is
/// abandoned and empty, then flush.
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
        // Replayed batches are counted by the replay stage, not here.
        let live = links.is_live(job.batch.slot());
        let outcome = deliver_one(sink.as_mut(), &job, &metrics, live, &links.failures);
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
    metrics: &SinkMetrics,
    live: bool,
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
