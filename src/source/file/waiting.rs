//! How the file source thread waits: on a `mio` poll over its waker and
//! its inotify descriptor, so that the dispatcher's wake-ups (chunks and
//! receipts coming back) and writes to watched files both end the wait;
//! or, when no poll can be made, parked until the dispatcher unparks it.
//!
//! Thread: the source's (the waker is bound to it in [`Waiter::bind`]).
//! Allocations: the poll's event list, once.

use std::os::fd::RawFd;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::wake::{self, Waker};

const WAKE: Token = Token(0);
const INOTIFY: Token = Token(1);
const EVENTS: Token = Token(2);

/// Events taken per wait: the source reads every ready source itself, so
/// the list only needs to end the wait.
const EVENTS_MAX: usize = 8;

#[derive(Debug)]
pub enum Waiter {
    Poll {
        poll: Poll,
        events: Events,
        /// The inotify descriptor, and whether it is in the poll now.
        inotify: Option<(RawFd, bool)>,
        /// The docker source's event stream, while it is open.
        docker_events: Option<RawFd>,
    },
    Park,
}

impl Waiter {
    /// Binds `own` (the source's waker) to a new poll that also watches
    /// `inotify`; falls back to parking the thread if that fails.
    pub fn bind(own: &Waker, inotify: Option<RawFd>) -> Waiter {
        match Self::poll(inotify) {
            Ok((poll, waker)) => {
                own.register_poll(waker);
                Waiter::Poll {
                    poll,
                    events: Events::with_capacity(EVENTS_MAX),
                    inotify: inotify.map(|fd| (fd, true)),
                    docker_events: None,
                }
            }
            Err(error) => {
                tracing::warn!(%error, "no poll for the file source; it is woken by its poll interval and the dispatcher only");
                own.register_current();
                Waiter::Park
            }
        }
    }

    fn poll(inotify: Option<RawFd>) -> std::io::Result<(Poll, mio::Waker)> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        if let Some(fd) = inotify {
            poll.registry()
                .register(&mut SourceFd(&fd), INOTIFY, Interest::READABLE)?;
        }
        Ok((poll, waker))
    }

    /// Watches `fd` (a docker source's event stream) instead of the one
    /// watched before, if any; `None` watches none.
    pub fn watch_events(&mut self, fd: Option<RawFd>) {
        let Waiter::Poll {
            poll,
            docker_events,
            ..
        } = self
        else {
            return;
        };
        if *docker_events == fd {
            return;
        }
        let registry = poll.registry();
        if let Some(old) = docker_events.take() {
            // Closed already when the stream was dropped: nothing to undo.
            let _ = registry.deregister(&mut SourceFd(&old));
        }
        if let Some(new) = fd
            && registry
                .register(&mut SourceFd(&new), EVENTS, Interest::READABLE)
                .is_ok()
        {
            *docker_events = Some(new);
        }
    }

    /// Waits at most `timeout` for a wake-up, or also for an inotify event
    /// when `watch_writes`. A source that will read soon anyway leaves
    /// inotify out: a writer's every `write` would otherwise wake it.
    /// Events that come meanwhile wait in inotify's queue, and putting the
    /// descriptor back in the poll reports them at once.
    pub fn wait(&mut self, timeout: Duration, watch_writes: bool) {
        match self {
            Waiter::Poll {
                poll,
                events,
                inotify,
                ..
            } => {
                if let Some((fd, registered)) = inotify
                    && *registered != watch_writes
                {
                    let registry = poll.registry();
                    let changed = if watch_writes {
                        registry.register(&mut SourceFd(fd), INOTIFY, Interest::READABLE)
                    } else {
                        registry.deregister(&mut SourceFd(fd))
                    };
                    if changed.is_ok() {
                        *registered = watch_writes;
                    }
                }
                // An interrupted wait ends early, which costs one round.
                let _ = poll.poll(events, Some(timeout));
            }
            Waiter::Park => wake::park(timeout),
        }
    }
}
