//! librdkafka configuration of a Kafka sink.
//!
//! Defaults, chosen for throughput and for bounded memory during outages
//! (each can be overridden in the sink's `librdkafka` table):
//!
//! | property | default | why |
//! | --- | --- | --- |
//! | `compression.type` | `lz4` | cheap on CPU, 3-5x on log lines |
//! | `linger.ms` | `5` | fills Kafka batches at high rates, adds little latency |
//! | `batch.num.messages` | `10000` | large produce requests |
//! | `queue.buffering.max.messages` | `batch_size x batches_in_flight` | librdkafka's queue never needs more than the batches in flight; memory we do not see stays small |
//! | `queue.buffering.max.kbytes` | `65536` | same, in bytes |
//! | `message.timeout.ms` | `30000` | librdkafka retries internally until this; past it our breaker, retry wheel and DLQ own the batch (librdkafka's default is 300 s) |
//! | `socket.keepalive.enable` | `true` | notice dead connections |
//!
//! Properties the sink owns and refuses in the table: `bootstrap.servers`
//! (use `brokers`), `delivery.report.only.error` (every report is needed to
//! acknowledge batches).

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::config::KafkaSinkConfig;

/// Why a Kafka sink's librdkafka configuration is invalid.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("librdkafka property `{key}` = {value:?}: {reason}")]
    Property {
        key: String,
        value: String,
        reason: String,
    },
    #[error("librdkafka property `{key}` is set by the sink itself: {reason}")]
    Reserved { key: String, reason: &'static str },
}

impl KafkaConfigError {
    /// The config key the error is about, relative to the sink's table.
    pub fn key(&self) -> String {
        match self {
            KafkaConfigError::Property { key, .. } | KafkaConfigError::Reserved { key, .. } => {
                if key == "bootstrap.servers" {
                    "brokers".to_string()
                } else {
                    format!("librdkafka.{key}")
                }
            }
        }
    }
}

/// librdkafka's default `message.max.bytes`.
pub const MESSAGE_BYTES_MAX_DEFAULT: usize = 1_000_000;

/// Bytes librdkafka adds to a message's key and value when it checks them
/// against `message.max.bytes` on `produce` (`RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD`
/// in `rdkafka_proto.h`: the varints of length, attributes, timestamp and
/// offset deltas, key and value lengths, and header count).
pub const MESSAGE_OVERHEAD_BYTES_MAX: usize = 36;

/// The most bytes of key plus payload that librdkafka accepts from this
/// sink: its `message.max.bytes` (the sink's `librdkafka` table, or
/// librdkafka's default) less the record overhead. A longer message is
/// refused by `produce` with `MSG_SIZE_TOO_LARGE`, whatever the brokers say.
pub fn message_payload_bytes_max(config: &KafkaSinkConfig) -> usize {
    let configured = config
        .librdkafka
        .get("message.max.bytes")
        .and_then(|value| value.to_string().trim().parse::<usize>().ok());
    configured
        .unwrap_or(MESSAGE_BYTES_MAX_DEFAULT)
        .saturating_sub(MESSAGE_OVERHEAD_BYTES_MAX)
}

const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use the `brokers` key"),
    (
        "delivery.report.only.error",
        "every delivery report is needed to acknowledge batches",
    ),
];

/// The librdkafka configuration of a sink; `messages_in_flight_max` is
/// `batch_size x batches_in_flight`. Validates every property.
pub fn client_config(
    config: &KafkaSinkConfig,
    messages_in_flight_max: usize,
) -> Result<ClientConfig, KafkaConfigError> {
    let mut client = ClientConfig::new();
    let queue_messages = messages_in_flight_max.clamp(1000, 10_000_000).to_string();
    for (key, value) in [
        ("compression.type", "lz4"),
        ("linger.ms", "5"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", queue_messages.as_str()),
        ("queue.buffering.max.kbytes", "65536"),
        ("message.timeout.ms", "30000"),
        ("socket.keepalive.enable", "true"),
    ] {
        client.set(key, value);
    }
    for (key, value) in &config.librdkafka {
        if let Some((_, reason)) = RESERVED.iter().find(|(reserved, _)| reserved == key) {
            return Err(KafkaConfigError::Reserved {
                key: key.clone(),
                reason,
            });
        }
        client.set(key, value.to_string());
    }
    client.set("bootstrap.servers", &config.brokers);
    client.create_native_config().map_err(|error| match error {
        KafkaError::ClientConfig(_, reason, key, value) => {
            KafkaConfigError::Property { key, value, reason }
        }
        other => KafkaConfigError::Property {
            key: String::new(),
            value: String::new(),
            reason: other.to_string(),
        },
    })?;
    Ok(client)
}
