//! Which files a file source follows: its `paths` (plain paths and globs)
//! minus its `exclude` globs, evaluated again while the daemon runs.
//!
//! Thread: the source thread. A glob is expanded at start-up, every
//! `glob_interval_ms`, and soon after inotify reports a file created in or
//! moved into a watched directory (the fixed leading directories of the
//! patterns). The same watches report writes to the files in those
//! directories ([`Discovery::read_events`]), so that the source reads a
//! file soon after it grows instead of at its next poll; the source waits
//! on the inotify descriptor ([`Discovery::raw_fd`]) along with its waker.
//! Inotify is read without blocking, until it is empty. A directory that
//! cannot be watched (it does not exist yet) is tried again at the next
//! periodic scan, which also covers whatever inotify misses (a queue
//! overflow, a pattern with a glob in a directory); files outside the
//! watched directories are read at their poll interval.
//!
//! Allocations: each scan allocates the list of matching paths; scans are
//! seconds apart.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// Bytes of the inotify read buffer: room for about 100 events.
const EVENT_BUFFER_BYTES: usize = 4096;

/// A scan this soon after inotify reported something: lets a burst of
/// creations settle into one scan.
const EVENT_SCAN_DELAY: Duration = Duration::from_millis(20);

/// The patterns of one source and when to expand them next.
#[derive(Debug)]
pub struct Discovery {
    include: Vec<String>,
    exclude: Vec<glob::Pattern>,
    /// Directories to watch, and their watch once added.
    directories: Vec<(PathBuf, Option<WatchDescriptor>)>,
    inotify: Option<Inotify>,
    events: Vec<u8>,
    interval: Duration,
    next_scan: Instant,
}

impl Discovery {
    /// `exclude` was validated with the config; a pattern that does not
    /// parse is ignored here.
    pub fn new(include: &[String], exclude: &[String], interval: Duration) -> Self {
        let inotify = match Inotify::init() {
            Ok(inotify) => Some(inotify),
            Err(error) => {
                tracing::warn!(%error, "inotify unavailable; new files are found by the periodic scan only");
                None
            }
        };
        let mut directories: Vec<(PathBuf, Option<WatchDescriptor>)> = Vec::new();
        for pattern in include {
            let directory = fixed_directory(pattern);
            if !directories.iter().any(|(known, _)| *known == directory) {
                directories.push((directory, None));
            }
        }
        Self {
            include: include.to_vec(),
            exclude: exclude
                .iter()
                .filter_map(|pattern| glob::Pattern::new(pattern).ok())
                .collect(),
            directories,
            inotify,
            events: vec![0; EVENT_BUFFER_BYTES],
            interval,
            next_scan: Instant::now(),
        }
    }

    /// Replaces the patterns with plain `paths` (the docker source's
    /// container logs) and makes a scan due: the directories of new paths
    /// are watched from the scan on, those of paths gone are let go.
    pub fn set_paths(&mut self, paths: &[String]) {
        self.include.clear();
        self.include.extend_from_slice(paths);
        let wanted: std::collections::BTreeSet<PathBuf> =
            paths.iter().map(|path| fixed_directory(path)).collect();
        let inotify = self.inotify.as_mut();
        let mut dropped = Vec::new();
        self.directories.retain(|(directory, watch)| {
            let keep = wanted.contains(directory);
            if !keep && let Some(watch) = watch {
                dropped.push(watch.clone());
            }
            keep
        });
        if let Some(inotify) = inotify {
            for watch in dropped {
                // Gone already when its directory was removed.
                let _ = inotify.watches().remove(watch);
            }
        }
        for directory in wanted {
            if !self
                .directories
                .iter()
                .any(|(known, _)| *known == directory)
            {
                self.directories.push((directory, None));
            }
        }
        self.next_scan = Instant::now();
    }

    /// Whether a scan is due: its interval passed, or inotify reported a
    /// new file (see [`read_events`](Self::read_events)).
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.next_scan
    }

    /// The inotify descriptor, for the source to wait on.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.inotify.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Reads inotify until it is empty, without blocking: a file created
    /// or moved in (or lost events) makes a scan due soon; a write to a
    /// file of a watched directory is handed to `written` as (directory,
    /// file name).
    pub fn read_events(&mut self, now: Instant, mut written: impl FnMut(&Path, &OsStr)) {
        let Some(inotify) = self.inotify.as_mut() else {
            return;
        };
        let mut scan_soon = false;
        // Until the queue is empty (`WouldBlock`) or unreadable.
        while let Ok(events) = inotify.read_events(&mut self.events) {
            let mut any = false;
            for event in events {
                any = true;
                if event.mask.contains(EventMask::MODIFY) {
                    let directory = self
                        .directories
                        .iter()
                        .find(|(_, watch)| watch.as_ref() == Some(&event.wd));
                    if let (Some((directory, _)), Some(name)) = (directory, event.name) {
                        written(directory, name);
                    }
                } else {
                    scan_soon = true;
                }
            }
            if !any {
                break;
            }
        }
        if scan_soon {
            self.next_scan = self.next_scan.min(now + EVENT_SCAN_DELAY);
        }
    }

    /// Expands every pattern into `paths` (cleared first): existing regular
    /// files, sorted, without duplicates or excluded ones.
    pub fn scan(&mut self, paths: &mut Vec<PathBuf>) {
        self.watch_directories();
        self.next_scan = Instant::now() + self.interval;
        paths.clear();
        for pattern in &self.include {
            if !is_glob(pattern) {
                paths.push(PathBuf::from(pattern));
                continue;
            }
            match glob::glob(pattern) {
                Ok(matches) => paths.extend(matches.filter_map(Result::ok)),
                // Validated with the config; nothing to expand otherwise.
                Err(_) => continue,
            }
        }
        paths.sort();
        paths.dedup();
        paths.retain(|path| !self.is_excluded(path) && path.is_file());
    }

    fn is_excluded(&self, path: &Path) -> bool {
        self.exclude
            .iter()
            .any(|pattern| pattern.matches_path(path))
    }

    fn watch_directories(&mut self) {
        let Some(inotify) = self.inotify.as_mut() else {
            return;
        };
        for (directory, watch) in &mut self.directories {
            if watch.is_some() {
                continue;
            }
            let mask =
                WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::MODIFY | WatchMask::ONLYDIR;
            *watch = inotify.watches().add(&*directory, mask).ok();
        }
    }
}

/// Whether a pattern has glob characters.
pub fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

/// The leading directories of a pattern that hold no glob character: the
/// directory to watch for it.
fn fixed_directory(pattern: &str) -> PathBuf {
    let path = Path::new(pattern);
    let mut fixed = PathBuf::new();
    let components: Vec<_> = path.components().collect();
    for (index, component) in components.iter().enumerate() {
        let last = index + 1 == components.len();
        if last || is_glob(&component.as_os_str().to_string_lossy()) {
            break;
        }
        fixed.push(component);
    }
    if fixed.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        fixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_directory_stops_at_the_first_glob() {
        assert_eq!(fixed_directory("/var/log/*.log"), PathBuf::from("/var/log"));
        assert_eq!(
            fixed_directory("/var/log/app.log"),
            PathBuf::from("/var/log")
        );
        assert_eq!(fixed_directory("/srv/*/logs/x.log"), PathBuf::from("/srv"));
        assert_eq!(fixed_directory("x.log"), PathBuf::from("."));
    }

    /// Goal: a file created after the first scan is found by the next one,
    /// inotify makes that scan due at once, `exclude` holds, and writes to
    /// files of the watched directory are reported by name.
    #[test]
    fn new_files_are_found_and_excludes_hold() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pattern = format!("{}/*.log", dir.path().display());
        let exclude = format!("{}/skip*.log", dir.path().display());
        let mut discovery = Discovery::new(&[pattern], &[exclude], Duration::from_secs(3600));
        let mut paths = Vec::new();
        assert!(discovery.is_due(Instant::now()));
        discovery.scan(&mut paths);
        assert!(paths.is_empty());
        assert!(!discovery.is_due(Instant::now()));
        std::fs::write(dir.path().join("a.log"), b"x\n").expect("write");
        std::fs::write(dir.path().join("skip-me.log"), b"x\n").expect("write");
        std::fs::write(dir.path().join("b.txt"), b"x\n").expect("write");
        let reported = Instant::now();
        let mut written = Vec::new();
        discovery.read_events(reported, |directory, name| {
            written.push(directory.join(name));
        });
        assert!(!discovery.is_due(reported), "a burst settles first");
        assert!(discovery.is_due(reported + EVENT_SCAN_DELAY));
        discovery.scan(&mut paths);
        assert_eq!(paths, vec![dir.path().join("a.log")]);
        assert!(written.contains(&dir.path().join("a.log")), "{written:?}");

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("a.log"))
            .expect("open");
        std::io::Write::write_all(&mut file, b"more\n").expect("append");
        written.clear();
        discovery.read_events(Instant::now(), |directory, name| {
            written.push(directory.join(name));
        });
        assert_eq!(written, vec![dir.path().join("a.log")]);
        assert!(
            !discovery.is_due(Instant::now()),
            "a write is no reason to scan"
        );
    }
}
