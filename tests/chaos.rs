//! Chaos tests of the retry wheel and the DLQ, in process against
//! librdkafka's mock cluster. This file is its own test binary (its own
//! process), and its tests run one at a time (a lock), so that the RSS and
//! thread counts they sample are theirs alone.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
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

/// Threads of this process that are not librdkafka's (`rdk:*`). librdkafka
/// runs one thread per broker it knows of and may replace one when a broker
/// connection is torn down; that count follows the cluster, not the
/// traffic. Every other thread must stay as it was.
fn process_threads() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| !name.starts_with("rdk:"))
        .count() as u64
}

fn rss_bytes() -> u64 {
    common::rss_of(std::process::id())
}

/// Reads every message of a topic; returns how often each number was seen.
fn consume_numbers(bootstrap: &str, topic: &str, count: usize, timeout: Duration) -> Vec<u32> {
    let consumer = common::topic_consumer(bootstrap, topic, "chaos");
    let mut seen = vec![0u32; count];
    let mut distinct = 0;
    let deadline = Instant::now() + timeout;
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|until| Instant::now() < until) {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            let payload = message.payload().unwrap_or_default();
            let number: usize = std::str::from_utf8(&payload[4..16])
                .expect("digits")
                .parse()
                .expect("number");
            if seen[number] == 0 {
                distinct += 1;
            }
            seen[number] += 1;
        }
        if distinct == count && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_millis(500));
        }
    }
    seen
}

/// Appends numbered lines at `rate` per second for `duration`, in steps of
/// 10 ms, calling `tick` (with the elapsed time) between steps.
fn write_at_rate(
    input: &std::path::Path,
    rate: u64,
    duration: Duration,
    mut tick: impl FnMut(Duration),
) -> u64 {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(input)
        .expect("open input");
    let started = Instant::now();
    let mut written = 0u64;
    while started.elapsed() < duration {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > written {
            let mut buffer = Vec::new();
            common::write_numbered_lines(&mut buffer, written, due - written);
            file.write_all(&buffer).expect("append");
            written = due;
        }
        tick(started.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    written
}

fn chaos_config(
    dir: &std::path::Path,
    input: &std::path::Path,
    bootstrap: &str,
    retry_and_dlq: &str,
) -> Config {
    let text = format!(
        r#"
[daemon]
pin_threads = false
data_dir = "{data}"
shutdown_timeout_ms = 10000

[dispatcher]
batch_size = 500
batch_timeout_ms = 20

{retry_and_dlq}

[sources.app]
type = "file"
paths = ["{input}"]

[sinks.kafka]
type = "kafka"
brokers = "{bootstrap}"
topic = "chaos"
encoding = "raw"
probe_interval_ms = 200
"#,
        data = dir.join("data").display(),
        input = input.display(),
    );
    Config::from_toml(&text, std::path::Path::new("chaos.toml")).expect("valid config")
}

/// Goal: an outage under load loses nothing, keeps memory and threads flat,
/// and fills the retry queue to its bound and then the DLQ. Method: 20,000
/// numbered lines/s for 8 s into a 32-partition topic; all brokers down
/// from 2 s to 5 s; RSS and threads sampled every 100 ms; after the run the
/// DLQ is replayed; then every number must be consumed from the topic.
#[test]
fn outage_under_load_loses_nothing_after_replay() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("chaos", 32, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("input");
    let retry = "[retry]\nmax_batches = 8\nbase_delay_ms = 100\nmax_delay_ms = 400\nmax_attempts = 4\n\n[dlq]\nsegment_bytes = 1048576\nauto_replay = true\nreplay_after_ms = 1000\nreplay_rate = 50000\n";
    let config = chaos_config(dir.path(), &input, &bootstrap, retry);
    let pipeline = Pipeline::start(&config).expect("start");
    let dispatcher = Arc::clone(&pipeline.metrics().dispatcher);
    let dlq = Arc::clone(&pipeline.metrics().dlq[0]);
    let mut threads_before = 0;
    let mut rss_before = 0;
    let (mut rss_peak, mut retry_peak, mut threads_changed) = (0, 0, false);
    let (mut down, mut up) = (false, false);
    let mut sampled_at = Instant::now();
    let written = write_at_rate(&input, 20_000, Duration::from_secs(8), |elapsed| {
        if !down && elapsed >= Duration::from_secs(2) {
            // Measured after two seconds of traffic: librdkafka starts a
            // thread per broker it learns of from the first metadata.
            rss_before = rss_bytes();
            threads_before = process_threads();
            for broker in 1..=1 {
                cluster.broker_down(broker).expect("down");
            }
            down = true;
        }
        if !up && elapsed >= Duration::from_secs(5) {
            cluster.broker_up(1).expect("up");
            up = true;
        }
        if down && !up && sampled_at.elapsed() >= Duration::from_millis(100) {
            rss_peak = rss_peak.max(rss_bytes());
            retry_peak = retry_peak.max(dispatcher.retry_queue_size.get());
            threads_changed |= process_threads() != threads_before;
            sampled_at = Instant::now();
        }
    });
    common::wait_until("every line batched", Duration::from_secs(30), || {
        dispatcher.lines_processed.get() == written
    });
    common::wait_until("every batch complete", Duration::from_secs(30), || {
        dispatcher.batches_in_flight.get() == 0
    });
    let stored = || -> u64 { dlq.stored_total() };
    common::wait_until(
        "automatic replay drained the DLQ",
        Duration::from_secs(60),
        || dlq.entries.get() == 0 && dlq.replayed.get() == stored(),
    );
    pipeline.request_stop();
    pipeline.join(Duration::from_secs(15)).expect("clean stop");
    let stored = stored();

    println!(
        "written {written}; DLQ stored {stored}, replayed automatically {}; retry queue peak {retry_peak}; RSS {} -> peak {} MiB",
        dlq.replayed.get(),
        rss_before >> 20,
        rss_peak >> 20
    );
    assert_eq!(retry_peak, 8, "the retry queue rose to its bound");
    assert!(stored > 0, "the DLQ grew during the outage");
    assert!(!threads_changed, "thread count changed during the outage");
    let bound = 8 * (500 * 200) + (16 << 20);
    assert!(
        rss_peak <= rss_before + bound,
        "RSS {} -> {} MiB",
        rss_before >> 20,
        rss_peak >> 20
    );
    assert_eq!(dlq.replay_failed.get(), 0);
    let listing = log_capturer::dlq::list(&config.dlq_dir().join("kafka")).expect("list");
    assert!(
        listing.iter().all(|(_, _, summary)| summary.records == 0),
        "replayed segments are deleted: {listing:?}"
    );
    let seen = consume_numbers(
        &bootstrap,
        "chaos",
        written as usize,
        Duration::from_secs(60),
    );
    let missing: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, times)| **times == 0)
        .map(|(number, _)| number)
        .take(10)
        .collect();
    assert!(missing.is_empty(), "numbers never delivered: {missing:?}");
    let duplicated = seen.iter().filter(|&&times| times > 1).count();
    println!("duplicates (at-least-once): {duplicated}");
}

/// Goal: with `drop_oldest`, an outage longer than the DLQ bound keeps the
/// daemon up and memory flat, and every line is delivered, kept in the DLQ,
/// or counted as dropped. Method: a 128 KiB DLQ of 64 KiB segments, an
/// outage for the whole run; then the sums must add up.
#[test]
fn long_outage_beyond_the_dlq_bound_counts_every_drop() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("chaos", 4, 1).expect("topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("input");
    let bounds = "[retry]\nmax_batches = 4\nbase_delay_ms = 50\nmax_delay_ms = 100\nmax_attempts = 2\n\n[dlq]\nsegment_bytes = 65536\nmax_bytes = 131072\npolicy = \"drop_oldest\"\n";
    let config = chaos_config(dir.path(), &input, &cluster.bootstrap_servers(), bounds);
    cluster.broker_down(1).expect("down");
    let pipeline = Pipeline::start(&config).expect("start");
    let dispatcher = Arc::clone(&pipeline.metrics().dispatcher);
    let dlq = Arc::clone(&pipeline.metrics().dlq[0]);
    let sink = Arc::clone(&pipeline.metrics().sinks[0]);
    let written = write_at_rate(&input, 10_000, Duration::from_secs(3), |_| {});
    common::wait_until("every line batched", Duration::from_secs(30), || {
        dispatcher.lines_processed.get() == written
    });
    common::wait_until("every batch complete", Duration::from_secs(30), || {
        dispatcher.batches_in_flight.get() == 0
    });
    assert!(
        pipeline.metrics().kafka[0].1.breaker_state.get() == 1,
        "breaker open all along"
    );
    pipeline.request_stop();
    pipeline.join(Duration::from_secs(15)).expect("clean stop");

    let kept: u64 = log_capturer::dlq::list(&config.dlq_dir().join("kafka"))
        .expect("list")
        .iter()
        .map(|(_, _, summary)| summary.records)
        .sum();
    let dropped = dlq.dropped.get();
    let delivered = sink.lines_sent.get();
    println!("written {written}: delivered {delivered}, kept {kept}, dropped {dropped}");
    assert!(dropped > 0, "the bound was reached");
    assert_eq!(
        delivered + kept + dropped,
        written,
        "every line is delivered, kept or counted dropped"
    );
    assert_eq!(dlq.write_errors.get(), 0);
}

/// Goal: corrupt and torn DLQ records are detected, counted and skipped;
/// every intact record is replayed. Method: write 300 records through the
/// v1 writer (a frame per record, as an upgraded daemon finds them; v2
/// blocks are damaged in `dlq_corruption`), flip a byte inside one record
/// and cut the last segment inside a record, replay into a file sink,
/// compare.
#[test]
fn corrupt_and_torn_segments_replay_every_intact_record() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("replayed.log");
    let text = format!(
        "[daemon]\ndata_dir = \"{}\"\n[dlq]\nsegment_bytes = 65536\n[sources.app]\ntype = \"file\"\npaths = [\"/nonexistent\"]\n[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        dir.path().display(),
        output.display()
    );
    let config = Config::from_toml(&text, std::path::Path::new("corrupt.toml")).expect("config");
    let settings = DlqSettings {
        dir: config.dlq_dir(),
        segment_bytes: 65536,
        max_bytes: 1 << 30,
        policy: config.dlq.policy,
    };
    let mut writer = DlqWriter::open_v1("out", &settings).expect("open");
    let labels = vec![("file", "/var/log/a.log")];
    for number in 0..300u32 {
        let message = format!("record {number:04} {}", "z".repeat(400));
        writer
            .append(&Record {
                timestamp_ns: 1,
                attempts: 1,
                reason: Reason::Shutdown,
                terminated: true,
                sink: "out",
                labels: labels.clone(),
                message: message.as_bytes(),
            })
            .expect("append");
    }
    drop(writer);
    let segments =
        log_capturer::dlq::segment::list_segments(&config.dlq_dir().join("out")).expect("segments");
    assert!(segments.len() >= 2, "records span segments");
    // Flip a byte in the middle of the first segment's tenth record.
    let first = &segments[0].1;
    let mut bytes = std::fs::read(first).expect("read");
    let at = 64 + 9 * (8 + 24 + 3 + 4 + 4 + 14 + 409) + 100;
    bytes[at] ^= 0xff;
    std::fs::write(first, &bytes).expect("write");
    // Cut the last segment in the middle of a record.
    let last = &segments[segments.len() - 1].1;
    let mut bytes = std::fs::read(last).expect("read");
    let written_end = bytes.iter().rposition(|&byte| byte != 0).expect("data");
    bytes.truncate(written_end - 200);
    std::fs::write(last, &bytes).expect("write");

    let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
    assert_eq!(report.records_corrupt, 2, "{report:?}");
    let replayed = std::fs::read_to_string(&output).expect("output");
    let numbers: Vec<u32> = replayed
        .lines()
        .map(|line| line[7..11].parse().expect("number"))
        .collect();
    assert_eq!(numbers.len() as u64, report.records_delivered);
    assert_eq!(numbers.len(), 298, "every intact record, once");
    let mut sorted = numbers.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), numbers.len());
    let counts: BTreeMap<&str, usize> = [("replayed", numbers.len())].into_iter().collect();
    println!("{counts:?}");
}

/// Goal: `kill -9` during a replay loses nothing and bounds duplicates.
/// Method: 3,000 records in 64 KiB v1 segments (uncompressed, so that they
/// fill several; `dlq_replay` kills replays of v2 ones); `dlq replay` runs as a child
/// against a mock broker with 100 ms round trips and is killed with
/// SIGKILL once it has deleted a segment; a second replay finishes the job;
/// every record is then in the topic, duplicated at most one segment's
/// worth (the segment in flight when the first replay died).
#[test]
fn kill_during_replay_loses_nothing_and_bounds_duplicates() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    const RECORDS: u32 = 3000;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("chaos", 8, 1).expect("topic");
    cluster
        .broker_round_trip_time(1, Duration::from_millis(100))
        .expect("rtt");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("input");
    let settings_text = "[dlq]\nsegment_bytes = 65536\nauto_replay = false\n";
    let config = chaos_config(
        dir.path(),
        &input,
        &cluster.bootstrap_servers(),
        settings_text,
    );
    let settings = DlqSettings {
        dir: config.dlq_dir(),
        segment_bytes: 65536,
        max_bytes: 1 << 30,
        policy: config.dlq.policy,
    };
    let mut writer = DlqWriter::open_v1("kafka", &settings).expect("open");
    for number in 0..RECORDS {
        let message = format!("seq={number:012} {}", "k".repeat(100));
        writer
            .append(&Record {
                timestamp_ns: 1,
                attempts: 4,
                reason: Reason::AttemptsExhausted,
                terminated: true,
                sink: "kafka",
                labels: vec![("file", "/x")],
                message: message.as_bytes(),
            })
            .expect("append");
    }
    drop(writer);
    let sink_dir = config.dlq_dir().join("kafka");
    let segments_before = log_capturer::dlq::segment::list_segments(&sink_dir)
        .expect("segments")
        .len();
    assert!(segments_before >= 4, "{segments_before} segments");
    let per_segment = RECORDS as usize / (segments_before - 1);

    let config_path = common::write_file(
        dir.path(),
        "replay.toml",
        &format!(
            "[daemon]\ndata_dir = \"{}\"\n{settings_text}[sources.app]\ntype = \"file\"\npaths = [\"{}\"]\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"chaos\"\nencoding = \"raw\"\n",
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
    common::wait_until("a segment replayed", Duration::from_secs(60), || {
        log_capturer::dlq::segment::list_segments(&sink_dir)
            .map(|segments| segments.len())
            .unwrap_or(0)
            < segments_before
    });
    common::send_signal(&child, libc::SIGKILL);
    let _ = child.wait();
    let left = log_capturer::dlq::segment::list_segments(&sink_dir)
        .expect("segments")
        .len();
    assert!(left > 0, "the replay was killed before it finished");

    let report = replay(&config, "kafka", &mut |_, _| {}).expect("second replay");
    assert_eq!(report.records_failed, 0, "{report:?}");
    assert!(
        log_capturer::dlq::segment::list_segments(&sink_dir)
            .expect("segments")
            .is_empty()
    );
    let seen = consume_numbers(
        &cluster.bootstrap_servers(),
        "chaos",
        RECORDS as usize,
        Duration::from_secs(60),
    );
    let missing = seen.iter().filter(|&&times| times == 0).count();
    let duplicates: u32 = seen.iter().map(|&times| times.saturating_sub(1)).sum();
    println!(
        "killed with {left} of {segments_before} segments left; duplicates {duplicates} (bound {per_segment})"
    );
    assert_eq!(missing, 0);
    assert!(
        duplicates as usize <= per_segment,
        "duplicates {duplicates} exceed one segment ({per_segment})"
    );
}

/// Goal: SIGTERM while a sink cannot finish (a broker that answers after
/// 20 s) stores the undelivered batches in the DLQ and exits 0 within the
/// shutdown timeout. Method: the daemon as a process against a mock broker
/// with a 20 s round trip; SIGTERM once the lines are batched.
#[test]
fn sigterm_with_a_stuck_sink_stores_the_rest_and_exits_zero() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("chaos", 1, 1).expect("topic");
    cluster
        .broker_round_trip_time(1, Duration::from_secs(20))
        .expect("rtt");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut buffer = Vec::new();
    common::write_numbered_lines(&mut buffer, 0, 1000);
    std::fs::write(&input, &buffer).expect("input");
    let text = format!(
        "[daemon]\npin_threads = false\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nshutdown_timeout_ms = 3000\n[dlq]\nauto_replay = false\n[sources.app]\ntype = \"file\"\npaths = [\"{}\"]\n[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\ntopic = \"chaos\"\nencoding = \"raw\"\n",
        dir.path().join("data").display(),
        input.display(),
        cluster.bootstrap_servers()
    );
    let config_path = common::write_file(dir.path(), "stuck.toml", &text);
    let mut daemon = common::Daemon::start(&config_path);
    let processed = "log_capturer_logs_processed_total{source_type=\"file\",source_id=\"app\",pipeline=\"default\"}";
    common::wait_until("lines batched", Duration::from_secs(20), || {
        common::sample(&daemon.get("/metrics").1, processed) == Some(1000.0)
    });
    let signalled = Instant::now();
    common::send_signal(&daemon.child, libc::SIGTERM);
    let status = common::wait_with_timeout(&mut daemon.child, Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    let config = Config::from_toml(&text, std::path::Path::new("stuck.toml")).expect("config");
    let mut reasons = Vec::new();
    for (_, path, _) in log_capturer::dlq::list(&config.dlq_dir().join("kafka")).expect("list") {
        log_capturer::dlq::segment::ReadableSegment::open(&path)
            .expect("open")
            .scan(|record| reasons.push(record.reason))
            .expect("scan");
    }
    assert_eq!(reasons.len(), 1000, "every undelivered line is in the DLQ");
    assert!(reasons.iter().all(|&reason| reason == Reason::Shutdown));
}
