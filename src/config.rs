//! The TOML configuration: its types, defaults and validation.
//!
//! The layout follows Vector: a `[daemon]` table, a `[dispatcher]` table,
//! then `[sources.<id>]` and `[sinks.<id>]` tables, each with a `type` key.
//! Unknown keys are errors. Every error names the file, the key or value, and
//! its line and column where the TOML parser knows them; no input panics.
//!
//! ```toml
//! [daemon]
//! data_dir = "/var/lib/log-capturer"
//! metrics_addr = "127.0.0.1:8401"
//! pin_threads = true
//!
//! [dispatcher]
//! batch_size = 1000
//! batch_timeout_ms = 100
//! queue_capacity = 65536
//!
//! [sources.app]
//! type = "file"
//! paths = ["/var/log/app/*.log"]
//! start_at = "beginning"
//! labels = { service = "app" }
//!
//! [sinks.archive]
//! type = "file"
//! path = "/tmp/out.log"
//! encoding = "raw"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::limits;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key is unknown, or a value has the wrong
    /// type or range. The message carries the line and column.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file parsed, but the values do not fit together.
    #[error("invalid config file {path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub dispatcher: DispatcherConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub dlq: DlqConfig,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
}

/// `[daemon]`: process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Directory for file positions and the dead-letter queue.
    pub data_dir: PathBuf,
    /// Address of the `/metrics` and `/health` endpoint.
    pub metrics_addr: SocketAddr,
    /// Pin each stage thread to a core (round-robin over the allowed cores).
    pub pin_threads: bool,
    /// How long a SIGTERM waits for sinks to finish before giving up.
    pub shutdown_timeout_ms: NonZeroU64,
    /// Let the allocator use transparent huge pages. Off by default: on a
    /// shared host the resident memory of idle buffers matters more.
    pub transparent_huge_pages: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/log-capturer"),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 8401)),
            pin_threads: true,
            shutdown_timeout_ms: NonZeroU64::new(5_000).expect("5000 is not zero"),
            transparent_huge_pages: false,
        }
    }
}

/// `[dispatcher]`: batching and the bounds of the rings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// A batch is sealed when it holds this many entries.
    pub batch_size: NonZeroUsize,
    /// A batch is sealed when its line bytes reach this many.
    pub batch_bytes: NonZeroUsize,
    /// A batch is sealed this long after its first entry, however small.
    pub batch_timeout_ms: NonZeroU64,
    /// Most entries waiting in one source ring. Rounded down to whole chunks
    /// of `CHUNK_LINES_MAX` entries, at least two chunks.
    pub queue_capacity: NonZeroUsize,
    /// Most sealed batches not yet acknowledged by every sink. Each one owns
    /// an arena of about `batch_bytes`, allocated at start-up; when all are
    /// in flight the dispatcher stops reading its source rings.
    pub batches_in_flight: NonZeroUsize,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            batch_size: NonZeroUsize::new(1000).expect("not zero"),
            batch_bytes: NonZeroUsize::new(1024 * 1024).expect("not zero"),
            batch_timeout_ms: NonZeroU64::new(100).expect("not zero"),
            queue_capacity: NonZeroUsize::new(65_536).expect("not zero"),
            batches_in_flight: NonZeroUsize::new(8).expect("not zero"),
        }
    }
}

impl DispatcherConfig {
    /// Chunks in each source ring and pool, from `queue_capacity`.
    pub fn source_chunks(&self) -> usize {
        (self.queue_capacity.get() / limits::CHUNK_LINES_MAX).max(limits::SOURCE_CHUNKS_MIN)
    }
}

/// `[retry]`: the retry timing wheel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Most (batch, sink) retries waiting at once. Each holds its batch's
    /// arena, so memory is bounded by `batches_in_flight + max_batches`
    /// arenas. A failure that finds the wheel full goes to the DLQ.
    pub max_batches: NonZeroUsize,
    /// Delay before the first retry; doubled per attempt, with jitter.
    pub base_delay_ms: NonZeroU64,
    /// Longest delay between attempts.
    pub max_delay_ms: NonZeroU64,
    /// Deliveries tried per batch and sink (the first included) before the
    /// failed entries go to the DLQ.
    pub max_attempts: std::num::NonZeroU32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_batches: NonZeroUsize::new(64).expect("not zero"),
            base_delay_ms: NonZeroU64::new(200).expect("not zero"),
            max_delay_ms: NonZeroU64::new(30_000).expect("not zero"),
            max_attempts: std::num::NonZeroU32::new(5).expect("not zero"),
        }
    }
}

/// What the DLQ does when it reaches `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DlqPolicy {
    /// Delete the oldest segment to make room (counted).
    #[default]
    DropOldest,
    /// Refuse new entries (counted).
    DropNew,
}

/// `[dlq]`: the dead-letter queue on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Directory of the segments; default `<data_dir>/dlq`.
    pub dir: Option<PathBuf>,
    /// Size of each preallocated segment file (at least 64 KiB).
    pub segment_bytes: NonZeroUsize,
    /// Bound on the segments of one sink, bytes.
    pub max_bytes: NonZeroU64,
    pub policy: DlqPolicy,
    /// Drain the DLQ back into its sink automatically once the sink has
    /// been healthy for `replay_after_ms`.
    pub auto_replay: bool,
    pub replay_after_ms: NonZeroU64,
    /// Most records per second an automatic replay sends.
    pub replay_rate: NonZeroU64,
}

impl Default for DlqConfig {
    fn default() -> Self {
        Self {
            dir: None,
            segment_bytes: NonZeroUsize::new(64 * 1024 * 1024).expect("not zero"),
            max_bytes: NonZeroU64::new(1024 * 1024 * 1024).expect("not zero"),
            policy: DlqPolicy::DropOldest,
            auto_replay: true,
            replay_after_ms: NonZeroU64::new(10_000).expect("not zero"),
            replay_rate: NonZeroU64::new(20_000).expect("not zero"),
        }
    }
}

impl Config {
    /// The DLQ directory: `[dlq] dir`, or `<data_dir>/dlq`.
    pub fn dlq_dir(&self) -> PathBuf {
        self.dlq
            .dir
            .clone()
            .unwrap_or_else(|| self.daemon.data_dir.join("dlq"))
    }
}

/// `[sources.<id>]`, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    File(FileSourceConfig),
}

/// Where a file source starts in a file it has no position for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    Beginning,
    End,
}

/// `type = "file"`: follow files as they grow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Paths or glob patterns; globs are expanded at start-up.
    #[serde(deserialize_with = "non_empty_paths")]
    pub paths: Vec<String>,
    #[serde(default = "default_start_at")]
    pub start_at: StartAt,
    /// Static labels attached to every line, besides `source_id` and `file`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Longest line kept whole. A longer line is split into pieces of this
    /// size; the pieces are counted in `lines_split_total`, and the `raw`
    /// encoding writes them back to back so that the output is unchanged.
    #[serde(default = "default_max_line_bytes", deserialize_with = "line_bytes")]
    pub max_line_bytes: usize,
    /// How often an idle source looks for new data in its files.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: NonZeroU64,
    /// Stop following a file at its end and stop the daemon when every
    /// source is done: a one-shot backfill (Fluent Bit's `Exit_On_Eof`).
    #[serde(default)]
    pub exit_on_eof: bool,
}

fn default_start_at() -> StartAt {
    StartAt::Beginning
}

fn default_max_line_bytes() -> usize {
    1024 * 1024
}

fn default_poll_interval_ms() -> NonZeroU64 {
    NonZeroU64::new(50).expect("not zero")
}

fn non_empty_paths<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let paths = Vec::<String>::deserialize(deserializer)?;
    if paths.is_empty() {
        return Err(serde::de::Error::custom(
            "`paths` must name at least one file",
        ));
    }
    if let Some(empty) = paths.iter().position(String::is_empty) {
        return Err(serde::de::Error::custom(format!(
            "`paths[{empty}]` is an empty string"
        )));
    }
    Ok(paths)
}

fn line_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let bytes = usize::deserialize(deserializer)?;
    if bytes == 0 || bytes > limits::LINE_BYTES_LIMIT {
        return Err(serde::de::Error::custom(format!(
            "`max_line_bytes` = {bytes} is out of range 1..={}",
            limits::LINE_BYTES_LIMIT
        )));
    }
    Ok(bytes)
}

/// How a sink turns an entry into bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The line as read, then `\n` if the line ended with one in the input.
    #[default]
    Raw,
    /// One JSON object per line: `timestamp`, `message`, `labels`.
    Json,
}

/// `[sinks.<id>]`, selected by `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    Kafka(KafkaSinkConfig),
    File(FileSinkConfig),
    Stdout(StdoutSinkConfig),
    Null(NullSinkConfig),
}

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
            "`brokers` must list at least one \"host:port\" and no empty entry",
        ));
    }
    Ok(brokers.join(","))
}

fn topic_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let topic = String::deserialize(deserializer)?;
    let valid_byte = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
    if topic.is_empty() || topic.len() > 249 || !topic.bytes().all(valid_byte) {
        return Err(serde::de::Error::custom(format!(
            "`topic` {topic:?} is not a Kafka topic name (1 to 249 characters of [A-Za-z0-9._-])"
        )));
    }
    Ok(topic)
}

/// `type = "file"`: append to one file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    #[serde(deserialize_with = "non_empty_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub encoding: Encoding,
}

/// `type = "stdout"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    #[serde(default)]
    pub encoding: Encoding,
}

/// `type = "null"`: count and drop, for benchmarks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullSinkConfig {}

fn non_empty_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    if path.as_os_str().is_empty() {
        return Err(serde::de::Error::custom("`path` is an empty string"));
    }
    Ok(path)
}

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: describe_toml_error(&error, text),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason: reason.to_string(),
        };
        if self.retry.max_delay_ms < self.retry.base_delay_ms {
            return Err(invalid(
                "retry.max_delay_ms",
                "must be at least retry.base_delay_ms",
            ));
        }
        if self.dlq.segment_bytes.get() < 64 * 1024 {
            return Err(invalid("dlq.segment_bytes", "must be at least 65536"));
        }
        if self.dlq.max_bytes.get() < self.dlq.segment_bytes.get() as u64 {
            return Err(invalid(
                "dlq.max_bytes",
                "must hold at least one segment (dlq.segment_bytes)",
            ));
        }
        if self.sources.is_empty() {
            return Err(invalid("sources", "at least one source is required"));
        }
        if self.sinks.is_empty() {
            return Err(invalid("sinks", "at least one sink is required"));
        }
        for (id, sink) in &self.sinks {
            if let SinkConfig::Kafka(kafka) = sink {
                crate::sink::kafka::config::client_config(kafka, 1).map_err(|error| {
                    ConfigError::Invalid {
                        path: path.to_path_buf(),
                        key: format!("sinks.{id}.{}", error.key()),
                        reason: error.to_string(),
                    }
                })?;
            }
        }
        for id in self.sources.keys().chain(self.sinks.keys()) {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(is_id_byte) {
                return Err(invalid(
                    id,
                    "a component id is 1 to 64 characters of [A-Za-z0-9_-]",
                ));
            }
        }
        Ok(())
    }
}

fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

/// Formats a TOML error as "line L, column C: message" plus the offending
/// line. An error inside a `[sources.x]` or `[sinks.x]` table is reported by
/// serde at the span of the whole table; when the message names a key, the
/// key's own line inside that span is found, so that the operator sees it.
fn describe_toml_error(error: &toml::de::Error, text: &str) -> String {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return message.to_string();
    };
    let start = key_offset_in_span(message, text, span.clone()).unwrap_or(span.start);
    let start = start.min(text.len());
    let line_index = text[..start].bytes().filter(|&byte| byte == b'\n').count();
    let line_start = text[..start].rfind('\n').map_or(0, |offset| offset + 1);
    let column = text[line_start..start].chars().count() + 1;
    let line_text = text[line_start..].lines().next().unwrap_or("");
    format!(
        "line {}, column {}: {}\n  | {}",
        line_index + 1,
        column,
        message,
        line_text
    )
}

/// Finds `key =` of a key named in backticks by `message` ("unknown field
/// `foo`") within the table that `span` of `text` starts.
fn key_offset_in_span(message: &str, text: &str, span: std::ops::Range<usize>) -> Option<usize> {
    let after = message.split_once('`')?.1;
    let key = after.split_once('`')?.0;
    if key.is_empty() {
        return None;
    }
    // The span may cover only the table header: look on until the next
    // header.
    let region = text.get(span.start..)?;
    let mut line_offset = 0;
    for (index, line) in region.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_start();
        if index > 0 && span.start + line_offset >= span.end && trimmed.starts_with('[') {
            return None;
        }
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(span.start + line_offset + (line.len() - trimmed.len()));
        }
        line_offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    const MINIMAL: &str = r#"
[sources.app]
type = "file"
paths = ["/tmp/a.log"]

[sinks.out]
type = "null"
"#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL).expect("minimal config is valid");
        assert_eq!(config.dispatcher.batch_size.get(), 1000);
        assert_eq!(config.dispatcher.batch_timeout_ms.get(), 100);
        assert_eq!(config.dispatcher.queue_capacity.get(), 65_536);
        assert_eq!(config.daemon.metrics_addr.to_string(), "127.0.0.1:8401");
        assert!(config.daemon.pin_threads);
        let SourceConfig::File(file) = &config.sources["app"];
        assert_eq!(file.start_at, StartAt::Beginning);
        assert_eq!(file.max_line_bytes, 1024 * 1024);
    }

    #[test]
    fn unknown_key_in_source_names_key_and_its_line() {
        let text = MINIMAL.replace("paths =", "colour = 1\npaths =");
        let error = parse(&text).expect_err("unknown key").to_string();
        assert!(error.contains("colour"), "{error}");
        assert!(error.contains("line 4"), "{error}");
    }

    #[test]
    fn unknown_key_in_daemon_names_key_and_its_line() {
        let text = format!("[daemon]\npin_threads = true\nbogus = 3\n{MINIMAL}");
        let error = parse(&text).expect_err("unknown key").to_string();
        assert!(error.contains("bogus"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn zero_batch_size_is_rejected_with_its_line() {
        let text = format!("[dispatcher]\nbatch_size = 0\n{MINIMAL}");
        let error = parse(&text).expect_err("zero batch").to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("batch_size"), "{error}");
    }

    #[test]
    fn bad_values_are_errors_not_panics() {
        let cases = [
            MINIMAL.replace("\"null\"", "\"carrier-pigeon\""),
            MINIMAL.replace("[\"/tmp/a.log\"]", "[]"),
            MINIMAL.replace("[\"/tmp/a.log\"]", "\"/tmp/a.log\""),
            format!("[daemon]\nmetrics_addr = \"nowhere\"\n{MINIMAL}"),
            format!("[dispatcher]\nbatch_timeout_ms = -1\n{MINIMAL}"),
            MINIMAL.replace("[sinks.out]\ntype = \"null\"", ""),
            MINIMAL.replace("[sources.app]", "[sources.\"bad id\"]"),
            "[[[".to_string(),
            String::new(),
        ];
        for text in cases {
            assert!(parse(&text).is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn queue_capacity_becomes_whole_chunks() {
        let mut dispatcher = DispatcherConfig::default();
        assert_eq!(dispatcher.source_chunks(), 64);
        dispatcher.queue_capacity = NonZeroUsize::new(10).expect("not zero");
        assert_eq!(dispatcher.source_chunks(), limits::SOURCE_CHUNKS_MIN);
    }
}
