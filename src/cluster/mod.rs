//! Cluster mode: fanfare nodes that share their publishes over NATS (`docs/scale-out.md`).
//!
//! - `subject.rs`: MQTT topics and filters as NATS subjects, as nats-server maps them.

pub mod subject;
