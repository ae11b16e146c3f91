//! Goal: `log-capturer demo` runs the whole pipeline through an outage and
//! loses nothing. Method: a short run of the binary (5,000 lines/s, 2 s
//! before, 3 s of outage, 2 s after); the summary must say `lost: 0`, show
//! that the DLQ was used and replayed, and the exit status must be 0.

mod common;

use std::process::Command;

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
        .env("LOG_CAPTURER_LOG", "warn")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    assert!(stdout.contains("[OUTAGE]"), "{stdout}");
}
