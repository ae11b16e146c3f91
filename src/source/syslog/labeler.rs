//! From a received message to its labels and time.
//!
//! Labels (sorted by key, as every label set is): `source_id`, the source's
//! static labels, and from the message `host`, `app`, `procid`, `msgid`,
//! `severity` and `facility` (as words: `err`, `local0`), each only when
//! the message has it. A message without `<PRI>` is `user.notice`, as RFC
//! 3164 §4.3.3 has a relay assume. A message without a host is labelled
//! with its sender: the peer's IP address for UDP and TCP, this host's name
//! for the Unix socket (a local program's message). A message that does not
//! parse gets `parse_error = "true"` and the sender as `host`, and is
//! delivered as received. With `structured_data = "labels"` every SD
//! parameter also becomes a label `sd_<SD-ID>_<PARAM-NAME>`, each name
//! reduced to `[A-Za-z0-9_]` (other bytes become `_`), so that it is a
//! valid label name for any sink; at most [`SD_LABELS_MAX`] per message.
//!
//! Values come from outside: each goes through the bounded symbol table.
//! A direct-mapped cache of recent values avoids the table's lock for the
//! hosts and apps a busy sender repeats; a value the table has no room for
//! is carried as a string with the message (and counted by the table).
//!
//! The entry's timestamp is the message's own when it parses (RFC 5424
//! carries its offset; RFC 3164 is read in the source's `timezone`, the
//! host's zone by default), else the time the message was received.
//!
//! Thread: the syslog source's. Allocations: the scratch vectors grow to
//! the largest message's label count and are kept; none per message.

use std::net::IpAddr;
use std::sync::Arc;

use crate::labels::{Label, Symbol, SymbolTable};
use crate::metrics::SourceMetrics;

use super::StructuredData;
use super::message::{self, Message, Priority, TimeContext};

/// Most labels one message's structured data adds (`structured_data =
/// "labels"`); later parameters stay in the message only.
pub const SD_LABELS_MAX: usize = 32;

/// Slots of the value cache: a power of two.
const CACHE_SLOTS: usize = 1024;

/// Where a message came from, for the `host` of a message without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Address(IpAddr),
    Local,
}

/// Which value a key takes.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Static(Symbol),
    Host,
    App,
    Procid,
    Msgid,
    Severity,
    Facility,
    ParseError,
}

/// The priority of a message without one: `user.notice`.
const DEFAULT_PRIORITY: Priority = Priority {
    facility: 1,
    severity: 5,
};

/// Turns messages into label sets; see the module doc.
#[derive(Debug)]
pub struct Labeler {
    symbols: Arc<SymbolTable>,
    /// Every key the source sets, sorted by key text, with its value.
    keys: Vec<(Symbol, Slot)>,
    severities: [Option<Symbol>; 8],
    facilities: [Option<Symbol>; 24],
    true_value: Option<Symbol>,
    local_host: Box<str>,
    structured_data: StructuredData,
    time: TimeContext,
    cache: Box<[Option<(u64, Symbol)>]>,
    /// The last peer address and its text.
    peer: Option<(IpAddr, String)>,
    /// The labels of the message last labelled.
    pub labels: Vec<Label>,
    /// Values of that message the table had no room for: key, and range
    /// in `inline_text`.
    inline: Vec<(Symbol, usize, usize)>,
    inline_text: String,
    /// Scratch for structured-data labels.
    sd_key: String,
    sd_value: Vec<u8>,
}

impl Labeler {
    /// `static_labels` excludes `source_id`, which is added here.
    pub fn new(
        symbols: Arc<SymbolTable>,
        source_id: &str,
        static_labels: &[(String, String)],
        structured_data: StructuredData,
        time: TimeContext,
    ) -> Self {
        let mut named: Vec<(&str, Slot)> = vec![
            ("host", Slot::Host),
            ("app", Slot::App),
            ("procid", Slot::Procid),
            ("msgid", Slot::Msgid),
            ("severity", Slot::Severity),
            ("facility", Slot::Facility),
            ("parse_error", Slot::ParseError),
        ];
        let mut statics: Vec<(&str, &str)> = vec![("source_id", source_id)];
        statics.extend(
            static_labels
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        for (key, value) in &statics {
            // Interned at start-up, when the table has room for a handful
            // of strings per source; a value that still does not fit is
            // left out, as a full table leaves out any other.
            if let Some(value) = symbols.intern(value) {
                named.push((key, Slot::Static(value)));
            }
        }
        named.sort_by(|left, right| left.0.cmp(right.0));
        let keys = named
            .into_iter()
            .filter_map(|(key, slot)| Some((symbols.intern(key)?, slot)))
            .collect();
        let severities =
            std::array::from_fn(|severity| symbols.intern(message::severity_name(severity as u8)));
        let facilities =
            std::array::from_fn(|facility| symbols.intern(message::facility_name(facility as u8)));
        let true_value = symbols.intern("true");
        Self {
            keys,
            severities,
            facilities,
            true_value,
            local_host: local_host_name().into_boxed_str(),
            structured_data,
            time,
            cache: vec![None; CACHE_SLOTS].into_boxed_slice(),
            peer: None,
            labels: Vec::new(),
            inline: Vec::new(),
            inline_text: String::new(),
            sd_key: String::new(),
            sd_value: Vec::new(),
            symbols,
        }
    }

    /// Parses `received` and fills `labels` (and the inline values);
    /// returns the entry's timestamp. Counts a message that does not parse.
    pub fn label(
        &mut self,
        received: &[u8],
        peer: Peer,
        received_ns: u64,
        metrics: &SourceMetrics,
    ) -> u64 {
        self.labels.clear();
        self.inline.clear();
        self.inline_text.clear();
        match message::parse(received, received_ns, &mut self.time) {
            Ok(parsed) => {
                self.label_parsed(&parsed, peer);
                parsed.timestamp_ns.unwrap_or(received_ns)
            }
            Err(_) => {
                metrics.syslog.parse_errors.add(1);
                self.label_unparsed(peer);
                received_ns
            }
        }
    }

    /// The values carried as strings for the message last labelled.
    pub fn inline(&self) -> impl Iterator<Item = (Symbol, &str)> + '_ {
        self.inline
            .iter()
            .map(|&(key, start, end)| (key, &self.inline_text[start..end]))
    }

    fn label_parsed(&mut self, parsed: &Message<'_>, peer: Peer) {
        let priority = parsed.priority.unwrap_or(DEFAULT_PRIORITY);
        for index in 0..self.keys.len() {
            let (key, slot) = self.keys[index];
            match slot {
                Slot::Static(value) => self.labels.push((key, value)),
                Slot::Host => match parsed.host {
                    Some(host) => self.push_value(key, host),
                    None => self.push_peer(key, peer),
                },
                Slot::App => self.push_optional(key, parsed.app),
                Slot::Procid => self.push_optional(key, parsed.procid),
                Slot::Msgid => self.push_optional(key, parsed.msgid),
                Slot::Severity => {
                    let word = self.severities[usize::from(priority.severity & 7)];
                    self.push_word(key, word, message::severity_name(priority.severity));
                }
                Slot::Facility => {
                    let index = usize::from(priority.facility).min(23);
                    let word = self.facilities[index];
                    self.push_word(key, word, message::facility_name(priority.facility));
                }
                Slot::ParseError => {}
            }
        }
        if self.structured_data == StructuredData::Labels
            && let Some(data) = parsed.structured_data
        {
            self.push_structured_data(data);
        }
    }

    fn label_unparsed(&mut self, peer: Peer) {
        for index in 0..self.keys.len() {
            let (key, slot) = self.keys[index];
            match slot {
                Slot::Static(value) => self.labels.push((key, value)),
                Slot::Host => self.push_peer(key, peer),
                Slot::ParseError => self.push_word(key, self.true_value, "true"),
                _ => {}
            }
        }
    }

    fn push_optional(&mut self, key: Symbol, value: Option<&str>) {
        if let Some(value) = value {
            self.push_value(key, value);
        }
    }

    fn push_word(&mut self, key: Symbol, word: Option<Symbol>, text: &str) {
        match word {
            Some(word) => self.labels.push((key, word)),
            None => self.push_inline(key, text),
        }
    }

    fn push_peer(&mut self, key: Symbol, peer: Peer) {
        match peer {
            Peer::Local => {
                let host = std::mem::take(&mut self.local_host);
                self.push_value(key, &host);
                self.local_host = host;
            }
            Peer::Address(address) => {
                // The text of the last sender's address is kept: a sender
                // sends runs of messages.
                let peer = match self.peer.take() {
                    Some((known, text)) if known == address => (known, text),
                    Some((_, mut text)) => {
                        use std::fmt::Write as _;
                        text.clear();
                        let _ = write!(text, "{address}");
                        (address, text)
                    }
                    None => (address, address.to_string()),
                };
                self.push_value(key, &peer.1);
                self.peer = Some(peer);
            }
        }
    }

    /// A value from outside: through the cache, else the table, else
    /// carried as a string.
    fn push_value(&mut self, key: Symbol, value: &str) {
        match self.symbol_for(value) {
            Some(symbol) => self.labels.push((key, symbol)),
            None => self.push_inline(key, value),
        }
    }

    fn push_inline(&mut self, key: Symbol, value: &str) {
        let start = self.inline_text.len();
        self.inline_text.push_str(value);
        self.inline.push((key, start, self.inline_text.len()));
    }

    fn symbol_for(&mut self, value: &str) -> Option<Symbol> {
        let hash = fnv1a(value.as_bytes());
        let slot = (hash as usize) & (CACHE_SLOTS - 1);
        if let Some((known, symbol)) = self.cache[slot]
            && known == hash
            && self.symbols.resolve(symbol) == value
        {
            return Some(symbol);
        }
        let symbol = self.symbols.intern(value)?;
        self.cache[slot] = Some((hash, symbol));
        Some(symbol)
    }

    /// Adds `sd_<id>_<param>` labels and sorts the set again (their keys
    /// fall anywhere among the fixed ones). A parameter named twice keeps
    /// its first value; malformed structured data adds nothing.
    fn push_structured_data(&mut self, data: &[u8]) {
        let fixed = self.labels.len();
        // A sender decides how many parameters come; labels are few.
        for param in message::structured_data_params(data).take(SD_LABELS_MAX) {
            let Ok(param) = param else {
                break;
            };
            self.sd_key.clear();
            self.sd_key.push_str("sd_");
            push_label_name(&mut self.sd_key, param.sd_id);
            self.sd_key.push('_');
            push_label_name(&mut self.sd_key, param.name);
            let Some(key) = self.symbol_for_key() else {
                continue;
            };
            if self.labels.iter().any(|(known, _)| *known == key)
                || self.inline.iter().any(|(known, _, _)| *known == key)
            {
                continue;
            }
            let mut value = std::mem::take(&mut self.sd_value);
            value.clear();
            message::unescape_param_value(param.value, &mut value);
            let text = String::from_utf8_lossy(&value);
            self.push_value(key, &text);
            self.sd_value = value;
        }
        if self.labels.len() > fixed {
            let symbols = &self.symbols;
            self.labels
                .sort_by(|left, right| symbols.resolve(left.0).cmp(symbols.resolve(right.0)));
        }
    }

    fn symbol_for_key(&mut self) -> Option<Symbol> {
        let key = std::mem::take(&mut self.sd_key);
        let symbol = self.symbol_for(&key);
        self.sd_key = key;
        symbol
    }
}

/// Appends `name` with every byte outside `[A-Za-z0-9_]` as `_`.
fn push_label_name(out: &mut String, name: &str) {
    out.extend(name.chars().map(|character| {
        if character.is_ascii_alphanumeric() || character == '_' {
            character
        } else {
            '_'
        }
    }));
}

/// FNV-1a: short keys, no seed needed (the cache is checked against the
/// table, so a collision costs a lookup, never a wrong label).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// This host's name, for messages from the local socket.
fn local_host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `buffer.len()` bytes into the
    // buffer, which lives across the call.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return "localhost".to_string();
    }
    let length = buffer
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..length]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::SymbolLimits;

    fn labeler(structured_data: StructuredData) -> (Labeler, Arc<SymbolTable>) {
        let symbols = Arc::new(SymbolTable::new(SymbolLimits::default()));
        let labeler = Labeler::new(
            Arc::clone(&symbols),
            "sys",
            &[("env".to_string(), "test".to_string())],
            structured_data,
            TimeContext::utc(),
        );
        (labeler, symbols)
    }

    fn resolved(labeler: &Labeler, symbols: &SymbolTable) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = labeler
            .labels
            .iter()
            .map(|&(key, value)| {
                (
                    symbols.resolve(key).to_string(),
                    symbols.resolve(value).to_string(),
                )
            })
            .collect();
        pairs.extend(
            labeler
                .inline()
                .map(|(key, value)| (symbols.resolve(key).to_string(), value.to_string())),
        );
        pairs
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    /// Goal: labels sorted by key, the fixed ones from the message, the
    /// sender's address for a message without a host, `user.notice` for one
    /// without a priority, and `parse_error` with the sender for one that
    /// does not parse.
    #[test]
    fn messages_get_their_labels() {
        let (mut labeler, symbols) = labeler(StructuredData::Message);
        let metrics = SourceMetrics::default();
        let peer = Peer::Address("10.1.2.3".parse().expect("address"));
        // Received an hour later, in the same year.
        let received_ns = 1_795_784_400_000_000_000;
        let time = labeler.label(
            b"<11>Nov 27 12:00:00 web cron[7]: x",
            peer,
            received_ns,
            &metrics,
        );
        assert_eq!(time, 1_795_780_800_000_000_000);
        assert_eq!(
            resolved(&labeler, &symbols),
            pairs(&[
                ("app", "cron"),
                ("env", "test"),
                ("facility", "user"),
                ("host", "web"),
                ("procid", "7"),
                ("severity", "err"),
                ("source_id", "sys"),
            ])
        );
        labeler.label(b"just text", peer, 5, &metrics);
        assert_eq!(
            resolved(&labeler, &symbols),
            pairs(&[
                ("env", "test"),
                ("facility", "user"),
                ("host", "10.1.2.3"),
                ("severity", "notice"),
                ("source_id", "sys"),
            ])
        );
        assert_eq!(labeler.label(b"<999>bad", peer, 42, &metrics), 42);
        assert_eq!(
            resolved(&labeler, &symbols),
            pairs(&[
                ("env", "test"),
                ("host", "10.1.2.3"),
                ("parse_error", "true"),
                ("source_id", "sys"),
            ])
        );
        assert_eq!(metrics.syslog.parse_errors.get(), 1);
    }

    /// Goal: the `unsafe` gethostname call gives the kernel's host name.
    #[test]
    fn local_host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        assert_eq!(local_host_name(), kernel.trim());
    }

    /// Goal: structured data flattened into sorted, unescaped labels, at
    /// most `SD_LABELS_MAX` of them.
    #[test]
    fn structured_data_becomes_labels_up_to_the_cap() {
        let (mut labeler, symbols) = labeler(StructuredData::Labels);
        let metrics = SourceMetrics::default();
        let mut message = String::from("<13>1 2026-11-27T12:00:00Z h app - - [a@1 q=\"x\\]y\"]");
        message.push_str("[many");
        for index in 0..40 {
            message.push_str(&format!(" p{index:02}=\"{index}\""));
        }
        message.push_str("] text");
        labeler.label(message.as_bytes(), Peer::Local, 0, &metrics);
        let labels = resolved(&labeler, &symbols);
        let sd: Vec<&(String, String)> = labels
            .iter()
            .filter(|(key, _)| key.starts_with("sd_"))
            .collect();
        assert_eq!(sd.len(), SD_LABELS_MAX);
        assert_eq!(sd[0], &("sd_a_1_q".to_string(), "x]y".to_string()));
        assert!(
            labels.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "{labels:?}"
        );
    }
}
