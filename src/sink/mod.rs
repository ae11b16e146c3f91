//! Sinks: one thread each, fed sealed batches through the rings of the
//! link protocol ([`link`]), answering every batch with one report.
//!
//! Each kind lives in its own folder and owns its config struct, its run
//! loop, its metrics and its health signal: `file/`, `stdout/`, `null/`
//! (synchronous writers driven by [`synchronous::run_sink`]), `kafka/`
//! (its own loop around librdkafka) and `loki/` (its own loop around an
//! HTTP client). Each kind's config implements
//! [`SinkKind`] (check, endpoints, build into a [`BuiltSink`] that the
//! pipeline runs without knowing the kind). Kinds are listed in one place,
//! below: [`SINK_TYPES`], [`deserialize_sink`] and [`SinkConfig::kind`].
//! Adding a kind is a folder and one line in each.
//!
//! No sink imports the dispatcher, the pipeline or the DLQ: what a sink
//! receives and answers is defined in [`link`].

pub mod encode;
pub mod file;
pub mod kafka;
pub mod link;
pub mod loki;
pub mod null;
pub mod stdout;
pub mod synchronous;

pub use link::{FailureTable, Outcome, Rejection, Selection, SinkJob, SinkLinks, SinkReport};
pub use synchronous::{Sink, SinkError, run_sink};

use std::sync::Arc;

use serde::Deserialize;

use crate::labels::SymbolTable;
use crate::metrics::SinkMetrics;
use file::FileSinkConfig;
use kafka::KafkaMetrics;
use kafka::config::{KafkaConfigError, KafkaSinkConfig};
use kafka::sink::KafkaCreateError;
use link::SlotPlan;
use loki::client::LokiClientError;
use loki::config::LokiSinkConfig;
use loki::sink::LokiMetrics;
use null::NullSinkConfig;
use stdout::StdoutSinkConfig;

/// `[sinks.<id>]`, selected by `type`.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Kafka(KafkaSinkConfig),
    File(FileSinkConfig),
    Stdout(StdoutSinkConfig),
    Null(NullSinkConfig),
    Loki(LokiSinkConfig),
}

/// The values of a sink's `type`.
pub const SINK_TYPES: &[&str] = &["kafka", "loki", "file", "stdout", "null"];

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
        "loki" => LokiSinkConfig::deserialize(fields).map(SinkConfig::Loki),
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
    #[error(transparent)]
    Loki(#[from] LokiClientError),
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
    /// `[dispatcher] latency_target_ms`.
    pub latency_target: std::time::Duration,
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
    /// Loki-specific counters, for a Loki sink.
    pub loki: Option<Arc<LokiMetrics>>,
}

impl std::fmt::Debug for BuiltSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BuiltSink")
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// What the config of each sink kind implements, in the kind's folder.
pub trait SinkKind: std::fmt::Debug {
    /// The `type` of the table.
    fn type_name(&self) -> &'static str;

    /// Checks what parsing cannot: `Err((key, reason))` names the key
    /// relative to the sink's table.
    fn check(&self) -> Result<(), (String, String)> {
        Ok(())
    }

    /// The destinations the sink connects to, for the broker metrics.
    fn endpoints(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the sink sends entries with times of its own, kept in its
    /// failure table ([`FailureTable::with_sent_timestamps`]).
    fn keeps_sent_timestamps(&self) -> bool {
        false
    }

    /// Builds the sink: opens its output or creates its client.
    fn build(&self, context: SinkContext) -> Result<BuiltSink, SinkBuildError>;
}

impl SinkConfig {
    /// The kind's own config: with [`SINK_TYPES`] and [`deserialize_sink`],
    /// the place where kinds are listed.
    pub fn kind(&self) -> &dyn SinkKind {
        match self {
            SinkConfig::Kafka(config) => config,
            SinkConfig::File(config) => config,
            SinkConfig::Stdout(config) => config,
            SinkConfig::Null(config) => config,
            SinkConfig::Loki(config) => config,
        }
    }

    pub fn type_name(&self) -> &'static str {
        self.kind().type_name()
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        self.kind().check()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.kind().endpoints()
    }

    pub fn build(&self, context: SinkContext) -> Result<BuiltSink, SinkBuildError> {
        self.kind().build(context)
    }
}

impl SinkContext {
    /// Bytes of a synchronous sink's encode buffer: room for a full batch
    /// encoded `raw`, its lines and one newline byte per entry (JSON grows
    /// the buffer once, then keeps it).
    pub fn encode_buffer_bytes(&self) -> usize {
        const NEWLINE_BYTES: usize = 1;
        self.batch_bytes + self.batch_size * NEWLINE_BYTES
    }
}
