//! fanfare: an MQTT broker for massive fan-out over WebSockets.

pub mod broker;
pub mod config;
pub mod net;
pub mod protocol;
pub mod shard;
