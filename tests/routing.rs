//! Routing with `inputs`: a sink takes the lines of the sources its
//! `inputs` names (every source when the key is left out), and nothing
//! else, whether it delivers them or they end in its DLQ. Each test goes
//! through the binary, as an operator would.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Lines per source file.
const LINES: u64 = 20_000;

/// Writes `LINES` lines `<prefix>-<number> xxx…` (100 bytes with the
/// newline) to `dir/<prefix>.log`.
fn write_source_file(dir: &Path, prefix: &str) -> PathBuf {
    let padding = "x".repeat(90);
    let text: String = (0..LINES)
        .map(|number| format!("{prefix}-{number:06} {padding}\n"))
        .collect();
    write_file(dir, &format!("{prefix}.log"), &text)
}

/// Keys added to the tables of [`two_source_config`].
#[derive(Debug, Default)]
struct Keys<'a> {
    daemon: &'a str,
    /// Replaces `batch_size = 700`.
    dispatcher: Option<&'a str>,
    /// Added to both sources.
    source: &'a str,
}

/// A config with sources `a` and `b` over `a.log` and `b.log` in `dir`,
/// the sink tables `sinks`, and `keys`. Three batch arenas: far fewer
/// than the lines of the files, so that a sink that holds its batches
/// stops the dispatcher.
fn two_source_config(dir: &Path, keys: &Keys<'_>, sinks: &str) -> String {
    format!(
        r#"[daemon]
pin_threads = false
metrics_addr = "127.0.0.1:0"
data_dir = "{data_dir}"
{daemon}

[dispatcher]
{dispatcher}
batch_timeout_ms = 20
batches_in_flight = 2

[retry]
max_batches = 1

[dlq]
segment_bytes = 1048576
auto_replay = false

[sources.a]
type = "file"
paths = ["{a}"]
{source}

[sources.b]
type = "file"
paths = ["{b}"]
{source}

{sinks}"#,
        data_dir = dir.join("data").display(),
        daemon = keys.daemon,
        dispatcher = keys.dispatcher.unwrap_or("batch_size = 700"),
        source = keys.source,
        a = dir.join("a.log").display(),
        b = dir.join("b.log").display(),
    )
}

/// The complete lines of `text` that start with `<prefix>-`, as numbers,
/// in order.
fn numbers_of(text: &str, prefix: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(prefix)?.strip_prefix('-'))
        .filter(|rest| rest.len() == 97)
        .map(|rest| rest[..6].parse().expect("a line number"))
        .collect()
}

/// Asserts that every line starts with `prefix` (the lines of one source),
/// naming the first few that do not.
fn assert_all_from(lines: &[String], prefix: &str, what: &str) {
    let foreign: Vec<&String> = lines
        .iter()
        .filter(|line| !line.starts_with(prefix))
        .collect();
    assert!(
        foreign.is_empty(),
        "{what}: {:?}",
        &foreign[..foreign.len().min(3)]
    );
}

/// The messages in the DLQ of sink `id` (none when it has no directory).
fn dlq_messages(dir: &Path, id: &str) -> Vec<String> {
    let sink_dir = dir.join("data").join("dlq").join(id);
    if !sink_dir.exists() {
        return Vec::new();
    }
    let mut messages = Vec::new();
    for (_, path, _) in log_capturer::dlq::list(&sink_dir).expect("list DLQ") {
        log_capturer::dlq::segment::ReadableSegment::open(&path)
            .expect("open segment")
            .scan(|record| messages.push(String::from_utf8_lossy(record.message).into_owned()))
            .expect("scan segment");
    }
    messages
}

/// Goal: each sink writes exactly the lines of its inputs, in order per
/// source, and a sink without `inputs` writes every line. Method: sources
/// `a` and `b` (20 000 lines each, read to their end with `exit_on_eof`),
/// batches small enough to mix both sources, and three raw file sinks:
/// `inputs = ["a"]`, `inputs = ["b"]` and none; compare each output with
/// the input files.
#[test]
fn each_sink_writes_exactly_the_lines_of_its_inputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write_source_file(dir.path(), "a");
    let b = write_source_file(dir.path(), "b");
    let outputs = ["only_a", "only_b", "every"].map(|id| dir.path().join(format!("{id}.out")));
    let sinks = format!(
        "{}inputs = [\"a\"]\n\n{}inputs = [\"b\"]\n\n{}",
        file_sink_table("only_a", &outputs[0], "raw"),
        file_sink_table("only_b", &outputs[1], "raw"),
        file_sink_table("every", &outputs[2], "raw"),
    );
    let config = write_file(
        dir.path(),
        "config.toml",
        &two_source_config(
            dir.path(),
            &Keys {
                source: "exit_on_eof = true",
                ..Keys::default()
            },
            &sinks,
        ),
    );
    let mut child = spawn_run(&config);
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let stderr = std::io::read_to_string(child.stderr.take().expect("stderr")).unwrap_or_default();
    assert!(status.success(), "exit {status}: {stderr}");

    let read = |path: &Path| std::fs::read_to_string(path).expect("read output");
    assert!(read(&outputs[0]) == read(&a), "only_a holds exactly a.log");
    assert!(read(&outputs[1]) == read(&b), "only_b holds exactly b.log");
    let every = read(&outputs[2]);
    let all: Vec<u64> = (0..LINES).collect();
    assert_eq!(
        numbers_of(&every, "a"),
        all,
        "every: the lines of a, in order"
    );
    assert_eq!(
        numbers_of(&every, "b"),
        all,
        "every: the lines of b, in order"
    );
    assert_eq!(
        every.lines().count() as u64,
        2 * LINES,
        "every: nothing else"
    );
    assert_eq!(every.len(), read(&a).len() + read(&b).len());
}

/// Goal: what the dispatcher stores in a sink's DLQ at shutdown (a batch
/// the sink never finished, lines still in the source rings) holds only
/// that sink's inputs, and no line is lost. Method: a stdout sink taking
/// `a` whose pipe is never read (it blocks, holding every batch arena),
/// and a file sink taking `b`; SIGTERM once both files are in the source
/// rings; after the drain timeout the daemon exits
/// 0, the lines still in the rings spilled to the DLQs. The stdout sink's DLQ must hold only
/// lines of `a`, the file sink's (lines spilled from the rings) only lines
/// of `b`; every line of `a` is in the pipe or in the stdout sink's DLQ,
/// every line of `b` in the file or in the file sink's DLQ.
#[test]
fn shutdown_stores_only_a_sinks_inputs_in_its_dlq() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_source_file(dir.path(), "a");
    write_source_file(dir.path(), "b");
    let output = dir.path().join("only_b.out");
    let sinks = format!(
        "[sinks.stuck]\ntype = \"stdout\"\nencoding = \"raw\"\ninputs = [\"a\"]\n\n{}inputs = [\"b\"]\n",
        file_sink_table("only_b", &output, "raw"),
    );
    let config = write_file(
        dir.path(),
        "config.toml",
        &two_source_config(
            dir.path(),
            &Keys {
                daemon: "shutdown_timeout_ms = 2000",
                // Batches of 10 000 lines hold runs of both sources (the
                // dispatcher takes at most 8 chunks of 1024 lines from a
                // source before it turns to the next); three of them leave
                // 10 000 lines in the source rings.
                // Rings of 64 chunks hold each source's 20 000 lines whole.
                dispatcher: Some("batch_size = 10000\nqueue_capacity = 65536"),
                ..Keys::default()
            },
            &sinks,
        ),
    );
    let mut daemon = Daemon::start(&config);
    // Both files read to their end: the source rings hold them whole.
    wait_until("both files read", Duration::from_secs(20), || {
        let body = daemon.get("/metrics").1;
        ["a", "b"].iter().all(|id| {
            let series = format!("log_capturer_source_lines_read_total{{source_id=\"{id}\"}}");
            sample(&body, &series) == Some(LINES as f64)
        })
    });
    send_signal(&daemon.child, libc::SIGTERM);
    let status = wait_with_timeout(&mut daemon.child, Duration::from_secs(15));
    assert!(status.success(), "exit {status}");
    let piped = std::io::read_to_string(daemon.child.stdout.take().expect("stdout"))
        .expect("read the pipe");

    let stuck_dlq = dlq_messages(dir.path(), "stuck");
    let file_dlq = dlq_messages(dir.path(), "only_b");
    assert!(
        !stuck_dlq.is_empty(),
        "the stuck sink's batches are in its DLQ"
    );
    assert_all_from(&stuck_dlq, "a-", "stuck DLQ holds lines of b");
    assert_all_from(&file_dlq, "b-", "only_b DLQ holds lines of a");
    let written = std::fs::read_to_string(&output).expect("file output");
    assert!(
        written.lines().all(|line| line.starts_with("b-")),
        "only_b wrote lines of a"
    );
    assert!(
        piped
            .lines()
            .all(|line| line.starts_with("a-") || !line.contains('-')),
        "stdout wrote lines of b"
    );

    let stored = |messages: &[String], prefix: &str| -> BTreeSet<u64> {
        messages
            .iter()
            .flat_map(|message| numbers_of(&format!("{message}\n"), prefix))
            .collect()
    };
    let mut a_seen = stored(&stuck_dlq, "a");
    a_seen.extend(numbers_of(&piped, "a"));
    let mut b_seen = stored(&file_dlq, "b");
    b_seen.extend(numbers_of(&written, "b"));
    let all: BTreeSet<u64> = (0..LINES).collect();
    assert_eq!(
        a_seen, all,
        "every line of a is in the pipe or the stuck sink's DLQ"
    );
    assert_eq!(
        b_seen, all,
        "every line of b is in the file or its sink's DLQ"
    );
}

/// Runs `check-config CONFIG`.
fn check_config(config: &Path) -> std::process::Output {
    Command::new(binary())
        .arg("check-config")
        .arg(config)
        .output()
        .expect("run check-config")
}

/// The 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle:?}"))
        + 1
}

/// Goal: an `inputs` entry that names no source is refused by
/// `check-config` and `run`, naming the key, its line and the unknown id,
/// and listing the sources. Method: `inputs = ["a", "nope"]`.
#[test]
fn inputs_naming_no_source_is_refused_with_key_line_and_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("out.log");
    let sinks = format!(
        "{}inputs = [\"a\", \"nope\"]\n",
        file_sink_table("out", &output, "raw")
    );
    let text = two_source_config(dir.path(), &Keys::default(), &sinks);
    let config = write_file(dir.path(), "config.toml", &text);
    let line = line_of(&text, "\"nope\"");
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let result = Command::new(binary())
            .args(args)
            .arg(&config)
            .output()
            .expect("run binary");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(1), "{args:?}: {stderr}");
        for expected in [
            "sinks.out.inputs[1]",
            &format!("line {line}"),
            "\"nope\" names no source",
            "the sources are \"a\", \"b\"",
        ] {
            assert!(
                stderr.contains(expected),
                "{args:?}: {expected:?} missing from: {stderr}"
            );
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!output.exists(), "a refused config starts nothing");
}

/// Goal: `check-config` warns about a source no sink takes, naming it and
/// its line, and accepts the config; no warning while some sink takes
/// every source. Method: two sources, a sink taking only `a`; then the
/// same with a second sink without `inputs`.
#[test]
fn a_source_no_sink_takes_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_source_file(dir.path(), "a");
    write_source_file(dir.path(), "b");
    let only_a = format!(
        "{}inputs = [\"a\"]\n",
        file_sink_table("only_a", &dir.path().join("a.out"), "raw")
    );
    let text = two_source_config(dir.path(), &Keys::default(), &only_a);
    let result = check_config(&write_file(dir.path(), "warned.toml", &text));
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let warnings: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains("no sink takes this source"))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one source is taken by no sink: {stdout}"
    );
    let line = line_of(&text, "[sources.b]");
    for expected in ["warning:", "`sources.b`", &format!("line {line}:")] {
        assert!(
            warnings[0].contains(expected),
            "{expected:?} missing from: {stdout}"
        );
    }

    let both = format!(
        "{only_a}\n{}",
        file_sink_table("every", &dir.path().join("every.out"), "raw")
    );
    let text = two_source_config(dir.path(), &Keys::default(), &both);
    let result = check_config(&write_file(dir.path(), "quiet.toml", &text));
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    assert!(!stdout.contains("no sink takes"), "{stdout}");
}
