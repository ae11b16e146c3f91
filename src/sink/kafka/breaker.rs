//! The circuit breaker of a Kafka sink.
//!
//! Closed: batches are produced. A transport-level error (all brokers down,
//! a broker transport failure, a message timed out) opens it at once,
//! instead of waiting for timeouts to pile up. Open: batches are failed at
//! once as retryable without touching librdkafka, so librdkafka's queue, and
//! its memory, stays empty. Every `probe_interval` the sink asks the cluster
//! for metadata; an answer closes the breaker. The sink first serves the
//! error events librdkafka queued while the cluster was down: they predate
//! the answer, and served later they would open the breaker again at once.

use std::time::{Duration, Instant};

use rdkafka::types::RDKafkaErrorCode;

use crate::sink::link::Rejection;

/// Breaker state, exported as `kafka_circuit_breaker_state` (0 closed,
/// 1 open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed = 0,
    Open = 1,
}

#[derive(Debug)]
pub struct Breaker {
    state: BreakerState,
    probe_interval: Duration,
    probe_last: Instant,
}

impl Breaker {
    pub fn new(probe_interval: Duration) -> Self {
        Self {
            state: BreakerState::Closed,
            probe_interval,
            probe_last: Instant::now(),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn is_open(&self) -> bool {
        self.state == BreakerState::Open
    }

    /// Opens the breaker. True if it was closed.
    pub fn open(&mut self) -> bool {
        let was_closed = self.state == BreakerState::Closed;
        self.state = BreakerState::Open;
        if was_closed {
            self.probe_last = Instant::now();
        }
        was_closed
    }

    pub fn close(&mut self) {
        self.state = BreakerState::Closed;
    }

    /// True when open and a probe is due; the probe time is taken.
    pub fn probe_due(&mut self) -> bool {
        if self.state != BreakerState::Open || self.probe_last.elapsed() < self.probe_interval {
            return false;
        }
        self.probe_last = Instant::now();
        true
    }
}

/// Errors that mean the cluster cannot be reached: they open the breaker.
pub fn is_transport_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::Resolve
    )
}

/// Errors that will not go away by retrying the same message.
pub fn is_permanent_error(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::InvalidMessageSize
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::UnsupportedForMessageFormat
            | RDKafkaErrorCode::InvalidRequiredAcks
    )
}

/// Why a permanent error refuses a message (`None` when retrying may help).
pub fn rejection_of(code: RDKafkaErrorCode) -> Option<Rejection> {
    if !is_permanent_error(code) {
        return None;
    }
    Some(match code {
        RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::MessageBatchTooLarge
        | RDKafkaErrorCode::InvalidMessageSize => Rejection::TooLarge,
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => Rejection::NotAuthorized,
        RDKafkaErrorCode::InvalidTopic => Rejection::InvalidTopic,
        _ => Rejection::Refused,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_at_once_and_probes_on_interval() {
        let mut breaker = Breaker::new(Duration::from_millis(30));
        assert!(!breaker.probe_due());
        assert!(breaker.open());
        assert!(!breaker.open());
        assert!(!breaker.probe_due());
        std::thread::sleep(Duration::from_millis(40));
        assert!(breaker.probe_due());
        assert!(!breaker.probe_due());
        breaker.close();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn classifies_errors() {
        assert!(is_transport_error(RDKafkaErrorCode::AllBrokersDown));
        assert!(is_transport_error(RDKafkaErrorCode::MessageTimedOut));
        assert!(!is_transport_error(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(is_permanent_error(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!is_permanent_error(RDKafkaErrorCode::NotEnoughReplicas));
        assert_eq!(
            rejection_of(RDKafkaErrorCode::MessageSizeTooLarge),
            Some(Rejection::TooLarge)
        );
        assert_eq!(
            rejection_of(RDKafkaErrorCode::TopicAuthorizationFailed),
            Some(Rejection::NotAuthorized)
        );
        assert_eq!(rejection_of(RDKafkaErrorCode::AllBrokersDown), None);
    }
}
