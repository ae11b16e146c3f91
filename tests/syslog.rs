//! The syslog source against real clients: util-linux `logger` over UDP,
//! TCP and the Unix socket, and hand-written TCP and UDP clients for what
//! `logger` cannot be made to do (frames cut at every byte, 10 MiB without
//! a newline, silence, too many connections, floods).

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, rss_of, sample, wait_until};

struct Setup {
    _dir: tempfile::TempDir,
    port: u16,
    socket: PathBuf,
    output: PathBuf,
}

/// A config with one syslog source on UDP, TCP and a Unix socket, and a
/// JSON file sink (or `sink` instead).
fn setup(source_keys: &str, sink: Option<&str>) -> (Setup, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_path_buf();
    let port = common::free_port();
    let socket = path.join("run/syslog.sock");
    let output = path.join("out.json");
    let sink = sink.map_or_else(
        || common::file_sink_table("out", &output, "json"),
        str::to_string,
    );
    let config = format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[dispatcher]
batch_timeout_ms = 20

[sources.sys]
type = "syslog"
udp = "127.0.0.1:{port}"
tcp = "127.0.0.1:{port}"
unix = "{socket}"
labels = {{ env = "test" }}
{source_keys}

{sink}
"#,
        data = path.join("data").display(),
        socket = socket.display(),
    );
    let config_path = common::write_file(&path, "config.toml", &config);
    (
        Setup {
            _dir: dir,
            port,
            socket,
            output,
        },
        config_path,
    )
}

/// The JSON lines of the file sink.
fn entries(output: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str(line).expect("JSON line"))
        .collect()
}

fn wait_for_entries(output: &Path, count: usize) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    wait_until(
        &format!("{count} entries in {}", output.display()),
        Duration::from_secs(30),
        || {
            found = entries(output);
            found.len() >= count
        },
    );
    found
}

fn label<'a>(entry: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    entry["labels"][key].as_str()
}

fn metric(daemon: &Daemon, series: &str) -> f64 {
    let (_, body) = daemon.get("/metrics");
    sample(&body, series).unwrap_or_else(|| panic!("series {series} in {body}"))
}

fn syslog_error(daemon: &Daemon, error_type: &str) -> f64 {
    metric(
        daemon,
        &format!(
            "log_capturer_errors_total{{component=\"syslog\",error_type=\"{error_type}\",source_id=\"sys\"}}"
        ),
    )
}

fn logger(args: &[&str]) {
    let status = Command::new("logger")
        .args(args)
        .status()
        .expect("run logger (util-linux)");
    assert!(status.success(), "logger {args:?}: {status}");
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}

#[test]
fn logger_over_udp_tcp_and_unix_socket_comes_out_labelled_as_sent() {
    let (setup, config) = setup("", None);
    let daemon = Daemon::start(&config);
    let port = setup.port.to_string();
    let socket = setup.socket.to_str().expect("path");
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &port,
        "-d",
        "--rfc3164",
        "-t",
        "opensips",
        "--id=4242",
        "-p",
        "local0.err",
        "udp 3164",
    ]);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &port,
        "-T",
        "--octet-count",
        "--rfc5424",
        "-t",
        "mysqld",
        "--id=77",
        "--msgid",
        "TX1",
        "--sd-id",
        "origin@32473",
        "--sd-param",
        "ip=\"10.0.0.1\"",
        "-p",
        "daemon.warning",
        "tcp 5424",
    ]);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &port,
        "-T",
        "--rfc3164",
        "-t",
        "cron",
        "tcp newline 3164",
    ]);
    logger(&[
        "-u",
        socket,
        "-t",
        "local",
        "--id=9",
        "-p",
        "auth.info",
        "unix socket",
    ]);
    let found = wait_for_entries(&setup.output, 4);
    let by_text = |text: &str| {
        found
            .iter()
            .find(|entry| {
                entry["message"]
                    .as_str()
                    .is_some_and(|line| line.ends_with(text))
            })
            .unwrap_or_else(|| panic!("an entry ending with {text:?} in {found:#?}"))
    };
    let host = host_name();

    let udp = by_text("udp 3164");
    assert_eq!(label(udp, "app"), Some("opensips"));
    assert_eq!(label(udp, "procid"), Some("4242"));
    assert_eq!(label(udp, "severity"), Some("err"));
    assert_eq!(label(udp, "facility"), Some("local0"));
    assert_eq!(label(udp, "host"), Some(host.as_str()));
    assert_eq!(label(udp, "source_id"), Some("sys"));
    assert_eq!(label(udp, "env"), Some("test"));
    assert!(
        udp["message"].as_str().expect("line").starts_with("<131>"),
        "raw as received"
    );

    let tcp = by_text("tcp 5424");
    assert_eq!(label(tcp, "app"), Some("mysqld"));
    assert_eq!(label(tcp, "procid"), Some("77"));
    assert_eq!(label(tcp, "msgid"), Some("TX1"));
    assert_eq!(label(tcp, "severity"), Some("warning"));
    assert_eq!(label(tcp, "facility"), Some("daemon"));
    assert_eq!(label(tcp, "host"), Some(host.as_str()));
    let line = tcp["message"].as_str().expect("line");
    assert!(
        line.starts_with("<28>1 "),
        "octet count stripped, message whole: {line}"
    );
    assert!(line.contains("[origin@32473 ip=\"10.0.0.1\"]"), "{line}");

    let newline = by_text("tcp newline 3164");
    assert_eq!(label(newline, "app"), Some("cron"));
    assert_eq!(label(newline, "severity"), Some("notice"));

    let unix = by_text("unix socket");
    assert_eq!(label(unix, "app"), Some("local"));
    assert_eq!(label(unix, "procid"), Some("9"));
    assert_eq!(label(unix, "facility"), Some("auth"));
    assert_eq!(label(unix, "severity"), Some("info"));
    assert_eq!(label(unix, "host"), Some(host.as_str()));
    assert!(
        found
            .iter()
            .all(|entry| label(entry, "parse_error").is_none())
    );

    let mode = std::fs::metadata(&setup.socket).expect("socket exists");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o666);
    daemon.stop();
    assert!(!setup.socket.exists(), "the socket is removed at exit");
}

/// Numbered RFC 5424 messages, octet-counted.
fn counted_frames(first: u64, count: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    for number in first..first + count {
        let message = format!(
            "<165>1 2026-11-27T12:00:00.000Z web01 app 1 ID [a@1 k=\"v\\]\"] n={number:08}"
        );
        bytes.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
    }
    bytes
}

fn numbers_in(found: &[serde_json::Value]) -> Vec<u64> {
    let mut numbers: Vec<u64> = found
        .iter()
        .filter_map(|entry| {
            let line = entry["message"].as_str()?;
            line.rsplit_once("n=")?.1.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

#[test]
fn tcp_frames_cut_at_every_byte_arrive_whole_and_once() {
    let (setup, config) = setup("", None);
    let daemon = Daemon::start(&config);
    let frames = counted_frames(0, 3);
    // One connection per cut: the first write ends at byte `cut`.
    for cut in 1..frames.len() {
        let mut stream = TcpStream::connect(("127.0.0.1", setup.port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(&frames[..cut]).expect("first part");
        std::thread::sleep(Duration::from_millis(2));
        stream.write_all(&frames[cut..]).expect("second part");
    }
    // And one that writes a byte at a time.
    let mut stream = TcpStream::connect(("127.0.0.1", setup.port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    for byte in &frames {
        stream.write_all(std::slice::from_ref(byte)).expect("byte");
    }
    drop(stream);
    let expected = 3 * frames.len();
    let found = wait_for_entries(&setup.output, expected);
    std::thread::sleep(Duration::from_millis(200));
    let found_again = entries(&setup.output);
    assert_eq!(found_again.len(), expected, "no extra entries");
    let numbers = numbers_in(&found);
    for number in 0..3 {
        let copies = numbers.iter().filter(|&&found| found == number).count();
        assert_eq!(copies, frames.len(), "message {number}: one per connection");
    }
    for entry in &found {
        assert_eq!(label(entry, "host"), Some("web01"));
        assert_eq!(label(entry, "app"), Some("app"));
        assert_eq!(label(entry, "msgid"), Some("ID"));
        assert_eq!(label(entry, "severity"), Some("notice"));
        assert_eq!(label(entry, "facility"), Some("local4"));
        assert_eq!(
            entry["timestamp"], "2026-11-27T12:00:00.000000000Z",
            "the message's own time"
        );
    }
    assert_eq!(syslog_error(&daemon, "framing"), 0.0);
    daemon.stop();
}

#[test]
fn ten_mib_without_newline_is_cut_counted_and_the_connection_goes_on() {
    let (setup, config) = setup("max_message_bytes = 65536", None);
    let daemon = Daemon::start(&config);
    let pid = daemon.child.id();
    let mut stream = TcpStream::connect(("127.0.0.1", setup.port)).expect("connect");
    let block = vec![b'x'; 1024 * 1024];
    let mut rss_max = 0;
    for _ in 0..10 {
        stream.write_all(&block).expect("write");
        rss_max = rss_max.max(rss_of(pid));
    }
    stream
        .write_all(b"\n<13>Nov 27 12:00:00 host app: after\n")
        .expect("write");
    let found = wait_for_entries(&setup.output, 2);
    assert_eq!(found.len(), 2, "{found:#?}");
    let cut = found[0]["message"].as_str().expect("line");
    assert_eq!(cut.len(), 65536, "cut at max_message_bytes");
    assert!(cut.bytes().all(|byte| byte == b'x'));
    // Without `<PRI>` it is RFC 3164 text: delivered, not a parse error.
    assert_eq!(label(&found[0], "parse_error"), None);
    assert_eq!(
        found[1]["message"].as_str(),
        Some("<13>Nov 27 12:00:00 host app: after")
    );
    assert_eq!(syslog_error(&daemon, "truncated"), 1.0);
    assert!(
        rss_max < 96 << 20,
        "RSS {rss_max} bytes while 10 MiB streamed in"
    );
    drop(stream);
    daemon.stop();
}

#[test]
fn silent_connection_is_closed_after_idle_timeout_and_others_go_on() {
    let (setup, config) = setup("idle_timeout_ms = 300", None);
    let daemon = Daemon::start(&config);
    let mut silent = TcpStream::connect(("127.0.0.1", setup.port)).expect("connect");
    wait_until("one connection", Duration::from_secs(10), || {
        metric(
            &daemon,
            "log_capturer_syslog_connections_active{source_id=\"sys\"}",
        ) == 1.0
    });
    wait_until(
        "the silent connection closed",
        Duration::from_secs(10),
        || {
            metric(
                &daemon,
                "log_capturer_syslog_connections_idle_closed_total{source_id=\"sys\"}",
            ) == 1.0
        },
    );
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    assert_eq!(
        silent.read(&mut byte).expect("EOF"),
        0,
        "closed by the daemon"
    );
    let mut stream = TcpStream::connect(("127.0.0.1", setup.port)).expect("connect");
    stream
        .write_all(b"<13>Nov 27 12:00:00 h a: still up\n")
        .expect("write");
    drop(stream);
    wait_for_entries(&setup.output, 1);
    daemon.stop();
}

#[test]
fn twice_max_connections_keeps_the_daemon_up_and_every_accepted_message_delivered() {
    const MAX: usize = 8;
    const PER_CONNECTION: u64 = 200;
    let (setup, config) = setup(&format!("max_connections = {MAX}"), None);
    let daemon = Daemon::start(&config);
    let streams: Vec<TcpStream> = (0..2 * MAX)
        .map(|_| TcpStream::connect(("127.0.0.1", setup.port)).expect("connect"))
        .collect();
    wait_until("refusals counted", Duration::from_secs(10), || {
        syslog_error(&daemon, "connection_refused") == MAX as f64
    });
    let mut accepted = 0;
    for (index, mut stream) in streams.into_iter().enumerate() {
        // A refused connection was closed by the daemon: its end reads
        // EOF; an accepted one has nothing to read yet.
        stream.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("connection {index}: {other:?}"),
        }
        stream.set_nonblocking(false).expect("blocking");
        accepted += 1;
        let first = index as u64 * PER_CONNECTION;
        stream
            .write_all(&counted_frames(first, PER_CONNECTION))
            .expect("write");
    }
    assert_eq!(accepted, MAX, "max_connections accepted, the rest refused");
    let expected = MAX * PER_CONNECTION as usize;
    let found = wait_for_entries(&setup.output, expected);
    let numbers = numbers_in(&found);
    let mut unique = numbers.clone();
    unique.dedup();
    assert_eq!(numbers.len(), expected);
    assert_eq!(unique.len(), expected, "no duplicates");
    daemon.stop();
}

/// Runs `count` datagrams of `message(n)` into the UDP port as fast as the
/// kernel takes them; returns how many were sent.
fn flood_udp(port: u16, count: u64, message: impl Fn(u64) -> String) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(("127.0.0.1", port)).expect("connect");
    let mut sent = 0;
    for number in 0..count {
        if socket.send(message(number).as_bytes()).is_ok() {
            sent += 1;
        }
    }
    sent
}

#[test]
fn udp_flood_past_the_sink_counts_every_drop() {
    // A JSON file sink with one small batch in flight is far slower than a
    // sender in a tight loop.
    let (setup, config) = setup("recv_buffer_bytes = 65536", None);
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace(
        "[dispatcher]\nbatch_timeout_ms = 20",
        "[dispatcher]\nbatch_timeout_ms = 20\nbatch_size = 256\nqueue_capacity = 2048\nbatches_in_flight = 1",
    );
    std::fs::write(&config, text).expect("config");
    let daemon = Daemon::start(&config);
    let sent = flood_udp(setup.port, 200_000, |number| {
        format!("<13>Nov 27 12:00:00 flood app: n={number:08}")
    });
    let sink_lines =
        "log_capturer_sink_logs_total{sink=\"out\",sink_type=\"file\",status=\"success\"}";
    let mut last = (-1.0, -1.0, -1.0);
    wait_until("the counts to settle", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_millis(1200));
        let now = (
            metric(&daemon, sink_lines),
            syslog_error(&daemon, "queue_full"),
            syslog_error(&daemon, "kernel_drop"),
        );
        let settled = now == last;
        last = now;
        settled
    });
    let (delivered, queue_full, kernel) = last;
    eprintln!("sent {sent}, delivered {delivered}, queue_full {queue_full}, kernel drops {kernel}");
    assert!(
        queue_full + kernel > 0.0,
        "the flood outran the sink: {last:?}"
    );
    assert_eq!(entries(&setup.output).len() as f64, delivered);
    assert_eq!(
        delivered + queue_full + kernel,
        sent as f64,
        "sent {sent}: delivered {delivered} + dropped {queue_full} + kernel {kernel}"
    );
    daemon.stop();
}

#[test]
fn a_million_unique_hostnames_keep_memory_bounded() {
    let sink = "[sinks.null]\ntype = \"null\"\n";
    let (setup, config) = setup("", Some(sink));
    let daemon = Daemon::start(&config);
    let pid = daemon.child.id();
    let mut stream = TcpStream::connect(("127.0.0.1", setup.port)).expect("connect");
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut rss_max = 0;
    const MESSAGES: u64 = 1_000_000;
    for number in 0..MESSAGES {
        writeln!(
            buffer,
            "<13>Nov 27 12:00:00 host-{number:08}.example.net app[1]: n={number}"
        )
        .expect("format");
        if buffer.len() > (1 << 20) - 256 {
            stream.write_all(&buffer).expect("write");
            buffer.clear();
            if number % 100_000 < 8_000 {
                rss_max = rss_max.max(rss_of(pid));
            }
        }
    }
    stream.write_all(&buffer).expect("write");
    drop(stream);
    let sink_lines =
        "log_capturer_sink_logs_total{sink=\"null\",sink_type=\"null\",status=\"success\"}";
    wait_until("every message delivered", Duration::from_secs(120), || {
        rss_max = rss_max.max(rss_of(pid));
        metric(&daemon, sink_lines) == MESSAGES as f64
    });
    let not_interned = metric(&daemon, "log_capturer_labels_not_interned_total");
    let symbols = metric(&daemon, "log_capturer_label_symbols");
    assert!(
        not_interned > (MESSAGES / 2) as f64,
        "the table filled and later hosts were carried inline: {not_interned}"
    );
    assert!(symbols <= 65_536.0, "label_symbols_max holds: {symbols}");
    // The stated bound (README, syslog source): the chunk pool, the symbol
    // table's 4 MiB of strings (twice), the batches, and the binary.
    eprintln!(
        "peak RSS {} MiB, {not_interned} values carried inline",
        rss_max >> 20
    );
    assert!(rss_max < 80 << 20, "RSS {} MiB", rss_max >> 20);
    daemon.stop();
}

#[test]
fn message_that_does_not_parse_is_delivered_raw_and_counted() {
    let (setup, config) = setup("", None);
    let daemon = Daemon::start(&config);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .send_to(b"<999>not a priority", ("127.0.0.1", setup.port))
        .expect("send");
    let found = wait_for_entries(&setup.output, 1);
    assert_eq!(found[0]["message"], "<999>not a priority");
    assert_eq!(label(&found[0], "parse_error"), Some("true"));
    assert_eq!(label(&found[0], "host"), Some("127.0.0.1"));
    assert_eq!(syslog_error(&daemon, "parse_error"), 1.0);
    daemon.stop();
}

#[test]
fn address_in_use_stops_run_with_an_error_naming_it() {
    let (setup, config) = setup("", None);
    let holder = std::net::TcpListener::bind(("127.0.0.1", setup.port)).expect("hold the port");
    let output = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("TCP 127.0.0.1:{}", setup.port)) && stderr.contains("sys"),
        "{stderr}"
    );
    drop(holder);
    let start = Instant::now();
    let check = Command::new(common::binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("check-config");
    assert!(check.status.success(), "{check:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_unix_socket_another_process_receives_on_is_not_taken_over() {
    let (setup, config) = setup("", None);
    std::fs::create_dir_all(setup.socket.parent().expect("directory")).expect("directory");
    // A stream listener, as syslog-ng's unix-stream("/dev/log") is.
    let listener = std::os::unix::net::UnixListener::bind(&setup.socket).expect("listen");
    let refused = |what: &str| {
        let output = Command::new(common::binary())
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what}: {stderr}");
        assert!(
            stderr.contains("in use by another process"),
            "{what}: {stderr}"
        );
    };
    refused("stream listener");
    drop(listener);
    std::fs::remove_file(&setup.socket).expect("remove");
    // A datagram socket, as another collector's is: check-config warns (a
    // running daemon with this very config holds it), run refuses.
    let holder = std::os::unix::net::UnixDatagram::bind(&setup.socket).expect("hold the socket");
    let check = Command::new(common::binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("check-config");
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{check:?}");
    assert!(stdout.contains("in use by another process now"), "{stdout}");
    refused("datagram socket");
    assert!(setup.socket.exists(), "the holder's socket is left alone");
    drop(holder);
    // Now stale, as a daemon killed with kill -9 leaves it: replaced.
    let daemon = Daemon::start(&config);
    logger(&[
        "-u",
        setup.socket.to_str().expect("path"),
        "after the stale socket",
    ]);
    wait_for_entries(&setup.output, 1);
    daemon.stop();
}

#[test]
fn empty_datagrams_are_counted() {
    let (setup, config) = setup("", None);
    let daemon = Daemon::start(&config);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for datagram in [&b""[..], b"\n", b"<13>Nov 27 12:00:00 h a: one"] {
        socket
            .send_to(datagram, ("127.0.0.1", setup.port))
            .expect("send");
    }
    wait_for_entries(&setup.output, 1);
    wait_until(
        "two empty datagrams counted",
        Duration::from_secs(10),
        || syslog_error(&daemon, "empty") == 2.0,
    );
    daemon.stop();
}

/// Goal: out of descriptors, the accept loop neither spins nor floods the
/// log, and recovers. Method: the daemon runs with 48 descriptors; 100
/// connections are opened and held for two seconds.
#[test]
fn out_of_descriptors_backs_off_and_recovers() {
    use std::os::unix::process::CommandExt;
    let (setup, config) = setup("max_connections = 1000", None);
    let mut command = Command::new(common::binary());
    command
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the
    // parent; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (daemon, _) = common::await_started(command.spawn().expect("start"));
    let pid = daemon.child.id();
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .expect("stat")
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|field| field.parse().expect("ticks"))
            .collect();
        fields[0] + fields[1]
    };
    let streams: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", setup.port)).expect("connect"))
        .collect();
    let before = cpu();
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu() - before;
    let warnings: Vec<String> = daemon
        .stderr
        .try_iter()
        .filter(|line| line.contains("cannot accept"))
        .collect();
    assert!(
        ticks < 50,
        "{ticks} ticks of CPU in 2 s while out of descriptors"
    );
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    drop(streams);
    let mut stream = TcpStream::connect(("127.0.0.1", setup.port)).expect("connect");
    stream
        .write_all(b"<13>Nov 27 12:00:00 h a: after the limit\n")
        .expect("write");
    drop(stream);
    wait_for_entries(&setup.output, 1);
    daemon.stop();
}

/// Goal: TCP bytes the kernel took but the source could not read by a
/// stop (every chunk stuck behind a blocked sink) are counted, not lost
/// silently. Method: a stdout sink into a pipe nobody reads, 200,000
/// messages over one connection, then SIGTERM; the stop's warning names
/// the bytes discarded.
#[test]
fn tcp_bytes_unread_at_a_stop_are_counted() {
    let (setup, config) = setup("", Some("[sinks.out]\ntype = \"stdout\"\n"));
    let child = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let (mut daemon, _) = common::await_started(child);
    let _unread_stdout = daemon.child.stdout.take();
    let port = setup.port;
    let sender = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let frames = counted_frames(0, 200_000);
        // Ends when the daemon stops and resets the connection.
        let _ = stream.write_all(&frames);
    });
    std::thread::sleep(Duration::from_secs(3));
    common::send_signal(&daemon.child, libc::SIGTERM);
    let status = common::wait_with_timeout(&mut daemon.child, Duration::from_secs(60));
    assert!(status.success(), "exit {status}");
    let log: Vec<String> = daemon.stderr.try_iter().collect();
    let warning = log
        .iter()
        .find(|line| line.contains("received but not read by the stop"))
        .unwrap_or_else(|| panic!("a warning counts the unread bytes: {log:#?}"));
    let bytes: u64 = warning
        .split("bytes=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .expect("bytes=N");
    assert!(bytes > 0, "{warning}");
    sender.join().expect("sender");
}
