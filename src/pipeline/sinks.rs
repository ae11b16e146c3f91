//! The sink stages: one thread per `[sinks.<id>]`, its lanes, its DLQ and
//! everything telemetry and the replay need of it, in one struct.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::{Config, SinkTable};
use crate::dispatch::SinkEnd;
use crate::dlq::{DlqMetrics, DlqSettings, DlqSink};
use crate::labels::SymbolTable;
use crate::metrics::SinkMetrics;
use crate::pipeline::{PipelineError, Wiring};
use crate::replay::ReplayLink;
use crate::sink::kafka::KafkaMetrics;
use crate::sink::link::{self, FailureTable, SinkLinks, SlotPlan, SourceSet};
use crate::sink::loki::sink::LokiMetrics;
use crate::sink::{SinkContext, SinkHealth};
use crate::telemetry::SinkLatency;
use crate::telemetry::latency::latency_channel;
use crate::wake::Waker;

/// One started sink.
#[derive(Debug)]
pub(super) struct SinkStage {
    pub id: String,
    /// The dispatcher's end: the live lane, the DLQ and the latency
    /// publishers. Taken when the dispatcher is built.
    pub end: Option<SinkEnd>,
    /// The replay lane's producer end, when automatic replay is on. Taken
    /// when the replay thread is built.
    pub replay: Option<ReplayLink>,
    pub metrics: Arc<SinkMetrics>,
    pub kafka: Option<Arc<KafkaMetrics>>,
    pub loki: Option<Arc<LokiMetrics>>,
    /// Where the sink connects (Kafka brokers), for the broker metrics.
    pub endpoints: Vec<String>,
    pub failures: Arc<FailureTable>,
    pub health: Arc<dyn SinkHealth>,
    pub dlq_metrics: Arc<DlqMetrics>,
    /// Set by the replay to have the DLQ's open segment sealed.
    pub seal_request: Arc<AtomicBool>,
    /// The collecting ends of the sink's latency histograms, taken by
    /// telemetry.
    pub latency: Option<SinkLatency>,
    pub waker: Waker,
}

/// The DLQ settings of every sink, from `[daemon]` and `[dlq]`.
pub(super) fn dlq_settings(config: &Config) -> DlqSettings {
    DlqSettings {
        dir: config.dlq_dir(),
        segment_bytes: config.dlq.segment_bytes.get(),
        max_bytes: config.dlq.max_bytes.get(),
        policy: config.dlq.policy,
    }
}

/// A sink's thread with its live lane, and its replay lane when `slots`
/// has replay slots: what the pipeline and the replay command share.
#[derive(Debug)]
pub(super) struct SinkThread {
    pub live: link::LaneEnd,
    pub replay: Option<ReplayLink>,
    pub metrics: Arc<SinkMetrics>,
    pub kafka: Option<Arc<KafkaMetrics>>,
    pub loki: Option<Arc<LokiMetrics>>,
    pub failures: Arc<FailureTable>,
    /// The sources whose entries the sink takes from live batches.
    pub inputs: SourceSet,
    pub health: Arc<dyn SinkHealth>,
    pub waker: Waker,
}

/// The sources a sink takes, as the indices its entries carry.
fn source_set(config: &Config, sink: &SinkTable) -> SourceSet {
    match &sink.inputs {
        None => SourceSet::all(),
        Some(inputs) => SourceSet::of(inputs.iter().map(|id| {
            config
                .source_index(id)
                .expect("validated: every input names a source")
        })),
    }
}

/// Builds a sink and starts its thread.
pub(super) fn spawn_thread(
    id: &str,
    sink: &SinkTable,
    config: &Config,
    slots: SlotPlan,
    symbols: &Arc<SymbolTable>,
    wiring: &mut Wiring,
) -> Result<SinkThread, PipelineError> {
    let sink_config = &sink.config;
    let inputs = source_set(config, sink);
    let batch_size = config.dispatcher.batch_size.get();
    let failures = Arc::new(if sink_config.kind().keeps_sent_timestamps() {
        FailureTable::with_sent_timestamps(slots.slots_total(), batch_size)
    } else {
        FailureTable::new(slots.slots_total(), batch_size)
    });
    let metrics = Arc::new(SinkMetrics {
        id: id.to_string(),
        sink_type: sink_config.type_name(),
        ..SinkMetrics::default()
    });
    let built = sink_config.build(SinkContext {
        id: id.to_string(),
        symbols: Arc::clone(symbols),
        failures: Arc::clone(&failures),
        metrics: Arc::clone(&metrics),
        slots,
        batch_size,
        batch_bytes: config.dispatcher.batch_bytes.get(),
        latency_target: std::time::Duration::from_millis(config.dispatcher.latency_target_ms.get()),
    })?;
    let waker = Waker::new();
    let (live_end, live_lane) = link::lane(slots.live(), wiring.dispatcher.clone(), waker.clone());
    let (replay, replay_lane) = if slots.replay_slots > 0 {
        let replay_waker = Waker::new();
        let (end, lane) = link::lane(slots.replay(), replay_waker.clone(), waker.clone());
        let replay = ReplayLink {
            lane: end,
            failures: Arc::clone(&failures),
            slot: slots.replay().start,
            own: replay_waker,
        };
        (Some(replay), Some(lane))
    } else {
        (None, None)
    };
    let links = SinkLinks::new(
        live_lane,
        replay_lane,
        waker.clone(),
        Arc::clone(&failures),
        inputs.clone(),
        Arc::clone(&wiring.reopen_requests),
    );
    let run = built.run;
    wiring.spawn_pinned(&format!("sink-{id}"), "sink", move || run(links))?;
    Ok(SinkThread {
        live: live_end,
        replay,
        metrics,
        kafka: built.kafka,
        loki: built.loki,
        failures,
        inputs,
        health: built.health,
        waker,
    })
}

/// Starts one sink of the pipeline and opens its DLQ.
pub(super) fn start(
    id: &str,
    sink: &SinkTable,
    config: &Config,
    slots: SlotPlan,
    symbols: &Arc<SymbolTable>,
    wiring: &mut Wiring,
) -> Result<SinkStage, PipelineError> {
    let sink_config = &sink.config;
    let thread = spawn_thread(id, sink, config, slots, symbols, wiring)?;
    let (read_to_ack, read_to_ack_collector) = latency_channel();
    let (seal_to_ack, seal_to_ack_collector) = latency_channel();
    let dlq = DlqSink::open(id, &dlq_settings(config));
    let stage = SinkStage {
        id: id.to_string(),
        replay: thread.replay,
        metrics: Arc::clone(&thread.metrics),
        kafka: thread.kafka,
        loki: thread.loki,
        endpoints: sink_config.endpoints(),
        failures: Arc::clone(&thread.failures),
        health: thread.health,
        dlq_metrics: dlq.metrics(),
        seal_request: Arc::clone(&dlq.seal_request),
        latency: Some(SinkLatency {
            sink_id: id.to_string(),
            sink_type: sink_config.type_name(),
            read_to_ack: read_to_ack_collector,
            seal_to_ack: seal_to_ack_collector,
        }),
        waker: thread.waker,
        end: Some(SinkEnd {
            id: id.to_string(),
            lane: thread.live,
            failures: thread.failures,
            inputs: thread.inputs,
            read_to_ack,
            seal_to_ack,
            dlq,
            metrics: thread.metrics,
        }),
    };
    Ok(stage)
}
