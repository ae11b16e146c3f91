//! A Loki answer (status, `Retry-After`, body) comes from the network.
//! Whatever its bytes, classifying it never panics, a `Retry-After` never
//! asks for more than `RETRY_AFTER_MAX`, and `total ignored: N out of M`
//! is only taken with N <= M.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::sink::loki::response::{
    Answer, RETRY_AFTER_MAX, classify, ignored_counts, parse_retry_after,
};

fuzz_target!(|data: &[u8]| {
    let Some((&status_byte, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&byte| byte == 0).unwrap_or(rest.len());
    let (retry_after, body) = rest.split_at(split);
    let status = [200, 204, 400, 401, 404, 413, 429, 500, 503, 599][status_byte as usize % 10];
    let now = i64::from(status_byte) * 1_000_000_007;
    if let Some(wait) = parse_retry_after(retry_after, now) {
        assert!(wait <= RETRY_AFTER_MAX);
    }
    if let Some((ignored, total)) = ignored_counts(body) {
        assert!(ignored <= total);
    }
    match classify(status, Some(retry_after), body, now) {
        Answer::Accepted => assert!((200..300).contains(&status)),
        Answer::Retry { after, .. } => assert!(after.is_none_or(|wait| wait <= RETRY_AFTER_MAX)),
        Answer::Refused { .. } => assert!(status == 400 || status == 413),
    }
});
