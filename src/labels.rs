//! Labels as interned symbols in small vectors.
//!
//! A label is a (key, value) pair of [`Symbol`]s; a [`LabelSet`] is a
//! `SmallVec` of them, sorted by key, that stays inline up to
//! [`LABELS_INLINE`] pairs. Strings are resolved only where an encoder needs
//! bytes. Symbols are process-local: they never reach disk or the network as
//! numbers.
//!
//! The [`SymbolTable`] is shared by every thread through an `Arc`. It grows
//! while the daemon runs (a file found after start-up brings its path, a
//! syslog sender its host name) and is bounded: at most `symbols_max`
//! symbols and `bytes_max` bytes of strings (`[daemon] label_symbols_max`,
//! `label_bytes_max`). Interning takes a lock (it happens when a new file
//! or sender appears, not per line); resolving takes none: the strings live
//! in an append-only table of segments of [`SEGMENT_SYMBOLS`] slots, each
//! slot a `OnceLock` written once, under the interning lock, before its
//! symbol is handed out. A reader got the symbol from a ring push that came
//! after that write, so the slot is set when it is read.
//!
//! A string the table has no room for is not interned: [`SymbolTable::intern`]
//! returns `None` and counts it (`log_capturer_labels_not_interned_total`).
//! The source then carries the value with its chunks, and the batch that
//! takes those lines holds it: a batch with such values has a table of its
//! own ([`SymbolTable::with_inline`]) whose symbols from [`INLINE_FIRST`]
//! on are the batch's values and whose other symbols are the shared
//! table's, so that sinks resolve every label of a batch through
//! `SealedBatch::symbols` alike. The value lives as long as the batch.
//!
//! Memory: the strings twice (once in the interner's map, once in the
//! resolve table), the map's index, and one pointer per slot of each
//! segment in use; all of it bounded by the two limits.

use std::sync::{Arc, Mutex, OnceLock};

use smallvec::SmallVec;
use string_interner::{DefaultBackend, DefaultSymbol, StringInterner, Symbol as _};

use crate::metrics::Counter;

/// An interned string.
pub type Symbol = DefaultSymbol;

/// One label: key and value.
pub type Label = (Symbol, Symbol);

/// Label pairs that a set holds without a heap allocation: the static labels
/// of a typical source plus `source_id` and `file`.
pub const LABELS_INLINE: usize = 6;

/// The labels of one stream of lines, sorted by key.
pub type LabelSet = SmallVec<[Label; LABELS_INLINE]>;

/// Symbols per segment of the resolve table.
pub const SEGMENT_SYMBOLS: usize = 1024;

/// Default bound on symbols (`[daemon] label_symbols_max`).
pub const SYMBOLS_MAX_DEFAULT: usize = 65_536;

/// Default bound on string bytes (`[daemon] label_bytes_max`).
pub const BYTES_MAX_DEFAULT: usize = 4 * 1024 * 1024;

/// Largest `label_symbols_max` accepted: symbols stay far below the top bit.
pub const SYMBOLS_LIMIT: usize = 1 << 24;

/// The first symbol of a batch's own values (see [`SymbolTable::with_inline`]).
pub const INLINE_FIRST: usize = 1 << 30;

const _: () = assert!(SYMBOLS_LIMIT < INLINE_FIRST);

/// The bounds of a symbol table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolLimits {
    pub symbols_max: usize,
    pub bytes_max: usize,
}

impl Default for SymbolLimits {
    fn default() -> Self {
        Self {
            symbols_max: SYMBOLS_MAX_DEFAULT,
            bytes_max: BYTES_MAX_DEFAULT,
        }
    }
}

type Segment = Box<[OnceLock<Box<str>>]>;

/// The interning side: the string-to-symbol map and what it holds.
#[derive(Debug)]
struct Interning {
    interner: StringInterner<DefaultBackend>,
    bytes: usize,
}

/// Interned strings shared by all stages: interning under a lock, resolving
/// without one.
#[derive(Debug)]
pub struct SymbolTable {
    interning: Mutex<Interning>,
    segments: Box<[OnceLock<Segment>]>,
    limits: SymbolLimits,
    /// Strings refused because a bound was reached.
    pub not_interned: Counter,
    /// For a batch's own table: the shared table, and the batch's values.
    base: Option<Arc<SymbolTable>>,
    inline: Vec<Box<str>>,
}

impl SymbolTable {
    pub fn new(limits: SymbolLimits) -> Self {
        assert!(
            limits.symbols_max > 0 && limits.symbols_max <= SYMBOLS_LIMIT,
            "label_symbols_max is validated"
        );
        let segments = limits.symbols_max.div_ceil(SEGMENT_SYMBOLS);
        Self {
            interning: Mutex::new(Interning {
                interner: StringInterner::new(),
                bytes: 0,
            }),
            segments: (0..segments).map(|_| OnceLock::new()).collect(),
            limits,
            not_interned: Counter::default(),
            base: None,
            inline: Vec::new(),
        }
    }

    /// A batch's table: `inline[i]` is symbol `INLINE_FIRST + i`, every
    /// other symbol resolves through `base`. Nothing can be interned in it.
    pub fn with_inline(base: &Arc<SymbolTable>, inline: Vec<Box<str>>) -> Self {
        let base = match &base.base {
            Some(shared) => Arc::clone(shared),
            None => Arc::clone(base),
        };
        Self {
            interning: Mutex::new(Interning {
                interner: StringInterner::new(),
                bytes: 0,
            }),
            segments: Box::new([]),
            limits: base.limits,
            not_interned: Counter::default(),
            base: Some(base),
            inline,
        }
    }

    /// The symbol of a batch's `index`th own value.
    pub fn inline_symbol(index: usize) -> Symbol {
        Symbol::try_from_usize(INLINE_FIRST + index).expect("below u32::MAX")
    }

    /// The symbol of `text`, interning it if there is room; `None` (and
    /// counted) when a bound is reached.
    pub fn intern(&self, text: &str) -> Option<Symbol> {
        assert!(self.base.is_none(), "a batch's table is read-only");
        let mut interning = self.lock();
        if let Some(symbol) = interning.interner.get(text) {
            return Some(symbol);
        }
        let full = interning.interner.len() >= self.limits.symbols_max
            || interning.bytes + text.len() > self.limits.bytes_max;
        if full {
            self.not_interned.add(1);
            return None;
        }
        let symbol = interning.interner.get_or_intern(text);
        interning.bytes += text.len();
        let index = symbol.to_usize();
        let segment = self.segments[index / SEGMENT_SYMBOLS].get_or_init(|| {
            (0..SEGMENT_SYMBOLS)
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let published = segment[index % SEGMENT_SYMBOLS].set(Box::from(text));
        assert!(published.is_ok(), "symbol {index} is published once");
        Some(symbol)
    }

    /// Builds a label set from string pairs, sorted by key string so that
    /// encoders write keys in a stable order (the first of equal keys
    /// kept). A pair whose value the table has no room for is returned
    /// apart, as (key symbol, value), for its lines to carry; a pair whose
    /// key has no room is left out (keys are interned at start-up).
    pub fn label_set_with_overflow<'a>(
        &self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (LabelSet, Vec<(Symbol, &'a str)>) {
        let mut labels = LabelSet::new();
        let mut overflow = Vec::new();
        for (key, value) in sorted_pairs(pairs) {
            let Some(key_symbol) = self.intern(key) else {
                continue;
            };
            match self.intern(value) {
                Some(value_symbol) => labels.push((key_symbol, value_symbol)),
                None => overflow.push((key_symbol, value)),
            }
        }
        (labels, overflow)
    }

    /// The symbol of a string, if it was interned.
    pub fn get(&self, text: &str) -> Option<Symbol> {
        match &self.base {
            Some(base) => base.get(text),
            None => self.lock().interner.get(text),
        }
    }

    /// Symbols interned so far.
    pub fn len(&self) -> usize {
        self.lock().interner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// String bytes interned so far.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn limits(&self) -> SymbolLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Interning> {
        // A panic while interning leaves the map consistent (a failed
        // publish asserts after the map was updated, which is a bug anyway).
        self.interning
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The string of a symbol, without a lock. Every symbol in a label set
    /// came from this table, so a miss is a bug.
    pub fn resolve(&self, symbol: Symbol) -> &str {
        let index = symbol.to_usize();
        if index >= INLINE_FIRST {
            return self
                .inline
                .get(index - INLINE_FIRST)
                .expect("an inline symbol of this batch");
        }
        if let Some(base) = &self.base {
            return base.resolve(symbol);
        }
        self.segments
            .get(index / SEGMENT_SYMBOLS)
            .and_then(OnceLock::get)
            .and_then(|segment| segment[index % SEGMENT_SYMBOLS].get())
            .expect("every symbol was interned by this table")
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

/// Pairs sorted by key, the first of equal keys kept.
fn sorted_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> SmallVec<[(&'a str, &'a str); LABELS_INLINE]> {
    let mut pairs: SmallVec<[(&str, &str); LABELS_INLINE]> = pairs.into_iter().collect();
    pairs.sort_by(|left, right| left.0.cmp(right.0));
    pairs.dedup_by(|later, earlier| later.0 == earlier.0);
    pairs
}

/// A table without practical bounds, filled by one owner and then shared:
/// the labels of DLQ records in a replay step, and tests.
#[derive(Debug)]
pub struct SymbolTableBuilder {
    table: SymbolTable,
}

impl Default for SymbolTableBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SymbolTableBuilder {
    pub fn new() -> Self {
        Self {
            table: SymbolTable::new(SymbolLimits {
                symbols_max: SYMBOLS_LIMIT,
                bytes_max: usize::MAX,
            }),
        }
    }

    pub fn intern(&mut self, text: &str) -> Symbol {
        self.table
            .intern(text)
            .expect("an unbounded table has room")
    }

    /// See [`SymbolTable::label_set_with_overflow`].
    pub fn label_set<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> LabelSet {
        let (labels, overflow) = self.table.label_set_with_overflow(pairs);
        assert!(overflow.is_empty(), "an unbounded table has room");
        labels
    }

    /// Ends interning; the table can now be shared by every thread.
    pub fn freeze(self) -> Arc<SymbolTable> {
        Arc::new(self.table)
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

    /// Goal: both bounds hold and what they refuse is counted, while what
    /// was interned stays resolvable.
    #[test]
    fn bounds_refuse_and_count() {
        let table = SymbolTable::new(SymbolLimits {
            symbols_max: 3,
            bytes_max: 1000,
        });
        let a = table.intern("a").expect("room");
        assert_eq!(table.intern("a"), Some(a), "a known string needs no room");
        table.intern("b").expect("room");
        table.intern("c").expect("room");
        assert_eq!(table.intern("d"), None);
        assert_eq!(table.not_interned.get(), 1);
        assert_eq!(table.resolve(a), "a");
        let bytes = SymbolTable::new(SymbolLimits {
            symbols_max: 100,
            bytes_max: 5,
        });
        bytes.intern("abc").expect("room");
        assert_eq!(bytes.intern("def"), None, "6 bytes > 5");
        assert!(bytes.intern("de").is_some());
        assert_eq!(bytes.bytes(), 5);
    }

    /// Goal: a batch's table resolves its own values and the shared ones.
    #[test]
    fn batch_table_resolves_inline_and_shared_symbols() {
        let shared = Arc::new(SymbolTable::new(SymbolLimits::default()));
        let key = shared.intern("file").expect("room");
        let batch = Arc::new(SymbolTable::with_inline(
            &shared,
            vec![Box::from("/a/long/path"), Box::from("/b")],
        ));
        assert_eq!(batch.resolve(key), "file");
        assert_eq!(batch.resolve(SymbolTable::inline_symbol(1)), "/b");
        assert_eq!(batch.get("file"), Some(key));
        let nested = SymbolTable::with_inline(&batch, vec![Box::from("/c")]);
        assert_eq!(nested.resolve(key), "file", "built on the shared table");
        assert_eq!(nested.resolve(SymbolTable::inline_symbol(0)), "/c");
    }

    /// Goal: readers resolve without a lock while another thread interns
    /// across segment boundaries.
    #[test]
    fn readers_resolve_while_a_writer_interns() {
        let table = Arc::new(SymbolTable::new(SymbolLimits {
            symbols_max: 4 * SEGMENT_SYMBOLS,
            bytes_max: 1 << 20,
        }));
        let (sender, receiver) = std::sync::mpsc::channel::<(Symbol, String)>();
        let reader = {
            let table = Arc::clone(&table);
            std::thread::spawn(move || {
                let mut seen = 0;
                for (symbol, text) in receiver {
                    assert_eq!(table.resolve(symbol), text);
                    seen += 1;
                }
                seen
            })
        };
        for index in 0..3 * SEGMENT_SYMBOLS {
            let text = format!("value-{index}");
            let symbol = table.intern(&text).expect("room");
            sender.send((symbol, text)).expect("reader alive");
        }
        drop(sender);
        assert_eq!(reader.join().expect("reader"), 3 * SEGMENT_SYMBOLS);
    }
}
