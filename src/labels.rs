//! Labels as interned symbols in small vectors.
//!
//! A label is a (key, value) pair of [`Symbol`]s; a [`LabelSet`] is a
//! `SmallVec` of them, sorted by key, that stays inline up to
//! [`LABELS_INLINE`] pairs. Strings are resolved only where an encoder needs
//! bytes. Symbols are process-local: they never reach disk or the network as
//! numbers.
//!
//! Interning needs `&mut`, resolving only `&`. The pipeline builder interns
//! every label known at start-up into a [`SymbolTableBuilder`] and then
//! freezes it into a [`SymbolTable`], which every thread shares read-only
//! through an `Arc` with no lock.

use std::sync::Arc;

use smallvec::SmallVec;
use string_interner::{DefaultBackend, DefaultSymbol, StringInterner};

/// An interned string.
pub type Symbol = DefaultSymbol;

/// One label: key and value.
pub type Label = (Symbol, Symbol);

/// Label pairs that a set holds without a heap allocation: the static labels
/// of a typical source plus `source_id` and `file`.
pub const LABELS_INLINE: usize = 6;

/// The labels of one stream of lines, sorted by key.
pub type LabelSet = SmallVec<[Label; LABELS_INLINE]>;

/// Interns strings while the pipeline is being built.
#[derive(Debug, Default)]
pub struct SymbolTableBuilder {
    interner: StringInterner<DefaultBackend>,
}

impl SymbolTableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn intern(&mut self, text: &str) -> Symbol {
        self.interner.get_or_intern(text)
    }

    /// Builds a label set from string pairs, sorted by key string so that
    /// encoders write keys in a stable order.
    pub fn label_set<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> LabelSet {
        let mut pairs: SmallVec<[(&str, &str); LABELS_INLINE]> = pairs.into_iter().collect();
        pairs.sort_by(|left, right| left.0.cmp(right.0));
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        pairs
            .into_iter()
            .map(|(key, value)| (self.intern(key), self.intern(value)))
            .collect()
    }

    /// Ends interning; the table can now be shared by every thread.
    pub fn freeze(self) -> Arc<SymbolTable> {
        Arc::new(SymbolTable {
            interner: self.interner,
        })
    }
}

/// Read-only view of the interned strings, shared by all stages.
#[derive(Debug)]
pub struct SymbolTable {
    interner: StringInterner<DefaultBackend>,
}

impl SymbolTable {
    /// The symbol of a string, if it was interned.
    pub fn get(&self, text: &str) -> Option<Symbol> {
        self.interner.get(text)
    }

    /// The string of a symbol. Every symbol in a label set came from this
    /// table's builder, so a miss is a bug.
    pub fn resolve(&self, symbol: Symbol) -> &str {
        self.interner
            .resolve(symbol)
            .expect("every symbol was interned by this table's builder")
    }

    /// A label set as strings, for a self-describing DLQ record.
    pub fn resolve_labels(&self, labels: &[Label]) -> Vec<(&str, &str)> {
        let mut resolved = Vec::with_capacity(labels.len());
        self.resolve_labels_into(labels, &mut resolved);
        resolved
    }

    /// [`resolve_labels`](Self::resolve_labels) into `out`, cleared first:
    /// a caller that reuses `out` allocates only while it grows.
    pub fn resolve_labels_into<'table>(
        &'table self,
        labels: &[Label],
        out: &mut Vec<(&'table str, &'table str)>,
    ) {
        out.clear();
        out.extend(
            labels
                .iter()
                .map(|&(key, value)| (self.resolve(key), self.resolve(value))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_set_is_sorted_deduplicated_and_resolves() {
        let mut builder = SymbolTableBuilder::new();
        let set = builder.label_set([("service", "app"), ("file", "/a"), ("service", "other")]);
        let table = builder.freeze();
        let resolved = table.resolve_labels(&set);
        assert_eq!(resolved, vec![("file", "/a"), ("service", "app")]);
        assert!(!set.spilled());
    }

    #[test]
    fn resolve_into_replaces_and_keeps_the_buffer() {
        let mut builder = SymbolTableBuilder::new();
        let two = builder.label_set([("service", "app"), ("file", "/a")]);
        let one = builder.label_set([("host", "h1")]);
        let table = builder.freeze();
        let mut out = vec![("stale", "entry"); 3];
        let buffer = out.as_ptr();
        table.resolve_labels_into(&two, &mut out);
        assert_eq!(out, vec![("file", "/a"), ("service", "app")]);
        table.resolve_labels_into(&one, &mut out);
        assert_eq!(out, vec![("host", "h1")]);
        assert_eq!(
            out.as_ptr(),
            buffer,
            "no new buffer while it is large enough"
        );
    }
}
