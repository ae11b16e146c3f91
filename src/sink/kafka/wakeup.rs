//! How the Kafka sink thread waits: on a `mio` poll over its waker (the
//! dispatcher and the replay stage ring it when they hand over a batch)
//! and a pipe that librdkafka writes to when its main queue, where
//! delivery reports arrive, goes from empty to not empty
//! (`rd_kafka_queue_io_event_enable`). So the thread sleeps until a report
//! or a batch comes, instead of waking every millisecond to look.
//!
//! Thread: the sink's. Allocations: the poll's event list, once.
//! `unsafe`: three calls into librdkafka on a queue handle this struct
//! owns; each states why it is sound. The Kafka tests exercise them (every
//! delivery report wakes the sink through this pipe).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::unix::pipe;
use mio::{Events, Interest, Poll, Token};
use rdkafka::bindings as rdsys;

use crate::wake::Waker;

const WAKE: Token = Token(0);
const REPORTS: Token = Token(1);

/// What librdkafka writes to the pipe: the byte itself carries nothing.
static REPORT_BYTE: u8 = 1;

/// Most queued events served in one round before the loop goes on.
const EVENTS_PER_ROUND_MAX: usize = 10_000;

/// The wait of a Kafka sink. Must be dropped before the producer whose
/// queue it watches (it is a field declared before the producer).
pub struct ReportWait {
    poll: Poll,
    events: Events,
    /// A handle on the client's main queue, owned by this struct.
    queue: *mut rdsys::rd_kafka_queue_t,
    /// librdkafka writes to `sender`; the poll watches `receiver`.
    sender: pipe::Sender,
    receiver: pipe::Receiver,
    drained: [u8; 64],
}

// SAFETY: the queue handle is used only by the thread that owns this
// struct (the sink thread); librdkafka's queue handles may be used from any
// thread, one at a time.
unsafe impl Send for ReportWait {}

impl std::fmt::Debug for ReportWait {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ReportWait").finish_non_exhaustive()
    }
}

impl ReportWait {
    /// Binds `own` to a new poll and has librdkafka signal the main queue
    /// of `client` on a pipe that poll watches.
    pub fn new<C: rdkafka::ClientContext>(
        client: &rdkafka::client::Client<C>,
        own: &Waker,
    ) -> std::io::Result<ReportWait> {
        let poll = Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKE)?;
        let (sender, mut receiver) = pipe::new()?;
        poll.registry()
            .register(&mut receiver, REPORTS, Interest::READABLE)?;
        // SAFETY: `native_ptr` is the live client's handle; the returned
        // queue handle is owned here and destroyed in `drop`, which runs
        // before the producer is dropped (field order in `KafkaSink`).
        let queue = unsafe { rdsys::rd_kafka_queue_get_main(client.native_ptr()) };
        assert!(!queue.is_null(), "a client has a main queue");
        // SAFETY: `queue` is valid (above); the descriptor stays open while
        // the event is enabled: `drop` disables it before `sender` closes.
        // librdkafka copies the one-byte payload.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(
                queue,
                sender.as_raw_fd(),
                std::ptr::from_ref(&REPORT_BYTE).cast(),
                1,
            );
        }
        own.register_poll(waker);
        Ok(ReportWait {
            poll,
            events: Events::with_capacity(4),
            queue,
            sender,
            receiver,
            drained: [0; 64],
        })
    }

    /// Events waiting in the main queue: the loop serves them (each
    /// `poll(0)` serves one) until none is left, since librdkafka signals
    /// only when the queue goes from empty to not empty.
    pub fn queued(&self) -> usize {
        // SAFETY: `queue` is valid for the life of `self`.
        unsafe { rdsys::rd_kafka_queue_length(self.queue) }
    }

    /// Serves every queued event with `serve_one`, within a bound.
    pub fn serve_queued(&self, mut serve_one: impl FnMut()) {
        for _ in 0..EVENTS_PER_ROUND_MAX {
            if self.queued() == 0 {
                return;
            }
            serve_one();
        }
    }

    /// Waits at most `timeout` for a report, a batch or a wake-up.
    pub fn wait(&mut self, timeout: Duration) {
        // An interrupted wait ends early, which costs one round.
        let _ = self.poll.poll(&mut self.events, Some(timeout));
        // Empty the pipe so that the next signal is a new edge.
        while matches!(self.receiver.read(&mut self.drained), Ok(read) if read > 0) {}
    }
}

impl Drop for ReportWait {
    fn drop(&mut self) {
        // SAFETY: `queue` is valid; disabling (fd -1) before the pipe closes
        // means librdkafka never writes to a closed or reused descriptor.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, -1, std::ptr::null(), 0);
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
        let _ = &self.sender;
    }
}
