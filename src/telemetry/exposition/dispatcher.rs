//! Families of the dispatcher: its queues, batches, rates and retries.

use crate::metrics::{DispatcherMetrics, SourceMetrics};
use crate::telemetry::PipelineMetrics;
use crate::telemetry::family::{Exposition, Family};

pub static QUEUE_DEPTH: Family = Family::gauge(
    "log_capturer_dispatcher_queue_depth",
    "Lines read by sources and not yet in a batch.",
);
pub static QUEUE_UTILIZATION: Family = Family::gauge(
    "log_capturer_dispatcher_queue_utilization",
    "queue_depth over the capacity of all source rings (0 to 1).",
);
pub static BATCHES: Family = Family::counter(
    "log_capturer_dispatcher_batches_total",
    "Batches sealed, and batches every sink has reported on.",
);
pub static QUEUE_SIZE: Family = Family::gauge(
    "log_capturer_queue_size",
    "Entries or batches waiting in a queue.",
);
pub static LOGS_PER_SECOND: Family = Family::gauge(
    "log_capturer_logs_per_second",
    "Lines per second over the last second, per component.",
);
pub static RETRY_QUEUE_SIZE: Family = Family::gauge(
    "log_capturer_dispatcher_retry_queue_size",
    "(batch, sink) retries waiting in the retry wheel.",
);
pub static RETRY_QUEUE_CAPACITY: Family = Family::gauge(
    "log_capturer_dispatcher_retry_queue_capacity",
    "(batch, sink) retries the retry wheel holds at most (retry.max_batches).",
);
pub static RETRY_DROPS: Family = Family::counter(
    "log_capturer_dispatcher_retry_drops_total",
    "Entries sent to the DLQ because the retry wheel was full.",
);
pub static RETRIES: Family = Family::counter(
    "log_capturer_dispatcher_retries_total",
    "Retries handed to sinks.",
);

/// Queue depth and utilisation, batches, and every queue's size.
/// `ring_capacity_entries` is what one source ring holds.
pub fn render(out: &mut Exposition, metrics: &PipelineMetrics, ring_capacity_entries: u64) {
    let depth: u64 = metrics.sources.iter().map(|source| waiting(source)).sum();
    let capacity = (ring_capacity_entries * metrics.sources.len() as u64).max(1);
    QUEUE_DEPTH.header(out);
    QUEUE_DEPTH.sample(out, &[], depth);
    QUEUE_UTILIZATION.header(out);
    QUEUE_UTILIZATION.sample(out, &[], depth as f64 / capacity as f64);
    let dispatcher = &metrics.dispatcher;
    BATCHES.header(out);
    BATCHES.sample(out, &[("state", "sealed")], dispatcher.batches_sealed.get());
    BATCHES.sample(
        out,
        &[("state", "completed")],
        dispatcher.batches_completed.get(),
    );
    render_queue_sizes(out, metrics);
}

/// Lines a source has read that the dispatcher has not yet batched.
fn waiting(source: &SourceMetrics) -> u64 {
    source
        .lines_read
        .get()
        .saturating_sub(source.lines_dispatched.get())
}

fn render_queue_sizes(out: &mut Exposition, metrics: &PipelineMetrics) {
    QUEUE_SIZE.header(out);
    for source in &metrics.sources {
        let component = format!("source:{}", source.id);
        let labels = [
            ("component", component.as_str()),
            ("queue_type", "ring_entries"),
        ];
        QUEUE_SIZE.sample(out, &labels, waiting(source));
    }
    let labels = [
        ("component", "dispatcher"),
        ("queue_type", "batches_in_flight"),
    ];
    QUEUE_SIZE.sample(out, &labels, metrics.dispatcher.batches_in_flight.get());
    for (sink, kafka) in &metrics.kafka {
        let component = format!("sink:{sink}");
        let labels = [
            ("component", component.as_str()),
            ("queue_type", "librdkafka_messages"),
        ];
        QUEUE_SIZE.sample(out, &labels, kafka.queue_size.get());
    }
}

/// Lines per second, by component (`source:<id>`, `dispatcher`,
/// `sink:<id>`), in the order given.
pub fn render_rates<'a>(out: &mut Exposition, rates: impl Iterator<Item = (&'a str, f64)>) {
    LOGS_PER_SECOND.header(out);
    for (component, per_second) in rates {
        LOGS_PER_SECOND.sample(out, &[("component", component)], per_second);
    }
}

/// The retry wheel's size, bound, drops and retries.
pub fn render_retry(out: &mut Exposition, dispatcher: &DispatcherMetrics, capacity_batches: u64) {
    RETRY_QUEUE_SIZE.header(out);
    RETRY_QUEUE_SIZE.sample(out, &[], dispatcher.retry_queue_size.get());
    RETRY_QUEUE_CAPACITY.header(out);
    RETRY_QUEUE_CAPACITY.sample(out, &[], capacity_batches);
    RETRY_DROPS.header(out);
    RETRY_DROPS.sample(out, &[], dispatcher.retry_drops.get());
    RETRIES.header(out);
    RETRIES.sample(out, &[], dispatcher.retries_sent.get());
}
