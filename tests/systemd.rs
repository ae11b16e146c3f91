//! The daemon under systemd: the unit file and the notification protocol.
//!
//! These machines have systemd installed but not running, so the unit is
//! checked offline (`systemd-analyze verify` and `security --offline`),
//! and the daemon's side of `Type=notify` is tested by pointing
//! `NOTIFY_SOCKET` at a datagram socket the test owns.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/packaging/log-capturer.service"
);

/// The most `systemd-analyze security` may rate the unit ("OK" or better).
const EXPOSURE_MAX: f64 = 2.5;

/// The unit with `ExecStart` and `ExecStartPre` pointing at the binary of
/// this build (verify checks that the command exists), in `dir`.
fn unit_for_this_build(dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(UNIT).expect("read the unit");
    assert!(
        text.contains("/usr/bin/log-capturer run --config"),
        "{text}"
    );
    let binary = common::binary();
    let path = dir.join("log-capturer.service");
    std::fs::write(
        &path,
        text.replace("/usr/bin/log-capturer", &binary.display().to_string()),
    )
    .expect("write the unit");
    path
}

/// Goal: the unit passes `systemd-analyze verify` and is rated at most
/// 2.5 by `systemd-analyze security --offline=true`.
/// Method: run both on the unit (with this build's binary as command) and
/// read the "Overall exposure level" line.
#[test]
fn unit_verifies_and_is_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_this_build(dir.path());
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze is installed (apt-get install systemd)");
    let verify_text = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "verify failed: {verify_text}");
    assert!(
        !verify_text.contains("log-capturer.service"),
        "verify complains about the unit: {verify_text}"
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&security.stdout);
    let score: f64 = text
        .lines()
        .find_map(|line| {
            line.split("exposure level for log-capturer.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(
        score <= EXPOSURE_MAX,
        "exposure {score} over {EXPOSURE_MAX}:\n{text}"
    );
    let unit_text = std::fs::read_to_string(UNIT).expect("read the unit");
    for setting in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "LimitNOFILE=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=log-capturer",
        "RuntimeDirectory=log-capturer",
        "UMask=0027",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
    ] {
        assert!(unit_text.contains(setting), "the unit lacks {setting}");
    }
}

/// Receives notifications until one contains `wanted` or `timeout` passes;
/// returns every datagram received.
fn receive_until(socket: &UnixDatagram, wanted: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        if let Ok(length) = socket.recv(&mut buffer) {
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            let done = text.contains(wanted);
            received.push(text);
            if done {
                return received;
            }
        }
    }
    panic!("no {wanted:?} within {timeout:?}; received {received:#?}");
}

/// Goal: under `Type=notify` the daemon says `READY=1` once it runs (after
/// the metrics endpoint answers), `WATCHDOG=1` at half the watchdog
/// interval, and `STOPPING=1` at SIGTERM.
/// Method: a datagram socket as `NOTIFY_SOCKET`, a 400 ms watchdog
/// (`WATCHDOG_USEC`, `WATCHDOG_PID` left out); count what arrives.
#[test]
fn daemon_notifies_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notify_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let input = common::write_file(dir.path(), "app.log", "one\n");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        common::file_source_config(&input, "", "[sinks.drop]\ntype = \"null\""),
    )
    .expect("write config");
    let child = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start log-capturer");
    let (daemon, _) = common::await_started(child);
    let ready = receive_until(&socket, "READY=1", Duration::from_secs(10));
    assert!(
        ready.iter().all(|message| !message.contains("WATCHDOG")),
        "no watchdog ping before READY: {ready:#?}"
    );
    let (status, _) = daemon.get("/health");
    assert_eq!(status, 200, "healthy once READY");
    let started = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        receive_until(&socket, "WATCHDOG=1", Duration::from_secs(5));
        pings += 1;
    }
    // Four pings at every 200 ms: about 800 ms, well under 4 x 400 ms.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "pings too rare: {:?}",
        started.elapsed()
    );
    // A reload: RELOADING=1, then READY=1 from the re-executed daemon.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("batch_timeout_ms = 20", "batch_timeout_ms = 30"),
    )
    .expect("change config");
    common::send_signal(&daemon.child, libc::SIGHUP);
    let reloading = receive_until(&socket, "RELOADING=1", Duration::from_secs(10));
    assert!(
        reloading
            .iter()
            .all(|message| !message.contains("STOPPING")),
        "a reload is no stop: {reloading:#?}"
    );
    receive_until(&socket, "READY=1", Duration::from_secs(30));
    receive_until(&socket, "WATCHDOG=1", Duration::from_secs(5));
    common::send_signal(&daemon.child, libc::SIGTERM);
    receive_until(&socket, "STOPPING=1", Duration::from_secs(10));
    daemon.stop_after_signal();
}

/// Goal: SIGTERM during a reload's drain ends the daemon (exit 0) rather
/// than starting it again. Method: SIGHUP with a changed config, SIGTERM
/// 5 ms later; the process must exit 0 without a second `started`.
#[test]
fn sigterm_during_reload_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(dir.path(), "app.log", "one\n");
    let config = dir.path().join("config.toml");
    let text = common::file_source_config(&input, "", "[sinks.drop]\ntype = \"null\"");
    std::fs::write(&config, &text).expect("write config");
    let (mut daemon, _) = common::start_daemon_with_log(&config);
    std::fs::write(
        &config,
        text.replace("batch_timeout_ms = 20", "batch_timeout_ms = 30"),
    )
    .expect("change config");
    common::send_signal(&daemon.child, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(5));
    common::send_signal(&daemon.child, libc::SIGTERM);
    let status = common::wait_with_timeout(&mut daemon.child, Duration::from_secs(15));
    assert!(status.success(), "exit {status}");
    let restarted = daemon
        .stderr
        .try_iter()
        .filter(|line| line.contains(" started "))
        .count();
    assert_eq!(restarted, 0, "no start after SIGTERM");
}

/// Goal: a daemon not started by a service manager (no `NOTIFY_SOCKET`)
/// runs as before, and one given a malformed `NOTIFY_SOCKET` runs too,
/// with a warning naming it, rather than failing to start.
#[test]
fn bad_notify_socket_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = common::write_file(dir.path(), "app.log", "one\n");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        common::file_source_config(&input, "", "[sinks.drop]\ntype = \"null\""),
    )
    .expect("write config");
    let child = Command::new(common::binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", "relative/notify.sock")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start log-capturer");
    let (daemon, log) = common::await_started(child);
    assert!(
        log.iter()
            .any(|line| line.contains("relative/notify.sock") && line.contains("WARN")),
        "{log:#?}"
    );
    daemon.stop();
}
