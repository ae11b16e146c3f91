//! Families of the sources and the files they follow.

use std::sync::Arc;

use crate::metrics::{FileMetrics, SourceMetrics};
use crate::telemetry::family::{Exposition, Family};

pub static LOGS_PROCESSED: Family = Family::counter(
    "log_capturer_logs_processed_total",
    "Lines taken from a source into batches.",
);
pub static LINES_READ: Family = Family::counter(
    "log_capturer_source_lines_read_total",
    "Lines (and pieces of over-long lines) read by a source.",
);
pub static BYTES_READ: Family = Family::counter(
    "log_capturer_source_bytes_read_total",
    "Bytes read by a source.",
);
pub static LINES_SPLIT: Family = Family::counter(
    "log_capturer_source_lines_split_total",
    "Extra pieces cut from lines longer than max_line_bytes.",
);
pub static FILES_MONITORED: Family = Family::gauge(
    "log_capturer_files_monitored",
    "1 while a followed file is open.",
);
pub static ROTATIONS: Family = Family::counter(
    "log_capturer_position_rotation_detected_total",
    "Times a followed path was found to name a new file.",
);
pub static TRUNCATIONS: Family = Family::counter(
    "log_capturer_position_truncation_detected_total",
    "Times a followed file was found shorter than the read position.",
);

pub fn render(out: &mut Exposition, sources: &[Arc<SourceMetrics>]) {
    LOGS_PROCESSED.header(out);
    for source in sources {
        let labels = [
            ("source_type", source.source_type),
            ("source_id", source.id.as_str()),
            ("pipeline", "default"),
        ];
        LOGS_PROCESSED.sample(out, &labels, source.lines_dispatched.get());
    }
    per_source(out, &LINES_READ, sources, |source| source.lines_read.get());
    per_source(out, &BYTES_READ, sources, |source| source.bytes_read.get());
    per_source(out, &LINES_SPLIT, sources, |source| {
        source.lines_split.get()
    });
    render_files(out, sources);
}

/// A family with one series per source, labelled `source_id`.
fn per_source(
    out: &mut Exposition,
    family: &Family,
    sources: &[Arc<SourceMetrics>],
    value: impl Fn(&SourceMetrics) -> u64,
) {
    family.header(out);
    for source in sources {
        family.sample(out, &[("source_id", &source.id)], value(source));
    }
}

fn render_files(out: &mut Exposition, sources: &[Arc<SourceMetrics>]) {
    FILES_MONITORED.header(out);
    for source in sources {
        for file in &source.files {
            let labels = [
                ("filepath", file.path.as_str()),
                ("source_type", source.source_type),
            ];
            FILES_MONITORED.sample(out, &labels, file.open.get());
        }
    }
    per_file(out, &ROTATIONS, sources, |file| file.rotations.get());
    per_file(out, &TRUNCATIONS, sources, |file| file.truncations.get());
}

/// A family with one series per followed file, labelled `file_path`.
fn per_file(
    out: &mut Exposition,
    family: &Family,
    sources: &[Arc<SourceMetrics>],
    value: impl Fn(&FileMetrics) -> u64,
) {
    family.header(out);
    for file in sources.iter().flat_map(|source| &source.files) {
        family.sample(out, &[("file_path", &file.path)], value(file));
    }
}
