//! MQTT 5 reason codes (§2.4): one byte that says how an operation ended, carried by CONNACK,
//! the publish acknowledgements, SUBACK, UNSUBACK, DISCONNECT and AUTH.
//!
//! The constants follow the spec's numeric order. Several names share a value (0x00 is
//! Success, Normal disconnection and Granted QoS 0); which one applies depends on the packet.
//! Each packet accepts only some codes; [`ReasonCode::is_valid_for`] holds those tables.

/// A reason code byte. Any value can be held; the decoder only produces values the spec
/// defines for the packet that carried them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

/// The packets that carry reason codes, for [`ReasonCode::is_valid_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCodeOf {
    ConnAck,
    /// PUBACK and PUBREC share one table (§3.4.2.1, §3.5.2.1).
    PubAckOrPubRec,
    /// PUBREL and PUBCOMP share one table (§3.6.2.1, §3.7.2.1).
    PubRelOrPubComp,
    SubAck,
    UnsubAck,
    Disconnect,
    Auth,
}

impl ReasonCode {
    pub const SUCCESS: ReasonCode = ReasonCode(0x00);
    pub const NORMAL_DISCONNECTION: ReasonCode = ReasonCode(0x00);
    pub const GRANTED_QOS_0: ReasonCode = ReasonCode(0x00);
    pub const GRANTED_QOS_1: ReasonCode = ReasonCode(0x01);
    pub const GRANTED_QOS_2: ReasonCode = ReasonCode(0x02);
    pub const DISCONNECT_WITH_WILL_MESSAGE: ReasonCode = ReasonCode(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: ReasonCode = ReasonCode(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: ReasonCode = ReasonCode(0x11);
    pub const CONTINUE_AUTHENTICATION: ReasonCode = ReasonCode(0x18);
    pub const RE_AUTHENTICATE: ReasonCode = ReasonCode(0x19);
    pub const UNSPECIFIED_ERROR: ReasonCode = ReasonCode(0x80);
    pub const MALFORMED_PACKET: ReasonCode = ReasonCode(0x81);
    pub const PROTOCOL_ERROR: ReasonCode = ReasonCode(0x82);
    pub const IMPLEMENTATION_SPECIFIC_ERROR: ReasonCode = ReasonCode(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: ReasonCode = ReasonCode(0x84);
    pub const CLIENT_IDENTIFIER_NOT_VALID: ReasonCode = ReasonCode(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: ReasonCode = ReasonCode(0x86);
    pub const NOT_AUTHORIZED: ReasonCode = ReasonCode(0x87);
    pub const SERVER_UNAVAILABLE: ReasonCode = ReasonCode(0x88);
    pub const SERVER_BUSY: ReasonCode = ReasonCode(0x89);
    pub const BANNED: ReasonCode = ReasonCode(0x8A);
    pub const SERVER_SHUTTING_DOWN: ReasonCode = ReasonCode(0x8B);
    pub const BAD_AUTHENTICATION_METHOD: ReasonCode = ReasonCode(0x8C);
    pub const KEEP_ALIVE_TIMEOUT: ReasonCode = ReasonCode(0x8D);
    pub const SESSION_TAKEN_OVER: ReasonCode = ReasonCode(0x8E);
    pub const TOPIC_FILTER_INVALID: ReasonCode = ReasonCode(0x8F);
    pub const TOPIC_NAME_INVALID: ReasonCode = ReasonCode(0x90);
    pub const PACKET_IDENTIFIER_IN_USE: ReasonCode = ReasonCode(0x91);
    pub const PACKET_IDENTIFIER_NOT_FOUND: ReasonCode = ReasonCode(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: ReasonCode = ReasonCode(0x93);
    pub const TOPIC_ALIAS_INVALID: ReasonCode = ReasonCode(0x94);
    pub const PACKET_TOO_LARGE: ReasonCode = ReasonCode(0x95);
    pub const MESSAGE_RATE_TOO_HIGH: ReasonCode = ReasonCode(0x96);
    pub const QUOTA_EXCEEDED: ReasonCode = ReasonCode(0x97);
    pub const ADMINISTRATIVE_ACTION: ReasonCode = ReasonCode(0x98);
    pub const PAYLOAD_FORMAT_INVALID: ReasonCode = ReasonCode(0x99);
    pub const RETAIN_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9A);
    pub const QOS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9B);
    pub const USE_ANOTHER_SERVER: ReasonCode = ReasonCode(0x9C);
    pub const SERVER_MOVED: ReasonCode = ReasonCode(0x9D);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0x9E);
    pub const CONNECTION_RATE_EXCEEDED: ReasonCode = ReasonCode(0x9F);
    pub const MAXIMUM_CONNECT_TIME: ReasonCode = ReasonCode(0xA0);
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA1);
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: ReasonCode = ReasonCode(0xA2);

    /// Values of 0x80 or greater are failures (§2.4).
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// Whether the spec defines this code for `packet` (the tables of §3.2.2.2, §3.4.2.1,
    /// §3.5.2.1, §3.6.2.1, §3.7.2.1, §3.9.3, §3.11.3, §3.14.2.1, §3.15.2.1).
    pub const fn is_valid_for(self, packet: ReasonCodeOf) -> bool {
        match packet {
            ReasonCodeOf::ConnAck => matches!(
                self.0,
                0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
            ),
            ReasonCodeOf::PubAckOrPubRec => matches!(
                self.0,
                0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
            ),
            ReasonCodeOf::PubRelOrPubComp => matches!(self.0, 0x00 | 0x92),
            ReasonCodeOf::SubAck => matches!(
                self.0,
                0x00..=0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
            ),
            ReasonCodeOf::UnsubAck => {
                matches!(self.0, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91)
            }
            ReasonCodeOf::Disconnect => matches!(
                self.0,
                0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B | 0x8D..=0x90 | 0x93..=0xA2
            ),
            ReasonCodeOf::Auth => matches!(self.0, 0x00 | 0x18 | 0x19),
        }
    }

    /// The name the spec gives the code, for logs; for shared values the general one.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0x00 => "Success",
            0x01 => "Granted QoS 1",
            0x02 => "Granted QoS 2",
            0x04 => "Disconnect with Will Message",
            0x10 => "No matching subscribers",
            0x11 => "No subscription existed",
            0x18 => "Continue authentication",
            0x19 => "Re-authenticate",
            0x80 => "Unspecified error",
            0x81 => "Malformed Packet",
            0x82 => "Protocol Error",
            0x83 => "Implementation specific error",
            0x84 => "Unsupported Protocol Version",
            0x85 => "Client Identifier not valid",
            0x86 => "Bad User Name or Password",
            0x87 => "Not authorized",
            0x88 => "Server unavailable",
            0x89 => "Server busy",
            0x8A => "Banned",
            0x8B => "Server shutting down",
            0x8C => "Bad authentication method",
            0x8D => "Keep Alive timeout",
            0x8E => "Session taken over",
            0x8F => "Topic Filter invalid",
            0x90 => "Topic Name invalid",
            0x91 => "Packet Identifier in use",
            0x92 => "Packet Identifier not found",
            0x93 => "Receive Maximum exceeded",
            0x94 => "Topic Alias invalid",
            0x95 => "Packet too large",
            0x96 => "Message rate too high",
            0x97 => "Quota exceeded",
            0x98 => "Administrative action",
            0x99 => "Payload format invalid",
            0x9A => "Retain not supported",
            0x9B => "QoS not supported",
            0x9C => "Use another server",
            0x9D => "Server moved",
            0x9E => "Shared Subscriptions not supported",
            0x9F => "Connection rate exceeded",
            0xA0 => "Maximum connect time",
            0xA1 => "Subscription Identifiers not supported",
            0xA2 => "Wildcard Subscriptions not supported",
            _ => "undefined reason code",
        }
    }
}

impl std::fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReasonCode(0x{:02X} {})", self.0, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_hold_the_spec_values() {
        use ReasonCodeOf::*;
        assert!(ReasonCode::SUCCESS.is_valid_for(ConnAck));
        assert!(ReasonCode::BANNED.is_valid_for(ConnAck));
        assert!(!ReasonCode::SERVER_SHUTTING_DOWN.is_valid_for(ConnAck));
        assert!(ReasonCode::NO_MATCHING_SUBSCRIBERS.is_valid_for(PubAckOrPubRec));
        assert!(!ReasonCode::NO_SUBSCRIPTION_EXISTED.is_valid_for(PubAckOrPubRec));
        assert!(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.is_valid_for(PubRelOrPubComp));
        assert!(!ReasonCode::UNSPECIFIED_ERROR.is_valid_for(PubRelOrPubComp));
        assert!(ReasonCode::GRANTED_QOS_2.is_valid_for(SubAck));
        assert!(!ReasonCode(0x03).is_valid_for(SubAck));
        assert!(ReasonCode::NO_SUBSCRIPTION_EXISTED.is_valid_for(UnsubAck));
        assert!(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE.is_valid_for(Disconnect));
        assert!(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED.is_valid_for(Disconnect));
        assert!(!ReasonCode(0x8C).is_valid_for(Disconnect));
        assert!(ReasonCode::RE_AUTHENTICATE.is_valid_for(Auth));
        assert!(!ReasonCode::NOT_AUTHORIZED.is_valid_for(Auth));
    }

    #[test]
    fn every_named_code_has_a_name() {
        for byte in 0..=u8::MAX {
            let code = ReasonCode(byte);
            let defined = [
                ReasonCodeOf::ConnAck,
                ReasonCodeOf::PubAckOrPubRec,
                ReasonCodeOf::PubRelOrPubComp,
                ReasonCodeOf::SubAck,
                ReasonCodeOf::UnsubAck,
                ReasonCodeOf::Disconnect,
                ReasonCodeOf::Auth,
            ]
            .iter()
            .any(|&packet| code.is_valid_for(packet));
            assert_eq!(defined, code.name() != "undefined reason code", "{code:?}");
        }
        assert!(ReasonCode::UNSPECIFIED_ERROR.is_error());
        assert!(!ReasonCode::RE_AUTHENTICATE.is_error());
    }
}
