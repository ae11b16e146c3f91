//! The dispatcher stage: its arenas, its retry settings, and the ends of
//! every source and sink it links.

use std::sync::Arc;
use std::time::Duration;

use bumpalo::Bump;

use crate::batch::arena_capacity_bytes;
use crate::clock::now_ns;
use crate::config::Config;
use crate::dispatch::{BatchSettings, Dispatcher, DispatcherParts, RetrySettings};
use crate::labels::SymbolTable;
use crate::metrics::DispatcherMetrics;
use crate::pipeline::sinks::SinkStage;
use crate::pipeline::sources::SourceStage;
use crate::pipeline::{PipelineError, Wiring, slot_plan};
use crate::retry::Backoff;

/// Builds the dispatcher from the stages' ends and starts its thread.
pub(super) fn start(
    config: &Config,
    sinks: &mut [SinkStage],
    sources: &mut [SourceStage],
    symbols: Arc<SymbolTable>,
    wiring: &mut Wiring,
) -> Result<Arc<DispatcherMetrics>, PipelineError> {
    // The dispatcher tags each entry with the position of its source's
    // end; sinks' `inputs` name sources by `Config::source_index`.
    for (position, stage) in sources.iter().enumerate() {
        assert_eq!(
            config.source_index(&stage.id).map(usize::from),
            Some(position),
            "source stages are built in the order of Config::sources"
        );
    }
    let metrics = Arc::new(DispatcherMetrics::default());
    let settings = BatchSettings {
        batch_size: config.dispatcher.batch_size.get(),
        batch_bytes: config.dispatcher.batch_bytes.get(),
        batch_timeout: Duration::from_millis(config.dispatcher.batch_timeout_ms.get()),
        latency_target: Duration::from_millis(config.dispatcher.latency_target_ms.get()),
        fresh_max: config.dispatcher.batches_in_flight.get(),
    };
    let parts = DispatcherParts {
        arenas: arenas(config, &settings),
        settings,
        retry: retry_settings(config),
        sources: sources
            .iter_mut()
            .map(|stage| stage.end.take().expect("a source end is taken once"))
            .collect(),
        sinks: sinks
            .iter_mut()
            .map(|stage| stage.end.take().expect("a sink end is taken once"))
            .collect(),
        symbols,
        stop: Arc::clone(&wiring.stop),
        own: wiring.dispatcher.clone(),
        metrics: Arc::clone(&metrics),
    };
    // The dispatcher is built on its own thread: an open batch borrows its
    // arena and is not `Send`, so the dispatcher never moves.
    wiring.spawn_pinned("dispatcher", "dispatcher", move || {
        Dispatcher::new(parts).run()
    })?;
    Ok(metrics)
}

/// One arena per live slot. The arenas of the live path are allocated now,
/// at full size. The ones that only the retry wheel needs start empty and
/// grow on first use, so that memory an outage may need is not resident
/// before. The pool is used as a stack: the sized arenas sit on top.
fn arenas(config: &Config, settings: &BatchSettings) -> Vec<Bump> {
    let slot_count = slot_plan(config).live_slots;
    let arena_bytes = arena_capacity_bytes(settings.batch_size, settings.batch_bytes);
    let live_arenas = config.dispatcher.batches_in_flight.get();
    (0..slot_count)
        .map(|index| {
            if index < slot_count - live_arenas {
                Bump::new()
            } else {
                Bump::with_capacity(arena_bytes)
            }
        })
        .collect()
}

fn retry_settings(config: &Config) -> RetrySettings {
    RetrySettings {
        max_attempts: config.retry.max_attempts.get(),
        backoff: Backoff::new(
            Duration::from_millis(config.retry.base_delay_ms.get()),
            Duration::from_millis(config.retry.max_delay_ms.get()),
            now_ns(),
        ),
        wheel_capacity: config.retry.max_batches.get(),
        // The dispatcher gives up on sinks before the process does.
        drain_timeout: Duration::from_millis(config.daemon.shutdown_timeout_ms.get() * 4 / 5),
    }
}
