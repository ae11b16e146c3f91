//! Automatic replay: one thread per sink drains that sink's DLQ back into
//! it once the sink has been healthy for `[dlq] replay_after_ms`, at no
//! more than `replay_rate` records per second, so that live traffic keeps
//! priority.
//!
//! Healthy means what the sink's health signal says (`sink::SinkHealth`):
//! no failure since the last look, and for a sink with a circuit breaker
//! (Kafka) the breaker closed. The thread replays the sealed
//! segments (the one the dispatcher writes is locked and skipped); when only
//! that one holds records it asks the dispatcher to seal it. A replay that
//! fails stops until the sink has been healthy for the whole wait again;
//! the next one resumes where it stopped (acknowledged records are not sent
//! again), and records the sink refuses for good are moved to `rejected/`,
//! so no record can keep a segment, and its replay, alive forever.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dlq::DlqMetrics;
use crate::dlq::segment::list_segments;
use crate::replay::{Replayer, SegmentReplay};
use crate::sink::SinkHealth;

/// One sink's replay thread.
#[derive(Debug)]
pub struct AutoReplay {
    pub sink: String,
    pub dir: PathBuf,
    pub replayer: Replayer,
    pub health: Arc<dyn SinkHealth>,
    pub metrics: Arc<DlqMetrics>,
    pub seal_request: Arc<AtomicBool>,
    /// Healthy this long before replay starts.
    pub after: Duration,
    pub stop: Arc<AtomicBool>,
}

const CHECK_INTERVAL: Duration = Duration::from_millis(250);

impl AutoReplay {
    /// The thread body; returns when `stop` is set.
    pub fn run(mut self) {
        self.replayer.run_on_current_thread();
        self.replayer.count_into(Arc::clone(&self.metrics));
        let mut healthy_since: Option<Instant> = None;
        let mut failures_seen = self.failures();
        while !self.stopping() {
            std::thread::sleep(CHECK_INTERVAL);
            let failures = self.failures();
            let healthy = self.health.is_reachable() && failures == failures_seen;
            failures_seen = failures;
            healthy_since = if healthy {
                healthy_since.or(Some(Instant::now()))
            } else {
                None
            };
            let ready = healthy_since.is_some_and(|since| since.elapsed() >= self.after);
            if ready && self.metrics.entries.get() > 0 && !self.replay_sealed() {
                healthy_since = None;
            }
        }
    }

    fn stopping(&self) -> bool {
        // Acquire pairs with the Release store of the shutdown path.
        self.stop.load(Ordering::Acquire)
    }

    fn failures(&self) -> u64 {
        self.health.failures()
    }

    /// Replays every sealed segment. False if a replay failed.
    fn replay_sealed(&mut self) -> bool {
        let Ok(segments) = list_segments(&self.dir) else {
            return true;
        };
        let mut replayed_any = false;
        for (_, path) in segments {
            let stop = Arc::clone(&self.stop);
            let outcome = self
                .replayer
                .replay_segment(&path, &|| stop.load(Ordering::Acquire));
            match outcome {
                SegmentReplay::Locked | SegmentReplay::Unreadable => continue,
                SegmentReplay::Stopped => return true,
                // The replayer counted delivered, failed and rejected records.
                SegmentReplay::Replayed(counts) => {
                    replayed_any = true;
                    self.metrics.corrupt.add(counts.corrupt);
                    self.metrics.corrupt_bytes.add(counts.corrupt_bytes);
                    if !counts.deleted {
                        tracing::warn!(sink = %self.sink, path = %path.display(), failed = counts.failed, delivered = counts.delivered, "DLQ replay incomplete; the segment is kept and resumed later");
                        return false;
                    }
                    self.metrics
                        .size_bytes
                        .set(crate::dlq::dir_size_bytes(&self.dir));
                    tracing::info!(sink = %self.sink, path = %path.display(), records = counts.delivered, rejected = counts.rejected, "DLQ segment replayed and deleted");
                }
            }
        }
        if !replayed_any {
            // Only the segment being written holds records: have it sealed.
            self.seal_request.store(true, Ordering::Relaxed);
        }
        true
    }
}
