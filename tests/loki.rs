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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::loki::Loki;
use common::{Daemon, sample};

const SECOND_NS: u64 = 1_000_000_000;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

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
