//! Bridges: links from this broker to other MQTT brokers (`docs/bridges.md`), one per
//! `[[bridge]]` table.
//!
//! - `link.rs`: the queues between the shards and one bridge, bounded in bytes both ways,
//!   and the bridge's figures.
//! - `remap.rs`: topics renamed between the two brokers by the mappings' prefixes.
//! - `client.rs`: the thread that holds the connection to the remote broker, off the shard
//!   loops.
//! - `transport.rs`: the byte stream to the remote: TCP, TLS, WebSocket or both, as the URL
//!   says; `tls.rs`: the TLS client settings it uses.
//! - `queue.rs`: store-and-forward: the messages to the remote, held until it acknowledges
//!   them, bounded, with what a full queue does;
//! - `journal.rs`: the queue's files, so that it survives a restart.
//!
//! A publish that enters on this node goes to every bridge with an `out` mapping matching
//! it; a message from a remote broker is taken by shard 0 and published on this node only,
//! never forwarded to the cluster or to a bridge (`Broker::publish_from_remote`), nor to
//! another broker's bridge connected here, so no message loops back to where it came from
//! (`docs/bridges.md`, Loops).

pub mod client;
pub mod journal;
pub mod link;
pub mod queue;
pub mod remap;
pub mod tls;
pub mod transport;

pub use client::{BridgeError, spawn};
pub use link::{BridgeLink, FROM_BRIDGES_PER_TURN_MAX, INTAKE_SHARD};
