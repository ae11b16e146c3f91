//! The TOML configuration: its types, defaults and validation.
//!
//! The layout follows Vector: a `[daemon]` table, a `[dispatcher]` table,
//! then `[sources.<id>]` and `[sinks.<id>]` tables, each with a `type` key.
//! A sink's `inputs` names the sources it takes (all of them when left
//! out); it is common to every sink kind, so it is read here
//! ([`SinkTable`]), not in each kind's struct.
//! Unknown keys are errors. Every error names the file, the key or value, and
//! its line (and column, for syntax and type errors); no input panics.
//! [`Config::from_toml`] checks the text alone; [`Config::load`], which
//! `check-config` and `run` use, also checks the config against the host's
//! file system and returns warnings (see `host`).
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
//! queue_capacity = 16384
//!
//! [sources.app]
//! type = "file"
//! paths = ["/var/log/app/*.log"]
//! start_at = "beginning"
//! labels = { service = "app" }
//!
//! [sinks.archive]
//! type = "file"
//! inputs = ["app"]
//! path = "/tmp/out.log"
//! encoding = "raw"
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::batch::SourceIndex;
use crate::limits;
use crate::sink::deserialize_sink;

pub use crate::dlq::DlqPolicy;
pub use crate::sink::SinkConfig;
pub use crate::sink::encode::Encoding;
pub use crate::sink::file::FileSinkConfig;
pub use crate::sink::kafka::config::{KafkaSinkConfig, PropertyValue};
pub use crate::sink::null::NullSinkConfig;
pub use crate::sink::stdout::StdoutSinkConfig;
pub use crate::source::file::StartAt;

mod document;
mod host;
mod sources;

pub use document::KeyLine;
use document::{ComponentFields, Document};
pub use host::{ConfigWarning, Loaded};
pub use sources::{
    DOCKER_LABELS, DockerSourceConfig, MESSAGE_BYTES_LIMIT, SYSLOG_LABELS, StdinSourceConfig,
    StructuredData, SyslogSourceConfig,
};

/// Why a configuration could not be used. Each message names the file
/// once; [`ConfigError::Read`] leaves the operating system's reason to its
/// `source()`, so that a caller printing the chain prints it once.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key is unknown, or a value has the wrong
    /// type or range. The message carries the line and column.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// The file parsed, but a value is unusable: out of range, in conflict
    /// with another, or naming something this host lacks. `key` is the
    /// dotted path of the key; `line` is where it is written, when it is.
    #[error("invalid config file {path}: {}", describe_invalid(key, line.as_ref(), reason))]
    Invalid {
        path: PathBuf,
        key: String,
        line: Option<KeyLine>,
        reason: String,
    },
}

fn describe_invalid(key: &str, line: Option<&KeyLine>, reason: &str) -> String {
    match line {
        Some(line) => format!("{line}: `{key}`: {reason}\n  | {}", line.text),
        None => format!("`{key}`: {reason}"),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub dispatcher: DispatcherConfig,
    pub retry: RetryConfig,
    pub dlq: DlqConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    pub sinks: BTreeMap<String, SinkTable>,
}

/// One `[sinks.<id>]` table: the keys every sink kind has, and the kind
/// with its own keys.
#[derive(Debug, Clone)]
pub struct SinkTable {
    /// `inputs`: the ids of the sources whose lines the sink takes, as
    /// written; `None` (the key left out) takes every source. Validation:
    /// at least one entry, each names a source, none twice.
    pub inputs: Option<Vec<String>>,
    /// `type` and the keys of that type.
    pub config: SinkConfig,
}

/// The keys of a `[sinks.<id>]` table that every kind has, besides `type`.
const SINK_COMMON_KEYS: &[&str] = &["inputs"];

/// Reads a `[sinks.<id>]` table: the common keys, then the kind's own
/// struct, which denies the keys it does not know.
fn build_sink(kind: &str, mut fields: ComponentFields<'_>) -> Result<SinkTable, toml::de::Error> {
    let inputs = fields.take::<Vec<String>>("inputs")?;
    let config = deserialize_sink(kind, fields.into_deserializer())?;
    Ok(SinkTable { inputs, config })
}

/// The tables of the file other than `[sources]` and `[sinks]`, which
/// [`Document::components`] reads one by one. Those two are named here
/// only so that an unknown top-level key's message lists them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    daemon: DaemonConfig,
    #[serde(default)]
    dispatcher: DispatcherConfig,
    #[serde(default)]
    retry: RetryConfig,
    #[serde(default)]
    dlq: DlqConfig,
    #[serde(default, rename = "sources")]
    _sources: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "sinks")]
    _sinks: Option<serde::de::IgnoredAny>,
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
    /// How often file positions are written (when they changed). After a
    /// crash, at most the lines delivered in this interval are sent again.
    pub positions_interval_ms: NonZeroU64,
    /// A file gone for this long loses its stored position.
    pub positions_forget_after_ms: NonZeroU64,
    /// Most distinct label strings interned; past it a value is carried
    /// with its lines instead, and counted.
    pub label_symbols_max: NonZeroUsize,
    /// Most bytes of interned label strings.
    pub label_bytes_max: NonZeroUsize,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("/var/lib/log-capturer"),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 8401)),
            pin_threads: true,
            shutdown_timeout_ms: NonZeroU64::new(5_000).expect("5000 is not zero"),
            transparent_huge_pages: false,
            positions_interval_ms: NonZeroU64::new(1_000).expect("not zero"),
            positions_forget_after_ms: NonZeroU64::new(24 * 3_600_000).expect("not zero"),
            label_symbols_max: NonZeroUsize::new(crate::labels::SYMBOLS_MAX_DEFAULT)
                .expect("not zero"),
            label_bytes_max: NonZeroUsize::new(crate::labels::BYTES_MAX_DEFAULT).expect("not zero"),
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
    /// A batch is sealed this long after its first entry, however small:
    /// the bound under load.
    pub batch_timeout_ms: NonZeroU64,
    /// The delay the daemon aims for between a line being written and it
    /// being handed to the sinks: file sources read a busy file every three
    /// fifths of it (and their batches are sealed when a read round ends),
    /// a batch whose other sources have nothing more to give is sealed once
    /// its first entry has waited this long, and Kafka sinks linger a fifth
    /// of it (`linger.ms`, unless their `librdkafka` table sets it). Larger
    /// values make larger batches and cost less CPU per line.
    pub latency_target_ms: NonZeroU64,
    /// Most entries waiting in one source ring. Rounded down to whole chunks
    /// of `CHUNK_LINES_MAX` entries; validation requires at least
    /// `SOURCE_CHUNKS_MIN` chunks' worth.
    pub queue_capacity: NonZeroUsize,
    /// Most sealed batches not yet answered by every sink (delivered, or
    /// failed and handed to the retry wheel, whose `retry.max_batches`
    /// slots are its own). Each one owns an arena sized for a batch; when
    /// all are in flight the dispatcher stops reading its source rings, so
    /// a slow sink holds this many batches, not every slot.
    pub batches_in_flight: NonZeroUsize,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            batch_size: NonZeroUsize::new(1000).expect("not zero"),
            batch_bytes: NonZeroUsize::new(1024 * 1024).expect("not zero"),
            batch_timeout_ms: NonZeroU64::new(100).expect("not zero"),
            latency_target_ms: NonZeroU64::new(5).expect("not zero"),
            queue_capacity: NonZeroUsize::new(16_384).expect("not zero"),
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
#[derive(Debug, Clone)]
pub enum SourceConfig {
    File(FileSourceConfig),
    Syslog(SyslogSourceConfig),
    Stdin(StdinSourceConfig),
    Docker(DockerSourceConfig),
}

impl SourceConfig {
    /// The source's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Syslog(_) => "syslog",
            SourceConfig::Stdin(_) => "stdin",
            SourceConfig::Docker(_) => "docker",
        }
    }

    /// Its static labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        match self {
            SourceConfig::File(file) => &file.labels,
            SourceConfig::Syslog(syslog) => &syslog.labels,
            SourceConfig::Stdin(stdin) => &stdin.labels,
            SourceConfig::Docker(docker) => &docker.labels,
        }
    }

    /// The longest line it produces whole.
    pub fn max_line_bytes(&self) -> usize {
        match self {
            SourceConfig::File(file) => file.max_line_bytes,
            SourceConfig::Syslog(syslog) => syslog.max_message_bytes,
            SourceConfig::Stdin(stdin) => stdin.max_line_bytes,
            SourceConfig::Docker(docker) => docker.max_line_bytes,
        }
    }

    /// The labels the source sets itself (a static label may not take
    /// their names).
    pub fn reserved_labels(&self) -> &'static [&'static str] {
        match self {
            SourceConfig::File(_) => &RESERVED_LABELS,
            SourceConfig::Syslog(_) => &SYSLOG_LABELS,
            SourceConfig::Stdin(_) => &RESERVED_LABELS[..1],
            SourceConfig::Docker(_) => &DOCKER_LABELS,
        }
    }

    /// The file source's table, for a file source.
    pub fn as_file(&self) -> Option<&FileSourceConfig> {
        match self {
            SourceConfig::File(file) => Some(file),
            _ => None,
        }
    }
}

/// The values of a source's `type`.
const SOURCE_TYPES: &[&str] = &["file", "syslog", "stdin", "docker"];

fn build_source(kind: &str, fields: ComponentFields<'_>) -> Result<SourceConfig, toml::de::Error> {
    let fields = fields.into_deserializer();
    match kind {
        "file" => FileSourceConfig::deserialize(fields).map(SourceConfig::File),
        "syslog" => SyslogSourceConfig::deserialize(fields).map(SourceConfig::Syslog),
        "stdin" => StdinSourceConfig::deserialize(fields).map(SourceConfig::Stdin),
        "docker" => DockerSourceConfig::deserialize(fields).map(SourceConfig::Docker),
        _ => unreachable!("source type {kind:?} is not in SOURCE_TYPES"),
    }
}

/// `type = "file"`: follow files as they grow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Paths or glob patterns; globs are expanded at start-up and again
    /// while running (inotify, and every `glob_interval_ms`).
    #[serde(deserialize_with = "non_empty_paths")]
    pub paths: Vec<String>,
    /// Glob patterns of paths not to follow, though `paths` match them.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// How often the globs are expanded again (inotify makes it sooner).
    #[serde(default = "default_glob_interval_ms")]
    pub glob_interval_ms: NonZeroU64,
    /// Most files open at once; past it the file idle longest is closed.
    #[serde(default = "default_max_files")]
    pub max_files: NonZeroUsize,
    /// How long a rotated file read to its end is still watched for
    /// writes before it is released.
    #[serde(default = "default_rotate_wait_ms")]
    pub rotate_wait_ms: NonZeroU64,
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

pub(crate) fn default_glob_interval_ms() -> NonZeroU64 {
    NonZeroU64::new(5_000).expect("not zero")
}

pub(crate) fn default_max_files() -> NonZeroUsize {
    NonZeroUsize::new(1024).expect("not zero")
}

pub(crate) fn default_rotate_wait_ms() -> NonZeroU64 {
    NonZeroU64::new(10_000).expect("not zero")
}

pub(crate) fn default_start_at() -> StartAt {
    StartAt::Beginning
}

pub(crate) fn default_max_line_bytes() -> usize {
    1024 * 1024
}

pub(crate) fn default_poll_interval_ms() -> NonZeroU64 {
    NonZeroU64::new(50).expect("not zero")
}

fn non_empty_paths<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let paths = Vec::<String>::deserialize(deserializer)?;
    if paths.is_empty() {
        return Err(serde::de::Error::custom("must name at least one file"));
    }
    if let Some(empty) = paths.iter().position(String::is_empty) {
        return Err(serde::de::Error::custom(format!(
            "entry {empty} is an empty string"
        )));
    }
    Ok(paths)
}

pub(crate) fn line_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let bytes = usize::deserialize(deserializer)?;
    if bytes == 0 || bytes > limits::LINE_BYTES_LIMIT {
        return Err(serde::de::Error::custom(format!(
            "{bytes} is out of range 1..={}",
            limits::LINE_BYTES_LIMIT
        )));
    }
    Ok(bytes)
}

impl Config {
    /// At most one stdin source (there is one standard input), and no two
    /// syslog sources on one address or socket path (the second could not
    /// bind it).
    fn validate_message_sources(&self, document: &Document<'_>) -> Result<(), ConfigError> {
        let stdin: Vec<&String> = self
            .sources
            .iter()
            .filter(|(_, source)| matches!(source, SourceConfig::Stdin(_)))
            .map(|(id, _)| id)
            .collect();
        if let [first, second, ..] = stdin[..] {
            return Err(document.invalid(
                &["sources", second, "type"],
                format!("sources.{first} reads standard input already; there is one"),
            ));
        }
        let mut bound: Vec<(Endpoint, &str)> = Vec::new();
        for (id, source) in &self.sources {
            let SourceConfig::Syslog(syslog) = source else {
                continue;
            };
            let endpoints = [
                syslog.udp.map(|address| ("udp", Endpoint::Udp(address))),
                syslog.tcp.map(|address| ("tcp", Endpoint::Tcp(address))),
                syslog
                    .unix
                    .as_ref()
                    .map(|path| ("unix", Endpoint::Unix(lexically_normal(path)))),
            ];
            for (key, endpoint) in endpoints.into_iter().flatten() {
                if let Some((_, other)) = bound.iter().find(|(known, _)| known.overlaps(&endpoint))
                {
                    return Err(document.invalid(
                        &["sources", id, key],
                        format!("{endpoint} is taken by sources.{other} already"),
                    ));
                }
                bound.push((endpoint, id));
            }
        }
        Ok(())
    }

    /// Reads and validates a config file, without looking at the host.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = read_text(path)?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let document = Document::parse(text, path)?;
        let config = Config::from_document(&document)?;
        config.validate(&document)?;
        Ok(config)
    }

    fn from_document(document: &Document<'_>) -> Result<Config, ConfigError> {
        let settings: Settings = document.deserialize()?;
        Ok(Config {
            daemon: settings.daemon,
            dispatcher: settings.dispatcher,
            retry: settings.retry,
            dlq: settings.dlq,
            sources: document.components("sources", SOURCE_TYPES, &[], build_source)?,
            sinks: document.components(
                "sinks",
                crate::sink::SINK_TYPES,
                SINK_COMMON_KEYS,
                build_sink,
            )?,
        })
    }

    fn validate(&self, document: &Document<'_>) -> Result<(), ConfigError> {
        self.validate_settings(document)?;
        if self.sources.is_empty() {
            return Err(document.invalid(&["sources"], "at least one source is required"));
        }
        if self.sinks.is_empty() {
            return Err(document.invalid(&["sinks"], "at least one sink is required"));
        }
        if self.sinks.len() > limits::SINKS_MAX {
            return Err(document.invalid(
                &["sinks"],
                format!(
                    "{} sinks; at most {} are supported",
                    self.sinks.len(),
                    limits::SINKS_MAX
                ),
            ));
        }
        for id in self.sources.keys().chain(self.sinks.keys()) {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(is_id_byte) {
                let table = if self.sources.contains_key(id) {
                    "sources"
                } else {
                    "sinks"
                };
                return Err(document.invalid(
                    &[table, id],
                    "a component id is 1 to 64 characters of [A-Za-z0-9_-]",
                ));
            }
        }
        for (id, source) in &self.sources {
            validate_static_labels(document, id, source)?;
            match source {
                SourceConfig::File(file) => validate_patterns(document, id, file)?,
                SourceConfig::Syslog(syslog) => syslog
                    .check()
                    .map_err(|(key, reason)| document.invalid(&["sources", id, key], reason))?,
                SourceConfig::Stdin(_) => {}
                SourceConfig::Docker(docker) => docker
                    .check()
                    .map_err(|(key, reason)| document.invalid(&["sources", id, key], reason))?,
            }
        }
        self.validate_message_sources(document)?;
        if self.sources.len() > limits::SOURCES_MAX {
            return Err(document.invalid(
                &["sources"],
                format!(
                    "{} sources, more than the most of {}",
                    self.sources.len(),
                    limits::SOURCES_MAX
                ),
            ));
        }
        for (id, sink) in &self.sinks {
            self.validate_inputs(document, id, sink)?;
            sink.config.check().map_err(|(key, reason)| {
                let key_path: Vec<&str> = ["sinks", id.as_str()]
                    .into_iter()
                    .chain(key_segments(&key))
                    .collect();
                element_invalid(document, &key_path, reason)
            })?;
        }
        Ok(())
    }

    /// A sink's `inputs`: at least one entry, each naming a source, none
    /// named twice (a repeated id is most likely a slip for another one).
    fn validate_inputs(
        &self,
        document: &Document<'_>,
        id: &str,
        sink: &SinkTable,
    ) -> Result<(), ConfigError> {
        let Some(inputs) = &sink.inputs else {
            return Ok(());
        };
        let key = ["sinks", id, "inputs"];
        if inputs.is_empty() {
            return Err(document.invalid(
                &key,
                "must name at least one source; leave `inputs` out to take every source",
            ));
        }
        let entry_error = |index: usize, reason: String| ConfigError::Invalid {
            path: document.path().to_path_buf(),
            key: format!("sinks.{id}.inputs[{index}]"),
            line: document.element_line(&key, index),
            reason,
        };
        for (index, input) in inputs.iter().enumerate() {
            if !self.sources.contains_key(input) {
                let known: Vec<String> = self.sources.keys().map(|id| format!("{id:?}")).collect();
                return Err(entry_error(
                    index,
                    format!(
                        "{input:?} names no source; the sources are {}",
                        known.join(", ")
                    ),
                ));
            }
            if let Some(first) = inputs[..index].iter().position(|other| other == input) {
                return Err(entry_error(
                    index,
                    format!("{input:?} is named twice (also entry {first})"),
                ));
            }
        }
        Ok(())
    }

    /// The index the entries of source `id` carry: its position among
    /// `sources`, in id order, the order the pipeline builds them in.
    pub fn source_index(&self, id: &str) -> Option<SourceIndex> {
        let position = self.sources.keys().position(|source| source == id)?;
        Some(SourceIndex::try_from(position).expect("validated: at most SOURCES_MAX sources"))
    }

    /// The bounds of `[dispatcher]`, `[retry]` and `[dlq]` that serde's
    /// types do not express; each is documented in README's config section.
    fn validate_settings(&self, document: &Document<'_>) -> Result<(), ConfigError> {
        let queue_capacity_min = limits::SOURCE_CHUNKS_MIN * limits::CHUNK_LINES_MAX;
        if self.dispatcher.queue_capacity.get() < queue_capacity_min {
            return Err(document.invalid(
                &["dispatcher", "queue_capacity"],
                format!(
                    "{} is below the minimum of {queue_capacity_min} entries ({} chunks of {} lines)",
                    self.dispatcher.queue_capacity,
                    limits::SOURCE_CHUNKS_MIN,
                    limits::CHUNK_LINES_MAX
                ),
            ));
        }
        if self.retry.max_delay_ms < self.retry.base_delay_ms {
            return Err(document.invalid(
                &["retry", "max_delay_ms"],
                "must be at least retry.base_delay_ms",
            ));
        }
        if self.dlq.segment_bytes.get() < DLQ_SEGMENT_BYTES_MIN {
            return Err(document.invalid(
                &["dlq", "segment_bytes"],
                format!("must be at least {DLQ_SEGMENT_BYTES_MIN}"),
            ));
        }
        if self.dlq.max_bytes.get() < self.dlq.segment_bytes.get() as u64 {
            return Err(document.invalid(
                &["dlq", "max_bytes"],
                "must hold at least one segment (dlq.segment_bytes)",
            ));
        }
        if self.daemon.label_symbols_max.get() > crate::labels::SYMBOLS_LIMIT {
            return Err(document.invalid(
                &["daemon", "label_symbols_max"],
                format!("must be at most {}", crate::labels::SYMBOLS_LIMIT),
            ));
        }
        for (id, source) in &self.sources {
            let Some(file) = source.as_file() else {
                continue;
            };
            for (index, pattern) in file.exclude.iter().enumerate() {
                if let Err(error) = glob::Pattern::new(pattern) {
                    return Err(document.invalid(
                        &["sources", id.as_str(), "exclude"],
                        format!("entry {index} {pattern:?} is not a glob pattern: {error}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a syslog source binds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Udp(SocketAddr),
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    /// Whether binding both would fail: the same path, or the same
    /// protocol and port on the same address or on the unspecified one
    /// (`0.0.0.0`, `::`), which takes the port on every address.
    fn overlaps(&self, other: &Endpoint) -> bool {
        let ports_overlap = |left: &SocketAddr, right: &SocketAddr| {
            left.port() == right.port()
                && (left.ip() == right.ip()
                    || left.ip().is_unspecified()
                    || right.ip().is_unspecified())
        };
        match (self, other) {
            (Endpoint::Udp(left), Endpoint::Udp(right))
            | (Endpoint::Tcp(left), Endpoint::Tcp(right)) => ports_overlap(left, right),
            (Endpoint::Unix(left), Endpoint::Unix(right)) => left == right,
            _ => false,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Udp(address) => write!(formatter, "UDP {address}"),
            Endpoint::Tcp(address) => write!(formatter, "TCP {address}"),
            Endpoint::Unix(path) => write!(formatter, "Unix socket {}", path.display()),
        }
    }
}

/// `path` with `.` dropped and `..` taken back, without asking the file
/// system: two spellings of one socket path compare equal.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// Smallest DLQ segment: room for the header and a useful number of records.
const DLQ_SEGMENT_BYTES_MIN: usize = 64 * 1024;

/// The segments of a key relative to a sink's table: `librdkafka.<property>`
/// keeps the property, dots and all, as one segment.
/// `document.invalid`, except that a last segment `name[index]` points at
/// that element's line.
fn element_invalid(document: &Document<'_>, key_path: &[&str], reason: String) -> ConfigError {
    let Some((last, rest)) = key_path.split_last() else {
        return document.invalid(key_path, reason);
    };
    let element = last
        .strip_suffix(']')
        .and_then(|inner| inner.split_once('['))
        .and_then(|(name, index)| Some((name, index.parse::<usize>().ok()?)));
    let Some((name, index)) = element else {
        return document.invalid(key_path, reason);
    };
    let array_path: Vec<&str> = rest.iter().copied().chain([name]).collect();
    ConfigError::Invalid {
        path: document.path().to_path_buf(),
        key: key_path.join("."),
        line: document.element_line(&array_path, index),
        reason,
    }
}

fn key_segments(key: &str) -> Vec<&str> {
    match key.split_once('.') {
        Some((table, property)) => vec![table, property],
        None => vec![key],
    }
}

/// Glob patterns must compile; a plain path is taken as written.
fn validate_patterns(
    document: &Document<'_>,
    id: &str,
    file: &FileSourceConfig,
) -> Result<(), ConfigError> {
    for (index, pattern) in file.paths.iter().enumerate() {
        if let Err(error) = glob::Pattern::new(pattern) {
            return Err(ConfigError::Invalid {
                path: document.path().to_path_buf(),
                key: format!("sources.{id}.paths[{index}]"),
                line: document.element_line(&["sources", id, "paths"], index),
                reason: format!("invalid glob pattern {pattern:?}: {error}"),
            });
        }
    }
    Ok(())
}

/// Labels the daemon sets itself on every line; a static label of the same
/// name would replace the real value in the output.
const RESERVED_LABELS: [&str; 2] = ["source_id", "file"];

fn validate_static_labels(
    document: &Document<'_>,
    id: &str,
    source: &SourceConfig,
) -> Result<(), ConfigError> {
    match source
        .reserved_labels()
        .iter()
        .find(|reserved| source.labels().contains_key(**reserved))
    {
        Some(reserved) => Err(document.invalid(
            &["sources", id, "labels", reserved],
            format!("label {reserved:?} is set by the daemon on every line; choose another name"),
        )),
        None => Ok(()),
    }
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn is_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
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
        assert_eq!(config.dispatcher.queue_capacity.get(), 16_384);
        assert_eq!(config.daemon.metrics_addr.to_string(), "127.0.0.1:8401");
        assert!(config.daemon.pin_threads);
        let file = config.sources["app"].as_file().expect("a file source");
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

    /// Goal: more sinks than the dispatcher has bits for are refused by
    /// validation, not by an assertion at start. Method: 64 and 65 null sinks.
    #[test]
    fn sinks_are_bounded() {
        let sinks = |count: usize| {
            (0..count)
                .map(|index| format!("[sinks.s{index}]\ntype = \"null\"\n"))
                .collect::<String>()
        };
        let source = "[sources.app]\ntype = \"file\"\npaths = [\"/tmp/a.log\"]\n";
        assert!(parse(&format!("{source}{}", sinks(limits::SINKS_MAX))).is_ok());
        let error =
            parse(&format!("{source}{}", sinks(limits::SINKS_MAX + 1))).expect_err("65 sinks");
        assert!(error.to_string().contains("at most 64"), "{error}");
    }

    /// Goal: validation errors carry the line of their key. Method: values
    /// that parse but break a rule, each on a known line.
    #[test]
    fn validation_errors_name_key_and_line() {
        let cases = [
            (
                "[dispatcher]\nbatch_size = 10\nqueue_capacity = 2047\n",
                "dispatcher.queue_capacity",
                3,
            ),
            (
                "[retry]\nbase_delay_ms = 10\nmax_delay_ms = 5\n",
                "retry.max_delay_ms",
                3,
            ),
            ("[dlq]\nsegment_bytes = 65535\n", "dlq.segment_bytes", 2),
            (
                "[dlq]\n\nmax_bytes = 65536\nsegment_bytes = 131072\n",
                "dlq.max_bytes",
                3,
            ),
        ];
        for (settings, key, line) in cases {
            let error = parse(&format!("{settings}{MINIMAL}")).expect_err(key);
            let ConfigError::Invalid {
                key: named,
                line: Some(key_line),
                ..
            } = &error
            else {
                panic!("{key}: {error}");
            };
            assert_eq!(named, key);
            assert_eq!(key_line.number, line, "{error}");
            assert!(
                error.to_string().contains(&format!("line {line}")),
                "{error}"
            );
        }
        let text = MINIMAL.replace(
            "type = \"null\"",
            "type = \"kafka\"\ntopic = \"t\"\nbrokers = \"a:1,b\"",
        );
        let error = parse(&text).expect_err("bad broker").to_string();
        assert!(error.contains("sinks.out.brokers"), "{error}");
        assert!(error.contains("line 9,"), "{error}");
    }

    /// Goal: a value error inside a source or sink table names the key's
    /// line, whether the table is a header, inline or dotted. Method: the
    /// same bad `start_at` in the three forms.
    #[test]
    fn value_errors_in_any_table_form_name_the_key_line() {
        let sink = "[sinks.out]\ntype = \"null\"\n";
        let cases = [
            format!(
                "[sources.app]\ntype = \"file\"\npaths = [\"/a\"]\n\nstart_at = \"middle\"\n{sink}"
            ),
            format!(
                "\n\nsources = {{ app = {{ type = \"file\", paths = [\"/a\"], start_at = \"middle\" }} }}\n{sink}"
            ),
            format!(
                "sources.app.type = \"file\"\nsources.app.paths = [\"/a\"]\n\n\nsources.app.start_at = \"middle\"\n{sink}"
            ),
        ];
        for text in cases {
            let line = text
                .lines()
                .position(|line| line.contains("middle"))
                .expect("line")
                + 1;
            let error = parse(&text).expect_err("bad enum").to_string();
            assert!(error.contains(&format!("line {line},")), "{error}");
            assert!(error.contains("sources.app.start_at"), "{error}");
        }
    }

    /// Goal: no truncated config panics, and an error that names a line
    /// names one that exists (the fuzz target's invariant, run on every
    /// prefix of a config that uses every table form). Method: parse each
    /// prefix.
    #[test]
    fn every_prefix_of_a_config_parses_or_names_an_existing_line() {
        let text = r#"sources.app = { type = "file", paths = ["/tmp/a.log", "/tmp/*.log"], labels = { a = "b" } }
[daemon]
pin_threads = false
[dispatcher]
queue_capacity = 4096
[dlq]
policy = "drop_new"
[sinks.k]
type = "kafka"
brokers = ["a:1", "[::1]:2"]
topic = "t"
librdkafka = { "linger.ms" = 5 }
[sinks.out]
type = "file"
inputs = ["app"]
path = "/tmp/out.log"
"#;
        for end in (0..=text.len()).filter(|&end| text.is_char_boundary(end)) {
            let prefix = &text[..end];
            match parse(prefix) {
                Ok(config) => assert!(!config.sinks.is_empty()),
                Err(error) => {
                    let message = error.to_string();
                    if let ConfigError::Invalid {
                        line: Some(line), ..
                    } = &error
                    {
                        let lines = prefix.lines().count().max(1);
                        assert!((1..=lines).contains(&line.number), "{message}");
                    }
                }
            }
        }
        parse(text).expect("the whole config is valid");
    }

    /// Goal: every listed component type has a builder (the builders
    /// treat an unlisted type as a bug). Method: each type, with no other
    /// key; an error for a missing key is fine, a panic is not.
    #[test]
    fn every_listed_type_is_built() {
        for kind in crate::sink::SINK_TYPES {
            let text = MINIMAL.replace("type = \"null\"", &format!("type = \"{kind}\""));
            let outcome = parse(&text);
            if let Err(error) = &outcome {
                assert!(
                    error.to_string().contains("missing field"),
                    "{kind}: {error}"
                );
            }
        }
        for kind in SOURCE_TYPES {
            let table = match *kind {
                "file" => "type = \"file\"\npaths = [\"/tmp/a.log\"]",
                "syslog" => "type = \"syslog\"\nudp = \"127.0.0.1:5514\"",
                other => &format!("type = \"{other}\""),
            };
            let text = MINIMAL.replace("type = \"file\"\npaths = [\"/tmp/a.log\"]", table);
            parse(&text).expect(kind);
        }
    }

    /// Goal: a syslog source gets the documented defaults, and its file
    /// mode is read in octal however it is written.
    #[test]
    fn syslog_source_defaults_and_octal_modes() {
        let syslog = |keys: &str| {
            let table = format!("type = \"syslog\"\nunix = \"/tmp/s.sock\"\n{keys}");
            let text = MINIMAL.replace("type = \"file\"\npaths = [\"/tmp/a.log\"]", &table);
            let config = parse(&text).expect("valid");
            let SourceConfig::Syslog(syslog) = config.sources["app"].clone() else {
                panic!("a syslog source");
            };
            syslog
        };
        let defaults = syslog("");
        assert_eq!(defaults.max_message_bytes, 65536);
        assert_eq!(defaults.max_connections.get(), 256);
        assert_eq!(defaults.idle_timeout_ms.get(), 300_000);
        assert_eq!(defaults.unix_mode, 0o666);
        assert_eq!(defaults.structured_data, StructuredData::Message);
        assert_eq!(defaults.recv_buffer_bytes, None);
        assert_eq!(syslog("unix_mode = \"0660\"").unix_mode, 0o660);
        assert_eq!(syslog("unix_mode = 0o600").unix_mode, 0o600);
        assert_eq!(
            syslog("structured_data = \"labels\"").structured_data,
            StructuredData::Labels
        );
    }

    const TWO_SOURCES: &str = r#"
[sources.opensips]
type = "file"
paths = ["/tmp/opensips.log"]

[sources.mysql]
type = "file"
paths = ["/tmp/mysql.log"]
"#;

    /// Goal: `inputs` is read once for every sink kind, beside the kind,
    /// and left out means every source. Method: a Kafka, a file and a
    /// null sink, two with `inputs` (one of them inline), one without.
    #[test]
    fn sink_inputs_are_read_beside_the_kind() {
        let text = format!(
            "{TWO_SOURCES}
[sinks.events]
type = \"kafka\"
inputs = [\"opensips\"]
brokers = \"127.0.0.1:9092\"
topic = \"logs\"

[sinks.archive]
type = \"null\"

[sinks.database]
type = \"file\"
path = \"/tmp/mysql-out.log\"
inputs = [\"mysql\", \"opensips\"]
"
        );
        let config = parse(&text).expect("valid");
        let events = &config.sinks["events"];
        assert_eq!(events.inputs, Some(vec!["opensips".to_string()]));
        assert!(matches!(events.config, SinkConfig::Kafka(_)));
        let archive = &config.sinks["archive"];
        assert_eq!(archive.inputs, None);
        assert!(matches!(archive.config, SinkConfig::Null(_)));
        let database = &config.sinks["database"];
        assert_eq!(
            database.inputs,
            Some(vec!["mysql".to_string(), "opensips".to_string()])
        );
        assert!(matches!(database.config, SinkConfig::File(_)));
        // Sources are indexed in id order.
        assert_eq!(config.source_index("mysql"), Some(0));
        assert_eq!(config.source_index("opensips"), Some(1));
        assert_eq!(config.source_index("nope"), None);

        let inline = format!(
            "sinks = {{ out = {{ type = \"stdout\", inputs = [\"mysql\"] }} }}\n{TWO_SOURCES}"
        );
        let config = parse(&inline).expect("valid inline");
        assert_eq!(config.sinks["out"].inputs, Some(vec!["mysql".to_string()]));
    }

    /// Goal: a bad `inputs` is refused naming the key, its line and the
    /// offending id. Method: an unknown id (the message lists the known
    /// ones), on one line and on its own line of a list, an empty list, a
    /// repeated id, a value of the wrong type, an unknown id in an inline
    /// table, and a misspelt key (whose message names `inputs` beside the
    /// kind's own keys); each on a known line.
    #[test]
    fn bad_sink_inputs_name_key_line_and_id() {
        let sink = "[sinks.out]\ntype = \"null\"\n";
        // (config, key, text of the line named, what the message says)
        let cases = [
            (
                format!("{TWO_SOURCES}{sink}inputs = [\"mysql\", \"nope\"]\n"),
                "sinks.out.inputs[1]",
                "inputs =",
                vec!["\"nope\" names no source", "\"mysql\", \"opensips\""],
            ),
            (
                format!("{TWO_SOURCES}{sink}inputs = [\n  \"mysql\",\n  \"nope\",\n]\n"),
                "sinks.out.inputs[1]",
                "\"nope\"",
                vec!["\"nope\" names no source"],
            ),
            (
                format!("{TWO_SOURCES}{sink}inputs = []\n"),
                "sinks.out.inputs",
                "inputs =",
                vec!["at least one source"],
            ),
            (
                format!("{TWO_SOURCES}{sink}inputs = [\"mysql\", \"mysql\"]\n"),
                "sinks.out.inputs[1]",
                "inputs =",
                vec!["\"mysql\" is named twice (also entry 0)"],
            ),
            (
                format!("{TWO_SOURCES}{sink}inputs = \"mysql\"\n"),
                "sinks.out.inputs",
                "inputs =",
                vec!["invalid type"],
            ),
            (
                format!(
                    "\nsinks = {{ out = {{ type = \"null\", inputs = [\"nope\"] }} }}\n{TWO_SOURCES}"
                ),
                "sinks.out.inputs[0]",
                "sinks = {",
                vec!["\"nope\" names no source"],
            ),
            (
                format!("{TWO_SOURCES}{sink}input = [\"mysql\"]\n"),
                "`input`",
                "input =",
                vec!["unknown field", "also takes `inputs`"],
            ),
        ];
        for (text, key, needle, reasons) in cases {
            let error = parse(&text).expect_err(key).to_string();
            let line = text
                .lines()
                .position(|line| line.contains(needle))
                .expect("line")
                + 1;
            assert!(error.contains(key), "{key}: {error}");
            assert!(error.contains(&format!("line {line}")), "{key}: {error}");
            for reason in reasons {
                assert!(error.contains(reason), "{reason}: {error}");
            }
        }
    }

    #[test]
    fn queue_capacity_becomes_whole_chunks() {
        let mut dispatcher = DispatcherConfig::default();
        assert_eq!(dispatcher.source_chunks(), 16);
        dispatcher.queue_capacity = NonZeroUsize::new(10).expect("not zero");
        assert_eq!(dispatcher.source_chunks(), limits::SOURCE_CHUNKS_MIN);
    }
}
