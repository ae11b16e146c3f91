//! Loki push request bodies, built without an allocation per entry.
//!
//! The caller describes each stream once, as a [`StreamText`] (its
//! selector and its JSON label object, from its label pairs sorted by key),
//! and gives the entries as (stream, timestamp, line). [`PushEncoder`] sorts
//! the entries by stream and timestamp (entries of equal time keep their
//! order) and writes either
//!
//! * **protobuf**: `logproto.PushRequest` from Loki's `push.proto`,
//!   compressed in snappy's block format (what Promtail sends, with
//!   `Content-Type: application/x-protobuf`):
//!
//!   ```text
//!   PushRequest   { repeated StreamAdapter streams = 1; }
//!   StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
//!   EntryAdapter  { google.protobuf.Timestamp timestamp = 1; string line = 2; }
//!   Timestamp     { int64 seconds = 1; int32 nanos = 2; }
//!   ```
//!
//!   `labels` is the stream selector text `{key="value", ...}` with Go
//!   string escapes; `hash` is left out (Loki computes it). A line is
//!   written as it is: protobuf `string` and `bytes` share a wire type,
//!   and Loki does not check UTF-8;
//! * **JSON**: `{"streams":[{"stream":{...},"values":[["<ns>","<line>"],...]}]}`,
//!   a line that is not UTF-8 with U+FFFD in place of its invalid bytes.
//!
//! Protobuf is written by hand with `prost`'s wire helpers into buffers the
//! encoder keeps: message lengths are computed in a first pass, so nothing
//! is built per entry. Thread: the sink's. Allocations: the encoder's
//! buffers grow to the largest request and are kept.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// One entry of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushEntry<'line> {
    /// Index of the entry's stream in the caller's stream list.
    pub stream: u32,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    pub line: &'line [u8],
    /// The entry's position in its batch: keeps the order of entries with
    /// equal timestamps.
    pub sequence: u32,
}

/// Label pairs of one stream, sorted by key.
pub type StreamLabels<'label> = [(&'label str, &'label str)];

/// A stream's labels as both formats write them, built once per stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamText {
    /// `{key="value", ...}`: the protobuf `labels` field.
    selector: Box<[u8]>,
    /// `{"key":"value",...}`: the JSON `stream` object.
    json: Box<[u8]>,
}

impl StreamText {
    /// `labels` sorted by key.
    pub fn new(labels: &StreamLabels<'_>) -> Self {
        debug_assert!(
            labels.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "stream labels sorted by key, each key once"
        );
        let mut selector = Vec::new();
        write_selector(&mut selector, labels);
        let mut json = Vec::new();
        crate::json::write_string_labels(&mut json, labels);
        Self {
            selector: selector.into_boxed_slice(),
            json: json.into_boxed_slice(),
        }
    }

    pub fn selector(&self) -> &[u8] {
        &self.selector
    }

    /// Bytes the stream adds to a request besides its entries (an upper
    /// bound for either format).
    pub fn overhead_bytes(&self) -> usize {
        self.selector.len().max(self.json.len()) + 16
    }
}

/// Builds request bodies into buffers it keeps.
#[derive(Debug)]
pub struct PushEncoder {
    body: Vec<u8>,
    compressed: Vec<u8>,
    /// Encoded length of each stream message, from the first pass.
    stream_lengths: Vec<usize>,
    snappy: snap::raw::Encoder,
}

impl Default for PushEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl PushEncoder {
    pub fn new() -> Self {
        Self {
            body: Vec::new(),
            compressed: Vec::new(),
            stream_lengths: Vec::new(),
            snappy: snap::raw::Encoder::new(),
        }
    }

    /// The snappy-compressed protobuf body of `entries`, sorted in place.
    /// Every entry's `stream` indexes `streams`.
    pub fn protobuf(
        &mut self,
        streams: &[StreamText],
        entries: &mut [PushEntry<'_>],
    ) -> Result<&[u8], snap::Error> {
        sort(entries);
        self.measure_streams(streams, entries);
        self.body.clear();
        let mut lengths = self.stream_lengths.iter();
        for group in stream_runs(entries) {
            let first = group[0];
            let length = *lengths.next().expect("one length per stream run");
            encode_key(1, WireType::LengthDelimited, &mut self.body);
            encode_varint(length as u64, &mut self.body);
            let start = self.body.len();
            encode_bytes_field(1, &streams[first.stream as usize].selector, &mut self.body);
            for entry in group {
                encode_key(2, WireType::LengthDelimited, &mut self.body);
                encode_varint(entry_length(entry) as u64, &mut self.body);
                encode_entry(entry, &mut self.body);
            }
            debug_assert_eq!(
                self.body.len() - start,
                length,
                "the first pass measured it"
            );
        }
        let bound = snap::raw::max_compress_len(self.body.len());
        self.compressed.resize(bound, 0);
        let written = self.snappy.compress(&self.body, &mut self.compressed)?;
        Ok(&self.compressed[..written])
    }

    /// The JSON body of `entries`, sorted in place.
    pub fn json(&mut self, streams: &[StreamText], entries: &mut [PushEntry<'_>]) -> &[u8] {
        sort(entries);
        let out = &mut self.body;
        out.clear();
        out.extend_from_slice(b"{\"streams\":[");
        for (run, group) in stream_runs(entries).enumerate() {
            let first = group[0];
            if run > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"stream\":");
            out.extend_from_slice(&streams[first.stream as usize].json);
            out.extend_from_slice(b",\"values\":[");
            for (index, entry) in group.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"[\"");
                let mut digits = itoa_buffer();
                out.extend_from_slice(format_u64(entry.timestamp_ns, &mut digits));
                out.extend_from_slice(b"\",");
                crate::json::write_json_string(out, entry.line);
                out.push(b']');
            }
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}");
        &self.body
    }

    /// First pass: the encoded length of each stream message, in order.
    fn measure_streams(&mut self, streams: &[StreamText], entries: &[PushEntry<'_>]) {
        self.stream_lengths.clear();
        for group in stream_runs(entries) {
            let selector = &streams[group[0].stream as usize].selector;
            let mut length = bytes_field_length(1, selector.len());
            for entry in group {
                length += bytes_field_length(2, entry_length(entry));
            }
            self.stream_lengths.push(length);
        }
    }
}

/// The runs of sorted entries that share a stream; none is empty.
fn stream_runs<'slice, 'line>(
    entries: &'slice [PushEntry<'line>],
) -> impl Iterator<Item = &'slice [PushEntry<'line>]> {
    entries.chunk_by(|left, right| left.stream == right.stream)
}

/// By stream, then time, then batch order.
fn sort(entries: &mut [PushEntry<'_>]) {
    entries.sort_unstable_by_key(|entry| (entry.stream, entry.timestamp_ns, entry.sequence));
}

/// `{key="value", ...}` with Go's escapes for `\`, `"` and newline, as
/// Loki's label parser reads it.
fn write_selector(out: &mut Vec<u8>, labels: &StreamLabels<'_>) {
    out.push(b'{');
    for (index, (key, value)) in labels.iter().enumerate() {
        if index > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"=\"");
        for &byte in value.as_bytes() {
            match byte {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'"' => out.extend_from_slice(b"\\\""),
                b'\n' => out.extend_from_slice(b"\\n"),
                _ => out.push(byte),
            }
        }
        out.push(b'"');
    }
    out.push(b'}');
}

/// Seconds and nanoseconds of a `google.protobuf.Timestamp`.
fn timestamp_parts(timestamp_ns: u64) -> (u64, u64) {
    (timestamp_ns / 1_000_000_000, timestamp_ns % 1_000_000_000)
}

/// Length of the `Timestamp` message (zero fields are left out).
fn timestamp_length(timestamp_ns: u64) -> usize {
    let (seconds, nanos) = timestamp_parts(timestamp_ns);
    let field = |value: u64| {
        if value == 0 {
            0
        } else {
            key_len(1) + encoded_len_varint(value)
        }
    };
    field(seconds) + field(nanos)
}

/// Length of an `EntryAdapter` message.
fn entry_length(entry: &PushEntry<'_>) -> usize {
    bytes_field_length(1, timestamp_length(entry.timestamp_ns))
        + bytes_field_length(2, entry.line.len())
}

fn encode_entry(entry: &PushEntry<'_>, out: &mut Vec<u8>) {
    let (seconds, nanos) = timestamp_parts(entry.timestamp_ns);
    encode_key(1, WireType::LengthDelimited, out);
    encode_varint(timestamp_length(entry.timestamp_ns) as u64, out);
    if seconds != 0 {
        encode_key(1, WireType::Varint, out);
        encode_varint(seconds, out);
    }
    if nanos != 0 {
        encode_key(2, WireType::Varint, out);
        encode_varint(nanos, out);
    }
    encode_bytes_field(2, entry.line, out);
}

fn encode_bytes_field(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// Encoded length of a length-delimited field of `length` bytes.
fn bytes_field_length(tag: u32, length: usize) -> usize {
    key_len(tag) + encoded_len_varint(length as u64) + length
}

/// Room for the decimal digits of any `u64`.
fn itoa_buffer() -> [u8; 20] {
    [0; 20]
}

/// The decimal digits of `value`, written at the end of `buffer`.
fn format_u64(mut value: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buffer[start..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Loki's messages, derived by `prost` from `push.proto`: the decoder
    /// the hand-written encoder is checked against.
    #[derive(Clone, PartialEq, prost::Message)]
    struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        streams: Vec<StreamAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct StreamAdapter {
        #[prost(string, tag = "1")]
        labels: String,
        #[prost(message, repeated, tag = "2")]
        entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        hash: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        timestamp: Option<Timestamp>,
        #[prost(bytes = "vec", tag = "2")]
        line: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Timestamp {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }

    fn entry(
        stream: u32,
        timestamp_ns: u64,
        line: &'static [u8],
        sequence: u32,
    ) -> PushEntry<'static> {
        PushEntry {
            stream,
            timestamp_ns,
            line,
            sequence,
        }
    }

    const APP: &StreamLabels<'static> = &[("app", "cron"), ("host", "web \"1\"")];
    const DB: &StreamLabels<'static> = &[("app", "mysqld")];

    /// Goal: the protobuf body decodes, with `prost`, to the streams and
    /// entries given: grouped by stream, sorted by time, equal times in
    /// batch order, selectors escaped, lines byte-exact (not UTF-8 too).
    #[test]
    fn protobuf_body_decodes_to_grouped_sorted_streams() {
        let mut entries = vec![
            entry(1, 30, b"db late", 0),
            entry(0, 20, b"second", 1),
            entry(0, 10, b"first", 2),
            entry(1, 5, b"\xff\xfe not utf-8", 3),
            entry(0, 20, b"second, same time", 4),
            entry(0, 0, b"at the epoch", 5),
            entry(0, 1_795_780_800_123_456_789, b"", 6),
        ];
        let mut encoder = PushEncoder::new();
        let body = encoder
            .protobuf(&[StreamText::new(APP), StreamText::new(DB)], &mut entries)
            .expect("compresses")
            .to_vec();
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&body)
            .expect("snappy");
        let request = PushRequest::decode(&raw[..]).expect("logproto.PushRequest");
        type Seen = (i64, i32, Vec<u8>);
        let seen: Vec<(String, Vec<Seen>)> = request
            .streams
            .iter()
            .map(|stream| {
                let entries = stream
                    .entries
                    .iter()
                    .map(|entry| {
                        let time = entry.timestamp.clone().unwrap_or_default();
                        (time.seconds, time.nanos, entry.line.clone())
                    })
                    .collect();
                (stream.labels.clone(), entries)
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (
                    r#"{app="cron", host="web \"1\""}"#.to_string(),
                    vec![
                        (0, 0, b"at the epoch".to_vec()),
                        (0, 10, b"first".to_vec()),
                        (0, 20, b"second".to_vec()),
                        (0, 20, b"second, same time".to_vec()),
                        (1_795_780_800, 123_456_789, Vec::new()),
                    ]
                ),
                (
                    r#"{app="mysqld"}"#.to_string(),
                    vec![
                        (0, 5, b"\xff\xfe not utf-8".to_vec()),
                        (0, 30, b"db late".to_vec()),
                    ]
                ),
            ]
        );
    }

    /// Goal: the JSON body is Loki's push format, parsed back by serde.
    #[test]
    fn json_body_is_lokis_push_format() {
        let mut entries = vec![
            entry(1, 7, b"db", 0),
            entry(0, 3, b"two \"quoted\"", 1),
            entry(0, 2, b"one", 2),
        ];
        let mut encoder = PushEncoder::new();
        let body = encoder
            .json(&[StreamText::new(APP), StreamText::new(DB)], &mut entries)
            .to_vec();
        let value: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({"streams": [
                {"stream": {"app": "cron", "host": "web \"1\""},
                 "values": [["2", "one"], ["3", "two \"quoted\""]]},
                {"stream": {"app": "mysqld"}, "values": [["7", "db"]]},
            ]})
        );
    }

    /// Goal: a second request reuses the buffers: same bytes for the same
    /// input, nothing left over from a larger first one.
    #[test]
    fn buffers_are_reused_without_leftovers() {
        let mut encoder = PushEncoder::new();
        let mut large: Vec<PushEntry<'static>> = (0..1000)
            .map(|index| entry(0, index, b"a line of text", index as u32))
            .collect();
        encoder
            .protobuf(&[StreamText::new(APP)], &mut large)
            .expect("compresses");
        let mut small = vec![entry(0, 1, b"x", 0)];
        let again = encoder
            .protobuf(&[StreamText::new(APP)], &mut small)
            .expect("compresses")
            .to_vec();
        let fresh = PushEncoder::new()
            .protobuf(&[StreamText::new(APP)], &mut small)
            .expect("compresses")
            .to_vec();
        assert_eq!(again, fresh);
        assert_eq!(format_u64(0, &mut itoa_buffer()), b"0");
        assert_eq!(
            format_u64(u64::MAX, &mut itoa_buffer()),
            b"18446744073709551615"
        );
    }
}
