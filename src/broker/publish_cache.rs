//! The encodings of one publish, made once per wire variant and shared by its subscribers.
//!
//! Fan-out encodes a publish once per wire variant (transport × protocol version × QoS ×
//! RETAIN × DUP) and shares those bytes: QoS 0 subscribers share one `Rc<[u8]>`; QoS 1/2
//! subscribers share it too, each with only its own two-byte packet identifier beside it
//! ([`Chunk::SharedWithId`]), so no payload is copied per subscriber.
//!
//! An MQTT 5 publish carries the message's own properties plus what differs per subscriber
//! (its Subscription Identifiers) or per moment (the Message Expiry Interval that remains):
//! MQTT 5 subscribers with the same identifiers share one encoding, keyed by variant and
//! identifiers. 3.x subscribers get no properties: their protocol cannot carry them.
//!
//! An MQTT 5 subscriber that takes outbound Topic Aliases (`topic_aliases.rs`) gets one of two
//! more forms: "topic + alias" the first time its connection meets the topic's number, "alias
//! only" (an empty topic) after. The number is the shard's, the same for every subscriber, so
//! each form is one more shared encoding per variant. Only first deliveries (DUP = 0) use
//! them: a resend goes to a new connection, which was sent no alias yet.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use super::outbox::RoutedMessage;
use super::reply::frame;
use super::subscription::SubscriptionIds;
use super::topic_aliases::{AliasForm, AliasNumber};
use crate::conn::{Chunk, Transport};
use crate::protocol::mqtt::{
    Delivery, Packet, PacketId, Properties, PropertiesBuf, Property, PropertyScope,
    ProtocolVersion, Publish, PublishV5, QoS, encode_publish_v5, encoded_len,
    publish_packet_id_offset,
};
use crate::protocol::ws::frame::{Opcode, header_len, write_frame_header};

/// How a publish goes out to one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PublishVariant {
    pub(crate) transport: Transport,
    pub(crate) version: ProtocolVersion,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
    /// How the topic is named: with an alias only for MQTT 5 and DUP = 0.
    pub(crate) alias: AliasForm,
}

impl PublishVariant {
    /// Index into the cache: 2 transports × 3 versions × 3 QoS × 2 RETAIN × 2 DUP without
    /// an alias, then 2 transports × 3 QoS × 2 RETAIN × 2 alias forms (MQTT 5, DUP = 0).
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
        let qos = usize::from(self.qos.bits());
        let retain = usize::from(self.retain);
        let form = match self.alias {
            AliasForm::Plain => {
                return (((transport * 3 + version) * 3 + qos) * 2 + retain) * 2
                    + usize::from(self.dup);
            }
            AliasForm::TopicAndAlias => 0,
            AliasForm::AliasOnly => 1,
        };
        debug_assert_eq!(self.version, ProtocolVersion::V5, "aliases are MQTT 5");
        debug_assert!(!self.dup, "a resend names its topic");
        PLAIN_SLOTS + ((transport * 3 + qos) * 2 + retain) * 2 + form
    }
}

const PLAIN_SLOTS: usize = 2 * 3 * 3 * 2 * 2;
const SLOTS: usize = PLAIN_SLOTS + 2 * 3 * 2 * 2;

/// The outbound alias number of a message's topic, looked up once per publish and only if a
/// subscriber takes aliases.
#[derive(Debug, Clone, Copy)]
enum CachedAlias {
    NotLookedUp,
    Number(Option<AliasNumber>),
}

/// A publish encoded with a placeholder identifier, and where the identifier sits.
struct Template {
    bytes: Rc<[u8]>,
    id_offset: Option<usize>,
    /// Bytes of the MQTT packet alone (without WebSocket framing), for a client's Maximum
    /// Packet Size.
    packet_len: usize,
}

/// The encodings of one message, made on first use by each wire variant.
pub(crate) struct PublishCache {
    slots: [Option<Template>; SLOTS],
    /// MQTT 5 encodings with Subscription Identifiers, keyed by slot and identifiers; at most
    /// one per distinct set among the subscribers of this message.
    with_ids: HashMap<(usize, SubscriptionIds), Template>,
    alias: CachedAlias,
}

/// Placeholder identifier of a template; every copy gets the subscriber's own.
const TEMPLATE_ID: PacketId = PacketId(std::num::NonZeroU16::MAX);

impl PublishCache {
    pub(crate) fn new() -> PublishCache {
        PublishCache {
            slots: std::array::from_fn(|_| None),
            with_ids: HashMap::new(),
            alias: CachedAlias::NotLookedUp,
        }
    }

    /// The outbound alias number of the message's topic: `look_up` (the shard's registry) on
    /// first use, remembered for every later subscriber of this publish.
    pub(crate) fn alias_number(
        &mut self,
        look_up: impl FnOnce() -> Option<AliasNumber>,
    ) -> Option<AliasNumber> {
        match self.alias {
            CachedAlias::Number(number) => number,
            CachedAlias::NotLookedUp => {
                let number = look_up();
                self.alias = CachedAlias::Number(number);
                number
            }
        }
    }

    /// Bytes of the MQTT packet `variant` sends (without WebSocket framing).
    pub(crate) fn packet_len(
        &mut self,
        message: &RoutedMessage,
        variant: PublishVariant,
        ids: SubscriptionIds,
        now: Instant,
    ) -> usize {
        self.template(message, variant, ids, now).packet_len
    }

    /// The shared bytes of a QoS 0 publish of `message`.
    pub(crate) fn shared(
        &mut self,
        message: &RoutedMessage,
        variant: PublishVariant,
        ids: SubscriptionIds,
        now: Instant,
    ) -> Rc<[u8]> {
        debug_assert_eq!(variant.qos, QoS::AtMostOnce, "only QoS 0 is shared");
        Rc::clone(&self.template(message, variant, ids, now).bytes)
    }

    /// A QoS 1/2 publish of `message` carrying `id`: the shared template and the identifier.
    pub(crate) fn with_id(
        &mut self,
        message: &RoutedMessage,
        variant: PublishVariant,
        ids: SubscriptionIds,
        now: Instant,
        id: PacketId,
    ) -> Chunk {
        debug_assert_ne!(variant.qos, QoS::AtMostOnce, "QoS 0 has no identifier");
        let template = self.template(message, variant, ids, now);
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

    fn template(
        &mut self,
        message: &RoutedMessage,
        variant: PublishVariant,
        ids: SubscriptionIds,
        now: Instant,
    ) -> &Template {
        let slot = variant.slot();
        if variant.version != ProtocolVersion::V5 {
            return self.slots[slot].get_or_insert_with(|| encode_v3(message, variant));
        }
        let alias = match (variant.alias, self.alias) {
            (AliasForm::Plain, _) => None,
            (_, CachedAlias::Number(Some(number))) => Some(number),
            (_, _) => panic!("an alias form is asked for once the topic has a number"),
        };
        if ids.is_empty() {
            return self.slots[slot]
                .get_or_insert_with(|| encode_v5(message, variant, alias, ids, now));
        }
        self.with_ids
            .entry((slot, ids))
            .or_insert_with(|| encode_v5(message, variant, alias, ids, now))
    }
}

fn encode_v3(message: &RoutedMessage, variant: PublishVariant) -> Template {
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
    let packet_len = encoded_len(&packet, variant.version);
    // The WebSocket header sits before the MQTT packet.
    let header_len = bytes.len() - packet_len;
    Template {
        bytes: Rc::from(bytes),
        id_offset: offset.map(|offset| offset + header_len),
        packet_len,
    }
}

/// An MQTT 5 publish: the message's properties, then the remaining Message Expiry Interval
/// [MQTT-3.3.2-6], the subscriber's Subscription Identifiers [MQTT-3.3.4-3] and the Topic
/// Alias of an alias form (`alias`, the topic's number), with an empty topic name for "alias
/// only" (§3.3.2.3.4).
fn encode_v5(
    message: &RoutedMessage,
    variant: PublishVariant,
    alias: Option<AliasNumber>,
    ids: SubscriptionIds,
    now: Instant,
) -> Template {
    let own = match Properties::parse(&message.properties, PropertyScope::Publish) {
        Ok(properties) => properties,
        Err(_) => {
            debug_assert!(false, "routed properties were validated when received");
            Properties::EMPTY
        }
    };
    let mut extra = PropertiesBuf::new();
    if let Some(remaining_s) = message.remaining_expiry_s(now) {
        extra.push(Property::MessageExpiryInterval(remaining_s));
    }
    for &id in ids.as_slice() {
        extra.push(Property::SubscriptionIdentifier(id));
    }
    if let Some(number) = alias {
        extra.push(Property::TopicAlias(number.get()));
    }
    let topic = match variant.alias {
        AliasForm::Plain | AliasForm::TopicAndAlias => &message.topic,
        AliasForm::AliasOnly => "",
    };
    let publish = Publish {
        dup: variant.dup,
        retain: variant.retain,
        delivery: Delivery::with_qos(variant.qos, TEMPLATE_ID),
        topic,
        payload: &message.payload,
        properties: own,
    };
    let layout = PublishV5::measure(&publish, extra.as_properties());
    let mut bytes = Vec::with_capacity(layout.len + header_len(layout.len));
    if variant.transport == Transport::Ws {
        write_frame_header(Opcode::Binary, true, layout.len, &mut bytes);
    }
    let header_len = bytes.len();
    let written = encode_publish_v5(&publish, extra.as_properties(), &mut bytes);
    debug_assert_eq!(written, layout);
    Template {
        bytes: Rc::from(bytes),
        id_offset: layout.packet_id_offset.map(|offset| offset + header_len),
        packet_len: layout.len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload_bytes: usize) -> RoutedMessage {
        RoutedMessage::new("a/b", &vec![7; payload_bytes], QoS::ExactlyOnce, false)
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
                    alias: AliasForm::Plain,
                };
                let ids = SubscriptionIds::default();
                let now = Instant::now();
                let patched = PublishCache::new()
                    .with_id(&message, variant, ids, now, id)
                    .to_vec();
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
                        let forms = [
                            (false, AliasForm::Plain),
                            (true, AliasForm::Plain),
                            (false, AliasForm::TopicAndAlias),
                            (false, AliasForm::AliasOnly),
                        ];
                        for (dup, alias) in forms {
                            if alias != AliasForm::Plain && version != ProtocolVersion::V5 {
                                continue;
                            }
                            let slot = PublishVariant {
                                transport,
                                version,
                                qos,
                                retain,
                                dup,
                                alias,
                            }
                            .slot();
                            assert!(slot < SLOTS);
                            assert!(seen.insert(slot));
                        }
                    }
                }
            }
        }
        assert_eq!(seen.len(), SLOTS);
    }
}
