//! WebSocket (RFC 6455) as MQTT uses it (MQTT 3.1.1 §6): the HTTP upgrade and binary frames.
//! `handshake.rs` is the server's side of the upgrade, `upgrade_request.rs` the client's.

pub mod frame;
pub mod handshake;
pub mod mask;
pub mod upgrade_request;
