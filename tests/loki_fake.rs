//! The fake Loki receiver of `common::fake_loki`, checked without the
//! daemon.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
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
    use log_capturer::sink::loki::request::{PushEncoder, PushEntry};
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
    let streams: Vec<&[(&str, &str)]> = streams_labels.iter().map(Vec::as_slice).collect();
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
