//! The streams of a Loki sink: which stream an entry belongs to, the text
//! of each stream, and the last time sent on each.
//!
//! A stream is the values of the sink's `labels` on an entry (absent or
//! empty values left out) plus its `static_labels`. Values are interned in
//! a table of the sink's own, because symbols differ between batches (a
//! replayed batch, or one carrying values inline, has a table of its own).
//! Consecutive entries of a batch share their label slice, so the stream
//! is looked up once per run of entries, not per entry.
//!
//! Times: Loki drops an entry whose stream, time and line equal one it
//! holds, and lines of one read share their read time. So every entry of a
//! live stream is sent with a time strictly above the last one sent on
//! that stream ([`StreamTable::raise`]); the sink keeps that time for
//! retries and the DLQ (see `FailureTable::with_sent_timestamps`).
//!
//! Thread: the sink's. Limits: at most [`STREAMS_MAX`] streams and
//! [`VALUE_BYTES_MAX`] bytes of values; past either, the table starts over
//! at the next round (counted and logged), which forgets the last times: a
//! later entry is still raised past its own read time, so only an entry
//! whose own time repeats one already sent could then collide. Allocations:
//! one per new stream and per new value.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;
use string_interner::{DefaultBackend, StringInterner, Symbol as _};

use crate::labels::{Label, Symbol, SymbolTable};
use crate::sink::link::Rejection;
use crate::sink::loki::config::LABEL_VALUE_BYTES_MAX;
use crate::sink::loki::request::StreamText;

/// Most streams a sink keeps before starting over.
pub const STREAMS_MAX: usize = 100_000;

/// Most bytes of label values a sink keeps before starting over.
pub const VALUE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Per stream label name: 0 for absent, else the value's id + 1.
type StreamKey = SmallVec<[u32; 8]>;

#[derive(Debug)]
pub struct StreamTable {
    /// The sink's `labels`.
    names: Box<[Box<str>]>,
    static_labels: Box<[(Box<str>, Box<str>)]>,
    values: StringInterner<DefaultBackend>,
    value_bytes: usize,
    index: HashMap<StreamKey, u32>,
    texts: Vec<StreamText>,
    last_sent_ns: Vec<u64>,
    /// The table the name symbols below belong to (compared by address).
    table: Option<Arc<SymbolTable>>,
    name_symbols: SmallVec<[Option<Symbol>; 8]>,
    /// The label slice of the last lookup (address, length) and its stream.
    last_labels: (usize, usize),
    last_stream: Result<u32, Rejection>,
    key: StreamKey,
    /// Times the table started over.
    pub resets: u64,
}

impl StreamTable {
    pub fn new(names: &[String], static_labels: &[(String, String)]) -> Self {
        Self {
            names: names.iter().map(|name| name.as_str().into()).collect(),
            static_labels: static_labels
                .iter()
                .map(|(name, value)| (name.as_str().into(), value.as_str().into()))
                .collect(),
            values: StringInterner::new(),
            value_bytes: 0,
            index: HashMap::new(),
            texts: Vec::new(),
            last_sent_ns: Vec::new(),
            table: None,
            name_symbols: SmallVec::new(),
            last_labels: (0, 0),
            last_stream: Err(Rejection::InvalidLabels),
            key: StreamKey::new(),
            resets: 0,
        }
    }

    pub fn texts(&self) -> &[StreamText] {
        &self.texts
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Starts over if a bound is passed; call only between rounds (stream
    /// numbers handed out before are invalid after). True if it did.
    pub fn reset_if_full(&mut self) -> bool {
        if self.texts.len() < STREAMS_MAX && self.value_bytes < VALUE_BYTES_MAX {
            return false;
        }
        self.values = StringInterner::new();
        self.value_bytes = 0;
        self.index = HashMap::new();
        self.texts = Vec::new();
        self.last_sent_ns = Vec::new();
        self.start_batch();
        self.resets += 1;
        true
    }

    /// Forgets the label slice of the last lookup: call before the
    /// entries of another batch (a reused arena may put other labels at
    /// the same address).
    pub fn start_batch(&mut self) {
        self.last_labels = (0, 0);
        self.last_stream = Err(Rejection::InvalidLabels);
    }

    /// The stream of an entry with `labels`, resolved with `symbols`; an
    /// entry whose stream Loki would refuse (no label at all, a value
    /// longer than Loki takes) is `Err(InvalidLabels)`.
    pub fn stream_of(
        &mut self,
        symbols: &Arc<SymbolTable>,
        labels: &[Label],
    ) -> Result<u32, Rejection> {
        if self
            .table
            .as_ref()
            .is_none_or(|table| !Arc::ptr_eq(table, symbols))
        {
            self.table = Some(Arc::clone(symbols));
            self.name_symbols = self.names.iter().map(|name| symbols.get(name)).collect();
            self.start_batch();
        }
        let address = (labels.as_ptr() as usize, labels.len());
        if address == self.last_labels && address.0 != 0 {
            return self.last_stream;
        }
        let stream = self.look_up(symbols, labels);
        self.last_labels = address;
        self.last_stream = stream;
        stream
    }

    fn look_up(&mut self, symbols: &SymbolTable, labels: &[Label]) -> Result<u32, Rejection> {
        self.key.clear();
        for name in &self.name_symbols {
            let value = name.and_then(|name| {
                labels
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|&(_, value)| symbols.resolve(value))
            });
            let id = match value {
                None | Some("") => 0,
                Some(value) if value.len() > LABEL_VALUE_BYTES_MAX => {
                    return Err(Rejection::InvalidLabels);
                }
                Some(value) => {
                    if self.values.get(value).is_none() {
                        self.value_bytes += value.len();
                    }
                    self.values.get_or_intern(value).to_usize() as u32 + 1
                }
            };
            self.key.push(id);
        }
        if self.static_labels.is_empty() && self.key.iter().all(|&id| id == 0) {
            return Err(Rejection::InvalidLabels);
        }
        if let Some(&stream) = self.index.get(&self.key) {
            return Ok(stream);
        }
        let stream = self.texts.len() as u32;
        self.texts.push(self.text_of_key());
        self.last_sent_ns.push(0);
        self.index.insert(self.key.clone(), stream);
        Ok(stream)
    }

    /// The stream's labels, sorted by name.
    fn text_of_key(&self) -> StreamText {
        let mut pairs: Vec<(&str, &str)> = self
            .names
            .iter()
            .zip(&self.key)
            .filter(|&(_, &id)| id != 0)
            .map(|(name, &id)| {
                let symbol = string_interner::DefaultSymbol::try_from_usize(id as usize - 1)
                    .expect("an id of this interner");
                (&**name, self.values.resolve(symbol).expect("interned"))
            })
            .chain(
                self.static_labels
                    .iter()
                    .map(|(name, value)| (&**name, &**value)),
            )
            .collect();
        pairs.sort_unstable_by(|left, right| left.0.cmp(right.0));
        StreamText::new(&pairs)
    }

    /// The time to send an entry of `stream` with: its own, or 1 ns past
    /// the last one sent on the stream if that is not below.
    pub fn raise(&mut self, stream: u32, timestamp_ns: u64) -> u64 {
        let last = &mut self.last_sent_ns[stream as usize];
        let sent = timestamp_ns.max(last.saturating_add(1));
        *last = sent;
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::SymbolTableBuilder;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    /// Goal: entries with the same values of the stream labels share a
    /// stream whatever their other labels; the text is sorted with static
    /// labels; absent and empty values are left out; a table with nothing
    /// to say is refused. Method: two symbol tables, as batches have.
    #[test]
    fn streams_follow_the_configured_labels() {
        let mut builder = SymbolTableBuilder::new();
        let web = builder.label_set([("host", "web"), ("file", "/a"), ("source_id", "s")]);
        let web_b = builder.label_set([("host", "web"), ("file", "/b"), ("source_id", "s")]);
        let db = builder.label_set([("host", "db"), ("source_id", "s"), ("app", "")]);
        let bare = builder.label_set([("file", "/c")]);
        let symbols = builder.freeze();
        let mut table = StreamTable::new(&names(&["source_id", "host", "app"]), &[]);
        let first = table.stream_of(&symbols, &web).expect("a stream");
        assert_eq!(table.stream_of(&symbols, &web_b), Ok(first));
        let second = table.stream_of(&symbols, &db).expect("a stream");
        assert_ne!(first, second);
        assert_eq!(
            table.stream_of(&symbols, &bare),
            Err(Rejection::InvalidLabels)
        );
        assert_eq!(
            table.texts()[second as usize].selector(),
            br#"{host="db", source_id="s"}"#
        );

        // Another table with other symbols for the same strings.
        let mut other = SymbolTableBuilder::new();
        other.intern("padding");
        let again = other.label_set([("source_id", "s"), ("host", "web")]);
        let other = other.freeze();
        assert_eq!(table.stream_of(&other, &again), Ok(first));

        let mut with_static = StreamTable::new(
            &names(&["host"]),
            &[("env".to_string(), "prod".to_string())],
        );
        let stream = with_static.stream_of(&symbols, &bare).expect("static only");
        assert_eq!(
            with_static.texts()[stream as usize].selector(),
            br#"{env="prod"}"#
        );
    }

    #[test]
    fn raised_times_strictly_increase_per_stream() {
        let mut table = StreamTable::new(&names(&["host"]), &[]);
        let mut builder = SymbolTableBuilder::new();
        let a = builder.label_set([("host", "a")]);
        let b = builder.label_set([("host", "b")]);
        let symbols = builder.freeze();
        let a = table.stream_of(&symbols, &a).expect("a");
        let b = table.stream_of(&symbols, &b).expect("b");
        assert_eq!(table.raise(a, 100), 100);
        assert_eq!(table.raise(a, 100), 101);
        assert_eq!(table.raise(a, 50), 102);
        assert_eq!(table.raise(a, 200), 200);
        assert_eq!(table.raise(b, 100), 100, "streams are apart");
    }

    #[test]
    fn a_long_value_is_refused() {
        let mut builder = SymbolTableBuilder::new();
        let long = "x".repeat(LABEL_VALUE_BYTES_MAX + 1);
        let labels = builder.label_set([("host", long.as_str()), ("source_id", "s")]);
        let symbols = builder.freeze();
        let mut table = StreamTable::new(&names(&["source_id", "host"]), &[]);
        assert_eq!(
            table.stream_of(&symbols, &labels),
            Err(Rejection::InvalidLabels)
        );
        assert!(!table.reset_if_full());
    }
}
