//! Sans-IO wire codecs: MQTT packets, the WebSocket layer that may carry them, the HTTP
//! request head that opens a WebSocket or asks for a file, and the PROXY protocol header a
//! load balancer puts before a connection's first byte.

pub mod http;
pub mod mqtt;
pub mod proxy;
pub mod ws;
