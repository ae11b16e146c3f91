//! Position files are read back from disk after crashes, power losses and
//! stray edits: any bytes must decode without a panic, and only to records
//! the encoder can write again. Re-encoding what was decoded and decoding
//! that must give the same records and nothing unusable; when the input
//! itself decoded cleanly, re-encoding must give back the input exactly (the
//! format is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::source::positions::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let first = decode(data);
    let mut encoded = Vec::new();
    encode(&first.records, &mut encoded);
    if first.unusable.is_empty() {
        assert_eq!(encoded, data, "a clean decode re-encodes to its input");
    }
    let second = decode(&encoded);
    assert!(second.unusable.is_empty(), "{:?}", second.unusable);
    assert_eq!(second.records, first.records);
});
