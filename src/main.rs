//! The `log-capturer` binary: parses the command line, wires the library
//! together and turns errors into exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use log_capturer::config::Config;
use log_capturer::pipeline::{Pipeline, PipelineMetrics};

#[cfg(not(fuzzing))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Validate a config file and exit: 0 if valid, 1 with the error if not.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { file } => check_config(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_CAPTURER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::from_file(path)?;
    println!(
        "{}: ok ({} sources, {} sinks)",
        path.display(),
        config.sources.len(),
        config.sinks.len()
    );
    Ok(())
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::from_file(path)?;
    let terminate = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&terminate))
            .with_context(|| format!("cannot install handler for signal {signal}"))?;
    }
    let started = Instant::now();
    let pipeline = Pipeline::start(&config)
        .with_context(|| format!("cannot start pipeline from {}", path.display()))?;
    tracing::info!(config = %path.display(), sources = config.sources.len(), sinks = config.sinks.len(), "started");
    while !terminate.load(Ordering::Relaxed) && !pipeline.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if terminate.load(Ordering::Relaxed) {
        tracing::info!("signal received; flushing and stopping");
    }
    pipeline.request_stop();
    let metrics = pipeline.metrics().clone();
    let timeout = Duration::from_millis(config.daemon.shutdown_timeout_ms.get());
    let joined = pipeline.join(timeout);
    log_summary(&metrics, started.elapsed());
    joined.context("shutdown did not complete")?;
    Ok(())
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
