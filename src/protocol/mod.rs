//! Sans-IO wire codecs: MQTT packets, the WebSocket layer that may carry them, the HTTP
//! request head that opens a WebSocket or asks for a file, and what proxies in front of the
//! broker say about the client: the PROXY protocol header before a connection's first byte,
//! the `Forwarded` and `X-Forwarded-For` fields of its request head.

pub mod forwarded;
pub mod http;
pub mod mqtt;
pub mod proxy;
pub mod ws;
