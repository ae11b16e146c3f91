//! The docker source against a real dockerd: a private one per test
//! (`common::docker::PrivateDockerd`: Debian's docker.io, its json-file
//! log driver, an image of the static busybox), the whole daemon reading
//! the containers' logs into a JSON file sink.
//!
//! The writers are busybox `sh` loops that number their lines (`o N ...`
//! on standard output, `e N ...` on standard error) and pace themselves
//! with `usleep` every few lines; what Docker wrote (its json log, `docker
//! logs`) is compared with what the file sink got, per container and
//! stream: every line once, with its labels.
//!
//! The tests of this file run one at a time (a lock): each starts a
//! dockerd and writes tens of thousands of lines a second, and the machine
//! may have two cores.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::docker::{IMAGE, PrivateDockerd};
use common::{Daemon, sample};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Padding of the numbered lines (with the number, about 80 bytes).
const PAD: &str = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstu";

/// A script writing `pairs` numbered lines to standard output and as many
/// to standard error, sleeping `sleep_us` every `every` pairs (at most
/// `2 * every` lines per `sleep_us`).
fn pair_writer(pairs: u64, every: u64, sleep_us: u64) -> String {
    format!(
        "i=0; while [ $i -lt {pairs} ]; do echo \"o $i {PAD}\"; echo \"e $i {PAD}\" >&2; \
         i=$((i+1)); if [ $((i % {every})) -eq 0 ]; then usleep {sleep_us}; fi; done"
    )
}

/// A script writing `lines` short numbered lines to standard output only,
/// sleeping `sleep_us` every `every` lines.
fn stdout_writer(lines: u64, every: u64, sleep_us: u64) -> String {
    format!(
        "i=0; while [ $i -lt {lines} ]; do echo \"o $i\"; \
         i=$((i+1)); if [ $((i % {every})) -eq 0 ]; then usleep {sleep_us}; fi; done"
    )
}

/// A config with one docker source `dk` on `dockerd` (static label
/// `env = "test"`, plus `source_keys`) and a JSON file sink writing
/// `dir/out.jsonl`; positions under `dir/data`.
fn docker_config(dir: &Path, dockerd: &PrivateDockerd, source_keys: &str) -> PathBuf {
    let text = format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[dispatcher]
batch_size = 1000
batch_timeout_ms = 20

[sources.dk]
type = "docker"
socket = "{socket}"
containers_root = "{root}"
labels = {{ env = "test" }}
{source_keys}

{sink}
"#,
        data = dir.join("data").display(),
        socket = dockerd.socket().display(),
        root = dockerd.containers_root().display(),
        sink = common::file_sink_table("out", &dir.join("out.jsonl"), "json"),
    );
    common::write_file(dir, "config.toml", &text)
}

/// One line of the file sink.
#[derive(Debug, Clone)]
struct Entry {
    timestamp: String,
    message: String,
    labels: BTreeMap<String, String>,
}

impl Entry {
    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// The file sink's output, read as it grows: whole lines only. A daemon
/// killed in the middle of a `write` leaves a piece of a line, to which the
/// next daemon appends; the whole object at its end is kept, the piece is
/// reported in `torn`.
struct SinkOutput {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
    entries: Vec<Entry>,
    torn: Vec<String>,
}

impl SinkOutput {
    fn new(path: PathBuf) -> SinkOutput {
        SinkOutput {
            path,
            offset: 0,
            pending: Vec::new(),
            entries: Vec::new(),
            torn: Vec::new(),
        }
    }

    /// Reads what was appended since the last call; the number of entries.
    fn poll(&mut self) -> usize {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return self.entries.len();
        };
        file.seek(SeekFrom::Start(self.offset)).expect("seek");
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh).expect("read sink output");
        self.offset += fresh.len() as u64;
        self.pending.extend_from_slice(&fresh);
        let Some(end) = self.pending.iter().rposition(|&byte| byte == b'\n') else {
            return self.entries.len();
        };
        let whole: Vec<u8> = self.pending.drain(..=end).collect();
        for line in whole.split(|&byte| byte == b'\n') {
            if !line.is_empty() {
                self.add(line);
            }
        }
        self.entries.len()
    }

    fn add(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        if let Some(entry) = parse_entry(&text) {
            self.entries.push(entry);
            return;
        }
        // The whole object glued after the piece: the first `{"` past the
        // start from which the rest parses.
        let glued = text
            .match_indices("{\"")
            .filter(|(at, _)| *at > 0)
            .find_map(|(at, _)| Some((at, parse_entry(&text[at..])?)));
        if let Some((at, entry)) = glued {
            self.entries.push(entry);
            self.torn.push(text[..at].to_string());
            return;
        }
        self.torn.push(text.into_owned());
    }

    /// Polls until at least `count` entries arrived, then once more after
    /// a pause (so that duplicates arriving late are counted too).
    fn wait_for(&mut self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.poll() < count {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {count} entries in {}: {} arrived",
                self.path.display(),
                self.entries.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_millis(1_000));
        self.poll();
    }
}

fn parse_entry(text: &str) -> Option<Entry> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let labels = value
        .get("labels")?
        .as_object()?
        .iter()
        .map(|(key, value)| (key.clone(), value.as_str().unwrap_or("").to_string()))
        .collect();
    Some(Entry {
        timestamp: value.get("timestamp")?.as_str()?.to_string(),
        message: value.get("message")?.as_str()?.to_string(),
        labels,
    })
}

/// The number of a numbered line of `stream` (`o N ...` on stdout, `e N
/// ...` on stderr).
fn number_of(message: &str, stream: &str) -> Option<u64> {
    let mut words = message.split(' ');
    let tag = words.next()?;
    let expected = match stream {
        "stdout" => "o",
        "stderr" => "e",
        _ => return None,
    };
    if tag != expected {
        return None;
    }
    words.next()?.parse().ok()
}

/// How often each number arrived, per (container name, stream); the
/// entries that were no numbered line of their stream.
#[derive(Default)]
struct Tally {
    seen: HashMap<(String, String), Vec<u32>>,
    other: Vec<Entry>,
}

impl Tally {
    fn of(entries: &[Entry]) -> Tally {
        let mut tally = Tally::default();
        for entry in entries {
            let stream = entry.label("stream").to_string();
            match number_of(&entry.message, &stream) {
                Some(number) => {
                    let counts = tally
                        .seen
                        .entry((entry.label("container_name").to_string(), stream))
                        .or_default();
                    if counts.len() <= number as usize {
                        counts.resize(number as usize + 1, 0);
                    }
                    counts[number as usize] += 1;
                }
                None => tally.other.push(entry.clone()),
            }
        }
        tally
    }

    fn counts(&self, container: &str, stream: &str) -> &[u32] {
        self.seen
            .get(&(container.to_string(), stream.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Numbers `0..written` that never arrived, numbers past it that did,
    /// and the extra copies.
    fn check(&self, container: &str, stream: &str, written: u64) -> (Vec<u64>, Vec<u64>, u64) {
        let counts = self.counts(container, stream);
        let mut missing = Vec::new();
        let mut unexpected = Vec::new();
        let mut duplicates = 0;
        for number in 0..written.max(counts.len() as u64) {
            let times = counts.get(number as usize).copied().unwrap_or(0);
            if number >= written {
                if times > 0 {
                    unexpected.push(number);
                }
            } else if times == 0 {
                missing.push(number);
            } else {
                duplicates += u64::from(times - 1);
            }
        }
        (missing, unexpected, duplicates)
    }

    /// Asserts that `0..written` arrived exactly once each.
    fn assert_exactly_once(&self, container: &str, stream: &str, written: u64) {
        let (missing, unexpected, duplicates) = self.check(container, stream, written);
        assert!(
            missing.is_empty() && unexpected.is_empty() && duplicates == 0,
            "{container} {stream}: {written} written; {} missing (first {:?}), {} unexpected (first {:?}), {duplicates} duplicates",
            missing.len(),
            &missing[..missing.len().min(10)],
            unexpected.len(),
            &unexpected[..unexpected.len().min(10)],
        );
    }
}

/// The numbers of the numbered lines in `text` (`docker logs` output of
/// one stream, tag `o` or `e`).
fn numbers_in(text: &str, stream: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| number_of(line, stream))
        .collect()
}

/// Asserts that `docker logs` shows `0..count` in order on `stream`: the
/// writer's lines all reached the json log (the count Docker wrote).
fn docker_wrote(logs: &str, stream: &str) -> u64 {
    let numbers = numbers_in(logs, stream);
    let in_order = numbers
        .iter()
        .enumerate()
        .all(|(index, &number)| index as u64 == number);
    assert!(
        in_order,
        "docker logs {stream}: numbers not 0..{} in order",
        numbers.len()
    );
    numbers.len() as u64
}

/// One record of a json-file log.
struct JsonLogLine {
    log: String,
    stream: String,
    time: String,
}

/// The records of the json-file log at `path` (pieces of long lines as
/// Docker wrote them).
fn read_json_log(path: &Path) -> Vec<JsonLogLine> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("json log {}: {error}", path.display()));
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("json-file record");
            JsonLogLine {
                log: value["log"].as_str().expect("log").to_string(),
                stream: value["stream"].as_str().expect("stream").to_string(),
                time: value["time"].as_str().expect("time").to_string(),
            }
        })
        .collect()
}

/// An RFC 3339 UTC time with its fraction written out to nine digits, so
/// that Docker's `time` (trailing zeros cut) and the sink's compare.
fn nanosecond_text(time: &str) -> String {
    let Some(body) = time.strip_suffix('Z') else {
        return time.to_string();
    };
    let (seconds, fraction) = body.split_once('.').unwrap_or((body, ""));
    format!("{seconds}.{fraction:0<9}Z")
}

/// Seconds since the epoch of an RFC 3339 UTC time (for rates).
fn epoch_seconds(time: &str) -> f64 {
    let timestamp: jiff::Timestamp = time.parse().expect("RFC 3339 time");
    timestamp.as_nanosecond() as f64 / 1e9
}

/// Lines per second Docker logged for a container (both streams), from the
/// first and last `time` of its json log.
fn achieved_rate(records: &[JsonLogLine]) -> f64 {
    if records.len() < 2 {
        return 0.0;
    }
    let first = epoch_seconds(&records[0].time);
    let last = epoch_seconds(&records[records.len() - 1].time);
    records.len() as f64 / (last - first).max(1e-3)
}

/// The metrics page of a running daemon.
fn metrics(daemon: &Daemon) -> String {
    let (status, body) = daemon.get("/metrics");
    assert_eq!(status, 200, "GET /metrics");
    body
}

/// `log_capturer_containers_monitored` of one container.
fn monitored(id: &str, name: &str) -> String {
    format!(
        "log_capturer_containers_monitored{{container_id=\"{}\",container_name=\"{name}\",image=\"{IMAGE}\"}}",
        &id[..12]
    )
}

/// Asserts that a dropped dockerd of directory `dir` left no process (a
/// command line naming `dir`, or one in the cgroup of one of the
/// containers `ids`), no mount under `dir`, and not `dir` itself.
fn assert_nothing_left(dir: &Path, ids: &[String]) {
    let dir_text = dir.display().to_string();
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("proc").flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cmdline.contains(&dir_text) || ids.iter().any(|id| cgroup.contains(id.as_str())) {
            left.push(cmdline);
        }
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|line| line.contains(&dir_text))
        .collect();
    assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
    assert!(!dir.exists(), "{dir_text} removed");
}

/// Goal: the private dockerd harness itself works on this machine, apart
/// from the daemon: dockerd starts and answers `/_ping`, a container's
/// lines land in its json-file log where the docker source will look for
/// them (`containers_root`, and the API's `LogPath`), a restart of dockerd
/// with `--live-restore` keeps a running container and its log going, and
/// dropping the harness leaves no dockerd, containerd, shim, container
/// process or mount, even after dockerd was killed with a container running.
///
/// Method: start a dockerd; run a container writing 1,000 lines to stdout
/// and 10 to stderr and read its json log; run a paced writer, restart
/// dockerd while it writes, and check its log is complete and in order;
/// drop the harness and look for processes naming its directory or in
/// its containers' cgroups, and mounts under it; then the same after a
/// dockerd killed with SIGKILL while a container runs.
#[test]
fn private_dockerd_writes_json_file_logs() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let mut dockerd = PrivateDockerd::start();
    let dir = dockerd.dir().to_path_buf();
    println!("dockerd up and image imported in {:?}", started.elapsed());

    let id = dockerd.run(
        "h1",
        &[("com.example.role", "web")],
        &[],
        "i=0; while [ $i -lt 1000 ]; do echo \"line $i\"; i=$((i+1)); done; \
         i=0; while [ $i -lt 10 ]; do echo \"err $i\" >&2; i=$((i+1)); done",
    );
    assert_eq!(id.len(), 64, "full container id: {id}");
    dockerd.wait_exited("h1", Duration::from_secs(30));
    assert_eq!(
        dockerd.inspect("h1", "{{.LogPath}}"),
        dockerd.log_path(&id).display().to_string(),
        "LogPath is <containers_root>/<id>/<id>-json.log"
    );
    assert_eq!(dockerd.inspect("h1", "{{.Config.Image}}"), IMAGE);
    assert_eq!(dockerd.inspect("h1", "{{.Name}}"), "/h1");
    let records = read_json_log(&dockerd.log_path(&id));
    let stdout: Vec<&JsonLogLine> = records.iter().filter(|r| r.stream == "stdout").collect();
    let stderr: Vec<&JsonLogLine> = records.iter().filter(|r| r.stream == "stderr").collect();
    assert_eq!(stdout.len(), 1000);
    assert_eq!(stderr.len(), 10);
    for (number, record) in stdout.iter().enumerate() {
        assert_eq!(record.log, format!("line {number}\n"));
        assert!(record.time.ends_with('Z'), "UTC time: {}", record.time);
    }
    let (out, err) = dockerd.logs("h1");
    assert_eq!(out.lines().count(), 1000);
    assert_eq!(err.lines().count(), 10);

    // 20,000 lines at most 2,000 a second: about 10 s, a restart within.
    let id = dockerd.run("h2", &[], &[], &stdout_writer(20_000, 20, 10_000));
    let log = dockerd.log_path(&id);
    common::wait_until("h2 writes", Duration::from_secs(30), || {
        std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) > 10_000
    });
    let restart = Instant::now();
    dockerd.restart();
    println!("dockerd restarted in {:?}", restart.elapsed());
    let lines_then = read_json_log(&log).len();
    assert!(
        dockerd.inspect("h2", "{{.State.Running}}") == "true" || lines_then == 20_000,
        "h2 runs on after the restart (live restore)"
    );
    dockerd.wait_exited("h2", Duration::from_secs(60));
    let records = read_json_log(&log);
    let numbers: Vec<u64> = records
        .iter()
        .filter_map(|record| number_of(record.log.trim_end(), "stdout"))
        .collect();
    assert_eq!(
        numbers,
        (0..20_000).collect::<Vec<u64>>(),
        "h2's log is whole across the restart"
    );
    println!(
        "h2: {lines_then} lines logged right after the restart, {} at the end, {:.0} lines/s",
        records.len(),
        achieved_rate(&records)
    );

    let ids = vec![dockerd.inspect("h1", "{{.Id}}"), id];
    drop(dockerd);
    assert_nothing_left(&dir, &ids);

    // A dockerd that crashed with a container running leaves containerd,
    // a shim, the container and mounts: the drop removes them all.
    let mut crashed = PrivateDockerd::start();
    let dir = crashed.dir().to_path_buf();
    let id = crashed.run("h3", &[], &[], "sleep 600");
    crashed.kill();
    let (processes, mounts) = crashed.leftovers();
    println!(
        "after SIGKILL of dockerd: {} processes and {} mounts of it left: {processes:?}",
        processes.len(),
        mounts.len()
    );
    assert!(
        processes.len() >= 2,
        "the container and its shim outlive a killed dockerd"
    );
    drop(crashed);
    assert_nothing_left(&dir, &[id]);
    println!("took {:?}", started.elapsed());
}

/// Goal: three containers writing at about 10,000 lines/s each (half to
/// stdout, half to stderr) reach the sink whole: every line exactly once,
/// with its labels (source_id, container_id, container_name, image,
/// stream, the static label, the chosen container label with its key made
/// a label name) and Docker's time; a container started after the daemon
/// is found and read from its first line; a container stopped mid-run and
/// removed is read to the last line Docker logged; containers the filters
/// leave out (a name glob excluded, a name not included, a label that does
/// not match) send nothing; the metrics show the containers followed and
/// the log files followed and the start, die and destroy events.
///
/// Method: a private dockerd; app-a and app-b (50,000 pairs each) and
/// app-d (an endless slower writer) run before the daemon starts, app-c
/// (50,000 pairs) right after; app-d is stopped after 3 s, its `docker
/// logs` taken, and it is removed; app-skip1, other-x and app-worker write
/// a few lines and sleep. Once the writers are done, the sink's lines are
/// tallied per container and stream against what `docker logs` shows.
#[test]
fn containers_every_line_once_with_labels() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let dockerd = PrivateDockerd::start();
    let config = docker_config(
        dir.path(),
        &dockerd,
        r#"include_containers = ["app-*"]
exclude_containers = ["app-skip*"]
include_labels = ["com.example.role=web"]
container_labels = ["com.example.service"]"#,
    );
    const PAIRS: u64 = 50_000;
    // 5,000 pairs a second at most: 10,000 lines/s per container.
    let fast = pair_writer(PAIRS, 50, 10_000);
    let web = |service| {
        [
            ("com.example.role", "web"),
            ("com.example.service", service),
        ]
    };
    let few = format!("{}; sleep 600", pair_writer(100, 100, 1));
    let mut ids = HashMap::new();
    for (name, labels) in [
        ("app-skip1", &web("skip")[..]),
        ("other-x", &web("other")[..]),
        ("app-worker", &[("com.example.role", "worker")][..]),
    ] {
        ids.insert(name, dockerd.run(name, labels, &[], &few));
    }
    ids.insert("app-a", dockerd.run("app-a", &web("alpha"), &[], &fast));
    ids.insert("app-b", dockerd.run("app-b", &web("beta"), &[], &fast));
    // Endless but bounded: 1,000 lines/s until stopped.
    ids.insert(
        "app-d",
        dockerd.run(
            "app-d",
            &web("delta"),
            &[],
            &pair_writer(1_000_000, 10, 20_000),
        ),
    );

    let daemon = Daemon::start(&config);
    ids.insert("app-c", dockerd.run("app-c", &web("gamma"), &[], &fast));
    let body_of_running = {
        let mut body = String::new();
        common::wait_until(
            "app-a, app-b, app-c and app-d monitored, their logs followed",
            Duration::from_secs(20),
            || {
                body = metrics(&daemon);
                ["app-a", "app-b", "app-c", "app-d"]
                    .iter()
                    .all(|name| sample(&body, &monitored(&ids[name], name)) == Some(1.0))
                    && sample(&body, "log_capturer_container_streams_active")
                        .is_some_and(|streams| streams >= 4.0)
            },
        );
        body
    };
    for name in ["app-skip1", "other-x", "app-worker"] {
        assert!(
            !body_of_running.contains(&format!("container_name=\"{name}\"")),
            "{name} is left out by the filters but appears in the metrics"
        );
    }

    std::thread::sleep(Duration::from_secs(3));
    dockerd.stop("app-d", 0);
    dockerd.wait_exited("app-d", Duration::from_secs(30));
    let (d_out, d_err) = dockerd.logs("app-d");
    let d_rate = achieved_rate(&read_json_log(&dockerd.log_path(&ids["app-d"])));
    dockerd.rm_f("app-d");
    let mut written = HashMap::new();
    written.insert(("app-d", "stdout"), docker_wrote(&d_out, "stdout"));
    written.insert(("app-d", "stderr"), docker_wrote(&d_err, "stderr"));
    println!(
        "app-d: {} + {} lines before it was stopped, {d_rate:.0} lines/s",
        written[&("app-d", "stdout")],
        written[&("app-d", "stderr")]
    );

    let mut json_logs = HashMap::new();
    for name in ["app-a", "app-b", "app-c"] {
        dockerd.wait_exited(name, Duration::from_secs(120));
        let (out, err) = dockerd.logs(name);
        written.insert((name, "stdout"), docker_wrote(&out, "stdout"));
        written.insert((name, "stderr"), docker_wrote(&err, "stderr"));
        assert_eq!(written[&(name, "stdout")], PAIRS, "{name} wrote all");
        assert_eq!(written[&(name, "stderr")], PAIRS, "{name} wrote all");
        let records = read_json_log(&dockerd.log_path(&ids[name]));
        println!("{name}: {:.0} lines/s", achieved_rate(&records));
        json_logs.insert(name, records);
    }

    let total: u64 = written.values().sum();
    let mut output = SinkOutput::new(dir.path().join("out.jsonl"));
    output.wait_for(total as usize, Duration::from_secs(120));
    assert!(output.torn.is_empty(), "torn lines: {:?}", output.torn);
    let tally = Tally::of(&output.entries);
    assert!(
        tally.other.is_empty(),
        "{} entries of no writer, first {:?}",
        tally.other.len(),
        &tally.other[..tally.other.len().min(3)]
    );
    for ((name, stream), count) in &written {
        tally.assert_exactly_once(name, stream, *count);
    }
    for name in ["app-skip1", "other-x", "app-worker"] {
        assert!(
            tally.counts(name, "stdout").is_empty() && tally.counts(name, "stderr").is_empty(),
            "{name} is left out by the filters but its lines arrived"
        );
    }

    let service = |name: &str| match name {
        "app-a" => "alpha",
        "app-b" => "beta",
        "app-c" => "gamma",
        "app-d" => "delta",
        _ => "?",
    };
    for entry in &output.entries {
        let name = entry.label("container_name").to_string();
        let expected: BTreeMap<String, String> = [
            ("source_id", "dk"),
            ("container_id", &ids[name.as_str()][..12]),
            ("container_name", name.as_str()),
            ("image", IMAGE),
            ("stream", entry.label("stream")),
            ("env", "test"),
            ("com_example_service", service(&name)),
        ]
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
        assert_eq!(entry.labels, expected, "labels of {entry:?}");
    }

    // Docker's time, to the nanosecond, on every line of app-a.
    let mut time_of = HashMap::new();
    for record in &json_logs["app-a"] {
        time_of.insert(
            (record.stream.as_str(), record.log.trim_end_matches('\n')),
            nanosecond_text(&record.time),
        );
    }
    for entry in output
        .entries
        .iter()
        .filter(|entry| entry.label("container_name") == "app-a")
    {
        assert_eq!(
            nanosecond_text(&entry.timestamp),
            time_of[&(entry.label("stream"), entry.message.as_str())],
            "timestamp of {entry:?}"
        );
    }

    let body = metrics(&daemon);
    for name in ["app-a", "app-b", "app-c"] {
        for stream in ["stdout", "stderr"] {
            let series = format!(
                "log_capturer_logs_collected_total{{stream=\"{stream}\",container=\"{name}\"}}"
            );
            assert_eq!(sample(&body, &series), Some(PAIRS as f64), "{series}");
        }
    }
    for (event, name) in [("start", "app-c"), ("die", "app-d"), ("destroy", "app-d")] {
        let series = format!(
            "log_capturer_container_events_total{{event_type=\"{event}\",container=\"{name}\"}}"
        );
        assert!(
            sample(&body, &series).unwrap_or(0.0) >= 1.0,
            "{series} counted: {}",
            body.lines()
                .filter(|line| line.contains("container_events"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        sample(&body, &monitored(&ids["app-d"], "app-d")).unwrap_or(0.0) == 0.0,
        "app-d, removed, is no longer monitored"
    );
    daemon.stop();
    println!("{total} lines checked; took {:?}", started.elapsed());
}

/// Goal: a daemon killed with SIGKILL while containers write, and started
/// again, loses no line: positions are committed after delivery, and the
/// restarted daemon resumes from them; the lines sent twice stay within
/// about a positions interval of input per kill.
///
/// Method: one container writes 60,000 pairs at about 10,000 lines/s; the
/// daemon is killed 3 s and 7 s after it starts and started again at once
/// on the same data_dir. Once the writer is done every number must have
/// arrived; the duplicates must be fewer than 2 s of the achieved rate per
/// kill (the counts are printed).
#[test]
fn sigkill_mid_stream_loses_nothing() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let dockerd = PrivateDockerd::start();
    let config = docker_config(dir.path(), &dockerd, "");
    const PAIRS: u64 = 60_000;
    const KILLS: u64 = 2;
    let id = dockerd.run("app-k", &[], &[], &pair_writer(PAIRS, 50, 10_000));
    let mut daemon = Daemon::start(&config);
    let mut output = SinkOutput::new(dir.path().join("out.jsonl"));
    for after in [3, 4] {
        std::thread::sleep(Duration::from_secs(after));
        let before = output.poll();
        daemon.child.kill().expect("SIGKILL");
        daemon.child.wait().expect("reap");
        drop(daemon);
        println!("killed with {before} entries in the sink");
        daemon = Daemon::start(&config);
    }
    dockerd.wait_exited("app-k", Duration::from_secs(120));
    let rate = achieved_rate(&read_json_log(&dockerd.log_path(&id)));
    output.wait_for(2 * PAIRS as usize, Duration::from_secs(120));
    let tally = Tally::of(&output.entries);
    let mut duplicates = 0;
    for stream in ["stdout", "stderr"] {
        let (missing, unexpected, extra) = tally.check("app-k", stream, PAIRS);
        assert!(
            missing.is_empty() && unexpected.is_empty(),
            "{stream}: {} missing (first {:?}), unexpected {:?}",
            missing.len(),
            &missing[..missing.len().min(10)],
            &unexpected[..unexpected.len().min(10)]
        );
        duplicates += extra;
    }
    let bound = (KILLS as f64 * 2.0 * rate) as u64;
    println!(
        "{} lines written at {rate:.0} lines/s, none lost; {duplicates} duplicates over {KILLS} kills (bound {bound}); {} torn pieces; took {:?}",
        2 * PAIRS,
        output.torn.len(),
        started.elapsed()
    );
    assert!(duplicates <= bound, "{duplicates} duplicates > {bound}");
    assert!(
        output.torn.len() as u64 <= KILLS,
        "torn pieces: {:?}",
        output.torn
    );
    daemon.stop();
}

/// Goal: the json-file driver's own rotation (`max-size`, `max-file`)
/// loses no line while the daemon keeps up: the rotated file is read to
/// its end before the new one, and the rotations are counted.
///
/// Method: a container with `--log-opt max-size=1m --log-opt max-file=3`
/// writes 200,000 short numbered lines (about 14 MB of json log, a
/// rotation every 1.4 s) at about 10,000 lines/s, so that the two rotated
/// files the driver keeps are seconds of slack; every number must arrive
/// once and `log_capturer_container_stream_rotations_total` be above 0.
#[test]
fn json_file_rotation_loses_nothing() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let dockerd = PrivateDockerd::start();
    let config = docker_config(dir.path(), &dockerd, "");
    const LINES: u64 = 200_000;
    let daemon = Daemon::start(&config);
    let id = dockerd.run(
        "app-r",
        &[],
        &[("max-size", "1m"), ("max-file", "3")],
        &stdout_writer(LINES, 100, 10_000),
    );
    let mut output = SinkOutput::new(dir.path().join("out.jsonl"));
    let log = dockerd.log_path(&id);
    let mut rotated_seen = 0;
    while dockerd.inspect("app-r", "{{.State.Status}}") == "running" {
        let rotated = (1..=2)
            .filter(|n| Path::new(&format!("{}.{n}", log.display())).exists())
            .count();
        rotated_seen = rotated_seen.max(rotated);
        output.poll();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "app-r still writing"
        );
    }
    let (out, _) = dockerd.logs("app-r");
    // Only the last three files are kept: docker logs shows their lines.
    let kept = numbers_in(&out, "stdout");
    println!(
        "app-r: done in {:?}; docker logs keeps {} lines, from {:?}; rotated files seen at once: {rotated_seen}",
        started.elapsed(),
        kept.len(),
        kept.first()
    );
    output.wait_for(LINES as usize, Duration::from_secs(60));
    let tally = Tally::of(&output.entries);
    tally.assert_exactly_once("app-r", "stdout", LINES);
    let body = metrics(&daemon);
    let rotations = body
        .lines()
        .filter(|line| line.starts_with("log_capturer_container_stream_rotations_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    println!(
        "rotations counted: {rotations}; took {:?}",
        started.elapsed()
    );
    assert!(rotations > 0.0, "rotations counted");
    daemon.stop();
}

/// Goal: a restart of dockerd does not stop the source: it reconnects
/// (`log_capturer_docker_reconnects_total` at least 1), lists the
/// containers again and goes on: a container that kept running through
/// the restart (`--live-restore`) is read to its end, and a container
/// started after the restart is found and read whole.
///
/// Method: app-live writes 30,000 lines at about 2,000 lines/s; once the
/// daemon has some of them dockerd is stopped (SIGTERM) and started again;
/// then app-new writes 5,000 pairs. Every line of both must arrive once.
#[test]
fn dockerd_restart_reconnects_and_goes_on() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut dockerd = PrivateDockerd::start();
    let config = docker_config(dir.path(), &dockerd, "");
    const LIVE: u64 = 30_000;
    const NEW: u64 = 5_000;
    let live = dockerd.run("app-live", &[], &[], &stdout_writer(LIVE, 20, 10_000));
    let daemon = Daemon::start(&config);
    let mut output = SinkOutput::new(dir.path().join("out.jsonl"));
    common::wait_until("app-live's first lines", Duration::from_secs(30), || {
        output.poll() >= 2_000
    });
    let restart = Instant::now();
    dockerd.restart();
    let restarted_at = jiff::Timestamp::now();
    println!("dockerd restarted in {:?}", restart.elapsed());
    // A container that starts and ends at once, likely before the source
    // has reconnected: found from the events dockerd kept.
    dockerd.run("app-brief", &[], &[], &stdout_writer(5, 5, 0));
    dockerd.run("app-new", &[], &[], &pair_writer(NEW, 50, 10_000));
    dockerd.wait_exited("app-live", Duration::from_secs(120));
    dockerd.wait_exited("app-new", Duration::from_secs(60));
    let after_restart = read_json_log(&dockerd.log_path(&live))
        .iter()
        .filter(|record| {
            record
                .time
                .parse::<jiff::Timestamp>()
                .is_ok_and(|time| time > restarted_at)
        })
        .count();
    println!("app-live logged {after_restart} lines after the restart");
    assert!(after_restart > 0, "app-live went on after the restart");
    output.wait_for((LIVE + 2 * NEW + 5) as usize, Duration::from_secs(60));
    let tally = Tally::of(&output.entries);
    tally.assert_exactly_once("app-brief", "stdout", 5);
    tally.assert_exactly_once("app-live", "stdout", LIVE);
    tally.assert_exactly_once("app-new", "stdout", NEW);
    tally.assert_exactly_once("app-new", "stderr", NEW);
    let body = metrics(&daemon);
    let reconnects = sample(
        &body,
        "log_capturer_docker_reconnects_total{source_id=\"dk\"}",
    );
    assert!(
        reconnects.unwrap_or(0.0) >= 1.0,
        "reconnects counted: {reconnects:?}"
    );
    daemon.stop();
    println!("took {:?}", started.elapsed());
}

/// Goal: a line longer than Docker's 16 KiB pieces arrives as one entry,
/// whole (the pieces joined), between the lines around it; `streams`
/// limits what is read.
///
/// Method: with `streams = ["stdout"]`, a container writes `before`, one
/// line of 102,400 `a`, `after`, and a line to stderr; the json log holds
/// the long line in 7 pieces (six of 16 KiB); the sink must get exactly
/// `before`, the 102,400-byte line and `after`, in that order, and nothing
/// of stderr.
#[test]
fn long_line_arrives_whole() {
    let _serial = one_at_a_time();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let dockerd = PrivateDockerd::start();
    let config = docker_config(dir.path(), &dockerd, r#"streams = ["stdout"]"#);
    let daemon = Daemon::start(&config);
    let id = dockerd.run(
        "app-long",
        &[],
        &[],
        "echo before; head -c 102400 /dev/zero | tr '\\0' a; echo; echo after; echo hidden >&2",
    );
    dockerd.wait_exited("app-long", Duration::from_secs(30));
    let records = read_json_log(&dockerd.log_path(&id));
    let pieces = records
        .iter()
        .filter(|record| {
            let text = record.log.trim_end_matches('\n');
            text.len() > 5 && text.bytes().all(|byte| byte == b'a')
        })
        .count();
    println!(
        "json log: {} records, the long line in {pieces} pieces",
        records.len()
    );
    assert_eq!(pieces, 7, "Docker splits the long line in 16 KiB pieces");
    let mut output = SinkOutput::new(dir.path().join("out.jsonl"));
    output.wait_for(3, Duration::from_secs(30));
    let messages: Vec<&str> = output
        .entries
        .iter()
        .map(|entry| entry.message.as_str())
        .collect();
    assert_eq!(messages.len(), 3, "entries: {:?}", short(&messages));
    assert_eq!(messages[0], "before");
    assert_eq!(messages[1].len(), 102_400);
    assert!(messages[1].bytes().all(|byte| byte == b'a'));
    assert_eq!(messages[2], "after");
    assert!(
        output
            .entries
            .iter()
            .all(|entry| entry.label("stream") == "stdout")
    );
    daemon.stop();
    println!("took {:?}", started.elapsed());
}

/// The first 40 bytes of each message, for failure messages.
fn short<'a>(messages: &[&'a str]) -> Vec<&'a str> {
    messages
        .iter()
        .map(|message| &message[..message.len().min(40)])
        .collect()
}

/// Goal: a docker source whose socket cannot be reached stops `run` at
/// start-up with a message naming the socket (no daemon that silently
/// ships nothing), while `check-config`, which does not connect, accepts
/// the file.
///
/// Method: two configs, a socket path that does not exist and one that is
/// a regular file; `run` must exit non-zero within 20 s naming the path,
/// `check-config` must exit 0.
#[test]
fn unreachable_socket_fails_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let regular = common::write_file(dir.path(), "not-a-socket", "");
    for socket in [dir.path().join("missing.sock"), regular] {
        let text = format!(
            r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[sources.dk]
type = "docker"
socket = "{socket}"

{sink}
"#,
            data = dir.path().join("data").display(),
            socket = socket.display(),
            sink = common::file_sink_table("out", &dir.path().join("out.jsonl"), "json"),
        );
        let config = common::write_file(dir.path(), "config.toml", &text);
        let check = std::process::Command::new(common::binary())
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("check-config");
        assert!(
            check.status.success(),
            "check-config accepts {}: {}",
            socket.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut child = common::spawn_run(&config);
        let status = common::wait_with_timeout(&mut child, Duration::from_secs(20));
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        assert!(
            !status.success(),
            "run with {} exits non-zero",
            socket.display()
        );
        assert!(
            stderr.contains(&socket.display().to_string()),
            "the message names {}: {stderr}",
            socket.display()
        );
    }
}

/// Goal: a renamed container's later lines carry its new name (the rename
/// is counted); and a reload to a changed config while dockerd is down is
/// refused, because the daemon started on it could not reach dockerd: the
/// old config runs on, and lines written after dockerd is back arrive.
///
/// Method: app-old writes `one`, waits for a file made by `docker exec`,
/// writes `two`; it is renamed to app-new in between. Then dockerd is
/// stopped, the config changed (a new static label) and SIGHUP sent: the
/// refusal names the socket; with dockerd started again, `three` (written
/// by a container started then) arrives with the old config's labels.
#[test]
fn rename_relabels_and_reload_without_dockerd_is_refused() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut dockerd = PrivateDockerd::start();
    let config = docker_config(dir.path(), &dockerd, "");
    let (daemon, _) = common::start_daemon_with_log(&config);
    let mut output = SinkOutput::new(dir.path().join("out.jsonl"));
    dockerd.run(
        "app-old",
        &[],
        &[],
        "echo one; i=0; while [ ! -e /go ] && [ $i -lt 600 ]; do busybox usleep 50000; i=$((i+1)); done; echo two",
    );
    output.wait_for(1, Duration::from_secs(30));
    assert_eq!(output.entries[0].message, "one");
    assert_eq!(output.entries[0].label("container_name"), "app-old");
    dockerd.docker(&["rename", "app-old", "app-new"]);
    let renamed =
        "log_capturer_container_events_total{event_type=\"rename\",container=\"app-new\"}";
    common::wait_until("the rename counted", Duration::from_secs(20), || {
        sample(&metrics(&daemon), renamed) == Some(1.0)
    });
    dockerd.docker(&["exec", "app-new", "busybox", "touch", "/go"]);
    output.wait_for(2, Duration::from_secs(30));
    assert_eq!(output.entries[1].message, "two");
    assert_eq!(output.entries[1].label("container_name"), "app-new");

    dockerd.stop_daemon();
    let changed = std::fs::read_to_string(&config)
        .expect("read config")
        .replace("env = \"test\"", "env = \"changed\"");
    std::fs::write(&config, changed).expect("write config");
    common::send_signal(&daemon.child, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = daemon
            .stderr
            .recv_timeout(remaining)
            .expect("a log line about the reload within 20 s");
        if line.contains("refused") {
            break line;
        }
    };
    let socket = dockerd.socket().display().to_string();
    assert!(
        refusal.contains(&socket),
        "the refusal names {socket}: {refusal}"
    );
    assert_eq!(
        sample(
            &metrics(&daemon),
            "log_capturer_config_reloads_total{result=\"failure\"}"
        ),
        Some(1.0)
    );
    dockerd.start_again();
    dockerd.run("app-late", &[], &[], "echo three");
    output.wait_for(3, Duration::from_secs(60));
    assert_eq!(output.entries[2].message, "three");
    assert_eq!(
        output.entries[2].label("env"),
        "test",
        "the old config runs on"
    );
    daemon.stop();
}

/// Goal: containers that live milliseconds (`docker run --rm` writing a
/// few lines) are read whole: the source opens each log on its `start`
/// event, before dockerd deletes it with the container.
///
/// Method: 60 `--rm` containers, two at a time, each writing 5 numbered
/// lines and exiting 50 ms later; every line of every one must arrive
/// once. (Without the pause, about one container in 300 is removed before
/// the source reacts when it is busy writing positions: see the README.)
#[test]
fn short_lived_containers_are_read_whole() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("temp dir");
    let dockerd = PrivateDockerd::start();
    let config = docker_config(dir.path(), &dockerd, "");
    let daemon = Daemon::start(&config);
    const CONTAINERS: usize = 60;
    for pair in 0..CONTAINERS / 2 {
        let runs: Vec<std::process::Child> = (0..2)
            .map(|offset| {
                let name = format!("app-brief-{}", pair * 2 + offset);
                dockerd
                    .command()
                    .args(["run", "--rm", "--network", "none", "--name", &name, IMAGE])
                    .args([
                        "sh",
                        "-c",
                        &format!("{}; usleep 50000", stdout_writer(5, 5, 0)),
                    ])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("docker run")
            })
            .collect();
        for mut run in runs {
            assert!(run.wait().expect("docker run").success());
        }
    }
    let mut output = SinkOutput::new(dir.path().join("out.jsonl"));
    output.wait_for(CONTAINERS * 5, Duration::from_secs(60));
    let tally = Tally::of(&output.entries);
    for index in 0..CONTAINERS {
        tally.assert_exactly_once(&format!("app-brief-{index}"), "stdout", 5);
    }
    daemon.stop();
}
