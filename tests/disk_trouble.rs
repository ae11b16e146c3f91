//! The DLQ's disk in trouble: a directory that cannot be written, and a
//! disk that fills up (a small tmpfs). Either way the daemon keeps running,
//! counts every entry it could not store, never faults (the segments are
//! preallocated, so a full disk is an error at creation, never a SIGBUS),
//! and live traffic to a healthy sink is unaffected. Runs as root, like the
//! daemon's CI: `mount` and `chattr` are part of the test.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use log_capturer::config::Config;
use log_capturer::pipeline::Pipeline;
use rdkafka::mocking::MockCluster;

/// Runs a pipeline with a dead Kafka sink (every failure goes straight to
/// its DLQ in `dlq_dir`) and a healthy file sink over 50,000 numbered
/// lines; returns (lines written, lines in the file sink's output, DLQ
/// entries stored, DLQ write errors).
fn run_with_dlq_dir(dir: &std::path::Path, dlq_dir: &std::path::Path) -> (u64, u64, u64, u64) {
    let mut buffer = Vec::new();
    common::write_numbered_lines(&mut buffer, 0, 50_000);
    run_lines_with_dlq_dir(dir, dlq_dir, &buffer, 50_000)
}

/// [`run_with_dlq_dir`] over `count` given lines.
fn run_lines_with_dlq_dir(
    dir: &std::path::Path,
    dlq_dir: &std::path::Path,
    lines: &[u8],
    count: u64,
) -> (u64, u64, u64, u64) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("trouble", 1, 1).expect("topic");
    cluster.broker_down(1).expect("down");
    let input = dir.join("input.log");
    std::fs::write(&input, lines).expect("input");
    let output = dir.join("archive.log");
    let text = format!(
        r#"
[daemon]
pin_threads = false
data_dir = "{data}"

[dispatcher]
batch_size = 500

[retry]
max_batches = 2
max_attempts = 1

[dlq]
dir = "{dlq}"
segment_bytes = 1048576
auto_replay = false

[sources.app]
type = "file"
paths = ["{input}"]
exit_on_eof = true

[sinks.kafka]
type = "kafka"
brokers = "{bootstrap}"
topic = "trouble"
encoding = "raw"

[sinks.archive]
type = "file"
path = "{output}"
"#,
        data = dir.join("data").display(),
        dlq = dlq_dir.display(),
        input = input.display(),
        bootstrap = cluster.bootstrap_servers(),
        output = output.display(),
    );
    let config = Config::from_toml(&text, std::path::Path::new("trouble.toml")).expect("config");
    let pipeline =
        Pipeline::start(&config).expect("the daemon starts even if its DLQ cannot be written");
    let dlq = Arc::clone(
        pipeline
            .metrics()
            .dlq
            .iter()
            .find(|dlq| dlq.sink == "kafka")
            .expect("the kafka sink's DLQ"),
    );
    common::wait_until("pipeline finished", Duration::from_secs(60), || {
        pipeline.is_finished()
    });
    pipeline
        .join(Duration::from_secs(20))
        .expect("clean stop, no crash");
    let archived = std::fs::read(&output)
        .expect("archive output")
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count() as u64;
    let stored = dlq.stored_total();
    (
        count,
        archived,
        stored,
        dlq.write_errors.get() + dlq.dropped.get(),
    )
}

/// Goal: a DLQ directory that cannot be written (immutable: root cannot
/// create files in it either) is counted, logged, and harmless to the
/// healthy sink. Method: `chattr +i` on the sink's DLQ directory.
#[test]
fn unwritable_dlq_directory_is_counted_and_harmless() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq_dir = dir.path().join("dlq");
    let sink_dir = dlq_dir.join("kafka");
    std::fs::create_dir_all(&sink_dir).expect("dlq dir");
    let locked = Command::new("chattr")
        .arg("+i")
        .arg(&sink_dir)
        .status()
        .expect("chattr (e2fsprogs) runs");
    assert!(locked.success(), "chattr +i {}", sink_dir.display());
    let (written, archived, stored, lost_counted) = run_with_dlq_dir(dir.path(), &dlq_dir);
    let unlocked = Command::new("chattr")
        .arg("-i")
        .arg(&sink_dir)
        .status()
        .expect("chattr");
    assert!(unlocked.success());
    println!(
        "written {written}, archived {archived}, stored {stored}, counted as not stored {lost_counted}"
    );
    assert_eq!(archived, written, "the healthy sink got every line");
    assert_eq!(stored, 0, "nothing could be stored");
    assert_eq!(
        lost_counted, written,
        "every line the Kafka sink failed is counted"
    );
}

/// Goal: a DLQ disk that fills up ends in counted errors, not a SIGBUS.
/// Method: the DLQ on a 2 MiB tmpfs with 1 MiB segments, 150,000 lines of
/// a VoIP host's logs (`perf/voip_lines.py`, random identifiers) failing:
/// about 6 MiB of compressed blocks.
#[test]
fn full_dlq_disk_is_counted_and_never_faults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dlq_dir = dir.path().join("small-disk");
    std::fs::create_dir_all(&dlq_dir).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&dlq_dir)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "mount a 2 MiB tmpfs at {} (the test runs as root)",
        dlq_dir.display()
    );
    let lines = common::voip_lines(150_000, "random", false, 3);
    let result =
        std::panic::catch_unwind(|| run_lines_with_dlq_dir(dir.path(), &dlq_dir, &lines, 150_000));
    let unmounted = Command::new("umount")
        .arg(&dlq_dir)
        .status()
        .expect("umount runs");
    let (written, archived, stored, lost_counted) = result.expect("the run completes");
    assert!(unmounted.success());
    println!(
        "written {written}, archived {archived}, stored {stored}, counted as not stored {lost_counted}"
    );
    assert_eq!(archived, written, "the healthy sink got every line");
    assert!(stored > 0, "records were stored until the disk was full");
    assert!(lost_counted > 0, "the full disk was hit");
    assert_eq!(
        stored + lost_counted,
        written,
        "every failed line is stored or counted"
    );
}

/// Goal: a file sink on a full disk writes a batch whole or not at all, so
/// that what goes to the DLQ (the whole batch) is not also in the output,
/// and the output holds no torn line.
/// Method: the output on a 1 MiB tmpfs, 30,000 lines of 120 bytes read to
/// the end (about 3.6 MB), one attempt per batch; then every line must be
/// either in the output or in the DLQ, never both, and the output must be
/// whole lines only.
#[test]
fn full_output_disk_keeps_batches_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("small-out");
    std::fs::create_dir_all(&out_dir).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&out_dir)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "mount a 1 MiB tmpfs (the test runs as root)"
    );
    let result = std::panic::catch_unwind(|| run_into_full_output(dir.path(), &out_dir));
    let unmounted = Command::new("umount")
        .arg(&out_dir)
        .status()
        .expect("umount runs");
    let (output, dumped) = result.expect("the run completes");
    assert!(unmounted.success());
    let numbers_out = numbers_of(&output);
    let numbers_dlq = numbers_of(&dumped);
    println!(
        "in the output {}, in the DLQ {}",
        numbers_out.len(),
        numbers_dlq.len()
    );
    assert!(!numbers_dlq.is_empty(), "the full disk was hit");
    let mut all: Vec<u64> = numbers_out.iter().chain(&numbers_dlq).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..30_000).collect::<Vec<u64>>(), "every line once");
}

/// Line numbers of every `seq=` line in `text`; panics on a torn line.
fn numbers_of(text: &str) -> Vec<u64> {
    text.lines()
        .map(|line| {
            let at = line
                .find("seq=")
                .unwrap_or_else(|| panic!("torn line {line:?}"));
            let digits = line
                .get(at + 4..at + 16)
                .unwrap_or_else(|| panic!("torn line {line:?}"));
            assert!(line.ends_with('x'), "torn line {line:?}");
            digits
                .parse()
                .unwrap_or_else(|_| panic!("torn line {line:?}"))
        })
        .collect()
}

/// Runs 30,000 lines into a file sink in `out_dir`; returns the output and
/// `dlq dump` of the sink.
fn run_into_full_output(dir: &std::path::Path, out_dir: &std::path::Path) -> (String, String) {
    let input = dir.join("app.log");
    let mut file = std::fs::File::create(&input).expect("input");
    common::write_numbered_lines(&mut file, 0, 30_000);
    let output = out_dir.join("out.log");
    let sinks = format!(
        "{}\n[retry]\nmax_attempts = 1\nbase_delay_ms = 10",
        common::file_sink_table("out", &output, "raw")
    );
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        common::file_source_config(
            &input,
            "start_at = \"beginning\"\nexit_on_eof = true",
            &sinks,
        ),
    )
    .expect("config");
    let mut child = common::spawn_run(&config);
    let status = common::wait_with_timeout(&mut child, Duration::from_secs(60));
    assert!(status.success(), "daemon exit {status}");
    let dump = Command::new(common::binary())
        .args(["dlq", "dump", "--config"])
        .arg(&config)
        .output()
        .expect("dlq dump");
    assert!(dump.status.success(), "dlq dump: {dump:?}");
    (
        std::fs::read_to_string(&output).expect("output"),
        String::from_utf8(dump.stdout).expect("dump is text"),
    )
}
