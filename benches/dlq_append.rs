//! DLQ append: records of a 120-byte line with three labels, encoded and
//! appended to preallocated, memory-mapped 64 MiB segments (rolling to new
//! ones as they fill). Throughput in bytes of frames written.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::config::DlqPolicy;
use log_capturer::dlq::record::{Reason, Record, frame_bytes};
use log_capturer::dlq::{DlqSettings, DlqWriter};

const RECORDS: usize = 10_000;

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
    let mut writer = DlqWriter::open("kafka", &settings).expect("open");
    let message = [b'x'; 120];
    let labels = vec![
        ("file", "/var/log/opensips.log"),
        ("service", "opensips"),
        ("source_id", "app"),
    ];
    let record = Record {
        timestamp_ns: 1_795_737_599_123_456_789,
        attempts: 5,
        reason: Reason::AttemptsExhausted,
        terminated: true,
        sink: "kafka",
        labels: labels.clone(),
        message: &message,
    };
    let bytes = frame_bytes("kafka", &labels, &message) * RECORDS;
    let mut group = criterion.benchmark_group("dlq_append");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("records_10k_of_120b", |bencher| {
        bencher.iter(|| {
            for _ in 0..RECORDS {
                writer.append(black_box(&record)).expect("append");
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = bench_append
}
criterion_main!(benches);
