//! The Loki sink against the real Loki of `../shared/loki` (Grafana Loki
//! 2.7.3), through the daemon binary as an operator runs it: what the
//! daemon reads is read back from Loki with `query_range`, every line once,
//! with the stream labels configured; Loki killed and restarted under load
//! (its WAL on) loses nothing; Kafka beside it does not stall while Loki is
//! down; identical lines are all kept; a label per file gives a stream per
//! file; an entry too far behind its stream is refused by Loki and kept in
//! `rejected/`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::loki::Loki;
use common::{Daemon, sample};
use log_capturer::clock::now_ns;

const SECOND_NS: u64 = 1_000_000_000;

/// A `[sinks.ID]` table of a Loki sink pushing to `loki`, plus `keys`.
fn loki_sink_table(id: &str, loki: &Loki, keys: &str) -> String {
    format!(
        "[sinks.{id}]\ntype = \"loki\"\nurl = \"http://{}/loki/api/v1/push\"\n{keys}\n",
        loki.http
    )
}

/// The value of `series` in the daemon's metrics; fails when it is absent.
fn metric(daemon: &Daemon, series: &str) -> u64 {
    let (status, body) = daemon.get("/metrics");
    assert_eq!(status, 200, "{body}");
    sample(&body, series).unwrap_or_else(|| panic!("no series {series} in:\n{body}")) as u64
}

/// Lines sink `id` (of `sink_type`) delivered: `log_capturer_sink_logs_total`
/// with `status="success"` (or `"error"`: handed to the DLQ).
fn sink_lines(daemon: &Daemon, id: &str, sink_type: &str, status: &str) -> u64 {
    metric(
        daemon,
        &format!(
            "log_capturer_sink_logs_total{{sink=\"{id}\",sink_type=\"{sink_type}\",status=\"{status}\"}}"
        ),
    )
}

fn loki_errors(daemon: &Daemon, id: &str, error_type: &str) -> u64 {
    metric(
        daemon,
        &format!("log_capturer_loki_error_type_total{{sink=\"{id}\",error_type=\"{error_type}\"}}"),
    )
}

/// Every `log_capturer_loki_error_type_total` series of sink `id` that is
/// not zero, as `type=count`.
fn nonzero_loki_errors(daemon: &Daemon, id: &str) -> Vec<String> {
    [
        "transport",
        "timeout",
        "rate_limited",
        "server_error",
        "unauthorized",
        "client_error",
        "too_old",
        "too_new",
        "line_too_long",
        "labels",
        "bad_request",
    ]
    .iter()
    .map(|error| (error, loki_errors(daemon, id, error)))
    .filter(|(_, count)| *count > 0)
    .map(|(error, count)| format!("{error}={count}"))
    .collect()
}

/// Polls `condition` every 100 ms (the metrics endpoint renders every
/// series), failing after `timeout` with `state()` in the message.
fn poll_until(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
    state: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: {}",
            state()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number of a line written by `common::write_numbered_lines`, if
/// `line` is one, whole.
fn number_of(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("seq=")?;
    if line.len() != common::NUMBERED_LINE_BYTES
        || rest.as_bytes().get(12) != Some(&b' ')
        || !rest[13..].bytes().all(|byte| byte == b'x')
    {
        return None;
    }
    rest[..12].parse().ok()
}

/// How often each numbered line `0..total` was seen.
struct Tally {
    seen: Vec<u16>,
    /// Entries that are not a whole numbered line below `total`.
    foreign: Vec<String>,
}

impl Tally {
    fn new(total: u64) -> Tally {
        Tally {
            seen: vec![0; total as usize],
            foreign: Vec::new(),
        }
    }

    fn add(&mut self, line: &str) {
        match number_of(line).filter(|number| *number < self.seen.len() as u64) {
            Some(number) => {
                let count = &mut self.seen[number as usize];
                *count = count.saturating_add(1);
            }
            None if self.foreign.len() < 5 => self.foreign.push(line.to_string()),
            None => {}
        }
    }

    fn missing(&self) -> Vec<u64> {
        self.numbers_where(|count| count == 0)
    }

    /// Numbers seen more than once.
    fn duplicated(&self) -> Vec<u64> {
        self.numbers_where(|count| count > 1)
    }

    fn numbers_where(&self, keep: impl Fn(u16) -> bool) -> Vec<u64> {
        (0..self.seen.len() as u64)
            .filter(|number| keep(self.seen[*number as usize]))
            .collect()
    }

    /// Fails unless every number was seen exactly once.
    fn assert_exactly_once(&self, what: &str) {
        let missing = self.missing();
        let duplicated = self.duplicated();
        assert!(
            missing.is_empty() && duplicated.is_empty() && self.foreign.is_empty(),
            "{what}: {} missing (first {:?}), {} duplicated (first {:?}), foreign lines {:?}",
            missing.len(),
            &missing[..missing.len().min(10)],
            duplicated.len(),
            &duplicated[..duplicated.len().min(10)],
            self.foreign
        );
    }
}

/// Writes numbered lines `0..count` to a new file at `path`.
fn write_numbered_file(path: &Path, count: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create input"));
    common::write_numbered_lines(&mut file, 0, count);
    file.flush().expect("flush input");
}

/// A thread appending numbered lines `0..total` to `input` at `per_second`
/// (in slices every 10 ms, on an absolute schedule so that a slow write is
/// caught up); it returns when all are written or `stop` is set, with the
/// count written.
fn paced_writer(
    input: PathBuf,
    total: u64,
    per_second: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .expect("open input");
        let started = Instant::now();
        let mut written = 0u64;
        let mut buffer = Vec::new();
        while written < total && !stop.load(Ordering::Relaxed) {
            let due = ((started.elapsed().as_secs_f64() * per_second as f64) as u64).min(total);
            if due > written {
                buffer.clear();
                common::write_numbered_lines(&mut buffer, written, due - written);
                file.write_all(&buffer).expect("append");
                written = due;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        written
    })
}

/// Reads every entry of `selector` back and tallies the numbered lines
/// `0..total`; `check(labels, timestamp)` is called for each entry.
fn tally_from_loki(
    loki: &Loki,
    selector: &str,
    from_ns: u64,
    total: u64,
    mut check: impl FnMut(&serde_json::Value, u64),
) -> Tally {
    let mut tally = Tally::new(total);
    loki.scan(
        selector,
        from_ns,
        now_ns() + 60 * SECOND_NS,
        |labels, timestamp, line| {
            check(labels, timestamp);
            tally.add(line);
        },
    );
    tally
}

/// Goal: a million numbered lines from a file arrive in Loki exactly once,
/// in both push formats (protobuf with snappy, the default; JSON with
/// gzip), each entry in the stream the config names: `labels = ["source_id",
/// "service"]` plus a static `env`, nothing else. Times strictly increase
/// along each stream. Method: two daemons at once, one per format, each
/// over its own 1M-line file, into one Loki; wait for their success
/// counters, then read both streams back with paged `query_range` queries.
/// Prints how long delivery and read-back took.
#[test]
fn million_lines_arrive_once_in_both_formats_with_the_configured_labels() {
    const LINES: u64 = 1_000_000;
    let loki = Loki::start();
    let from_ns = now_ns() - 60 * SECOND_NS;
    let formats = [
        ("proto", ""),
        ("json", "format = \"json\"\ncompression = \"gzip\""),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut configs = Vec::new();
    for (env, keys) in formats {
        let own = dir.path().join(env);
        std::fs::create_dir(&own).expect("mkdir");
        let input = own.join("input.log");
        write_numbered_file(&input, LINES);
        let sinks = loki_sink_table(
            "loki",
            &loki,
            &format!(
                "labels = [\"source_id\", \"service\"]\nstatic_labels = {{ env = \"{env}\" }}\n{keys}"
            ),
        );
        let text = common::file_source_config(&input, "", &sinks);
        configs.push(common::write_file(&own, "config.toml", &text));
    }

    let started = Instant::now();
    let daemons: Vec<Daemon> = configs.iter().map(|path| Daemon::start(path)).collect();
    let mut done: [Option<Duration>; 2] = [None, None];
    poll_until(
        "a million lines delivered by each daemon",
        Duration::from_secs(300),
        || {
            for (index, daemon) in daemons.iter().enumerate() {
                if done[index].is_none() && sink_lines(daemon, "loki", "loki", "success") >= LINES {
                    done[index] = Some(started.elapsed());
                }
            }
            done.iter().all(Option::is_some)
        },
        || {
            daemons
                .iter()
                .map(|daemon| {
                    format!(
                        "{} sent, errors {:?}",
                        sink_lines(daemon, "loki", "loki", "success"),
                        nonzero_loki_errors(daemon, "loki")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    for ((env, _), (daemon, took)) in formats.iter().zip(daemons.iter().zip(done)) {
        let requests = metric(daemon, "log_capturer_loki_requests_total{sink=\"loki\"}");
        println!(
            "{env}: 1M lines delivered in {:.1} s ({:.0} lines/s) with {requests} requests",
            took.expect("done").as_secs_f64(),
            LINES as f64 / took.expect("done").as_secs_f64()
        );
        assert_eq!(
            sink_lines(daemon, "loki", "loki", "success"),
            LINES,
            "{env}"
        );
        assert_eq!(sink_lines(daemon, "loki", "loki", "error"), 0, "{env}");
        assert_eq!(nonzero_loki_errors(daemon, "loki"), Vec::<String>::new());
        assert_eq!(
            metric(daemon, "log_capturer_loki_streams{sink=\"loki\"}"),
            1,
            "{env}: one stream"
        );
    }
    for daemon in daemons {
        daemon.stop();
    }

    for (env, _) in formats {
        let reading = Instant::now();
        let expected = serde_json::json!({"env": env, "service": "app", "source_id": "app"});
        let mut wrong_labels = Vec::new();
        let mut last_ns = 0;
        let mut not_increasing = 0u64;
        let tally = tally_from_loki(
            &loki,
            &format!("{{env=\"{env}\"}}"),
            from_ns,
            LINES,
            |labels, timestamp| {
                if *labels != expected && wrong_labels.len() < 3 {
                    wrong_labels.push(labels.clone());
                }
                if timestamp <= last_ns {
                    not_increasing += 1;
                }
                last_ns = timestamp;
            },
        );
        println!(
            "{env}: read back 1M entries in {:.1} s",
            reading.elapsed().as_secs_f64()
        );
        tally.assert_exactly_once(env);
        assert!(wrong_labels.is_empty(), "{env}: streams {wrong_labels:?}");
        assert_eq!(not_increasing, 0, "{env}: times not increasing");
    }
}

/// Goal: 10,000 identical lines are 10,000 entries in Loki, not one: Loki
/// drops an entry whose stream, time and line equal one it holds, and
/// lines read together share their read time, so the sink sends each with
/// a time 1 ns past the last one sent on its stream. Method: a file of
/// 10,000 copies of one line; read the stream back: 10,000 entries, the
/// line as written, times strictly increasing, all within the test's run.
#[test]
fn identical_lines_are_all_kept_with_increasing_times() {
    const LINES: u64 = 10_000;
    const TEXT: &str = "the very same line, again and again";
    let loki = Loki::start();
    let from_ns = now_ns();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(
        dir.path(),
        "input.log",
        &format!("{TEXT}\n").repeat(LINES as usize),
    );
    let sinks = loki_sink_table(
        "loki",
        &loki,
        "labels = [\"source_id\"]\nstatic_labels = { case = \"identical\" }",
    );
    let config = common::write_file(
        dir.path(),
        "config.toml",
        &common::file_source_config(&input, "", &sinks),
    );
    let daemon = Daemon::start(&config);
    poll_until(
        "10,000 lines delivered",
        Duration::from_secs(30),
        || sink_lines(&daemon, "loki", "loki", "success") >= LINES,
        || format!("{:?}", nonzero_loki_errors(&daemon, "loki")),
    );
    daemon.stop();
    let to_ns = now_ns();

    let entries = loki.entries("{case=\"identical\"}", from_ns, to_ns + 60 * SECOND_NS);
    assert_eq!(entries.len() as u64, LINES, "entries in Loki");
    let mut previous = 0;
    for (labels, timestamp, line) in &entries {
        assert_eq!(line, TEXT);
        assert_eq!(
            *labels,
            serde_json::json!({"case": "identical", "source_id": "app"})
        );
        assert!(*timestamp > previous, "{timestamp} after {previous}");
        assert!(
            (from_ns..to_ns).contains(timestamp),
            "{timestamp} outside the run {from_ns}..{to_ns}"
        );
        previous = *timestamp;
    }
    // And Loki's own count agrees (a metric query, not the entries read).
    let query = format!(
        "/loki/api/v1/query?query={}&time={}",
        "sum(count_over_time(%7Bcase%3D%22identical%22%7D%5B1h%5D))",
        to_ns + SECOND_NS
    );
    let (status, body) = loki.request("GET", &query, &[], &[]).expect("query");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(
        value["data"]["result"][0]["value"][1],
        serde_json::json!(LINES.to_string()),
        "{value}"
    );
}

/// An RFC 5424 message at `unix_s`, octet-counted, whose text ends with
/// `marker`.
fn syslog_frame(unix_s: i64, marker: &str) -> Vec<u8> {
    let time = jiff::Timestamp::from_second(unix_s).expect("a time");
    let message = format!("<165>1 {time} web01 app 1 ID - {marker}");
    format!("{} {message}", message.len()).into_bytes()
}

/// Runs `log-capturer ARGS --config CONFIG`; fails unless it exits 0.
fn run_cli(args: &[&str], config: &Path) -> String {
    let output = Command::new(common::binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run log-capturer");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Goal: an entry more than an hour behind the newest entry Loki holds for
/// its stream (Loki 2.7.3's out-of-order window: `max_chunk_age / 2`) is
/// refused by Loki with a 400 "entry too far behind"; the sink stores that
/// entry alone in `rejected/` with reason `entry_too_old`
/// (`log_capturer_loki_error_type_total{error_type="too_old"}` counts it)
/// and the other entries of the same request are in Loki. Method: the
/// stream is given an entry at now by a direct push (another writer, as a
/// previous run of the daemon would be), then one TCP write to a syslog
/// source carries, in this order, a message dated 2 h ago and five dated
/// now (a syslog message keeps its own time). The old one must come first:
/// a live entry is raised past the last time the sink sent on its stream,
/// so after a newer one it would be sent 1 ns later and accepted.
#[test]
fn an_entry_too_far_behind_its_stream_is_rejected_and_the_rest_arrive() {
    let loki = Loki::start();
    let now_s = (now_ns() / SECOND_NS) as i64;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let sinks = loki_sink_table(
        "loki",
        &loki,
        "labels = [\"source_id\"]\nstatic_labels = { case = \"behind\" }",
    );
    let config = common::write_file(
        dir.path(),
        "config.toml",
        &format!(
            r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[dispatcher]
batch_timeout_ms = 50

[sources.sys]
type = "syslog"
tcp = "127.0.0.1:{port}"

{sinks}
"#,
            data = dir.path().join("data").display()
        ),
    );

    // The stream's newest entry in Loki: now.
    let newest_ns = now_s as u64 * SECOND_NS;
    let body = serde_json::json!({"streams": [{
        "stream": {"case": "behind", "source_id": "sys"},
        "values": [[newest_ns.to_string(), "pushed directly"]],
    }]});
    let (status, text) = loki.push("application/json", body.to_string().as_bytes());
    assert_eq!(status, 204, "{text}");

    let daemon = Daemon::start(&config);
    let mut frames = syslog_frame(now_s - 2 * 3600, "old-one");
    for number in 0..5 {
        frames.extend(syslog_frame(now_s, &format!("new-{number}")));
    }
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(&frames).expect("send");
    drop(stream);
    let rejected_old = "log_capturer_dlq_rejected_total{sink=\"loki\",reason=\"entry_too_old\"}";
    poll_until(
        "five lines delivered and one rejected",
        Duration::from_secs(20),
        || {
            sink_lines(&daemon, "loki", "loki", "success") == 5
                && metric(&daemon, rejected_old) == 1
        },
        || {
            format!(
                "{} delivered, {} rejected, errors {:?}",
                sink_lines(&daemon, "loki", "loki", "success"),
                metric(&daemon, rejected_old),
                nonzero_loki_errors(&daemon, "loki")
            )
        },
    );
    assert!(loki_errors(&daemon, "loki", "too_old") > 0);
    let requests = metric(&daemon, "log_capturer_loki_requests_total{sink=\"loki\"}");
    println!(
        "requests: {requests}, errors {:?}",
        nonzero_loki_errors(&daemon, "loki")
    );
    assert!(
        (2..=6).contains(&requests),
        "one request, then a few halves: {requests}"
    );
    assert_eq!(
        metric(&daemon, "log_capturer_dlq_entries_total{sink=\"loki\"}"),
        0,
        "nothing in the replayable DLQ"
    );
    let log: Vec<String> = daemon.stderr.try_iter().collect();
    daemon.stop();
    assert!(
        log.iter().any(|line| line.contains("too far behind")),
        "the sink logs Loki's reason: {log:#?}"
    );

    // In Loki: the direct entry and the five new ones, not the old one.
    let lines: Vec<String> = loki
        .entries(
            "{case=\"behind\"}",
            (now_s as u64 - 3 * 3600) * SECOND_NS,
            now_ns() + 60 * SECOND_NS,
        )
        .into_iter()
        .map(|(_, _, line)| line)
        .collect();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    assert_eq!(lines[0], "pushed directly");
    for number in 0..5 {
        let marker = format!("new-{number}");
        assert_eq!(
            lines.iter().filter(|line| line.ends_with(&marker)).count(),
            1,
            "{marker}: {lines:#?}"
        );
    }

    // In rejected/: the old one alone, with its own time and Loki's reason.
    let list = run_cli(&["dlq", "list"], &config);
    assert!(list.contains("loki/rejected"), "{list}");
    let dump = run_cli(&["dlq", "dump", "--json"], &config);
    let records: Vec<serde_json::Value> = dump
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON record"))
        .collect();
    assert_eq!(records.len(), 1, "{dump}");
    let record = &records[0];
    assert_eq!(record["reason"], "entry_too_old", "{record}");
    assert_eq!(record["rejected"], true, "{record}");
    assert_eq!(record["sink"], "loki", "{record}");
    assert!(
        record["message"]
            .as_str()
            .expect("message")
            .ends_with("old-one"),
        "{record}"
    );
    let old = jiff::Timestamp::from_second(now_s - 2 * 3600)
        .expect("a time")
        .to_string();
    assert!(
        record["timestamp"]
            .as_str()
            .expect("timestamp")
            .starts_with(old.trim_end_matches('Z')),
        "stored with its own time {old}: {record}"
    );
}

/// Files of the unbounded-label test (the issue's figure).
const LABELLED_FILES: usize = 10_000;
const LINES_PER_FILE: usize = 3;

/// Goal: `labels = ["source_id", "file"]` over a glob of 10,000 files is
/// allowed but warned about: `check-config` names `labels[1]` and "file";
/// the daemon runs, every line arrives once in the stream of its own file,
/// and `log_capturer_loki_streams` is the number of files. Method: 10,000
/// files of three lines each under one glob; Loki's per-tenant stream
/// limit (5,000 by default, answered with 429) is lifted for this Loki.
/// Prints how long delivery took.
#[test]
fn a_label_per_file_makes_a_stream_per_file_with_a_warning() {
    let loki = Loki::start_with(|yaml| {
        yaml.replace(
            "limits_config:\n",
            "limits_config:\n  max_global_streams_per_user: 0\n",
        )
    });
    let from_ns = now_ns();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = dir.path().join("files");
    std::fs::create_dir(&files).expect("mkdir");
    for index in 0..LABELLED_FILES {
        let text: String = (0..LINES_PER_FILE)
            .map(|line| format!("file {index:05} line {line}\n"))
            .collect();
        std::fs::write(files.join(format!("{index:05}.log")), text).expect("write file");
    }
    let sinks = loki_sink_table(
        "loki",
        &loki,
        "labels = [\"source_id\", \"file\"]\nstatic_labels = { case = \"files\" }",
    );
    let config = common::write_file(
        dir.path(),
        "config.toml",
        &common::file_source_config(&files.join("*.log"), "", &sinks),
    );

    let output = Command::new(common::binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("check-config");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    let warning = said
        .lines()
        .find(|line| line.contains("labels[1]"))
        .unwrap_or_else(|| panic!("no warning names labels[1]: {said}"));
    assert!(warning.contains("\"file\""), "{warning}");
    assert!(!warning.contains("  "), "a run of spaces: {warning}");
    println!("check-config: {warning}");

    let total = (LABELLED_FILES * LINES_PER_FILE) as u64;
    let started = Instant::now();
    let daemon = Daemon::start(&config);
    poll_until(
        "every line of every file delivered",
        Duration::from_secs(120),
        || sink_lines(&daemon, "loki", "loki", "success") >= total,
        || {
            format!(
                "{} delivered, {} streams, errors {:?}",
                sink_lines(&daemon, "loki", "loki", "success"),
                metric(&daemon, "log_capturer_loki_streams{sink=\"loki\"}"),
                nonzero_loki_errors(&daemon, "loki")
            )
        },
    );
    let took = started.elapsed();
    assert_eq!(sink_lines(&daemon, "loki", "loki", "success"), total);
    assert_eq!(
        metric(&daemon, "log_capturer_loki_streams{sink=\"loki\"}"),
        LABELLED_FILES as u64
    );
    assert_eq!(nonzero_loki_errors(&daemon, "loki"), Vec::<String>::new());
    let requests = metric(&daemon, "log_capturer_loki_requests_total{sink=\"loki\"}");
    daemon.stop();
    println!(
        "{LABELLED_FILES} files, {total} lines delivered in {:.1} s with {requests} requests",
        took.as_secs_f64()
    );

    // Fewer entries than a page: times may repeat across streams.
    assert!(total < 50_000);
    let entries = loki.entries("{case=\"files\"}", from_ns, now_ns() + 60 * SECOND_NS);
    let mut seen = vec![0u8; total as usize];
    for (labels, _, line) in &entries {
        let (index, number) = line
            .strip_prefix("file ")
            .and_then(|rest| rest.split_once(" line "))
            .and_then(|(index, number)| {
                Some((index.parse::<usize>().ok()?, number.parse::<usize>().ok()?))
            })
            .unwrap_or_else(|| panic!("a line of a file: {line:?}"));
        assert!(index < LABELLED_FILES && number < LINES_PER_FILE, "{line}");
        let path = files.join(format!("{index:05}.log"));
        assert_eq!(
            *labels,
            serde_json::json!({"case": "files", "file": path.display().to_string(), "source_id": "app"}),
            "{line}"
        );
        seen[index * LINES_PER_FILE + number] += 1;
    }
    let wrong: Vec<usize> = (0..seen.len()).filter(|at| seen[*at] != 1).collect();
    assert!(
        wrong.is_empty(),
        "{} lines not seen once (first {:?})",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    let streams: std::collections::HashSet<String> = entries
        .iter()
        .map(|(labels, _, _)| labels.to_string())
        .collect();
    assert_eq!(streams.len(), LABELLED_FILES);
}

/// A daemon tailing a new empty `input.log` into a Loki sink whose stream
/// is `{case=CASE, source_id="app"}`, with the breaker probing every 200
/// ms, 2 s requests and the outage tests' retries and DLQ.
fn start_outage_daemon(loki: &Loki, case: &str) -> (tempfile::TempDir, PathBuf, Daemon) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(dir.path(), "input.log", "");
    let sinks = loki_sink_table(
        "loki",
        loki,
        &format!(
            "labels = [\"source_id\"]\nstatic_labels = {{ case = \"{case}\" }}\nprobe_interval_ms = 200\nrequest_timeout_ms = 2000"
        ),
    );
    let config = common::write_file(
        dir.path(),
        "config.toml",
        &common::file_source_config(&input, "", &format!("{sinks}\n{OUTAGE_RETRY_AND_DLQ}")),
    );
    let daemon = Daemon::start(&config);
    (dir, input, daemon)
}

/// `[retry]` and `[dlq]` of the outage tests: a few quick retries, then the
/// DLQ, replayed automatically one second after Loki answers again.
const OUTAGE_RETRY_AND_DLQ: &str = r#"
[retry]
max_batches = 16
base_delay_ms = 200
max_delay_ms = 1000
max_attempts = 4

[dlq]
segment_bytes = 16777216
auto_replay = true
replay_after_ms = 1000
replay_rate = 100000
"#;

/// The DLQ's state for a failure message.
fn dlq_state(daemon: &Daemon, id: &str) -> String {
    let (_, body) = daemon.get("/metrics");
    let series = |name: &str| sample(&body, name).unwrap_or(-1.0) as i64;
    format!(
        "success {}, to DLQ {}, stored {}, on disk {}, replayed {} (failed {}), dropped {}, breaker {}",
        series(&format!(
            "log_capturer_sink_logs_total{{sink=\"{id}\",sink_type=\"loki\",status=\"success\"}}"
        )),
        series(&format!(
            "log_capturer_sink_logs_total{{sink=\"{id}\",sink_type=\"loki\",status=\"error\"}}"
        )),
        series(&format!("log_capturer_dlq_entries_total{{sink=\"{id}\"}}")),
        series(&format!("log_capturer_dlq_entries{{sink=\"{id}\"}}")),
        series(&format!(
            "log_capturer_dlq_reprocess_attempts_total{{sink=\"{id}\",result=\"success\"}}"
        )),
        series(&format!(
            "log_capturer_dlq_reprocess_attempts_total{{sink=\"{id}\",result=\"failure\"}}"
        )),
        series(&format!("log_capturer_dlq_dropped_total{{sink=\"{id}\"}}")),
        series(&format!(
            "log_capturer_loki_circuit_breaker_state{{sink=\"{id}\"}}"
        )),
    )
}

/// True once every line the Loki sink `id` took was delivered live or
/// stored in the DLQ, and every stored one was replayed.
fn all_delivered_or_replayed(daemon: &Daemon, id: &str, lines: u64) -> bool {
    let live = sink_lines(daemon, id, "loki", "success");
    let stored = sink_lines(daemon, id, "loki", "error");
    let replayed = metric(
        daemon,
        &format!("log_capturer_dlq_reprocess_attempts_total{{sink=\"{id}\",result=\"success\"}}"),
    );
    let on_disk = metric(
        daemon,
        &format!("log_capturer_dlq_entries{{sink=\"{id}\"}}"),
    );
    live + stored >= lines && replayed >= stored && on_disk == 0
}

/// Goal: Loki killed with SIGKILL for 10 s while lines come at 50,000/s,
/// then started again on the same data directory and ports with its WAL
/// on, loses none of them: what Loki acknowledged before the kill is in
/// its WAL, what the sink could not deliver went through the retries to
/// the DLQ (kept with the time it was first sent with) and is replayed
/// automatically once Loki answers. Loki drops an entry equal to one it
/// holds, so the retried and replayed requests that Loki had half-stored
/// add nothing: every line is in Loki exactly once. Method: a writer
/// thread appends a million numbered lines at 50,000/s (20 s); Loki is
/// killed at 5 s and restarted at 15 s; once the daemon has delivered or
/// replayed everything, the stream is read back. Prints the figures.
#[test]
fn loki_killed_under_load_and_restarted_with_its_wal_loses_nothing() {
    const LINES: u64 = 1_000_000;
    const RATE: u64 = 50_000;
    let mut loki = Loki::start_with_wal();
    let from_ns = now_ns();
    let (_dir, input, daemon) = start_outage_daemon(&loki, "crash");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let writer = paced_writer(input.clone(), LINES, RATE, Arc::clone(&stop));
    let _stop_writer = StopOnDrop(Arc::clone(&stop));

    std::thread::sleep(Duration::from_secs(5).saturating_sub(started.elapsed()));
    let before_kill = sink_lines(&daemon, "loki", "loki", "success");
    loki.kill();
    let killed_at = started.elapsed();
    std::thread::sleep(Duration::from_secs(15).saturating_sub(started.elapsed()));
    let during = dlq_state(&daemon, "loki");
    let transport = loki_errors(&daemon, "loki", "transport");
    let replay_took = loki.restart(Duration::from_secs(60));
    let restarted_at = started.elapsed();
    let written = writer.join().expect("writer");
    let written_at = started.elapsed();
    assert_eq!(written, LINES, "the writer kept its pace");
    assert!(transport > 0, "the sink saw Loki gone: {during}");

    poll_until(
        "every line delivered or replayed",
        Duration::from_secs(120),
        || all_delivered_or_replayed(&daemon, "loki", LINES),
        || dlq_state(&daemon, "loki"),
    );
    let settled_at = started.elapsed();
    let settled = dlq_state(&daemon, "loki");
    let errors = nonzero_loki_errors(&daemon, "loki");
    daemon.stop();

    let mut tally = tally_from_loki(&loki, "{case=\"crash\"}", from_ns, LINES, |_, _| {});
    // What the daemon counts as delivered, Loki has answered 204 for; give
    // its ingester a moment should a query race the last push.
    if !tally.missing().is_empty() {
        std::thread::sleep(Duration::from_secs(2));
        tally = tally_from_loki(&loki, "{case=\"crash\"}", from_ns, LINES, |_, _| {});
    }
    let missing = tally.missing();
    let duplicated = tally.duplicated();
    println!(
        "delivered before the kill: {before_kill}; killed at {:.1} s; during the outage: {during}; \
         restarted at {:.1} s (ready in {:.1} s, WAL replay); writer done at {:.1} s; \
         all delivered or replayed at {:.1} s: {settled}; sink errors {errors:?}; \
         in Loki: {} missing, {} duplicated (first {:?})",
        killed_at.as_secs_f64(),
        restarted_at.as_secs_f64(),
        replay_took.as_secs_f64(),
        written_at.as_secs_f64(),
        settled_at.as_secs_f64(),
        missing.len(),
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)],
    );
    tally.assert_exactly_once("after the kill and restart");
}

/// Sets its flag when dropped: stops a writer thread when a test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Goal: Kafka and Loki fed from one file source both get every line, and
/// a Loki outage does not slow Kafka down: while Loki is killed for 10 s,
/// Kafka keeps receiving new lines at the writer's pace (no gap of 2 s or
/// more, at least 80% of the lines written meanwhile), and Loki's lines
/// go through retries to the DLQ and arrive after Loki is restarted (WAL
/// on, same data directory and ports). Method: a writer appends 300,000
/// numbered lines at 10,000/s (30 s) to a file followed by a daemon with a
/// Kafka sink (librdkafka's mock cluster in this process, 32 partitions:
/// its broker keeps 5 MiB per partition) and a Loki sink; a consumer
/// thread notes when each Kafka message arrives; Loki is killed at 10 s
/// and restarted at 20 s. Prints the figures.
#[test]
fn kafka_keeps_its_pace_while_loki_is_down_and_both_get_every_line() {
    const LINES: u64 = 300_000;
    const RATE: u64 = 10_000;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("logs", 32, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let mut loki = Loki::start_with_wal();
    let from_ns = now_ns();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(dir.path(), "input.log", "");
    let sinks = format!(
        "{}\n{}\n{OUTAGE_RETRY_AND_DLQ}",
        common::kafka_sink_table(
            &bootstrap,
            "logs",
            "encoding = \"raw\"\nprobe_interval_ms = 200"
        ),
        loki_sink_table(
            "loki",
            &loki,
            "labels = [\"source_id\"]\nstatic_labels = { case = \"beside_kafka\" }\nprobe_interval_ms = 200\nrequest_timeout_ms = 2000",
        )
    );
    let config = common::write_file(
        dir.path(),
        "config.toml",
        &common::file_source_config(&input, "", &sinks),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let _stop_threads = StopOnDrop(Arc::clone(&stop));
    let consumer = {
        let bootstrap = bootstrap.clone();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            use rdkafka::Message;
            use rdkafka::consumer::BaseConsumer;
            let consumer: BaseConsumer = common::topic_consumer(&bootstrap, "logs", "loki-test");
            let mut arrivals: Vec<(u64, Instant)> = Vec::with_capacity(LINES as usize);
            while (arrivals.len() as u64) < LINES && !stop.load(Ordering::Relaxed) {
                if let Some(message) = consumer.poll(Duration::from_millis(50)) {
                    let message = message.expect("consume");
                    let payload =
                        std::str::from_utf8(message.payload().unwrap_or_default()).expect("UTF-8");
                    let number = number_of(payload)
                        .unwrap_or_else(|| panic!("a numbered line: {payload:?}"));
                    arrivals.push((number, Instant::now()));
                }
            }
            arrivals
        })
    };
    let daemon = Daemon::start(&config);
    let started = Instant::now();
    let writer = paced_writer(input.clone(), LINES, RATE, Arc::clone(&stop));

    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let in_loki_before = sink_lines(&daemon, "loki", "loki", "success");
    loki.kill();
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(20).saturating_sub(started.elapsed()));
    let during = dlq_state(&daemon, "loki");
    let kafka_during = sink_lines(&daemon, "kafka", "kafka", "success");
    let restarting = Instant::now();
    loki.restart(Duration::from_secs(60));
    assert_eq!(writer.join().expect("writer"), LINES);

    poll_until(
        "every line delivered to Loki or replayed",
        Duration::from_secs(90),
        || all_delivered_or_replayed(&daemon, "loki", LINES),
        || dlq_state(&daemon, "loki"),
    );
    let settled_at = started.elapsed();
    let settled = dlq_state(&daemon, "loki");
    let arrivals = {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !consumer.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        consumer.join().expect("consumer")
    };
    assert_eq!(
        sink_lines(&daemon, "kafka", "kafka", "error"),
        0,
        "no Kafka line went to the DLQ"
    );
    daemon.stop();

    // Kafka's pace while Loki was down (the first half second after the
    // kill left out: lines already on their way).
    let window = (killed + Duration::from_millis(500), restarting);
    let mut times: Vec<Instant> = arrivals
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| (window.0..window.1).contains(at))
        .collect();
    times.sort_unstable();
    let mut gap = Duration::ZERO;
    let mut previous = window.0;
    for at in times.iter().copied().chain([window.1]) {
        gap = gap.max(at - previous);
        previous = at;
    }
    let expected = (window.1 - window.0).as_secs_f64() * RATE as f64;
    println!(
        "Loki had {in_loki_before} lines when killed; while down: Kafka got {} lines in {:.1} s \
         ({:.0}% of those written), longest gap {} ms, Kafka sink success {kafka_during}, Loki {during}; \
         Loki settled at {:.1} s: {settled}",
        times.len(),
        (window.1 - window.0).as_secs_f64(),
        100.0 * times.len() as f64 / expected,
        gap.as_millis(),
        settled_at.as_secs_f64(),
    );
    assert!(
        gap < Duration::from_secs(2),
        "Kafka stalled for {gap:?} while Loki was down"
    );
    assert!(
        times.len() as f64 >= 0.8 * expected,
        "Kafka got {} lines while Loki was down, {expected:.0} written",
        times.len()
    );

    let mut kafka = Tally::new(LINES);
    for (number, _) in &arrivals {
        kafka.seen[*number as usize] = kafka.seen[*number as usize].saturating_add(1);
    }
    kafka.assert_exactly_once("Kafka");
    tally_from_loki(&loki, "{case=\"beside_kafka\"}", from_ns, LINES, |_, _| {})
        .assert_exactly_once("Loki");
}

/// Goal: lines that went to the DLQ while Loki was down are replayed once
/// Loki is back even when no new line comes: automatic replay waits for
/// the sink to be healthy, and the sink must find out that Loki answers
/// again without live traffic. Method: Loki killed, 1,000 lines written
/// (they go through the retries to the DLQ), Loki restarted, nothing more
/// written; the 1,000 lines must reach Loki within 20 s.
#[test]
fn the_dlq_is_replayed_after_an_outage_without_new_lines() {
    const LINES: u64 = 1_000;
    let mut loki = Loki::start_with_wal();
    let from_ns = now_ns();
    let (_dir, input, daemon) = start_outage_daemon(&loki, "idle");
    loki.kill();
    common::append_numbered_lines(&input, 0, LINES);
    poll_until(
        "the lines in the DLQ",
        Duration::from_secs(30),
        || sink_lines(&daemon, "loki", "loki", "error") == LINES,
        || dlq_state(&daemon, "loki"),
    );
    loki.restart(Duration::from_secs(60));
    poll_until(
        "the DLQ replayed",
        Duration::from_secs(20),
        || all_delivered_or_replayed(&daemon, "loki", LINES),
        || dlq_state(&daemon, "loki"),
    );
    daemon.stop();
    tally_from_loki(&loki, "{case=\"idle\"}", from_ns, LINES, |_, _| {})
        .assert_exactly_once("after the replay");
}
