//! The v2 DLQ decoder reads compressed blocks from disk that may be torn
//! or corrupt. Any input must give records or errors, never a panic, and
//! the first byte chooses what the rest is:
//! * 0: a segment body: checked as a block, scanned whole and in chunks
//!   (which must agree), every block's records decoded;
//! * 1: a block payload as it is after decompression, decoded directly (the
//!   payload parser sees arbitrary bytes without the fuzzer having to find
//!   a checksum);
//! * 2: the same payload compressed into a block with a valid header and
//!   checksum, so that the whole decode path runs on it.
//!
//! Whatever decodes must encode again into a block that decodes to the same
//! records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::dlq::block::{
    BLOCK_VERSION, BlockBuilder, BlockDecoder, CODEC_ZSTD, check_block, decode_payload,
};
use log_capturer::dlq::record::Record;
use log_capturer::dlq::scan::{ScanMode, scan_blocks, scan_blocks_reader};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => body(rest),
        1 => payload(rest),
        _ => compressed(rest),
    }
});

fn body(data: &[u8]) {
    if let Ok(block) = check_block(data) {
        let _ = BlockDecoder::new().decode(&block, &mut |records| round_trip(records));
    }
    let mut whole = Vec::new();
    let summary = scan_blocks(data, &mut |records| {
        whole.extend(records.iter().map(|record| format!("{record:?}")))
    });
    assert_eq!(summary.records, whole.len() as u64);
    let chunk_bytes = data.first().map_or(1, |&byte| usize::from(byte % 64) + 1);
    let mut chunked = Vec::new();
    let chunked_summary = scan_blocks_reader(
        &mut &data[..],
        data.len() as u64,
        chunk_bytes,
        ScanMode::Sealed,
        &mut |records| chunked.extend(records.iter().map(|record| format!("{record:?}"))),
    )
    .expect("a slice reads without error");
    assert_eq!(chunked_summary, summary, "chunks of {chunk_bytes} bytes");
    assert_eq!(chunked, whole, "chunks of {chunk_bytes} bytes");
}

/// The record count to try with a payload: from its first bytes.
fn count_of(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((&count, rest)) => (usize::from(count) + 1, rest),
        None => (1, data),
    }
}

fn payload(data: &[u8]) {
    let (count, payload) = count_of(data);
    let mut records = Vec::new();
    if decode_payload(payload, count, &mut records).is_ok() {
        assert_eq!(records.len(), count);
        round_trip(&records);
    }
}

fn compressed(data: &[u8]) {
    let (count, payload) = count_of(data);
    let compressed = zstd::bulk::compress(payload, 1).expect("zstd compresses");
    let mut frame = Vec::new();
    let body_bytes = 12 + compressed.len();
    frame.extend_from_slice(&(body_bytes as u32).to_le_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(&[BLOCK_VERSION, CODEC_ZSTD, 0, 0]);
    frame.extend_from_slice(&(count as u32).to_le_bytes());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&compressed);
    let checksum = crc32c::crc32c(&frame[8..]);
    frame[4..8].copy_from_slice(&checksum.to_le_bytes());
    if let Ok(block) = check_block(&frame) {
        let _ = BlockDecoder::new().decode(&block, &mut |records| round_trip(records));
    }
}

/// Encodes decoded records into a block again: it must decode to them.
fn round_trip(records: &[Record<'_>]) {
    let Some(first) = records.first() else {
        return;
    };
    let mut builder = BlockBuilder::new();
    for record in records {
        // A block holds one sink's records.
        let record = Record {
            sink: first.sink,
            ..record.clone()
        };
        builder.add(&record);
    }
    let mut frame = Vec::new();
    builder.finish(&mut frame);
    let block = check_block(&frame).expect("a fresh block checks");
    let mut again = Vec::new();
    BlockDecoder::new()
        .decode(&block, &mut |decoded| again.extend(decoded.iter().map(|r| format!("{r:?}"))))
        .expect("a fresh block decodes");
    let expected: Vec<String> = records
        .iter()
        .map(|record| {
            format!(
                "{:?}",
                Record {
                    sink: first.sink,
                    ..record.clone()
                }
            )
        })
        .collect();
    assert_eq!(again, expected);
}
