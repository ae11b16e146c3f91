//! `type = "kafka"`: the Kafka sink, through librdkafka (`rdkafka`).
//!
//! `config` turns the sink's table into a librdkafka configuration,
//! `breaker` is the circuit breaker, `sink` the sink thread, `log` routes
//! librdkafka's own log through `tracing`.

pub mod breaker;
pub mod config;
pub mod log;
pub mod sink;

pub use breaker::{Breaker, BreakerState};
pub use log::ClientLog;
pub use sink::{KafkaMetrics, KafkaSink};
