//! The Loki sink thread.
//!
//! ```text
//! loop:
//!     gather a round: take jobs (live lane first) while they wait and the
//!         lines taken fit one request; give each selected entry its
//!         stream and the time it is sent with; refuse here what Loki
//!         would refuse (too old with old_entries = "reject", too new, too
//!         long for a request, labels Loki cannot take)
//!     send the round's entries, sorted by stream and time, in requests
//!         of at most max_request_bytes:
//!         2xx            -> delivered
//!         429, 5xx, 401/403, timeout, transport
//!                        -> failed, retryable; the breaker opens for
//!                           Retry-After or probe_interval_ms
//!         400, 413       -> refused: split and send the halves again until
//!                           the refused entries are alone (Loki stored the
//!                           valid ones and drops the duplicates), then
//!                           those go to rejected/ with Loki's reason
//!         breaker open   -> failed, retryable, without a request
//!     report every batch of the round
//! ```
//!
//! Times: a live entry is sent with its own time raised past the last one
//! sent on its stream (`streams::StreamTable::raise`), clamped first when
//! older than `max_entry_age_ms`. That time is kept in the failure table:
//! a retry sends the same time, and the dispatcher stores it in the DLQ,
//! so a replay sends it again too, and Loki drops what it already holds
//! instead of keeping it twice. Replayed entries keep their stored time.
//!
//! Bounds: a round holds at most one batch per slot of the sink's lanes,
//! and a request at most `max_request_bytes` of lines; one request is in
//! flight. A refused request costs at most [`SPLIT_REQUESTS_MAX`] more.
//! Allocations: the round's entry table, the request buffers and the
//! stream table are kept and reused; none per line once they have grown.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batch::{Entry, SealedBatch};
use crate::labels::SymbolTable;
use crate::limits;
use crate::metrics::{Counter, Gauge, SinkMetrics};
use crate::sink::SinkHealth;
use crate::sink::encode::{Encoder, Encoding};
use crate::sink::link::{FailureTable, Outcome, Rejection, SinkLinks, SinkReport, SlotPlan};
use crate::sink::loki::client::{LokiClient, Pushed};
use crate::sink::loki::config::{LokiFormat, OldEntries};
use crate::sink::loki::request::{PushEncoder, PushEntry};
use crate::sink::loki::response::{Answer, ErrorType};
use crate::sink::loki::streams::StreamTable;
use crate::wake;

/// Most extra requests spent finding the refused entries of one request;
/// past it, what is still unresolved is stored in `rejected/` whole (its
/// valid entries are then both in Loki and there: nothing is lost).
pub const SPLIT_REQUESTS_MAX: usize = 64;

/// How far ahead of this host's clock an entry may be: Loki's default
/// `creation_grace_period`.
pub const FUTURE_GRACE: Duration = Duration::from_secs(600);

/// How far back a replayed entry's time may be raised past an equal or
/// later one before it in its batch: entries of one shutdown-stored read
/// share a time; an entry much older than the one before it is simply out
/// of order, which Loki takes, and keeps its time.
const REPLAY_RAISE_MAX_NS: u64 = 1_000_000_000;

/// A raise this large is counted (`log_capturer_timestamp_raised_total`).
const RAISED_FAR_NS: u64 = 1_000_000_000;

/// Bytes an entry adds to a request besides its line (time, framing).
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// Streams past which the sink warns (once) that a stream label has too
/// many values.
pub const STREAMS_WARN: usize = 10_000;

/// Loki-specific counters of one sink.
#[derive(Debug, Default)]
pub struct LokiMetrics {
    /// `log_capturer_loki_error_type_total`, by `ErrorType::ALL` index.
    pub errors: [Counter; ErrorType::ALL.len()],
    /// `log_capturer_timestamp_clamped_total`.
    pub timestamps_clamped: Counter,
    /// `log_capturer_timestamp_rejection_total{reason="too_old"}`.
    pub timestamps_rejected_old: Counter,
    /// `log_capturer_timestamp_rejection_total{reason="too_new"}`.
    pub timestamps_rejected_new: Counter,
    /// `log_capturer_timestamp_raised_total`: live entries sent a second or
    /// more after their own time, to stay after their stream's last entry.
    pub timestamps_raised_far: Counter,
    /// `log_capturer_loki_streams`: streams the sink knows.
    pub streams: Gauge,
    /// `log_capturer_loki_requests_total`, split requests included.
    pub requests: Counter,
    /// 0 closed, 1 open.
    pub breaker_state: Gauge,
    pub breaker_openings: Counter,
}

impl LokiMetrics {
    pub fn error(&self, error: ErrorType) -> &Counter {
        let index = ErrorType::ALL
            .iter()
            .position(|known| *known == error)
            .expect("every error type is in ALL");
        &self.errors[index]
    }
}

impl SinkHealth for LokiMetrics {
    fn failures(&self) -> u64 {
        self.breaker_openings.get()
    }

    fn is_reachable(&self) -> bool {
        self.breaker_state.get() == 0
    }
}

/// What a Loki sink is built from besides its client.
#[derive(Debug)]
pub struct LokiSinkOptions {
    pub id: String,
    pub format: LokiFormat,
    pub encoding: Encoding,
    pub max_request_bytes: usize,
    pub max_entry_age: Duration,
    pub old_entries: OldEntries,
    pub probe_interval: Duration,
    pub request_timeout: Duration,
    pub slots: SlotPlan,
    pub batch_size: usize,
}

/// A batch of the round and what became of its entries.
#[derive(Debug)]
struct Held {
    batch: Arc<SealedBatch>,
    live: bool,
    selected: u32,
    failed: u32,
    permanent: u32,
}

/// One entry of the round.
#[derive(Debug, Clone, Copy)]
struct EntryRef {
    held: u32,
    entry: u32,
    stream: u32,
    timestamp_ns: u64,
    /// Start of the line in the round's JSON-encoded lines (`encoding =
    /// "json"`); the line is the batch's own otherwise.
    encoded_start: u32,
    encoded_len: u32,
}

/// A refused request still to be split: its entries, Loki's reason, and
/// Loki's `total ignored: N out of M`.
type Refused = (Range<usize>, ErrorType, Option<(u32, u32)>);

/// The breaker: open until a time, then one request probes, with a
/// timeout of its own that starts at [`PROBE_TIMEOUT_FIRST`] and doubles
/// with each failed probe up to `request_timeout_ms`. A Loki that hangs
/// holds this thread, and so the batches every sink shares, for one
/// `request_timeout_ms` when it starts hanging and then for one probe
/// timeout per probe, not for a full timeout every `probe_interval_ms`.
#[derive(Debug)]
struct Breaker {
    open_until: Option<Instant>,
    probe_timeout: Duration,
    request_timeout: Duration,
}

/// The timeout of the first probe after the breaker opened.
pub const PROBE_TIMEOUT_FIRST: Duration = Duration::from_secs(1);

impl Breaker {
    fn new(request_timeout: Duration) -> Self {
        Self {
            open_until: None,
            probe_timeout: PROBE_TIMEOUT_FIRST.min(request_timeout),
            request_timeout,
        }
    }

    /// Open, and no probe is due yet.
    fn is_open(&self) -> bool {
        self.open_until.is_some_and(|until| Instant::now() < until)
    }

    /// Open, and its wait is over.
    fn is_probe_due(&self) -> bool {
        self.open_until.is_some_and(|until| Instant::now() >= until)
    }

    /// How long an idle sink sleeps: until the next probe is due when the
    /// breaker is open (a dispatcher's job wakes it sooner).
    fn park_timeout(&self) -> Duration {
        let longest = Duration::from_millis(limits::PARK_TIMEOUT_MS_MAX);
        self.open_until.map_or(longest, |until| {
            until
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), longest)
        })
    }

    /// The timeout of the next request: a probe's while the breaker is
    /// open (or its wait is over), none of its own otherwise.
    fn timeout(&self) -> Option<Duration> {
        self.open_until.map(|_| self.probe_timeout)
    }

    /// Opens (or, after a failed probe, keeps open) for `wait`. True if
    /// it was closed.
    fn open(&mut self, wait: Duration) -> bool {
        let was_closed = self.open_until.is_none();
        if !was_closed {
            self.probe_timeout = (self.probe_timeout * 2).min(self.request_timeout);
        }
        self.open_until = Some(Instant::now() + wait);
        was_closed
    }

    /// Closes. True if it was open.
    fn close(&mut self) -> bool {
        self.probe_timeout = PROBE_TIMEOUT_FIRST.min(self.request_timeout);
        self.open_until.take().is_some()
    }
}

pub struct LokiSink {
    options: LokiSinkOptions,
    client: LokiClient,
    streams: StreamTable,
    encoder: PushEncoder,
    line_encoder: Encoder,
    failures: Arc<FailureTable>,
    held: Vec<Held>,
    refs: Vec<EntryRef>,
    encoded: Vec<u8>,
    push_entries: Vec<PushEntry<'static>>,
    split_stack: Vec<Refused>,
    /// Per stream, the last time given to an entry of the replayed batch
    /// being gathered.
    replay_last_ns: HashMap<u32, u64>,
    breaker: Breaker,
    streams_warned: bool,
    failure_logged_at: Option<Instant>,
    metrics: Arc<LokiMetrics>,
}

impl std::fmt::Debug for LokiSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LokiSink")
            .field("options", &self.options)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Most often a failed push is logged.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl LokiSink {
    pub fn new(
        options: LokiSinkOptions,
        client: LokiClient,
        streams: StreamTable,
        symbols: Arc<SymbolTable>,
        failures: Arc<FailureTable>,
    ) -> Self {
        assert!(
            failures.keeps_sent_timestamps(),
            "a Loki sink keeps the times it sends with"
        );
        assert_eq!(failures.entries_per_slot(), options.batch_size);
        Self {
            line_encoder: Encoder::new(options.encoding, symbols),
            client,
            streams,
            encoder: PushEncoder::new(),
            failures,
            held: Vec::with_capacity(options.slots.slots_total()),
            refs: Vec::new(),
            encoded: Vec::new(),
            push_entries: Vec::new(),
            split_stack: Vec::new(),
            replay_last_ns: HashMap::new(),
            breaker: Breaker::new(options.request_timeout),
            streams_warned: false,
            failure_logged_at: None,
            metrics: Arc::new(LokiMetrics::default()),
            options,
        }
    }

    pub fn metrics(&self) -> Arc<LokiMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The thread body: runs until every lane is finished and every batch
    /// taken has been reported.
    pub fn run(mut self, mut links: SinkLinks, sink_metrics: Arc<SinkMetrics>) {
        links.own.register_current();
        loop {
            if self.streams.reset_if_full() {
                tracing::warn!(sink = %self.options.id, streams = crate::sink::loki::streams::STREAMS_MAX, "too many Loki streams: the stream table starts over (a stream label has unbounded values?)");
            }
            self.gather(&mut links);
            if self.held.is_empty() {
                if links.is_finished() && !links.has_jobs() {
                    break;
                }
                if self.breaker.is_probe_due() {
                    self.probe_idle();
                    continue;
                }
                wake::park(self.breaker.park_timeout());
                continue;
            }
            self.send_round();
            self.report_round(&mut links, &sink_metrics);
        }
    }

    /// With the breaker open and nothing to send, asks Loki with a push of
    /// no entries whether it answers: the DLQ's replay waits for the breaker
    /// to close, and with no new line nothing else would ever probe. Any
    /// answer but a retryable one closes the breaker.
    fn probe_idle(&mut self) {
        self.metrics.requests.add(1);
        let body = match self.options.format {
            LokiFormat::Protobuf => self
                .encoder
                .protobuf(&[], &mut [])
                .expect("an empty request compresses"),
            LokiFormat::Json => self.encoder.json(&[], &mut []),
        };
        let (pushed, _bytes) = self.client.push(body, self.breaker.timeout());
        match pushed.answer {
            Answer::Retry { error, after } => {
                self.metrics.error(error).add(1);
                self.open_breaker(error, after, &pushed);
            }
            Answer::Accepted | Answer::Refused { .. } => self.close_breaker(),
        }
    }

    /// Takes jobs while they wait and the round's lines fit one request.
    fn gather(&mut self, links: &mut SinkLinks) {
        let mut round_bytes = 0usize;
        let now_ns = crate::clock::now_ns();
        while round_bytes < self.options.max_request_bytes
            && self.held.len() < self.options.slots.slots_total()
        {
            let Some(job) = links.take_job() else {
                return;
            };
            let slot = job.batch.slot();
            assert!(
                job.batch.len() <= self.options.batch_size,
                "a batch holds at most batch_size entries"
            );
            if !job.retry {
                self.failures.clear(slot);
            }
            let selection = links.selection(slot, job.retry);
            let live = links.is_live(slot);
            let held_index = self.held.len() as u32;
            self.held.push(Held {
                batch: Arc::clone(&job.batch),
                live,
                selected: 0,
                failed: 0,
                permanent: 0,
            });
            let refs_before = self.refs.len();
            self.streams.start_batch();
            self.replay_last_ns.clear();
            self.line_encoder.use_symbols(job.batch.symbols());
            for (index, entry) in job.batch.entries().iter().enumerate() {
                if selection.includes(slot, index, entry) {
                    round_bytes += self.take_entry(held_index, index, entry, job.retry, now_ns);
                }
            }
            if job.retry {
                // Sent again: a mark comes back only if it fails again.
                for entry_ref in &self.refs[refs_before..] {
                    self.failures.unmark(slot, entry_ref.entry as usize);
                }
            }
            if self.held.last().expect("pushed above").selected == 0 {
                let held = self.held.pop().expect("pushed above");
                links.report(SinkReport {
                    batch: held.batch,
                    outcome: Outcome::Delivered,
                });
            }
        }
    }

    /// Gives a selected entry its stream and time, or refuses it here.
    /// Returns the bytes it adds to a request.
    fn take_entry(
        &mut self,
        held_index: u32,
        index: usize,
        entry: &Entry<'_>,
        retry: bool,
        now_ns: u64,
    ) -> usize {
        let held = &mut self.held[held_index as usize];
        let slot = held.batch.slot();
        held.selected += 1;
        let symbols = Arc::clone(held.batch.symbols());
        let live = held.live;
        let stream = match self.streams.stream_of(&symbols, entry.labels) {
            Ok(stream) => stream,
            Err(rejection) => {
                self.reject_here(held_index, index, rejection);
                return 0;
            }
        };
        let (encoded_start, encoded_len, line_bytes) = match self.options.encoding {
            Encoding::Raw => (0, 0, entry.line.len()),
            Encoding::Json => {
                let start = self.encoded.len();
                self.line_encoder.encode(&mut self.encoded, entry);
                if self.encoded.last() == Some(&b'\n') {
                    self.encoded.pop();
                }
                let length = self.encoded.len() - start;
                (start as u32, length as u32, length)
            }
        };
        let bytes = line_bytes
            + ENTRY_OVERHEAD_BYTES
            + self.streams.texts()[stream as usize].overhead_bytes();
        if bytes > self.options.max_request_bytes {
            self.encoded.truncate(encoded_start as usize);
            self.reject_here(held_index, index, Rejection::LineTooLong);
            return 0;
        }
        let timestamp_ns = if retry {
            self.failures
                .sent_timestamp(slot, index)
                .unwrap_or(entry.timestamp_ns)
        } else {
            match self.first_time(stream, entry.timestamp_ns, live, now_ns) {
                Ok(timestamp_ns) => {
                    self.failures.set_sent_timestamp(slot, index, timestamp_ns);
                    timestamp_ns
                }
                Err(rejection) => {
                    self.encoded.truncate(encoded_start as usize);
                    self.reject_here(held_index, index, rejection);
                    return 0;
                }
            }
        };
        self.refs.push(EntryRef {
            held: held_index,
            entry: index as u32,
            stream,
            timestamp_ns,
            encoded_start,
            encoded_len,
        });
        bytes
    }

    /// The time an entry is first sent with: its own, clamped or refused
    /// when too old, refused when too new, and (live entries) raised past
    /// the last one sent on its stream. Replayed entries already carry the
    /// time they were first sent with.
    fn first_time(
        &mut self,
        stream: u32,
        own_ns: u64,
        live: bool,
        now_ns: u64,
    ) -> Result<u64, Rejection> {
        let oldest_ns = now_ns.saturating_sub(self.options.max_entry_age.as_nanos() as u64);
        let newest_ns = now_ns.saturating_add(FUTURE_GRACE.as_nanos() as u64);
        let mut timestamp_ns = own_ns.max(1);
        if timestamp_ns > newest_ns {
            self.metrics.timestamps_rejected_new.add(1);
            return Err(Rejection::TooNew);
        }
        if timestamp_ns < oldest_ns {
            match self.options.old_entries {
                OldEntries::Clamp => {
                    self.metrics.timestamps_clamped.add(1);
                    timestamp_ns = oldest_ns;
                }
                OldEntries::Reject => {
                    self.metrics.timestamps_rejected_old.add(1);
                    return Err(Rejection::TooOld);
                }
            }
        }
        if live {
            let sent_ns = self.streams.raise(stream, timestamp_ns);
            if sent_ns - timestamp_ns >= RAISED_FAR_NS {
                // Not the nanoseconds between lines of one read: an entry
                // older than its stream's last one (a late or skewed sender).
                self.metrics.timestamps_raised_far.add(1);
            }
            return Ok(sent_ns);
        }
        // A replayed entry keeps its stored time (the one it was first sent
        // with), raised only past an equal one before it in the same
        // replayed batch: entries stored before the sink ever sent them (at
        // a shutdown) still carry their shared read time.
        let last = self.replay_last_ns.entry(stream).or_insert(0);
        if timestamp_ns <= *last && *last - timestamp_ns < REPLAY_RAISE_MAX_NS {
            timestamp_ns = *last + 1;
        }
        *last = timestamp_ns.max(*last);
        Ok(timestamp_ns)
    }

    fn reject_here(&mut self, held_index: u32, index: usize, rejection: Rejection) {
        let held = &mut self.held[held_index as usize];
        self.failures
            .mark_rejected(held.batch.slot(), index, rejection);
        held.failed += 1;
        held.permanent += 1;
    }

    /// Sends the round's entries in requests of at most
    /// `max_request_bytes`.
    fn send_round(&mut self) {
        self.metrics.streams.set(self.streams.len() as u64);
        self.warn_on_many_streams();
        self.refs.sort_unstable_by_key(|entry| {
            (entry.stream, entry.timestamp_ns, entry.held, entry.entry)
        });
        let mut start = 0;
        while start < self.refs.len() {
            let end = self.request_end(start);
            self.send_range(start..end);
            start = end;
        }
    }

    /// The end of the request that starts at `start`: as many entries as
    /// fit `max_request_bytes`, at least one.
    fn request_end(&self, start: usize) -> usize {
        let mut bytes = 0;
        let mut stream = None;
        for (offset, entry) in self.refs[start..].iter().enumerate() {
            let mut added = self.line_of(entry).len() + ENTRY_OVERHEAD_BYTES;
            if stream != Some(entry.stream) {
                stream = Some(entry.stream);
                added += self.streams.texts()[entry.stream as usize].overhead_bytes();
            }
            if offset > 0 && bytes + added > self.options.max_request_bytes {
                return start + offset;
            }
            bytes += added;
        }
        self.refs.len()
    }

    fn line_of(&self, entry: &EntryRef) -> &[u8] {
        line_of(&self.held, &self.encoded, self.options.encoding, entry)
    }

    /// Sends one request; a refused one is split until its refused
    /// entries are found.
    fn send_range(&mut self, range: Range<usize>) {
        if self.breaker.is_open() {
            self.fail_range(range);
            return;
        }
        let pushed = self.push(range.clone());
        match pushed.answer {
            Answer::Accepted => self.close_breaker(),
            Answer::Retry { error, after } => {
                self.fail_range(range);
                self.open_breaker(error, after, &pushed);
            }
            Answer::Refused { error, ignored } => {
                self.close_breaker();
                self.log_failure(&pushed, range.len());
                self.split_stack.push((range, error, ignored));
                self.resolve_refused();
            }
        }
    }

    /// Splits refused requests until each refused part holds only entries
    /// Loki refuses, and stores those in `rejected/`.
    fn resolve_refused(&mut self) {
        let mut requests_left = SPLIT_REQUESTS_MAX;
        while let Some((range, error, ignored)) = self.split_stack.pop() {
            let first = self.refs[range.start].stream;
            let one_stream = self.refs[range.end - 1].stream == first;
            let all_ignored = one_stream
                && ignored.is_some_and(|(ignored, total)| {
                    ignored == total && total as usize == range.len()
                });
            if range.len() == 1 || all_ignored || requests_left == 0 {
                self.reject_range(range, error.rejection());
                continue;
            }
            let middle = self.split_point(&range, one_stream);
            for half in [range.start..middle, middle..range.end] {
                if self.breaker.is_open() {
                    self.fail_range(half);
                    continue;
                }
                requests_left = requests_left.saturating_sub(1);
                let pushed = self.push(half.clone());
                match pushed.answer {
                    Answer::Accepted => {}
                    Answer::Retry { error, after } => {
                        self.fail_range(half);
                        self.open_breaker(error, after, &pushed);
                    }
                    Answer::Refused { error, ignored } => {
                        self.split_stack.push((half, error, ignored))
                    }
                }
            }
        }
    }

    /// Where to split a refused range: at the stream boundary nearest its
    /// middle when it holds several streams, else in the middle.
    fn split_point(&self, range: &Range<usize>, one_stream: bool) -> usize {
        let middle = range.start + range.len() / 2;
        if one_stream {
            return middle;
        }
        let boundary = |index: &usize| self.refs[*index - 1].stream != self.refs[*index].stream;
        let after = (middle..range.end).find(boundary);
        let before = (range.start + 1..=middle).rev().find(boundary);
        match (before, after) {
            (Some(before), Some(after)) if middle - before <= after - middle => before,
            (_, Some(after)) => after,
            (Some(before), None) => before,
            (None, None) => middle,
        }
    }

    /// One request of the entries in `range` (sorted).
    fn push(&mut self, range: Range<usize>) -> Pushed {
        self.metrics.requests.add(1);
        let mut entries = recycle(std::mem::take(&mut self.push_entries));
        for (position, entry) in self.refs[range].iter().enumerate() {
            entries.push(PushEntry {
                stream: entry.stream,
                timestamp_ns: entry.timestamp_ns,
                line: line_of(&self.held, &self.encoded, self.options.encoding, entry),
                sequence: position as u32,
            });
        }
        let texts = self.streams.texts();
        let body = match self.options.format {
            // A request is bounded by max_request_bytes (at most 1 GiB), far
            // below what snappy's block format refuses (4 GiB).
            LokiFormat::Protobuf => self
                .encoder
                .protobuf(texts, &mut entries)
                .expect("a request is below snappy's block limit"),
            LokiFormat::Json => self.encoder.json(texts, &mut entries),
        };
        let (pushed, _bytes) = self.client.push(body, self.breaker.timeout());
        self.push_entries = recycle(entries);
        if let Answer::Retry { error, .. } | Answer::Refused { error, .. } = pushed.answer {
            self.metrics.error(error).add(1);
        }
        pushed
    }

    fn fail_range(&mut self, range: Range<usize>) {
        for entry in &self.refs[range] {
            let held = &mut self.held[entry.held as usize];
            self.failures
                .mark(held.batch.slot(), entry.entry as usize, true);
            held.failed += 1;
        }
    }

    fn reject_range(&mut self, range: Range<usize>, rejection: Rejection) {
        for entry in &self.refs[range] {
            let held = &mut self.held[entry.held as usize];
            self.failures
                .mark_rejected(held.batch.slot(), entry.entry as usize, rejection);
            held.failed += 1;
            held.permanent += 1;
        }
    }

    fn open_breaker(&mut self, error: ErrorType, after: Option<Duration>, pushed: &Pushed) {
        let wait = after.unwrap_or(self.options.probe_interval);
        if self.breaker.open(wait) {
            self.metrics.breaker_state.set(1);
            self.metrics.breaker_openings.add(1);
            tracing::warn!(sink = %self.options.id, error = error.as_str(), status = pushed.status_text(), message = %pushed.message, wait_ms = wait.as_millis() as u64, "Loki push failed: circuit breaker open; batches fail as retryable until a request is answered");
        }
    }

    fn close_breaker(&mut self) {
        if self.breaker.close() {
            self.metrics.breaker_state.set(0);
            tracing::info!(sink = %self.options.id, "Loki answers again: circuit breaker closed");
        }
    }

    fn log_failure(&mut self, pushed: &Pushed, entries: usize) {
        if self
            .failure_logged_at
            .is_some_and(|at| at.elapsed() < FAILURE_LOG_INTERVAL)
        {
            return;
        }
        self.failure_logged_at = Some(Instant::now());
        tracing::warn!(sink = %self.options.id, status = pushed.status_text(), message = %pushed.message, entries, "Loki refused entries of a request; finding them to store in rejected/");
    }

    fn warn_on_many_streams(&mut self) {
        if self.streams_warned || self.streams.len() < STREAMS_WARN {
            return;
        }
        self.streams_warned = true;
        tracing::warn!(sink = %self.options.id, streams = self.streams.len(), "many Loki streams: a stream label has many values (a file path?); Loki's memory grows with streams");
    }

    /// Reports every batch of the round.
    fn report_round(&mut self, links: &mut SinkLinks, metrics: &SinkMetrics) {
        self.refs.clear();
        self.encoded.clear();
        for held in self.held.drain(..) {
            let outcome = if held.failed == 0 {
                if held.live {
                    metrics.lines_sent.add(u64::from(held.selected));
                    metrics.batches_sent.add(1);
                }
                Outcome::Delivered
            } else {
                if held.live {
                    metrics
                        .lines_sent
                        .add(u64::from(held.selected - held.failed));
                    metrics.line_attempts_failed.add(u64::from(held.failed));
                    metrics.batches_failed.add(1);
                }
                Outcome::Failed {
                    retryable: held.permanent == 0,
                    entries_failed: held.failed,
                }
            };
            links.report(SinkReport {
                batch: held.batch,
                outcome,
            });
        }
    }
}

fn line_of<'round>(
    held: &'round [Held],
    encoded: &'round [u8],
    encoding: Encoding,
    entry: &EntryRef,
) -> &'round [u8] {
    match encoding {
        Encoding::Raw => held[entry.held as usize].batch.entries()[entry.entry as usize].line,
        Encoding::Json => {
            let start = entry.encoded_start as usize;
            &encoded[start..start + entry.encoded_len as usize]
        }
    }
}

/// Empties a request's entry list and returns its allocation under a new
/// lifetime, so that the sink keeps it between requests although the lines
/// it held were borrowed from the round's batches (the same in-place
/// collect as the dispatcher's label buffer; checked by the allocation
/// test).
fn recycle<'to>(mut entries: Vec<PushEntry<'_>>) -> Vec<PushEntry<'to>> {
    entries.clear();
    entries
        .into_iter()
        .map(|_| unreachable!("the list was cleared"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a probe's timeout starts short, doubles with each failed probe
    /// up to the request timeout, and starts short again after a close.
    #[test]
    fn probe_timeout_doubles_up_to_the_request_timeout() {
        let mut breaker = Breaker::new(Duration::from_secs(5));
        assert_eq!(breaker.timeout(), None, "closed: the agent's timeout");
        assert!(breaker.open(Duration::from_secs(60)));
        assert!(breaker.is_open());
        assert_eq!(breaker.timeout(), Some(Duration::from_secs(1)));
        let seen: Vec<u64> = (0..4)
            .map(|_| {
                assert!(!breaker.open(Duration::ZERO), "already open");
                breaker.timeout().expect("open").as_secs()
            })
            .collect();
        assert_eq!(seen, [2, 4, 5, 5]);
        assert!(!breaker.is_open(), "a zero wait makes a probe due");
        assert!(breaker.close());
        assert!(!breaker.close());
        assert_eq!(breaker.timeout(), None);
        assert!(breaker.open(Duration::ZERO));
        assert_eq!(breaker.timeout(), Some(Duration::from_secs(1)));
    }

    /// Goal: the request list keeps its allocation across lifetimes.
    #[test]
    fn recycled_entries_keep_their_buffer() {
        let line = b"line".to_vec();
        let mut entries: Vec<PushEntry<'_>> = Vec::with_capacity(16);
        entries.push(PushEntry {
            stream: 0,
            timestamp_ns: 1,
            line: &line,
            sequence: 0,
        });
        let buffer = entries.as_ptr().cast::<u8>();
        let recycled: Vec<PushEntry<'static>> = recycle(entries);
        drop(line);
        assert!(recycled.is_empty());
        assert_eq!(recycled.capacity(), 16);
        assert_eq!(recycled.as_ptr().cast::<u8>(), buffer);
    }
}
