//! The decoder against Docker's own lines, against serde_json on escapes,
//! and on bad input at every kind of fault.

use super::*;

fn decode(text: &str) -> Result<(Vec<u8>, JsonFileLine), DecodeError> {
    let mut bytes = text.as_bytes().to_vec();
    let line = decode_in_place(&mut bytes)?;
    let log = bytes[line.log.clone()].to_vec();
    Ok((log, line))
}

fn nanoseconds(text: &str) -> u64 {
    let timestamp: jiff::Timestamp = text.parse().expect("a valid time");
    u64::try_from(timestamp.as_nanosecond()).expect("after 1970")
}

#[test]
fn docker_line_decodes() {
    // Goal: a line as dockerd 20.10 writes it gives its text without the
    // newline, its stream and its time to the nanosecond.
    let (log, line) =
        decode(r#"{"log":"line 0\n","stream":"stdout","time":"2026-11-27T12:54:03.032065827Z"}"#)
            .expect("decodes");
    assert_eq!(log, b"line 0");
    assert_eq!(line.stream, LogStream::Stdout);
    assert!(!line.partial);
    assert_eq!(line.time_ns, nanoseconds("2026-11-27T12:54:03.032065827Z"));
}

#[test]
fn members_in_any_order_and_attrs_skipped() {
    // Goal: `--log-opt labels=…` adds an `attrs` object; order is not fixed.
    let (log, line) = decode(
        r#"{"time":"2026-01-01T00:00:00Z","attrs":{"tag":"web","n":[1,-2.5e3,true,null,{}]},"stream":"stderr","log":"x\n"}"#,
    )
    .expect("decodes");
    assert_eq!(log, b"x");
    assert_eq!(line.stream, LogStream::Stderr);
    assert_eq!(line.time_ns, nanoseconds("2026-01-01T00:00:00Z"));
}

#[test]
fn partial_line_has_no_newline() {
    // Goal: Docker's 16 KiB pieces (no trailing newline) are marked partial.
    let (log, line) = decode(r#"{"log":"abc","stream":"stdout","time":"2026-01-01T00:00:00.5Z"}"#)
        .expect("decodes");
    assert_eq!(log, b"abc");
    assert!(line.partial);
    assert_eq!(line.time_ns, nanoseconds("2026-01-01T00:00:00.5Z"));
    let (log, line) =
        decode(r#"{"log":"","stream":"stdout","time":"2026-01-01T00:00:00Z"}"#).expect("decodes");
    assert!(log.is_empty());
    assert!(line.partial);
}

#[test]
fn escapes_match_serde_json() {
    // Goal: every escape Go's encoder writes decodes as serde_json decodes
    // it. Method: encode awkward texts with serde_json, decode both ways.
    let texts = [
        "tab\there \"quoted\" back\\slash /slash\r\u{8}\u{c}",
        "<html> & \u{2028} \u{2029}",
        "ünïcödé 日本語 \u{1F600} emoji",
        "\u{0}\u{1}\u{1f} controls",
        "",
    ];
    for text in texts {
        let encoded = serde_json::to_string(&format!("{text}\n")).expect("encodes");
        let line =
            format!(r#"{{"log":{encoded},"stream":"stdout","time":"2026-01-01T00:00:00Z"}}"#);
        let (log, decoded) = decode(&line).expect("decodes");
        assert_eq!(log, text.as_bytes(), "{line}");
        assert!(!decoded.partial);
    }
    // Go escapes HTML characters and writes surrogate pairs as \u escapes.
    let (log, _) = decode(
        r#"{"log":"\u003cb\u003e \u0026 \ud83d\ude00 \ud800 lone\n","stream":"stdout","time":"2026-01-01T00:00:00Z"}"#,
    )
    .expect("decodes");
    assert_eq!(log, "<b> & \u{1F600} \u{FFFD} lone".as_bytes());
}

#[test]
fn times_parse_and_bad_times_are_refused() {
    // Goal: fractions of any length, offsets, leap days; bad dates refused.
    for text in [
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59.999999999Z",
        "2026-11-27T12:54:03.1Z",
        "2026-11-27T12:54:03.123456789+02:00",
        "2026-11-27T12:54:03-05:30",
    ] {
        assert_eq!(
            parse_time(text.as_bytes()),
            Some(nanoseconds(text)),
            "{text}"
        );
    }
    // Digits past nanoseconds are dropped, not rounded.
    assert_eq!(
        parse_time(b"2026-11-27T12:54:03.1234567891Z"),
        Some(nanoseconds("2026-11-27T12:54:03.123456789Z"))
    );
    for text in [
        "2023-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-27T24:00:00Z",
        "2026-11-27T12:54:03.Z",
        "2026-11-27T12:54:03",
        "2026-11-27T12:54:03Zjunk",
        "1969-12-31T23:59:59Z",
        "2026-11-27",
        "",
    ] {
        assert_eq!(parse_time(text.as_bytes()), None, "{text}");
    }
}

#[test]
fn bad_lines_are_errors_naming_the_fault() {
    // Goal: each kind of bad input is a typed error, never a panic.
    let cases: [(&str, DecodeError); 10] = [
        (
            "",
            DecodeError::Syntax {
                expected: "'{'",
                offset: 0,
            },
        ),
        ("{}", DecodeError::Missing { member: "log" }),
        (
            r#"{"log":"x\n","time":"2026-01-01T00:00:00Z"}"#,
            DecodeError::Missing { member: "stream" },
        ),
        (
            r#"{"log":"x\n","stream":"stdout"}"#,
            DecodeError::Missing { member: "time" },
        ),
        (
            r#"{"log":"x\q","stream":"stdout","time":"2026-01-01T00:00:00Z"}"#,
            DecodeError::Escape { offset: 9 },
        ),
        (
            r#"{"log":"x\u12","stream":"stdout","time":"2026-01-01T00:00:00Z"}"#,
            DecodeError::Escape { offset: 9 },
        ),
        (
            r#"{"log":"x","stream":"stdin","time":"2026-01-01T00:00:00Z"}"#,
            DecodeError::Stream { offset: 20 },
        ),
        (
            r#"{"log":"x","stream":"stdout","time":"yesterday"}"#,
            DecodeError::Time { offset: 36 },
        ),
        (
            r#"{"log":"x","log":"y","stream":"stdout","time":"2026-01-01T00:00:00Z"}"#,
            DecodeError::Duplicate {
                member: "log",
                offset: 11,
            },
        ),
        (
            r#"{"log":"x","stream":"stdout","time":"2026-01-01T00:00:00Z"} trailing"#,
            DecodeError::Syntax {
                expected: "the end of the line",
                offset: 60,
            },
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(decode(text).map(|(_, line)| line), Err(expected), "{text}");
    }
}

#[test]
fn every_truncation_and_flipped_byte_is_handled() {
    // Goal: a torn or corrupted line (a crash mid-write, a flipped bit)
    // gives an error or a line, never a panic, and the range stays inside;
    // a line that gives an error is left as it was read (it is delivered
    // raw), though its `log` held escapes that decode.
    // Method: every prefix and every single-byte change of a real line.
    let original = br#"{"log":"a \"b\" \u00e9 \ud83d\ude00\n","stream":"stderr","attrs":{"k":["v",1]},"time":"2026-11-27T12:54:03.032065827Z"}"#;
    for end in 0..original.len() {
        let mut bytes = original[..end].to_vec();
        assert!(decode_in_place(&mut bytes).is_err(), "prefix {end}");
        assert_eq!(bytes, &original[..end], "prefix {end} unchanged");
    }
    for position in 0..original.len() {
        for value in [
            0u8,
            b'"',
            b'\\',
            b'{',
            b'}',
            b'x',
            0xff,
            original[position] ^ 1,
        ] {
            let mut bytes = original.to_vec();
            bytes[position] = value;
            let changed = bytes.clone();
            match decode_in_place(&mut bytes) {
                Ok(line) => {
                    assert!(line.log.start <= line.log.end && line.log.end <= bytes.len());
                }
                Err(_) => assert_eq!(bytes, changed, "byte {position} = {value}: left as read"),
            }
        }
    }
}

#[test]
fn deep_nesting_is_bounded() {
    // Goal: a hostile `attrs` nested past the bound is refused, not recursed.
    let depth = SKIP_DEPTH_MAX + 1;
    let text = format!(
        r#"{{"attrs":{}1{},"log":"x","stream":"stdout","time":"2026-01-01T00:00:00Z"}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(matches!(decode(&text), Err(DecodeError::TooDeep { .. })));
}
