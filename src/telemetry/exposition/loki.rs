//! The Loki sinks' families. The whole group is absent when no Loki sink
//! is configured. Each series carries `sink`, the sink's id.

use std::sync::Arc;

use crate::sink::loki::response::ErrorType;
use crate::sink::loki::sink::LokiMetrics;
use crate::telemetry::family::{Exposition, Family};

pub static ERROR_TYPE: Family = Family::counter(
    "log_capturer_loki_error_type_total",
    "Loki pushes that failed, by type: retryable (transport, timeout, rate_limited, server_error, unauthorized, client_error) or refusals of entries (too_old, too_new, line_too_long, labels, bad_request).",
);
pub static TIMESTAMP_CLAMPED: Family = Family::counter(
    "log_capturer_timestamp_clamped_total",
    "Entries older than max_entry_age_ms sent with the oldest time still accepted.",
);
pub static TIMESTAMP_REJECTION: Family = Family::counter(
    "log_capturer_timestamp_rejection_total",
    "Entries refused before sending for their time (too_old with old_entries = \"reject\", too_new), stored in rejected/.",
);
pub static TIMESTAMP_RAISED: Family = Family::counter(
    "log_capturer_timestamp_raised_total",
    "Entries sent a second or more after their own time, to stay after the last entry of their stream (a late or clock-skewed sender).",
);
pub static STREAMS: Family = Family::gauge(
    "log_capturer_loki_streams",
    "Loki streams the sink has sent to since start (or since its stream table started over).",
);
pub static REQUESTS: Family = Family::counter(
    "log_capturer_loki_requests_total",
    "Push requests sent to Loki, the halves of refused requests included.",
);
pub static BREAKER_STATE: Family = Family::gauge(
    "log_capturer_loki_circuit_breaker_state",
    "0 closed, 1 open (pushes fail as retryable without a request).",
);

pub fn render(out: &mut Exposition, loki: &[(String, Arc<LokiMetrics>)]) {
    if loki.is_empty() {
        return;
    }
    ERROR_TYPE.header(out);
    for (sink, metrics) in loki {
        for error in ErrorType::ALL {
            let labels = [("sink", sink.as_str()), ("error_type", error.as_str())];
            ERROR_TYPE.sample(out, &labels, metrics.error(error).get());
        }
    }
    TIMESTAMP_CLAMPED.header(out);
    for (sink, metrics) in loki {
        TIMESTAMP_CLAMPED.sample(out, &[("sink", sink)], metrics.timestamps_clamped.get());
    }
    TIMESTAMP_RAISED.header(out);
    for (sink, metrics) in loki {
        TIMESTAMP_RAISED.sample(out, &[("sink", sink)], metrics.timestamps_raised_far.get());
    }
    TIMESTAMP_REJECTION.header(out);
    for (sink, metrics) in loki {
        for (reason, value) in [
            ("too_old", metrics.timestamps_rejected_old.get()),
            ("too_new", metrics.timestamps_rejected_new.get()),
        ] {
            let labels = [("sink", sink.as_str()), ("reason", reason)];
            TIMESTAMP_REJECTION.sample(out, &labels, value);
        }
    }
    type Read = fn(&LokiMetrics) -> u64;
    let gauges: [(&Family, Read); 3] = [
        (&STREAMS, |metrics| metrics.streams.get()),
        (&REQUESTS, |metrics| metrics.requests.get()),
        (&BREAKER_STATE, |metrics| metrics.breaker_state.get()),
    ];
    for (family, value) in gauges {
        family.header(out);
        for (sink, metrics) in loki {
            family.sample(out, &[("sink", sink)], value(metrics));
        }
    }
}
