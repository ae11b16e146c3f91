//! Batches: entries built in one `bumpalo` arena, sealed, and shared
//! read-only by every sink.
//!
//! ```text
//!  arena pool (dispatcher) ──► OpenBatch ──seal──► Arc<SealedBatch> ──► every sink ring
//!        ▲                                                │
//!        └──── reset ◄── Arc::try_unwrap ◄── all sinks reported back
//! ```
//!
//! An [`OpenBatch`] owns a [`Bump`]. Each pushed line is copied into the
//! arena once; its label set is copied once per run of entries with equal
//! labels (a file's lines, a syslog sender's messages); the entry table itself is an arena vector allocated at open with
//! room for `batch_size` entries. Sealing freezes the batch: a
//! [`SealedBatch`] hands out only shared slices and never the arena, so every
//! sink can read it through one `Arc` at the same time. When the last sink
//! has reported back, the dispatcher holds the only reference,
//! [`SealedBatch::into_arena`] takes the arena back, resets it and returns it
//! to the pool.
//!
//! Allocation: the arenas are allocated at start-up with room for a full
//! batch. `reset` keeps the largest chunk, so after a warm-up a batch
//! allocates only its self-referential cell and its `Arc` (two allocations
//! per batch, not per line).

use std::time::Instant;

use bumpalo::Bump;
use bumpalo::collections::Vec as ArenaVec;
use self_cell::self_cell;

use std::sync::Arc;

use std::collections::HashMap;

use crate::labels::{Label, LabelSet, Symbol, SymbolTable};

/// Index of a stream (one file of one source) in the pipeline's stream
/// table, which holds its label set.
pub type StreamId = u32;

/// Index of a source: its position among the config's sources
/// (`Config::sources`, in id order). Sinks choose the entries they take by
/// it (`inputs`, see `sink::link::SourceSet`).
pub type SourceIndex = u16;

/// The source index of an entry read back from a DLQ: it comes from no live
/// source and is addressed to one sink already, which always takes it.
pub const SOURCE_REPLAYED: SourceIndex = SourceIndex::MAX;

const _: () = assert!(crate::limits::SOURCES_MAX <= SOURCE_REPLAYED as usize);

/// One log line in a batch, borrowed from the batch's arena.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'arena> {
    /// The line as read, without its `\n`.
    pub line: &'arena [u8],
    /// The labels of the line's stream, sorted by key.
    pub labels: &'arena [Label],
    /// When the line was read, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The line ended with `\n` in the input (see `source::split`).
    pub terminated: bool,
    /// The source the line was read by, or [`SOURCE_REPLAYED`]. It sits
    /// in the padding after `terminated`: the entry is no larger for it.
    pub source: SourceIndex,
}

// An entry is 48 bytes on 64-bit targets, and `source` did not change that:
// the arena of a full batch is sized by it (`arena_capacity_bytes`).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Entry<'static>>() == 48);

/// The entry table of a batch and the label slice of the last entry,
/// reused while consecutive entries carry the same labels.
#[derive(Debug)]
pub struct BatchEntries<'arena> {
    entries: ArenaVec<'arena, Entry<'arena>>,
    last_labels: Option<&'arena [Label]>,
}

self_cell!(
    struct BatchCell {
        owner: Bump,

        #[covariant]
        dependent: BatchEntries,
    }

    impl {Debug}
);

/// Drops a batch's entry table and returns its arena, reset.
fn reset_arena(cell: BatchCell) -> Bump {
    let mut arena = cell.into_owner();
    arena.reset();
    arena
}

/// Sizes an arena so that a full batch fits in its first chunk.
pub fn arena_capacity_bytes(batch_size: usize, batch_bytes: usize) -> usize {
    batch_bytes + batch_size * (std::mem::size_of::<Entry<'static>>() + 16)
}

/// An arena back from a batch, ready for the next: as it is, unless a
/// batch of unusually long lines grew it past twice `capacity_bytes` (a
/// reset keeps the largest chunk), in which case it is dropped and a fresh
/// one of `capacity_bytes` takes its place, so that a burst of 16 MiB
/// syslog messages does not leave every arena of the pool that large.
pub fn reclaim_arena(arena: Bump, capacity_bytes: usize) -> Bump {
    if arena.allocated_bytes() > 2 * capacity_bytes {
        Bump::with_capacity(capacity_bytes)
    } else {
        arena
    }
}

/// A batch being filled by the dispatcher.
#[derive(Debug)]
pub struct OpenBatch {
    cell: BatchCell,
    entries_max: usize,
    /// The table the entries' label symbols come from.
    symbols: Arc<SymbolTable>,
    /// Label values of this batch that the table had no room for, and
    /// where each one is in that list: a flood of distinct values (one
    /// host name per message) costs a lookup each, not a scan.
    inline: Vec<Box<str>>,
    inline_index: HashMap<Box<str>, usize>,
    bytes: usize,
    opened_at: Instant,
    /// Earliest read time of an entry, nanoseconds since the epoch.
    read_ns_oldest: u64,
}

impl OpenBatch {
    /// Opens a batch in `arena`, which must be empty (fresh or reset), for
    /// entries whose labels are symbols of `symbols` (the pipeline's table
    /// for live traffic, a replay step's own for DLQ records).
    pub fn new(arena: Bump, entries_max: usize, symbols: Arc<SymbolTable>) -> Self {
        assert!(entries_max > 0, "batch_size is validated non-zero");
        let cell = BatchCell::new(arena, |arena| BatchEntries {
            entries: ArenaVec::with_capacity_in(entries_max, arena),
            last_labels: None,
        });
        Self {
            cell,
            entries_max,
            symbols,
            inline: Vec::new(),
            inline_index: HashMap::new(),
            bytes: 0,
            opened_at: Instant::now(),
            read_ns_oldest: u64::MAX,
        }
    }

    /// Copies one line of `source` into the arena. The caller seals the
    /// batch when [`is_full`](Self::is_full) says so; pushing past
    /// `entries_max` is a bug.
    pub fn push(
        &mut self,
        line: &[u8],
        labels: &[Label],
        source: SourceIndex,
        timestamp_ns: u64,
        terminated: bool,
    ) {
        debug_assert!(
            self.len() < self.entries_max,
            "len={} max={}",
            self.len(),
            self.entries_max
        );
        if self.is_empty() {
            self.opened_at = Instant::now();
        }
        self.cell.with_dependent_mut(|arena, batch| {
            // Comparing a handful of symbol pairs costs less than the copy
            // it saves; a file's lines and a syslog sender's run of
            // messages share one slice.
            let labels = match batch.last_labels {
                Some(last) if last == labels => last,
                _ => {
                    let copied: &[Label] = arena.alloc_slice_copy(labels);
                    batch.last_labels = Some(copied);
                    copied
                }
            };
            let line = arena.alloc_slice_copy(line);
            batch.entries.push(Entry {
                line,
                labels,
                timestamp_ns,
                terminated,
                source,
            });
        });
        self.bytes += line.len();
        self.read_ns_oldest = self.read_ns_oldest.min(timestamp_ns);
    }

    pub fn len(&self) -> usize {
        self.cell.borrow_dependent().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Line bytes in the batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the first entry was pushed (or the batch opened, if empty).
    pub fn opened_at(&self) -> Instant {
        self.opened_at
    }

    /// True when the batch holds `entries_max` entries or `bytes_max` bytes.
    pub fn is_full(&self, bytes_max: usize) -> bool {
        self.len() >= self.entries_max || self.bytes >= bytes_max
    }

    /// `labels` with the values carried as strings (`inline`, keyed by
    /// interned keys) added as symbols of this batch's own table, sorted by
    /// key. Only lines whose values the shared table had no room for come
    /// here.
    pub fn labels_with_inline<'value>(
        &mut self,
        labels: &[Label],
        inline: impl IntoIterator<Item = (Symbol, &'value str)>,
    ) -> LabelSet {
        let mut set = LabelSet::from_slice(labels);
        for (key, value) in inline {
            let index = match self.inline_index.get(value) {
                Some(&index) => index,
                None => {
                    self.inline.push(Box::from(value));
                    self.inline_index
                        .insert(Box::from(value), self.inline.len() - 1);
                    self.inline.len() - 1
                }
            };
            set.push((key, SymbolTable::inline_symbol(index)));
        }
        let symbols = &self.symbols;
        set.sort_by(|left, right| symbols.resolve(left.0).cmp(symbols.resolve(right.0)));
        set
    }

    /// Freezes the batch. `slot` is the dispatcher's in-flight slot index,
    /// `sequence` a number that orders batches.
    pub fn seal(self, slot: usize, sequence: u64) -> SealedBatch {
        let symbols = if self.inline.is_empty() {
            self.symbols
        } else {
            Arc::new(SymbolTable::with_inline(&self.symbols, self.inline))
        };
        SealedBatch {
            cell: self.cell,
            symbols,
            slot,
            sequence,
            bytes: self.bytes,
            sealed_at: Instant::now(),
            read_ns_oldest: self.read_ns_oldest,
        }
    }

    /// Gives the arena back without sealing, reset.
    pub fn into_arena(self) -> Bump {
        reset_arena(self.cell)
    }
}

/// An immutable batch shared by all sinks through an `Arc`.
#[derive(Debug)]
pub struct SealedBatch {
    cell: BatchCell,
    symbols: Arc<SymbolTable>,
    slot: usize,
    sequence: u64,
    bytes: usize,
    sealed_at: Instant,
    read_ns_oldest: u64,
}

// SAFETY: a `SealedBatch` moves between threads as a whole: the arena and
// every reference into it (the entry table holds `&Bump` and slices of arena
// memory) travel together, and no other thread keeps a reference into the
// arena, because the only other holders are the `Arc` clones, which are
// themselves what moves. `Bump` itself is `Send`.
unsafe impl Send for SealedBatch {}

// SAFETY: `Bump` is `!Sync` only because allocating through `&Bump` mutates
// its bump pointer through a `Cell`. Through `&SealedBatch` nothing can reach
// the arena or the entry table's allocator: the public methods hand out only
// `&[Entry]` (shared slices of bytes written before sealing) and plain
// numbers, and `into_arena` takes `self` by value. So shared access from
// several threads only ever reads memory that no one writes any more.
unsafe impl Sync for SealedBatch {}

impl SealedBatch {
    /// The entries in the order they were pushed.
    pub fn entries(&self) -> &[Entry<'_>] {
        &self.cell.borrow_dependent().entries
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Line bytes in the batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The table that resolves the entries' label symbols.
    pub fn symbols(&self) -> &Arc<SymbolTable> {
        &self.symbols
    }

    /// The batch's slot in its sink lanes (see `sink::link::SlotPlan`).
    pub fn slot(&self) -> usize {
        self.slot
    }

    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// When the batch was sealed and handed to the sinks.
    pub fn sealed_at(&self) -> Instant {
        self.sealed_at
    }

    /// Read time of the batch's oldest entry, nanoseconds since the epoch.
    pub fn read_ns_oldest(&self) -> u64 {
        self.read_ns_oldest
    }

    /// Takes the arena back, reset for the next batch.
    pub fn into_arena(self) -> Bump {
        reset_arena(self.cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::SymbolTableBuilder;

    #[test]
    fn entries_keep_bytes_labels_and_order() {
        let mut symbols = SymbolTableBuilder::new();
        let first = symbols.label_set([("file", "/a")]);
        let second = symbols.label_set([("file", "/b")]);
        let mut batch = OpenBatch::new(
            Bump::with_capacity(4096),
            4,
            SymbolTableBuilder::new().freeze(),
        );
        batch.push(b"one", &first, 0, 1, true);
        batch.push(b"", &first, 0, 2, true);
        batch.push(b"\xff\xfe", &second, 1, 3, false);
        assert!(!batch.is_full(1024));
        batch.push(b"four", &first, SOURCE_REPLAYED, 4, true);
        assert!(batch.is_full(1024));
        let sealed = batch.seal(7, 9);
        let entries = sealed.entries();
        let lines: Vec<&[u8]> = entries.iter().map(|entry| entry.line).collect();
        assert_eq!(lines, vec![&b"one"[..], b"", b"\xff\xfe", b"four"]);
        assert_eq!(entries[0].labels, &first[..]);
        assert_eq!(entries[2].labels, &second[..]);
        assert_eq!(entries[3].labels, &first[..]);
        assert!(std::ptr::eq(entries[0].labels, entries[1].labels));
        assert!(!entries[2].terminated);
        let sources: Vec<SourceIndex> = entries.iter().map(|entry| entry.source).collect();
        assert_eq!(sources, vec![0, 0, 1, SOURCE_REPLAYED]);
        assert_eq!(
            (sealed.slot(), sealed.sequence(), sealed.bytes()),
            (7, 9, 9)
        );
    }

    /// Goal: entries share a label slice while their labels are equal,
    /// whatever source they came from (a syslog sender's run of messages),
    /// and get their own when they differ. Method: runs of equal and
    /// different sets, then pointer comparisons.
    #[test]
    fn equal_labels_share_one_slice() {
        let mut symbols = SymbolTableBuilder::new();
        let one = symbols.label_set([("host", "a")]);
        let same = symbols.label_set([("host", "a")]);
        let other = symbols.label_set([("host", "b")]);
        let mut batch = OpenBatch::new(Bump::new(), 8, symbols.freeze());
        for labels in [&one, &same, &other, &one] {
            batch.push(b"line", labels, 0, 0, true);
        }
        let sealed = batch.seal(0, 0);
        let entries = sealed.entries();
        assert!(std::ptr::eq(entries[0].labels, entries[1].labels));
        assert!(!std::ptr::eq(entries[1].labels, entries[2].labels));
        assert!(!std::ptr::eq(entries[2].labels, entries[3].labels));
        assert_eq!(entries[3].labels, &one[..]);
    }

    /// Goal: values carried as strings get one batch symbol each, however
    /// many entries carry them, and resolve through the sealed batch.
    #[test]
    fn carried_values_are_kept_once_per_batch() {
        let mut symbols = SymbolTableBuilder::new();
        let key = symbols.intern("host");
        let table = symbols.freeze();
        let mut batch = OpenBatch::new(Bump::new(), 8, Arc::clone(&table));
        for value in ["x", "y", "x"] {
            let labels = batch.labels_with_inline(&[], [(key, value)]);
            batch.push(b"line", &labels, 0, 0, true);
        }
        let sealed = batch.seal(0, 0);
        let entries = sealed.entries();
        assert_eq!(entries[0].labels, entries[2].labels);
        let resolved: Vec<&str> = entries
            .iter()
            .map(|entry| sealed.symbols().resolve(entry.labels[0].1))
            .collect();
        assert_eq!(resolved, ["x", "y", "x"]);
    }

    /// Goal: an arena a long line grew is replaced by one of the usual
    /// size; one of the usual size is kept (its chunk is reused).
    #[test]
    fn grown_arenas_are_replaced_and_usual_ones_kept() {
        let capacity = 64 * 1024;
        let mut arena = Bump::with_capacity(capacity);
        arena.alloc_slice_fill_copy(1000, 0u8);
        arena.reset();
        let kept = reclaim_arena(arena, capacity);
        assert!(kept.allocated_bytes() <= 2 * capacity);
        let mut grown = Bump::with_capacity(capacity);
        grown.alloc_slice_fill_copy(16 << 20, 0u8);
        grown.reset();
        assert!(grown.allocated_bytes() > 16 << 20);
        let fresh = reclaim_arena(grown, capacity);
        assert!(
            fresh.allocated_bytes() <= 2 * capacity,
            "{}",
            fresh.allocated_bytes()
        );
    }

    #[test]
    fn bytes_bound_seals() {
        let labels = LabelSet::new();
        let mut batch = OpenBatch::new(Bump::new(), 100, SymbolTableBuilder::new().freeze());
        batch.push(&[b'x'; 10], &labels, 0, 0, true);
        assert!(!batch.is_full(11));
        batch.push(&[b'x'; 1], &labels, 0, 0, true);
        assert!(batch.is_full(11));
    }

    /// Goal: the `Send`/`Sync` promises of `SealedBatch`. Method: two threads
    /// read one batch through an `Arc` while the main thread also reads it;
    /// then the main thread gets the only reference back and recycles the
    /// arena, which must be reusable.
    #[test]
    fn sealed_batch_is_shared_across_threads_and_recycled() {
        let labels = LabelSet::new();
        let mut batch = OpenBatch::new(
            Bump::with_capacity(1 << 16),
            1000,
            SymbolTableBuilder::new().freeze(),
        );
        for index in 0..1000u32 {
            batch.push(
                index.to_string().as_bytes(),
                &labels,
                0,
                u64::from(index),
                true,
            );
        }
        let shared = Arc::new(batch.seal(0, 0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let batch = Arc::clone(&shared);
                std::thread::spawn(move || {
                    batch
                        .entries()
                        .iter()
                        .map(|entry| {
                            std::str::from_utf8(entry.line)
                                .expect("digits")
                                .parse::<u64>()
                                .expect("number")
                        })
                        .sum::<u64>()
                })
            })
            .collect();
        for reader in readers {
            assert_eq!(reader.join().expect("reader thread"), 499_500);
        }
        let sealed = Arc::try_unwrap(shared).expect("readers are done");
        let arena = sealed.into_arena();
        let mut again = OpenBatch::new(arena, 2, SymbolTableBuilder::new().freeze());
        again.push(b"reused", &labels, 0, 0, true);
        assert_eq!(again.seal(0, 1).entries()[0].line, b"reused");
    }
}
