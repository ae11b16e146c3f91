//! Families of configuration reloads (SIGHUP).

use crate::metrics::ReloadMetrics;
use crate::telemetry::family::{Exposition, Family};

pub static RELOADS: Family = Family::counter(
    "log_capturer_config_reloads_total",
    "Configuration reloads on SIGHUP: applied (success) or refused because the new config was invalid (failure).",
);
pub static LAST_RELOAD_SUCCESSFUL: Family = Family::gauge(
    "log_capturer_config_last_reload_successful",
    "0 when the last reload was refused (the old config runs on), 1 otherwise.",
);
pub static SOCKETS_NOT_HANDED_OVER: Family = Family::counter(
    "log_capturer_reload_sockets_not_handed_over_total",
    "Listening sockets that a reload could not hand to the new process, or that the new config no longer names (closed with what they held).",
);

pub fn render(out: &mut Exposition, reloads: &ReloadMetrics) {
    RELOADS.header(out);
    RELOADS.sample(out, &[("result", "success")], reloads.succeeded.get());
    RELOADS.sample(out, &[("result", "failure")], reloads.failed.get());
    LAST_RELOAD_SUCCESSFUL.header(out);
    LAST_RELOAD_SUCCESSFUL.sample(out, &[], u64::from(reloads.last_failed.get() == 0));
    SOCKETS_NOT_HANDED_OVER.header(out);
    SOCKETS_NOT_HANDED_OVER.sample(out, &[], reloads.sockets_not_handed_over.get());
}
