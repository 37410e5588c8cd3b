//! Unit tests of the decoder: golden packets, refusals, limits, round trips and properties.

use super::*;
use crate::protocol::mqtt::encode::{encode, encoded_len};
use proptest::prelude::*;

const V31: ProtocolVersion = ProtocolVersion::V31;
const V311: ProtocolVersion = ProtocolVersion::V311;

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

/// Who sends a golden packet, which decides how it is decoded.
#[derive(Clone, Copy, Debug)]
enum From {
    /// CONNECT: decoded before any version is known.
    FirstClientPacket,
    Client,
    Server,
}

fn decode_as<'a>(
    buf: &'a [u8],
    from: From,
    version: ProtocolVersion,
    limits: &DecodeLimits,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    match from {
        From::FirstClientPacket => decode(buf, None, limits),
        From::Client => decode(buf, Some(version), limits),
        From::Server => decode_from_server(buf, version, limits),
    }
}

fn from_of(packet: &Packet<'_>) -> From {
    match packet {
        Packet::Connect(_) => From::FirstClientPacket,
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            From::Server
        }
        _ => From::Client,
    }
}

/// Decodes `bytes` to `packet`, encodes `packet` to `bytes`, and refuses every prefix as
/// incomplete.
fn assert_golden(bytes: &[u8], packet: &Packet<'_>, version: ProtocolVersion) {
    let from = from_of(packet);
    let decoded = decode_as(bytes, from, version, &limits());
    assert_eq!(
        decoded,
        Ok(Some((packet.clone(), bytes.len()))),
        "{bytes:02x?}"
    );
    let mut out = Vec::new();
    encode(packet, version, &mut out);
    assert_eq!(out, bytes, "{packet:?}");
    assert_eq!(encoded_len(packet, version), bytes.len());
    assert_every_prefix_incomplete(bytes, from, version);
}

fn assert_every_prefix_incomplete(bytes: &[u8], from: From, version: ProtocolVersion) {
    for end in 0..bytes.len() {
        assert_eq!(
            decode_as(&bytes[..end], from, version, &limits()),
            Ok(None),
            "prefix {end} of {bytes:02x?}"
        );
    }
}

fn full_connect() -> Connect<'static> {
    Connect {
        version: V311,
        clean_session: true,
        keep_alive_s: 60,
        client_id: "c1",
        will: Some(Will {
            topic: "w/t",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::EMPTY,
        }),
        username: Some("u"),
        password: Some(b"pw"),
        properties: Properties::EMPTY,
        bridge: false,
    }
}

#[test]
fn golden_connect_3_1_1_with_will_username_password() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x1F,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04,
        0xEE, // user name, password, will retain, will QoS 1, will, clean session
        0x00, 0x3C,
        0x00, 0x02, b'c', b'1',
        0x00, 0x03, b'w', b'/', b't',
        0x00, 0x03, b'b', b'y', b'e',
        0x00, 0x01, b'u',
        0x00, 0x02, b'p', b'w',
    ];
    assert_golden(&bytes, &Packet::Connect(full_connect()), V311);
}

#[test]
fn golden_connect_3_1() {
    #[rustfmt::skip]
    let minimal = [
        0x10, 0x11,
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
        0x02, 0x00, 0x0A,
        0x00, 0x03, b'a', b'b', b'c',
    ];
    let connect = Connect {
        version: V31,
        clean_session: true,
        keep_alive_s: 10,
        client_id: "abc",
        will: None,
        username: None,
        password: None,
        properties: Properties::EMPTY,
        bridge: false,
    };
    assert_golden(&minimal, &Packet::Connect(connect.clone()), V31);

    #[rustfmt::skip]
    let full = [
        0x10, 0x1D,
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
        0xF4, // user name, password, will retain, will QoS 2, will; no clean session
        0x00, 0x00,
        0x00, 0x01, b'x',
        0x00, 0x01, b'w',
        0x00, 0x00,
        0x00, 0x02, b'u', b's',
        0x00, 0x03, b'p', b'w', b'd',
    ];
    let connect = Connect {
        version: V31,
        clean_session: false,
        keep_alive_s: 0,
        client_id: "x",
        will: Some(Will {
            topic: "w",
            payload: b"",
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties::EMPTY,
        }),
        username: Some("us"),
        password: Some(b"pwd"),
        properties: Properties::EMPTY,
        bridge: false,
    };
    assert_golden(&full, &Packet::Connect(connect), V31);
}

#[test]
fn golden_connect_of_a_bridge_sets_bit_7_of_the_level() {
    // Mosquitto's try_private: protocol level 0x84 for 3.1.1, 0x83 for 3.1.
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x0F,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x84,
        0x02, 0x00, 0x3C,
        0x00, 0x03, b'b', b'r', b'g',
    ];
    let connect = Connect {
        version: V311,
        clean_session: true,
        keep_alive_s: 60,
        client_id: "brg",
        will: None,
        username: None,
        password: None,
        properties: Properties::EMPTY,
        bridge: true,
    };
    assert_golden(&bytes, &Packet::Connect(connect), V311);
    let mut v31 = vec![0x10, 0x11, 0x00, 0x06];
    v31.extend_from_slice(b"MQIsdp");
    v31.extend_from_slice(&[0x83, 0x02, 0x00, 0x3C, 0x00, 0x03, b'b', b'r', b'g']);
    match decode(&v31, None, &limits()) {
        Ok(Some((Packet::Connect(connect), _))) => {
            assert!(connect.bridge);
            assert_eq!(connect.version, V31);
        }
        other => panic!("a 3.1 bridge's CONNECT: {other:?}"),
    }
    // Other levels stay refused with the bit set.
    let mut nine = bytes;
    nine[8] = 0x89;
    assert_eq!(
        decode(&nine, None, &limits()).map(|_| ()),
        Err(DecodeError::UnsupportedProtocolVersion)
    );
}

#[test]
fn connect_3_1_tolerates_flags_without_fields() {
    // User name and password flags set, neither field sent: read as absent, as 3.1
    // brokers always have.
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x0F,
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
        0xC2, 0x00, 0x0A,
        0x00, 0x01, b'a',
    ];
    let Ok(Some((Packet::Connect(connect), 17))) = decode(&bytes, None, &limits()) else {
        panic!("3.1 CONNECT with empty credentials must decode");
    };
    assert_eq!((connect.username, connect.password), (None, None));
    // The same in 3.1.1 is truncated.
    let mut v311 = bytes.to_vec();
    v311.splice(2..11, [0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04]);
    v311[1] = 0x0D;
    assert_eq!(decode(&v311, None, &limits()), Err(DecodeError::Truncated));
}

#[test]
fn golden_connack() {
    let accepted = Packet::ConnAck(ConnAck::new(true, ConnectReturnCode::Accepted));
    assert_golden(&[0x20, 0x02, 0x01, 0x00], &accepted, V311);
    for (code, byte) in [
        (ConnectReturnCode::UnacceptableProtocolVersion, 1),
        (ConnectReturnCode::IdentifierRejected, 2),
        (ConnectReturnCode::ServerUnavailable, 3),
        (ConnectReturnCode::BadUsernameOrPassword, 4),
        (ConnectReturnCode::NotAuthorized, 5),
    ] {
        let refused = Packet::ConnAck(ConnAck::new(false, code));
        for version in [V31, V311] {
            assert_golden(&[0x20, 0x02, 0x00, byte], &refused, version);
        }
    }
}

#[test]
fn golden_publish() {
    for version in [V31, V311] {
        let qos0 = Publish {
            dup: false,
            retain: false,
            delivery: Delivery::AtMostOnce,
            topic: "a/b",
            payload: b"hi",
            properties: Properties::EMPTY,
        };
        assert_golden(
            &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
            &Packet::Publish(qos0),
            version,
        );
        let qos1_dup_retain = Publish {
            dup: true,
            retain: true,
            delivery: Delivery::AtLeastOnce(id(0x0102)),
            topic: "a",
            payload: &[0xFF],
            properties: Properties::EMPTY,
        };
        assert_golden(
            &[0x3B, 0x06, 0x00, 0x01, b'a', 0x01, 0x02, 0xFF],
            &Packet::Publish(qos1_dup_retain),
            version,
        );
        // An empty payload is allowed (§3.3.3).
        let qos2_empty = Publish {
            dup: false,
            retain: false,
            delivery: Delivery::ExactlyOnce(id(7)),
            topic: "a",
            payload: b"",
            properties: Properties::EMPTY,
        };
        assert_golden(
            &[0x34, 0x05, 0x00, 0x01, b'a', 0x00, 0x07],
            &Packet::Publish(qos2_empty),
            version,
        );
        let retained_qos0_empty = Publish {
            dup: false,
            retain: true,
            delivery: Delivery::AtMostOnce,
            topic: "a",
            payload: b"",
            properties: Properties::EMPTY,
        };
        assert_golden(
            &[0x31, 0x03, 0x00, 0x01, b'a'],
            &Packet::Publish(retained_qos0_empty),
            version,
        );
    }
}

#[test]
fn golden_acks() {
    for version in [V31, V311] {
        assert_golden(
            &[0x40, 0x02, 0x00, 0x01],
            &Packet::PubAck(Ack::new(id(1))),
            version,
        );
        assert_golden(
            &[0x50, 0x02, 0x01, 0x00],
            &Packet::PubRec(Ack::new(id(256))),
            version,
        );
        assert_golden(
            &[0x62, 0x02, 0xFF, 0xFF],
            &Packet::PubRel(Ack::new(id(65_535))),
            version,
        );
        assert_golden(
            &[0x70, 0x02, 0x00, 0x2A],
            &Packet::PubComp(Ack::new(id(42))),
            version,
        );
        assert_golden(
            &[0xB0, 0x02, 0x00, 0x0B],
            &Packet::UnsubAck(UnsubAck::new(id(11))),
            version,
        );
    }
}

#[test]
fn golden_subscribe_and_suback() {
    #[rustfmt::skip]
    let subscribe_bytes = [
        0x82, 0x12, 0x00, 0x0A,
        0x00, 0x03, b'a', b'/', b'b', 0x01,
        0x00, 0x01, b'#', 0x00,
        0x00, 0x03, b'+', b'/', b'c', 0x02,
    ];
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: id(10),
        filters: vec![
            ("a/b", SubscriptionOptions::new(QoS::AtLeastOnce)),
            ("#", SubscriptionOptions::new(QoS::AtMostOnce)),
            ("+/c", SubscriptionOptions::new(QoS::ExactlyOnce)),
        ],
        properties: Properties::EMPTY,
    });
    let suback_3_1_1 = Packet::SubAck(SubAck {
        packet_id: id(10),
        codes: vec![
            SubscribeReturnCode::Granted(QoS::AtLeastOnce),
            SubscribeReturnCode::Granted(QoS::AtMostOnce),
            SubscribeReturnCode::Failure,
            SubscribeReturnCode::Granted(QoS::ExactlyOnce),
        ],
        properties: Properties::EMPTY,
    });
    let suback_3_1 = Packet::SubAck(SubAck {
        packet_id: id(10),
        codes: vec![SubscribeReturnCode::Granted(QoS::AtLeastOnce)],
        properties: Properties::EMPTY,
    });
    for version in [V31, V311] {
        assert_golden(&subscribe_bytes, &subscribe, version);
    }
    assert_golden(
        &[0x90, 0x06, 0x00, 0x0A, 0x01, 0x00, 0x80, 0x02],
        &suback_3_1_1,
        V311,
    );
    assert_golden(&[0x90, 0x03, 0x00, 0x0A, 0x01], &suback_3_1, V31);
}

#[test]
fn golden_unsubscribe() {
    #[rustfmt::skip]
    let bytes = [
        0xA2, 0x0A, 0x00, 0x0B,
        0x00, 0x03, b'a', b'/', b'b',
        0x00, 0x01, b'#',
    ];
    let unsubscribe = Packet::Unsubscribe(Unsubscribe {
        packet_id: id(11),
        filters: vec!["a/b", "#"],
        properties: Properties::EMPTY,
    });
    for version in [V31, V311] {
        assert_golden(&bytes, &unsubscribe, version);
    }
}

#[test]
fn golden_ping_and_disconnect() {
    for version in [V31, V311] {
        assert_golden(&[0xC0, 0x00], &Packet::PingReq, version);
        assert_golden(&[0xD0, 0x00], &Packet::PingResp, version);
        assert_golden(
            &[0xE0, 0x00],
            &Packet::Disconnect(Disconnect::NORMAL),
            version,
        );
    }
}

#[test]
fn consumes_one_packet_at_a_time() {
    let bytes = [0xC0, 0x00, 0xE0, 0x00, 0x30];
    assert_eq!(
        decode(&bytes, Some(V311), &limits()),
        Ok(Some((Packet::PingReq, 2)))
    );
    assert_eq!(
        decode(&bytes[2..], Some(V311), &limits()),
        Ok(Some((Packet::Disconnect(Disconnect::NORMAL), 2)))
    );
    assert_eq!(decode(&bytes[4..], Some(V311), &limits()), Ok(None));
}

#[test]
fn size_limit_is_enforced_on_the_fixed_header() {
    // 2 MB announced against a 1 MB limit, with no body present.
    let header = [0x30, 0x80, 0x80, 0x80, 0x01];
    assert_eq!(
        decode(&header, Some(V311), &limits()),
        Err(DecodeError::PacketTooLarge)
    );
    assert_eq!(
        packet_len(&header, &limits()),
        Err(DecodeError::PacketTooLarge)
    );
    // Three continuation bytes already prove at least 2 097 151 bytes.
    assert_eq!(
        decode(&[0x30, 0xFF, 0xFF, 0xFF], Some(V311), &limits()),
        Err(DecodeError::PacketTooLarge)
    );
    // With a small limit two bytes are enough to tell.
    let small = DecodeLimits {
        packet_bytes_max: 100,
        ..limits()
    };
    assert_eq!(
        decode(&[0x30, 0xFF], Some(V311), &small),
        Err(DecodeError::PacketTooLarge)
    );
    assert_eq!(
        packet_len(&[0x30, 0xFF], &small),
        Err(DecodeError::PacketTooLarge)
    );
    // The limit counts the fixed header: 98 + 2 fits, 99 + 2 does not.
    assert_eq!(packet_len(&[0x30, 98], &small), Ok(Some(100)));
    assert_eq!(
        packet_len(&[0x30, 99], &small),
        Err(DecodeError::PacketTooLarge)
    );
    // Before CONNECT as well.
    assert_eq!(
        decode(&[0x10, 0xFF], None, &small),
        Err(DecodeError::PacketTooLarge)
    );
}

#[test]
fn packet_len_of_headers() {
    assert_eq!(packet_len(&[], &limits()), Ok(None));
    assert_eq!(packet_len(&[0x30], &limits()), Ok(None));
    assert_eq!(packet_len(&[0x30, 0x80], &limits()), Ok(None));
    assert_eq!(packet_len(&[0xC0, 0x00], &limits()), Ok(Some(2)));
    assert_eq!(packet_len(&[0x30, 0x80, 0x01], &limits()), Ok(Some(131)));
    // A non-minimal length encoding is still a length.
    assert_eq!(packet_len(&[0x30, 0x85, 0x00], &limits()), Ok(Some(8)));
    let huge = DecodeLimits {
        packet_bytes_max: u32::MAX,
        ..limits()
    };
    assert_eq!(
        packet_len(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], &huge),
        Ok(Some(268_435_455 + 5))
    );
    assert_eq!(
        packet_len(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], &huge),
        Err(DecodeError::MalformedRemainingLength)
    );
}

/// One malformed packet per error the decoder can report.
#[test]
fn errors() {
    use DecodeError::*;
    let connect_3_1_1 = |flags: u8, payload: &[u8]| {
        let mut bytes = vec![0x10, 0];
        bytes.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0, 0]);
        bytes.extend_from_slice(payload);
        bytes[1] = u8::try_from(bytes.len() - 2).expect("short test packet");
        bytes
    };
    let long_id = {
        let mut id = vec![0x00, 65];
        id.extend_from_slice(&[b'x'; 65]);
        id
    };
    #[rustfmt::skip]
    let cases: Vec<(Option<ProtocolVersion>, Vec<u8>, DecodeError)> = vec![
        (None, vec![0x00, 0x00], ReservedPacketType),
        (Some(V311), vec![0xF0, 0x00], ReservedPacketType),
        (Some(V311), vec![0xC1, 0x00], ReservedFlagsSet),
        (Some(V311), vec![0x60, 0x02, 0x00, 0x01], ReservedFlagsSet),
        (Some(V311), vec![0x6A, 0x02, 0x00, 0x01], ReservedFlagsSet),
        (Some(V311), vec![0x80, 0x06, 0, 1, 0, 1, b'a', 0], ReservedFlagsSet),
        (Some(V311), vec![0xA0, 0x05, 0, 1, 0, 1, b'a'], ReservedFlagsSet),
        (None, vec![0x12, 0x00], ReservedFlagsSet),
        (Some(V311), vec![0x30, 0x80, 0x80, 0x80, 0x80], MalformedRemainingLength),
        (Some(V311), vec![0x40, 0x01, 0x00], Truncated),
        (Some(V311), vec![0x40, 0x03, 0x00, 0x01, 0x00], TrailingBytes),
        (Some(V311), vec![0xC0, 0x01, 0x00], TrailingBytes),
        (Some(V311), vec![0x30, 0x03, 0x00, 0x01, 0xFF], InvalidUtf8),
        (Some(V311), vec![0x30, 0x03, 0x00, 0x01, 0x00], NullCharacter),
        (Some(V311), vec![0x40, 0x02, 0x00, 0x00], ZeroPacketId),
        (Some(V311), vec![0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00], ZeroPacketId),
        (None, vec![0xC0, 0x00], FirstPacketNotConnect),
        // An HTTP request on the MQTT port is refused at its first byte.
        (None, b"G".to_vec(), FirstPacketNotConnect),
        (Some(V311), connect_3_1_1(0x02, &[0, 1, b'a']), DuplicateConnect),
        (Some(V311), vec![0x20, 0x02, 0x00, 0x00], UnexpectedPacket),
        (Some(V311), vec![0x90, 0x03, 0x00, 0x01, 0x00], UnexpectedPacket),
        (Some(V311), vec![0xB0, 0x02, 0x00, 0x01], UnexpectedPacket),
        (Some(V311), vec![0xD0, 0x00], UnexpectedPacket),
        (None, vec![0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'X', 4, 2, 0, 0, 0, 0], InvalidProtocolName),
        (None, vec![0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 0, 0, 0], UnsupportedProtocolVersion),
        (None, vec![0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 3, 2, 0, 0, 0, 0], UnsupportedProtocolVersion),
        // A level 5 CONNECT in the 3.1.1 layout lacks its property length.
        (None, vec![0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 0, 0, 0], Truncated),
        (None, connect_3_1_1(0x03, &[0, 1, b'a']), ReservedConnectFlag),
        (None, connect_3_1_1(0x0A, &[0, 1, b'a']), WillFlagsInconsistent),
        (None, connect_3_1_1(0x22, &[0, 1, b'a']), WillFlagsInconsistent),
        (None, connect_3_1_1(0x1E, &[0, 1, b'a', 0, 1, b'w', 0, 0]), InvalidQoS),
        (None, connect_3_1_1(0x42, &[0, 1, b'a', 0, 0]), PasswordWithoutUsername),
        (None, connect_3_1_1(0x02, &long_id), ClientIdTooLong),
        (None, connect_3_1_1(0x06, &[0, 1, b'a', 0, 1, b'#', 0, 0]), InvalidTopicName),
        (None, connect_3_1_1(0x02, &[0, 1, b'a', 0]), TrailingBytes),
        (Some(V311), vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01], InvalidQoS),
        (Some(V311), vec![0x38, 0x03, 0x00, 0x01, b'a'], DupOnQoS0),
        (Some(V311), vec![0x30, 0x02, 0x00, 0x00], EmptyTopic),
        (Some(V311), vec![0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+'], InvalidTopicName),
        (Some(V311), vec![0x82, 0x07, 0, 1, 0, 2, b'a', b'#', 0], InvalidTopicFilter),
        (Some(V311), vec![0x82, 0x05, 0, 1, 0, 0, 0], EmptyTopic),
        (Some(V311), vec![0x82, 0x02, 0x00, 0x01], EmptySubscribe),
        (Some(V311), vec![0x82, 0x06, 0, 1, 0, 1, b'a', 3], InvalidSubscribeOptions),
        (Some(V311), vec![0x82, 0x06, 0, 1, 0, 1, b'a', 0x41], InvalidSubscribeOptions),
        (Some(V311), vec![0x82, 0x05, 0, 1, 0, 1, b'a'], Truncated),
        (Some(V311), vec![0xA2, 0x02, 0x00, 0x01], EmptyUnsubscribe),
    ];
    for (version, bytes, error) in &cases {
        assert_eq!(
            decode(bytes, *version, &limits()),
            Err(*error),
            "{bytes:02x?} at {version:?}"
        );
    }
}

#[test]
fn errors_from_a_server() {
    use DecodeError::*;
    let cases: [(ProtocolVersion, &[u8], DecodeError); 9] = [
        (V311, &[0x20, 0x02, 0x02, 0x00], ReservedConnAckFlags),
        (V311, &[0x20, 0x02, 0x01, 0x05], ReservedConnAckFlags),
        (V311, &[0x20, 0x02, 0x00, 0x06], InvalidReturnCode),
        (V31, &[0x20, 0x02, 0x00, 0x06], InvalidReturnCode),
        (V311, &[0x90, 0x03, 0x00, 0x01, 0x03], InvalidReturnCode),
        (V311, &[0x10, 0x00], UnexpectedPacket),
        (V311, &[0x82, 0x02, 0x00, 0x01], UnexpectedPacket),
        (V311, &[0xC0, 0x00], UnexpectedPacket),
        (V311, &[0xE0, 0x00], UnexpectedPacket),
    ];
    for (version, bytes, error) in cases {
        assert_eq!(
            decode_from_server(bytes, version, &limits()),
            Err(error),
            "{bytes:02x?} at {version:?}"
        );
    }
    // 3.1 has no acknowledge flags: whatever is in the byte is ignored.
    assert_eq!(
        decode_from_server(&[0x20, 0x02, 0xFF, 0x00], V31, &limits()),
        Ok(Some((
            Packet::ConnAck(ConnAck::new(false, ConnectReturnCode::Accepted)),
            4
        )))
    );
}

#[test]
fn what_3_1_tolerates() {
    // DUP on QoS 0 is a 3.1.1 rule.
    let dup_qos0 = [0x38, 0x03, 0x00, 0x01, b'a'];
    assert!(matches!(
        decode(&dup_qos0, Some(V31), &limits()),
        Ok(Some((Packet::Publish(Publish { dup: true, .. }), 5)))
    ));
    // 3.1 clients set DUP on a retried PUBREL, SUBSCRIBE or UNSUBSCRIBE.
    assert_eq!(
        decode(&[0x6A, 0x02, 0x00, 0x01], Some(V31), &limits()),
        Ok(Some((Packet::PubRel(Ack::new(id(1))), 4)))
    );
    // The reserved CONNECT bit and a password without user name are 3.1.1 rules.
    #[rustfmt::skip]
    let connect = [
        0x10, 0x14,
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03,
        0x43, 0x00, 0x0A,
        0x00, 0x01, b'a',
        0x00, 0x03, b'p', b'w', b'd',
    ];
    let Ok(Some((Packet::Connect(connect), 22))) = decode(&connect, None, &limits()) else {
        panic!("3.1 CONNECT with a password alone must decode");
    };
    assert_eq!(
        (connect.username, connect.password),
        (None, Some(&b"pwd"[..]))
    );
}

#[test]
fn too_many_filters() {
    let few = DecodeLimits {
        filters_per_packet_max: 2,
        ..limits()
    };
    let two = [0x82, 0x0A, 0, 1, 0, 1, b'a', 0, 0, 1, b'b', 0];
    assert!(decode(&two[..], Some(V311), &few).is_ok_and(|p| p.is_some()));
    let three = [
        0x82, 0x0E, 0, 1, 0, 1, b'a', 0, 0, 1, b'b', 0, 0, 1, b'c', 0,
    ];
    assert_eq!(
        decode(&three, Some(V311), &few),
        Err(DecodeError::TooManyFilters)
    );
    let three = [0xA2, 0x0B, 0, 1, 0, 1, b'a', 0, 1, b'b', 0, 1, b'c'];
    assert_eq!(
        decode(&three, Some(V311), &few),
        Err(DecodeError::TooManyFilters)
    );
}

#[test]
fn topic_limits_apply_to_publish_will_and_filters() {
    let tight = DecodeLimits {
        topic_bytes_max: 3,
        topic_levels_max: 2,
        ..limits()
    };
    let publish = [0x30, 0x06, 0x00, 0x04, b'a', b'b', b'c', b'd'];
    assert_eq!(
        decode(&publish, Some(V311), &tight),
        Err(DecodeError::TopicTooLong)
    );
    let subscribe = [0x82, 0x08, 0, 1, 0, 3, b'a', b'/', b'/', 0];
    assert_eq!(
        decode(&subscribe, Some(V311), &tight),
        Err(DecodeError::TooManyTopicLevels)
    );
    #[rustfmt::skip]
    let connect = [
        0x10, 0x13,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x00,
        0x00, 0x01, b'c',
        0x00, 0x04, b'w', b'w', b'w', b'w',
        0x00, 0x00,
    ];
    assert_eq!(
        decode(&connect, None, &tight),
        Err(DecodeError::TopicTooLong)
    );
}

// Property tests. Strategies leak their strings so packets can borrow `'static` data;
// that is a few kilobytes per test run.

fn leak(s: String) -> &'static str {
    s.leak()
}

fn leak_bytes(b: Vec<u8>) -> &'static [u8] {
    b.leak()
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
    "[a-z0-9 é€$/]{1,24}".prop_map(leak)
}

fn topic_filter() -> impl Strategy<Value = &'static str> {
    let level = prop_oneof![3 => "[a-zé$]{0,4}", 1 => Just("+".to_owned())];
    (prop::collection::vec(level, 1..6), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        // One empty level is the empty filter [MQTT-4.7.3-1].
        .prop_filter("a filter is never empty", |filter| !filter.is_empty())
        .prop_map(leak)
}

fn payload() -> impl Strategy<Value = &'static [u8]> {
    prop::collection::vec(any::<u8>(), 0..48).prop_map(leak_bytes)
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    let will = (topic_name(), payload(), qos(), any::<bool>()).prop_map(
        |(topic, payload, qos, retain)| Will {
            topic,
            payload,
            qos,
            retain,
            properties: Properties::EMPTY,
        },
    );
    (
        "[a-zA-Z0-9]{0,23}".prop_map(leak),
        any::<bool>(),
        any::<u16>(),
        prop::option::of(will),
        prop::option::of("[a-z€]{0,8}".prop_map(leak)),
        prop::option::of(payload()),
    )
        .prop_map(
            move |(client_id, clean_session, keep_alive_s, will, username, password)| {
                // [MQTT-3.1.2-22]: 3.1.1 never sends a password alone.
                let username = match (version, username, password) {
                    (ProtocolVersion::V311, None, Some(_)) => Some("user"),
                    (_, username, _) => username,
                };
                Packet::Connect(Connect {
                    version,
                    clean_session,
                    keep_alive_s,
                    client_id,
                    will,
                    username,
                    password,
                    properties: Properties::EMPTY,
                    bridge: false,
                })
            },
        )
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
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
        payload(),
    )
        .prop_map(move |(dup, retain, delivery, topic, payload)| {
            // [MQTT-3.3.1-2] is a 3.1.1 rule.
            let dup = dup && (version == ProtocolVersion::V31 || delivery != Delivery::AtMostOnce);
            Packet::Publish(Publish {
                dup,
                retain,
                delivery,
                topic,
                payload,
                properties: Properties::EMPTY,
            })
        })
}

/// Every packet a client may send after CONNECT.
fn client_packet(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    prop_oneof![
        publish(version),
        packet_id().prop_map(|id| Packet::PubAck(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubRec(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubRel(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubComp(Ack::new(id))),
        (
            packet_id(),
            prop::collection::vec((topic_filter(), qos()), 1..5)
        )
            .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe {
                packet_id,
                filters: filters
                    .into_iter()
                    .map(|(filter, qos)| (filter, SubscriptionOptions::new(qos)))
                    .collect(),
                properties: Properties::EMPTY,
            })),
        (packet_id(), prop::collection::vec(topic_filter(), 1..5)).prop_map(
            |(packet_id, filters)| Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties: Properties::EMPTY,
            })
        ),
        Just(Packet::PingReq),
        Just(Packet::Disconnect(Disconnect::NORMAL)),
    ]
}

/// Every packet a server may send.
fn server_packet(version: ProtocolVersion) -> impl Strategy<Value = Packet<'static>> {
    let code = prop_oneof![
        Just(ConnectReturnCode::Accepted),
        Just(ConnectReturnCode::UnacceptableProtocolVersion),
        Just(ConnectReturnCode::IdentifierRejected),
        Just(ConnectReturnCode::ServerUnavailable),
        Just(ConnectReturnCode::BadUsernameOrPassword),
        Just(ConnectReturnCode::NotAuthorized),
    ];
    let return_code = prop_oneof![
        qos().prop_map(SubscribeReturnCode::Granted),
        Just(SubscribeReturnCode::Failure),
    ];
    prop_oneof![
        (any::<bool>(), code).prop_map(move |(session_present, code)| {
            Packet::ConnAck(ConnAck::new(
                // 3.1 has no such bit; [MQTT-3.2.2-4] forbids it on a refusal.
                session_present
                    && version == ProtocolVersion::V311
                    && code == ConnectReturnCode::Accepted,
                code,
            ))
        }),
        publish(version),
        packet_id().prop_map(|id| Packet::PubAck(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubRec(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubRel(Ack::new(id))),
        packet_id().prop_map(|id| Packet::PubComp(Ack::new(id))),
        (packet_id(), prop::collection::vec(return_code, 1..5)).prop_map(|(packet_id, codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                codes,
                properties: Properties::EMPTY,
            })
        }),
        packet_id().prop_map(|id| Packet::UnsubAck(UnsubAck::new(id))),
        Just(Packet::PingResp),
    ]
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V31), Just(V311)]
}

fn encoded(packet: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    encode(packet, version, &mut out);
    assert_eq!(out.len(), encoded_len(packet, version));
    out
}

fn round_trip(
    packet: &Packet<'static>,
    from: From,
    version: ProtocolVersion,
) -> Result<(), TestCaseError> {
    let bytes = encoded(packet, version);
    prop_assert_eq!(packet_len(&bytes, &limits()), Ok(Some(bytes.len())));
    let decoded = decode_as(&bytes, from, version, &limits());
    prop_assert_eq!(decoded, Ok(Some((packet.clone(), bytes.len()))));
    for end in 0..bytes.len() {
        prop_assert_eq!(decode_as(&bytes[..end], from, version, &limits()), Ok(None));
    }
    Ok(())
}

/// Any byte string: decoding must answer, never panic, and anything it accepts must
/// survive an encode and a second decode unchanged.
fn decode_is_total(
    bytes: &[u8],
    from: From,
    version: ProtocolVersion,
) -> Result<(), TestCaseError> {
    let _ = packet_len(bytes, &limits());
    if let Ok(Some((packet, consumed))) = decode_as(bytes, from, version, &limits()) {
        prop_assert!(consumed <= bytes.len());
        let version = match &packet {
            Packet::Connect(connect) => connect.version,
            _ => version,
        };
        let again = encoded(&packet, version);
        prop_assert_eq!(
            decode_as(&again, from, version, &limits()),
            Ok(Some((packet, again.len())))
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn connect_round_trips(packet in version().prop_flat_map(connect)) {
        let version = match &packet {
            Packet::Connect(connect) => connect.version,
            _ => V311,
        };
        round_trip(&packet, From::FirstClientPacket, version)?;
    }

    #[test]
    fn client_packets_round_trip(
        (version, packet) in version().prop_flat_map(|v| (Just(v), client_packet(v)))
    ) {
        round_trip(&packet, From::Client, version)?;
    }

    #[test]
    fn server_packets_round_trip(
        (version, packet) in version().prop_flat_map(|v| (Just(v), server_packet(v)))
    ) {
        round_trip(&packet, From::Server, version)?;
    }

    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        decode_is_total(&bytes, From::FirstClientPacket, V311)?;
        for version in [V31, V311] {
            decode_is_total(&bytes, From::Client, version)?;
            decode_is_total(&bytes, From::Server, version)?;
        }
    }

    /// Random bytes rarely get past the fixed header; damaged valid packets reach the
    /// field decoders.
    #[test]
    fn decode_never_panics_on_damaged_packets(
        (version, packet) in version().prop_flat_map(|v| (Just(v), prop_oneof![
            connect(v),
            client_packet(v),
            server_packet(v),
        ])),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encoded(&packet, version);
        for (index, byte) in damage {
            let at = index.index(bytes.len());
            bytes[at] = byte;
        }
        let end = cut.index(bytes.len() + 1);
        for from in [From::FirstClientPacket, From::Client, From::Server] {
            decode_is_total(&bytes, from, version)?;
            decode_is_total(&bytes[..end], from, version)?;
        }
    }
}
