//! The retry wheel: insert 1024 items with delays spread over 0 to 30 s,
//! then expire them all (three full turns of the wheel).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::retry::RetryWheel;
use log_capturer::retry::wheel::RetryItem;

const ITEMS: usize = 1024;

fn bench_wheel(criterion: &mut Criterion) {
    let mut wheel = RetryWheel::new(ITEMS);
    let mut due = Vec::with_capacity(ITEMS);
    let mut group = criterion.benchmark_group("retry_wheel");
    group.throughput(Throughput::Elements(ITEMS as u64));
    // A virtual clock: each round starts where the last one expired, as the
    // dispatcher's monotonic clock would.
    let mut now = Instant::now();
    group.bench_function("insert_then_expire_1024", |bencher| {
        bencher.iter(|| {
            now += Duration::from_secs(31);
            for index in 0..ITEMS {
                let delay = Duration::from_millis((index as u64 * 7919) % 30_000);
                let item = RetryItem {
                    batch_slot: index as u32,
                    sink: 0,
                };
                wheel.insert(item, delay, now).expect("room");
            }
            due.clear();
            wheel.expire(now + Duration::from_secs(31), &mut due);
            black_box(due.len());
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = bench_wheel
}
criterion_main!(benches);
