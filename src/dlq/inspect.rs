//! `log-capturer dlq list` and `dlq dump`: read-only views of the DLQ.
//!
//! A sink's `rejected/` segments (records the sink refused for good) are
//! listed as sink `<id>/rejected`, and their records are dumped with the
//! word `rejected` before the reason (JSON: `"rejected":true`).
//!
//! They take no lock, so they run while the daemon writes and replays: a
//! segment being written is read up to its last complete record, a segment
//! deleted meanwhile is left out, and a damaged segment is reported and
//! scanned for its intact records (see `segment` and `scan`). In the
//! segment being written, the records of a block that the writer closes
//! while the view reads it may be shown twice or not at all (the blocks
//! are read before the open block); a view of a sealed segment is exact.

use std::io::Write;
use std::path::Path;

use crate::dlq::record::Record;
use crate::dlq::segment::{ReadableSegment, ScanSummary, is_not_found, list_segments};
use crate::dlq::{DlqError, list, rejected_dir};
use crate::json::{write_json_string, write_rfc3339_nanos, write_string_labels};

/// Sink directories under a DLQ directory, sorted.
pub fn sink_dirs(dlq_dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, DlqError> {
    let directory_error = |source| DlqError::Directory {
        path: dlq_dir.to_path_buf(),
        source,
    };
    if !dlq_dir.exists() {
        return Ok(Vec::new());
    }
    let mut sinks = Vec::new();
    for entry in std::fs::read_dir(dlq_dir).map_err(directory_error)? {
        let entry = entry.map_err(directory_error)?;
        if entry.path().is_dir() {
            sinks.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.path(),
            ));
        }
    }
    sinks.sort();
    Ok(sinks)
}

/// Writes one line per segment: sink, sequence, records, corrupt regions,
/// torn tail, file bytes, bytes used, format (`v1`: a frame per record,
/// written by earlier builds; `v2`: compressed blocks); then a total per
/// sink; then one note per segment that is damaged or being written,
/// naming its file.
pub fn write_listing(out: &mut dyn Write, dlq_dir: &Path) -> Result<(), DlqError> {
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>10} {:>8} {:>5} {:>12} {:>12} {:>6}",
        "sink", "segment", "records", "corrupt", "torn", "bytes", "used", "format"
    );
    let mut notes = Vec::new();
    for (sink, dir) in sink_dirs(dlq_dir)? {
        write_segments(out, &sink, &dir, &mut notes)?;
        let rejected = rejected_dir(&dir);
        if rejected.is_dir() {
            write_segments(out, &format!("{sink}/rejected"), &rejected, &mut notes)?;
        }
    }
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    Ok(())
}

/// The listing lines of the segments in one directory, and their total;
/// collects the notes of damaged or in-use segments.
fn write_segments(
    out: &mut dyn Write,
    sink: &str,
    dir: &Path,
    notes: &mut Vec<String>,
) -> Result<(), DlqError> {
    let mut records_total = 0;
    for (sequence, path, summary) in list(dir)? {
        let bytes = std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
        let torn = if summary.torn_tail { "yes" } else { "no" };
        let format = match summary.version {
            0 => "?".to_string(),
            version => format!("v{version}"),
        };
        let _ = writeln!(
            out,
            "{sink:<20} {sequence:>8} {:>10} {:>8} {torn:>5} {bytes:>12} {:>12} {format:>6}",
            summary.records, summary.corrupt, summary.used_bytes
        );
        records_total += summary.records;
        notes.extend(segment_note(&path, &summary));
    }
    let _ = writeln!(out, "{sink:<20} {:>8} {records_total:>10}", "total");
    Ok(())
}

/// What an operator should know about a segment beyond its counts.
fn segment_note(path: &Path, summary: &ScanSummary) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(damage) = summary.header {
        parts.push(format!(
            "header damaged ({damage}); the records after it were scanned anyway"
        ));
    }
    let regions = summary.corrupt - u64::from(summary.header.is_some());
    if regions > 0 {
        parts.push(format!(
            "corrupt regions skipped: {regions} ({} bytes); the intact records around them were recovered",
            summary.corrupt_bytes
        ));
    }
    if summary.in_use {
        parts.push("being written; read up to its last complete record".to_string());
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!("note: {}: {}", path.display(), parts.join("; ")))
}

/// Writes every record of the chosen sinks: as text, or one JSON object
/// per line (`--json`).
pub fn write_dump(
    out: &mut dyn Write,
    dlq_dir: &Path,
    sink: Option<&str>,
    json: bool,
) -> Result<u64, DlqError> {
    let mut count = 0;
    for (name, dir) in sink_dirs(dlq_dir)? {
        if sink.is_some_and(|wanted| wanted != name) {
            continue;
        }
        let rejected = rejected_dir(&dir);
        let mut segments = list_segments(&dir).map_err(|source| DlqError::Directory {
            path: dir.clone(),
            source,
        })?;
        if rejected.is_dir() {
            segments.extend(
                list_segments(&rejected).map_err(|source| DlqError::Directory {
                    path: rejected.clone(),
                    source,
                })?,
            );
        }
        for (_, path) in segments {
            let opened = ReadableSegment::open_unlocked(&path);
            if is_not_found(&opened) {
                continue;
            }
            let mut line = Vec::new();
            let summary = opened?.scan(|record| {
                line.clear();
                format_record(&mut line, record, json);
                let _ = out.write_all(&line);
                count += 1;
            })?;
            // Standard output holds records only; the note goes to the log.
            if let Some(note) = segment_note(&path, &summary) {
                tracing::warn!("{note}");
            }
        }
    }
    Ok(count)
}

fn format_record(out: &mut Vec<u8>, record: &Record<'_>, json: bool) {
    if json {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_rfc3339_nanos(out, record.timestamp_ns);
        out.extend_from_slice(b"\",\"sink\":");
        write_json_string(out, record.sink.as_bytes());
        out.extend_from_slice(
            format!(
                ",\"reason\":\"{}\",\"rejected\":{},\"attempts\":{},\"labels\":",
                record.reason.as_str(),
                record.reason.is_rejection(),
                record.attempts
            )
            .as_bytes(),
        );
        write_string_labels(out, &record.labels);
        out.extend_from_slice(b",\"message\":");
        write_json_string(out, record.message);
        out.extend_from_slice(b"}\n");
        return;
    }
    write_rfc3339_nanos(out, record.timestamp_ns);
    out.extend_from_slice(
        format!(
            " {} {}{} attempts={} ",
            record.sink,
            if record.reason.is_rejection() {
                "rejected "
            } else {
                ""
            },
            record.reason.as_str(),
            record.attempts
        )
        .as_bytes(),
    );
    for (key, value) in &record.labels {
        out.extend_from_slice(format!("{key}={value} ").as_bytes());
    }
    out.extend_from_slice(
        &String::from_utf8_lossy(record.message)
            .into_owned()
            .into_bytes(),
    );
    out.push(b'\n');
}
