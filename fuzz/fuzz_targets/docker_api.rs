//! The Engine API client decodes what arrives on dockerd's socket: whole
//! responses (head, chunked or plain body) and the chunked event stream.
//! Whatever the bytes, and however they are cut into reads: no panic, a
//! body is never longer than its response, only container events come
//! out, and feeding the stream in two parts gives the same events as
//! feeding it whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::source::docker::api::{EventDecoder, FeedError, parse_response};

fn feed_all(parts: &[&[u8]]) -> (Vec<(String, String, String)>, Option<FeedError>) {
    let mut decoder = EventDecoder::default();
    let mut events = Vec::new();
    for part in parts {
        if let Err(error) = decoder.feed(part, &mut events) {
            let seen = events.iter().map(|event| (event.kind.clone(), event.action.clone(), event.actor.id.clone()));
            return (seen.collect(), Some(error));
        }
    }
    let seen = events.iter().map(|event| (event.kind.clone(), event.action.clone(), event.actor.id.clone()));
    (seen.collect(), None)
}

fuzz_target!(|data: &[u8]| {
    if let Ok((_, body)) = parse_response(data) {
        assert!(body.len() <= data.len(), "a body is never longer than its response");
    }
    if data.is_empty() {
        return;
    }
    let cut = usize::from(data[0]) * data.len() / 256;
    let body = &data[1..];
    let cut = cut.min(body.len());
    let (whole, whole_error) = feed_all(&[body]);
    let (parts, parts_error) = feed_all(&[&body[..cut], &body[cut..]]);
    assert!(whole.iter().all(|event| event.0 == "container"));
    if whole_error.is_none() && parts_error.is_none() {
        assert_eq!(whole, parts, "events do not depend on how the bytes were read");
    }
});
