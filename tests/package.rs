//! The Debian package, built, installed, checked and removed on this
//! machine.
//!
//! Goal: `cargo deb` builds `target/debian/log-capturer_<version>-1_amd64.deb`;
//! `dpkg -i` installs the binary, the conffile (a commented example that
//! passes `check-config` and runs as it is, as the daemon's user), the
//! unit (which `systemd-analyze verify` accepts), the documentation with
//! the dashboard and the alert rules, and creates the `log-capturer`
//! system user in group `adm`; `dpkg -r` leaves only the conffile and the
//! state directory, and `dpkg -P` leaves only the system user and group
//! (Debian policy: a system user may own files elsewhere, so it stays).
//! Method: run the real tools; needs root (the CI machine runs as root)
//! and cargo-deb (`cargo install --locked cargo-deb`, done by `.ci/run`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

const PACKAGE: &str = "log-capturer";

/// The drop-in that grants a docker source what it needs, shipped off.
const DOCKER_DROP_IN: &str = "/usr/lib/systemd/system/log-capturer.service.d/docker-source.conf";

fn run(program: &str, arguments: &[&str]) -> Output {
    Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

/// Runs a command that must succeed; returns its standard output.
fn run_ok(program: &str, arguments: &[&str]) -> String {
    let output = run(program, arguments);
    assert!(
        output.status.success(),
        "{program} {arguments:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The package's status as `dpkg-query` reports it (`install ok
/// installed`, `deinstall ok config-files`), or `None` if dpkg does not
/// know it.
fn package_status() -> Option<String> {
    let output = run("dpkg-query", &["-W", "-f=${Status}", PACKAGE]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        .filter(|status| !status.contains("not-installed"))
}

/// Purges the package when the test ends, passed or not, so that a failed
/// run leaves the machine as it found it.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = run("dpkg", &["-P", PACKAGE]);
    }
}

fn build_package() -> std::path::PathBuf {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let version = run("cargo", &["deb", "--version"]);
    assert!(
        version.status.success(),
        "cargo-deb is missing: cargo install --locked cargo-deb"
    );
    let output = Command::new("cargo")
        .args(["deb", "--locked"])
        .current_dir(manifest)
        .output()
        .expect("run cargo deb");
    assert!(
        output.status.success(),
        "cargo deb failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let name = format!("{PACKAGE}_{}-1_amd64.deb", env!("CARGO_PKG_VERSION"));
    let deb = Path::new(manifest).join("target/debian").join(name);
    assert!(deb.is_file(), "cargo deb left no {}", deb.display());
    deb
}

fn check_installed_files() {
    for path in [
        "/usr/bin/log-capturer",
        "/etc/log-capturer/config.toml",
        "/usr/lib/systemd/system/log-capturer.service",
        "/usr/share/doc/log-capturer/README.md",
        "/usr/share/doc/log-capturer/OPERATIONS.md",
        "/usr/share/doc/log-capturer/METRICS.md",
        "/usr/share/doc/log-capturer/grafana-dashboard.json",
        "/usr/share/doc/log-capturer/alerts.yml",
        "/usr/share/doc/log-capturer/copyright",
        DOCKER_DROP_IN,
    ] {
        assert!(Path::new(path).is_file(), "{path} is installed");
    }
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", PACKAGE]);
    assert!(
        conffiles.contains("/etc/log-capturer/config.toml"),
        "the config is a conffile: {conffiles:?}"
    );
    // The config may hold credentials: root and the daemon's group only.
    let mode = run_ok("stat", &["-c", "%a %U %G", "/etc/log-capturer/config.toml"]);
    assert_eq!(mode.trim(), "640 root log-capturer");
    let state = run_ok("stat", &["-c", "%a %U", "/var/lib/log-capturer"]);
    assert_eq!(state.trim(), "750 log-capturer");
    let verify = run(
        "systemd-analyze",
        &["verify", "/usr/lib/systemd/system/log-capturer.service"],
    );
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// The docker drop-in is off as shipped (comments only), and once its
/// lines are uncommented in /etc, as its text says, systemd accepts the
/// unit with it and it grants the socket's group and the capability to
/// read the logs.
fn check_docker_drop_in() {
    let shipped = std::fs::read_to_string(DOCKER_DROP_IN).expect("read the drop-in");
    let active: Vec<&str> = shipped
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .collect();
    assert!(active.is_empty(), "the docker drop-in is off: {active:?}");
    let settings: Vec<&str> = shipped
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .filter(|line| line.starts_with('[') || line.contains('='))
        .filter(|line| !line.starts_with(' '))
        .collect();
    assert_eq!(settings.first(), Some(&"[Service]"), "{settings:?}");
    let directory = Path::new("/etc/systemd/system/log-capturer.service.d");
    std::fs::create_dir_all(directory).expect("create the drop-in directory");
    let enabled = directory.join("docker-source.conf");
    std::fs::write(&enabled, settings.join("\n") + "\n").expect("write the drop-in");
    let verify = run(
        "systemd-analyze",
        &["verify", "/usr/lib/systemd/system/log-capturer.service"],
    );
    std::fs::remove_file(&enabled).expect("remove the drop-in");
    let _ = std::fs::remove_dir(directory);
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify with the docker drop-in: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let text = settings.join("\n");
    for granted in [
        "SupplementaryGroups=docker",
        "AmbientCapabilities=CAP_DAC_READ_SEARCH",
        "CapabilityBoundingSet=CAP_DAC_READ_SEARCH",
    ] {
        assert!(text.contains(granted), "{granted} in {text}");
    }
}

fn check_user() {
    let passwd = run_ok("getent", &["passwd", PACKAGE]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    let uid: u32 = fields[2].parse().expect("uid");
    assert!(uid < 1000, "a system user: {passwd}");
    assert_eq!(fields[5], "/var/lib/log-capturer", "home: {passwd}");
    assert!(
        fields[6].ends_with("nologin") || fields[6].ends_with("false"),
        "no shell: {passwd}"
    );
    let groups = run_ok("id", &["-nG", PACKAGE]);
    assert!(
        groups.split_whitespace().any(|group| group == "adm"),
        "in group adm (to read /var/log): {groups}"
    );
}

/// `check-config` passes on the installed example, as root and as the
/// daemon's user, and the example runs as that user (with its metrics on
/// a free port, so that the test cannot collide with a daemon on 8401).
fn check_config_runs() {
    let checked = run_ok(
        "/usr/bin/log-capturer",
        &["check-config", "/etc/log-capturer/config.toml"],
    );
    assert!(checked.contains(": ok ("), "{checked}");
    run_ok(
        "runuser",
        &[
            "-u",
            PACKAGE,
            "--",
            "/usr/bin/log-capturer",
            "check-config",
            "/etc/log-capturer/config.toml",
        ],
    );
    let example = std::fs::read_to_string("/etc/log-capturer/config.toml").expect("read config");
    assert!(example.contains("metrics_addr = \"127.0.0.1:8401\""));
    let copy = "/var/lib/log-capturer/package-test.toml";
    std::fs::write(copy, example.replace("127.0.0.1:8401", "127.0.0.1:0"))
        .expect("write config copy");
    run_ok("chown", &[PACKAGE, copy]);
    // setpriv executes the daemon in its place (runuser would stay as
    // its parent and end by the signal it forwards).
    let child = Command::new("setpriv")
        .args([
            "--reuid",
            PACKAGE,
            "--regid",
            PACKAGE,
            "--init-groups",
            "--",
            "/usr/bin/log-capturer",
            "run",
            "--config",
            copy,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the installed daemon");
    let (daemon, _) = common::await_started(child);
    let (status, body) = daemon.get("/health");
    assert_eq!(status, 200, "{body}");
    let process = format!("/proc/{}", daemon.child.id());
    let user = run_ok("stat", &["-c", "%U", &process]);
    assert_eq!(user.trim(), PACKAGE, "runs as its user");
    daemon.stop();
}

#[test]
fn package_installs_checks_and_purges() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the package test installs a package: run it as root"
    );
    let deb = build_package();
    let _purge = Purge;
    if package_status().is_some() {
        run_ok("dpkg", &["-P", PACKAGE]);
    }
    run_ok("dpkg", &["-i", deb.to_str().expect("UTF-8 path")]);
    assert_eq!(package_status().as_deref(), Some("install ok installed"));
    check_installed_files();
    check_docker_drop_in();
    check_user();
    check_config_runs();
    let listed = run_ok("dpkg", &["-L", PACKAGE]);
    let files: Vec<&str> = listed
        .lines()
        .filter(|path| Path::new(path).is_file())
        .collect();
    assert!(files.len() >= 9, "{listed}");

    run_ok("dpkg", &["-r", PACKAGE]);
    assert_eq!(
        package_status().as_deref(),
        Some("deinstall ok config-files")
    );
    for path in &files {
        let kept = *path == "/etc/log-capturer/config.toml";
        assert_eq!(
            Path::new(path).exists(),
            kept,
            "{path} after dpkg -r (only the conffile stays)"
        );
    }
    assert!(
        Path::new("/var/lib/log-capturer").is_dir(),
        "state stays on remove"
    );

    run_ok("dpkg", &["-P", PACKAGE]);
    assert_eq!(package_status(), None, "dpkg forgot the package");
    for path in files.iter().copied().chain([
        "/etc/log-capturer",
        "/var/lib/log-capturer",
        "/run/log-capturer",
    ]) {
        assert!(!Path::new(path).exists(), "{path} after dpkg -P");
    }
    // Debian policy: the system user and group stay (files it owned may
    // remain elsewhere, and a new user must not inherit them).
    run_ok("getent", &["passwd", PACKAGE]);
}
