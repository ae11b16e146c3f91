//! Helpers shared by the whole-daemon tests.
#![allow(dead_code)]

pub mod docker;
pub mod fake_loki;
pub mod loki;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port for UDP and TCP alike (bound and released; the
/// daemon binds it a moment later).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = tcp.local_addr().expect("address").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The daemon binary built for this test run.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_log-capturer"))
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}

/// A config with one file source over `input` and the given sink tables.
/// Positions and the DLQ go to a `data` directory beside `input`, so that
/// tests never share state.
pub fn file_source_config(input: &Path, extra_source_keys: &str, sinks: &str) -> String {
    let data_dir = input.parent().expect("input has a directory").join("data");
    format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data_dir}"

[dispatcher]
batch_size = 1000
batch_timeout_ms = 20

[sources.app]
type = "file"
paths = ["{input}"]
labels = {{ service = "app" }}
{extra_source_keys}

{sinks}
"#,
        input = input.display(),
        data_dir = data_dir.display()
    )
}

/// Starts `log-capturer run --config CONFIG` with captured output.
pub fn spawn_run(config: &Path) -> Child {
    Command::new(binary())
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start log-capturer")
}

/// Waits for a child to exit, killing it after `timeout`.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("log-capturer did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls until `condition` holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn send_signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) with a pid we own and a valid signal number has no
    // memory-safety preconditions.
    let result = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(result, 0, "kill({}, {signal})", child.id());
}

/// Bytes of a numbered line, without its newline.
pub const NUMBERED_LINE_BYTES: usize = 119;

/// Writes numbered 120-byte lines `first..first+count` to `out`.
pub fn write_numbered_lines(out: &mut impl Write, first: u64, count: u64) {
    let padding = "x".repeat(NUMBERED_LINE_BYTES - 17);
    for number in first..first + count {
        writeln!(out, "seq={number:012} {padding}").expect("write line");
    }
}

/// Appends numbered lines `first..first + count` to the file at `input`.
pub fn append_numbered_lines(input: &Path, first: u64, count: u64) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(input)
        .expect("open input");
    let mut buffer = Vec::new();
    write_numbered_lines(&mut buffer, first, count);
    file.write_all(&buffer).expect("append");
}

/// A daemon started with its stderr followed, and its metrics address.
pub struct Daemon {
    pub child: Child,
    pub metrics: std::net::SocketAddr,
    pub stderr: std::sync::mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `run --config CONFIG` and waits for the `started` log line
    /// that names the bound metrics address.
    pub fn start(config: &Path) -> Daemon {
        start_daemon_with_log(config).0
    }

    /// One HTTP GET on the metrics endpoint: (status code, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        use std::io::Read;
        let mut stream =
            std::net::TcpStream::connect(self.metrics).expect("connect to metrics endpoint");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response");
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("status code");
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// Sends SIGTERM and expects exit 0 within 10 s.
    pub fn stop(self) {
        send_signal(&self.child, libc::SIGTERM);
        self.stop_after_signal();
    }

    /// Expects exit 0 within 10 s, a stopping signal sent already.
    pub fn stop_after_signal(mut self) {
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(10));
        assert!(status.success(), "daemon exit {status}");
    }
}

impl Drop for Daemon {
    /// A test that failed half-way leaves no daemon behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of one sample line `name{labels} value` (labels as written).
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|value| value.trim().parse().ok())
}

/// Resident memory of another process, bytes.
pub fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// A `[sinks.ID]` table of a file sink writing `path` with `encoding`.
pub fn file_sink_table(id: &str, path: &Path, encoding: &str) -> String {
    format!(
        "[sinks.{id}]\ntype = \"file\"\npath = \"{}\"\nencoding = \"{encoding}\"\n",
        path.display()
    )
}

/// A `[sinks.kafka]` table for `topic` on `bootstrap`, plus `extra` keys.
pub fn kafka_sink_table(bootstrap: &str, topic: &str, extra: &str) -> String {
    format!(
        "[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopic = \"{topic}\"\n{extra}\n"
    )
}

/// Starts `run --config CONFIG` like [`Daemon::start`], and also returns the
/// log lines written before `started` (where start-up warnings go: the
/// sources start before the metrics endpoint).
pub fn start_daemon_with_log(config: &Path) -> (Daemon, Vec<String>) {
    await_started(spawn_run(config))
}

/// Takes a started `run` whose standard error is piped and waits for its
/// `started` line; returns the daemon and the log lines up to that one.
pub fn await_started(mut child: Child) -> (Daemon, Vec<String>) {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut daemon = Daemon {
        child,
        metrics: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        stderr: lines,
    };
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon.metrics.port() == 0 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = daemon
            .stderr
            .recv_timeout(remaining)
            .unwrap_or_else(|_| panic!("daemon logs `started` with its metrics address: {log:#?}"));
        if let Some(at) = line.find("metrics=") {
            let address = line[at + 8..].split_whitespace().next().expect("address");
            daemon.metrics = address.parse().expect("socket address");
        }
        log.push(line);
    }
    (daemon, log)
}

/// Where the open descriptors of process `pid` point (`/proc/PID/fd`
/// links; a deleted file reads `PATH (deleted)`). Descriptors closed while
/// the directory is read are left out.
pub fn fd_targets(pid: u32) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .collect()
}

/// A consumer of every partition of `topic`, from the start (no group
/// offsets are used or committed).
pub fn topic_consumer(
    bootstrap: &str,
    topic: &str,
    group: &str,
) -> rdkafka::consumer::BaseConsumer {
    use rdkafka::consumer::Consumer;
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("fetch.message.max.bytes", "4194304")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..metadata.topics()[0].partitions().len() as i32 {
        assignment
            .add_partition_offset(topic, partition, rdkafka::Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    consumer
}

/// `count` lines of a VoIP host's logs from `perf/voip_lines.py` (`mode`
/// "random": fresh identifiers on every line; "template": identifiers from
/// a pool of calls in progress), numbered (`seq=NNNNNNNNNNNN ` first) when
/// asked; deterministic for a given seed.
pub fn voip_lines(count: u64, mode: &str, numbered: bool, seed: u64) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/voip_lines.py");
    let mut command = std::process::Command::new("python3");
    command.arg(&script).arg("-").arg(count.to_string()).args([
        "--mode",
        mode,
        "--seed",
        &seed.to_string(),
    ]);
    if numbered {
        command.arg("--numbered");
    }
    let output = command.output().expect("python3 runs perf/voip_lines.py");
    assert!(
        output.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
