//! Latency histograms that cross threads without a lock or an allocation.
//!
//! A stage records into a histogram it owns ([`LatencyPublisher`]). About
//! once a second it pushes that histogram into an SPSC ring to the metrics
//! thread and takes an empty one back from a return ring; the metrics thread
//! ([`LatencyCollector`]) adds what it receives to its totals, resets the
//! histogram and sends it back. Three histograms circulate per publisher,
//! all allocated at start-up with the same bounds, so `record` and `add`
//! never allocate. If no empty histogram is back yet, the stage keeps
//! recording into the one it has.
//!
//! Values are microseconds from 1 µs to one hour, two significant digits.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rtrb::{Consumer, Producer, RingBuffer};

/// Histograms circulating per publisher: one recording, one in transit,
/// one spare.
const HISTOGRAMS_PER_PUBLISHER: usize = 3;
const MICROS_MAX: u64 = 3_600_000_000;
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Quantile gauges cover the last completed window of this length.
pub const QUANTILE_WINDOW: Duration = Duration::from_secs(10);

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MICROS_MAX, 2).expect("static bounds are valid")
}

/// The recording end, owned by a stage thread.
#[derive(Debug)]
pub struct LatencyPublisher {
    local: Histogram<u64>,
    to_collector: Producer<Histogram<u64>>,
    spares: Consumer<Histogram<u64>>,
    published_at: Instant,
}

/// The collecting end, owned by the metrics thread.
#[derive(Debug)]
pub struct LatencyCollector {
    from_stage: Consumer<Histogram<u64>>,
    spares_back: Producer<Histogram<u64>>,
    /// Everything since start: the Prometheus histogram.
    pub total: Histogram<u64>,
    window: Histogram<u64>,
    /// The last completed window: the quantile gauges.
    pub last_window: Histogram<u64>,
    window_started: Instant,
}

/// A connected publisher and collector.
pub fn latency_channel() -> (LatencyPublisher, LatencyCollector) {
    let (to_collector, from_stage) = RingBuffer::new(HISTOGRAMS_PER_PUBLISHER);
    let (mut spares_back, spares) = RingBuffer::new(HISTOGRAMS_PER_PUBLISHER);
    for _ in 1..HISTOGRAMS_PER_PUBLISHER {
        spares_back
            .push(new_histogram())
            .expect("ring holds every histogram");
    }
    (
        LatencyPublisher {
            local: new_histogram(),
            to_collector,
            spares,
            published_at: Instant::now(),
        },
        LatencyCollector {
            from_stage,
            spares_back,
            total: new_histogram(),
            window: new_histogram(),
            last_window: new_histogram(),
            window_started: Instant::now(),
        },
    )
}

impl LatencyPublisher {
    /// Records `count` samples of `latency` (clamped to the bounds).
    pub fn record(&mut self, latency: Duration, count: u64) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MICROS_MAX);
        self.local.saturating_record_n(micros, count);
    }

    /// Hands the recorded histogram to the collector about once a second.
    pub fn publish_if_due(&mut self) {
        if self.published_at.elapsed() < PUBLISH_INTERVAL || self.local.is_empty() {
            return;
        }
        let Ok(spare) = self.spares.pop() else {
            return;
        };
        let recorded = std::mem::replace(&mut self.local, spare);
        if let Err(rtrb::PushError::Full(recorded)) = self.to_collector.push(recorded) {
            // Cannot happen while three histograms circulate; keep the data.
            self.local.add(&recorded).expect("same bounds");
        }
        self.published_at = Instant::now();
    }
}

impl LatencyCollector {
    /// Takes what the stage published; rolls the quantile window.
    pub fn collect(&mut self) {
        while let Ok(mut histogram) = self.from_stage.pop() {
            self.total.add(&histogram).expect("same bounds");
            self.window.add(&histogram).expect("same bounds");
            histogram.reset();
            let _ = self.spares_back.push(histogram);
        }
        if self.window_started.elapsed() >= QUANTILE_WINDOW {
            std::mem::swap(&mut self.window, &mut self.last_window);
            self.window.reset();
            self.window_started = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_samples_reach_the_collector_and_histograms_return() {
        let (mut publisher, mut collector) = latency_channel();
        publisher.record(Duration::from_millis(5), 10);
        publisher.published_at -= PUBLISH_INTERVAL;
        publisher.publish_if_due();
        collector.collect();
        assert_eq!(collector.total.len(), 10);
        assert!((collector.total.value_at_quantile(0.5) as i64 - 5000).abs() < 100);
        for _ in 0..10 {
            publisher.record(Duration::from_micros(3), 1);
            publisher.published_at -= PUBLISH_INTERVAL;
            publisher.publish_if_due();
            collector.collect();
        }
        assert_eq!(
            collector.total.len(),
            20,
            "no histogram was lost in circulation"
        );
    }
}
