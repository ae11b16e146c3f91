//! The DLQ decoder reads bytes from disk that may be torn or corrupt. Any
//! input must decode to records or errors, never panic; a decoded record
//! must encode back to the same frame; a segment scan must terminate, and
//! reading the bytes in chunks of any size must find exactly what a scan of
//! the whole finds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::dlq::record::{Frame, decode_frame, encode_frame};
use log_capturer::dlq::scan::{ScanMode, scan_frames, scan_reader};

fuzz_target!(|data: &[u8]| {
    if let Ok(Frame::Record(record, taken)) = decode_frame(data) {
        let mut again = Vec::new();
        encode_frame(&mut again, &record);
        assert_eq!(&again[..], &data[..taken]);
    }
    let mut whole = Vec::new();
    let summary = scan_frames(data, &mut |chunk| {
        whole.extend(chunk.iter().map(|record| format!("{record:?}")))
    });
    assert_eq!(summary.records, whole.len() as u64);
    let chunk_bytes = data.first().map_or(1, |&byte| usize::from(byte % 64) + 1);
    let mut chunked = Vec::new();
    let chunked_summary = scan_reader(
        &mut &data[..],
        data.len() as u64,
        chunk_bytes,
        ScanMode::Sealed,
        &mut |chunk| chunked.extend(chunk.iter().map(|record| format!("{record:?}"))),
    )
    .expect("a slice reads without error");
    assert_eq!(chunked_summary, summary, "chunks of {chunk_bytes} bytes");
    assert_eq!(chunked, whole, "chunks of {chunk_bytes} bytes");
});
