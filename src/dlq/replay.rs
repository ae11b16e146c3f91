//! Replay: delivers the records of a sink's DLQ segments to that sink, and
//! deletes a segment only after every record recovered from it was
//! acknowledged.
//!
//! Used by `log-capturer dlq replay --sink ID`, by the daemon's automatic
//! replay (`auto`) and by the demo. It builds its own connection to the sink
//! from the config (a separate Kafka producer, or the same file, appended),
//! so it can run while the daemon runs: a segment the daemon still writes is
//! locked and is skipped.
//!
//! ```text
//! replay_segment:
//!     lock the segment; scan it once to fingerprint the records it holds
//!     load its acknowledgement file (`ack`): records already handled
//!     scan again; for every step of at most REPLAY_CHUNK_RECORDS records
//!         not yet handled:
//!         deliver them; each one is acknowledged, failed (may succeed
//!             later), or rejected (can never succeed)
//!         rejected: append to `<sink>/rejected/` with its reason
//!         mark acknowledged and rejected records handled; write the file
//!         any failure: stop this segment (the sink is unwell)
//!     every record handled: delete the acknowledgement file, then the
//!         segment; else keep both for the next replay
//! ```
//!
//! Duplicates: a record is sent again only if it was in flight when a
//! replay stopped without its acknowledgement being written: the step being
//! delivered at a `kill -9` or power loss (at most REPLAY_CHUNK_RECORDS
//! records), or records whose delivery report did not come within
//! `STEP_ACK_TIMEOUT` (they count as failed). A damaged acknowledgement file
//! is ignored, so its segment is sent again whole: duplicates, never loss.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{Config, Encoding, SinkConfig};
use crate::dlq::ack::{AckState, Fingerprint};
use crate::dlq::record::{Reason, Record};
use crate::dlq::segment::{ReadableSegment, SegmentError, list_segments};
use crate::dlq::{DlqMetrics, DlqSettings, DlqWriter};
use crate::sink::encode::encode_record;
use crate::sink::failures::Rejection;
use crate::sink::kafka::ClientLog;
use crate::sink::kafka::breaker::rejection_of;

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
    #[error("sink {sink}: {reason}")]
    Target { sink: String, reason: String },
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

/// Delivers records to one sink.
trait Target: Send {
    /// Delivers `records`; `outcomes` (as long, all `Pending`) receives
    /// what became of each.
    fn deliver(&mut self, records: &[&Record<'_>], outcomes: &mut [Delivery]);
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

/// Replays segments of one sink's DLQ into that sink.
pub struct Replayer {
    sink: String,
    target: Box<dyn Target>,
    /// Most records per second, or `None` for as fast as the sink takes them.
    rate: Option<u64>,
    settings: DlqSettings,
    /// `rejected/` writer, open while a segment is replayed.
    rejected: Option<DlqWriter>,
    metrics: Arc<DlqMetrics>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Replayer")
            .field("sink", &self.sink)
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// Most records delivered in one step: the acknowledgement file is written
/// after each step, so this bounds the records sent again after a `kill -9`.
pub const REPLAY_CHUNK_RECORDS: usize = 1000;

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
    /// A replayer for `sink_id` of `config`, with its own connection.
    pub fn new(config: &Config, sink_id: &str, rate: Option<u64>) -> Result<Self, ReplayError> {
        let sink = config
            .sinks
            .get(sink_id)
            .ok_or_else(|| ReplayError::UnknownSink(sink_id.to_string()))?;
        Ok(Self {
            sink: sink_id.to_string(),
            target: build_target(sink_id, sink)?,
            rate: rate.filter(|&rate| rate > 0),
            settings: DlqSettings {
                dir: config.dlq_dir(),
                segment_bytes: config.dlq.segment_bytes.get(),
                max_bytes: config.dlq.max_bytes.get(),
                policy: config.dlq.policy,
            },
            rejected: None,
            metrics: Arc::new(DlqMetrics {
                sink: sink_id.to_string(),
                ..DlqMetrics::default()
            }),
        })
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
        self.rejected = None;
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
        if pass.counts.deleted && summary.corrupt > 0 {
            tracing::warn!(path = %path.display(), records = summary.records, corrupt = summary.corrupt, corrupt_bytes = summary.corrupt_bytes, "DLQ segment with corrupt regions replayed and deleted: its intact records were handled, the damaged ones could not be read");
        }
        SegmentReplay::Replayed(pass.counts)
    }

    /// Delivers the records of one scanned chunk that are not yet handled.
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
        let per_step = match self.rate {
            Some(rate) => (rate as usize / 10).clamp(1, REPLAY_CHUNK_RECORDS),
            None => REPLAY_CHUNK_RECORDS,
        };
        for step in waiting.chunks(per_step) {
            if (pass.stop)() {
                pass.stopped = true;
                return;
            }
            let failed = self.replay_step(step, pass);
            if let Err(error) = pass.acks.save() {
                tracing::warn!(%error, "DLQ replay progress not recorded; its records may be sent again");
            }
            if failed > 0 {
                pass.halted = true;
                return;
            }
            self.pace(pass, step.len() as u64);
        }
    }

    /// Delivers one step; returns how many records failed.
    fn replay_step(&mut self, step: &[(u64, &Record<'_>)], pass: &mut Pass<'_>) -> u64 {
        let records: Vec<&Record<'_>> = step.iter().map(|&(_, record)| record).collect();
        let mut outcomes = vec![Delivery::Pending; step.len()];
        self.target.deliver(&records, &mut outcomes);
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

/// Replays every segment of `sink_id`, oldest first. `progress` gets
/// (records handled, records in all segments) as it goes.
pub fn replay(
    config: &Config,
    sink_id: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, ReplayError> {
    let mut replayer = Replayer::new(config, sink_id, None)?;
    let dir = config.dlq_dir().join(sink_id);
    let mut report = ReplayReport::default();
    if !dir.exists() {
        return Ok(report);
    }
    let segments = list_segments(&dir).map_err(|source| ReplayError::Directory {
        path: dir.clone(),
        source,
    })?;
    let mut total = 0;
    for (_, path) in &segments {
        if let Ok(summary) =
            ReadableSegment::open_unlocked(path).and_then(|mut segment| segment.scan(|_| {}))
        {
            total += summary.records;
        }
    }
    let mut handled = 0;
    progress(0, total);
    for (_, path) in segments {
        match replayer.replay_segment(&path, &|| false) {
            SegmentReplay::Replayed(counts) => {
                report.records_delivered += counts.delivered;
                report.records_failed += counts.failed;
                report.records_rejected += counts.rejected;
                report.records_skipped += counts.skipped;
                report.records_corrupt += counts.corrupt;
                if counts.deleted {
                    report.segments_deleted += 1;
                } else {
                    report.segments_kept += 1;
                }
                handled += counts.delivered + counts.failed + counts.rejected + counts.skipped;
                progress(handled, total);
            }
            SegmentReplay::Locked | SegmentReplay::Unreadable | SegmentReplay::Stopped => {
                report.segments_kept += 1
            }
        }
    }
    Ok(report)
}

fn build_target(sink_id: &str, sink: &SinkConfig) -> Result<Box<dyn Target>, ReplayError> {
    let target_error = |reason: String| ReplayError::Target {
        sink: sink_id.to_string(),
        reason,
    };
    Ok(match sink {
        SinkConfig::Kafka(kafka) => {
            let client = crate::sink::kafka::config::client_config(kafka, 100_000)
                .map_err(|error| target_error(error.to_string()))?;
            let producer: BaseProducer<ReplayContext> = client
                .create_with_context(ReplayContext::new(sink_id))
                .map_err(|error| target_error(error.to_string()))?;
            Box::new(KafkaTarget {
                producer,
                topic: kafka.topic.clone(),
                key_label: kafka.key.clone(),
                encoding: kafka.encoding,
                payload_bytes_max: crate::sink::kafka::config::message_payload_bytes_max(kafka),
                buffer: Vec::new(),
            })
        }
        SinkConfig::File(file) => {
            let handle = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file.path)
                .map_err(|error| {
                    target_error(format!("cannot open {}: {error}", file.path.display()))
                })?;
            Box::new(WriterTarget {
                writer: Box::new(handle),
                encoding: file.encoding,
            })
        }
        SinkConfig::Stdout(stdout) => Box::new(WriterTarget {
            writer: Box::new(std::io::stdout()),
            encoding: stdout.encoding,
        }),
        SinkConfig::Null(_) => Box::new(NullTarget),
    })
}

struct NullTarget;

impl Target for NullTarget {
    fn deliver(&mut self, _: &[&Record<'_>], outcomes: &mut [Delivery]) {
        outcomes.fill(Delivery::Acknowledged);
    }
}

struct WriterTarget {
    writer: Box<dyn Write + Send>,
    encoding: Encoding,
}

impl Target for WriterTarget {
    /// All or nothing: a failed write may have written part of the step.
    fn deliver(&mut self, records: &[&Record<'_>], outcomes: &mut [Delivery]) {
        let mut buffer = Vec::new();
        for record in records {
            encode_record(&mut buffer, record, self.encoding);
        }
        let written = self
            .writer
            .write_all(&buffer)
            .and_then(|()| self.writer.flush());
        match written {
            Ok(()) => outcomes.fill(Delivery::Acknowledged),
            Err(error) => {
                tracing::error!(%error, "replay write failed");
                outcomes.fill(Delivery::Failed);
            }
        }
    }
}

/// The delivery reports of the step being delivered.
#[derive(Debug, Default)]
struct StepBook {
    /// Tells this step's reports from late ones of an earlier step that
    /// timed out (they are ignored: those records counted as failed).
    generation: u32,
    outcomes: Vec<Delivery>,
    reported: usize,
}

#[derive(Debug)]
struct ReplayContext {
    /// Only the replay thread touches it (reports come inside `poll`); the
    /// mutex is never contended.
    book: Mutex<StepBook>,
    log: ClientLog,
}

impl ReplayContext {
    fn new(sink_id: &str) -> Self {
        Self {
            book: Mutex::new(StepBook::default()),
            log: ClientLog::new(format!("replay:{sink_id}")),
        }
    }
}

impl ClientContext for ReplayContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }
}

impl ProducerContext for ReplayContext {
    /// `generation << 32 | index in the step`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let (generation, index) = ((opaque >> 32) as u32, opaque & 0xffff_ffff);
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if book.generation != generation || index >= book.outcomes.len() {
            return;
        }
        book.outcomes[index] = match result {
            Ok(_) => Delivery::Acknowledged,
            Err((error, _)) => classify(error.rdkafka_error_code()),
        };
        book.reported += 1;
    }
}

fn classify(code: Option<RDKafkaErrorCode>) -> Delivery {
    match code.and_then(rejection_of) {
        Some(rejection) => Delivery::Rejected(rejection),
        None => Delivery::Failed,
    }
}

struct KafkaTarget {
    producer: BaseProducer<ReplayContext>,
    topic: String,
    key_label: Option<String>,
    encoding: Encoding,
    payload_bytes_max: usize,
    buffer: Vec<u8>,
}

/// How long a replay waits for the delivery reports of one step.
const STEP_ACK_TIMEOUT: Duration = Duration::from_secs(60);

// The delivery opaque packs a 32-bit generation above a 32-bit index.
const _: () = assert!(usize::BITS == 64);
const _: () = assert!(REPLAY_CHUNK_RECORDS <= u32::MAX as usize);

impl KafkaTarget {
    /// Starts a new step of `records` records; returns its generation.
    fn begin_step(&self, records: usize) -> u32 {
        let mut book = self.book();
        book.generation = book.generation.wrapping_add(1);
        book.outcomes.clear();
        book.outcomes.resize(records, Delivery::Pending);
        book.reported = 0;
        book.generation
    }

    fn book(&self) -> std::sync::MutexGuard<'_, StepBook> {
        self.producer
            .context()
            .book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands one record to librdkafka, unless it can never be delivered.
    fn send(&mut self, record: &Record<'_>, opaque: usize) -> Result<(), Delivery> {
        self.buffer.clear();
        encode_record(&mut self.buffer, record, self.encoding);
        let payload = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
        let key = self
            .key_label
            .as_deref()
            .and_then(|label| record.labels.iter().find(|(key, _)| *key == label))
            .map(|(_, value)| value.as_bytes());
        if payload.len() + key.map_or(0, <[u8]>::len) > self.payload_bytes_max {
            return Err(Delivery::Rejected(Rejection::TooLarge));
        }
        loop {
            let mut message = BaseRecord::<[u8], [u8], usize>::with_opaque_to(&self.topic, opaque)
                .payload(payload);
            if let Some(key) = key {
                message = message.key(key);
            }
            match self.producer.send(message) {
                Ok(()) => return Ok(()),
                Err((error, _))
                    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => {
                    tracing::debug!(%error, "replay produce refused");
                    return Err(classify(error.rdkafka_error_code()));
                }
            }
        }
    }
}

/// How often a replay looks whether every delivery report of a chunk came.
const ACK_POLL_INTERVAL: Duration = Duration::from_millis(1);

impl Target for KafkaTarget {
    fn deliver(&mut self, records: &[&Record<'_>], outcomes: &mut [Delivery]) {
        assert!(records.len() <= REPLAY_CHUNK_RECORDS, "a step is bounded");
        let generation = self.begin_step(records.len());
        let mut sent = 0;
        for (index, record) in records.iter().enumerate() {
            let opaque = (generation as usize) << 32 | index;
            match self.send(record, opaque) {
                Ok(()) => sent += 1,
                Err(outcome) => outcomes[index] = outcome,
            }
            self.producer.poll(Duration::ZERO);
        }
        let deadline = Instant::now() + STEP_ACK_TIMEOUT;
        while self.book().reported < sent && Instant::now() < deadline {
            // `poll` returns only at its deadline, events or not: a long one
            // would cap a replay at one step per deadline (1000 records per
            // 50 ms, whatever `replay_rate` says).
            self.producer.poll(ACK_POLL_INTERVAL);
        }
        let book = self.book();
        for (outcome, reported) in outcomes.iter_mut().zip(&book.outcomes) {
            if *outcome == Delivery::Pending {
                *outcome = *reported;
            }
        }
    }
}

impl Drop for KafkaTarget {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::ack::ack_path;
    use std::cell::Cell;

    const RECORDS: u32 = 300;

    /// A config whose sink `out` appends to `output`, and 300 numbered
    /// records in one segment of its DLQ; returns the segment's path.
    fn setup(dir: &Path, output: &Path) -> (Config, PathBuf) {
        let text = format!(
            "[daemon]\ndata_dir = \"{}\"\n[dlq]\nsegment_bytes = 1048576\n[sources.app]\ntype = \"file\"\npaths = [\"/nonexistent\"]\n[sinks.out]\ntype = \"file\"\npath = \"{}\"\nencoding = \"raw\"\n",
            dir.display(),
            output.display()
        );
        let config = Config::from_toml(&text, Path::new("replay.toml")).expect("config");
        let settings = DlqSettings {
            dir: config.dlq_dir(),
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
            policy: config.dlq.policy,
        };
        let mut writer = DlqWriter::open("out", &settings).expect("open");
        for number in 0..RECORDS {
            let message = format!("record {number:04}");
            writer
                .append(&Record {
                    timestamp_ns: u64::from(number),
                    attempts: 1,
                    reason: Reason::Shutdown,
                    terminated: true,
                    sink: "out",
                    labels: vec![],
                    message: message.as_bytes(),
                })
                .expect("append");
        }
        drop(writer);
        let segments = list_segments(&config.dlq_dir().join("out")).expect("segments");
        assert_eq!(segments.len(), 1);
        (config, segments[0].1.clone())
    }

    fn numbers(output: &Path) -> Vec<u32> {
        std::fs::read_to_string(output)
            .unwrap_or_default()
            .lines()
            .map(|line| line[7..].parse().expect("number"))
            .collect()
    }

    /// Stops a replay after two steps of 100 records.
    fn replay_two_steps(config: &Config, segment: &Path) {
        let mut replayer = Replayer::new(config, "out", Some(1000)).expect("replayer");
        let steps = Cell::new(0);
        let stop = || {
            steps.set(steps.get() + 1);
            steps.get() > 2
        };
        assert_eq!(
            replayer.replay_segment(segment, &stop),
            SegmentReplay::Stopped
        );
    }

    /// Goal: a replay stopped part-way resumes after what it delivered and
    /// sends nothing twice. Method: stop after two steps of 100 records,
    /// replay again, compare the output with the records.
    #[test]
    fn stopped_replay_resumes_without_resending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("out.log");
        let (config, segment) = setup(dir.path(), &output);
        replay_two_steps(&config, &segment);
        assert_eq!(numbers(&output), (0..200).collect::<Vec<_>>());
        assert!(ack_path(&segment).exists());

        let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
        assert_eq!(
            (report.records_skipped, report.records_delivered),
            (200, 100),
            "{report:?}"
        );
        assert_eq!(numbers(&output), (0..RECORDS).collect::<Vec<_>>());
        assert!(!segment.exists(), "segment deleted");
        assert!(!ack_path(&segment).exists(), "acknowledgement file deleted");
    }

    /// Goal: a damaged acknowledgement file never loses a record. Method:
    /// stop a replay after 200 records, flip one byte of its file, replay
    /// again: every record is delivered again (duplicates, not loss).
    #[test]
    fn damaged_acknowledgement_file_resends_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("out.log");
        let (config, segment) = setup(dir.path(), &output);
        replay_two_steps(&config, &segment);
        let mut bytes = std::fs::read(ack_path(&segment)).expect("ack file");
        bytes[41] ^= 0x04;
        std::fs::write(ack_path(&segment), &bytes).expect("write");

        let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
        assert_eq!(
            (report.records_skipped, report.records_delivered),
            (0, u64::from(RECORDS))
        );
        let mut expected: Vec<u32> = (0..200).collect();
        expected.extend(0..RECORDS);
        assert_eq!(numbers(&output), expected);
        assert!(!segment.exists());
    }
}
