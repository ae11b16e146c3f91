//! DLQ append: records of a VoIP host's log lines (`perf/voip_lines.py`:
//! about 144 bytes, a third random, or the less random template mode) with
//! three labels, stored in the open block of preallocated, memory-mapped
//! 64 MiB segments, compressed a block at a time and rolling to new
//! segments as they fill (`max_bytes` bounds the disk: `drop_oldest`
//! deletes the oldest). Throughput in lines; v1 (the format of earlier
//! builds, one uncompressed record per frame) beside it. Each run prints
//! the disk bytes per line.
//!
//!     cargo bench --bench dlq_append

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::config::DlqPolicy;
use log_capturer::dlq::record::{Reason, Record};
use log_capturer::dlq::{DlqSettings, DlqWriter};

const RECORDS: usize = 10_000;

/// Lines of `perf/voip_lines.py` in `mode`, without their newlines.
fn corpus(mode: &str) -> Vec<Vec<u8>> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("perf/voip_lines.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .args(["-", &RECORDS.to_string(), "--mode", mode])
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

fn bench_append(criterion: &mut Criterion) {
    let dir =
        tempfile::tempdir_in(std::env::var_os("DLQ_BENCH_DIR").unwrap_or_else(|| "target".into()))
            .expect("tempdir");
    let settings = DlqSettings {
        dir: dir.path().to_path_buf(),
        segment_bytes: 64 * 1024 * 1024,
        max_bytes: 512 * 1024 * 1024,
        policy: DlqPolicy::DropOldest,
    };
    let labels = vec![
        ("file", "/var/log/opensips.log"),
        ("service", "opensips"),
        ("source_id", "app"),
    ];
    let mut group = criterion.benchmark_group("dlq_append");
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (name, mode, v1) in [
        ("v2_voip_random_10k", "random", false),
        ("v2_voip_template_10k", "template", false),
        ("v1_voip_random_10k", "random", true),
    ] {
        let lines = corpus(mode);
        let sink = "kafka";
        let settings = DlqSettings {
            dir: settings.dir.join(name),
            ..settings.clone()
        };
        let mut writer = if v1 {
            DlqWriter::open_v1(sink, &settings)
        } else {
            DlqWriter::open(sink, &settings)
        }
        .expect("open");
        let metrics = writer.metrics();
        let mut appended = 0u64;
        let mut record = Record {
            timestamp_ns: 0,
            attempts: 5,
            reason: Reason::AttemptsExhausted,
            terminated: true,
            sink,
            labels: labels.clone(),
            message: &[],
        };
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                for (index, line) in lines.iter().enumerate() {
                    record.timestamp_ns = 1_795_737_599_123_456_789 + index as u64 * 20_000;
                    record.message = line;
                    writer.append(black_box(&record)).expect("append");
                }
                appended += RECORDS as u64;
            })
        });
        writer.seal();
        let stored = metrics.entries.get().max(1);
        println!(
            "{name}: {:.1} disk bytes per line, ratio {:.2} ({} lines on disk, {} appended)",
            metrics.used_bytes.get() as f64 / stored as f64,
            metrics.input_bytes.get() as f64 / metrics.used_bytes.get().max(1) as f64,
            stored,
            appended
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench_append
}
criterion_main!(benches);
