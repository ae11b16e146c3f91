//! The circuit breaker at the end of an outage. In its own test binary: the
//! mock cluster and the pipeline share this process.

mod common;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log_capturer::config::Config;
use log_capturer::pipeline::Pipeline;
use rdkafka::mocking::MockCluster;

/// Goal: when the brokers come back, the breaker closes once and stays
/// closed; the error events librdkafka queued during the outage must not
/// open it again (a flap, whose purge re-sends what is in flight).
/// Method: librdkafka reconnects every few milliseconds, so an outage of
/// 3 s with an idle sink leaves thousands of "connection refused" and "all
/// brokers down" events queued; the brokers come back, lines flow for 2 s;
/// the breaker must have opened exactly once, be closed, and every line
/// must be delivered.
#[test]
fn breaker_closes_once_after_an_outage() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("flap", 4, 1).expect("topic");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    let mut file = std::fs::File::create(&input).expect("create");
    let sinks = common::kafka_sink_table(
        &cluster.bootstrap_servers(),
        "flap",
        "probe_interval_ms = 200\n\
         librdkafka = { \"reconnect.backoff.ms\" = 1, \"reconnect.backoff.max.ms\" = 5 }",
    );
    let text = common::file_source_config(&input, "", &sinks);
    let config = Config::from_toml(&text, std::path::Path::new("flap.toml")).expect("config");
    let pipeline = Pipeline::start(&config).expect("start");
    let (_, kafka) = pipeline.metrics().kafka[0].clone();
    let sink = Arc::clone(&pipeline.metrics().sinks[0]);

    let mut written = 0u64;
    let mut write_lines = |count: u64| {
        let mut buffer = Vec::new();
        common::write_numbered_lines(&mut buffer, written, count);
        file.write_all(&buffer).expect("append");
        written += count;
        written
    };
    write_lines(1_000);
    common::wait_until("first lines delivered", Duration::from_secs(20), || {
        sink.lines_sent.get() == 1_000
    });

    cluster.broker_down(1).expect("down");
    common::wait_until("breaker open", Duration::from_secs(10), || {
        kafka.breaker_state.get() == 1
    });
    std::thread::sleep(Duration::from_secs(3));
    cluster.broker_up(1).expect("up");
    common::wait_until("breaker closed", Duration::from_secs(15), || {
        kafka.breaker_state.get() == 0
    });

    let flowing = Instant::now();
    let mut total = 0;
    while flowing.elapsed() < Duration::from_secs(2) {
        total = write_lines(100);
        std::thread::sleep(Duration::from_millis(10));
    }
    common::wait_until("every line delivered", Duration::from_secs(30), || {
        sink.lines_sent.get() >= total
    });
    assert_eq!(
        kafka.breaker_openings.get(),
        1,
        "the breaker opened again after the brokers came back"
    );
    assert_eq!(kafka.breaker_state.get(), 0, "the breaker ends closed");
    assert_eq!(sink.lines_sent.get(), total);
    pipeline.join(Duration::from_secs(10)).expect("stop");
}
