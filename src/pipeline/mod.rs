//! Wiring: builds every stage from a [`Config`], links them with rings and
//! starts one thread per stage.
//!
//! ```text
//!  source thread ─chunks─► dispatcher thread ─Arc<SealedBatch>─► sink thread
//!        ▲                   │        ▲           (live lane)      │  ▲
//!        └──empty chunks─────┘        └────────── reports ─────────┘  │
//!                                          replay thread ─(replay lane)┘
//! ```
//!
//! Each stage is built by its own function returning one struct that holds
//! everything of that stage (`sources`, `sinks`, `dispatcher`, `replay`),
//! so nothing is kept in vectors that must stay aligned by index. The batch
//! slots are planned once ([`slot_plan`]).
//!
//! Everything that the data path uses is allocated here, once: the chunk
//! pools, the rings, the batch arenas and the sink buffers. Shutdown runs
//! front to back: sources stop and drop their rings, the dispatcher seals
//! what is open, waits for every batch to be reported and drops its rings,
//! the replay threads stop at the stop flag, and the sinks flush and end
//! once both their lanes are abandoned.

mod dispatcher;
pub mod replay;
mod sinks;
mod sources;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::handover::{Handover, Listeners};
use crate::labels::SymbolTable;
use crate::metrics::{ReloadMetrics, StageHealth};
use crate::pin::CorePlan;
use crate::sink::SinkBuildError;
use crate::sink::link::{REPLAY_SLOTS, SlotPlan};
use crate::telemetry::Telemetry;
use crate::wake::Waker;

pub use crate::telemetry::PipelineMetrics;

/// Why the pipeline could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Sink(#[from] SinkBuildError),
    #[error(transparent)]
    Syslog(#[from] crate::source::syslog::SyslogError),
    #[error(transparent)]
    Docker(#[from] crate::source::docker::watch::AccessError),
    #[error("cannot start thread {name}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// `data_safe`: the sources and the dispatcher ended, so every line
    /// read was delivered or stored in the DLQ; only sink or replay threads
    /// are still busy.
    #[error("stage threads still running after {timeout_ms} ms: {stages}")]
    ShutdownTimeout {
        timeout_ms: u128,
        stages: String,
        data_safe: bool,
    },
    #[error("stage thread {name} panicked")]
    Panicked { name: String },
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    threads: Vec<(String, JoinHandle<()>)>,
    auxiliary: Vec<(String, JoinHandle<()>)>,
    stop: Arc<AtomicBool>,
    source_wakers: Vec<Waker>,
    /// Bumped by [`reopen_outputs`](Pipeline::reopen_outputs); every sink
    /// thread compares it with the last value it handled.
    reopen_requests: Arc<AtomicU64>,
    sink_wakers: Vec<Waker>,
    metrics: PipelineMetrics,
    symbols: Arc<SymbolTable>,
    telemetry: Option<Telemetry>,
    /// Duplicates of the syslog sources' listening sockets, for a reload
    /// that hands them to the next process.
    listeners: Listeners,
}

/// The batch slots of every sink: one per batch the dispatcher may have in
/// flight (at sinks, or waiting in the retry wheel), and the replay lane's
/// when automatic replay is on.
pub fn slot_plan(config: &Config) -> SlotPlan {
    SlotPlan {
        live_slots: config.dispatcher.batches_in_flight.get() + config.retry.max_batches.get(),
        replay_slots: if config.dlq.auto_replay {
            REPLAY_SLOTS
        } else {
            0
        },
    }
}

/// What every stage is started with, and the threads started so far.
#[derive(Debug)]
struct Wiring {
    stop: Arc<AtomicBool>,
    reopen_requests: Arc<AtomicU64>,
    cores: CorePlan,
    stages: Vec<Arc<StageHealth>>,
    /// Threads of the data path.
    threads: Vec<(String, JoinHandle<()>)>,
    /// Threads beside the data path (DLQ replay): they end on the stop
    /// flag, and the pipeline is finished without them.
    auxiliary: Vec<(String, JoinHandle<()>)>,
    dispatcher: Waker,
}

impl Wiring {
    fn new(pin_threads: bool) -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            reopen_requests: Arc::new(AtomicU64::new(0)),
            cores: CorePlan::new(pin_threads),
            stages: Vec::new(),
            threads: Vec::new(),
            auxiliary: Vec::new(),
            dispatcher: Waker::new(),
        }
    }

    /// Starts a stage thread pinned to the next core.
    fn spawn_pinned(
        &mut self,
        name: &str,
        stage_type: &'static str,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), PipelineError> {
        let core = self.cores.next_core();
        let thread = spawn(name, stage_type, &mut self.stages, move || {
            crate::pin::pin_current(stage_type, core);
            body();
        })?;
        self.threads.push(thread);
        Ok(())
    }
}

impl Pipeline {
    /// Builds and starts every stage: sinks first (so that nothing waits
    /// for them), then the dispatcher, then the sources, then the replay
    /// threads.
    pub fn start(config: &Config) -> Result<Pipeline, PipelineError> {
        Pipeline::start_with(config, Handover::default(), &Arc::default())
    }

    /// As [`start`](Self::start), with the listening sockets a previous
    /// process handed over (used for the addresses and paths the config
    /// still names; the others are closed and counted in `reloads`).
    pub fn start_with(
        config: &Config,
        mut handover: Handover,
        reloads: &Arc<ReloadMetrics>,
    ) -> Result<Pipeline, PipelineError> {
        let symbols = sources::symbol_table(config);
        let mut wiring = Wiring::new(config.daemon.pin_threads);
        let slots = slot_plan(config);
        let mut sink_stages = Vec::with_capacity(config.sinks.len());
        for (id, sink) in &config.sinks {
            let stage = sinks::start(id, sink, config, slots, &symbols, &mut wiring)?;
            sink_stages.push(stage);
        }
        let mut source_stages = sources::build(config, &symbols, &wiring, &mut handover)?;
        close_unclaimed(&mut handover, reloads);
        let dispatcher_metrics = dispatcher::start(
            config,
            &mut sink_stages,
            &mut source_stages,
            Arc::clone(&symbols),
            &mut wiring,
        )?;
        sources::start(&mut source_stages, &mut wiring)?;
        if config.dlq.auto_replay {
            for stage in &mut sink_stages {
                replay::start_auto(config, stage, &mut wiring)?;
            }
        }
        let metrics = PipelineMetrics {
            sources: source_stages
                .iter()
                .map(|stage| Arc::clone(&stage.metrics))
                .collect(),
            dispatcher: dispatcher_metrics,
            sinks: sink_stages
                .iter()
                .map(|stage| Arc::clone(&stage.metrics))
                .collect(),
            kafka: sink_stages
                .iter()
                .filter_map(|stage| Some((stage.id.clone(), Arc::clone(stage.kafka.as_ref()?))))
                .collect(),
            loki: sink_stages
                .iter()
                .filter_map(|stage| Some((stage.id.clone(), Arc::clone(stage.loki.as_ref()?))))
                .collect(),
            failures: sink_stages
                .iter()
                .map(|stage| Arc::clone(&stage.failures))
                .collect(),
            dlq: sink_stages
                .iter()
                .map(|stage| Arc::clone(&stage.dlq_metrics))
                .collect(),
            symbols: Arc::clone(&symbols),
        };
        let telemetry = Telemetry {
            metrics: metrics.clone(),
            stages: std::mem::take(&mut wiring.stages),
            latency: sink_stages
                .iter_mut()
                .filter_map(|stage| stage.latency.take())
                .collect(),
            kafka_brokers: sink_stages
                .iter()
                .filter(|stage| !stage.endpoints.is_empty())
                .map(|stage| (stage.id.clone(), stage.endpoints.clone()))
                .collect(),
            ring_capacity_entries: (config.dispatcher.source_chunks()
                * crate::limits::CHUNK_LINES_MAX) as u64,
            retry_capacity_batches: config.retry.max_batches.get() as u64,
            reloads: Arc::clone(reloads),
        };
        Ok(Pipeline {
            threads: wiring.threads,
            auxiliary: wiring.auxiliary,
            stop: wiring.stop,
            source_wakers: source_stages
                .iter()
                .map(|stage| stage.waker.clone())
                .collect(),
            reopen_requests: wiring.reopen_requests,
            sink_wakers: sink_stages
                .iter()
                .map(|stage| stage.waker.clone())
                .collect(),
            metrics,
            symbols,
            telemetry: Some(telemetry),
            listeners: handover.listeners,
        })
    }

    /// The duplicates of the listening sockets, to hand over at a reload.
    pub fn listeners(&self) -> &Listeners {
        &self.listeners
    }

    /// Gives up the duplicates of the listening sockets (after the
    /// pipeline stopped), to hand them to the next process.
    pub fn take_listeners(&mut self) -> Listeners {
        std::mem::take(&mut self.listeners)
    }

    pub fn metrics(&self) -> &PipelineMetrics {
        &self.metrics
    }

    pub fn symbols(&self) -> &Arc<SymbolTable> {
        &self.symbols
    }

    /// What the metrics endpoint needs: counters, stage health and the
    /// collecting ends of the latency histograms. Given out once.
    pub fn take_telemetry(&mut self) -> Option<Telemetry> {
        self.telemetry.take()
    }

    /// Asks the sources to stop; the rest of the pipeline drains behind them.
    pub fn request_stop(&self) {
        // Release pairs with the sources' Acquire load of the flag.
        self.stop.store(true, Ordering::Release);
        for waker in &self.source_wakers {
            waker.wake();
        }
    }

    /// Asks every sink to open its output again (SIGHUP after logrotate
    /// moved an output file). Sinks handle it before their next job.
    pub fn reopen_outputs(&self) {
        // Release pairs with the sinks' Acquire load.
        self.reopen_requests.fetch_add(1, Ordering::Release);
        for waker in &self.sink_wakers {
            waker.wake();
        }
    }

    /// True when every stage thread has ended (for example after
    /// `exit_on_eof`).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(|(_, handle)| handle.is_finished())
    }

    /// Stops the pipeline (as [`request_stop`](Self::request_stop); a no-op
    /// for a pipeline that already stopped or finished) and waits up to
    /// `timeout` for every thread, the auxiliary ones included, to end.
    pub fn join(self, timeout: Duration) -> Result<(), PipelineError> {
        self.request_stop();
        let deadline = Instant::now() + timeout;
        let all_finished = |threads: &[(String, JoinHandle<()>)]| {
            threads.iter().all(|(_, handle)| handle.is_finished())
        };
        while !(self.is_finished() && all_finished(&self.auxiliary)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let running: Vec<&str> = self
            .threads
            .iter()
            .chain(&self.auxiliary)
            .filter(|(_, handle)| !handle.is_finished())
            .map(|(name, _)| name.as_str())
            .collect();
        if !running.is_empty() {
            let data_safe = running
                .iter()
                .all(|name| name.starts_with("sink-") || name.starts_with("replay-"));
            return Err(PipelineError::ShutdownTimeout {
                timeout_ms: timeout.as_millis(),
                stages: running.join(", "),
                data_safe,
            });
        }
        for (name, handle) in self.threads.into_iter().chain(self.auxiliary) {
            if handle.join().is_err() {
                return Err(PipelineError::Panicked { name });
            }
        }
        Ok(())
    }
}

/// Closes the inherited sockets no source took (the new config no longer
/// names their address or path), counting and logging each: what they
/// still held is lost with them.
fn close_unclaimed(handover: &mut Handover, reloads: &ReloadMetrics) {
    let refused = handover.inherited.refused();
    if refused > 0 {
        tracing::warn!(
            refused,
            "inherited descriptors that were not the sockets named are closed"
        );
        reloads.sockets_not_handed_over.add(refused);
    }
    for key in handover.inherited.close_rest() {
        tracing::warn!(socket = %key, "the new config no longer names this socket; closed, with what it held");
        reloads.sockets_not_handed_over.add(1);
    }
    reloads
        .sockets_not_handed_over
        .add(handover.listeners.not_kept());
}

/// Starts a stage thread that reports itself alive until it ends, for any
/// reason: the flag is cleared by a guard that also runs on a panic.
fn spawn(
    name: &str,
    stage_type: &'static str,
    stages: &mut Vec<Arc<StageHealth>>,
    body: impl FnOnce() + Send + 'static,
) -> Result<(String, JoinHandle<()>), PipelineError> {
    struct AliveGuard(Arc<StageHealth>);
    impl Drop for AliveGuard {
        fn drop(&mut self) {
            self.0.set_alive(false);
        }
    }
    let health = Arc::new(StageHealth {
        name: name.to_string(),
        stage_type,
        ..StageHealth::default()
    });
    health.set_alive(true);
    let guard = AliveGuard(Arc::clone(&health));
    let handle = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let _guard = guard;
            body();
        })
        .map_err(|source| PipelineError::Spawn {
            name: name.to_string(),
            source,
        })?;
    stages.push(health);
    Ok((name.to_string(), handle))
}
