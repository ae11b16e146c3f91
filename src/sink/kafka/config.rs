//! librdkafka configuration of a Kafka sink.
//!
//! Defaults, chosen for throughput and for bounded memory during outages
//! (each can be overridden in the sink's `librdkafka` table):
//!
//! | property | default | why |
//! | --- | --- | --- |
//! | `compression.type` | `lz4` | cheap on CPU, 3-5x on log lines |
//! | `linger.ms` | a fifth of `[dispatcher] latency_target_ms` (set when the sink is built) | fills Kafka batches at high rates within the daemon's latency target |
//! | `batch.num.messages` | `10000` | large produce requests |
//! | `queue.buffering.max.messages` | `batch_size x` the sink's slots | librdkafka's queue never needs more than the batches in flight; memory we do not see stays small |
//! | `queue.buffering.max.kbytes` | `65536` | same, in bytes |
//! | `message.timeout.ms` | `30000` | librdkafka retries internally until this; past it our breaker, retry wheel and DLQ own the batch (librdkafka's default is 300 s) |
//! | `socket.keepalive.enable` | `true` | notice dead connections |
//! | `enable.metrics.push` | `false` | the client telemetry of KIP-714 keeps six histograms per broker (about 0.4 MiB in all) whether or not a cluster asks for them; the daemon's own metrics cover the sink |
//!
//! Properties the sink owns and refuses in the table: `bootstrap.servers`
//! (use `brokers`), `delivery.report.only.error` (every report is needed to
//! acknowledge batches).

use std::collections::BTreeMap;
use std::num::NonZeroU64;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use serde::{Deserialize, Deserializer};

use crate::sink::encode::Encoding;

/// `type = "kafka"`: produce every entry as one message to a topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers: `"host:port,host:port"` or a list of `"host:port"`.
    #[serde(deserialize_with = "broker_list")]
    pub brokers: String,
    #[serde(deserialize_with = "topic_name")]
    pub topic: String,
    /// Name of a label whose value becomes the message key.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default = "default_kafka_encoding")]
    pub encoding: Encoding,
    /// librdkafka properties, passed through (see `sink::kafka::config` for
    /// the defaults this sink sets).
    #[serde(default)]
    pub librdkafka: BTreeMap<String, PropertyValue>,
    /// How often an open circuit breaker asks the cluster for metadata to
    /// find out whether it answers again.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: NonZeroU64,
}

/// A librdkafka property value: TOML strings, integers, floats and booleans
/// are all passed as their text.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
}

impl std::fmt::Display for PropertyValue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PropertyValue::Text(text) => formatter.write_str(text),
            PropertyValue::Integer(value) => write!(formatter, "{value}"),
            PropertyValue::Float(value) => write!(formatter, "{value}"),
            PropertyValue::Boolean(value) => write!(formatter, "{value}"),
        }
    }
}

fn default_kafka_encoding() -> Encoding {
    Encoding::Json
}

fn default_probe_interval_ms() -> NonZeroU64 {
    NonZeroU64::new(1000).expect("not zero")
}

fn broker_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Brokers {
        Joined(String),
        List(Vec<String>),
    }
    let brokers = match Brokers::deserialize(deserializer)? {
        Brokers::Joined(text) => text
            .split(',')
            .map(|broker| broker.trim().to_string())
            .collect::<Vec<_>>(),
        Brokers::List(list) => list,
    };
    if brokers.is_empty() || brokers.iter().any(|broker| broker.trim().is_empty()) {
        return Err(serde::de::Error::custom(
            "must list at least one \"host:port\" and no empty entry",
        ));
    }
    for broker in &brokers {
        check_broker(broker).map_err(serde::de::Error::custom)?;
    }
    Ok(brokers.join(","))
}

/// Checks the syntax of one bootstrap broker: `host:port`, where host is a
/// name, an IPv4 address or a bracketed IPv6 address, optionally after a
/// `protocol://` prefix as librdkafka allows. Names are not resolved here: a
/// name that does not resolve (yet) is an operating condition that the
/// circuit breaker handles, while a malformed entry would be retried forever.
fn check_broker(broker: &str) -> Result<(), String> {
    let address = broker.split_once("://").map_or(broker, |(_, rest)| rest);
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("broker {broker:?} is not \"host:port\""));
    };
    let host_valid = match host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
    {
        Some(inner) => inner.parse::<std::net::Ipv6Addr>().is_ok(),
        None => is_host_name(host),
    };
    if !host_valid {
        return Err(format!(
            "broker {broker:?}: host {host:?} is not a host name or an IP address"
        ));
    }
    match port.parse::<u32>() {
        Ok(1..=65_535) => Ok(()),
        _ => Err(format!(
            "broker {broker:?}: port {port:?} is not a number from 1 to 65535"
        )),
    }
}

/// A DNS name (or IPv4 address): dot-separated labels of 1 to 63 characters
/// of `[A-Za-z0-9_-]`, at most 253 characters, one trailing dot allowed.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
        })
}

fn topic_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let topic = String::deserialize(deserializer)?;
    let valid_byte = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
    if topic.is_empty() || topic.len() > 249 || !topic.bytes().all(valid_byte) {
        return Err(serde::de::Error::custom(format!(
            "{topic:?} is not a Kafka topic name (1 to 249 characters of [A-Za-z0-9._-])"
        )));
    }
    Ok(topic)
}

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
        "transactional.id",
        "the sink produces outside transactions, which a transactional producer refuses",
    ),
    (
        "delivery.report.only.error",
        "every delivery report is needed to acknowledge batches",
    ),
];

/// The librdkafka configuration of a sink; `messages_in_flight_max` is
/// `batch_size x` the sink's slots. Validates every property.
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
        ("enable.metrics.push", "false"),
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
    let native = client.create_native_config().map_err(|error| match error {
        KafkaError::ClientConfig(_, reason, key, value) => {
            KafkaConfigError::Property { key, value, reason }
        }
        other => KafkaConfigError::Property {
            key: String::new(),
            value: String::new(),
            reason: other.to_string(),
        },
    })?;
    let features = native.get("builtin.features").unwrap_or_default();
    check_sasl_mechanisms(config, &features)?;
    Ok(client)
}

/// librdkafka accepts any `sasl.mechanisms` at configuration time and
/// refuses one it was built without only when the client is created:
/// `check-config` would pass a config that `run` cannot use. This checks
/// each mechanism against the library's `builtin.features`.
fn check_sasl_mechanisms(config: &KafkaSinkConfig, features: &str) -> Result<(), KafkaConfigError> {
    let property = |key: &str| config.librdkafka.get(key).map(ToString::to_string);
    // `sasl.mechanism` is librdkafka's alias; without either, a SASL
    // protocol uses librdkafka's default, GSSAPI.
    let sasl = property("security.protocol")
        .is_some_and(|protocol| protocol.to_ascii_lowercase().starts_with("sasl"));
    let set = property("sasl.mechanisms").or_else(|| property("sasl.mechanism"));
    let defaulted = set.is_none();
    let Some(mechanisms) = set.or_else(|| sasl.then(|| "GSSAPI".to_string())) else {
        return Ok(());
    };
    let built: Vec<&str> = features.split(',').map(str::trim).collect();
    for mechanism in mechanisms.split(',').map(str::trim) {
        let feature = match mechanism.to_ascii_uppercase().as_str() {
            "GSSAPI" => "sasl_gssapi",
            "PLAIN" => "sasl_plain",
            "OAUTHBEARER" => "sasl_oauthbearer",
            upper if upper.starts_with("SCRAM-") => "sasl_scram",
            _ => continue,
        };
        if !built.contains(&feature) {
            return Err(KafkaConfigError::Property {
                key: "sasl.mechanisms".to_string(),
                value: mechanisms.clone(),
                reason: format!(
                    "{mechanism}{} is not built into this binary's librdkafka (it has PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER)",
                    if defaulted {
                        " (librdkafka's default for a SASL security.protocol when sasl.mechanisms is not set)"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: broker syntax is checked at every boundary without DNS.
    /// Method: entries on each side of each rule.
    #[test]
    fn broker_syntax_boundaries() {
        for valid in [
            "a:1",
            "a:65535",
            "127.0.0.1:9092",
            "[::1]:9092",
            "[fe80::1]:9092",
            "SSL://broker.example.com:9093",
            "no-such-host.invalid:9092",
            "fqdn.example.com.:9092",
            "under_score:9092",
        ] {
            assert_eq!(check_broker(valid), Ok(()), "{valid}");
        }
        for invalid in [
            "a:0",
            "a:65536",
            "a:99999",
            "a:-1",
            "a:",
            ":9092",
            "a",
            "not a broker::99999",
            "a b:9092",
            "::1:9092",
            "[::1:9092",
            "[not-ipv6]:9092",
            "a..b:9092",
        ] {
            assert!(check_broker(invalid).is_err(), "accepted {invalid}");
        }
        let long_label = format!("{}:9092", "a".repeat(64));
        assert!(check_broker(&long_label).is_err());
        let longest_label = format!("{}:9092", "a".repeat(63));
        assert_eq!(check_broker(&longest_label), Ok(()));
    }

    /// Goal: a SASL mechanism the library was built without is refused by
    /// `check-config`, not first by `run`. Method: the real build's
    /// features, and a list without SCRAM.
    #[test]
    fn sasl_mechanisms_are_checked_against_the_build() {
        let mut config = KafkaSinkConfig {
            brokers: "127.0.0.1:9092".to_string(),
            topic: "t".to_string(),
            key: None,
            encoding: Encoding::Json,
            librdkafka: BTreeMap::new(),
            probe_interval_ms: NonZeroU64::new(1000).expect("not zero"),
        };
        for (mechanisms, accepted) in [
            ("PLAIN", true),
            ("SCRAM-SHA-256", true),
            ("SCRAM-SHA-512", true),
            ("GSSAPI", false),
            ("PLAIN,GSSAPI", false),
        ] {
            config.librdkafka.insert(
                "sasl.mechanisms".to_string(),
                PropertyValue::Text(mechanisms.to_string()),
            );
            let checked = client_config(&config, 1000);
            assert_eq!(
                checked.is_ok(),
                accepted,
                "{mechanisms}: {:?}",
                checked.err()
            );
            if let Err(error) = checked {
                assert_eq!(error.key(), "librdkafka.sasl.mechanisms");
                assert!(error.to_string().contains("GSSAPI"), "{error}");
            }
        }
        config.librdkafka.clear();
        for (key, value) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "GSSAPI"),
        ] {
            config
                .librdkafka
                .insert(key.to_string(), PropertyValue::Text(value.to_string()));
            let checked = client_config(&config, 1000);
            assert!(
                checked
                    .as_ref()
                    .is_err_and(|error| error.to_string().contains("GSSAPI")),
                "{key}: {checked:?}"
            );
        }
        let without_scram = "gzip,ssl,sasl_plain";
        config.librdkafka.insert(
            "sasl.mechanisms".to_string(),
            PropertyValue::Text("SCRAM-SHA-256".to_string()),
        );
        assert!(check_sasl_mechanisms(&config, without_scram).is_err());
    }
}
