//! `type = "stdout"`: writes encoded batches to standard output, one
//! `write_all` per batch.

use std::io::Stdout;
use std::sync::Arc;

use serde::Deserialize;

use crate::labels::SymbolTable;
use crate::sink::encode::Encoding;
use crate::sink::synchronous::{WriterSink, built_writer};
use crate::sink::{BuiltSink, SinkBuildError, SinkContext, SinkKind};

/// `type = "stdout"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    #[serde(default)]
    pub encoding: Encoding,
}

pub fn stdout_sink(
    id: &str,
    encoding: Encoding,
    symbols: Arc<SymbolTable>,
    buffer_bytes: usize,
) -> WriterSink<Stdout> {
    WriterSink::new(
        id,
        "standard output".to_string(),
        std::io::stdout(),
        encoding,
        symbols,
        buffer_bytes,
    )
}

impl SinkKind for StdoutSinkConfig {
    fn type_name(&self) -> &'static str {
        "stdout"
    }

    fn build(&self, context: SinkContext) -> Result<BuiltSink, SinkBuildError> {
        let sink = stdout_sink(
            &context.id,
            self.encoding,
            Arc::clone(&context.symbols),
            context.encode_buffer_bytes(),
        );
        Ok(built_writer(Box::new(sink), context))
    }
}
