//! Unit tests of the property view: accessors, order, validation per packet, forwarding.

use super::*;
use crate::protocol::mqtt::ReasonCode;

fn buf(list: &[Property<'_>]) -> PropertiesBuf {
    let mut buf = PropertiesBuf::new();
    for property in list {
        buf.push(*property);
    }
    buf
}

#[test]
fn accessors_read_every_property() {
    let all = buf(&[
        Property::PayloadFormatIndicator(1),
        Property::MessageExpiryInterval(60),
        Property::ContentType("text/plain"),
        Property::ResponseTopic("r/t"),
        Property::CorrelationData(b"\x01\x02"),
        Property::SubscriptionIdentifier(268_435_455),
        Property::SessionExpiryInterval(7),
        Property::AssignedClientIdentifier("id"),
        Property::ServerKeepAlive(30),
        Property::AuthenticationMethod("m"),
        Property::AuthenticationData(b"d"),
        Property::RequestProblemInformation(0),
        Property::WillDelayInterval(9),
        Property::RequestResponseInformation(1),
        Property::ResponseInformation("ri"),
        Property::ServerReference("sr"),
        Property::ReasonString("why"),
        Property::ReceiveMaximum(10),
        Property::TopicAliasMaximum(5),
        Property::TopicAlias(3),
        Property::MaximumQoS(1),
        Property::RetainAvailable(0),
        Property::UserProperty("k", "v"),
        Property::MaximumPacketSize(4096),
        Property::WildcardSubscriptionAvailable(1),
        Property::SubscriptionIdentifierAvailable(0),
        Property::SharedSubscriptionAvailable(1),
    ]);
    let p = all.as_properties();
    assert_eq!(p.payload_format_indicator(), Some(1));
    assert_eq!(p.message_expiry_interval_s(), Some(60));
    assert_eq!(p.content_type(), Some("text/plain"));
    assert_eq!(p.response_topic(), Some("r/t"));
    assert_eq!(p.correlation_data(), Some(&b"\x01\x02"[..]));
    assert_eq!(
        p.subscription_identifiers().collect::<Vec<_>>(),
        [268_435_455]
    );
    assert_eq!(p.session_expiry_interval_s(), Some(7));
    assert_eq!(p.assigned_client_identifier(), Some("id"));
    assert_eq!(p.server_keep_alive_s(), Some(30));
    assert_eq!(p.authentication_method(), Some("m"));
    assert_eq!(p.authentication_data(), Some(&b"d"[..]));
    assert_eq!(p.request_problem_information(), Some(false));
    assert_eq!(p.will_delay_interval_s(), Some(9));
    assert_eq!(p.request_response_information(), Some(true));
    assert_eq!(p.response_information(), Some("ri"));
    assert_eq!(p.server_reference(), Some("sr"));
    assert_eq!(p.reason_string(), Some("why"));
    assert_eq!(p.receive_maximum(), Some(10));
    assert_eq!(p.topic_alias_maximum(), Some(5));
    assert_eq!(p.topic_alias(), Some(3));
    assert_eq!(p.maximum_qos(), Some(QoS::AtLeastOnce));
    assert_eq!(p.retain_available(), Some(false));
    assert_eq!(p.user_properties().collect::<Vec<_>>(), [("k", "v")]);
    assert_eq!(p.maximum_packet_size_bytes(), Some(4096));
    assert_eq!(p.wildcard_subscription_available(), Some(true));
    assert_eq!(p.subscription_identifier_available(), Some(false));
    assert_eq!(p.shared_subscription_available(), Some(true));
    assert_eq!(p.iter().count(), 27);
    for property in p {
        assert_eq!(
            property.encoded_len(),
            buf(&[property]).as_properties().raw().len()
        );
    }
    assert_eq!(Properties::EMPTY.reason_string(), None);
    assert_eq!(Properties::EMPTY.encoded_len(), 1);
}

#[test]
fn repeated_properties_keep_their_order() {
    let list = buf(&[
        Property::UserProperty("b", "1"),
        Property::SubscriptionIdentifier(2),
        Property::UserProperty("a", "2"),
        Property::SubscriptionIdentifier(1),
        Property::UserProperty("b", "3"),
    ]);
    let p = Properties::parse(list.as_properties().raw(), PropertyScope::Publish)
        .expect("repeatable in a PUBLISH");
    assert_eq!(
        p.user_properties().collect::<Vec<_>>(),
        [("b", "1"), ("a", "2"), ("b", "3")]
    );
    assert_eq!(p.subscription_identifiers().collect::<Vec<_>>(), [2, 1]);
    // Only user properties repeat in a SUBSCRIBE.
    assert_eq!(
        Properties::parse(list.as_properties().raw(), PropertyScope::Subscribe),
        Err(DecodeError::DuplicateProperty)
    );
}

#[test]
fn scopes_follow_the_table_of_2_2_2_2() {
    use PropertyScope::*;
    use property_id::*;
    let cases: [(u8, &[PropertyScope]); 7] = [
        (PAYLOAD_FORMAT_INDICATOR, &[Publish, Will]),
        (SUBSCRIPTION_IDENTIFIER, &[Publish, Subscribe]),
        (SESSION_EXPIRY_INTERVAL, &[Connect, ConnAck, Disconnect]),
        (WILL_DELAY_INTERVAL, &[Will]),
        (SERVER_REFERENCE, &[ConnAck, Disconnect]),
        (
            REASON_STRING,
            &[ConnAck, Ack, SubAck, UnsubAck, Disconnect, Auth],
        ),
        (
            USER_PROPERTY,
            &[
                Connect,
                Will,
                ConnAck,
                Publish,
                Ack,
                Subscribe,
                SubAck,
                Unsubscribe,
                UnsubAck,
                Disconnect,
                Auth,
            ],
        ),
    ];
    let all = [
        Connect,
        Will,
        ConnAck,
        Publish,
        Ack,
        Subscribe,
        SubAck,
        Unsubscribe,
        UnsubAck,
        Disconnect,
        Auth,
    ];
    for (id, allowed) in cases {
        for scope in all {
            assert_eq!(
                scope.allows(id),
                allowed.contains(&scope),
                "{id:#x} {scope:?}"
            );
        }
    }
    for scope in all {
        assert!(!scope.allows(0x00) && !scope.allows(0x04) && !scope.allows(0x2B));
        assert!(!scope.allows(200));
    }
}

#[test]
fn value_rules() {
    let cases: [(&[u8], PropertyScope, DecodeError); 12] = [
        (
            &[0x01, 0x02],
            PropertyScope::Publish,
            DecodeError::InvalidPropertyValue,
        ),
        (
            &[0x24, 0x02],
            PropertyScope::ConnAck,
            DecodeError::InvalidPropertyValue,
        ),
        (
            &[0x0B, 0x00],
            PropertyScope::Subscribe,
            DecodeError::ZeroSubscriptionIdentifier,
        ),
        (
            &[0x21, 0x00, 0x00],
            PropertyScope::Connect,
            DecodeError::ZeroReceiveMaximum,
        ),
        (
            &[0x23, 0x00, 0x00],
            PropertyScope::Publish,
            DecodeError::ZeroTopicAlias,
        ),
        (
            &[0x27, 0, 0, 0, 0],
            PropertyScope::ConnAck,
            DecodeError::ZeroMaximumPacketSize,
        ),
        (
            &[0x16, 0, 1, 9],
            PropertyScope::Auth,
            DecodeError::AuthenticationDataWithoutMethod,
        ),
        (
            &[0x0B, 0x80, 0x80, 0x80, 0x80, 0x01],
            PropertyScope::Publish,
            DecodeError::MalformedVariableByteInteger,
        ),
        (
            &[0x0B, 0x80],
            PropertyScope::Publish,
            DecodeError::Truncated,
        ),
        (
            &[0x03, 0x00, 0x01, 0xFF],
            PropertyScope::Publish,
            DecodeError::InvalidUtf8,
        ),
        (
            &[0x1F, 0x00, 0x01, 0x00],
            PropertyScope::Ack,
            DecodeError::NullCharacter,
        ),
        (
            &[0x05, 0x00],
            PropertyScope::Publish,
            DecodeError::InvalidPropertyIdentifier,
        ),
    ];
    for (raw, scope, error) in cases {
        assert_eq!(Properties::parse(raw, scope), Err(error), "{raw:02x?}");
    }
    assert!(Properties::parse(&[0x15, 0, 1, b'm', 0x16, 0, 0], PropertyScope::Auth).is_ok());
    assert_eq!(
        ReasonCode(DecodeError::ZeroTopicAlias.reason_code().0),
        ReasonCode::TOPIC_ALIAS_INVALID
    );
}

#[test]
fn copy_except_drops_per_connection_properties() {
    let message = buf(&[
        Property::TopicAlias(4),
        Property::UserProperty("k", "v"),
        Property::SubscriptionIdentifier(9),
        Property::ContentType("c"),
    ]);
    let mut forwarded = PropertiesBuf::new();
    message.as_properties().copy_except(
        &[
            property_id::TOPIC_ALIAS,
            property_id::SUBSCRIPTION_IDENTIFIER,
        ],
        &mut forwarded,
    );
    assert_eq!(
        forwarded,
        buf(&[Property::UserProperty("k", "v"), Property::ContentType("c")])
    );
}

#[test]
fn variable_byte_integer_boundaries() {
    for (value, bytes) in [
        (0usize, &[0x00][..]),
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
        (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
    ] {
        let mut out = Vec::new();
        put_variable_byte_integer(value, &mut out);
        assert_eq!(out, bytes, "{value}");
        assert_eq!(variable_byte_integer_len(value), bytes.len());
        let mut reader = Reader::new(bytes);
        assert_eq!(reader.variable_byte_integer(), Ok(value as u32));
    }
}

#[test]
#[should_panic(expected = "decoder accepts")]
fn pushing_a_forbidden_value_panics() {
    PropertiesBuf::new().push(Property::ReceiveMaximum(0));
}
