//! Packets to bytes ready for a connection: the MQTT encoding, wrapped in one binary WebSocket
//! frame per packet when the connection is a WebSocket (MQTT 3.1.1 §6).
//!
//! Fan-out encodes a publish once per wire variant (transport × protocol version × QoS ×
//! RETAIN × DUP) and shares those bytes: QoS 0 subscribers share one `Rc<[u8]>`; QoS 1/2
//! subscribers share it too, each with only its own two-byte packet identifier beside it
//! ([`Chunk::SharedWithId`]), so no payload is copied per subscriber.

use std::rc::Rc;

use super::outbox::{Chunk, RoutedMessage, Transport};
use crate::protocol::mqtt::{
    Delivery, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, encode, encoded_len,
    publish_packet_id_offset,
};
use crate::protocol::ws::frame::{Opcode, header_len, write_frame_header};

/// The bytes of `packet` for a connection speaking `version` over `transport`.
pub(crate) fn frame(
    packet: &Packet<'_>,
    version: ProtocolVersion,
    transport: Transport,
) -> Vec<u8> {
    let len = encoded_len(packet, version);
    let mut out = Vec::with_capacity(len + header_len(len));
    if transport == Transport::Ws {
        // One packet per binary frame; server frames are not masked (RFC 6455 §5.1).
        write_frame_header(Opcode::Binary, true, len, &mut out);
    }
    encode(packet, version, &mut out);
    out
}

/// How a publish goes out to one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PublishVariant {
    pub(crate) transport: Transport,
    pub(crate) version: ProtocolVersion,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
}

impl PublishVariant {
    /// Index into the cache: 2 transports × 3 versions × 3 QoS × 2 RETAIN × 2 DUP.
    fn slot(self) -> usize {
        let transport = match self.transport {
            Transport::Tcp => 0,
            Transport::Ws => 1,
        };
        let version = match self.version {
            ProtocolVersion::V31 => 0,
            ProtocolVersion::V311 => 1,
            ProtocolVersion::V5 => 2,
        };
        (((transport * 3 + version) * 3 + usize::from(self.qos.bits())) * 2
            + usize::from(self.retain))
            * 2
            + usize::from(self.dup)
    }
}

const SLOTS: usize = 2 * 3 * 3 * 2 * 2;

/// A publish encoded with a placeholder identifier, and where the identifier sits.
struct Template {
    bytes: Rc<[u8]>,
    id_offset: Option<usize>,
}

/// The encodings of one message, made on first use by each wire variant.
pub(crate) struct PublishCache {
    slots: [Option<Template>; SLOTS],
}

/// Placeholder identifier of a template; every copy gets the subscriber's own.
const TEMPLATE_ID: PacketId = PacketId(std::num::NonZeroU16::MAX);

impl PublishCache {
    pub(crate) fn new() -> PublishCache {
        PublishCache {
            slots: std::array::from_fn(|_| None),
        }
    }

    /// The shared bytes of a QoS 0 publish of `message`.
    pub(crate) fn shared(&mut self, message: &RoutedMessage, variant: PublishVariant) -> Rc<[u8]> {
        debug_assert_eq!(variant.qos, QoS::AtMostOnce, "only QoS 0 is shared");
        Rc::clone(&self.template(message, variant).bytes)
    }

    /// A QoS 1/2 publish of `message` carrying `id`: the shared template and the identifier.
    pub(crate) fn with_id(
        &mut self,
        message: &RoutedMessage,
        variant: PublishVariant,
        id: PacketId,
    ) -> Chunk {
        debug_assert_ne!(variant.qos, QoS::AtMostOnce, "QoS 0 has no identifier");
        let template = self.template(message, variant);
        let offset = template
            .id_offset
            .expect("a QoS 1/2 publish has an identifier");
        assert!(
            offset + 2 <= template.bytes.len(),
            "the identifier is inside the packet"
        );
        Chunk::SharedWithId {
            template: Rc::clone(&template.bytes),
            id_offset: u32::try_from(offset).expect("packets are smaller than 4 GiB"),
            id,
        }
    }

    fn template(&mut self, message: &RoutedMessage, variant: PublishVariant) -> &Template {
        self.slots[variant.slot()].get_or_insert_with(|| {
            let publish = Publish {
                dup: variant.dup,
                retain: variant.retain,
                delivery: Delivery::with_qos(variant.qos, TEMPLATE_ID),
                topic: &message.topic,
                payload: &message.payload,
                properties: Properties::EMPTY,
            };
            let offset = publish_packet_id_offset(&publish, variant.version);
            let packet = Packet::Publish(publish);
            let bytes = frame(&packet, variant.version, variant.transport);
            // The WebSocket header sits before the MQTT packet.
            let header_len = bytes.len() - encoded_len(&packet, variant.version);
            Template {
                bytes: Rc::from(bytes),
                id_offset: offset.map(|offset| offset + header_len),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload_bytes: usize) -> RoutedMessage {
        RoutedMessage {
            topic: "a/b".into(),
            payload: vec![7; payload_bytes].into(),
            qos: QoS::ExactlyOnce,
            retain: false,
        }
    }

    #[test]
    fn patched_copy_equals_direct_encoding() {
        let id = PacketId::new(0x1234).expect("non-zero");
        for transport in [Transport::Tcp, Transport::Ws] {
            for payload_bytes in [0, 200, 70_000] {
                let message = message(payload_bytes);
                let variant = PublishVariant {
                    transport,
                    version: ProtocolVersion::V311,
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    dup: true,
                };
                let patched = PublishCache::new().with_id(&message, variant, id).to_vec();
                let direct = frame(
                    &Packet::Publish(Publish {
                        dup: true,
                        retain: true,
                        delivery: Delivery::AtLeastOnce(id),
                        topic: "a/b",
                        payload: &message.payload,
                        properties: Properties::EMPTY,
                    }),
                    ProtocolVersion::V311,
                    transport,
                );
                assert_eq!(patched, direct);
            }
        }
    }

    #[test]
    fn slots_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for transport in [Transport::Tcp, Transport::Ws] {
            for version in [
                ProtocolVersion::V31,
                ProtocolVersion::V311,
                ProtocolVersion::V5,
            ] {
                for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                    for retain in [false, true] {
                        for dup in [false, true] {
                            let slot = PublishVariant {
                                transport,
                                version,
                                qos,
                                retain,
                                dup,
                            }
                            .slot();
                            assert!(slot < SLOTS);
                            assert!(seen.insert(slot));
                        }
                    }
                }
            }
        }
    }
}
