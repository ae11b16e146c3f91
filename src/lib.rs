//! log-capturer: a log shipping daemon for bare-metal hosts.
//!
//! File sources read lines; a dispatcher batches them; sinks (Kafka, files,
//! standard output, null) ship the batches. Each stage is a thread, pinned
//! to a core when configured, and stages talk only through single-producer
//! single-consumer rings (`rtrb`): no lock on the data path. What a sink
//! could not deliver goes to its dead-letter queue on disk, and a replay
//! thread per sink delivers it later through that sink's own thread.
//!
//! What allocates: everything the data path uses is allocated when the
//! pipeline starts ([`pipeline::Pipeline::start`]): chunk pools, rings,
//! batch arenas, encode buffers. In steady state a batch of `batch_size`
//! lines costs two small allocations (its cell and its `Arc`), not one per
//! line.
//!
//! What blocks: nothing on the data path. A stage with nothing to do parks
//! and is unparked by the producer of its ring ([`wake`]). A full ring
//! stops its producer: a file source stops reading (the file is the buffer),
//! the dispatcher stops taking chunks when every batch arena is in flight.
//!
//! ```text
//!  file source ─┐                      ┌─► kafka sink ─┐
//!  file source ─┼─SPSC─► dispatcher ───┼─► file sink  ─┼─ reports (SPSC back)
//!               │        (batcher)     └─► null       ─┘
//!                                            ▲
//!                     DLQ ──► replay ────────┘ (each sink's replay lane)
//! ```
//!
//! Layers, bottom up (no module imports one above it): `limits`, `clock`,
//! `json`, `labels`, `metrics`, `wake`, `pin`, `resident`, `error_chain`, `retry`,
//! `top`, `notify`, `handover`;
//! `batch`; `source`, `sink` (with its link protocol, [`sink::link`]),
//! `dlq` (storage only); `config`; `telemetry`; `dispatch`, `replay`;
//! `pipeline`; `reload`, `demo`.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod batch;
pub mod clock;
pub mod config;
pub mod demo;
pub mod dispatch;
pub mod dlq;
pub mod error_chain;
pub mod handover;
pub mod json;
pub mod labels;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod pin;
pub mod pipeline;
pub mod reload;
pub mod replay;
pub mod resident;
pub mod retry;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod top;
pub mod wake;
