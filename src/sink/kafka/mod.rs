//! `type = "kafka"`: the Kafka sink, through librdkafka (`rdkafka`).
//!
//! `config` turns the sink's table into a librdkafka configuration,
//! `breaker` is the circuit breaker, `sink` the sink thread, `log` routes
//! librdkafka's own log through `tracing`. This module implements
//! [`SinkKind`] for the sink's config: check, endpoints (the brokers) and
//! build.

pub mod breaker;
pub mod config;
pub mod group;
pub mod log;
pub mod sink;
pub mod wakeup;

pub use breaker::{Breaker, BreakerState};
pub use log::ClientLog;
pub use sink::{KafkaMetrics, KafkaSink};

use std::sync::Arc;
use std::time::Duration;

use crate::sink::{BuiltSink, SinkBuildError, SinkContext, SinkHealth, SinkKind};
use config::KafkaSinkConfig;
use sink::KafkaSinkOptions;

impl SinkKind for KafkaSinkConfig {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn check(&self) -> Result<(), (String, String)> {
        config::client_config(self, 1)
            .map(drop)
            .map_err(|error| (error.key(), error.to_string()))
    }

    fn endpoints(&self) -> Vec<String> {
        self.brokers.split(',').map(str::to_string).collect()
    }

    fn build(&self, context: SinkContext) -> Result<BuiltSink, SinkBuildError> {
        let queue_messages = context.batch_size * context.slots.slots_total();
        let mut client = config::client_config(self, queue_messages).map_err(|source| {
            SinkBuildError::KafkaConfig {
                sink: context.id.clone(),
                source,
            }
        })?;
        if !self.librdkafka.contains_key("linger.ms") {
            // A fifth of the daemon's latency target: librdkafka's own wait
            // for a fuller Kafka batch is part of a line's delay, and the
            // dispatcher hands it whole batches anyway (at 50k lines/s a
            // linger of 1 ms rather than 2.5 took p99 from 11.6 to 9.5 ms
            // at the same CPU).
            let linger = context.latency_target / 5;
            client.set("linger.ms", format!("{:.1}", linger.as_secs_f64() * 1000.0));
        }
        let options = KafkaSinkOptions {
            id: context.id.clone(),
            topic: self.topic.clone(),
            key_label: self.key.clone(),
            encoding: self.encoding,
            probe_interval: Duration::from_millis(self.probe_interval_ms.get()),
            slots: context.slots,
            batch_size: context.batch_size,
            payload_bytes_max: config::message_payload_bytes_max(self),
        };
        let sink = KafkaSink::new(options, &client, context.symbols, context.failures)?;
        let kafka_metrics = sink.metrics();
        let metrics = context.metrics;
        Ok(BuiltSink {
            health: Arc::clone(&kafka_metrics) as Arc<dyn SinkHealth>,
            kafka: Some(kafka_metrics),
            loki: None,
            run: Box::new(move |links| sink.run(links, metrics)),
        })
    }
}
