//! Unit tests of the encoder: golden bytes and sizes.

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
        properties: Properties::EMPTY,
    })
}

#[test]
fn encode_appends() {
    let mut out = vec![0xAA];
    encode(&Packet::PingReq, ProtocolVersion::V311, &mut out);
    encode(
        &Packet::Disconnect(Disconnect::NORMAL),
        ProtocolVersion::V311,
        &mut out,
    );
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
        properties: Properties::EMPTY,
    });
    encoded(&packet, ProtocolVersion::V311);
}

#[test]
fn connack_has_no_session_present_bit_in_3_1() {
    let packet = Packet::ConnAck(ConnAck::new(true, ConnectReturnCode::Accepted));
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
        properties: Properties::EMPTY,
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
        properties: Properties::EMPTY,
    };
    let offset =
        publish_packet_id_offset(&publish, ProtocolVersion::V311).expect("QoS 1 has an identifier");
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
        properties: Properties::EMPTY,
        bridge: false,
    };
    encoded(&Packet::Connect(connect), ProtocolVersion::V311);
}

#[test]
#[should_panic(expected = "3.x packets carry no properties")]
fn properties_at_3_1_1_panic() {
    let mut buf = crate::protocol::mqtt::PropertiesBuf::new();
    buf.push(crate::protocol::mqtt::Property::ReasonString("no"));
    let packet = Packet::Subscribe(Subscribe {
        packet_id: id(1),
        filters: vec![("a", SubscriptionOptions::new(QoS::AtMostOnce))],
        properties: buf.as_properties(),
    });
    encoded(&packet, ProtocolVersion::V311);
}

#[test]
#[should_panic(expected = "only its identifier")]
fn ack_reason_at_3_1_1_panics() {
    let ack = Ack {
        reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Ack::new(id(1))
    };
    encoded(&Packet::PubAck(ack), ProtocolVersion::V311);
}

#[test]
#[should_panic(expected = "AUTH exists only in MQTT 5")]
fn auth_at_3_1_1_panics() {
    let auth = crate::protocol::mqtt::Auth {
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    };
    encoded(&Packet::Auth(auth), ProtocolVersion::V311);
}
