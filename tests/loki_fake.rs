//! The Loki sink against the fake receiver of `common::fake_loki`, for
//! what the real Loki will not do on demand: 503 for ten seconds, 429 with
//! `Retry-After`, a 400 for one stream that still stores the others,
//! hangs and resets. The first tests check the fake itself, without the
//! daemon.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::fake_loki::{
    self, EntryAdapter, FakeLoki, Outcome, PushRequest, Reply, StreamAdapter, Timestamp,
};

// ---------------------------------------------------------------------
// The fake alone.

/// Entries of one stream: (timestamp, line).
type TimedLines<'a> = &'a [(u64, &'a [u8])];

/// A snappy-compressed `PushRequest` of (selector, entries) pairs.
fn protobuf_body(streams: &[(&str, TimedLines<'_>)]) -> Vec<u8> {
    let request = PushRequest {
        streams: streams
            .iter()
            .map(|(labels, entries)| StreamAdapter {
                labels: labels.to_string(),
                entries: entries
                    .iter()
                    .map(|(timestamp_ns, line)| EntryAdapter {
                        timestamp: Some(Timestamp {
                            seconds: (timestamp_ns / 1_000_000_000) as i64,
                            nanos: (timestamp_ns % 1_000_000_000) as i32,
                        }),
                        line: line.to_vec(),
                    })
                    .collect(),
                hash: 0,
            })
            .collect(),
    };
    let raw = prost::Message::encode_to_vec(&request);
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// A response as a plain client reads it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// One keep-alive POST to the push path on `stream`, and its response.
fn post(
    stream: &mut TcpStream,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: loki\r\nContent-Length: {}\r\n",
        fake_loki::PUSH_PATH,
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while !buffer.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", buffer.len()),
            ));
        }
        buffer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buffer).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, value)| value.parse().expect("length"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn connect(fake: &FakeLoki) -> TcpStream {
    let stream = TcpStream::connect(fake.addr()).expect("connect to the fake");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// Goal: a protobuf body (built with the prost messages) decodes to its
/// entries: escaped selector values, bytes that are not UTF-8, nanosecond
/// timestamps; two requests share one keep-alive connection.
#[test]
fn fake_decodes_protobuf_over_keep_alive() {
    let fake = FakeLoki::start();
    let mut stream = connect(&fake);
    let first = protobuf_body(&[
        (
            r#"{app="web", note="quote \" back \\ newline \n end"}"#,
            &[(1_795_780_800_000_000_001, b"first"), (5_000_000_005, b"")],
        ),
        (
            "{app=\"db\"}",
            &[(1_795_780_801_999_999_999, b"\xff\xfe not utf-8")],
        ),
    ]);
    let response = post(
        &mut stream,
        &[("Content-Type", "application/x-protobuf")],
        &first,
    )
    .expect("first request");
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    // No Content-Type: Loki reads protobuf.
    let second = protobuf_body(&[("{app=\"db\"}", &[(7, b"second")])]);
    let response = post(&mut stream, &[], &second).expect("second request");
    assert_eq!(response.status, 204);

    assert_eq!(fake.connections(), 1, "keep-alive");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].content_type(), Some("application/x-protobuf"));
    assert_eq!(requests[0].path, fake_loki::PUSH_PATH);
    assert_eq!(requests[0].status(), Some(204));
    assert!(requests[0].arrived <= requests[1].arrived);
    let web = labels(&[("app", "web"), ("note", "quote \" back \\ newline \n end")]);
    let db = labels(&[("app", "db")]);
    let got: Vec<(BTreeMap<String, String>, u64, Vec<u8>)> = fake
        .accepted()
        .into_iter()
        .map(|entry| (entry.labels, entry.timestamp_ns, entry.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (web.clone(), 1_795_780_800_000_000_001, b"first".to_vec()),
            (web, 5_000_000_005, Vec::new()),
            (
                db.clone(),
                1_795_780_801_999_999_999,
                b"\xff\xfe not utf-8".to_vec()
            ),
            (db, 7, b"second".to_vec()),
        ]
    );
    assert_eq!(fake.decode_errors(), 0);
}

/// Goal: a gzipped JSON body decodes to its entries, and the headers the
/// sink must send are recorded as sent.
#[test]
fn fake_decodes_gzipped_json_and_records_headers() {
    let fake = FakeLoki::start();
    let json = serde_json::json!({
        "streams": [
            {"stream": {"service": "app", "env": "test"},
             "values": [["1795780800000000001", "one"], ["1795780800000000002", "two \"quoted\""]]},
            {"stream": {"service": "other"}, "values": [["5", "three"]]}
        ]
    });
    let body = gzip(json.to_string().as_bytes());
    let mut stream = connect(&fake);
    let response = post(
        &mut stream,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
            ("X-Scope-OrgID", "tenant-a"),
            ("Authorization", "Basic dTpw"),
        ],
        &body,
    )
    .expect("request");
    assert_eq!(response.status, 204);
    let request = &fake.requests()[0];
    assert_eq!(request.org_id(), Some("tenant-a"));
    assert_eq!(request.authorization(), Some("Basic dTpw"));
    assert_eq!(request.content_type(), Some("application/json"));
    assert_eq!(request.content_encoding(), Some("gzip"));
    assert_eq!(request.body_bytes, body.len());
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), 3);
    assert_eq!(
        accepted[0].labels,
        labels(&[("env", "test"), ("service", "app")])
    );
    assert_eq!(accepted[0].timestamp_ns, 1_795_780_800_000_000_001);
    assert_eq!(accepted[1].text(), "two \"quoted\"");
    assert_eq!(accepted[2].label("service"), Some("other"));
    assert_eq!(accepted[2].timestamp_ns, 5);
}

/// Goal: an undecodable body is answered 400 and recorded as such, without
/// asking the behaviour; chunked bodies are read too.
#[test]
fn fake_refuses_undecodable_bodies_and_reads_chunked_ones() {
    let fake = FakeLoki::with_behaviour(fake_loki::always(Reply::status(200)));
    let mut stream = connect(&fake);
    let response = post(
        &mut stream,
        &[("Content-Type", "application/x-protobuf")],
        b"not snappy at all",
    )
    .expect("request");
    assert_eq!(response.status, 400);
    assert!(response.body.contains("snappy"), "{}", response.body);
    assert_eq!(fake.decode_errors(), 1);

    let body = br#"{"streams":[{"stream":{"a":"b"},"values":[["10","chunked line"]]}]}"#;
    let (one, two) = body.split_at(20);
    let mut chunked = format!(
        "POST {} HTTP/1.1\r\nHost: loki\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        fake_loki::PUSH_PATH
    )
    .into_bytes();
    for part in [one, two] {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&chunked).expect("chunked request");
    let response = read_response(&mut stream).expect("response");
    assert_eq!(response.status, 200);
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].text(), "chunked line");
}

/// Goal: scripted statuses and headers are sent as scripted, the behaviour
/// can be changed while the fake runs, and only 2xx answers count as
/// accepted.
#[test]
fn fake_scripts_statuses_and_counts_only_accepted_entries() {
    let fake = FakeLoki::with_behaviour(fake_loki::first_requests(
        2,
        Reply::status(503).body("unavailable"),
        Reply::status(429).header("Retry-After", "2"),
    ));
    let mut stream = connect(&fake);
    let body = |line: &[u8]| protobuf_body(&[("{a=\"b\"}", &[(1, line)])]);
    let statuses: Vec<u16> = (0..3)
        .map(|index| {
            let line = format!("line {index}");
            let response = post(&mut stream, &[], &body(line.as_bytes())).expect("request");
            if response.status == 429 {
                assert_eq!(response.header("Retry-After"), Some("2"));
            }
            if response.status == 503 {
                assert_eq!(response.body, "unavailable");
            }
            response.status
        })
        .collect();
    assert_eq!(statuses, [503, 503, 429]);
    assert_eq!(fake.accepted_count(), 0);

    fake.reply_always(Reply::status(204));
    let response = post(&mut stream, &[], &body(b"stored")).expect("request");
    assert_eq!(response.status, 204);
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].text(), "stored");
    let recorded: Vec<Option<u16>> = fake.requests().iter().map(|r| r.status()).collect();
    assert_eq!(recorded, [Some(503), Some(503), Some(429), Some(204)]);
    assert_eq!(fake.connections(), 1);
}

/// Goal: `reject_stream` answers a Loki-like 400 naming the bad stream
/// and `total ignored: N out of M`, and counts the other entries of that
/// request as stored; a request without the bad stream gets 204.
#[test]
fn fake_rejects_one_stream_and_stores_the_rest() {
    let fake = FakeLoki::with_behaviour(fake_loki::reject_stream("service", "bad"));
    let mut stream = connect(&fake);
    let mixed = protobuf_body(&[
        (
            "{service=\"good\"}",
            &[
                (1_795_780_800_000_000_000, b"g1"),
                (1_795_780_800_000_000_001, b"g2"),
            ],
        ),
        (
            "{service=\"bad\"}",
            &[
                (1_795_780_800_000_000_000, b"b1"),
                (1_795_780_800_500_000_000, b"b2"),
            ],
        ),
    ]);
    let response = post(&mut stream, &[], &mixed).expect("request");
    assert_eq!(response.status, 400);
    assert_eq!(
        response.body,
        "entry with timestamp 2026-11-27 12:00:00.5 +0000 UTC ignored, reason: 'entry for stream '{service=\"bad\"}' has timestamp too new: 2026-11-27T12:00:00Z' for stream: {service=\"bad\"},\ntotal ignored: 2 out of 4"
    );
    let good_only = protobuf_body(&[("{service=\"good\"}", &[(1_795_780_800_000_000_002, b"g3")])]);
    assert_eq!(
        post(&mut stream, &[], &good_only).expect("request").status,
        204
    );
    let lines: Vec<String> = fake.accepted().iter().map(|entry| entry.text()).collect();
    assert_eq!(lines, ["g1", "g2", "g3"]);
    let requests = fake.requests();
    assert_eq!(requests[0].stored, [0, 1]);
    assert_eq!(requests[0].status(), Some(400));
}

/// Goal: `Reset` closes the connection with no answer, and `Hang` leaves
/// the client waiting until it gives up (its close is recorded) or the
/// hang's limit passes; a new connection is then served normally.
#[test]
fn fake_resets_and_hangs() {
    let fake = FakeLoki::with_behaviour(fake_loki::always(Reply::Reset));
    let body = protobuf_body(&[("{a=\"b\"}", &[(1, b"x")])]);
    let mut stream = connect(&fake);
    let error = post(&mut stream, &[], &body).expect_err("no answer after a reset");
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ),
        "{error:?}"
    );
    assert_eq!(fake.requests()[0].outcome, Outcome::Reset);

    fake.reply_always(Reply::Hang(None));
    let mut stream = connect(&fake);
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let sent = Instant::now();
    let error = post(&mut stream, &[], &body).expect_err("no answer while hanging");
    assert!(
        matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{error:?}"
    );
    assert!(sent.elapsed() >= Duration::from_millis(290));
    drop(stream);
    common::wait_until(
        "the fake sees the client close",
        Duration::from_secs(5),
        || fake.requests()[1].client_closed.is_some(),
    );
    let hung = &fake.requests()[1];
    assert_eq!(hung.outcome, Outcome::Hung);
    assert_eq!(hung.answered, None);
    assert_eq!(fake.accepted_count(), 0);

    // A hang with a limit ends by closing the connection, unanswered.
    fake.reply_always(Reply::Hang(Some(Duration::from_millis(300))));
    let mut stream = connect(&fake);
    let sent = Instant::now();
    let error = post(&mut stream, &[], &body).expect_err("closed unanswered");
    assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error:?}");
    assert!(sent.elapsed() >= Duration::from_millis(290));

    fake.reply_always(Reply::status(204));
    let mut stream = connect(&fake);
    assert_eq!(post(&mut stream, &[], &body).expect("request").status, 204);
    assert_eq!(fake.accepted_count(), 1);
}

/// Goal: dropping the fake ends a hang that has no limit, at once.
#[test]
fn fake_stops_on_drop_while_hanging() {
    let fake = FakeLoki::with_behaviour(fake_loki::always(Reply::Hang(None)));
    let mut stream = connect(&fake);
    let body = protobuf_body(&[("{a=\"b\"}", &[(1, b"x")])]);
    let client = std::thread::spawn(move || post(&mut stream, &[], &body).map(|r| r.status));
    common::wait_until("the request arrives", Duration::from_secs(5), || {
        fake.request_count() == 1
    });
    let dropping = Instant::now();
    drop(fake);
    assert!(
        dropping.elapsed() < Duration::from_secs(2),
        "{:?}",
        dropping.elapsed()
    );
    let result = client.join().expect("client thread");
    assert!(result.is_err(), "{result:?}");
}

/// Goal: the real client of the sink (ureq 3) works with the fake: its
/// connection is reused, statuses and `Retry-After` come through, a hang
/// ends in its timeout and a reset in a transport error. And a body from
/// the sink's own encoder decodes to its entries.
#[test]
fn fake_serves_ureq_and_decodes_the_sink_encoder() {
    use log_capturer::sink::loki::request::{PushEncoder, PushEntry, StreamText};
    let fake = FakeLoki::with_behaviour(fake_loki::first_requests(
        1,
        Reply::status(429).header("Retry-After", "2"),
        Reply::status(204),
    ));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .into();
    let streams_labels = [vec![("app", "a"), ("host", "h\"1")], vec![("app", "b")]];
    let streams: Vec<StreamText> = streams_labels
        .iter()
        .map(|pairs| StreamText::new(pairs))
        .collect();
    let mut encoder = PushEncoder::new();
    let send = |entries: &mut Vec<PushEntry<'_>>,
                encoder: &mut PushEncoder,
                json: bool|
     -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        if json {
            let body = encoder.json(&streams, entries).to_vec();
            agent
                .post(&fake.url())
                .header("Content-Type", "application/json")
                .send(&body)
        } else {
            let body = encoder
                .protobuf(&streams, entries)
                .expect("snappy")
                .to_vec();
            agent
                .post(&fake.url())
                .header("Content-Type", "application/x-protobuf")
                .send(&body)
        }
    };
    let entry = |stream, timestamp_ns, line, sequence| PushEntry {
        stream,
        timestamp_ns,
        line,
        sequence,
    };
    let mut entries = vec![
        entry(1, 30, b"b late".as_slice(), 0),
        entry(0, 20, b"a second", 1),
        entry(0, 10, b"a first", 2),
    ];
    let response = send(&mut entries, &mut encoder, false).expect("first");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let response = send(&mut entries, &mut encoder, false).expect("second");
    assert_eq!(response.status().as_u16(), 204);
    let response = send(&mut entries, &mut encoder, true).expect("third");
    assert_eq!(response.status().as_u16(), 204);
    assert_eq!(fake.connections(), 1, "ureq reuses its connection");
    let accepted = fake.accepted();
    let expected = [
        (labels(&[("app", "a"), ("host", "h\"1")]), 10, "a first"),
        (labels(&[("app", "a"), ("host", "h\"1")]), 20, "a second"),
        (labels(&[("app", "b")]), 30, "b late"),
    ];
    assert_eq!(accepted.len(), 6);
    for (half, name) in accepted.chunks(3).zip(["protobuf", "json"]) {
        let got: Vec<_> = half
            .iter()
            .map(|entry| (entry.labels.clone(), entry.timestamp_ns, entry.text()))
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|(labels, time, line)| (labels.clone(), *time, line.to_string()))
            .collect();
        assert_eq!(got, want, "{name}");
    }

    fake.reply_always(Reply::Hang(None));
    let started = Instant::now();
    let error = send(&mut entries, &mut encoder, false).expect_err("hang");
    assert!(matches!(error, ureq::Error::Timeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    fake.reply_always(Reply::Reset);
    let error = send(&mut entries, &mut encoder, false).expect_err("reset");
    assert!(
        matches!(error, ureq::Error::Io(_) | ureq::Error::Protocol(_)),
        "{error:?}"
    );
    fake.reply_always(Reply::status(204));
    let response = send(&mut entries, &mut encoder, false).expect("after the reset");
    assert_eq!(response.status().as_u16(), 204);
}

// ---------------------------------------------------------------------
// The daemon's Loki sink against the fake. These need the sink
// (`type = "loki"`); until it is built the daemon refuses the config.

/// The daemon tests run one at a time: each runs a daemon on a 2-core
/// machine and some measure time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Retries that do not give up within a test and a DLQ replayed soon
/// after recovery, so that every line arrives whichever path the sink
/// gives it.
const RETRY_AND_DLQ: &str = r#"
[retry]
base_delay_ms = 100
max_delay_ms = 1000
max_attempts = 1000
max_batches = 64

[dlq]
auto_replay = true
replay_after_ms = 1000
replay_rate = 100000
"#;

/// A `[sinks.ID]` Loki table for `url` (lines sent as they are, the
/// breaker probing every 500 ms) plus `extra` keys.
fn loki_sink_table(id: &str, url: &str, extra: &str) -> String {
    format!(
        "[sinks.{id}]\ntype = \"loki\"\nurl = \"{url}\"\nencoding = \"raw\"\nprobe_interval_ms = 500\n{extra}\n"
    )
}

/// A test directory with `input.log` (created empty) and the config path.
struct Setup {
    dir: tempfile::TempDir,
    input: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("input.log");
        std::fs::write(&input, "").expect("create input");
        let config = dir.path().join("config.toml");
        Setup { dir, input, config }
    }

    /// Writes the config: the `app` file source, then `rest` (sinks and
    /// any further tables).
    fn write_config(&self, rest: &str) {
        let text = common::file_source_config(&self.input, "", rest);
        std::fs::write(&self.config, text).expect("write config");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start(&self) -> common::Daemon {
        common::Daemon::start(&self.config)
    }
}

/// `log_capturer_loki_error_type_total{sink=SINK,error_type=KIND}`, 0 when
/// absent.
fn loki_errors(daemon: &common::Daemon, sink: &str, kind: &str) -> f64 {
    let (status, body) = daemon.get("/metrics");
    assert_eq!(status, 200);
    common::sample(
        &body,
        &format!("log_capturer_loki_error_type_total{{sink=\"{sink}\",error_type=\"{kind}\"}}"),
    )
    .unwrap_or(0.0)
}

/// The sequence number of a numbered line (`seq=000000000123 ...`).
fn sequence_of(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    text.strip_prefix("seq=")?.get(..12)?.parse().ok()
}

/// How often each sequence number of the stream `service` was accepted.
fn sequence_counts(fake: &FakeLoki, service: &str) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for entry in fake.accepted() {
        if entry.label("service") == Some(service) {
            let number = sequence_of(&entry.line)
                .unwrap_or_else(|| panic!("not a numbered line: {:?}", entry.text()));
            *counts.entry(number).or_insert(0) += 1;
        }
    }
    counts
}

/// What the fake saw, for failure messages: requests by outcome, entries
/// accepted by stream, the first decode error.
fn summary(fake: &FakeLoki) -> String {
    let requests = fake.requests();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for request in &requests {
        *outcomes
            .entry(format!("{:?}", request.outcome))
            .or_insert(0) += 1;
    }
    let mut streams: BTreeMap<String, usize> = BTreeMap::new();
    for entry in requests.iter().flat_map(|request| request.stored_entries()) {
        *streams
            .entry(fake_loki::selector(&entry.labels))
            .or_insert(0) += 1;
    }
    let decode_error = requests
        .iter()
        .find_map(|request| request.decode_error.clone());
    format!(
        "{} requests {outcomes:?}, accepted by stream {streams:?}, first decode error {decode_error:?}",
        requests.len()
    )
}

/// Waits until every number `0..count` of stream `service` is accepted.
fn wait_all_accepted(fake: &FakeLoki, service: &str, count: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        if fake.accepted_count() as u64 >= count
            && sequence_counts(fake, service).len() as u64 >= count
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{count} lines of {service} not all accepted in {timeout:?}: {} distinct; {}",
            sequence_counts(fake, service).len(),
            summary(fake)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that numbers `0..count` of `service` were each accepted exactly
/// once and nothing else was.
fn assert_exactly_once(fake: &FakeLoki, service: &str, count: u64) {
    let counts = sequence_counts(fake, service);
    let missing: Vec<u64> = (0..count).filter(|n| !counts.contains_key(n)).collect();
    let repeated: Vec<(u64, usize)> = counts
        .iter()
        .filter(|(_, times)| **times != 1)
        .map(|(n, times)| (*n, *times))
        .collect();
    let extra: Vec<u64> = counts.keys().copied().filter(|n| *n >= count).collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && extra.is_empty(),
        "{} missing (first {:?}), {} accepted more than once (first {:?}), {} unexpected (first {:?})",
        missing.len(),
        missing.first(),
        repeated.len(),
        repeated.first(),
        extra.len(),
        extra.first()
    );
    assert_eq!(fake.decode_errors(), 0, "every request decodes");
}

/// a. Goal: a Loki answering 503 for 10 s loses nothing. Method: 20,000
/// numbered lines; the fake answers 503 for 10 s after the first request,
/// then 204. Every number must be accepted exactly once, and the failures
/// counted as `server_error`.
#[test]
fn server_errors_for_ten_seconds_lose_nothing() {
    let _one = one_at_a_time();
    const LINES: u64 = 20_000;
    let fake = FakeLoki::with_behaviour(fake_loki::for_period(
        Duration::from_secs(10),
        Reply::status(503).body("Ingester not ready"),
        Reply::status(204),
    ));
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n{RETRY_AND_DLQ}",
        loki_sink_table("loki", &fake.url(), "labels = [\"source_id\", \"service\"]")
    ));
    common::append_numbered_lines(&setup.input, 0, LINES);
    let daemon = setup.start();
    wait_all_accepted(&fake, "app", LINES, Duration::from_secs(45));
    assert_exactly_once(&fake, "app", LINES);
    let failed = fake
        .requests()
        .iter()
        .filter(|request| request.status() == Some(503))
        .count();
    assert!(failed >= 2, "the outage was seen: {failed} answers 503");
    assert!(
        loki_errors(&daemon, "loki", "server_error") > 0.0,
        "server_error counted"
    );
    daemon.stop();
}

/// b. Goal: `Retry-After` is obeyed. Method: 5,000 lines; the first
/// request is answered 429 with `Retry-After: 2`, every other 204. No
/// request may arrive less than 2 s (less 50 ms) after that answer; every
/// number is accepted exactly once; `rate_limited` is counted.
#[test]
fn retry_after_of_a_429_is_obeyed() {
    let _one = one_at_a_time();
    const LINES: u64 = 5_000;
    let fake = FakeLoki::with_behaviour(fake_loki::first_requests(
        1,
        Reply::status(429)
            .header("Retry-After", "2")
            .body("Ingestion rate limit exceeded"),
        Reply::status(204),
    ));
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n{RETRY_AND_DLQ}",
        loki_sink_table("loki", &fake.url(), "labels = [\"source_id\", \"service\"]")
    ));
    common::append_numbered_lines(&setup.input, 0, LINES);
    let daemon = setup.start();
    wait_all_accepted(&fake, "app", LINES, Duration::from_secs(30));
    assert_exactly_once(&fake, "app", LINES);
    let requests = fake.requests();
    let limited = &requests[0];
    assert_eq!(limited.status(), Some(429));
    let answered = limited.answered.expect("the 429 was sent");
    let after: Vec<Duration> = requests[1..]
        .iter()
        .filter(|request| request.arrived > answered)
        .map(|request| request.arrived - answered)
        .collect();
    assert!(!after.is_empty(), "requests after the 429");
    let earliest = after.iter().min().expect("one");
    assert!(
        *earliest >= Duration::from_millis(1950),
        "a request came {earliest:?} after the 429 with Retry-After: 2"
    );
    assert!(
        loki_errors(&daemon, "loki", "rate_limited") > 0.0,
        "rate_limited counted"
    );
    daemon.stop();
}

/// The rejected DLQ records of `sink` (`dlq dump --json` of the records
/// marked rejected), by the library the command uses.
fn rejected_records(dlq_dir: &Path, sink: &str) -> Vec<serde_json::Value> {
    let mut dump = Vec::new();
    log_capturer::dlq::inspect::write_dump(&mut dump, dlq_dir, Some(sink), true).expect("dump");
    String::from_utf8(dump)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON record"))
        .filter(|record| record["rejected"] == serde_json::Value::Bool(true))
        .collect()
}

/// c. Goal: a stream Loki refuses as too new ends in the sink's
/// `rejected/` area, stays there, and costs the other stream nothing.
/// Method: 5,000 lines of service `app` and 500 of service `bad` (a second
/// file source). The fake answers 400 (Loki's "timestamp too new" body,
/// `total ignored: N out of M`) to any request holding a `bad` entry, and
/// stores that request's other entries, as Loki does; other requests get
/// 204. Every `app` number must be accepted (re-sent copies are counted,
/// not failed); every `bad` number must be in `rejected/` exactly once and
/// no `app` line there; `dlq list` shows `loki/rejected`; the rejected
/// metrics add up to 500; `too_new` is counted; and for 3 s after the
/// last rejection (auto replay after 1 s is on) no request carries a `bad`
/// entry again.
#[test]
fn a_stream_refused_as_too_new_is_rejected_and_not_replayed() {
    let _one = one_at_a_time();
    const GOOD: u64 = 5_000;
    const BAD: u64 = 500;
    let fake = FakeLoki::with_behaviour(fake_loki::reject_stream("service", "bad"));
    let setup = Setup::new();
    let bad_input = setup.dir.path().join("bad.log");
    std::fs::write(&bad_input, "").expect("create bad input");
    setup.write_config(&format!(
        "[sources.bad]\ntype = \"file\"\npaths = [\"{}\"]\nlabels = {{ service = \"bad\" }}\n\n{}\n{RETRY_AND_DLQ}",
        bad_input.display(),
        loki_sink_table("loki", &fake.url(), "labels = [\"source_id\", \"service\"]")
    ));
    common::append_numbered_lines(&setup.input, 0, GOOD);
    common::append_numbered_lines(&bad_input, 0, BAD);
    let daemon = setup.start();
    let dlq_dir = setup.data_dir().join("dlq");

    wait_all_accepted(&fake, "app", GOOD, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    let rejected = loop {
        let rejected = rejected_records(&dlq_dir, "loki");
        if rejected.len() as u64 >= BAD {
            break rejected;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {BAD} bad lines rejected in 20 s; {}",
            rejected.len(),
            summary(&fake)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let all_rejected = Instant::now();

    let mut bad_numbers = BTreeMap::new();
    for record in &rejected {
        assert_eq!(record["labels"]["service"], "bad", "{record}");
        let message = record["message"].as_str().expect("message");
        let number = sequence_of(message.as_bytes()).expect("numbered line");
        *bad_numbers.entry(number).or_insert(0) += 1;
    }
    assert_eq!(
        bad_numbers.keys().copied().collect::<Vec<u64>>(),
        (0..BAD).collect::<Vec<u64>>(),
        "every bad line in rejected/"
    );
    assert!(
        bad_numbers.values().all(|times| *times == 1),
        "a bad line rejected twice"
    );

    let listing = std::process::Command::new(common::binary())
        .args(["dlq", "list", "--config"])
        .arg(&setup.config)
        .output()
        .expect("dlq list");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("loki/rejected"), "{listing}");

    // Nothing carries a bad entry again, although auto replay is on.
    std::thread::sleep(Duration::from_secs(3));
    let resent = fake
        .requests()
        .iter()
        .filter(|request| request.arrived > all_rejected)
        .filter(|request| {
            request
                .entries
                .iter()
                .any(|entry| entry.label("service") == Some("bad"))
        })
        .count();
    assert_eq!(resent, 0, "requests carrying rejected entries again");
    assert_eq!(
        rejected_records(&dlq_dir, "loki").len() as u64,
        BAD,
        "rejected/ is kept"
    );

    let counts = sequence_counts(&fake, "app");
    assert_eq!(
        counts.keys().copied().collect::<Vec<u64>>(),
        (0..GOOD).collect::<Vec<u64>>(),
        "every good line accepted"
    );
    let duplicates: usize = counts.values().map(|times| times - 1).sum();
    eprintln!("good lines accepted again by re-sent requests: {duplicates}");
    assert_eq!(sequence_counts(&fake, "bad").len(), 0, "no bad line stored");

    let (_, metrics) = daemon.get("/metrics");
    let rejected_total: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("log_capturer_dlq_rejected_total{sink=\"loki\","))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(rejected_total, BAD as f64, "rejected entries counted");
    assert!(
        loki_errors(&daemon, "loki", "too_new") > 0.0,
        "too_new counted"
    );
    assert_eq!(fake.decode_errors(), 0);
    daemon.stop();
}

/// d. Goal: a Loki that stops answering costs time, not lines. Method:
/// 5,000 lines, `request_timeout_ms = 1000`; the fake reads requests and
/// never answers for 5 s after the first one, then answers 204. Every
/// number must be accepted exactly once, `timeout` counted, and the
/// client must have given up on each hung request within 3 s.
#[test]
fn a_hanging_loki_times_out_and_loses_nothing() {
    let _one = one_at_a_time();
    const LINES: u64 = 5_000;
    let fake = FakeLoki::with_behaviour(fake_loki::for_period(
        Duration::from_secs(5),
        Reply::Hang(None),
        Reply::status(204),
    ));
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n{RETRY_AND_DLQ}",
        loki_sink_table(
            "loki",
            &fake.url(),
            "labels = [\"source_id\", \"service\"]\nrequest_timeout_ms = 1000"
        )
    ));
    common::append_numbered_lines(&setup.input, 0, LINES);
    let daemon = setup.start();
    wait_all_accepted(&fake, "app", LINES, Duration::from_secs(45));
    assert_exactly_once(&fake, "app", LINES);
    let requests = fake.requests();
    let hung: Vec<_> = requests
        .iter()
        .filter(|request| request.outcome == Outcome::Hung)
        .collect();
    assert!(!hung.is_empty(), "a request hung");
    for request in &hung {
        let closed = request
            .client_closed
            .unwrap_or_else(|| panic!("request {} still open", request.index));
        let waited = closed - request.arrived;
        assert!(
            waited < Duration::from_secs(3),
            "request {} waited {waited:?} with request_timeout_ms = 1000",
            request.index
        );
    }
    assert!(
        loki_errors(&daemon, "loki", "timeout") > 0.0,
        "timeout counted"
    );
    daemon.stop();
}

/// e. Goal: connections reset by Loki cost nothing. Method: 5,000 lines;
/// the fake resets every connection right after reading its request for
/// 3 s after the first one, then answers 204. Every number accepted
/// exactly once, `transport` counted.
#[test]
fn reset_connections_lose_nothing() {
    let _one = one_at_a_time();
    const LINES: u64 = 5_000;
    let fake = FakeLoki::with_behaviour(fake_loki::for_period(
        Duration::from_secs(3),
        Reply::Reset,
        Reply::status(204),
    ));
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n{RETRY_AND_DLQ}",
        loki_sink_table("loki", &fake.url(), "labels = [\"source_id\", \"service\"]")
    ));
    common::append_numbered_lines(&setup.input, 0, LINES);
    let daemon = setup.start();
    wait_all_accepted(&fake, "app", LINES, Duration::from_secs(40));
    assert_exactly_once(&fake, "app", LINES);
    let resets = fake
        .requests()
        .iter()
        .filter(|request| request.outcome == Outcome::Reset)
        .count();
    assert!(resets >= 1, "a connection was reset");
    assert!(
        loki_errors(&daemon, "loki", "transport") > 0.0,
        "transport counted"
    );
    daemon.stop();
}

/// f. Goal: tenant and basic auth are sent, and the JSON + gzip format
/// carries the same entries as protobuf. Method: two Loki sinks over the
/// same 3,000 lines, `loki` (protobuf) and `loki_json` (JSON, gzip), each
/// to its own fake, both with `tenant_id`, `basic_auth`, `labels =
/// ["source_id", "service"]` and `static_labels = { env = "test" }`.
/// Every request must carry `X-Scope-OrgID: tenant-a`, `Authorization:
/// Basic dTpw` (base64 of `u:p`) and its format's `Content-Type` (and
/// `Content-Encoding: gzip` for JSON); each fake must get every number
/// once with the stream labels {env, service, source_id}; and the two
/// fakes' accepted entries (labels, timestamp, line) must be equal.
#[test]
fn tenant_and_basic_auth_are_sent_and_json_gzip_matches_protobuf() {
    let _one = one_at_a_time();
    const LINES: u64 = 3_000;
    let protobuf = FakeLoki::start();
    let json = FakeLoki::start();
    let common_keys = "tenant_id = \"tenant-a\"\nbasic_auth = { user = \"u\", password = \"p\" }\nlabels = [\"source_id\", \"service\"]\nstatic_labels = { env = \"test\" }";
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n{}\n{RETRY_AND_DLQ}",
        loki_sink_table(
            "loki",
            &protobuf.url(),
            &format!("{common_keys}\nformat = \"protobuf\"\ncompression = \"none\"")
        ),
        loki_sink_table(
            "loki_json",
            &json.url(),
            &format!("{common_keys}\nformat = \"json\"\ncompression = \"gzip\"")
        ),
    ));
    common::append_numbered_lines(&setup.input, 0, LINES);
    let daemon = setup.start();
    wait_all_accepted(&protobuf, "app", LINES, Duration::from_secs(30));
    wait_all_accepted(&json, "app", LINES, Duration::from_secs(30));
    let expected_labels = labels(&[("env", "test"), ("service", "app"), ("source_id", "app")]);
    for (fake, name, content_type, encoding) in [
        (&protobuf, "protobuf", "application/x-protobuf", None),
        (&json, "json", "application/json", Some("gzip")),
    ] {
        assert_exactly_once(fake, "app", LINES);
        for request in fake.requests() {
            assert_eq!(request.org_id(), Some("tenant-a"), "{name}");
            assert_eq!(request.authorization(), Some("Basic dTpw"), "{name}");
            let sent_type = request.content_type().map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            });
            assert_eq!(sent_type.as_deref(), Some(content_type), "{name}");
            let sent_encoding = request
                .content_encoding()
                .filter(|value| *value != "identity");
            assert_eq!(sent_encoding, encoding, "{name}");
        }
        for entry in fake.accepted() {
            assert_eq!(entry.labels, expected_labels, "{name}");
        }
    }
    let mut from_protobuf = protobuf.accepted();
    let mut from_json = json.accepted();
    from_protobuf.sort();
    from_json.sort();
    assert_eq!(from_protobuf.len(), from_json.len());
    let differing = from_protobuf
        .iter()
        .zip(&from_json)
        .find(|(one, other)| one != other);
    assert!(
        differing.is_none(),
        "protobuf and JSON differ, first: {differing:?}"
    );
    daemon.stop();
}

/// g. Goal: identical lines are not collapsed by Loki's duplicate check.
/// Method: 10,000 copies of one line through a sink with the default
/// labels. Exactly 10,000 entries must be accepted, all with that line;
/// within each request the timestamps of a stream strictly increase; no
/// (stream, timestamp, line) appears twice among accepted entries. The
/// stream labels hold `source_id` and not the file path (the defaults are
/// source_id, host, app, severity where present).
#[test]
fn identical_lines_arrive_as_distinct_entries() {
    let _one = one_at_a_time();
    const LINES: usize = 10_000;
    const LINE: &str = "the same line, again and again";
    let fake = FakeLoki::start();
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n{RETRY_AND_DLQ}",
        loki_sink_table("loki", &fake.url(), "")
    ));
    std::fs::write(&setup.input, format!("{LINE}\n").repeat(LINES)).expect("write lines");
    let daemon = setup.start();
    common::wait_until("10,000 entries accepted", Duration::from_secs(30), || {
        fake.accepted_count() >= LINES
    });
    // Anything more would arrive at once after the last batch.
    std::thread::sleep(Duration::from_millis(500));
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), LINES);
    assert!(accepted.iter().all(|entry| entry.line == LINE.as_bytes()));
    for entry in &accepted {
        assert_eq!(entry.label("source_id"), Some("app"), "{:?}", entry.labels);
        assert_eq!(entry.label("file"), None, "{:?}", entry.labels);
    }
    for request in fake.requests() {
        let mut last: BTreeMap<&BTreeMap<String, String>, u64> = BTreeMap::new();
        for entry in &request.entries {
            if let Some(previous) = last.insert(&entry.labels, entry.timestamp_ns) {
                assert!(
                    entry.timestamp_ns > previous,
                    "request {}: timestamp {} after {previous} in stream {:?}",
                    request.index,
                    entry.timestamp_ns,
                    entry.labels
                );
            }
        }
    }
    let distinct: BTreeSet<_> = accepted
        .iter()
        .map(|entry| (&entry.labels, entry.timestamp_ns, &entry.line))
        .collect();
    assert_eq!(distinct.len(), LINES, "(stream, timestamp, line) repeated");
    assert_eq!(fake.decode_errors(), 0);
    daemon.stop();
}

/// Goal: DLQ records that share one time (a read stored at a shutdown,
/// before the sink gave its lines times of their own) are replayed as
/// distinct entries, so Loki drops none as a duplicate. Method: 500
/// identical records with one time written into the sink's DLQ, then the
/// daemon started with automatic replay into the fake.
#[test]
fn replayed_records_sharing_a_time_arrive_as_distinct_entries() {
    use log_capturer::dlq::record::{Reason, Record};
    use log_capturer::dlq::{DlqPolicy, DlqSettings, DlqWriter};
    let _one = one_at_a_time();
    const RECORDS: usize = 500;
    let fake = FakeLoki::start();
    let setup = Setup::new();
    setup.write_config(&format!(
        "{}\n{RETRY_AND_DLQ}",
        loki_sink_table("loki", &fake.url(), "")
    ));
    let settings = DlqSettings {
        dir: setup.data_dir().join("dlq"),
        segment_bytes: 1 << 20,
        max_bytes: 1 << 30,
        policy: DlqPolicy::DropOldest,
    };
    let mut writer = DlqWriter::open("loki", &settings).expect("open the DLQ");
    let read_at_ns = log_capturer::clock::now_ns();
    for _ in 0..RECORDS {
        writer
            .append(&Record {
                timestamp_ns: read_at_ns,
                attempts: 1,
                reason: Reason::Shutdown,
                terminated: true,
                sink: "loki",
                labels: vec![("service", "app"), ("source_id", "app")],
                message: b"stored at shutdown",
            })
            .expect("append");
    }
    drop(writer);
    let daemon = setup.start();
    common::wait_until("every record replayed", Duration::from_secs(30), || {
        fake.accepted_count() >= RECORDS
    });
    std::thread::sleep(Duration::from_millis(500));
    let accepted = fake.accepted();
    assert_eq!(accepted.len(), RECORDS, "{}", summary(&fake));
    let distinct: BTreeSet<_> = accepted
        .iter()
        .map(|entry| (&entry.labels, entry.timestamp_ns, &entry.line))
        .collect();
    assert_eq!(
        distinct.len(),
        RECORDS,
        "(stream, timestamp, line) repeated"
    );
    let earliest = accepted.iter().map(|entry| entry.timestamp_ns).min();
    assert_eq!(earliest, Some(read_at_ns), "the stored time is kept");
    daemon.stop();
}

/// Goal: an entry older than the last one of its stream is sent after it,
/// and when that moves it by a second or more it is counted
/// (`log_capturer_timestamp_raised_total`). Method: a syslog TCP source
/// whose first message is dated 5 minutes ahead and the second now, one
/// stream for both.
#[test]
fn entries_moved_past_a_skewed_one_are_counted() {
    let _one = one_at_a_time();
    let fake = FakeLoki::start();
    let setup = Setup::new();
    let port = common::free_port();
    setup.write_config(&format!(
        "[sources.sys]\ntype = \"syslog\"\ntcp = \"127.0.0.1:{port}\"\n\n{}\n{RETRY_AND_DLQ}",
        loki_sink_table("loki", &fake.url(), "labels = [\"source_id\"]")
    ));
    let daemon = setup.start();
    let now = (log_capturer::clock::now_ns() / 1_000_000_000) as i64;
    let stamp = |unix: i64| {
        jiff::Timestamp::from_second(unix)
            .expect("time")
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let mut frames = String::new();
    for (unix, text) in [(now + 300, "ahead"), (now, "on time")] {
        let message = format!("<14>1 {} web app - - - {text}", stamp(unix));
        frames.push_str(&format!("{} {message}", message.len()));
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.write_all(frames.as_bytes()).expect("send");
    drop(stream);
    common::wait_until("both messages accepted", Duration::from_secs(20), || {
        fake.accepted_count() >= 2
    });
    let accepted = fake.accepted();
    let time_of = |text: &str| {
        accepted
            .iter()
            .find(|entry| entry.line.ends_with(text.as_bytes()))
            .map(|entry| entry.timestamp_ns)
            .unwrap_or_else(|| panic!("{text} not accepted: {}", summary(&fake)))
    };
    assert_eq!(time_of("ahead"), (now as u64 + 300) * 1_000_000_000);
    assert_eq!(time_of("on time"), time_of("ahead") + 1, "sent after it");
    let (_, body) = daemon.get("/metrics");
    assert_eq!(
        common::sample(&body, "log_capturer_timestamp_raised_total{sink=\"loki\"}"),
        Some(1.0)
    );
    daemon.stop();
}
