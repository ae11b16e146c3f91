//! Grafana Loki: batches pushed as streams, over HTTP, from the sink's
//! own thread.
//!
//! * [`config`]: the `[sinks.<id>] type = "loki"` keys;
//! * [`streams`]: which stream an entry belongs to, and the time it is
//!   sent with;
//! * [`request`]: the push bodies (protobuf with snappy, or JSON);
//! * [`client`]: the HTTP client (`ureq`, rustls);
//! * [`response`]: what an answer means;
//! * [`sink`]: the thread that ties them together.

pub mod client;
pub mod config;
pub mod request;
pub mod response;
pub mod sink;
pub mod streams;

use std::sync::Arc;
use std::time::Duration;

use crate::sink::{BuiltSink, SinkBuildError, SinkContext, SinkHealth, SinkKind};
use config::LokiSinkConfig;
use sink::{LokiSink, LokiSinkOptions};
use streams::StreamTable;

impl SinkKind for LokiSinkConfig {
    fn type_name(&self) -> &'static str {
        "loki"
    }

    fn check(&self) -> Result<(), (String, String)> {
        self.problems()
    }

    fn keeps_sent_timestamps(&self) -> bool {
        true
    }

    fn build(&self, context: SinkContext) -> Result<BuiltSink, SinkBuildError> {
        let client = client::LokiClient::new(&context.id, self)?;
        let static_labels: Vec<(String, String)> = self
            .static_labels
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let options = LokiSinkOptions {
            id: context.id.clone(),
            format: self.format,
            encoding: self.encoding,
            max_request_bytes: self.max_request_bytes.get(),
            max_entry_age: Duration::from_millis(self.max_entry_age_ms.get()),
            old_entries: self.old_entries,
            probe_interval: Duration::from_millis(self.probe_interval_ms.get()),
            request_timeout: Duration::from_millis(self.request_timeout_ms.get()),
            slots: context.slots,
            batch_size: context.batch_size,
        };
        let sink = LokiSink::new(
            options,
            client,
            StreamTable::new(&self.labels, &static_labels),
            context.symbols,
            context.failures,
        );
        let loki_metrics = sink.metrics();
        let metrics = context.metrics;
        Ok(BuiltSink {
            health: Arc::clone(&loki_metrics) as Arc<dyn SinkHealth>,
            kafka: None,
            loki: Some(loki_metrics),
            run: Box::new(move |links| sink.run(links, metrics)),
        })
    }
}
