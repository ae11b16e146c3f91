//! Line splitting: one 128 KiB chunk of ~120-byte lines, split into spans.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::limits;
use log_capturer::source::{SplitOptions, split_lines};

fn chunk_of_lines() -> Vec<u8> {
    let mut data = Vec::with_capacity(limits::CHUNK_BYTES);
    let mut number = 0u64;
    while data.len() + 121 <= limits::CHUNK_BYTES {
        data.extend_from_slice(format!("seq={number:012} {}\n", "x".repeat(103)).as_bytes());
        number += 1;
    }
    data
}

fn bench_split(criterion: &mut Criterion) {
    let data = chunk_of_lines();
    let mut spans = Vec::with_capacity(limits::CHUNK_LINES_MAX);
    let options = SplitOptions {
        max_line_bytes: 1024 * 1024,
        spans_max: limits::CHUNK_LINES_MAX,
        flush_tail: false,
    };
    let mut group = criterion.benchmark_group("line_split");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("chunk_128k_120b_lines", |bencher| {
        bencher.iter(|| {
            spans.clear();
            black_box(split_lines(black_box(&data), &mut spans, options));
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_split
}
criterion_main!(benches);
