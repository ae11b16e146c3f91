//! Configuration reload on SIGHUP: what is checked before the running
//! daemon gives way to one started with the new config.
//!
//! The binary reads the config file again on SIGHUP and asks [`check`]:
//!
//! * the same bytes as the running config: nothing to apply; file sinks
//!   open their output again (logrotate's `postrotate`);
//! * a config that fails what `check-config` checks, or that names a
//!   syslog address or socket path that neither this daemon holds nor can
//!   be had now (another process holds it): refused with the error, which
//!   names the file, the key and its line; the old config runs on;
//! * otherwise the daemon drains (sources stop, every batch is delivered
//!   or stored in the DLQ, positions are written) and executes itself
//!   again, handing over its listening sockets ([`crate::handover`]).
//!
//! The reload counters live in [`ReloadMetrics`]; [`counts_variable`] and
//! [`restore_counts`] carry them across the re-execution in
//! [`RELOAD_COUNTS_ENV`], so they count over the daemon's life.
//!
//! Thread: the main thread. Nothing here is on the data path.

#![forbid(unsafe_code)]

use std::path::Path;

use crate::config::{Config, ConfigError, Loaded, SourceConfig};
use crate::handover::{ListenerKey, Listeners};
use crate::metrics::ReloadMetrics;

/// Carries the reload counters to the re-executed process:
/// `<succeeded> <failed> <sockets not handed over>`.
pub const RELOAD_COUNTS_ENV: &str = "LOG_CAPTURER_RELOAD_COUNTS";

/// Why a new config is refused. The running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// What `check-config` reports: the message names the file, the key
    /// and its line.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A syslog address or socket path that this daemon does not hold and
    /// that cannot be had now.
    #[error("config file {}: `sources.{source_id}.{key}`: {endpoint} cannot be had now", path.display())]
    Endpoint {
        path: std::path::PathBuf,
        source_id: String,
        key: &'static str,
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    /// A docker source that cannot reach dockerd or read its logs now.
    #[error("config file {}: `sources.{source_id}`", path.display())]
    Docker {
        path: std::path::PathBuf,
        source_id: String,
        #[source]
        source: crate::source::docker::watch::AccessError,
    },
}

/// What a reload should do.
#[derive(Debug)]
pub enum Check {
    /// The file holds the running config: only reopen outputs.
    Unchanged,
    /// A valid new config, with its text and warnings.
    Changed { loaded: Box<Loaded>, text: Vec<u8> },
}

/// Reads the config file at `path` again and decides, as described in the
/// module doc. `running` is the text the daemon runs on; `held` the
/// sockets it can hand over.
pub fn check(path: &Path, running: &[u8], held: &Listeners) -> Result<Check, ReloadError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text == running {
        return Ok(Check::Unchanged);
    }
    let loaded = Config::load(path)?;
    endpoints_available(path, &loaded.config, held)?;
    docker_reachable(path, &loaded.config)?;
    Ok(Check::Changed {
        loaded: Box::new(loaded),
        text,
    })
}

/// Every syslog address and socket path of `config` is either held (it
/// will be handed over) or can be had now.
fn endpoints_available(path: &Path, config: &Config, held: &Listeners) -> Result<(), ReloadError> {
    for (id, source) in &config.sources {
        let SourceConfig::Syslog(syslog) = source else {
            continue;
        };
        let busy =
            |key: &'static str, endpoint: String, source: std::io::Error| ReloadError::Endpoint {
                path: path.to_path_buf(),
                source_id: id.clone(),
                key,
                endpoint,
                source,
            };
        if let Some(address) = syslog.udp
            && !held.contains(&ListenerKey::udp(address))
        {
            std::net::UdpSocket::bind(address)
                .map_err(|error| busy("udp", format!("UDP {address}"), error))?;
        }
        if let Some(address) = syslog.tcp
            && !held.contains(&ListenerKey::tcp(address))
        {
            std::net::TcpListener::bind(address)
                .map_err(|error| busy("tcp", format!("TCP {address}"), error))?;
        }
        if let Some(socket) = &syslog.unix {
            let held_here = ListenerKey::unix(socket).is_some_and(|key| held.contains(&key));
            if !held_here && crate::source::syslog::socket_in_use(socket) {
                let error = std::io::Error::from(std::io::ErrorKind::AddrInUse);
                return Err(busy("unix", format!("socket {}", socket.display()), error));
            }
        }
    }
    Ok(())
}

/// Every docker source can reach dockerd and read the container logs now:
/// the daemon started on the new config would refuse to start otherwise.
fn docker_reachable(path: &Path, config: &Config) -> Result<(), ReloadError> {
    for (id, source) in &config.sources {
        let SourceConfig::Docker(docker) = source else {
            continue;
        };
        crate::source::docker::watch::ContainerWatch::check_access(
            &docker.socket,
            docker.containers_root.as_deref(),
        )
        .map_err(|source| ReloadError::Docker {
            path: path.to_path_buf(),
            source_id: id.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The variable that hands `reloads` to the re-executed process.
pub fn counts_variable(reloads: &ReloadMetrics) -> (String, String) {
    let value = format!(
        "{} {} {}",
        reloads.succeeded.get(),
        reloads.failed.get(),
        reloads.sockets_not_handed_over.get()
    );
    (RELOAD_COUNTS_ENV.to_string(), value)
}

/// Adds the counts a previous process image handed over, if any (a
/// malformed value is ignored: the counters start at 0).
pub fn restore_counts(reloads: &ReloadMetrics) {
    let Ok(value) = std::env::var(RELOAD_COUNTS_ENV) else {
        return;
    };
    let counts: Vec<u64> = value
        .split(' ')
        .filter_map(|word| word.parse().ok())
        .collect();
    if let [succeeded, failed, not_handed_over] = counts[..] {
        reloads.succeeded.add(succeeded);
        reloads.failed.add(failed);
        reloads.sockets_not_handed_over.add(not_handed_over);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: a config file that did not change is `Unchanged` without
    /// being parsed, and a broken one is refused naming its key and line.
    #[test]
    fn unchanged_and_broken_configs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        let text = b"[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"null\"\n";
        std::fs::write(&path, text).expect("write");
        let held = Listeners::new();
        assert!(matches!(check(&path, text, &held), Ok(Check::Unchanged)));
        std::fs::write(&path, "[sources.in]\ntype = \"stdin\"\nbogus = 1\n").expect("write");
        let error = check(&path, text, &held).expect_err("unknown key");
        let message = crate::error_chain::ErrorChain(&error).to_string();
        assert!(message.contains("bogus"), "{message}");
        assert!(message.contains("line 3"), "{message}");
    }

    /// Goal: a new syslog address held by another process refuses the
    /// reload, naming the key; the same address held by this daemon does
    /// not. Method: bind a UDP socket, then check a config that names it.
    #[test]
    fn endpoint_held_elsewhere_refuses_the_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        let other = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let address = other.local_addr().expect("address");
        let text = format!(
            "[sources.sys]\ntype = \"syslog\"\nudp = \"{address}\"\n[sinks.out]\ntype = \"null\"\n"
        );
        std::fs::write(&path, &text).expect("write");
        let error = check(&path, b"", &Listeners::new()).expect_err("held elsewhere");
        assert!(error.to_string().contains("sources.sys.udp"), "{error}");
        let mut held = Listeners::new();
        use std::os::fd::AsFd;
        held.push(
            Some(ListenerKey::udp(address)),
            other.as_fd().try_clone_to_owned(),
        );
        assert!(matches!(
            check(&path, b"", &held),
            Ok(Check::Changed { .. })
        ));
    }

    /// Goal: the counters survive the trip through the variable.
    #[test]
    fn counts_round_trip() {
        let reloads = ReloadMetrics::default();
        reloads.succeeded.add(3);
        reloads.failed.add(2);
        reloads.sockets_not_handed_over.add(1);
        let (_, value) = counts_variable(&reloads);
        assert_eq!(value, "3 2 1");
    }
}
