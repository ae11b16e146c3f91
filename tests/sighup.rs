//! SIGHUP, as logrotate's `postrotate` sends it.
//!
//! Goal: SIGHUP never ends the daemon, and it makes file sinks open their
//! output path again, so that logrotate can move an output file away while
//! lines keep flowing, with no line lost or written twice.
//!
//! Method: a writer appends numbered lines to the followed file while the
//! test rotates the raw file sink's output five times (rename, then HUP,
//! as logrotate does without `copytruncate`). After SIGTERM the rotated
//! files and the current one, concatenated, must hold every line once and
//! in order; the new output files must have been written after each HUP.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ROTATIONS: usize = 5;

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

#[test]
fn sighup_reopens_file_sink_outputs_and_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("app.log");
    std::fs::File::create(&input).expect("create input");
    let output = dir.path().join("out.log");
    let sinks = common::file_sink_table("out", &output, "raw");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        common::file_source_config(&input, "start_at = \"beginning\"", &sinks),
    )
    .expect("write config");
    let mut daemon = common::Daemon::start(&config);

    // The writer keeps appending during every rotation.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = Arc::clone(&writing);
        let input = input.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&input)
                .expect("open input");
            let mut next = 0;
            while writing.load(Ordering::Relaxed) && next < 2_000_000 {
                common::write_numbered_lines(&mut file, next, 500);
                file.flush().expect("flush input");
                next += 500;
                std::thread::sleep(Duration::from_millis(5));
            }
            next
        })
    };

    for rotation in 1..=ROTATIONS {
        common::wait_until(
            "output lines before rotation",
            Duration::from_secs(20),
            || line_count(&output) >= 1000,
        );
        std::fs::rename(&output, dir.path().join(format!("out.log.{rotation}")))
            .expect("rotate output");
        common::send_signal(&daemon.child, libc::SIGHUP);
        common::wait_until(
            "a new output file after SIGHUP",
            Duration::from_secs(20),
            || line_count(&output) > 0,
        );
        assert!(
            daemon.child.try_wait().expect("poll daemon").is_none(),
            "daemon alive after SIGHUP {rotation}"
        );
    }
    writing.store(false, Ordering::Relaxed);
    let written = writer.join().expect("writer");
    common::wait_until("every line written out", Duration::from_secs(30), || {
        let rotated: usize = (1..=ROTATIONS)
            .map(|rotation| line_count(&dir.path().join(format!("out.log.{rotation}"))))
            .sum();
        rotated + line_count(&output) >= written as usize
    });
    let mut stderr = Vec::new();
    while let Ok(line) = daemon.stderr.try_recv() {
        stderr.push(line);
    }
    daemon.stop();

    let mut all = String::new();
    for rotation in 1..=ROTATIONS {
        let rotated = dir.path().join(format!("out.log.{rotation}"));
        let text = std::fs::read_to_string(&rotated).expect("rotated output");
        assert!(!text.is_empty(), "{} is empty", rotated.display());
        all.push_str(&text);
    }
    all.push_str(&std::fs::read_to_string(&output).expect("current output"));
    let numbers = numbers_in(&all);
    let expected: Vec<u64> = (0..written).collect();
    assert_eq!(numbers.len(), expected.len(), "lines out vs lines written");
    assert!(numbers == expected, "every line once and in order");
    let reopened = stderr
        .iter()
        .filter(|line| line.contains("output file reopened"))
        .count();
    assert_eq!(
        reopened, ROTATIONS,
        "one reopen logged per SIGHUP: {stderr:#?}"
    );
}

#[test]
fn repeated_sighup_does_not_end_an_idle_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(dir.path(), "app.log", "one\ntwo\n");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        common::file_source_config(
            &input,
            "start_at = \"beginning\"",
            "[sinks.drop]\ntype = \"null\"",
        ),
    )
    .expect("write config");
    let mut daemon = common::Daemon::start(&config);
    for _ in 0..20 {
        common::send_signal(&daemon.child, libc::SIGHUP);
    }
    // The default action would have ended the process at once.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        daemon.child.try_wait().expect("poll daemon").is_none(),
        "daemon ended after SIGHUP"
    );
    daemon.stop();
}
