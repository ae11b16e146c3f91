//! Syslog messages arrive from any host on the network: any bytes must
//! parse as RFC 3164 or fail without a panic, and only for the documented
//! reasons (empty, a bad PRI, a host or tag that is not UTF-8). A parsed
//! message borrows every field from the input and its message is a suffix
//! of the input; `parse` agrees with `parse_rfc3164` on whatever it does
//! not take for RFC 5424.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::source::syslog::message::{
    Format, ParseError, TimeContext, parse, parse_rfc3164,
};

/// 2026-11-27T12:30:00Z: a fixed receive time, so that runs reproduce.
const RECEIVED_NS: u64 = 1_795_782_600 * 1_000_000_000;

fn within(whole: &[u8], part: &[u8]) -> bool {
    let whole = whole.as_ptr_range();
    let part = part.as_ptr_range();
    whole.start <= part.start && part.end <= whole.end
}

fuzz_target!(|data: &[u8]| {
    let mut time = TimeContext::utc();
    let result = parse_rfc3164(data, RECEIVED_NS, &mut time);
    match &result {
        Ok(message) => {
            assert_eq!(message.format, Format::Rfc3164);
            assert_eq!((message.msgid, message.structured_data), (None, None));
            for field in [message.host, message.app, message.procid]
                .into_iter()
                .flatten()
            {
                assert!(within(data, field.as_bytes()));
                assert!(!field.is_empty() && !field.contains(' '), "{field:?}");
            }
            assert!(data.ends_with(message.message));
            assert!(within(data, message.message));
        }
        Err(error) => assert!(
            matches!(
                error,
                ParseError::Empty
                    | ParseError::PriorityEmpty
                    | ParseError::PriorityNotNumber
                    | ParseError::PriorityNotClosed
                    | ParseError::PriorityLeadingZero
                    | ParseError::PriorityOutOfRange { .. }
                    | ParseError::FieldNotUtf8 { .. }
            ),
            "{error}"
        ),
    }
    // `parse` takes `<PRI>1 ` for RFC 5424 and anything else as parse_rfc3164 does.
    let looks_like_rfc5424 = data
        .iter()
        .take(5)
        .position(|&byte| byte == b'>')
        .is_some_and(|close| data[close + 1..].starts_with(b"1 "));
    if !looks_like_rfc5424 {
        assert_eq!(parse(data, RECEIVED_NS, &mut time), result);
    }
});
