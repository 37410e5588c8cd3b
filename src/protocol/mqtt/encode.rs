//! MQTT 3.1 / 3.1.1 encoder: packet values to wire bytes.
//!
//! The encoder trusts its caller (the broker, tests, load generators) but asserts every rule the
//! decoder enforces, so a bug here crashes in tests instead of sending a packet a peer must
//! reject. The `version` parameter is threaded down to every packet so MQTT 5 properties can be
//! added where they go on the wire without changing the callers.
//!
//! Layouts follow MQTT 3.1.1 §2 and §3 (3.1 differs only where noted).

use super::packet::{
    ConnAck, Connect, ConnectReturnCode, Packet, PacketId, ProtocolVersion, Publish, SubAck,
    Subscribe, SubscribeReturnCode, Unsubscribe,
};

/// Largest value the 4-byte remaining length can carry (MQTT 3.1.1 §2.2.3).
pub const REMAINING_LENGTH_MAX: usize = 268_435_455;

/// Fixed-header flags required on PUBREL, SUBSCRIBE and UNSUBSCRIBE ([MQTT-3.6.1-1],
/// [MQTT-3.8.1-1], [MQTT-3.10.1-1]).
pub(crate) const FLAGS_QOS1: u8 = 0b0010;

/// Control packet type numbers (MQTT 3.1.1 §2.2.1), in the spec's numeric order.
pub(crate) mod packet_type {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// CONNECT flag bits (MQTT 3.1.1 §3.1.2.3).
pub(crate) mod connect_flag {
    pub const RESERVED: u8 = 0b0000_0001;
    pub const CLEAN_SESSION: u8 = 0b0000_0010;
    pub const WILL: u8 = 0b0000_0100;
    pub const WILL_QOS_SHIFT: u8 = 3;
    pub const WILL_QOS_MASK: u8 = 0b0001_1000;
    pub const WILL_RETAIN: u8 = 0b0010_0000;
    pub const PASSWORD: u8 = 0b0100_0000;
    pub const USERNAME: u8 = 0b1000_0000;
}

/// PUBLISH fixed-header flag bits (MQTT 3.1.1 §3.3.1).
pub(crate) mod publish_flag {
    pub const RETAIN: u8 = 0b0001;
    pub const QOS_SHIFT: u8 = 1;
    pub const QOS_MASK: u8 = 0b0110;
    pub const DUP: u8 = 0b1000;
}

/// SUBACK failure return code; defined by 3.1.1 only, but encoded as given for 3.1 too.
pub(crate) const SUBACK_FAILURE: u8 = 0x80;

/// Appends the encoding of `packet` for `version` to `out`.
///
/// Panics if the packet breaks a rule the decoder enforces (a programmer error, never peer
/// input), or if `version` is MQTT 5, which is not implemented yet.
pub fn encode(packet: &Packet<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    assert_supported(version);
    let remaining = remaining_len(packet, version);
    assert!(
        remaining <= REMAINING_LENGTH_MAX,
        "remaining length must fit the 4-byte encoding"
    );
    let start = out.len();
    out.reserve(1 + remaining_length_len(remaining) + remaining);
    out.push(first_byte(packet));
    put_remaining_length(remaining, out);
    match packet {
        Packet::Connect(connect) => put_connect(connect, version, out),
        Packet::ConnAck(connack) => put_connack(connack, version, out),
        Packet::Publish(publish) => put_publish(publish, out),
        Packet::PubAck(id)
        | Packet::PubRec(id)
        | Packet::PubRel(id)
        | Packet::PubComp(id)
        | Packet::UnsubAck(id) => put_packet_id(*id, out),
        Packet::Subscribe(subscribe) => put_subscribe(subscribe, out),
        Packet::SubAck(suback) => put_suback(suback, out),
        Packet::Unsubscribe(unsubscribe) => put_unsubscribe(unsubscribe, out),
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => {}
    }
    debug_assert_eq!(out.len() - start, encoded_len(packet, version));
}

/// The number of bytes `encode` would append (for pre-sizing / framing).
pub fn encoded_len(packet: &Packet<'_>, version: ProtocolVersion) -> usize {
    assert_supported(version);
    let remaining = remaining_len(packet, version);
    1 + remaining_length_len(remaining) + remaining
}

/// Where the packet identifier of `publish` sits in its encoding, if it has one.
///
/// Fan-out encodes a PUBLISH once per wire variant and patches only the two identifier bytes
/// (big-endian) per subscriber; this is the offset of the first of them.
pub fn publish_packet_id_offset(publish: &Publish<'_>, version: ProtocolVersion) -> Option<usize> {
    assert_supported(version);
    publish.delivery.packet_id()?;
    let remaining = publish_remaining_len(publish);
    Some(1 + remaining_length_len(remaining) + 2 + publish.topic.len())
}

/// Number of bytes the remaining-length field takes for `remaining` (MQTT 3.1.1 §2.2.3).
pub const fn remaining_length_len(remaining: usize) -> usize {
    match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn assert_supported(version: ProtocolVersion) {
    // MQTT 5 adds properties to most packets; until they exist an MQTT 5 encoding would be
    // silently wrong, so this is a programmer error rather than a best effort.
    assert!(
        version != ProtocolVersion::V5,
        "MQTT 5 encoding is not implemented"
    );
}

fn first_byte(packet: &Packet<'_>) -> u8 {
    use packet_type::*;
    let (kind, flags) = match packet {
        Packet::Connect(_) => (CONNECT, 0),
        Packet::ConnAck(_) => (CONNACK, 0),
        Packet::Publish(publish) => (PUBLISH, publish_flags(publish)),
        Packet::PubAck(_) => (PUBACK, 0),
        Packet::PubRec(_) => (PUBREC, 0),
        Packet::PubRel(_) => (PUBREL, FLAGS_QOS1),
        Packet::PubComp(_) => (PUBCOMP, 0),
        Packet::Subscribe(_) => (SUBSCRIBE, FLAGS_QOS1),
        Packet::SubAck(_) => (SUBACK, 0),
        Packet::Unsubscribe(_) => (UNSUBSCRIBE, FLAGS_QOS1),
        Packet::UnsubAck(_) => (UNSUBACK, 0),
        Packet::PingReq => (PINGREQ, 0),
        Packet::PingResp => (PINGRESP, 0),
        Packet::Disconnect => (DISCONNECT, 0),
    };
    (kind << 4) | flags
}

fn publish_flags(publish: &Publish<'_>) -> u8 {
    let mut flags = publish.delivery.qos().bits() << publish_flag::QOS_SHIFT;
    if publish.dup {
        flags |= publish_flag::DUP;
    }
    if publish.retain {
        flags |= publish_flag::RETAIN;
    }
    flags
}

/// Length of everything after the fixed header.
fn remaining_len(packet: &Packet<'_>, version: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(connect) => connect_remaining_len(connect, version),
        Packet::ConnAck(_) => 2,
        Packet::Publish(publish) => publish_remaining_len(publish),
        Packet::PubAck(_)
        | Packet::PubRec(_)
        | Packet::PubRel(_)
        | Packet::PubComp(_)
        | Packet::UnsubAck(_) => 2,
        Packet::Subscribe(subscribe) => {
            2 + subscribe
                .filters
                .iter()
                .map(|(filter, _)| string_len(filter) + 1)
                .sum::<usize>()
        }
        Packet::SubAck(suback) => 2 + suback.codes.len(),
        Packet::Unsubscribe(unsubscribe) => {
            2 + unsubscribe
                .filters
                .iter()
                .map(|filter| string_len(filter))
                .sum::<usize>()
        }
        Packet::PingReq | Packet::PingResp | Packet::Disconnect => 0,
    }
}

fn connect_remaining_len(connect: &Connect<'_>, version: ProtocolVersion) -> usize {
    // Protocol name, level, flags, keep alive.
    let mut len = 2 + version.protocol_name().len() + 1 + 1 + 2;
    len += string_len(connect.client_id);
    if let Some(will) = &connect.will {
        len += string_len(will.topic) + 2 + will.payload.len();
    }
    if let Some(username) = connect.username {
        len += string_len(username);
    }
    if let Some(password) = connect.password {
        len += 2 + password.len();
    }
    len
}

fn publish_remaining_len(publish: &Publish<'_>) -> usize {
    let id_len = if publish.delivery.packet_id().is_some() {
        2
    } else {
        0
    };
    string_len(publish.topic) + id_len + publish.payload.len()
}

fn string_len(s: &str) -> usize {
    2 + s.len()
}

fn put_remaining_length(mut remaining: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if remaining == 0 {
            break;
        }
    }
}

fn put_u16(value: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_packet_id(id: PacketId, out: &mut Vec<u8>) {
    put_u16(id.get(), out);
}

/// Length-prefixed binary data (MQTT 3.1.1 §1.5.3 layout, without the UTF-8 rule).
fn put_binary(bytes: &[u8], out: &mut Vec<u8>) {
    let len =
        u16::try_from(bytes.len()).expect("string and binary fields are at most 65 535 bytes");
    put_u16(len, out);
    out.extend_from_slice(bytes);
}

/// UTF-8 string: the decoder rejects U+0000 ([MQTT-1.5.3-2]), so never send one.
fn put_string(s: &str, out: &mut Vec<u8>) {
    assert!(!s.contains('\0'), "strings must not contain U+0000");
    put_binary(s.as_bytes(), out);
}

fn put_connect(connect: &Connect<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    assert_eq!(
        connect.version, version,
        "a CONNECT is encoded for the version it names"
    );
    if version == ProtocolVersion::V311 {
        assert!(
            connect.password.is_none() || connect.username.is_some(),
            "a password needs a username [MQTT-3.1.2-22]"
        );
    }
    put_binary(version.protocol_name(), out);
    out.push(version.level());

    let mut flags = 0;
    if connect.clean_session {
        flags |= connect_flag::CLEAN_SESSION;
    }
    if let Some(will) = &connect.will {
        debug_assert!(super::topic::is_valid_topic_name(will.topic));
        flags |= connect_flag::WILL | (will.qos.bits() << connect_flag::WILL_QOS_SHIFT);
        if will.retain {
            flags |= connect_flag::WILL_RETAIN;
        }
    }
    if connect.username.is_some() {
        flags |= connect_flag::USERNAME;
    }
    if connect.password.is_some() {
        flags |= connect_flag::PASSWORD;
    }
    out.push(flags);
    put_u16(connect.keep_alive_s, out);

    // Payload order is fixed by [MQTT-3.1.3-1].
    put_string(connect.client_id, out);
    if let Some(will) = &connect.will {
        put_string(will.topic, out);
        put_binary(will.payload, out);
    }
    if let Some(username) = connect.username {
        put_string(username, out);
    }
    if let Some(password) = connect.password {
        put_binary(password, out);
    }
}

fn put_connack(connack: &ConnAck, version: ProtocolVersion, out: &mut Vec<u8>) {
    assert!(
        !connack.session_present || connack.code == ConnectReturnCode::Accepted,
        "session present must be 0 on a refused connection [MQTT-3.2.2-4]"
    );
    // 3.1 has no session-present bit: the whole byte is reserved, so it is always 0 there.
    let flags = match version {
        ProtocolVersion::V311 | ProtocolVersion::V5 => u8::from(connack.session_present),
        ProtocolVersion::V31 => 0,
    };
    out.push(flags);
    out.push(connack.code as u8);
}

fn put_publish(publish: &Publish<'_>, out: &mut Vec<u8>) {
    debug_assert!(super::topic::is_valid_topic_name(publish.topic));
    assert!(!publish.topic.is_empty(), "a topic name is never empty");
    put_string(publish.topic, out);
    if let Some(id) = publish.delivery.packet_id() {
        put_packet_id(id, out);
    }
    out.extend_from_slice(publish.payload);
}

fn put_subscribe(subscribe: &Subscribe<'_>, out: &mut Vec<u8>) {
    assert!(
        !subscribe.filters.is_empty(),
        "a SUBSCRIBE carries at least one filter [MQTT-3.8.3-3]"
    );
    put_packet_id(subscribe.packet_id, out);
    for (filter, qos) in &subscribe.filters {
        debug_assert!(super::topic::is_valid_topic_filter(filter));
        put_string(filter, out);
        out.push(qos.bits());
    }
}

fn put_suback(suback: &SubAck, out: &mut Vec<u8>) {
    put_packet_id(suback.packet_id, out);
    for code in &suback.codes {
        out.push(match code {
            SubscribeReturnCode::Granted(qos) => qos.bits(),
            SubscribeReturnCode::Failure => SUBACK_FAILURE,
        });
    }
}

fn put_unsubscribe(unsubscribe: &Unsubscribe<'_>, out: &mut Vec<u8>) {
    assert!(
        !unsubscribe.filters.is_empty(),
        "an UNSUBSCRIBE carries at least one filter [MQTT-3.10.3-2]"
    );
    put_packet_id(unsubscribe.packet_id, out);
    for filter in &unsubscribe.filters {
        debug_assert!(super::topic::is_valid_topic_filter(filter));
        put_string(filter, out);
    }
}

#[cfg(test)]
mod tests {
    //! Golden vectors for every packet type live with the decoder, which checks both
    //! directions; these cover what only the encoder decides.

    use super::*;
    use crate::protocol::mqtt::packet::{Delivery, QoS};

    fn id(value: u16) -> PacketId {
        PacketId::new(value).expect("test ids are non-zero")
    }

    fn encoded(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
        let mut out = Vec::new();
        encode(packet, version, &mut out);
        assert_eq!(out.len(), encoded_len(packet, version));
        out
    }

    fn publish_with_payload(payload: &[u8]) -> Packet<'_> {
        Packet::Publish(Publish {
            dup: false,
            retain: false,
            delivery: Delivery::AtMostOnce,
            topic: "t",
            payload,
        })
    }

    #[test]
    fn encode_appends() {
        let mut out = vec![0xAA];
        encode(&Packet::PingReq, ProtocolVersion::V311, &mut out);
        encode(&Packet::Disconnect, ProtocolVersion::V311, &mut out);
        assert_eq!(out, [0xAA, 0xC0, 0x00, 0xE0, 0x00]);
    }

    #[test]
    fn remaining_length_boundaries() {
        // §2.2.3 table: 127 | 128, 16 383 | 16 384, 2 097 151 | 2 097 152.
        for (remaining, header) in [
            (127usize, &[0x7F][..]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        ] {
            // Topic "t" takes 3 bytes of the remaining length.
            let payload = vec![0u8; remaining - 3];
            let bytes = encoded(&publish_with_payload(&payload), ProtocolVersion::V311);
            assert_eq!(&bytes[1..1 + header.len()], header, "{remaining}");
            assert_eq!(bytes.len(), 1 + header.len() + remaining);
            assert_eq!(remaining_length_len(remaining), header.len());
        }
    }

    #[test]
    #[should_panic(expected = "remaining length")]
    fn remaining_length_over_four_bytes_panics() {
        let payload = vec![0u8; REMAINING_LENGTH_MAX - 2];
        encoded(&publish_with_payload(&payload), ProtocolVersion::V311);
    }

    #[test]
    #[should_panic(expected = "65 535")]
    fn topic_over_u16_panics() {
        let topic = "a".repeat(65_536);
        let packet = Packet::Publish(Publish {
            dup: false,
            retain: false,
            delivery: Delivery::AtMostOnce,
            topic: &topic,
            payload: b"",
        });
        encoded(&packet, ProtocolVersion::V311);
    }

    #[test]
    fn connack_has_no_session_present_bit_in_3_1() {
        let packet = Packet::ConnAck(ConnAck {
            session_present: true,
            code: ConnectReturnCode::Accepted,
        });
        assert_eq!(
            encoded(&packet, ProtocolVersion::V311),
            [0x20, 0x02, 0x01, 0x00]
        );
        assert_eq!(
            encoded(&packet, ProtocolVersion::V31),
            [0x20, 0x02, 0x00, 0x00]
        );
    }

    #[test]
    fn suback_codes_are_encoded_as_given() {
        let packet = Packet::SubAck(SubAck {
            packet_id: id(1),
            codes: vec![
                SubscribeReturnCode::Granted(QoS::ExactlyOnce),
                SubscribeReturnCode::Failure,
            ],
        });
        for version in [ProtocolVersion::V31, ProtocolVersion::V311] {
            assert_eq!(
                encoded(&packet, version),
                [0x90, 0x04, 0x00, 0x01, 0x02, 0x80]
            );
        }
    }

    #[test]
    fn packet_id_offset_points_at_the_id() {
        let publish = Publish {
            dup: false,
            retain: true,
            delivery: Delivery::AtLeastOnce(id(0x1234)),
            topic: "scores/live",
            payload: b"1-0",
        };
        let offset = publish_packet_id_offset(&publish, ProtocolVersion::V311)
            .expect("QoS 1 has an identifier");
        let bytes = encoded(&Packet::Publish(publish.clone()), ProtocolVersion::V311);
        assert_eq!(&bytes[offset..offset + 2], [0x12, 0x34]);

        let qos0 = Publish {
            delivery: Delivery::AtMostOnce,
            ..publish
        };
        assert_eq!(publish_packet_id_offset(&qos0, ProtocolVersion::V311), None);
    }

    #[test]
    #[should_panic(expected = "MQTT-3.1.2-22")]
    fn password_without_username_panics_in_3_1_1() {
        let connect = Connect {
            version: ProtocolVersion::V311,
            clean_session: true,
            keep_alive_s: 0,
            client_id: "c",
            will: None,
            username: None,
            password: Some(b"pw"),
        };
        encoded(&Packet::Connect(connect), ProtocolVersion::V311);
    }

    #[test]
    #[should_panic(expected = "MQTT 5")]
    fn mqtt_5_is_refused() {
        encoded(&Packet::PingReq, ProtocolVersion::V5);
    }
}
