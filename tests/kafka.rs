//! Kafka sink tests against librdkafka's mock cluster (the real Kafka
//! protocol on loopback), and against a `kafka-mock` process read by kcat.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::num::NonZeroU64;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bumpalo::Bump;
use log_capturer::batch::{OpenBatch, SourceIndex};
use log_capturer::config::{Config, Encoding, KafkaSinkConfig, PropertyValue};
use log_capturer::labels::SymbolTableBuilder;
use log_capturer::metrics::SinkMetrics;
use log_capturer::pipeline::Pipeline;
use log_capturer::sink::kafka::KafkaSink;
use log_capturer::sink::kafka::config::client_config;
use log_capturer::sink::kafka::sink::KafkaSinkOptions;
use log_capturer::sink::link::{
    self, FailureTable, LaneEnd, Outcome, SinkJob, SinkLinks, SlotPlan, SourceSet,
};
use log_capturer::wake::Waker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// One consumed message: key and payload.
type Record = (Option<Vec<u8>>, Vec<u8>);

/// Reads a topic from the beginning of every partition until `expected`
/// messages arrived, then half a second more to catch duplicates.
fn consume(bootstrap: &str, topic: &str, expected: usize, timeout: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "log-capturer-tests")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} has partitions");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::with_capacity(expected);
    let deadline = Instant::now() + timeout;
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|until| Instant::now() < until) {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            records.push((
                message.key().map(<[u8]>::to_vec),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
        if records.len() >= expected && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_millis(500));
        }
    }
    records
}

/// The sequence number in a generated line (`seq=000000000042 ...`).
fn sequence_of(text: &[u8]) -> usize {
    let at = text
        .windows(4)
        .position(|window| window == b"seq=")
        .expect("a numbered line");
    std::str::from_utf8(&text[at + 4..at + 16])
        .expect("digits")
        .parse()
        .expect("number")
}

/// Asserts that every number in `0..count` was seen exactly once.
fn assert_each_number_once(records: &[Record], count: usize) {
    let mut seen = vec![0u8; count];
    for (_, payload) in records {
        let number = sequence_of(payload);
        assert!(number < count, "unexpected number {number}");
        seen[number] = seen[number].saturating_add(1);
    }
    let missing = seen.iter().filter(|&&times| times == 0).count();
    let duplicated = seen.iter().filter(|&&times| times > 1).count();
    assert_eq!(
        (missing, duplicated),
        (0, 0),
        "missing and duplicated numbers of {count}"
    );
    assert_eq!(records.len(), count);
}

fn run_pipeline_to_end(text: &str) -> Pipeline {
    let config =
        Config::from_toml(text, std::path::Path::new("kafka-test.toml")).expect("valid config");
    let pipeline = Pipeline::start(&config).expect("pipeline starts");
    let deadline = Instant::now() + Duration::from_secs(240);
    while !pipeline.is_finished() {
        assert!(Instant::now() < deadline, "pipeline did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    pipeline
}

/// Goal: a million numbered lines reach Kafka once each, with content and
/// labels intact (JSON). Method: file source with `exit_on_eof` into a
/// 64-partition topic (the mock broker keeps 5 MiB per partition), then
/// consume everything back.
#[test]
fn million_lines_json_arrive_once_each_with_labels() {
    const LINES: usize = 1_000_000;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("logs", 64, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
    common::write_numbered_lines(&mut file, 0, LINES as u64);
    drop(file);
    let text = common::file_source_config(
        &input,
        "exit_on_eof = true",
        &common::kafka_sink_table(&bootstrap, "logs", "encoding = \"json\""),
    );
    let pipeline = run_pipeline_to_end(&text);
    let sent = pipeline.metrics().sinks[0].lines_sent.get();
    pipeline.join(Duration::from_secs(10)).expect("clean stop");
    assert_eq!(sent, LINES as u64);

    let records = consume(&bootstrap, "logs", LINES, Duration::from_secs(180));
    assert_each_number_once(&records, LINES);
    for (_, payload) in records.iter().step_by(9973) {
        let value: serde_json::Value = serde_json::from_slice(payload).expect("JSON message");
        assert_eq!(value["labels"]["service"], "app");
        assert_eq!(value["labels"]["source_id"], "app");
        assert_eq!(value["labels"]["file"], input.display().to_string());
        let message = value["message"].as_str().expect("message");
        assert_eq!(
            message.len(),
            common::NUMBERED_LINE_BYTES,
            "line without newline: {message}"
        );
        assert!(
            value["timestamp"]
                .as_str()
                .expect("timestamp")
                .ends_with('Z')
        );
    }
}

/// Goal: `raw` messages are the lines as read, and `key` takes a label's
/// value. Method: three files, key = "file"; every message's key must be the
/// path of the file its line came from.
#[test]
fn raw_encoding_and_keys_from_a_label() {
    const LINES_PER_FILE: u64 = 20_000;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("raw", 8, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    for index in 0..3u64 {
        let path = dir.path().join(format!("part{index}.log"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        common::write_numbered_lines(&mut file, index * LINES_PER_FILE, LINES_PER_FILE);
    }
    let pattern = dir.path().join("part*.log");
    let sinks = common::kafka_sink_table(&bootstrap, "raw", "encoding = \"raw\"\nkey = \"file\"");
    let text = common::file_source_config(&pattern, "exit_on_eof = true", &sinks);
    let pipeline = run_pipeline_to_end(&text);
    pipeline.join(Duration::from_secs(10)).expect("clean stop");

    let total = (3 * LINES_PER_FILE) as usize;
    let records = consume(&bootstrap, "raw", total, Duration::from_secs(60));
    assert_each_number_once(&records, total);
    for (key, payload) in &records {
        let number = sequence_of(payload) as u64;
        let expected_key = dir
            .path()
            .join(format!("part{}.log", number / LINES_PER_FILE));
        assert_eq!(
            key.as_deref(),
            Some(expected_key.to_string_lossy().as_bytes())
        );
        assert!(
            payload.starts_with(b"seq=") && payload.len() == common::NUMBERED_LINE_BYTES,
            "raw line: {}",
            String::from_utf8_lossy(payload)
        );
    }
}

/// A Kafka sink on its own thread, fed hand-made batches.
struct SinkHarness {
    lane: Option<LaneEnd>,
    failures: Arc<FailureTable>,
    kafka: Arc<log_capturer::sink::kafka::KafkaMetrics>,
    thread: Option<std::thread::JoinHandle<()>>,
    sequence: u64,
}

const HARNESS_BATCH: usize = 100;
const HARNESS_SLOTS: usize = 4;

impl SinkHarness {
    fn start(bootstrap: &str, topic: &str, properties: &[(&str, &str)]) -> Self {
        Self::start_with_inputs(bootstrap, topic, properties, SourceSet::all())
    }

    /// A sink that takes only the entries of `inputs` from its batches.
    fn start_with_inputs(
        bootstrap: &str,
        topic: &str,
        properties: &[(&str, &str)],
        inputs: SourceSet,
    ) -> Self {
        let config = KafkaSinkConfig {
            brokers: bootstrap.to_string(),
            topic: topic.to_string(),
            key: None,
            encoding: Encoding::Raw,
            librdkafka: properties
                .iter()
                .map(|(key, value)| (key.to_string(), PropertyValue::Text(value.to_string())))
                .collect::<BTreeMap<_, _>>(),
            probe_interval_ms: NonZeroU64::new(200).expect("not zero"),
        };
        let client =
            client_config(&config, HARNESS_BATCH * HARNESS_SLOTS).expect("valid properties");
        let failures = Arc::new(FailureTable::new(HARNESS_SLOTS, HARNESS_BATCH));
        let options = KafkaSinkOptions {
            id: "kafka".to_string(),
            topic: topic.to_string(),
            key_label: None,
            encoding: Encoding::Raw,
            probe_interval: Duration::from_millis(200),
            slots: SlotPlan {
                live_slots: HARNESS_SLOTS,
                replay_slots: 0,
            },
            batch_size: HARNESS_BATCH,
            payload_bytes_max: log_capturer::sink::kafka::config::message_payload_bytes_max(
                &config,
            ),
        };
        let symbols = SymbolTableBuilder::new().freeze();
        let sink =
            KafkaSink::new(options, &client, symbols, Arc::clone(&failures)).expect("producer");
        let kafka = sink.metrics();
        let sink_waker = Waker::new();
        let (lane_end, lane) = link::lane(0..HARNESS_SLOTS, Waker::new(), sink_waker.clone());
        let links = SinkLinks::new(
            lane,
            None,
            sink_waker,
            Arc::clone(&failures),
            inputs,
            Default::default(),
        );
        let thread = std::thread::spawn(move || sink.run(links, Arc::new(SinkMetrics::default())));
        Self {
            lane: Some(lane_end),
            failures,
            kafka,
            thread: Some(thread),
            sequence: 0,
        }
    }

    /// Sends one batch of `HARNESS_BATCH` numbered lines in `slot` and
    /// waits for its report.
    fn round_trip(&mut self, slot: usize, timeout: Duration) -> Outcome {
        self.round_trip_from(slot, timeout, |_| 0)
    }

    /// As `round_trip`, the entry at `index` read by source
    /// `source_of(index)`.
    fn round_trip_from(
        &mut self,
        slot: usize,
        timeout: Duration,
        source_of: impl Fn(usize) -> SourceIndex,
    ) -> Outcome {
        let labels = log_capturer::labels::LabelSet::new();
        let mut batch = OpenBatch::new(
            Bump::new(),
            HARNESS_BATCH,
            SymbolTableBuilder::new().freeze(),
        );
        for index in 0..HARNESS_BATCH {
            let line = format!(
                "seq={:012} harness",
                self.sequence * HARNESS_BATCH as u64 + index as u64
            );
            batch.push(line.as_bytes(), &labels, source_of(index), 0, true);
        }
        self.sequence += 1;
        let lane = self.lane.as_mut().expect("running");
        lane.send(SinkJob {
            batch: Arc::new(batch.seal(slot, self.sequence)),
            retry: false,
        });
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(report) = lane.reports.pop() {
                assert_eq!(report.batch.slot(), slot);
                return report.outcome;
            }
            assert!(Instant::now() < deadline, "no report within {timeout:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn failed_entries(&self, slot: usize) -> Vec<usize> {
        self.failures.failed_entries(slot).collect()
    }
}

impl Drop for SinkHarness {
    fn drop(&mut self) {
        let lane = self.lane.take().expect("running");
        let sink = lane.sink.clone();
        drop(lane);
        sink.wake();
        if let Some(thread) = self.thread.take() {
            thread.join().expect("sink thread");
        }
    }
}

/// Goal: with every broker down the breaker opens within a second, batches
/// fail as retryable with all their entries marked and without waiting for
/// librdkafka's timeouts; once the broker is back the breaker closes and
/// batches are delivered again. Method: a sink fed hand-made batches; the
/// mock cluster's broker goes down and up.
#[test]
fn breaker_opens_on_outage_and_closes_on_recovery() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("outage", 4, 1).expect("topic");
    let mut harness = SinkHarness::start(
        &cluster.bootstrap_servers(),
        "outage",
        &[("message.timeout.ms", "5000")],
    );
    assert_eq!(
        harness.round_trip(0, Duration::from_secs(10)),
        Outcome::Delivered
    );

    cluster.broker_down(1).expect("broker down");
    let down_at = Instant::now();
    let mut slot = 1;
    while harness.kafka.breaker_state.get() == 0 {
        assert!(
            down_at.elapsed() < Duration::from_secs(1),
            "breaker still closed after {:?}",
            down_at.elapsed()
        );
        // Traffic makes librdkafka notice the dead connection.
        let _ = harness.round_trip(slot, Duration::from_secs(10));
        slot = (slot + 1) % HARNESS_SLOTS;
    }
    let opened_after = down_at.elapsed();
    let started = Instant::now();
    let outcome = harness.round_trip(slot, Duration::from_secs(2));
    assert_eq!(
        outcome,
        Outcome::Failed {
            retryable: true,
            entries_failed: HARNESS_BATCH as u32
        }
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "an open breaker fails at once"
    );
    assert_eq!(
        harness.failed_entries(slot),
        (0..HARNESS_BATCH).collect::<Vec<_>>()
    );
    assert!(opened_after < Duration::from_secs(1));

    cluster.broker_up(1).expect("broker up");
    let up_at = Instant::now();
    while harness.kafka.breaker_state.get() != 0 {
        assert!(
            up_at.elapsed() < Duration::from_secs(15),
            "breaker still open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first batches after the probe answered may still meet a stale
    // connection error and reopen the breaker; within seconds batches must
    // be delivered again.
    let mut delivered = false;
    while !delivered {
        assert!(
            up_at.elapsed() < Duration::from_secs(20),
            "no delivery after recovery"
        );
        slot = (slot + 1) % HARNESS_SLOTS;
        delivered = harness.round_trip(slot, Duration::from_secs(10)) == Outcome::Delivered;
        if !delivered {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(harness.kafka.breaker_openings.get() >= 1);
}

/// Goal: produce errors are reported with the right retryable flag and the
/// right entries. Method: the mock cluster answers Produce requests with an
/// injected error; librdkafka's own retries are off so that the error
/// reaches the sink.
#[test]
fn injected_produce_errors_carry_the_right_retryable_flag() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("errors", 1, 1).expect("topic");
    let mut harness = SinkHarness::start(
        &cluster.bootstrap_servers(),
        "errors",
        &[("message.send.max.retries", "0"), ("linger.ms", "50")],
    );
    assert_eq!(
        harness.round_trip(0, Duration::from_secs(10)),
        Outcome::Delivered
    );

    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 50],
    );
    let outcome = harness.round_trip(1, Duration::from_secs(10));
    assert!(
        matches!(outcome, Outcome::Failed { retryable: true, entries_failed } if entries_failed > 0),
        "{outcome:?}"
    );
    let Outcome::Failed { entries_failed, .. } = outcome else {
        unreachable!()
    };
    assert_eq!(harness.failed_entries(1).len(), entries_failed as usize);
    assert!(
        harness
            .failed_entries(1)
            .iter()
            .all(|&entry| !harness.failures.is_permanent(1, entry))
    );
    cluster.clear_request_errors(RDKafkaApiKey::Produce);

    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 50],
    );
    let outcome = harness.round_trip(2, Duration::from_secs(10));
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(
        harness
            .failed_entries(2)
            .iter()
            .all(|&entry| harness.failures.is_permanent(2, entry))
    );
    cluster.clear_request_errors(RDKafkaApiKey::Produce);

    assert_eq!(
        harness.round_trip(3, Duration::from_secs(10)),
        Outcome::Delivered
    );
    assert_eq!(
        harness.kafka.breaker_state.get(),
        0,
        "produce errors are not transport errors"
    );
}

/// Goal: a Kafka sink with `inputs` produces only the entries of its
/// sources and counts only those; a batch with none of them is reported
/// delivered at once; with the breaker open only its entries are failed
/// and marked. Method: a sink that takes source 1, fed a batch whose
/// entries alternate between sources 0 and 1, then a batch of source 0
/// only; the topic is read back. Then the broker goes down, and the marks
/// of a failed alternating batch are checked.
#[test]
fn sink_with_inputs_produces_only_their_entries() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("routed", 4, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let mut harness = SinkHarness::start_with_inputs(
        &bootstrap,
        "routed",
        &[("message.timeout.ms", "5000")],
        SourceSet::of([1]),
    );
    let alternate = |index: usize| (index % 2) as SourceIndex;
    let taken: Vec<usize> = (1..HARNESS_BATCH).step_by(2).collect();
    assert_eq!(
        harness.round_trip_from(0, Duration::from_secs(10), alternate),
        Outcome::Delivered
    );
    let started = Instant::now();
    assert_eq!(
        harness.round_trip_from(1, Duration::from_secs(10), |_| 0),
        Outcome::Delivered
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a batch with nothing taken is reported at once"
    );
    let records = consume(&bootstrap, "routed", taken.len(), Duration::from_secs(30));
    let mut numbers: Vec<usize> = records
        .iter()
        .map(|(_, payload)| sequence_of(payload))
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, taken, "only the entries of source 1, once each");
    assert_eq!(harness.kafka.messages_delivered.get(), taken.len() as u64);

    cluster.broker_down(1).expect("broker down");
    let down_at = Instant::now();
    let mut slot = 2;
    while harness.kafka.breaker_state.get() == 0 {
        assert!(
            down_at.elapsed() < Duration::from_secs(10),
            "breaker still closed"
        );
        let _ = harness.round_trip_from(slot, Duration::from_secs(10), alternate);
        slot = (slot + 1) % HARNESS_SLOTS;
    }
    let outcome = harness.round_trip_from(slot, Duration::from_secs(2), alternate);
    assert_eq!(
        outcome,
        Outcome::Failed {
            retryable: true,
            entries_failed: taken.len() as u32
        }
    );
    assert_eq!(
        harness.failed_entries(slot),
        taken,
        "skipped entries are never marked"
    );
    cluster.broker_up(1).expect("broker up");
}

/// Goal: added round-trip latency slows delivery but loses nothing.
/// Method: 300 ms broker round trip; 20 batches; all delivered.
#[test]
fn round_trip_latency_does_not_lose_messages() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("slow", 2, 1).expect("topic");
    cluster
        .broker_round_trip_time(1, Duration::from_millis(300))
        .expect("rtt");
    let mut harness = SinkHarness::start(&cluster.bootstrap_servers(), "slow", &[]);
    for round in 0..20 {
        assert_eq!(
            harness.round_trip(round % HARNESS_SLOTS, Duration::from_secs(20)),
            Outcome::Delivered
        );
    }
    drop(harness);
    let records = consume(
        &cluster.bootstrap_servers(),
        "slow",
        20 * HARNESS_BATCH,
        Duration::from_secs(60),
    );
    assert_each_number_once(&records, 20 * HARNESS_BATCH);
}

/// Goal: interop with a real Kafka client. Method: the daemon ships 10,000
/// lines to a `kafka-mock` process; `kcat -C` reads the topic back.
#[test]
fn kcat_reads_what_the_daemon_shipped_to_kafka_mock() {
    const LINES: usize = 10_000;
    let mut mock = Command::new(common::binary())
        .args(["kafka-mock", "--topic", "interop:4"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start kafka-mock");
    let mut first_line = String::new();
    BufReader::new(mock.stdout.as_mut().expect("stdout"))
        .read_line(&mut first_line)
        .expect("bootstrap line");
    let bootstrap = first_line
        .trim()
        .strip_prefix("bootstrap: ")
        .expect("first line is `bootstrap: ADDR`")
        .to_string();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");

    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut file = std::fs::File::create(&input).expect("create");
    common::write_numbered_lines(&mut file, 0, LINES as u64);
    let config = common::write_file(
        dir.path(),
        "config.toml",
        &common::file_source_config(
            &input,
            "exit_on_eof = true",
            &common::kafka_sink_table(&bootstrap, "interop", "encoding = \"raw\""),
        ),
    );
    let mut daemon = common::spawn_run(&config);
    assert!(common::wait_with_timeout(&mut daemon, Duration::from_secs(60)).success());

    let output = Command::new("kcat")
        .args([
            "-C",
            "-b",
            &bootstrap,
            "-t",
            "interop",
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .output()
        .expect("kcat is installed (apt package kcat)");
    common::send_signal(&mock, libc::SIGTERM);
    assert!(common::wait_with_timeout(&mut mock, Duration::from_secs(10)).success());
    assert!(
        output.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records: Vec<Record> = output
        .stdout
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| (None, line.to_vec()))
        .collect();
    assert_each_number_once(&records, LINES);
}

/// Goal: bad Kafka settings are clear errors, never panics. Method: an
/// unknown librdkafka property and an empty topic fail `check-config`
/// naming the key; an unreachable bootstrap host starts, opens the breaker,
/// and stops cleanly on SIGTERM.
#[test]
fn bad_kafka_config_gives_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(dir.path(), "input.log", "one\ntwo\n");
    let cases = [
        (
            common::kafka_sink_table(
                "127.0.0.1:9",
                "logs",
                "librdkafka = { \"no.such.property\" = \"1\" }",
            ),
            "no.such.property",
        ),
        (common::kafka_sink_table("127.0.0.1:9", "", ""), "topic"),
        (
            common::kafka_sink_table(
                "127.0.0.1:9",
                "logs",
                "librdkafka = { \"bootstrap.servers\" = \"x:1\" }",
            ),
            "brokers",
        ),
        (common::kafka_sink_table("", "logs", ""), "brokers"),
    ];
    for (sinks, named) in cases {
        let config = common::write_file(
            dir.path(),
            "bad.toml",
            &common::file_source_config(&input, "", &sinks),
        );
        let output = Command::new(common::binary())
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{sinks}: {stderr}");
        assert!(stderr.contains(named), "{sinks}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    let sinks = common::kafka_sink_table(
        "no-such-host.invalid:9092",
        "logs",
        "probe_interval_ms = 200",
    );
    let config = common::write_file(
        dir.path(),
        "unreachable.toml",
        &common::file_source_config(&input, "", &sinks),
    );
    // The breaker may open before the `started` line: those lines count.
    let (daemon, mut seen) = common::start_daemon_with_log(&config);
    // Name resolution of the unreachable host is the machine's resolver's
    // pace; a loaded machine takes longer.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen
        .iter()
        .any(|line: &String| line.contains("circuit breaker open"))
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match daemon.stderr.recv_timeout(remaining) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("no breaker message; stderr so far: {seen:#?}"),
        }
    }
    let (status, health) = daemon.get("/health");
    assert_eq!(status, 503, "{health}");
    assert!(health.contains("Kafka circuit breaker is open"), "{health}");
    let rest: Vec<String> = daemon.stderr.try_iter().collect();
    assert!(
        !seen
            .iter()
            .chain(&rest)
            .any(|line| line.contains("panicked")),
        "{seen:#?} {rest:#?}"
    );
    daemon.stop();
}
