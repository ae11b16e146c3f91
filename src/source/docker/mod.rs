//! The Docker container source's building blocks.
//!
//! So far this holds the decoder of the `json-file` log driver's lines
//! ([`json_file`]): the part every other piece of the container source
//! (discovery through the Engine API, following `<id>-json.log` with the
//! durable file machinery) stands on. It runs on whichever source thread
//! reads the files, allocates nothing and keeps no state between lines.

pub mod api;
pub mod json_file;
pub mod lines;
pub mod watch;

pub use json_file::{DecodeError, JsonFileLine, LogStream, decode_in_place};
