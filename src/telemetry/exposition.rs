//! Renders the Prometheus text exposition format (version 0.0.4) and the
//! `/health` answer.
//!
//! Metric names follow the collector this daemon replaces, so that its
//! dashboards keep working; `docs/METRICS.md` lists each one. Rendering
//! happens on the metrics thread and allocates there, never on a stage.
//!
//! Invariants of the output: no series appears twice (Prometheus rejects
//! such a scrape), so every per-sink series names its sink (`sink`, or
//! `sink_name` in the reference `kafka_*` family); labels this module adds
//! use one name per meaning (`sink`, `source_id`, `file`); line counters
//! count outcomes once per line, and attempts go to their own family.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::dlq::record::Reason;
use crate::metrics::SinkMetrics;
use crate::sink::kafka::BreakerState;
use crate::telemetry::process::{CpuMeter, ProcessReading, read_process, start_time_seconds};
use crate::telemetry::{AllocatorFigures, Telemetry};

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS_SECONDS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// State the metrics thread keeps between scrapes: counter samples for
/// rates, the CPU meter.
#[derive(Debug)]
pub struct Exporter {
    telemetry: Telemetry,
    allocator: Option<AllocatorFigures>,
    cpu: CpuMeter,
    rates: BTreeMap<String, Rate>,
    /// Read once: the start time does not change.
    start_time_seconds: Option<f64>,
}

#[derive(Debug)]
struct Rate {
    last_value: u64,
    last_at: Instant,
    per_second: f64,
}

impl Exporter {
    pub fn new(telemetry: Telemetry, allocator: Option<AllocatorFigures>) -> Self {
        Self {
            telemetry,
            allocator,
            cpu: CpuMeter::new(&read_process()),
            rates: BTreeMap::new(),
            start_time_seconds: start_time_seconds(),
        }
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Called about once a second: takes published latency histograms and
    /// samples the counters behind the per-second rates.
    pub fn tick(&mut self) {
        for sink in &mut self.telemetry.latency {
            sink.read_to_ack.collect();
            sink.seal_to_ack.collect();
        }
        let mut samples: Vec<(String, u64)> = Vec::new();
        for source in &self.telemetry.metrics.sources {
            samples.push((
                format!("source:{}", source.id),
                source.lines_dispatched.get(),
            ));
        }
        samples.push((
            "dispatcher".to_string(),
            self.telemetry.metrics.dispatcher.lines_processed.get(),
        ));
        for sink in &self.telemetry.metrics.sinks {
            samples.push((format!("sink:{}", sink.id), sink.lines_sent.get()));
        }
        for (component, value) in samples {
            let rate = self.rates.entry(component).or_insert(Rate {
                last_value: value,
                last_at: Instant::now(),
                per_second: 0.0,
            });
            let elapsed = rate.last_at.elapsed().as_secs_f64();
            if elapsed >= 0.5 {
                rate.per_second = value.saturating_sub(rate.last_value) as f64 / elapsed;
                rate.last_value = value;
                rate.last_at = Instant::now();
            }
        }
    }

    /// Components that are not healthy, with the reason; empty if all are.
    pub fn unhealthy(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for stage in &self.telemetry.stages {
            if !stage.is_alive() {
                problems.push((stage.name.clone(), "thread has stopped".to_string()));
            }
        }
        for (sink, kafka) in &self.telemetry.metrics.kafka {
            if kafka.breaker_state.get() == BreakerState::Open as u64 {
                problems.push((
                    format!("sink-{sink}"),
                    "Kafka circuit breaker is open".to_string(),
                ));
            }
        }
        problems
    }

    /// The `/health` body: `{"status":"ok"|"unhealthy","components":{...}}`.
    pub fn health_json(&self) -> (bool, String) {
        let problems: BTreeMap<String, String> = self.unhealthy().into_iter().collect();
        let mut components = serde_json::Map::new();
        for stage in &self.telemetry.stages {
            let state = problems
                .get(&stage.name)
                .cloned()
                .unwrap_or_else(|| "ok".to_string());
            components.insert(stage.name.clone(), serde_json::Value::String(state));
        }
        let healthy = problems.is_empty();
        let body = serde_json::json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "components": components,
        });
        (healthy, body.to_string())
    }

    /// The whole exposition.
    pub fn render(&mut self) -> String {
        let reading = read_process();
        self.render_with(&reading)
    }

    /// The whole exposition, from one reading of the process's figures
    /// (tests pass a fixed one, as a live reading differs on every call).
    fn render_with(&mut self, reading: &ProcessReading) -> String {
        let mut out = Text::default();
        self.render_sources(&mut out);
        self.render_dispatcher(&mut out);
        self.render_sinks(&mut out);
        self.render_retry_and_dlq(&mut out);
        self.render_latency(&mut out);
        self.render_kafka(&mut out);
        self.render_process(&mut out, reading);
        out.text
    }

    fn render_sources(&self, out: &mut Text) {
        let sources = &self.telemetry.metrics.sources;
        out.family(
            "log_capturer_logs_processed_total",
            "counter",
            "Lines taken from a source into batches.",
        );
        for source in sources {
            out.sample(
                "log_capturer_logs_processed_total",
                &[
                    ("source_type", source.source_type),
                    ("source_id", &source.id),
                    ("pipeline", "default"),
                ],
                source.lines_dispatched.get(),
            );
        }
        out.family(
            "log_capturer_source_lines_read_total",
            "counter",
            "Lines (and pieces of over-long lines) read by a source.",
        );
        for source in sources {
            out.sample(
                "log_capturer_source_lines_read_total",
                &[("source_id", &source.id)],
                source.lines_read.get(),
            );
        }
        out.family(
            "log_capturer_source_bytes_read_total",
            "counter",
            "Bytes read by a source.",
        );
        for source in sources {
            out.sample(
                "log_capturer_source_bytes_read_total",
                &[("source_id", &source.id)],
                source.bytes_read.get(),
            );
        }
        out.family(
            "log_capturer_source_lines_split_total",
            "counter",
            "Extra pieces cut from lines longer than max_line_bytes.",
        );
        for source in sources {
            out.sample(
                "log_capturer_source_lines_split_total",
                &[("source_id", &source.id)],
                source.lines_split.get(),
            );
        }
        out.family(
            "log_capturer_files_monitored",
            "gauge",
            "1 while a followed file is open.",
        );
        for source in sources {
            for file in &source.files {
                out.sample(
                    "log_capturer_files_monitored",
                    &[
                        ("filepath", &file.path),
                        ("source_type", source.source_type),
                    ],
                    file.open.get(),
                );
            }
        }
        out.family(
            "log_capturer_position_rotation_detected_total",
            "counter",
            "Times a followed path was found to name a new file.",
        );
        for file in sources.iter().flat_map(|source| &source.files) {
            out.sample(
                "log_capturer_position_rotation_detected_total",
                &[("file_path", &file.path)],
                file.rotations.get(),
            );
        }
        out.family(
            "log_capturer_position_truncation_detected_total",
            "counter",
            "Times a followed file was found shorter than the read position.",
        );
        for file in sources.iter().flat_map(|source| &source.files) {
            out.sample(
                "log_capturer_position_truncation_detected_total",
                &[("file_path", &file.path)],
                file.truncations.get(),
            );
        }
    }

    fn render_dispatcher(&self, out: &mut Text) {
        let metrics = &self.telemetry.metrics;
        let depth: u64 = metrics
            .sources
            .iter()
            .map(|source| {
                source
                    .lines_read
                    .get()
                    .saturating_sub(source.lines_dispatched.get())
            })
            .sum();
        let capacity = (self.telemetry.ring_capacity_entries * metrics.sources.len() as u64).max(1);
        out.family(
            "log_capturer_dispatcher_queue_depth",
            "gauge",
            "Lines read by sources and not yet in a batch.",
        );
        out.sample("log_capturer_dispatcher_queue_depth", &[], depth);
        out.family(
            "log_capturer_dispatcher_queue_utilization",
            "gauge",
            "queue_depth over the capacity of all source rings (0 to 1).",
        );
        out.sample_float(
            "log_capturer_dispatcher_queue_utilization",
            &[],
            depth as f64 / capacity as f64,
        );
        out.family(
            "log_capturer_dispatcher_batches_total",
            "counter",
            "Batches sealed, and batches every sink has reported on.",
        );
        out.sample(
            "log_capturer_dispatcher_batches_total",
            &[("state", "sealed")],
            metrics.dispatcher.batches_sealed.get(),
        );
        out.sample(
            "log_capturer_dispatcher_batches_total",
            &[("state", "completed")],
            metrics.dispatcher.batches_completed.get(),
        );
        out.family(
            "log_capturer_queue_size",
            "gauge",
            "Entries or batches waiting in a queue.",
        );
        for source in &metrics.sources {
            let waiting = source
                .lines_read
                .get()
                .saturating_sub(source.lines_dispatched.get());
            out.sample(
                "log_capturer_queue_size",
                &[
                    ("component", &format!("source:{}", source.id)),
                    ("queue_type", "ring_entries"),
                ],
                waiting,
            );
        }
        out.sample(
            "log_capturer_queue_size",
            &[
                ("component", "dispatcher"),
                ("queue_type", "batches_in_flight"),
            ],
            metrics.dispatcher.batches_in_flight.get(),
        );
        for (sink, kafka) in &metrics.kafka {
            out.sample(
                "log_capturer_queue_size",
                &[
                    ("component", &format!("sink:{sink}")),
                    ("queue_type", "librdkafka_messages"),
                ],
                kafka.queue_size.get(),
            );
        }
        out.family(
            "log_capturer_logs_per_second",
            "gauge",
            "Lines per second over the last second, per component.",
        );
        for (component, rate) in &self.rates {
            out.sample_float(
                "log_capturer_logs_per_second",
                &[("component", component)],
                rate.per_second,
            );
        }
    }

    fn render_sinks(&self, out: &mut Text) {
        let sinks = &self.telemetry.metrics.sinks;
        let mut by_type: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for sink in sinks {
            *by_type.entry((sink.sink_type, "success")).or_default() += sink.lines_sent.get();
            *by_type.entry((sink.sink_type, "error")).or_default() += sink.lines_failed.get();
        }
        out.family(
            "log_capturer_logs_sent_total",
            "counter",
            "Lines delivered (success) or handed to the DLQ (error), once per line and sink, summed per sink type.",
        );
        for ((sink_type, status), value) in by_type {
            out.sample(
                "log_capturer_logs_sent_total",
                &[("sink_type", sink_type), ("status", status)],
                value,
            );
        }
        out.family(
            "log_capturer_sink_logs_total",
            "counter",
            "Lines delivered (success) or handed to the DLQ (error), once per line, per sink.",
        );
        for sink in sinks {
            out.sample(
                "log_capturer_sink_logs_total",
                &[
                    ("sink", &sink.id),
                    ("sink_type", sink.sink_type),
                    ("status", "success"),
                ],
                sink.lines_sent.get(),
            );
            out.sample(
                "log_capturer_sink_logs_total",
                &[
                    ("sink", &sink.id),
                    ("sink_type", sink.sink_type),
                    ("status", "error"),
                ],
                sink.lines_failed.get(),
            );
        }
        self.render_sink_attempts(out);
        out.family(
            "log_capturer_errors_total",
            "counter",
            "Errors, per component and type.",
        );
        for source in &self.telemetry.metrics.sources {
            out.sample(
                "log_capturer_errors_total",
                &[
                    ("component", &format!("source:{}", source.id)),
                    ("error_type", "read"),
                ],
                source.read_errors.get(),
            );
        }
        for sink in sinks {
            out.sample(
                "log_capturer_errors_total",
                &[
                    ("component", &format!("sink:{}", sink.id)),
                    ("error_type", "batch_failed"),
                ],
                sink.batches_failed.get(),
            );
        }
        out.family(
            "log_capturer_component_health",
            "gauge",
            "1 when a component is healthy (thread running, breaker closed).",
        );
        let problems: BTreeMap<String, String> = self.unhealthy().into_iter().collect();
        for stage in &self.telemetry.stages {
            let healthy = u64::from(!problems.contains_key(&stage.name));
            out.sample(
                "log_capturer_component_health",
                &[
                    ("component_type", stage.stage_type),
                    ("component_name", &stage.name),
                ],
                healthy,
            );
        }
    }

    /// Attempts, apart from outcomes: a line retried three times is one
    /// outcome in `log_capturer_sink_logs_total` and three attempts here.
    fn render_sink_attempts(&self, out: &mut Text) {
        let sinks = &self.telemetry.metrics.sinks;
        out.family(
            "log_capturer_sink_delivery_attempts_total",
            "counter",
            "Line deliveries tried per sink, by result; a line retried three times is three attempts.",
        );
        for sink in sinks {
            out.sample(
                "log_capturer_sink_delivery_attempts_total",
                &[("sink", &sink.id), ("result", "success")],
                sink.lines_sent.get(),
            );
            out.sample(
                "log_capturer_sink_delivery_attempts_total",
                &[("sink", &sink.id), ("result", "failure")],
                sink.line_attempts_failed.get(),
            );
        }
    }

    fn render_retry_and_dlq(&self, out: &mut Text) {
        let metrics = &self.telemetry.metrics;
        out.family(
            "log_capturer_dispatcher_retry_queue_size",
            "gauge",
            "(batch, sink) retries waiting in the retry wheel.",
        );
        out.sample(
            "log_capturer_dispatcher_retry_queue_size",
            &[],
            metrics.dispatcher.retry_queue_size.get(),
        );
        out.family(
            "log_capturer_dispatcher_retry_drops_total",
            "counter",
            "Entries sent to the DLQ because the retry wheel was full.",
        );
        out.sample(
            "log_capturer_dispatcher_retry_drops_total",
            &[],
            metrics.dispatcher.retry_drops.get(),
        );
        out.family(
            "log_capturer_dispatcher_retries_total",
            "counter",
            "Retries handed to sinks.",
        );
        out.sample(
            "log_capturer_dispatcher_retries_total",
            &[],
            metrics.dispatcher.retries_sent.get(),
        );
        let reasons = Reason::ALL;
        out.family(
            "log_capturer_dlq_stored_total",
            "counter",
            "Entries stored in the dead-letter queue, by reason.",
        );
        for dlq in &metrics.dlq {
            for reason in reasons {
                out.sample(
                    "log_capturer_dlq_stored_total",
                    &[("sink", &dlq.sink), ("reason", reason.as_str())],
                    dlq.stored_for(reason).get(),
                );
            }
        }
        out.family(
            "log_capturer_dlq_rejected_total",
            "counter",
            "Entries the sink refused for good, kept in the DLQ's rejected/ directory and never replayed automatically, by reason.",
        );
        for dlq in &metrics.dlq {
            for reason in Reason::REJECTED {
                out.sample(
                    "log_capturer_dlq_rejected_total",
                    &[("sink", &dlq.sink), ("reason", reason.as_str())],
                    dlq.rejected_for(reason).get(),
                );
            }
        }
        out.family(
            "log_capturer_dlq_entries_total",
            "counter",
            "Entries stored in the dead-letter queue, all reasons.",
        );
        for dlq in &metrics.dlq {
            let total = dlq.stored_total();
            out.sample(
                "log_capturer_dlq_entries_total",
                &[("sink", &dlq.sink)],
                total,
            );
        }
        out.family(
            "log_capturer_dlq_entries",
            "gauge",
            "Records in the dead-letter queue segments on disk.",
        );
        for dlq in &metrics.dlq {
            out.sample(
                "log_capturer_dlq_entries",
                &[("sink", &dlq.sink)],
                dlq.entries.get(),
            );
        }
        out.family(
            "log_capturer_dlq_size_bytes",
            "gauge",
            "Bytes of the dead-letter queue segment files (preallocated).",
        );
        for dlq in &metrics.dlq {
            out.sample(
                "log_capturer_dlq_size_bytes",
                &[("sink", &dlq.sink)],
                dlq.size_bytes.get(),
            );
        }
        out.family(
            "log_capturer_dlq_reprocess_attempts_total",
            "counter",
            "Records replayed from the dead-letter queue by automatic replay, by result.",
        );
        for dlq in &metrics.dlq {
            out.sample(
                "log_capturer_dlq_reprocess_attempts_total",
                &[("sink", &dlq.sink), ("result", "success")],
                dlq.replayed.get(),
            );
            out.sample(
                "log_capturer_dlq_reprocess_attempts_total",
                &[("sink", &dlq.sink), ("result", "failure")],
                dlq.replay_failed.get(),
            );
        }
        out.family("log_capturer_dlq_dropped_total", "counter", "Entries dropped at the dead-letter queue's size bound (policy drop_oldest or drop_new).");
        for dlq in &metrics.dlq {
            out.sample(
                "log_capturer_dlq_dropped_total",
                &[("sink", &dlq.sink)],
                dlq.dropped.get(),
            );
        }
        out.family(
            "log_capturer_dlq_write_errors_total",
            "counter",
            "Entries that could not be written to the dead-letter queue (disk full, read-only).",
        );
        for dlq in &metrics.dlq {
            out.sample(
                "log_capturer_dlq_write_errors_total",
                &[("sink", &dlq.sink)],
                dlq.write_errors.get(),
            );
        }
        out.family(
            "log_capturer_dlq_corrupt_records_total",
            "counter",
            "Corrupt regions (each hid at least one record) and damaged headers found when scanning dead-letter queue segments.",
        );
        for dlq in &metrics.dlq {
            out.sample(
                "log_capturer_dlq_corrupt_records_total",
                &[("sink", &dlq.sink)],
                dlq.corrupt.get(),
            );
        }
        out.family(
            "log_capturer_dlq_corrupt_bytes_total",
            "counter",
            "Bytes of corrupt regions and damaged headers found when scanning dead-letter queue segments.",
        );
        for dlq in &metrics.dlq {
            out.sample(
                "log_capturer_dlq_corrupt_bytes_total",
                &[("sink", &dlq.sink)],
                dlq.corrupt_bytes.get(),
            );
        }
    }

    fn render_latency(&self, out: &mut Text) {
        out.family(
            "log_capturer_processing_duration_seconds",
            "histogram",
            "Time from a line being read to its batch being reported by a sink.",
        );
        for sink in &self.telemetry.latency {
            out.histogram(
                "log_capturer_processing_duration_seconds",
                &[
                    ("component", &format!("sink:{}", sink.sink_id)),
                    ("operation", "read_to_ack"),
                ],
                &sink.read_to_ack.total,
            );
        }
        out.family(
            "log_capturer_sink_send_duration_seconds",
            "histogram",
            "Time from a batch being sealed to a sink's report, per sink type.",
        );
        let mut by_type: BTreeMap<&str, Histogram<u64>> = BTreeMap::new();
        for sink in &self.telemetry.latency {
            match by_type.get_mut(sink.sink_type) {
                Some(merged) => merged.add(&sink.seal_to_ack.total).expect("same bounds"),
                None => {
                    by_type.insert(sink.sink_type, sink.seal_to_ack.total.clone());
                }
            }
        }
        for (sink_type, histogram) in &by_type {
            out.histogram(
                "log_capturer_sink_send_duration_seconds",
                &[("sink_type", sink_type)],
                histogram,
            );
        }
        out.family(
            "log_capturer_latency_seconds",
            "gauge",
            "Read-to-ack latency percentiles per sink over the last 10-second window.",
        );
        for sink in &self.telemetry.latency {
            let window = &sink.read_to_ack.last_window;
            if window.is_empty() {
                continue;
            }
            // `percentile`, not `quantile`: Prometheus reserves `quantile`
            // for summaries, and a windowed figure is no summary.
            for (quantile, label) in [(0.5, "50"), (0.99, "99"), (0.999, "99.9")] {
                let seconds = window.value_at_quantile(quantile) as f64 / 1e6;
                out.sample_float(
                    "log_capturer_latency_seconds",
                    &[("sink", &sink.sink_id), ("percentile", label)],
                    seconds,
                );
            }
        }
    }

    /// The Kafka family. Each series carries `sink_name`, the sink's id, so
    /// that two sinks on one topic never export the same series.
    fn render_kafka(&self, out: &mut Text) {
        let kafka = &self.telemetry.metrics.kafka;
        if kafka.is_empty() {
            return;
        }
        out.family(
            "kafka_messages_produced_total",
            "counter",
            "Kafka messages acknowledged (success) or handed to the DLQ (error), once per message.",
        );
        for (sink, metrics) in kafka {
            let failed = self
                .sink_metrics(sink)
                .map_or(0, |sink| sink.lines_failed.get());
            for (status, value) in [
                ("success", metrics.messages_delivered.get()),
                ("error", failed),
            ] {
                out.sample(
                    "kafka_messages_produced_total",
                    &[
                        ("sink_name", sink),
                        ("topic", &metrics.topic),
                        ("status", status),
                    ],
                    value,
                );
            }
        }
        out.family(
            "kafka_producer_errors_total",
            "counter",
            "Kafka errors by type: transport (opens the breaker), retryable, permanent.",
        );
        for (sink, metrics) in kafka {
            for (error_type, value) in [
                ("transport", metrics.errors_transport.get()),
                ("retryable", metrics.errors_retryable.get()),
                ("permanent", metrics.errors_permanent.get()),
            ] {
                out.sample(
                    "kafka_producer_errors_total",
                    &[
                        ("sink_name", sink),
                        ("topic", &metrics.topic),
                        ("error_type", error_type),
                    ],
                    value,
                );
            }
        }
        self.render_kafka_dlq(out);
        self.render_kafka_gauges(out);
    }

    /// `kafka_dlq_messages_total`: the Kafka sinks' DLQ counts by reason.
    fn render_kafka_dlq(&self, out: &mut Text) {
        let kafka = &self.telemetry.metrics.kafka;
        out.family(
            "kafka_dlq_messages_total",
            "counter",
            "Kafka messages stored in the dead-letter queue, by reason.",
        );
        for (sink, metrics) in kafka {
            let Some(dlq) = self
                .telemetry
                .metrics
                .dlq
                .iter()
                .find(|dlq| &dlq.sink == sink)
            else {
                continue;
            };
            for reason in Reason::ALL {
                out.sample(
                    "kafka_dlq_messages_total",
                    &[
                        ("sink_name", sink),
                        ("topic", &metrics.topic),
                        ("reason", reason.as_str()),
                    ],
                    dlq.stored_for(reason).get(),
                );
            }
        }
    }

    /// Kafka gauges: librdkafka's queue, the breaker, the connection.
    fn render_kafka_gauges(&self, out: &mut Text) {
        let kafka = &self.telemetry.metrics.kafka;
        out.family(
            "kafka_queue_size",
            "gauge",
            "Messages in librdkafka's queue.",
        );
        for (sink, metrics) in kafka {
            out.sample(
                "kafka_queue_size",
                &[("sink_name", sink)],
                metrics.queue_size.get(),
            );
        }
        out.family("kafka_circuit_breaker_state", "gauge", "0 closed, 1 open.");
        for (sink, metrics) in kafka {
            out.sample(
                "kafka_circuit_breaker_state",
                &[("sink_name", sink)],
                metrics.breaker_state.get(),
            );
        }
        out.family(
            "kafka_connection_status",
            "gauge",
            "1 when the cluster answered the last delivery or probe.",
        );
        for (sink, brokers) in &self.telemetry.kafka_brokers {
            let connected = kafka
                .iter()
                .find(|(id, _)| id == sink)
                .map_or(0, |(_, metrics)| metrics.connected.get());
            for broker in brokers {
                out.sample(
                    "kafka_connection_status",
                    &[("broker", broker), ("sink_name", sink)],
                    connected,
                );
            }
        }
    }

    fn sink_metrics(&self, id: &str) -> Option<&SinkMetrics> {
        self.telemetry
            .metrics
            .sinks
            .iter()
            .find(|sink| sink.id == id)
            .map(|sink| &**sink)
    }

    fn render_process(&mut self, out: &mut Text, reading: &ProcessReading) {
        out.family(
            "log_capturer_memory_usage_bytes",
            "gauge",
            "Memory of the process: rss, peak_rss, virtual, and the allocator's own figures.",
        );
        for (kind, bytes) in [
            ("rss", reading.rss_bytes),
            ("peak_rss", reading.peak_rss_bytes),
            ("virtual", reading.virtual_bytes),
        ] {
            out.sample("log_capturer_memory_usage_bytes", &[("type", kind)], bytes);
        }
        if let Some(allocator) = self.allocator {
            for (kind, bytes) in allocator() {
                out.sample("log_capturer_memory_usage_bytes", &[("type", kind)], bytes);
            }
        }
        out.family(
            "log_capturer_cpu_usage_percent",
            "gauge",
            "CPU time of the process over the last interval, percent of one core (prefer rate(process_cpu_seconds_total)).",
        );
        let percent = self.cpu.update(reading);
        out.sample_float("log_capturer_cpu_usage_percent", &[], percent);
        out.family(
            "log_capturer_file_descriptors_open",
            "gauge",
            "Open file descriptors of the process.",
        );
        out.sample(
            "log_capturer_file_descriptors_open",
            &[],
            reading.file_descriptors,
        );
        out.family(
            "log_capturer_threads",
            "gauge",
            "Threads of the process: the stages, fixed at start-up, plus librdkafka's, which follow the number of brokers each Kafka producer knows.",
        );
        out.sample("log_capturer_threads", &[], reading.threads);
        self.render_standard_process(out, reading);
    }

    /// The `process_*` metrics every Prometheus client library exports,
    /// under their standard names and units.
    fn render_standard_process(&self, out: &mut Text, reading: &ProcessReading) {
        out.family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        out.sample_float("process_cpu_seconds_total", &[], reading.cpu_seconds);
        out.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        out.sample("process_resident_memory_bytes", &[], reading.rss_bytes);
        out.family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        out.sample("process_open_fds", &[], reading.file_descriptors);
        if let Some(started) = self.start_time_seconds {
            out.family(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
            );
            out.sample_float("process_start_time_seconds", &[], started);
        }
    }
}

/// An exposition being written.
#[derive(Debug, Default)]
struct Text {
    text: String,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn labels(&mut self, labels: &[(&str, &str)]) {
        if labels.is_empty() {
            return;
        }
        self.text.push('{');
        for (index, (key, value)) in labels.iter().enumerate() {
            if index > 0 {
                self.text.push(',');
            }
            self.text.push_str(key);
            self.text.push_str("=\"");
            for character in value.chars() {
                match character {
                    '\\' => self.text.push_str("\\\\"),
                    '"' => self.text.push_str("\\\""),
                    '\n' => self.text.push_str("\\n"),
                    other => self.text.push(other),
                }
            }
            self.text.push('"');
        }
        self.text.push('}');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.text.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.text, " {value}");
    }

    fn sample_float(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        self.labels(labels);
        let value = if value.is_finite() { value } else { 0.0 };
        let _ = writeln!(self.text, " {value}");
    }

    /// A Prometheus histogram from an hdrhistogram of microseconds.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram<u64>) {
        let bucket = format!("{name}_bucket");
        for bound in BUCKETS_SECONDS {
            let micros = (bound * 1e6) as u64;
            let count = if histogram.is_empty() {
                0
            } else {
                histogram.count_between(0, micros)
            };
            let le = format!("{bound}");
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, histogram.len());
        let sum_seconds = histogram.mean() * histogram.len() as f64 / 1e6;
        self.sample_float(&format!("{name}_sum"), labels, sum_seconds);
        self.sample(&format!("{name}_count"), labels, histogram.len());
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::StageHealth;
    use crate::pipeline::PipelineMetrics;
    use std::sync::Arc;

    fn exporter_with(stages: Vec<Arc<StageHealth>>) -> Exporter {
        let metrics = PipelineMetrics {
            sources: Vec::new(),
            dispatcher: Arc::default(),
            sinks: Vec::new(),
            kafka: Vec::new(),
            failures: Vec::new(),
            dlq: Vec::new(),
        };
        let telemetry = Telemetry {
            metrics,
            stages,
            latency: Vec::new(),
            kafka_brokers: Vec::new(),
            ring_capacity_entries: 1,
        };
        Exporter::new(telemetry, None)
    }

    /// Goal: a stage thread that died makes `/health` unhealthy and names
    /// it. Method: one live and one dead stage flag.
    #[test]
    fn dead_stage_makes_health_fail_and_names_it() {
        let alive = Arc::new(StageHealth {
            name: "source-app".to_string(),
            stage_type: "source",
            ..StageHealth::default()
        });
        alive.set_alive(true);
        let dead = Arc::new(StageHealth {
            name: "sink-kafka".to_string(),
            stage_type: "sink",
            ..StageHealth::default()
        });
        let mut exporter = exporter_with(vec![alive, Arc::clone(&dead)]);
        let (healthy, body) = exporter.health_json();
        assert!(!healthy);
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(value["status"], "unhealthy");
        assert_eq!(value["components"]["sink-kafka"], "thread has stopped");
        assert_eq!(value["components"]["source-app"], "ok");
        assert!(exporter.render().contains(
            "log_capturer_component_health{component_type=\"sink\",component_name=\"sink-kafka\"} 0"
        ));
        dead.set_alive(true);
        assert!(exporter.health_json().0);
    }
}
