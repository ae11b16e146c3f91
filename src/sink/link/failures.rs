//! Which entries of a batch a sink failed to deliver.
//!
//! A report says only "failed"; the entries are in a table shared by one
//! sink (writer) and the stage that handed it the batch (reader: the
//! dispatcher, or the replay stage), indexed by the batch's slot: one
//! bitmap of failed entries and one of entries that failed for good (not
//! worth retrying). It is allocated at start-up for every slot of the
//! sink's lanes ([`super::SlotPlan::slots_total`]) of `batch_size` entries,
//! so a failure costs no allocation however many entries fail. An entry
//! that failed for good also carries why (a [`Rejection`], one byte per
//! entry), so that the reader can store it in the sink's `rejected/`
//! segments with that reason.
//!
//! Protocol: the sink clears a slot's bits when it starts on a batch, marks
//! entries while delivery reports come in, and then pushes its report. The
//! ring push is a release and the reader's pop an acquire, so the reader
//! reads the finished bits. A slot is reused only after the reader has
//! completed the batch, so the sink never clears bits that are still being
//! read. The bits themselves are `Relaxed` atomics: the ring provides the
//! ordering.
//!
//! A sink that sends an entry with a time of its own (Loki raises equal
//! times of one stream so that none is taken for a duplicate) keeps that
//! time here too, per entry ([`FailureTable::with_sent_timestamps`]), so
//! that a stored entry carries the time it was sent with and a replay sends
//! it again unchanged. Other sinks pay nothing for it.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Why an entry failed for good: retrying the same message cannot help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Rejection {
    /// The encoded message is longer than the sink's message limit.
    TooLarge = 1,
    /// Not authorized for the topic or the cluster.
    NotAuthorized = 2,
    /// The topic is invalid.
    InvalidTopic = 3,
    /// Any other error that retrying cannot fix.
    Refused = 4,
    /// The entry's time is older than the destination accepts.
    TooOld = 5,
    /// The entry's time is further ahead than the destination accepts.
    TooNew = 6,
    /// The line is longer than the destination accepts.
    LineTooLong = 7,
    /// The destination refuses the entry's labels.
    InvalidLabels = 8,
}

impl Rejection {
    fn from_code(code: u8) -> Rejection {
        match code {
            1 => Rejection::TooLarge,
            2 => Rejection::NotAuthorized,
            3 => Rejection::InvalidTopic,
            5 => Rejection::TooOld,
            6 => Rejection::TooNew,
            7 => Rejection::LineTooLong,
            8 => Rejection::InvalidLabels,
            _ => Rejection::Refused,
        }
    }
}

/// Failed and permanent-failure bitmaps, one pair per slot, and the
/// rejection of each permanently failed entry.
#[derive(Debug)]
pub struct FailureTable {
    entries_per_slot: usize,
    words_per_slot: usize,
    failed: Box<[AtomicU64]>,
    permanent: Box<[AtomicU64]>,
    /// `Rejection` code per entry (`slot * entries_per_slot + entry`);
    /// meaningful only while the entry's permanent bit is set.
    rejections: Box<[AtomicU8]>,
    /// The time each entry was sent with, when the sink chose one; empty
    /// for a sink that sends entries with their own time. 0 means unset.
    sent_ns: Box<[AtomicU64]>,
}

impl FailureTable {
    pub fn new(slots: usize, entries_per_slot: usize) -> Self {
        assert!(
            slots > 0 && entries_per_slot > 0,
            "slots={slots} entries={entries_per_slot}"
        );
        let words_per_slot = entries_per_slot.div_ceil(64);
        let words = || {
            (0..slots * words_per_slot)
                .map(|_| AtomicU64::new(0))
                .collect()
        };
        Self {
            entries_per_slot,
            words_per_slot,
            failed: words(),
            permanent: words(),
            rejections: (0..slots * entries_per_slot)
                .map(|_| AtomicU8::new(0))
                .collect(),
            sent_ns: Box::new([]),
        }
    }

    /// A table that also keeps the time each entry was sent with.
    pub fn with_sent_timestamps(slots: usize, entries_per_slot: usize) -> Self {
        Self {
            sent_ns: (0..slots * entries_per_slot)
                .map(|_| AtomicU64::new(0))
                .collect(),
            ..Self::new(slots, entries_per_slot)
        }
    }

    /// Whether the table keeps sent times.
    pub fn keeps_sent_timestamps(&self) -> bool {
        !self.sent_ns.is_empty()
    }

    /// Records the time an entry is sent with (in a table that keeps them).
    pub fn set_sent_timestamp(&self, slot: usize, entry: usize, timestamp_ns: u64) {
        debug_assert!(timestamp_ns != 0, "0 means unset");
        self.sent_ns[slot * self.entries_per_slot + entry].store(timestamp_ns, Ordering::Relaxed);
    }

    /// Forgets the sent times of a slot (by the producer, before it hands
    /// the sink a new batch in that slot). Nothing for a table that keeps
    /// none.
    pub fn forget_sent_timestamps(&self, slot: usize) {
        if self.sent_ns.is_empty() {
            return;
        }
        let range = slot * self.entries_per_slot..(slot + 1) * self.entries_per_slot;
        for sent in &self.sent_ns[range] {
            sent.store(0, Ordering::Relaxed);
        }
    }

    /// The time an entry was sent with, if the sink chose one.
    pub fn sent_timestamp(&self, slot: usize, entry: usize) -> Option<u64> {
        let stored = self
            .sent_ns
            .get(slot * self.entries_per_slot + entry)?
            .load(Ordering::Relaxed);
        (stored != 0).then_some(stored)
    }

    pub fn entries_per_slot(&self) -> usize {
        self.entries_per_slot
    }

    /// Slots the table covers.
    pub fn slots(&self) -> usize {
        self.failed.len() / self.words_per_slot
    }

    fn word(&self, slot: usize, entry: usize) -> (usize, u64) {
        debug_assert!(
            entry < self.entries_per_slot,
            "entry={entry} max={}",
            self.entries_per_slot
        );
        (
            slot * self.words_per_slot + entry / 64,
            1u64 << (entry % 64),
        )
    }

    /// Forgets the marks of a slot before a new batch uses it.
    pub fn clear(&self, slot: usize) {
        let range = slot * self.words_per_slot..(slot + 1) * self.words_per_slot;
        for index in range {
            self.failed[index].store(0, Ordering::Relaxed);
            self.permanent[index].store(0, Ordering::Relaxed);
        }
    }

    /// Marks an entry failed; `retryable` false marks it failed for good.
    pub fn mark(&self, slot: usize, entry: usize, retryable: bool) {
        let (index, bit) = self.word(slot, entry);
        self.failed[index].fetch_or(bit, Ordering::Relaxed);
        if !retryable {
            self.permanent[index].fetch_or(bit, Ordering::Relaxed);
            self.rejections[slot * self.entries_per_slot + entry]
                .store(Rejection::Refused as u8, Ordering::Relaxed);
        }
    }

    /// Marks an entry failed for good, and why.
    pub fn mark_rejected(&self, slot: usize, entry: usize, rejection: Rejection) {
        self.mark(slot, entry, false);
        self.rejections[slot * self.entries_per_slot + entry]
            .store(rejection as u8, Ordering::Relaxed);
    }

    /// Why a permanently failed entry failed (`Refused` when it was marked
    /// without a reason).
    pub fn rejection(&self, slot: usize, entry: usize) -> Rejection {
        debug_assert!(
            entry < self.entries_per_slot,
            "entry={entry} max={}",
            self.entries_per_slot
        );
        Rejection::from_code(
            self.rejections[slot * self.entries_per_slot + entry].load(Ordering::Relaxed),
        )
    }

    /// Forgets one entry's mark (it was dealt with: sent again, or stored).
    pub fn unmark(&self, slot: usize, entry: usize) {
        let (index, bit) = self.word(slot, entry);
        self.failed[index].fetch_and(!bit, Ordering::Relaxed);
        self.permanent[index].fetch_and(!bit, Ordering::Relaxed);
    }

    pub fn is_failed(&self, slot: usize, entry: usize) -> bool {
        let (index, bit) = self.word(slot, entry);
        self.failed[index].load(Ordering::Relaxed) & bit != 0
    }

    pub fn is_permanent(&self, slot: usize, entry: usize) -> bool {
        let (index, bit) = self.word(slot, entry);
        self.permanent[index].load(Ordering::Relaxed) & bit != 0
    }

    /// Indices of the failed entries of a slot, in order.
    pub fn failed_entries(&self, slot: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.entries_per_slot).filter(move |&entry| self.is_failed(slot, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_per_slot_and_cleared() {
        let table = FailureTable::new(3, 130);
        for entry in [0, 63, 64, 129] {
            table.mark(1, entry, entry != 64);
        }
        assert_eq!(
            table.failed_entries(1).collect::<Vec<_>>(),
            vec![0, 63, 64, 129]
        );
        assert!(table.is_permanent(1, 64));
        assert!(!table.is_permanent(1, 63));
        assert_eq!(table.failed_entries(0).count(), 0);
        assert_eq!(table.failed_entries(2).count(), 0);
        assert_eq!(table.rejection(1, 64), Rejection::Refused);
        table.mark_rejected(2, 129, Rejection::TooLarge);
        assert!(table.is_permanent(2, 129));
        assert_eq!(table.rejection(2, 129), Rejection::TooLarge);
        table.clear(1);
        assert_eq!(table.failed_entries(1).count(), 0);
        assert!(!table.is_permanent(1, 64));
        assert_eq!(table.sent_timestamp(1, 0), None, "not kept");
    }

    #[test]
    fn sent_timestamps_are_kept_per_entry() {
        let table = FailureTable::with_sent_timestamps(2, 10);
        assert!(table.keeps_sent_timestamps());
        assert_eq!(table.sent_timestamp(1, 9), None);
        table.set_sent_timestamp(1, 9, 42);
        table.set_sent_timestamp(0, 9, 7);
        assert_eq!(table.sent_timestamp(1, 9), Some(42));
        table.forget_sent_timestamps(1);
        assert_eq!(table.sent_timestamp(1, 9), None);
        assert_eq!(table.sent_timestamp(0, 9), Some(7), "other slots kept");
        FailureTable::new(1, 1).forget_sent_timestamps(0);
    }
}
