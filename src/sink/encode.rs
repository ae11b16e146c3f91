//! Turning entries into bytes: the `raw` and `json` encodings.
//!
//! `raw` writes the line as read and a `\n` only when the input had one
//! there, so a file sink reproduces its input byte for byte, including the
//! pieces of over-long lines and a last line without newline.
//!
//! `json` writes one object per line:
//! `{"timestamp":"2026-11-26T23:58:42.123456789Z","message":"...","labels":{"file":"/var/log/a.log"}}`.
//! Bytes that are not UTF-8 become U+FFFD, as in `String::from_utf8_lossy`.
//! Encoding appends to a caller's buffer and allocates nothing once the
//! buffer has grown to a batch.

use std::sync::Arc;

use serde::Deserialize;

use crate::batch::Entry;
use crate::json::{write_json_string, write_rfc3339_nanos};
use crate::labels::{LabelSet, SymbolTable};

/// How a sink turns an entry into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The line as read, then `\n` if the line ended with one in the input.
    #[default]
    Raw,
    /// One JSON object per line: `timestamp`, `message`, `labels`.
    Json,
}

/// Encodes entries of one sink, caching what consecutive entries share.
///
/// Entries of one chunk share their label set and their read time, so the
/// encoder keeps the JSON of the last label set and the text of the last
/// timestamp and reuses them while they match. Comparing a few symbol pairs
/// is much cheaper than resolving and escaping every label again.
#[derive(Debug)]
pub struct Encoder {
    encoding: Encoding,
    symbols: Arc<SymbolTable>,
    labels_cached: Option<LabelSet>,
    labels_json: Vec<u8>,
    timestamp_cached: Option<u64>,
    timestamp_text: Vec<u8>,
}

impl Encoder {
    pub fn new(encoding: Encoding, symbols: Arc<SymbolTable>) -> Self {
        Self {
            encoding,
            symbols,
            labels_cached: None,
            labels_json: Vec::with_capacity(256),
            timestamp_cached: None,
            timestamp_text: Vec::with_capacity(32),
        }
    }

    /// Resolves the labels of the entries that follow with `symbols` (a
    /// batch's table); a different table forgets the cached label JSON,
    /// whose symbols belonged to the other one.
    pub fn use_symbols(&mut self, symbols: &Arc<SymbolTable>) {
        if !Arc::ptr_eq(&self.symbols, symbols) {
            self.symbols = Arc::clone(symbols);
            self.labels_cached = None;
        }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Appends one entry to `out`.
    pub fn encode(&mut self, out: &mut Vec<u8>, entry: &Entry<'_>) {
        match self.encoding {
            Encoding::Raw => encode_raw(out, entry),
            Encoding::Json => self.encode_json(out, entry),
        }
    }

    fn encode_json(&mut self, out: &mut Vec<u8>, entry: &Entry<'_>) {
        if self.timestamp_cached != Some(entry.timestamp_ns) {
            self.timestamp_text.clear();
            write_rfc3339_nanos(&mut self.timestamp_text, entry.timestamp_ns);
            self.timestamp_cached = Some(entry.timestamp_ns);
        }
        if self.labels_cached.as_deref() != Some(entry.labels) {
            self.labels_json.clear();
            write_labels(&mut self.labels_json, entry, &self.symbols);
            self.labels_cached = Some(entry.labels.iter().copied().collect());
        }
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(&self.timestamp_text);
        out.extend_from_slice(b"\",\"message\":");
        write_json_string(out, entry.line);
        out.extend_from_slice(b",\"labels\":");
        out.extend_from_slice(&self.labels_json);
        out.extend_from_slice(b"}\n");
    }
}

fn encode_raw(out: &mut Vec<u8>, entry: &Entry<'_>) {
    out.extend_from_slice(entry.line);
    if entry.terminated {
        out.push(b'\n');
    }
}

fn write_labels(out: &mut Vec<u8>, entry: &Entry<'_>, symbols: &SymbolTable) {
    out.push(b'{');
    for (index, &(key, value)) in entry.labels.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_json_string(out, symbols.resolve(key).as_bytes());
        out.push(b':');
        write_json_string(out, symbols.resolve(value).as_bytes());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::SymbolTableBuilder;

    #[test]
    fn json_is_valid_and_lossy_for_bad_utf8() {
        let mut builder = SymbolTableBuilder::new();
        let labels = builder.label_set([("service", "a\"b"), ("file", "/x")]);
        let symbols = builder.freeze();
        let entry = Entry {
            line: b"tab\there \x01 quote\" back\\ \xff end",
            labels: &labels,
            timestamp_ns: 1,
            terminated: true,
            source: 0,
        };
        let mut out = Vec::new();
        Encoder::new(Encoding::Json, symbols).encode(&mut out, &entry);
        assert_eq!(out.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            value["message"],
            "tab\there \u{1} quote\" back\\ \u{FFFD} end"
        );
        assert_eq!(value["labels"]["service"], "a\"b");
        assert_eq!(value["labels"]["file"], "/x");
        assert_eq!(value["timestamp"], "1970-01-01T00:00:00.000000001Z");
    }

    #[test]
    fn raw_writes_newline_only_when_terminated() {
        let mut encoder = Encoder::new(Encoding::Raw, SymbolTableBuilder::new().freeze());
        let mut out = Vec::new();
        for (line, terminated) in [(&b"a"[..], true), (b"b", false), (b"c", true)] {
            let entry = Entry {
                line,
                labels: &[],
                timestamp_ns: 0,
                terminated,
                source: 0,
            };
            encoder.encode(&mut out, &entry);
        }
        assert_eq!(out, b"a\nbc\n");
    }
}
