//! `log-capturer demo`: the whole pipeline on an embedded default, with no
//! setup. librdkafka's mock cluster runs in process; numbered lines are
//! written to a temporary file at a steady rate; every broker goes down in
//! the middle of the run and comes back; a status line is printed each
//! second. Once the brokers are back, the automatic replay drains the DLQ
//! into the topic while live traffic goes on; after the last line the demo
//! waits for that replay to finish (and replays by hand whatever is left),
//! reads the topic back, and prints a summary: lines generated, delivered
//! live, stored in the DLQ, replayed, duplicated and lost (which must be 0).
//!
//! Every line it prints fits an 80-column terminal.
//!
//! Duplicates: delivery is at-least-once. When the brokers go down, the
//! messages librdkafka has in flight get no answer; the breaker purges them
//! and they are re-sent later, though the broker may have stored them. At
//! most `batch_size x batches_in_flight` messages are in librdkafka at once
//! ([`IN_FLIGHT_LINES_MAX`]), so each opening of the breaker duplicates at
//! most that many lines; the summary prints the bound beside the count.
//!
//! The mock cluster is not `Send`: the demo drives it from the calling
//! thread, which is also the thread that writes the lines.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::pipeline::replay::replay;
use crate::pipeline::{Pipeline, PipelineMetrics};
use crate::sink::kafka::ClientLog;
use crate::telemetry::process::read_process;

/// The shape of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Lines per second written to the input file.
    pub rate: u64,
    /// Time before the outage.
    pub before: Duration,
    /// Length of the outage (every broker down).
    pub outage: Duration,
    /// Time after the outage: live traffic goes on while the DLQ is
    /// replayed.
    pub after: Duration,
}

/// Default lines per second.
pub const RATE_DEFAULT: u64 = 50_000;
/// Default seconds before, during and after the outage: 45 s of traffic;
/// with the wait for the replay and the read-back, about a minute in all.
pub const BEFORE_SECS_DEFAULT: u64 = 10;
pub const OUTAGE_SECS_DEFAULT: u64 = 20;
pub const AFTER_SECS_DEFAULT: u64 = 15;

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            rate: RATE_DEFAULT,
            before: Duration::from_secs(BEFORE_SECS_DEFAULT),
            outage: Duration::from_secs(OUTAGE_SECS_DEFAULT),
            after: Duration::from_secs(AFTER_SECS_DEFAULT),
        }
    }
}

/// What a demo run ended with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DemoSummary {
    pub generated: u64,
    /// Lines delivered by the pipeline itself (first try or retry).
    pub delivered_live: u64,
    pub stored_in_dlq: u64,
    /// Replayed by the pipeline's automatic replay, and by hand after it.
    pub replayed_automatically: u64,
    pub replayed: u64,
    /// Distinct numbers read back from the topic.
    pub consumed_distinct: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// Duplicates the design allows: [`IN_FLIGHT_LINES_MAX`] per opening.
    pub duplicates_bound: u64,
    pub breaker_openings: u64,
    pub breaker_closings: u64,
    pub peak_rss_bytes: u64,
    pub threads_min: u64,
    pub threads_max: u64,
    pub wall_time_ms: u64,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo: {0}")]
    Setup(String),
}

fn setup<E: std::error::Error + 'static>(what: &'static str) -> impl FnOnce(E) -> DemoError {
    move |error| {
        DemoError::Setup(format!(
            "{what}: {}",
            crate::error_chain::ErrorChain(&error)
        ))
    }
}

const PARTITIONS: i32 = 64;
const TOPIC: &str = "demo";
const BATCH_SIZE: u64 = 1000;
const BATCHES_IN_FLIGHT: u64 = 8;

/// Most lines librdkafka holds for the demo's sink at once: the sink takes
/// at most `batches_in_flight` batches. Those are the lines an outage can
/// catch in flight.
pub const IN_FLIGHT_LINES_MAX: u64 = BATCH_SIZE * BATCHES_IN_FLIGHT;

/// Longest wait, after the last line, for the pipeline to deliver or store
/// every line and for the automatic replay to empty the DLQ.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the demo, printing status lines and the summary to `out`.
pub fn run_demo(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    let work = std::env::temp_dir().join(format!("log-capturer-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(setup("cannot create the demo directory"))?;
    let result = run_in(&work, options, out, started);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_in(
    work: &std::path::Path,
    options: &DemoOptions,
    out: &mut dyn Write,
    started: Instant,
) -> Result<DemoSummary, DemoError> {
    let cluster = MockCluster::new(1).map_err(setup("cannot start the mock Kafka cluster"))?;
    cluster
        .create_topic(TOPIC, PARTITIONS, 1)
        .map_err(setup("cannot create the demo topic"))?;
    let bootstrap = cluster.bootstrap_servers();
    let input = work.join("demo.log");
    std::fs::write(&input, "").map_err(setup("cannot create the demo input"))?;
    let config = demo_config(work, &input, &bootstrap)?;
    write_intro(out, options, &bootstrap);
    let pipeline = Pipeline::start(&config).map_err(setup("cannot start the pipeline"))?;
    let metrics = pipeline.metrics().clone();
    let mut status = Status::new(&metrics);
    let generated = generate(&cluster, &input, options, &mut status, out)?;
    let _ = writeln!(out, "--- all lines written; waiting for the DLQ replay ---");
    drain(&metrics, generated, &mut status, out);
    pipeline.request_stop();
    pipeline
        .join(Duration::from_secs(30))
        .map_err(setup("pipeline did not stop"))?;
    let mut summary = pipeline_summary(&metrics, &status, generated);
    let report = replay(&config, "kafka", &mut |_, _| {}).map_err(setup("replay failed"))?;
    summary.replayed += report.records_delivered;
    if report.records_delivered > 0 {
        let rest = report.records_delivered;
        let _ = writeln!(out, "replayed the rest by hand: {rest}");
    }
    let _ = writeln!(out, "reading the topic back ...");
    let reading = Instant::now();
    let found = read_back(&bootstrap, generated)?;
    let seconds = reading.elapsed().as_secs_f64();
    let _ = writeln!(
        out,
        "read {} messages back in {seconds:.1} s",
        found.messages
    );
    summary.consumed_distinct = found.distinct;
    summary.duplicates = found.duplicates;
    summary.lost = generated - found.distinct;
    summary.wall_time_ms = started.elapsed().as_millis() as u64;
    write_summary(out, &summary);
    Ok(summary)
}

/// What the pipeline's counters and the status samples say, once it stopped.
fn pipeline_summary(metrics: &PipelineMetrics, status: &Status<'_>, generated: u64) -> DemoSummary {
    let kafka = &metrics.kafka[0].1;
    let breaker_openings = kafka.breaker_openings.get();
    let replayed_automatically = metrics.dlq[0].replayed.get();
    DemoSummary {
        generated,
        delivered_live: metrics.sinks[0].lines_sent.get(),
        stored_in_dlq: metrics.dlq[0].stored_total(),
        replayed_automatically,
        replayed: replayed_automatically,
        duplicates_bound: IN_FLIGHT_LINES_MAX * breaker_openings,
        breaker_openings,
        breaker_closings: breaker_openings - kafka.breaker_state.get(),
        peak_rss_bytes: status.peak_rss_bytes,
        threads_min: status.threads_min,
        threads_max: status.threads_max,
        ..DemoSummary::default()
    }
}

fn write_intro(out: &mut dyn Write, options: &DemoOptions, bootstrap: &str) {
    let outage_from = options.before.as_secs();
    let outage_to = (options.before + options.outage).as_secs();
    let total = (options.before + options.outage + options.after).as_secs();
    let _ = writeln!(out, "demo: {} lines/s for {total} s", options.rate);
    let _ = writeln!(
        out,
        "      every Kafka broker down from {outage_from} s to {outage_to} s"
    );
    let _ = writeln!(out, "      mock Kafka cluster at {bootstrap}");
    let _ = writeln!(
        out,
        "      retrying: batches waiting for a retry; in DLQ: lines on disk"
    );
    let _ = writeln!(out, "{}", Status::header());
}

fn demo_config(
    work: &std::path::Path,
    input: &std::path::Path,
    bootstrap: &str,
) -> Result<Config, DemoError> {
    let text = format!(
        r#"
[daemon]
data_dir = "{data}"
pin_threads = false
shutdown_timeout_ms = 20000

[dispatcher]
batch_size = {BATCH_SIZE}
batches_in_flight = {BATCHES_IN_FLIGHT}
batch_timeout_ms = 50

[retry]
max_batches = 32
base_delay_ms = 200
max_delay_ms = 2000
max_attempts = 4

[dlq]
segment_bytes = 16777216
max_bytes = 4294967296
auto_replay = true
replay_after_ms = 2000
replay_rate = 100000

[sources.demo]
type = "file"
paths = ["{input}"]
labels = {{ service = "demo" }}

[sinks.kafka]
type = "kafka"
brokers = "{bootstrap}"
topic = "{TOPIC}"
encoding = "raw"
probe_interval_ms = 500
"#,
        data = work.join("data").display(),
        input = input.display(),
    );
    Config::from_toml(&text, &PathBuf::from("demo.toml")).map_err(setup("demo config"))
}

/// Writes numbered lines at the rate, runs the outage, prints status lines.
/// Returns the number of lines written.
fn generate(
    cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    input: &std::path::Path,
    options: &DemoOptions,
    status: &mut Status<'_>,
    out: &mut dyn Write,
) -> Result<u64, DemoError> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(input)
        .map_err(setup("cannot open the demo input"))?;
    let total = options.before + options.outage + options.after;
    let started = Instant::now();
    let (mut written, mut down, mut up) = (0u64, false, false);
    let mut buffer = Vec::with_capacity(1 << 20);
    while started.elapsed() < total {
        let elapsed = started.elapsed();
        if !down && elapsed >= options.before {
            cluster.broker_down(1).map_err(setup("broker down"))?;
            down = true;
            let _ = writeln!(out, "--- outage: every broker down ---");
        }
        if !up && elapsed >= options.before + options.outage {
            cluster.broker_up(1).map_err(setup("broker up"))?;
            up = true;
            let _ = writeln!(out, "--- brokers back ---");
        }
        let due = (elapsed.as_secs_f64() * options.rate as f64) as u64;
        if due > written {
            buffer.clear();
            for number in written..due {
                let _ = writeln!(
                    buffer,
                    "seq={number:012} demo line from log-capturer, padded to about 120 bytes .........."
                );
            }
            file.write_all(&buffer)
                .map_err(setup("cannot write the demo input"))?;
            written = due;
        }
        status.print_if_due(out, written, down && !up);
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(written)
}

/// Waits until the pipeline has taken every line, no batch is in flight,
/// and the automatic replay has emptied the DLQ (or [`DRAIN_TIMEOUT`]).
fn drain(metrics: &PipelineMetrics, generated: u64, status: &mut Status<'_>, out: &mut dyn Write) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let busy = || {
        metrics.dispatcher.lines_processed.get() < generated
            || metrics.dispatcher.batches_in_flight.get() > 0
            || metrics.dlq[0].entries.get() > 0
    };
    while busy() && Instant::now() < deadline {
        status.print_if_due(out, generated, false);
        std::thread::sleep(Duration::from_millis(20));
    }
    if busy() {
        let _ = writeln!(out, "--- the DLQ replay is still busy; stopping ---");
    }
}

/// The status line printed each second, and the peaks it records.
struct Status<'a> {
    metrics: &'a PipelineMetrics,
    started: Instant,
    printed_at: Instant,
    sent_at_print: u64,
    peak_rss_bytes: u64,
    threads_min: u64,
    threads_max: u64,
}

impl<'a> Status<'a> {
    fn new(metrics: &'a PipelineMetrics) -> Self {
        Self {
            metrics,
            started: Instant::now(),
            printed_at: Instant::now(),
            sent_at_print: 0,
            peak_rss_bytes: 0,
            threads_min: u64::MAX,
            threads_max: 0,
        }
    }

    /// The column heads; [`Status::line`] keeps to their widths.
    fn header() -> String {
        format!(
            "{:>5} {:>9} {:>8} {:>8} {:>9} {:>9} {:>8} {:>7}",
            "time", "written", "out/s", "retrying", "in DLQ", "replayed", "RSS MiB", "threads"
        )
    }

    fn print_if_due(&mut self, out: &mut dyn Write, written: u64, outage: bool) {
        if self.printed_at.elapsed() < Duration::from_secs(1) {
            return;
        }
        let process = read_process();
        self.peak_rss_bytes = self.peak_rss_bytes.max(process.rss_bytes);
        self.threads_min = self.threads_min.min(process.threads);
        self.threads_max = self.threads_max.max(process.threads);
        let sent = self.metrics.sinks[0].lines_sent.get();
        let out_per_second =
            (sent - self.sent_at_print) as f64 / self.printed_at.elapsed().as_secs_f64();
        let line = Self::line(&StatusValues {
            elapsed_secs: self.started.elapsed().as_secs(),
            written,
            out_per_second,
            retrying: self.metrics.dispatcher.retry_queue_size.get(),
            in_dlq: self.metrics.dlq[0].entries.get(),
            replayed: self.metrics.dlq[0].replayed.get(),
            rss_bytes: process.rss_bytes,
            threads: process.threads,
            outage,
        });
        let _ = writeln!(out, "{line}");
        self.sent_at_print = sent;
        self.printed_at = Instant::now();
    }

    fn line(values: &StatusValues) -> String {
        format!(
            "{:>4}s {:>9} {:>8.0} {:>8} {:>9} {:>9} {:>8.1} {:>7}{}",
            values.elapsed_secs,
            values.written,
            values.out_per_second,
            values.retrying,
            values.in_dlq,
            values.replayed,
            values.rss_bytes as f64 / 1048576.0,
            values.threads,
            if values.outage { "  OUTAGE" } else { "" }
        )
    }
}

/// What one status line shows.
struct StatusValues {
    elapsed_secs: u64,
    written: u64,
    out_per_second: f64,
    retrying: u64,
    in_dlq: u64,
    replayed: u64,
    rss_bytes: u64,
    threads: u64,
    outage: bool,
}

/// The demo consumer's context: librdkafka's log goes through `tracing`.
struct ReadBackContext {
    log: ClientLog,
}

impl ClientContext for ReadBackContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error(&error, reason);
    }
}

impl ConsumerContext for ReadBackContext {}

/// Longest the read-back waits for the next message before it gives up on
/// the rest (the summary then shows lines lost).
const READ_BACK_QUIET_MAX: Duration = Duration::from_secs(10);

/// What reading the topic back found.
#[derive(Debug, Clone, Copy)]
struct ReadBack {
    messages: u64,
    distinct: u64,
    duplicates: u64,
}

/// Reads every message of the topic, up to the high watermarks taken before
/// it starts (the pipeline has stopped, so nothing is added meanwhile).
fn read_back(bootstrap: &str, count: u64) -> Result<ReadBack, DemoError> {
    let consumer: BaseConsumer<ReadBackContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "log-capturer-demo")
        .set("enable.auto.commit", "false")
        .create_with_context(ReadBackContext {
            log: ClientLog::new("demo-read-back"),
        })
        .map_err(setup("cannot create the demo consumer"))?;
    let mut assignment = TopicPartitionList::new();
    let mut messages_expected = 0u64;
    for partition in 0..PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(TOPIC, partition, Duration::from_secs(10))
            .map_err(setup("cannot read the topic's offsets"))?;
        messages_expected += (high - low).max(0) as u64;
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .map_err(setup("assignment"))?;
    }
    consumer.assign(&assignment).map_err(setup("assign"))?;
    let mut seen = vec![false; count as usize];
    let mut found = ReadBack {
        messages: 0,
        distinct: 0,
        duplicates: 0,
    };
    let mut last_message = Instant::now();
    while found.messages < messages_expected && last_message.elapsed() < READ_BACK_QUIET_MAX {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        last_message = Instant::now();
        found.messages += 1;
        let number = message
            .payload()
            .and_then(|payload| payload.get(4..16))
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse::<usize>().ok());
        match number.and_then(|number| seen.get_mut(number)) {
            Some(seen) if *seen => found.duplicates += 1,
            Some(seen) => {
                *seen = true;
                found.distinct += 1;
            }
            None => {}
        }
    }
    Ok(found)
}

fn write_summary(out: &mut dyn Write, summary: &DemoSummary) {
    let row = |out: &mut dyn Write, label: &str, value: &dyn std::fmt::Display| {
        let _ = writeln!(out, "  {label:<22}{value}");
    };
    let _ = writeln!(out, "\nsummary");
    row(out, "generated:", &summary.generated);
    row(out, "delivered live:", &summary.delivered_live);
    row(out, "stored in the DLQ:", &summary.stored_in_dlq);
    row(
        out,
        "replayed from DLQ:",
        &format_args!(
            "{} ({} automatically)",
            summary.replayed, summary.replayed_automatically
        ),
    );
    row(out, "read back (distinct):", &summary.consumed_distinct);
    row(
        out,
        "duplicates:",
        &format_args!(
            "{} (at most {}: lines in flight when the",
            summary.duplicates, summary.duplicates_bound
        ),
    );
    row(out, "", &"brokers went down, re-sent by design)");
    row(out, "lost:", &summary.lost);
    row(out, "breaker openings:", &summary.breaker_openings);
    row(out, "breaker closings:", &summary.breaker_closings);
    row(
        out,
        "peak RSS:",
        &format_args!("{:.1} MiB", summary.peak_rss_bytes as f64 / 1048576.0),
    );
    row(
        out,
        "threads:",
        &format_args!("{} to {}", summary.threads_min, summary.threads_max),
    );
    row(
        out,
        "wall time:",
        &format_args!("{:.1} s", summary.wall_time_ms as f64 / 1000.0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a status line fits 80 columns whatever the values. Method: the
    /// widest values a demo can reach (1M lines/s for 999 s, a full DLQ).
    #[test]
    fn status_lines_fit_80_columns() {
        let widest = StatusValues {
            elapsed_secs: 9_999,
            written: 999_999_999,
            out_per_second: 9_999_999.0,
            retrying: 99_999,
            in_dlq: 999_999_999,
            replayed: 999_999_999,
            rss_bytes: 99_999 * 1048576,
            threads: 999,
            outage: true,
        };
        assert!(Status::header().len() <= 80, "{}", Status::header());
        let line = Status::line(&widest);
        assert!(line.len() <= 80, "{} columns: {line}", line.len());
    }
}
