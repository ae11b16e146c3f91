//! Syslog messages arrive from any host on the network: any bytes must
//! parse or fail without a panic. A parsed message borrows every field from
//! the input, its message is a suffix of the input, and its structured data
//! walks without error (the parser and the walk share one scanner); any
//! bytes walked as structured data fail without a panic, and every value
//! unescapes to no more bytes than it had.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::source::syslog::message::{
    Format, TimeContext, parse, parse_rfc5424, structured_data_params, unescape_param_value,
};

/// 2026-11-27T12:30:00Z: a fixed receive time, so that runs reproduce.
const RECEIVED_NS: u64 = 1_795_782_600 * 1_000_000_000;

fn within(whole: &[u8], part: &[u8]) -> bool {
    let whole = whole.as_ptr_range();
    let part = part.as_ptr_range();
    whole.start <= part.start && part.end <= whole.end
}

fn walk_structured_data(sd: &[u8], must_be_well_formed: bool) {
    let mut value = Vec::new();
    for param in structured_data_params(sd) {
        let param = match param {
            Ok(param) => param,
            Err(error) => {
                assert!(!must_be_well_formed, "{error} in {sd:?}");
                continue;
            }
        };
        assert!(within(sd, param.sd_id.as_bytes()) && within(sd, param.name.as_bytes()));
        assert!(within(sd, param.value));
        assert!(std::str::from_utf8(param.value).is_ok());
        value.clear();
        unescape_param_value(param.value, &mut value);
        assert!(value.len() <= param.value.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut time = TimeContext::utc();
    walk_structured_data(data, false);
    let strict = parse_rfc5424(data, RECEIVED_NS, &mut time);
    if let Ok(message) = &strict {
        assert_eq!(message.format, Format::Rfc5424);
        assert!(message.priority.is_some());
        assert_eq!(parse(data, RECEIVED_NS, &mut time).as_ref(), Ok(message));
        for field in [message.host, message.app, message.procid, message.msgid]
            .into_iter()
            .flatten()
        {
            assert!(within(data, field.as_bytes()));
            assert!(
                field.bytes().all(|byte| (33..=126).contains(&byte)),
                "{field:?}"
            );
        }
        assert!(data.ends_with(message.message));
        assert!(within(data, message.message));
        if let Some(sd) = message.structured_data {
            assert!(within(data, sd));
            walk_structured_data(sd, true);
        }
    }
});
