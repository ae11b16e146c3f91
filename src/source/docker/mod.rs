//! The Docker container source's parts: how it finds containers and how
//! it reads their lines. The source itself is the file source
//! (`source::file`) with these parts plugged in (`source::file::containers`).
//!
//! * [`api`]: a small synchronous HTTP/1.1 client of the Engine API over
//!   its Unix socket (ping, list, inspect, the `/events` stream).
//! * [`watch`]: which containers are followed, kept current from the event
//!   stream; reconnects with backoff; the access check at start-up.
//! * [`json_file`]: the decoder of one `json-file` driver line, in place.
//! * [`lines`]: a chunk of JSON lines turned into entries (time, stream
//!   labels, Docker's partial pieces joined).
//!
//! Thread: the docker source's. Layering: these modules use `labels`,
//! `limits`, `metrics` and `source` (the chunk), never the file source;
//! the file source uses them. Allocations: per container and per event;
//! none per line (a joined line is copied once into its stream's buffer).

pub mod api;
pub mod json_file;
pub mod lines;
pub mod watch;

pub use json_file::{DecodeError, JsonFileLine, LogStream, decode_in_place};
