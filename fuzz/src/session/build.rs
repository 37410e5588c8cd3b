//! Packets built from the fields of a [`Step`](super::Step), valid for the connection's
//! version: what a well-behaved client of that version could send.

use fanfare::conn::Transport;
use fanfare::protocol::mqtt::{
    Ack, Connect, Delivery, Disconnect, Packet, PacketId, PropertiesBuf, Property, ProtocolVersion,
    Publish, QoS, ReasonCode, RetainHandling, Subscribe, SubscriptionOptions, Will,
};

/// Client identifiers; the empty one asks the broker to assign one.
pub const CLIENT_IDS: [&str; 6] = ["a", "b", "c", "d", "sensor-17", ""];

/// Topic names for publishes and wills.
pub const TOPICS: [&str; 6] = ["t", "t/a", "t/b", "u/v/w", "$SYS/up", "a"];

/// Topic filters, shared subscriptions among them.
pub const FILTERS: [&str; 10] = [
    "t",
    "t/+",
    "t/#",
    "#",
    "+/a",
    "+",
    "$share/g/t/#",
    "$share/h/+",
    "$SYS/#",
    "u/+/w",
];

/// Payload bytes; a publish takes the first `4 × payload byte` of them.
const PAYLOAD: &[u8; 1020] = &[b'p'; 1020];

/// The CONNECT of [`Step::Connect`](super::Step::Connect); its properties go in the buffers.
pub fn connect<'p>(
    client: u8,
    flags: u8,
    keep_alive: u8,
    v5: u8,
    properties: &'p mut PropertiesBuf,
    will_properties: &'p mut PropertiesBuf,
) -> Connect<'p> {
    let version = [
        ProtocolVersion::V31,
        ProtocolVersion::V311,
        ProtocolVersion::V5,
        ProtocolVersion::V311,
    ][usize::from(flags & 0b11)];
    if version == ProtocolVersion::V5 {
        match v5 & 0b11 {
            1 => _ = properties.push(Property::SessionExpiryInterval(0)),
            2 => _ = properties.push(Property::SessionExpiryInterval(10)),
            3 => _ = properties.push(Property::SessionExpiryInterval(u32::MAX)),
            _ => {}
        }
        if let Some(receive_max) = pick(&[1, 2, 5], v5 >> 2) {
            properties.push(Property::ReceiveMaximum(receive_max));
        }
        if let Some(size) = pick(&[30, 100, 1000], v5 >> 4) {
            properties.push(Property::MaximumPacketSize(size));
        }
        if let Some(delay) = pick(&[0, 5, 100], v5 >> 6) {
            will_properties.push(Property::WillDelayInterval(delay));
        }
        // The keep-alive byte's upper bits: the v5 byte is full.
        if let Some(aliases) = pick(&[1, 3, 100], keep_alive >> 2) {
            properties.push(Property::TopicAliasMaximum(aliases));
        }
    }
    let will = (flags & 0b1_0000 != 0).then(|| Will {
        topic: TOPICS[usize::from(client >> 4) % TOPICS.len()],
        payload: b"gone",
        qos: qos((flags >> 5) & 0b11),
        retain: flags & 0x80 != 0,
        properties: will_properties.as_properties(),
    });
    Connect {
        version,
        clean_session: flags & 0b100 != 0,
        keep_alive_s: [0, 1, 5, 60][usize::from(keep_alive & 0b11)],
        client_id: CLIENT_IDS[usize::from(client & 0x0F) % CLIENT_IDS.len()],
        will,
        username: None,
        password: None,
        properties: properties.as_properties(),
        bridge: false,
    }
}

/// The transport of [`Step::Connect`](super::Step::Connect).
pub fn transport(flags: u8) -> Transport {
    if flags & 0b1000 != 0 {
        Transport::Ws
    } else {
        Transport::Tcp
    }
}

/// Two bits: 0 is none, 1 to 3 the choices.
fn pick<T: Copy>(choices: &[T; 3], bits: u8) -> Option<T> {
    usize::from(bits & 0b11)
        .checked_sub(1)
        .map(|index| choices[index])
}

pub fn qos(bits: u8) -> QoS {
    QoS::from_bits(bits.min(2)).expect("0 to 2")
}

pub fn packet_id(byte: u8) -> PacketId {
    PacketId::new(u16::from(byte.max(1))).expect("not zero")
}

pub fn publish<'p>(
    version: ProtocolVersion,
    properties: &'p mut PropertiesBuf,
    topic: u8,
    flags: u8,
    id: u8,
    payload: u8,
) -> Packet<'p> {
    let delivery = Delivery::with_qos(qos(flags & 0b11), packet_id(id));
    let mut topic = TOPICS[usize::from(topic) % TOPICS.len()];
    if version == ProtocolVersion::V5 {
        match (flags >> 4) & 0b11 {
            1 => _ = properties.push(Property::TopicAlias(1)),
            2 => {
                properties.push(Property::TopicAlias(1));
                topic = "";
            }
            3 => _ = properties.push(Property::TopicAlias(5)),
            _ => {}
        }
        if flags & 0x40 != 0 {
            properties.push(Property::MessageExpiryInterval(2));
        }
        if flags & 0x80 != 0 {
            properties.push(Property::PayloadFormatIndicator(1));
        }
    }
    Packet::Publish(Publish {
        dup: flags & 0b1000 != 0 && delivery != Delivery::AtMostOnce,
        retain: flags & 0b100 != 0,
        delivery,
        topic,
        payload: &PAYLOAD[..(4 * usize::from(payload)).min(PAYLOAD.len())],
        properties: properties.as_properties(),
    })
}

pub fn subscribe<'p>(
    version: ProtocolVersion,
    properties: &'p mut PropertiesBuf,
    filter: u8,
    options: u8,
    id: u8,
) -> Packet<'p> {
    let mut subscription = SubscriptionOptions::new(qos(options & 0b11));
    if version == ProtocolVersion::V5 {
        subscription.no_local = options & 0b100 != 0;
        subscription.retain_as_published = options & 0b1000 != 0;
        subscription.retain_handling = match (options >> 4) & 0b11 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtNewSubscribe,
            _ => RetainHandling::DoNotSend,
        };
        if options & 0x40 != 0 {
            properties.push(Property::SubscriptionIdentifier(1 + u32::from(filter)));
        }
    }
    // The encoder refuses No Local on a shared subscription [MQTT-3.8.3-4]; raw bytes send it.
    let with = |filter: &'static str| {
        let no_local = subscription.no_local && !filter.starts_with("$share/");
        (
            filter,
            SubscriptionOptions {
                no_local,
                ..subscription
            },
        )
    };
    let first = usize::from(filter) % FILTERS.len();
    let mut filters = vec![with(FILTERS[first])];
    if options & 0x80 != 0 {
        filters.push(with(FILTERS[(first + 3) % FILTERS.len()]));
    }
    Packet::Subscribe(Subscribe {
        packet_id: packet_id(id),
        filters,
        properties: properties.as_properties(),
    })
}

pub fn ack(version: ProtocolVersion, kind: u8, id: u8) -> Packet<'static> {
    let mut ack = Ack::new(packet_id(id));
    let failed = version == ProtocolVersion::V5 && kind & 0b100 != 0;
    match kind & 0b11 {
        0 | 1 if failed => ack.reason = ReasonCode::UNSPECIFIED_ERROR,
        2 | 3 if failed => ack.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        _ => {}
    }
    match kind & 0b11 {
        0 => Packet::PubAck(ack),
        1 => Packet::PubRec(ack),
        2 => Packet::PubRel(ack),
        _ => Packet::PubComp(ack),
    }
}

pub fn disconnect<'p>(
    version: ProtocolVersion,
    properties: &'p mut PropertiesBuf,
    flags: u8,
) -> Packet<'p> {
    if version != ProtocolVersion::V5 {
        return Packet::Disconnect(Disconnect::NORMAL);
    }
    match (flags >> 1) & 0b11 {
        1 => _ = properties.push(Property::SessionExpiryInterval(0)),
        2 => _ = properties.push(Property::SessionExpiryInterval(10)),
        3 => _ = properties.push(Property::SessionExpiryInterval(60)),
        _ => {}
    }
    let reason = if flags & 1 != 0 {
        ReasonCode::DISCONNECT_WITH_WILL_MESSAGE
    } else {
        ReasonCode::NORMAL_DISCONNECTION
    };
    Packet::Disconnect(Disconnect {
        reason,
        properties: properties.as_properties(),
    })
}
