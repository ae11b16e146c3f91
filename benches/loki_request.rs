//! Building one Loki push request of 1,000 entries (120-byte lines, four
//! streams), as protobuf with snappy and as JSON: the encoding cost a
//! Loki sink pays per batch, without the network.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::sink::loki::request::{PushEncoder, PushEntry, StreamText};

const ENTRIES: usize = 1000;

fn bench_request(criterion: &mut Criterion) {
    let hosts = ["web1", "web2", "db1", "db2"];
    let labels: Vec<Vec<(&str, &str)>> = hosts
        .iter()
        .map(|host| vec![("app", "opensips"), ("host", *host), ("source_id", "app")])
        .collect();
    let streams: Vec<StreamText> = labels.iter().map(|pairs| StreamText::new(pairs)).collect();
    let lines: Vec<String> = (0..ENTRIES)
        .map(|number| format!("seq={number:012} {}", "x".repeat(102)))
        .collect();
    let template: Vec<PushEntry<'_>> = lines
        .iter()
        .enumerate()
        .map(|(index, line)| PushEntry {
            stream: (index % hosts.len()) as u32,
            timestamp_ns: 1_795_780_800_000_000_000 + index as u64,
            line: line.as_bytes(),
            sequence: index as u32,
        })
        .collect();
    let mut group = criterion.benchmark_group("loki_request");
    group.throughput(Throughput::Elements(ENTRIES as u64));
    let mut encoder = PushEncoder::new();
    let mut entries = template.clone();
    group.bench_function("protobuf_snappy_1000", |bencher| {
        bencher.iter(|| {
            entries.copy_from_slice(&template);
            black_box(
                encoder
                    .protobuf(&streams, &mut entries)
                    .expect("compresses")
                    .len(),
            )
        })
    });
    group.bench_function("json_1000", |bencher| {
        bencher.iter(|| {
            entries.copy_from_slice(&template);
            black_box(encoder.json(&streams, &mut entries).len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_request);
criterion_main!(benches);
