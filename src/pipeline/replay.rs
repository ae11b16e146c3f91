//! The replay stages: the daemon's automatic replay thread per sink, and
//! `log-capturer dlq replay`, which runs the same replay against a
//! one-sink pipeline of its own (the sink's thread with only a replay
//! lane), so that a replay by hand goes through the same sink code as live
//! traffic.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::dlq::segment::{ReadableSegment, list_segments};
use crate::labels::SymbolTableBuilder;
use crate::pipeline::sinks::{SinkStage, dlq_settings, spawn_thread};
use crate::pipeline::{PipelineError, Wiring};
use crate::replay::auto::AutoReplay;
use crate::replay::{ReplayError, ReplayReport, Replayer, SegmentReplay, StepLimits};
use crate::sink::link::{LaneEnd, REPLAY_SLOTS, SlotPlan};

fn step_limits(config: &Config) -> StepLimits {
    StepLimits {
        batch_size: config.dispatcher.batch_size.get(),
        batch_bytes: config.dispatcher.batch_bytes.get(),
    }
}

/// Starts the automatic replay thread of one sink.
pub(super) fn start_auto(
    config: &Config,
    stage: &mut SinkStage,
    wiring: &mut Wiring,
) -> Result<(), PipelineError> {
    let link = stage
        .replay
        .take()
        .expect("automatic replay plans a replay lane for every sink");
    let replayer = Replayer::new(
        &stage.id,
        link,
        step_limits(config),
        dlq_settings(config),
        Some(config.dlq.replay_rate.get()),
    );
    let worker = AutoReplay {
        sink: stage.id.clone(),
        dir: config.dlq_dir().join(&stage.id),
        replayer,
        health: Arc::clone(&stage.health),
        metrics: Arc::clone(&stage.dlq_metrics),
        seal_request: Arc::clone(&stage.seal_request),
        after: Duration::from_millis(config.dlq.replay_after_ms.get()),
        stop: Arc::clone(&wiring.stop),
    };
    let name = format!("replay-{}", stage.id);
    let thread = super::spawn(&name, "replay", &mut wiring.stages, move || worker.run())?;
    wiring.auxiliary.push(thread);
    Ok(())
}

/// A one-sink pipeline: a replayer of `sink_id` feeding that sink's
/// thread, whose live lane is never fed.
struct OneSink {
    replayer: Replayer,
    /// The live lane's producer end, held (unused) until the replay ends:
    /// dropping it ends the sink.
    live: LaneEnd,
    wiring: Wiring,
}

fn one_sink(
    config: &Config,
    sink_id: &str,
    sink_config: &crate::config::SinkTable,
) -> Result<OneSink, ReplayError> {
    let mut wiring = Wiring::new(false);
    let slots = SlotPlan {
        live_slots: 1,
        replay_slots: REPLAY_SLOTS,
    };
    let symbols = SymbolTableBuilder::new().freeze();
    let thread = spawn_thread(sink_id, sink_config, config, slots, &symbols, &mut wiring).map_err(
        |error| match error {
            PipelineError::Sink(error) => ReplayError::Sink(error),
            PipelineError::Spawn { name, source } => ReplayError::Spawn { name, source },
            other => unreachable!("a sink thread fails to build or to spawn: {other}"),
        },
    )?;
    let link = thread.replay.expect("the plan has a replay slot");
    let replayer = Replayer::new(
        sink_id,
        link,
        step_limits(config),
        dlq_settings(config),
        None,
    );
    replayer.run_on_current_thread();
    Ok(OneSink {
        replayer,
        live: thread.live,
        wiring,
    })
}

/// Replays every segment of `sink_id`, oldest first, through the sink built
/// from `config`. `progress` gets (records handled, records in all
/// segments) as it goes.
pub fn replay(
    config: &Config,
    sink_id: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, ReplayError> {
    let sink_config = config
        .sinks
        .get(sink_id)
        .ok_or_else(|| ReplayError::UnknownSink(sink_id.to_string()))?;
    let dir = config.dlq_dir().join(sink_id);
    let mut report = ReplayReport::default();
    if !dir.exists() {
        return Ok(report);
    }
    let segments = list_segments(&dir).map_err(|source| ReplayError::Directory {
        path: dir.clone(),
        source,
    })?;
    let mut one = one_sink(config, sink_id, sink_config)?;
    replay_segments(&mut one.replayer, &segments, &mut report, progress);
    finish(one, sink_id)?;
    Ok(report)
}

/// Ends a replay: dropping the lanes lets the sink flush and end.
fn finish(one: OneSink, sink_id: &str) -> Result<(), ReplayError> {
    let sink = one.live.sink.clone();
    drop(one.replayer);
    drop(one.live);
    sink.wake();
    for (name, handle) in one.wiring.threads {
        if handle.join().is_err() {
            tracing::error!(thread = %name, "sink thread panicked during the replay");
            return Err(ReplayError::Panicked {
                sink: sink_id.to_string(),
            });
        }
    }
    Ok(())
}

fn replay_segments(
    replayer: &mut Replayer,
    segments: &[(u64, std::path::PathBuf)],
    report: &mut ReplayReport,
    progress: &mut dyn FnMut(u64, u64),
) {
    let mut total = 0;
    for (_, path) in segments {
        if let Ok(summary) =
            ReadableSegment::open_unlocked(path).and_then(|mut segment| segment.scan(|_| {}))
        {
            total += summary.records;
        }
    }
    let mut handled = 0;
    progress(0, total);
    for (_, path) in segments {
        match replayer.replay_segment(path, &|| false) {
            SegmentReplay::Replayed(counts) => {
                report.records_delivered += counts.delivered;
                report.records_failed += counts.failed;
                report.records_rejected += counts.rejected;
                report.records_skipped += counts.skipped;
                report.records_corrupt += counts.corrupt;
                if counts.deleted {
                    report.segments_deleted += 1;
                } else {
                    report.segments_kept += 1;
                }
                handled += counts.delivered + counts.failed + counts.rejected + counts.skipped;
                progress(handled, total);
            }
            SegmentReplay::Locked | SegmentReplay::Unreadable | SegmentReplay::Stopped => {
                report.segments_kept += 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::path::{Path, PathBuf};

    use crate::dlq::ack::ack_path;
    use crate::dlq::record::{Reason, Record};
    use crate::dlq::{DlqSettings, DlqWriter};

    const RECORDS: u32 = 300;

    /// A config whose sink `out` appends to `output`, and 300 numbered
    /// records in one segment of its DLQ; returns the segment's path.
    fn setup(dir: &Path, output: &Path) -> (Config, PathBuf) {
        let text = format!(
            "[daemon]\ndata_dir = \"{}\"\n[dlq]\nsegment_bytes = 1048576\n[sources.app]\ntype = \"file\"\npaths = [\"/nonexistent\"]\n[sinks.out]\ntype = \"file\"\npath = \"{}\"\nencoding = \"raw\"\n",
            dir.display(),
            output.display()
        );
        let config = Config::from_toml(&text, Path::new("replay.toml")).expect("config");
        let settings = DlqSettings {
            dir: config.dlq_dir(),
            segment_bytes: 1 << 20,
            max_bytes: 1 << 30,
            policy: config.dlq.policy,
        };
        let mut writer = DlqWriter::open("out", &settings).expect("open");
        for number in 0..RECORDS {
            let message = format!("record {number:04}");
            writer
                .append(&Record {
                    timestamp_ns: u64::from(number),
                    attempts: 1,
                    reason: Reason::Shutdown,
                    terminated: true,
                    sink: "out",
                    labels: vec![],
                    message: message.as_bytes(),
                })
                .expect("append");
        }
        drop(writer);
        let segments = list_segments(&config.dlq_dir().join("out")).expect("segments");
        assert_eq!(segments.len(), 1);
        (config, segments[0].1.clone())
    }

    fn numbers(output: &Path) -> Vec<u32> {
        std::fs::read_to_string(output)
            .unwrap_or_default()
            .lines()
            .map(|line| line[7..].parse().expect("number"))
            .collect()
    }

    /// Stops a replay after two steps of 100 records.
    fn replay_two_steps(config: &Config, segment: &Path) {
        let sink_config = config.sinks.get("out").expect("sink out");
        let mut one = one_sink(config, "out", sink_config).expect("replayer");
        one.replayer.set_rate(Some(1000));
        let steps = Cell::new(0);
        let stop = || {
            steps.set(steps.get() + 1);
            steps.get() > 2
        };
        assert_eq!(
            one.replayer.replay_segment(segment, &stop),
            SegmentReplay::Stopped
        );
        finish(one, "out").expect("sink ends");
    }

    /// Goal: a replay stopped part-way resumes after what it delivered and
    /// sends nothing twice. Method: stop after two steps of 100 records,
    /// replay again, compare the output with the records.
    #[test]
    fn stopped_replay_resumes_without_resending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("out.log");
        let (config, segment) = setup(dir.path(), &output);
        replay_two_steps(&config, &segment);
        assert_eq!(numbers(&output), (0..200).collect::<Vec<_>>());
        assert!(ack_path(&segment).exists());

        let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
        assert_eq!(
            (report.records_skipped, report.records_delivered),
            (200, 100),
            "{report:?}"
        );
        assert_eq!(numbers(&output), (0..RECORDS).collect::<Vec<_>>());
        assert!(!segment.exists(), "segment deleted");
        assert!(!ack_path(&segment).exists(), "acknowledgement file deleted");
    }

    /// Goal: a damaged acknowledgement file never loses a record. Method:
    /// stop a replay after 200 records, flip one byte of its file, replay
    /// again: every record is delivered again (duplicates, not loss).
    #[test]
    fn damaged_acknowledgement_file_resends_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let output = dir.path().join("out.log");
        let (config, segment) = setup(dir.path(), &output);
        replay_two_steps(&config, &segment);
        let mut bytes = std::fs::read(ack_path(&segment)).expect("ack file");
        bytes[41] ^= 0x04;
        std::fs::write(ack_path(&segment), &bytes).expect("write");

        let report = replay(&config, "out", &mut |_, _| {}).expect("replay");
        assert_eq!(
            (report.records_skipped, report.records_delivered),
            (0, u64::from(RECORDS))
        );
        let mut expected: Vec<u32> = (0..200).collect();
        expected.extend(0..RECORDS);
        assert_eq!(numbers(&output), expected);
        assert!(!segment.exists());
    }
}
