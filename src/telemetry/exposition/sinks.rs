//! Families of line outcomes and delivery attempts at the sinks.
//!
//! A line has one outcome per sink (delivered, or handed to the DLQ),
//! counted once; attempts have their own family, so that a line retried
//! three times is one outcome and three attempts.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::metrics::SinkMetrics;
use crate::telemetry::family::{Exposition, Family};

pub static LOGS_SENT: Family = Family::counter(
    "log_capturer_logs_sent_total",
    "Lines delivered (success) or handed to the DLQ (error), once per line and sink, summed per sink type.",
);
pub static SINK_LOGS: Family = Family::counter(
    "log_capturer_sink_logs_total",
    "Lines delivered (success) or handed to the DLQ (error), once per line, per sink.",
);
pub static DELIVERY_ATTEMPTS: Family = Family::counter(
    "log_capturer_sink_delivery_attempts_total",
    "Line deliveries tried per sink, by result; a line retried three times is three attempts.",
);

pub fn render(out: &mut Exposition, sinks: &[Arc<SinkMetrics>]) {
    render_sent_by_type(out, sinks);
    SINK_LOGS.header(out);
    for sink in sinks {
        for (status, value) in [
            ("success", sink.lines_sent.get()),
            ("error", sink.lines_failed.get()),
        ] {
            let labels = [
                ("sink", sink.id.as_str()),
                ("sink_type", sink.sink_type),
                ("status", status),
            ];
            SINK_LOGS.sample(out, &labels, value);
        }
    }
    DELIVERY_ATTEMPTS.header(out);
    for sink in sinks {
        for (result, value) in [
            ("success", sink.lines_sent.get()),
            ("failure", sink.line_attempts_failed.get()),
        ] {
            let labels = [("sink", sink.id.as_str()), ("result", result)];
            DELIVERY_ATTEMPTS.sample(out, &labels, value);
        }
    }
}

/// The reference family sums outcomes per sink type, in (type, status)
/// order.
fn render_sent_by_type(out: &mut Exposition, sinks: &[Arc<SinkMetrics>]) {
    let mut by_type: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for sink in sinks {
        *by_type.entry((sink.sink_type, "success")).or_default() += sink.lines_sent.get();
        *by_type.entry((sink.sink_type, "error")).or_default() += sink.lines_failed.get();
    }
    LOGS_SENT.header(out);
    for ((sink_type, status), value) in by_type {
        LOGS_SENT.sample(out, &[("sink_type", sink_type), ("status", status)], value);
    }
}
