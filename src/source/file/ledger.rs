//! What a file source knows of its files' positions: one entry per file it
//! follows or has followed, by device and inode, with the offset up to which
//! the file's lines are delivered (every sink acknowledged them, or they are
//! in its DLQ).
//!
//! Thread: the source thread. The entries come from the position file at
//! start-up and from the files the source opens; an offset moves only when
//! a receipt comes back from the dispatcher (see `dispatch`), and only for
//! the reading (`serial`) of the file that the receipt names, so receipts
//! of a file's content before a truncation are ignored.
//!
//! Limits: one entry per file seen in the last `positions_forget_after_ms`;
//! a file gone for longer is forgotten (it would be read from its start if
//! it came back). Allocations: an entry per new file, and the record list
//! of each write (once per `positions_interval_ms`, only when something
//! changed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::source::Receipt;
use crate::source::positions::{FileIdentity, PositionRecord};

/// Device and inode.
pub type FileKey = (u64, u64);

/// The position of one file.
#[derive(Debug, Clone)]
pub struct Position {
    /// The reading of the file that receipts must name; 0 for an entry
    /// loaded from disk and not followed yet.
    pub serial: u64,
    pub identity: FileIdentity,
    pub path: PathBuf,
    /// Offset of the first byte not known to be delivered.
    pub delivered: u64,
    /// When the file was last seen at a followed path, ns since the epoch.
    pub seen_at_ns: u64,
}

/// The positions of one source.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<FileKey, Position>,
    /// Something changed since the last write.
    dirty: bool,
    /// A delivered offset moved since the last write.
    moved: bool,
    /// Bytes the delivered offsets moved since the last write.
    moved_bytes: u64,
}

impl Ledger {
    /// Starts from the records a position file held.
    pub fn from_records(records: Vec<PositionRecord>) -> Self {
        let entries = records
            .into_iter()
            .map(|record| {
                let key = (record.identity.device, record.identity.inode);
                let position = Position {
                    serial: 0,
                    identity: record.identity,
                    path: record.path,
                    delivered: record.offset,
                    seen_at_ns: record.seen_at_ns,
                };
                (key, position)
            })
            .collect();
        Self {
            entries,
            dirty: false,
            moved: false,
            moved_bytes: 0,
        }
    }

    pub fn get(&self, key: FileKey) -> Option<&Position> {
        self.entries.get(&key)
    }

    /// Records that the source now reads `key` as `serial` from `offset`.
    pub fn follow(&mut self, key: FileKey, position: Position) {
        self.entries.insert(key, position);
        self.dirty = true;
    }

    /// Drops a file's position (it was deleted).
    pub fn forget(&mut self, key: FileKey) {
        if self.entries.remove(&key).is_some() {
            self.dirty = true;
        }
    }

    /// A new fingerprint once the file has more of its first bytes.
    pub fn refingerprint(&mut self, key: FileKey, identity: FileIdentity) {
        if let Some(position) = self.entries.get_mut(&key) {
            position.identity = identity;
            self.dirty = true;
        }
    }

    /// The file was seen at a followed path now.
    pub fn seen(&mut self, key: FileKey, now_ns: u64) {
        if let Some(position) = self.entries.get_mut(&key) {
            position.seen_at_ns = now_ns;
        }
    }

    /// Applies a receipt from the dispatcher. Returns the new delivered
    /// offset if it moved.
    pub fn commit(&mut self, receipt: Receipt) -> Option<u64> {
        let position = self.entries.get_mut(&(receipt.device, receipt.inode))?;
        if position.serial != receipt.serial || receipt.end_offset <= position.delivered {
            return None;
        }
        self.moved_bytes += receipt.end_offset - position.delivered;
        position.delivered = receipt.end_offset;
        self.dirty = true;
        self.moved = true;
        Some(position.delivered)
    }

    /// Forgets files not seen for `forget_after` and not followed now.
    pub fn forget_gone(
        &mut self,
        now_ns: u64,
        forget_after: Duration,
        followed: impl Fn(FileKey) -> bool,
    ) -> usize {
        let before = self.entries.len();
        let forget_ns = u64::try_from(forget_after.as_nanos()).unwrap_or(u64::MAX);
        self.entries.retain(|&key, position| {
            followed(key) || now_ns.saturating_sub(position.seen_at_ns) < forget_ns
        });
        let forgotten = before - self.entries.len();
        if forgotten > 0 {
            self.dirty = true;
        }
        forgotten
    }

    /// The records to write, if anything changed since the last call.
    pub fn take_changes(&mut self, records: &mut Vec<PositionRecord>) -> bool {
        if !self.dirty {
            return false;
        }
        self.dirty = false;
        self.moved = false;
        self.moved_bytes = 0;
        records.clear();
        records.extend(self.entries.values().map(|position| PositionRecord {
            identity: position.identity,
            path: position.path.clone(),
            offset: position.delivered,
            seen_at_ns: position.seen_at_ns,
        }));
        true
    }

    /// Whether a delivered offset moved since the last write.
    pub fn has_moved(&self) -> bool {
        self.moved
    }

    /// Bytes the delivered offsets moved since the last write.
    pub fn moved_bytes(&self) -> u64 {
        self.moved_bytes
    }

    /// Whether something changed since the last write.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the ledger changed again (a write failed).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(inode: u64) -> FileIdentity {
        FileIdentity {
            device: 1,
            inode,
            fingerprint: 7,
            fingerprint_bytes: 10,
        }
    }

    fn followed(ledger: &mut Ledger, inode: u64, serial: u64, offset: u64) {
        ledger.follow(
            (1, inode),
            Position {
                serial,
                identity: identity(inode),
                path: PathBuf::from(format!("/f{inode}")),
                delivered: offset,
                seen_at_ns: 100,
            },
        );
    }

    /// Goal: receipts move a position forward only, and only for the
    /// reading they name.
    #[test]
    fn receipts_of_another_reading_are_ignored() {
        let mut ledger = Ledger::default();
        followed(&mut ledger, 5, 2, 0);
        let receipt = |serial, end_offset| Receipt {
            device: 1,
            inode: 5,
            serial,
            end_offset,
        };
        assert_eq!(ledger.commit(receipt(2, 40)), Some(40));
        assert_eq!(ledger.commit(receipt(1, 90)), None, "an old reading");
        assert_eq!(ledger.commit(receipt(2, 30)), None, "never backwards");
        let mut records = Vec::new();
        assert!(ledger.take_changes(&mut records));
        assert_eq!(records[0].offset, 40);
        assert!(!ledger.take_changes(&mut records), "nothing new");
    }

    #[test]
    fn gone_files_are_forgotten_after_the_delay() {
        let mut ledger = Ledger::default();
        followed(&mut ledger, 1, 1, 0);
        followed(&mut ledger, 2, 2, 0);
        let forgotten = ledger.forget_gone(100 + 5_000_000_000, Duration::from_secs(5), |key| {
            key == (1, 2)
        });
        assert_eq!(forgotten, 1);
        assert!(ledger.get((1, 1)).is_none());
        assert!(ledger.get((1, 2)).is_some(), "followed files stay");
    }
}
