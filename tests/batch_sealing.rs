//! When a batch is sealed once its sources have nothing more: a file
//! source ends each read round, and its batch goes to the sinks at once;
//! a source woken by every arrival (syslog) does not mark rounds, and its
//! batch waits `latency_target_ms` for more. Measured through the binary,
//! with a latency target long enough (3 s) that the two cannot be confused.

mod common;

use std::io::Write;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const LATENCY_TARGET_MS: u64 = 3000;

fn config(dir: &Path, input: &Path, port: u16, output: &Path) -> String {
    format!(
        r#"[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data_dir}"

[dispatcher]
batch_timeout_ms = 20000
latency_target_ms = {LATENCY_TARGET_MS}

[sources.app]
type = "file"
paths = ["{input}"]

[sources.net]
type = "syslog"
udp = "127.0.0.1:{port}"

{sink}"#,
        data_dir = dir.join("data").display(),
        input = input.display(),
        sink = file_sink_table("out", output, "raw"),
    )
}

/// Starts the daemon over an empty `app.log` and a UDP syslog port.
fn start(dir: &Path) -> (Daemon, std::path::PathBuf, u16, std::path::PathBuf) {
    let input = write_file(dir, "app.log", "");
    let output = dir.join("out.log");
    let port = free_port();
    let config = write_file(dir, "config.toml", &config(dir, &input, port, &output));
    (Daemon::start(&config), input, port, output)
}

/// How long until `output` holds a line containing `needle`.
fn time_to_arrive(output: &Path, needle: &str, since: Instant) -> Duration {
    wait_until(needle, Duration::from_secs(15), || {
        std::fs::read_to_string(output).is_ok_and(|text| text.contains(needle))
    });
    since.elapsed()
}

#[test]
fn a_file_sources_batch_is_sealed_when_its_read_round_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, input, _, output) = start(dir.path());
    // Twice: the first batch, and one after the source has been idle.
    for round in 0..2 {
        let written = Instant::now();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .unwrap();
        for line in 0..50 {
            writeln!(file, "round {round} line {line}").unwrap();
        }
        drop(file);
        let waited = time_to_arrive(&output, &format!("round {round} line 49"), written);
        assert!(
            waited < Duration::from_millis(LATENCY_TARGET_MS / 2),
            "round {round}: the file's lines took {waited:?}, as if their batch waited for the latency target"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    daemon.stop();
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(text.lines().count(), 100, "every line once");
}

#[test]
fn a_syslog_sources_batch_waits_for_the_latency_target() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _, port, output) = start(dir.path());
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = Instant::now();
    socket
        .send_to(
            b"<13>Nov 28 06:00:00 host app: one datagram",
            ("127.0.0.1", port),
        )
        .unwrap();
    let waited = time_to_arrive(&output, "one datagram", sent);
    assert!(
        waited >= Duration::from_millis(LATENCY_TARGET_MS * 2 / 3),
        "the datagram's batch was sealed after {waited:?}, before the latency target"
    );
    daemon.stop();
}
