//! Counters that stages publish and readers (the endpoint, the shutdown
//! summary, tests) read without a lock.
//!
//! Every counter is an `AtomicU64` updated with `Relaxed` ordering: a reader
//! wants a recent value, not a value ordered with other memory, so no
//! operation pairs with another. A stage updates its counters once per chunk
//! or batch, not per line.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Adds atomically, for a gauge that two threads move.
    pub fn add(&self, amount: u64) {
        self.0.fetch_add(amount, Ordering::Relaxed);
    }

    /// Subtracts atomically, stopping at zero.
    pub fn subtract(&self, amount: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| {
                Some(value.saturating_sub(amount))
            });
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// State of one followed file, as its source last published it.
#[derive(Debug, Clone)]
pub struct FileStatus {
    /// The path the file was found at (its `file` label).
    pub path: std::sync::Arc<str>,
    pub open: bool,
    /// Times this file was found no longer at its path.
    pub rotations: u64,
    /// Times this file was found shorter than the read offset.
    pub truncations: u64,
    /// Bytes not known delivered: the size seen minus the position.
    pub lag_bytes: u64,
}

/// Counters of one source.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    pub id: String,
    pub source_type: &'static str,
    /// The followed files, published by the source every
    /// `positions_interval_ms` (a lock the source takes once then, the
    /// endpoint once per scrape).
    pub files: std::sync::Mutex<Vec<FileStatus>>,
    /// Lines (and pieces of over-long lines) pushed to the dispatcher.
    pub lines_read: Counter,
    /// Lines of this source the dispatcher has put into batches.
    pub lines_dispatched: Counter,
    pub bytes_read: Counter,
    /// Extra pieces cut from lines longer than `max_line_bytes`.
    pub lines_split: Counter,
    pub read_errors: Counter,
    /// Files followed (open or waiting for a descriptor).
    pub files_watched: Gauge,
    /// Files with an open descriptor.
    pub files_open: Gauge,
    pub rotations: Counter,
    pub truncations: Counter,
    /// Stored positions whose file's first bytes no longer match.
    pub fingerprint_mismatches: Counter,
    /// Idle files closed to stay within `max_files`.
    pub files_closed_for_limit: Counter,
    pub position_writes: Counter,
    /// Nanoseconds spent writing positions (with `position_writes`, the
    /// mean latency).
    pub position_write_ns: Counter,
    pub position_write_errors: Counter,
    /// Parts of position files that could not be used.
    pub positions_corrupt: Counter,
    /// A syslog source's own counts (zero for other sources).
    pub syslog: SyslogCounters,
    /// A docker source's own counts (zero for other sources).
    pub docker: DockerCounters,
}

/// What a docker source counts besides lines and bytes.
#[derive(Debug, Default)]
pub struct DockerCounters {
    /// Event streams re-opened after dockerd went away.
    pub reconnects: Counter,
    /// Requests to dockerd that failed, and event streams lost.
    pub api_errors: Counter,
    /// Container log files found rotated by the `json-file` driver.
    pub stream_rotations: Counter,
    /// Container log files followed (current and rotated ones).
    pub streams_active: Gauge,
    /// JSON lines that did not decode, handed on as read.
    pub undecoded: Counter,
    /// Containers skipped for logging with another driver.
    pub other_drivers: Counter,
    /// The followed containers, published with the file metrics.
    pub containers: std::sync::Mutex<Vec<ContainerStatus>>,
    /// Container events by (event type, container name).
    pub events: std::sync::Mutex<std::collections::BTreeMap<(String, String), u64>>,
}

/// One followed container, for the endpoint.
#[derive(Debug, Clone, Default)]
pub struct ContainerStatus {
    /// Short id (12 hex digits).
    pub id: String,
    pub name: String,
    pub image: String,
    /// Lines handed on per stream (stdout, stderr).
    pub collected: [u64; 2],
}

/// What a syslog source counts besides lines and bytes.
#[derive(Debug, Default)]
pub struct SyslogCounters {
    /// Messages delivered raw with `parse_error = "true"`.
    pub parse_errors: Counter,
    /// Messages cut at `max_message_bytes`.
    pub truncated: Counter,
    /// TCP frames whose octet count was malformed (read to the next `LF`).
    pub framing_errors: Counter,
    /// Datagrams dropped because no chunk was free (the dispatcher is
    /// behind): UDP and Unix senders cannot be held back.
    pub queue_full: Counter,
    /// Connections closed at once because `max_connections` were open.
    pub connections_refused: Counter,
    /// Connections closed after `idle_timeout_ms` without a byte.
    pub connections_idle_closed: Counter,
    pub connections_active: Gauge,
    /// Empty datagrams (nothing to deliver).
    pub empty: Counter,
    /// TCP bytes received by the kernel but not read when the source
    /// stopped (the dispatcher had no chunk free): discarded.
    pub unread_at_stop_bytes: Counter,
    /// Datagrams the kernel dropped on the UDP socket (its receive buffer
    /// was full), from `/proc/net/udp`.
    pub kernel_drops: Gauge,
}

/// Counters of the dispatcher.
#[derive(Debug, Default)]
pub struct DispatcherMetrics {
    /// Entries appended to batches.
    pub lines_processed: Counter,
    pub batches_sealed: Counter,
    /// Batches every sink has reported back on.
    pub batches_completed: Counter,
    /// Sealed batches not yet completed.
    pub batches_in_flight: Gauge,
    /// (batch, sink) pairs waiting in the retry wheel.
    pub retry_queue_size: Gauge,
    /// Entries sent to the DLQ because the retry wheel was full.
    pub retry_drops: Counter,
    /// Retries handed to sinks.
    pub retries_sent: Counter,
}

/// Counters of one sink.
///
/// A line has one outcome per sink, counted once: `lines_sent` when the sink
/// delivered it (on the first attempt or a retry), `lines_failed` when it
/// was handed to the sink's DLQ instead. Attempts are counted apart, in
/// `line_attempts_failed` (and `lines_sent`, as every delivery is the
/// attempt that succeeded), so that a line retried five times is one
/// outcome and five attempts.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub id: String,
    pub sink_type: &'static str,
    /// Lines delivered, once each; counted by the sink.
    pub lines_sent: Counter,
    /// Lines handed to the DLQ for this sink (any reason), once each;
    /// counted by the dispatcher, which alone knows a line's last attempt.
    pub lines_failed: Counter,
    /// Line deliveries tried that failed: one per line per failed attempt,
    /// a breaker-open refusal included; counted by the sink.
    pub line_attempts_failed: Counter,
    pub batches_sent: Counter,
    /// Batch deliveries that failed in part or whole, one per attempt.
    pub batches_failed: Counter,
    pub bytes_written: Counter,
}

/// Whether a stage thread is running. Set by the thread itself: true at
/// start, false when it ends for any reason, a panic included.
#[derive(Debug, Default)]
pub struct StageHealth {
    pub name: String,
    /// `source`, `dispatcher` or `sink`.
    pub stage_type: &'static str,
    pub alive: std::sync::atomic::AtomicBool,
}

impl StageHealth {
    pub fn is_alive(&self) -> bool {
        // Acquire pairs with the Release stores of the thread's start and
        // end, so a reader sees the thread's last word.
        self.alive.load(Ordering::Acquire)
    }

    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::Release);
    }
}

/// Configuration reloads (SIGHUP) of this daemon. A reload that re-executes
/// the binary hands these figures to the new process, so they count over
/// the daemon's whole life, not one process image.
#[derive(Debug, Default)]
pub struct ReloadMetrics {
    /// Reloads applied: a changed config validated and started.
    pub succeeded: Counter,
    /// Reloads refused: the new config was invalid; the old one runs on.
    pub failed: Counter,
    /// 1 when the last reload was refused, 0 otherwise (and before any).
    pub last_failed: Gauge,
    /// Listening sockets that could not be handed to the new process, and
    /// inherited ones the new config no longer names (closed, with what
    /// their queues held).
    pub sockets_not_handed_over: Counter,
}
