//! The source stages: one thread per `[sources.<id>]` with its chunk pool
//! and rings, and the symbol table their labels are interned into.

use std::sync::Arc;
use std::time::Duration;

use rtrb::RingBuffer;

use crate::config::{Config, FileSourceConfig, SourceConfig};
use crate::dispatch::SourceEnd;
use crate::labels::{SymbolLimits, SymbolTable};
use crate::metrics::SourceMetrics;
use crate::pipeline::{PipelineError, Wiring};
use crate::source::file::{FileSource, FileSourceSettings, PositionSettings, SourceLinks};
use crate::source::{COMMITS_RING_CAPACITY, SourceChunk};
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
        let SourceConfig::File(file) = source;
        for key in file.labels.keys() {
            let _ = table.intern(key);
        }
    }
    for key in ["source_id", "file"] {
        let _ = table.intern(key);
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
    pub source: Option<FileSource>,
    pub metrics: Arc<SourceMetrics>,
    pub waker: Waker,
}

/// Builds every source, in the order of `Config::sources`: a source's
/// position is the index its entries carry.
pub(super) fn build(
    config: &Config,
    symbols: &Arc<SymbolTable>,
    wiring: &Wiring,
) -> Vec<SourceStage> {
    let chunk_count = config.dispatcher.source_chunks();
    config
        .sources
        .iter()
        .map(|(id, source)| {
            let SourceConfig::File(file) = source;
            let settings = file_settings(id, file, config);
            build_one(settings, chunk_count, symbols, wiring)
        })
        .collect()
}

fn build_one(
    settings: FileSourceSettings,
    chunk_count: usize,
    symbols: &Arc<SymbolTable>,
    wiring: &Wiring,
) -> SourceStage {
    let (chunks_producer, chunks_consumer) = RingBuffer::new(chunk_count);
    let (returns_producer, returns_consumer) = RingBuffer::new(chunk_count);
    let (commits_producer, commits_consumer) = RingBuffer::new(COMMITS_RING_CAPACITY);
    let waker = Waker::new();
    let metrics = Arc::new(SourceMetrics {
        id: settings.id.clone(),
        source_type: "file",
        ..SourceMetrics::default()
    });
    let end = SourceEnd::new(
        chunks_consumer,
        returns_producer,
        commits_producer,
        waker.clone(),
        Arc::clone(&metrics),
    );
    let links = SourceLinks {
        chunks: Some(chunks_producer),
        returns: returns_consumer,
        commits: commits_consumer,
        dispatcher: wiring.dispatcher.clone(),
        own: waker.clone(),
    };
    let pool = (0..chunk_count).map(|_| SourceChunk::new()).collect();
    let id = settings.id.clone();
    let source = FileSource::new(
        settings,
        Arc::clone(symbols),
        links,
        pool,
        Arc::clone(&wiring.stop),
        Arc::clone(&metrics),
    );
    SourceStage {
        id,
        end: Some(end),
        source: Some(source),
        metrics,
        waker,
    }
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

fn file_settings(id: &str, config: &FileSourceConfig, whole: &Config) -> FileSourceSettings {
    FileSourceSettings {
        id: id.to_string(),
        paths: config.paths.clone(),
        exclude: config.exclude.clone(),
        labels: config
            .labels
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
        start_at: config.start_at,
        max_line_bytes: config.max_line_bytes,
        poll_interval: Duration::from_millis(config.poll_interval_ms.get()),
        glob_interval: Duration::from_millis(config.glob_interval_ms.get()),
        max_files: config.max_files.get(),
        rotate_wait: Duration::from_millis(config.rotate_wait_ms.get()),
        exit_on_eof: config.exit_on_eof,
        positions: PositionSettings {
            data_dir: whole.daemon.data_dir.clone(),
            interval: Duration::from_millis(whole.daemon.positions_interval_ms.get()),
            forget_after: Duration::from_millis(whole.daemon.positions_forget_after_ms.get()),
        },
    }
}
