//! Cluster mode: fanfare nodes that share their publishes over NATS (`docs/scale-out.md`).
//!
//! - `subject.rs`: MQTT topics and filters as NATS subjects, as nats-server maps them.
//! - `link.rs`: the queues between the shards and the bridge, bounded in bytes both ways.
//! - `headers.rs`: the RETAIN flag and MQTT 5 properties as NATS headers.
//! - `client_ids.rs`: a CONNECT on one node takes down the same client id on the others.
//! - `retained.rs`: retained messages in a JetStream stream that every node follows.
//! - `sessions.rs`: persistent sessions in a JetStream bucket, moved to the node their
//!   client connects to.
//! - `bucket_marks.rs`: under `sync`, how far the bucket holds each shard's flushes.
//! - `qos.rs`: QoS 1/2 publishes on a JetStream stream, read by each node's consumers.
//! - `replay.rs`: the QoS stream read again for the sessions of a node that died.
//! - `bridge.rs`: the thread that runs the NATS client, off the shard loops.

pub mod bridge;
pub mod bucket_marks;
pub mod client_ids;
pub mod headers;
pub mod link;
pub mod qos;
mod replay;
pub mod retained;
pub mod sessions;
pub mod subject;
mod unsent;

pub use bridge::{BridgeError, spawn};
pub use link::{ClusterLink, FROM_CLUSTER_PER_TURN_MAX, INTAKE_SHARD, QosPublish, Ticket};
