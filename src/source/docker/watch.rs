//! Which containers a docker source follows, kept current through the
//! Engine API.
//!
//! Thread: the docker source's. At start and after every reconnect the
//! watch opens the `/events` stream first, then lists the running
//! containers and inspects each (so that no start falls between the two);
//! then it follows the stream: a `start` is followed at once from the
//! event's attributes (name, image, labels; the log is where the driver
//! puts it), without a request, so that the source opens the log of a
//! container that lives milliseconds before dockerd deletes it; a
//! `destroy` lets the container go (its log, deleted with it, is still
//! read to its end through the open descriptor), a `rename` renames it.
//! When the stream ends (dockerd stopped or restarted) the watch tries
//! again after [`RECONNECT_DELAY_MIN`], doubling to [`RECONNECT_DELAY_MAX`],
//! asking for the events since the last one it saw (dockerd keeps its
//! recent ones), so that a container that started and ended meanwhile is
//! still read; the containers it knows stay followed meanwhile.
//!
//! Selection: a container is followed when its name matches an
//! `include_containers` glob (all when there is none) and no
//! `exclude_containers` glob, it carries every `include_labels` pair, and
//! it logs with the `json-file` driver. Containers with another driver
//! are counted and reported once each.
//!
//! Limits: [`CONTAINERS_MAX`] containers followed; the event series of the
//! last [`GONE_SERIES_CONTAINERS`] containers let go are kept, older ones
//! forgotten.
//! Allocations: per container found and per event, never per line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api::{ApiError, ContainerDetails, ContainerEvent, EngineClient, EventStream};
use crate::metrics::{ContainerStatus, SourceMetrics};

/// First wait before reconnecting to dockerd.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(250);

/// Longest wait between reconnection attempts: a `--rm` container that
/// starts and is removed while the stream is down is lost (its log is
/// deleted with it), so the gap after dockerd is back is kept short; a
/// failed attempt costs one `connect(2)`.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// Most containers followed at once; more are reported and skipped.
pub const CONTAINERS_MAX: usize = 4096;

/// Containers let go whose event series are still published; older ones'
/// series are forgotten (a host that runs a container per job would
/// otherwise grow the endpoint by every name it ever ran).
pub const GONE_SERIES_CONTAINERS: usize = 64;

/// How a docker source selects and labels containers.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    pub id: String,
    pub socket: PathBuf,
    pub include: Vec<glob::Pattern>,
    pub exclude: Vec<glob::Pattern>,
    /// `key=value` pairs a container must all carry.
    pub include_labels: Vec<(String, String)>,
    /// Container labels copied onto its lines.
    pub container_labels: Vec<String>,
    /// Where the container directories are, when not where dockerd says
    /// (`LogPath`): a daemon that sees them mounted elsewhere.
    pub containers_root: Option<PathBuf>,
}

/// A followed container.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub short_id: String,
    /// Without the leading `/`.
    pub name: String,
    pub image: String,
    /// Chosen container labels, keyed by their label name.
    pub labels: Vec<(String, String)>,
    pub log_path: PathBuf,
    /// Lines handed on per stream (stdout, stderr).
    pub collected: [u64; 2],
}

/// The containers a docker source follows, and its link to dockerd.
#[derive(Debug)]
pub struct ContainerWatch {
    settings: WatchSettings,
    client: EngineClient,
    containers: BTreeMap<String, Container>,
    /// Log path to container id.
    by_path: BTreeMap<PathBuf, String>,
    events: Option<EventStream>,
    received: Vec<ContainerEvent>,
    next_attempt: Instant,
    delay: Duration,
    /// Containers with another log driver, already reported.
    other_drivers: BTreeSet<String>,
    /// Containers not followed for `CONTAINERS_MAX`, already reported.
    over_limit: BTreeSet<String>,
    /// The set of log paths changed since last taken.
    changed: bool,
    /// Containers renamed since last taken: their lines' labels change.
    renamed: Vec<String>,
    metrics: Arc<SourceMetrics>,
    connected_once: bool,
    /// `timeNano` of the last event applied.
    last_event_ns: u64,
    /// Where dockerd keeps container directories, from a `LogPath`.
    learned_root: Option<PathBuf>,
    /// Names of containers let go, oldest first, whose event series are
    /// still published.
    gone_names: std::collections::VecDeque<String>,
}

impl ContainerWatch {
    pub fn new(settings: WatchSettings, metrics: Arc<SourceMetrics>) -> Self {
        Self {
            client: EngineClient::new(&settings.socket),
            settings,
            containers: BTreeMap::new(),
            by_path: BTreeMap::new(),
            events: None,
            received: Vec::new(),
            next_attempt: Instant::now(),
            delay: RECONNECT_DELAY_MIN,
            other_drivers: BTreeSet::new(),
            over_limit: BTreeSet::new(),
            changed: false,
            renamed: Vec::new(),
            metrics,
            connected_once: false,
            last_event_ns: 0,
            learned_root: None,
            gone_names: std::collections::VecDeque::new(),
        }
    }

    /// Checks, before the daemon starts, that dockerd answers on the
    /// socket and that the container directories can be read: the docker
    /// source needs root, or the `docker` group and read access there.
    pub fn check_access(socket: &Path, containers_root: Option<&Path>) -> Result<(), AccessError> {
        let client = EngineClient::new(socket);
        let socket = |source| AccessError::Socket { source };
        client.ping().map_err(socket)?;
        let directory = match containers_root {
            Some(root) => Some(root.to_path_buf()),
            // Where dockerd keeps the logs: the directory of a running
            // container's log, if there is one to ask about.
            None => {
                let listed = client.list().map_err(socket)?;
                match listed.first() {
                    Some(first) => client
                        .inspect(&first.id)
                        .map_err(socket)?
                        .and_then(|details| {
                            PathBuf::from(details.log_path)
                                .parent()
                                .map(Path::to_path_buf)
                        }),
                    None => None,
                }
            }
        };
        if let Some(directory) = directory {
            std::fs::read_dir(&directory)
                .map_err(|source| AccessError::Directory { directory, source })?;
        }
        Ok(())
    }

    /// The events descriptor, for the source thread to wait on.
    pub fn events_fd(&self) -> Option<std::os::fd::RawFd> {
        self.events.as_ref().map(EventStream::raw_fd)
    }

    /// When a reconnection is due, if the watch is disconnected.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.events.is_none().then_some(self.next_attempt)
    }

    /// Reads the events that arrived, or reconnects when due. True when
    /// the log paths changed (a scan should follow).
    pub fn poll(&mut self, now: Instant) -> bool {
        match self.events.as_mut() {
            Some(stream) => {
                let mut received = std::mem::take(&mut self.received);
                let outcome = stream.read_events(&mut received);
                for event in received.drain(..) {
                    self.apply(&event);
                }
                self.received = received;
                if let Err(error) = outcome {
                    self.lost(&error, now);
                }
            }
            None if now >= self.next_attempt => self.connect(now),
            None => {}
        }
        std::mem::take(&mut self.changed)
    }

    /// Opens the event stream, then lists and inspects the containers.
    fn connect(&mut self, now: Instant) {
        // After a loss, the events since the last one seen come first
        // (dockerd keeps its recent events): a container that started and
        // ended while the stream was down is still found.
        let since = (self.connected_once && self.last_event_ns > 0).then_some(self.last_event_ns);
        let stream = match self.client.events(since) {
            Ok(stream) => stream,
            Err(error) => return self.failed(&error, now),
        };
        let listed = match self.client.list() {
            Ok(listed) => listed,
            Err(error) => return self.failed(&error, now),
        };
        let running: BTreeSet<String> = listed.into_iter().map(|summary| summary.id).collect();
        // Containers that went while the stream was down are let go;
        // their files are read to their end all the same.
        let gone: Vec<String> = self
            .containers
            .keys()
            .filter(|id| !running.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.let_go(&id);
        }
        for id in &running {
            if !self.containers.contains_key(id) {
                self.inspect_and_follow(id);
            }
        }
        if self.connected_once {
            self.metrics.docker.reconnects.add(1);
            tracing::info!(source = %self.settings.id, socket = %self.settings.socket.display(), containers = self.containers.len(), "reconnected to dockerd");
        }
        self.connected_once = true;
        self.events = Some(stream);
        self.delay = RECONNECT_DELAY_MIN;
        self.changed = true;
    }

    fn failed(&mut self, error: &ApiError, now: Instant) {
        self.metrics.docker.api_errors.add(1);
        if self.delay == RECONNECT_DELAY_MIN {
            tracing::warn!(source = %self.settings.id, error = %crate::error_chain::ErrorChain(error), "cannot talk to dockerd; retrying with backoff");
        }
        self.next_attempt = now + self.delay;
        self.delay = (self.delay * 2).min(RECONNECT_DELAY_MAX);
    }

    fn lost(&mut self, error: &ApiError, now: Instant) {
        self.events = None;
        self.metrics.docker.api_errors.add(1);
        tracing::warn!(source = %self.settings.id, error = %crate::error_chain::ErrorChain(error), "lost the dockerd event stream; reconnecting");
        self.delay = RECONNECT_DELAY_MIN;
        self.next_attempt = now;
    }

    fn apply(&mut self, event: &ContainerEvent) {
        // A reconnection asks for the events since the last one seen: the
        // ones at its time may come again.
        if event.time_ns != 0 {
            if event.time_ns <= self.last_event_ns {
                return;
            }
            self.last_event_ns = event.time_ns;
        }
        let id = event.actor.id.as_str();
        let name = event
            .actor
            .attributes
            .get("name")
            .map_or_else(|| self.name_of(id), String::clone);
        if !matches!(
            event.action.as_str(),
            "start" | "die" | "destroy" | "rename"
        ) {
            return;
        }
        self.count_event(&event.action, &name);
        match event.action.as_str() {
            "start" if !self.containers.contains_key(id) => {
                self.follow_started(id, &event.actor.attributes);
            }
            "destroy" => self.let_go(id),
            "rename" => {
                if let Some(container) = self.containers.get_mut(id) {
                    container.name = name;
                    self.renamed.push(id.to_string());
                } else {
                    // A new name may now be selected.
                    self.inspect_and_follow(id);
                }
            }
            _ => {}
        }
    }

    fn name_of(&self, id: &str) -> String {
        self.containers.get(id).map_or_else(
            || id.chars().take(12).collect(),
            |container| container.name.clone(),
        )
    }

    fn count_event(&mut self, action: &str, container: &str) {
        let mut events = self
            .metrics
            .docker
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *events
            .entry((action.to_string(), container.to_string()))
            .or_insert(0) += 1;
    }

    /// Keeps the event series of a container let go for a while (so its
    /// destroy is seen by a scrape), and forgets the series of the
    /// containers let go longest ago past [`GONE_SERIES_CONTAINERS`].
    fn forget_events_of(&mut self, name: String) {
        self.gone_names.push_back(name);
        while self.gone_names.len() > GONE_SERIES_CONTAINERS {
            let Some(oldest) = self.gone_names.pop_front() else {
                break;
            };
            // A name taken again by a followed container keeps its series.
            if self
                .containers
                .values()
                .any(|container| container.name == oldest)
            {
                continue;
            }
            self.metrics
                .docker
                .events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|(_, name), _| *name != oldest);
        }
    }

    fn inspect_and_follow(&mut self, id: &str) {
        let details = match self.client.inspect(id) {
            Ok(Some(details)) => details,
            // Gone before it could be looked at.
            Ok(None) => return,
            Err(error) => {
                self.metrics.docker.api_errors.add(1);
                tracing::warn!(source = %self.settings.id, container = %id, error = %crate::error_chain::ErrorChain(&error), "cannot inspect container; it is looked at again after the next reconnect");
                return;
            }
        };
        self.follow(details);
    }

    /// Follows an inspected container if it is selected.
    pub fn follow(&mut self, details: ContainerDetails) {
        let name = details.name.trim_start_matches('/').to_string();
        let labels = details.config.labels.clone().unwrap_or_default();
        if !self.selects(&name, &labels) {
            return;
        }
        if details.host_config.log_config.kind != "json-file" {
            if self.other_drivers.insert(details.id.clone()) {
                self.metrics.docker.other_drivers.add(1);
                tracing::warn!(source = %self.settings.id, container = %name, driver = %details.host_config.log_config.kind, "container logs with another driver than json-file; not followed");
            }
            return;
        }
        let dockerd_path = PathBuf::from(&details.log_path);
        if let Some(root) = dockerd_path.parent().and_then(Path::parent) {
            self.learned_root = Some(root.to_path_buf());
        }
        let log_path = match &self.settings.containers_root {
            Some(root) => log_path_under(root, &details.id),
            None => dockerd_path,
        };
        if !log_path.is_file() {
            tracing::warn!(source = %self.settings.id, container = %name, path = %log_path.display(), "the container's json-file log is not there (is containers_root right?); followed once it appears");
        }
        let image = details.config.image.clone();
        self.add_container(details.id, name, image, &labels, log_path);
    }

    /// Follows a container that just started from its event alone (name,
    /// image and labels are among the event's attributes): no request,
    /// so that its log is opened before a short-lived container is gone.
    /// A log not where the json-file driver puts it (another driver, or
    /// the root not known yet) is looked up by an inspection instead.
    fn follow_started(&mut self, id: &str, attributes: &BTreeMap<String, String>) {
        let root = self
            .settings
            .containers_root
            .as_ref()
            .or(self.learned_root.as_ref());
        let log_path = root.map(|root| log_path_under(root, id));
        let (Some(log_path), Some(name)) = (log_path, attributes.get("name")) else {
            return self.inspect_and_follow(id);
        };
        if !log_path.is_file() {
            return self.inspect_and_follow(id);
        }
        // The attributes hold the container's labels beside these.
        let mut labels = attributes.clone();
        labels.remove("name");
        let image = labels.remove("image").unwrap_or_default();
        if !self.selects(name, &labels) {
            return;
        }
        self.add_container(id.to_string(), name.clone(), image, &labels, log_path);
    }

    fn add_container(
        &mut self,
        id: String,
        name: String,
        image: String,
        labels: &BTreeMap<String, String>,
        log_path: PathBuf,
    ) {
        if self.containers.len() >= CONTAINERS_MAX {
            if self.over_limit.insert(id) {
                tracing::warn!(source = %self.settings.id, container = %name, limit = CONTAINERS_MAX, "too many containers; not followed");
            }
            return;
        }
        let chosen = self
            .settings
            .container_labels
            .iter()
            .filter_map(|key| {
                labels
                    .get(key)
                    .map(|value| (label_name(key), value.clone()))
            })
            .collect();
        let container = Container {
            short_id: id.chars().take(12).collect(),
            id: id.clone(),
            name,
            image,
            labels: chosen,
            log_path: log_path.clone(),
            collected: [0, 0],
        };
        tracing::info!(source = %self.settings.id, container = %container.name, path = %log_path.display(), "following container");
        self.by_path.insert(log_path, id.clone());
        self.containers.insert(id, container);
        self.changed = true;
    }

    fn let_go(&mut self, id: &str) {
        if let Some(container) = self.containers.remove(id) {
            self.by_path.remove(&container.log_path);
            self.changed = true;
            self.forget_events_of(container.name);
        }
        self.other_drivers.remove(id);
        self.over_limit.remove(id);
    }

    fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let included = self.settings.include.is_empty()
            || self.settings.include.iter().any(|glob| glob.matches(name));
        let excluded = self.settings.exclude.iter().any(|glob| glob.matches(name));
        let labelled = self
            .settings
            .include_labels
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value));
        included && !excluded && labelled
    }

    /// The log paths of the followed containers.
    pub fn log_paths(&self, paths: &mut Vec<String>) {
        paths.clear();
        paths.extend(
            self.containers
                .values()
                .map(|container| container.log_path.to_string_lossy().into_owned()),
        );
    }

    /// The container whose log is at `path`.
    pub fn container_at(&self, path: &Path) -> Option<&Container> {
        self.by_path
            .get(path)
            .and_then(|id| self.containers.get(id))
    }

    /// Adds lines handed on to a container's counts.
    pub fn add_collected(&mut self, id: &str, collected: [u64; 2]) {
        if let Some(container) = self.containers.get_mut(id) {
            container.collected[0] += collected[0];
            container.collected[1] += collected[1];
        }
    }

    /// Containers renamed since the last call.
    pub fn take_renamed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.renamed)
    }

    /// Publishes the followed containers for the metrics endpoint.
    pub fn publish(&self) {
        let mut statuses = self
            .metrics
            .docker
            .containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        statuses.clear();
        statuses.extend(self.containers.values().map(|container| ContainerStatus {
            id: container.short_id.clone(),
            name: container.name.clone(),
            image: container.image.clone(),
            collected: container.collected,
        }));
    }
}

/// Where the json-file driver writes a container's log under `root`.
fn log_path_under(root: &Path, id: &str) -> PathBuf {
    root.join(id).join(format!("{id}-json.log"))
}

/// A label name made of a container label's key: every character that is
/// not an ASCII letter, digit or `_` becomes `_` (`com.example.service`
/// becomes `com_example_service`), as Loki and Prometheus require.
pub fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    name
}

/// Why the docker source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "the docker source needs dockerd running and access to its socket (root, or the docker group)"
    )]
    Socket {
        #[source]
        source: ApiError,
    },
    #[error(
        "the docker source cannot read {directory}: it needs read access to the container log directories (root, or a group granted read access)"
    )]
    Directory {
        directory: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_loki_safe() {
        assert_eq!(label_name("com.example.service"), "com_example_service");
        assert_eq!(label_name("app"), "app");
        assert_eq!(label_name("9lives"), "_9lives");
        assert_eq!(label_name("a-b/c"), "a_b_c");
    }
}
