//! The SPSC hand-off between two threads: 10,000 source chunks pushed
//! through an rtrb ring of 64 and handed back on a return ring, the way a
//! source and the dispatcher circulate chunks, with park/unpark wake-ups.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use log_capturer::source::SourceChunk;
use log_capturer::wake::{Waker, park};
use rtrb::RingBuffer;

const CHUNKS: u64 = 10_000;
const RING: usize = 64;

fn round_trip() {
    let (mut to_consumer, mut from_producer) = RingBuffer::<SourceChunk>::new(RING);
    let (mut back_producer, mut back_consumer) = RingBuffer::<SourceChunk>::new(RING);
    let consumer_waker = Waker::new();
    let producer_waker = Waker::new();
    let consumer = {
        let consumer_waker = consumer_waker.clone();
        let producer_waker = producer_waker.clone();
        std::thread::spawn(move || {
            consumer_waker.register_current();
            let mut received = 0u64;
            while received < CHUNKS {
                match from_producer.pop() {
                    Ok(chunk) => {
                        received += 1;
                        black_box(chunk.lines().len());
                        back_producer
                            .push(chunk)
                            .expect("return ring holds the pool");
                        producer_waker.wake();
                    }
                    Err(_) => park(Duration::from_millis(1)),
                }
            }
        })
    };
    producer_waker.register_current();
    let mut pool: Vec<SourceChunk> = (0..RING).map(|_| SourceChunk::new()).collect();
    let mut sent = 0u64;
    while sent < CHUNKS {
        if let Some(chunk) = pool.pop().or_else(|| back_consumer.pop().ok()) {
            to_consumer.push(chunk).expect("ring holds the pool");
            consumer_waker.wake();
            sent += 1;
        } else {
            park(Duration::from_millis(1));
        }
    }
    consumer.join().expect("consumer thread");
}

fn bench_handoff(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("spsc_handoff");
    group.throughput(Throughput::Elements(CHUNKS));
    group.bench_function("chunks_10k_ring_64", |bencher| bencher.iter(round_trip));
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(5));
    targets = bench_handoff
}
criterion_main!(benches);
