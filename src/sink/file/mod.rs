//! `type = "file"`: appends encoded batches to one file.
//!
//! On request (SIGHUP, sent by logrotate's `postrotate`) a file sink opens
//! its path again, so that an output file moved away by logrotate is
//! replaced by a new one. The new file is opened before the old one is
//! closed: if it cannot be opened, writing goes on to the old file and the
//! error is reported.
//!
//! A batch is encoded into one reused buffer and written with one
//! `write_all`, so a batch costs one system call. The buffer starts at the
//! size of a full batch; a batch with a very long line grows it, and it is
//! shrunk back afterwards so that one long line does not pin memory.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::SealedBatch;
use serde::{Deserialize, Deserializer};

use crate::labels::SymbolTable;
use crate::sink::encode::Encoding;
use crate::sink::link::Selection;
use crate::sink::synchronous::{Sink, SinkError, WriterSink, built_writer};
use crate::sink::{BuiltSink, SinkBuildError, SinkContext, SinkKind};

/// `type = "file"`: append to one file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    #[serde(deserialize_with = "non_empty_path")]
    pub path: PathBuf,
    #[serde(default)]
    pub encoding: Encoding,
}

fn non_empty_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(deserializer)?;
    if path.as_os_str().is_empty() {
        return Err(serde::de::Error::custom("is an empty string"));
    }
    Ok(path)
}

/// A [`WriterSink`] on a file that can be opened again at its path.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    writer: WriterSink<File>,
}

impl Sink for FileSink {
    /// A batch is written whole or not at all: after a failed write (a full
    /// disk) the file is cut back to its length before the batch, so that
    /// the retry or the DLQ, which take the whole batch, do not add
    /// duplicates and a torn line to what was written.
    fn deliver(&mut self, batch: &SealedBatch, selection: Selection<'_>) -> Result<(), SinkError> {
        let length_before = self.writer.writer.metadata().map(|metadata| metadata.len());
        let delivered = self.writer.deliver(batch, selection);
        if delivered.is_err()
            && let Ok(length) = length_before
            && let Err(error) = self.writer.writer.set_len(length)
        {
            tracing::error!(sink = %self.writer.id, file = %self.path.display(), %error, "cannot cut a partly written batch off the output; it may hold a torn line");
        }
        delivered
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush()
    }

    fn bytes_written_last(&self) -> usize {
        self.writer.bytes_written_last()
    }

    /// Flushes the open file, then appends to the file now at the path.
    fn reopen(&mut self) -> Result<(), SinkError> {
        let file = open_append(&self.writer.id, &self.path)?;
        let flushed = self.writer.flush();
        self.writer.writer = file;
        flushed
    }

    fn describe_output(&self) -> Option<&Path> {
        Some(&self.path)
    }
}

fn open_append(id: &str, path: &Path) -> Result<File, SinkError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| SinkError::Open {
            sink: id.to_string(),
            target: path.display().to_string(),
            source,
        })
}

/// Opens `path` for appending, creating it if needed.
pub fn open_file_sink(
    id: &str,
    path: &Path,
    encoding: Encoding,
    symbols: Arc<SymbolTable>,
    buffer_bytes: usize,
) -> Result<FileSink, SinkError> {
    let file = open_append(id, path)?;
    Ok(FileSink {
        path: path.to_path_buf(),
        writer: WriterSink::new(
            id,
            path.display().to_string(),
            file,
            encoding,
            symbols,
            buffer_bytes,
        ),
    })
}

impl SinkKind for FileSinkConfig {
    fn type_name(&self) -> &'static str {
        "file"
    }

    fn build(&self, context: SinkContext) -> Result<BuiltSink, SinkBuildError> {
        let sink = open_file_sink(
            &context.id,
            &self.path,
            self.encoding,
            Arc::clone(&context.symbols),
            context.encode_buffer_bytes(),
        )?;
        Ok(built_writer(Box::new(sink), context))
    }
}
