//! The source stages: globs expanded into streams (one per file, with its
//! label set), and one thread per `[sources.<id>]` with its chunk pool and
//! rings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rtrb::RingBuffer;

use crate::batch::StreamId;
use crate::config::{Config, FileSourceConfig, SourceConfig};
use crate::dispatch::SourceEnd;
use crate::labels::{LabelSet, SymbolTable, SymbolTableBuilder};
use crate::metrics::{FileMetrics, SourceMetrics};
use crate::pipeline::{PipelineError, Wiring};
use crate::source::SourceChunk;
use crate::source::file::{FileSource, FileSourceSettings, SourceLinks};
use crate::wake::Waker;

/// One source's files before its thread starts.
#[derive(Debug)]
pub(super) struct PlannedSource {
    id: String,
    settings: FileSourceSettings,
    files: Vec<(PathBuf, StreamId)>,
}

/// Every source planned: the streams they read and the symbols of the
/// streams' labels, frozen.
#[derive(Debug)]
pub(super) struct PlannedSources {
    pub sources: Vec<PlannedSource>,
    pub symbols: Arc<SymbolTable>,
    /// Label set of each stream, indexed by `StreamId`.
    pub streams: Arc<[LabelSet]>,
}

/// Expands every source's paths into streams. Sources are planned, built
/// and handed to the dispatcher in the order of `Config::sources`: a
/// source's position is the index its entries carry.
pub(super) fn plan(config: &Config) -> Result<PlannedSources, PipelineError> {
    let mut symbols = SymbolTableBuilder::new();
    let mut streams: Vec<LabelSet> = Vec::new();
    let mut sources = Vec::new();
    for (id, source) in &config.sources {
        let SourceConfig::File(file_config) = source;
        sources.push(plan_file_source(
            id,
            file_config,
            &mut symbols,
            &mut streams,
        )?);
    }
    Ok(PlannedSources {
        sources,
        symbols: symbols.freeze(),
        streams: streams.into(),
    })
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

/// Builds every planned source: its chunk pool and rings.
pub(super) fn build(
    planned: Vec<PlannedSource>,
    config: &Config,
    wiring: &Wiring,
) -> Vec<SourceStage> {
    let chunk_count = config.dispatcher.source_chunks();
    planned
        .into_iter()
        .map(|plan| build_one(plan, chunk_count, wiring))
        .collect()
}

fn build_one(plan: PlannedSource, chunk_count: usize, wiring: &Wiring) -> SourceStage {
    let (chunks_producer, chunks_consumer) = RingBuffer::new(chunk_count);
    let (returns_producer, returns_consumer) = RingBuffer::new(chunk_count);
    let waker = Waker::new();
    let metrics = Arc::new(SourceMetrics {
        id: plan.id.clone(),
        source_type: "file",
        files: plan
            .files
            .iter()
            .map(|(path, _)| FileMetrics {
                path: path.to_string_lossy().into_owned(),
                ..FileMetrics::default()
            })
            .collect(),
        ..SourceMetrics::default()
    });
    let end = SourceEnd::new(
        chunks_consumer,
        returns_producer,
        waker.clone(),
        Arc::clone(&metrics),
    );
    let links = SourceLinks {
        chunks: chunks_producer,
        returns: returns_consumer,
        dispatcher: wiring.dispatcher.clone(),
        own: waker.clone(),
    };
    let pool = (0..chunk_count).map(|_| SourceChunk::new()).collect();
    let source = FileSource::new(
        plan.settings,
        plan.files,
        links,
        pool,
        Arc::clone(&wiring.stop),
        Arc::clone(&metrics),
    );
    SourceStage {
        id: plan.id,
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

/// Expands a file source's paths and registers one stream per file.
fn plan_file_source(
    id: &str,
    config: &FileSourceConfig,
    symbols: &mut SymbolTableBuilder,
    streams: &mut Vec<LabelSet>,
) -> Result<PlannedSource, PipelineError> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for pattern in &config.paths {
        expand_pattern(id, pattern, &mut paths)?;
    }
    paths.sort();
    paths.dedup();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let file_label = path.to_string_lossy().into_owned();
        let pairs = config
            .labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .chain([("source_id", id), ("file", file_label.as_str())]);
        let stream = StreamId::try_from(streams.len()).expect("fewer than 4 billion files");
        streams.push(symbols.label_set(pairs));
        files.push((path, stream));
    }
    Ok(PlannedSource {
        id: id.to_string(),
        settings: FileSourceSettings {
            start_at: config.start_at,
            max_line_bytes: config.max_line_bytes,
            poll_interval: Duration::from_millis(config.poll_interval_ms.get()),
            exit_on_eof: config.exit_on_eof,
        },
        files,
    })
}

/// A pattern with glob characters is expanded now; a plain path is kept
/// even if the file does not exist yet (it is opened when it appears).
fn expand_pattern(id: &str, pattern: &str, paths: &mut Vec<PathBuf>) -> Result<(), PipelineError> {
    if !pattern.contains(['*', '?', '[']) {
        paths.push(PathBuf::from(pattern));
        return Ok(());
    }
    let matches = glob::glob(pattern).map_err(|error| PipelineError::Glob {
        source_id: id.to_string(),
        pattern: pattern.to_string(),
        reason: error.to_string(),
    })?;
    let before = paths.len();
    paths.extend(matches.filter_map(Result::ok).filter(|path| path.is_file()));
    if paths.len() == before {
        // Config::load already warned, naming the key and its line.
        tracing::debug!(source = id, pattern, "glob matches no file");
    }
    Ok(())
}
