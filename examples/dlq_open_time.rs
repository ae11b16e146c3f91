//! How long start-up takes to open a large dead-letter queue.
//!
//! Fills a DLQ in DIR with VoIP lines (`perf/voip_lines.py`, random mode)
//! until its segment files reach GIB GiB (64 MiB segments, each sealed as
//! it fills), then opens it the way the daemon does at start-up, twice:
//! with the sealed segments' trailers as written, and again after the
//! trailers of all but the last segment are zeroed, which makes the open
//! scan every segment as it does a torn one. Prints both times.
//!
//!     cargo run --release --example dlq_open_time -- DIR GIB

use std::time::Instant;

use log_capturer::config::DlqPolicy;
use log_capturer::dlq::record::{Reason, Record};
use log_capturer::dlq::{DlqSettings, DlqWriter};

const SEGMENT_BYTES: usize = 64 * 1024 * 1024;
/// The seal trailer: the last bytes of a sealed segment.
const TRAILER_BYTES: u64 = 64;

fn corpus() -> Vec<Vec<u8>> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/voip_lines.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .args(["-", "100000", "--mode", "random"])
        .output()
        .expect("python3 runs perf/voip_lines.py");
    assert!(output.status.success(), "{}", script.display());
    output
        .stdout
        .split(|&byte| byte == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn open_timed(settings: &DlqSettings) -> (f64, u64) {
    let started = Instant::now();
    let writer = DlqWriter::open("kafka", settings).expect("open the DLQ");
    let seconds = started.elapsed().as_secs_f64();
    (seconds, writer.metrics().entries.get())
}

fn main() {
    let mut arguments = std::env::args().skip(1);
    let (Some(dir), Some(gib)) = (arguments.next(), arguments.next()) else {
        eprintln!("usage: dlq_open_time DIR GIB");
        std::process::exit(2);
    };
    let gib: u64 = gib.parse().expect("GIB is a whole number");
    let settings = DlqSettings {
        dir: std::path::PathBuf::from(&dir),
        segment_bytes: SEGMENT_BYTES,
        max_bytes: (gib + 1) * 1024 * 1024 * 1024,
        policy: DlqPolicy::DropOldest,
    };
    let lines = corpus();
    let mut writer = DlqWriter::open("kafka", &settings).expect("open the DLQ");
    let metrics = writer.metrics();
    let labels = vec![
        ("file", "/var/log/opensips.log"),
        ("service", "opensips"),
        ("source_id", "app"),
    ];
    let mut record = Record {
        timestamp_ns: 0,
        attempts: 5,
        reason: Reason::AttemptsExhausted,
        terminated: true,
        sink: "kafka",
        labels,
        message: &[],
    };
    let target_bytes = gib * 1024 * 1024 * 1024;
    let filling = Instant::now();
    let mut appended = 0u64;
    while metrics.size_bytes.get() < target_bytes {
        for line in &lines {
            record.timestamp_ns = 1_795_737_599_123_456_789 + appended * 20_000;
            record.message = line;
            writer.append(&record).expect("append");
            appended += 1;
        }
    }
    writer.seal();
    drop(writer);
    println!(
        "filled: {appended} records, {:.2} GiB of segment files, {:.1} s",
        metrics.size_bytes.get() as f64 / (1u64 << 30) as f64,
        filling.elapsed().as_secs_f64()
    );
    let (seconds, entries) = open_timed(&settings);
    println!(
        "open with trailers: {:.1} ms, {entries} records",
        seconds * 1e3
    );
    let mut segments = Vec::new();
    let mut directories = vec![std::path::PathBuf::from(&dir)];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).expect("read the DLQ directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                directories.push(path);
            } else if path.extension().is_some_and(|extension| extension == "dlq") {
                segments.push(path);
            }
        }
    }
    segments.sort();
    segments.pop();
    for path in &segments {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .expect("open segment");
        let length = file.metadata().expect("metadata").len();
        file.seek(SeekFrom::Start(length - TRAILER_BYTES))
            .expect("seek");
        file.write_all(&[0; TRAILER_BYTES as usize])
            .expect("zero trailer");
    }
    let (seconds, entries) = open_timed(&settings);
    println!(
        "open scanning {} segments: {:.1} ms, {entries} records",
        segments.len(),
        seconds * 1e3
    );
}
