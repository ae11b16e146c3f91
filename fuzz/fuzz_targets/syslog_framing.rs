//! The TCP framer reads bytes straight from the network. Whatever the
//! bytes and however they are cut into reads, it makes progress, never
//! returns a frame longer than `max_message_bytes` or outside what it
//! consumed, and frames the same messages as when the bytes come at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::source::syslog::{Framer, Step};

/// Frames `data`, fed in pieces whose sizes cycle through `cuts`.
fn frame(data: &[u8], cuts: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut framer = Framer::new(max);
    let mut buffer: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut cut = 0;
    loop {
        let at_end = fed == data.len();
        match framer.next(&buffer, at_end) {
            Step::Frame {
                start,
                len,
                consumed,
                ..
            } => {
                assert!(len <= max, "frame of {len} bytes, bound {max}");
                assert!(start + len <= consumed && consumed <= buffer.len());
                assert!(consumed > 0);
                frames.push(buffer[start..start + len].to_vec());
                buffer.drain(..consumed);
            }
            Step::Skipped { consumed } => {
                assert!(consumed > 0 && consumed <= buffer.len());
                buffer.drain(..consumed);
            }
            Step::NeedMore if at_end => {
                assert!(buffer.is_empty(), "at the end every byte is consumed");
                return frames;
            }
            Step::NeedMore => {
                let piece = cuts.get(cut % cuts.len().max(1)).map_or(data.len(), |&size| usize::from(size) + 1);
                cut += 1;
                let next = (fed + piece).min(data.len());
                buffer.extend_from_slice(&data[fed..next]);
                fed = next;
            }
        }
        // Fed in pieces, the framer holds at most one message, its header
        // and one piece.
        if !cuts.is_empty() {
            assert!(buffer.len() <= max + 16 + 256, "buffer grew to {}", buffer.len());
        }
    }
}

fuzz_target!(|input: (u8, &[u8], &[u8])| {
    let (max, cuts, data) = input;
    let max = usize::from(max) + 1;
    let whole = frame(data, &[], max);
    let pieces = frame(data, cuts, max);
    assert_eq!(whole, pieces, "framing depends on how the bytes were cut");
});
