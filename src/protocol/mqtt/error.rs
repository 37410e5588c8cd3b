//! Why a packet could not be decoded, and what the broker answers on the wire.
//!
//! One variant per spec statement the decoder enforces, in the order the statements appear in
//! the spec. Most malformed packets are answered by closing the network connection
//! ([MQTT-4.8.0-1]); only CONNECT-level errors get a CONNACK first. MQTT 5 answers every error
//! with a reason code instead; that mapping will be a second `const fn` next to
//! [`DecodeError::connack_code`], so each variant is listed once in each table.

use super::packet::ConnectReturnCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    // Fixed header (§2).
    /// Packet type 0 or 15, reserved in MQTT 3.1.1 §2.2.1.
    ReservedPacketType,
    /// Fixed-header flags other than the ones the packet type requires [MQTT-2.2.2-2].
    ReservedFlagsSet,
    /// The remaining length continues past its fourth byte (§2.2.3).
    MalformedRemainingLength,
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
    /// DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2] (MQTT 3.1.1 only).
    DupOnQoS0,

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
    /// Requested QoS 3, or reserved bits of the requested-QoS byte set [MQTT-3.8.3-4].
    InvalidSubscribeOptions,
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
            DecodeError::PacketTooLarge => "packet larger than the configured maximum",
            DecodeError::Truncated => "a field runs past the end of the packet",
            DecodeError::TrailingBytes => "bytes after the last field of the packet",
            DecodeError::InvalidUtf8 => "string is not valid UTF-8",
            DecodeError::NullCharacter => "string contains U+0000",
            DecodeError::ZeroPacketId => "packet identifier is zero",
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
            DecodeError::EmptyTopic => "empty topic name or filter",
            DecodeError::InvalidTopicName => "wildcard in a topic name",
            DecodeError::InvalidTopicFilter => "misplaced wildcard in a topic filter",
            DecodeError::TopicTooLong => "topic longer than the configured maximum",
            DecodeError::TooManyTopicLevels => "topic has more levels than the configured maximum",
            DecodeError::EmptySubscribe => "SUBSCRIBE without a topic filter",
            DecodeError::InvalidSubscribeOptions => "invalid requested QoS byte in SUBSCRIBE",
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
            | DecodeError::PacketTooLarge
            | DecodeError::Truncated
            | DecodeError::TrailingBytes
            | DecodeError::InvalidUtf8
            | DecodeError::NullCharacter
            | DecodeError::ZeroPacketId
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
            | DecodeError::EmptyTopic
            | DecodeError::InvalidTopicName
            | DecodeError::InvalidTopicFilter
            | DecodeError::TopicTooLong
            | DecodeError::TooManyTopicLevels
            | DecodeError::EmptySubscribe
            | DecodeError::InvalidSubscribeOptions
            | DecodeError::EmptyUnsubscribe
            | DecodeError::TooManyFilters => None,
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
    fn descriptions_are_not_empty() {
        assert!(!DecodeError::Truncated.description().is_empty());
        assert_eq!(
            DecodeError::DupOnQoS0.to_string(),
            DecodeError::DupOnQoS0.description()
        );
    }
}
