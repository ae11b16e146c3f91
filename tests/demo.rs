//! Goal: `log-capturer demo` runs the whole pipeline through an outage,
//! loses nothing, duplicates no more than the lines in flight when the
//! brokers went down, and prints what a user reads: lines within 80 columns,
//! librdkafka's messages only through the daemon's log, at WARN at most and
//! rate-limited. Method: a short run of the binary (5,000 lines/s, 2 s
//! before, 3 s of outage, 2 s after) at the default log level; the summary
//! and both output streams are checked, and the exit status must be 0.

mod common;

use std::process::Command;

/// librdkafka lines one client may log in a short run: one per kind and
/// 10 s, plus the count of the rest when the client is dropped.
const LIBRDKAFKA_LINES_MAX: usize = 10;

#[test]
fn short_demo_loses_nothing() {
    let output = Command::new(common::binary())
        .args([
            "demo",
            "--rate",
            "5000",
            "--before-secs",
            "2",
            "--outage-secs",
            "3",
            "--after-secs",
            "2",
        ])
        .env("LOG_CAPTURER_LOG", "info")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed: {stdout}\n{stderr}");
    check_librdkafka_lines(&stderr);
    for line in stdout.lines() {
        let columns = line.chars().count();
        assert!(columns <= 80, "{columns} columns: {line:?}");
    }
    let value = |label: &str| -> u64 {
        stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no {label:?} in {stdout}"))
    };
    assert_eq!(value("lost:"), 0, "{stdout}");
    let generated = value("generated:");
    assert!(generated >= 30_000, "{stdout}");
    assert_eq!(value("read back (distinct):"), generated);
    assert!(
        value("stored in the DLQ:") > 0,
        "the outage sent lines to the DLQ: {stdout}"
    );
    assert_eq!(value("replayed from DLQ:"), value("stored in the DLQ:"));
    assert!(stdout.contains("OUTAGE"), "{stdout}");

    assert_eq!(value("breaker openings:"), 1, "{stdout}\n{stderr}");
    assert_eq!(value("breaker closings:"), 1, "{stdout}\n{stderr}");
    // 1000 lines a batch, 8 batches in flight: what one outage can catch.
    let bound = duplicates_bound(&stdout);
    assert_eq!(bound, 8_000, "{stdout}");
    assert!(value("duplicates:") <= bound, "{stdout}");
}

/// The bound the summary prints: `duplicates: N (at most B: ...`.
fn duplicates_bound(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|line| line.split_once("(at most "))
        .and_then(|(_, rest)| rest.split(':').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no duplicate bound in {stdout}"))
}

/// No line at ERROR; librdkafka's lines come only through the daemon's
/// forwarder, at WARN at most, and few of them.
fn check_librdkafka_lines(stderr: &str) {
    for line in stderr.lines() {
        assert!(!line.contains(" ERROR "), "an ERROR line: {line}\n{stderr}");
    }
    let librdkafka: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("rdkafka"))
        .collect();
    for line in &librdkafka {
        assert!(
            line.contains("log_capturer::sink::kafka::log:"),
            "librdkafka line not routed through the daemon's log: {line}"
        );
    }
    assert!(
        librdkafka.len() <= LIBRDKAFKA_LINES_MAX,
        "{} librdkafka lines (rate limit):\n{stderr}",
        librdkafka.len()
    );
}
