//! MQTT 5 golden vectors (hand-built from the layouts of MQTT 5.0 §3), validation rules and
//! property tests. The 3.x vectors live with the decoder.

use proptest::prelude::*;

use super::decode::{DecodeLimits, decode, decode_from_server, packet_len};
use super::encode::{PublishV5, encode, encode_publish_v5, encoded_len};
use super::error::DecodeError;
use super::packet::*;
use super::properties::{Properties, PropertiesBuf, Property, PropertyScope};
use super::reason::ReasonCode;

const V5: ProtocolVersion = ProtocolVersion::V5;

fn limits() -> DecodeLimits {
    DecodeLimits {
        packet_bytes_max: 1024 * 1024,
        topic_bytes_max: 1024,
        topic_levels_max: 32,
        client_id_bytes_max: 64,
        filters_per_packet_max: 64,
    }
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("test ids are non-zero")
}

/// A property list that lives as long as the test run (a few bytes per call).
fn props(list: &[Property<'static>]) -> Properties<'static> {
    let mut buf = PropertiesBuf::new();
    for property in list {
        buf.push(*property);
    }
    let buf: &'static PropertiesBuf = Box::leak(Box::new(buf));
    buf.as_properties()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    FirstClientPacket,
    Client,
    Server,
}

fn decode_as(buf: &[u8], from: From) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    match from {
        From::FirstClientPacket => decode(buf, None, &limits()),
        From::Client => decode(buf, Some(V5), &limits()),
        From::Server => decode_from_server(buf, V5, &limits()),
    }
}

fn encoded(packet: &Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, V5, &mut out);
    assert_eq!(out.len(), encoded_len(packet, V5));
    out
}

/// Decodes `bytes` to `packet`, encodes `packet` to `bytes`, refuses every prefix.
fn assert_golden(bytes: &[u8], packet: &Packet<'_>, from: From) {
    assert_eq!(
        decode_as(bytes, from),
        Ok(Some((packet.clone(), bytes.len()))),
        "{bytes:02x?}"
    );
    assert_eq!(encoded(packet), bytes, "{packet:?}");
    for end in 0..bytes.len() {
        assert_eq!(decode_as(&bytes[..end], from), Ok(None), "prefix {end}");
    }
}

/// A longer encoding the decoder accepts and the encoder shortens.
fn assert_decodes_to(bytes: &[u8], packet: &Packet<'_>, from: From) {
    assert_eq!(
        decode_as(bytes, from),
        Ok(Some((packet.clone(), bytes.len()))),
        "{bytes:02x?}"
    );
}

#[test]
fn golden_connect_with_every_property_and_a_will() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x6A,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05,
        0xEE, // user name, password, will retain, will QoS 1, will, clean start
        0x00, 0x3C,
        0x26, // properties
        0x11, 0x00, 0x00, 0x00, 0x78,
        0x21, 0x00, 0x0A,
        0x27, 0x00, 0x00, 0x10, 0x00,
        0x22, 0x00, 0x05,
        0x19, 0x01,
        0x17, 0x00,
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        0x15, 0x00, 0x03, b't', b'o', b'k',
        0x16, 0x00, 0x02, 0x01, 0x02,
        0x00, 0x02, b'c', b'1',
        0x23, // will properties
        0x18, 0x00, 0x00, 0x00, 0x0A,
        0x01, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x3C,
        0x03, 0x00, 0x04, b't', b'e', b'x', b't',
        0x08, 0x00, 0x01, b'r',
        0x09, 0x00, 0x02, 0xAB, 0xCD,
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b',
        0x00, 0x03, b'w', b'/', b't',
        0x00, 0x03, b'b', b'y', b'e',
        0x00, 0x01, b'u',
        0x00, 0x02, b'p', b'w',
    ];
    let connect = Connect {
        version: V5,
        clean_session: true,
        keep_alive_s: 60,
        client_id: "c1",
        will: Some(Will {
            topic: "w/t",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: props(&[
                Property::WillDelayInterval(10),
                Property::PayloadFormatIndicator(1),
                Property::MessageExpiryInterval(60),
                Property::ContentType("text"),
                Property::ResponseTopic("r"),
                Property::CorrelationData(&[0xAB, 0xCD]),
                Property::UserProperty("a", "b"),
            ]),
        }),
        username: Some("u"),
        password: Some(b"pw"),
        properties: props(&[
            Property::SessionExpiryInterval(120),
            Property::ReceiveMaximum(10),
            Property::MaximumPacketSize(4096),
            Property::TopicAliasMaximum(5),
            Property::RequestResponseInformation(1),
            Property::RequestProblemInformation(0),
            Property::UserProperty("k", "v"),
            Property::AuthenticationMethod("tok"),
            Property::AuthenticationData(&[1, 2]),
        ]),
        bridge: false,
    };
    let packet = Packet::Connect(connect);
    assert_golden(&bytes, &packet, From::FirstClientPacket);
    let Packet::Connect(connect) = packet else {
        unreachable!()
    };
    assert_eq!(connect.properties.receive_maximum(), Some(10));
    let will = connect.will.expect("has a will");
    assert_eq!(will.properties.will_delay_interval_s(), Some(10));
}

#[test]
fn golden_minimal_connect_and_password_alone() {
    #[rustfmt::skip]
    let minimal = [
        0x10, 0x0F,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05,
        0x42, // password without user name: allowed again in MQTT 5 (§3.1.2.9)
        0x00, 0x00,
        0x00,
        0x00, 0x00,
        0x00, 0x00,
    ];
    let connect = Connect {
        version: V5,
        clean_session: true,
        keep_alive_s: 0,
        client_id: "",
        will: None,
        username: None,
        password: Some(b""),
        properties: Properties::EMPTY,
        bridge: false,
    };
    assert_golden(&minimal, &Packet::Connect(connect), From::FirstClientPacket);
}

#[test]
fn golden_connack() {
    #[rustfmt::skip]
    let accepted = [
        0x20, 0x2E, 0x01, 0x00,
        0x2B,
        0x24, 0x01,
        0x25, 0x00,
        0x12, 0x00, 0x02, b'i', b'd',
        0x13, 0x00, 0x1E,
        0x1F, 0x00, 0x02, b'o', b'k',
        0x21, 0x00, 0x14,
        0x22, 0x00, 0x08,
        0x27, 0x00, 0x01, 0x00, 0x00,
        0x28, 0x01,
        0x29, 0x00,
        0x2A, 0x01,
        0x1A, 0x00, 0x01, b'x',
        0x11, 0x00, 0x00, 0x00, 0x00,
    ];
    let connack = ConnAck {
        session_present: true,
        reason: ReasonCode::SUCCESS,
        properties: props(&[
            Property::MaximumQoS(1),
            Property::RetainAvailable(0),
            Property::AssignedClientIdentifier("id"),
            Property::ServerKeepAlive(30),
            Property::ReasonString("ok"),
            Property::ReceiveMaximum(20),
            Property::TopicAliasMaximum(8),
            Property::MaximumPacketSize(65_536),
            Property::WildcardSubscriptionAvailable(1),
            Property::SubscriptionIdentifierAvailable(0),
            Property::SharedSubscriptionAvailable(1),
            Property::ResponseInformation("x"),
            Property::SessionExpiryInterval(0),
        ]),
    };
    assert_golden(&accepted, &Packet::ConnAck(connack), From::Server);

    let refused = ConnAck {
        session_present: false,
        reason: ReasonCode::NOT_AUTHORIZED,
        properties: Properties::EMPTY,
    };
    assert_golden(
        &[0x20, 0x03, 0x00, 0x87, 0x00],
        &Packet::ConnAck(refused),
        From::Server,
    );

    let moved = ConnAck {
        session_present: false,
        reason: ReasonCode::USE_ANOTHER_SERVER,
        properties: props(&[Property::ServerReference("h2")]),
    };
    assert_golden(
        &[0x20, 0x08, 0x00, 0x9C, 0x05, 0x1C, 0x00, 0x02, b'h', b'2'],
        &Packet::ConnAck(moved),
        From::Server,
    );
}

#[test]
fn golden_publish_with_every_property() {
    #[rustfmt::skip]
    let bytes = [
        0x32, 0x3A,
        0x00, 0x03, b'a', b'/', b'b',
        0x00, 0x0A,
        0x30,
        0x01, 0x01,
        0x02, 0x00, 0x00, 0x0E, 0x10,
        0x03, 0x00, 0x04, b'j', b's', b'o', b'n',
        0x08, 0x00, 0x03, b'r', b'/', b'x',
        0x09, 0x00, 0x03, 0x01, 0x02, 0x03,
        0x0B, 0x05,
        0x0B, 0x80, 0x01,
        0x23, 0x00, 0x07,
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'1',
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'2',
        b'h', b'i',
    ];
    let publish = Publish {
        dup: false,
        retain: false,
        delivery: Delivery::AtLeastOnce(id(10)),
        topic: "a/b",
        payload: b"hi",
        properties: props(&[
            Property::PayloadFormatIndicator(1),
            Property::MessageExpiryInterval(3600),
            Property::ContentType("json"),
            Property::ResponseTopic("r/x"),
            Property::CorrelationData(&[1, 2, 3]),
            Property::SubscriptionIdentifier(5),
            Property::SubscriptionIdentifier(128),
            Property::TopicAlias(7),
            Property::UserProperty("a", "1"),
            Property::UserProperty("a", "2"),
        ]),
    };
    let packet = Packet::Publish(publish.clone());
    // Subscription identifiers come only from a server [MQTT-3.3.4-6].
    assert_golden(&bytes, &packet, From::Server);
    assert_eq!(
        decode_as(&bytes, From::Client),
        Err(DecodeError::SubscriptionIdentifierFromClient)
    );
    assert_eq!(
        publish
            .properties
            .subscription_identifiers()
            .collect::<Vec<_>>(),
        [5, 128]
    );
    assert_eq!(
        publish.properties.user_properties().collect::<Vec<_>>(),
        [("a", "1"), ("a", "2")]
    );
}

#[test]
fn golden_publish_short_forms() {
    let qos0 = Publish {
        dup: false,
        retain: true,
        delivery: Delivery::AtMostOnce,
        topic: "t",
        payload: b"hi",
        properties: Properties::EMPTY,
    };
    assert_golden(
        &[0x31, 0x06, 0x00, 0x01, b't', 0x00, b'h', b'i'],
        &Packet::Publish(qos0),
        From::Client,
    );
    // An empty topic name with a Topic Alias (§3.3.2.3.4).
    let aliased = Publish {
        dup: false,
        retain: false,
        delivery: Delivery::AtMostOnce,
        topic: "",
        payload: b"x",
        properties: props(&[Property::TopicAlias(1)]),
    };
    assert_golden(
        &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, b'x'],
        &Packet::Publish(aliased),
        From::Client,
    );
}

#[test]
fn golden_acks_with_and_without_reason_and_properties() {
    let short = Packet::PubAck(Ack::new(id(1)));
    assert_golden(&[0x40, 0x02, 0x00, 0x01], &short, From::Client);
    // The long forms of Success without properties [MQTT-3.4.2-1].
    assert_decodes_to(&[0x40, 0x03, 0x00, 0x01, 0x00], &short, From::Client);
    assert_decodes_to(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], &short, From::Client);

    let no_subscribers = Ack {
        reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        ..Ack::new(id(1))
    };
    assert_golden(
        &[0x40, 0x03, 0x00, 0x01, 0x10],
        &Packet::PubAck(no_subscribers),
        From::Server,
    );
    let with_reason_string = Ack {
        properties: props(&[Property::ReasonString("no")]),
        ..no_subscribers
    };
    assert_golden(
        &[
            0x40, 0x09, 0x00, 0x01, 0x10, 0x05, 0x1F, 0x00, 0x02, b'n', b'o',
        ],
        &Packet::PubAck(with_reason_string),
        From::Server,
    );
    let pubrec = Ack {
        reason: ReasonCode::UNSPECIFIED_ERROR,
        ..Ack::new(id(2))
    };
    assert_golden(
        &[0x50, 0x03, 0x00, 0x02, 0x80],
        &Packet::PubRec(pubrec),
        From::Client,
    );
    let pubrel = Ack {
        reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        ..Ack::new(id(3))
    };
    assert_golden(
        &[0x62, 0x03, 0x00, 0x03, 0x92],
        &Packet::PubRel(pubrel),
        From::Server,
    );
    assert_golden(
        &[0x70, 0x02, 0x00, 0x04],
        &Packet::PubComp(Ack::new(id(4))),
        From::Client,
    );
    // Success with properties keeps the reason byte.
    let pubcomp = Ack {
        properties: props(&[Property::UserProperty("k", "v")]),
        ..Ack::new(id(4))
    };
    assert_golden(
        &[
            0x70, 0x0B, 0x00, 0x04, 0x00, 0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        ],
        &Packet::PubComp(pubcomp),
        From::Client,
    );
}

#[test]
fn golden_subscribe_with_options() {
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x1C, 0x00, 0x0A,
        0x02, 0x0B, 0x07,
        0x00, 0x03, b'a', b'/', b'b', 0x2D, // QoS 1, no local, retain as published, RH 2
        0x00, 0x01, b'#', 0x10, // QoS 0, RH 1
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b't', 0x02,
    ];
    let subscribe = Subscribe {
        packet_id: id(10),
        filters: vec![
            (
                "a/b",
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            ),
            (
                "#",
                SubscriptionOptions {
                    retain_handling: RetainHandling::SendAtNewSubscribe,
                    ..SubscriptionOptions::new(QoS::AtMostOnce)
                },
            ),
            ("$share/g/t", SubscriptionOptions::new(QoS::ExactlyOnce)),
        ],
        properties: props(&[Property::SubscriptionIdentifier(7)]),
    };
    assert_golden(&bytes, &Packet::Subscribe(subscribe), From::Client);
}

#[test]
fn golden_suback_unsubscribe_unsuback() {
    let suback = SubAck {
        packet_id: id(10),
        codes: vec![
            SubscribeReturnCode::Granted(QoS::AtLeastOnce),
            SubscribeReturnCode::Granted(QoS::AtMostOnce),
            SubscribeReturnCode::Granted(QoS::ExactlyOnce),
            SubscribeReturnCode::Refused(ReasonCode::NOT_AUTHORIZED),
            SubscribeReturnCode::Failure,
        ],
        properties: props(&[Property::ReasonString("")]),
    };
    assert_golden(
        &[
            0x90, 0x0B, 0x00, 0x0A, 0x03, 0x1F, 0x00, 0x00, 0x01, 0x00, 0x02, 0x87, 0x80,
        ],
        &Packet::SubAck(suback),
        From::Server,
    );
    #[rustfmt::skip]
    let unsubscribe_bytes = [
        0xA2, 0x12, 0x00, 0x0B,
        0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        0x00, 0x03, b'a', b'/', b'b',
        0x00, 0x01, b'#',
    ];
    let unsubscribe = Unsubscribe {
        packet_id: id(11),
        filters: vec!["a/b", "#"],
        properties: props(&[Property::UserProperty("k", "v")]),
    };
    assert_golden(
        &unsubscribe_bytes,
        &Packet::Unsubscribe(unsubscribe),
        From::Client,
    );
    let unsuback = UnsubAck {
        packet_id: id(11),
        reasons: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
        properties: Properties::EMPTY,
    };
    assert_golden(
        &[0xB0, 0x05, 0x00, 0x0B, 0x00, 0x00, 0x11],
        &Packet::UnsubAck(unsuback),
        From::Server,
    );
}

#[test]
fn golden_disconnect_auth_and_ping() {
    let normal = Packet::Disconnect(Disconnect::NORMAL);
    assert_golden(&[0xE0, 0x00], &normal, From::Client);
    assert_golden(&[0xE0, 0x00], &normal, From::Server);
    assert_decodes_to(&[0xE0, 0x01, 0x00], &normal, From::Client);
    assert_decodes_to(&[0xE0, 0x02, 0x00, 0x00], &normal, From::Client);
    let with_will = Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
        properties: Properties::EMPTY,
    };
    assert_golden(
        &[0xE0, 0x01, 0x04],
        &Packet::Disconnect(with_will),
        From::Client,
    );
    let expiry = Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: props(&[Property::SessionExpiryInterval(60)]),
    };
    assert_golden(
        &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x3C],
        &Packet::Disconnect(expiry),
        From::Client,
    );
    let taken_over = Disconnect {
        reason: ReasonCode::SESSION_TAKEN_OVER,
        properties: props(&[Property::ReasonString("bye")]),
    };
    assert_golden(
        &[0xE0, 0x08, 0x8E, 0x06, 0x1F, 0x00, 0x03, b'b', b'y', b'e'],
        &Packet::Disconnect(taken_over),
        From::Server,
    );

    let success = Auth {
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    };
    assert_golden(&[0xF0, 0x00], &Packet::Auth(success), From::Client);
    assert_golden(&[0xF0, 0x00], &Packet::Auth(success), From::Server);
    let more = Auth {
        reason: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: props(&[
            Property::AuthenticationMethod("tok"),
            Property::AuthenticationData(b"x"),
        ]),
    };
    assert_golden(
        &[
            0xF0, 0x0C, 0x18, 0x0A, 0x15, 0x00, 0x03, b't', b'o', b'k', 0x16, 0x00, 0x01, b'x',
        ],
        &Packet::Auth(more),
        From::Server,
    );
    assert_golden(&[0xC0, 0x00], &Packet::PingReq, From::Client);
    assert_golden(&[0xD0, 0x00], &Packet::PingResp, From::Server);
}

/// A CONNECT at level 5 with `properties` (length included) and client identifier "a".
fn connect_v5(flags: u8, properties: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x10, 0, 0, 4, b'M', b'Q', b'T', b'T', 5, flags, 0, 0];
    bytes.extend_from_slice(properties);
    bytes.extend_from_slice(&[0, 1, b'a']);
    bytes.extend_from_slice(rest);
    bytes[1] = u8::try_from(bytes.len() - 2).expect("short test packet");
    bytes
}

/// One packet per MQTT 5 rule the decoder enforces.
#[test]
fn errors_v5() {
    use DecodeError::*;
    #[rustfmt::skip]
    let cases: Vec<(From, Vec<u8>, DecodeError)> = vec![
        // Properties in CONNECT (§3.1.2.11).
        (From::FirstClientPacket, connect_v5(2, &[3, 0x21, 0, 0], &[]), ZeroReceiveMaximum),
        (From::FirstClientPacket, connect_v5(2, &[5, 0x27, 0, 0, 0, 0], &[]), ZeroMaximumPacketSize),
        (From::FirstClientPacket, connect_v5(2, &[2, 0x17, 2], &[]), InvalidPropertyValue),
        (From::FirstClientPacket, connect_v5(2, &[2, 0x19, 7], &[]), InvalidPropertyValue),
        (From::FirstClientPacket, connect_v5(2, &[4, 0x16, 0, 1, b'x'], &[]), AuthenticationDataWithoutMethod),
        (From::FirstClientPacket, connect_v5(2, &[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2], &[]), DuplicateProperty),
        (From::FirstClientPacket, connect_v5(2, &[3, 0x23, 0, 1], &[]), InvalidPropertyIdentifier),
        (From::FirstClientPacket, connect_v5(2, &[1, 0x05], &[]), InvalidPropertyIdentifier),
        (From::FirstClientPacket, connect_v5(2, &[5, 0x11, 0], &[]), Truncated),
        (From::FirstClientPacket, connect_v5(2, &[0xFF, 0xFF, 0xFF, 0xFF, 0x01], &[]), MalformedVariableByteInteger),
        // Will properties (§3.1.3.2): no session expiry there.
        (From::FirstClientPacket, connect_v5(6, &[0], &[5, 0x11, 0, 0, 0, 1, 0, 1, b'w', 0, 0]), InvalidPropertyIdentifier),
        (From::FirstClientPacket, connect_v5(6, &[0], &[2, 0x01, 2, 0, 1, b'w', 0, 0]), InvalidPropertyValue),
        (From::FirstClientPacket, connect_v5(3, &[0], &[]), ReservedConnectFlag),
        // CONNACK.
        (From::Server, vec![0x20, 0x03, 0x01, 0x80, 0x00], ReservedConnAckFlags),
        (From::Server, vec![0x20, 0x03, 0x02, 0x00, 0x00], ReservedConnAckFlags),
        (From::Server, vec![0x20, 0x03, 0x00, 0x8B, 0x00], InvalidReasonCode),
        (From::Server, vec![0x20, 0x02, 0x00, 0x00], Truncated),
        (From::Server, vec![0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02], InvalidPropertyValue),
        // PUBLISH (§3.3).
        (From::Client, vec![0x30, 0x0A, 0, 1, b't', 6, 0x23, 0, 1, 0x23, 0, 2], DuplicateProperty),
        (From::Client, vec![0x30, 0x07, 0, 1, b't', 3, 0x23, 0, 0], ZeroTopicAlias),
        (From::Client, vec![0x30, 0x06, 0, 1, b't', 2, 0x01, 2], InvalidPropertyValue),
        (From::Client, vec![0x30, 0x06, 0, 1, b't', 2, 0x0B, 1], SubscriptionIdentifierFromClient),
        (From::Server, vec![0x30, 0x06, 0, 1, b't', 2, 0x0B, 0], ZeroSubscriptionIdentifier),
        (From::Client, vec![0x30, 0x09, 0, 1, b't', 5, 0x11, 0, 0, 0, 1], InvalidPropertyIdentifier),
        (From::Client, vec![0x30, 0x03, 0, 0, 0], EmptyTopic),
        (From::Client, vec![0x30, 0x03, 0, 1, b't'], Truncated),
        (From::Client, vec![0x38, 0x04, 0, 1, b't', 0], DupOnQoS0),
        (From::Client, vec![0x30, 0x04, 0, 1, b'+', 0], InvalidTopicName),
        // Acknowledgements (§3.4 .. §3.7).
        (From::Client, vec![0x40, 0x03, 0, 1, 0x92], InvalidReasonCode),
        (From::Client, vec![0x62, 0x03, 0, 1, 0x10], InvalidReasonCode),
        (From::Client, vec![0x40, 0x07, 0, 1, 0, 3, 0x23, 0, 1], InvalidPropertyIdentifier),
        (From::Client, vec![0x40, 0x05, 0, 1, 0, 1, 0x05], InvalidPropertyIdentifier),
        (From::Client, vec![0x40, 0x0A, 0, 1, 0, 6, 0x1F, 0, 0, 0x1F, 0, 0], DuplicateProperty),
        (From::Client, vec![0x40, 0x05, 0, 1, 0, 0, 0], TrailingBytes),
        // SUBSCRIBE (§3.8).
        (From::Client, vec![0x82, 0x0B, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0], DuplicateProperty),
        (From::Client, vec![0x82, 0x09, 0, 1, 2, 0x0B, 0, 0, 1, b'a', 0], ZeroSubscriptionIdentifier),
        (From::Client, vec![0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x40], ReservedSubscribeOptionBits),
        (From::Client, vec![0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x30], InvalidSubscribeOptions),
        (From::Client, vec![0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x03], InvalidSubscribeOptions),
        (From::Client, vec![0x82, 0x0F, 0, 1, 0, 0, 9, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', 0x04], NoLocalOnSharedSubscription),
        (From::Client, vec![0x82, 0x03, 0, 1, 0], EmptySubscribe),
        (From::Client, vec![0x82, 0x02, 0, 1], Truncated),
        // SUBACK, UNSUBSCRIBE, UNSUBACK (§3.9 .. §3.11).
        (From::Server, vec![0x90, 0x04, 0, 1, 0, 0x03], InvalidReasonCode),
        (From::Server, vec![0x90, 0x04, 0, 1, 0, 0x11], InvalidReasonCode),
        (From::Client, vec![0xA2, 0x03, 0, 1, 0], EmptyUnsubscribe),
        (From::Client, vec![0xA2, 0x08, 0, 1, 2, 0x0B, 1, 0, 1, b'a'], InvalidPropertyIdentifier),
        (From::Server, vec![0xB0, 0x04, 0, 1, 0, 0x01], InvalidReasonCode),
        // DISCONNECT and AUTH (§3.14, §3.15).
        (From::Client, vec![0xE0, 0x01, 0x8C], InvalidReasonCode),
        (From::Client, vec![0xE0, 0x03, 0x00, 0x01, 0x27], Truncated),
        (From::Client, vec![0xE0, 0x04, 0x00, 0x02, 0x24, 0x01], InvalidPropertyIdentifier),
        (From::Client, vec![0xE1, 0x00], ReservedFlagsSet),
        (From::Client, vec![0xF0, 0x01, 0x01], InvalidReasonCode),
        (From::Client, vec![0xF0, 0x05, 0x18, 0x03, 0x16, 0x00, 0x00], AuthenticationDataWithoutMethod),
        (From::Client, vec![0xF1, 0x00], ReservedFlagsSet),
        (From::Client, vec![0x00, 0x00], ReservedPacketType),
        (From::Client, vec![0x10, 0x00], DuplicateConnect),
        (From::Client, vec![0x20, 0x00], UnexpectedPacket),
    ];
    for (from, bytes, error) in &cases {
        assert_eq!(
            decode_as(bytes, *from),
            Err(*error),
            "{bytes:02x?} from {from:?}"
        );
    }
}

#[test]
fn auth_and_server_disconnect_exist_only_in_mqtt_5() {
    let v311 = ProtocolVersion::V311;
    assert_eq!(
        decode(&[0xF0, 0x00], Some(v311), &limits()),
        Err(DecodeError::ReservedPacketType)
    );
    assert_eq!(
        decode_from_server(&[0xE0, 0x00], v311, &limits()),
        Err(DecodeError::UnexpectedPacket)
    );
    assert_eq!(
        decode_from_server(&[0xE0, 0x00], V5, &limits()),
        Ok(Some((Packet::Disconnect(Disconnect::NORMAL), 2)))
    );
}

#[test]
fn per_subscriber_publish_equals_a_direct_encoding() {
    let base = props(&[
        Property::ContentType("json"),
        Property::UserProperty("k", "v"),
    ]);
    let extra = props(&[
        Property::SubscriptionIdentifier(3),
        Property::SubscriptionIdentifier(200),
        Property::TopicAlias(2),
    ]);
    let mut both = PropertiesBuf::new();
    for property in base.iter().chain(extra.iter()) {
        both.push(property);
    }
    for payload_bytes in [0, 100, 20_000] {
        let payload = vec![7u8; payload_bytes];
        let publish = Publish {
            dup: false,
            retain: true,
            delivery: Delivery::ExactlyOnce(id(0x1234)),
            topic: "scores/live",
            payload: &payload,
            properties: base,
        };
        let mut out = vec![0xAA];
        let layout = encode_publish_v5(&publish, extra, &mut out);
        let direct = encoded(&Packet::Publish(Publish {
            properties: both.as_properties(),
            ..publish.clone()
        }));
        assert_eq!(&out[1..], direct);
        assert_eq!(layout, PublishV5::measure(&publish, extra));
        assert_eq!(layout.len, direct.len());
        let offset = layout.packet_id_offset.expect("QoS 2 has an identifier");
        assert_eq!(&direct[offset..offset + 2], [0x12, 0x34]);
        assert_eq!(
            super::encode::publish_packet_id_offset(&publish, V5),
            PublishV5::measure(&publish, Properties::EMPTY).packet_id_offset
        );
        // A subscriber that already knows the alias gets an empty topic name.
        let aliased = Publish {
            topic: "",
            ..publish.clone()
        };
        let mut out = Vec::new();
        encode_publish_v5(&aliased, extra, &mut out);
        let Ok(Some((Packet::Publish(decoded), _))) = decode_as(&out, From::Server) else {
            panic!("an aliased PUBLISH decodes");
        };
        assert_eq!(decoded.topic, "");
        assert_eq!(decoded.properties.topic_alias(), Some(2));
    }
}

#[test]
#[should_panic(expected = "Topic Alias")]
fn empty_topic_without_alias_panics() {
    let publish = Publish {
        dup: false,
        retain: false,
        delivery: Delivery::AtMostOnce,
        topic: "",
        payload: b"",
        properties: Properties::EMPTY,
    };
    encoded(&Packet::Publish(publish));
}

#[test]
#[should_panic(expected = "§2.2.2.2")]
fn property_not_allowed_in_packet_panics() {
    let ack = Ack {
        properties: props(&[Property::TopicAlias(1)]),
        ..Ack::new(id(1))
    };
    encoded(&Packet::PubAck(ack));
}

#[test]
fn connect_level_5_round_trips_its_version() {
    let bytes = connect_v5(2, &[0], &[]);
    let Ok(Some((Packet::Connect(connect), _))) = decode(&bytes, None, &limits()) else {
        panic!("a level 5 CONNECT decodes");
    };
    assert_eq!(connect.version, V5);
    assert_eq!(packet_len(&bytes, &limits()), Ok(Some(bytes.len())));
}

// Property tests.

fn leak(s: String) -> &'static str {
    s.leak()
}

fn leak_bytes(b: Vec<u8>) -> &'static [u8] {
    b.leak()
}

fn text() -> impl Strategy<Value = &'static str> {
    "[a-z0-9 é€/]{0,8}".prop_map(leak)
}

fn bytes() -> impl Strategy<Value = &'static [u8]> {
    prop::collection::vec(any::<u8>(), 0..8).prop_map(leak_bytes)
}

fn flag() -> impl Strategy<Value = u8> {
    0u8..=1
}

fn property() -> impl Strategy<Value = Property<'static>> {
    prop_oneof![
        flag().prop_map(Property::PayloadFormatIndicator),
        any::<u32>().prop_map(Property::MessageExpiryInterval),
        text().prop_map(Property::ContentType),
        text().prop_map(Property::ResponseTopic),
        bytes().prop_map(Property::CorrelationData),
        (1u32..=268_435_455).prop_map(Property::SubscriptionIdentifier),
        any::<u32>().prop_map(Property::SessionExpiryInterval),
        text().prop_map(Property::AssignedClientIdentifier),
        any::<u16>().prop_map(Property::ServerKeepAlive),
        text().prop_map(Property::AuthenticationMethod),
        bytes().prop_map(Property::AuthenticationData),
        flag().prop_map(Property::RequestProblemInformation),
        any::<u32>().prop_map(Property::WillDelayInterval),
        flag().prop_map(Property::RequestResponseInformation),
        text().prop_map(Property::ResponseInformation),
        text().prop_map(Property::ServerReference),
        text().prop_map(Property::ReasonString),
        (1..=u16::MAX).prop_map(Property::ReceiveMaximum),
        any::<u16>().prop_map(Property::TopicAliasMaximum),
        (1..=u16::MAX).prop_map(Property::TopicAlias),
        flag().prop_map(Property::MaximumQoS),
        flag().prop_map(Property::RetainAvailable),
        (text(), text()).prop_map(|(k, v)| Property::UserProperty(k, v)),
        (1..=u32::MAX).prop_map(Property::MaximumPacketSize),
        flag().prop_map(Property::WildcardSubscriptionAvailable),
        flag().prop_map(Property::SubscriptionIdentifierAvailable),
        flag().prop_map(Property::SharedSubscriptionAvailable),
    ]
}

/// A valid property list for `scope`: random properties, keeping those the scope allows, the
/// first of each that may not repeat, and authentication data only with a method.
fn properties(scope: PropertyScope, from: From) -> impl Strategy<Value = Properties<'static>> {
    prop::collection::vec(property(), 0..6).prop_map(move |list| {
        let mut buf = PropertiesBuf::new();
        let mut seen = Vec::new();
        let has_method = list
            .iter()
            .any(|p| matches!(p, Property::AuthenticationMethod(_)));
        for property in list {
            let id = property.id();
            let repeats = id == super::property_id::USER_PROPERTY
                || (id == super::property_id::SUBSCRIPTION_IDENTIFIER
                    && scope == PropertyScope::Publish);
            let client_sub_id = scope == PropertyScope::Publish
                && from != From::Server
                && id == super::property_id::SUBSCRIPTION_IDENTIFIER;
            let orphan_data = matches!(property, Property::AuthenticationData(_)) && !has_method;
            if !scope.allows(id) || (seen.contains(&id) && !repeats) || client_sub_id || orphan_data
            {
                continue;
            }
            seen.push(id);
            buf.push(property);
        }
        let buf: &'static PropertiesBuf = Box::leak(Box::new(buf));
        buf.as_properties()
    })
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(id)
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn topic_name() -> impl Strategy<Value = &'static str> {
    "[a-z0-9é$/]{1,16}".prop_map(leak)
}

fn topic_filter() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        "[a-z]{1,6}(/[a-z]{1,4}){0,2}",
        Just("+/x".to_owned()),
        Just("#".to_owned()),
        Just("$share/g/a/+".to_owned()),
    ]
    .prop_map(leak)
}

fn reason(valid: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(valid).prop_map(ReasonCode)
}

const ACK_REASONS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const REL_REASONS: &[u8] = &[0x00, 0x92];
const CONNACK_REASONS: &[u8] = &[0x00, 0x80, 0x81, 0x84, 0x85, 0x87, 0x8C, 0x95, 0x9C, 0x9F];
const DISCONNECT_REASONS: &[u8] = &[0x00, 0x04, 0x80, 0x81, 0x82, 0x8E, 0x94, 0xA2];
const AUTH_REASONS: &[u8] = &[0x00, 0x18, 0x19];
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

fn connect() -> impl Strategy<Value = Packet<'static>> {
    let will = (
        topic_name(),
        bytes(),
        qos(),
        any::<bool>(),
        properties(PropertyScope::Will, From::Client),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        });
    (
        "[a-zA-Z0-9]{0,23}".prop_map(leak),
        any::<bool>(),
        any::<u16>(),
        prop::option::of(will),
        prop::option::of(text()),
        prop::option::of(bytes()),
        properties(PropertyScope::Connect, From::Client),
    )
        .prop_map(
            |(client_id, clean_session, keep_alive_s, will, username, password, properties)| {
                Packet::Connect(Connect {
                    version: V5,
                    clean_session,
                    keep_alive_s,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                    bridge: false,
                })
            },
        )
}

fn publish(from: From) -> impl Strategy<Value = Packet<'static>> {
    let delivery = prop_oneof![
        Just(Delivery::AtMostOnce),
        packet_id().prop_map(Delivery::AtLeastOnce),
        packet_id().prop_map(Delivery::ExactlyOnce),
    ];
    (
        any::<bool>(),
        any::<bool>(),
        delivery,
        topic_name(),
        bytes(),
        properties(PropertyScope::Publish, from),
    )
        .prop_map(|(dup, retain, delivery, topic, payload, properties)| {
            // [MQTT-3.3.1-2]; an aliased publish may leave the topic name empty.
            let dup = dup && delivery != Delivery::AtMostOnce;
            let topic = if properties.topic_alias().is_some() && retain {
                ""
            } else {
                topic
            };
            Packet::Publish(Publish {
                dup,
                retain,
                delivery,
                topic,
                payload,
                properties,
            })
        })
}

fn ack(reasons: &'static [u8], from: From) -> impl Strategy<Value = Ack<'static>> {
    (
        packet_id(),
        reason(reasons),
        properties(PropertyScope::Ack, from),
    )
        .prop_map(|(packet_id, reason, properties)| Ack {
            packet_id,
            reason,
            properties,
        })
}

fn subscription_options() -> impl Strategy<Value = SubscriptionOptions> {
    let retain_handling = prop_oneof![
        Just(RetainHandling::SendAtSubscribe),
        Just(RetainHandling::SendAtNewSubscribe),
        Just(RetainHandling::DoNotSend),
    ];
    (qos(), any::<bool>(), any::<bool>(), retain_handling).prop_map(
        |(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
            qos,
            no_local,
            retain_as_published,
            retain_handling,
        },
    )
}

/// Every packet a client may send after CONNECT.
fn client_packet() -> impl Strategy<Value = Packet<'static>> {
    let from = From::Client;
    prop_oneof![
        publish(from),
        ack(ACK_REASONS, from).prop_map(Packet::PubAck),
        ack(ACK_REASONS, from).prop_map(Packet::PubRec),
        ack(REL_REASONS, from).prop_map(Packet::PubRel),
        ack(REL_REASONS, from).prop_map(Packet::PubComp),
        (
            packet_id(),
            prop::collection::vec((topic_filter(), subscription_options()), 1..4),
            properties(PropertyScope::Subscribe, from),
        )
            .prop_map(|(packet_id, filters, properties)| {
                // [MQTT-3.8.3-4]
                let filters = filters
                    .into_iter()
                    .map(|(filter, mut options)| {
                        options.no_local &= !filter.starts_with("$share/");
                        (filter, options)
                    })
                    .collect();
                Packet::Subscribe(Subscribe {
                    packet_id,
                    filters,
                    properties,
                })
            }),
        (
            packet_id(),
            prop::collection::vec(topic_filter(), 1..4),
            properties(PropertyScope::Unsubscribe, from),
        )
            .prop_map(|(packet_id, filters, properties)| Packet::Unsubscribe(
                Unsubscribe {
                    packet_id,
                    filters,
                    properties,
                }
            )),
        Just(Packet::PingReq),
        (
            reason(DISCONNECT_REASONS),
            properties(PropertyScope::Disconnect, from)
        )
            .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties })),
        (reason(AUTH_REASONS), properties(PropertyScope::Auth, from))
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties })),
    ]
}

/// Every packet a server may send.
fn server_packet() -> impl Strategy<Value = Packet<'static>> {
    let from = From::Server;
    let subscribe_code = prop_oneof![
        qos().prop_map(SubscribeReturnCode::Granted),
        Just(SubscribeReturnCode::Failure),
        reason(&[0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2])
            .prop_map(SubscribeReturnCode::Refused),
    ];
    prop_oneof![
        (
            any::<bool>(),
            reason(CONNACK_REASONS),
            properties(PropertyScope::ConnAck, from)
        )
            .prop_map(|(session_present, reason, properties)| {
                Packet::ConnAck(ConnAck {
                    // [MQTT-3.2.2-6]
                    session_present: session_present && !reason.is_error(),
                    reason,
                    properties,
                })
            }),
        publish(from),
        ack(ACK_REASONS, from).prop_map(Packet::PubAck),
        ack(ACK_REASONS, from).prop_map(Packet::PubRec),
        ack(REL_REASONS, from).prop_map(Packet::PubRel),
        ack(REL_REASONS, from).prop_map(Packet::PubComp),
        (
            packet_id(),
            prop::collection::vec(subscribe_code, 1..5),
            properties(PropertyScope::SubAck, from)
        )
            .prop_map(|(packet_id, codes, properties)| Packet::SubAck(SubAck {
                packet_id,
                codes,
                properties,
            })),
        (
            packet_id(),
            prop::collection::vec(reason(UNSUBACK_REASONS), 1..5),
            properties(PropertyScope::UnsubAck, from)
        )
            .prop_map(
                |(packet_id, reasons, properties)| Packet::UnsubAck(UnsubAck {
                    packet_id,
                    reasons,
                    properties,
                })
            ),
        Just(Packet::PingResp),
        (
            reason(DISCONNECT_REASONS),
            properties(PropertyScope::Disconnect, from)
        )
            .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties })),
        (reason(AUTH_REASONS), properties(PropertyScope::Auth, from))
            .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties })),
    ]
}

fn round_trip(packet: &Packet<'static>, from: From) -> Result<(), TestCaseError> {
    let bytes = encoded(packet);
    prop_assert_eq!(packet_len(&bytes, &limits()), Ok(Some(bytes.len())));
    prop_assert_eq!(
        decode_as(&bytes, from),
        Ok(Some((packet.clone(), bytes.len())))
    );
    for end in 0..bytes.len() {
        prop_assert_eq!(decode_as(&bytes[..end], from), Ok(None));
    }
    Ok(())
}

/// Decoding answers and never panics; what it accepts re-encodes to the same packet.
fn decode_is_total(bytes: &[u8], from: From) -> Result<(), TestCaseError> {
    let _ = packet_len(bytes, &limits());
    if let Ok(Some((packet, consumed))) = decode_as(bytes, from) {
        prop_assert!(consumed <= bytes.len());
        let version = match &packet {
            Packet::Connect(connect) => connect.version,
            _ => V5,
        };
        let mut again = Vec::new();
        encode(&packet, version, &mut again);
        let decoded = match from {
            From::FirstClientPacket => decode(&again, None, &limits()),
            From::Client => decode(&again, Some(version), &limits()),
            From::Server => decode_from_server(&again, version, &limits()),
        };
        prop_assert_eq!(decoded, Ok(Some((packet, again.len()))));
    }
    Ok(())
}

proptest! {
    #[test]
    fn connect_round_trips(packet in connect()) {
        round_trip(&packet, From::FirstClientPacket)?;
    }

    #[test]
    fn client_packets_round_trip(packet in client_packet()) {
        round_trip(&packet, From::Client)?;
    }

    #[test]
    fn server_packets_round_trip(packet in server_packet()) {
        round_trip(&packet, From::Server)?;
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for from in [From::FirstClientPacket, From::Client, From::Server] {
            decode_is_total(&bytes, from)?;
        }
    }

    #[test]
    fn decode_never_panics_on_damaged_packets(
        packet in prop_oneof![connect(), client_packet(), server_packet()],
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encoded(&packet);
        for (index, byte) in damage {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        let end = cut.index(bytes.len() + 1);
        for from in [From::FirstClientPacket, From::Client, From::Server] {
            decode_is_total(&bytes, from)?;
            decode_is_total(&bytes[..end], from)?;
        }
    }
}
