//! Families of the sources and the files they follow.

use std::sync::Arc;

use crate::labels::SymbolTable;
use crate::metrics::{FileStatus, SourceMetrics};
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
    "Times a followed file was found no longer at its path.",
);
pub static TRUNCATIONS: Family = Family::counter(
    "log_capturer_position_truncation_detected_total",
    "Times a followed file was found shorter than the read position.",
);
pub static FILE_LAG: Family = Family::gauge(
    "log_capturer_file_lag_bytes",
    "Bytes of a followed file not known delivered: its size minus its stored position.",
);
pub static FILES_WATCHED: Family = Family::gauge(
    "log_capturer_files_watched",
    "Files a source follows, open or waiting for a descriptor.",
);
pub static FILES_OPEN: Family = Family::gauge(
    "log_capturer_files_open",
    "Files a source holds a descriptor for (at most max_files).",
);
pub static SOURCE_ROTATIONS: Family = Family::counter(
    "log_capturer_file_rotations_total",
    "Followed files found no longer at their path (renamed or deleted).",
);
pub static SOURCE_TRUNCATIONS: Family = Family::counter(
    "log_capturer_file_truncations_total",
    "Followed files found shorter than the read position, read again from 0.",
);
pub static FINGERPRINT_MISMATCHES: Family = Family::counter(
    "log_capturer_position_fingerprint_mismatch_total",
    "Stored positions not used because the file's first bytes changed (inode reused).",
);
pub static FILES_CLOSED_FOR_LIMIT: Family = Family::counter(
    "log_capturer_files_closed_for_limit_total",
    "Idle files closed to stay within max_files, reopened later at their offset.",
);
pub static POSITION_WRITES: Family = Family::counter(
    "log_capturer_position_writes_total",
    "Position files written (temp file, fsync, rename).",
);
pub static POSITION_WRITE_SECONDS: Family = Family::counter(
    "log_capturer_position_write_seconds_total",
    "Time spent writing position files; divided by the writes, the mean latency.",
);
pub static POSITION_WRITE_ERRORS: Family = Family::counter(
    "log_capturer_position_write_errors_total",
    "Position files that could not be written or opened.",
);
pub static POSITIONS_CORRUPT: Family = Family::counter(
    "log_capturer_positions_corrupt_total",
    "Parts of position files that could not be used at start-up.",
);

pub static SYSLOG_CONNECTIONS: Family = Family::gauge(
    "log_capturer_syslog_connections_active",
    "TCP connections a syslog source holds (at most max_connections).",
);
pub static SYSLOG_IDLE_CLOSED: Family = Family::counter(
    "log_capturer_syslog_connections_idle_closed_total",
    "TCP connections a syslog source closed after idle_timeout_ms without a byte.",
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
    // The file families only for file sources: the others have no files
    // and no positions.
    let files = of_types(sources, &["file", "docker"]);
    per_source(out, &FILES_WATCHED, &files, |source| {
        source.files_watched.get()
    });
    per_source(out, &FILES_OPEN, &files, |source| source.files_open.get());
    per_source(out, &SOURCE_ROTATIONS, &files, |source| {
        source.rotations.get()
    });
    per_source(out, &SOURCE_TRUNCATIONS, &files, |source| {
        source.truncations.get()
    });
    per_source(out, &FINGERPRINT_MISMATCHES, &files, |source| {
        source.fingerprint_mismatches.get()
    });
    per_source(out, &FILES_CLOSED_FOR_LIMIT, &files, |source| {
        source.files_closed_for_limit.get()
    });
    per_source(out, &POSITION_WRITES, &files, |source| {
        source.position_writes.get()
    });
    POSITION_WRITE_SECONDS.header(out);
    for source in &files {
        let seconds = source.position_write_ns.get() as f64 / 1e9;
        POSITION_WRITE_SECONDS.sample(out, &[("source_id", &source.id)], seconds);
    }
    per_source(out, &POSITION_WRITE_ERRORS, &files, |source| {
        source.position_write_errors.get()
    });
    per_source(out, &POSITIONS_CORRUPT, &files, |source| {
        source.positions_corrupt.get()
    });
    let syslog = of_types(sources, &["syslog"]);
    per_source(out, &SYSLOG_CONNECTIONS, &syslog, |source| {
        source.syslog.connections_active.get()
    });
    per_source(out, &SYSLOG_IDLE_CLOSED, &syslog, |source| {
        source.syslog.connections_idle_closed.get()
    });
    render_files(out, sources);
    render_docker(out, sources);
}

pub static CONTAINERS_MONITORED: Family = Family::gauge(
    "log_capturer_containers_monitored",
    "1 for each container a docker source follows.",
);
pub static CONTAINER_LOGS_COLLECTED: Family = Family::counter(
    "log_capturer_logs_collected_total",
    "Lines taken from a container's log, by stream.",
);
pub static CONTAINER_EVENTS: Family = Family::counter(
    "log_capturer_container_events_total",
    "Container events (start, die, destroy, rename) seen by a docker source.",
);
pub static CONTAINER_STREAMS_ACTIVE: Family = Family::gauge(
    "log_capturer_container_streams_active",
    "Container log files a docker source follows (current and rotated).",
);
pub static CONTAINER_STREAM_ROTATIONS: Family = Family::counter(
    "log_capturer_container_stream_rotations_total",
    "Container log files found rotated by the json-file driver.",
);
pub static DOCKER_RECONNECTS: Family = Family::counter(
    "log_capturer_docker_reconnects_total",
    "Connections to dockerd re-established after it went away.",
);
pub static DOCKER_API_ERRORS: Family = Family::counter(
    "log_capturer_docker_api_errors_total",
    "Requests to dockerd that failed, and event streams lost.",
);
pub static DOCKER_UNDECODED: Family = Family::counter(
    "log_capturer_docker_lines_undecoded_total",
    "Container log lines that were not json-file lines, handed on as read with parse_error=\"true\".",
);
pub static DOCKER_OTHER_DRIVERS: Family = Family::counter(
    "log_capturer_docker_containers_other_driver_total",
    "Containers not followed because they log with another driver than json-file.",
);

/// The families of the docker sources.
fn render_docker(out: &mut Exposition, sources: &[Arc<SourceMetrics>]) {
    let docker = of_types(sources, &["docker"]);
    let containers: Vec<_> = docker
        .iter()
        .flat_map(|source| {
            source
                .docker
                .containers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
        .collect();
    CONTAINERS_MONITORED.header(out);
    for container in &containers {
        let labels = [
            ("container_id", container.id.as_str()),
            ("container_name", container.name.as_str()),
            ("image", container.image.as_str()),
        ];
        CONTAINERS_MONITORED.sample(out, &labels, 1u64);
    }
    CONTAINER_LOGS_COLLECTED.header(out);
    for container in &containers {
        for (stream, lines) in ["stdout", "stderr"].into_iter().zip(container.collected) {
            let labels = [("stream", stream), ("container", container.name.as_str())];
            CONTAINER_LOGS_COLLECTED.sample(out, &labels, lines);
        }
    }
    CONTAINER_EVENTS.header(out);
    for source in &docker {
        let events = source
            .docker
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((event, container), count) in events.iter() {
            let labels = [
                ("event_type", event.as_str()),
                ("container", container.as_str()),
            ];
            CONTAINER_EVENTS.sample(out, &labels, *count);
        }
    }
    let total =
        |value: fn(&SourceMetrics) -> u64| docker.iter().map(|source| value(source)).sum::<u64>();
    CONTAINER_STREAMS_ACTIVE.header(out);
    CONTAINER_STREAMS_ACTIVE.sample(out, &[], total(|source| source.docker.streams_active.get()));
    CONTAINER_STREAM_ROTATIONS.header(out);
    CONTAINER_STREAM_ROTATIONS.sample(
        out,
        &[],
        total(|source| source.docker.stream_rotations.get()),
    );
    per_source(out, &DOCKER_RECONNECTS, &docker, |source| {
        source.docker.reconnects.get()
    });
    per_source(out, &DOCKER_API_ERRORS, &docker, |source| {
        source.docker.api_errors.get()
    });
    per_source(out, &DOCKER_UNDECODED, &docker, |source| {
        source.docker.undecoded.get()
    });
    per_source(out, &DOCKER_OTHER_DRIVERS, &docker, |source| {
        source.docker.other_drivers.get()
    });
}

pub static LABEL_SYMBOLS: Family = Family::gauge(
    "log_capturer_label_symbols",
    "Label strings interned (bounded by daemon.label_symbols_max).",
);
pub static LABEL_BYTES: Family = Family::gauge(
    "log_capturer_label_bytes",
    "Bytes of interned label strings (bounded by daemon.label_bytes_max).",
);
pub static LABELS_NOT_INTERNED: Family = Family::counter(
    "log_capturer_labels_not_interned_total",
    "Label values the table had no room for, carried with their lines instead.",
);

/// The label symbol table's families.
pub fn render_symbols(out: &mut Exposition, symbols: &SymbolTable) {
    LABEL_SYMBOLS.header(out);
    LABEL_SYMBOLS.sample(out, &[], symbols.len() as u64);
    LABEL_BYTES.header(out);
    LABEL_BYTES.sample(out, &[], symbols.bytes() as u64);
    LABELS_NOT_INTERNED.header(out);
    LABELS_NOT_INTERNED.sample(out, &[], symbols.not_interned.get());
}

/// The sources of the given `type`s, for the families only they have.
fn of_types(sources: &[Arc<SourceMetrics>], types: &[&str]) -> Vec<Arc<SourceMetrics>> {
    sources
        .iter()
        .filter(|source| types.contains(&source.source_type))
        .cloned()
        .collect()
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

/// The per-file families, from each source's last published list.
fn render_files(out: &mut Exposition, sources: &[Arc<SourceMetrics>]) {
    let files: Vec<(&SourceMetrics, Vec<FileStatus>)> = sources
        .iter()
        .map(|source| {
            let statuses = source
                .files
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            (source.as_ref(), statuses)
        })
        .collect();
    FILES_MONITORED.header(out);
    for (source, statuses) in &files {
        for file in statuses {
            let labels = [
                ("filepath", &*file.path),
                ("source_type", source.source_type),
            ];
            FILES_MONITORED.sample(out, &labels, u64::from(file.open));
        }
    }
    per_file(out, &ROTATIONS, &files, |file| file.rotations);
    per_file(out, &TRUNCATIONS, &files, |file| file.truncations);
    FILE_LAG.header(out);
    for (source, statuses) in &files {
        for file in statuses {
            let labels = [("source_id", source.id.as_str()), ("file", &*file.path)];
            FILE_LAG.sample(out, &labels, file.lag_bytes);
        }
    }
}

/// A family with one series per followed file, labelled `file_path`.
fn per_file(
    out: &mut Exposition,
    family: &Family,
    files: &[(&SourceMetrics, Vec<FileStatus>)],
    value: impl Fn(&FileStatus) -> u64,
) {
    family.header(out);
    for file in files.iter().flat_map(|(_, statuses)| statuses) {
        family.sample(out, &[("file_path", &file.path)], value(file));
    }
}
