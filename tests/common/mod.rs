//! Helpers shared by the whole-daemon tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
pub fn file_source_config(input: &Path, extra_source_keys: &str, sinks: &str) -> String {
    format!(
        r#"
[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"

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
        input = input.display()
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
