//! Golden tests of the exposition text.
//!
//! Goal: the text a scrape returns stays byte for byte what dashboards,
//! `docs/METRICS.md` and promtool were checked against, whatever the shape of
//! the code that writes it. Method: fill every counter and gauge of a
//! pipeline with two file sources, two Kafka sinks on one topic and a file
//! sink with distinct non-zero values, render with fixed process figures,
//! and compare with a text captured once (and passed by `promtool check
//! metrics`). A second golden covers a pipeline with nothing configured.
//! The full text also holds every family, so it is checked against the
//! tables of `docs/METRICS.md`.
//!
//! Only what a test cannot fix is stubbed: the `/proc/self` reading is
//! passed in, and the CPU meter starts from that same reading, so the CPU
//! percentage is 0 however long the test takes.

use std::sync::Arc;
use std::time::Instant;

use super::{Exporter, Rate};
use crate::dlq::DlqMetrics;
use crate::dlq::record::Reason;
use crate::labels::{SymbolLimits, SymbolTable};
use crate::metrics::{FileStatus, SinkMetrics, SourceMetrics, StageHealth};
use crate::sink::kafka::{BreakerState, KafkaMetrics};
use crate::sink::loki::sink::LokiMetrics;
use crate::telemetry::PipelineMetrics;
use crate::telemetry::latency::latency_channel;
use crate::telemetry::process::{CpuMeter, ProcessReading};
use crate::telemetry::{SinkLatency, Telemetry};

const FULL_GOLDEN: &str = include_str!("../testdata/exposition.golden.txt");
const EMPTY_GOLDEN: &str = include_str!("../testdata/exposition_empty.golden.txt");
const METRICS_DOC: &str = include_str!("../../../docs/METRICS.md");

/// Hands out 101, 102, ...: every figure differs from every other, so a
/// value rendered under the wrong series shows in the diff.
#[derive(Debug)]
struct Figures {
    next: u64,
}

impl Figures {
    fn new() -> Self {
        Self { next: 100 }
    }

    fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

fn file(figures: &mut Figures, path: &str, open: u64) -> FileStatus {
    FileStatus {
        path: Arc::from(path),
        open: open == 1,
        rotations: figures.next(),
        truncations: figures.next(),
        lag_bytes: figures.next(),
    }
}

/// A table with a few symbols and some refusals.
fn symbols(figures: &mut Figures) -> Arc<SymbolTable> {
    let table = SymbolTable::new(SymbolLimits::default());
    for index in 0..3 {
        table.intern(&format!("label-{index}")).expect("room");
    }
    table.not_interned.add(figures.next());
    Arc::new(table)
}

fn source(figures: &mut Figures, id: &str, files: Vec<FileStatus>) -> Arc<SourceMetrics> {
    let source = SourceMetrics {
        id: id.to_string(),
        source_type: "file",
        files: std::sync::Mutex::new(files),
        ..SourceMetrics::default()
    };
    source.files_watched.set(figures.next());
    source.files_open.set(figures.next());
    source.rotations.add(figures.next());
    source.truncations.add(figures.next());
    source.fingerprint_mismatches.add(figures.next());
    source.files_closed_for_limit.add(figures.next());
    source.position_writes.add(figures.next());
    source.position_write_ns.add(figures.next() * 1_000_000);
    source.position_write_errors.add(figures.next());
    source.positions_corrupt.add(figures.next());
    // Read runs ahead of dispatched, so that the queue depth is not 0.
    let dispatched = figures.next();
    source.lines_dispatched.add(dispatched);
    source.lines_read.add(dispatched + figures.next());
    source.bytes_read.add(figures.next() * 100);
    source.lines_split.add(figures.next());
    source.read_errors.add(figures.next());
    Arc::new(source)
}

fn sources(figures: &mut Figures) -> Vec<Arc<SourceMetrics>> {
    let app_files = vec![
        file(figures, "/var/log/app.log", 1),
        // A path with every character the label escaping must handle.
        file(figures, "/var/log/odd \"name\" \\ with\nnewline.log", 0),
    ];
    let audit_files = vec![file(figures, "/var/log/audit/audit.log", 1)];
    vec![
        source(figures, "app", app_files),
        source(figures, "audit", audit_files),
        syslog_source(figures),
        docker_source(),
    ]
}

/// A docker source with two containers (one name with characters the
/// label escaping must handle) and its counters; fixed figures, so that
/// the rest of the text keeps its numbers.
fn docker_source() -> Arc<SourceMetrics> {
    let source = SourceMetrics {
        id: "containers".to_string(),
        source_type: "docker",
        ..SourceMetrics::default()
    };
    let docker = &source.docker;
    *docker.containers.lock().expect("not poisoned") = vec![
        crate::metrics::ContainerStatus {
            id: "0123456789ab".to_string(),
            name: "opensips-1".to_string(),
            image: "opensips:3.4".to_string(),
            collected: [1200, 34],
        },
        crate::metrics::ContainerStatus {
            id: "ba9876543210".to_string(),
            name: "odd\"name".to_string(),
            image: "busybox".to_string(),
            collected: [5, 0],
        },
    ];
    {
        let mut events = docker.events.lock().expect("not poisoned");
        events.insert(("start".to_string(), "opensips-1".to_string()), 2);
        events.insert(("die".to_string(), "opensips-1".to_string()), 1);
    }
    docker.reconnects.add(3);
    docker.api_errors.add(7);
    docker.stream_rotations.add(11);
    docker.streams_active.set(3);
    docker.undecoded.add(1);
    docker.other_drivers.add(2);
    source.lines_dispatched.add(1239);
    source.lines_read.add(1240);
    Arc::new(source)
}

/// A syslog source: no files, its own counters.
fn syslog_source(figures: &mut Figures) -> Arc<SourceMetrics> {
    let source = SourceMetrics {
        id: "sys".to_string(),
        source_type: "syslog",
        ..SourceMetrics::default()
    };
    let dispatched = figures.next();
    source.lines_dispatched.add(dispatched);
    source.lines_read.add(dispatched + figures.next());
    source.bytes_read.add(figures.next() * 100);
    let counts = &source.syslog;
    for counter in [
        &counts.parse_errors,
        &counts.truncated,
        &counts.framing_errors,
        &counts.queue_full,
        &counts.connections_refused,
        &counts.connections_idle_closed,
        &counts.empty,
        &counts.unread_at_stop_bytes,
    ] {
        counter.add(figures.next());
    }
    counts.connections_active.set(figures.next());
    counts.kernel_drops.set(figures.next());
    Arc::new(source)
}

fn sink(figures: &mut Figures, id: &str, sink_type: &'static str) -> Arc<SinkMetrics> {
    let sink = SinkMetrics {
        id: id.to_string(),
        sink_type,
        ..SinkMetrics::default()
    };
    for counter in [
        &sink.lines_sent,
        &sink.lines_failed,
        &sink.line_attempts_failed,
        &sink.batches_sent,
        &sink.batches_failed,
        &sink.bytes_written,
    ] {
        counter.add(figures.next());
    }
    Arc::new(sink)
}

fn kafka(figures: &mut Figures, id: &str, breaker: BreakerState) -> (String, Arc<KafkaMetrics>) {
    let kafka = KafkaMetrics {
        topic: "logs".to_string(),
        ..KafkaMetrics::default()
    };
    kafka.breaker_state.set(breaker as u64);
    kafka
        .connected
        .set(u64::from(breaker == BreakerState::Closed));
    for counter in [
        &kafka.breaker_openings,
        &kafka.messages_delivered,
        &kafka.errors_transport,
        &kafka.errors_permanent,
        &kafka.errors_retryable,
    ] {
        counter.add(figures.next());
    }
    kafka.queue_size.set(figures.next());
    (id.to_string(), Arc::new(kafka))
}

fn loki(figures: &mut Figures, id: &str) -> (String, Arc<LokiMetrics>) {
    let loki = LokiMetrics::default();
    for counter in loki.errors.iter().chain([
        &loki.timestamps_clamped,
        &loki.timestamps_rejected_old,
        &loki.timestamps_rejected_new,
        &loki.timestamps_raised_far,
        &loki.requests,
        &loki.breaker_openings,
    ]) {
        counter.add(figures.next());
    }
    loki.streams.set(figures.next());
    loki.breaker_state.set(1);
    (id.to_string(), Arc::new(loki))
}

fn dlq(figures: &mut Figures, sink: &str) -> Arc<DlqMetrics> {
    let dlq = DlqMetrics {
        sink: sink.to_string(),
        ..DlqMetrics::default()
    };
    for reason in Reason::ALL {
        dlq.stored_for(reason).add(figures.next());
    }
    for reason in Reason::REJECTED {
        dlq.rejected_for(reason).add(figures.next());
    }
    dlq.entries.set(figures.next());
    dlq.size_bytes.set(figures.next() * 4096);
    // Derived rather than drawn, so that the figures after them keep theirs.
    dlq.used_bytes.set(dlq.size_bytes.get() / 4 + 64);
    dlq.input_bytes.set(dlq.used_bytes.get() * 3);
    dlq.max_bytes.set(1 << 30);
    for counter in [
        &dlq.dropped,
        &dlq.write_errors,
        &dlq.corrupt,
        &dlq.corrupt_bytes,
        &dlq.replayed,
        &dlq.replay_failed,
    ] {
        counter.add(figures.next());
    }
    Arc::new(dlq)
}

/// Latency of one sink. Samples fall in several buckets and beyond the
/// last one (100 s); `with_window` fills the last 10-second window too.
fn latency(sink_id: &str, sink_type: &'static str, scale: u64, with_window: bool) -> SinkLatency {
    let (_publisher, mut read_to_ack) = latency_channel();
    let (_publisher, mut seal_to_ack) = latency_channel();
    for (micros, count) in [(300, 5), (2_000, 10), (70_000, 3), (4_000_000, 1)] {
        read_to_ack
            .total
            .record_n(micros * scale, count)
            .expect("in bounds");
        seal_to_ack
            .total
            .record_n(micros, count * scale)
            .expect("in bounds");
        if with_window {
            read_to_ack
                .last_window
                .record_n(micros * scale, count)
                .expect("in bounds");
        }
    }
    read_to_ack.total.record(100_000_000).expect("in bounds");
    SinkLatency {
        sink_id: sink_id.to_string(),
        sink_type,
        read_to_ack,
        seal_to_ack,
    }
}

fn stage(name: &str, stage_type: &'static str, alive: bool) -> Arc<StageHealth> {
    let stage = Arc::new(StageHealth {
        name: name.to_string(),
        stage_type,
        ..StageHealth::default()
    });
    stage.set_alive(alive);
    stage
}

fn full_telemetry() -> Telemetry {
    let mut figures = Figures::new();
    let sources = sources(&mut figures);
    let dispatcher = Arc::<crate::metrics::DispatcherMetrics>::default();
    dispatcher.lines_processed.add(figures.next());
    dispatcher.batches_sealed.add(figures.next());
    dispatcher.batches_completed.add(figures.next());
    dispatcher.batches_in_flight.set(figures.next());
    dispatcher.retry_queue_size.set(figures.next());
    dispatcher.retry_drops.add(figures.next());
    dispatcher.retries_sent.add(figures.next());
    let sink_ids = [
        ("kafka-main", "kafka"),
        ("kafka-audit", "kafka"),
        ("archive", "file"),
    ];
    let sinks = sink_ids
        .iter()
        .map(|(id, sink_type)| sink(&mut figures, id, sink_type))
        .collect();
    let kafka = vec![
        kafka(&mut figures, "kafka-main", BreakerState::Closed),
        kafka(&mut figures, "kafka-audit", BreakerState::Open),
    ];
    let dlq = sink_ids
        .iter()
        .map(|(id, _)| dlq(&mut figures, id))
        .collect();
    let loki = vec![loki(&mut figures, "loki-main")];
    let metrics = PipelineMetrics {
        sources,
        dispatcher,
        sinks,
        kafka,
        loki,
        failures: Vec::new(),
        dlq,
        symbols: symbols(&mut figures),
    };
    Telemetry {
        metrics,
        stages: vec![
            stage("source-app", "source", true),
            stage("source-audit", "source", true),
            stage("dispatcher", "dispatcher", true),
            stage("sink-kafka-main", "sink", true),
            stage("sink-kafka-audit", "sink", true),
            stage("sink-archive", "sink", false),
        ],
        latency: vec![
            latency("kafka-main", "kafka", 1, true),
            latency("kafka-audit", "kafka", 3, true),
            latency("archive", "file", 7, false),
        ],
        kafka_brokers: vec![
            (
                "kafka-main".to_string(),
                vec!["broker-1:9092".to_string(), "broker-2:9092".to_string()],
            ),
            ("kafka-audit".to_string(), vec!["broker-3:9092".to_string()]),
        ],
        ring_capacity_entries: 4096,
        retry_capacity_batches: 64,
        reloads: Arc::new(crate::metrics::ReloadMetrics {
            succeeded: counter(2),
            failed: counter(1),
            last_failed: Default::default(),
            sockets_not_handed_over: counter(0),
        }),
    }
}

fn counter(value: u64) -> crate::metrics::Counter {
    let counter = crate::metrics::Counter::default();
    counter.add(value);
    counter
}

fn allocator_figures() -> Vec<(&'static str, u64)> {
    vec![
        ("allocator_committed", 8_388_608),
        ("allocator_committed_peak", 9_437_184),
    ]
}

/// Figures a `/proc/self` read might give, fixed.
fn process_reading() -> ProcessReading {
    ProcessReading {
        rss_bytes: 52_428_800,
        peak_rss_bytes: 62_914_560,
        virtual_bytes: 1_073_741_824,
        threads: 17,
        file_descriptors: 42,
        cpu_seconds: 12.75,
    }
}

/// Renders with the process figures and the clock-dependent state fixed.
fn render_fixed(exporter: &mut Exporter) -> String {
    let reading = process_reading();
    exporter.cpu = CpuMeter::new(&reading);
    exporter.render_with(&reading)
}

fn rate(per_second: f64) -> Rate {
    Rate {
        last_value: 0,
        last_at: Instant::now(),
        per_second,
    }
}

/// Compares line by line first, so that a failure names the first line
/// that differs instead of printing two whole expositions.
/// With `UPDATE_GOLDEN` set, writes the rendered text as the new golden
/// file (review the diff before committing it).
fn update_golden(name: &str, rendered: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/telemetry/testdata")
            .join(name);
        std::fs::write(&path, rendered).expect("golden file written");
    }
}

fn assert_same_text(rendered: &str, golden: &str) {
    for (index, (rendered_line, golden_line)) in rendered.lines().zip(golden.lines()).enumerate() {
        assert_eq!(rendered_line, golden_line, "line {} differs", index + 1);
    }
    assert_eq!(
        rendered.len(),
        golden.len(),
        "same leading lines, different length"
    );
    assert_eq!(rendered, golden);
}

/// The full pipeline, with rates fixed (they depend on the clock).
fn full_exporter() -> Exporter {
    let mut exporter = Exporter::new(full_telemetry(), Some(allocator_figures));
    exporter.start_time_seconds = Some(1_767_225_600.25);
    for (component, per_second) in [
        ("source:app", 12.5),
        ("source:audit", 7.0),
        ("dispatcher", 19.5),
        ("sink:kafka-main", 0.1),
        ("sink:kafka-audit", 0.0),
        ("sink:archive", 1234.0625),
    ] {
        exporter
            .rates
            .insert(component.to_string(), rate(per_second));
    }
    exporter
}

/// Goal and method: see the module doc; this is the full pipeline.
#[test]
fn full_pipeline_renders_the_golden_text() {
    let rendered = render_fixed(&mut full_exporter());
    update_golden("exposition.golden.txt", &rendered);
    assert_same_text(&rendered, FULL_GOLDEN);
}

/// Goal: `docs/METRICS.md` lists every exported family with its type, and
/// nothing else. Method: the `# TYPE` lines of the full pipeline's text
/// against the first two columns of the document's metric tables.
#[test]
fn metrics_doc_lists_every_family_with_its_type() {
    let text = render_fixed(&mut full_exporter());
    let mut rendered: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_once(' '))
        .collect();
    let mut documented: Vec<(&str, &str)> = METRICS_DOC
        .lines()
        .filter_map(|line| {
            let mut columns = line.strip_prefix("| `")?.split('|');
            let name = columns.next()?.split('`').next()?;
            Some((name, columns.next()?.trim()))
        })
        .collect();
    rendered.sort_unstable();
    documented.sort_unstable();
    assert_eq!(rendered, documented);
}

/// Goal: with no source, sink or Kafka sink and no readable start time,
/// the families that are always present keep their headers and the Kafka
/// family and `process_start_time_seconds` stay absent. Method: an empty
/// telemetry against its own golden text.
#[test]
fn empty_pipeline_renders_the_golden_text() {
    let telemetry = Telemetry {
        metrics: PipelineMetrics {
            sources: Vec::new(),
            dispatcher: Arc::default(),
            sinks: Vec::new(),
            kafka: Vec::new(),
            loki: Vec::new(),
            failures: Vec::new(),
            dlq: Vec::new(),
            symbols: Arc::new(SymbolTable::new(SymbolLimits::default())),
        },
        stages: Vec::new(),
        latency: Vec::new(),
        kafka_brokers: Vec::new(),
        ring_capacity_entries: 4096,
        retry_capacity_batches: 64,
        reloads: Arc::default(),
    };
    let mut exporter = Exporter::new(telemetry, None);
    exporter.start_time_seconds = None;
    let rendered = render_fixed(&mut exporter);
    update_golden("exposition_empty.golden.txt", &rendered);
    assert_same_text(&rendered, EMPTY_GOLDEN);
}
