//! Compile-time limits that are not worth a config key.
//!
//! Every queue and buffer in the daemon has an upper bound. The bounds an
//! operator tunes live in the config (`[dispatcher]`, `[sources.*]`); the
//! ones below follow from the data layout and are checked against each other
//! at compile time.

/// Bytes one source chunk holds when it is allocated at start-up.
///
/// A file source reads straight into a chunk, so this is also the size of one
/// `read(2)`. 128 KiB holds about a thousand 120-byte lines: one ring
/// hand-off per thousand lines keeps the ring traffic negligible, and the
/// default pool of 16 such chunks is 2 MiB (resident only as far as reads
/// filled them: the source takes the chunk handed back last).
pub const CHUNK_BYTES: usize = 128 * 1024;

/// Most lines one source chunk carries.
///
/// The span table of a chunk is allocated once with this capacity. The ring
/// bound `queue_capacity` (in entries) is turned into a number of chunks by
/// dividing by this figure.
pub const CHUNK_LINES_MAX: usize = 1024;

/// Smallest spare room a chunk must have before a read: below this, the chunk
/// is handed on and a fresh one is taken, so that reads stay large.
pub const READ_BYTES_MIN: usize = 16 * 1024;

/// Fewest chunks in a source's pool, whatever `queue_capacity` says: one
/// being filled and one in the ring, so that reading and batching overlap.
pub const SOURCE_CHUNKS_MIN: usize = 2;

/// Longest a stage parks when it has nothing to do. Parking is ended early by
/// the producer of the ring the stage waits on, and a stop or reopen request
/// wakes the stages it concerns; this bound is only how often a stage looks
/// around on its own. Every wake-up of an idle daemon costs: at 100 ms the
/// park bounds were two thirds of them (idle CPU 0.15% of a core, 0.07% at
/// 500 ms, `perf/idle.sh`).
pub const PARK_TIMEOUT_MS_MAX: u64 = 500;

/// Chunks the dispatcher takes from one source before it looks at the next,
/// so that a fast source cannot starve a slow one.
pub const DISPATCH_CHUNKS_PER_SOURCE_MAX: usize = 8;

/// Upper bound on `max_line_bytes`: a line longer than this cannot be
/// configured to stay whole, because a span length is a `u32` and a chunk
/// that must hold a whole line grows to this size.
pub const LINE_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// Most `[sources.<id>]` tables in one config. A batch entry names its
/// source in a `u16` (`batch::SourceIndex`), whose largest value marks an
/// entry replayed from the DLQ; every other value is a source.
pub const SOURCES_MAX: usize = u16::MAX as usize;

const _: () = assert!(CHUNK_BYTES >= 2 * READ_BYTES_MIN);
const _: () = assert!(CHUNK_LINES_MAX > 0);
const _: () = assert!(LINE_BYTES_LIMIT <= u32::MAX as usize);
const _: () = assert!(SOURCE_CHUNKS_MIN >= 2);

/// Most sinks in one config: the dispatcher keeps one bit per sink in a
/// `u64` for every batch in flight.
pub const SINKS_MAX: usize = 64;
