//! The Loki request encoder against the real Loki of `../shared/loki`:
//! what it writes, Loki stores, in both push formats.

mod common;

use common::loki::Loki;
use log_capturer::sink::loki::request::{PushEncoder, PushEntry, StreamText};

const BASE_NS: u64 = 1_795_780_800_000_000_000;

/// Goal: a protobuf (snappy) request and a JSON request of three streams
/// each are stored as sent: every entry once, labels and lines exact,
/// identical lines at distinct times all kept. Method: encode, push, read
/// back with `query_range`.
#[test]
fn requests_in_both_formats_are_stored_by_loki_as_sent() {
    let loki = Loki::start();
    let mut encoder = PushEncoder::new();
    for (format, app) in [("protobuf", "proto"), ("json", "json")] {
        let streams_labels = [
            vec![("app", app), ("host", "web1")],
            vec![("app", app), ("host", "web2")],
            vec![("app", app), ("host", "quote \" and \\ back")],
        ];
        let streams: Vec<StreamText> = streams_labels
            .iter()
            .map(|pairs| StreamText::new(pairs))
            .collect();
        let lines: Vec<String> = (0..3000)
            .map(|number| format!("line {number:05}"))
            .collect();
        let mut entries: Vec<PushEntry<'_>> = lines
            .iter()
            .enumerate()
            .map(|(index, line)| PushEntry {
                stream: (index % 3) as u32,
                timestamp_ns: BASE_NS + index as u64,
                // Every tenth line the same text: kept, as their times differ.
                line: if index.is_multiple_of(10) {
                    b"repeated"
                } else {
                    line.as_bytes()
                },
                sequence: index as u32,
            })
            .collect();
        let (status, body) = match format {
            "protobuf" => {
                let body = encoder
                    .protobuf(&streams, &mut entries)
                    .expect("snappy")
                    .to_vec();
                loki.push("application/x-protobuf", &body)
            }
            _ => {
                let body = encoder.json(&streams, &mut entries).to_vec();
                loki.push("application/json", &body)
            }
        };
        assert_eq!(status, 204, "{format}: {body}");
        let found = loki.entries(&format!("{{app=\"{app}\"}}"), BASE_NS - 1, BASE_NS + 10_000);
        assert_eq!(found.len(), 3000, "{format}");
        for (labels, timestamp, line) in &found {
            let index = (timestamp - BASE_NS) as usize;
            let expected = if index.is_multiple_of(10) {
                "repeated"
            } else {
                lines[index].as_str()
            };
            assert_eq!(line, expected, "{format}");
            let host = match index % 3 {
                0 => "web1",
                1 => "web2",
                _ => "quote \" and \\ back",
            };
            assert_eq!(labels["host"], host, "{format}");
            assert_eq!(labels["app"], app, "{format}");
        }
    }
}
