//! Whole-daemon tests of order, integrity and shutdown through the binary.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Goal: a `raw` file sink reproduces its input byte for byte. Method: a
/// million lines mixing numbered lines, empty lines, invalid UTF-8, CRLF, a
/// 1 MiB line, a line longer than `max_line_bytes` (split into pieces) and a
/// last line without newline, shipped with `exit_on_eof`; then compare.
#[test]
fn raw_file_sink_output_is_byte_identical_to_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create input"));
    for block in 0..10u64 {
        write_numbered_lines(&mut file, block * 100_000, 99_990);
        file.write_all(b"\n\n").expect("empty lines");
        file.write_all(b"bad utf-8 \xff\xfe\xc3 here\n")
            .expect("invalid utf-8");
        file.write_all(b"windows line\r\n").expect("crlf");
        file.write_all(b"\n").expect("empty line");
        if block == 3 {
            file.write_all(&vec![b'm'; 1024 * 1024])
                .expect("1 MiB line");
            file.write_all(b"\n").expect("newline");
        }
        if block == 6 {
            file.write_all(&vec![b'l'; 3 * 1024 * 1024 + 17])
                .expect("3 MiB line");
            file.write_all(b"\n").expect("newline");
        }
        write_numbered_lines(&mut file, block * 100_000 + 99_990, 5);
    }
    file.write_all(b"last line without newline").expect("tail");
    file.flush().expect("flush input");
    drop(file);

    let output = dir.path().join("output.log");
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\nencoding = \"raw\"",
        output.display()
    );
    let config = write_file(
        dir.path(),
        "config.toml",
        &file_source_config(&input, "exit_on_eof = true", &sinks),
    );
    let mut child = spawn_run(&config);
    let status = wait_with_timeout(&mut child, Duration::from_secs(120));
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).unwrap_or_default();
    assert!(status.success(), "exit {status}: {stderr}");

    let expected = std::fs::read(&input).expect("read input");
    let actual = std::fs::read(&output).expect("read output");
    assert_eq!(actual.len(), expected.len(), "output length");
    let first_difference = expected
        .iter()
        .zip(&actual)
        .position(|(left, right)| left != right);
    assert_eq!(first_difference, None, "first differing byte");
    assert!(
        stderr.contains("lines_processed=1000006"),
        "lines counted: {stderr}"
    );
}

/// Goal: the daemon follows a growing file; on SIGTERM it exits 0 and keeps
/// a last line without a newline in the file (a line written in two
/// `write()` calls must not be split), and after a restart it delivers that
/// line whole once it is complete. Method: start on a file, append while
/// running, send SIGTERM, compare the output; complete the line, restart.
#[test]
fn follows_growth_and_keeps_partial_line_for_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\ntwo\n");
    let output = dir.path().join("output.log");
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"",
        output.display()
    );
    let config = write_file(
        dir.path(),
        "config.toml",
        &file_source_config(&input, "", &sinks),
    );
    let mut child = spawn_run(&config);
    let read_output = || std::fs::read(&output).unwrap_or_default();
    wait_until("first lines", Duration::from_secs(10), || {
        read_output() == b"one\ntwo\n"
    });

    let mut append = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .expect("open input");
    append
        .write_all(b"three\nfour without newline")
        .expect("append");
    drop(append);
    wait_until("appended line", Duration::from_secs(10), || {
        read_output() == b"one\ntwo\nthree\n"
    });

    send_signal(&child, libc::SIGTERM);
    let status = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
    assert_eq!(read_output(), b"one\ntwo\nthree\n", "no fragment shipped");

    let mut append = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .expect("open input");
    append.write_all(b", now ended\n").expect("append");
    drop(append);
    let mut child = spawn_run(&config);
    wait_until("the completed line", Duration::from_secs(10), || {
        read_output() == b"one\ntwo\nthree\nfour without newline, now ended\n"
    });
    send_signal(&child, libc::SIGTERM);
    let status = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert!(status.success(), "exit status {status}");
}

/// Goal: SIGINT is a clean stop too. Method: start, wait for output, SIGINT.
#[test]
fn sigint_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "a\n");
    let output = dir.path().join("output.log");
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"",
        output.display()
    );
    let config = write_file(
        dir.path(),
        "config.toml",
        &file_source_config(&input, "", &sinks),
    );
    let mut child = spawn_run(&config);
    wait_until("output", Duration::from_secs(10), || {
        std::fs::read(&output).unwrap_or_default() == b"a\n"
    });
    send_signal(&child, libc::SIGINT);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(5)).success());
}

/// Goal: JSON carries message, timestamp and labels as strings, per file.
/// Method: two files behind one glob, one JSON file sink; parse every line.
#[test]
fn json_sink_writes_labels_per_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_file(dir.path(), "a.log", "a1\na2\n");
    write_file(dir.path(), "b.log", "b1\n");
    let output = dir.path().join("output.json");
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\nencoding = \"json\"",
        output.display()
    );
    let pattern = dir.path().join("*.log");
    let config = write_file(
        dir.path(),
        "config.toml",
        &file_source_config(&pattern, "exit_on_eof = true", &sinks),
    );
    let mut child = spawn_run(&config);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(30)).success());
    let text = std::fs::read_to_string(&output).expect("read output");
    let mut seen: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
            assert_eq!(value["labels"]["service"], "app");
            assert_eq!(value["labels"]["source_id"], "app");
            assert!(
                value["timestamp"]
                    .as_str()
                    .expect("timestamp")
                    .ends_with('Z')
            );
            let file = value["labels"]["file"].as_str().expect("file label");
            let name = std::path::Path::new(file)
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (
                name,
                value["message"].as_str().expect("message").to_string(),
            )
        })
        .collect();
    seen.sort();
    let expected = [("a.log", "a1"), ("a.log", "a2"), ("b.log", "b1")]
        .map(|(file, line)| (file.to_string(), line.to_string()));
    assert_eq!(seen, expected);
}

/// Goal: config errors name the key and its line, for `check-config` and
/// for `run`, and never panic. Method: an unknown key in a source table.
#[test]
fn check_config_and_run_reject_unknown_key_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let text = file_source_config(&input, "bogus_key = 1", "[sinks.out]\ntype = \"null\"");
    let line = text
        .lines()
        .position(|line| line.starts_with("bogus_key"))
        .expect("key line")
        + 1;
    let config = write_file(dir.path(), "bad.toml", &text);
    for args in [vec!["check-config"], vec!["run", "--config"]] {
        let output = Command::new(binary())
            .args(&args)
            .arg(&config)
            .output()
            .expect("run binary");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("bogus_key"), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("line {line}")),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let good = write_file(
        dir.path(),
        "good.toml",
        &file_source_config(&input, "", "[sinks.out]\ntype = \"null\""),
    );
    let output = Command::new(binary())
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("run binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Goal: SIGTERM in the middle of a backlog ships whole lines only, and a
/// restart resumes exactly where the last run's deliveries ended (no line
/// twice, none skipped). Method: a 42 MB file of 14-byte lines read from
/// its start into a raw file sink, SIGTERM as soon as output appears, up to
/// five times (fewer once the backlog is all shipped, at least twice), each
/// run with its own output file and the same positions; the outputs in
/// order must be lines 0..n, each whole, ending with a newline.
#[test]
fn sigterm_during_a_backlog_ships_no_fragment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("app.log");
    {
        let mut text = String::with_capacity(LINES as usize * 14);
        for number in 0..LINES {
            text.push_str(&format!("seq={number:09}\n"));
        }
        std::fs::write(&input, text).expect("input");
    }
    const LINES: u64 = 3_000_000;
    let mut expected = 0;
    let mut rounds = 0;
    for round in 0..5 {
        if expected == LINES {
            break;
        }
        rounds += 1;
        let output = dir.path().join(format!("out-{round}.log"));
        let sinks = common::file_sink_table("out", &output, "raw");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            common::file_source_config(&input, "start_at = \"beginning\"", &sinks),
        )
        .expect("config");
        let mut child = common::spawn_run(&config);
        common::wait_until("first output", Duration::from_secs(20), || {
            std::fs::metadata(&output).is_ok_and(|metadata| metadata.len() > 0)
        });
        common::send_signal(&child, libc::SIGTERM);
        let status = common::wait_with_timeout(&mut child, Duration::from_secs(20));
        assert!(status.success(), "round {round}: exit {status}");
        let text = std::fs::read_to_string(&output).expect("output");
        assert!(
            text.ends_with('\n'),
            "round {round}: output ends in a fragment"
        );
        for line in text.lines() {
            assert_eq!(line, format!("seq={expected:09}"), "round {round}");
            expected += 1;
        }
    }
    assert!(rounds >= 2, "the backlog was shipped before any SIGTERM");
}

/// Goal: a sink that never takes its batches (standard output into a pipe
/// nobody reads) does not hold SIGTERM: the daemon exits 0 within
/// `shutdown_timeout_ms`, and every line it read is written out or in the
/// DLQ. Method: 200,000 lines into a `stdout` sink whose pipe is not read;
/// SIGTERM once the pipe is full; then the pipe's contents and `dlq dump`
/// together must hold lines 0..lines_read.
#[test]
fn sigterm_with_a_stuck_sink_exits_zero_and_keeps_every_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("app.log");
    {
        let mut file = std::fs::File::create(&input).expect("input");
        write_numbered_lines(&mut file, 0, 200_000);
    }
    let config = dir.path().join("config.toml");
    let sinks = "[sinks.out]\ntype = \"stdout\"\nencoding = \"raw\"";
    std::fs::write(
        &config,
        file_source_config(&input, "start_at = \"beginning\"", sinks),
    )
    .expect("config");
    let mut child = spawn_run(&config);
    // The pipe (64 KiB) is full long before this; the sink is stuck in a
    // write, every arena is at the sink, the source waits for chunks.
    std::thread::sleep(Duration::from_millis(1500));
    send_signal(&child, libc::SIGTERM);
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .expect("read stdout");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(status.success(), "exit {status}: {stderr}");
    let lines_read: u64 = stderr
        .split("lines_read=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no lines_read in {stderr}"));
    let dump = Command::new(binary())
        .args(["dlq", "dump", "--config"])
        .arg(&config)
        .output()
        .expect("dlq dump");
    assert!(dump.status.success(), "dlq dump: {dump:?}");
    let mut seen = vec![false; 200_000];
    for text in [stdout, String::from_utf8_lossy(&dump.stdout).into_owned()] {
        for line in text.lines() {
            let Some(at) = line.find("seq=") else {
                continue;
            };
            if let Some(number) = line
                .get(at + 4..at + 16)
                .and_then(|n| n.parse::<usize>().ok())
            {
                seen[number] = true;
            }
        }
    }
    let missing = (0..lines_read as usize).filter(|&n| !seen[n]).count();
    assert!(lines_read > 0, "lines were read");
    assert_eq!(
        missing, 0,
        "of {lines_read} lines read, {missing} are nowhere"
    );
}
