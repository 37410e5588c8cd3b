//! MQTT codec: bytes in, packets out, and back. No I/O, no clock.
//!
//! One packet model ([`packet`]) for MQTT 3.1, 3.1.1 and 5.0; the decoder and encoder read
//! and write each level's layout. MQTT 5 adds [`properties`] and [`reason`] codes.

pub mod decode;
mod decode_v5;
pub mod encode;
pub mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod topic;

#[cfg(test)]
mod tests_v5;

pub use decode::{DecodeLimits, decode, decode_from_server, packet_len};
pub use encode::{PublishV5, encode, encode_publish_v5, encoded_len, publish_packet_id_offset};
pub use error::DecodeError;
pub use packet::*;
pub use properties::{Properties, PropertiesBuf, Property, PropertyScope, property_id};
pub use reason::{ReasonCode, ReasonCodeOf};
