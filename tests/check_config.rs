//! `check-config` and `run` reject what `run` would fail on or misbehave
//! with, naming the key, the file and the line; each test goes through the
//! binary, as an operator would.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Runs the binary with `args` and returns its output.
fn run_binary(args: &[&str], config: &Path) -> Output {
    Command::new(binary())
        .args(args)
        .arg(config)
        .output()
        .expect("run binary")
}

/// The 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle:?}"))
        + 1
}

/// Asserts that `check-config` and `run` both exit 1 on `text`, with a
/// message naming the file, `key`, the line of `line_needle` and `reason`.
fn assert_rejected(dir: &Path, text: &str, key: &str, line_needle: &str, reason: &str) {
    let config = write_file(dir, "rejected.toml", text);
    let line = line_of(text, line_needle);
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let output = run_binary(args, &config);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        for expected in [
            key,
            reason,
            &format!("line {line}"),
            &config.display().to_string(),
        ] {
            assert!(
                stderr.contains(expected),
                "{args:?}: {expected:?} missing from: {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Asserts that `check-config` accepts `text`; returns its standard output.
fn assert_accepted(dir: &Path, text: &str) -> String {
    let config = write_file(dir, "accepted.toml", text);
    let output = run_binary(&["check-config"], &config);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Goal: a malformed broker list is a config error, not a daemon that
/// retries forever; a well-formed name that does not resolve is accepted
/// (resolution is an operating condition). Method: several malformed
/// entries, then unresolvable and IPv6 entries.
#[test]
fn malformed_kafka_brokers_are_rejected_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    for (brokers, reason) in [
        ("not a broker::99999", "not a broker::99999"),
        ("127.0.0.1:99999", "port \\\"99999\\\""),
        ("127.0.0.1:0", "port \\\"0\\\""),
        ("127.0.0.1", "is not \\\"host:port\\\""),
        ("good:9092,:9092", "host \\\"\\\""),
    ] {
        let sinks = kafka_sink_table(brokers, "logs", "");
        let text = file_source_config(&input, "", &sinks);
        assert_rejected(
            dir.path(),
            &text,
            "sinks.kafka.brokers",
            "brokers =",
            &reason.replace("\\\"", "\""),
        );
    }
    for brokers in [
        "no-such-host.invalid:9092",
        "[::1]:9092,localhost:9093",
        "PLAINTEXT://broker-1.example.com:9092",
    ] {
        let sinks = kafka_sink_table(brokers, "logs", "");
        assert_accepted(dir.path(), &file_source_config(&input, "", &sinks));
    }
}

/// Goal: a file sink that cannot create its file fails the check, saying
/// why. Method: a path in a missing directory, and one whose "directory"
/// is a regular file.
#[test]
fn file_sink_in_missing_directory_is_rejected_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let missing = dir.path().join("missing").join("out.log");
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        missing.display()
    );
    let text = file_source_config(&input, "", &sinks);
    assert_rejected(
        dir.path(),
        &text,
        "sinks.out.path",
        "path = ",
        "does not exist",
    );

    let under_file = input.join("out.log");
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        under_file.display()
    );
    let text = file_source_config(&input, "", &sinks);
    assert_rejected(
        dir.path(),
        &text,
        "sinks.out.path",
        "path = ",
        "is not a directory",
    );
}

/// Goal: buffers that cannot be allocated are a config error, not an
/// abort at start-up. Method: a `batch_bytes` of 1 TiB (eight such arenas
/// at start-up exceed any test machine), and a `batch_size` whose arena
/// size overflows.
#[test]
fn buffers_larger_than_the_host_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    for (setting, reason) in [
        ("batch_bytes = 1099511627776", "more than this host's"),
        (
            "batch_size = 4611686018427387904",
            "more bytes than a machine can address",
        ),
    ] {
        let text = file_source_config(&input, "", "[sinks.out]\ntype = \"null\"\n")
            .replace("batch_size = 1000\n", "")
            .replace(
                "batch_timeout_ms = 20",
                &format!("batch_timeout_ms = 20\n{setting}"),
            );
        assert_rejected(dir.path(), &text, "dispatcher", "[dispatcher]", reason);
    }
}

/// Goal: every documented minimum is enforced. Method: `queue_capacity`
/// below two chunks of 1024 lines, the minimum README states.
#[test]
fn queue_capacity_below_minimum_is_rejected_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    for capacity in [1, 2, 2047] {
        let text = file_source_config(&input, "", "[sinks.out]\ntype = \"null\"\n").replace(
            "batch_timeout_ms = 20",
            &format!("batch_timeout_ms = 20\nqueue_capacity = {capacity}"),
        );
        assert_rejected(
            dir.path(),
            &text,
            "dispatcher.queue_capacity",
            "queue_capacity",
            "minimum of 2048",
        );
    }
    let text = file_source_config(&input, "", "[sinks.out]\ntype = \"null\"\n").replace(
        "batch_timeout_ms = 20",
        "batch_timeout_ms = 20\nqueue_capacity = 2048",
    );
    assert_accepted(dir.path(), &text);
}

/// Goal: two file sinks never interleave their writes in one file, and a
/// sink never writes a file its own daemon follows. Method: the same file
/// spelled two ways, and a sink path equal to the source's input and to a
/// file its glob matches.
#[test]
fn file_sinks_writing_one_file_or_a_followed_file_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    let first = dir.path().join("out.txt");
    let second = format!("{}/sub/.././out.txt", dir.path().display());
    let sinks = format!(
        "[sinks.a]\ntype = \"file\"\npath = \"{}\"\n\n[sinks.b]\ntype = \"file\"\npath = \"{second}\"\n",
        first.display()
    );
    let text = file_source_config(&input, "", &sinks);
    assert_rejected(
        dir.path(),
        &text,
        "sinks.b.path",
        "sub/.././out.txt",
        "also written by sinks.a.path",
    );

    let sinks = format!(
        "[sinks.loop]\ntype = \"file\"\npath = \"{}/./input.log\"\n",
        dir.path().display()
    );
    let text = file_source_config(&input, "", &sinks);
    assert_rejected(
        dir.path(),
        &text,
        "sinks.loop.path",
        "/./input.log",
        "followed by sources.app",
    );

    let link = dir.path().join("sub").join("link.txt");
    std::os::unix::fs::symlink(&input, &link).expect("symlink");
    let sinks = format!(
        "[sinks.loop]\ntype = \"file\"\npath = \"{}\"\n",
        link.display()
    );
    let text = file_source_config(&input, "", &sinks);
    assert_rejected(
        dir.path(),
        &text,
        "sinks.loop.path",
        "link.txt",
        "followed by sources.app",
    );

    let sinks = format!(
        "[sinks.loop]\ntype = \"file\"\npath = \"{}\"\n",
        dir.path().join("new.log").display()
    );
    let glob = dir.path().join("*.log");
    let text = file_source_config(&glob, "", &sinks);
    assert_rejected(
        dir.path(),
        &text,
        "sinks.loop.path",
        "new.log",
        "followed by sources.app",
    );

    // `*` does not cross a directory, as in the daemon's glob expansion.
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        dir.path().join("sub").join("out.log").display()
    );
    assert_accepted(dir.path(), &file_source_config(&glob, "", &sinks));
}

/// Goal: a source glob that matches nothing is reported as a warning
/// naming the source, the pattern and its line, by `check-config` (exit 0)
/// and in `run`'s log. Method: a pattern beside a plain existing input, run
/// with `exit_on_eof`.
#[test]
fn empty_glob_is_a_warning_in_check_config_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let pattern = format!("{}/nothing-*.log", dir.path().display());
    let text = file_source_config(
        &input,
        "exit_on_eof = true",
        "[sinks.out]\ntype = \"null\"\n",
    )
    .replace(
        &format!("paths = [\"{}\"]", input.display()),
        &format!("paths = [\n  \"{}\",\n  \"{pattern}\",\n]", input.display()),
    );
    let line = line_of(&text, "nothing-*.log");
    let stdout = assert_accepted(dir.path(), &text);
    for expected in [
        "warning",
        "sources.app.paths[1]",
        &pattern,
        &format!("line {line}"),
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing: {stdout}");
    }

    let config = write_file(dir.path(), "run.toml", &text);
    let mut child = spawn_run(&config);
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "{stderr}");
    let warning = stderr
        .lines()
        .find(|line| line.contains("WARN") && line.contains("sources.app.paths[1]"))
        .unwrap_or_else(|| panic!("no warning in: {stderr}"));
    assert!(warning.contains(&pattern), "{warning}");
    assert!(warning.contains(&format!("line {line}")), "{warning}");
}

/// Goal: an error in a source or sink table points at the key's own line,
/// not at the table header. Method: a bad enum value, a bad type and a
/// bad number, each several lines below its header.
#[test]
fn value_errors_point_at_the_line_of_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let cases = [
        (
            file_source_config(
                &input,
                "start_at = \"middle\"",
                "[sinks.out]\ntype = \"null\"\n",
            ),
            "start_at",
            "sources.app.start_at",
        ),
        (
            file_source_config(
                &input,
                "poll_interval_ms = \"soon\"",
                "[sinks.out]\ntype = \"null\"\n",
            ),
            "poll_interval_ms",
            "sources.app.poll_interval_ms",
        ),
        (
            file_source_config(
                &input,
                "",
                "[sinks.out]\ntype = \"file\"\npath = \"/tmp/x\"\nencoding = \"yaml\"\n",
            ),
            "encoding =",
            "sinks.out.encoding",
        ),
        (
            file_source_config(
                &input,
                "",
                "[sinks.out]\nencoding = \"raw\"\ntype = \"carrier-pigeon\"\n",
            ),
            "carrier-pigeon",
            "sinks.out.type",
        ),
    ];
    for (text, line_needle, key) in cases {
        let config = write_file(dir.path(), "enum.toml", &text);
        let line = line_of(&text, line_needle);
        for args in [&["check-config"][..], &["run", "--config"][..]] {
            let output = run_binary(args, &config);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("line {line},")),
                "{args:?} {key}: {stderr}"
            );
            assert!(stderr.contains(key), "{args:?}: {stderr}");
        }
    }
}

/// Goal: an operating system's error text appears once in a message.
/// Method: a config file that does not exist, and `top` against a port
/// nothing listens on.
#[test]
fn os_error_text_is_printed_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let output = run_binary(args, &missing);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
        assert_eq!(
            stderr.matches("No such file or directory").count(),
            1,
            "{stderr}"
        );
    }

    // Port 1 (tcpmux) is reserved and unused on a test machine.
    let output = Command::new(binary())
        .args(["top", "--once", "--address", "127.0.0.1:1"])
        .output()
        .expect("run top");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("127.0.0.1:1").count(), 1, "{stderr}");
}

/// Goal: a DLQ or positions directory that cannot be created is reported
/// before the daemon runs, as a warning (the daemon runs without a DLQ,
/// counting what it cannot store, and without stored positions). Method:
/// `data_dir` under a regular file.
#[test]
fn unusable_dlq_directory_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let data_dir = input.join("data");
    let text = file_source_config(&input, "", "[sinks.out]\ntype = \"null\"\n").replace(
        &format!("data_dir = \"{}\"", dir.path().join("data").display()),
        &format!("data_dir = \"{}\"", data_dir.display()),
    );
    let line = line_of(&text, "data_dir");
    let stdout = assert_accepted(dir.path(), &text);
    for expected in [
        "warning",
        "daemon.data_dir",
        &format!("line {line}"),
        "is not a directory",
        "the DLQ directory",
        "the positions directory",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing: {stdout}");
    }
}

/// Goal: every flag and argument of every subcommand has help text.
/// Method: each subcommand's `--help`; every line of its Options and
/// Arguments sections names a flag followed by a description.
#[test]
fn every_flag_has_help_text() {
    let subcommands: [&[&str]; 9] = [
        &["run"],
        &["check-config"],
        &["demo"],
        &["dlq", "list"],
        &["dlq", "dump"],
        &["dlq", "replay"],
        &["top"],
        &["kafka-mock"],
        &[],
    ];
    for subcommand in subcommands {
        let output = Command::new(binary())
            .args(subcommand)
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(output.status.success(), "{subcommand:?}");
        let help = String::from_utf8_lossy(&output.stdout);
        let mut in_list = false;
        for line in help.lines() {
            if line.ends_with(':') && !line.starts_with(' ') {
                in_list = matches!(line, "Options:" | "Arguments:");
                continue;
            }
            if !in_list || line.trim().is_empty() {
                continue;
            }
            // "  -c, --config <CONFIG>  The TOML config file": the flag and
            // its description are separated by two spaces or more.
            let described = line
                .trim_start()
                .split_once("  ")
                .is_some_and(|(_, text)| !text.trim().is_empty());
            assert!(described, "{subcommand:?}: no help text: {line:?}\n{help}");
        }
    }
}

/// Goal: outputs `run` could never use safely are rejected: a FIFO (opening
/// it without a reader blocks the daemon, signals included) and a hard link
/// to a followed file (the sink would read its own output under another
/// name). Method: a FIFO and a hard link as file sink paths.
#[test]
fn fifo_and_hard_linked_outputs_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let fifo = dir.path().join("out.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        fifo.display()
    );
    let text = file_source_config(&input, "", &sinks);
    assert_rejected(dir.path(), &text, "sinks.out.path", "out.fifo", "FIFO");

    let linked = dir.path().join("linked.log");
    std::fs::hard_link(&input, &linked).expect("hard link");
    let sinks = format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\n",
        linked.display()
    );
    let text = file_source_config(&input, "", &sinks);
    assert_rejected(
        dir.path(),
        &text,
        "sinks.out.path",
        "linked.log",
        "its own output",
    );
}

/// Goal: an operator learns at check time that a line can be longer than a
/// DLQ segment can hold. Method: the default `max_line_bytes` (1 MiB) with
/// 64 KiB segments is accepted with a warning naming both keys; the default
/// segments give no such warning.
#[test]
fn lines_longer_than_a_dlq_segment_are_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let sinks = "[sinks.drop]\ntype = \"null\"\n\n[dlq]\nsegment_bytes = 65536\n";
    let config = write_file(
        dir.path(),
        "small.toml",
        &file_source_config(&input, "", sinks),
    );
    let output = run_binary(&["check-config"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("warning:"), "{stdout}");
    assert!(stdout.contains("dlq.segment_bytes"), "{stdout}");
    assert!(stdout.contains("sources.app.max_line_bytes"), "{stdout}");
    let sinks = "[sinks.drop]\ntype = \"null\"\n";
    let config = write_file(
        dir.path(),
        "default.toml",
        &file_source_config(&input, "", sinks),
    );
    let output = run_binary(&["check-config"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(!stdout.contains("dlq.segment_bytes"), "{stdout}");
}

/// Goal: a static label cannot silently replace the `file` or `source_id`
/// the daemon sets on every line. Method: each reserved name as a static
/// label.
#[test]
fn static_labels_cannot_replace_file_or_source_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    for reserved in ["file", "source_id"] {
        let text = format!(
            "[daemon]\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n\n[sources.app]\ntype = \"file\"\npaths = [\"{input}\"]\nlabels = {{ {reserved} = \"x\" }}\n\n[sinks.drop]\ntype = \"null\"\n",
            data = dir.path().join("data").display(),
            input = input.display()
        );
        assert_rejected(
            dir.path(),
            &text,
            &format!("sources.app.labels.{reserved}"),
            "labels =",
            "set by the daemon",
        );
    }
}

/// Goal: two sources following one file (which would ship each line
/// twice) are rejected, also through an overlapping glob. Method: a second
/// source whose glob matches the first source's file; then one source that
/// names the same path twice, which is accepted.
#[test]
fn a_file_followed_by_two_sources_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let second = format!(
        "[sources.other]\ntype = \"file\"\npaths = [\"{}/*.log\"]\n\n[sinks.drop]\ntype = \"null\"\n",
        dir.path().display()
    );
    let text = file_source_config(&input, "", &second);
    assert_rejected(dir.path(), &text, "paths", "*.log", "shipped twice");
    let twice = format!("paths = [\"{}\"]", input.display());
    let text = file_source_config(&input, "", "[sinks.drop]\ntype = \"null\"\n").replace(
        &twice,
        &format!("paths = [\"{0}\", \"{0}\"]", input.display()),
    );
    assert!(text.contains("\", \""), "the path is named twice: {text}");
    assert_accepted(dir.path(), &text);
}

/// Goal: a Kafka `key` naming a label no source sets is reported at check
/// time (every message would go without a key). Method: `key` naming a
/// missing label warns with the key; a static label and `file` do not.
#[test]
fn kafka_key_naming_a_missing_label_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    for (key, warned) in [("nosuchlabel", true), ("service", false), ("file", false)] {
        let sinks = kafka_sink_table("127.0.0.1:9092", "logs", &format!("key = \"{key}\""));
        let stdout = assert_accepted(dir.path(), &file_source_config(&input, "", &sinks));
        assert_eq!(
            stdout.contains("sinks.kafka.key"),
            warned,
            "key {key:?}: {stdout}"
        );
    }
}

/// Goal: a TLS file that a Kafka sink names but cannot be read fails
/// `check-config` (librdkafka reads it only when `run` creates the client).
/// Method: a missing CA file is refused naming the key, its line and the
/// path; a readable one and `probe` are accepted.
#[test]
fn unreadable_kafka_tls_files_are_rejected_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let missing = dir.path().join("missing-ca.pem");
    let extra = format!(
        "librdkafka = {{ \"security.protocol\" = \"ssl\", \"ssl.ca.location\" = \"{}\" }}",
        missing.display()
    );
    let text = file_source_config(
        &input,
        "",
        &kafka_sink_table("127.0.0.1:9093", "logs", &extra),
    );
    assert_rejected(
        dir.path(),
        &text,
        "sinks.kafka.librdkafka.ssl.ca.location",
        "ssl.ca.location",
        &format!("cannot read {}", missing.display()),
    );
    let present = write_file(dir.path(), "ca.pem", "not checked here\n");
    for location in [present.display().to_string(), "probe".to_string()] {
        let extra = format!(
            "librdkafka = {{ \"security.protocol\" = \"ssl\", \"ssl.ca.location\" = \"{location}\" }}"
        );
        let sinks = kafka_sink_table("127.0.0.1:9093", "logs", &extra);
        assert_accepted(dir.path(), &file_source_config(&input, "", &sinks));
    }
}

/// Goal: the durable file source's keys are checked before anything runs:
/// an `exclude` that is not a glob, a `max_files` of 0 and a
/// `label_symbols_max` past its limit are each rejected naming the key and
/// its line; valid values are accepted. Method: one config per mistake.
#[test]
fn file_source_discovery_and_label_limits_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let sinks = "[sinks.out]\ntype = \"null\"\n";
    let text = file_source_config(&input, "exclude = [\"[unclosed\"]", sinks);
    assert_rejected(
        dir.path(),
        &text,
        "sources.app.exclude",
        "exclude",
        "is not a glob pattern",
    );
    let text = file_source_config(&input, "max_files = 0", sinks);
    assert_rejected(dir.path(), &text, "sources.app.max_files", "max_files", "");
    let text = file_source_config(&input, "", sinks).replace(
        "pin_threads = false",
        "pin_threads = false\nlabel_symbols_max = 99999999",
    );
    assert_rejected(
        dir.path(),
        &text,
        "daemon.label_symbols_max",
        "label_symbols_max",
        "must be at most",
    );
    let keys = "exclude = [\"*.gz\"]\nmax_files = 8\nglob_interval_ms = 100\nrotate_wait_ms = 500";
    let text = file_source_config(&input, keys, sinks).replace(
        "pin_threads = false",
        "pin_threads = false\nlabel_symbols_max = 1000\nlabel_bytes_max = 65536\npositions_interval_ms = 200\npositions_forget_after_ms = 60000",
    );
    assert_accepted(dir.path(), &text);
}

/// Goal: a syslog or stdin source that `run` could not use is refused by
/// `check-config` too, naming the key and its line. Method: one broken
/// table per case.
#[test]
fn unusable_syslog_and_stdin_sources_are_rejected_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = "[sinks.out]\ntype = \"null\"\n";
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "[sources.sys]\ntype = \"syslog\"\nlabels = { a = \"b\" }\n",
            "sources.sys.type",
            "type = \"syslog\"",
            "at least one of `udp`, `tcp` and `unix`",
        ),
        (
            "[sources.sys]\ntype = \"syslog\"\nudp = \"127.0.0.1:5514\"\nunix_mode = 666\n",
            "sources.sys.unix_mode",
            "unix_mode",
            "write it in octal",
        ),
        (
            "[sources.sys]\ntype = \"syslog\"\nudp = \"127.0.0.1:99999\"\n",
            "sources.sys.udp",
            "udp =",
            "invalid socket address",
        ),
        (
            "[sources.sys]\ntype = \"syslog\"\nudp = \"127.0.0.1:5514\"\nmax_message_bytes = 100\n",
            "sources.sys.max_message_bytes",
            "max_message_bytes",
            "out of range",
        ),
        (
            "[sources.sys]\ntype = \"syslog\"\nudp = \"127.0.0.1:5514\"\ntimezone = \"Mars/Olympus\"\n",
            "sources.sys.timezone",
            "timezone",
            "not a known time zone",
        ),
        (
            "[sources.sys]\ntype = \"syslog\"\nudp = \"127.0.0.1:5514\"\nlabels = { host = \"x\" }\n",
            "sources.sys.labels.host",
            "labels",
            "set by the daemon",
        ),
        (
            "[sources.a]\ntype = \"syslog\"\ntcp = \"127.0.0.1:5514\"\n[sources.b]\ntype = \"syslog\"\ntcp=\"127.0.0.1:5514\"\n",
            "sources.b.tcp",
            "tcp=",
            "taken by sources.a",
        ),
        (
            "[sources.a]\ntype = \"stdin\"\n[sources.b]\ntype=\"stdin\"\n",
            "sources.b.type",
            "type=",
            "reads standard input already",
        ),
        (
            "[sources.a]\ntype = \"syslog\"\nudp = \"0.0.0.0:5514\"\n[sources.b]\ntype = \"syslog\"\nudp=\"127.0.0.1:5514\"\n",
            "sources.b.udp",
            "udp=",
            "taken by sources.a",
        ),
        (
            "[sources.a]\ntype = \"syslog\"\nunix = \"/tmp/x/s.sock\"\n[sources.b]\ntype = \"syslog\"\nunix=\"/tmp/x/../x/./s.sock\"\n",
            "sources.b.unix",
            "unix=",
            "taken by sources.a",
        ),
        (
            "[sources.sys]\ntype = \"syslog\"\ntcp = \"127.0.0.1:0\"\n",
            "sources.sys.tcp",
            "tcp =",
            "port 0",
        ),
    ];
    for (source, key, line_needle, reason) in cases {
        let text = format!("{source}{sink}");
        assert_rejected(dir.path(), &text, key, line_needle, reason);
    }
    let file = dir.path().join("plain-file");
    std::fs::write(&file, "not a socket").expect("file");
    let text = format!(
        "[sources.sys]\ntype = \"syslog\"\nunix = \"{}\"\n{sink}",
        file.display()
    );
    assert_rejected(
        dir.path(),
        &text,
        "sources.sys.unix",
        "unix =",
        "is not a socket",
    );
}

/// Goal: syslog connections that may each hold a partial message of
/// `max_message_bytes` count towards the memory an outage can take; more
/// than the host has is a warning.
#[test]
fn syslog_partial_messages_beyond_the_host_are_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = "[sources.sys]\ntype = \"syslog\"\ntcp = \"127.0.0.1:5514\"\nmax_connections = 1000000\nmax_message_bytes = 16777216\n[sinks.out]\ntype = \"null\"\n";
    let output = assert_accepted(dir.path(), text);
    assert!(
        output.contains("partial syslog messages") && output.contains("more than this host"),
        "{output}"
    );
}

/// Goal: two syslog sources on one socket through a linked directory are
/// refused (the names differ, the socket would be one).
#[test]
fn one_socket_through_a_link_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("dir");
    std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
    let text = format!(
        "[sources.a]\ntype = \"syslog\"\nunix = \"{}\"\n[sources.b]\ntype = \"syslog\"\nunix=\"{}\"\n[sinks.out]\ntype = \"null\"\n",
        real.join("s.sock").display(),
        dir.path().join("link/s.sock").display()
    );
    assert_rejected(
        dir.path(),
        &text,
        "sources.b.unix",
        "unix=",
        "socket of sources.a",
    );
}

/// Goal: a Loki sink's keys are checked before anything starts, each error
/// naming its key and line: a missing or empty `ca_file`, a label name
/// Loki refuses, gzip with protobuf, a scheme that is not HTTP; and a
/// stream label with a value per file is a warning. Method: variations of
/// one config through `check-config` and `run`.
#[test]
fn loki_sink_problems_are_named_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(dir.path(), "input.log", "one\n");
    let empty_pem = write_file(dir.path(), "empty.pem", "no certificate here\n");
    let missing = dir.path().join("missing.pem");
    let sink = |keys: &str| {
        file_source_config(
            &input,
            "exit_on_eof = true",
            &format!("[sinks.loki]\ntype = \"loki\"\n{keys}\n"),
        )
    };
    let https = "url = \"https://127.0.0.1:1/loki/api/v1/push\"";
    let cases = [
        (
            format!("{https}\nca_file = \"{}\"", missing.display()),
            "sinks.loki.ca_file",
            "ca_file",
            "cannot read",
        ),
        (
            format!("{https}\nca_file = \"{}\"", empty_pem.display()),
            "sinks.loki.ca_file",
            "ca_file",
            "no PEM certificate",
        ),
        (
            format!("{https}\nlabels = [\"source_id\", \"bad-name\"]"),
            "sinks.loki.labels[1]",
            "bad-name",
            "letters, digits",
        ),
        (
            format!("{https}\nformat = \"protobuf\"\ncompression = \"gzip\""),
            "sinks.loki.compression",
            "compression",
            "gzip applies to format = \"json\"",
        ),
        (
            "url = \"ftp://127.0.0.1/push\"".to_string(),
            "sinks.loki.url",
            "ftp://",
            "http or https",
        ),
    ];
    for (keys, key, line_needle, reason) in cases {
        assert_rejected(dir.path(), &sink(&keys), key, line_needle, reason);
    }

    let text =
        sink("url = \"http://127.0.0.1:1/loki/api/v1/push\"\nlabels = [\"source_id\", \"file\"]");
    let stdout = assert_accepted(dir.path(), &text);
    for expected in ["warning", "sinks.loki.labels[1]", "\"file\"", "stream"] {
        assert!(stdout.contains(expected), "{expected:?} missing: {stdout}");
    }
}

/// Goal: a docker source's mistakes are named with key and line by both
/// commands (none needs dockerd: they are refused before it is asked),
/// and two docker sources on one socket are accepted with a warning.
/// Method: bad `include_labels`, empty `streams`, a container label that
/// would be `stream`, two container labels giving one name, a too small
/// `max_line_bytes`; then two sources on one socket through check-config.
#[test]
fn docker_source_mistakes_are_named_with_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |source_keys: &str| {
        format!(
            "[daemon]\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n\n[sources.dk]\ntype = \"docker\"\nsocket = \"/nonexistent/docker.sock\"\n{source_keys}\n\n[sinks.drop]\ntype = \"null\"\n",
            data = dir.path().join("data").display(),
        )
    };
    for (keys, key, needle, reason) in [
        (
            "include_labels = [\"=x\"]",
            "sources.dk.include_labels",
            "include_labels",
            "is not key=value",
        ),
        ("streams = []", "sources.dk.streams", "streams", "must name"),
        (
            "container_labels = [\"stream\"]",
            "sources.dk.container_labels",
            "container_labels",
            "which the daemon sets itself",
        ),
        (
            "container_labels = [\"a.b\", \"a-b\"]",
            "sources.dk.container_labels",
            "container_labels",
            "would both be the label \"a_b\"",
        ),
        (
            "max_line_bytes = 100",
            "sources.dk.max_line_bytes",
            "max_line_bytes",
            "below the least of 1024",
        ),
    ] {
        assert_rejected(dir.path(), &config(keys), key, needle, reason);
    }
    let twice =
        config("") + "\n[sources.dk2]\ntype = \"docker\"\nsocket = \"/nonexistent/docker.sock\"\n";
    let stdout = assert_accepted(dir.path(), &twice);
    assert!(
        stdout.contains("warning")
            && stdout.contains("sources.dk2.socket")
            && stdout.contains("shipped twice"),
        "the warning names the second source: {stdout}"
    );
}
