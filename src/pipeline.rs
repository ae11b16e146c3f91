//! Wiring: builds every stage from a [`Config`], links them with rings and
//! starts one thread per stage.
//!
//! ```text
//!  source thread ─chunks─► dispatcher thread ─Arc<SealedBatch>─► sink thread
//!        ▲                   │        ▲                              │
//!        └──empty chunks─────┘        └────────── reports ───────────┘
//! ```
//!
//! Everything that the data path uses is allocated here, once: the chunk
//! pools, the rings, the batch arenas and the sink buffers. Shutdown runs
//! front to back: sources stop and drop their rings, the dispatcher seals
//! what is open, waits for every batch to be reported and drops its rings,
//! and the sinks flush and end.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bumpalo::Bump;
use rtrb::RingBuffer;

use crate::batch::arena_capacity_bytes;
use crate::config::{Config, FileSourceConfig, SinkConfig, SourceConfig};
use crate::dispatch::{
    BatchSettings, Dispatcher, DispatcherParts, RetrySettings, SinkEnd, SourceEnd,
};
use crate::dlq::auto::{AutoReplay, HealthSignal};
use crate::dlq::replay::Replayer;
use crate::dlq::{DlqMetrics, DlqSettings, DlqSink};
use crate::labels::{LabelSet, SymbolTable, SymbolTableBuilder};
use crate::metrics::{DispatcherMetrics, FileMetrics, SinkMetrics, SourceMetrics, StageHealth};
use crate::pin::{CorePlan, pin_current};
use crate::retry::Backoff;
use crate::sink::file::open_file_sink;
use crate::sink::kafka::sink::{KafkaCreateError, KafkaSinkOptions};
use crate::sink::kafka::{KafkaMetrics, KafkaSink};
use crate::sink::null::NullSink;
use crate::sink::stdout::stdout_sink;
use crate::sink::{FailureTable, Sink, SinkError, SinkLinks, run_sink};
use crate::source::file::{FileSource, FileSourceSettings, SourceLinks};
use crate::source::{SourceChunk, StreamId};
use crate::telemetry::latency::latency_channel;
use crate::telemetry::{SinkLatency, Telemetry};
use crate::wake::Waker;

/// Why the pipeline could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("source {source_id}: invalid glob pattern {pattern:?}: {reason}")]
    Glob {
        source_id: String,
        pattern: String,
        reason: String,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Kafka(#[from] KafkaCreateError),
    #[error("sink {sink}: invalid Kafka configuration")]
    KafkaConfig {
        sink: String,
        #[source]
        source: crate::sink::kafka::config::KafkaConfigError,
    },
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
    #[error("sink {sink}: cannot set up DLQ replay: {reason}")]
    Replay { sink: String, reason: String },
    #[error("stage thread {name} panicked")]
    Panicked { name: String },
}

/// Counters of every stage, readable while the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    pub sources: Vec<Arc<SourceMetrics>>,
    pub dispatcher: Arc<DispatcherMetrics>,
    pub sinks: Vec<Arc<SinkMetrics>>,
    /// Kafka-specific counters, by sink id.
    pub kafka: Vec<(String, Arc<KafkaMetrics>)>,
    /// Failed entries per batch slot, one table per sink, in `sinks` order.
    pub failures: Vec<Arc<FailureTable>>,
    /// Dead-letter queue counters, one per sink, in `sinks` order.
    pub dlq: Vec<Arc<DlqMetrics>>,
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
}

/// One source's files before its thread starts.
struct PlannedSource {
    id: String,
    settings: FileSourceSettings,
    files: Vec<(PathBuf, StreamId)>,
}

impl Pipeline {
    /// Builds and starts every stage.
    pub fn start(config: &Config) -> Result<Pipeline, PipelineError> {
        let mut symbols = SymbolTableBuilder::new();
        let mut streams: Vec<LabelSet> = Vec::new();
        let mut planned = Vec::new();
        for (id, source) in &config.sources {
            let SourceConfig::File(file_config) = source;
            planned.push(plan_file_source(
                id,
                file_config,
                &mut symbols,
                &mut streams,
            )?);
        }
        let symbols = symbols.freeze();
        let streams: Arc<[LabelSet]> = streams.into();
        let stop = Arc::new(AtomicBool::new(false));
        let reopen_requests = Arc::new(AtomicU64::new(0));
        let mut sink_wakers = Vec::new();
        let mut cores = CorePlan::new(config.daemon.pin_threads);
        let mut threads = Vec::new();
        // Threads beside the data path (DLQ replay): they end on the stop
        // flag, and the pipeline is finished without them.
        let mut auxiliary = Vec::new();
        let mut stages = Vec::new();
        let mut latency = Vec::new();
        let mut kafka_brokers = Vec::new();

        let dispatcher_waker = Waker::new();
        // A batch slot and an arena per batch in flight and per batch that
        // the retry wheel may hold: the memory bound of the whole pipeline.
        let slot_count = config.dispatcher.batches_in_flight.get() + config.retry.max_batches.get();
        let dlq_settings = DlqSettings {
            dir: config.dlq_dir(),
            segment_bytes: config.dlq.segment_bytes.get(),
            max_bytes: config.dlq.max_bytes.get(),
            policy: config.dlq.policy,
        };
        let mut dlq_metrics = Vec::new();
        let mut seal_requests = Vec::new();
        let mut sink_ends = Vec::new();
        let mut sink_metrics = Vec::new();
        let mut kafka_metrics = Vec::new();
        let mut failure_tables = Vec::new();
        for (id, sink_config) in &config.sinks {
            let failures = Arc::new(FailureTable::new(
                slot_count,
                config.dispatcher.batch_size.get(),
            ));
            let (body, sink_type) = build_sink(id, sink_config, config, &symbols, &failures)?;
            if let SinkBody::Kafka(kafka) = &body {
                kafka_metrics.push((id.clone(), kafka.metrics()));
            }
            if let SinkConfig::Kafka(kafka) = sink_config {
                kafka_brokers.push((
                    id.clone(),
                    kafka.brokers.split(',').map(str::to_string).collect(),
                ));
            }
            let (read_to_ack, read_to_ack_collector) = latency_channel();
            let (seal_to_ack, seal_to_ack_collector) = latency_channel();
            latency.push(SinkLatency {
                sink_id: id.clone(),
                sink_type,
                read_to_ack: read_to_ack_collector,
                seal_to_ack: seal_to_ack_collector,
            });
            let metrics = Arc::new(SinkMetrics {
                id: id.clone(),
                sink_type,
                ..SinkMetrics::default()
            });
            let (jobs_producer, jobs_consumer) = RingBuffer::new(slot_count);
            let (reports_producer, reports_consumer) = RingBuffer::new(slot_count);
            let sink_waker = Waker::new();
            let links = SinkLinks {
                jobs: jobs_consumer,
                reports: reports_producer,
                dispatcher: dispatcher_waker.clone(),
                own: sink_waker.clone(),
                failures: Arc::clone(&failures),
                reopen_requests: Arc::clone(&reopen_requests),
            };
            sink_wakers.push(sink_waker.clone());
            let dlq = DlqSink::open(id, &dlq_settings);
            dlq_metrics.push(dlq.metrics());
            seal_requests.push(Arc::clone(&dlq.seal_request));
            sink_ends.push(SinkEnd {
                id: id.clone(),
                jobs: jobs_producer,
                reports: reports_consumer,
                sink: sink_waker,
                failures: Arc::clone(&failures),
                read_to_ack,
                seal_to_ack,
                dlq,
                metrics: Arc::clone(&metrics),
            });
            let thread_metrics = Arc::clone(&metrics);
            let core = cores.next_core();
            let name = format!("sink-{id}");
            threads.push(spawn(&name, "sink", &mut stages, move || {
                pin_current("sink", core);
                match body {
                    SinkBody::Writer(sink) => run_sink(sink, links, thread_metrics),
                    SinkBody::Kafka(sink) => sink.run(links, thread_metrics),
                }
            })?);
            sink_metrics.push(metrics);
            failure_tables.push(failures);
        }

        let chunk_count = config.dispatcher.source_chunks();
        let mut source_ends = Vec::new();
        let mut source_starts = Vec::new();
        let mut source_metrics = Vec::new();
        let mut source_wakers = Vec::new();
        for plan in planned {
            let (chunks_producer, chunks_consumer) = RingBuffer::new(chunk_count);
            let (returns_producer, returns_consumer) = RingBuffer::new(chunk_count);
            let source_waker = Waker::new();
            let metrics = Arc::new(SourceMetrics {
                id: plan.id.clone(),
                source_type: "file",
                files: plan
                    .files
                    .iter()
                    .map(|(path, _)| FileMetrics {
                        path: path.to_string_lossy().into_owned(),
                        ..FileMetrics::default()
                    })
                    .collect(),
                ..SourceMetrics::default()
            });
            source_ends.push(SourceEnd::new(
                chunks_consumer,
                returns_producer,
                source_waker.clone(),
                Arc::clone(&metrics),
            ));
            let links = SourceLinks {
                chunks: chunks_producer,
                returns: returns_consumer,
                dispatcher: dispatcher_waker.clone(),
                own: source_waker.clone(),
            };
            let pool = (0..chunk_count).map(|_| SourceChunk::new()).collect();
            let source = FileSource::new(
                plan.settings,
                plan.files,
                links,
                pool,
                Arc::clone(&stop),
                Arc::clone(&metrics),
            );
            source_starts.push((plan.id, source));
            source_metrics.push(metrics);
            source_wakers.push(source_waker);
        }

        let dispatcher_metrics = Arc::new(DispatcherMetrics::default());
        let settings = BatchSettings {
            batch_size: config.dispatcher.batch_size.get(),
            batch_bytes: config.dispatcher.batch_bytes.get(),
            batch_timeout: Duration::from_millis(config.dispatcher.batch_timeout_ms.get()),
        };
        let arena_bytes = arena_capacity_bytes(settings.batch_size, settings.batch_bytes);
        // The arenas of the live path are allocated now, at full size. The
        // ones that only the retry wheel needs start empty and grow on first
        // use, so that memory an outage may need is not resident before.
        // The pool is used as a stack: the sized arenas sit on top.
        let live_arenas = config.dispatcher.batches_in_flight.get();
        let arenas: Vec<Bump> = (0..slot_count)
            .map(|index| {
                if index < slot_count - live_arenas {
                    Bump::new()
                } else {
                    Bump::with_capacity(arena_bytes)
                }
            })
            .collect();
        let retry = RetrySettings {
            max_attempts: config.retry.max_attempts.get(),
            backoff: Backoff::new(
                Duration::from_millis(config.retry.base_delay_ms.get()),
                Duration::from_millis(config.retry.max_delay_ms.get()),
                crate::source::file::now_ns(),
            ),
            wheel_capacity: config.retry.max_batches.get(),
            // The dispatcher gives up on sinks before the process does.
            drain_timeout: Duration::from_millis(config.daemon.shutdown_timeout_ms.get() * 4 / 5),
        };
        let parts = DispatcherParts {
            settings,
            retry,
            sources: source_ends,
            sinks: sink_ends,
            streams,
            symbols: Arc::clone(&symbols),
            arenas,
            stop: Arc::clone(&stop),
            own: dispatcher_waker,
            metrics: Arc::clone(&dispatcher_metrics),
        };
        let core = cores.next_core();
        // The dispatcher is built on its own thread: an open batch borrows
        // its arena and is not `Send`, so the dispatcher never moves.
        threads.push(spawn("dispatcher", "dispatcher", &mut stages, move || {
            pin_current("dispatcher", core);
            Dispatcher::new(parts).run();
        })?);

        for (id, source) in source_starts {
            let core = cores.next_core();
            threads.push(spawn(
                &format!("source-{id}"),
                "source",
                &mut stages,
                move || {
                    pin_current("source", core);
                    source.run();
                },
            )?);
        }

        if config.dlq.auto_replay {
            for (index, id) in config.sinks.keys().enumerate() {
                let health = match kafka_metrics.iter().find(|(sink, _)| sink == id) {
                    Some((_, kafka)) => HealthSignal::Breaker(Arc::clone(kafka)),
                    None => HealthSignal::Failures(Arc::clone(&sink_metrics[index])),
                };
                let replayer = Replayer::new(config, id, Some(config.dlq.replay_rate.get()))
                    .map_err(|error| PipelineError::Replay {
                        sink: id.clone(),
                        reason: crate::error_chain::ErrorChain(&error).to_string(),
                    })?;
                let worker = AutoReplay {
                    sink: id.clone(),
                    dir: dlq_settings.dir.join(id),
                    replayer,
                    health,
                    metrics: Arc::clone(&dlq_metrics[index]),
                    seal_request: Arc::clone(&seal_requests[index]),
                    after: Duration::from_millis(config.dlq.replay_after_ms.get()),
                    stop: Arc::clone(&stop),
                };
                auxiliary.push(spawn(
                    &format!("replay-{id}"),
                    "replay",
                    &mut stages,
                    move || worker.run(),
                )?);
            }
        }

        let metrics = PipelineMetrics {
            sources: source_metrics,
            dispatcher: dispatcher_metrics,
            sinks: sink_metrics,
            kafka: kafka_metrics,
            failures: failure_tables,
            dlq: dlq_metrics,
        };
        let telemetry = Telemetry {
            metrics: metrics.clone(),
            stages,
            latency,
            kafka_brokers,
            ring_capacity_entries: (chunk_count * crate::limits::CHUNK_LINES_MAX) as u64,
        };
        Ok(Pipeline {
            threads,
            auxiliary,
            stop,
            source_wakers,
            reopen_requests,
            sink_wakers,
            metrics,
            symbols,
            telemetry: Some(telemetry),
        })
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

/// Expands a file source's paths and registers one stream per file.
fn plan_file_source(
    id: &str,
    config: &FileSourceConfig,
    symbols: &mut SymbolTableBuilder,
    streams: &mut Vec<LabelSet>,
) -> Result<PlannedSource, PipelineError> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for pattern in &config.paths {
        expand_pattern(id, pattern, &mut paths)?;
    }
    paths.sort();
    paths.dedup();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let file_label = path.to_string_lossy().into_owned();
        let pairs = config
            .labels
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .chain([("source_id", id), ("file", file_label.as_str())]);
        let stream = StreamId::try_from(streams.len()).expect("fewer than 4 billion files");
        streams.push(symbols.label_set(pairs));
        files.push((path, stream));
    }
    Ok(PlannedSource {
        id: id.to_string(),
        settings: FileSourceSettings {
            start_at: config.start_at,
            max_line_bytes: config.max_line_bytes,
            poll_interval: Duration::from_millis(config.poll_interval_ms.get()),
            exit_on_eof: config.exit_on_eof,
        },
        files,
    })
}

/// A pattern with glob characters is expanded now; a plain path is kept
/// even if the file does not exist yet (it is opened when it appears).
fn expand_pattern(id: &str, pattern: &str, paths: &mut Vec<PathBuf>) -> Result<(), PipelineError> {
    if !pattern.contains(['*', '?', '[']) {
        paths.push(PathBuf::from(pattern));
        return Ok(());
    }
    let matches = glob::glob(pattern).map_err(|error| PipelineError::Glob {
        source_id: id.to_string(),
        pattern: pattern.to_string(),
        reason: error.to_string(),
    })?;
    let before = paths.len();
    paths.extend(matches.filter_map(Result::ok).filter(|path| path.is_file()));
    if paths.len() == before {
        // Config::load already warned, naming the key and its line.
        tracing::debug!(source = id, pattern, "glob matches no file");
    }
    Ok(())
}

/// A sink ready for its thread: a synchronous writer or the Kafka loop.
enum SinkBody {
    Writer(Box<dyn Sink>),
    Kafka(Box<KafkaSink>),
}

fn build_sink(
    id: &str,
    sink_config: &SinkConfig,
    config: &Config,
    symbols: &Arc<SymbolTable>,
    failures: &Arc<FailureTable>,
) -> Result<(SinkBody, &'static str), PipelineError> {
    let buffer_bytes = config.dispatcher.batch_bytes.get() + config.dispatcher.batch_size.get();
    Ok(match sink_config {
        SinkConfig::Kafka(kafka) => {
            let batch_size = config.dispatcher.batch_size.get();
            let batches_in_flight =
                config.dispatcher.batches_in_flight.get() + config.retry.max_batches.get();
            let client =
                crate::sink::kafka::config::client_config(kafka, batch_size * batches_in_flight)
                    .map_err(|source| PipelineError::KafkaConfig {
                        sink: id.to_string(),
                        source,
                    })?;
            let options = KafkaSinkOptions {
                id: id.to_string(),
                topic: kafka.topic.clone(),
                key_label: kafka.key.clone(),
                encoding: kafka.encoding,
                probe_interval: Duration::from_millis(kafka.probe_interval_ms.get()),
                batches_in_flight,
                batch_size,
                payload_bytes_max: crate::sink::kafka::config::message_payload_bytes_max(kafka),
            };
            let sink = KafkaSink::new(options, &client, Arc::clone(symbols), Arc::clone(failures))?;
            (SinkBody::Kafka(Box::new(sink)), "kafka")
        }
        SinkConfig::File(file) => {
            let sink = open_file_sink(
                id,
                &file.path,
                file.encoding,
                Arc::clone(symbols),
                buffer_bytes,
            )?;
            (SinkBody::Writer(Box::new(sink)), "file")
        }
        SinkConfig::Stdout(stdout) => (
            SinkBody::Writer(Box::new(stdout_sink(
                id,
                stdout.encoding,
                Arc::clone(symbols),
                buffer_bytes,
            ))),
            "stdout",
        ),
        SinkConfig::Null(_) => (SinkBody::Writer(Box::new(NullSink::default())), "null"),
    })
}
