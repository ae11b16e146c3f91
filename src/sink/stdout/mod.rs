//! `type = "stdout"`: writes encoded batches to standard output, one
//! `write_all` per batch.

use std::io::Stdout;
use std::sync::Arc;

use serde::Deserialize;

use crate::labels::SymbolTable;
use crate::sink::encode::Encoding;
use crate::sink::synchronous::WriterSink;

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
