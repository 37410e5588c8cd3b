//! The MQTT packet model: borrowed views into a receive buffer, one variant per control packet
//! type in the spec's numeric order (MQTT 3.1.1 §2.2.1).
//!
//! Invariants live in the types: a packet identifier is never zero ([MQTT-2.3.1-1]), a QoS 0
//! publish carries no identifier and a QoS 1/2 publish always does ([MQTT-2.3.1-5]).

use std::num::NonZeroU16;

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
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ConnectReturnCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    pub dup: bool,
    pub retain: bool,
    pub delivery: Delivery,
    /// A topic name, validated by the decoder (no wildcards, valid UTF-8, no NUL).
    pub topic: &'a str,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    pub packet_id: PacketId,
    /// Topic filters with their requested QoS, in packet order; never empty ([MQTT-3.8.3-3]).
    /// Each filter is validated by the decoder.
    pub filters: Vec<(&'a str, QoS)>,
}

/// One SUBACK return code: the granted QoS, or failure (0x80).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeReturnCode {
    Granted(QoS),
    Failure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: PacketId,
    pub codes: Vec<SubscribeReturnCode>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    pub packet_id: PacketId,
    /// Never empty ([MQTT-3.10.3-2]); each filter validated by the decoder.
    pub filters: Vec<&'a str>,
}

/// An MQTT control packet, in the order of the packet type numbers 1..=14.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    ConnAck(ConnAck),
    Publish(Publish<'a>),
    PubAck(PacketId),
    PubRec(PacketId),
    PubRel(PacketId),
    PubComp(PacketId),
    Subscribe(Subscribe<'a>),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe<'a>),
    UnsubAck(PacketId),
    PingReq,
    PingResp,
    Disconnect,
}
