//! The metrics endpoint against a live daemon: promtool, a real Prometheus
//! server, exact counters, hostile clients.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn file_to_file_config(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let input = dir.join("input.log");
    std::fs::write(&input, "").expect("create input");
    let output = dir.join("output.log");
    let sinks = format!(
        "[sinks.archive]\ntype = \"file\"\npath = \"{}\"\n\n[sinks.drop]\ntype = \"null\"",
        output.display()
    );
    let config = write_file(dir, "config.toml", &file_source_config(&input, "", &sinks));
    (input, output, config)
}

/// Goal: the exposition is valid Prometheus text. Method: ship lines, then
/// pipe `/metrics` through `promtool check metrics`; also `/health` is 200
/// JSON naming every stage and unknown paths are 404.
#[test]
fn exposition_passes_promtool_and_health_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, _, config) = file_to_file_config(dir.path());
    append_numbered_lines(&input, 0, 5_000);
    let daemon = Daemon::start(&config);
    wait_until("lines processed", Duration::from_secs(20), || {
        sample(
            &daemon.get("/metrics").1,
            "log_capturer_logs_processed_total{source_type=\"file\",source_id=\"app\",pipeline=\"default\"}",
        ) == Some(5000.0)
    });
    let (status, body) = daemon.get("/metrics");
    assert_eq!(status, 200);
    for name in [
        "log_capturer_threads",
        "log_capturer_file_descriptors_open",
        "log_capturer_cpu_usage_percent",
        "log_capturer_processing_duration_seconds_bucket",
        "log_capturer_sink_send_duration_seconds_count",
    ] {
        assert!(body.contains(name), "missing {name}");
    }
    assert!(body.contains("log_capturer_memory_usage_bytes{type=\"rss\"}"));
    assert!(
        body.contains("log_capturer_memory_usage_bytes{type=\"allocator_committed\"}"),
        "mimalloc figures"
    );
    assert_promtool_accepts(&body);
    // The latency quantiles appear once a 10-second window with traffic has
    // closed; they must pass promtool too (a gauge may not carry a
    // `quantile` label).
    let mut body = String::new();
    wait_until("a closed latency window", Duration::from_secs(30), || {
        append_numbered_lines(&input, 0, 10);
        body = daemon.get("/metrics").1;
        body.contains("log_capturer_latency_seconds{")
    });
    assert_promtool_accepts(&body);

    let (status, health) = daemon.get("/health");
    assert_eq!(status, 200, "{health}");
    let health: serde_json::Value = serde_json::from_str(&health).expect("health is JSON");
    assert_eq!(health["status"], "ok");
    for stage in ["source-app", "dispatcher", "sink-archive", "sink-drop"] {
        assert_eq!(health["components"][stage], "ok", "{health}");
    }
    assert_eq!(daemon.get("/nothing-here").0, 404);
    daemon.stop();
}

/// Pipes an exposition through `promtool check metrics`; fails the test on
/// any finding (errors and lint warnings alike).
fn assert_promtool_accepts(body: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (apt package prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("pipe metrics");
    let checked = promtool.wait_with_output().expect("promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(checked.status.success(), "promtool: {findings}");
    assert!(findings.trim().is_empty(), "promtool findings: {findings}");
}

/// Fails the test if two sample lines name the same series (name and
/// label set): Prometheus rejects such a scrape whole.
fn assert_no_duplicate_series(body: &str) {
    let mut seen = std::collections::BTreeSet::new();
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        let (series, _value) = line.rsplit_once(' ').expect("sample line");
        assert!(seen.insert(series), "duplicate series: {series}");
    }
    assert!(!seen.is_empty(), "no samples at all");
}

/// Goal: counters match reality. Method: ship N lines in three appends to
/// two sinks; processed and sent totals must equal N exactly, for each sink.
#[test]
fn counters_equal_lines_shipped_exactly() {
    const LINES: u64 = 123_457;
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, output, config) = file_to_file_config(dir.path());
    let daemon = Daemon::start(&config);
    append_numbered_lines(&input, 0, 50_000);
    append_numbered_lines(&input, 50_000, 50_000);
    append_numbered_lines(&input, 100_000, LINES - 100_000);
    let processed = "log_capturer_logs_processed_total{source_type=\"file\",source_id=\"app\",pipeline=\"default\"}";
    let sent_file =
        "log_capturer_sink_logs_total{sink=\"archive\",sink_type=\"file\",status=\"success\"}";
    let sent_null =
        "log_capturer_sink_logs_total{sink=\"drop\",sink_type=\"null\",status=\"success\"}";
    let latency_count = "log_capturer_processing_duration_seconds_count{component=\"sink:archive\",operation=\"read_to_ack\"}";
    wait_until("every line sent", Duration::from_secs(30), || {
        let body = daemon.get("/metrics").1;
        sample(&body, sent_file) == Some(LINES as f64)
            && sample(&body, sent_null) == Some(LINES as f64)
    });
    // Latency histograms are published about once a second.
    wait_until("latency recorded", Duration::from_secs(5), || {
        sample(&daemon.get("/metrics").1, latency_count) == Some(LINES as f64)
    });
    let body = daemon.get("/metrics").1;
    assert_eq!(sample(&body, processed), Some(LINES as f64));
    assert_eq!(
        sample(
            &body,
            "log_capturer_logs_sent_total{sink_type=\"file\",status=\"success\"}"
        ),
        Some(LINES as f64)
    );
    assert_eq!(
        sample(
            &body,
            "log_capturer_logs_sent_total{sink_type=\"file\",status=\"error\"}"
        ),
        Some(0.0)
    );
    let written = std::fs::read(&output).expect("output");
    assert_eq!(
        written.iter().filter(|&&byte| byte == b'\n').count() as u64,
        LINES
    );
    daemon.stop();
}

/// Goal: a client that opens 1,000 connections and sends nothing neither
/// stops the data path nor grows memory, and the endpoint keeps answering.
/// Method: open the connections, ship lines meanwhile, sample RSS.
#[test]
fn thousand_idle_connections_do_not_stall_the_data_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, output, config) = file_to_file_config(dir.path());
    let daemon = Daemon::start(&config);
    // Warm-up long enough to touch every pooled chunk and live arena, so
    // that the RSS measured next is the steady state.
    for step in 0..3 {
        append_numbered_lines(&input, step * 100_000, 100_000);
        wait_until("warm-up lines", Duration::from_secs(20), || {
            std::fs::metadata(&output)
                .map(|meta| meta.len())
                .unwrap_or(0)
                == (step + 1) * 100_000 * 120
        });
    }
    let rss_before = rss_of(daemon.child.id());

    let mut idle = Vec::new();
    for _ in 0..1000 {
        if let Ok(stream) = TcpStream::connect(daemon.metrics) {
            idle.push(stream);
        }
    }
    assert!(idle.len() >= 900, "opened {} connections", idle.len());
    append_numbered_lines(&input, 300_000, 100_000);
    let started = Instant::now();
    wait_until(
        "lines flow past idle connections",
        Duration::from_secs(20),
        || {
            std::fs::metadata(&output)
                .map(|meta| meta.len())
                .unwrap_or(0)
                == 400_000 * 120
        },
    );
    let flowed_in = started.elapsed();
    let (status, body) = daemon.get("/metrics");
    assert_eq!(
        status, 200,
        "endpoint answers while idle connections are open"
    );
    let fds = sample(&body, "log_capturer_file_descriptors_open").expect("fd gauge");
    assert!(fds < 200.0, "descriptors held: {fds}");
    let rss_after = rss_of(daemon.child.id());
    assert!(
        rss_after < rss_before + (16 << 20),
        "RSS {} MiB -> {} MiB",
        rss_before >> 20,
        rss_after >> 20
    );
    println!(
        "100k lines in {flowed_in:?} with {} idle connections; RSS {} -> {} MiB; fds {fds}",
        idle.len(),
        rss_before >> 20,
        rss_after >> 20
    );
    drop(idle);
    daemon.stop();
}

/// Goal: a huge request head is refused without growing memory. Method:
/// send 64 KiB of header bytes; expect 431.
#[test]
fn oversized_request_head_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, _, config) = file_to_file_config(dir.path());
    let daemon = Daemon::start(&config);
    let mut stream = TcpStream::connect(daemon.metrics).expect("connect");
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Filler: ");
    let _ = stream.write_all(&vec![b'a'; 64 * 1024]);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
    daemon.stop();
}

/// Goal: a real Prometheus server scrapes the daemon and sees
/// `log_capturer_logs_processed_total` grow. Method: start Debian's
/// prometheus on loopback with a 1 s scrape of the daemon, ship lines in
/// two steps, query the HTTP API after each.
#[test]
fn prometheus_server_scrapes_growing_counter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, _, config) = file_to_file_config(dir.path());
    let daemon = Daemon::start(&config);
    let prometheus_port = common::free_port();
    let scrape = write_file(
        dir.path(),
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: log-capturer\n    static_configs:\n      - targets: ['{}']\n",
            daemon.metrics
        ),
    );
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", scrape.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed (apt package prometheus)");

    append_numbered_lines(&input, 0, 1_000);
    let first = wait_for_query_value(prometheus_port, |value| value >= 1000.0);
    append_numbered_lines(&input, 1_000, 4_000);
    let second = wait_for_query_value(prometheus_port, |value| value >= 5000.0);
    prometheus.kill().ok();
    prometheus.wait().ok();
    daemon.stop();
    assert_eq!(first, 1000.0);
    assert_eq!(second, 5000.0);
}

/// Queries `log_capturer_logs_processed_total` through Prometheus's API
/// until `accept` holds; returns the value.
fn wait_for_query_value(port: u16, accept: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = query(port, "log_capturer_logs_processed_total")
            && accept(value)
        {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the expected value"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn query(port: u16, expression: &str) -> Option<f64> {
    use std::io::Read;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /api/v1/query?query={expression} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let json_start = body.find('{')?;
    let json_end = body.rfind('}')?;
    let value: serde_json::Value = serde_json::from_str(&body[json_start..=json_end]).ok()?;
    value["data"]["result"][0]["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// Two Kafka sink tables on one topic, `alpha` and `beta`, plus `extra`
/// top-level tables.
fn two_kafka_sinks(bootstrap: &str, extra: &str) -> String {
    let mut text = String::new();
    for id in ["alpha", "beta"] {
        text.push_str(&format!(
            "[sinks.{id}]\ntype = \"kafka\"\nbrokers = \"{bootstrap}\"\ntopic = \"logs\"\nprobe_interval_ms = 200\n\n"
        ));
    }
    text.push_str(extra);
    text
}

/// Goal: two Kafka sinks on one topic export distinct series (Prometheus
/// rejects a scrape with two identical ones), and every Kafka series names
/// its sink; so do two Loki sinks on one Loki; the dashboard queries only
/// exported families. Method: ship lines to all four sinks (the mock
/// cluster, the real Loki of `../shared/loki`), then check the exposition
/// with promtool and for duplicate series.
#[test]
fn two_kafka_sinks_on_one_topic_export_distinct_series() {
    const LINES: u64 = 2_000;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("logs", 4, 1).expect("topic");
    let loki = common::loki::Loki::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("create input");
    let mut lokis = String::new();
    for id in ["gamma", "delta"] {
        lokis.push_str(&format!(
            "[sinks.{id}]\ntype = \"loki\"\nurl = \"http://{}/loki/api/v1/push\"\n\
             labels = [\"source_id\"]\nstatic_labels = {{ sink = \"{id}\" }}\n\n",
            loki.http
        ));
    }
    let sinks = two_kafka_sinks(&cluster.bootstrap_servers(), &lokis);
    let config = write_file(
        dir.path(),
        "config.toml",
        &file_source_config(&input, "", &sinks),
    );
    let daemon = Daemon::start(&config);
    append_numbered_lines(&input, 0, LINES);
    for (id, kind) in [
        ("alpha", "kafka"),
        ("beta", "kafka"),
        ("gamma", "loki"),
        ("delta", "loki"),
    ] {
        let delivered = format!(
            "log_capturer_sink_logs_total{{sink=\"{id}\",sink_type=\"{kind}\",status=\"success\"}}"
        );
        wait_until("both sinks delivered", Duration::from_secs(30), || {
            sample(&daemon.get("/metrics").1, &delivered) == Some(LINES as f64)
        });
    }
    let body = daemon.get("/metrics").1;
    assert_no_duplicate_series(&body);
    assert_promtool_accepts(&body);
    for line in body.lines().filter(|line| line.starts_with("kafka_")) {
        assert!(line.contains("sink_name=\""), "no sink id: {line}");
    }
    for id in ["gamma", "delta"] {
        assert_eq!(
            sample(
                &body,
                &format!("log_capturer_loki_requests_total{{sink=\"{id}\"}}")
            )
            .map(|requests| requests >= 1.0),
            Some(true),
            "{id}: requests counted"
        );
    }
    assert_dashboard_metrics_exported(&body);
    for id in ["alpha", "beta"] {
        assert_eq!(
            sample(
                &body,
                &format!(
                    "kafka_dlq_messages_total{{sink_name=\"{id}\",topic=\"logs\",reason=\"attempts_exhausted\"}}"
                )
            ),
            Some(0.0),
            "kafka_dlq_messages_total is exported"
        );
    }
    daemon.stop();
}

/// Fails the test if `docs/grafana-dashboard.json` queries a metric name
/// that `body` does not export, so that a rename cannot leave the dashboard
/// behind.
fn assert_dashboard_metrics_exported(body: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut names = 0;
    for target in panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().expect("targets"))
    {
        let expression = target["expr"].as_str().expect("expr");
        let words = expression
            .split(|character: char| !(character.is_ascii_alphanumeric() || character == '_'));
        for name in words.filter(|word| {
            ["log_capturer_", "kafka_", "process_"]
                .iter()
                .any(|prefix| word.starts_with(prefix))
        }) {
            names += 1;
            // A family may have no sample yet (latency quantiles before
            // the first window), but it is declared.
            let declared = body.contains(&format!("# TYPE {name} "));
            let sampled = body
                .lines()
                .any(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']));
            assert!(
                declared || sampled,
                "the dashboard queries {name}, which is not exported"
            );
        }
    }
    assert!(
        names > 10,
        "only {names} metric names found in the dashboard"
    );
}

/// The sink-level and Kafka-level outcome counters of one sink:
/// (delivered, in the DLQ, failed attempts, Kafka success, Kafka error).
fn outcome_counts(body: &str, sink: &str) -> [f64; 5] {
    let read = |series: String| sample(body, &series).unwrap_or(-1.0);
    [
        read(format!(
            "log_capturer_sink_logs_total{{sink=\"{sink}\",sink_type=\"kafka\",status=\"success\"}}"
        )),
        read(format!(
            "log_capturer_sink_logs_total{{sink=\"{sink}\",sink_type=\"kafka\",status=\"error\"}}"
        )),
        read(format!(
            "log_capturer_sink_delivery_attempts_total{{sink=\"{sink}\",result=\"failure\"}}"
        )),
        read(format!(
            "kafka_messages_produced_total{{sink_name=\"{sink}\",topic=\"logs\",status=\"success\"}}"
        )),
        read(format!(
            "kafka_messages_produced_total{{sink_name=\"{sink}\",topic=\"logs\",status=\"error\"}}"
        )),
    ]
}

/// Goal: a line that never gets through counts once as an error, not once
/// per attempt; attempts have their own counter. Method: the broker is down
/// before the daemon starts, so the breaker opens and every attempt fails;
/// with `max_attempts = 3` and short delays each of N lines ends in the
/// DLQ. Errors must equal N, failed attempts 3 x N.
#[test]
fn lines_that_end_in_the_dlq_count_once_as_errors() {
    const LINES: u64 = 5_000;
    const ATTEMPTS: u64 = 3;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("logs", 4, 1).expect("topic");
    cluster.broker_down(1).expect("broker down");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("create input");
    let sinks = two_kafka_sinks(
        &cluster.bootstrap_servers(),
        &format!(
            "[retry]\nbase_delay_ms = 20\nmax_delay_ms = 100\nmax_attempts = {ATTEMPTS}\n\n[dlq]\nauto_replay = false\n"
        ),
    );
    let config = write_file(
        dir.path(),
        "config.toml",
        &file_source_config(&input, "", &sinks),
    );
    let daemon = Daemon::start(&config);
    append_numbered_lines(&input, 0, LINES);
    for id in ["alpha", "beta"] {
        let stored = format!("log_capturer_dlq_entries_total{{sink=\"{id}\"}}");
        wait_until("every line in the DLQ", Duration::from_secs(60), || {
            sample(&daemon.get("/metrics").1, &stored) == Some(LINES as f64)
        });
    }
    let body = daemon.get("/metrics").1;
    let lines = LINES as f64;
    assert_eq!(
        outcome_counts(&body, "alpha"),
        [0.0, lines, lines * ATTEMPTS as f64, 0.0, lines],
        "[delivered, dlq, failed attempts, kafka success, kafka error]"
    );
    assert_eq!(
        sample(
            &body,
            "log_capturer_logs_sent_total{sink_type=\"kafka\",status=\"error\"}"
        ),
        Some(2.0 * lines),
        "two sinks, each line once per sink"
    );
    assert_eq!(
        sample(
            &body,
            "kafka_dlq_messages_total{sink_name=\"alpha\",topic=\"logs\",reason=\"attempts_exhausted\"}"
        ),
        Some(lines)
    );
    daemon.stop();
}

/// Goal: a line that fails, is retried and is then delivered counts once,
/// as a success, and never as an error. Method: the broker is down while N
/// lines are shipped; once the batches went round the retry wheel several
/// times it comes back, and with enough attempts every line gets through.
#[test]
fn lines_delivered_after_retries_count_once_as_success() {
    const LINES: u64 = 5_000;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("logs", 4, 1).expect("topic");
    cluster.broker_down(1).expect("broker down");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("input.log");
    std::fs::write(&input, "").expect("create input");
    let sinks = two_kafka_sinks(
        &cluster.bootstrap_servers(),
        "[retry]\nbase_delay_ms = 50\nmax_delay_ms = 200\nmax_attempts = 1000\n\n[dlq]\nauto_replay = false\n",
    );
    let config = write_file(
        dir.path(),
        "config.toml",
        &file_source_config(&input, "", &sinks),
    );
    let daemon = Daemon::start(&config);
    append_numbered_lines(&input, 0, LINES);
    let lines = LINES as f64;
    // Five batches per sink, two sinks: forty retries mean batches went
    // round the wheel several times.
    wait_until("batches retried", Duration::from_secs(60), || {
        sample(
            &daemon.get("/metrics").1,
            "log_capturer_dispatcher_retries_total",
        )
        .is_some_and(|retries| retries >= 40.0)
    });
    cluster.broker_up(1).expect("broker up");
    wait_until("every line delivered", Duration::from_secs(60), || {
        outcome_counts(&daemon.get("/metrics").1, "alpha")[0] == lines
    });
    let [
        delivered,
        errors,
        attempts_failed,
        kafka_success,
        kafka_error,
    ] = outcome_counts(&daemon.get("/metrics").1, "alpha");
    assert_eq!(delivered, lines);
    assert_eq!(errors, 0.0, "a retried, delivered line is no error");
    assert!(attempts_failed >= 2.0 * lines, "{attempts_failed}");
    assert_eq!(kafka_success, lines);
    assert_eq!(kafka_error, 0.0);
    daemon.stop();
}

/// Goal: the process figures are consistent and sane: peak RSS never below
/// RSS, and the standard `process_*` metrics present with plausible values.
/// Method: ship lines, then scrape several times and compare with
/// `/proc/<pid>` and the wall clock.
#[test]
fn process_metrics_are_consistent_and_standard() {
    let test_started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let dir = tempfile::tempdir().expect("tempdir");
    let (input, output, config) = file_to_file_config(dir.path());
    let daemon = Daemon::start(&config);
    append_numbered_lines(&input, 0, 100_000);
    wait_until("lines written", Duration::from_secs(30), || {
        std::fs::metadata(&output).map_or(0, |meta| meta.len()) == 100_000 * 120
    });
    for _ in 0..10 {
        let body = daemon.get("/metrics").1;
        let figure = |series: &str| sample(&body, series).unwrap_or_else(|| panic!("{series}"));
        let rss = figure("log_capturer_memory_usage_bytes{type=\"rss\"}");
        let peak = figure("log_capturer_memory_usage_bytes{type=\"peak_rss\"}");
        assert!(peak >= rss, "peak RSS {peak} below RSS {rss}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        let body = daemon.get("/metrics").1;
        let figure = |series: &str| sample(&body, series).unwrap_or_else(|| panic!("{series}"));
        let resident = figure("process_resident_memory_bytes");
        let actual = rss_of(daemon.child.id()) as f64;
        assert!(
            (resident - actual).abs() < 16.0 * 1048576.0,
            "process_resident_memory_bytes {resident}, /proc says {actual}"
        );
        let descriptors = figure("process_open_fds");
        assert!((3.0..1000.0).contains(&descriptors), "{descriptors}");
        let cpu = figure("process_cpu_seconds_total");
        // The kernel counts CPU in clock ticks: a quick run can still be at
        // 0. The figure must be what /proc says (read after it, so not
        // below it by more than the ticks since) and plausible.
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", daemon.child.id())).expect("stat");
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("comm ends")
            .1
            .split_whitespace()
            .collect();
        // SAFETY: sysconf only reads a system constant.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let proc_cpu = (fields[11].parse::<f64>().expect("utime")
            + fields[12].parse::<f64>().expect("stime"))
            / ticks_per_second;
        assert!(
            cpu <= proc_cpu && proc_cpu - cpu <= 0.5 && cpu < 600.0,
            "process_cpu_seconds_total {cpu}, /proc says {proc_cpu}"
        );
        let started = figure("process_start_time_seconds");
        assert!(
            started >= test_started - 2.0 && started <= test_started + 60.0,
            "process_start_time_seconds {started}, test started {test_started}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_promtool_accepts(&daemon.get("/metrics").1);
    daemon.stop();
}
