//! Wake-ups between stages.
//!
//! `rtrb` rings never block and have no wake-up of their own. A stage with
//! nothing to do parks its thread; whoever pushes into one of its rings calls
//! [`Waker::wake`] afterwards. Unparking a thread that is running costs one
//! atomic swap, so producers wake their consumer after every push.
//!
//! No wake-up is lost: a consumer checks its rings, then parks; a push that
//! lands between the check and the park leaves an unpark token, and the park
//! returns at once.
//!
//! A stage that waits in `epoll` (the syslog source, on its sockets)
//! registers a `mio::Waker` instead of its thread: a wake then ends its
//! poll, and a wake before the poll makes the poll return at once, as the
//! unpark token does.

use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

/// A handle that unparks one stage thread. Cloned into every producer that
/// feeds that stage; the stage registers itself when it starts.
#[derive(Debug, Clone, Default)]
pub struct Waker {
    target: Arc<OnceLock<Target>>,
}

/// What a wake reaches.
#[derive(Debug)]
enum Target {
    Thread(Thread),
    Poll(mio::Waker),
}

impl Waker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds this waker to the calling thread. Called once, first thing, by
    /// the stage thread; a wake before that is harmless because the stage
    /// looks at its rings before it first parks.
    pub fn register_current(&self) {
        let registered = self.target.set(Target::Thread(std::thread::current()));
        assert!(registered.is_ok(), "a waker is bound to one thread only");
    }

    /// Binds this waker to a `mio` poll: a wake ends the poll's wait.
    pub fn register_poll(&self, waker: mio::Waker) {
        let registered = self.target.set(Target::Poll(waker));
        assert!(registered.is_ok(), "a waker is bound to one thread only");
    }

    pub fn wake(&self) {
        match self.target.get() {
            Some(Target::Thread(thread)) => thread.unpark(),
            Some(Target::Poll(waker)) => {
                // It fails only if the eventfd cannot be written, which a
                // full counter (2^64 - 2 wakes not yet seen) would cause;
                // the poll then has wakes pending anyway.
                let _ = waker.wake();
            }
            None => {}
        }
    }
}

/// Parks the calling thread for at most `timeout`, or until woken.
pub fn park(timeout: Duration) {
    std::thread::park_timeout(timeout);
}
