//! Messages handed to librdkafka in groups: `rd_kafka_produce_batch` on a
//! topic handle made once, instead of `rd_kafka_producev` per message.
//!
//! Why: rdkafka's `BaseProducer::send` makes a C string of the topic name
//! for every message (a malloc and a free), and `rd_kafka_producev` looks
//! the topic up by that name under the client's lock and reads both clocks,
//! per message. At 50,000 lines/s those were about a tenth of the daemon's
//! CPU (docs/PERFORMANCE.md, "At 50,000 lines/s: read rounds and grouped
//! produce"). A group takes the
//! topic's lock and the clocks once.
//!
//! Thread: the Kafka sink's. Limits: a group holds at most
//! [`GROUP_MESSAGES_MAX`] messages, and is full once its bytes (payloads and
//! keys, copied in) pass [`GROUP_BYTES_MAX`]. Allocations: the byte buffer
//! and the two arrays grow to the largest group and are kept (a group of
//! 1 MiB lines holds one line over the bound at most); librdkafka copies
//! every message (`RD_KAFKA_MSG_F_COPY`), so the buffer is reused at once.
//!
//! Invariant: the pointers handed to librdkafka are made from `bytes` in
//! [`MessageGroup::produce`], after the last push, so no reallocation can
//! move what they point at while librdkafka reads it.

use std::ffi::{CString, c_void};
use std::ops::Range;
use std::ptr::NonNull;

use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

/// Messages in one group: enough that the lock and clock reads are spread
/// thin, few enough that the message array stays small (72 bytes each).
pub const GROUP_MESSAGES_MAX: usize = 256;

/// Payload and key bytes after which a group is full.
pub const GROUP_BYTES_MAX: usize = 256 * 1024;

/// librdkafka's "any partition": the configured partitioner chooses.
const PARTITION_UNASSIGNED: i32 = -1;

/// A topic handle of the sink's producer. Declared before the producer in
/// the sink, so that it is destroyed first.
pub struct TopicHandle {
    topic: NonNull<rdsys::rd_kafka_topic_t>,
}

// SAFETY: librdkafka's topic handles may be used from any thread (its API
// takes the topic's own lock); this one is used by the sink thread only.
unsafe impl Send for TopicHandle {}

/// Why a topic handle could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic name contains a NUL byte")]
    Nul,
    #[error("librdkafka refused the topic: {0}")]
    Refused(RDKafkaErrorCode),
}

impl TopicHandle {
    pub fn new<C: ProducerContext>(
        producer: &BaseProducer<C>,
        name: &str,
    ) -> Result<Self, TopicError> {
        let name = CString::new(name).map_err(|_| TopicError::Nul)?;
        // SAFETY: the client pointer is live while `producer` is (and the
        // sink drops this handle first); `name` outlives the call, which
        // copies it; a null configuration takes the client's default topic
        // configuration, as `rd_kafka_producev` does.
        let topic = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        match NonNull::new(topic) {
            Some(topic) => Ok(Self { topic }),
            None => {
                // SAFETY: reads librdkafka's thread-local last error.
                let code = unsafe { rdsys::rd_kafka_last_error() };
                Err(TopicError::Refused(code.into()))
            }
        }
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: made by `rd_kafka_topic_new`, destroyed once, here.
        unsafe { rdsys::rd_kafka_topic_destroy(self.topic.as_ptr()) };
    }
}

impl std::fmt::Debug for TopicHandle {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TopicHandle")
            .finish_non_exhaustive()
    }
}

/// One message of a group: where its payload and key lie in `bytes`, and
/// the opaque its delivery report brings back.
#[derive(Debug, Clone)]
struct Part {
    payload: Range<usize>,
    key: Option<Range<usize>>,
    opaque: usize,
}

/// An encoded entry's message payload: without its trailing newline.
pub fn payload_of(encoded: &[u8]) -> &[u8] {
    encoded.strip_suffix(b"\n").unwrap_or(encoded)
}

/// Messages gathered to be produced together.
#[derive(Debug, Default)]
pub struct MessageGroup {
    bytes: Vec<u8>,
    parts: Vec<Part>,
    messages: Vec<rdsys::rd_kafka_message_t>,
}

// SAFETY: the raw pointers in `messages` point into `bytes` only during
// `produce`, which empties `messages` before it returns (asserted in the
// tests); between calls the group holds owned bytes and numbers only.
unsafe impl Send for MessageGroup {}

/// What librdkafka did with one message of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    /// Queued; its delivery report comes later.
    Queued,
    /// Refused at once with this code; no delivery report comes.
    Refused(RDKafkaErrorCode),
}

impl MessageGroup {
    /// The buffer a payload is written into: [`MessageGroup::push`] takes
    /// what was appended since `start` (see `payload_start`).
    pub fn bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Where the next payload starts in [`MessageGroup::bytes_mut`].
    pub fn payload_start(&self) -> usize {
        self.bytes.len()
    }

    /// Adds the message whose payload was appended from `start`, without a
    /// trailing newline if it has one, with `key` and `opaque`.
    pub fn push(&mut self, start: usize, key: Option<&[u8]>, opaque: usize) {
        assert!(start <= self.bytes.len(), "payload start inside the buffer");
        let end = start + payload_of(&self.bytes[start..]).len();
        self.bytes.truncate(end);
        let key = key.map(|key| {
            let key_start = self.bytes.len();
            self.bytes.extend_from_slice(key);
            key_start..self.bytes.len()
        });
        self.parts.push(Part {
            payload: start..end,
            key,
            opaque,
        });
    }

    /// Drops a payload appended since `start` that will not be pushed.
    pub fn discard_from(&mut self, start: usize) {
        self.bytes.truncate(start);
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.parts.len() >= GROUP_MESSAGES_MAX || self.bytes.len() >= GROUP_BYTES_MAX
    }

    /// Hands every message to librdkafka, then calls `outcome` with each
    /// message's opaque and what became of it, in order, and empties the
    /// group. Once a message is refused for a full queue, every later one
    /// is refused so too (librdkafka stops queueing): order is kept.
    pub fn produce(&mut self, topic: &TopicHandle, mut outcome: impl FnMut(usize, Produced)) {
        if self.parts.is_empty() {
            return;
        }
        let base = self.bytes.as_mut_ptr();
        self.messages.clear();
        for part in &self.parts {
            // SAFETY: every range lies inside `bytes` (made by `push`), and
            // `bytes` is not touched again until librdkafka has copied
            // them (`RD_KAFKA_MSG_F_COPY`) inside the call below.
            let payload = unsafe { base.add(part.payload.start) };
            let (key, key_len) = match &part.key {
                // SAFETY: as for the payload.
                Some(key) => (unsafe { base.add(key.start) }, key.len()),
                None => (std::ptr::null_mut(), 0),
            };
            self.messages.push(rdsys::rd_kafka_message_t {
                err: rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: std::ptr::null_mut(),
                partition: PARTITION_UNASSIGNED,
                payload: payload.cast::<c_void>(),
                len: part.payload.len(),
                key: key.cast::<c_void>(),
                key_len,
                offset: 0,
                _private: part.opaque as *mut c_void,
            });
        }
        let count = i32::try_from(self.messages.len()).expect("a group holds few messages");
        // SAFETY: `topic` is a live handle of this client; `messages` holds
        // `count` initialised messages whose payload and key pointers are
        // valid for their lengths during the call (see above); librdkafka
        // copies them and writes only each message's `err`. The opaque is a
        // number, not a pointer: the delivery callback reads it back as the
        // `usize` it is (`KafkaContext::DeliveryOpaque`).
        unsafe {
            rdsys::rd_kafka_produce_batch(
                topic.topic.as_ptr(),
                PARTITION_UNASSIGNED,
                rdsys::RD_KAFKA_MSG_F_COPY,
                self.messages.as_mut_ptr(),
                count,
            );
        }
        for (part, message) in self.parts.iter().zip(&self.messages) {
            let produced = match message.err {
                rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Produced::Queued,
                code => Produced::Refused(code.into()),
            };
            outcome(part.opaque, produced);
        }
        self.bytes.clear();
        self.parts.clear();
        self.messages.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use rdkafka::ClientConfig;
    use rdkafka::ClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};

    use super::*;

    /// Records each delivery report's opaque and whether it succeeded.
    #[derive(Default)]
    struct Reports(Mutex<Vec<(usize, bool)>>);

    impl ClientContext for Reports {}

    impl ProducerContext for Reports {
        type DeliveryOpaque = usize;

        fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
            self.0.lock().unwrap().push((opaque, result.is_ok()));
        }
    }

    fn producer(brokers: &str, extra: &[(&str, &str)]) -> BaseProducer<Reports> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "0");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        config.create_with_context(Reports::default()).unwrap()
    }

    fn push(group: &mut MessageGroup, payload: &[u8], key: Option<&[u8]>, opaque: usize) {
        let start = group.payload_start();
        group.bytes_mut().extend_from_slice(payload);
        group.push(start, key, opaque);
    }

    #[test]
    fn a_group_arrives_whole_in_order_with_keys_and_opaques() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("group", 1, 1).unwrap();
        let producer = producer(&cluster.bootstrap_servers(), &[]);
        let topic = TopicHandle::new(&producer, "group").unwrap();
        let mut group = MessageGroup::default();
        push(&mut group, b"first\n", Some(b"k1"), 7);
        // Discarded payloads leave nothing behind.
        let start = group.payload_start();
        group.bytes_mut().extend_from_slice(b"dropped");
        group.discard_from(start);
        push(&mut group, b"", None, 8);
        push(&mut group, b"third line, no newline", Some(b""), 9);
        push(&mut group, &vec![b'x'; 100_000], None, 10);
        assert_eq!(group.len(), 4);
        let mut outcomes = Vec::new();
        group.produce(&topic, |opaque, produced| outcomes.push((opaque, produced)));
        assert_eq!(
            outcomes,
            [7, 8, 9, 10]
                .map(|opaque| (opaque, Produced::Queued))
                .to_vec()
        );
        assert!(group.is_empty() && group.messages.is_empty() && group.bytes.is_empty());
        producer.flush(Duration::from_secs(10)).unwrap();
        let reports = producer.context().0.lock().unwrap().clone();
        assert_eq!(reports, vec![(7, true), (8, true), (9, true), (10, true)]);

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("group.id", "group-test")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&["group"]).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 4 && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                got.push((
                    message.key().map(<[u8]>::to_vec),
                    message.payload().unwrap_or_default().to_vec(),
                ));
            }
        }
        assert_eq!(got.len(), 4, "every message consumed");
        assert_eq!(got[0], (Some(b"k1".to_vec()), b"first".to_vec()));
        assert_eq!(got[1], (None, Vec::new()));
        assert_eq!(
            got[2],
            (Some(Vec::new()), b"third line, no newline".to_vec())
        );
        assert_eq!(got[3], (None, vec![b'x'; 100_000]));
    }

    #[test]
    fn a_full_queue_refuses_the_rest_of_the_group_in_order() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("full", 1, 1).unwrap();
        let producer = producer(
            &cluster.bootstrap_servers(),
            &[("queue.buffering.max.messages", "3")],
        );
        let topic = TopicHandle::new(&producer, "full").unwrap();
        let mut group = MessageGroup::default();
        for opaque in 0..6 {
            push(&mut group, b"line", None, opaque);
        }
        let mut outcomes = Vec::new();
        group.produce(&topic, |opaque, produced| outcomes.push((opaque, produced)));
        let queued: Vec<usize> = outcomes
            .iter()
            .filter(|(_, produced)| *produced == Produced::Queued)
            .map(|(opaque, _)| *opaque)
            .collect();
        assert_eq!(queued, vec![0, 1, 2]);
        assert!(
            outcomes[3..]
                .iter()
                .all(|(_, produced)| *produced == Produced::Refused(RDKafkaErrorCode::QueueFull)),
            "{outcomes:?}"
        );
        producer.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(producer.context().0.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_group_is_full_by_count_or_bytes() {
        let mut group = MessageGroup::default();
        for opaque in 0..GROUP_MESSAGES_MAX {
            assert!(!group.is_full());
            push(&mut group, b"x", None, opaque);
        }
        assert!(group.is_full());
        let mut group = MessageGroup::default();
        push(&mut group, &vec![b'y'; GROUP_BYTES_MAX], None, 0);
        assert!(group.is_full());
    }

    #[test]
    fn a_topic_name_with_a_nul_is_refused() {
        let producer = producer("127.0.0.1:1", &[]);
        assert!(matches!(
            TopicHandle::new(&producer, "bad\0name"),
            Err(TopicError::Nul)
        ));
    }
}
