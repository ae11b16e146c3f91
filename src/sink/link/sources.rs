//! Which sources a sink takes: its `inputs`.
//!
//! A batch holds the lines of every source, once, in one arena shared by
//! every sink. A sink with `inputs` delivers only the entries whose
//! [`Entry::source`] is in its [`SourceSet`] and skips the rest: no copy,
//! no allocation, and a skipped entry counts as done for that sink (it is
//! never marked failed, never stored in that sink's DLQ).
//!
//! The set is built once, when the sink is built: a bitmap with a bit per
//! source index, shared through an `Arc` by the sink thread and the
//! dispatcher (which must leave the same entries out of what it stores in
//! the sink's DLQ). A sink without `inputs` holds no bitmap and takes
//! every entry without looking. An entry replayed from the DLQ
//! ([`SOURCE_REPLAYED`]) is addressed to its sink already: every set takes
//! it.

use std::sync::Arc;

use crate::batch::{Entry, SOURCE_REPLAYED, SealedBatch, SourceIndex};

/// The sources a sink takes.
///
/// Invariant: `words`, when present, has a bit per source index below
/// `64 * words.len()`; an index past the bitmap is a source not taken.
#[derive(Debug, Clone, Default)]
pub struct SourceSet {
    /// Bit `index % 64` of word `index / 64` is set when source `index` is
    /// taken; `None` takes every source.
    words: Option<Arc<[u64]>>,
}

impl SourceSet {
    /// Every source: a sink without `inputs`.
    pub fn all() -> Self {
        Self { words: None }
    }

    /// Only `sources`. Allocates the bitmap once, here.
    pub fn of(sources: impl IntoIterator<Item = SourceIndex>) -> Self {
        let mut words: Vec<u64> = Vec::new();
        for source in sources {
            assert_ne!(source, SOURCE_REPLAYED, "a replayed entry is no source");
            let word = usize::from(source) / 64;
            if words.len() <= word {
                words.resize(word + 1, 0);
            }
            words[word] |= 1 << (source % 64);
        }
        Self {
            words: Some(words.into()),
        }
    }

    /// True for a sink without `inputs`: no entry needs looking at.
    pub fn takes_every_source(&self) -> bool {
        self.words.is_none()
    }

    /// Whether the sink takes the entries of `source`.
    #[inline]
    pub fn takes(&self, source: SourceIndex) -> bool {
        let Some(words) = &self.words else {
            return true;
        };
        source == SOURCE_REPLAYED
            || words
                .get(usize::from(source) / 64)
                .is_some_and(|word| word & (1 << (source % 64)) != 0)
    }

    /// Whether the sink takes `entry`.
    #[inline]
    pub fn takes_entry(&self, entry: &Entry<'_>) -> bool {
        self.takes(entry.source)
    }

    /// How many entries of `batch` the sink takes.
    pub fn entries_taken(&self, batch: &SealedBatch) -> usize {
        if self.takes_every_source() {
            return batch.len();
        }
        batch
            .entries()
            .iter()
            .filter(|entry| self.takes_entry(entry))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the bitmap answers every index at and around word
    /// boundaries. Method: a set of a few indices, checked against the
    /// list for every index, including one past the bitmap.
    #[test]
    fn takes_exactly_its_sources_and_replayed_entries() {
        let chosen = [0, 63, 64, 129];
        let set = SourceSet::of(chosen);
        assert!(!set.takes_every_source());
        for index in 0..300 {
            assert_eq!(set.takes(index), chosen.contains(&index), "{index}");
        }
        assert!(set.takes(SOURCE_REPLAYED));
        let all = SourceSet::all();
        assert!(all.takes_every_source());
        assert!((0..300).all(|index| all.takes(index)));
        let none = SourceSet::of([]);
        assert!(!none.takes(0));
        assert!(none.takes(SOURCE_REPLAYED));
    }
}
