//! Sans-IO broker state of one shard: sessions, subscriptions, retained messages, QoS flows.

pub mod outbox;

pub use outbox::*;
