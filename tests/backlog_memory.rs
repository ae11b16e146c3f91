//! Peak memory while a large backlog is read, for every line length.
//!
//! Goal: the daemon's memory is decided at start-up, not by the input. A
//! chunk's span table holds a bounded number of lines, so a read of very
//! short lines brings more lines than one chunk can carry; the rest must
//! wait in the file, not pile up in memory.
//!
//! Method: for each line length from 1 byte (an empty line) to 3 MB,
//! a 64 MiB file is read from its beginning into a null sink with
//! `exit_on_eof`; the child's peak resident memory is its `VmHWM`, polled
//! from `/proc/<pid>/status` until it exits (not `wait4`'s `ru_maxrss`:
//! the child is spawned with vfork semantics, so `execve` folds the test
//! process's own peak into it, and a test binary that has run other tests
//! reads 38 MiB for a 12 MiB daemon), and the daemon's own summary line
//! must count every line of the file.

mod common;

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BACKLOG_BYTES: usize = 64 * 1024 * 1024;

/// The default `max_line_bytes`.
const MAX_LINE_BYTES: u64 = 1 << 20;

/// Peak RSS every line length must stay under. Measured: 11 to 13 MiB for
/// lines up to 120 bytes, 18 MiB for 4 KiB lines, 21 MiB for 3 MB lines
/// (a chunk grown for the line, the arena holding it). The chunk pool
/// (16 × 128 KiB by default), the batch arenas and the binary itself stay
/// well under this; before the carried tail was bounded, 14-byte lines took
/// gigabytes.
const PEAK_RSS_BYTES_MAX: u64 = 40 * 1024 * 1024;

/// A child past this much resident memory is killed, so that a regression
/// fails the test instead of exhausting the machine.
const RUNAWAY_RSS_BYTES: u64 = 4 * PEAK_RSS_BYTES_MAX;

/// Polls the child's RSS until it exits; kills it past the runaway bound.
/// Returns whether it had to, and the highest `VmHWM` (the peak resident
/// memory of the child's own address space) seen.
fn kill_if_runaway(pid: libc::pid_t) -> (bool, u64) {
    let mut peak_kib = 0;
    loop {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return (false, peak_kib * 1024);
        };
        let hwm_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        peak_kib = peak_kib.max(hwm_kib);
        let rss_kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.split_whitespace().next())
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        if status.contains("State:\tZ") {
            return (false, peak_kib * 1024);
        }
        if rss_kib * 1024 > RUNAWAY_RSS_BYTES {
            // SAFETY: kill(2) with a pid of our own unwaited child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return (true, peak_kib * 1024);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Writes `BACKLOG_BYTES / line_bytes` lines of exactly `line_bytes` bytes
/// (newline included) and returns how many.
fn write_backlog(path: &Path, line_bytes: usize) -> u64 {
    let mut line = vec![b'x'; line_bytes];
    line[line_bytes - 1] = b'\n';
    let lines = BACKLOG_BYTES / line_bytes;
    let mut block = Vec::with_capacity(1024 * 1024 + line_bytes);
    let mut out = BufWriter::new(std::fs::File::create(path).expect("create backlog"));
    let mut written = 0;
    while written < lines {
        block.clear();
        while block.len() < 1024 * 1024 && written < lines {
            block.extend_from_slice(&line);
            written += 1;
        }
        out.write_all(&block).expect("write backlog");
    }
    out.flush().expect("flush backlog");
    lines as u64
}

/// Runs the daemon to end of input; returns (peak RSS bytes, stderr).
// The child is reaped by `wait4`, which also gives its peak RSS; `Child`
// cannot see that.
#[allow(clippy::zombie_processes)]
fn run_to_eof(config: &Path) -> (u64, String) {
    let child = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(config)
        .env("LOG_CAPTURER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start log-capturer");
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).expect("read stderr");
        text
    });
    let watchdog = std::thread::spawn(move || kill_if_runaway(pid));
    let mut status = 0;
    // SAFETY: `pid` is our own child, not yet waited for; `status` is
    // valid for writes for the duration of the call.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    let stderr = reader.join().expect("stderr reader");
    let (killed, peak_rss_bytes) = watchdog.join().expect("watchdog");
    assert!(
        !killed,
        "daemon killed past {RUNAWAY_RSS_BYTES} bytes of RSS"
    );
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "daemon failed (status {status}):\n{stderr}"
    );
    assert!(
        peak_rss_bytes > 0,
        "no VmHWM was read from /proc/{pid}/status"
    );
    (peak_rss_bytes, stderr)
}

/// The `lines_processed` figure of the daemon's `stopped` line.
fn lines_processed(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|line| line.contains("stopped"))
        .unwrap_or_else(|| panic!("no stopped line in:\n{stderr}"));
    let value = line
        .split("lines_processed=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no lines_processed in {line}"));
    value.parse().expect("lines_processed is a number")
}

#[test]
fn peak_memory_is_bounded_for_every_line_length() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("backlog.log");
    let config_path = dir.path().join("config.toml");
    let config = common::file_source_config(
        &input,
        "start_at = \"beginning\"\nexit_on_eof = true",
        "[sinks.drop]\ntype = \"null\"",
    );
    std::fs::write(&config_path, config).expect("write config");
    let mut peaks = Vec::new();
    // Up to a line of exactly `max_line_bytes` (1 MiB) and one cut into
    // three pieces.
    for line_bytes in [1, 2, 8, 14, 17, 64, 120, 4096, (1 << 20) + 1, 3_000_000] {
        let lines = write_backlog(&input, line_bytes);
        // A line longer than `max_line_bytes` is shipped as several entries.
        let entries_per_line = (line_bytes as u64 - 1).div_ceil(MAX_LINE_BYTES).max(1);
        let (peak_rss_bytes, stderr) = run_to_eof(&config_path);
        assert_eq!(
            lines_processed(&stderr),
            lines * entries_per_line,
            "{line_bytes}-byte lines: every line is processed"
        );
        peaks.push((line_bytes, peak_rss_bytes / (1024 * 1024)));
    }
    eprintln!("peak RSS MiB by line length: {peaks:?}");
    for (line_bytes, peak_mib) in &peaks {
        assert!(
            *peak_mib * 1024 * 1024 <= PEAK_RSS_BYTES_MAX,
            "{line_bytes}-byte lines: peak RSS {peak_mib} MiB over the bound; all: {peaks:?}"
        );
    }
}

/// `THP_enabled` of a process's status, and the kilobytes of its memory
/// backed by transparent huge pages.
fn huge_pages_of(pid: u32) -> (String, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let enabled = status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .expect("THP_enabled in status")
        .trim()
        .to_string();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let huge_kib = smaps
        .lines()
        .filter_map(|line| line.strip_prefix("AnonHugePages:"))
        .map(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .expect("kB figure")
        })
        .sum();
    (enabled, huge_kib)
}

/// Goal: by default no memory of the daemon is backed by 2 MiB transparent
/// huge pages, the allocator's start-up included (three such pages once
/// made a third of its resident memory), and `[daemon]
/// transparent_huge_pages = true` allows them. Method: a daemon that has
/// shipped 200,000 lines reports THP disabled and no `AnonHugePages`; one
/// configured to allow them reports THP enabled.
#[test]
fn huge_pages_are_refused_unless_configured() {
    for allowed in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = common::write_file(dir.path(), "input.log", "");
        common::append_numbered_lines(&input, 0, 200_000);
        let mut config = common::file_source_config(&input, "", "[sinks.null]\ntype = \"null\"\n");
        config = config.replacen(
            "[daemon]\n",
            &format!("[daemon]\ntransparent_huge_pages = {allowed}\n"),
            1,
        );
        let config = common::write_file(dir.path(), "config.toml", &config);
        let daemon = common::Daemon::start(&config);
        common::wait_until(
            "200,000 lines shipped",
            std::time::Duration::from_secs(30),
            || {
                let (_, body) = daemon.get("/metrics");
                common::sample(
                    &body,
                    "log_capturer_source_lines_read_total{source_id=\"app\"}",
                )
                .unwrap_or(0.0)
                    >= 200_000.0
            },
        );
        let (enabled, huge_kib) = huge_pages_of(daemon.child.id());
        if allowed {
            assert_eq!(enabled, "1", "THP allowed by the config");
        } else {
            assert_eq!(enabled, "0", "THP refused by default");
            assert_eq!(huge_kib, 0, "no memory in transparent huge pages");
        }
        daemon.stop();
    }
}

/// The `NAME: N kB` figure of a process's status, in KiB.
fn status_kib(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in status"))
}

/// Goal: the pages of code only start-up ran are given back two seconds
/// after start, and the daemon runs on unharmed (the pages it needs are
/// mapped again). Method: a daemon at debug level ships 100,000 lines; its
/// log reports the release with the KiB released, its file-backed
/// resident memory falls by at least a quarter of that, and 100,000 more
/// lines written afterwards are all read.
#[test]
fn start_up_code_pages_are_released_and_the_daemon_runs_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(dir.path(), "input.log", "");
    common::append_numbered_lines(&input, 0, 100_000);
    let config = common::file_source_config(&input, "", "[sinks.null]\ntype = \"null\"\n");
    let config = common::write_file(dir.path(), "config.toml", &config);
    let child = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("LOG_CAPTURER_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start log-capturer");
    let (daemon, _) = common::await_started(child);
    let pid = daemon.child.id();
    // Read at once: the release comes two seconds after start.
    let file_kib_before = status_kib(pid, "RssFile:");
    let lines_read = |daemon: &common::Daemon| {
        let (_, body) = daemon.get("/metrics");
        common::sample(
            &body,
            "log_capturer_source_lines_read_total{source_id=\"app\"}",
        )
        .unwrap_or(0.0)
    };
    common::wait_until("100,000 lines read", Duration::from_secs(30), || {
        lines_read(&daemon) >= 100_000.0
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let released_kib = loop {
        let line = daemon
            .stderr
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("the daemon logs the release of start-up code pages");
        if line.contains("released the pages of start-up code") {
            let kib = line
                .split("resident_kib=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|figure| figure.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("resident_kib in {line}"));
            break kib;
        }
    };
    let file_kib_after = status_kib(pid, "RssFile:");
    assert!(
        released_kib > 1024,
        "more than 1 MiB released: {released_kib} KiB"
    );
    assert!(
        file_kib_after + released_kib / 4 <= file_kib_before,
        "file-backed resident memory {file_kib_before} KiB before, {file_kib_after} KiB after releasing {released_kib} KiB"
    );
    common::append_numbered_lines(&input, 100_000, 100_000);
    common::wait_until("200,000 lines read", Duration::from_secs(30), || {
        lines_read(&daemon) >= 200_000.0
    });
    daemon.stop();
}
