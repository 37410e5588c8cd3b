//! The MQTT packet model: borrowed views into a receive buffer, one variant per control packet
//! type in the spec's numeric order (MQTT 3.1.1 §2.2.1, MQTT 5.0 §2.1.2).
//!
//! One model serves every protocol level. Fields that exist only in MQTT 5 (properties, reason
//! codes, subscription options beyond the QoS) hold their "absent" value at 3.1 / 3.1.1:
//! [`Properties::EMPTY`], [`ReasonCode::SUCCESS`], [`SubscriptionOptions::new`]. The 3.x
//! encoder asserts that they do, so a value that cannot be sent is never silently dropped.
//!
//! Invariants live in the types: a packet identifier is never zero ([MQTT-2.3.1-1]), a QoS 0
//! publish carries no identifier and a QoS 1/2 publish always does ([MQTT-2.3.1-5]).

use std::num::NonZeroU16;

use super::properties::Properties;
use super::reason::ReasonCode;

/// The protocol level byte of CONNECT, which decides how every later packet is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    pub const fn level(self) -> u8 {
        match self {
            ProtocolVersion::V31 => 3,
            ProtocolVersion::V311 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    pub const fn protocol_name(self) -> &'static [u8] {
        match self {
            ProtocolVersion::V31 => b"MQIsdp",
            ProtocolVersion::V311 | ProtocolVersion::V5 => b"MQTT",
        }
    }
}

/// A packet identifier: non-zero by construction ([MQTT-2.3.1-1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(pub NonZeroU16);

impl PacketId {
    pub fn new(value: u16) -> Option<PacketId> {
        NonZeroU16::new(value).map(PacketId)
    }

    pub const fn get(self) -> u16 {
        self.0.get()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub const fn from_bits(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    pub const fn bits(self) -> u8 {
        self as u8
    }
}

/// How a PUBLISH is delivered: the QoS together with the identifier it requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    AtMostOnce,
    AtLeastOnce(PacketId),
    ExactlyOnce(PacketId),
}

impl Delivery {
    pub const fn qos(self) -> QoS {
        match self {
            Delivery::AtMostOnce => QoS::AtMostOnce,
            Delivery::AtLeastOnce(_) => QoS::AtLeastOnce,
            Delivery::ExactlyOnce(_) => QoS::ExactlyOnce,
        }
    }

    pub const fn packet_id(self) -> Option<PacketId> {
        match self {
            Delivery::AtMostOnce => None,
            Delivery::AtLeastOnce(id) | Delivery::ExactlyOnce(id) => Some(id),
        }
    }

    /// The delivery for `qos` using `id` when the QoS needs one.
    pub const fn with_qos(qos: QoS, id: PacketId) -> Delivery {
        match qos {
            QoS::AtMostOnce => Delivery::AtMostOnce,
            QoS::AtLeastOnce => Delivery::AtLeastOnce(id),
            QoS::ExactlyOnce => Delivery::ExactlyOnce(id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// A topic name, validated by the decoder (no wildcards, valid UTF-8, no NUL).
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (MQTT 5 §3.1.3.2); empty before MQTT 5.
    pub properties: Properties<'a>,
}

/// The CONNECT user property by which an MQTT 5 client says it is another broker's bridge
/// (`Connect::bridge` for 3.1 and 3.1.1): fanfare's bridges send it, with `try_private`.
pub const BRIDGE_USER_PROPERTY: &str = "fanfare-bridge";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    pub version: ProtocolVersion,
    /// "Clean session" in 3.1/3.1.1, "clean start" in 5.0.
    pub clean_session: bool,
    pub keep_alive_s: u16,
    /// May be empty; whether that is allowed is the broker's decision ([MQTT-3.1.3-6..8]).
    pub client_id: &'a str,
    pub will: Option<Will<'a>>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    /// CONNECT properties (MQTT 5 §3.1.2.11); empty before MQTT 5.
    pub properties: Properties<'a>,
    /// Bit 7 of the protocol level: the client is another broker's bridge. Not in the
    /// specification: Mosquitto's `try_private` sets it (levels 0x83 and 0x84), and brokers
    /// that know it treat the connection as a bridge (`docs/bridges.md`, Loops).
    pub bridge: bool,
}

/// CONNACK return codes of MQTT 3.1/3.1.1 (§3.2.2.3), in the spec's numeric order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUsernameOrPassword = 4,
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The MQTT 5 reason code with the same meaning (§3.2.2.2 lists them side by side).
    pub const fn reason_code(self) -> ReasonCode {
        match self {
            ConnectReturnCode::Accepted => ReasonCode::SUCCESS,
            ConnectReturnCode::UnacceptableProtocolVersion => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            ConnectReturnCode::IdentifierRejected => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            ConnectReturnCode::ServerUnavailable => ReasonCode::SERVER_UNAVAILABLE,
            ConnectReturnCode::BadUsernameOrPassword => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            ConnectReturnCode::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
        }
    }

    /// The 3.x return code for an MQTT 5 reason code, if 3.x has one.
    pub const fn from_reason_code(reason: ReasonCode) -> Option<ConnectReturnCode> {
        match reason {
            ReasonCode::SUCCESS => Some(ConnectReturnCode::Accepted),
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => {
                Some(ConnectReturnCode::UnacceptableProtocolVersion)
            }
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => Some(ConnectReturnCode::IdentifierRejected),
            ReasonCode::SERVER_UNAVAILABLE => Some(ConnectReturnCode::ServerUnavailable),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD => Some(ConnectReturnCode::BadUsernameOrPassword),
            ReasonCode::NOT_AUTHORIZED => Some(ConnectReturnCode::NotAuthorized),
            _ => None,
        }
    }
}

/// CONNACK. At 3.1 / 3.1.1 the reason must be one a [`ConnectReturnCode`] can carry (see
/// [`ConnectReturnCode::reason_code`]) and the properties empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck<'a> {
    pub session_present: bool,
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

impl ConnAck<'static> {
    /// A CONNACK with a 3.x return code and no properties.
    pub const fn new(session_present: bool, code: ConnectReturnCode) -> ConnAck<'static> {
        ConnAck {
            session_present,
            reason: code.reason_code(),
            properties: Properties::EMPTY,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    pub dup: bool,
    pub retain: bool,
    pub delivery: Delivery,
    /// A topic name, validated by the decoder (no wildcards, valid UTF-8, no NUL).
    /// A topic name, validated by the decoder. Empty only in MQTT 5 with a Topic Alias
    /// property, whose mapping the receiver resolves (§3.3.2.3.4).
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// PUBLISH properties (MQTT 5 §3.3.2.3); empty before MQTT 5.
    pub properties: Properties<'a>,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP. MQTT 5 adds a reason code and properties, both left out
/// on the wire when they are Success and empty [MQTT-3.4.2-1]; 3.x has only the identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'a> {
    pub packet_id: PacketId,
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

impl Ack<'static> {
    /// A successful acknowledgement without properties: the only kind 3.x has.
    pub const fn new(packet_id: PacketId) -> Ack<'static> {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::EMPTY,
        }
    }
}

/// Whether retained messages are sent when a subscription is made (MQTT 5 §3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe (the 3.x behaviour).
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not already exist.
    SendAtNewSubscribe = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// The options byte after each filter of a SUBSCRIBE. 3.x carries only the QoS; the other
/// fields must then hold the values of [`SubscriptionOptions::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS the server may send with.
    pub qos: QoS,
    /// Do not send the client's own publishes back to it [MQTT-3.8.3-3].
    pub no_local: bool,
    /// Keep the RETAIN flag as published when forwarding (§3.8.3.1).
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// The options of a 3.x subscription: only the QoS.
    pub const fn new(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    pub packet_id: PacketId,
    /// Topic filters with their options, in packet order; never empty ([MQTT-3.8.3-3]).
    /// Each filter is validated by the decoder.
    pub filters: Vec<(&'a str, SubscriptionOptions)>,
    /// SUBSCRIBE properties (MQTT 5 §3.8.2.1); empty before MQTT 5.
    pub properties: Properties<'a>,
}

/// One SUBACK return code: the granted QoS, or failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeReturnCode {
    Granted(QoS),
    /// 0x80: "Failure" in 3.1.1, "Unspecified error" in MQTT 5.
    Failure,
    /// An MQTT 5 failure reason other than 0x80 (§3.9.3), e.g. 0x87 Not authorized.
    Refused(ReasonCode),
}

impl SubscribeReturnCode {
    pub const fn reason_code(self) -> ReasonCode {
        match self {
            SubscribeReturnCode::Granted(qos) => ReasonCode(qos.bits()),
            SubscribeReturnCode::Failure => ReasonCode::UNSPECIFIED_ERROR,
            SubscribeReturnCode::Refused(reason) => reason,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck<'a> {
    pub packet_id: PacketId,
    pub codes: Vec<SubscribeReturnCode>,
    /// SUBACK properties (MQTT 5 §3.9.2.1); empty before MQTT 5.
    pub properties: Properties<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    pub packet_id: PacketId,
    /// Never empty ([MQTT-3.10.3-2]); each filter validated by the decoder.
    pub filters: Vec<&'a str>,
    /// UNSUBSCRIBE properties (MQTT 5 §3.10.2.1); empty before MQTT 5.
    pub properties: Properties<'a>,
}

/// UNSUBACK. 3.x has only the identifier: `reasons` is then empty. MQTT 5 has one reason per
/// filter of the UNSUBSCRIBE, in order [MQTT-3.11.3-1].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck<'a> {
    pub packet_id: PacketId,
    pub reasons: Vec<ReasonCode>,
    pub properties: Properties<'a>,
}

impl UnsubAck<'static> {
    /// The 3.x UNSUBACK.
    pub const fn new(packet_id: PacketId) -> UnsubAck<'static> {
        UnsubAck {
            packet_id,
            reasons: Vec::new(),
            properties: Properties::EMPTY,
        }
    }
}

/// DISCONNECT, sent by either side in MQTT 5 and by the client only in 3.x. Both fields are
/// left out on the wire when they are Normal disconnection and empty (§3.14.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect<'a> {
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

impl Disconnect<'static> {
    /// Normal disconnection without properties: the only kind 3.x has.
    pub const NORMAL: Disconnect<'static> = Disconnect {
        reason: ReasonCode::NORMAL_DISCONNECTION,
        properties: Properties::EMPTY,
    };
}

/// AUTH (MQTT 5 only, §3.15): a step of an extended authentication exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth<'a> {
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

/// An MQTT control packet, in the order of the packet type numbers 1..=15 (AUTH, 15, exists
/// only in MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    ConnAck(ConnAck<'a>),
    Publish(Publish<'a>),
    PubAck(Ack<'a>),
    PubRec(Ack<'a>),
    PubRel(Ack<'a>),
    PubComp(Ack<'a>),
    Subscribe(Subscribe<'a>),
    SubAck(SubAck<'a>),
    Unsubscribe(Unsubscribe<'a>),
    UnsubAck(UnsubAck<'a>),
    PingReq,
    PingResp,
    Disconnect(Disconnect<'a>),
    Auth(Auth<'a>),
}
