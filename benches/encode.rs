//! Encoding a batch of 1000 entries of 120 bytes with three labels, as the
//! Kafka and file sinks do: `json` and `raw`, into one reused buffer.

use std::hint::black_box;

use bumpalo::Bump;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::batch::OpenBatch;
use log_capturer::config::Encoding;
use log_capturer::labels::SymbolTableBuilder;
use log_capturer::sink::encode::Encoder;

const LINES: usize = 1000;

fn bench_encode(criterion: &mut Criterion) {
    let mut symbols = SymbolTableBuilder::new();
    let labels = symbols.label_set([
        ("service", "opensips"),
        ("source_id", "app"),
        ("file", "/var/log/opensips.log"),
    ]);
    let symbols = symbols.freeze();
    let mut batch = OpenBatch::new(Bump::new(), LINES, std::sync::Arc::clone(&symbols));
    for number in 0..LINES {
        let line = format!("seq={number:012} {}", "x".repeat(102));
        batch.push(line.as_bytes(), &labels, 0, 1_795_737_599_123_456_789, true);
    }
    let batch = batch.seal(0, 0);
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut group = criterion.benchmark_group("encode");
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, encoding) in [
        ("json_batch_1000", Encoding::Json),
        ("raw_batch_1000", Encoding::Raw),
    ] {
        let mut encoder = Encoder::new(encoding, std::sync::Arc::clone(&symbols));
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                buffer.clear();
                for entry in batch.entries() {
                    encoder.encode(&mut buffer, entry);
                }
                black_box(buffer.len());
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = bench_encode
}
criterion_main!(benches);
