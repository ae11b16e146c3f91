//! Which files the source follows and in what state: found by a scan,
//! opened within the descriptor limit, noticed rotated, truncated or
//! deleted, and released. See the parent module for the rules.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{FileSource, FollowedFile, STREAM_NEXT, StartAt, Unstarted};
use crate::clock::now_ns;
use crate::labels::{LabelSet, Symbol};
use crate::limits;
use crate::source::positions::{self, FINGERPRINT_BYTES_MAX, FileIdentity};

use super::ledger::{FileKey, Position};

impl FileSource {
    /// Expands the patterns and follows every file not followed yet; marks
    /// followed files no longer at a matching path as gone.
    pub(super) fn discover(&mut self) {
        let mut paths = std::mem::take(&mut self.scanned);
        self.discovery.scan(&mut paths);
        let startup = !self.scanned_once;
        let now = now_ns();
        let mut present = vec![false; self.files.len()];
        for path in &paths {
            let Ok(metadata) = std::fs::metadata(path) else {
                continue;
            };
            let key = (metadata.dev(), metadata.ino());
            self.ledger.seen(key, now);
            match self.index.get(&key) {
                Some(&index) => {
                    present[index] = true;
                    self.notice_change(index, &metadata);
                    if self.files[index].path != *path {
                        // Renamed to a name that is followed too: the same
                        // file, under its first name's label.
                        self.note_renamed(&self.files[index]);
                        self.files[index].path.clone_from(path);
                    }
                }
                None => self.add_file(path.clone(), startup),
            }
        }
        for (index, present) in present.into_iter().enumerate() {
            let file = &mut self.files[index];
            if !present && file.gone_since.is_none() {
                file.gone_since = Some(Instant::now());
                file.rotations += 1;
                self.metrics.rotations.add(1);
                tracing::info!(source = %self.settings.id, path = %file.path.display(), "file no longer at its path (rotated or deleted); reading it to its end");
            }
        }
        self.scanned = paths;
        self.scanned_once = true;
    }

    /// A closed file that grew, shrank or changed (its inode may even hold
    /// a new file now: it was deleted while closed and the inode reused)
    /// wants its descriptor back; `reopen` tells which.
    fn notice_change(&mut self, index: usize, metadata: &std::fs::Metadata) {
        let file = &mut self.files[index];
        let changed = (metadata.ctime(), metadata.ctime_nsec()) != file.changed_at;
        if file.file.is_none() && (metadata.len() != file.offset || changed) {
            file.wants_open = true;
        }
        file.size = metadata.len();
    }

    /// Starts following the file at `path`: at its stored position if the
    /// fingerprint matches, else at `start_at` (first scan) or at 0. Room is
    /// made first, so that not even the descriptor that looks at the file
    /// goes past `max_files`; with none to spare the file is followed
    /// unstarted, and started when it gets one (see `reopen`).
    fn add_file(&mut self, path: PathBuf, startup: bool) {
        if self.open_files >= self.settings.max_files {
            // `open_waiting` makes room, for all waiting files at once.
            self.add_unstarted(path, startup);
            return;
        }
        let handle = match File::open(&path) {
            Ok(handle) => handle,
            Err(error) => {
                tracing::debug!(source = %self.settings.id, path = %path.display(), %error, "cannot open file; will retry at the next scan");
                self.metrics.read_errors.add(1);
                return;
            }
        };
        let Ok(metadata) = handle.metadata() else {
            return;
        };
        let key = (metadata.dev(), metadata.ino());
        if self.index.contains_key(&key) {
            return;
        }
        let size = metadata.len();
        let index = self.push_file(path, key, size, None);
        self.start(index, &handle, size, startup.then_some(size));
        self.attach(index, handle);
    }

    /// Follows the file at `path` without a descriptor (none to spare): it
    /// waits for one, and where it starts is decided then.
    fn add_unstarted(&mut self, path: PathBuf, startup: bool) {
        let Ok(metadata) = std::fs::metadata(&path) else {
            return;
        };
        let key = (metadata.dev(), metadata.ino());
        if self.index.contains_key(&key) {
            return;
        }
        let size = metadata.len();
        let startup_size = startup.then_some(size);
        self.push_file(path, key, size, Some(Unstarted { startup_size }));
    }

    /// Adds a followed file, closed and waiting for a descriptor; returns
    /// its index.
    fn push_file(
        &mut self,
        path: PathBuf,
        key: FileKey,
        size: u64,
        unstarted: Option<Unstarted>,
    ) -> usize {
        let label: Arc<str> = Arc::from(path.to_string_lossy().as_ref());
        let (labels, inline) = self.file_labels(&label);
        let docker = self.docker_file(&path);
        // A successor at a rotated file's path carries on its counts.
        let (rotations, truncations) = self.files.iter().filter(|file| file.label == label).fold(
            (0, 0),
            |(rotations, truncations), file| {
                (
                    rotations.max(file.rotations),
                    truncations.max(file.truncations),
                )
            },
        );
        let file = FollowedFile {
            key,
            identity: FileIdentity {
                device: key.0,
                inode: key.1,
                fingerprint: 0,
                fingerprint_bytes: 0,
            },
            serial: 0,
            path,
            label,
            stream: STREAM_NEXT.fetch_add(1, Ordering::Relaxed),
            labels,
            inline,
            file: None,
            offset: 0,
            size,
            pending: Vec::new(),
            read_bytes_next: limits::CHUNK_BYTES,
            at_eof: true,
            next_poll: Instant::now(),
            poll_every: self.settings.poll_interval,
            bytes_since_end: 0,
            grown_at: None,
            changed_at: (0, 0),
            wants_open: true,
            unstarted,
            gone_since: None,
            deleted: false,
            last_read: Instant::now(),
            rotations,
            truncations,
            docker,
        };
        self.index.insert(key, self.files.len());
        self.files.push(file);
        self.files.len() - 1
    }

    /// Decides where reading starts in a file, from its first descriptor:
    /// takes its fingerprint and its offset, under a new reading number.
    /// `startup_size`: its size at the first scan, if it was found then.
    fn start(&mut self, index: usize, handle: &File, size: u64, startup_size: Option<u64>) {
        let (fingerprint, fingerprint_bytes) = positions::fingerprint(handle).unwrap_or((0, 0));
        let key = self.files[index].key;
        let path = self.files[index].path.clone();
        let offset = self.start_offset(handle, key, &path, size, startup_size);
        let serial = self.serial_next;
        self.serial_next += 1;
        let file = &mut self.files[index];
        file.identity.fingerprint = fingerprint;
        file.identity.fingerprint_bytes = fingerprint_bytes;
        file.serial = serial;
        file.offset = offset;
        file.size = size;
        file.unstarted = None;
        self.ledger.follow(
            key,
            Position {
                serial,
                identity: file.identity,
                path,
                delivered: offset,
                seen_at_ns: now_ns(),
            },
        );
    }

    /// Where reading starts in a newly found file.
    fn start_offset(
        &mut self,
        handle: &File,
        key: FileKey,
        path: &std::path::Path,
        size: u64,
        startup_size: Option<u64>,
    ) -> u64 {
        if let Some(stored) = self.ledger.get(key) {
            if positions::fingerprint_matches(handle, &stored.identity).unwrap_or(false) {
                if stored.delivered <= size {
                    return stored.delivered;
                }
                self.metrics.truncations.add(1);
                tracing::warn!(source = %self.settings.id, path = %path.display(), position = stored.delivered, size, "file shorter than its stored position; reading it from its start");
                return 0;
            }
            self.metrics.fingerprint_mismatches.add(1);
            tracing::info!(source = %self.settings.id, path = %path.display(), "stored position belongs to another file with this inode; reading from the start");
            return 0;
        }
        match startup_size {
            // Its end at start-up: lines written since are read.
            Some(startup_size) if self.settings.start_at == StartAt::End => startup_size.min(size),
            _ => 0,
        }
    }

    /// The labels of a file's lines: interned, or, for values the table
    /// has no room for, carried as strings (keys are interned at start-up).
    fn file_labels(&self, label: &Arc<str>) -> (LabelSet, Vec<(Symbol, Arc<str>)>) {
        let statics = self.settings.labels.iter();
        let pairs = statics
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .chain([("source_id", self.settings.id.as_str()), ("file", &**label)]);
        let (labels, overflow) = self.symbols.label_set_with_overflow(pairs);
        let inline = overflow
            .into_iter()
            .map(|(key, value)| {
                // The path is shared with the file's label, not copied.
                let value = if value == &**label {
                    Arc::clone(label)
                } else {
                    Arc::from(value)
                };
                (key, value)
            })
            .collect();
        (labels, inline)
    }

    /// Gives a file its descriptor, positioned at its offset.
    fn attach(&mut self, index: usize, mut handle: File) {
        let file = &mut self.files[index];
        if handle.seek(SeekFrom::Start(file.offset)).is_err() {
            return;
        }
        file.file = Some(handle);
        file.wants_open = false;
        file.at_eof = false;
        file.next_poll = Instant::now();
        self.open_files += 1;
    }

    /// Reopens a file closed for the descriptor limit. A path that now
    /// names another file leaves this one gone (the scan finds the other).
    fn reopen(&mut self, index: usize) -> bool {
        let file = &self.files[index];
        let Ok(handle) = File::open(&file.path) else {
            self.files[index].wants_open = false;
            return false;
        };
        let metadata = handle.metadata();
        let same = metadata
            .as_ref()
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == file.key);
        if let Some(unstarted) = file.unstarted {
            // Its first descriptor. Another file at the path leaves this
            // one unread and gone, as a file renamed away while closed.
            let Ok(metadata) = metadata.as_ref() else {
                self.files[index].wants_open = false;
                return false;
            };
            if !same {
                self.files[index].wants_open = false;
                return false;
            }
            self.start(index, &handle, metadata.len(), unstarted.startup_size);
            self.attach(index, handle);
            return true;
        }
        if !same {
            self.files[index].wants_open = false;
            return false;
        }
        let matches = positions::fingerprint_matches(&handle, &file.identity).unwrap_or(false);
        self.attach(index, handle);
        if !matches {
            // The inode was reused while closed: a new file, perhaps at
            // another path.
            self.metrics.fingerprint_mismatches.add(1);
            if *self.files[index].label != *self.files[index].path.to_string_lossy() {
                self.relabel(index);
            }
            self.restart_reading(index);
        }
        true
    }

    /// A file found on a reused inode under another name is labelled by
    /// its own path, as a new stream.
    fn relabel(&mut self, index: usize) {
        let label: Arc<str> = Arc::from(self.files[index].path.to_string_lossy().as_ref());
        let (labels, inline) = self.file_labels(&label);
        let file = &mut self.files[index];
        file.label = label;
        file.labels = labels;
        file.inline = inline;
        file.stream = STREAM_NEXT.fetch_add(1, Ordering::Relaxed);
        file.rotations = 0;
        file.truncations = 0;
    }

    /// Opens files waiting for a descriptor, closing idle ones (longest
    /// idle first) to make room. One pass over the files to find the idle
    /// ones, however many wait: a start with many files is not quadratic.
    pub(super) fn open_waiting(&mut self) {
        let waiting = |file: &FollowedFile| {
            file.wants_open && file.file.is_none() && file.gone_since.is_none()
        };
        if !self.files.iter().any(waiting) {
            return;
        }
        let mut idle: Vec<usize> = (0..self.files.len())
            .filter(|&index| self.is_idle(index))
            .collect();
        // Longest idle last, to be popped first.
        idle.sort_unstable_by_key(|&index| std::cmp::Reverse(self.files[index].last_read));
        for index in 0..self.files.len() {
            if !waiting(&self.files[index]) {
                continue;
            }
            if self.open_files >= self.settings.max_files {
                let Some(victim) = idle.pop() else {
                    return;
                };
                self.close_idle(victim);
            }
            self.reopen(index);
        }
    }

    /// Open, at its end, at its path, nothing carried that matters.
    fn is_idle(&self, index: usize) -> bool {
        let file = &self.files[index];
        file.file.is_some() && file.at_eof && file.gone_since.is_none()
    }

    /// Closes an idle file for the descriptor limit; it is reopened at its
    /// offset when it changes.
    fn close_idle(&mut self, index: usize) {
        debug_assert!(self.is_idle(index), "only idle files are closed");
        let file = &mut self.files[index];
        if let Some(metadata) = file.file.as_ref().and_then(|handle| handle.metadata().ok()) {
            file.changed_at = (metadata.ctime(), metadata.ctime_nsec());
        }
        file.unread_carried();
        self.close(index);
        self.metrics.files_closed_for_limit.add(1);
    }

    pub(super) fn close(&mut self, index: usize) {
        if self.files[index].file.take().is_some() {
            self.open_files -= 1;
        }
    }

    /// A new reading of the file from 0: receipts of the old one no longer
    /// count.
    fn restart_reading(&mut self, index: usize) {
        let serial = self.serial_next;
        self.serial_next += 1;
        let file = &mut self.files[index];
        file.serial = serial;
        file.offset = 0;
        file.pending.clear();
        if let Some(handle) = file.file.as_mut() {
            // Reading goes on from 0; a failed seek shows at the next read.
            let _ = handle.seek(SeekFrom::Start(0));
        }
        if let Some(handle) = file.file.as_ref()
            && let Ok((fingerprint, bytes)) = positions::fingerprint(handle)
        {
            file.identity.fingerprint = fingerprint;
            file.identity.fingerprint_bytes = bytes;
        }
        self.ledger.follow(
            file.key,
            Position {
                serial,
                identity: file.identity,
                path: file.path.clone(),
                delivered: 0,
                seen_at_ns: now_ns(),
            },
        );
    }

    /// At end of file: truncated below the offset, or deleted? Also extends
    /// a short fingerprint. (A rename is left to the scans.)
    pub(super) fn check_moved(&mut self, index: usize) {
        let file = &self.files[index];
        let Some(handle) = file.file.as_ref() else {
            return;
        };
        let Ok(metadata) = handle.metadata() else {
            return;
        };
        let size = metadata.len();
        self.files[index].size = size;
        if size < self.files[index].offset {
            self.truncated(index, size);
            return;
        }
        self.extend_fingerprint(index, size);
        let file = &mut self.files[index];
        if metadata.nlink() == 0 && !file.deleted {
            file.deleted = true;
            if file.gone_since.is_none() {
                // Found deleted before a scan found it gone: counted here,
                // as the scan would have (renamed or deleted).
                file.gone_since = Some(Instant::now());
                file.rotations += 1;
                self.metrics.rotations.add(1);
                tracing::info!(source = %self.settings.id, path = %file.path.display(), "file deleted; releasing it once read to its end");
            }
        }
        // A rename is noticed by the scans (prompted by inotify when the
        // new name or a new file appears in a watched directory): the file
        // is read on either way, so only its release waits for it.
    }

    fn truncated(&mut self, index: usize, size: u64) {
        self.emit_pending(index);
        let file = &mut self.files[index];
        file.truncations += 1;
        self.metrics.truncations.add(1);
        tracing::warn!(source = %self.settings.id, path = %file.path.display(), offset = file.offset, size, "file truncated; reading it from its start");
        let rewound = file
            .file
            .as_mut()
            .is_some_and(|handle| handle.seek(SeekFrom::Start(0)).is_ok());
        if rewound {
            self.restart_reading(index);
            self.files[index].at_eof = false;
            self.files[index].next_poll = Instant::now();
        }
    }

    fn extend_fingerprint(&mut self, index: usize, size: u64) {
        let file = &mut self.files[index];
        if file.identity.fingerprint_bytes >= FINGERPRINT_BYTES_MAX
            || size <= u64::from(file.identity.fingerprint_bytes)
        {
            return;
        }
        let Some(handle) = file.file.as_ref() else {
            return;
        };
        if let Ok((fingerprint, bytes)) = positions::fingerprint(handle) {
            file.identity.fingerprint = fingerprint;
            file.identity.fingerprint_bytes = bytes;
            self.ledger.refingerprint(file.key, file.identity);
        }
    }

    /// Releases gone files that are read to their end: deleted ones at
    /// once, renamed ones after `rotate_wait_ms` without new bytes (counted
    /// from the rotation at the earliest).
    pub(super) fn release_finished(&mut self) {
        let mut index = 0;
        while index < self.files.len() {
            let file = &self.files[index];
            // Quiet since the last read, and since it was found gone: a
            // file quiet for long before its rename still gets the writer's
            // late lines.
            let quiet = file.gone_since.is_some_and(|gone| {
                gone.max(file.last_read).elapsed() >= self.settings.rotate_wait
            });
            let done = file.gone_since.is_some()
                && file.at_eof
                && (file.deleted || file.file.is_none() || quiet);
            if !done {
                index += 1;
                continue;
            }
            self.emit_pending(index);
            self.close(index);
            let file = self.files.swap_remove(index);
            self.index.remove(&file.key);
            if file.deleted {
                // Its inode may be reused by a new file: no stored position
                // may claim it.
                self.ledger.forget(file.key);
            }
            if let Some(moved) = self.files.get(index) {
                self.index.insert(moved.key, index);
            }
            tracing::debug!(source = %self.settings.id, path = %file.path.display(), "rotated file read to its end; released");
        }
    }
}
