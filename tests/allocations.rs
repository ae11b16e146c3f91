//! Goal: steady-state allocations per line stay at or below 0.01, on the
//! healthy path and on the outage path. Method: a counting global allocator
//! wraps the system allocator; an in-process pipeline ships a 1.3M-line
//! file; allocations are counted between the moment 100k lines were
//! processed (in the outage cases: handed to the DLQ) as a warm-up and
//! 1,000,000 lines later, while the source still has input left, so that
//! start-up and shutdown are excluded.
//!
//! Cases: two healthy sinks (`null` and a `raw` file sink); a Kafka sink
//! whose broker is down, so that every line goes to its DLQ; the same with
//! a DLQ that cannot store anything, either because its directory cannot be
//! created (its parent is a regular file) or because no segment can be
//! created in it (the directory is immutable), so that every line is
//! counted as a DLQ write error. librdkafka's threads allocate with C's
//! `malloc`, which this allocator does not see; its callbacks on the sink
//! thread run Rust code and are counted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log_capturer::config::Config;
use log_capturer::pipeline::Pipeline;
use rdkafka::mocking::MockCluster;

struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees hold unchanged; the counter is a plain atomic.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: `pointer` came from `System` through this allocator.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

const WARM_UP_LINES: u64 = 100_000;
const MEASURED_LINES: u64 = 1_000_000;
const INPUT_LINES: u64 = 1_300_000;

/// The counter is global: a test measures only while no other test of this
/// file runs.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn steady_state_allocations_per_line_at_most_one_hundredth() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let output = dir.path().join("output.log");
    let sinks = format!(
        "[sinks.drop]\ntype = \"null\"\n\n[sinks.archive]\ntype = \"file\"\npath = \"{}\"\nencoding = \"raw\"",
        output.display()
    );
    let shipped = ship_file(dir.path(), &sinks);
    let (lines, allocations) = (shipped.lines, shipped.allocations);
    let per_line = allocations as f64 / lines as f64;
    println!("{allocations} allocations over {lines} lines: {per_line:.5} per line");
    assert!(lines >= MEASURED_LINES, "measured {lines} lines");
    assert!(per_line <= 0.01, "{per_line} allocations per line");
}

/// What [`ship_file`] measured.
struct Shipped {
    /// Lines processed in the measured window, and allocations meanwhile.
    lines: u64,
    allocations: u64,
    /// Lines processed when the window ended.
    lines_end: u64,
    sinks: Vec<Arc<log_capturer::metrics::SinkMetrics>>,
    sources: Vec<Arc<log_capturer::metrics::SourceMetrics>>,
}

/// Ships a file of `INPUT_LINES` numbered lines (written in `dir`) through
/// an in-process pipeline into `sinks`, counting allocations from
/// `WARM_UP_LINES` processed lines over the next `MEASURED_LINES`, while
/// the source still has input left; then stops the pipeline.
fn ship_file(dir: &Path, sinks: &str) -> Shipped {
    let input = dir.join("input.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create input"));
    common::write_numbered_lines(&mut file, 0, INPUT_LINES);
    drop(file);
    let text = common::file_source_config(&input, "exit_on_eof = true", sinks);
    measure(&text)
}

/// Runs an in-process pipeline on the config `text` (whose sources hold
/// `INPUT_LINES` lines), counting allocations from `WARM_UP_LINES`
/// processed lines over the next `MEASURED_LINES`, while the sources still
/// have input left; then stops the pipeline.
fn measure(text: &str) -> Shipped {
    let config = Config::from_toml(text, Path::new("allocations.toml")).expect("valid config");
    let pipeline = Pipeline::start(&config).expect("pipeline starts");
    let processed = || pipeline.metrics().dispatcher.lines_processed.get();
    let (lines_start, allocations_start) = sample_when(WARM_UP_LINES, processed);
    let (lines_end, allocations_end) = sample_when(lines_start + MEASURED_LINES, processed);
    assert!(
        lines_end < INPUT_LINES,
        "measurement ended before the input did ({lines_end})"
    );
    pipeline.request_stop();
    let sinks = pipeline.metrics().sinks.clone();
    let sources = pipeline.metrics().sources.clone();
    pipeline.join(Duration::from_secs(30)).expect("clean stop");
    Shipped {
        lines: lines_end - lines_start,
        allocations: allocations_end - allocations_start,
        lines_end,
        sinks,
        sources,
    }
}

/// Goal: a syslog message received over TCP, parsed and labelled costs no
/// allocation in steady state (labels of a few senders, interned once).
/// Method: an in-process pipeline with a syslog source and a null sink; a
/// thread of this test writes 1.3M octet-counted RFC 5424 messages from 16
/// hosts with structured data, built before the measurement.
#[test]
fn syslog_messages_allocate_at_most_one_hundredth() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let text = format!(
        "[daemon]\npin_threads = false\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\
         [sources.sys]\ntype = \"syslog\"\ntcp = \"127.0.0.1:{port}\"\n\
         [sinks.drop]\ntype = \"null\"\n",
        dir.path().join("data").display()
    );
    let config = Config::from_toml(&text, Path::new("allocations.toml")).expect("valid config");
    let mut frames = Vec::with_capacity(INPUT_LINES as usize * 200);
    for number in 0..INPUT_LINES {
        let message = format!(
            "<165>1 2026-11-27T12:00:00.{:03}Z web{:02} opensips 4242 ID47 [origin@32473 ip=\"10.0.0.1\"] call {number:09}",
            number % 1000,
            number % 16
        );
        frames.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
    }
    let pipeline = Pipeline::start(&config).expect("pipeline starts");
    let sender = std::thread::spawn(move || {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        for piece in frames.chunks(64 * 1024) {
            stream.write_all(piece).expect("write");
        }
    });
    let processed = || pipeline.metrics().dispatcher.lines_processed.get();
    let (lines_start, allocations_start) = sample_when(WARM_UP_LINES, processed);
    let (lines_end, allocations_end) = sample_when(lines_start + MEASURED_LINES, processed);
    assert!(
        lines_end < INPUT_LINES,
        "measurement ended before the input did"
    );
    sender.join().expect("sender");
    pipeline.request_stop();
    pipeline.join(Duration::from_secs(30)).expect("clean stop");
    let lines = lines_end - lines_start;
    let per_line = (allocations_end - allocations_start) as f64 / lines as f64;
    println!("syslog: {per_line:.5} allocations per message over {lines}");
    assert!(per_line <= 0.01, "{per_line} allocations per message");
}

/// Goal: a Loki sink beside another sink costs no allocation per line:
/// both read the same batch (no copy), the Loki sink builds its requests
/// in buffers it keeps. Method: an in-process pipeline ships the file to
/// the real Loki of `../shared/loki` (protobuf, snappy) and to a raw file
/// sink at once; allocations counted as in the healthy case (HTTP requests
/// allocate inside `ureq`, per request, not per line). A Kafka sink is
/// not the neighbour here: rdkafka's `BaseProducer::send` makes a
/// `CString` of the topic for every message, one allocation per line of
/// its own.
#[test]
fn loki_beside_a_file_sink_allocates_at_most_one_hundredth() {
    let _serial = serial();
    let loki = common::loki::Loki::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sinks = format!(
        "{}
[sinks.loki]
type = \"loki\"
url = \"http://{}/loki/api/v1/push\"
labels = [\"source_id\", \"service\"]
",
        common::file_sink_table("archive", &dir.path().join("archive.log"), "raw"),
        loki.http
    );
    let shipped = ship_file(dir.path(), &sinks);
    let lines_end = shipped.lines_end;
    for sink in &shipped.sinks {
        assert_eq!(sink.lines_failed.get(), 0, "sink {} failed lines", sink.id);
        assert!(
            sink.lines_sent.get() >= lines_end,
            "sink {} sent {} of at least {lines_end}",
            sink.id,
            sink.lines_sent.get()
        );
    }
    let lines = shipped.lines;
    let per_line = shipped.allocations as f64 / lines as f64;
    println!("loki beside a file sink: {per_line:.5} allocations per line over {lines}");
    assert!(per_line <= 0.01, "{per_line} allocations per line");
}

/// Spins (without allocating) until `processed()` reaches `lines`, then
/// reads the line count and the allocation count together.
fn sample_when(lines: u64, processed: impl Fn() -> u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while processed() < lines {
        assert!(
            Instant::now() < deadline,
            "pipeline stalled before {lines} lines"
        );
        std::thread::yield_now();
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    (processed(), allocations)
}

/// How the DLQ directory of the dead Kafka sink is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DlqDisk {
    /// A plain directory: every line is stored.
    Writable,
    /// `<data_dir>/dlq` is a regular file: the sink's directory cannot be
    /// created, the DLQ never opens.
    Unopenable,
    /// The sink's directory exists but is immutable (`chattr +i`, which
    /// stops root too): the DLQ opens, no segment can be created in it.
    Immutable,
}

/// Goal: with Kafka down, a line on its way to the DLQ costs no allocation.
/// Method: a Kafka sink whose only broker is down, one attempt per batch,
/// so that every batch fails at once (circuit breaker open) and goes to the
/// DLQ; the DLQ rolls through small segments at its size bound
/// (`drop_oldest`) meanwhile.
#[test]
fn kafka_down_lines_into_the_dlq_allocate_at_most_one_hundredth() {
    let _serial = serial();
    outage_run(DlqDisk::Writable);
}

/// Goal: with Kafka down and a DLQ directory that cannot be created, a line
/// is counted as a DLQ write error without an allocation.
#[test]
fn unopenable_dlq_counts_lines_at_most_one_hundredth_allocations() {
    let _serial = serial();
    outage_run(DlqDisk::Unopenable);
}

/// Goal: with Kafka down and a DLQ directory where no segment can be
/// created, a line is counted as a DLQ write error without an allocation.
#[test]
fn immutable_dlq_counts_lines_at_most_one_hundredth_allocations() {
    let _serial = serial();
    outage_run(DlqDisk::Immutable);
}

/// Runs `INPUT_LINES` lines into the dead Kafka sink with its DLQ prepared
/// as `disk`, measures allocations per line handed to the DLQ, and checks
/// what became of every line.
fn outage_run(disk: DlqDisk) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("outage", 1, 1).expect("topic");
    cluster.broker_down(1).expect("broker down");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create input"));
    common::write_numbered_lines(&mut file, 0, INPUT_LINES);
    drop(file);
    let dlq_dir = dir.path().join("data").join("dlq");
    let immutable = prepare_dlq(&dlq_dir, disk);
    let sinks = format!(
        "{}\n[retry]\nmax_attempts = 1\n\n[dlq]\nsegment_bytes = 16777216\nmax_bytes = 67108864\nauto_replay = false\n",
        common::kafka_sink_table(&cluster.bootstrap_servers(), "outage", "encoding = \"raw\"")
    );
    let text = common::file_source_config(&input, "exit_on_eof = true", &sinks);
    let config = Config::from_toml(&text, Path::new("allocations.toml")).expect("valid config");
    // The directory is made mutable again even if the run panics, so that
    // the temporary directory can be removed.
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| measure_outage(&config)));
    if let Some(path) = immutable {
        chattr("-i", &path);
    }
    let outcome = run.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    println!(
        "{disk:?}: {} allocations over {} lines to the DLQ: {:.5} per line \
         (run {:.1} s; processed {}, stored {}, dropped at the bound {}, write errors {})",
        outcome.allocations,
        outcome.lines,
        outcome.per_line,
        outcome.seconds,
        outcome.processed,
        outcome.stored,
        outcome.dropped,
        outcome.write_errors
    );
    assert!(
        outcome.window_end < INPUT_LINES,
        "measurement ended before the input did ({})",
        outcome.window_end
    );
    assert_eq!(outcome.sent, 0, "nothing reached the dead broker");
    assert_eq!(
        outcome.failed, outcome.processed,
        "every line read ends in the Kafka sink's DLQ path"
    );
    match disk {
        DlqDisk::Writable => {
            assert_eq!(outcome.stored, outcome.failed, "every line stored");
            assert_eq!(outcome.write_errors, 0);
        }
        DlqDisk::Unopenable | DlqDisk::Immutable => {
            assert_eq!(outcome.stored, 0, "nothing can be stored");
            assert_eq!(
                outcome.write_errors, outcome.failed,
                "every line counted as a DLQ write error"
            );
        }
    }
    assert!(
        outcome.lines >= MEASURED_LINES,
        "measured {} lines",
        outcome.lines
    );
    assert!(
        outcome.per_line <= 0.01,
        "{} allocations per line",
        outcome.per_line
    );
}

/// Prepares the DLQ directory; returns the directory made immutable, if any.
fn prepare_dlq(dlq_dir: &Path, disk: DlqDisk) -> Option<PathBuf> {
    match disk {
        DlqDisk::Writable => None,
        DlqDisk::Unopenable => {
            std::fs::create_dir_all(dlq_dir.parent().expect("data dir")).expect("data dir");
            std::fs::write(dlq_dir, "a regular file where the DLQ directory belongs")
                .expect("file");
            None
        }
        DlqDisk::Immutable => {
            let sink_dir = dlq_dir.join("kafka");
            std::fs::create_dir_all(&sink_dir).expect("sink DLQ dir");
            chattr("+i", &sink_dir);
            let probe = sink_dir.join("probe");
            assert!(
                std::fs::write(&probe, "x").is_err(),
                "{} is immutable",
                sink_dir.display()
            );
            Some(sink_dir)
        }
    }
}

fn chattr(flag: &str, path: &Path) {
    let status = Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("chattr (e2fsprogs) runs");
    assert!(status.success(), "chattr {flag} {}", path.display());
}

/// What an outage run measured and counted.
struct OutageOutcome {
    /// Lines handed to the DLQ during the measured window, and the count
    /// at its end.
    lines: u64,
    window_end: u64,
    allocations: u64,
    per_line: f64,
    /// Totals at the end of the run.
    processed: u64,
    sent: u64,
    failed: u64,
    stored: u64,
    write_errors: u64,
    /// Records dropped at the size bound after they were stored.
    dropped: u64,
    seconds: f64,
}

fn measure_outage(config: &Config) -> OutageOutcome {
    let started = Instant::now();
    let pipeline = Pipeline::start(config).expect("pipeline starts");
    let metrics = pipeline.metrics();
    let sink = Arc::clone(
        metrics
            .sinks
            .iter()
            .find(|sink| sink.id == "kafka")
            .expect("kafka sink"),
    );
    let dlq = Arc::clone(
        metrics
            .dlq
            .iter()
            .find(|dlq| dlq.sink == "kafka")
            .expect("the kafka sink's DLQ"),
    );
    let dispatcher = Arc::clone(&metrics.dispatcher);
    let failed = || sink.lines_failed.get();
    let (lines_start, allocations_start) = sample_when(WARM_UP_LINES, failed);
    let (lines_end, allocations_end) = sample_when(lines_start + MEASURED_LINES, failed);
    pipeline.request_stop();
    pipeline.join(Duration::from_secs(30)).expect("clean stop");
    let lines = lines_end - lines_start;
    let allocations = allocations_end - allocations_start;
    OutageOutcome {
        lines,
        window_end: lines_end,
        allocations,
        per_line: allocations as f64 / lines as f64,
        processed: dispatcher.lines_processed.get(),
        sent: sink.lines_sent.get(),
        failed: sink.lines_failed.get(),
        stored: dlq.stored_total(),
        write_errors: dlq.write_errors.get(),
        dropped: dlq.dropped.get(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Goal: a container log line (json-file) costs no allocation in steady
/// state: decoded in place, its time and stream label set per chunk.
/// Method: a private dockerd runs one container that writes nothing; its
/// `<id>-json.log` is filled with 1.3M json-file lines (stdout and stderr
/// alternating, escapes in the text) before an in-process pipeline with a
/// docker source and a null sink reads them.
#[test]
fn docker_lines_allocate_at_most_one_hundredth() {
    let _serial = serial();
    let dockerd = common::docker::PrivateDockerd::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let id = dockerd.run("app-quiet", &[], &[], "busybox sleep 600");
    let mut log = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .append(true)
            .open(dockerd.log_path(&id))
            .expect("open the container's log"),
    );
    for number in 0..INPUT_LINES {
        let stream = if number % 2 == 0 { "stdout" } else { "stderr" };
        let nanos = number % 1_000_000_000;
        std::io::Write::write_all(
            &mut log,
            format!(
                "{{\"log\":\"seq={number:012} \\\"quoted\\\"\\ttab \\u003cangle\\u003e padding-padding-padding\\n\",\"stream\":\"{stream}\",\"time\":\"2026-11-28T10:00:00.{nanos:09}Z\"}}\n"
            )
            .as_bytes(),
        )
        .expect("write the log");
    }
    drop(log);
    let text = format!(
        "[daemon]\npin_threads = false\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n\n\
         [sources.dk]\ntype = \"docker\"\nsocket = \"{socket}\"\ncontainers_root = \"{root}\"\n\n\
         [sinks.drop]\ntype = \"null\"\n",
        data = dir.path().join("data").display(),
        socket = dockerd.socket().display(),
        root = dockerd.containers_root().display(),
    );
    let shipped = measure(&text);
    let undecoded = shipped.sources[0].docker.undecoded.get();
    assert_eq!(undecoded, 0, "every line was decoded");
    let lines = shipped.lines;
    let per_line = shipped.allocations as f64 / lines as f64;
    println!("docker source: {per_line:.5} allocations per line over {lines}");
    assert!(per_line <= 0.01, "{per_line} allocations per line");
}
