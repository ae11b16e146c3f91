use super::*;
use crate::labels::{SymbolLimits, SymbolTable};

/// Labels of the two streams and of undecoded lines, distinct by value.
fn stream_labels(table: &SymbolTable) -> StreamLabels {
    let set = |value: &str| {
        let (labels, _) = table.label_set_with_overflow([("stream", value)]);
        labels
    };
    StreamLabels {
        stdout: set("stdout"),
        stderr: set("stderr"),
        undecoded: set("undecoded"),
        inline: Vec::new(),
    }
}

fn json_line(text: &str, stream: &str, second: u32) -> String {
    let log = serde_json::to_string(text).expect("encodes");
    format!(r#"{{"log":{log},"stream":"{stream}","time":"2026-11-27T12:00:{second:02}.5Z"}}"#)
}

/// What one chunk of `input` decodes to: (text, stream label value, time
/// second, terminated), and where the carried bytes start.
struct Decoded {
    lines: Vec<(String, String, u64, bool)>,
    carried: Option<usize>,
}

fn decode(
    state: &mut JsonLines,
    table: &SymbolTable,
    input: &str,
    max_line_bytes: usize,
    streams: StreamFilter,
) -> Decoded {
    let labels = stream_labels(table);
    let mut chunk = SourceChunk::new();
    chunk.reset(0, &LabelSet::new(), &[], 7);
    chunk.append(input.as_bytes());
    let outcome = chunk.split(RAW_LINE_BYTES_MAX, false);
    assert_eq!(outcome.consumed, input.len(), "whole lines only");
    let mut scratch = Vec::new();
    let context = DecodeContext {
        labels: &labels,
        streams,
        max_line_bytes,
        base_offset: 1000,
    };
    let carried = state.decode_chunk(&mut chunk, &mut scratch, context);
    assert!(scratch.is_empty());
    let lines = (0..chunk.line_count())
        .map(|index| {
            let span = chunk.lines()[index];
            let line = chunk.line_labels(index);
            let stream = table.resolve(line.labels[0].1).to_string();
            let text = String::from_utf8(chunk.line(span).to_vec()).expect("utf-8");
            (text, stream, line.timestamp_ns, span.terminated)
        })
        .collect();
    Decoded { lines, carried }
}

const BOTH: StreamFilter = StreamFilter {
    stdout: true,
    stderr: true,
};

fn second_ns(second: u64) -> u64 {
    // 2026-11-27T12:00:00.5Z
    1_795_780_800_000_000_000 + second * 1_000_000_000 + 500_000_000
}

/// Goal: each JSON line becomes its text, with its stream's labels and
/// Docker's time; a line that is not JSON passes as read with the read
/// time and is counted; a stream not taken is left out.
#[test]
fn lines_get_their_text_stream_and_time() {
    let table = SymbolTable::new(SymbolLimits::default());
    let mut state = JsonLines::default();
    let input = format!(
        "{}\n{}\nnot json\n{}\n",
        json_line("one \"quoted\"\n", "stdout", 1),
        json_line("two\n", "stderr", 2),
        json_line("three\n", "stdout", 3),
    );
    let decoded = decode(&mut state, &table, &input, 1024, BOTH);
    assert_eq!(decoded.carried, None);
    let texts: Vec<_> = decoded
        .lines
        .iter()
        .map(|(text, stream, time, terminated)| {
            (text.as_str(), stream.as_str(), *time, *terminated)
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("one \"quoted\"", "stdout", second_ns(1), true),
            ("two", "stderr", second_ns(2), true),
            ("not json", "undecoded", 7, true),
            ("three", "stdout", second_ns(3), true),
        ]
    );
    assert_eq!(state.collected, [2, 1]);
    assert_eq!(state.undecoded, 1);
    let only_stderr = StreamFilter {
        stdout: false,
        stderr: true,
    };
    let decoded = decode(&mut JsonLines::default(), &table, &input, 1024, only_stderr);
    let texts: Vec<_> = decoded.lines.iter().map(|line| line.0.as_str()).collect();
    assert_eq!(texts, ["two", "not json"]);
}

/// Goal: Docker's partial pieces are joined per stream, across chunks and
/// with the other stream's lines in between; while a line is joined the
/// receipt stops at its first piece. Method: a stdout line in three
/// pieces over two chunks, a stderr line between them.
#[test]
fn partial_pieces_are_joined_across_chunks_and_streams() {
    let table = SymbolTable::new(SymbolLimits::default());
    let mut state = JsonLines::default();
    let first = format!(
        "{}\n{}\n{}\n",
        json_line("before\n", "stdout", 1),
        json_line("AAAA", "stdout", 2),
        json_line("err\n", "stderr", 3),
    );
    let decoded = decode(&mut state, &table, &first, 1024, BOTH);
    let texts: Vec<_> = decoded.lines.iter().map(|line| line.0.as_str()).collect();
    assert_eq!(texts, ["before", "err"]);
    let piece_at = 1000 + json_line("before\n", "stdout", 1).len() as u64 + 1;
    assert_eq!(
        state.hold_back(),
        Some(piece_at),
        "the receipt waits for the line"
    );
    let second = format!(
        "{}\n{}\n{}\n",
        json_line("BBBB", "stdout", 4),
        json_line("CC\n", "stdout", 5),
        json_line("after\n", "stdout", 6),
    );
    let decoded = decode(&mut state, &table, &second, 1024, BOTH);
    assert_eq!(
        decoded.lines,
        [
            (
                "AAAABBBBCC".to_string(),
                "stdout".to_string(),
                second_ns(2),
                true
            ),
            (
                "after".to_string(),
                "stdout".to_string(),
                second_ns(6),
                true
            ),
        ]
    );
    assert_eq!(state.hold_back(), None);
    assert_eq!(state.collected, [3, 1]);
}

/// Goal: a joined line longer than `max_line_bytes` goes out in pieces of
/// that size (counted), the last one terminated; a single JSON line longer
/// than the bound is cut the same way.
#[test]
fn over_long_lines_are_cut_at_max_line_bytes() {
    let table = SymbolTable::new(SymbolLimits::default());
    let mut state = JsonLines::default();
    let long = "x".repeat(1500);
    let input = format!(
        "{}\n{}\n{}\n",
        json_line(&long, "stdout", 1),
        json_line(&format!("{long}\n"), "stdout", 2),
        json_line(&format!("{}\n", "y".repeat(2100)), "stderr", 3),
    );
    let decoded = decode(&mut state, &table, &input, 1024, BOTH);
    let shape: Vec<_> = decoded
        .lines
        .iter()
        .map(|(text, stream, _, terminated)| (text.len(), stream.as_str(), *terminated))
        .collect();
    assert_eq!(
        shape,
        [
            (1024, "stdout", false),
            (1024, "stdout", false),
            (952, "stdout", true),
            (1024, "stderr", false),
            (1024, "stderr", false),
            (52, "stderr", true),
        ]
    );
    assert_eq!(state.split, 4);
    assert_eq!(state.hold_back(), None);
}

/// Goal: when the span table could not hold every entry the JSON lines
/// might make, the rest is left undecoded for the next chunk. Method: a
/// chunk of many short lines and one that joins into pieces.
#[test]
fn lines_that_may_not_fit_are_carried() {
    let table = SymbolTable::new(SymbolLimits::default());
    let mut state = JsonLines::default();
    let mut input = String::new();
    let mut offsets = Vec::new();
    for number in 0..limits::CHUNK_LINES_MAX {
        offsets.push(input.len());
        input.push_str(&json_line(&format!("{number}\n"), "stdout", 1));
        input.push('\n');
    }
    let decoded = decode(&mut state, &table, &input, 1024, BOTH);
    let kept = decoded.lines.len();
    assert_eq!(
        kept,
        limits::CHUNK_LINES_MAX - 1,
        "room kept for a cut line"
    );
    assert_eq!(decoded.carried, Some(offsets[kept]));
    assert_eq!(decoded.lines[kept - 1].0, (kept - 1).to_string());
}

/// Goal: unfinished lines go out when their file ends, and forgetting
/// them (a reread from the receipt) clears the hold.
#[test]
fn unfinished_lines_are_flushed_or_forgotten() {
    let table = SymbolTable::new(SymbolLimits::default());
    let labels = stream_labels(&table);
    let mut state = JsonLines::default();
    let input = format!("{}\n", json_line("partial", "stderr", 1));
    decode(&mut state, &table, &input, 1024, BOTH);
    assert!(state.is_joining());
    let mut chunk = SourceChunk::new();
    chunk.reset(0, &LabelSet::new(), &[], 7);
    assert!(state.flush_joining(&mut chunk, &labels));
    assert_eq!(chunk.line_count(), 1);
    assert_eq!(chunk.line(chunk.lines()[0]), b"partial");
    assert!(!chunk.lines()[0].terminated);
    assert!(!state.is_joining());
    decode(&mut state, &table, &input, 1024, BOTH);
    state.forget_joining();
    assert_eq!(state.hold_back(), None);
}
