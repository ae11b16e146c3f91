//! Crash recovery of the durable file source, with the real binary: the
//! daemon is killed with SIGKILL while a file grows, restarted at once, and
//! every line must still arrive (file sink and Kafka sink), with duplicates
//! within the bound the README documents; a Kafka outage whose lines sit in
//! the DLQ survives a `kill -9`; 100,000 files with unique names keep
//! memory bounded once the label table is full; a file created on a
//! deleted file's inode is read; SIGTERM stores every position.
//!
//! The tests of this file run one at a time (a lock): they time kills and
//! sample RSS, and the machine may have two cores.
//!
//! The duplicate bound after a crash (README, "Positions, restarts and
//! rotation"): the lines delivered since the last position write, about
//! `positions_interval_ms` of input, plus the batches in flight
//! (`batches_in_flight` x `batch_size`). The crash loops draw their kill
//! delays from a seed printed at the start; `CRASH_SEED=<seed>` repeats
//! them.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log_capturer::source::positions;
use rdkafka::Message;
use rdkafka::mocking::MockCluster;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lines per second the writer appends during the crash loops.
const RATE: u64 = 50_000;
/// Kills per crash loop.
const KILLS: usize = 10;
/// The settings the duplicate bound is computed from.
const POSITIONS_INTERVAL_MS: u64 = 1_000;
const BATCH_SIZE: u64 = 1_000;
const BATCHES_IN_FLIGHT: u64 = 8;
/// Bytes of one numbered line with its newline.
const LINE_BYTES: u64 = common::NUMBERED_LINE_BYTES as u64 + 1;

/// The documented duplicate bound of one crash, in lines.
fn bound_per_kill() -> u64 {
    RATE * POSITIONS_INTERVAL_MS / 1_000 + BATCHES_IN_FLIGHT * BATCH_SIZE
}

/// splitmix64: a small seeded generator, so that a failing run can be
/// repeated with `CRASH_SEED=<seed>`.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_nanos() as u64
            });
        println!("seed {seed} (repeat with CRASH_SEED={seed})");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniformly in `low..high`.
    fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = (high - low).as_millis() as u64;
        low + Duration::from_millis(self.next() % span)
    }
}

/// A thread that appends numbered lines (`common::write_numbered_lines`,
/// whole lines per `write`) at a fixed rate until told to stop.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(path: &Path, rate: u64) -> Writer {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open input");
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, written) = (Arc::clone(&stop), Arc::clone(&written));
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut buffer = Vec::new();
                let mut count = 0u64;
                // Bounded in time too: a test that never stops the writer
                // must not fill the disk.
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120)
                {
                    let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                    if due > count {
                        buffer.clear();
                        common::write_numbered_lines(&mut buffer, count, due - count);
                        file.write_all(&buffer).expect("append");
                        count = due;
                        written.store(count, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Writer {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Stops the thread; returns the lines written.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("writer thread");
        self.written()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The stored position of `input` for source `app` (bytes), from the
/// position file on disk: what a restart resumes at.
fn stored_position(data_dir: &Path, input: &Path) -> Option<u64> {
    let path = data_dir
        .join("positions")
        .join(positions::escape_source_id("app"));
    let bytes = std::fs::read(path).ok()?;
    positions::decode(&bytes)
        .records
        .into_iter()
        .find(|record| record.path == input)
        .map(|record| record.offset)
}

/// The value of `name` in a metrics body, on the first series whose labels
/// include every `key="value"` of `labels`.
fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (label_block, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(key, value)| label_block.contains(&format!("{key}=\"{value}\"")))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The number of a whole numbered line (`seq=%012d ` and the padding),
/// or `None` for anything else (a torn piece).
fn parse_numbered(line: &[u8]) -> Option<u64> {
    if line.len() != common::NUMBERED_LINE_BYTES || !line.starts_with(b"seq=") {
        return None;
    }
    if line[16] != b' ' || line[17..].iter().any(|&byte| byte != b'x') {
        return None;
    }
    std::str::from_utf8(&line[4..16]).ok()?.parse().ok()
}

/// The number of a whole output line, or of the whole line at the end of
/// a torn piece glued to it.
fn tally_tail(line: &[u8]) -> Option<u64> {
    let whole = common::NUMBERED_LINE_BYTES;
    parse_numbered(line).or_else(|| {
        (line.len() > whole)
            .then(|| parse_numbered(&line[line.len() - whole..]))
            .flatten()
    })
}

/// What was delivered: how often each number arrived, and the pieces that
/// were no numbered line.
struct Tally {
    seen: Vec<u32>,
    unexpected: Vec<u64>,
    torn: Vec<String>,
}

impl Tally {
    fn new(written: u64) -> Tally {
        Tally {
            seen: vec![0; written as usize],
            unexpected: Vec::new(),
            torn: Vec::new(),
        }
    }

    fn count(&mut self, number: u64) {
        match self.seen.get_mut(number as usize) {
            Some(times) => *times += 1,
            None => self.unexpected.push(number),
        }
    }

    /// One line of a raw file sink's output. A sink killed in the middle
    /// of its `write` leaves a piece of a line without its newline; the
    /// next daemon appends after it, so the piece is glued to the front of
    /// a whole line. The whole line at the end is counted, the piece is
    /// reported.
    fn count_output_line(&mut self, line: &[u8]) {
        if let Some(number) = parse_numbered(line) {
            self.count(number);
            return;
        }
        let whole = common::NUMBERED_LINE_BYTES;
        if line.len() > whole
            && let Some(number) = parse_numbered(&line[line.len() - whole..])
        {
            self.count(number);
            self.torn
                .push(String::from_utf8_lossy(&line[..line.len() - whole]).into_owned());
            return;
        }
        self.torn.push(String::from_utf8_lossy(line).into_owned());
    }

    fn missing(&self) -> Vec<usize> {
        self.seen
            .iter()
            .enumerate()
            .filter(|(_, times)| **times == 0)
            .map(|(number, _)| number)
            .collect()
    }

    /// Extra copies: a number seen three times is two duplicates.
    fn duplicates(&self) -> u64 {
        self.seen
            .iter()
            .map(|&times| u64::from(times.saturating_sub(1)))
            .sum()
    }

    /// Asserts that every number arrived and nothing else did.
    fn assert_none_lost(&self) {
        let missing = self.missing();
        assert!(
            missing.is_empty(),
            "{} numbers of {} never arrived, first ones: {:?}",
            missing.len(),
            self.seen.len(),
            &missing[..missing.len().min(20)]
        );
        assert!(
            self.unexpected.is_empty(),
            "numbers never written arrived: {:?}",
            &self.unexpected[..self.unexpected.len().min(20)]
        );
    }
}

/// One kill of a crash loop.
struct Kill {
    after: Duration,
    /// Lines the writer had written.
    written: u64,
    /// The stored position the next daemon starts from, in lines.
    stored_lines: u64,
    /// Length of the file sink's output, if any: what the killed daemon
    /// wrote ends there.
    output_bytes: Option<u64>,
}

/// Runs the crash loop: the writer appends to `input` at [`RATE`] from
/// the start; the daemon is killed [`KILLS`] times at random moments and
/// restarted at once each time. After the last restart the writer stops
/// and the daemon runs until the stored position reaches the end of the
/// input; it is then stopped with SIGTERM. Returns the lines written and
/// the kills.
fn crash_loop(
    config: &Path,
    input: &Path,
    data_dir: &Path,
    output: Option<&Path>,
) -> (u64, Vec<Kill>) {
    let mut rng = Rng::from_env_or_clock();
    std::fs::write(input, "").expect("input");
    let writer = Writer::start(input, RATE);
    let mut daemon = common::Daemon::start(config);
    let mut kills = Vec::with_capacity(KILLS);
    for _ in 0..KILLS {
        let after = rng.between(Duration::from_millis(300), Duration::from_millis(2_000));
        std::thread::sleep(after);
        common::send_signal(&daemon.child, libc::SIGKILL);
        daemon.child.wait().expect("reap killed daemon");
        let written = writer.written();
        let stored_lines = stored_position(data_dir, input).unwrap_or(0) / LINE_BYTES;
        let output_bytes =
            output.map(|path| std::fs::metadata(path).map_or(0, |metadata| metadata.len()));
        kills.push(Kill {
            after,
            written,
            stored_lines,
            output_bytes,
        });
        daemon = common::Daemon::start(config);
    }
    let written = writer.finish();
    let size = std::fs::metadata(input).expect("input").len();
    assert_eq!(size, written * LINE_BYTES, "the input holds whole lines");
    common::wait_until(
        "the stored position reaches the end of the input",
        Duration::from_secs(60),
        || stored_position(data_dir, input) == Some(size),
    );
    daemon.stop();
    assert_eq!(
        stored_position(data_dir, input),
        Some(size),
        "the position written at exit"
    );
    (written, kills)
}

fn print_kills(kills: &[Kill]) {
    for (index, kill) in kills.iter().enumerate() {
        println!(
            "kill {index}: {:>4} ms after start; written {:>7}; stored position at line {:>7}",
            kill.after.as_millis(),
            kill.written,
            kill.stored_lines,
        );
    }
}

/// The crash-loop config: one file source over `input`, the settings the
/// bound comes from, and `sinks`.
fn crash_config(dir: &Path, input: &Path, sinks: &str) -> PathBuf {
    let text = format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"
positions_interval_ms = {POSITIONS_INTERVAL_MS}

[dispatcher]
batch_size = {BATCH_SIZE}
batch_timeout_ms = 20
batches_in_flight = {BATCHES_IN_FLIGHT}

[sources.app]
type = "file"
paths = ["{input}"]

{sinks}
"#,
        data = dir.join("data").display(),
        input = input.display(),
    );
    common::write_file(dir, "crash.toml", &text)
}

fn report_duplicates(what: &str, tally: &Tally, took: Duration) -> u64 {
    let duplicates = tally.duplicates();
    let bound = bound_per_kill() * KILLS as u64;
    println!(
        "{what}: {} numbers, none lost; duplicates {duplicates}, bound {bound} ({KILLS} kills x ({RATE} lines/s x {POSITIONS_INTERVAL_MS} ms + {BATCHES_IN_FLIGHT} x {BATCH_SIZE})); torn pieces {}; took {took:?}",
        tally.seen.len(),
        tally.torn.len()
    );
    duplicates
}

/// Goal: `kill -9` of a daemon writing to a file sink loses no line, and
/// duplicates stay within the documented bound (Fluent Bit #4225 and
/// Promtail stored positions before delivery, and lost lines at a crash).
/// Method: a thread appends numbered lines at 50,000/s for the whole test;
/// the daemon (file sink, raw) is killed with SIGKILL ten times, 0.3 to
/// 2 s after each start (seeded, printed), and restarted at once; then the
/// writer stops, the daemon catches up (stored position at the end of the
/// input) and gets SIGTERM. Every number must be in the output; each
/// restarted daemon's first line must be the line at the stored position
/// it started from; extra copies at most the bound summed over the kills
/// (the lines each restart sent again are printed per kill); a torn piece
/// of a line (a sink killed inside its `write`) at most one per kill.
#[test]
fn kill_nine_with_a_file_sink_loses_nothing() {
    let _one = one_at_a_time();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let output = dir.path().join("out.log");
    let config = crash_config(
        dir.path(),
        &input,
        &common::file_sink_table("out", &output, "raw"),
    );
    let (written, kills) = crash_loop(&config, &input, &dir.path().join("data"), Some(&output));

    let text = std::fs::read(&output).expect("output");
    // What each killed daemon had written ends at `output_bytes`; the next
    // one starts right there, with the line at its stored position. The
    // lines from that position to the last whole line before the kill are
    // those the restart sends again.
    for (index, kill) in kills.iter().enumerate() {
        let end = kill.output_bytes.expect("file sink") as usize;
        let last = text[..end]
            .split(|&byte| byte == b'\n')
            .rev()
            .skip(1)
            .find_map(tally_tail);
        let resent = last.map_or(0, |last| (last + 1).saturating_sub(kill.stored_lines));
        println!(
            "kill {index}: {:>4} ms after start; written {:>7}; stored position at line {:>7}; last line delivered {:>7}; sent again {resent:>6} (bound per kill {})",
            kill.after.as_millis(),
            kill.written,
            kill.stored_lines,
            last.map_or(-1, |last| last as i64),
            bound_per_kill()
        );
        let next_end = kills.get(index + 1).map_or(text.len(), |next| {
            next.output_bytes.expect("file sink") as usize
        });
        if next_end >= end + LINE_BYTES as usize {
            let first = parse_numbered(&text[end..end + common::NUMBERED_LINE_BYTES]);
            assert_eq!(
                first,
                Some(kill.stored_lines),
                "the daemon started after kill {index} resumes at the stored position"
            );
        }
    }
    let mut tally = Tally::new(written);
    for line in text.split(|&byte| byte == b'\n') {
        if !line.is_empty() {
            tally.count_output_line(line);
        }
    }
    for piece in &tally.torn {
        println!("torn piece: {piece:?}");
    }
    assert!(
        tally.torn.len() <= KILLS,
        "{} torn pieces for {KILLS} kills",
        tally.torn.len()
    );
    tally.assert_none_lost();
    let duplicates = report_duplicates("file sink", &tally, started.elapsed());
    assert!(
        duplicates <= bound_per_kill() * KILLS as u64,
        "duplicates {duplicates} exceed the documented bound"
    );
}

/// Reads a whole topic from the beginning of every partition; returns how
/// often each number in `0..written` arrived. Stops once every number was
/// seen and nothing more came for a second, or at `timeout`.
fn consume_topic(bootstrap: &str, topic: &str, written: u64, timeout: Duration) -> Tally {
    let consumer = common::topic_consumer(bootstrap, topic, "crash-recovery");
    let mut tally = Tally::new(written);
    let mut distinct = 0u64;
    let deadline = Instant::now() + timeout;
    let mut last_message = Instant::now();
    while Instant::now() < deadline
        && !(distinct == written && last_message.elapsed() > Duration::from_secs(1))
    {
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.expect("consume");
        last_message = Instant::now();
        let payload = message.payload().unwrap_or_default();
        match parse_numbered(payload) {
            Some(number) => {
                if tally.seen.get(number as usize) == Some(&0) {
                    distinct += 1;
                }
                tally.count(number);
            }
            None => tally
                .torn
                .push(String::from_utf8_lossy(payload).into_owned()),
        }
    }
    tally
}

/// Goal: `kill -9` of a daemon shipping to Kafka loses no line, and
/// duplicates stay within the documented bound. Method: the crash loop of
/// the file-sink test with a Kafka sink (raw) on librdkafka's mock
/// cluster, which lives in this process and so outlives every daemon; the
/// topic (64 partitions: the mock keeps 5 MiB each) is read back at the
/// end. Every message must be a whole numbered line, every number there.
#[test]
fn kill_nine_with_a_kafka_sink_loses_nothing() {
    let _one = one_at_a_time();
    let started = Instant::now();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("crash", 64, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let sinks = common::kafka_sink_table(&bootstrap, "crash", "encoding = \"raw\"");
    let config = crash_config(dir.path(), &input, &sinks);
    let (written, kills) = crash_loop(&config, &input, &dir.path().join("data"), None);
    print_kills(&kills);

    let tally = consume_topic(&bootstrap, "crash", written, Duration::from_secs(90));
    assert!(
        tally.torn.is_empty(),
        "messages that are no numbered line: {:?}",
        &tally.torn[..tally.torn.len().min(5)]
    );
    tally.assert_none_lost();
    let duplicates = report_duplicates("kafka sink", &tally, started.elapsed());
    assert!(
        duplicates <= bound_per_kill() * KILLS as u64,
        "duplicates {duplicates} exceed the documented bound"
    );
}

/// Goal: lines that an outage put in the DLQ survive a `kill -9` (the DLQ
/// is a memory-mapped segment: the page cache keeps it), and reach Kafka
/// once it is back: none lost. Method: 10,000 lines delivered; the broker
/// goes down; 100,000 more lines go through two attempts (50 to 200 ms
/// apart) to the DLQ, as its metrics show, and the stored position moves
/// past them (so that a restart reads none of them again); SIGKILL; the
/// restarted daemon, broker still down, must count every record the killed
/// one stored; the broker comes up; automatic replay drains the DLQ. The
/// topic must then hold every number; duplicates are printed.
#[test]
fn outage_lines_in_the_dlq_survive_kill_nine() {
    const BEFORE: u64 = 10_000;
    const DURING: u64 = 100_000;
    let _one = one_at_a_time();
    let started = Instant::now();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("outage", 16, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("input");
    let data_dir = dir.path().join("data");
    let text = format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[dispatcher]
batch_size = 1000
batch_timeout_ms = 20

[retry]
max_attempts = 2
base_delay_ms = 50
max_delay_ms = 200

[dlq]
segment_bytes = 8388608
auto_replay = true
replay_after_ms = 1000

[sources.app]
type = "file"
paths = ["{input}"]

[sinks.kafka]
type = "kafka"
brokers = "{bootstrap}"
topic = "outage"
encoding = "raw"
probe_interval_ms = 200
"#,
        data = data_dir.display(),
        input = input.display(),
    );
    let config = common::write_file(dir.path(), "outage.toml", &text);
    let append = |first, count| common::append_numbered_lines(&input, first, count);
    let sink = [("sink", "kafka")];
    let success = [("sink", "kafka"), ("status", "success")];

    let daemon = common::Daemon::start(&config);
    append(0, BEFORE);
    common::wait_until("the first lines delivered", Duration::from_secs(30), || {
        let body = daemon.get("/metrics").1;
        metric(&body, "log_capturer_sink_logs_total", &success) == Some(BEFORE as f64)
    });
    cluster.broker_down(1).expect("broker down");
    append(BEFORE, DURING);
    let (mut delivered, mut stored) = (0.0, 0.0);
    common::wait_until(
        "every line delivered or in the DLQ",
        Duration::from_secs(60),
        || {
            let body = daemon.get("/metrics").1;
            delivered = metric(&body, "log_capturer_sink_logs_total", &success).unwrap_or(0.0);
            stored = metric(&body, "log_capturer_dlq_entries_total", &sink).unwrap_or(0.0);
            delivered + stored >= (BEFORE + DURING) as f64
        },
    );
    println!("before the kill: delivered {delivered}, stored in the DLQ {stored}");
    assert!(
        stored >= (DURING / 2) as f64,
        "the outage put most lines in the DLQ: {stored}"
    );
    // Lines in the DLQ are complete: the position moves past them. Once it
    // is on disk, a restart reads nothing again, so what the DLQ held can
    // reach Kafka only from the DLQ the killed daemon left.
    let size = (BEFORE + DURING) * LINE_BYTES;
    common::wait_until(
        "the position stored past the lines in the DLQ",
        Duration::from_secs(30),
        || stored_position(&data_dir, &input) == Some(size),
    );
    let mut daemon = daemon;
    common::send_signal(&daemon.child, libc::SIGKILL);
    daemon.child.wait().expect("reap killed daemon");
    drop(daemon);

    let daemon = common::Daemon::start(&config);
    let mut found = 0.0;
    common::wait_until(
        "the restarted daemon counts the DLQ records",
        Duration::from_secs(10),
        || {
            let body = daemon.get("/metrics").1;
            found = metric(&body, "log_capturer_dlq_entries", &sink).unwrap_or(0.0);
            found >= stored
        },
    );
    println!("restarted with the broker down: DLQ records found {found}");
    assert_eq!(
        found, stored,
        "the restarted daemon finds every record the killed one stored"
    );
    cluster.broker_up(1).expect("broker up");
    let mut replayed = 0.0;
    common::wait_until(
        "the DLQ replayed by the restarted daemon",
        Duration::from_secs(90),
        || {
            let body = daemon.get("/metrics").1;
            replayed = metric(
                &body,
                "log_capturer_dlq_reprocess_attempts_total",
                &[("sink", "kafka"), ("result", "success")],
            )
            .unwrap_or(0.0);
            metric(&body, "log_capturer_dlq_entries", &sink) == Some(0.0) && replayed >= stored
        },
    );
    daemon.stop();

    let tally = consume_topic(
        &bootstrap,
        "outage",
        BEFORE + DURING,
        Duration::from_secs(60),
    );
    assert!(tally.torn.is_empty(), "{:?}", &tally.torn[..1]);
    tally.assert_none_lost();
    println!(
        "outage: {} numbers, none lost; replayed by the restarted daemon {replayed}; duplicates {}; took {:?}",
        BEFORE + DURING,
        tally.duplicates(),
        started.elapsed()
    );
}

/// Goal: a run over 100,000 files with unique names keeps memory bounded
/// once the label symbol table is full, and the `file` label of a line is
/// right whether it was interned or carried inline. Method:
/// `label_symbols_max = 20000`, `max_files = 256`, a glob over one
/// directory; the test creates `f000000.log`.. in batches of 1,000 files
/// of one line each (the line names its file's number), at most 5,000 not
/// yet delivered at a time, reads the JSON output as it grows and checks
/// the `file`, `service` and `source_id` labels of every line. Once its
/// line arrived, a file is moved out of the glob (to a sibling directory),
/// so that the daemon follows a few thousand files at a time, not 100,000,
/// as with logs that are cleaned up. Moved, not deleted: a deleted file's
/// inode is handed to the next file created, which the daemon mistakes for
/// the deleted one (see `new_file_on_a_reused_inode_is_read`). RSS of the
/// daemon is sampled throughout. Every line must arrive once; the symbol
/// table must be full and `labels_not_interned_total` positive by the
/// 25,000th line; peak RSS below `RSS_BOUND`.
#[test]
fn hundred_thousand_files_keep_memory_bounded() {
    const FILES: usize = 100_000;
    const CREATE_BATCH: usize = 1_000;
    const UNDELIVERED_MAX: usize = 5_000;
    // What the daemon holds: its start-up buffers (batch arenas of
    // `batch_bytes`, the source's chunk pool, the sink's encode buffer;
    // about 15 MiB resident at start here, printed), a symbol table of at
    // most 20,000 strings (under 1 MiB of strings here), a ledger entry per
    // file seen (identity and path, about 150 bytes: 15 MiB for 100,000
    // files, kept for `positions_forget_after_ms`), at each position write
    // a record list and an encoded file of about 10 MiB each for 100,000
    // files, and the state of the at most 5,000 files followed at a time
    // (a few KiB each with their metric series). That is under 100 MiB;
    // 150 MiB leaves room for allocator slack. A leak of 1 KiB per file
    // seen, or per-file state kept after a file is released, crosses it.
    const RSS_BOUND: u64 = 150 << 20;
    let _one = one_at_a_time();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).expect("input directory");
    let done = dir.path().join("done");
    std::fs::create_dir(&done).expect("directory of delivered files");
    let output = dir.path().join("out.json");
    let text = format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"
label_symbols_max = 20000

[dispatcher]
batch_size = 1000
batch_timeout_ms = 20

[sources.app]
type = "file"
paths = ["{inputs}/*.log"]
max_files = 256
labels = {{ service = "many" }}

{sink}
"#,
        data = dir.path().join("data").display(),
        inputs = inputs.display(),
        sink = common::file_sink_table("out", &output, "json"),
    );
    let config = common::write_file(dir.path(), "many.toml", &text);
    let daemon = common::Daemon::start(&config);
    let pid = daemon.child.id();
    let rss_start = common::rss_of(pid);
    let mut rss_peak = rss_start;
    let path_of = |number: usize| inputs.join(format!("f{number:06}.log"));

    let mut seen = vec![0u8; FILES];
    let mut delivered = 0usize;
    let mut created = 0usize;
    let mut reader = OutputTail::new(&output);
    let mut creating = Duration::ZERO;
    let mut not_interned_early = None;
    let deadline = Instant::now() + Duration::from_secs(120);
    while delivered < FILES {
        assert!(
            Instant::now() < deadline,
            "{delivered} of {FILES} lines delivered ({created} files created)"
        );
        if created < FILES && created - delivered < UNDELIVERED_MAX {
            let batch_started = Instant::now();
            for number in created..(created + CREATE_BATCH).min(FILES) {
                std::fs::write(path_of(number), format!("line {number:06}\n")).expect("create");
            }
            created = (created + CREATE_BATCH).min(FILES);
            creating += batch_started.elapsed();
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
        for line in reader.new_lines() {
            let value: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
            let message = value["message"].as_str().expect("message");
            let number: usize = message
                .strip_prefix("line ")
                .and_then(|digits| digits.parse().ok())
                .unwrap_or_else(|| panic!("unexpected message {message:?}"));
            let path = path_of(number);
            assert_eq!(
                value["labels"]["file"].as_str(),
                Some(path.to_str().expect("UTF-8 path")),
                "the file label of line {number}: {line}"
            );
            assert_eq!(value["labels"]["service"], "many", "{line}");
            assert_eq!(value["labels"]["source_id"], "app", "{line}");
            if seen[number] == 0 {
                delivered += 1;
                // Moved out of the glob, not deleted: see the doc comment.
                std::fs::rename(&path, done.join(path.file_name().expect("a name")))
                    .expect("move a delivered file away");
            }
            seen[number] += 1;
        }
        rss_peak = rss_peak.max(common::rss_of(pid));
        if not_interned_early.is_none() && delivered >= 25_000 {
            let body = daemon.get("/metrics").1;
            not_interned_early = metric(&body, "log_capturer_labels_not_interned_total", &[]);
        }
    }
    let body = daemon.get("/metrics").1;
    let not_interned = metric(&body, "log_capturer_labels_not_interned_total", &[]).unwrap_or(0.0);
    let symbols = metric(&body, "log_capturer_label_symbols", &[]).unwrap_or(0.0);
    let open = metric(&body, "log_capturer_files_open", &[("source_id", "app")]).unwrap_or(0.0);
    rss_peak = rss_peak.max(common::rss_of(pid));
    let daemon_cpu = cpu_seconds(pid);
    daemon.stop();
    let duplicates = seen.iter().filter(|&&times| times > 1).count();
    println!(
        "{FILES} files: created in {creating:?}; all delivered in {:?}; symbols {symbols}, not interned {not_interned} (at 25,000 lines {not_interned_early:?}); files open at the end {open}; daemon CPU {daemon_cpu:.1} s; duplicates {duplicates}; RSS at start {} MiB, peak {} MiB (bound {} MiB)",
        started.elapsed(),
        rss_start >> 20,
        rss_peak >> 20,
        RSS_BOUND >> 20
    );
    assert!(
        not_interned_early.is_some_and(|count| count > 0.0),
        "past 20,000 symbols, file labels are carried inline"
    );
    assert!(symbols <= 20_000.0, "symbols {symbols}");
    assert!(open <= 256.0, "files open {open}");
    assert_eq!(duplicates, 0, "no crash, no duplicate");
    assert!(
        rss_peak < RSS_BOUND,
        "peak RSS {} MiB over the bound {} MiB",
        rss_peak >> 20,
        RSS_BOUND >> 20
    );
}

/// User and system CPU time of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Reads whole lines appended to a file since the last call.
struct OutputTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl OutputTail {
    fn new(path: &Path) -> OutputTail {
        OutputTail {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    fn new_lines(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        file.seek(SeekFrom::Start(self.offset)).expect("seek");
        let mut bytes = std::mem::take(&mut self.partial);
        let read = file.read_to_end(&mut bytes).expect("read output");
        self.offset += read as u64;
        let complete = bytes
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |at| at + 1);
        self.partial = bytes.split_off(complete);
        String::from_utf8(bytes)
            .expect("UTF-8 output")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Goal: a file created on the inode of a file deleted while the daemon
/// had it closed (`max_files`) is a new file: its lines are read from its
/// start, under its own `file` label. Method: `max_files = 1`; `a.log`
/// (one line) is read, then `b.log` makes the daemon close `a.log` for the
/// limit; `a.log` is deleted and files of its size are created until one
/// gets its inode (ext4 hands a freed inode out again at once; at most
/// 1,000 tries, and without a reuse there is nothing to check). Every
/// created file's line must arrive once, labelled with its own path.
#[test]
fn new_file_on_a_reused_inode_is_read() {
    use std::os::unix::fs::MetadataExt;
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).expect("input directory");
    let output = dir.path().join("out.json");
    let text = format!(
        "[daemon]\npin_threads = false\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[sources.app]\ntype = \"file\"\npaths = [\"{}/*.log\"]\nmax_files = 1\n\n{}",
        dir.path().join("data").display(),
        inputs.display(),
        common::file_sink_table("out", &output, "json"),
    );
    let config = common::write_file(dir.path(), "reuse.toml", &text);
    let first = common::write_file(&inputs, "a.log", "a000\n");
    let daemon = common::Daemon::start(&config);
    let mut tail = OutputTail::new(&output);
    let mut lines: Vec<(String, String)> = Vec::new();
    let mut take_output = |lines: &mut Vec<(String, String)>| {
        for line in tail.new_lines() {
            let value: serde_json::Value = serde_json::from_str(&line).expect("JSON");
            lines.push((
                value["labels"]["file"].as_str().expect("file").to_string(),
                value["message"].as_str().expect("message").to_string(),
            ));
        }
    };
    common::wait_until("a.log read", Duration::from_secs(10), || {
        take_output(&mut lines);
        lines.len() == 1
    });
    common::write_file(&inputs, "b.log", "b000\n");
    common::wait_until("b.log read", Duration::from_secs(10), || {
        take_output(&mut lines);
        lines.len() == 2
    });
    let inode = std::fs::metadata(&first).expect("a.log").ino();
    std::fs::remove_file(&first).expect("delete a.log");
    let mut created = Vec::new();
    let mut reused = None;
    for number in 0..1_000 {
        let name = format!("c{number:03}.log");
        let path = common::write_file(&inputs, &name, &format!("c{number:03}\n"));
        created.push(path.clone());
        if std::fs::metadata(&path).expect("created").ino() == inode {
            reused = Some(path);
            break;
        }
    }
    let Some(reused) = reused else {
        println!("no inode reused in 1,000 files on this file system: nothing to check");
        daemon.stop();
        return;
    };
    println!(
        "{} got the inode of the deleted a.log after {} files",
        reused.display(),
        created.len()
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    while lines.len() < 2 + created.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        take_output(&mut lines);
    }
    daemon.stop();
    take_output(&mut lines);
    for path in &created {
        let name = path.file_stem().expect("stem").to_str().expect("UTF-8");
        let arrived: Vec<&(String, String)> = lines
            .iter()
            .filter(|(_, message)| message == name)
            .collect();
        assert_eq!(
            arrived.len(),
            1,
            "the line of {} (reused inode: {}) arrived {} times: {arrived:?}",
            path.display(),
            *path == reused,
            arrived.len()
        );
        assert_eq!(
            arrived[0].0,
            path.to_str().expect("UTF-8"),
            "its file label"
        );
    }
}

/// Goal: SIGTERM stores the position of every line delivered, also when
/// the last batches hold more receipts (one per file) than a commit ring
/// (1,024): otherwise a clean restart sends those lines again. Method:
/// 6,000 files of one line each, so that each batch of 1,000 lines holds
/// 1,000 receipts; a Kafka sink whose broker answers after 400 ms, so that
/// the batches complete together at the end; SIGTERM once every line is
/// batched. Every file's stored position must then be at its end.
#[test]
fn sigterm_stores_every_position_of_many_files() {
    const FILES: usize = 6_000;
    let _one = one_at_a_time();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("many", 8, 1).expect("topic");
    cluster
        .broker_round_trip_time(1, Duration::from_millis(400))
        .expect("round trip time");
    let dir = tempfile::tempdir().expect("tempdir");
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).expect("input directory");
    for number in 0..FILES {
        std::fs::write(
            inputs.join(format!("f{number:05}.log")),
            format!("line {number:05}\n"),
        )
        .expect("create");
    }
    let data_dir = dir.path().join("data");
    let text = format!(
        "[daemon]\npin_threads = false\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[dispatcher]\nbatch_size = 1000\nbatch_timeout_ms = 20\n\n[sources.app]\ntype = \"file\"\npaths = [\"{}/*.log\"]\nmax_files = 8192\n\n{}",
        data_dir.display(),
        inputs.display(),
        common::kafka_sink_table(&cluster.bootstrap_servers(), "many", "encoding = \"raw\""),
    );
    let config = common::write_file(dir.path(), "many.toml", &text);
    let daemon = common::Daemon::start(&config);
    common::wait_until("every line batched", Duration::from_secs(60), || {
        let body = daemon.get("/metrics").1;
        metric(
            &body,
            "log_capturer_logs_processed_total",
            &[("source_id", "app")],
        ) == Some(FILES as f64)
    });
    daemon.stop();
    let bytes = std::fs::read(
        data_dir
            .join("positions")
            .join(positions::escape_source_id("app")),
    )
    .expect("position file");
    let records = positions::decode(&bytes).records;
    let behind: Vec<&PathBuf> = records
        .iter()
        // Each file holds one line of 11 bytes.
        .filter(|record| record.offset != 11)
        .map(|record| &record.path)
        .collect();
    println!(
        "{} positions stored, {} not past their line",
        records.len(),
        behind.len()
    );
    assert_eq!(records.len(), FILES);
    assert!(
        behind.is_empty(),
        "{} files delivered but not stored at their end, e.g. {:?}",
        behind.len(),
        &behind[..behind.len().min(3)]
    );
}

/// Goal: a line that can be neither delivered nor written to the DLQ (its
/// directory cannot be created: a full or broken disk) does not move its
/// file's position, so a restart reads it again: counted as a DLQ write
/// error, and not lost. Method: 1,000 lines delivered; the broker goes
/// down; 5,000 more lines fail their attempts and cannot be stored (the
/// DLQ directory lies under a regular file); the stored position must stay
/// at the 1,000th line; SIGTERM; the DLQ directory is made usable, the
/// broker comes up, the daemon restarts: the topic holds every number.
#[test]
fn lines_the_dlq_cannot_store_are_read_again_after_a_restart() {
    const BEFORE: u64 = 1_000;
    const DURING: u64 = 5_000;
    let _one = one_at_a_time();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("nodlq", 4, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("input");
    let data_dir = dir.path().join("data");
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "a file where the DLQ directory should be").expect("blocker");
    let config_text = |dlq_dir: &Path| {
        format!(
            r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[dispatcher]
batch_size = 500
batch_timeout_ms = 20

[retry]
max_attempts = 1
base_delay_ms = 10
max_delay_ms = 10

[dlq]
dir = "{dlq}"

[sources.app]
type = "file"
paths = ["{input}"]

[sinks.kafka]
type = "kafka"
brokers = "{bootstrap}"
topic = "nodlq"
encoding = "raw"
probe_interval_ms = 200
"#,
            data = data_dir.display(),
            dlq = dlq_dir.display(),
            input = input.display(),
        )
    };
    let config = common::write_file(dir.path(), "nodlq.toml", &config_text(&blocker.join("dlq")));
    let append = |first, count| common::append_numbered_lines(&input, first, count);
    let daemon = common::Daemon::start(&config);
    append(0, BEFORE);
    common::wait_until("the first lines' position", Duration::from_secs(30), || {
        stored_position(&data_dir, &input) == Some(BEFORE * LINE_BYTES)
    });
    cluster.broker_down(1).expect("broker down");
    append(BEFORE, DURING);
    common::wait_until(
        "every line failed to store",
        Duration::from_secs(60),
        || {
            let body = daemon.get("/metrics").1;
            metric(
                &body,
                "log_capturer_dlq_write_errors_total",
                &[("sink", "kafka")],
            )
            .is_some_and(|errors| errors >= DURING as f64)
        },
    );
    // Two position intervals: the position must not have moved.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        stored_position(&data_dir, &input),
        Some(BEFORE * LINE_BYTES),
        "the position stays before the lines the DLQ could not hold"
    );
    daemon.stop();
    assert_eq!(
        stored_position(&data_dir, &input),
        Some(BEFORE * LINE_BYTES),
        "nor does the shutdown move it"
    );

    let config = common::write_file(
        dir.path(),
        "nodlq.toml",
        &config_text(&dir.path().join("dlq")),
    );
    cluster.broker_up(1).expect("broker up");
    let daemon = common::Daemon::start(&config);
    common::wait_until(
        "the restart delivers the rest",
        Duration::from_secs(60),
        || stored_position(&data_dir, &input) == Some((BEFORE + DURING) * LINE_BYTES),
    );
    daemon.stop();
    let tally = consume_topic(
        &bootstrap,
        "nodlq",
        BEFORE + DURING,
        Duration::from_secs(60),
    );
    tally.assert_none_lost();
    println!(
        "lines the DLQ could not store: none lost; duplicates {}",
        tally.duplicates()
    );
}
