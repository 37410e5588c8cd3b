//! Sans-IO wire codecs: MQTT packets and the WebSocket layer that may carry them.

pub mod mqtt;
pub mod ws;
