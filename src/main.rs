//! The `log-capturer` binary: parses the command line, wires the library
//! together and turns errors into exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use log_capturer::config::{Config, Loaded};
use log_capturer::error_chain::ErrorChain;
use log_capturer::pipeline::{Pipeline, PipelineMetrics};
use log_capturer::telemetry::http::MetricsServer;

#[cfg(not(fuzzing))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Refuses transparent huge pages before the allocator maps its arena: an
/// `.init_array` entry runs before `main`, and so before the first
/// allocation. mimalloc marks its arena `MADV_HUGEPAGE`, and a 2 MiB page
/// faulted in for a few kilobytes of start-up data would stay resident for
/// the whole run (three of them were: 6 MiB of an 19 MiB daemon).
/// `[daemon] transparent_huge_pages = true` allows them again.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static REFUSE_HUGE_PAGES_AT_LOAD: extern "C" fn() = refuse_huge_pages_at_load;

#[cfg(target_os = "linux")]
extern "C" fn refuse_huge_pages_at_load() {
    set_huge_pages_refused(true);
    // librdkafka allocates with the C library's malloc, which gives each
    // thread that contends its own arena of 64 MiB address space and a
    // few hundred KiB resident; its threads share one instead.
    // SAFETY: mallopt takes integers and only changes the C allocator's
    // settings; it is called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Sets the process's `PR_SET_THP_DISABLE` flag; false if the kernel
/// refused.
fn set_huge_pages_refused(refused: bool) -> bool {
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and
    // changes a flag of this process; it touches no memory of ours, so it
    // is sound before `main` too.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            libc::c_ulong::from(refused),
            0,
            0,
            0,
        ) == 0
    }
}

/// Ships log lines from files to Kafka, Loki and files, with flat memory.
#[derive(Debug, Parser)]
#[command(name = "log-capturer", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT (or end of input with
    /// `exit_on_eof`).
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file as `run` does before starting, and exit: 0 if
    /// valid (warnings, such as a glob that matches no file, are printed),
    /// 1 with the error if not.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Run the whole pipeline on an embedded default: an in-process Kafka,
    /// generated numbered lines, a Kafka outage in the middle, the DLQ
    /// replayed once Kafka is back, a status line each second, and a summary
    /// (generated, delivered, in DLQ, replayed, duplicates, lost). About a
    /// minute with the defaults. Exits 1 if any line was lost.
    Demo {
        /// Lines per second.
        #[arg(long, default_value_t = log_capturer::demo::RATE_DEFAULT)]
        rate: u64,
        /// Seconds before the outage.
        #[arg(long, default_value_t = log_capturer::demo::BEFORE_SECS_DEFAULT)]
        before_secs: u64,
        /// Seconds of outage (every broker down).
        #[arg(long, default_value_t = log_capturer::demo::OUTAGE_SECS_DEFAULT)]
        outage_secs: u64,
        /// Seconds after the outage (the DLQ is replayed meanwhile).
        #[arg(long, default_value_t = log_capturer::demo::AFTER_SECS_DEFAULT)]
        after_secs: u64,
    },
    /// Inspect and replay the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Show a live view of a running daemon, read from its metrics
    /// endpoint: lines/s in and out per sink, queues, RSS, threads.
    Top {
        /// The daemon's `metrics_addr`.
        #[arg(long, default_value = "127.0.0.1:8401")]
        address: std::net::SocketAddr,
        /// Print one view (rates over one second) and exit.
        #[arg(long)]
        once: bool,
    },
    /// Run librdkafka's mock Kafka cluster on loopback until SIGTERM, for
    /// trying the daemon (and clients such as kcat) without a Kafka
    /// installation. Prints `bootstrap: 127.0.0.1:PORT` as its first line.
    /// SIGUSR1 takes every broker down, SIGUSR2 brings them back.
    KafkaMock {
        /// A topic to create, as NAME or NAME:PARTITIONS (default 4
        /// partitions). Repeatable.
        #[arg(long = "topic", value_name = "NAME[:PARTITIONS]")]
        topics: Vec<String>,
        /// Number of brokers in the cluster.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
        brokers: i32,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List the segments of every sink's DLQ: records, corrupt regions,
    /// torn tails, bytes, and a note per damaged segment. Takes no lock:
    /// safe while the daemon runs.
    List {
        /// The daemon's config file (for `[dlq] dir` or `daemon.data_dir`).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the records of the DLQ, oldest first (the segment being
    /// written up to its last complete record). Takes no lock.
    Dump {
        /// The daemon's config file (for `[dlq] dir` or `daemon.data_dir`).
        #[arg(long, short)]
        config: PathBuf,
        /// Only this sink's records.
        #[arg(long)]
        sink: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Deliver a sink's DLQ records to that sink, deleting each segment once
    /// all its records were acknowledged. Safe while the daemon runs: the
    /// segment it writes is locked and skipped.
    Replay {
        /// The daemon's config file (for `[dlq] dir` and the sink's
        /// settings).
        #[arg(long, short)]
        config: PathBuf,
        /// The sink id whose records to replay.
        #[arg(long)]
        sink: String,
    },
}

fn main() -> ExitCode {
    // The daemon takes SIGHUP before anything else, argument parsing
    // included: a HUP in its first milliseconds (logrotate racing a
    // restart) must not take the default action and end it.
    let hangup = Arc::new(AtomicBool::new(false));
    if std::env::args_os()
        .nth(1)
        .is_some_and(|command| command == "run")
        && let Err(error) =
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup))
    {
        eprintln!("error: cannot install handler for SIGHUP: {error}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    // The demo's status table is its output; the daemon's INFO lines (each
    // replayed segment, ...) would interleave with it.
    let level_default = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    init_tracing(level_default);
    let result = match cli.command {
        Command::Run { config } => run(&config, hangup),
        Command::CheckConfig { file } => check_config(&file),
        Command::KafkaMock { topics, brokers } => kafka_mock(&topics, brokers),
        Command::Dlq { command } => dlq(command),
        Command::Demo {
            rate,
            before_secs,
            outage_secs,
            after_secs,
        } => demo(log_capturer::demo::DemoOptions {
            rate,
            before: Duration::from_secs(before_secs),
            outage: Duration::from_secs(outage_secs),
            after: Duration::from_secs(after_secs),
        }),
        // TopError names the address.
        Command::Top { address, once } => log_capturer::top::run(address, once).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", ErrorChain(&*error));
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level_default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_CAPTURER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level_default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let Loaded { config, warnings } = Config::load(path)?;
    for warning in &warnings {
        println!("warning: {warning}");
    }
    println!(
        "{}: ok ({} sources, {} sinks)",
        path.display(),
        config.sources.len(),
        config.sinks.len()
    );
    Ok(())
}

/// `hangup` is set by SIGHUP; its handler is installed first thing in
/// `main`.
fn run(path: &std::path::Path, hangup: Arc<AtomicBool>) -> anyhow::Result<()> {
    // Handlers before the config is read: a signal during start-up must be
    // seen by the loop below.
    let terminate = Arc::new(AtomicBool::new(false));
    // Each of these signals also writes a byte to `signalled`, which ends
    // the main loop's wait at once.
    let (mut signalled, signal_writer) =
        std::os::unix::net::UnixStream::pair().context("cannot create the signal socket pair")?;
    signal_writer
        .set_nonblocking(true)
        .context("cannot set up the signal socket")?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&terminate))
            .with_context(|| format!("cannot install handler for signal {signal}"))?;
    }
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        let writer = signal_writer
            .try_clone()
            .context("cannot set up the signal socket")?;
        signal_hook::low_level::pipe::register(signal, writer)
            .with_context(|| format!("cannot install handler for signal {signal}"))?;
    }
    signalled
        .set_read_timeout(Some(Duration::from_millis(100)))
        .context("cannot set up the signal socket")?;
    let Loaded { config, warnings } = Config::load(path)?;
    for warning in &warnings {
        tracing::warn!(%warning, "config");
    }
    if config.daemon.transparent_huge_pages && !set_huge_pages_refused(false) {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot allow transparent huge pages");
    }
    let started = Instant::now();
    let mut pipeline = Pipeline::start(&config)
        .with_context(|| format!("cannot start pipeline from {}", path.display()))?;
    let telemetry = pipeline
        .take_telemetry()
        .context("telemetry is taken once")?;
    let server = match MetricsServer::start(
        config.daemon.metrics_addr,
        telemetry,
        Some(allocator_figures),
    ) {
        Ok(server) => server,
        Err(error) => {
            // Nothing may be lost: let what was read drain before failing.
            pipeline.request_stop();
            let _ = pipeline.join(Duration::from_millis(
                config.daemon.shutdown_timeout_ms.get(),
            ));
            return Err(error.into());
        }
    };
    tracing::info!(config = %path.display(), sources = config.sources.len(), sinks = config.sinks.len(), metrics = %server.address(), "started");
    let mut code_pages_released = false;
    while !terminate.load(Ordering::Relaxed) && !pipeline.is_finished() {
        if !code_pages_released && started.elapsed() >= CODE_PAGES_RELEASE_AFTER {
            code_pages_released = true;
            release_code_pages();
        }
        if hangup.swap(false, Ordering::Relaxed) {
            // logrotate's postrotate sends HUP after moving output files.
            tracing::info!("SIGHUP received; reopening file sink outputs");
            pipeline.reopen_outputs();
        }
        // A signal ends this wait at once; otherwise the thread looks at
        // the pipeline ten times a second (an idle daemon's only cost here).
        let mut byte = [0u8; 16];
        let _ = std::io::Read::read(&mut signalled, &mut byte);
    }
    if terminate.load(Ordering::Relaxed) {
        tracing::info!("signal received; flushing and stopping");
    }
    pipeline.request_stop();
    let metrics = pipeline.metrics().clone();
    let timeout = Duration::from_millis(config.daemon.shutdown_timeout_ms.get());
    let joined = pipeline.join(timeout);
    log_summary(&metrics, started.elapsed());
    server.stop();
    match joined {
        Err(log_capturer::pipeline::PipelineError::ShutdownTimeout {
            stages,
            data_safe: true,
            ..
        }) => {
            // Every line read is delivered or in the DLQ; a sink still
            // waiting on its destination must not hold the exit.
            tracing::warn!(
                stages,
                "exiting with sink threads still busy; undelivered batches are in the DLQ"
            );
        }
        other => other.context("shutdown did not complete")?,
    }
    Ok(())
}

/// How long after start-up the pages of code that only start-up ran are
/// given back: by then every stage has run its first rounds.
const CODE_PAGES_RELEASE_AFTER: Duration = Duration::from_secs(2);

/// Gives back the resident pages of start-up code (see
/// [`log_capturer::resident`]); a failure only costs memory.
fn release_code_pages() {
    match log_capturer::resident::release_code_pages() {
        Ok(released) => tracing::debug!(
            mappings = released.mappings,
            resident_kib = released.resident_bytes / 1024,
            "released the pages of start-up code"
        ),
        Err(error) => {
            tracing::warn!(%error, "cannot read /proc/self/smaps to release start-up code pages")
        }
    }
}

/// mimalloc's own figures for `log_capturer_memory_usage_bytes`. Its RSS
/// figures are left out: its peak is `getrusage`'s `ru_maxrss`, refreshed
/// lazily and seen below the current RSS; the exporter reads both RSS
/// figures from `/proc/self/status` instead.
fn allocator_figures() -> Vec<(&'static str, u64)> {
    let mut values = [0usize; 8];
    let [
        elapsed,
        user,
        system,
        current_rss,
        peak_rss,
        current_commit,
        peak_commit,
        page_faults,
    ] = &mut values;
    // SAFETY: mi_process_info writes one usize through each pointer; all
    // eight point to distinct, live, writable locals of this frame.
    unsafe {
        libmimalloc_sys::mi_process_info(
            elapsed,
            user,
            system,
            current_rss,
            peak_rss,
            current_commit,
            peak_commit,
            page_faults,
        );
    }
    vec![
        ("allocator_committed", values[5] as u64),
        ("allocator_committed_peak", values[6] as u64),
    ]
}

fn log_summary(metrics: &PipelineMetrics, elapsed: Duration) {
    let read: u64 = metrics
        .sources
        .iter()
        .map(|source| source.lines_read.get())
        .sum();
    let processed = metrics.dispatcher.lines_processed.get();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    tracing::info!(
        lines_read = read,
        lines_processed = processed,
        batches = metrics.dispatcher.batches_sealed.get(),
        seconds = format!("{seconds:.3}"),
        lines_per_second = format!("{:.0}", processed as f64 / seconds),
        "stopped"
    );
    for sink in &metrics.sinks {
        tracing::info!(sink = %sink.id, sink_type = sink.sink_type, lines_sent = sink.lines_sent.get(), lines_failed = sink.lines_failed.get(), "sink summary");
    }
}

/// Parses `NAME[:PARTITIONS]`.
fn parse_topic(spec: &str) -> anyhow::Result<(String, i32)> {
    let (name, partitions) = match spec.split_once(':') {
        Some((name, partitions)) => {
            let partitions: i32 = partitions
                .parse()
                .ok()
                .filter(|count| (1..=10_000).contains(count))
                .with_context(|| {
                    format!("--topic {spec:?}: PARTITIONS must be a number from 1 to 10000")
                })?;
            (name, partitions)
        }
        None => (spec, 4),
    };
    anyhow::ensure!(
        !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')),
        "--topic {spec:?}: NAME must be 1 or more characters of [A-Za-z0-9._-]"
    );
    Ok((name.to_string(), partitions))
}

fn kafka_mock(topics: &[String], brokers: i32) -> anyhow::Result<()> {
    use std::io::Write;
    let topics: Vec<(String, i32)> = topics
        .iter()
        .map(|spec| parse_topic(spec))
        .collect::<anyhow::Result<_>>()?;
    let terminate = Arc::new(AtomicBool::new(false));
    let down = Arc::new(AtomicBool::new(false));
    let up = Arc::new(AtomicBool::new(false));
    for (signal, flag) in [
        (signal_hook::consts::SIGTERM, &terminate),
        (signal_hook::consts::SIGINT, &terminate),
        (signal_hook::consts::SIGUSR1, &down),
        (signal_hook::consts::SIGUSR2, &up),
    ] {
        signal_hook::flag::register(signal, Arc::clone(flag))
            .with_context(|| format!("cannot install handler for signal {signal}"))?;
    }
    // The mock cluster is not `Send`: it is created, used and dropped here.
    let cluster = rdkafka::mocking::MockCluster::new(brokers)
        .context("cannot start the mock Kafka cluster")?;
    for (name, partitions) in &topics {
        cluster
            .create_topic(name, *partitions, 1)
            .with_context(|| format!("cannot create topic {name} with {partitions} partitions"))?;
    }
    let mut stdout = std::io::stdout();
    writeln!(stdout, "bootstrap: {}", cluster.bootstrap_servers())?;
    for (name, partitions) in &topics {
        writeln!(stdout, "topic: {name} partitions={partitions}")?;
    }
    stdout.flush()?;
    while !terminate.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        for (flag, going_down) in [(&down, true), (&up, false)] {
            if !flag.swap(false, Ordering::Relaxed) {
                continue;
            }
            for broker in 1..=brokers {
                let result = if going_down {
                    cluster.broker_down(broker)
                } else {
                    cluster.broker_up(broker)
                };
                result
                    .with_context(|| format!("cannot change the state of mock broker {broker}"))?;
            }
            writeln!(
                stdout,
                "brokers: {}",
                if going_down { "down" } else { "up" }
            )?;
            stdout.flush()?;
        }
    }
    Ok(())
}

fn dlq(command: DlqCommand) -> anyhow::Result<()> {
    use log_capturer::dlq::inspect;
    use log_capturer::pipeline::replay;
    let config_path = match &command {
        DlqCommand::List { config }
        | DlqCommand::Dump { config, .. }
        | DlqCommand::Replay { config, .. } => config.clone(),
    };
    let config = Config::from_file(&config_path)?;
    let dlq_dir = config.dlq_dir();
    // Standard output is locked only by the commands that write their
    // listing to it: a replay into a `stdout` sink writes it from the
    // sink's thread.
    match command {
        DlqCommand::List { .. } => inspect::write_listing(&mut std::io::stdout().lock(), &dlq_dir)
            .context("cannot list the DLQ")?,
        DlqCommand::Dump { sink, json, .. } => {
            let mut stdout = std::io::stdout().lock();
            let count = inspect::write_dump(&mut stdout, &dlq_dir, sink.as_deref(), json)
                .context("cannot dump the DLQ")?;
            eprintln!("{count} records");
        }
        DlqCommand::Replay { sink, .. } => {
            let mut progress = progress_bar(&sink);
            let report = replay::replay(&config, &sink, &mut progress)
                .with_context(|| format!("cannot replay the DLQ of sink {sink}"))?;
            eprintln!();
            println!(
                "sink {sink}: {} records delivered, {} failed, {} rejected (moved to rejected/), {} acknowledged earlier, {} corrupt skipped; {} segments deleted, {} kept",
                report.records_delivered,
                report.records_failed,
                report.records_rejected,
                report.records_skipped,
                report.records_corrupt,
                report.segments_deleted,
                report.segments_kept
            );
            anyhow::ensure!(
                report.records_failed == 0,
                "{} records of sink {sink} were not delivered; their segments are kept",
                report.records_failed
            );
        }
    }
    Ok(())
}

/// A progress bar on standard error: `[#####     ] 50% 500/1000 records`.
fn progress_bar(sink: &str) -> impl FnMut(u64, u64) + '_ {
    move |done, total| {
        let width = 30;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        let percent = (done * 100).checked_div(total).unwrap_or(100);
        let bar: String = (0..width)
            .map(|index| if index < filled { '#' } else { ' ' })
            .collect();
        eprint!("\rreplay {sink}: [{bar}] {percent:>3}% {done}/{total} records");
    }
}

fn demo(options: log_capturer::demo::DemoOptions) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.rate > 0 && options.rate <= 1_000_000,
        "--rate must be from 1 to 1000000 lines/s"
    );
    let mut stdout = std::io::stdout();
    let summary = log_capturer::demo::run_demo(&options, &mut stdout)?;
    anyhow::ensure!(summary.lost == 0, "{} lines were lost", summary.lost);
    Ok(())
}
