//! Kafka sink security and codecs: TLS, SASL PLAIN and SCRAM, zstd.
//!
//! librdkafka's mock cluster has no TLS listener and no SASL (its
//! `rdkafka_mock_handlers.c` serves neither SaslHandshake nor
//! SaslAuthenticate), so the TLS and SASL tests put a front in front of it
//! (`common/secure_front.rs`): a loopback listener that does the TLS
//! handshake with a certificate issued by a CA the test makes, and the
//! broker's side of SASL, then passes the authenticated connection on to the
//! mock cluster. The daemon binary ships to it as to a secured Kafka, and
//! the lines are read back through it. zstd is tested on the mock cluster
//! itself.

mod common;
#[path = "common/secure_front.rs"]
mod secure_front;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use secure_front::{Authority, Front, FrontConfig, Mechanism, MockBehindFront, Sasl};

// Kafka API keys, as the front records them.
const PRODUCE: i16 = 0;
const METADATA: i16 = 3;
const API_VERSIONS: i16 = 18;

/// The text of generated line `number` (what `write_numbered_lines`
/// writes, without the newline).
fn expected_line(number: usize) -> Vec<u8> {
    let mut line = Vec::new();
    common::write_numbered_lines(&mut line, number as u64, 1);
    line.pop();
    line
}

/// Asserts that `payloads` are the lines `0..count`, each exactly once and
/// byte for byte.
fn assert_lines_once(payloads: &[Vec<u8>], count: usize) {
    let mut seen = vec![0u32; count];
    for payload in payloads {
        let number: usize = std::str::from_utf8(&payload[4..16])
            .ok()
            .and_then(|digits| digits.parse().ok())
            .unwrap_or_else(|| panic!("not a numbered line: {}", String::from_utf8_lossy(payload)));
        assert!(number < count, "unexpected line {number}");
        assert_eq!(*payload, expected_line(number), "content of line {number}");
        seen[number] += 1;
    }
    let missing = seen.iter().filter(|&&times| times == 0).count();
    let duplicated = seen.iter().filter(|&&times| times > 1).count();
    assert_eq!(
        (missing, duplicated),
        (0, 0),
        "missing and duplicated of {count}"
    );
    assert_eq!(payloads.len(), count);
}

/// Reads every partition of `topic` from the beginning until `expected`
/// messages arrived (then half a second more, to catch duplicates), with
/// the given client properties.
fn consume(
    bootstrap: &str,
    topic: &str,
    properties: &[(&str, &str)],
    expected: usize,
    timeout: Duration,
) -> Vec<Vec<u8>> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "log-capturer-security-tests")
        .set("enable.auto.commit", "false");
    for (key, value) in properties {
        config.set(*key, *value);
    }
    let consumer: BaseConsumer = config.create().expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(20))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0, "topic {topic} has partitions");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut payloads = Vec::with_capacity(expected);
    let deadline = Instant::now() + timeout;
    let mut quiet_until: Option<Instant> = None;
    while Instant::now() < deadline && quiet_until.is_none_or(|until| Instant::now() < until) {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            payloads.push(message.payload().unwrap_or_default().to_vec());
        }
        if payloads.len() >= expected && quiet_until.is_none() {
            quiet_until = Some(Instant::now() + Duration::from_millis(500));
        }
    }
    payloads
}

/// `librdkafka = { ... }` from key/value pairs.
fn librdkafka_table(properties: &[(&str, &str)]) -> String {
    let pairs: Vec<String> = properties
        .iter()
        .map(|(key, value)| format!("{key:?} = {value:?}"))
        .collect();
    format!("librdkafka = {{ {} }}", pairs.join(", "))
}

/// Writes `lines` numbered lines and a config whose raw Kafka sink ships
/// them to `topic` on `bootstrap` with `properties`; returns the config.
fn write_config(
    dir: &Path,
    lines: usize,
    exit_on_eof: bool,
    bootstrap: &str,
    topic: &str,
    properties: &[(&str, &str)],
) -> std::path::PathBuf {
    let input = dir.join("input.log");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
    common::write_numbered_lines(&mut file, 0, lines as u64);
    drop(file);
    let sink = common::kafka_sink_table(
        bootstrap,
        topic,
        &format!(
            "encoding = \"raw\"\nprobe_interval_ms = 200\n{}",
            librdkafka_table(properties)
        ),
    );
    let source_keys = if exit_on_eof {
        "exit_on_eof = true"
    } else {
        ""
    };
    common::write_file(
        dir,
        "config.toml",
        &common::file_source_config(&input, source_keys, &sink),
    )
}

/// Starts `run --config CONFIG` as `common::Daemon::start` does, with
/// `LOG_CAPTURER_LOG` set to `log_filter`.
fn start_daemon_logging(config: &Path, log_filter: &str) -> common::Daemon {
    let child = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(config)
        .env("LOG_CAPTURER_LOG", log_filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start log-capturer");
    common::await_started(child).0
}

/// Waits for a daemon started with `exit_on_eof` to exit 0, and returns
/// its standard error.
fn wait_for_exit(mut daemon: common::Daemon, timeout: Duration) -> Vec<String> {
    let status = common::wait_with_timeout(&mut daemon.child, timeout);
    let mut lines = Vec::new();
    // The reader thread ends at the end of the pipe, soon after the exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(line) = daemon
        .stderr
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        lines.push(line);
    }
    assert!(status.success(), "daemon exit {status}: {lines:#?}");
    lines
}

/// Waits for a line of the daemon's standard error that contains
/// `needle`; returns it.
fn wait_for_log(daemon: &common::Daemon, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        match daemon.stderr.recv_timeout(remaining) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no log line with {needle:?} within {timeout:?}; seen: {seen:#?}"),
        }
    }
}

/// The mock cluster behind a front, and the CA the front's certificate
/// chains to (as PEM in the test's directory).
struct Secured {
    front: Front,
    _mock: MockBehindFront,
    ca: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Secured {
    fn start(topic: &str, partitions: i32, tls: bool, sasl: Option<Sasl>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mock = MockBehindFront::new(topic, partitions);
        let authority = Authority::new("log-capturer test CA");
        let ca = dir.path().join("ca.pem");
        authority.write_pem(&ca);
        let front = Front::start(FrontConfig {
            tls: tls.then(|| authority.issue_server_certificate()),
            sasl,
            upstream: mock.upstream,
        });
        mock.advertise(front.address);
        Self {
            front,
            _mock: mock,
            ca,
            dir,
        }
    }

    fn bootstrap(&self) -> String {
        self.front.address.to_string()
    }

    fn ca(&self) -> &str {
        self.ca.to_str().expect("UTF-8 path")
    }
}

fn sasl(mechanism: Mechanism, password: &str) -> Sasl {
    Sasl {
        mechanism,
        username: "shipper".to_string(),
        password: password.to_string(),
    }
}

/// Goal: this build has TLS, SASL SCRAM and zstd (they used to be refused
/// as "not available at build time"), and no GSSAPI, which `check-config`
/// refuses (naming the key and the mechanisms built in) as `run` does.
/// Method: `check-config` on sink tables with each and on the README's
/// example; `check-config` and `run` with GSSAPI.
#[test]
fn config_with_tls_sasl_and_zstd_is_accepted_and_gssapi_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    Authority::new("check-config CA").write_pem(&ca);
    let ca = ca.to_str().expect("UTF-8 path");
    let accepted: [&[(&str, &str)]; 4] = [
        &[
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanisms", "SCRAM-SHA-256"),
            ("sasl.username", "shipper"),
            ("sasl.password", "secret"),
            ("ssl.ca.location", ca),
            ("compression.type", "zstd"),
        ],
        &[
            ("security.protocol", "ssl"),
            ("ssl.ca.location", ca),
            ("ssl.endpoint.identification.algorithm", "https"),
        ],
        &[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "shipper"),
            ("sasl.password", "secret"),
        ],
        &[("compression.codec", "zstd"), ("compression.level", "6")],
    ];
    for properties in accepted {
        let config = write_config(dir.path(), 1, false, "127.0.0.1:9093", "logs", properties);
        let output = Command::new(common::binary())
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("run check-config");
        assert!(
            output.status.success(),
            "{properties:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains(": ok"),
            "{properties:?}"
        );
    }

    // The README's example sink.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let example = readme
        .split("## Kafka over TLS and SASL")
        .nth(1)
        .and_then(|section| section.split("```toml\n").nth(1))
        .and_then(|block| block.split("```").next())
        .expect("README has a TOML example under \"Kafka over TLS and SASL\"");
    assert!(example.contains("\"sasl_ssl\""), "{example}");
    // check-config reads the CA file the example names: point it at one.
    const README_CA: &str = "/etc/log-capturer/kafka-ca.pem";
    assert!(example.contains(README_CA), "{example}");
    let example = example.replace(README_CA, ca);
    let input = common::write_file(dir.path(), "readme.log", "one\n");
    let config = common::write_file(
        dir.path(),
        "readme.toml",
        &common::file_source_config(&input, "", &example),
    );
    let output = Command::new(common::binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("run check-config");
    assert!(
        output.status.success(),
        "README example: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let config = write_config(
        dir.path(),
        1,
        false,
        "127.0.0.1:9093",
        "logs",
        &[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "GSSAPI"),
        ],
    );
    let checked = Command::new(common::binary())
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("run check-config");
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("librdkafka.sasl.mechanisms")
            && stderr.contains("GSSAPI is not built into")
            && stderr.contains("SCRAM-SHA-256"),
        "{stderr}"
    );
    let mut daemon = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start log-capturer");
    let status = common::wait_with_timeout(&mut daemon, Duration::from_secs(20));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("GSSAPI is not built into"), "{stderr}");
}

/// Goal: with `compression.type = "zstd"` every line reaches Kafka intact,
/// and librdkafka really compresses with zstd. Method: the daemon ships
/// 20,000 lines to the mock cluster with librdkafka's `msg` debug log on;
/// every "Produce MessageSet" line it logs names zstd; the topic is read
/// back (decompressed by the consumer) and compared line by line.
#[test]
fn zstd_ships_every_line_intact_to_the_mock_cluster() {
    const LINES: usize = 20_000;
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("zstd", 4, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        LINES,
        true,
        &bootstrap,
        "zstd",
        &[("compression.type", "zstd"), ("debug", "msg")],
    );
    let daemon = start_daemon_logging(&config, "debug");
    let log = wait_for_exit(daemon, Duration::from_secs(60));

    let produced: Vec<&String> = log
        .iter()
        .filter(|line| line.contains("Produce MessageSet"))
        .collect();
    assert!(
        !produced.is_empty(),
        "librdkafka's msg debug log names each produce request; log: {log:#?}"
    );
    let not_zstd: Vec<&&String> = produced
        .iter()
        .filter(|line| !line.contains(", zstd)"))
        .collect();
    assert!(not_zstd.is_empty(), "produced without zstd: {not_zstd:#?}");
    // "Produce MessageSet with N message(s) (B bytes, ...": B is the size
    // of the compressed record batch; the numbered lines compress well.
    let (mut messages, mut bytes) = (0usize, 0usize);
    for line in &produced {
        let numbers: Vec<usize> = line
            .split(" with ")
            .nth(1)
            .and_then(|rest| rest.split(" bytes").next())
            .map(|text| {
                text.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|number| number.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(numbers.len(), 2, "messages and bytes in {line}");
        messages += numbers[0];
        bytes += numbers[1];
    }
    assert!(
        messages >= LINES,
        "{messages} messages produced: {produced:#?}"
    );
    assert!(
        bytes * 4 < LINES * common::NUMBERED_LINE_BYTES,
        "{bytes} bytes on the wire for {LINES} lines: not compressed"
    );
    assert!(
        !log.iter().any(|line| line.contains("not compressing")),
        "{log:#?}"
    );

    let payloads = consume(&bootstrap, "zstd", &[], LINES, Duration::from_secs(60));
    assert_lines_once(&payloads, LINES);
}

/// Goal: TLS and SASL/SCRAM-SHA-256 work end to end. Method: a front with
/// a certificate for 127.0.0.1 and one SCRAM user; the daemon ships 5,000
/// lines with `security.protocol = "sasl_ssl"` (hostname verification on,
/// librdkafka's default) and zstd. Every connection completes the TLS
/// handshake and then sends ApiVersions, then authenticates as the user,
/// then produces; no librdkafka error is logged; the lines read back
/// through the front are the input.
#[test]
fn tls_and_scram_deliver_every_line_through_a_tls_listener() {
    const LINES: usize = 5_000;
    let secured = Secured::start(
        "secure",
        4,
        true,
        Some(sasl(Mechanism::ScramSha256, "s3cret-Pa55")),
    );
    let client: [(&str, &str); 5] = [
        ("security.protocol", "sasl_ssl"),
        ("ssl.ca.location", secured.ca()),
        ("sasl.mechanisms", "SCRAM-SHA-256"),
        ("sasl.username", "shipper"),
        ("sasl.password", "s3cret-Pa55"),
    ];
    let mut properties = client.to_vec();
    properties.push(("compression.type", "zstd"));
    let config = write_config(
        secured.dir.path(),
        LINES,
        true,
        &secured.bootstrap(),
        "secure",
        &properties,
    );
    let log = wait_for_exit(common::Daemon::start(&config), Duration::from_secs(60));
    let errors: Vec<&String> = log.iter().filter(|line| line.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let seen = secured.front.seen();
    assert!(seen.tls_handshakes >= 1, "{seen:#?}");
    assert!(seen.tls_failures.is_empty(), "{seen:#?}");
    assert!(
        !seen.first_requests.is_empty()
            && seen.first_requests.iter().all(|&key| key == API_VERSIONS),
        "each connection starts with ApiVersions after the handshake: {seen:#?}"
    );
    assert!(
        seen.mechanisms_asked
            .iter()
            .all(|name| name == "SCRAM-SHA-256"),
        "{seen:#?}"
    );
    assert!(
        !seen.authenticated.is_empty() && seen.authenticated.iter().all(|user| user == "shipper"),
        "{seen:#?}"
    );
    assert!(seen.refused.is_empty(), "{seen:#?}");
    assert!(seen.before_authentication.is_empty(), "{seen:#?}");
    assert!(
        seen.forwarded.get(&METADATA).copied().unwrap_or(0) >= 1,
        "{seen:#?}"
    );
    assert!(
        seen.forwarded.get(&PRODUCE).copied().unwrap_or(0) >= 1,
        "{seen:#?}"
    );

    let payloads = consume(
        &secured.bootstrap(),
        "secure",
        &client,
        LINES,
        Duration::from_secs(60),
    );
    assert_lines_once(&payloads, LINES);
}

/// Goal: a broker certificate that does not chain to `ssl.ca.location` is
/// refused, with a message that says so. Method: the front's certificate
/// is issued by one test CA, the daemon trusts another; the daemon logs
/// librdkafka's "certificate verify failed", the front sees the client
/// abort the handshake (unknown CA) and no Kafka request at all, and
/// `/health` reports the sink's circuit breaker open.
#[test]
fn a_broker_certificate_from_an_unrelated_ca_is_refused() {
    let secured = Secured::start("secure", 1, true, None);
    let unrelated = secured.dir.path().join("unrelated-ca.pem");
    Authority::new("unrelated CA").write_pem(&unrelated);
    let config = write_config(
        secured.dir.path(),
        10,
        false,
        &secured.bootstrap(),
        "secure",
        &[
            ("security.protocol", "ssl"),
            ("ssl.ca.location", unrelated.to_str().expect("UTF-8 path")),
        ],
    );
    let daemon = common::Daemon::start(&config);
    let line = wait_for_log(
        &daemon,
        "certificate verify failed",
        Duration::from_secs(30),
    );
    assert!(line.contains("SSL handshake failed"), "{line}");
    assert!(line.contains("ssl.ca.location"), "{line}");

    let seen = secured.front.seen();
    assert!(seen.connections >= 1, "{seen:#?}");
    assert_eq!(seen.tls_handshakes, 0, "{seen:#?}");
    assert!(
        !seen.tls_failures.is_empty()
            && seen
                .tls_failures
                .iter()
                .all(|failure| failure.contains("unknown ca")),
        "{seen:#?}"
    );
    assert!(seen.first_requests.is_empty(), "{seen:#?}");
    assert!(seen.forwarded.is_empty(), "{seen:#?}");
    // The broker counts as down: the sink's breaker opens.
    common::wait_until("the breaker to open", Duration::from_secs(30), || {
        let (status, health) = daemon.get("/health");
        status == 503 && health.contains("Kafka circuit breaker is open")
    });
    daemon.stop();
}

/// Goal: a wrong SCRAM password is refused with a clear error, after a
/// good TLS handshake. Method: a front whose user has another password
/// than the daemon's (SCRAM-SHA-512); the daemon logs librdkafka's "SASL
/// authentication error" with the broker's message; the front refused the
/// user and passed nothing to the cluster.
#[test]
fn a_wrong_scram_password_is_refused_with_an_authentication_error() {
    let secured = Secured::start(
        "secure",
        1,
        true,
        Some(sasl(Mechanism::ScramSha512, "the-right-one")),
    );
    let config = write_config(
        secured.dir.path(),
        10,
        false,
        &secured.bootstrap(),
        "secure",
        &[
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", secured.ca()),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "shipper"),
            ("sasl.password", "a-wrong-one"),
        ],
    );
    let daemon = common::Daemon::start(&config);
    let line = wait_for_log(
        &daemon,
        "SASL authentication error",
        Duration::from_secs(30),
    );
    assert!(
        line.contains("invalid credentials with SASL mechanism SCRAM-SHA-512"),
        "{line}"
    );

    let seen = secured.front.seen();
    assert!(seen.tls_handshakes >= 1, "{seen:#?}");
    assert!(
        seen.refused.iter().any(|user| user == "shipper"),
        "{seen:#?}"
    );
    assert!(seen.authenticated.is_empty(), "{seen:#?}");
    assert!(seen.before_authentication.is_empty(), "{seen:#?}");
    assert!(seen.forwarded.is_empty(), "{seen:#?}");
    daemon.stop();
}

/// Goal: SASL PLAIN works (over `sasl_plaintext`), and a wrong PLAIN
/// password is refused with a clear error. Method: a plaintext front with
/// one PLAIN user; the daemon ships 2,000 lines, read back through the
/// front; a second daemon with a wrong password logs the broker's refusal.
#[test]
fn sasl_plain_delivers_and_a_wrong_plain_password_is_refused() {
    const LINES: usize = 2_000;
    let secured = Secured::start(
        "plain",
        2,
        false,
        Some(sasl(Mechanism::Plain, "plain-Pa55")),
    );
    let client: [(&str, &str); 4] = [
        ("security.protocol", "sasl_plaintext"),
        ("sasl.mechanisms", "PLAIN"),
        ("sasl.username", "shipper"),
        ("sasl.password", "plain-Pa55"),
    ];
    let config = write_config(
        secured.dir.path(),
        LINES,
        true,
        &secured.bootstrap(),
        "plain",
        &client,
    );
    wait_for_exit(common::Daemon::start(&config), Duration::from_secs(60));
    let seen = secured.front.seen();
    assert_eq!(seen.tls_handshakes, 0, "{seen:#?}");
    assert!(
        !seen.authenticated.is_empty() && seen.authenticated.iter().all(|user| user == "shipper"),
        "{seen:#?}"
    );
    assert!(
        seen.mechanisms_asked.iter().all(|name| name == "PLAIN"),
        "{seen:#?}"
    );
    assert!(
        seen.forwarded.get(&PRODUCE).copied().unwrap_or(0) >= 1,
        "{seen:#?}"
    );
    let payloads = consume(
        &secured.bootstrap(),
        "plain",
        &client,
        LINES,
        Duration::from_secs(60),
    );
    assert_lines_once(&payloads, LINES);

    let wrong_dir = secured.dir.path().join("wrong");
    std::fs::create_dir(&wrong_dir).expect("mkdir");
    let mut wrong = client.to_vec();
    wrong[3] = ("sasl.password", "not-it");
    let config = write_config(&wrong_dir, 10, false, &secured.bootstrap(), "plain", &wrong);
    let daemon = common::Daemon::start(&config);
    let line = wait_for_log(
        &daemon,
        "SASL authentication error",
        Duration::from_secs(30),
    );
    assert!(line.contains("Invalid username or password"), "{line}");
    assert!(
        secured
            .front
            .seen()
            .refused
            .iter()
            .any(|user| user == "shipper"),
        "{:#?}",
        secured.front.seen()
    );
    daemon.stop();
}
