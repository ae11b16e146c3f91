//! The DLQ decoder reads bytes from disk that may be torn or corrupt. Any
//! input must decode to records or errors, never panic; a decoded record
//! must encode back to the same frame; a segment scan must terminate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::dlq::record::{Frame, decode_frame, encode_frame};
use log_capturer::dlq::segment::scan_frames;

fuzz_target!(|data: &[u8]| {
    if let Ok(Frame::Record(record, taken)) = decode_frame(data) {
        let mut again = Vec::new();
        encode_frame(&mut again, &record);
        assert_eq!(&again[..], &data[..taken]);
    }
    let mut records = 0u64;
    let summary = scan_frames(data, &mut |chunk| records += chunk.len() as u64);
    assert_eq!(summary.records, records);
});
