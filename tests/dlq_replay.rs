//! Replay of the dead-letter queue against librdkafka's mock cluster: a
//! record that can never be delivered is moved aside, and records already
//! acknowledged are never sent again. This file is its own test binary; its
//! tests run one at a time (a lock), as each starts its own mock cluster.

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log_capturer::config::Config;
use log_capturer::dlq::record::{Reason, Record};
use log_capturer::dlq::{DlqSettings, DlqWriter};
use log_capturer::pipeline::Pipeline;
use log_capturer::pipeline::replay::replay;
use rdkafka::Message;
use rdkafka::mocking::MockCluster;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What a topic holds: how often each `seq=N` number was seen, and the
/// sizes of the messages that carry no number.
struct TopicContents {
    seen: Vec<u32>,
    other_sizes: Vec<usize>,
}

impl TopicContents {
    fn missing(&self) -> usize {
        self.seen.iter().filter(|&&times| times == 0).count()
    }

    fn duplicates(&self) -> u32 {
        self.seen.iter().map(|&times| times.saturating_sub(1)).sum()
    }
}

/// Reads every partition of `topic` from the start until no message came
/// for `quiet` (or `timeout` passed).
fn consume(bootstrap: &str, topic: &str, count: usize, quiet: Duration) -> TopicContents {
    let consumer = common::topic_consumer(bootstrap, topic, "dlq-replay");
    let mut contents = TopicContents {
        seen: vec![0; count],
        other_sizes: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_message = Instant::now();
    while Instant::now() < deadline && last_message.elapsed() < quiet {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        last_message = Instant::now();
        let payload = message.payload().unwrap_or_default();
        match payload.strip_prefix(b"seq=") {
            Some(rest) => {
                let number: usize = std::str::from_utf8(&rest[..12])
                    .expect("digits")
                    .parse()
                    .expect("number");
                contents.seen[number] += 1;
            }
            None => contents.other_sizes.push(payload.len()),
        }
    }
    contents
}

fn kafka_config(dir: &std::path::Path, input: &std::path::Path, bootstrap: &str) -> Config {
    let text = format!(
        r#"
[daemon]
pin_threads = false
data_dir = "{data}"
shutdown_timeout_ms = 10000

[dispatcher]
batch_size = 500
batch_timeout_ms = 20

[retry]
max_batches = 8
base_delay_ms = 100
max_delay_ms = 200
max_attempts = 3

[dlq]
segment_bytes = 4194304
auto_replay = true
replay_after_ms = 500
replay_rate = 50000

[sources.app]
type = "file"
paths = ["{input}"]

[sinks.kafka]
type = "kafka"
brokers = "{bootstrap}"
topic = "replay"
encoding = "raw"
probe_interval_ms = 200
"#,
        data = dir.join("data").display(),
        input = input.display(),
    );
    Config::from_toml(&text, std::path::Path::new("replay.toml")).expect("valid config")
}

/// Bytes of the line longer than librdkafka's default `message.max.bytes`
/// (1,000,000) and shorter than the default `max_line_bytes` (1 MiB).
const BIG_LINE_BYTES: usize = 1_000_100;

/// Goal: a line too large for Kafka, written during an outage, does not
/// make automatic replay loop and flood the topic with duplicates.
/// Method: 4,000 numbered lines and one line of 1,000,100 bytes are
/// written while the only broker is down, so everything ends in the DLQ (or
/// is refused at the sink); the broker comes back; within 60 s the DLQ must
/// be drained; the topic must then hold each of the 4,000 lines exactly
/// once and nothing else, the big line must be in `rejected/` and dumpable,
/// and over the next 3 s nothing more may be produced or replayed.
#[test]
fn too_large_line_is_rejected_and_replay_does_not_loop() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    const LINES: u64 = 4000;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("replay", 4, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("input");
    let config = kafka_config(dir.path(), &input, &bootstrap);
    let pipeline = Pipeline::start(&config).expect("start");
    let dispatcher = Arc::clone(&pipeline.metrics().dispatcher);
    let dlq = Arc::clone(&pipeline.metrics().dlq[0]);
    let (_, kafka) = pipeline.metrics().kafka[0].clone();
    let sink = Arc::clone(&pipeline.metrics().sinks[0]);

    cluster.broker_down(1).expect("down");
    let mut text = Vec::new();
    common::write_numbered_lines(&mut text, 0, LINES / 2);
    text.extend_from_slice(b"big=");
    text.resize(text.len() + BIG_LINE_BYTES - 4, b'b');
    text.push(b'\n');
    common::write_numbered_lines(&mut text, LINES / 2, LINES / 2);
    std::fs::write(&input, &text).expect("write input");
    common::wait_until("every line batched", Duration::from_secs(30), || {
        dispatcher.lines_processed.get() == LINES + 1
    });
    common::wait_until("every batch settled", Duration::from_secs(30), || {
        dispatcher.batches_in_flight.get() == 0
    });
    assert_eq!(
        kafka.messages_delivered.get(),
        0,
        "nothing delivered while down"
    );

    cluster.broker_up(1).expect("up");
    common::wait_until("the DLQ drained", Duration::from_secs(60), || {
        dlq.entries.get() == 0 && dlq.replayed.get() >= LINES
    });
    let delivered = kafka.messages_delivered.get();
    let replayed = dlq.replayed.get();
    let replay_failed = dlq.replay_failed.get();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        (
            kafka.messages_delivered.get(),
            dlq.replayed.get(),
            dlq.replay_failed.get()
        ),
        (delivered, replayed, replay_failed),
        "replay stopped once the DLQ was drained"
    );
    pipeline.request_stop();
    pipeline.join(Duration::from_secs(15)).expect("clean stop");

    let contents = consume(&bootstrap, "replay", LINES as usize, Duration::from_secs(2));
    println!(
        "stored {}, replayed {replayed}, replay failures {replay_failed}, duplicates {}",
        dlq.stored_total(),
        contents.duplicates()
    );
    assert_eq!(contents.missing(), 0, "every line delivered");
    assert_eq!(contents.duplicates(), 0, "no line delivered twice");
    assert!(
        contents.other_sizes.is_empty(),
        "the big line never reached the topic: {:?}",
        contents.other_sizes
    );
    assert_eq!(replayed, LINES, "each line replayed once");
    assert_eq!(
        sink.lines_sent.get(),
        0,
        "replayed lines are counted by the DLQ, not as the sink's live lines"
    );
    assert_eq!(replay_failed, 0, "no replay failed");
    assert_eq!(
        dlq.rejected_for(Reason::MessageTooLarge).get(),
        1,
        "the big line counted as rejected"
    );
    let mut dump = Vec::new();
    let dumped = log_capturer::dlq::inspect::write_dump(&mut dump, &config.dlq_dir(), None, true)
        .expect("dump");
    assert_eq!(dumped, 1, "only the rejected line is left");
    let dump = String::from_utf8(dump).expect("utf-8");
    assert!(dump.contains("\"rejected\":true"), "{}", &dump[..200]);
    assert!(dump.contains("\"reason\":\"message_too_large\""));
    assert!(dump.len() > BIG_LINE_BYTES, "the whole line is kept");
    let rejected = config.dlq_dir().join("kafka").join("rejected");
    let listing = log_capturer::dlq::list(&rejected).expect("list rejected");
    let records: u64 = listing.iter().map(|(_, _, summary)| summary.records).sum();
    assert_eq!(records, 1, "{listing:?}");
}

/// The message of numbered record `number` that `write_records` writes.
fn record_message(number: u32) -> String {
    format!("seq={number:012} {}", "k".repeat(100))
}

/// Numbered DLQ records `0..count` of sink `kafka`, written through the
/// writer into segments of `segment_bytes`.
fn write_records(config: &Config, segment_bytes: usize, count: u32, big_at: Option<u32>) {
    write_sink_records(config, "kafka", segment_bytes, count, big_at);
}

/// Numbered DLQ records `0..count` of `sink` (`record_message`, or a line
/// of `BIG_LINE_BYTES` at `big_at`), written through the writer into
/// segments of `segment_bytes`.
fn write_sink_records(
    config: &Config,
    sink: &str,
    segment_bytes: usize,
    count: u32,
    big_at: Option<u32>,
) {
    let settings = DlqSettings {
        dir: config.dlq_dir(),
        segment_bytes,
        max_bytes: 1 << 30,
        policy: config.dlq.policy,
    };
    let mut writer = DlqWriter::open(sink, &settings).expect("open");
    let big = vec![b'b'; BIG_LINE_BYTES];
    for number in 0..count {
        let message = if big_at == Some(number) {
            big.clone()
        } else {
            record_message(number).into_bytes()
        };
        writer
            .append(&Record {
                timestamp_ns: 1,
                attempts: 3,
                reason: Reason::AttemptsExhausted,
                terminated: true,
                sink,
                labels: vec![("file", "/x")],
                message: &message,
            })
            .expect("append");
    }
}

/// Goal: a record that fails for good during a replay (here: too large for
/// the sink's `message.max.bytes`) is moved to `rejected/` with its reason,
/// and the segment, every other record delivered, is deleted. Method: 200
/// records with a 1,000,100-byte one among them, replayed by `replay`.
#[test]
fn replay_moves_a_permanently_failing_record_aside() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("replay", 4, 1).expect("topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let config = kafka_config(dir.path(), &input, &cluster.bootstrap_servers());
    write_records(&config, 4 << 20, 200, Some(77));

    let report = replay(&config, "kafka", &mut |_, _| {}).expect("replay");
    assert_eq!(report.records_delivered, 199, "{report:?}");
    assert_eq!(report.records_failed, 0, "{report:?}");
    assert_eq!(report.records_rejected, 1, "{report:?}");
    assert_eq!(report.segments_deleted, 1, "{report:?}");
    let sink_dir = config.dlq_dir().join("kafka");
    assert!(
        log_capturer::dlq::segment::list_segments(&sink_dir)
            .expect("segments")
            .is_empty()
    );
    let mut dump = Vec::new();
    let dumped = log_capturer::dlq::inspect::write_dump(&mut dump, &config.dlq_dir(), None, false)
        .expect("dump");
    assert_eq!(dumped, 1);
    let dump = String::from_utf8(dump).expect("utf-8");
    assert!(
        dump.contains(" kafka rejected message_too_large attempts=3 "),
        "{}",
        &dump[..120]
    );
    let mut listing = Vec::new();
    log_capturer::dlq::inspect::write_listing(&mut listing, &config.dlq_dir()).expect("list");
    let listing = String::from_utf8(listing).expect("utf-8");
    assert!(listing.contains("kafka/rejected"), "{listing}");

    // A second replay finds nothing to do: rejected records stay put.
    let report = replay(&config, "kafka", &mut |_, _| {}).expect("second replay");
    assert_eq!(report.records_delivered + report.records_rejected, 0);
    let contents = consume(
        &cluster.bootstrap_servers(),
        "replay",
        200,
        Duration::from_secs(2),
    );
    assert_eq!(contents.missing(), 1, "all but the big record");
    assert_eq!(contents.seen[77], 0);
    assert_eq!(contents.duplicates(), 0);
}

/// Goal: a replay killed part-way does not send the records it had
/// acknowledged again. Method: 6,000 records in one
/// segment; `dlq replay` runs as a child against a broker with 300 ms round
/// trips and gets SIGKILL once its acknowledgement file records progress;
/// a second replay finishes. Every record must be in the topic; the second
/// replay must skip what the file recorded; duplicates are at most the
/// records of one delivery step (those in flight at the kill).
#[test]
fn killed_replay_does_not_resend_acknowledged_records() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    const RECORDS: u32 = 6000;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("replay", 4, 1).expect("topic");
    cluster
        .broker_round_trip_time(1, Duration::from_millis(300))
        .expect("rtt");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let config = kafka_config(dir.path(), &input, &cluster.bootstrap_servers());
    write_records(&config, 4 << 20, RECORDS, None);
    let sink_dir = config.dlq_dir().join("kafka");
    let segments = log_capturer::dlq::segment::list_segments(&sink_dir).expect("segments");
    assert_eq!(segments.len(), 1, "one segment");

    let config_path = common::write_file(
        dir.path(),
        "replay.toml",
        &format!(
            "[daemon]\ndata_dir = \"{}\"\n[sources.app]\ntype = \"file\"\npaths = [\"{}\"]\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"replay\"\nencoding = \"raw\"\n",
            dir.path().join("data").display(),
            input.display(),
            cluster.bootstrap_servers()
        ),
    );
    let mut child = Command::new(common::binary())
        .args(["dlq", "replay", "--sink", "kafka", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start replay");
    let ack_path = segments[0].1.with_extension("ack");
    common::wait_until("acknowledgements recorded", Duration::from_secs(60), || {
        ack_path.exists()
    });
    common::send_signal(&child, libc::SIGKILL);
    let _ = child.wait();
    assert!(segments[0].1.exists(), "killed before it finished");

    let report = replay(&config, "kafka", &mut |_, _| {}).expect("second replay");
    assert_eq!(report.records_failed, 0, "{report:?}");
    assert!(report.records_skipped >= 1000, "{report:?}");
    assert_eq!(
        report.records_skipped + report.records_delivered,
        u64::from(RECORDS),
        "{report:?}"
    );
    assert!(!segments[0].1.exists(), "segment deleted");
    assert!(!ack_path.exists(), "acknowledgement file deleted");
    let contents = consume(
        &cluster.bootstrap_servers(),
        "replay",
        RECORDS as usize,
        Duration::from_secs(3),
    );
    println!(
        "skipped {} acknowledged records; duplicates {}",
        report.records_skipped,
        contents.duplicates()
    );
    assert_eq!(contents.missing(), 0);
    let in_flight_max = log_capturer::replay::REPLAY_CHUNK_RECORDS as u32;
    assert!(
        contents.duplicates() <= in_flight_max,
        "duplicates {} exceed one delivery step ({in_flight_max})",
        contents.duplicates()
    );
}

/// Goal: the size check matches librdkafka's own: a message of exactly the
/// limit is delivered, one byte more is rejected before librdkafka sees it.
/// Method: `message.max.bytes = 10000` (9,964 bytes of payload after
/// librdkafka's 36-byte record overhead); replay a record of 9,964 bytes
/// and one of 9,965 bytes.
#[test]
fn size_limit_matches_librdkafka() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("replay", 1, 1).expect("topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[daemon]\ndata_dir = \"{}\"\n[sources.app]\ntype = \"file\"\npaths = [\"/nonexistent\"]\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"replay\"\nencoding = \"raw\"\nlibrdkafka = {{ \"message.max.bytes\" = 10000 }}\n",
        dir.path().join("data").display(),
        cluster.bootstrap_servers()
    );
    let config = Config::from_toml(&text, std::path::Path::new("limit.toml")).expect("config");
    let settings = DlqSettings {
        dir: config.dlq_dir(),
        segment_bytes: 1 << 20,
        max_bytes: 1 << 30,
        policy: config.dlq.policy,
    };
    let mut writer = DlqWriter::open("kafka", &settings).expect("open");
    for bytes in [9964, 9965] {
        let mut message = format!("seq={:012} ", bytes - 9964).into_bytes();
        message.resize(bytes, b'm');
        writer
            .append(&Record {
                timestamp_ns: 1,
                attempts: 1,
                reason: Reason::Shutdown,
                terminated: false,
                sink: "kafka",
                labels: vec![],
                message: &message,
            })
            .expect("append");
    }
    drop(writer);
    let report = replay(&config, "kafka", &mut |_, _| {}).expect("replay");
    assert_eq!(
        (report.records_delivered, report.records_rejected),
        (1, 1),
        "{report:?}"
    );
    let contents = consume(
        &cluster.bootstrap_servers(),
        "replay",
        2,
        Duration::from_secs(2),
    );
    assert_eq!(contents.seen, vec![1, 0]);
}

/// Goal: with Kafka up, a line too large for it is refused at the sink,
/// before librdkafka, and only that line: it is never retried nor stored
/// in the replayable DLQ, and the rest of its batch is delivered. Method:
/// 100 numbered lines around one of 1,000,100 bytes; then the counters and
/// the topic.
#[test]
fn too_large_line_is_rejected_at_the_sink_while_kafka_is_up() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("replay", 4, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("input");
    let config = kafka_config(dir.path(), &input, &bootstrap);
    let pipeline = Pipeline::start(&config).expect("start");
    let dispatcher = Arc::clone(&pipeline.metrics().dispatcher);
    let dlq = Arc::clone(&pipeline.metrics().dlq[0]);
    let (_, kafka) = pipeline.metrics().kafka[0].clone();
    let mut text = Vec::new();
    common::write_numbered_lines(&mut text, 0, 50);
    text.extend_from_slice(b"big=");
    text.resize(text.len() + BIG_LINE_BYTES - 4, b'b');
    text.push(b'\n');
    common::write_numbered_lines(&mut text, 50, 50);
    std::fs::write(&input, &text).expect("write input");
    common::wait_until("the lines settled", Duration::from_secs(30), || {
        dispatcher.lines_processed.get() == 101 && dispatcher.batches_in_flight.get() == 0
    });
    pipeline.request_stop();
    pipeline.join(Duration::from_secs(15)).expect("clean stop");
    assert_eq!(kafka.messages_delivered.get(), 100);
    assert_eq!(dlq.rejected_for(Reason::MessageTooLarge).get(), 1);
    assert_eq!(dlq.stored_total(), 0, "nothing in the replayable DLQ");
    assert_eq!(dispatcher.retries_sent.get(), 0, "nothing retried");
    let contents = consume(&bootstrap, "replay", 100, Duration::from_secs(2));
    assert_eq!((contents.missing(), contents.duplicates()), (0, 0));
    assert!(contents.other_sizes.is_empty());
}

/// Goal: the daemon killed with SIGKILL during its automatic replay resumes
/// after a restart without sending the acknowledged records again, and its
/// `log_capturer_dlq_entries` counts only the records left. Method: 6,000
/// records in one segment; a broker with 300 ms round trips; automatic
/// replay at 2,000 records/s (steps of 200); SIGKILL once the
/// acknowledgement file exists; restart and wait for the segment to go.
#[test]
fn daemon_killed_during_auto_replay_resumes_without_resending() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    const RECORDS: u32 = 6000;
    const STEP_RECORDS: u32 = 200;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("replay", 4, 1).expect("topic");
    cluster
        .broker_round_trip_time(1, Duration::from_millis(300))
        .expect("rtt");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("input");
    let text = format!(
        "[daemon]\npin_threads = false\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[dlq]\nsegment_bytes = 4194304\nauto_replay = true\nreplay_after_ms = 200\nreplay_rate = {}\n[sources.app]\ntype = \"file\"\npaths = [\"{}\"]\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"replay\"\nencoding = \"raw\"\n",
        dir.path().join("data").display(),
        STEP_RECORDS * 10,
        input.display(),
        cluster.bootstrap_servers()
    );
    let config_path = common::write_file(dir.path(), "daemon.toml", &text);
    let config = Config::from_toml(&text, &config_path).expect("config");
    write_records(&config, 4 << 20, RECORDS, None);
    let segments =
        log_capturer::dlq::segment::list_segments(&config.dlq_dir().join("kafka")).expect("list");
    let (segment, ack) = (segments[0].1.clone(), segments[0].1.with_extension("ack"));

    let mut daemon = common::Daemon::start(&config_path);
    common::wait_until("acknowledgements recorded", Duration::from_secs(60), || {
        ack.exists()
    });
    common::send_signal(&daemon.child, libc::SIGKILL);
    let _ = daemon.child.wait();
    assert!(segment.exists(), "killed before the replay finished");

    let daemon = common::Daemon::start(&config_path);
    let (_, body) = daemon.get("/metrics");
    let left = common::sample(&body, "log_capturer_dlq_entries{sink=\"kafka\"}").expect("gauge");
    assert!(
        left <= f64::from(RECORDS - STEP_RECORDS),
        "acknowledged records are not counted as left: {left}"
    );
    common::wait_until("the segment replayed", Duration::from_secs(60), || {
        !segment.exists()
    });
    assert!(!ack.exists(), "acknowledgement file deleted");
    daemon.stop();
    let contents = consume(
        &cluster.bootstrap_servers(),
        "replay",
        RECORDS as usize,
        Duration::from_secs(3),
    );
    println!(
        "left after the kill {left}; duplicates {}",
        contents.duplicates()
    );
    assert_eq!(contents.missing(), 0);
    assert!(
        contents.duplicates() <= STEP_RECORDS,
        "duplicates {} exceed the step in flight ({STEP_RECORDS})",
        contents.duplicates()
    );
}

/// Goal: `dlq replay` into a `stdout` sink writes every record to standard
/// output and ends: the command must not hold standard output while the
/// sink's thread writes to it. Method: 3,000 DLQ records of a `stdout` sink
/// replayed by the binary, standard output read by the test, a 30 s bound.
#[test]
fn command_replays_into_a_stdout_sink_and_ends() {
    const RECORDS: u32 = 3000;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[daemon]\ndata_dir = \"{}\"\n[sources.app]\ntype = \"file\"\npaths = [\"{}\"]\n[sinks.out]\ntype = \"stdout\"\nencoding = \"raw\"\n",
        dir.path().join("data").display(),
        dir.path().join("input.log").display()
    );
    let config_path = common::write_file(dir.path(), "config.toml", &text);
    let config = Config::from_file(&config_path).expect("config");
    write_sink_records(&config, "out", 1 << 20, RECORDS, None);
    let mut child = Command::new(common::binary())
        .args(["dlq", "replay", "--sink", "out", "--config"])
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dlq replay");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut { stdout }, &mut text).expect("read stdout");
        text
    });
    let status = common::wait_with_timeout(&mut child, Duration::from_secs(30));
    let text = reader.join().expect("reader");
    assert!(status.success(), "dlq replay failed: {status:?}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("seq="))
        .collect();
    let expected: Vec<String> = (0..RECORDS).map(record_message).collect();
    assert_eq!(lines, expected, "every record once, in order");
}
