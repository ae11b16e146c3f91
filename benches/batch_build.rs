//! Batch building: 1000 lines of 120 bytes pushed into a batch, sealed and
//! recycled. `bumpalo_arena` is the design in use; `vec_offsets` is the
//! safe-code alternative (one `Vec<u8>` plus (offset, len) pairs), measured
//! here for comparison.

use std::hint::black_box;

use bumpalo::Bump;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::batch::{OpenBatch, arena_capacity_bytes};
use log_capturer::labels::SymbolTableBuilder;

const LINES: usize = 1000;

fn bench_batch(criterion: &mut Criterion) {
    let line = [b'x'; 120];
    let mut symbols = SymbolTableBuilder::new();
    let labels = symbols.label_set([("service", "app"), ("file", "/var/log/app.log")]);
    let symbols = symbols.freeze();
    let mut group = criterion.benchmark_group("batch_build");
    group.throughput(Throughput::Elements(LINES as u64));

    let mut arena = Some(Bump::with_capacity(arena_capacity_bytes(LINES, 1 << 20)));
    group.bench_function("bumpalo_arena", |bencher| {
        bencher.iter(|| {
            let mut batch = OpenBatch::new(
                arena.take().expect("arena"),
                LINES,
                std::sync::Arc::clone(&symbols),
            );
            for _ in 0..LINES {
                batch.push(black_box(&line), &labels, 0, 1, true);
            }
            let sealed = batch.seal(0, 0);
            black_box(sealed.entries().len());
            arena = Some(sealed.into_arena());
        })
    });

    let mut bytes: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut spans: Vec<(u32, u32, u64)> = Vec::with_capacity(LINES);
    group.bench_function("vec_offsets", |bencher| {
        bencher.iter(|| {
            bytes.clear();
            spans.clear();
            for _ in 0..LINES {
                let start = bytes.len() as u32;
                bytes.extend_from_slice(black_box(&line));
                spans.push((start, line.len() as u32, 1));
            }
            black_box((bytes.len(), spans.len()));
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_batch
}
criterion_main!(benches);
