//! The syslog source (placeholder while it is built).

pub mod message;
