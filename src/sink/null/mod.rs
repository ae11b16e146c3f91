//! `type = "null"`: accepts every batch and drops it. For benchmarks: it
//! measures everything but the output.

use serde::Deserialize;

use crate::batch::SealedBatch;
use crate::sink::link::Selection;
use crate::sink::synchronous::{Sink, SinkError, built_writer};
use crate::sink::{BuiltSink, SinkBuildError, SinkContext, SinkKind};

/// `type = "null"`: count and drop, for benchmarks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullSinkConfig {}

#[derive(Debug, Default)]
pub struct NullSink {
    bytes_last: usize,
}

impl Sink for NullSink {
    fn deliver(&mut self, batch: &SealedBatch, selection: Selection<'_>) -> Result<(), SinkError> {
        self.bytes_last = match selection {
            Selection::All => batch.bytes(),
            _ => batch
                .entries()
                .iter()
                .enumerate()
                .filter(|(index, entry)| selection.includes(batch.slot(), *index, entry))
                .map(|(_, entry)| entry.line.len())
                .sum(),
        };
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn bytes_written_last(&self) -> usize {
        self.bytes_last
    }
}

impl SinkKind for NullSinkConfig {
    fn type_name(&self) -> &'static str {
        "null"
    }

    fn build(&self, context: SinkContext) -> Result<BuiltSink, SinkBuildError> {
        Ok(built_writer(Box::<NullSink>::default(), context))
    }
}
