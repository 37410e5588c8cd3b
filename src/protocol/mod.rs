//! Sans-IO wire codecs: MQTT packets, the WebSocket layer that may carry them, and the HTTP
//! request head that opens a WebSocket or asks for a file.

pub mod http;
pub mod mqtt;
pub mod ws;
