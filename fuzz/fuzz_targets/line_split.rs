//! The line splitter reads raw file bytes. Whatever the bytes, the spans
//! rebuild the input exactly (raw encoding), every span is within
//! `max_line_bytes`, and the terminated spans equal the newlines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::source::{SplitOptions, split_lines};

fuzz_target!(|input: (u8, u8, &[u8])| {
    let (max, spans_max, data) = input;
    let options = SplitOptions {
        max_line_bytes: usize::from(max % 16) + 1,
        spans_max: usize::from(spans_max % 8) + 1,
        flush_tail: true,
    };
    let mut rebuilt = Vec::new();
    let mut offset = 0;
    let mut terminated = 0;
    while offset < data.len() {
        let mut spans = Vec::new();
        let outcome = split_lines(&data[offset..], &mut spans, options);
        assert!(outcome.consumed > 0, "progress on non-empty input");
        for span in &spans {
            assert!(span.len as usize <= options.max_line_bytes);
            let start = offset + span.start as usize;
            rebuilt.extend_from_slice(&data[start..start + span.len as usize]);
            if span.terminated {
                rebuilt.push(b'\n');
                terminated += 1;
            }
        }
        offset += outcome.consumed;
    }
    assert_eq!(rebuilt, data);
    assert_eq!(terminated, data.iter().filter(|&&byte| byte == b'\n').count());
});
