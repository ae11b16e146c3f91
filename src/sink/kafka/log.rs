//! librdkafka's own log lines and global errors, routed through `tracing`.
//!
//! Every client this crate creates (a sink's producer, a replay's producer,
//! the demo's consumer) hands librdkafka's `log` and `error` callbacks to a
//! [`ClientLog`], so that nothing librdkafka says reaches standard error
//! except through the daemon's subscriber, at a level the operator can act
//! on. A TLS or SASL refusal is logged at ERROR with its own rate limit,
//! whatever else librdkafka says meanwhile: it is the cause an operator
//! needs, and "brokers are down" alone would hide it.
//!
//! Levels. An outage is an operating condition: the circuit breaker, the
//! retry wheel and the DLQ handle it and log what they do. librdkafka, for
//! its part, reports every step of it at ERROR: each refused connection,
//! "all brokers down" once per broker handle, and its global errors twice
//! (rdkafka's `BaseProducer::poll` hands each error event to the context
//! twice). Messages about reaching the cluster ([`is_outage_message`], or a
//! transport error code) are therefore logged at WARN at most. Other
//! librdkafka errors stay ERROR (a TLS or SASL failure needs an operator),
//! warnings WARN, notices INFO, and its info and debug lines DEBUG.
//!
//! Rate limit. Per client and per [`Kind`], at most one line per
//! [`LOG_INTERVAL`]; lines held back meanwhile are counted, and the next line
//! logged for that kind carries the count (`not_logged_since_last`). What is
//! still held back when the client is dropped is logged then, as one line.
//! DEBUG lines are not limited: they are off unless asked for.
//!
//! Thread: librdkafka calls back on the thread that polls the client (rdkafka
//! routes logs to the main queue); a mutex guards the small fixed table, so a
//! client polled from two threads is fine too. The table is allocated with
//! the client; only the closing line at drop formats a string.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

use crate::sink::kafka::breaker::is_transport_error;

/// Shortest time between two lines of one kind from one client. An outage
/// of a minute then costs each client about six lines, each with a count.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Substrings of librdkafka messages that are about reaching the cluster.
/// Matched case-sensitively, as librdkafka spells them.
const OUTAGE_MARKERS: &[&str] = &[
    "Connection refused",
    "Connect to ",
    "Disconnected",
    "brokers are down",
    "All broker connections are down",
    "Broker transport failure",
    "Connection reset",
    "timed out",
    "Timed out",
    "Failed to resolve",
    "Name or service not known",
    "No route to host",
    "Receive failed",
    "Send failed",
];

/// True if a librdkafka message is about the cluster being unreachable.
pub fn is_outage_message(message: &str) -> bool {
    OUTAGE_MARKERS.iter().any(|marker| message.contains(marker))
}

/// What a line is about; each kind has its own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The cluster cannot be reached (WARN at most).
    Outage = 0,
    Error = 1,
    Warning = 2,
    Notice = 3,
    /// A TLS or SASL refusal ([`needs_operator`]): its own kind, so that
    /// the cause is logged at once even while "brokers are down" and other
    /// errors use up their turns.
    Refusal = 4,
}

const KINDS: usize = 5;

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Outage => "connection",
            Kind::Error => "error",
            Kind::Warning => "warning",
            Kind::Notice => "notice",
            Kind::Refusal => "refusal",
        }
    }
}

/// One kind's rate-limit state.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    logged_at: Option<Instant>,
    /// Lines held back since `logged_at`.
    held_back: u64,
}

/// The rate-limited `tracing` end of one librdkafka client.
#[derive(Debug)]
pub struct ClientLog {
    /// Names the client in every line: a sink id, `replay:<sink>`, ...
    client: String,
    slots: Mutex<[Slot; KINDS]>,
}

impl ClientLog {
    pub fn new(client: impl Into<String>) -> Self {
        Self {
            client: client.into(),
            slots: Mutex::new([Slot::default(); KINDS]),
        }
    }

    /// `ClientContext::log`.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let kind = match level {
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                tracing::debug!(client = %self.client, facility, "librdkafka: {message}");
                return;
            }
            _ if needs_operator(message) => Kind::Refusal,
            _ if is_outage_message(message) => Kind::Outage,
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => Kind::Error,
            RDKafkaLogLevel::Warning => Kind::Warning,
            RDKafkaLogLevel::Notice => Kind::Notice,
        };
        self.emit(kind, facility, message);
    }

    /// `ClientContext::error`: a global error of the client.
    pub fn error(&self, error: &KafkaError, reason: &str) {
        let transport = error.rdkafka_error_code().is_some_and(is_transport_error);
        // A refused certificate or password also reports "brokers down",
        // but no waiting fixes it: it needs an operator, at ERROR.
        let kind = if needs_operator(reason) {
            Kind::Refusal
        } else if transport || is_outage_message(reason) {
            Kind::Outage
        } else {
            Kind::Error
        };
        self.emit(kind, "ERROR", reason);
    }

    fn emit(&self, kind: Kind, facility: &str, message: &str) {
        let Some(held_back) = self.take_turn(kind) else {
            return;
        };
        log_line(&self.client, kind, facility, message, held_back);
    }

    /// `Some(lines held back)` if a line of `kind` may be logged now.
    fn take_turn(&self, kind: Kind) -> Option<u64> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let slot = &mut slots[kind as usize];
        let due = slot.logged_at.is_none_or(|at| at.elapsed() >= LOG_INTERVAL);
        if !due {
            slot.held_back += 1;
            return None;
        }
        let held_back = slot.held_back;
        *slot = Slot {
            logged_at: Some(Instant::now()),
            held_back: 0,
        };
        Some(held_back)
    }
}

impl Drop for ClientLog {
    fn drop(&mut self) {
        let slots = *self
            .slots
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner());
        for (index, slot) in slots.iter().enumerate() {
            if slot.held_back == 0 {
                continue;
            }
            let kind = [
                Kind::Outage,
                Kind::Error,
                Kind::Warning,
                Kind::Notice,
                Kind::Refusal,
            ][index];
            let message = format!(
                "{} more {} messages were not logged (rate limit)",
                slot.held_back,
                kind.describe()
            );
            log_line(&self.client, kind, "-", &message, slot.held_back);
        }
    }
}

fn log_line(client: &str, kind: Kind, facility: &str, message: &str, held_back: u64) {
    match kind {
        Kind::Outage | Kind::Warning => tracing::warn!(
            client,
            facility,
            not_logged_since_last = held_back,
            "librdkafka: {message}"
        ),
        Kind::Error | Kind::Refusal => tracing::error!(
            client,
            facility,
            not_logged_since_last = held_back,
            "librdkafka: {message}"
        ),
        Kind::Notice => tracing::info!(
            client,
            facility,
            not_logged_since_last = held_back,
            "librdkafka: {message}"
        ),
    }
}

/// Whether a client error is a TLS or SASL refusal (certificate not
/// trusted, handshake failed, wrong credentials).
fn needs_operator(reason: &str) -> bool {
    [
        "SSL handshake failed",
        "certificate verify failed",
        "SASL authentication",
    ]
    .iter()
    .any(|marker| reason.contains(marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outage_messages_are_recognised() {
        let refused = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: \
                       Connection refused (after 0ms in state CONNECT)";
        assert!(is_outage_message(refused));
        assert!(is_outage_message("1/1 brokers are down"));
        assert!(!is_outage_message(
            "SASL authentication error: Authentication failed"
        ));
    }

    #[test]
    fn one_line_per_interval_and_kind_then_the_count() {
        let log = ClientLog::new("test");
        assert_eq!(log.take_turn(Kind::Outage), Some(0));
        for _ in 0..5 {
            assert_eq!(log.take_turn(Kind::Outage), None);
        }
        // Another kind has its own turn.
        assert_eq!(log.take_turn(Kind::Error), Some(0));
        {
            let mut slots = log.slots.lock().expect("not poisoned");
            slots[Kind::Outage as usize].logged_at = Instant::now().checked_sub(LOG_INTERVAL);
        }
        assert_eq!(log.take_turn(Kind::Outage), Some(5));
        assert_eq!(log.take_turn(Kind::Outage), None);
    }

    /// Goal: a TLS refusal is logged even while other errors and "brokers
    /// are down" lines have used their turns, and a refusal that also
    /// names a disconnection counts as a refusal. Method: use up the error
    /// and outage turns, then log a refusal through `log` and see that it
    /// took the refusal turn.
    #[test]
    fn a_refusal_has_its_own_turn() {
        let log = ClientLog::new("test");
        log.log(RDKafkaLogLevel::Error, "FAIL", "Failed to get metadata");
        log.log(RDKafkaLogLevel::Error, "FAIL", "1/1 brokers are down");
        assert_eq!(log.take_turn(Kind::Error), None, "error turn used");
        assert_eq!(log.take_turn(Kind::Outage), None, "outage turn used");
        log.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: \
             certificate verify failed (after 3ms in state SSL_HANDSHAKE, \
             Disconnected)",
        );
        assert_eq!(log.take_turn(Kind::Refusal), None, "the refusal was logged");
        let error = KafkaError::Global(rdkafka::types::RDKafkaErrorCode::SSL);
        let fresh = ClientLog::new("fresh");
        fresh.error(&error, "SSL handshake failed: certificate verify failed");
        assert_eq!(fresh.take_turn(Kind::Refusal), None, "a global refusal too");
    }
}
