//! MQTT codec: bytes in, packets out, and back. No I/O, no clock.

pub mod packet;

pub use packet::*;
