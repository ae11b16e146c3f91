//! The docker source: the file machinery following the `json-file` logs of
//! the containers a [`ContainerWatch`] selects.
//!
//! Thread: the source's. The watch gives the log paths (each container's
//! `<id>-json.log` and its first rotation `<id>-json.log.1`, so that a
//! restart finds the unread rest of a rotated log); they replace the
//! source's patterns, and everything the file source does for a file
//! (positions, rotation, deletion, the descriptor limit) holds for them.
//! Each chunk read is decoded by the file's [`JsonLines`]; its lines carry
//! the container's labels and their stream, and Docker's time.

use std::path::Path;
use std::time::Instant;

use super::{FileSource, FollowedFile};
use crate::source::docker::lines::{
    DecodeContext, JsonLines, RAW_LINE_BYTES_MAX, StreamFilter, StreamLabels,
};
use crate::source::docker::watch::{Container, ContainerWatch, WatchSettings};
use crate::source::{LineSpan, SourceChunk};

/// The suffix of a container log's first rotation.
const ROTATED_SUFFIX: &str = ".1";

/// What a docker source adds to the file source.
#[derive(Debug)]
pub struct Containers {
    pub watch: ContainerWatch,
    pub streams: StreamFilter,
    scratch: Vec<LineSpan>,
    paths: Vec<String>,
}

/// Settings of a docker source, besides its file settings.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    pub watch: WatchSettings,
    pub streams: StreamFilter,
}

/// A followed container log's decoding state and labels.
#[derive(Debug)]
pub struct DockerFile {
    pub container_id: String,
    pub labels: StreamLabels,
    pub lines: JsonLines,
}

impl Containers {
    pub fn new(
        settings: &DockerSettings,
        metrics: std::sync::Arc<crate::metrics::SourceMetrics>,
    ) -> Self {
        Self {
            watch: ContainerWatch::new(settings.watch.clone(), metrics),
            streams: settings.streams,
            scratch: Vec::with_capacity(crate::limits::CHUNK_LINES_MAX),
            paths: Vec::new(),
        }
    }
}

impl FileSource {
    /// Bytes at which a read's lines are cut: JSON lines of a docker
    /// source are bounded by what Docker writes, not by `max_line_bytes`
    /// (which bounds the joined text).
    pub(super) fn split_bytes(&self) -> usize {
        if self.containers.is_some() {
            RAW_LINE_BYTES_MAX
        } else {
            self.settings.max_line_bytes
        }
    }

    /// Takes what dockerd reported: new paths make a scan due, renamed
    /// containers' files get their new labels. Watches the event stream.
    pub(super) fn poll_containers(&mut self, now: Instant) {
        let Some(containers) = self.containers.as_mut() else {
            return;
        };
        let changed = containers.watch.poll(now);
        if let Some(waiter) = self.waiter.as_mut() {
            waiter.watch_events(containers.watch.events_fd());
        }
        if changed {
            let mut paths = std::mem::take(&mut containers.paths);
            containers.watch.log_paths(&mut paths);
            let rotated: Vec<String> = paths
                .iter()
                .map(|path| format!("{path}{ROTATED_SUFFIX}"))
                .collect();
            paths.extend(rotated);
            self.discovery.set_paths(&paths);
            containers.paths = paths;
        }
        let renamed = containers.watch.take_renamed();
        if changed {
            // At once, not at the next round: a container that lives a
            // few milliseconds (`docker run --rm`) must have its log open
            // before dockerd deletes it.
            self.discover();
        }
        for id in renamed {
            for index in 0..self.files.len() {
                let path = self.files[index].path.clone();
                let Some(docker) = self.files[index].docker.as_ref() else {
                    continue;
                };
                if docker.container_id == id
                    && let Some(file) = self.docker_file(&path)
                {
                    self.files[index].docker = Some(file);
                }
            }
        }
    }

    /// When the next reconnection to dockerd is due, if one is.
    pub(super) fn containers_due(&self) -> Option<Instant> {
        self.containers
            .as_ref()
            .and_then(|containers| containers.watch.next_attempt())
    }

    /// The container whose log (or its first rotation) is at `path`.
    fn container_at<'a>(containers: &'a Containers, path: &Path) -> Option<&'a Container> {
        containers.watch.container_at(path).or_else(|| {
            let text = path.to_str()?;
            let current = text.strip_suffix(ROTATED_SUFFIX)?;
            containers.watch.container_at(Path::new(current))
        })
    }

    /// The labels and decoding state of a container log found at `path`;
    /// `None` for a file source, or a path no container has (any more).
    pub(super) fn docker_file(&self, path: &Path) -> Option<Box<DockerFile>> {
        let containers = self.containers.as_ref()?;
        let container = Self::container_at(containers, path)?;
        let statics = self
            .settings
            .labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()));
        let chosen = container
            .labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()));
        let own = [
            ("source_id", self.settings.id.as_str()),
            ("container_id", container.short_id.as_str()),
            ("container_name", container.name.as_str()),
            ("image", container.image.as_str()),
        ];
        let base: Vec<(&str, &str)> = statics.chain(chosen).chain(own).collect();
        let set = |extra: (&'static str, &'static str)| {
            self.symbols
                .label_set_with_overflow(base.iter().copied().chain([extra]))
        };
        let (stdout, overflow) = set(("stream", "stdout"));
        let (stderr, _) = set(("stream", "stderr"));
        let (undecoded, _) = set(("parse_error", "true"));
        let inline = overflow
            .into_iter()
            .map(|(key, value)| (key, std::sync::Arc::from(value)))
            .collect();
        Some(Box::new(DockerFile {
            container_id: container.id.clone(),
            labels: StreamLabels {
                stdout,
                stderr,
                undecoded,
                inline,
            },
            lines: JsonLines::default(),
        }))
    }

    /// Splits a chunk read from file `index` whose first byte is at
    /// `base_offset` in the file: its lines (decoded, for a container log)
    /// stay in the chunk, the rest becomes the file's carried tail, and
    /// the chunk gets its receipt. Returns the bytes the split lines
    /// covered and how many there were, for sizing the next read.
    pub(super) fn split_read(
        &mut self,
        index: usize,
        chunk: &mut SourceChunk,
        base_offset: u64,
        flush_tail: bool,
    ) -> (usize, usize) {
        let outcome = chunk.split(self.split_bytes(), flush_tail);
        let split_lines = chunk.line_count();
        self.metrics.lines_split.add(outcome.pieces_split);
        let filled = chunk.filled().len();
        let mut carried_from = outcome.consumed;
        let file = &mut self.files[index];
        if let (Some(containers), Some(docker)) = (self.containers.as_mut(), file.docker.as_mut()) {
            let context = DecodeContext {
                labels: &docker.labels,
                streams: containers.streams,
                max_line_bytes: self.settings.max_line_bytes,
                base_offset,
            };
            let lines = &mut docker.lines;
            if let Some(carried) = lines.decode_chunk(chunk, &mut containers.scratch, context) {
                carried_from = carried;
            }
            if flush_tail && carried_from == filled && !lines.flush_joining(chunk, &docker.labels) {
                // No room for them now: the next call hands them on.
                tracing::debug!(source = %self.settings.id, "joined lines wait for the next chunk");
            }
        }
        file.pending
            .extend_from_slice(&chunk.filled()[carried_from..filled]);
        chunk.receipt = Some(file.receipt());
        (outcome.consumed, split_lines)
    }

    /// Moves the counts of the container logs into their containers and
    /// publishes the containers.
    pub(super) fn publish_containers(&mut self) {
        let Some(containers) = self.containers.as_mut() else {
            return;
        };
        let mut undecoded = 0;
        for file in &mut self.files {
            let Some(docker) = file.docker.as_mut() else {
                continue;
            };
            let counts = std::mem::take(&mut docker.lines.collected);
            containers.watch.add_collected(&docker.container_id, counts);
            undecoded += std::mem::take(&mut docker.lines.undecoded);
            self.metrics
                .lines_split
                .add(std::mem::take(&mut docker.lines.split));
        }
        let docker = &self.metrics.docker;
        docker.undecoded.add(undecoded);
        docker.streams_active.set(self.files.len() as u64);
        containers.watch.publish();
    }

    /// Counts a container log found at another followed path: the
    /// `json-file` driver rotated it.
    pub(super) fn note_renamed(&self, file: &FollowedFile) {
        if file.docker.is_some() {
            self.metrics.docker.stream_rotations.add(1);
        }
    }

    /// Whether a file's lines still wait to be joined (its unfinished
    /// line goes out when it is emitted as final).
    pub(super) fn is_joining(file: &FollowedFile) -> bool {
        file.docker
            .as_ref()
            .is_some_and(|docker| docker.lines.is_joining())
    }
}
