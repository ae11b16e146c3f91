//! Grafana Loki: the push requests the sink sends.
//!
//! So far this holds the request encoder ([`request`]): entries grouped
//! into streams and written as Loki's native push (`logproto.PushRequest`,
//! snappy block format) or its JSON push. The sink thread that sends them
//! builds on it.

pub mod request;
