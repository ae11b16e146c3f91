//! The Kafka sink thread.
//!
//! ```text
//! loop:
//!     poll librdkafka: delivery reports land in the per-slot book and the
//!         failure table; client errors may flag a transport failure
//!     transport failure flagged: open the breaker, purge librdkafka's queue
//!     breaker open and a probe due: fetch metadata; an answer closes it,
//!         once the events queued during the outage are served
//!     report every batch whose entries all have a delivery report
//!     produce: go on with the current batch, or take the next from the ring;
//!         with the breaker open, fail the batch at once (retryable)
//! ```
//!
//! One librdkafka message per selected entry (see `SinkLinks::selection`:
//! a sink with `inputs` skips the entries of other sources, and a batch
//! with none of its entries is reported delivered at once), encoded into
//! one reused buffer (librdkafka copies the payload on `send`). The delivery opaque is a plain
//! `usize`: `slot * batch_size + entry`, so mapping a report to its batch
//! allocates nothing. `QueueFull` on `send` is backpressure: the entry is
//! tried again after a short poll, never dropped.
//!
//! A message longer than librdkafka accepts (`message.max.bytes`, see
//! `config::message_payload_bytes_max`) is refused here, before librdkafka
//! sees it: the entry is marked failed for good (`Rejection::TooLarge`) and
//! the dispatcher stores it in the sink's `rejected/` segments; the rest of
//! the batch goes on. With the breaker open the size is checked too, so
//! such an entry never waits in the retry wheel. Splitting it instead would
//! cut a JSON object (message and labels) into pieces that mean nothing
//! alone.
//!
//! Bounds: at most one batch per slot of the sink's lanes is held
//! (`SlotPlan::slots_total`: the dispatcher's slots and the replay stage's),
//! so librdkafka's queue holds at most `batch_size` times that many
//! messages. Replayed batches (the replay lane) go through the same
//! encoder, key, producer and delivery reports as live ones; only the
//! sink's counters leave them out (the replay stage counts them).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::types::RDKafkaErrorCode;

use crate::batch::{Entry, SealedBatch};
use crate::labels::{Symbol, SymbolTable};
use crate::limits;
use crate::metrics::{Counter, Gauge, SinkMetrics};
use crate::sink::SinkHealth;
use crate::sink::encode::{Encoder, Encoding};
use crate::sink::kafka::breaker::{Breaker, is_transport_error, rejection_of};
use crate::sink::kafka::group::{MessageGroup, Produced, TopicHandle, payload_of};
use crate::sink::kafka::log::ClientLog;
use crate::sink::kafka::wakeup::ReportWait;
use crate::sink::link::{
    FailureTable, Outcome, Rejection, Selection, SinkLinks, SinkReport, SlotPlan,
};
use crate::wake;

/// Kafka-specific counters of one sink.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    pub topic: String,
    /// `kafka_circuit_breaker_state`: 0 closed, 1 open.
    pub breaker_state: Gauge,
    /// Times the breaker opened.
    pub breaker_openings: Counter,
    /// `kafka_messages_produced_total{status="success"}`. The `error`
    /// status is the sink's `SinkMetrics::lines_failed` (one message per
    /// line, counted once when it goes to the DLQ), not a count of attempts.
    pub messages_delivered: Counter,
    /// `kafka_producer_errors_total{error_type="transport"}`.
    pub errors_transport: Counter,
    /// `kafka_producer_errors_total{error_type="permanent"}`.
    pub errors_permanent: Counter,
    /// `kafka_producer_errors_total{error_type="retryable"}`.
    pub errors_retryable: Counter,
    /// `kafka_queue_size`: messages in librdkafka's queue.
    pub queue_size: Gauge,
    /// `kafka_connection_status`: 1 when the last probe or delivery
    /// reached the cluster.
    pub connected: Gauge,
}

impl SinkHealth for KafkaMetrics {
    fn failures(&self) -> u64 {
        self.breaker_openings.get()
    }

    fn is_reachable(&self) -> bool {
        self.breaker_state.get() == 0
    }
}

/// Per-slot delivery book: how many entries still wait for a report.
#[derive(Debug)]
struct SlotBook {
    reports_missing: AtomicU32,
    /// Entries this job sends: those of the sink's inputs, or a retry's
    /// failed ones.
    entries_selected: AtomicU32,
    entries_failed: AtomicU32,
    entries_permanent: AtomicU32,
}

/// librdkafka calls this back on the sink thread, inside `poll`.
#[derive(Debug)]
pub struct KafkaContext {
    entries_per_slot: usize,
    /// Slots below this are the dispatcher's; above, replayed batches,
    /// which the replay stage counts.
    live_slots: usize,
    slots: Box<[SlotBook]>,
    failures: Arc<FailureTable>,
    /// Set by a transport-level error; taken by the sink loop.
    transport_failed: AtomicBool,
    metrics: Arc<KafkaMetrics>,
    log: ClientLog,
}

impl KafkaContext {
    fn record_failure(&self, slot: usize, entry: usize, code: RDKafkaErrorCode) {
        if let Some(rejection) = rejection_of(code) {
            self.record_rejection(slot, entry, rejection);
            return;
        }
        if is_transport_error(code) {
            self.transport_failed.store(true, Ordering::Relaxed);
            self.metrics.errors_transport.add(1);
        } else {
            self.metrics.errors_retryable.add(1);
        }
        self.failures.mark(slot, entry, true);
        self.slots[slot]
            .entries_failed
            .fetch_add(1, Ordering::Relaxed);
    }

    /// An entry failed for good: it goes to `rejected/`, never to a retry.
    fn record_rejection(&self, slot: usize, entry: usize, rejection: Rejection) {
        self.metrics.errors_permanent.add(1);
        self.failures.mark_rejected(slot, entry, rejection);
        let book = &self.slots[slot];
        book.entries_failed.fetch_add(1, Ordering::Relaxed);
        book.entries_permanent.fetch_add(1, Ordering::Relaxed);
    }

    fn settle(&self, slot: usize) {
        let before = self.slots[slot]
            .reports_missing
            .fetch_sub(1, Ordering::Relaxed);
        assert!(
            before > 0,
            "slot {slot}: more delivery reports than entries"
        );
    }
}

impl ClientContext for KafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code.is_some_and(is_transport_error) {
            self.transport_failed.store(true, Ordering::Relaxed);
            self.metrics.errors_transport.add(1);
        }
        self.log.error(&error, reason);
    }

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.log.log(level, facility, message);
    }
}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let slot = opaque / self.entries_per_slot;
        let entry = opaque % self.entries_per_slot;
        match result {
            Ok(_) if slot < self.live_slots => self.metrics.messages_delivered.add(1),
            Ok(_) => {}
            Err((error, _message)) => {
                let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                self.record_failure(slot, entry, code);
            }
        }
        self.settle(slot);
    }
}

/// What a Kafka sink is built from.
#[derive(Debug)]
pub struct KafkaSinkOptions {
    pub id: String,
    pub topic: String,
    /// Label whose value becomes the message key.
    pub key_label: Option<String>,
    pub encoding: Encoding,
    pub probe_interval: Duration,
    pub slots: SlotPlan,
    pub batch_size: usize,
    /// Most bytes of key plus payload librdkafka accepts
    /// (`config::message_payload_bytes_max`); longer entries are rejected.
    pub payload_bytes_max: usize,
}

/// Why a Kafka sink could not be created.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: cannot create Kafka producer")]
pub struct KafkaCreateError {
    sink: String,
    #[source]
    source: KafkaError,
}

/// A Kafka sink, ready to run on its thread.
pub struct KafkaSink {
    options: KafkaSinkOptions,
    /// The key label's symbol in `symbols`, the table of the batch being
    /// produced (looked up again when a batch brings another table).
    key_symbol: Option<Symbol>,
    symbols: Arc<SymbolTable>,
    encoder: Encoder,
    /// Set when the thread starts; declared before `producer` so that it
    /// is dropped first (it holds a handle on the producer's queue).
    report_wait: Option<ReportWait>,
    /// Declared before `producer` too: a topic handle is destroyed before
    /// its client.
    topic: TopicHandle,
    producer: BaseProducer<KafkaContext>,
    /// Messages gathered for one `rd_kafka_produce_batch` call.
    group: MessageGroup,
    failures: Arc<FailureTable>,
    /// Batches taken from the ring and not yet reported, by slot.
    awaiting: Vec<Option<Arc<SealedBatch>>>,
    awaiting_count: usize,
    /// The batch being handed to librdkafka: its slot, next entry, and
    /// whether it is a retry (only entries marked failed are sent).
    producing: Option<(usize, usize, bool)>,
    breaker: Breaker,
    buffer: Vec<u8>,
    metrics: Arc<KafkaMetrics>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KafkaSink")
            .field("options", &self.options)
            .field("awaiting_count", &self.awaiting_count)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

/// How long the sink parks between looks for delivery reports when
/// librdkafka cannot signal them.
const REPORT_WAIT: Duration = Duration::from_millis(1);

/// The longest wait for a signalled delivery report: a safety net only.
const REPORT_WAIT_SIGNALLED: Duration = Duration::from_millis(20);

/// Entries handed to librdkafka before the loop polls again.
const SENDS_PER_ROUND_MAX: usize = 4096;

/// Most bytes the JSON encoding writes per byte of a line (a control byte
/// becomes `\u00XX`).
const JSON_BYTES_PER_LINE_BYTE_MAX: usize = 6;

/// Bytes an encoded message may add to its escaped line (timestamp, keys,
/// labels) that the breaker-open size check assumes without encoding; a
/// message that exceeds the limit only through larger labels is still
/// caught when it is sent.
const ENCODED_OVERHEAD_BYTES_SLACK: usize = 64 * 1024;

/// One round of serving the events queued before a probe's answer: `poll`
/// serves every queued event until its deadline, each in microseconds.
const STALE_EVENT_ROUND: Duration = Duration::from_millis(2);

/// Most such rounds (100 ms in all), so that a client that keeps reporting
/// errors cannot hold the thread.
const STALE_EVENT_ROUNDS_MAX: usize = 50;

impl KafkaSink {
    /// Creates the producer (librdkafka starts connecting now).
    pub fn new(
        options: KafkaSinkOptions,
        client: &ClientConfig,
        symbols: Arc<SymbolTable>,
        failures: Arc<FailureTable>,
    ) -> Result<Self, KafkaCreateError> {
        assert_eq!(
            failures.entries_per_slot(),
            options.batch_size,
            "failure table sized by batch_size"
        );
        let metrics = Arc::new(KafkaMetrics {
            topic: options.topic.clone(),
            ..KafkaMetrics::default()
        });
        let context = KafkaContext {
            entries_per_slot: options.batch_size,
            live_slots: options.slots.live_slots,
            slots: (0..options.slots.slots_total())
                .map(|_| SlotBook {
                    reports_missing: AtomicU32::new(0),
                    entries_selected: AtomicU32::new(0),
                    entries_failed: AtomicU32::new(0),
                    entries_permanent: AtomicU32::new(0),
                })
                .collect(),
            failures: Arc::clone(&failures),
            transport_failed: AtomicBool::new(false),
            metrics: Arc::clone(&metrics),
            log: ClientLog::new(options.id.clone()),
        };
        let producer: BaseProducer<KafkaContext> =
            client
                .create_with_context(context)
                .map_err(|source| KafkaCreateError {
                    sink: options.id.clone(),
                    source,
                })?;
        let topic =
            TopicHandle::new(&producer, &options.topic).map_err(|error| KafkaCreateError {
                sink: options.id.clone(),
                source: KafkaError::ClientCreation(format!("topic {:?}: {error}", options.topic)),
            })?;
        let key_symbol = options
            .key_label
            .as_deref()
            .and_then(|label| symbols.get(label));
        // A key label no source sets is a config warning (`Config::load`,
        // printed by check-config and logged by run), not repeated here.
        Ok(Self {
            key_symbol,
            encoder: Encoder::new(options.encoding, Arc::clone(&symbols)),
            symbols,
            report_wait: None,
            topic,
            producer,
            group: MessageGroup::default(),
            failures,
            awaiting: (0..options.slots.slots_total()).map(|_| None).collect(),
            awaiting_count: 0,
            producing: None,
            breaker: Breaker::new(options.probe_interval),
            buffer: Vec::with_capacity(64 * 1024),
            metrics,
            options,
        })
    }

    pub fn metrics(&self) -> Arc<KafkaMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The thread body: runs until every lane is finished and every batch
    /// taken has been reported.
    pub fn run(mut self, mut links: SinkLinks, metrics: Arc<SinkMetrics>) {
        match ReportWait::new(self.producer.client(), &links.own) {
            Ok(wait) => self.report_wait = Some(wait),
            Err(error) => {
                tracing::warn!(sink = %self.options.id, %error, "no poll for delivery reports; the sink looks for them every millisecond");
                links.own.register_current();
            }
        }
        loop {
            self.serve_events();
            self.open_on_transport_error();
            let mut progressed = self.produce(&mut links);
            // With the breaker open every waiting batch fails at once, before
            // a probe can hold this thread.
            while self.breaker.is_open() && self.produce(&mut links) {
                progressed = true;
            }
            self.report_settled(&mut links, &metrics);
            self.close_if_probe_answers();
            let finished = links.is_finished();
            let idle = self.producing.is_none() && !links.has_jobs();
            if idle && finished && self.awaiting_count == 0 {
                break;
            }
            if !progressed {
                self.wait(idle);
            }
        }
        if let Err(error) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(sink = %self.options.id, %error, "flush at shutdown failed");
        }
    }

    /// Serves the events librdkafka queued (delivery reports, errors): one
    /// at least, as every round always did (an event that does not reach
    /// the signalled queue is still served at the next round), then every
    /// one the queue still holds.
    fn serve_events(&self) {
        self.producer.poll(Duration::ZERO);
        if let Some(wait) = &self.report_wait {
            wait.serve_queued(|| self.producer.poll(Duration::ZERO));
        }
    }

    /// Waits for delivery reports or, with nothing in librdkafka, for the
    /// dispatcher (its wake ends the wait).
    ///
    /// Reports end the wait through librdkafka's queue signal (see
    /// [`ReportWait`]); without it, they are looked for every
    /// [`REPORT_WAIT`]. Never in a `poll` with a timeout: rdkafka's
    /// `BaseProducer::poll` returns only at its deadline and spins through
    /// the deadline's last millisecond (it waits in whole milliseconds),
    /// which cost a fifth of a core at a few hundred batches per second.
    fn wait(&mut self, idle: bool) {
        self.metrics
            .queue_size
            .set(self.producer.in_flight_count().max(0) as u64);
        let timeout = if self.awaiting_count > 0 && !self.breaker.is_open() {
            if self.report_wait.is_some() {
                REPORT_WAIT_SIGNALLED
            } else {
                REPORT_WAIT
            }
        } else if idle {
            Duration::from_millis(if self.breaker.is_open() {
                50
            } else {
                limits::PARK_TIMEOUT_MS_MAX
            })
        } else {
            return;
        };
        match &mut self.report_wait {
            Some(wait) => wait.wait(timeout),
            None => wake::park(timeout),
        }
    }

    fn open_on_transport_error(&mut self) {
        let context = self.producer.context();
        if context.transport_failed.swap(false, Ordering::Relaxed) && self.breaker.open() {
            self.metrics.breaker_state.set(1);
            self.metrics.breaker_openings.add(1);
            self.metrics.connected.set(0);
            tracing::warn!(sink = %self.options.id, "Kafka unreachable: circuit breaker open; batches fail as retryable until a probe answers");
            // What librdkafka still holds would only wait for
            // `message.timeout.ms`; fail it now so that it is retried by us.
            self.producer
                .purge(PurgeConfig::default().queue().inflight());
        }
    }

    fn close_if_probe_answers(&mut self) {
        if self.breaker.probe_due() && self.probe() {
            self.serve_stale_events();
            self.producer
                .context()
                .transport_failed
                .store(false, Ordering::Relaxed);
            self.breaker.close();
            self.metrics.breaker_state.set(0);
            self.metrics.connected.set(1);
            tracing::info!(sink = %self.options.id, "Kafka answers again: circuit breaker closed");
        }
    }

    /// Serves the events librdkafka queued while the cluster was down.
    ///
    /// Its error events (each refused connection, "all brokers down") wait
    /// in its queue, and the loop's `poll(0)` serves one event per round:
    /// during an outage they pile up. Served after the close, they would open
    /// the breaker again at once, a flap at every recovery whose purge
    /// re-sends what was in flight. They predate the probe's answer, so they
    /// are served before the close, whose caller then forgets the flag they
    /// set. Rounds go on while transport errors keep coming, at most
    /// `STALE_EVENT_ROUNDS_MAX` of them.
    fn serve_stale_events(&self) {
        let transport_errors = &self.metrics.errors_transport;
        for _ in 0..STALE_EVENT_ROUNDS_MAX {
            let before = transport_errors.get();
            self.producer.poll(STALE_EVENT_ROUND);
            if transport_errors.get() == before {
                break;
            }
        }
    }

    /// Asks the cluster for the topic's metadata; true if it answered. The
    /// wait is half the probe interval (50 to 500 ms): the thread is blocked
    /// meanwhile, so batches that arrive wait at most that long to be failed.
    fn probe(&self) -> bool {
        let timeout = (self.options.probe_interval / 2)
            .clamp(Duration::from_millis(50), Duration::from_millis(500));
        let answer: KafkaResult<_> = self
            .producer
            .client()
            .fetch_metadata(Some(&self.options.topic), timeout);
        match answer {
            Ok(metadata) => {
                !metadata.brokers().is_empty()
                    && metadata
                        .topics()
                        .iter()
                        .all(|topic| topic.error().is_none())
            }
            Err(_) => false,
        }
    }

    /// Reports every batch whose entries all have their delivery report.
    fn report_settled(&mut self, links: &mut SinkLinks, metrics: &SinkMetrics) {
        if self.awaiting_count == 0 {
            return;
        }
        for slot in 0..self.awaiting.len() {
            let producing_here = self
                .producing
                .is_some_and(|(producing, _, _)| producing == slot);
            let book = &self.producer.context().slots[slot];
            if self.awaiting[slot].is_none()
                || producing_here
                || book.reports_missing.load(Ordering::Relaxed) > 0
            {
                continue;
            }
            let batch = self.awaiting[slot].take().expect("checked above");
            self.awaiting_count -= 1;
            let failed = book.entries_failed.load(Ordering::Relaxed);
            let permanent = book.entries_permanent.load(Ordering::Relaxed);
            let selected = u64::from(book.entries_selected.load(Ordering::Relaxed));
            // Replayed batches are counted by the replay stage.
            let live = links.is_live(slot);
            let outcome = if failed == 0 {
                if live {
                    metrics.lines_sent.add(selected);
                    metrics.batches_sent.add(1);
                }
                self.metrics.connected.set(1);
                Outcome::Delivered
            } else {
                if live {
                    metrics.lines_sent.add(selected - u64::from(failed));
                    // Attempts only: the dispatcher counts the lines that
                    // end in the DLQ, once each.
                    metrics.line_attempts_failed.add(u64::from(failed));
                    metrics.batches_failed.add(1);
                }
                Outcome::Failed {
                    retryable: permanent == 0,
                    entries_failed: failed,
                }
            };
            links.report(SinkReport { batch, outcome });
        }
    }

    /// Hands entries to librdkafka. True if anything moved.
    fn produce(&mut self, links: &mut SinkLinks) -> bool {
        if self.producing.is_none() {
            match self.take_batch(links) {
                Taken::None => return false,
                Taken::NothingSelected => return true,
                Taken::Producing => {}
            }
        }
        let (slot, next, retry) = self.producing.expect("a batch is being produced");
        let batch = Arc::clone(
            self.awaiting[slot]
                .as_ref()
                .expect("the produced batch awaits"),
        );
        let selection = links.selection(slot, retry);
        if self.breaker.is_open() {
            self.fail_from(slot, next, &batch, selection);
            self.producing = None;
            return true;
        }
        let end = batch.len().min(next + SENDS_PER_ROUND_MAX);
        let mut entry_index = next;
        let mut refused_from = None;
        while entry_index < end {
            if !selection.includes(slot, entry_index, &batch.entries()[entry_index]) {
                // Not a retry's failed entry, or not of the sink's inputs.
                entry_index += 1;
                continue;
            }
            if retry {
                // Sent again: its mark comes back only if it fails again.
                self.failures.unmark(slot, entry_index);
            }
            if !self.add_to_group(slot, entry_index, &batch) {
                // Rejected only once every message before it is with
                // librdkafka: a full queue then cannot make it be taken,
                // and rejected, twice.
                refused_from = self.produce_group(retry);
                if refused_from.is_some() {
                    if retry {
                        self.failures.mark(slot, entry_index, true);
                    }
                    break;
                }
                let context = self.producer.context();
                context.record_rejection(slot, entry_index, Rejection::TooLarge);
                context.settle(slot);
            }
            entry_index += 1;
            if self.group.is_full() {
                refused_from = self.produce_group(retry);
                if refused_from.is_some() {
                    break;
                }
            }
        }
        if refused_from.is_none() {
            refused_from = self.produce_group(retry);
        }
        if let Some(refused_from) = refused_from {
            // librdkafka's queue is full: the refused entries are sent
            // again from the first of them once there is room.
            entry_index = refused_from;
            self.producer.poll(Duration::from_millis(1));
        }
        self.producing = (entry_index < batch.len()).then_some((slot, entry_index, retry));
        entry_index > next
    }

    /// Hands the gathered messages to librdkafka. Those refused for good
    /// are recorded and settled; returns the entry of the first one refused
    /// for a full queue (it and every later one are refused so, and marked
    /// failed again when `retry`, to be sent once there is room).
    fn produce_group(&mut self, retry: bool) -> Option<usize> {
        let mut queue_full_from: Option<usize> = None;
        let entries_per_slot = self.options.batch_size;
        let context = self.producer.context();
        let failures = &self.failures;
        self.group.produce(&self.topic, |opaque, produced| {
            let (slot, entry) = (opaque / entries_per_slot, opaque % entries_per_slot);
            match produced {
                Produced::Queued => {}
                Produced::Refused(RDKafkaErrorCode::QueueFull) => {
                    queue_full_from.get_or_insert(entry);
                    if retry {
                        failures.mark(slot, entry, true);
                    }
                }
                Produced::Refused(code) => {
                    debug_assert!(
                        queue_full_from.is_none(),
                        "librdkafka stops at a full queue"
                    );
                    context.record_failure(slot, entry, code);
                    context.settle(slot);
                }
            }
        });
        queue_full_from
    }

    /// Takes the next job. A batch none of whose entries is selected (a
    /// live batch with no entry of the sink's inputs) is reported
    /// delivered at once: no delivery report would ever settle it.
    fn take_batch(&mut self, links: &mut SinkLinks) -> Taken {
        let Some(job) = links.take_job() else {
            return Taken::None;
        };
        let slot = job.batch.slot();
        assert!(
            self.awaiting[slot].is_none(),
            "slot {slot} is reused only after its report"
        );
        assert!(
            job.batch.len() <= self.options.batch_size,
            "a batch holds at most batch_size entries"
        );
        if !job.retry {
            self.failures.clear(slot);
        }
        let selected = links.selection(slot, job.retry).count(&job.batch);
        if selected == 0 {
            links.report(SinkReport {
                batch: job.batch,
                outcome: Outcome::Delivered,
            });
            return Taken::NothingSelected;
        }
        let book = &self.producer.context().slots[slot];
        book.reports_missing
            .store(selected as u32, Ordering::Relaxed);
        book.entries_selected
            .store(selected as u32, Ordering::Relaxed);
        book.entries_failed.store(0, Ordering::Relaxed);
        book.entries_permanent.store(0, Ordering::Relaxed);
        self.use_symbols(job.batch.symbols());
        self.awaiting[slot] = Some(job.batch);
        self.awaiting_count += 1;
        self.producing = Some((slot, 0, job.retry));
        Taken::Producing
    }

    /// Fails the unsent selected entries from `from` on as retryable
    /// (breaker open), except those too large to ever be sent, which are
    /// rejected. A retry's unsent entries still carry their marks (they
    /// were size-checked when first failed); entries the selection leaves
    /// out (not of the sink's inputs) are not touched.
    fn fail_from(
        &mut self,
        slot: usize,
        from: usize,
        batch: &SealedBatch,
        selection: Selection<'_>,
    ) {
        let retry = matches!(selection, Selection::Failed(_));
        let mut count = 0u32;
        for (entry, data) in batch.entries().iter().enumerate().skip(from) {
            if !selection.includes(slot, entry, data) {
                continue;
            }
            if retry {
                count += 1;
            } else if self.is_too_large(data) {
                let context = self.producer.context();
                context.record_rejection(slot, entry, Rejection::TooLarge);
                context.settle(slot);
            } else {
                self.failures.mark(slot, entry, true);
                count += 1;
            }
        }
        let book = &self.producer.context().slots[slot];
        book.entries_failed.fetch_add(count, Ordering::Relaxed);
        book.reports_missing.fetch_sub(count, Ordering::Relaxed);
    }

    /// Resolves the next batch's labels with its table.
    fn use_symbols(&mut self, symbols: &Arc<SymbolTable>) {
        if Arc::ptr_eq(&self.symbols, symbols) {
            return;
        }
        self.symbols = Arc::clone(symbols);
        self.encoder.use_symbols(symbols);
        self.key_symbol = self
            .options
            .key_label
            .as_deref()
            .and_then(|label| symbols.get(label));
    }

    /// The key of an entry: the value of the sink's key label, `key_symbol`
    /// in `symbols`. Takes the two fields rather than the sink, so that it
    /// can be called while the message group is borrowed.
    fn key_of<'a>(
        key_symbol: Option<Symbol>,
        symbols: &'a SymbolTable,
        entry: &Entry<'_>,
    ) -> Option<&'a [u8]> {
        key_symbol
            .and_then(|key| entry.labels.iter().find(|(label, _)| *label == key))
            .map(|&(_, value)| symbols.resolve(value).as_bytes())
    }

    /// Whether librdkafka would refuse the entry's message as too large.
    /// Only lines that could reach the limit once encoded are encoded.
    fn is_too_large(&mut self, entry: &Entry<'_>) -> bool {
        let expansion = match self.encoder.encoding() {
            Encoding::Raw => 1,
            Encoding::Json => JSON_BYTES_PER_LINE_BYTE_MAX,
        };
        let bound = entry.line.len().saturating_mul(expansion) + ENCODED_OVERHEAD_BYTES_SLACK;
        if bound <= self.options.payload_bytes_max {
            return false;
        }
        self.buffer.clear();
        self.encoder.encode(&mut self.buffer, entry);
        let payload_bytes = payload_of(&self.buffer).len();
        let key = Self::key_of(self.key_symbol, &self.symbols, entry);
        payload_bytes + key.map_or(0, <[u8]>::len) > self.options.payload_bytes_max
    }

    /// Encodes an entry into the group. False, with nothing added, when its
    /// message would be longer than librdkafka accepts.
    fn add_to_group(&mut self, slot: usize, entry_index: usize, batch: &SealedBatch) -> bool {
        let entry = &batch.entries()[entry_index];
        let start = self.group.payload_start();
        self.encoder.encode(self.group.bytes_mut(), entry);
        let payload_bytes = payload_of(&self.group.bytes_mut()[start..]).len();
        let key = Self::key_of(self.key_symbol, &self.symbols, entry);
        if payload_bytes + key.map_or(0, <[u8]>::len) > self.options.payload_bytes_max {
            tracing::debug!(sink = %self.options.id, bytes = payload_bytes, "message longer than message.max.bytes; rejected");
            self.group.discard_from(start);
            return false;
        }
        let opaque = slot * self.options.batch_size + entry_index;
        self.group.push(start, key, opaque);
        true
    }
}

/// What taking a job from the lanes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// No job was waiting.
    None,
    /// The job selected no entry and was reported at once.
    NothingSelected,
    /// The job's batch is now being produced.
    Producing,
}
