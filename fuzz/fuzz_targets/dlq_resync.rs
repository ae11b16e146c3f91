//! Resynchronising after damage: a segment body of records built from the
//! input is damaged at positions the input chooses; the scan must recover
//! exactly the records whose frames the damage did not touch, in order, and
//! nothing else, whether it reads the body whole or in chunks. Messages are
//! printable text, like log lines (a message that embeds an encoded frame
//! could legitimately be found by a resynchronising scan; the `dlq_record`
//! target covers arbitrary bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::dlq::record::{Reason, Record, encode_frame};
use log_capturer::dlq::scan::{ScanMode, scan_frames, scan_reader};

fuzz_target!(|data: &[u8]| {
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let record_count = usize::from(shape % 16) + 1;
    let chunk_bytes = usize::from(shape / 16) * 5 + 1;
    let split = rest.len() / 2;
    let (material, damage) = rest.split_at(split);
    let (body, ranges) = build_body(material, record_count);
    let mut damaged = body.clone();
    for operation in damage.chunks_exact(3) {
        let position =
            usize::from(u16::from_le_bytes([operation[0], operation[1]])) % damaged.len();
        damaged[position] ^= operation[2];
    }
    // Two flips of one byte may cancel out: a frame is damaged when its
    // bytes differ.
    let expected: Vec<u32> = (0..ranges.len())
        .filter(|&index| damaged[ranges[index].clone()] == body[ranges[index].clone()])
        .map(|index| index as u32)
        .collect();
    let mut whole = Vec::new();
    let summary = scan_frames(&damaged, &mut |records| {
        whole.extend(records.iter().map(|record| record.attempts))
    });
    assert_eq!(whole, expected, "{summary:?}");
    let mut chunked = Vec::new();
    let chunked_summary = scan_reader(
        &mut &damaged[..],
        damaged.len() as u64,
        chunk_bytes,
        ScanMode::Sealed,
        &mut |records| chunked.extend(records.iter().map(|record| record.attempts)),
    )
    .expect("a slice reads without error");
    assert_eq!(chunked_summary, summary, "chunks of {chunk_bytes} bytes");
    assert_eq!(chunked, whole);
});

/// Frames of `count` records whose printable messages are cut from
/// `material`, then a zero tail; returns the body and each frame's range.
fn build_body(material: &[u8], count: usize) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
    let mut body = Vec::new();
    let mut ranges = Vec::new();
    let mut frame = Vec::new();
    let per_record = material.len() / count;
    for index in 0..count {
        let message: Vec<u8> = material[index * per_record..(index + 1) * per_record]
            .iter()
            .map(|&byte| b' ' + byte % 95)
            .collect();
        let labels = if index % 2 == 0 {
            vec![("file", "/var/log/app.log")]
        } else {
            vec![]
        };
        encode_frame(
            &mut frame,
            &Record {
                timestamp_ns: 1_700_000_000_000_000_000,
                attempts: index as u32,
                reason: Reason::ALL[index % 4],
                terminated: index % 3 == 0,
                sink: "kafka",
                labels,
                message: &message,
            },
        );
        ranges.push(body.len()..body.len() + frame.len());
        body.extend_from_slice(&frame);
    }
    body.resize(body.len() + 64, 0);
    (body, ranges)
}
