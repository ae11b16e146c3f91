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

use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

/// A handle that unparks one stage thread. Cloned into every producer that
/// feeds that stage; the stage registers itself when it starts.
#[derive(Debug, Clone, Default)]
pub struct Waker {
    thread: Arc<OnceLock<Thread>>,
}

impl Waker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds this waker to the calling thread. Called once, first thing, by
    /// the stage thread; a wake before that is harmless because the stage
    /// looks at its rings before it first parks.
    pub fn register_current(&self) {
        let registered = self.thread.set(std::thread::current());
        assert!(registered.is_ok(), "a waker is bound to one thread only");
    }

    pub fn wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

/// Parks the calling thread for at most `timeout`, or until woken.
pub fn park(timeout: Duration) {
    std::thread::park_timeout(timeout);
}
