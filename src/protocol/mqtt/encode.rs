//! MQTT 3.1 / 3.1.1 / 5.0 encoder: packet values to wire bytes.
//!
//! The encoder trusts its caller (the broker, tests, load generators) but asserts every rule the
//! decoder enforces, so a bug here crashes in tests instead of sending a packet a peer must
//! reject. That includes the MQTT 5 fields at 3.x: a property, a reason other than Success or a
//! subscription option 3.x cannot carry is a programmer error, never silently dropped.
//!
//! Layouts follow MQTT 3.1.1 §2 and §3 (3.1 differs only where noted) and MQTT 5.0 §2 and §3.
//! MQTT 5 acknowledgements, DISCONNECT and AUTH use their shortest form: the reason code and
//! property length are left out when they are Success and empty ([MQTT-3.4.2-1], §3.14.2.1,
//! §3.15.2.1).

use super::packet::{
    Ack, ConnAck, Connect, ConnectReturnCode, Disconnect, Packet, PacketId, ProtocolVersion,
    Publish, RetainHandling, SubAck, Subscribe, SubscribeReturnCode, SubscriptionOptions, UnsubAck,
    Unsubscribe,
};
use super::properties::{
    Properties, PropertyScope, put_variable_byte_integer, variable_byte_integer_len,
};
use super::reason::{ReasonCode, ReasonCodeOf};

/// Largest value the 4-byte remaining length can carry (MQTT 3.1.1 §2.2.3).
pub const REMAINING_LENGTH_MAX: usize = 268_435_455;

/// Fixed-header flags required on PUBREL, SUBSCRIBE and UNSUBSCRIBE ([MQTT-3.6.1-1],
/// [MQTT-3.8.1-1], [MQTT-3.10.1-1]).
pub(crate) const FLAGS_QOS1: u8 = 0b0010;

/// Control packet type numbers (MQTT 5.0 §2.1.2), in the spec's numeric order.
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
    /// MQTT 5 only; reserved before.
    pub const AUTH: u8 = 15;
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
/// input), including MQTT 5 fields that `version` cannot carry.
pub fn encode(packet: &Packet<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    if let (Packet::Publish(publish), ProtocolVersion::V5) = (packet, version) {
        encode_publish_v5(publish, Properties::EMPTY, out);
        return;
    }
    let remaining = remaining_len(packet, version);
    assert!(
        remaining <= REMAINING_LENGTH_MAX,
        "remaining length must fit the 4-byte encoding"
    );
    let start = out.len();
    out.reserve(1 + remaining_length_len(remaining) + remaining);
    out.push(first_byte(packet, version));
    put_variable_byte_integer(remaining, out);
    let v5 = version == ProtocolVersion::V5;
    match packet {
        Packet::Connect(connect) => put_connect(connect, version, out),
        Packet::ConnAck(connack) => put_connack(connack, version, out),
        Packet::Publish(publish) => put_publish(publish, Properties::EMPTY, version, out),
        Packet::PubAck(ack) | Packet::PubRec(ack) => {
            put_ack(ack, ReasonCodeOf::PubAckOrPubRec, version, out)
        }
        Packet::PubRel(ack) | Packet::PubComp(ack) => {
            put_ack(ack, ReasonCodeOf::PubRelOrPubComp, version, out)
        }
        Packet::Subscribe(subscribe) => put_subscribe(subscribe, version, out),
        Packet::SubAck(suback) => put_suback(suback, version, out),
        Packet::Unsubscribe(unsubscribe) => put_unsubscribe(unsubscribe, version, out),
        Packet::UnsubAck(unsuback) => put_unsuback(unsuback, version, out),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => {
            if v5 {
                let (reason, properties) = (disconnect.reason, disconnect.properties);
                assert_reason(reason, ReasonCodeOf::Disconnect);
                put_short_reason(reason, properties, PropertyScope::Disconnect, out);
            } else {
                assert_eq!(
                    *disconnect,
                    Disconnect::NORMAL,
                    "3.x DISCONNECT has no fields"
                );
            }
        }
        Packet::Auth(auth) => {
            assert!(v5, "AUTH exists only in MQTT 5");
            assert_reason(auth.reason, ReasonCodeOf::Auth);
            put_short_reason(auth.reason, auth.properties, PropertyScope::Auth, out);
        }
    }
    debug_assert_eq!(out.len() - start, encoded_len(packet, version));
}

/// The number of bytes `encode` would append (for pre-sizing / framing).
pub fn encoded_len(packet: &Packet<'_>, version: ProtocolVersion) -> usize {
    let remaining = remaining_len(packet, version);
    1 + remaining_length_len(remaining) + remaining
}

/// Where the packet identifier of `publish` sits in its encoding, if it has one.
///
/// Fan-out encodes a PUBLISH once per wire variant and patches only the two identifier bytes
/// (big-endian) per subscriber; this is the offset of the first of them. In MQTT 5 the
/// identifier comes before the properties, but their length moves it through the remaining
/// length; [`PublishV5::measure`] gives the offset with per-subscriber properties.
pub fn publish_packet_id_offset(publish: &Publish<'_>, version: ProtocolVersion) -> Option<usize> {
    publish.delivery.packet_id()?;
    let remaining = publish_remaining_len(publish, Properties::EMPTY, version);
    Some(1 + remaining_length_len(remaining) + 2 + publish.topic.len())
}

/// Where an MQTT 5 PUBLISH encoding ends and where its identifier sits, for
/// [`encode_publish_v5`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishV5 {
    /// Bytes of the whole packet.
    pub len: usize,
    /// Offset of the two identifier bytes from the start of the packet (QoS 1/2 only).
    pub packet_id_offset: Option<usize>,
}

impl PublishV5 {
    /// The layout [`encode_publish_v5`] would produce.
    pub fn measure(publish: &Publish<'_>, extra: Properties<'_>) -> PublishV5 {
        let remaining = publish_remaining_len(publish, extra, ProtocolVersion::V5);
        let header_len = 1 + remaining_length_len(remaining);
        PublishV5 {
            len: header_len + remaining,
            packet_id_offset: publish
                .delivery
                .packet_id()
                .map(|_| header_len + 2 + publish.topic.len()),
        }
    }
}

/// Appends an MQTT 5 PUBLISH for one subscriber: the message's own properties
/// (`publish.properties`, already stripped of what is per connection) followed by `extra`, the
/// properties that differ per subscriber: its Subscription Identifiers [MQTT-3.3.4-3] and a
/// Topic Alias (§3.3.2.3.4; `publish.topic` may then be empty). Returns the layout, so the
/// caller can patch the packet identifier of copies.
pub fn encode_publish_v5(
    publish: &Publish<'_>,
    extra: Properties<'_>,
    out: &mut Vec<u8>,
) -> PublishV5 {
    let layout = PublishV5::measure(publish, extra);
    let remaining = publish_remaining_len(publish, extra, ProtocolVersion::V5);
    assert!(
        remaining <= REMAINING_LENGTH_MAX,
        "remaining length must fit the 4-byte encoding"
    );
    let start = out.len();
    out.reserve(layout.len);
    out.push((packet_type::PUBLISH << 4) | publish_flags(publish));
    put_variable_byte_integer(remaining, out);
    put_publish(publish, extra, ProtocolVersion::V5, out);
    debug_assert_eq!(out.len() - start, layout.len);
    layout
}

/// Number of bytes the remaining-length field takes for `remaining` (MQTT 3.1.1 §2.2.3).
pub const fn remaining_length_len(remaining: usize) -> usize {
    variable_byte_integer_len(remaining)
}

fn first_byte(packet: &Packet<'_>, version: ProtocolVersion) -> u8 {
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
        Packet::Disconnect(_) => (DISCONNECT, 0),
        Packet::Auth(_) => {
            assert_eq!(version, ProtocolVersion::V5, "AUTH exists only in MQTT 5");
            (AUTH, 0)
        }
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

/// Bytes of a property list at `version`: nothing before MQTT 5.
fn properties_len(properties: Properties<'_>, version: ProtocolVersion) -> usize {
    match version {
        ProtocolVersion::V5 => properties.encoded_len(),
        ProtocolVersion::V31 | ProtocolVersion::V311 => 0,
    }
}

/// Bytes of a reason code and properties that are left out when Success and empty.
fn short_reason_len(reason: ReasonCode, properties: Properties<'_>) -> usize {
    match (reason, properties.is_empty()) {
        (ReasonCode::SUCCESS, true) => 0,
        (_, true) => 1,
        (_, false) => 1 + properties.encoded_len(),
    }
}

/// Length of everything after the fixed header.
fn remaining_len(packet: &Packet<'_>, version: ProtocolVersion) -> usize {
    let v5 = version == ProtocolVersion::V5;
    match packet {
        Packet::Connect(connect) => connect_remaining_len(connect, version),
        Packet::ConnAck(connack) => 2 + properties_len(connack.properties, version),
        Packet::Publish(publish) => publish_remaining_len(publish, Properties::EMPTY, version),
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            2 + if v5 {
                short_reason_len(ack.reason, ack.properties)
            } else {
                0
            }
        }
        Packet::Subscribe(subscribe) => {
            2 + properties_len(subscribe.properties, version)
                + subscribe
                    .filters
                    .iter()
                    .map(|(filter, _)| string_len(filter) + 1)
                    .sum::<usize>()
        }
        Packet::SubAck(suback) => {
            2 + properties_len(suback.properties, version) + suback.codes.len()
        }
        Packet::Unsubscribe(unsubscribe) => {
            2 + properties_len(unsubscribe.properties, version)
                + unsubscribe
                    .filters
                    .iter()
                    .map(|filter| string_len(filter))
                    .sum::<usize>()
        }
        Packet::UnsubAck(unsuback) => {
            2 + properties_len(unsuback.properties, version)
                + if v5 { unsuback.reasons.len() } else { 0 }
        }
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(disconnect) => {
            if v5 {
                short_reason_len(disconnect.reason, disconnect.properties)
            } else {
                0
            }
        }
        Packet::Auth(auth) => short_reason_len(auth.reason, auth.properties),
    }
}

fn connect_remaining_len(connect: &Connect<'_>, version: ProtocolVersion) -> usize {
    // Protocol name, level, flags, keep alive.
    let mut len = 2 + version.protocol_name().len() + 1 + 1 + 2;
    len += properties_len(connect.properties, version);
    len += string_len(connect.client_id);
    if let Some(will) = &connect.will {
        len += properties_len(will.properties, version);
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

fn publish_remaining_len(
    publish: &Publish<'_>,
    extra: Properties<'_>,
    version: ProtocolVersion,
) -> usize {
    let id_len = if publish.delivery.packet_id().is_some() {
        2
    } else {
        0
    };
    let properties_len = match version {
        ProtocolVersion::V5 => {
            let raw_len = publish.properties.raw().len() + extra.raw().len();
            variable_byte_integer_len(raw_len) + raw_len
        }
        ProtocolVersion::V31 | ProtocolVersion::V311 => 0,
    };
    string_len(publish.topic) + id_len + properties_len + publish.payload.len()
}

fn string_len(s: &str) -> usize {
    2 + s.len()
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

/// Appends a property list at MQTT 5, or asserts there is none before it.
fn put_properties(
    properties: Properties<'_>,
    scope: PropertyScope,
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) {
    match version {
        ProtocolVersion::V5 => {
            assert_properties(properties, scope);
            properties.put(out);
        }
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            assert!(properties.is_empty(), "3.x packets carry no properties");
        }
    }
}

/// The rules of §2.2.2.2 the decoder enforces for `scope`.
fn assert_properties(properties: Properties<'_>, scope: PropertyScope) {
    assert!(
        Properties::parse(properties.raw(), scope).is_ok(),
        "properties must be valid for their packet (§2.2.2.2): {properties:?} in {scope:?}"
    );
}

fn assert_reason(reason: ReasonCode, packet: ReasonCodeOf) {
    assert!(
        reason.is_valid_for(packet),
        "{reason:?} is not a reason code of {packet:?}"
    );
}

fn put_short_reason(
    reason: ReasonCode,
    properties: Properties<'_>,
    scope: PropertyScope,
    out: &mut Vec<u8>,
) {
    if reason == ReasonCode::SUCCESS && properties.is_empty() {
        return;
    }
    out.push(reason.0);
    if !properties.is_empty() {
        assert_properties(properties, scope);
        properties.put(out);
    }
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
    let bridge_bit = if connect.bridge {
        super::decode::BRIDGE_LEVEL_BIT
    } else {
        0
    };
    out.push(version.level() | bridge_bit);

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
    put_properties(connect.properties, PropertyScope::Connect, version, out);

    // Payload order is fixed by [MQTT-3.1.3-1].
    put_string(connect.client_id, out);
    if let Some(will) = &connect.will {
        put_properties(will.properties, PropertyScope::Will, version, out);
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

fn put_connack(connack: &ConnAck<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    assert!(
        !connack.session_present || !connack.reason.is_error(),
        "session present must be 0 on a refused connection [MQTT-3.2.2-4], [MQTT-3.2.2-6]"
    );
    // 3.1 has no session-present bit: the whole byte is reserved, so it is always 0 there.
    let flags = match version {
        ProtocolVersion::V311 | ProtocolVersion::V5 => u8::from(connack.session_present),
        ProtocolVersion::V31 => 0,
    };
    out.push(flags);
    match version {
        ProtocolVersion::V5 => {
            assert_reason(connack.reason, ReasonCodeOf::ConnAck);
            out.push(connack.reason.0);
        }
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            let code = ConnectReturnCode::from_reason_code(connack.reason)
                .expect("a 3.x CONNACK carries one of the six 3.x return codes");
            out.push(code as u8);
        }
    }
    put_properties(connack.properties, PropertyScope::ConnAck, version, out);
}

fn put_publish(
    publish: &Publish<'_>,
    extra: Properties<'_>,
    version: ProtocolVersion,
    out: &mut Vec<u8>,
) {
    let v5 = version == ProtocolVersion::V5;
    if publish.topic.is_empty() {
        // §3.3.2.3.4: an empty topic name stands for a Topic Alias set by this packet.
        assert!(
            v5 && (publish.properties.topic_alias().is_some() || extra.topic_alias().is_some()),
            "a topic name is empty only with a Topic Alias (MQTT 5)"
        );
    } else {
        debug_assert!(super::topic::is_valid_topic_name(publish.topic));
    }
    put_string(publish.topic, out);
    if let Some(id) = publish.delivery.packet_id() {
        put_packet_id(id, out);
    }
    if v5 {
        assert_properties(publish.properties, PropertyScope::Publish);
        assert_properties(extra, PropertyScope::Publish);
        put_variable_byte_integer(publish.properties.raw().len() + extra.raw().len(), out);
        out.extend_from_slice(publish.properties.raw());
        out.extend_from_slice(extra.raw());
    } else {
        assert!(
            publish.properties.is_empty() && extra.is_empty(),
            "3.x packets carry no properties"
        );
    }
    out.extend_from_slice(publish.payload);
}

fn put_ack(ack: &Ack<'_>, packet: ReasonCodeOf, version: ProtocolVersion, out: &mut Vec<u8>) {
    put_packet_id(ack.packet_id, out);
    match version {
        ProtocolVersion::V5 => {
            assert_reason(ack.reason, packet);
            put_short_reason(ack.reason, ack.properties, PropertyScope::Ack, out);
        }
        ProtocolVersion::V31 | ProtocolVersion::V311 => assert_eq!(
            (ack.reason, ack.properties),
            (ReasonCode::SUCCESS, Properties::EMPTY),
            "a 3.x acknowledgement carries only its identifier"
        ),
    }
}

/// The options byte of MQTT 5 §3.8.3.1, or the requested QoS byte of 3.x.
fn subscription_options_byte(options: SubscriptionOptions, version: ProtocolVersion) -> u8 {
    use super::decode_v5::subscription_option::*;
    if version != ProtocolVersion::V5 {
        assert_eq!(
            options,
            SubscriptionOptions::new(options.qos),
            "3.x subscriptions carry only a QoS"
        );
    }
    let retain_handling = match options.retain_handling {
        RetainHandling::SendAtSubscribe => 0,
        RetainHandling::SendAtNewSubscribe => 1,
        RetainHandling::DoNotSend => 2,
    };
    let mut byte = options.qos.bits() | (retain_handling << RETAIN_HANDLING_SHIFT);
    if options.no_local {
        byte |= NO_LOCAL;
    }
    if options.retain_as_published {
        byte |= RETAIN_AS_PUBLISHED;
    }
    byte
}

fn put_subscribe(subscribe: &Subscribe<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    assert!(
        !subscribe.filters.is_empty(),
        "a SUBSCRIBE carries at least one filter [MQTT-3.8.3-3]"
    );
    put_packet_id(subscribe.packet_id, out);
    put_properties(subscribe.properties, PropertyScope::Subscribe, version, out);
    for &(filter, options) in &subscribe.filters {
        debug_assert!(super::topic::is_valid_topic_filter(filter));
        assert!(
            !(options.no_local && filter.starts_with(super::decode_v5::SHARED_SUBSCRIPTION_PREFIX)),
            "no local on a shared subscription [MQTT-3.8.3-4]"
        );
        put_string(filter, out);
        out.push(subscription_options_byte(options, version));
    }
}

fn put_suback(suback: &SubAck<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    put_packet_id(suback.packet_id, out);
    put_properties(suback.properties, PropertyScope::SubAck, version, out);
    for code in &suback.codes {
        out.push(match *code {
            SubscribeReturnCode::Granted(qos) => qos.bits(),
            SubscribeReturnCode::Failure => SUBACK_FAILURE,
            SubscribeReturnCode::Refused(reason) => {
                assert_eq!(version, ProtocolVersion::V5, "3.x SUBACK has only 0x80");
                assert!(
                    reason.is_error() && reason != ReasonCode::UNSPECIFIED_ERROR,
                    "Refused holds a failure other than 0x80, which is Failure"
                );
                assert_reason(reason, ReasonCodeOf::SubAck);
                reason.0
            }
        });
    }
}

fn put_unsubscribe(unsubscribe: &Unsubscribe<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    assert!(
        !unsubscribe.filters.is_empty(),
        "an UNSUBSCRIBE carries at least one filter [MQTT-3.10.3-2]"
    );
    put_packet_id(unsubscribe.packet_id, out);
    put_properties(
        unsubscribe.properties,
        PropertyScope::Unsubscribe,
        version,
        out,
    );
    for filter in &unsubscribe.filters {
        debug_assert!(super::topic::is_valid_topic_filter(filter));
        put_string(filter, out);
    }
}

fn put_unsuback(unsuback: &UnsubAck<'_>, version: ProtocolVersion, out: &mut Vec<u8>) {
    put_packet_id(unsuback.packet_id, out);
    put_properties(unsuback.properties, PropertyScope::UnsubAck, version, out);
    match version {
        ProtocolVersion::V5 => {
            for &reason in &unsuback.reasons {
                assert_reason(reason, ReasonCodeOf::UnsubAck);
                out.push(reason.0);
            }
        }
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            assert!(unsuback.reasons.is_empty(), "a 3.x UNSUBACK has no reasons");
        }
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
