//! Replay: delivers the records of a sink's DLQ segments to that sink, and
//! deletes a segment only after every record in it was acknowledged.
//!
//! Used by `log-capturer dlq replay --sink ID` (and the demo). It builds its
//! own connection to the sink from the config (a separate Kafka producer, or
//! the same file, appended), so it can run while the daemon runs: a segment
//! the daemon still writes is locked and is skipped. A segment whose records
//! were not all acknowledged stays for the next replay; records already
//! delivered from it will be delivered again then (at-least-once, bounded by
//! one segment).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::{Config, Encoding, SinkConfig};
use crate::dlq::record::Record;
use crate::dlq::segment::{ReadableSegment, SegmentError, list_segments};

use crate::sink::encode::encode_record;

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no sink {0:?} in the config")]
    UnknownSink(String),
    #[error("DLQ directory {path}: {source}")]
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
    /// Corrupt or torn records skipped (counted, never delivered).
    pub records_corrupt: u64,
}

/// Delivers records to one sink; returns how many were acknowledged.
trait Target: Send {
    fn deliver(&mut self, records: &[Record<'_>]) -> u64;
}

/// What replaying one segment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentReplay {
    /// Locked: the daemon still writes it, or another replay holds it.
    Locked,
    /// Could not be opened or read.
    Unreadable,
    /// Replay was asked to stop part-way; the segment is kept.
    Stopped,
    Replayed {
        delivered: u64,
        failed: u64,
        corrupt: u64,
        corrupt_bytes: u64,
        /// Every record was acknowledged and the segment deleted.
        deleted: bool,
    },
}

/// Replays segments of one sink's DLQ into that sink.
pub struct Replayer {
    target: Box<dyn Target>,
    /// Most records per second, or `None` for as fast as the sink takes them.
    rate: Option<u64>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Replayer")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// Records handed to the sink at once when replay is rate-limited.
const REPLAY_CHUNK_RECORDS: usize = 1000;

impl Replayer {
    /// A replayer for `sink_id` of `config`, with its own connection.
    pub fn new(config: &Config, sink_id: &str, rate: Option<u64>) -> Result<Self, ReplayError> {
        let sink = config
            .sinks
            .get(sink_id)
            .ok_or_else(|| ReplayError::UnknownSink(sink_id.to_string()))?;
        Ok(Self {
            target: build_target(sink_id, sink)?,
            rate: rate.filter(|&rate| rate > 0),
        })
    }

    /// Replays one segment, a chunk of records at a time; deletes it when
    /// every record was acknowledged. `stop` is checked between chunks.
    pub fn replay_segment(&mut self, path: &Path, stop: &dyn Fn() -> bool) -> SegmentReplay {
        let mut segment = match ReadableSegment::open(path) {
            Ok(segment) => segment,
            Err(SegmentError::Locked { .. }) => return SegmentReplay::Locked,
            Err(error) => {
                tracing::warn!(%error, "DLQ segment skipped");
                return SegmentReplay::Unreadable;
            }
        };
        let per_send = match self.rate {
            Some(rate) => (rate as usize / 10).clamp(1, REPLAY_CHUNK_RECORDS),
            None => usize::MAX,
        };
        let started = Instant::now();
        let (mut delivered, mut handled, mut stopped) = (0u64, 0u64, false);
        let target = &mut self.target;
        let rate = self.rate;
        let scanned = segment.scan_chunks(&mut |records| {
            for part in records.chunks(per_send.min(records.len()).max(1)) {
                if stopped || stop() {
                    stopped = true;
                    return;
                }
                delivered += target.deliver(part);
                handled += part.len() as u64;
                if let Some(rate) = rate {
                    let due = Duration::from_secs_f64(handled as f64 / rate as f64);
                    std::thread::sleep(due.saturating_sub(started.elapsed()));
                }
            }
        });
        let summary = match scanned {
            Ok(summary) => summary,
            Err(error) => {
                tracing::warn!(%error, "DLQ segment could not be read to its end");
                return SegmentReplay::Unreadable;
            }
        };
        if stopped {
            return SegmentReplay::Stopped;
        }
        // `summary.records` is every intact record the scan recovered
        // (corrupt regions and a damaged header hide none): the segment
        // goes only when each of them was acknowledged.
        let every_record_acknowledged = handled == summary.records && delivered == handled;
        let deleted = every_record_acknowledged && segment.delete().is_ok();
        if deleted && summary.corrupt > 0 {
            tracing::warn!(path = %path.display(), records = summary.records, corrupt = summary.corrupt, corrupt_bytes = summary.corrupt_bytes, "DLQ segment with corrupt regions replayed and deleted: its intact records were delivered, the damaged ones could not be read");
        }
        SegmentReplay::Replayed {
            delivered,
            failed: handled - delivered,
            corrupt: summary.corrupt,
            corrupt_bytes: summary.corrupt_bytes,
            deleted,
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
            SegmentReplay::Replayed {
                delivered,
                failed,
                corrupt,
                deleted,
                ..
            } => {
                report.records_delivered += delivered;
                report.records_failed += failed;
                report.records_corrupt += corrupt;
                if deleted {
                    report.segments_deleted += 1;
                } else {
                    report.segments_kept += 1;
                }
                handled += delivered + failed;
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
                .create_with_context(ReplayContext::default())
                .map_err(|error| target_error(error.to_string()))?;
            let key_label = kafka.key.clone();
            Box::new(KafkaTarget {
                producer,
                topic: kafka.topic.clone(),
                key_label,
                encoding: kafka.encoding,
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
    fn deliver(&mut self, records: &[Record<'_>]) -> u64 {
        records.len() as u64
    }
}

struct WriterTarget {
    writer: Box<dyn Write + Send>,
    encoding: Encoding,
}

impl Target for WriterTarget {
    fn deliver(&mut self, records: &[Record<'_>]) -> u64 {
        let mut buffer = Vec::new();
        for record in records {
            encode_record(&mut buffer, record, self.encoding);
        }
        match self
            .writer
            .write_all(&buffer)
            .and_then(|()| self.writer.flush())
        {
            Ok(()) => records.len() as u64,
            Err(error) => {
                tracing::error!(%error, "replay write failed");
                0
            }
        }
    }
}

#[derive(Debug, Default)]
struct ReplayContext {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for ReplayContext {}

impl ProducerContext for ReplayContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = if result.is_ok() {
            &self.delivered
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct KafkaTarget {
    producer: BaseProducer<ReplayContext>,
    topic: String,
    key_label: Option<String>,
    encoding: Encoding,
    buffer: Vec<u8>,
}

/// How long a replay waits for the delivery reports of one segment.
const SEGMENT_ACK_TIMEOUT: Duration = Duration::from_secs(60);

impl Target for KafkaTarget {
    fn deliver(&mut self, records: &[Record<'_>]) -> u64 {
        let context = self.producer.context();
        let delivered_before = context.delivered.load(Ordering::Relaxed);
        let failed_before = context.failed.load(Ordering::Relaxed);
        let mut sent = 0u64;
        for record in records {
            self.buffer.clear();
            encode_record(&mut self.buffer, record, self.encoding);
            let payload = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
            let key = self
                .key_label
                .as_deref()
                .and_then(|label| record.labels.iter().find(|(key, _)| *key == label))
                .map(|(_, value)| value.as_bytes());
            loop {
                let mut message = BaseRecord::<[u8], [u8], ()>::to(&self.topic).payload(payload);
                if let Some(key) = key {
                    message = message.key(key);
                }
                match self.producer.send(message) {
                    Ok(()) => {
                        sent += 1;
                        break;
                    }
                    Err((error, _))
                        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((error, _)) => {
                        tracing::warn!(%error, "replay produce refused");
                        break;
                    }
                }
            }
            self.producer.poll(Duration::ZERO);
        }
        let deadline = Instant::now() + SEGMENT_ACK_TIMEOUT;
        loop {
            let delivered = context.delivered.load(Ordering::Relaxed) - delivered_before;
            let failed = context.failed.load(Ordering::Relaxed) - failed_before;
            if delivered + failed >= sent || Instant::now() > deadline {
                return delivered;
            }
            self.producer.poll(Duration::from_millis(50));
        }
    }
}

impl Drop for KafkaTarget {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(10));
    }
}
