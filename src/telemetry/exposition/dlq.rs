//! Families of the dead-letter queues, one series set per sink, labelled
//! `sink`.

use std::sync::Arc;

use crate::dlq::DlqMetrics;
use crate::dlq::record::Reason;
use crate::telemetry::family::{Exposition, Family};

pub static STORED: Family = Family::counter(
    "log_capturer_dlq_stored_total",
    "Entries stored in the dead-letter queue, by reason.",
);
pub static REJECTED: Family = Family::counter(
    "log_capturer_dlq_rejected_total",
    "Entries the sink refused for good, kept in the DLQ's rejected/ directory and never replayed automatically, by reason.",
);
pub static ENTRIES_STORED: Family = Family::counter(
    "log_capturer_dlq_entries_total",
    "Entries stored in the dead-letter queue, all reasons.",
);
pub static ENTRIES: Family = Family::gauge(
    "log_capturer_dlq_entries",
    "Records in the dead-letter queue segments on disk.",
);
pub static SIZE_BYTES: Family = Family::gauge(
    "log_capturer_dlq_size_bytes",
    "Bytes of the dead-letter queue segment files (preallocated).",
);
pub static USED_BYTES: Family = Family::gauge(
    "log_capturer_dlq_used_bytes",
    "Bytes of the dead-letter queue segment files that hold data: segment headers and compressed blocks (v1 segments: their records).",
);
pub static INPUT_BYTES: Family = Family::gauge(
    "log_capturer_dlq_stored_input_bytes",
    "Bytes of the log lines held in the dead-letter queue's closed blocks, before compression (stored_input_bytes / used_bytes is the compression ratio).",
);
pub static MAX_BYTES: Family = Family::gauge(
    "log_capturer_dlq_max_bytes",
    "The bound on the dead-letter queue's segment files (dlq.max_bytes).",
);
pub static REPROCESS_ATTEMPTS: Family = Family::counter(
    "log_capturer_dlq_reprocess_attempts_total",
    "Records replayed from the dead-letter queue by automatic replay, by result.",
);
pub static DROPPED: Family = Family::counter(
    "log_capturer_dlq_dropped_total",
    "Entries dropped at the dead-letter queue's size bound (policy drop_oldest or drop_new).",
);
pub static WRITE_ERRORS: Family = Family::counter(
    "log_capturer_dlq_write_errors_total",
    "Entries that could not be written to the dead-letter queue (disk full, read-only).",
);
pub static CORRUPT_RECORDS: Family = Family::counter(
    "log_capturer_dlq_corrupt_records_total",
    "Corrupt regions (each hid at least one record) and damaged headers found when scanning dead-letter queue segments.",
);
pub static CORRUPT_BYTES: Family = Family::counter(
    "log_capturer_dlq_corrupt_bytes_total",
    "Bytes of corrupt regions and damaged headers found when scanning dead-letter queue segments.",
);

pub fn render(out: &mut Exposition, queues: &[Arc<DlqMetrics>]) {
    render_by_reason(out, queues);
    per_sink(out, &ENTRIES_STORED, queues, DlqMetrics::stored_total);
    per_sink(out, &ENTRIES, queues, |dlq| dlq.entries.get());
    per_sink(out, &SIZE_BYTES, queues, |dlq| dlq.size_bytes.get());
    per_sink(out, &USED_BYTES, queues, |dlq| dlq.used_bytes.get());
    per_sink(out, &INPUT_BYTES, queues, |dlq| dlq.input_bytes.get());
    per_sink(out, &MAX_BYTES, queues, |dlq| dlq.max_bytes.get());
    REPROCESS_ATTEMPTS.header(out);
    for dlq in queues {
        for (result, value) in [
            ("success", dlq.replayed.get()),
            ("failure", dlq.replay_failed.get()),
        ] {
            let labels = [("sink", dlq.sink.as_str()), ("result", result)];
            REPROCESS_ATTEMPTS.sample(out, &labels, value);
        }
    }
    per_sink(out, &DROPPED, queues, |dlq| dlq.dropped.get());
    per_sink(out, &WRITE_ERRORS, queues, |dlq| dlq.write_errors.get());
    per_sink(out, &CORRUPT_RECORDS, queues, |dlq| dlq.corrupt.get());
    per_sink(out, &CORRUPT_BYTES, queues, |dlq| dlq.corrupt_bytes.get());
}

/// Stored entries by replayable reason, then rejected ones by rejection.
fn render_by_reason(out: &mut Exposition, queues: &[Arc<DlqMetrics>]) {
    STORED.header(out);
    for dlq in queues {
        for reason in Reason::ALL {
            let labels = [("sink", dlq.sink.as_str()), ("reason", reason.as_str())];
            STORED.sample(out, &labels, dlq.stored_for(reason).get());
        }
    }
    REJECTED.header(out);
    for dlq in queues {
        for reason in Reason::REJECTED {
            let labels = [("sink", dlq.sink.as_str()), ("reason", reason.as_str())];
            REJECTED.sample(out, &labels, dlq.rejected_for(reason).get());
        }
    }
}

/// A family with one series per sink's queue.
fn per_sink(
    out: &mut Exposition,
    family: &Family,
    queues: &[Arc<DlqMetrics>],
    value: impl Fn(&DlqMetrics) -> u64,
) {
    family.header(out);
    for dlq in queues {
        family.sample(out, &[("sink", &dlq.sink)], value(dlq));
    }
}
