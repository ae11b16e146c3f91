//! Renders the Prometheus text exposition format (version 0.0.4) and the
//! `/health` answer.
//!
//! Metric names follow the collector this daemon replaces, so that its
//! dashboards keep working; `docs/METRICS.md` lists each one. Rendering
//! happens on the metrics thread and allocates there, never on a stage.
//!
//! Each submodule declares the families of one part of the pipeline (see
//! [`crate::telemetry::family`]) and renders them from the figures it is
//! handed; [`Exporter::render`] calls them in the order of the exposition.
//!
//! Invariants of the output: no series appears twice (Prometheus rejects
//! such a scrape), so every per-sink series names its sink (`sink`, or
//! `sink_name` in the reference `kafka_*` family); labels this module adds
//! use one name per meaning (`sink`, `source_id`, `file`); line counters
//! count outcomes once per line, and attempts go to their own family.

pub mod dispatcher;
pub mod dlq;
pub mod health;
pub mod kafka;
pub mod latency;
pub mod loki;
pub mod process;
pub mod reload;
pub mod sinks;
pub mod sources;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::sink::SinkHealth;
use crate::sink::kafka::BreakerState;
use crate::telemetry::family::Exposition;
use crate::telemetry::process::{CpuMeter, ProcessReading, read_process, start_time_seconds};
use crate::telemetry::{AllocatorFigures, Telemetry};
use kafka::KafkaFigures;
use process::ProcessFigures;

/// State the metrics thread keeps between scrapes: counter samples for
/// rates, the CPU meter.
#[derive(Debug)]
pub struct Exporter {
    telemetry: Telemetry,
    allocator: Option<AllocatorFigures>,
    cpu: CpuMeter,
    rates: BTreeMap<String, Rate>,
    /// Read once: the start time does not change.
    start_time_seconds: Option<f64>,
}

#[derive(Debug)]
struct Rate {
    last_value: u64,
    last_at: Instant,
    per_second: f64,
}

impl Exporter {
    pub fn new(telemetry: Telemetry, allocator: Option<AllocatorFigures>) -> Self {
        Self {
            telemetry,
            allocator,
            cpu: CpuMeter::new(&read_process()),
            rates: BTreeMap::new(),
            start_time_seconds: start_time_seconds(),
        }
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Called about once a second: takes published latency histograms and
    /// samples the counters behind the per-second rates.
    pub fn tick(&mut self) {
        for sink in &mut self.telemetry.latency {
            sink.read_to_ack.collect();
            sink.seal_to_ack.collect();
        }
        let mut samples: Vec<(String, u64)> = Vec::new();
        for source in &self.telemetry.metrics.sources {
            samples.push((
                format!("source:{}", source.id),
                source.lines_dispatched.get(),
            ));
        }
        samples.push((
            "dispatcher".to_string(),
            self.telemetry.metrics.dispatcher.lines_processed.get(),
        ));
        for sink in &self.telemetry.metrics.sinks {
            samples.push((format!("sink:{}", sink.id), sink.lines_sent.get()));
        }
        for (component, value) in samples {
            let rate = self.rates.entry(component).or_insert(Rate {
                last_value: value,
                last_at: Instant::now(),
                per_second: 0.0,
            });
            let elapsed = rate.last_at.elapsed().as_secs_f64();
            if elapsed >= 0.5 {
                rate.per_second = value.saturating_sub(rate.last_value) as f64 / elapsed;
                rate.last_value = value;
                rate.last_at = Instant::now();
            }
        }
    }

    /// Components that are not healthy, with the reason; empty if all are.
    pub fn unhealthy(&self) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for stage in &self.telemetry.stages {
            if !stage.is_alive() {
                problems.push((stage.name.clone(), "thread has stopped".to_string()));
            }
        }
        for (sink, kafka) in &self.telemetry.metrics.kafka {
            if kafka.breaker_state.get() == BreakerState::Open as u64 {
                problems.push((
                    format!("sink-{sink}"),
                    "Kafka circuit breaker is open".to_string(),
                ));
            }
        }
        for (sink, loki) in &self.telemetry.metrics.loki {
            if !loki.is_reachable() {
                problems.push((
                    format!("sink-{sink}"),
                    "Loki circuit breaker is open".to_string(),
                ));
            }
        }
        problems
    }

    /// The `/health` body: `{"status":"ok"|"unhealthy","components":{...}}`.
    pub fn health_json(&self) -> (bool, String) {
        let problems: BTreeMap<String, String> = self.unhealthy().into_iter().collect();
        let mut components = serde_json::Map::new();
        for stage in &self.telemetry.stages {
            let state = problems
                .get(&stage.name)
                .cloned()
                .unwrap_or_else(|| "ok".to_string());
            components.insert(stage.name.clone(), serde_json::Value::String(state));
        }
        let healthy = problems.is_empty();
        let body = serde_json::json!({
            "status": if healthy { "ok" } else { "unhealthy" },
            "components": components,
        });
        (healthy, body.to_string())
    }

    /// The whole exposition.
    pub fn render(&mut self) -> String {
        let reading = read_process();
        self.render_with(&reading)
    }

    /// The whole exposition, from one reading of the process's figures
    /// (tests pass a fixed one, as a live reading differs on every call).
    fn render_with(&mut self, reading: &ProcessReading) -> String {
        let mut out = Exposition::new();
        let telemetry = &self.telemetry;
        let metrics = &telemetry.metrics;
        sources::render(&mut out, &metrics.sources);
        sources::render_symbols(&mut out, &metrics.symbols);
        dispatcher::render(&mut out, metrics, telemetry.ring_capacity_entries);
        let rates = self.rates.iter();
        dispatcher::render_rates(
            &mut out,
            rates.map(|(name, rate)| (name.as_str(), rate.per_second)),
        );
        sinks::render(&mut out, &metrics.sinks);
        health::render_errors(&mut out, metrics);
        let unhealthy: BTreeMap<String, String> = self.unhealthy().into_iter().collect();
        health::render_component_health(&mut out, &telemetry.stages, &unhealthy);
        dispatcher::render_retry(
            &mut out,
            &metrics.dispatcher,
            telemetry.retry_capacity_batches,
        );
        dlq::render(&mut out, &metrics.dlq);
        latency::render(&mut out, &telemetry.latency);
        let kafka_figures = KafkaFigures {
            kafka: &metrics.kafka,
            sinks: &metrics.sinks,
            dlq: &metrics.dlq,
            brokers: &telemetry.kafka_brokers,
        };
        kafka::render(&mut out, &kafka_figures);
        loki::render(&mut out, &metrics.loki);
        let process_figures = ProcessFigures {
            reading,
            allocator: self.allocator,
            cpu_percent: self.cpu.update(reading),
            start_time_seconds: self.start_time_seconds,
        };
        process::render(&mut out, &process_figures);
        reload::render(&mut out, &telemetry.reloads);
        out.into_text()
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::StageHealth;
    use crate::telemetry::PipelineMetrics;
    use std::sync::Arc;

    fn exporter_with(stages: Vec<Arc<StageHealth>>) -> Exporter {
        let metrics = PipelineMetrics {
            sources: Vec::new(),
            dispatcher: Arc::default(),
            sinks: Vec::new(),
            kafka: Vec::new(),
            loki: Vec::new(),
            failures: Vec::new(),
            dlq: Vec::new(),
            symbols: Arc::new(crate::labels::SymbolTable::new(
                crate::labels::SymbolLimits::default(),
            )),
        };
        let telemetry = Telemetry {
            metrics,
            stages,
            latency: Vec::new(),
            kafka_brokers: Vec::new(),
            ring_capacity_entries: 1,
            retry_capacity_batches: 1,
            reloads: Arc::default(),
        };
        Exporter::new(telemetry, None)
    }

    /// Goal: a stage thread that died makes `/health` unhealthy and names
    /// it. Method: one live and one dead stage flag.
    #[test]
    fn dead_stage_makes_health_fail_and_names_it() {
        let alive = Arc::new(StageHealth {
            name: "source-app".to_string(),
            stage_type: "source",
            ..StageHealth::default()
        });
        alive.set_alive(true);
        let dead = Arc::new(StageHealth {
            name: "sink-kafka".to_string(),
            stage_type: "sink",
            ..StageHealth::default()
        });
        let mut exporter = exporter_with(vec![alive, Arc::clone(&dead)]);
        let (healthy, body) = exporter.health_json();
        assert!(!healthy);
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(value["status"], "unhealthy");
        assert_eq!(value["components"]["sink-kafka"], "thread has stopped");
        assert_eq!(value["components"]["source-app"], "ok");
        assert!(exporter.render().contains(
            "log_capturer_component_health{component_type=\"sink\",component_name=\"sink-kafka\"} 0"
        ));
        dead.set_alive(true);
        assert!(exporter.health_json().0);
    }
}
