//! Families of the process itself: the reference `log_capturer_*` gauges
//! and the standard `process_*` metrics.

use crate::telemetry::AllocatorFigures;
use crate::telemetry::family::{Exposition, Family};
use crate::telemetry::process::ProcessReading;

pub static MEMORY_USAGE: Family = Family::gauge(
    "log_capturer_memory_usage_bytes",
    "Memory of the process: rss, peak_rss, virtual, and the allocator's own figures.",
);
pub static CPU_USAGE: Family = Family::gauge(
    "log_capturer_cpu_usage_percent",
    "CPU time of the process over the last interval, percent of one core (prefer rate(process_cpu_seconds_total)).",
);
pub static FILE_DESCRIPTORS: Family = Family::gauge(
    "log_capturer_file_descriptors_open",
    "Open file descriptors of the process.",
);
pub static THREADS: Family = Family::gauge(
    "log_capturer_threads",
    "Threads of the process: the stages, fixed at start-up, plus librdkafka's, which follow the number of brokers each Kafka producer knows.",
);
pub static CPU_SECONDS: Family = Family::counter(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
);
pub static RESIDENT_MEMORY: Family = Family::gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
);
pub static OPEN_FDS: Family = Family::gauge("process_open_fds", "Number of open file descriptors.");
pub static START_TIME: Family = Family::gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
);

/// What the process families are rendered from.
#[derive(Debug, Clone, Copy)]
pub struct ProcessFigures<'a> {
    pub reading: &'a ProcessReading,
    /// The allocator's own figures, if the binary supplied them.
    pub allocator: Option<AllocatorFigures>,
    /// CPU time since the last interval, percent of one core.
    pub cpu_percent: f64,
    /// `None` when it could not be read: the family is then left out.
    pub start_time_seconds: Option<f64>,
}

pub fn render(out: &mut Exposition, figures: &ProcessFigures<'_>) {
    let reading = figures.reading;
    MEMORY_USAGE.header(out);
    for (kind, bytes) in [
        ("rss", reading.rss_bytes),
        ("peak_rss", reading.peak_rss_bytes),
        ("virtual", reading.virtual_bytes),
    ] {
        MEMORY_USAGE.sample(out, &[("type", kind)], bytes);
    }
    if let Some(allocator) = figures.allocator {
        for (kind, bytes) in allocator() {
            MEMORY_USAGE.sample(out, &[("type", kind)], bytes);
        }
    }
    CPU_USAGE.header(out);
    CPU_USAGE.sample(out, &[], figures.cpu_percent);
    FILE_DESCRIPTORS.header(out);
    FILE_DESCRIPTORS.sample(out, &[], reading.file_descriptors);
    THREADS.header(out);
    THREADS.sample(out, &[], reading.threads);
    render_standard(out, figures);
}

/// The `process_*` metrics every Prometheus client library exports, under
/// their standard names and units.
fn render_standard(out: &mut Exposition, figures: &ProcessFigures<'_>) {
    let reading = figures.reading;
    CPU_SECONDS.header(out);
    CPU_SECONDS.sample(out, &[], reading.cpu_seconds);
    RESIDENT_MEMORY.header(out);
    RESIDENT_MEMORY.sample(out, &[], reading.rss_bytes);
    OPEN_FDS.header(out);
    OPEN_FDS.sample(out, &[], reading.file_descriptors);
    if let Some(started) = figures.start_time_seconds {
        START_TIME.header(out);
        START_TIME.sample(out, &[], started);
    }
}
