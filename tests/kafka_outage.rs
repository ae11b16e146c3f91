//! The Kafka outage test runs in its own test binary (its own process), so
//! that the RSS it samples belongs to this test alone.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log_capturer::config::Config;
use log_capturer::pipeline::Pipeline;
use rdkafka::mocking::MockCluster;

/// Goal: memory stays bounded while Kafka is down and lines keep coming.
/// Method: a pipeline follows a file that grows by 2,000 lines every 10 ms
/// (200k lines/s) for 3 s with the broker down; RSS is sampled every 100 ms.
/// Then the broker comes back and new lines are delivered again.
#[test]
fn outage_under_load_keeps_memory_bounded_and_recovers() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("load", 16, 1).expect("topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut file = std::fs::File::create(&input).expect("create");
    let sinks = common::kafka_sink_table(
        &cluster.bootstrap_servers(),
        "load",
        "probe_interval_ms = 200",
    );
    let text = common::file_source_config(&input, "", &sinks);
    let config = Config::from_toml(&text, std::path::Path::new("outage.toml")).expect("config");
    let pipeline = Pipeline::start(&config).expect("start");
    let (_, kafka) = pipeline.metrics().kafka[0].clone();
    let sink = Arc::clone(&pipeline.metrics().sinks[0]);

    let mut written = 0u64;
    let mut write_lines = |count: u64| {
        let mut buffer = Vec::new();
        common::write_numbered_lines(&mut buffer, written, count);
        file.write_all(&buffer).expect("append");
        written += count;
    };
    write_lines(10_000);
    common::wait_until("first lines delivered", Duration::from_secs(20), || {
        sink.lines_sent.get() == 10_000
    });
    let rss_before = common::rss_of(std::process::id());

    cluster.broker_down(1).expect("down");
    let mut rss_peak = rss_before;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        write_lines(2_000);
        std::thread::sleep(Duration::from_millis(10));
        rss_peak = rss_peak.max(common::rss_of(std::process::id()));
    }
    assert_eq!(
        kafka.breaker_state.get(),
        1,
        "breaker open during the outage"
    );
    assert!(
        sink.line_attempts_failed.get() > 0,
        "batches failed during the outage"
    );
    let growth = rss_peak.saturating_sub(rss_before);
    println!(
        "RSS before the outage {} MiB, peak during it {} MiB",
        rss_before >> 20,
        rss_peak >> 20
    );
    assert!(
        growth < 64 << 20,
        "RSS grew by {} MiB during the outage",
        growth >> 20
    );

    cluster.broker_up(1).expect("up");
    common::wait_until("breaker closed", Duration::from_secs(15), || {
        kafka.breaker_state.get() == 0
    });
    let sent_before = sink.lines_sent.get();
    write_lines(5_000);
    common::wait_until("lines after recovery", Duration::from_secs(20), || {
        sink.lines_sent.get() >= sent_before + 5_000
    });
    pipeline.request_stop();
    pipeline.join(Duration::from_secs(15)).expect("clean stop");
}
