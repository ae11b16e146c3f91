//! Goal: every form real senders produce parses to the exact fields, every
//! class of error is reported as such, and no input panics.
//! Method: tables of messages and expected [`Message`]s or errors, parsed
//! with a fixed receive time and a UTC context unless a test says
//! otherwise; then truncations and byte flips of every valid message.

use super::*;

/// The receive time of most tests: 2026-11-27T12:30:00Z.
const RECEIVED_NS: u64 = 1_795_782_600 * 1_000_000_000;

/// Nanoseconds since the epoch of a UTC date and time (via jiff, not the
/// code under test).
fn utc_ns(date: (i16, i8, i8), time: (i8, i8, i8), nanosecond: i32) -> u64 {
    let (year, month, day) = date;
    let (hour, minute, second) = time;
    let instant = jiff::civil::date(year, month, day)
        .at(hour, minute, second, nanosecond)
        .to_zoned(jiff::tz::TimeZone::UTC)
        .expect("valid")
        .timestamp();
    u64::try_from(instant.as_nanosecond()).expect("after 1970")
}

fn priority(facility: u8, severity: u8) -> Option<Priority> {
    Some(Priority { facility, severity })
}

/// A message with every optional field absent.
fn base(format: Format) -> Message<'static> {
    Message {
        format,
        priority: None,
        timestamp_ns: None,
        host: None,
        app: None,
        procid: None,
        msgid: None,
        structured_data: None,
        message: b"",
    }
}

/// Whether `part` lies within `whole`.
fn within(whole: &[u8], part: &[u8]) -> bool {
    let whole_range = whole.as_ptr_range();
    let part_range = part.as_ptr_range();
    whole_range.start <= part_range.start && part_range.end <= whole_range.end
}

/// The invariants of any successful parse: fields borrow from the input,
/// the message is a suffix, the structured data walks without error.
fn assert_invariants(input: &[u8], message: &Message<'_>) {
    for text in [message.host, message.app, message.procid, message.msgid]
        .into_iter()
        .flatten()
    {
        assert!(
            within(input, text.as_bytes()),
            "{text:?} not within {input:?}"
        );
    }
    assert!(within(input, message.message));
    assert!(
        input.ends_with(message.message),
        "{:?} not a suffix of {input:?}",
        message.message
    );
    if let Some(sd) = message.structured_data {
        assert!(within(input, sd));
        for param in structured_data_params(sd) {
            let param = param.expect("a parsed message's structured data is well formed");
            assert!(within(sd, param.value));
            let mut value = Vec::new();
            unescape_param_value(param.value, &mut value);
            assert!(value.len() <= param.value.len());
        }
    }
    if let Some(priority) = message.priority {
        assert!(
            priority.facility <= 23 && priority.severity <= 7,
            "{priority:?}"
        );
    }
}

fn parse_utc(input: &[u8]) -> Result<Message<'_>, ParseError> {
    let result = parse(input, RECEIVED_NS, &mut TimeContext::utc());
    if let Ok(message) = &result {
        assert_invariants(input, message);
    }
    result
}

fn assert_parses(cases: &[(&[u8], Message<'_>)]) {
    for (input, expected) in cases {
        assert_eq!(
            parse_utc(input).as_ref(),
            Ok(expected),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

/// Goal: the examples of RFC 5424 §6.5, BOM and nil values included.
#[test]
fn rfc5424_examples_of_the_rfc() {
    let base = Message {
        format: Format::Rfc5424,
        ..base(Format::Rfc5424)
    };
    let event_sd: &[u8] =
        br#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]"#;
    let both_sd: &[u8] =
        br#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#;
    let at_22_14_15 = Some(utc_ns((2003, 10, 11), (22, 14, 15), 3_000_000));
    assert_parses(&[
        (
            b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8",
            Message {
                priority: priority(4, 2),
                timestamp_ns: at_22_14_15,
                host: Some("mymachine.example.com"),
                app: Some("su"),
                msgid: Some("ID47"),
                message: b"'su root' failed for lonvick on /dev/pts/8",
                ..base
            },
        ),
        (
            b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
            Message {
                priority: priority(20, 5),
                timestamp_ns: Some(utc_ns((2003, 8, 24), (12, 14, 15), 3_000)),
                host: Some("192.0.2.1"),
                app: Some("myproc"),
                procid: Some("8710"),
                message: b"%% It's time to make the do-nuts.",
                ..base
            },
        ),
        (
            &[
                &b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "[..],
                event_sd,
                b" \xEF\xBB\xBFAn application event log entry...",
            ]
            .concat(),
            Message {
                priority: priority(20, 5),
                timestamp_ns: at_22_14_15,
                host: Some("mymachine.example.com"),
                app: Some("evntslog"),
                msgid: Some("ID47"),
                structured_data: Some(event_sd),
                message: b"An application event log entry...",
                ..base
            },
        ),
        (
            &[&b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 "[..], both_sd].concat(),
            Message {
                priority: priority(20, 5),
                timestamp_ns: at_22_14_15,
                host: Some("mymachine.example.com"),
                app: Some("evntslog"),
                msgid: Some("ID47"),
                structured_data: Some(both_sd),
                ..base
            },
        ),
    ]);
}

/// Goal: `-` for every header field, and the three ways a message ends.
#[test]
fn rfc5424_nil_values_and_missing_msg() {
    let nil = Message {
        priority: priority(1, 5),
        ..base(Format::Rfc5424)
    };
    assert_parses(&[
        (b"<13>1 - - - - - -", nil),
        (b"<13>1 - - - - - - ", nil),
        (
            b"<13>1 - - - - - - hello",
            Message {
                message: b"hello",
                ..nil
            },
        ),
        (
            b"<13>1 - - - - - -  two spaces",
            Message {
                message: b" two spaces",
                ..nil
            },
        ),
        (b"<13>1 - - - - - - \xEF\xBB\xBF", nil),
        (
            b"<13>1 - - - - - - \xFF\xFE binary",
            Message {
                message: b"\xFF\xFE binary",
                ..nil
            },
        ),
        (
            b"<0>1 - - - - - -",
            Message {
                priority: priority(0, 0),
                ..nil
            },
        ),
        (
            b"<191>1 - - - - - -",
            Message {
                priority: priority(23, 7),
                ..nil
            },
        ),
        (
            b"<13>1 - -host -app -1 -id -",
            Message {
                host: Some("-host"),
                app: Some("-app"),
                procid: Some("-1"),
                msgid: Some("-id"),
                ..nil
            },
        ),
    ]);
}

/// Goal: fractions of 1 to 9 digits, `Z` and `±hh:mm` offsets.
#[test]
fn rfc5424_timestamp_fractions_and_offsets() {
    let whole = utc_ns((2026, 11, 27), (12, 0, 0), 0);
    for digit_count in 1..=9 {
        let fraction = &"123456789"[..digit_count];
        let input = format!("<13>1 2026-11-27T12:00:00.{fraction}Z - - - - -");
        let nanosecond: u64 = format!("{fraction:0<9}").parse().expect("digits");
        let parsed = parse_utc(input.as_bytes()).expect("parses");
        assert_eq!(parsed.timestamp_ns, Some(whole + nanosecond), "{input}");
    }
    for (offset, utc_hour, utc_minute) in [
        ("Z", 12, 0),
        ("+00:00", 12, 0),
        ("-00:00", 12, 0),
        ("+05:30", 6, 30),
        ("-07:00", 19, 0),
    ] {
        let input = format!("<13>1 2026-11-27T12:00:00{offset} - - - - -");
        let parsed = parse_utc(input.as_bytes()).expect("parses");
        assert_eq!(
            parsed.timestamp_ns,
            Some(utc_ns((2026, 11, 27), (utc_hour, utc_minute, 0), 0)),
            "{input}"
        );
    }
    let before_epoch =
        parse_utc(b"<13>1 1970-01-01T00:30:00+01:00 - - - - -").expect("well formed");
    assert_eq!(before_epoch.timestamp_ns, None);
    let leap_day = parse_utc(b"<13>1 2028-02-29T00:00:00Z - - - - -").expect("leap year");
    assert_eq!(
        leap_day.timestamp_ns,
        Some(utc_ns((2028, 2, 29), (0, 0, 0), 0))
    );
}

/// Goal: structured data with several elements and escapes is kept as
/// sent, and its parameters decode.
#[test]
fn rfc5424_structured_data_escapes() {
    let sd: &[u8] = br#"[origin@1 ip="192.0.2.1" path="C:\\logs\]x" quote="say \"hi\"" other="a\nb"][empty@2][meta@3 n="1" bracket="a]b"]"#;
    let input = [&b"<13>1 - host app - - "[..], sd, b" body"].concat();
    let parsed = parse_utc(&input).expect("parses");
    assert_eq!(parsed.structured_data, Some(sd));
    assert_eq!(parsed.message, b"body");
    let mut decoded = Vec::new();
    for param in structured_data_params(sd) {
        let param = param.expect("well formed");
        let mut value = Vec::new();
        unescape_param_value(param.value, &mut value);
        decoded.push((
            param.sd_id,
            param.name,
            String::from_utf8(value).expect("UTF-8"),
        ));
    }
    let expected = [
        ("origin@1", "ip", "192.0.2.1"),
        ("origin@1", "path", r"C:\logs]x"),
        ("origin@1", "quote", r#"say "hi""#),
        ("origin@1", "other", r"a\nb"),
        ("meta@3", "n", "1"),
        ("meta@3", "bracket", "a]b"),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|&(id, name, value)| (id, name, value.to_owned()))
        .collect();
    assert_eq!(decoded, expected);
}

/// Goal: what `logger --rfc5424` (util-linux 2.38) sends, with and
/// without `--msgid ID --sd-id x@1 --sd-param a="b"`.
#[test]
fn rfc5424_logger() {
    let time_quality: &[u8] = br#"[timeQuality tzKnown="1" isSynced="0"]"#;
    let both: &[u8] = br#"[timeQuality tzKnown="1" isSynced="0"][x@1 a="b"]"#;
    let logger = Message {
        priority: priority(1, 5),
        timestamp_ns: Some(utc_ns((2026, 11, 27), (12, 0, 0), 123_456_000)),
        host: Some("myhost"),
        app: Some("mytag"),
        procid: Some("4242"),
        structured_data: Some(time_quality),
        message: b"hello",
        ..base(Format::Rfc5424)
    };
    assert_parses(&[
        (
            br#"<13>1 2026-11-27T12:00:00.123456+00:00 myhost mytag 4242 - [timeQuality tzKnown="1" isSynced="0"] hello"#,
            logger,
        ),
        (
            br#"<13>1 2026-11-27T12:00:00.123456+00:00 myhost mytag 4242 ID [timeQuality tzKnown="1" isSynced="0"][x@1 a="b"] hello"#,
            Message { msgid: Some("ID"), structured_data: Some(both), ..logger },
        ),
    ]);
}

/// Goal: header fields at their RFC limits parse, one byte more fails.
#[test]
fn rfc5424_field_limits() {
    let limits = [
        (Field::Hostname, HOSTNAME_BYTES_MAX),
        (Field::AppName, APP_NAME_BYTES_MAX),
        (Field::ProcId, PROCID_BYTES_MAX),
        (Field::MsgId, MSGID_BYTES_MAX),
    ];
    for (index, (field, bytes_max)) in limits.into_iter().enumerate() {
        for length in [bytes_max, bytes_max + 1] {
            let mut fields = vec!["-".to_owned(); 4];
            fields[index] = "x".repeat(length);
            let input = format!("<13>1 - {} -", fields.join(" "));
            let result = parse_utc(input.as_bytes());
            if length == bytes_max {
                assert!(result.is_ok(), "{field} of {length}: {result:?}");
            } else {
                assert_eq!(result, Err(ParseError::FieldTooLong { field, bytes_max }));
            }
        }
    }
    for (problem, template) in [
        (StructuredDataProblem::IdTooLong, "[{} a=\"b\"]"),
        (StructuredDataProblem::ParamNameTooLong, "[id {}=\"b\"]"),
    ] {
        let fits = template.replace("{}", &"n".repeat(SD_NAME_BYTES_MAX));
        assert!(
            parse_utc(format!("<13>1 - - - - - {fits}").as_bytes()).is_ok(),
            "{fits}"
        );
        let long = template.replace("{}", &"n".repeat(SD_NAME_BYTES_MAX + 1));
        let input = format!("<13>1 - - - - - {long}");
        let result = parse_utc(input.as_bytes());
        assert!(
            matches!(result, Err(ParseError::StructuredData { problem: found, .. }) if found == problem),
            "{result:?}"
        );
    }
}

/// Goal: the RFC 3164 forms senders produce.
#[test]
fn rfc3164_forms() {
    let base = base(Format::Rfc3164);
    let noon = Some(utc_ns((2026, 11, 27), (12, 0, 0), 0));
    let logger = Message {
        priority: priority(1, 5),
        timestamp_ns: noon,
        host: Some("myhost"),
        app: Some("mytag"),
        procid: Some("4242"),
        message: b"hello",
        ..base
    };
    assert_parses(&[
        (
            b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            Message {
                priority: priority(4, 2),
                timestamp_ns: Some(utc_ns((2026, 10, 11), (22, 14, 15), 0)),
                host: Some("mymachine"),
                app: Some("su"),
                message: b"'su root' failed for lonvick on /dev/pts/8",
                ..base
            },
        ),
        (b"<13>Nov 27 12:00:00 myhost mytag[4242]: hello", logger),
        (b"<13>Nov  7 12:00:00 myhost mytag[4242]: hello", Message {
            timestamp_ns: Some(utc_ns((2026, 11, 7), (12, 0, 0), 0)),
            ..logger
        }),
        (b"<13>Nov 7 12:00:00 myhost mytag[4242]: hello", Message {
            timestamp_ns: Some(utc_ns((2026, 11, 7), (12, 0, 0), 0)),
            ..logger
        }),
        (b"Nov 27 12:00:00 myhost mytag[4242]: hello", Message { priority: None, ..logger }),
        (b"<13>Nov 27 12:00:00 tag[123]: msg", Message {
            host: None,
            app: Some("tag"),
            procid: Some("123"),
            message: b"msg",
            ..logger
        }),
        (b"<13>Nov 27 12:00:00 su: msg", Message { host: None, app: Some("su"), procid: None, message: b"msg", ..logger }),
        (b"<13>Nov 27 12:00:00 192.0.2.1 mytag[4242]: hello", Message { host: Some("192.0.2.1"), ..logger }),
        (b"<13>Nov 27 12:00:00 2001:db8::1 mytag[4242]: hello", Message { host: Some("2001:db8::1"), ..logger }),
        (b"<13>Nov 27 12:00:00 fe80:: mytag[4242]: hello", Message { host: Some("fe80::"), ..logger }),
        (b"<13>Nov 27 12:00:00 myhost /usr/sbin/cron[1234]: (root) CMD (run-parts /etc/cron.hourly)", Message {
            app: Some("/usr/sbin/cron"),
            procid: Some("1234"),
            message: b"(root) CMD (run-parts /etc/cron.hourly)",
            ..logger
        }),
        (b"<13>Nov 27 12:00:00 myhost su: hello", Message { app: Some("su"), procid: None, ..logger }),
        (b"<13>Nov 27 12:00:00 myhost hello world", Message {
            app: None,
            procid: None,
            message: b"hello world",
            ..logger
        }),
        (b"<13>Nov 27 12:00:00 myhost mytag[4242]:hello", logger),
        (b"<13>Nov 27 12:00:00 myhost mytag[]: hello", Message { procid: None, ..logger }),
        (b"<13>Nov 27 12:00:00 myhost mytag[4242]:", Message { message: b"", ..logger }),
        (b"<13>Nov 27 12:00:00 myhost mytag[4242]: ", Message { message: b"", ..logger }),
        (b"<13>Nov 27 12:00:00 myhost mytag[4242]:  two", Message { message: b" two", ..logger }),
        (b"<13>Nov 27 12:00:00 h\xC3\xA9te t\xC3\xA2che: hello", Message {
            host: Some("h\u{e9}te"),
            app: Some("t\u{e2}che"),
            procid: None,
            ..logger
        }),
        (b"<13>Nov 27 12:00:00 myhost mytag[4242]: \xEF\xBB\xBFhello", logger),
        (b"<13>Nov 27 12:00:00 myhost mytag[4242]: \xFF\x00 bytes", Message { message: b"\xFF\x00 bytes", ..logger }),
        (b"<13>Nov 27 12:00:00 alone", Message { host: None, app: None, procid: None, message: b"alone", ..logger }),
        (b"<13>Nov 27 12:00:00", Message { host: None, app: None, procid: None, message: b"", ..logger }),
        (b"<13>nov 27 12:00:00 myhost mytag[4242]: hello", logger),
    ]);
}

/// Goal: rsyslog's forwarding templates: RSYSLOG_TraditionalForwardFormat
/// (`<%PRI%>%TIMESTAMP% %HOSTNAME% %syslogtag:1:32%%msg:::sp-if-no-1st-sp%%msg%`)
/// and RSYSLOG_ForwardFormat (an RFC 3339 timestamp in an RFC 3164 message).
#[test]
fn rfc3164_rsyslog_templates() {
    let base = Message {
        priority: priority(10, 6),
        timestamp_ns: Some(utc_ns((2026, 11, 27), (12, 0, 0), 0)),
        host: Some("web01"),
        app: Some("sshd"),
        procid: Some("4242"),
        message: b"Accepted publickey for alice",
        ..base(Format::Rfc3164)
    };
    assert_parses(&[
        // The message had its leading space: kept as the separator.
        (
            b"<86>Nov 27 12:00:00 web01 sshd[4242]: Accepted publickey for alice",
            base,
        ),
        (
            b"<86>2026-11-27T12:00:00+00:00 web01 sshd[4242]: Accepted publickey for alice",
            base,
        ),
        (
            b"<86>2026-11-27T13:00:00.123456+01:00 web01 sshd[4242]: Accepted publickey for alice",
            Message {
                timestamp_ns: Some(utc_ns((2026, 11, 27), (12, 0, 0), 123_456_000)),
                ..base
            },
        ),
        // A tag cut at 32 bytes by %syslogtag:1:32% loses its colon: then it
        // is part of the message.
        (
            b"<86>Nov 27 12:00:00 web01 a-very-long-program-name-indeed[42 lost",
            Message {
                app: None,
                procid: None,
                message: b"a-very-long-program-name-indeed[42 lost",
                ..base
            },
        ),
    ]);
}

/// Goal: a year and a zone around the BSD time, and fractions.
#[test]
fn rfc3164_years_zones_and_fractions() {
    let at = |hour, nanosecond| Some(utc_ns((2025, 11, 27), (hour, 0, 0), nanosecond));
    let cases: &[(&[u8], Option<u64>)] = &[
        (b"<13>Nov 27 2025 12:00:00 myhost su: hi", at(12, 0)),
        (b"<13>Nov 27 12:00:00 2025 myhost su: hi", at(12, 0)),
        (
            b"<13>Nov 27 12:00:00.123456 2025 myhost su: hi",
            at(12, 123_456_000),
        ),
        (
            b"<13>Nov 27 12:00:00.5 2025 myhost su: hi",
            at(12, 500_000_000),
        ),
        (b"<13>Nov 27 12:00:00 2025 UTC myhost su: hi", at(12, 0)),
        (b"<13>Nov 27 12:00:00 UTC 2025 myhost su: hi", at(12, 0)),
        (b"<13>Nov 27 2025 12:00:00 GMT myhost su: hi", at(12, 0)),
        (b"<13>Nov 27 2025 12:00:00 Z myhost su: hi", at(12, 0)),
        (b"<13>Nov 27 2025 12:00:00 +0100 myhost su: hi", at(11, 0)),
        (b"<13>Nov 27 2025 12:00:00 +01:00 myhost su: hi", at(11, 0)),
        (b"<13>Nov 27 2025 12:00:00 -05:00 myhost su: hi", at(17, 0)),
        (b"<13>Nov 27 2025 12:00:00 CET myhost su: hi", at(11, 0)),
        (b"<13>Nov 27 2025 12:00:00 PST myhost su: hi", at(20, 0)),
        // Ambiguous (US Central or China): the context's zone, UTC here.
        (b"<13>Nov 27 2025 12:00:00 CST myhost su: hi", at(12, 0)),
        (
            b"<13>Nov 27 2025 12:00:00.25 -0500 myhost su: hi",
            at(17, 250_000_000),
        ),
    ];
    for (input, timestamp_ns) in cases {
        let parsed = parse_utc(input).unwrap_or_else(|error| panic!("{input:?}: {error}"));
        let text = String::from_utf8_lossy(input);
        assert_eq!(parsed.timestamp_ns, *timestamp_ns, "{text}");
        assert_eq!(
            (parsed.host, parsed.app, parsed.message),
            (Some("myhost"), Some("su"), &b"hi"[..]),
            "{text}"
        );
    }
}

/// Goal: an abbreviation or no zone means the context's zone; an offset
/// written in the message wins over it.
#[test]
fn rfc3164_context_zone() {
    let mut berlin = TimeContext::named("Europe/Berlin")
        .expect("the time zone database (Debian package tzdata) is installed");
    let mut parse_berlin = |input: &'static [u8]| {
        parse(input, RECEIVED_NS, &mut berlin)
            .expect("parses")
            .timestamp_ns
    };
    let eleven = Some(utc_ns((2026, 11, 27), (11, 0, 0), 0));
    assert_eq!(parse_berlin(b"<13>Nov 27 12:00:00 myhost su: hi"), eleven);
    assert_eq!(
        parse_berlin(b"<13>Nov 27 12:00:00 CET myhost su: hi"),
        eleven
    );
    assert_eq!(
        parse_berlin(b"<13>Nov 27 12:00:00 UTC myhost su: hi"),
        Some(utc_ns((2026, 11, 27), (12, 0, 0), 0))
    );
    // Summer time: UTC+2.
    assert_eq!(
        parse_berlin(b"<13>Jul  1 12:00:00 myhost su: hi"),
        Some(utc_ns((2026, 7, 1), (10, 0, 0), 0))
    );
    // RFC 5424 carries its offset: the context plays no part.
    assert_eq!(
        parse_berlin(b"<13>1 2026-11-27T12:00:00Z - - - - -"),
        Some(utc_ns((2026, 11, 27), (12, 0, 0), 0))
    );
    // An upper-case host is a host, not a zone.
    let nas = parse(b"<13>Nov 27 12:00:00 NAS su: hi", RECEIVED_NS, &mut berlin).expect("parses");
    assert_eq!(
        (nas.host, nas.app, nas.timestamp_ns),
        (Some("NAS"), Some("su"), eleven)
    );
}

/// Goal: a year-less date takes the receive year, the year before when it
/// would lie more than a month ahead, the year after when eleven months
/// behind.
#[test]
fn rfc3164_missing_year() {
    let cases = [
        // (received, message date, year expected)
        (((2027, 1, 5), (0, 30, 0)), b"Dec 31 23:59:00", 2026),
        (((2026, 12, 31), (23, 59, 0)), b"Jan  1 00:00:05", 2027),
        (((2026, 11, 27), (12, 0, 0)), b"Nov 30 12:00:00", 2026),
        (((2026, 11, 27), (12, 0, 0)), b"Dec 27 12:00:00", 2026),
        (((2026, 11, 27), (12, 0, 0)), b"Dec 31 12:00:00", 2025),
        (((2026, 11, 27), (12, 0, 0)), b"Jan  1 12:00:00", 2026),
        (((2026, 6, 15), (12, 0, 0)), b"Jun 15 12:00:00", 2026),
        (((2025, 3, 1), (12, 0, 0)), b"Feb 28 12:00:00", 2025),
    ];
    for ((date, time), written, year) in cases {
        let received_ns = utc_ns(date, time, 0);
        let input = [&b"<13>"[..], written, b" host su: hi"].concat();
        let parsed = parse(&input, received_ns, &mut TimeContext::utc()).expect("parses");
        let month = month_of(&written[..3]);
        let day = String::from_utf8_lossy(&written[4..6])
            .trim()
            .parse()
            .expect("day");
        let hour = String::from_utf8_lossy(&written[7..9])
            .parse()
            .expect("hour");
        let minute = String::from_utf8_lossy(&written[10..12])
            .parse()
            .expect("minute");
        let second = String::from_utf8_lossy(&written[13..15])
            .parse()
            .expect("second");
        let expected = utc_ns((year, month, day), (hour, minute, second), 0);
        assert_eq!(
            parsed.timestamp_ns,
            Some(expected),
            "{} received {date:?}",
            String::from_utf8_lossy(written)
        );
    }
}

fn month_of(name: &[u8]) -> i8 {
    let names: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    names
        .iter()
        .position(|candidate| *candidate == name)
        .expect("month") as i8
        + 1
}

/// Goal: without a recognisable timestamp, the message is not an error:
/// no timestamp, no host, a tag if the first word is one.
#[test]
fn rfc3164_without_timestamp() {
    let base = Message {
        priority: priority(1, 5),
        ..base(Format::Rfc3164)
    };
    assert_parses(&[
        (
            b"<13>hello world",
            Message {
                message: b"hello world",
                ..base
            },
        ),
        (
            b"<13>su: hello",
            Message {
                app: Some("su"),
                message: b"hello",
                ..base
            },
        ),
        (
            b"<13>tag[7]: hello",
            Message {
                app: Some("tag"),
                procid: Some("7"),
                message: b"hello",
                ..base
            },
        ),
        (
            b"<13>Nov 27 hello",
            Message {
                message: b"Nov 27 hello",
                ..base
            },
        ),
        (
            b"<13>Nov 27 25:00:00 host su: hi",
            Message {
                message: b"Nov 27 25:00:00 host su: hi",
                ..base
            },
        ),
        (
            b"<13>Feb 30 12:00:00 host su: hi",
            Message {
                message: b"Feb 30 12:00:00 host su: hi",
                ..base
            },
        ),
        (
            b"<13>Nov 27 12:00:00x host",
            Message {
                message: b"Nov 27 12:00:00x host",
                ..base
            },
        ),
        (
            b"<13>2026-11-27 12:00:00 host",
            Message {
                message: b"2026-11-27 12:00:00 host",
                ..base
            },
        ),
        (
            b"<13> leading space",
            Message {
                message: b" leading space",
                ..base
            },
        ),
        (
            b"<13>1",
            Message {
                message: b"1",
                ..base
            },
        ),
        (
            b"<13>10 apples",
            Message {
                message: b"10 apples",
                ..base
            },
        ),
        (
            b"plain text line",
            Message {
                priority: None,
                message: b"plain text line",
                ..base
            },
        ),
        (
            b"https://example.com/ is down",
            Message {
                priority: None,
                message: b"https://example.com/ is down",
                ..base
            },
        ),
    ]);
}

/// Goal: every class of error, named as documented.
#[test]
fn errors() {
    use ParseError::*;
    use StructuredDataProblem as Sd;
    use TimestampProblem as Ts;
    let structured = |problem, offset| StructuredData { problem, offset };
    let cases: &[(&[u8], ParseError)] = &[
        (b"", Empty),
        (b"<13>", Empty),
        (b"<>", PriorityEmpty),
        (b"<>1 - - - - - -", PriorityEmpty),
        (b"<abc>hello", PriorityNotNumber),
        (b"<1a>hello", PriorityNotNumber),
        (b"< 13>hello", PriorityNotNumber),
        (b"<1234>hello", PriorityNotClosed),
        (b"<13", PriorityNotClosed),
        (b"<", PriorityNotClosed),
        (b"<192>hello", PriorityOutOfRange { value: 192 }),
        (b"<999>1 - - - - - -", PriorityOutOfRange { value: 999 }),
        (b"<013>hello", PriorityLeadingZero),
        (b"<00>hello", PriorityLeadingZero),
        (
            b"<13>1 ",
            FieldMissing {
                field: Field::Timestamp,
            },
        ),
        (
            b"<13>1 -",
            FieldMissing {
                field: Field::Timestamp,
            },
        ),
        (
            b"<13>1 - ",
            FieldMissing {
                field: Field::Hostname,
            },
        ),
        (
            b"<13>1 - host",
            FieldMissing {
                field: Field::AppName,
            },
        ),
        (
            b"<13>1 - host app",
            FieldMissing {
                field: Field::ProcId,
            },
        ),
        (
            b"<13>1 - host app 1 id",
            FieldMissing {
                field: Field::StructuredData,
            },
        ),
        (
            b"<13>1 - host app 1 id ",
            FieldMissing {
                field: Field::StructuredData,
            },
        ),
        (
            b"<13>1 2026-11-27T12:00:00Z",
            FieldMissing {
                field: Field::Hostname,
            },
        ),
        (
            b"<13>1  - - - - -",
            FieldEmpty {
                field: Field::Timestamp,
            },
        ),
        (
            b"<13>1 -  - - - -",
            FieldEmpty {
                field: Field::Hostname,
            },
        ),
        (
            b"<13>1 - - - - -  ",
            FieldEmpty {
                field: Field::StructuredData,
            },
        ),
        (
            b"<13>1 - h\xC3\xA9 - - - -",
            FieldNotPrintable {
                field: Field::Hostname,
                byte: 0xC3,
                offset: 1,
            },
        ),
        (
            b"<13>1 - - a\tb - - -",
            FieldNotPrintable {
                field: Field::AppName,
                byte: b'\t',
                offset: 1,
            },
        ),
        (
            b"<13>1 - - - \x7F - -",
            FieldNotPrintable {
                field: Field::ProcId,
                byte: 0x7F,
                offset: 0,
            },
        ),
        (
            b"<13>1 2026-13-27T12:00:00Z - - - - -",
            Timestamp { problem: Ts::Month },
        ),
        (
            b"<13>1 2026-11-31T12:00:00Z - - - - -",
            Timestamp { problem: Ts::Day },
        ),
        (
            b"<13>1 2027-02-29T12:00:00Z - - - - -",
            Timestamp { problem: Ts::Day },
        ),
        (
            b"<13>1 2026-11-00T12:00:00Z - - - - -",
            Timestamp { problem: Ts::Day },
        ),
        (
            b"<13>1 2026-11-27T24:00:00Z - - - - -",
            Timestamp { problem: Ts::Hour },
        ),
        (
            b"<13>1 2026-11-27T12:60:00Z - - - - -",
            Timestamp {
                problem: Ts::Minute,
            },
        ),
        (
            b"<13>1 2026-12-31T23:59:60Z - - - - -",
            Timestamp {
                problem: Ts::Second,
            },
        ),
        (
            b"<13>1 2026-11-27T12:00:00.1234567890Z - - - - -",
            Timestamp {
                problem: Ts::Fraction,
            },
        ),
        (
            b"<13>1 2026-11-27T12:00:00.Z - - - - -",
            Timestamp {
                problem: Ts::Fraction,
            },
        ),
        (
            b"<13>1 2026-11-27T12:00:00 - - - - -",
            Timestamp {
                problem: Ts::Offset,
            },
        ),
        (
            b"<13>1 2026-11-27T12:00:00+1:00 - - - - -",
            Timestamp {
                problem: Ts::Offset,
            },
        ),
        (
            b"<13>1 2026-11-27T12:00:00+0100 - - - - -",
            Timestamp {
                problem: Ts::Offset,
            },
        ),
        (
            b"<13>1 2026-11-27T12:00:00+24:00 - - - - -",
            Timestamp {
                problem: Ts::Offset,
            },
        ),
        (
            b"<13>1 2026-11-27t12:00:00Z - - - - -",
            Timestamp { problem: Ts::Shape },
        ),
        (
            b"<13>1 Nov 27 12:00:00 - - - - -",
            Timestamp { problem: Ts::Shape },
        ),
        (
            b"<13>1 2026-11-27T12:00:00ZZ - - - - -",
            Timestamp {
                problem: Ts::Trailing,
            },
        ),
        (
            b"<13>1 - - - - - [a b=\"c\"",
            structured(Sd::ElementNotClosed, 8),
        ),
        (
            b"<13>1 - - - - - [a b=\"c",
            structured(Sd::ValueNotClosed, 6),
        ),
        (
            b"<13>1 - - - - - [a b=\"c\\\"]",
            structured(Sd::ValueNotClosed, 6),
        ),
        (
            b"<13>1 - - - - - [a b=c]",
            structured(Sd::ValueNotQuoted, 4),
        ),
        (b"<13>1 - - - - - [a b]", structured(Sd::EqualsMissing, 4)),
        (
            b"<13>1 - - - - - [a =\"c\"]",
            structured(Sd::ParamNameEmpty, 3),
        ),
        (b"<13>1 - - - - - [ b=\"c\"]", structured(Sd::IdEmpty, 1)),
        (b"<13>1 - - - - - []", structured(Sd::IdEmpty, 1)),
        (b"<13>1 - - - - - [a=b]", structured(Sd::NameByte, 2)),
        (
            b"<13>1 - - - - - [a b=\"c\"d=\"e\"]",
            structured(Sd::SpaceOrCloseExpected, 8),
        ),
        (
            b"<13>1 - - - - - [a b=\"\xFF\"]",
            structured(Sd::ValueNotUtf8, 6),
        ),
        (
            b"<13>1 - - - - - [a]x",
            structured(Sd::NotFollowedBySpace, 3),
        ),
        (b"<13>1 - - - - - -x", structured(Sd::NotFollowedBySpace, 1)),
        (b"<13>1 - - - - - x", structured(Sd::ElementNotOpened, 0)),
        (
            b"<13>1 - - - - - [a]\n",
            structured(Sd::NotFollowedBySpace, 3),
        ),
        (
            b"<13>Nov 27 12:00:00 h\xFFst su: hi",
            FieldNotUtf8 {
                field: Field::Hostname,
            },
        ),
        (
            b"<13>Nov 27 12:00:00 host s\xFF: hi",
            FieldNotUtf8 { field: Field::Tag },
        ),
        (
            b"<13>Nov 27 12:00:00 s\xFF[1]: hi",
            FieldNotUtf8 { field: Field::Tag },
        ),
        (b"<13>su[\xFF]: hi", FieldNotUtf8 { field: Field::Tag }),
    ];
    for (input, expected) in cases {
        let result = parse_utc(input);
        assert_eq!(
            result.as_ref().err(),
            Some(expected),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
}

/// Goal: the format-specific parsers refuse what is not theirs, and parse
/// what is as `parse` does.
#[test]
fn format_specific_parsers() {
    let mut time = TimeContext::utc();
    let rfc5424: &[u8] = b"<13>1 - host app - - - hi";
    let rfc3164: &[u8] = b"<13>Nov 27 12:00:00 host su: hi";
    assert_eq!(
        parse_rfc5424(rfc5424, RECEIVED_NS, &mut time),
        parse_utc(rfc5424)
    );
    assert_eq!(
        parse_rfc3164(rfc3164, RECEIVED_NS, &mut time),
        parse_utc(rfc3164)
    );
    assert_eq!(
        parse_rfc5424(rfc3164, RECEIVED_NS, &mut time),
        Err(ParseError::Version)
    );
    assert_eq!(
        parse_rfc5424(b"<13>2 - - - - - -", RECEIVED_NS, &mut time),
        Err(ParseError::Version)
    );
    assert_eq!(
        parse_rfc5424(b"1 - - - - - -", RECEIVED_NS, &mut time),
        Err(ParseError::PriorityMissing)
    );
    assert_eq!(
        parse_rfc5424(b"", RECEIVED_NS, &mut time),
        Err(ParseError::Empty)
    );
    assert_eq!(
        parse_rfc5424(b"<13>", RECEIVED_NS, &mut time),
        Err(ParseError::Empty)
    );
    assert_eq!(
        parse_rfc5424(b"<1a>1 ", RECEIVED_NS, &mut time),
        Err(ParseError::PriorityNotNumber)
    );
    assert_eq!(
        parse_rfc3164(b"<13>", RECEIVED_NS, &mut time),
        Err(ParseError::Empty)
    );
    assert_eq!(
        parse_rfc3164(b"<1000>", RECEIVED_NS, &mut time),
        Err(ParseError::PriorityNotClosed)
    );
    // A space then more structured data is MSG.
    let after = parse_utc(b"<13>1 - - - - - [a] [b]").expect("parses");
    assert_eq!(
        (after.structured_data, after.message),
        (Some(&b"[a]"[..]), &b"[b]"[..])
    );
    // parse_rfc3164 takes a 5424-looking message as text.
    let as_text = parse_rfc3164(rfc5424, RECEIVED_NS, &mut time).expect("parses");
    assert_eq!(
        (as_text.format, as_text.message),
        (Format::Rfc3164, &b"1 - host app - - - hi"[..])
    );
}

/// Goal: error messages name the field, as operators read them.
#[test]
fn error_messages_name_the_field() {
    let cases = [
        (
            ParseError::PriorityNotNumber,
            "syslog priority: not a number in <...>",
        ),
        (
            ParseError::FieldMissing {
                field: Field::AppName,
            },
            "syslog app-name: missing, the message ends before it",
        ),
        (
            ParseError::FieldTooLong {
                field: Field::MsgId,
                bytes_max: 32,
            },
            "syslog msgid: longer than 32 bytes",
        ),
        (
            ParseError::FieldNotUtf8 { field: Field::Tag },
            "syslog tag: not UTF-8",
        ),
        (
            ParseError::Timestamp {
                problem: TimestampProblem::Day,
            },
            "syslog timestamp: day not in the month",
        ),
        (
            ParseError::StructuredData {
                problem: StructuredDataProblem::ValueNotQuoted,
                offset: 4,
            },
            "syslog structured data: PARAM-VALUE not quoted at byte 4 of the field",
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(error.to_string(), expected);
    }
    let unknown = TimeContext::named("Mars/Olympus_Mons").expect_err("no such zone");
    assert!(
        unknown.to_string().contains("\"Mars/Olympus_Mons\""),
        "{unknown}"
    );
}

/// Goal: names and priority arithmetic over the whole range and beyond.
#[test]
fn names_and_priorities() {
    let severities = [
        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
    ];
    for (severity, name) in severities.iter().enumerate() {
        assert_eq!(severity_name(severity as u8), *name);
    }
    assert_eq!(severity_name(8), "unknown");
    assert_eq!(
        (
            facility_name(0),
            facility_name(4),
            facility_name(9),
            facility_name(10),
            facility_name(15)
        ),
        ("kern", "auth", "cron", "authpriv", "solaris-cron")
    );
    assert_eq!(
        (facility_name(16), facility_name(23), facility_name(24)),
        ("local0", "local7", "unknown")
    );
    for value in 0..=PRIORITY_MAX {
        let priority = Priority::from_value(value).expect("in range");
        assert_eq!(priority.value(), value);
        let input = format!("<{value}>x");
        assert_eq!(
            parse_utc(input.as_bytes()).expect("parses").priority,
            Some(priority),
            "{input}"
        );
    }
    assert_eq!(Priority::from_value(PRIORITY_MAX + 1), None);
}

/// Valid messages of every form, for the properties below.
fn valid_messages() -> Vec<&'static [u8]> {
    vec![
        b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed",
        br#"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"][examplePriority@32473 class="high"]"#,
        br#"<13>1 2026-11-27T12:00:00.123456+00:00 myhost mytag 4242 ID [timeQuality tzKnown="1" isSynced="0"][x@1 a="b\]c\"d\\e"] hello"#,
        b"<13>1 - - - - - -",
        b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
        b"<13>Nov  7 12:00:00 tag[123]: msg",
        b"<13>Nov 27 2026 12:00:00.123 +01:00 2001:db8::1 /usr/sbin/cron[1234]: msg",
        b"<13>Nov 27 12:00:00 2026 CET host tag[1]:msg",
        b"<13>2026-11-27T12:00:00.123456+01:00 host tag[1]: msg",
        b"Nov 27 12:00:00 host hello world",
    ]
}

/// Checks that parsing `input` in every way does not panic, and that a
/// success keeps the invariants.
fn parse_every_way(input: &[u8]) {
    let mut time = TimeContext::utc();
    let results = [
        parse(input, RECEIVED_NS, &mut time),
        parse_rfc5424(input, RECEIVED_NS, &mut time),
        parse_rfc3164(input, RECEIVED_NS, &mut time),
    ];
    for message in results.iter().flatten() {
        assert_invariants(input, message);
    }
    // Any bytes as structured data: errors, never panics.
    let mut value = Vec::new();
    for param in structured_data_params(input).flatten() {
        unescape_param_value(param.value, &mut value);
    }
}

/// Goal: no prefix of a valid message panics.
/// Method: parse every prefix (every byte position) of each valid message.
#[test]
fn truncations_never_panic() {
    for input in valid_messages() {
        for length in 0..=input.len() {
            parse_every_way(&input[..length]);
        }
    }
}

/// Goal: no single-byte change of a valid message panics.
/// Method: at every position, XOR with a few masks and write each byte
/// the grammar gives a meaning to.
#[test]
fn byte_flips_never_panic() {
    let masks = [0x01, 0x20, 0x80, 0xFF];
    let specials = *b" []\"\\=<>:-.+TZ0\xEF\x00\n";
    for input in valid_messages() {
        let mut changed = input.to_vec();
        for position in 0..input.len() {
            let original = input[position];
            let replacements = masks.iter().map(|mask| original ^ mask).chain(specials);
            for replacement in replacements {
                changed[position] = replacement;
                parse_every_way(&changed);
            }
            changed[position] = original;
        }
    }
}

/// Goal: structured data walked alone reports trailing bytes, and ends
/// after one error.
#[test]
fn structured_data_params_alone() {
    assert_eq!(structured_data_params(b"-").count(), 0);
    assert_eq!(structured_data_params(b"").count(), 0);
    assert_eq!(structured_data_params(b"[a]").count(), 0);
    let trailing: Vec<_> = structured_data_params(br#"[a b="c"] x"#).collect();
    assert_eq!(trailing.len(), 2, "{trailing:?}");
    assert_eq!(
        trailing[1],
        Err(ParseError::StructuredData {
            problem: StructuredDataProblem::ElementNotOpened,
            offset: 9
        })
    );
    let mut out = Vec::new();
    unescape_param_value(br#"a\"b\\c\]d\ne\"#, &mut out);
    assert_eq!(out, br#"a"b\c]d\ne\"#);
}
