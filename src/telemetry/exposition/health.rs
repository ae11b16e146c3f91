//! Families of errors and of the health of each stage.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::metrics::StageHealth;
use crate::telemetry::PipelineMetrics;
use crate::telemetry::family::{Exposition, Family};

pub static ERRORS: Family = Family::counter(
    "log_capturer_errors_total",
    "Errors, per component and type.",
);
pub static COMPONENT_HEALTH: Family = Family::gauge(
    "log_capturer_component_health",
    "1 when a component is healthy (thread running, breaker closed).",
);

/// Read errors per source, failed batch attempts per sink, and what a
/// syslog source counts (`component="syslog"`, by `source_id`): datagrams
/// dropped with no chunk free (`queue_full`), messages delivered raw
/// (`parse_error`), cut at `max_message_bytes` (`truncated`), TCP frames
/// with a malformed octet count (`framing`), connections refused past
/// `max_connections`, the kernel's UDP drops (`kernel_drop`), empty
/// datagrams (`empty`), and TCP bytes discarded unread at a stop
/// (`unread_bytes_at_stop`, in bytes).
pub fn render_errors(out: &mut Exposition, metrics: &PipelineMetrics) {
    ERRORS.header(out);
    for source in &metrics.sources {
        let component = format!("source:{}", source.id);
        let labels = [("component", component.as_str()), ("error_type", "read")];
        ERRORS.sample(out, &labels, source.read_errors.get());
    }
    for source in &metrics.sources {
        if source.source_type != "syslog" {
            continue;
        }
        let counts = &source.syslog;
        for (error_type, value) in [
            ("queue_full", counts.queue_full.get()),
            ("parse_error", counts.parse_errors.get()),
            ("truncated", counts.truncated.get()),
            ("framing", counts.framing_errors.get()),
            ("connection_refused", counts.connections_refused.get()),
            ("kernel_drop", counts.kernel_drops.get()),
            ("empty", counts.empty.get()),
            ("unread_bytes_at_stop", counts.unread_at_stop_bytes.get()),
        ] {
            let labels = [
                ("component", "syslog"),
                ("error_type", error_type),
                ("source_id", source.id.as_str()),
            ];
            ERRORS.sample(out, &labels, value);
        }
    }
    for sink in &metrics.sinks {
        let component = format!("sink:{}", sink.id);
        let labels = [
            ("component", component.as_str()),
            ("error_type", "batch_failed"),
        ];
        ERRORS.sample(out, &labels, sink.batches_failed.get());
    }
}

/// 1 per stage unless `unhealthy` (stage name to reason) names it.
pub fn render_component_health(
    out: &mut Exposition,
    stages: &[Arc<StageHealth>],
    unhealthy: &BTreeMap<String, String>,
) {
    COMPONENT_HEALTH.header(out);
    for stage in stages {
        let healthy = u64::from(!unhealthy.contains_key(&stage.name));
        let labels = [
            ("component_type", stage.stage_type),
            ("component_name", stage.name.as_str()),
        ];
        COMPONENT_HEALTH.sample(out, &labels, healthy);
    }
}
