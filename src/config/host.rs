//! Checks of a parsed config against this host's file system: what `run`
//! would otherwise find out only after starting, or never.
//!
//! * A file sink's directory must exist, be a directory and be writable.
//! * A file sink's path must not be a FIFO or a socket (opening a FIFO
//!   without a reader would block the daemon, signals included).
//! * Two file sinks must not write the same file, and no file sink may write
//!   a file that a source follows (it would read its own output forever),
//!   not even under another name (a hard link: same device and inode).
//! * No file is followed by two sources (by device and inode).
//! * A Kafka `key` naming a label no source sets is a warning.
//! * A source that no sink takes (every sink has `inputs`, none names it)
//!   is a warning: its lines would be read and delivered nowhere.
//! * A source's `max_line_bytes` that a DLQ segment cannot hold is a warning:
//!   such a line, if it cannot be delivered, is counted as not stored.
//! * A source glob that matches no file is a warning, not an error: files
//!   may appear later, but an operator should know the pattern is empty now.
//! * A syslog Unix socket needs a directory that exists or can be created
//!   and no file other than a stale socket at its path (errors); a UDP or
//!   TCP address that cannot be bound now is a warning (a running daemon
//!   may hold it).
//! * A stdin source beside other sources is a warning: under a service
//!   manager standard input is `/dev/null`.
//! * A DLQ directory that cannot be created or written is a warning: the
//!   daemon runs without it, counting what it could not store.
//! * So is a positions directory (`<data_dir>/positions`): the daemon runs,
//!   but restarts begin at `start_at`.
//! * The buffers allocated at start-up fit in the host's memory; the most
//!   an outage can add (every retry arena in use) not fitting is a warning.
//!
//! Names are compared after normalisation: a path is made absolute, and its
//! directory is resolved through symbolic links when it exists.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::document::Document;
use super::{Config, ConfigError, FileSourceConfig, KeyLine, SinkConfig, SourceConfig};

/// A config that passed every check, and what the operator should know.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

/// Something in a valid config that is probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: PathBuf,
    /// Dotted path of the key, e.g. `sources.app.paths[0]`.
    pub key: String,
    pub line: Option<KeyLine>,
    pub message: String,
}

impl std::fmt::Display for ConfigWarning {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "config file {}: ", self.path.display())?;
        if let Some(line) = &self.line {
            write!(formatter, "{line}: ")?;
        }
        write!(formatter, "`{}`: {}", self.key, self.message)
    }
}

impl Config {
    /// Reads and validates a config file and checks it against this host:
    /// what `check-config` and `run` do before anything starts.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = super::read_text(path)?;
        let document = Document::parse(&text, path)?;
        let config = Config::from_document(&document)?;
        config.validate(&document)?;
        let warnings = config.check_host(&document)?;
        Ok(Loaded { config, warnings })
    }

    fn check_host(&self, document: &Document<'_>) -> Result<Vec<ConfigWarning>, ConfigError> {
        let mut written: Vec<(&str, PathBuf)> = Vec::new();
        for (id, sink) in &self.sinks {
            let SinkConfig::File(file) = &sink.config else {
                continue;
            };
            let key = ["sinks", id.as_str(), "path"];
            check_output_path(&file.path).map_err(|reason| document.invalid(&key, reason))?;
            let normalised = normalise(&file.path);
            if let Some((first, _)) = written.iter().find(|(_, other)| *other == normalised) {
                let reason = format!(
                    "{} is also written by sinks.{first}.path",
                    normalised.display()
                );
                return Err(document.invalid(&key, reason));
            }
            for (source_id, source) in &self.sources {
                let Some(source) = source.as_file() else {
                    continue;
                };
                let followed = followed_by(source, &file.path, &normalised)
                    .or_else(|| followed_as_same_inode(source, &file.path));
                if let Some(pattern) = followed {
                    let reason = format!(
                        "{} is followed by sources.{source_id} (paths entry {pattern:?}): \
                         the sink would read its own output",
                        normalised.display()
                    );
                    return Err(document.invalid(&key, reason));
                }
            }
            written.push((id, normalised));
        }
        self.files_followed_twice(document)?;
        self.kafka_files_readable(document)?;
        self.loki_ca_files_readable(document)?;
        let mut warnings = self.empty_globs(document);
        warnings.extend(self.unusable_dlq_dir(document));
        warnings.extend(self.unusable_positions_dir(document));
        warnings.extend(self.lines_too_long_for_dlq(document));
        warnings.extend(self.kafka_keys_never_set(document));
        warnings.extend(self.loki_unbounded_stream_labels(document));
        warnings.extend(self.sources_no_sink_takes(document));
        warnings.extend(self.stdin_beside_other_sources(document));
        warnings.extend(self.docker_sources_sharing_a_socket(document));
        warnings.extend(self.syslog_endpoints(document)?);
        warnings.extend(self.check_memory(document)?);
        Ok(warnings)
    }

    /// Files a Kafka sink's librdkafka table names (CA, certificate, key,
    /// CRL, keystore) must be readable: librdkafka reads them only when
    /// the client is created, so `run` would fail where `check-config`
    /// passed.
    fn kafka_files_readable(&self, document: &Document<'_>) -> Result<(), ConfigError> {
        const FILE_PROPERTIES: &[&str] = &[
            "ssl.ca.location",
            "ssl.certificate.location",
            "ssl.key.location",
            "ssl.crl.location",
            "ssl.keystore.location",
        ];
        for (id, sink) in &self.sinks {
            let SinkConfig::Kafka(kafka) = &sink.config else {
                continue;
            };
            for property in FILE_PROPERTIES {
                let Some(value) = kafka.librdkafka.get(*property).map(ToString::to_string) else {
                    continue;
                };
                // `probe` asks librdkafka to find the system's CA store.
                if *property == "ssl.ca.location" && value == "probe" {
                    continue;
                }
                let path = Path::new(&value);
                // A CA location may be a directory of certificates.
                let readable = if path.is_dir() {
                    std::fs::read_dir(path).map(drop)
                } else {
                    std::fs::File::open(path).map(drop)
                };
                if let Err(error) = readable {
                    let key = ["sinks", id.as_str(), "librdkafka", property];
                    let reason = format!("cannot read {value}: {error}");
                    return Err(document.invalid(&key, reason));
                }
            }
        }
        Ok(())
    }

    /// The buffers allocated at start-up must fit in this host's memory
    /// (else `run` aborts on allocation), and so should the most that an
    /// outage can add (every retry arena in use), else it is a warning.
    fn check_memory(&self, document: &Document<'_>) -> Result<Option<ConfigWarning>, ConfigError> {
        let key = ["dispatcher"];
        let Some(memory) = self.memory_bound() else {
            let reason = "batch_size, batch_bytes, batches_in_flight, retry.max_batches, \
                          queue_capacity and the syslog sources' max_connections × \
                          max_message_bytes together need more bytes than a machine can address";
            return Err(document.invalid(&key, reason));
        };
        let Some(host_bytes) = physical_memory_bytes() else {
            return Ok(None);
        };
        if memory.start_up_bytes > host_bytes {
            let reason = format!(
                "the buffers allocated at start-up need {} bytes ({}), more than this host's \
                 {host_bytes} bytes of memory",
                memory.start_up_bytes, memory.breakdown
            );
            return Err(document.invalid(&key, reason));
        }
        if memory.outage_bytes <= host_bytes {
            return Ok(None);
        }
        Ok(Some(ConfigWarning {
            path: document.path().to_path_buf(),
            key: key.join("."),
            line: document.key_line(&key),
            message: format!(
                "during an outage the buffers can grow to {} bytes (every retry arena in use; \
                 {}), more than this host's {host_bytes} bytes of memory",
                memory.outage_bytes, memory.breakdown
            ),
        }))
    }

    /// Bytes of the fixed buffers, or `None` when the sum overflows.
    fn memory_bound(&self) -> Option<MemoryBound> {
        let dispatcher = &self.dispatcher;
        let arena_bytes = dispatcher
            .batch_size
            .get()
            .checked_mul(std::mem::size_of::<crate::batch::Entry<'static>>() + 16)?
            .checked_add(dispatcher.batch_bytes.get())?;
        let live_arenas = dispatcher.batches_in_flight.get();
        let retry_arenas = self.retry.max_batches.get();
        let chunk_bytes = dispatcher
            .source_chunks()
            .checked_mul(crate::limits::CHUNK_BYTES)?;
        let sink_buffer_bytes = dispatcher
            .batch_bytes
            .get()
            .checked_add(dispatcher.batch_size.get())?;
        let fixed_bytes = chunk_bytes
            .checked_mul(self.sources.len())?
            .checked_add(sink_buffer_bytes.checked_mul(self.sinks.len())?)?;
        let start_up_bytes = arena_bytes
            .checked_mul(live_arenas)?
            .checked_add(fixed_bytes)?;
        // Every TCP connection of a syslog source may hold one partial
        // message.
        let mut partial_message_bytes = 0usize;
        for source in self.sources.values() {
            if let SourceConfig::Syslog(syslog) = source
                && syslog.tcp.is_some()
            {
                let bytes = syslog
                    .max_connections
                    .get()
                    .checked_mul(syslog.max_message_bytes)?;
                partial_message_bytes = partial_message_bytes.checked_add(bytes)?;
            }
        }
        let outage_bytes = arena_bytes
            .checked_mul(retry_arenas)?
            .checked_add(start_up_bytes)?
            .checked_add(partial_message_bytes)?;
        Some(MemoryBound {
            start_up_bytes: start_up_bytes as u64,
            outage_bytes: outage_bytes as u64,
            breakdown: format!(
                "{live_arenas} + {retry_arenas} retry batch arenas of {arena_bytes} bytes, \
                 {chunk_bytes} bytes of chunks per source, {sink_buffer_bytes} bytes per sink, \
                 {partial_message_bytes} bytes of partial syslog messages \
                 (max_connections × max_message_bytes)"
            ),
        })
    }

    /// A warning when the DLQ directory cannot be created or written. Not
    /// an error: the daemon runs without a DLQ (undeliverable entries are
    /// counted as not stored), and a directory can be fixed while it runs.
    fn unusable_dlq_dir(&self, document: &Document<'_>) -> Option<ConfigWarning> {
        let dir = self.dlq_dir();
        let problem = directory_problem(&dir)?;
        let key: &[&str] = if self.dlq.dir.is_some() {
            &["dlq", "dir"]
        } else {
            &["daemon", "data_dir"]
        };
        Some(ConfigWarning {
            path: document.path().to_path_buf(),
            key: key.join("."),
            line: document.key_line(key),
            message: format!(
                "the DLQ directory {} cannot be used ({problem}); \
                 entries that cannot be delivered will be counted as not stored",
                dir.display()
            ),
        })
    }

    /// A warning when `<data_dir>/positions` cannot be created or written.
    /// Not an error, as for the DLQ: the daemon runs and follows its files,
    /// but positions are not stored, so a restart starts at `start_at`.
    fn unusable_positions_dir(&self, document: &Document<'_>) -> Option<ConfigWarning> {
        let dir = self
            .daemon
            .data_dir
            .join(crate::source::positions::DIRECTORY_NAME);
        let problem = directory_problem(&dir)?;
        let key = ["daemon", "data_dir"];
        Some(ConfigWarning {
            path: document.path().to_path_buf(),
            key: key.join("."),
            line: document.key_line(&key),
            message: format!(
                "the positions directory {} cannot be used ({problem}); \
                 files will start at start_at after every restart",
                dir.display()
            ),
        })
    }

    /// A warning when a source's longest line cannot fit one DLQ segment:
    /// such a line, if it cannot be delivered, is counted as not stored
    /// (records never span segments).
    fn lines_too_long_for_dlq(&self, document: &Document<'_>) -> Option<ConfigWarning> {
        let segment_bytes = self.dlq.segment_bytes.get();
        // Room for the segment's header, open block and trailer, the
        // record's fixed fields and a generous label set.
        let record_room_bytes = crate::dlq::line_bytes_max(segment_bytes);
        let (id, longest) = self
            .sources
            .iter()
            .map(|(id, source)| (id, source.max_line_bytes()))
            .max_by_key(|(_, bytes)| *bytes)?;
        if longest <= record_room_bytes {
            return None;
        }
        let key = ["dlq", "segment_bytes"];
        Some(ConfigWarning {
            path: document.path().to_path_buf(),
            key: key.join("."),
            line: document.key_line(&key),
            message: format!(
                "a DLQ segment of {segment_bytes} bytes cannot hold a line of \
                 sources.{id}.max_line_bytes = {longest} bytes (a record needs the line plus \
                 up to 64 KiB, and a segment keeps an eighth of itself, at most 128 KiB, for \
                 its open block): such a line that cannot be delivered is counted as not \
                 stored; raise segment_bytes or lower max_line_bytes"
            ),
        })
    }

    /// Two sources that follow the same file would ship each of its lines
    /// twice: an error naming both (files that exist now, by device and
    /// inode, so that links and overlapping globs are caught too).
    fn files_followed_twice(&self, document: &Document<'_>) -> Result<(), ConfigError> {
        let mut followed: Vec<((u64, u64), &str, PathBuf)> = Vec::new();
        for (id, source) in &self.sources {
            let Some(source) = source.as_file() else {
                continue;
            };
            for pattern in &source.paths {
                let Ok(paths) = glob::glob(pattern) else {
                    continue;
                };
                for path in paths.flatten() {
                    let Ok(metadata) = std::fs::metadata(&path) else {
                        continue;
                    };
                    let identity = (metadata.dev(), metadata.ino());
                    let earlier = followed.iter().find(|(other, _, _)| *other == identity);
                    // One source naming one path twice follows it once.
                    if earlier
                        .is_some_and(|(_, first, first_path)| first == id && *first_path == path)
                    {
                        continue;
                    }
                    if let Some((_, first, first_path)) = earlier {
                        let reason = format!(
                            "{} is also followed by sources.{first} (as {}): its lines would \
                             be shipped twice",
                            path.display(),
                            first_path.display()
                        );
                        return Err(document.invalid(&["sources", id, "paths"], reason));
                    }
                    followed.push((identity, id, path));
                }
            }
        }
        Ok(())
    }

    /// A stdin source beside other sources: under a service manager its
    /// input is `/dev/null`, so it ends at once while the others go on.
    fn stdin_beside_other_sources(&self, document: &Document<'_>) -> Option<ConfigWarning> {
        let (id, _) = self
            .sources
            .iter()
            .find(|(_, source)| matches!(source, SourceConfig::Stdin(_)))?;
        if self.sources.len() == 1 {
            return None;
        }
        let key = ["sources", id.as_str(), "type"];
        Some(ConfigWarning {
            path: document.path().to_path_buf(),
            key: key.join("."),
            line: document.key_line(&key),
            message: format!(
                "a stdin source beside {} other source(s): a daemon started by a service \
                 manager has /dev/null as standard input, so this source ends at once and \
                 the others go on; pipe into the daemon to use it",
                self.sources.len() - 1
            ),
        })
    }

    /// The directory of a syslog Unix socket must exist or be creatable
    /// (an error: `run` could not bind it); a UDP or TCP address that
    /// cannot be bound now is a warning (a running daemon holds it, or
    /// `run` would fail).
    fn syslog_endpoints(&self, document: &Document<'_>) -> Result<Vec<ConfigWarning>, ConfigError> {
        let mut warnings = Vec::new();
        let mut sockets: Vec<(PathBuf, &str)> = Vec::new();
        for (id, source) in &self.sources {
            let SourceConfig::Syslog(syslog) = source else {
                continue;
            };
            if let Some(path) = &syslog.unix {
                let key = ["sources", id.as_str(), "unix"];
                if let Some(problem) = unix_socket_problem(path) {
                    return Err(document.invalid(&key, problem));
                }
                // The same socket through a link or a relative spelling.
                let normalised = normalise(path);
                if let Some((_, other)) = sockets.iter().find(|(known, _)| *known == normalised) {
                    let reason = format!(
                        "{} is the socket of sources.{other} already",
                        normalised.display()
                    );
                    return Err(document.invalid(&key, reason));
                }
                sockets.push((normalised, id));
            }
            let mut warn = |key: &str, message: String| {
                let key = ["sources", id.as_str(), key];
                warnings.push(ConfigWarning {
                    path: document.path().to_path_buf(),
                    key: key.join("."),
                    line: document.key_line(&key),
                    message,
                });
            };
            if let Some(path) = &syslog.unix
                && crate::source::syslog::socket_in_use(path)
            {
                warn(
                    "unix",
                    format!(
                        "socket {} is in use by another process now (a running daemon with \
                         this config holds it; else `run` will refuse it)",
                        path.display()
                    ),
                );
            }
            if let Some(address) = syslog.udp
                && let Err(error) = std::net::UdpSocket::bind(address)
            {
                warn("udp", format!("UDP {address} cannot be bound now: {error}"));
            }
            if let Some(address) = syslog.tcp
                && let Err(error) = std::net::TcpListener::bind(address)
            {
                warn("tcp", format!("TCP {address} cannot be bound now: {error}"));
            }
        }
        Ok(warnings)
    }

    /// A Loki sink's `ca_file` must be a readable PEM file: the client
    /// reads it when `run` builds the sink.
    fn loki_ca_files_readable(&self, document: &Document<'_>) -> Result<(), ConfigError> {
        for (id, sink) in &self.sinks {
            let SinkConfig::Loki(loki) = &sink.config else {
                continue;
            };
            let Some(path) = &loki.ca_file else {
                continue;
            };
            let problem = match std::fs::read(path) {
                Err(error) => Some(format!("cannot read {}: {error}", path.display())),
                Ok(pem) if !pem.windows(11).any(|window| window == b"-----BEGIN ") => {
                    Some(format!("{} holds no PEM certificate", path.display()))
                }
                Ok(_) => None,
            };
            if let Some(reason) = problem {
                return Err(document.invalid(&["sinks", id.as_str(), "ca_file"], reason));
            }
        }
        Ok(())
    }

    /// A warning for each Loki stream label whose values have no bound
    /// (`file`, `procid`, ...): every value is a Loki stream.
    fn loki_unbounded_stream_labels(&self, document: &Document<'_>) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        for (id, sink) in &self.sinks {
            let SinkConfig::Loki(loki) = &sink.config else {
                continue;
            };
            for (index, name) in loki.unbounded_labels() {
                let key = format!("labels[{index}]");
                let path = ["sinks", id.as_str(), key.as_str()];
                // max_files bounds the files open at once, not the files a
                // glob matches over time: no bound can be given.
                let bound = if name == "file" {
                    " (one per file the sources' paths ever match)"
                } else {
                    ""
                };
                warnings.push(ConfigWarning {
                    path: document.path().to_path_buf(),
                    key: path.join("."),
                    line: document.key_line(&["sinks", id.as_str(), "labels"]),
                    message: format!(
                        "stream label {name:?} has a value per {what}: each value is a Loki stream{bound}, and Loki's memory and index grow with streams; keep it in the line (encoding = \"json\") instead",
                        what = if name == "file" { "file" } else { "process or message" },
                    ),
                });
            }
        }
        warnings
    }

    /// A warning for each Kafka `key` that names a label no source sets:
    /// every message would then go without a key.
    fn kafka_keys_never_set(&self, document: &Document<'_>) -> Vec<ConfigWarning> {
        let set_by_some_source = |label: &str| {
            self.sources.values().any(|source| {
                source.reserved_labels().contains(&label) || source.labels().contains_key(label)
            })
        };
        self.sinks
            .iter()
            .filter_map(|(id, sink)| match &sink.config {
                SinkConfig::Kafka(kafka) => kafka.key.as_deref().map(|key| (id, key)),
                _ => None,
            })
            .filter(|(_, key)| !set_by_some_source(key))
            .map(|(id, key)| {
                let path = ["sinks", id.as_str(), "key"];
                ConfigWarning {
                    path: document.path().to_path_buf(),
                    key: path.join("."),
                    line: document.key_line(&path),
                    message: format!(
                        "no source sets label {key:?} (besides static labels, every line has \
                         `file` and `source_id`): messages will have no key"
                    ),
                }
            })
            .collect()
    }

    /// A warning for each source that no sink takes (every sink has
    /// `inputs`, and none names it): its lines would be read, and then
    /// skipped by every sink.
    fn sources_no_sink_takes(&self, document: &Document<'_>) -> Vec<ConfigWarning> {
        let taken = |source: &str| {
            self.sinks.values().any(|sink| {
                sink.inputs
                    .as_ref()
                    .is_none_or(|inputs| inputs.iter().any(|input| input == source))
            })
        };
        self.sources
            .keys()
            .filter(|id| !taken(id))
            .map(|id| {
                let path = ["sources", id.as_str()];
                ConfigWarning {
                    path: document.path().to_path_buf(),
                    key: path.join("."),
                    line: document.key_line(&path),
                    message: "no sink takes this source (no sink's `inputs` names it): its \
                              lines will be read and delivered nowhere"
                        .to_string(),
                }
            })
            .collect()
    }

    /// A warning for each source glob that matches no file now.
    /// Two docker sources on one dockerd ship the lines of every container
    /// both select twice: a warning naming both (their selections may be
    /// meant to be apart).
    fn docker_sources_sharing_a_socket(&self, document: &Document<'_>) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        let mut seen: Vec<(&str, &std::path::Path)> = Vec::new();
        for (id, source) in &self.sources {
            let SourceConfig::Docker(docker) = source else {
                continue;
            };
            if let Some((first, _)) = seen.iter().find(|(_, socket)| *socket == docker.socket) {
                warnings.push(ConfigWarning {
                    path: document.path().to_path_buf(),
                    key: format!("sources.{id}.socket"),
                    line: document.key_line(&["sources", id, "socket"]),
                    message: format!(
                        "sources.{first} reads {} too: the lines of a container both select are shipped twice",
                        docker.socket.display()
                    ),
                });
            }
            seen.push((id, &docker.socket));
        }
        warnings
    }

    fn empty_globs(&self, document: &Document<'_>) -> Vec<ConfigWarning> {
        let mut warnings = Vec::new();
        for (id, source) in &self.sources {
            let Some(file) = source.as_file() else {
                continue;
            };
            for (index, pattern) in file.paths.iter().enumerate() {
                if !is_glob(pattern) || glob_matches_a_file(pattern) {
                    continue;
                }
                warnings.push(ConfigWarning {
                    path: document.path().to_path_buf(),
                    key: format!("sources.{id}.paths[{index}]"),
                    line: document.element_line(&["sources", id, "paths"], index),
                    message: format!("pattern {pattern:?} matches no file"),
                });
            }
        }
        warnings
    }
}

/// The memory the config's fixed buffers take.
struct MemoryBound {
    start_up_bytes: u64,
    outage_bytes: u64,
    /// How the figures are made up, for messages.
    breakdown: String,
}

/// Physical memory of this host, if the kernel says.
fn physical_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf takes an integer name and reads no memory of ours.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let pages = u64::try_from(pages).ok()?;
    let page_bytes = u64::try_from(page_bytes).ok()?;
    pages.checked_mul(page_bytes)
}

/// Whether the pipeline expands `pattern` as a glob (it does when the
/// pattern has a glob character).
fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

fn glob_matches_a_file(pattern: &str) -> bool {
    glob::glob(pattern)
        .is_ok_and(|mut paths| paths.any(|path| path.is_ok_and(|path| path.is_file())))
}

/// The `paths` entry of `source` that names `path` (as written or
/// normalised), if any.
fn followed_by<'source>(
    source: &'source FileSourceConfig,
    path: &Path,
    normalised: &Path,
) -> Option<&'source str> {
    source
        .paths
        .iter()
        .find(|pattern| {
            if is_glob(pattern) {
                // As `glob::glob` expands it: `*` stays within one directory.
                let options = glob::MatchOptions {
                    require_literal_separator: true,
                    ..glob::MatchOptions::new()
                };
                let absolute = normalise(Path::new(pattern.as_str()));
                [Path::new(pattern.as_str()), absolute.as_path()]
                    .into_iter()
                    .filter_map(|pattern| glob::Pattern::new(&pattern.to_string_lossy()).ok())
                    .any(|glob| {
                        glob.matches_path_with(path, options)
                            || glob.matches_path_with(normalised, options)
                    })
            } else {
                normalise(Path::new(pattern.as_str())) == normalised
            }
        })
        .map(String::as_str)
}

/// The `paths` entry of `source` that expands to the very file `path` is
/// (same device and inode: a hard link under another name), if any.
fn followed_as_same_inode<'source>(
    source: &'source FileSourceConfig,
    path: &Path,
) -> Option<&'source str> {
    let written = std::fs::metadata(path).ok()?;
    let identity = (written.dev(), written.ino());
    source
        .paths
        .iter()
        .find(|pattern| {
            glob::glob(pattern).is_ok_and(|mut paths| {
                paths.any(|followed| {
                    followed
                        .ok()
                        .and_then(|followed| std::fs::metadata(followed).ok())
                        .is_some_and(|metadata| (metadata.dev(), metadata.ino()) == identity)
                })
            })
        })
        .map(String::as_str)
}

/// Why a Unix socket could not be created at `path`, if it could not: its
/// directory (created when missing) must be writable, and what is at the
/// path already must be a socket (a stale one is replaced).
fn unix_socket_problem(path: &Path) -> Option<String> {
    if let Ok(metadata) = std::fs::symlink_metadata(path)
        && !metadata.file_type().is_socket()
    {
        return Some(format!(
            "{} exists and is not a socket; the daemon replaces only a stale socket",
            path.display()
        ));
    }
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())?;
    directory_problem(directory)
}

/// Why a file sink could not open `path` for appending, if it could not.
fn check_output_path(path: &Path) -> Result<(), String> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match std::fs::metadata(directory) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("directory {} does not exist", directory.display()));
        }
        Err(error) => {
            return Err(format!("directory {}: {error}", directory.display()));
        }
        Ok(metadata) if !metadata.is_dir() => {
            return Err(format!("{} is not a directory", directory.display()));
        }
        Ok(_) => {}
    }
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {
            Err(format!("{} is a directory, not a file", path.display()))
        }
        // Opening a FIFO without a reader blocks the daemon (signals too);
        // a socket cannot be opened at all.
        Ok(metadata) if metadata.file_type().is_fifo() || metadata.file_type().is_socket() => Err(
            format!("{} is a FIFO or socket, not a file", path.display()),
        ),
        Ok(_) => writable(path)
            .map_err(|error| format!("file {} is not writable: {error}", path.display())),
        Err(_) => writable(directory)
            .map_err(|error| format!("directory {} is not writable: {error}", directory.display())),
    }
}

/// access(2) with W_OK: asks the kernel, which knows about ACLs, read-only
/// mounts and root, rather than guessing from permission bits.
/// Why a directory the daemon creates when needed could not be used, if
/// it could not: what matters is the nearest part of it that exists.
fn directory_problem(dir: &Path) -> Option<String> {
    let existing = dir.ancestors().find(|ancestor| ancestor.exists())?;
    if !existing.is_dir() {
        return Some(format!("{} is not a directory", existing.display()));
    }
    let error = writable(existing).err()?;
    Some(format!(
        "directory {} is not writable: {error}",
        existing.display()
    ))
}

fn writable(path: &Path) -> Result<(), std::io::Error> {
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `name` is a NUL-terminated string that lives across the call;
    // access(2) only reads it.
    let result = unsafe { libc::access(name.as_ptr(), libc::W_OK) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `path` resolved through symbolic links when it exists; otherwise made
/// absolute, its directory resolved when that exists, and `.` and `..`
/// removed by name when not.
fn normalise(path: &Path) -> PathBuf {
    if let Ok(resolved) = path.canonicalize() {
        return resolved;
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name())
        && let Ok(parent) = parent.canonicalize()
    {
        return parent.join(name);
    }
    let mut clean = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: one file has one normal form however it is spelled. Method:
    /// `.`, `..` and a symbolic link, for a file that exists and one that
    /// does not.
    #[test]
    fn normalise_gives_one_name_per_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        for name in ["absent.log", "present.log"] {
            if name == "present.log" {
                std::fs::write(real.join(name), "").expect("write");
            }
            let expected = normalise(&real.join(name));
            for spelling in [
                real.join(".").join(name),
                real.join("..").join("real").join(name),
                link.join(name),
            ] {
                assert_eq!(normalise(&spelling), expected, "{}", spelling.display());
            }
        }
        let missing = dir
            .path()
            .join("no")
            .join("..")
            .join("x")
            .join(".")
            .join("y");
        assert_eq!(
            normalise(&missing),
            normalise(dir.path()).join("x").join("y")
        );
    }

    /// Goal: the memory check sizes an arena as the dispatcher does.
    /// Method: compare with `arena_capacity_bytes` for a few settings.
    #[test]
    fn memory_bound_uses_the_dispatcher_arena_size() {
        let text =
            "[sources.app]\ntype = \"file\"\npaths = [\"/a\"]\n[sinks.out]\ntype = \"null\"\n";
        let mut config = Config::from_toml(text, Path::new("test.toml")).expect("valid");
        for (batch_size, batch_bytes) in [(1, 1), (1000, 1 << 20), (65_536, 64 << 20)] {
            config.dispatcher.batch_size =
                std::num::NonZeroUsize::new(batch_size).expect("not zero");
            config.dispatcher.batch_bytes =
                std::num::NonZeroUsize::new(batch_bytes).expect("not zero");
            let arena_bytes = crate::batch::arena_capacity_bytes(batch_size, batch_bytes) as u64;
            let bound = config.memory_bound().expect("no overflow");
            let retry_arenas = config.retry.max_batches.get() as u64;
            assert_eq!(
                bound.outage_bytes - bound.start_up_bytes,
                retry_arenas * arena_bytes
            );
        }
    }

    /// Goal: each reason a file sink cannot open its path is told apart.
    #[test]
    fn output_path_problems_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, "").expect("write");
        let cases = [
            (dir.path().join("missing").join("out.log"), "does not exist"),
            (file.join("out.log"), "is not a directory"),
            (dir.path().to_path_buf(), "is a directory, not a file"),
        ];
        for (path, reason) in cases {
            let error = check_output_path(&path).expect_err(reason);
            assert!(error.contains(reason), "{error}");
        }
        assert_eq!(check_output_path(&dir.path().join("new.log")), Ok(()));
        assert_eq!(check_output_path(&file), Ok(()));
    }
}
