//! fanfare: an MQTT broker for massive fan-out over WebSockets.

#![deny(unsafe_code)]

pub mod broker;
pub mod config;
pub mod conn;
pub mod http;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod shard;
pub mod slots;
