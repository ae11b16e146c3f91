//! Retries: a preallocated timing wheel and the backoff schedule.
//!
//! The dispatcher owns one [`RetryWheel`]. A (batch slot, sink) pair that
//! failed waits in it for `backoff(attempt)`; when it expires, the batch is
//! handed to that sink again, and only its failed entries are sent. The
//! wheel is allocated at start-up for `[retry] max_batches` entries; a
//! failure that finds it full goes to the DLQ instead (counted).

pub mod wheel;

pub use wheel::{RetryWheel, WheelFull};

use std::time::Duration;

/// Exponential backoff with "equal jitter": the delay for `attempt` (1 for
/// the first retry) is `d / 2 + random(0 .. d / 2)` with
/// `d = min(max, base * 2^(attempt - 1))`. Half the delay is kept so that
/// retries never bunch at zero; the other half spreads them out.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    state: u64,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        assert!(
            base <= max,
            "retry.base_delay_ms <= retry.max_delay_ms is validated"
        );
        Self {
            base,
            max,
            state: seed | 1,
        }
    }

    pub fn delay(&mut self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        let full = self.base.saturating_mul(1 << doublings).min(self.max);
        let half = full / 2;
        let jitter = half.mul_f64(self.next_fraction());
        half + jitter
    }

    /// xorshift64*: a fraction in [0, 1). Jitter needs spread, not secrecy.
    fn next_fraction(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let value = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (value >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000), 42);
        for attempt in 1..=10u32 {
            let full = Duration::from_millis((100u64 << (attempt - 1)).min(1000));
            for _ in 0..100 {
                let delay = backoff.delay(attempt);
                assert!(
                    delay >= full / 2 && delay <= full,
                    "attempt {attempt}: {delay:?}"
                );
            }
        }
    }
}
