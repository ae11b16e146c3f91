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
use log_capturer::handover::{Handover, Inherited, Listeners};
use log_capturer::metrics::ReloadMetrics;
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

/// The signals the daemon handles, and how the main loop learns of them.
struct Signals {
    /// Set by SIGHUP; its handler is installed first thing in `main`.
    hangup: Arc<AtomicBool>,
    /// Set by SIGTERM and SIGINT.
    terminate: Arc<AtomicBool>,
    /// Each of these signals also writes a byte here, which ends the main
    /// loop's wait at once.
    signalled: std::os::unix::net::UnixStream,
}

impl Signals {
    fn install(hangup: Arc<AtomicBool>) -> anyhow::Result<Signals> {
        let terminate = Arc::new(AtomicBool::new(false));
        let (signalled, signal_writer) = std::os::unix::net::UnixStream::pair()
            .context("cannot create the signal socket pair")?;
        signal_writer
            .set_nonblocking(true)
            .context("cannot set up the signal socket")?;
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&terminate))
                .with_context(|| format!("cannot install handler for signal {signal}"))?;
        }
        for signal in HANDLED_SIGNALS {
            let writer = signal_writer
                .try_clone()
                .context("cannot set up the signal socket")?;
            signal_hook::low_level::pipe::register(signal, writer)
                .with_context(|| format!("cannot install handler for signal {signal}"))?;
        }
        signalled
            .set_read_timeout(Some(MAIN_LOOP_TURN))
            .context("cannot set up the signal socket")?;
        Ok(Signals {
            hangup,
            terminate,
            signalled,
        })
    }

    fn terminating(&self) -> bool {
        self.terminate.load(Ordering::Relaxed)
    }

    /// Waits up to [`MAIN_LOOP_TURN`], less if a signal arrives.
    fn wait(&mut self) {
        let mut byte = [0u8; 16];
        let _ = std::io::Read::read(&mut self.signalled, &mut byte);
    }
}

/// SIGHUP, SIGTERM and SIGINT.
const HANDLED_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGINT,
];

/// Blocks (`true`) or unblocks the handled signals for the calling thread.
/// Threads inherit the mask of the thread that starts them, so every
/// thread is started while they are blocked and only the main thread
/// takes them: a signal can then be held pending across `execve` (the
/// pending set and the mask survive it), never taken by a thread that the
/// exec is about to end.
fn mask_handled_signals(block: bool) {
    // SAFETY: `set` is a local sigset_t initialised by sigemptyset before
    // sigaddset and pthread_sigmask read it; the old mask is not asked for
    // (null). These calls touch only this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        for signal in HANDLED_SIGNALS {
            libc::sigaddset(&raw mut set, signal);
        }
        let how = if block {
            libc::SIG_BLOCK
        } else {
            libc::SIG_UNBLOCK
        };
        libc::pthread_sigmask(how, &raw const set, std::ptr::null_mut());
    }
}

/// Runs the daemon until SIGTERM/SIGINT (or every source is done). A
/// SIGHUP with a changed, valid config drains the pipeline and executes
/// this binary again with the listening sockets handed over; if that exec
/// fails, the new config is started in this process instead.
fn run(path: &std::path::Path, hangup: Arc<AtomicBool>) -> anyhow::Result<()> {
    // Blocked until the pipeline runs: see `mask_handled_signals`. A
    // process re-executed by a reload starts with them blocked already.
    mask_handled_signals(true);
    // Handlers before the config is read: a signal during start-up must be
    // seen by the loop below.
    let mut signals = Signals::install(hangup)?;
    let notifier = match log_capturer::notify::Notifier::from_env() {
        Ok(notifier) => notifier.map(Arc::new),
        Err(error) => {
            tracing::warn!(error = %ErrorChain(&error), "service manager notifications are off");
            None
        }
    };
    let reloads = Arc::new(ReloadMetrics::default());
    log_capturer::reload::restore_counts(&reloads);
    let watchdog = Watchdog::start(notifier.clone())?;
    let mut handover = Handover {
        inherited: Inherited::from_env(),
        listeners: Listeners::new(),
    };
    let daemon = DaemonContext {
        path,
        notifier,
        reloads,
        watchdog,
    };
    loop {
        match serve(&daemon, &mut signals, handover)? {
            Served::Stopped => return Ok(()),
            Served::Reload(listeners) => {
                let error = reexec(&listeners, &daemon.reloads, &signals);
                tracing::error!(error = %ErrorChain(&*error), "cannot execute the daemon again; starting the new config in this process");
                mask_handled_signals(false);
                handover = Handover {
                    inherited: listeners.into_inherited(),
                    listeners: Listeners::new(),
                };
            }
        }
    }
}

/// What stays the same across pipelines of one process.
struct DaemonContext<'a> {
    path: &'a std::path::Path,
    notifier: Option<Arc<log_capturer::notify::Notifier>>,
    reloads: Arc<ReloadMetrics>,
    watchdog: Watchdog,
}

impl DaemonContext<'_> {
    fn notify(&self, state: &str) {
        if let Some(notifier) = &self.notifier
            && let Err(error) = notifier.notify(state)
        {
            tracing::warn!(%error, state, "cannot notify the service manager");
        }
    }
}

/// How one pipeline ended.
enum Served {
    /// SIGTERM/SIGINT, or every source done: the process exits.
    Stopped,
    /// A valid new config: the pipeline drained, its sockets to hand over.
    Reload(Listeners),
}

/// Starts a pipeline on the config at `daemon.path`, runs it until a
/// signal, and drains it.
fn serve(
    daemon: &DaemonContext<'_>,
    signals: &mut Signals,
    handover: Handover,
) -> anyhow::Result<Served> {
    let path = daemon.path;
    let read_text = || {
        std::fs::read(path).with_context(|| format!("cannot read config file {}", path.display()))
    };
    let text_before = read_text()?;
    let Loaded { config, warnings } = Config::load(path)?;
    // The text the daemon runs on; if the file changed while it was being
    // read, none, so that the next SIGHUP applies whatever it holds then.
    let running_text = if read_text()? == text_before {
        text_before
    } else {
        Vec::new()
    };
    for warning in &warnings {
        tracing::warn!(%warning, "config");
    }
    if config.daemon.transparent_huge_pages && !set_huge_pages_refused(false) {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot allow transparent huge pages");
    }
    let running = start_pipeline(daemon, &config, handover)?;
    daemon.notify(&format!(
        "READY=1\nSTATUS=running: {} sources, {} sinks",
        config.sources.len(),
        config.sinks.len()
    ));
    tracing::info!(config = %path.display(), sources = config.sources.len(), sinks = config.sinks.len(), metrics = %running.server.address(), "started");
    let reload = wait_for_signal(
        daemon,
        signals,
        &running.pipeline,
        &running_text,
        running.started,
    );
    daemon.watchdog.draining();
    if reload {
        daemon.notify("RELOADING=1\nSTATUS=reloading: draining");
        // The next process receives on the Unix sockets: their paths stay.
        running.pipeline.listeners().keep_paths();
    } else {
        daemon.notify("STOPPING=1\nSTATUS=stopping: draining");
        if signals.terminating() {
            tracing::info!("signal received; flushing and stopping");
        }
    }
    let listeners = running.drain()?;
    Ok(if reload {
        Served::Reload(listeners)
    } else {
        Served::Stopped
    })
}

/// A started pipeline and its metrics endpoint.
struct Running {
    pipeline: Pipeline,
    server: MetricsServer,
    started: Instant,
    shutdown_timeout: Duration,
}

/// Starts the pipeline and the metrics endpoint with the handled signals
/// blocked (every thread started inherits that; see
/// `mask_handled_signals`), then unblocks them for this thread, and has
/// the watchdog watch the new stages.
fn start_pipeline(
    daemon: &DaemonContext<'_>,
    config: &Config,
    handover: Handover,
) -> anyhow::Result<Running> {
    let started = Instant::now();
    mask_handled_signals(true);
    let mut pipeline = Pipeline::start_with(config, handover, &daemon.reloads)
        .with_context(|| format!("cannot start pipeline from {}", daemon.path.display()))?;
    let telemetry = pipeline
        .take_telemetry()
        .context("telemetry is taken once")?;
    let stages = telemetry.stages.clone();
    let shutdown_timeout = Duration::from_millis(config.daemon.shutdown_timeout_ms.get());
    let server = match MetricsServer::start(
        config.daemon.metrics_addr,
        telemetry,
        Some(allocator_figures),
    ) {
        Ok(server) => server,
        Err(error) => {
            // Nothing may be lost: let what was read drain before failing.
            pipeline.request_stop();
            let _ = pipeline.join(shutdown_timeout);
            return Err(error.into());
        }
    };
    mask_handled_signals(false);
    daemon.watchdog.watch(stages);
    Ok(Running {
        pipeline,
        server,
        started,
        shutdown_timeout,
    })
}

impl Running {
    /// Stops the sources and waits until every line read is delivered or
    /// in the DLQ and the positions are written (as at SIGTERM); returns
    /// the listening sockets' duplicates, for a reload.
    fn drain(self) -> anyhow::Result<Listeners> {
        let Running {
            mut pipeline,
            server,
            started,
            shutdown_timeout,
        } = self;
        let listeners = pipeline.take_listeners();
        pipeline.request_stop();
        let metrics = pipeline.metrics().clone();
        let joined = pipeline.join(shutdown_timeout);
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
                    "sink threads still busy; undelivered batches are in the DLQ"
                );
            }
            other => other.context("shutdown did not complete")?,
        }
        Ok(listeners)
    }
}

/// The main loop: reopens outputs on SIGHUP with an unchanged config,
/// refuses an invalid one, and returns `true` for a valid changed one,
/// `false` on SIGTERM/SIGINT or when every stage has ended.
fn wait_for_signal(
    daemon: &DaemonContext<'_>,
    signals: &mut Signals,
    pipeline: &Pipeline,
    running_text: &[u8],
    started: Instant,
) -> bool {
    use log_capturer::reload::Check;
    let mut code_pages_released = false;
    while !signals.terminating() && !pipeline.is_finished() {
        daemon.watchdog.heartbeat();
        if !code_pages_released && started.elapsed() >= CODE_PAGES_RELEASE_AFTER {
            code_pages_released = true;
            release_code_pages();
        }
        if signals.hangup.swap(false, Ordering::Relaxed) {
            match log_capturer::reload::check(daemon.path, running_text, pipeline.listeners()) {
                Ok(Check::Unchanged) => {
                    // logrotate's postrotate sends HUP after moving output files.
                    tracing::info!(
                        "SIGHUP received, config unchanged; reopening file sink outputs"
                    );
                    pipeline.reopen_outputs();
                }
                Ok(Check::Changed { loaded, .. }) => {
                    for warning in &loaded.warnings {
                        tracing::warn!(%warning, "new config");
                    }
                    tracing::info!(config = %daemon.path.display(), "SIGHUP received, config changed and valid; draining, then starting again with it");
                    return true;
                }
                Err(error) => {
                    daemon.reloads.failed.add(1);
                    daemon.reloads.last_failed.set(1);
                    tracing::error!(error = %ErrorChain(&error), "SIGHUP received, new config refused; running on with the old one");
                }
            }
        }
        // A signal ends this wait at once; otherwise the thread looks at
        // the pipeline every `MAIN_LOOP_TURN` (an idle daemon's only cost
        // here).
        signals.wait();
    }
    false
}

/// Executes this binary again with the same arguments, the listening
/// sockets in `listeners` and the reload counters handed over. Returns only
/// if that failed. A SIGTERM that arrived while draining ends the process
/// instead; a SIGHUP is passed on (held pending across the exec).
fn reexec(listeners: &Listeners, reloads: &ReloadMetrics, signals: &Signals) -> anyhow::Error {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    // From here on, signals stay pending for the next image.
    mask_handled_signals(true);
    if signals.terminating() {
        tracing::info!("SIGTERM during the reload's drain; exiting instead");
        std::process::exit(0);
    }
    if signals.hangup.load(Ordering::Relaxed) {
        // SAFETY: raise(2) sends a signal to this thread, which blocks it:
        // it stays pending across execve for the next image's handler.
        unsafe { libc::raise(libc::SIGHUP) };
    }
    reloads.succeeded.add(1);
    reloads.last_failed.set(0);
    let mut variables = match listeners.prepare_exec(std::process::id()) {
        Ok(variables) => variables,
        Err(error) => return error.into(),
    };
    variables.push(log_capturer::reload::counts_variable(reloads));
    let executable = match current_executable() {
        Ok(executable) => executable,
        Err(error) => return error,
    };
    let to_c = |bytes: &[u8]| CString::new(bytes).ok();
    let arguments: Option<Vec<CString>> = std::env::args_os()
        .map(|argument| to_c(argument.as_bytes()))
        .collect();
    let ours: Vec<&str> = variables.iter().map(|(name, _)| name.as_str()).collect();
    let environment: Option<Vec<CString>> = std::env::vars_os()
        .filter(|(name, _)| !ours.iter().any(|own| name.as_bytes() == own.as_bytes()))
        .map(|(name, value)| [name.as_bytes(), b"=", value.as_bytes()].concat())
        .chain(
            variables
                .iter()
                .map(|(name, value)| format!("{name}={value}").into_bytes()),
        )
        .map(|entry| to_c(&entry))
        .collect();
    let (Some(arguments), Some(environment), Some(program)) = (
        arguments,
        environment,
        to_c(executable.as_os_str().as_bytes()),
    ) else {
        return anyhow::anyhow!("an argument or environment variable holds a NUL byte");
    };
    let mut argv: Vec<*const libc::c_char> = arguments.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = environment.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    tracing::info!(executable = %executable.display(), sockets = listeners.len(), "executing the daemon again");
    // SAFETY: `program` and every pointer of `argv` and `envp` point to
    // NUL-terminated strings owned by `arguments`, `environment` and
    // `program`, which outlive the call; both arrays end with a null
    // pointer, as execve requires. On success the call does not return.
    unsafe { libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let error = std::io::Error::last_os_error();
    anyhow::Error::new(error).context(format!("cannot execute {}", executable.display()))
}

/// The path of this binary. After a package upgrade replaced it, the
/// kernel names the running one `PATH (deleted)`; PATH then holds the new
/// binary, which is the one to run.
fn current_executable() -> anyhow::Result<PathBuf> {
    let executable = std::env::current_exe().context("cannot find the daemon's own executable")?;
    let text = executable.to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(live) => PathBuf::from(live),
        None => executable,
    })
}

/// Sends `WATCHDOG=1` every half `WATCHDOG_USEC` from its own thread while
/// every stage thread runs and the main loop turns; while draining (a stop
/// or a reload) it sends it regardless, for at most the drain. Without a
/// watchdog it does nothing.
#[derive(Clone)]
struct Watchdog {
    state: Arc<WatchdogState>,
}

struct WatchdogState {
    stages: std::sync::Mutex<Vec<Arc<log_capturer::metrics::StageHealth>>>,
    draining: AtomicBool,
    /// Milliseconds since `epoch` of the main loop's last turn.
    heartbeat_ms: std::sync::atomic::AtomicU64,
    epoch: Instant,
}

/// How often the main loop turns without a signal: it notices that every
/// stage ended (`exit_on_eof`) this late at most.
const MAIN_LOOP_TURN: Duration = Duration::from_millis(500);

/// This long without a turn of the main loop means it is stuck.
const MAIN_LOOP_STUCK: Duration = Duration::from_secs(10);

impl Watchdog {
    fn start(notifier: Option<Arc<log_capturer::notify::Notifier>>) -> anyhow::Result<Watchdog> {
        let state = Arc::new(WatchdogState {
            stages: std::sync::Mutex::new(Vec::new()),
            draining: AtomicBool::new(false),
            heartbeat_ms: std::sync::atomic::AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let watchdog = Watchdog { state };
        let (Some(notifier), Some(interval)) =
            (notifier, log_capturer::notify::watchdog_interval())
        else {
            return Ok(watchdog);
        };
        let state = Arc::clone(&watchdog.state);
        std::thread::Builder::new()
            .name("watchdog".to_string())
            .spawn(move || {
                let mut complained = false;
                loop {
                    std::thread::sleep(interval);
                    match state.trouble() {
                        None => {
                            complained = false;
                            if let Err(error) = notifier.notify("WATCHDOG=1") {
                                tracing::warn!(%error, "cannot notify the service manager's watchdog");
                            }
                        }
                        Some(trouble) if !complained => {
                            complained = true;
                            tracing::error!(%trouble, "watchdog notifications stopped; the service manager will restart the daemon");
                        }
                        Some(_) => {}
                    }
                }
            })
            .context("cannot start the watchdog thread")?;
        Ok(watchdog)
    }

    /// Watch these stages (a new pipeline) and stop draining.
    fn watch(&self, stages: Vec<Arc<log_capturer::metrics::StageHealth>>) {
        *self
            .state
            .stages
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = stages;
        self.heartbeat();
        self.state.draining.store(false, Ordering::Relaxed);
    }

    fn draining(&self) {
        self.state.draining.store(true, Ordering::Relaxed);
    }

    fn heartbeat(&self) {
        let now = self.state.epoch.elapsed().as_millis() as u64;
        self.state.heartbeat_ms.store(now, Ordering::Relaxed);
    }
}

impl WatchdogState {
    /// Why the daemon is not well, if it is not.
    fn trouble(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return None;
        }
        let stages = self
            .stages
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(dead) = stages.iter().find(|stage| !stage.is_alive()) {
            return Some(format!("stage {} has stopped", dead.name));
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let since = now.saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed));
        (since > MAIN_LOOP_STUCK.as_millis() as u64)
            .then(|| format!("the main loop has not turned for {since} ms"))
    }
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
