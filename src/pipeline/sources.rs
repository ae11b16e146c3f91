//! The source stages: one thread per `[sources.<id>]` with its chunk pool
//! and rings, and the symbol table their labels are interned into.

use std::sync::Arc;
use std::time::Duration;

use rtrb::RingBuffer;

use crate::config::{
    Config, DockerSourceConfig, FileSourceConfig, SourceConfig, StdinSourceConfig,
    SyslogSourceConfig,
};
use crate::dispatch::SourceEnd;
use crate::handover::Handover;
use crate::labels::{SymbolLimits, SymbolTable};
use crate::metrics::SourceMetrics;
use crate::pipeline::{PipelineError, Wiring};
use crate::source::docker::lines::StreamFilter;
use crate::source::docker::watch::{ContainerWatch, WatchSettings};
use crate::source::file::{DockerSettings, FileSource, FileSourceSettings, PositionSettings};
use crate::source::stdin::{StdinSettings, StdinSource};
use crate::source::syslog::{SyslogSettings, SyslogSource};
use crate::source::{COMMITS_RING_CAPACITY, SourceChunk, SourceLinks};
use crate::wake::Waker;

/// The table every label is interned into, bounded by `[daemon]`.
pub(super) fn symbol_table(config: &Config) -> Arc<SymbolTable> {
    let table = SymbolTable::new(SymbolLimits {
        symbols_max: config.daemon.label_symbols_max.get(),
        bytes_max: config.daemon.label_bytes_max.get(),
    });
    // Label keys are few and known now; interning them first keeps them
    // within the bounds whatever values arrive later.
    for source in config.sources.values() {
        for key in source.labels().keys().map(String::as_str) {
            let _ = table.intern(key);
        }
        for key in source.reserved_labels() {
            let _ = table.intern(key);
        }
        if let SourceConfig::Docker(_) = source {
            for value in ["stdout", "stderr", "true"] {
                let _ = table.intern(value);
            }
        }
    }
    Arc::new(table)
}

/// One source, built and not yet started.
#[derive(Debug)]
pub(super) struct SourceStage {
    pub id: String,
    /// The dispatcher's end of the rings; taken when the dispatcher is built.
    pub end: Option<SourceEnd>,
    /// The thread's body; taken when the thread starts.
    pub source: Option<SourceThread>,
    pub metrics: Arc<SourceMetrics>,
    pub waker: Waker,
}

/// The body of a source thread, of its kind.
#[derive(Debug)]
pub(super) enum SourceThread {
    File(Box<FileSource>),
    Syslog(Box<SyslogSource>),
    Stdin(Box<StdinSource>),
}

impl SourceThread {
    fn run(self) {
        match self {
            SourceThread::File(source) => source.run(),
            SourceThread::Syslog(source) => source.run(),
            SourceThread::Stdin(source) => source.run(),
        }
    }
}

/// Builds every source, in the order of `Config::sources`: a source's
/// position is the index its entries carry. A syslog source binds its
/// sockets here, so that an address in use stops the start.
pub(super) fn build(
    config: &Config,
    symbols: &Arc<SymbolTable>,
    wiring: &Wiring,
    handover: &mut Handover,
) -> Result<Vec<SourceStage>, PipelineError> {
    let mut stages = Vec::with_capacity(config.sources.len());
    for (id, source) in &config.sources {
        let built = BuildContext {
            whole: config,
            symbols,
            wiring,
        };
        stages.push(build_one(id, source, &built, handover)?);
    }
    Ok(stages)
}

/// What every source is built with.
struct BuildContext<'a> {
    whole: &'a Config,
    symbols: &'a Arc<SymbolTable>,
    wiring: &'a Wiring,
}

fn build_one(
    id: &str,
    config: &SourceConfig,
    context: &BuildContext<'_>,
    handover: &mut Handover,
) -> Result<SourceStage, PipelineError> {
    let BuildContext {
        whole,
        symbols,
        wiring,
    } = *context;
    let chunk_count = whole.dispatcher.source_chunks();
    let (chunks_producer, chunks_consumer) = RingBuffer::new(chunk_count);
    let (returns_producer, returns_consumer) = RingBuffer::new(chunk_count);
    let (commits_producer, commits_consumer) = RingBuffer::new(COMMITS_RING_CAPACITY);
    let waker = Waker::new();
    let metrics = Arc::new(SourceMetrics {
        id: id.to_string(),
        source_type: config.type_name(),
        ..SourceMetrics::default()
    });
    let returns_wanted = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let end = SourceEnd::new(
        chunks_consumer,
        returns_producer,
        commits_producer,
        waker.clone(),
        Arc::clone(&returns_wanted),
        Arc::clone(&metrics),
    );
    let links = SourceLinks {
        chunks: Some(chunks_producer),
        returns: returns_consumer,
        commits: commits_consumer,
        dispatcher: wiring.dispatcher.clone(),
        own: waker.clone(),
        returns_wanted,
    };
    let pool = (0..chunk_count).map(|_| SourceChunk::new()).collect();
    let stop = Arc::clone(&wiring.stop);
    let source_metrics = Arc::clone(&metrics);
    let source = match config {
        SourceConfig::File(file) => SourceThread::File(Box::new(FileSource::new(
            file_settings(id, file, whole),
            Arc::clone(symbols),
            links,
            pool,
            stop,
            source_metrics,
        ))),
        SourceConfig::Syslog(syslog) => SourceThread::Syslog(Box::new(SyslogSource::bind(
            syslog_settings(id, syslog),
            Arc::clone(symbols),
            links,
            pool,
            stop,
            source_metrics,
            handover,
        )?)),
        SourceConfig::Docker(docker) => {
            ContainerWatch::check_access(&docker.socket, docker.containers_root.as_deref())?;
            let settings = docker_settings(id, docker, whole);
            SourceThread::File(Box::new(FileSource::new(
                settings,
                Arc::clone(symbols),
                links,
                pool,
                stop,
                source_metrics,
            )))
        }
        SourceConfig::Stdin(stdin) => SourceThread::Stdin(Box::new(StdinSource::new(
            stdin_settings(id, stdin),
            symbols,
            links,
            pool,
            stop,
            source_metrics,
        ))),
    };
    Ok(SourceStage {
        id: id.to_string(),
        end: Some(end),
        source: Some(source),
        metrics,
        waker,
    })
}

/// Starts every source thread.
pub(super) fn start(stages: &mut [SourceStage], wiring: &mut Wiring) -> Result<(), PipelineError> {
    for stage in stages {
        let source = stage.source.take().expect("a source starts once");
        wiring.spawn_pinned(&format!("source-{}", stage.id), "source", move || {
            source.run()
        })?;
    }
    Ok(())
}

fn static_labels(labels: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn syslog_settings(id: &str, config: &SyslogSourceConfig) -> SyslogSettings {
    SyslogSettings {
        id: id.to_string(),
        udp: config.udp,
        tcp: config.tcp,
        unix: config.unix.clone(),
        unix_mode: config.unix_mode,
        max_message_bytes: config.max_message_bytes,
        max_connections: config.max_connections.get(),
        idle_timeout: Duration::from_millis(config.idle_timeout_ms.get()),
        recv_buffer_bytes: config.recv_buffer_bytes.map(std::num::NonZeroUsize::get),
        structured_data: config.structured_data,
        timezone: config.timezone.clone(),
        labels: static_labels(&config.labels),
    }
}

fn stdin_settings(id: &str, config: &StdinSourceConfig) -> StdinSettings {
    StdinSettings {
        id: id.to_string(),
        labels: static_labels(&config.labels),
        max_line_bytes: config.max_line_bytes,
    }
}

/// Three fifths of the latency target, at most the poll interval: a line
/// waits in its file up to this long, then a batch is sealed when the read
/// round ends and Kafka lingers a fifth of the target, which keeps the
/// lines within the target; the writes of that time are read together, at
/// one wake-up per round. (Measured at 50,000 lines/s, 5 ms target, see
/// docs/PERFORMANCE.md: a fifth read at half the latency for twice the
/// CPU.)
fn write_wait(poll_interval_ms: u64, whole: &Config) -> Duration {
    let target = Duration::from_millis(whole.dispatcher.latency_target_ms.get());
    (target * 3 / 5).min(Duration::from_millis(poll_interval_ms))
}

fn position_settings(whole: &Config) -> PositionSettings {
    PositionSettings {
        data_dir: whole.daemon.data_dir.clone(),
        interval: Duration::from_millis(whole.daemon.positions_interval_ms.get()),
        forget_after: Duration::from_millis(whole.daemon.positions_forget_after_ms.get()),
    }
}

/// A docker source is a file source whose files are the container logs
/// its watch finds.
fn docker_settings(id: &str, config: &DockerSourceConfig, whole: &Config) -> FileSourceSettings {
    // Validated with the config.
    let globs = |patterns: &[String]| {
        patterns
            .iter()
            .filter_map(|pattern| glob::Pattern::new(pattern).ok())
            .collect()
    };
    let takes = |stream: &str| config.streams.iter().any(|taken| taken == stream);
    let watch = WatchSettings {
        id: id.to_string(),
        socket: config.socket.clone(),
        include: globs(&config.include_containers),
        exclude: globs(&config.exclude_containers),
        include_labels: config.label_selectors(),
        container_labels: config.container_labels.clone(),
        containers_root: config.containers_root.clone(),
    };
    FileSourceSettings {
        id: id.to_string(),
        paths: Vec::new(),
        exclude: Vec::new(),
        labels: static_labels(&config.labels),
        start_at: config.start_at,
        max_line_bytes: config.max_line_bytes,
        poll_interval: Duration::from_millis(config.poll_interval_ms.get()),
        write_wait: write_wait(config.poll_interval_ms.get(), whole),
        // A docker source has no keys for these: the file source's defaults.
        glob_interval: Duration::from_millis(crate::config::default_glob_interval_ms().get()),
        max_files: config.max_files.get(),
        rotate_wait: Duration::from_millis(crate::config::default_rotate_wait_ms().get()),
        exit_on_eof: false,
        positions: position_settings(whole),
        docker: Some(DockerSettings {
            watch,
            streams: StreamFilter {
                stdout: takes("stdout"),
                stderr: takes("stderr"),
            },
        }),
    }
}

fn file_settings(id: &str, config: &FileSourceConfig, whole: &Config) -> FileSourceSettings {
    FileSourceSettings {
        id: id.to_string(),
        paths: config.paths.clone(),
        exclude: config.exclude.clone(),
        labels: static_labels(&config.labels),
        start_at: config.start_at,
        max_line_bytes: config.max_line_bytes,
        poll_interval: Duration::from_millis(config.poll_interval_ms.get()),
        write_wait: write_wait(config.poll_interval_ms.get(), whole),
        glob_interval: Duration::from_millis(config.glob_interval_ms.get()),
        max_files: config.max_files.get(),
        rotate_wait: Duration::from_millis(config.rotate_wait_ms.get()),
        exit_on_eof: config.exit_on_eof,
        positions: position_settings(whole),
        docker: None,
    }
}
