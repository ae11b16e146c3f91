//! Observability: the `/metrics` and `/health` endpoint, the Prometheus
//! exposition, latency histograms and the process's own figures.
//!
//! Stages publish counters as atomics (`crate::metrics`) and latency as
//! histograms sent over SPSC rings (`latency`); the metrics thread reads
//! them. Nothing here takes a lock that a stage could wait on.

pub mod exposition;
pub mod family;
pub mod http;
pub mod latency;
pub mod process;

use std::sync::Arc;

use crate::dlq::DlqMetrics;
use crate::metrics::{DispatcherMetrics, ReloadMetrics, SinkMetrics, SourceMetrics, StageHealth};
use crate::sink::FailureTable;
use crate::sink::kafka::KafkaMetrics;
use crate::sink::loki::sink::LokiMetrics;
use latency::LatencyCollector;

/// Counters of every stage, readable while the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    pub sources: Vec<Arc<SourceMetrics>>,
    pub dispatcher: Arc<DispatcherMetrics>,
    pub sinks: Vec<Arc<SinkMetrics>>,
    /// Kafka-specific counters, by sink id.
    pub kafka: Vec<(String, Arc<KafkaMetrics>)>,
    /// Loki-specific counters, by sink id.
    pub loki: Vec<(String, Arc<LokiMetrics>)>,
    /// Failed entries per batch slot, one table per sink, in `sinks` order.
    pub failures: Vec<Arc<FailureTable>>,
    /// Dead-letter queue counters, one per sink, in `sinks` order.
    pub dlq: Vec<Arc<DlqMetrics>>,
    /// The label symbol table: its size and what it refused.
    pub symbols: Arc<crate::labels::SymbolTable>,
}

/// The latency collectors of one sink.
#[derive(Debug)]
pub struct SinkLatency {
    pub sink_id: String,
    pub sink_type: &'static str,
    /// From a line being read to its batch being reported by the sink.
    pub read_to_ack: LatencyCollector,
    /// From a batch being sealed to the sink's report.
    pub seal_to_ack: LatencyCollector,
}

/// Everything the metrics thread reads, handed over by the pipeline.
#[derive(Debug)]
pub struct Telemetry {
    pub metrics: PipelineMetrics,
    pub stages: Vec<Arc<StageHealth>>,
    pub latency: Vec<SinkLatency>,
    /// Bootstrap brokers of each Kafka sink, by sink id.
    pub kafka_brokers: Vec<(String, Vec<String>)>,
    /// Entries one source ring can hold.
    pub ring_capacity_entries: u64,
    /// (batch, sink) retries the wheel holds at most (`retry.max_batches`).
    pub retry_capacity_batches: u64,
    /// Configuration reloads, kept by the binary.
    pub reloads: Arc<ReloadMetrics>,
}

/// Figures of the global allocator, supplied by the binary (which chose
/// the allocator): (type label, bytes).
pub type AllocatorFigures = fn() -> Vec<(&'static str, u64)>;
