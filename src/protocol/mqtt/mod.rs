//! MQTT codec: bytes in, packets out, and back. No I/O, no clock.

pub mod decode;
pub mod encode;
pub mod error;
pub mod packet;
pub mod topic;

pub use decode::{DecodeLimits, decode, decode_from_server, packet_len};
pub use encode::{encode, encoded_len, publish_packet_id_offset};
pub use error::DecodeError;
pub use packet::*;
