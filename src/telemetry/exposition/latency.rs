//! Families of latency: histograms since start and percentiles of the
//! last window.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::telemetry::SinkLatency;
use crate::telemetry::family::{Exposition, Family};

pub static PROCESSING_DURATION: Family = Family::histogram(
    "log_capturer_processing_duration_seconds",
    "Time from a line being read to its batch being reported by a sink.",
);
pub static SINK_SEND_DURATION: Family = Family::histogram(
    "log_capturer_sink_send_duration_seconds",
    "Time from a batch being sealed to a sink's report, per sink type.",
);
pub static LATENCY_PERCENTILES: Family = Family::gauge(
    "log_capturer_latency_seconds",
    "Read-to-ack latency percentiles per sink over the last 10-second window.",
);

/// Percentiles of the last window and their `percentile` labels.
const PERCENTILES: [(f64, &str); 3] = [(0.5, "50"), (0.99, "99"), (0.999, "99.9")];

pub fn render(out: &mut Exposition, sinks: &[SinkLatency]) {
    PROCESSING_DURATION.header(out);
    for sink in sinks {
        let component = format!("sink:{}", sink.sink_id);
        let labels = [
            ("component", component.as_str()),
            ("operation", "read_to_ack"),
        ];
        PROCESSING_DURATION.sample(out, &labels, &sink.read_to_ack.total);
    }
    SINK_SEND_DURATION.header(out);
    for (sink_type, histogram) in &seal_to_ack_by_type(sinks) {
        SINK_SEND_DURATION.sample(out, &[("sink_type", sink_type)], histogram);
    }
    render_percentiles(out, sinks);
}

/// The reference family merges the sinks of one type.
fn seal_to_ack_by_type(sinks: &[SinkLatency]) -> BTreeMap<&'static str, Histogram<u64>> {
    let mut by_type: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    for sink in sinks {
        match by_type.get_mut(sink.sink_type) {
            Some(merged) => merged.add(&sink.seal_to_ack.total).expect("same bounds"),
            None => {
                by_type.insert(sink.sink_type, sink.seal_to_ack.total.clone());
            }
        }
    }
    by_type
}

/// A sink without traffic in the last window has no series.
fn render_percentiles(out: &mut Exposition, sinks: &[SinkLatency]) {
    LATENCY_PERCENTILES.header(out);
    for sink in sinks {
        let window = &sink.read_to_ack.last_window;
        if window.is_empty() {
            continue;
        }
        // `percentile`, not `quantile`: Prometheus reserves `quantile`
        // for summaries, and a windowed figure is no summary.
        for (quantile, label) in PERCENTILES {
            let seconds = window.value_at_quantile(quantile) as f64 / 1e6;
            let labels = [("sink", sink.sink_id.as_str()), ("percentile", label)];
            LATENCY_PERCENTILES.sample(out, &labels, seconds);
        }
    }
}
