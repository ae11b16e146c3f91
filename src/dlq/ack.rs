//! Acknowledgement files: which records of a segment a replay has already
//! handled (delivered, or moved to `rejected/`), so that a replay that
//! stops part-way (sink down, `kill -9`, shutdown) never sends them again.
//!
//! ```text
//! segment-0000000000000007.ack            (beside segment-...07.dlq)
//! +------------------------------------------------------------+ 0
//! | magic "LCDLQACK" | version u32 | crc32c u32 (of bytes 16..) |
//! | segment sequence u64 | records u64                          |
//! | fingerprint u32 | reserved u32 | full_words u64             |
//! +------------------------------------------------------------+ 48
//! | words full_words.. of the handled bitmap, u64 LE, up to the |
//! | last word with a bit set                                    |
//! +------------------------------------------------------------+
//! ```
//!
//! The bitmap has one bit per record (bit i set: the i-th record the scan
//! recovers was handled), `records.div_ceil(64)` words. Replay goes in
//! order, so handled records are a prefix plus a few beyond it: the words
//! of the prefix that are all ones are only counted (`full_words`, complete
//! words only), words after the last one with a bit set are left out, and a
//! file stays a few hundred bytes however large its segment.
//!
//! A record is identified by its position among the records a scan of the
//! sealed segment recovers. The file also stores how many records that scan
//! found and a fingerprint of them (CRC32C over each record's timestamp and
//! message length), and is only trusted when both match a fresh scan. So a
//! scan that recovers a different set of records (a reader that
//! resynchronises differently, a stale file of a deleted segment whose
//! sequence was reused) makes the file be ignored.
//!
//! Only a replay that holds the segment's exclusive `flock` reads or writes
//! its acknowledgement file (the auto-replay thread, or `dlq replay`); the
//! dispatcher only deletes stale ones. Memory: one bit per record, allocated
//! per replayed segment.
//!
//! Every doubt errs towards sending again, never towards losing: a missing,
//! torn, corrupt or mismatched file means "nothing handled yet", and the
//! records are replayed again (duplicates, not loss).
//!
//! Writes go to `segment-N.ack.tmp` and are renamed over the file, so a
//! crash leaves the old file or the new one. They are not fsynced: they
//! survive `kill -9` (the page cache keeps them); after a power loss the
//! records handled since the last write-back are sent again.
//!
//! Deletion order: the acknowledgement file is deleted before its segment,
//! so that no crash can leave a segment with another's acknowledgements
//! (the fingerprint guards that case too).

use std::path::{Path, PathBuf};

use crate::dlq::record::Record;

pub const ACK_MAGIC: &[u8; 8] = b"LCDLQACK";
pub const ACK_VERSION: u32 = 1;
pub const ACK_HEADER_BYTES: usize = 48;

/// Why an acknowledgement file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("DLQ acknowledgement file {path}: {action}: {source}")]
pub struct AckError {
    path: PathBuf,
    action: &'static str,
    #[source]
    source: std::io::Error,
}

/// The acknowledgement file of a segment (`segment-N.dlq` -> `segment-N.ack`).
pub fn ack_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension("ack")
}

fn temporary_path(path: &Path) -> PathBuf {
    path.with_extension("ack.tmp")
}

/// The identity of a segment's records as one scan recovered them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    pub records: u64,
    pub checksum: u32,
}

impl Fingerprint {
    /// Adds the next recovered record.
    pub fn add(&mut self, record: &Record<'_>) {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&record.timestamp_ns.to_le_bytes());
        bytes[8..].copy_from_slice(&(record.message.len() as u32).to_le_bytes());
        self.checksum = crc32c::crc32c_append(self.checksum, &bytes);
        self.records += 1;
    }
}

/// Which records of one segment were handled.
#[derive(Debug)]
pub struct AckState {
    path: PathBuf,
    sequence: u64,
    fingerprint: Fingerprint,
    /// One bit per record; `fingerprint.records.div_ceil(64)` words.
    words: Vec<u64>,
    handled: u64,
    /// Bits set since the last `save`.
    dirty: bool,
}

impl AckState {
    /// The state of segment `sequence` at `segment_path`, whose records a
    /// scan just fingerprinted: loaded from its file when that file is
    /// intact and matches, else "nothing handled".
    pub fn load(segment_path: &Path, sequence: u64, fingerprint: Fingerprint) -> Self {
        let path = ack_path(segment_path);
        let words_count = usize::try_from(fingerprint.records.div_ceil(64))
            .expect("a segment's record count fits memory");
        let mut state = Self {
            path,
            sequence,
            fingerprint,
            words: vec![0; words_count],
            handled: 0,
            dirty: false,
        };
        match std::fs::read(&state.path) {
            Ok(bytes) => match decode(&bytes, sequence, fingerprint) {
                Some(words) => {
                    state.handled = words.iter().map(|word| u64::from(word.count_ones())).sum();
                    state.words = words;
                }
                None => {
                    tracing::warn!(path = %state.path.display(), "DLQ acknowledgement file is damaged or belongs to other records; every record of its segment will be replayed");
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(path = %state.path.display(), %error, "DLQ acknowledgement file unreadable; every record of its segment will be replayed");
            }
        }
        state
    }

    pub fn records(&self) -> u64 {
        self.fingerprint.records
    }

    /// Records marked handled.
    pub fn handled(&self) -> u64 {
        self.handled
    }

    pub fn is_complete(&self) -> bool {
        self.handled == self.fingerprint.records
    }

    pub fn is_handled(&self, index: u64) -> bool {
        index < self.fingerprint.records
            && self.words[(index / 64) as usize] & (1 << (index % 64)) != 0
    }

    /// Marks record `index` handled.
    pub fn mark(&mut self, index: u64) {
        assert!(
            index < self.fingerprint.records,
            "record {index} of {}",
            self.fingerprint.records
        );
        let word = &mut self.words[(index / 64) as usize];
        let bit = 1 << (index % 64);
        if *word & bit == 0 {
            *word |= bit;
            self.handled += 1;
            self.dirty = true;
        }
    }

    /// Writes the file if anything was marked since the last write.
    pub fn save(&mut self) -> Result<(), AckError> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = encode(self.sequence, self.fingerprint, &self.words);
        let temporary = temporary_path(&self.path);
        let error = |action| {
            let path = self.path.clone();
            move |source| AckError {
                path,
                action,
                source,
            }
        };
        std::fs::write(&temporary, &bytes).map_err(error("write"))?;
        std::fs::rename(&temporary, &self.path).map_err(error("rename"))?;
        self.dirty = false;
        Ok(())
    }

    /// Deletes the file (before its segment is deleted).
    pub fn remove(&self) -> Result<(), AckError> {
        remove(&self.path).map_err(|source| AckError {
            path: self.path.clone(),
            action: "delete",
            source,
        })
    }
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Deletes the acknowledgement file of a segment, if any.
pub fn remove_for(segment_path: &Path) -> std::io::Result<()> {
    remove(&temporary_path(&ack_path(segment_path)))?;
    remove(&ack_path(segment_path))
}

/// Deletes acknowledgement files in `dir` whose segment is gone (left by a
/// crash between the two deletions) and temporary files of torn writes.
pub fn remove_orphans(dir: &Path) -> std::io::Result<u64> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let orphan = if let Some(stem) = name.strip_suffix(".ack.tmp") {
            stem.starts_with("segment-")
        } else if let Some(stem) = name.strip_suffix(".ack") {
            stem.starts_with("segment-") && !path.with_extension("dlq").exists()
        } else {
            false
        };
        if orphan {
            remove(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn encode(sequence: u64, fingerprint: Fingerprint, words: &[u64]) -> Vec<u8> {
    let complete_words = (fingerprint.records / 64) as usize;
    let full_words = words[..complete_words]
        .iter()
        .take_while(|&&word| word == u64::MAX)
        .count();
    let stored_end = words
        .iter()
        .rposition(|&word| word != 0)
        .map_or(full_words, |last| (last + 1).max(full_words));
    let stored = &words[full_words..stored_end];
    let mut bytes = Vec::with_capacity(ACK_HEADER_BYTES + stored.len() * 8);
    bytes.extend_from_slice(ACK_MAGIC);
    bytes.extend_from_slice(&ACK_VERSION.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&sequence.to_le_bytes());
    bytes.extend_from_slice(&fingerprint.records.to_le_bytes());
    bytes.extend_from_slice(&fingerprint.checksum.to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&(full_words as u64).to_le_bytes());
    assert_eq!(bytes.len(), ACK_HEADER_BYTES, "header layout");
    for word in stored {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    let checksum = crc32c::crc32c(&bytes[16..]);
    bytes[12..16].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

/// The bitmap of a file, if the file is intact and describes exactly these
/// records (public for the fuzz target: any bytes give `None` or a bitmap
/// of `fingerprint.records` bits, never a panic).
pub fn decode(bytes: &[u8], sequence: u64, fingerprint: Fingerprint) -> Option<Vec<u64>> {
    let words_count = usize::try_from(fingerprint.records.div_ceil(64)).ok()?;
    let stored_bytes = bytes.len().checked_sub(ACK_HEADER_BYTES)?;
    if stored_bytes % 8 != 0 || &bytes[0..8] != ACK_MAGIC {
        return None;
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let intact = u32_at(8) == ACK_VERSION && u32_at(12) == crc32c::crc32c(&bytes[16..]);
    let matches = u64_at(16) == sequence
        && u64_at(24) == fingerprint.records
        && u32_at(32) == fingerprint.checksum;
    if !(intact && matches) {
        return None;
    }
    let full_words = usize::try_from(u64_at(40)).ok()?;
    let complete_words = (fingerprint.records / 64) as usize;
    if full_words > complete_words || full_words + stored_bytes / 8 > words_count {
        return None;
    }
    let mut words = vec![u64::MAX; full_words];
    words.extend((0..stored_bytes / 8).map(|index| u64_at(ACK_HEADER_BYTES + index * 8)));
    words.resize(words_count, 0);
    // Bits past the last record would count records that do not exist.
    let tail_bits = fingerprint.records % 64;
    if tail_bits != 0 && words[words_count - 1] >> tail_bits != 0 {
        return None;
    }
    Some(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(records: u64) -> Fingerprint {
        let mut fingerprint = Fingerprint::default();
        for number in 0..records {
            fingerprint.add(&Record {
                timestamp_ns: number,
                attempts: 1,
                reason: crate::dlq::record::Reason::Shutdown,
                terminated: true,
                sink: "k",
                labels: vec![],
                message: b"x",
            });
        }
        fingerprint
    }

    #[test]
    fn marks_survive_a_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = dir.path().join("segment-0000000000000003.dlq");
        let mut state = AckState::load(&segment, 3, fingerprint(130));
        assert_eq!(state.handled(), 0);
        for index in [0, 63, 64, 129] {
            state.mark(index);
        }
        state.mark(64);
        state.save().expect("save");
        let state = AckState::load(&segment, 3, fingerprint(130));
        assert_eq!(state.handled(), 4);
        assert!(state.is_handled(129) && state.is_handled(63) && !state.is_handled(1));
        assert!(!state.is_complete());
    }

    /// Goal: a damaged or foreign file never marks a record handled.
    /// Method: every single-bit flip and every truncation of a valid file,
    /// and a file loaded for another sequence or other records.
    #[test]
    fn any_damage_or_mismatch_means_nothing_handled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = dir.path().join("segment-0000000000000001.dlq");
        let mut state = AckState::load(&segment, 1, fingerprint(100));
        for index in 0..50 {
            state.mark(index);
        }
        state.save().expect("save");
        let path = ack_path(&segment);
        let good = std::fs::read(&path).expect("read");
        for index in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[index] ^= 1 << bit;
                std::fs::write(&path, &bad).expect("write");
                let loaded = AckState::load(&segment, 1, fingerprint(100));
                assert_eq!(loaded.handled(), 0, "flip at {index} bit {bit}");
                let words = decode(&bad, 1, fingerprint(100));
                assert!(words.is_none(), "flip at {index} bit {bit}");
            }
        }
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).expect("write");
            assert_eq!(AckState::load(&segment, 1, fingerprint(100)).handled(), 0);
        }
        std::fs::write(&path, &good).expect("write");
        assert_eq!(AckState::load(&segment, 1, fingerprint(100)).handled(), 50);
        assert_eq!(AckState::load(&segment, 2, fingerprint(100)).handled(), 0);
        assert_eq!(AckState::load(&segment, 1, fingerprint(101)).handled(), 0);
        let mut other = fingerprint(100);
        other.checksum ^= 1;
        assert_eq!(AckState::load(&segment, 1, other).handled(), 0);
    }

    /// Goal: a file stays small for a large segment replayed in order, and
    /// every shape of bitmap (prefix, gaps, the last partial word) loads
    /// back as it was saved. Method: a million records, handled in order
    /// up to a point with a few gaps and the last record; then the prefix
    /// alone, nothing, and everything.
    #[test]
    fn files_stay_small_and_every_shape_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let segment = dir.path().join("segment-0000000000000009.dlq");
        let records = 1_000_001;
        // (handled, whether replay in order makes it: the file is small).
        let shapes: [(&dyn Fn(u64) -> bool, bool); 4] = [
            (
                &|index| index < 700_000 || (700_000..700_900).contains(&index) && index % 3 == 0,
                true,
            ),
            (&|index| index < 640_000 || index == records - 1, false),
            (&|_| false, true),
            (&|_| true, true),
        ];
        for (shape, small) in shapes {
            let _ = std::fs::remove_file(ack_path(&segment));
            let mut state = AckState::load(&segment, 9, fingerprint_of(records));
            let expected: Vec<u64> = (0..records).filter(|&index| shape(index)).collect();
            expected.iter().for_each(|&index| state.mark(index));
            state.save().expect("save");
            let bytes = std::fs::metadata(ack_path(&segment)).map_or(0, |meta| meta.len());
            assert!(!small || bytes <= 48 + 16 * 8, "{bytes} bytes");
            let loaded = AckState::load(&segment, 9, fingerprint_of(records));
            assert_eq!(loaded.handled(), expected.len() as u64);
            assert!(expected.iter().all(|&index| loaded.is_handled(index)));
        }
    }

    /// A fingerprint of `records` records without building them.
    fn fingerprint_of(records: u64) -> Fingerprint {
        Fingerprint {
            records,
            checksum: 7,
        }
    }

    #[test]
    fn orphans_and_temporaries_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = dir.path().join("segment-0000000000000001.dlq");
        std::fs::write(&kept, b"segment").expect("write");
        std::fs::write(ack_path(&kept), b"ack").expect("write");
        let gone = dir.path().join("segment-0000000000000002.dlq");
        std::fs::write(ack_path(&gone), b"ack").expect("write");
        std::fs::write(temporary_path(&ack_path(&kept)), b"torn").expect("write");
        assert_eq!(remove_orphans(dir.path()).expect("remove"), 2);
        assert!(ack_path(&kept).exists());
        assert!(!ack_path(&gone).exists());
    }
}
