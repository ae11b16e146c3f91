//! The whole pipeline in process: a file of 500,000 lines of ~120 bytes
//! through a file source, the dispatcher and a `null` sink, from start-up to
//! clean exit (`exit_on_eof`).

use std::io::Write;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::config::Config;
use log_capturer::pipeline::Pipeline;

const LINES: u64 = 500_000;

fn bench_pipeline(criterion: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create input"));
    let padding = "x".repeat(103);
    for number in 0..LINES {
        writeln!(file, "seq={number:012} {padding}").expect("write");
    }
    drop(file);
    let text = format!(
        "[daemon]\npin_threads = true\ndata_dir = \"{}\"\n[sources.app]\ntype = \"file\"\npaths = [\"{}\"]\nexit_on_eof = true\n[sinks.drop]\ntype = \"null\"\n",
        dir.path().join("data").display(),
        input.display()
    );
    let config =
        Config::from_toml(&text, std::path::Path::new("bench.toml")).expect("valid config");
    let mut group = criterion.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(LINES));
    group.bench_function("file_to_null_500k_lines", |bencher| {
        bencher.iter(|| {
            let pipeline = Pipeline::start(&config).expect("start");
            while !pipeline.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let processed = pipeline.metrics().dispatcher.lines_processed.get();
            pipeline.join(Duration::from_secs(10)).expect("join");
            assert_eq!(processed, LINES);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(10));
    targets = bench_pipeline
}
criterion_main!(benches);
