//! DLQ acknowledgement files are read back from disk: any bytes must give
//! "nothing handled" or a bitmap of exactly the records asked for, never a
//! panic. The records and fingerprint asked for are taken from the input's
//! own header, so that inputs get past the first checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use log_capturer::dlq::ack::{ACK_HEADER_BYTES, Fingerprint, decode};

fuzz_target!(|data: &[u8]| {
    if data.len() < ACK_HEADER_BYTES {
        assert!(decode(data, 0, Fingerprint::default()).is_none());
        return;
    }
    let u64_at = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    let fingerprint = Fingerprint {
        records: u64_at(24) % (1 << 24),
        checksum: u32::from_le_bytes(data[32..36].try_into().expect("4 bytes")),
    };
    if let Some(words) = decode(data, u64_at(16), fingerprint) {
        assert_eq!(words.len() as u64, fingerprint.records.div_ceil(64));
        let handled: u64 = words.iter().map(|word| u64::from(word.count_ones())).sum();
        assert!(handled <= fingerprint.records);
    }
});
