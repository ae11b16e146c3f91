//! Sinks: one thread each, fed sealed batches through the rings of the
//! link protocol ([`link`]), answering every batch with one report.
//!
//! Each kind lives in its own folder and owns its config struct, its run
//! loop, its metrics and its health signal: `file/`, `stdout/`, `null/`
//! (synchronous writers driven by [`synchronous::run_sink`]) and `kafka/`
//! (its own loop around librdkafka). [`SinkConfig`] is the one place kinds
//! are listed: it parses a `[sinks.<id>]` table by its `type`, checks it,
//! and builds the sink into a [`BuiltSink`] that the pipeline runs without
//! knowing the kind. Adding a kind is a folder and one arm in each match
//! below.
//!
//! No sink imports the dispatcher, the pipeline or the DLQ: what a sink
//! receives and answers is defined in [`link`].

pub mod encode;
pub mod file;
pub mod kafka;
pub mod link;
pub mod null;
pub mod stdout;
pub mod synchronous;

pub use link::{FailureTable, Outcome, Rejection, Selection, SinkJob, SinkLinks, SinkReport};
pub use synchronous::{Sink, SinkError, run_sink};

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::labels::SymbolTable;
use crate::metrics::SinkMetrics;
use file::FileSinkConfig;
use kafka::config::{KafkaConfigError, KafkaSinkConfig};
use kafka::sink::{KafkaCreateError, KafkaSinkOptions};
use kafka::{KafkaMetrics, KafkaSink};
use link::SlotPlan;
use null::{NullSink, NullSinkConfig};
use stdout::StdoutSinkConfig;

/// `[sinks.<id>]`, selected by `type`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Kafka(KafkaSinkConfig),
    File(FileSinkConfig),
    Stdout(StdoutSinkConfig),
    Null(NullSinkConfig),
}

/// The values of a sink's `type`.
pub const SINK_TYPES: &[&str] = &["kafka", "file", "stdout", "null"];

/// Parses the fields of a `[sinks.<id>]` table of type `kind`, one of
/// [`SINK_TYPES`].
pub fn deserialize_sink(
    kind: &str,
    fields: toml::de::ValueDeserializer<'_>,
) -> Result<SinkConfig, toml::de::Error> {
    match kind {
        "kafka" => KafkaSinkConfig::deserialize(fields).map(SinkConfig::Kafka),
        "file" => FileSinkConfig::deserialize(fields).map(SinkConfig::File),
        "stdout" => StdoutSinkConfig::deserialize(fields).map(SinkConfig::Stdout),
        "null" => NullSinkConfig::deserialize(fields).map(SinkConfig::Null),
        _ => unreachable!("sink type {kind:?} is not in SINK_TYPES"),
    }
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    #[error(transparent)]
    Open(#[from] SinkError),
    #[error(transparent)]
    Kafka(#[from] KafkaCreateError),
    #[error("sink {sink}: invalid Kafka configuration")]
    KafkaConfig {
        sink: String,
        #[source]
        source: KafkaConfigError,
    },
}

/// What every sink is built with.
#[derive(Debug)]
pub struct SinkContext {
    pub id: String,
    pub symbols: Arc<SymbolTable>,
    pub failures: Arc<FailureTable>,
    pub metrics: Arc<SinkMetrics>,
    pub slots: SlotPlan,
    /// Most entries per batch.
    pub batch_size: usize,
    /// Bytes of lines at which a batch is sealed.
    pub batch_bytes: usize,
}

/// How the DLQ replay of a sink tells that the sink is healthy: no failure
/// since the last look, and (for a sink with a circuit breaker) the
/// breaker closed.
pub trait SinkHealth: Send + Sync + std::fmt::Debug {
    /// Failures so far: a change since the last look means unwell.
    fn failures(&self) -> u64;
    /// False while the sink knows its destination is unreachable.
    fn is_reachable(&self) -> bool {
        true
    }
}

impl SinkHealth for SinkMetrics {
    fn failures(&self) -> u64 {
        self.batches_failed.get()
    }
}

/// A sink ready for its thread.
pub struct BuiltSink {
    /// The thread body.
    pub run: Box<dyn FnOnce(SinkLinks) + Send>,
    pub health: Arc<dyn SinkHealth>,
    /// Kafka-specific counters, for a Kafka sink.
    pub kafka: Option<Arc<KafkaMetrics>>,
}

impl std::fmt::Debug for BuiltSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BuiltSink")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

impl SinkConfig {
    /// The `type` of the table.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::File(_) => "file",
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::Null(_) => "null",
        }
    }

    /// Checks what parsing cannot: `Err((key, reason))` names the key
    /// relative to the sink's table.
    pub fn check(&self) -> Result<(), (String, String)> {
        match self {
            SinkConfig::Kafka(kafka) => kafka::config::client_config(kafka, 1)
                .map(drop)
                .map_err(|error| (error.key(), error.to_string())),
            SinkConfig::File(_) | SinkConfig::Stdout(_) | SinkConfig::Null(_) => Ok(()),
        }
    }

    /// The destinations the sink connects to, for the broker metrics.
    pub fn endpoints(&self) -> Vec<String> {
        match self {
            SinkConfig::Kafka(kafka) => kafka.brokers.split(',').map(str::to_string).collect(),
            SinkConfig::File(_) | SinkConfig::Stdout(_) | SinkConfig::Null(_) => Vec::new(),
        }
    }

    /// Builds the sink: opens its output or creates its client.
    pub fn build(&self, context: SinkContext) -> Result<BuiltSink, SinkBuildError> {
        // Room for a full batch encoded `raw`: its lines, and one newline
        // byte per entry. (JSON grows the buffer once, then keeps it.)
        const NEWLINE_BYTES: usize = 1;
        let buffer_bytes = context.batch_bytes + context.batch_size * NEWLINE_BYTES;
        let writer = |sink: Box<dyn Sink>, context: SinkContext| {
            let metrics = context.metrics;
            BuiltSink {
                health: Arc::clone(&metrics) as Arc<dyn SinkHealth>,
                run: Box::new(move |links| run_sink(sink, links, metrics)),
                kafka: None,
            }
        };
        Ok(match self {
            SinkConfig::Kafka(config) => build_kafka(config, context)?,
            SinkConfig::File(config) => {
                let sink = file::open_file_sink(
                    &context.id,
                    &config.path,
                    config.encoding,
                    Arc::clone(&context.symbols),
                    buffer_bytes,
                )?;
                writer(Box::new(sink), context)
            }
            SinkConfig::Stdout(config) => {
                let sink = stdout::stdout_sink(
                    &context.id,
                    config.encoding,
                    Arc::clone(&context.symbols),
                    buffer_bytes,
                );
                writer(Box::new(sink), context)
            }
            SinkConfig::Null(_) => writer(Box::<NullSink>::default(), context),
        })
    }
}

fn build_kafka(
    config: &KafkaSinkConfig,
    context: SinkContext,
) -> Result<BuiltSink, SinkBuildError> {
    let queue_messages = context.batch_size * context.slots.slots_total();
    let client = kafka::config::client_config(config, queue_messages).map_err(|source| {
        SinkBuildError::KafkaConfig {
            sink: context.id.clone(),
            source,
        }
    })?;
    let options = KafkaSinkOptions {
        id: context.id.clone(),
        topic: config.topic.clone(),
        key_label: config.key.clone(),
        encoding: config.encoding,
        probe_interval: Duration::from_millis(config.probe_interval_ms.get()),
        slots: context.slots,
        batch_size: context.batch_size,
        payload_bytes_max: kafka::config::message_payload_bytes_max(config),
    };
    let sink = KafkaSink::new(options, &client, context.symbols, context.failures)?;
    let kafka_metrics = sink.metrics();
    let metrics = context.metrics;
    Ok(BuiltSink {
        health: Arc::clone(&kafka_metrics) as Arc<dyn SinkHealth>,
        kafka: Some(kafka_metrics),
        run: Box::new(move |links| sink.run(links, metrics)),
    })
}
