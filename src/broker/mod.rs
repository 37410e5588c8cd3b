//! Sans-IO broker state of one shard: sessions, subscriptions, retained messages, QoS flows.

pub mod outbox;
mod slab;
mod topic_trie;

pub use outbox::*;
mod outbound;
mod retained;
