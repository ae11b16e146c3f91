//! `log-capturer demo`: the whole pipeline on an embedded default, with no
//! setup. librdkafka's mock cluster runs in process; numbered lines are
//! written to a temporary file at a steady rate; every broker goes down in
//! the middle of the run and comes back; a status line is printed each
//! second. At the end the DLQ is replayed into the topic, the topic is read
//! back, and a summary says how many lines were generated, delivered live,
//! stored in the DLQ, replayed, and lost (which must be 0).
//!
//! The mock cluster is not `Send`: the demo drives it from the calling
//! thread, which is also the thread that writes the lines.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::Config;
use crate::dlq::replay::replay;
use crate::pipeline::Pipeline;
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
    /// Time after the outage.
    pub after: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            rate: 50_000,
            before: Duration::from_secs(15),
            outage: Duration::from_secs(20),
            after: Duration::from_secs(15),
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
    pub replayed: u64,
    /// Distinct numbers read back from the topic.
    pub consumed_distinct: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub peak_rss_bytes: u64,
    pub threads_min: u64,
    pub threads_max: u64,
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

/// Runs the demo, printing status lines and the summary to `out`.
pub fn run_demo(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoSummary, DemoError> {
    let work = std::env::temp_dir().join(format!("log-capturer-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(setup("cannot create the demo directory"))?;
    let result = run_in(&work, options, out);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run_in(
    work: &std::path::Path,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<DemoSummary, DemoError> {
    let cluster = MockCluster::new(1).map_err(setup("cannot start the mock Kafka cluster"))?;
    cluster
        .create_topic(TOPIC, PARTITIONS, 1)
        .map_err(setup("cannot create the demo topic"))?;
    let bootstrap = cluster.bootstrap_servers();
    let input = work.join("demo.log");
    std::fs::write(&input, "").map_err(setup("cannot create the demo input"))?;
    let config = demo_config(work, &input, &bootstrap)?;
    let _ = writeln!(
        out,
        "demo: {} lines/s for {} s, every Kafka broker down from {} s to {} s; mock cluster at {bootstrap}",
        options.rate,
        (options.before + options.outage + options.after).as_secs(),
        options.before.as_secs(),
        (options.before + options.outage).as_secs()
    );
    let pipeline = Pipeline::start(&config).map_err(setup("cannot start the pipeline"))?;
    let mut summary = DemoSummary {
        threads_min: u64::MAX,
        ..DemoSummary::default()
    };
    summary.generated = generate(&cluster, &pipeline, &input, options, &mut summary, out)?;
    let metrics = pipeline.metrics().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (metrics.dispatcher.lines_processed.get() < summary.generated
        || metrics.dispatcher.batches_in_flight.get() > 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    pipeline.request_stop();
    pipeline
        .join(Duration::from_secs(30))
        .map_err(setup("pipeline did not stop"))?;
    summary.delivered_live = metrics.sinks[0].lines_sent.get();
    let dlq = &metrics.dlq[0];
    summary.stored_in_dlq = dlq.stored_total();
    let replayed_automatically = dlq.replayed.get();
    let _ = writeln!(
        out,
        "{replayed_automatically} of {} DLQ entries were replayed automatically; replaying the rest ...",
        summary.stored_in_dlq
    );
    let report = replay(&config, "kafka", &mut |_, _| {}).map_err(setup("replay failed"))?;
    summary.replayed = replayed_automatically + report.records_delivered;
    let _ = writeln!(out, "reading the topic back ...");
    let (distinct, duplicates) = consume_numbers(&bootstrap, summary.generated)?;
    summary.consumed_distinct = distinct;
    summary.duplicates = duplicates;
    summary.lost = summary.generated - distinct;
    write_summary(out, &summary);
    Ok(summary)
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
batch_size = 1000
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
replay_rate = 50000

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
fn generate(
    cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    pipeline: &Pipeline,
    input: &std::path::Path,
    options: &DemoOptions,
    summary: &mut DemoSummary,
    out: &mut dyn Write,
) -> Result<u64, DemoError> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(input)
        .map_err(setup("cannot open the demo input"))?;
    let metrics = pipeline.metrics().clone();
    let total = options.before + options.outage + options.after;
    let started = Instant::now();
    let (mut written, mut down, mut up) = (0u64, false, false);
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut status_at = Instant::now();
    let mut sent_at_status = 0;
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
        if status_at.elapsed() >= Duration::from_secs(1) {
            let process = read_process();
            summary.peak_rss_bytes = summary.peak_rss_bytes.max(process.rss_bytes);
            summary.threads_min = summary.threads_min.min(process.threads);
            summary.threads_max = summary.threads_max.max(process.threads);
            let sent = metrics.sinks[0].lines_sent.get();
            let seconds = status_at.elapsed().as_secs_f64();
            let dlq_bytes: u64 = metrics.dlq.iter().map(|dlq| dlq.size_bytes.get()).sum();
            let _ = writeln!(
                out,
                "t={:>3}s  written {:>9}  out {:>7.0} lines/s  retry queue {:>3}  DLQ {:>8} entries {:>6.1} MiB  replayed {:>8}  RSS {:>6.1} MiB  threads {:>3}{}",
                elapsed.as_secs(),
                written,
                (sent - sent_at_status) as f64 / seconds,
                metrics.dispatcher.retry_queue_size.get(),
                metrics.dlq[0].entries.get(),
                dlq_bytes as f64 / 1048576.0,
                metrics.dlq[0].replayed.get(),
                process.rss_bytes as f64 / 1048576.0,
                process.threads,
                if down && !up { "  [OUTAGE]" } else { "" }
            );
            sent_at_status = sent;
            status_at = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(written)
}

/// Reads the topic; returns (distinct numbers, duplicate messages).
fn consume_numbers(bootstrap: &str, count: u64) -> Result<(u64, u64), DemoError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "log-capturer-demo")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(setup("cannot create the demo consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, partition, Offset::Beginning)
            .map_err(setup("assignment"))?;
    }
    consumer.assign(&assignment).map_err(setup("assign"))?;
    let mut seen = vec![false; count as usize];
    let (mut distinct, mut duplicates) = (0u64, 0u64);
    let mut last_message = Instant::now();
    while last_message.elapsed() < Duration::from_secs(3) && distinct < count {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let Ok(message) = message else {
            continue;
        };
        last_message = Instant::now();
        let payload = message.payload().unwrap_or_default();
        let Some(number) = payload
            .get(4..16)
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| digits.parse::<usize>().ok())
        else {
            continue;
        };
        match seen.get_mut(number) {
            Some(seen) if *seen => duplicates += 1,
            Some(seen) => {
                *seen = true;
                distinct += 1;
            }
            None => {}
        }
    }
    Ok((distinct, duplicates))
}

fn write_summary(out: &mut dyn Write, summary: &DemoSummary) {
    let _ = writeln!(out, "\nsummary");
    let _ = writeln!(out, "  generated:           {}", summary.generated);
    let _ = writeln!(out, "  delivered live:      {}", summary.delivered_live);
    let _ = writeln!(out, "  stored in the DLQ:   {}", summary.stored_in_dlq);
    let _ = writeln!(out, "  replayed from DLQ:   {}", summary.replayed);
    let _ = writeln!(out, "  read back (distinct): {}", summary.consumed_distinct);
    let _ = writeln!(
        out,
        "  duplicates:          {} (at-least-once)",
        summary.duplicates
    );
    let _ = writeln!(out, "  lost:                {}", summary.lost);
    let _ = writeln!(
        out,
        "  peak RSS:            {:.1} MiB",
        summary.peak_rss_bytes as f64 / 1048576.0
    );
    let _ = writeln!(
        out,
        "  threads:             {} to {}",
        summary.threads_min, summary.threads_max
    );
}
