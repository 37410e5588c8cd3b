//! WebSocket (RFC 6455) as MQTT uses it (MQTT 3.1.1 §6): the HTTP upgrade and binary frames.

pub mod frame;
pub mod handshake;
pub mod mask;
