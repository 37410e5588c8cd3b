//! Why a packet could not be decoded, and what the broker answers on the wire.
//!
//! One variant per spec statement the decoder enforces, in the order the statements appear in
//! the spec. Most malformed packets are answered by closing the network connection
//! ([MQTT-4.8.0-1]); only CONNECT-level errors get a CONNACK first. MQTT 5 answers an error
//! with a reason code in CONNACK (before the connection is accepted) or DISCONNECT (after), then
//! closes (§4.13): [`DecodeError::reason_code`] is that table, [`DecodeError::connack_code`] the
//! 3.x one, and each variant is listed once in each.

use super::packet::ConnectReturnCode;
use super::reason::ReasonCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    // Fixed header (§2).
    /// Packet type 0, or 15 before MQTT 5 (MQTT 3.1.1 §2.2.1; 15 is AUTH in MQTT 5).
    ReservedPacketType,
    /// Fixed-header flags other than the ones the packet type requires [MQTT-2.2.2-2].
    ReservedFlagsSet,
    /// The remaining length continues past its fourth byte (§2.2.3).
    MalformedRemainingLength,
    /// A variable byte integer inside a packet (a property length, a subscription identifier)
    /// continues past its fourth byte (MQTT 5 §1.5.5).
    MalformedVariableByteInteger,
    /// The fixed header announces more than `packet_bytes_max`.
    PacketTooLarge,

    // Field encodings (§1.5, §2.3).
    /// A field runs past the end of the packet its remaining length announces.
    Truncated,
    /// Bytes left after the last field the packet type defines.
    TrailingBytes,
    /// A string is not well-formed UTF-8 [MQTT-1.5.3-1].
    InvalidUtf8,
    /// A string contains U+0000 [MQTT-1.5.3-2].
    NullCharacter,
    /// A packet identifier of zero [MQTT-2.3.1-1].
    ZeroPacketId,

    // Properties (MQTT 5 §2.2.2).
    /// An identifier the spec does not define, or not for this packet: "A Control Packet which
    /// contains an Identifier which is not valid for its packet type ... is a Malformed Packet"
    /// (§2.2.2.2).
    InvalidPropertyIdentifier,
    /// A property that may appear once appears again ("It is a Protocol Error to include ...
    /// more than once", in each property's section).
    DuplicateProperty,
    /// A 0/1 property (Payload Format Indicator, Request Problem / Response Information,
    /// Maximum QoS, Retain / Wildcard / Subscription Identifier / Shared Subscription
    /// Available) with another value (§3.1.2.11, §3.2.2.3).
    InvalidPropertyValue,
    /// A Subscription Identifier of 0 (§3.8.2.1.2).
    ZeroSubscriptionIdentifier,
    /// A Receive Maximum of 0 (§3.1.2.11.3, §3.2.2.3.3).
    ZeroReceiveMaximum,
    /// A Topic Alias of 0 [MQTT-3.3.2-8].
    ZeroTopicAlias,
    /// A Maximum Packet Size of 0 (§3.1.2.11.4, §3.2.2.3.6).
    ZeroMaximumPacketSize,
    /// Authentication Data without Authentication Method (§3.1.2.11.10, §3.15.2.2.3).
    AuthenticationDataWithoutMethod,
    /// A reason code the spec does not define for the packet that carries it (§2.4).
    InvalidReasonCode,

    // Connection order (§3.1, §4.8).
    /// The first packet on a connection is not CONNECT [MQTT-3.1.0-1].
    FirstPacketNotConnect,
    /// A second CONNECT on the same connection [MQTT-3.1.0-2].
    DuplicateConnect,
    /// A packet only the other side may send, e.g. CONNACK or PINGRESP from a client.
    UnexpectedPacket,

    // CONNECT (§3.1).
    /// The protocol name is neither `MQTT` nor `MQIsdp` [MQTT-3.1.2-1].
    InvalidProtocolName,
    /// The protocol level is not one this broker speaks [MQTT-3.1.2-2].
    UnsupportedProtocolVersion,
    /// The reserved CONNECT flag is set [MQTT-3.1.2-3].
    ReservedConnectFlag,
    /// Will QoS or will retain set without the will flag [MQTT-3.1.2-11], [MQTT-3.1.2-13],
    /// [MQTT-3.1.2-15].
    WillFlagsInconsistent,
    /// The password flag without the user name flag [MQTT-3.1.2-22].
    PasswordWithoutUsername,
    /// A client identifier longer than `client_id_bytes_max` ([MQTT-3.1.3-5] lets the server
    /// choose).
    ClientIdTooLong,

    // CONNACK (§3.2), when decoding what a server sends.
    /// Reserved bits of the acknowledge flags are set [MQTT-3.2.2-1], or session present is
    /// set on a refusal [MQTT-3.2.2-4].
    ReservedConnAckFlags,
    /// A CONNACK or SUBACK return code the spec does not define.
    InvalidReturnCode,

    // PUBLISH (§3.3).
    /// QoS bits `11`, or a will QoS of 3 [MQTT-3.3.1-4], [MQTT-3.1.2-14].
    InvalidQoS,
    /// DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2] (not checked for 3.1).
    DupOnQoS0,
    /// A Subscription Identifier in a PUBLISH from a client [MQTT-3.3.4-6].
    SubscriptionIdentifierFromClient,

    // Topic names and filters (§4.7).
    /// A topic name or filter of zero bytes [MQTT-4.7.3-1].
    EmptyTopic,
    /// A topic name containing `+` or `#` [MQTT-3.3.2-2].
    InvalidTopicName,
    /// A filter with `#` not alone in the last level, or `+` not alone in its level
    /// [MQTT-4.7.1-2], [MQTT-4.7.1-3].
    InvalidTopicFilter,
    /// A topic name or filter longer than `topic_bytes_max`.
    TopicTooLong,
    /// A topic name or filter with more than `topic_levels_max` levels.
    TooManyTopicLevels,

    // SUBSCRIBE and UNSUBSCRIBE (§3.8, §3.10).
    /// A SUBSCRIBE without any filter [MQTT-3.8.3-3].
    EmptySubscribe,
    /// Requested QoS 3, or reserved bits of the requested-QoS byte set [MQTT-3.8.3-4] (3.x);
    /// in MQTT 5 a Maximum QoS of 3 or a Retain Handling of 3 (§3.8.3.1).
    InvalidSubscribeOptions,
    /// Reserved bits 6 and 7 of MQTT 5 subscription options set [MQTT-3.8.3-5].
    ReservedSubscribeOptionBits,
    /// No Local on a shared subscription [MQTT-3.8.3-4] (MQTT 5).
    NoLocalOnSharedSubscription,
    /// An UNSUBSCRIBE without any filter [MQTT-3.10.3-2].
    EmptyUnsubscribe,
    /// A SUBSCRIBE or UNSUBSCRIBE with more filters than `filters_per_packet_max`.
    TooManyFilters,
}

impl DecodeError {
    /// The reason in words, for logs.
    pub const fn description(self) -> &'static str {
        match self {
            DecodeError::ReservedPacketType => "reserved packet type",
            DecodeError::ReservedFlagsSet => "fixed-header flags do not match the packet type",
            DecodeError::MalformedRemainingLength => "remaining length longer than 4 bytes",
            DecodeError::MalformedVariableByteInteger => {
                "variable byte integer longer than 4 bytes"
            }
            DecodeError::PacketTooLarge => "packet larger than the configured maximum",
            DecodeError::Truncated => "a field runs past the end of the packet",
            DecodeError::TrailingBytes => "bytes after the last field of the packet",
            DecodeError::InvalidUtf8 => "string is not valid UTF-8",
            DecodeError::NullCharacter => "string contains U+0000",
            DecodeError::ZeroPacketId => "packet identifier is zero",
            DecodeError::InvalidPropertyIdentifier => "property not defined for this packet",
            DecodeError::DuplicateProperty => "property that may appear once appears again",
            DecodeError::InvalidPropertyValue => "property value other than 0 or 1",
            DecodeError::ZeroSubscriptionIdentifier => "subscription identifier is zero",
            DecodeError::ZeroReceiveMaximum => "receive maximum is zero",
            DecodeError::ZeroTopicAlias => "topic alias is zero",
            DecodeError::ZeroMaximumPacketSize => "maximum packet size is zero",
            DecodeError::AuthenticationDataWithoutMethod => {
                "authentication data without authentication method"
            }
            DecodeError::InvalidReasonCode => "reason code not defined for this packet",
            DecodeError::FirstPacketNotConnect => "first packet is not CONNECT",
            DecodeError::DuplicateConnect => "second CONNECT on one connection",
            DecodeError::UnexpectedPacket => "packet type not allowed in this direction",
            DecodeError::InvalidProtocolName => "protocol name is not MQTT or MQIsdp",
            DecodeError::UnsupportedProtocolVersion => "unsupported protocol level",
            DecodeError::ReservedConnectFlag => "reserved CONNECT flag is set",
            DecodeError::WillFlagsInconsistent => "will QoS or retain without the will flag",
            DecodeError::PasswordWithoutUsername => "password flag without user name flag",
            DecodeError::ClientIdTooLong => "client identifier longer than the configured maximum",
            DecodeError::ReservedConnAckFlags => "invalid CONNACK acknowledge flags",
            DecodeError::InvalidReturnCode => "undefined return code",
            DecodeError::InvalidQoS => "QoS 3 is not a QoS level",
            DecodeError::DupOnQoS0 => "DUP flag set on a QoS 0 PUBLISH",
            DecodeError::SubscriptionIdentifierFromClient => {
                "subscription identifier in a PUBLISH from a client"
            }
            DecodeError::EmptyTopic => "empty topic name or filter",
            DecodeError::InvalidTopicName => "wildcard in a topic name",
            DecodeError::InvalidTopicFilter => "misplaced wildcard in a topic filter",
            DecodeError::TopicTooLong => "topic longer than the configured maximum",
            DecodeError::TooManyTopicLevels => "topic has more levels than the configured maximum",
            DecodeError::EmptySubscribe => "SUBSCRIBE without a topic filter",
            DecodeError::InvalidSubscribeOptions => "invalid requested QoS byte in SUBSCRIBE",
            DecodeError::ReservedSubscribeOptionBits => "reserved subscription option bits set",
            DecodeError::NoLocalOnSharedSubscription => "no local on a shared subscription",
            DecodeError::EmptyUnsubscribe => "UNSUBSCRIBE without a topic filter",
            DecodeError::TooManyFilters => "more filters in one packet than the configured maximum",
        }
    }

    /// The CONNACK return code to send before closing, when the spec asks for one.
    ///
    /// Only errors in a CONNECT that was otherwise readable have one; for everything else the
    /// server just closes the connection ([MQTT-4.8.0-1]). The CONNACK uses the 3.1.1 layout,
    /// which every client level understands for a refusal ([MQTT-3.1.2-2]).
    pub const fn connack_code(self) -> Option<ConnectReturnCode> {
        match self {
            DecodeError::UnsupportedProtocolVersion => {
                Some(ConnectReturnCode::UnacceptableProtocolVersion)
            }
            DecodeError::ClientIdTooLong => Some(ConnectReturnCode::IdentifierRejected),
            DecodeError::ReservedPacketType
            | DecodeError::ReservedFlagsSet
            | DecodeError::MalformedRemainingLength
            | DecodeError::MalformedVariableByteInteger
            | DecodeError::PacketTooLarge
            | DecodeError::Truncated
            | DecodeError::TrailingBytes
            | DecodeError::InvalidUtf8
            | DecodeError::NullCharacter
            | DecodeError::ZeroPacketId
            | DecodeError::InvalidPropertyIdentifier
            | DecodeError::DuplicateProperty
            | DecodeError::InvalidPropertyValue
            | DecodeError::ZeroSubscriptionIdentifier
            | DecodeError::ZeroReceiveMaximum
            | DecodeError::ZeroTopicAlias
            | DecodeError::ZeroMaximumPacketSize
            | DecodeError::AuthenticationDataWithoutMethod
            | DecodeError::InvalidReasonCode
            | DecodeError::FirstPacketNotConnect
            | DecodeError::DuplicateConnect
            | DecodeError::UnexpectedPacket
            | DecodeError::InvalidProtocolName
            | DecodeError::ReservedConnectFlag
            | DecodeError::WillFlagsInconsistent
            | DecodeError::PasswordWithoutUsername
            | DecodeError::ReservedConnAckFlags
            | DecodeError::InvalidReturnCode
            | DecodeError::InvalidQoS
            | DecodeError::DupOnQoS0
            | DecodeError::SubscriptionIdentifierFromClient
            | DecodeError::EmptyTopic
            | DecodeError::InvalidTopicName
            | DecodeError::InvalidTopicFilter
            | DecodeError::TopicTooLong
            | DecodeError::TooManyTopicLevels
            | DecodeError::EmptySubscribe
            | DecodeError::InvalidSubscribeOptions
            | DecodeError::ReservedSubscribeOptionBits
            | DecodeError::NoLocalOnSharedSubscription
            | DecodeError::EmptyUnsubscribe
            | DecodeError::TooManyFilters => None,
        }
    }

    /// The MQTT 5 reason code of CONNACK (an error in CONNECT) or DISCONNECT (later) (§4.13).
    ///
    /// Malformed Packet (0x81) where the spec says the bytes cannot be parsed, Protocol Error
    /// (0x82) where they parse but break a rule, and a specific code where the spec names one.
    /// Limits this server chooses (topic, filter counts) are Implementation specific (0x83).
    pub const fn reason_code(self) -> ReasonCode {
        match self {
            DecodeError::ReservedPacketType
            | DecodeError::ReservedFlagsSet
            | DecodeError::MalformedRemainingLength
            | DecodeError::MalformedVariableByteInteger
            | DecodeError::Truncated
            | DecodeError::TrailingBytes
            | DecodeError::InvalidUtf8
            | DecodeError::NullCharacter
            | DecodeError::ZeroPacketId
            | DecodeError::InvalidPropertyIdentifier
            | DecodeError::InvalidReasonCode
            | DecodeError::ReservedConnectFlag
            | DecodeError::WillFlagsInconsistent
            | DecodeError::PasswordWithoutUsername
            | DecodeError::ReservedConnAckFlags
            | DecodeError::InvalidReturnCode
            | DecodeError::InvalidQoS
            | DecodeError::DupOnQoS0
            | DecodeError::ReservedSubscribeOptionBits => ReasonCode::MALFORMED_PACKET,
            DecodeError::DuplicateProperty
            | DecodeError::InvalidPropertyValue
            | DecodeError::ZeroSubscriptionIdentifier
            | DecodeError::ZeroReceiveMaximum
            | DecodeError::ZeroMaximumPacketSize
            | DecodeError::AuthenticationDataWithoutMethod
            | DecodeError::FirstPacketNotConnect
            | DecodeError::DuplicateConnect
            | DecodeError::UnexpectedPacket
            | DecodeError::SubscriptionIdentifierFromClient
            | DecodeError::EmptyTopic
            | DecodeError::EmptySubscribe
            | DecodeError::InvalidSubscribeOptions
            | DecodeError::NoLocalOnSharedSubscription
            | DecodeError::EmptyUnsubscribe => ReasonCode::PROTOCOL_ERROR,
            DecodeError::TopicTooLong
            | DecodeError::TooManyTopicLevels
            | DecodeError::TooManyFilters => ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
            // [MQTT-3.1.2-1]: a wrong protocol name MAY get 0x84 as well.
            DecodeError::InvalidProtocolName | DecodeError::UnsupportedProtocolVersion => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::ClientIdTooLong => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            DecodeError::InvalidTopicFilter => ReasonCode::TOPIC_FILTER_INVALID,
            DecodeError::InvalidTopicName => ReasonCode::TOPIC_NAME_INVALID,
            DecodeError::ZeroTopicAlias => ReasonCode::TOPIC_ALIAS_INVALID,
            DecodeError::PacketTooLarge => ReasonCode::PACKET_TOO_LARGE,
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connect_level_errors_get_a_connack() {
        assert_eq!(
            DecodeError::UnsupportedProtocolVersion.connack_code(),
            Some(ConnectReturnCode::UnacceptableProtocolVersion)
        );
        assert_eq!(
            DecodeError::ClientIdTooLong.connack_code(),
            Some(ConnectReturnCode::IdentifierRejected)
        );
        assert_eq!(DecodeError::InvalidProtocolName.connack_code(), None);
        assert_eq!(DecodeError::PacketTooLarge.connack_code(), None);
    }

    #[test]
    fn reason_codes_follow_the_spec() {
        use DecodeError::*;
        for (error, code) in [
            (Truncated, 0x81),
            (InvalidPropertyIdentifier, 0x81),
            (ReservedSubscribeOptionBits, 0x81),
            (MalformedVariableByteInteger, 0x81),
            (DuplicateProperty, 0x82),
            (ZeroReceiveMaximum, 0x82),
            (ZeroMaximumPacketSize, 0x82),
            (ZeroSubscriptionIdentifier, 0x82),
            (InvalidPropertyValue, 0x82),
            (SubscriptionIdentifierFromClient, 0x82),
            (DuplicateConnect, 0x82),
            (TooManyFilters, 0x83),
            (UnsupportedProtocolVersion, 0x84),
            (ClientIdTooLong, 0x85),
            (InvalidTopicFilter, 0x8F),
            (InvalidTopicName, 0x90),
            (ZeroTopicAlias, 0x94),
            (PacketTooLarge, 0x95),
        ] {
            assert_eq!(error.reason_code(), ReasonCode(code), "{error:?}");
            assert!(error.reason_code().is_error());
        }
    }

    #[test]
    fn descriptions_are_not_empty() {
        assert!(!DecodeError::Truncated.description().is_empty());
        assert_eq!(
            DecodeError::DupOnQoS0.to_string(),
            DecodeError::DupOnQoS0.description()
        );
    }
}
