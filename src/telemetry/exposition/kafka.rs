//! The Kafka sinks' families: the reference `kafka_*` names.
//!
//! Each series carries `sink_name`, the sink's id, so that two sinks on one
//! topic never export the same series. The whole group is absent when no
//! Kafka sink is configured.
//!
//! This module uses nothing of the exposition but the family writer and
//! the figures it is handed in [`KafkaFigures`], so that it can move to
//! the Kafka sink's folder as it is.

use std::sync::Arc;

use crate::dlq::DlqMetrics;
use crate::dlq::record::Reason;
use crate::metrics::SinkMetrics;
use crate::sink::kafka::KafkaMetrics;
use crate::telemetry::family::{Exposition, Family};

pub static MESSAGES_PRODUCED: Family = Family::counter(
    "kafka_messages_produced_total",
    "Kafka messages acknowledged (success) or handed to the DLQ (error), once per message.",
);
pub static PRODUCER_ERRORS: Family = Family::counter(
    "kafka_producer_errors_total",
    "Kafka errors by type: transport (opens the breaker), retryable, permanent.",
);
pub static DLQ_MESSAGES: Family = Family::counter(
    "kafka_dlq_messages_total",
    "Kafka messages stored in the dead-letter queue, by reason.",
);
pub static QUEUE_SIZE: Family =
    Family::gauge("kafka_queue_size", "Messages in librdkafka's queue.");
pub static BREAKER_STATE: Family =
    Family::gauge("kafka_circuit_breaker_state", "0 closed, 1 open.");
pub static CONNECTION_STATUS: Family = Family::gauge(
    "kafka_connection_status",
    "1 when the cluster answered the last delivery or probe.",
);

/// What the Kafka families are rendered from. Series follow the order of
/// `kafka`, except `kafka_connection_status`, which follows `brokers`.
#[derive(Debug, Clone, Copy)]
pub struct KafkaFigures<'a> {
    /// The Kafka counters, by sink id.
    pub kafka: &'a [(String, Arc<KafkaMetrics>)],
    /// Every sink's counters: a Kafka sink's `lines_failed` is the `error`
    /// outcome of its messages (one message per line).
    pub sinks: &'a [Arc<SinkMetrics>],
    /// Every sink's dead-letter queue counters.
    pub dlq: &'a [Arc<DlqMetrics>],
    /// The bootstrap brokers, by sink id.
    pub brokers: &'a [(String, Vec<String>)],
}

pub fn render(out: &mut Exposition, figures: &KafkaFigures<'_>) {
    if figures.kafka.is_empty() {
        return;
    }
    render_messages(out, figures);
    render_errors(out, figures.kafka);
    render_dlq(out, figures);
    render_gauges(out, figures);
}

/// Outcomes, once per message: acknowledged, or handed to the DLQ.
fn render_messages(out: &mut Exposition, figures: &KafkaFigures<'_>) {
    MESSAGES_PRODUCED.header(out);
    for (sink, metrics) in figures.kafka {
        let failed = figures
            .sinks
            .iter()
            .find(|candidate| &candidate.id == sink)
            .map_or(0, |sink| sink.lines_failed.get());
        for (status, value) in [
            ("success", metrics.messages_delivered.get()),
            ("error", failed),
        ] {
            let labels = [
                ("sink_name", sink.as_str()),
                ("topic", metrics.topic.as_str()),
                ("status", status),
            ];
            MESSAGES_PRODUCED.sample(out, &labels, value);
        }
    }
}

fn render_errors(out: &mut Exposition, kafka: &[(String, Arc<KafkaMetrics>)]) {
    PRODUCER_ERRORS.header(out);
    for (sink, metrics) in kafka {
        for (error_type, value) in [
            ("transport", metrics.errors_transport.get()),
            ("retryable", metrics.errors_retryable.get()),
            ("permanent", metrics.errors_permanent.get()),
        ] {
            let labels = [
                ("sink_name", sink.as_str()),
                ("topic", metrics.topic.as_str()),
                ("error_type", error_type),
            ];
            PRODUCER_ERRORS.sample(out, &labels, value);
        }
    }
}

/// The Kafka sinks' DLQ counts by reason; a sink without a DLQ has none.
fn render_dlq(out: &mut Exposition, figures: &KafkaFigures<'_>) {
    DLQ_MESSAGES.header(out);
    for (sink, metrics) in figures.kafka {
        let Some(dlq) = figures.dlq.iter().find(|dlq| &dlq.sink == sink) else {
            continue;
        };
        for reason in Reason::ALL {
            let labels = [
                ("sink_name", sink.as_str()),
                ("topic", metrics.topic.as_str()),
                ("reason", reason.as_str()),
            ];
            DLQ_MESSAGES.sample(out, &labels, dlq.stored_for(reason).get());
        }
    }
}

/// librdkafka's queue, the breaker, and the connection per bootstrap
/// broker (all brokers of a sink carry the cluster's state).
fn render_gauges(out: &mut Exposition, figures: &KafkaFigures<'_>) {
    QUEUE_SIZE.header(out);
    for (sink, metrics) in figures.kafka {
        QUEUE_SIZE.sample(out, &[("sink_name", sink)], metrics.queue_size.get());
    }
    BREAKER_STATE.header(out);
    for (sink, metrics) in figures.kafka {
        BREAKER_STATE.sample(out, &[("sink_name", sink)], metrics.breaker_state.get());
    }
    CONNECTION_STATUS.header(out);
    for (sink, brokers) in figures.brokers {
        let connected = figures
            .kafka
            .iter()
            .find(|(id, _)| id == sink)
            .map_or(0, |(_, metrics)| metrics.connected.get());
        for broker in brokers {
            let labels = [("broker", broker.as_str()), ("sink_name", sink.as_str())];
            CONNECTION_STATUS.sample(out, &labels, connected);
        }
    }
}
