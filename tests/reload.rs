//! Configuration reload on SIGHUP.
//!
//! A changed, valid config makes the daemon drain and execute itself
//! again (same process id) with its listening sockets handed over; an
//! invalid one is refused with a message naming the key and line, and the
//! old config runs on; an unchanged one only reopens file outputs (see
//! `sighup.rs`).

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn numbers_in(text: &str) -> Vec<u64> {
    text.lines()
        .map(|line| {
            line.strip_prefix("seq=")
                .and_then(|rest| rest.get(..12))
                .and_then(|digits| digits.parse().ok())
                .unwrap_or_else(|| panic!("not a numbered line: {line:?}"))
        })
        .collect()
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// Waits for a log line containing `what`, failing after `timeout`; the
/// lines before it are dropped.
fn await_log(daemon: &common::Daemon, what: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match daemon.stderr.recv_timeout(remaining) {
            Ok(line) if line.contains(what) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no log line with {what:?} within {timeout:?}: {seen:#?}"),
        }
    }
}

/// The metrics address a `started` line names.
fn metrics_address(started: &str) -> std::net::SocketAddr {
    let at = started.find("metrics=").expect("metrics address");
    started[at + 8..]
        .split_whitespace()
        .next()
        .expect("address")
        .parse()
        .expect("socket address")
}

/// A writer appending numbered lines to `input` at about `rate` lines/s
/// until `writing` is cleared; returns how many it wrote.
fn start_writer(
    input: &Path,
    rate: u64,
    writing: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let writing = Arc::clone(writing);
    let input = input.to_path_buf();
    std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .expect("open input");
        let per_tick = rate / 100;
        let started = Instant::now();
        let mut next = 0;
        while writing.load(Ordering::Relaxed) {
            common::write_numbered_lines(&mut file, next, per_tick);
            file.flush().expect("flush input");
            next += per_tick;
            // Paced on the clock, so that a slow tick is caught up.
            let due = Duration::from_millis(next * 1000 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        next
    })
}

/// Goal: reloading a changed, valid config while 50,000 lines/s are
/// written loses no line and writes none twice, and a second SIGHUP sent
/// while the first reload drains does not end the daemon.
/// Method: a file source and a raw file sink; after 2 s the config is
/// changed (batch settings) and SIGHUP is sent; the new
/// process must log `started` with the same process id; 1 s later a
/// second change is sent as two SIGHUPs 20 ms apart. After the writer
/// stops, the output must hold every line once and in order, and the
/// reload counter must count the reloads (handed across each exec).
#[test]
fn reload_under_load_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("app.log");
    std::fs::File::create(&input).expect("create input");
    let output = dir.path().join("out.log");
    let sinks = common::file_sink_table("out", &output, "raw");
    let config = dir.path().join("config.toml");
    let write_config = |extra: &str| {
        let text = common::file_source_config(&input, "start_at = \"beginning\"", &sinks)
            .replace("batch_timeout_ms = 20", extra);
        std::fs::write(&config, text).expect("write config");
    };
    write_config("batch_timeout_ms = 20");
    let daemon = common::Daemon::start(&config);
    let pid = daemon.child.id();

    let writing = Arc::new(AtomicBool::new(true));
    let writer = start_writer(&input, 50_000, &writing);
    std::thread::sleep(Duration::from_secs(2));
    write_config("batch_timeout_ms = 30\nlatency_target_ms = 10");
    common::send_signal(&daemon.child, libc::SIGHUP);
    await_log(&daemon, "config changed and valid", Duration::from_secs(10));
    let started = await_log(&daemon, "started", Duration::from_secs(30));
    assert_eq!(daemon.child.id(), pid, "same process");
    std::thread::sleep(Duration::from_secs(1));
    write_config("batch_timeout_ms = 25");
    common::send_signal(&daemon.child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(20));
    common::send_signal(&daemon.child, libc::SIGHUP);
    drop(started);
    let started = await_log(&daemon, "started", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    writing.store(false, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    assert!(written >= 150_000, "the writer kept its pace: {written}");
    common::wait_until("every line written out", Duration::from_secs(60), || {
        line_count(&output) >= written as usize
    });
    let mut reloaded = daemon;
    reloaded.metrics = metrics_address(&started);
    let (_, body) = reloaded.get("/metrics");
    let succeeded = common::sample(
        &body,
        "log_capturer_config_reloads_total{result=\"success\"}",
    );
    assert_eq!(succeeded, Some(2.0), "two reloads counted");
    assert!(
        reloaded.child.try_wait().expect("poll").is_none(),
        "alive after SIGHUP twice"
    );
    reloaded.stop();

    let numbers = numbers_in(&std::fs::read_to_string(&output).expect("output"));
    let expected: Vec<u64> = (0..written).collect();
    assert_eq!(numbers.len(), expected.len(), "lines out vs lines written");
    assert!(numbers == expected, "every line once and in order");
}

/// Goal: a broken config is refused: the daemon logs the key and its line,
/// counts the failure, and runs on with the old config (same process, no
/// new start, lines still delivered); fixing the config and sending
/// SIGHUP again applies it, and the failure stays counted across the exec.
/// Method: an unknown key on line 4 of the sink table, SIGHUP, then a
/// valid change and SIGHUP.
#[test]
fn broken_config_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(dir.path(), "app.log", "");
    let output = dir.path().join("out.log");
    let config = dir.path().join("config.toml");
    let good = common::file_source_config(
        &input,
        "start_at = \"beginning\"",
        &common::file_sink_table("out", &output, "raw"),
    );
    std::fs::write(&config, &good).expect("write config");
    let daemon = common::Daemon::start(&config);
    common::append_numbered_lines(&input, 0, 1000);
    common::wait_until("first lines out", Duration::from_secs(20), || {
        line_count(&output) == 1000
    });

    let broken = good.replace(
        "encoding = \"raw\"",
        "encoding = \"raw\"\nflush_often = true",
    );
    std::fs::write(&config, &broken).expect("write broken config");
    let broken_line = broken
        .lines()
        .position(|line| line.starts_with("flush_often"))
        .expect("the broken key")
        + 1;
    common::send_signal(&daemon.child, libc::SIGHUP);
    let refused = await_log(&daemon, "new config refused", Duration::from_secs(10));
    assert!(refused.contains("flush_often"), "names the key: {refused}");
    assert!(
        refused.contains(&format!("line {broken_line}")),
        "names the line {broken_line}: {refused}"
    );
    let (_, body) = daemon.get("/metrics");
    assert_eq!(
        common::sample(
            &body,
            "log_capturer_config_reloads_total{result=\"failure\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        common::sample(&body, "log_capturer_config_last_reload_successful"),
        Some(0.0)
    );
    common::append_numbered_lines(&input, 1000, 1000);
    common::wait_until(
        "lines delivered on the old config",
        Duration::from_secs(20),
        || line_count(&output) == 2000,
    );
    while let Ok(line) = daemon.stderr.try_recv() {
        assert!(!line.contains("started"), "no restart: {line}");
    }

    std::fs::write(
        &config,
        good.replace("batch_timeout_ms = 20", "batch_timeout_ms = 40"),
    )
    .expect("fix config");
    common::send_signal(&daemon.child, libc::SIGHUP);
    let started = await_log(&daemon, "started", Duration::from_secs(30));
    let mut daemon = daemon;
    daemon.metrics = metrics_address(&started);
    let (_, body) = daemon.get("/metrics");
    for (series, value) in [
        ("log_capturer_config_reloads_total{result=\"failure\"}", 1.0),
        ("log_capturer_config_reloads_total{result=\"success\"}", 1.0),
        ("log_capturer_config_last_reload_successful", 1.0),
    ] {
        assert_eq!(common::sample(&body, series), Some(value), "{series}");
    }
    common::append_numbered_lines(&input, 2000, 1000);
    common::wait_until("lines after the reload", Duration::from_secs(20), || {
        line_count(&output) == 3000
    });
    daemon.stop();
    let numbers = numbers_in(&std::fs::read_to_string(&output).expect("output"));
    assert!(
        numbers == (0..3000).collect::<Vec<u64>>(),
        "every line once"
    );
}

/// Goal: syslog senders see no closed socket across a reload: UDP and
/// Unix datagrams sent all through it arrive (none refused, none lost),
/// and TCP connections opened during it are accepted.
/// Method: a syslog source on UDP, TCP and a Unix socket, a raw file sink;
/// senders send numbered messages at 200/s on UDP and the Unix socket and
/// open a TCP connection every 50 ms, for 1 s before and 2 s after a
/// SIGHUP with a changed config. A connected UDP socket reports a refused
/// port as an error on a later send; the Unix socket as `ENOENT` or
/// `ECONNREFUSED`. Every message must be in the output.
#[test]
fn listening_sockets_are_handed_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out.log");
    let socket_path = dir.path().join("syslog.sock");
    let port = common::free_port();
    let config = dir.path().join("config.toml");
    let write_config = |batch_timeout_ms: u32| {
        let text = format!(
            r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data}"

[dispatcher]
batch_timeout_ms = {batch_timeout_ms}

[sources.net]
type = "syslog"
udp = "127.0.0.1:{port}"
tcp = "127.0.0.1:{port}"
unix = "{socket}"
recv_buffer_bytes = 4194304

{sink}
"#,
            data = dir.path().join("data").display(),
            socket = socket_path.display(),
            sink = common::file_sink_table("out", &output, "raw"),
        );
        std::fs::write(&config, text).expect("write config");
    };
    write_config(20);
    let daemon = common::Daemon::start(&config);

    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let sending = Arc::clone(&sending);
        let socket_path = socket_path.clone();
        std::thread::spawn(move || {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
            udp.connect(("127.0.0.1", port)).expect("connect udp");
            let unix = std::os::unix::net::UnixDatagram::unbound().expect("unix");
            let mut sent = 0u64;
            let mut errors = Vec::new();
            while sending.load(Ordering::Relaxed) {
                for _ in 0..10 {
                    let udp_message = format!("<14>udp message {sent:06}");
                    if let Err(error) = udp.send(udp_message.as_bytes()) {
                        errors.push(format!("udp {sent}: {error}"));
                    }
                    let unix_message = format!("<14>unix message {sent:06}");
                    if let Err(error) = unix.send_to(unix_message.as_bytes(), &socket_path) {
                        errors.push(format!("unix {sent}: {error}"));
                    }
                    sent += 1;
                }
                match std::net::TcpStream::connect(("127.0.0.1", port)) {
                    Ok(mut stream) => {
                        let _ = writeln!(stream, "<14>tcp message {sent:06}");
                    }
                    Err(error) => errors.push(format!("tcp {sent}: {error}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (sent, errors)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    write_config(30);
    common::send_signal(&daemon.child, libc::SIGHUP);
    let started = await_log(&daemon, "started", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    sending.store(false, Ordering::Relaxed);
    let (sent, errors) = sender.join().expect("sender");
    assert!(errors.is_empty(), "senders saw errors: {errors:#?}");
    let text_has_all = || {
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        (0..sent).all(|number| {
            text.contains(&format!("udp message {number:06}"))
                && text.contains(&format!("unix message {number:06}"))
        })
    };
    common::wait_until(
        "every datagram written out",
        Duration::from_secs(20),
        text_has_all,
    );
    let mut daemon = daemon;
    daemon.metrics = metrics_address(&started);
    let (_, body) = daemon.get("/metrics");
    assert_eq!(
        common::sample(&body, "log_capturer_reload_sockets_not_handed_over_total"),
        Some(0.0)
    );
    daemon.stop();
    assert!(!socket_path.exists(), "the Unix socket is removed at exit");
}
