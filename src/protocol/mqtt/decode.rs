//! MQTT 3.1 / 3.1.1 / 5.0 decoder: wire bytes to borrowed packet views. The MQTT 5 layouts of
//! packets after CONNECT live in `decode_v5`.
//!
//! Incomplete input is not an error: `Ok(None)` asks for more bytes and consumes nothing. Every
//! size the peer controls is checked before it costs memory: the packet size on the fixed header,
//! before the body has arrived; topic, client identifier and filter counts against
//! [`DecodeLimits`]. Nothing a peer sends can make the decoder panic.
//!
//! The same code reads both directions: [`decode`] is the server side (what a client may send),
//! [`decode_from_server`] the client side (tests and load generators).

use super::encode::{FLAGS_QOS1, SUBACK_FAILURE, connect_flag, packet_type, publish_flag};
use super::error::DecodeError;
use super::packet::{
    Ack, ConnAck, Connect, ConnectReturnCode, Delivery, Disconnect, Packet, PacketId,
    ProtocolVersion, Publish, QoS, SubAck, Subscribe, SubscribeReturnCode, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will,
};
use super::properties::{Properties, PropertyScope};
use super::topic::{validate_topic_filter, validate_topic_name};

/// The bounds the decoder enforces on what the peer controls (taken from the broker's
/// configured limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest packet, fixed header included.
    pub packet_bytes_max: u32,
    /// Longest topic name or filter.
    pub topic_bytes_max: u16,
    /// Most levels in a topic name or filter.
    pub topic_levels_max: u16,
    /// Longest client identifier.
    pub client_id_bytes_max: u16,
    /// Most filters in one SUBSCRIBE or UNSUBSCRIBE. A filter costs 4 bytes on the wire but a
    /// slot of 24 bytes in the decoded packet, so this limits allocation the peer controls
    /// beyond `packet_bytes_max`.
    pub filters_per_packet_max: u32,
}

/// Decodes one packet a client sent to this server.
///
/// `version` is None before CONNECT (then only CONNECT is acceptable; anything else is an
/// error). `Ok(None)` = need more bytes, consumes nothing. `Ok(Some((packet, consumed)))`.
/// The packet size limit is checked on the fixed header before the body is available.
///
/// A CONNECT naming an unsupported protocol level is [`DecodeError::UnsupportedProtocolVersion`],
/// which the server answers with CONNACK 0x01. MQTT 5 is decoded; whether it is served is the
/// broker's decision.
pub fn decode<'a>(
    buf: &'a [u8],
    version: Option<ProtocolVersion>,
    limits: &DecodeLimits,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    decode_packet(buf, version, Direction::ClientToServer, limits)
}

/// Decodes one packet a server sent to a client speaking `version`.
pub fn decode_from_server<'a>(
    buf: &'a [u8],
    version: ProtocolVersion,
    limits: &DecodeLimits,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    decode_packet(buf, Some(version), Direction::ServerToClient, limits)
}

/// Total length of the packet starting at `buf[0]`, once its fixed header is complete.
///
/// `Ok(None)` while the fixed header is incomplete. Errors if the header is malformed or
/// announces more than `packet_bytes_max`, so a caller can size a spill buffer from the answer
/// without trusting the peer. The packet type is not checked here; [`decode`] does that.
pub fn packet_len(buf: &[u8], limits: &DecodeLimits) -> Result<Option<usize>, DecodeError> {
    Ok(fixed_header(buf, limits)?.map(|header| header.packet_len()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    ClientToServer,
    ServerToClient,
}

#[derive(Debug, Clone, Copy)]
struct FixedHeader {
    /// Bytes taken by the type byte and the remaining length.
    header_len: usize,
    remaining_len: usize,
}

impl FixedHeader {
    fn packet_len(self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Reads the type byte and remaining length (§2.2.3), enforcing `packet_bytes_max` as soon as
/// the bytes seen prove the packet is too large.
fn fixed_header(buf: &[u8], limits: &DecodeLimits) -> Result<Option<FixedHeader>, DecodeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let packet_bytes_max = limits.packet_bytes_max as usize;
    let mut remaining_len = 0usize;
    // At most four length bytes: 268 435 455 is the largest remaining length.
    for index in 0..4 {
        let Some(&byte) = buf.get(1 + index) else {
            return Ok(None);
        };
        remaining_len += usize::from(byte & 0x7F) << (7 * index);
        let header_len = 2 + index;
        // What is known so far is a lower bound on the packet's size.
        if header_len + remaining_len > packet_bytes_max {
            return Err(DecodeError::PacketTooLarge);
        }
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                header_len,
                remaining_len,
            }));
        }
    }
    Err(DecodeError::MalformedRemainingLength)
}

fn decode_packet<'a>(
    buf: &'a [u8],
    version: Option<ProtocolVersion>,
    direction: Direction,
    limits: &DecodeLimits,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = first >> 4;
    let flags = first & 0x0F;
    // Judge the type byte before waiting for the rest: a peer speaking something else (an HTTP
    // request on the MQTT port) is turned away after one byte.
    check_type(kind, flags, version, direction)?;
    let Some(header) = fixed_header(buf, limits)? else {
        return Ok(None);
    };
    let Some(bytes) = buf.get(header.header_len..header.packet_len()) else {
        return Ok(None);
    };
    let body = Reader::new(bytes);
    let packet = match version {
        None => Packet::Connect(connect(body, limits)?),
        Some(version) => packet_body(kind, flags, version, direction, body, limits)?,
    };
    Ok(Some((packet, header.packet_len())))
}

/// Checks the packet type and its fixed-header flags against the connection state.
fn check_type(
    kind: u8,
    flags: u8,
    version: Option<ProtocolVersion>,
    direction: Direction,
) -> Result<(), DecodeError> {
    use packet_type::*;
    let version = match version {
        // [MQTT-3.1.0-1]
        None if kind == CONNECT => return check_flags_zero(flags),
        None if kind == 0 || kind == 15 => return Err(DecodeError::ReservedPacketType),
        None => return Err(DecodeError::FirstPacketNotConnect),
        Some(version) => version,
    };
    let is_v5 = version == ProtocolVersion::V5;
    let allowed = match (kind, direction) {
        // AUTH, in either direction, is new in MQTT 5 (§3.15).
        (AUTH, _) if is_v5 => true,
        (0 | AUTH, _) => return Err(DecodeError::ReservedPacketType),
        // A server sends DISCONNECT too in MQTT 5 (§3.14).
        (DISCONNECT, Direction::ServerToClient) => is_v5,
        // [MQTT-3.1.0-2]
        (CONNECT, Direction::ClientToServer) => return Err(DecodeError::DuplicateConnect),
        (PUBLISH | PUBACK | PUBREC | PUBREL | PUBCOMP, _) => true,
        (SUBSCRIBE | UNSUBSCRIBE | PINGREQ | DISCONNECT, Direction::ClientToServer) => true,
        (CONNACK | SUBACK | UNSUBACK | PINGRESP, Direction::ServerToClient) => true,
        _ => false,
    };
    if !allowed {
        return Err(DecodeError::UnexpectedPacket);
    }
    match kind {
        PUBLISH => check_publish_flags(flags, version),
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => match version {
            // 3.1 sends these at QoS 1 and sets DUP when it retries them.
            ProtocolVersion::V31 if flags & !publish_flag::DUP == FLAGS_QOS1 => Ok(()),
            _ if flags == FLAGS_QOS1 => Ok(()),
            // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]
            _ => Err(DecodeError::ReservedFlagsSet),
        },
        _ => check_flags_zero(flags),
    }
}

/// [MQTT-2.2.2-2]
fn check_flags_zero(flags: u8) -> Result<(), DecodeError> {
    if flags == 0 {
        Ok(())
    } else {
        Err(DecodeError::ReservedFlagsSet)
    }
}

fn check_publish_flags(flags: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    let qos = QoS::from_bits((flags & publish_flag::QOS_MASK) >> publish_flag::QOS_SHIFT)
        .ok_or(DecodeError::InvalidQoS)?; // [MQTT-3.3.1-4]
    let dup = flags & publish_flag::DUP != 0;
    // [MQTT-3.3.1-2] is new in 3.1.1; 3.1 clients may still set it.
    if dup && qos == QoS::AtMostOnce && version != ProtocolVersion::V31 {
        return Err(DecodeError::DupOnQoS0);
    }
    Ok(())
}

fn packet_body<'a>(
    kind: u8,
    flags: u8,
    version: ProtocolVersion,
    direction: Direction,
    mut body: Reader<'a>,
    limits: &DecodeLimits,
) -> Result<Packet<'a>, DecodeError> {
    use packet_type::*;
    if version == ProtocolVersion::V5 {
        return super::decode_v5::packet_body(kind, flags, direction, body, limits);
    }
    let packet = match kind {
        CONNACK => Packet::ConnAck(connack(&mut body, version)?),
        PUBLISH => {
            let publish = publish(flags, body, limits)?;
            // The payload is the rest of the packet: nothing can trail it.
            return Ok(Packet::Publish(publish));
        }
        PUBACK => Packet::PubAck(Ack::new(body.packet_id()?)),
        PUBREC => Packet::PubRec(Ack::new(body.packet_id()?)),
        PUBREL => Packet::PubRel(Ack::new(body.packet_id()?)),
        PUBCOMP => Packet::PubComp(Ack::new(body.packet_id()?)),
        SUBSCRIBE => Packet::Subscribe(subscribe(&mut body, limits)?),
        SUBACK => Packet::SubAck(suback(&mut body)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(&mut body, limits)?),
        UNSUBACK => Packet::UnsubAck(UnsubAck::new(body.packet_id()?)),
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => Packet::Disconnect(Disconnect::NORMAL),
        // `check_type` let through only the types above.
        _ => return Err(DecodeError::UnexpectedPacket),
    };
    body.finish()?;
    Ok(packet)
}

/// Bit 7 of CONNECT's protocol level: a bridge (`Connect::bridge`).
pub(crate) const BRIDGE_LEVEL_BIT: u8 = 0x80;

/// The protocol a CONNECT names, by its protocol name and level.
fn protocol_version(name: &[u8], level: u8) -> Result<ProtocolVersion, DecodeError> {
    match (name, level) {
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V31),
        (b"MQTT", 4) => Ok(ProtocolVersion::V311),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        // A known name at another level: refuse with CONNACK 0x01 [MQTT-3.1.2-2].
        (b"MQIsdp" | b"MQTT", _) => Err(DecodeError::UnsupportedProtocolVersion),
        // [MQTT-3.1.2-1]
        _ => Err(DecodeError::InvalidProtocolName),
    }
}

/// The will of a CONNECT whose Will Flag is set, from its place in the payload.
fn will<'a>(
    body: &mut Reader<'a>,
    is_v5: bool,
    qos: QoS,
    retain: bool,
    limits: &DecodeLimits,
) -> Result<Will<'a>, DecodeError> {
    // MQTT 5 puts the will properties first (§3.1.3.2).
    let properties = if is_v5 {
        Properties::read(body, PropertyScope::Will)?
    } else {
        Properties::EMPTY
    };
    let topic = body.string()?;
    validate_topic_name(topic, limits)?;
    let payload = body.binary()?;
    Ok(Will {
        topic,
        payload,
        qos,
        retain,
        properties,
    })
}

fn connect<'a>(mut body: Reader<'a>, limits: &DecodeLimits) -> Result<Connect<'a>, DecodeError> {
    let name = body.binary()?;
    let level = body.u8()?;
    // Bit 7 marks a bridge (`Connect::bridge`); the level is the rest.
    let bridge = level & BRIDGE_LEVEL_BIT != 0;
    let version = protocol_version(name, level & !BRIDGE_LEVEL_BIT)?;
    let flags = body.u8()?;
    let is_v31 = version == ProtocolVersion::V31;
    // [MQTT-3.1.2-3]; the bit is merely unused in 3.1.
    if flags & connect_flag::RESERVED != 0 && !is_v31 {
        return Err(DecodeError::ReservedConnectFlag);
    }
    let has_will = flags & connect_flag::WILL != 0;
    let will_qos_bits = (flags & connect_flag::WILL_QOS_MASK) >> connect_flag::WILL_QOS_SHIFT;
    let will_retain = flags & connect_flag::WILL_RETAIN != 0;
    // [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]
    if !has_will && (will_qos_bits != 0 || will_retain) {
        return Err(DecodeError::WillFlagsInconsistent);
    }
    // [MQTT-3.1.2-14]
    let will_qos = QoS::from_bits(will_qos_bits).ok_or(DecodeError::InvalidQoS)?;
    let has_username = flags & connect_flag::USERNAME != 0;
    let has_password = flags & connect_flag::PASSWORD != 0;
    let is_v5 = version == ProtocolVersion::V5;
    // [MQTT-3.1.2-22] is new in 3.1.1, and gone again in MQTT 5 (§3.1.2.9).
    if has_password && !has_username && version == ProtocolVersion::V311 {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive_s = body.u16()?;
    let properties = if is_v5 {
        Properties::read(&mut body, PropertyScope::Connect)?
    } else {
        Properties::EMPTY
    };

    // Payload, in the order of [MQTT-3.1.3-1].
    let client_id = body.string()?;
    if client_id.len() > usize::from(limits.client_id_bytes_max) {
        return Err(DecodeError::ClientIdTooLong);
    }
    let will = if has_will {
        Some(will(&mut body, is_v5, will_qos, will_retain, limits)?)
    } else {
        None
    };
    // 3.1 clients exist that set the user name or password flag and send no field; 3.1 brokers
    // have always read that as "absent", so accept it there.
    let username = if has_username && !(is_v31 && body.is_empty()) {
        Some(body.string()?)
    } else {
        None
    };
    let password = if has_password && !(is_v31 && body.is_empty()) {
        Some(body.binary()?)
    } else {
        None
    };
    body.finish()?;
    Ok(Connect {
        version,
        clean_session: flags & connect_flag::CLEAN_SESSION != 0,
        keep_alive_s,
        client_id,
        will,
        username,
        password,
        properties,
        bridge,
    })
}

fn connack(
    body: &mut Reader<'_>,
    version: ProtocolVersion,
) -> Result<ConnAck<'static>, DecodeError> {
    let flags = body.u8()?;
    let session_present = match version {
        // 3.1 has no acknowledge flags: the byte is unused and ignored.
        ProtocolVersion::V31 => false,
        ProtocolVersion::V311 | ProtocolVersion::V5 => {
            // [MQTT-3.2.2-1]
            if flags & !1 != 0 {
                return Err(DecodeError::ReservedConnAckFlags);
            }
            flags & 1 != 0
        }
    };
    let code = connect_return_code(body.u8()?)?;
    // [MQTT-3.2.2-4]
    if session_present && code != ConnectReturnCode::Accepted {
        return Err(DecodeError::ReservedConnAckFlags);
    }
    Ok(ConnAck::new(session_present, code))
}

fn connect_return_code(byte: u8) -> Result<ConnectReturnCode, DecodeError> {
    match byte {
        0 => Ok(ConnectReturnCode::Accepted),
        1 => Ok(ConnectReturnCode::UnacceptableProtocolVersion),
        2 => Ok(ConnectReturnCode::IdentifierRejected),
        3 => Ok(ConnectReturnCode::ServerUnavailable),
        4 => Ok(ConnectReturnCode::BadUsernameOrPassword),
        5 => Ok(ConnectReturnCode::NotAuthorized),
        _ => Err(DecodeError::InvalidReturnCode),
    }
}

fn publish<'a>(
    flags: u8,
    mut body: Reader<'a>,
    limits: &DecodeLimits,
) -> Result<Publish<'a>, DecodeError> {
    // `check_publish_flags` already refused QoS 3.
    let qos = QoS::from_bits((flags & publish_flag::QOS_MASK) >> publish_flag::QOS_SHIFT)
        .ok_or(DecodeError::InvalidQoS)?;
    let topic = body.string()?;
    validate_topic_name(topic, limits)?;
    let delivery = match qos {
        QoS::AtMostOnce => Delivery::AtMostOnce,
        QoS::AtLeastOnce => Delivery::AtLeastOnce(body.packet_id()?),
        QoS::ExactlyOnce => Delivery::ExactlyOnce(body.packet_id()?),
    };
    Ok(Publish {
        dup: flags & publish_flag::DUP != 0,
        retain: flags & publish_flag::RETAIN != 0,
        delivery,
        topic,
        // May be empty (§3.3.3).
        payload: body.rest(),
        properties: Properties::EMPTY,
    })
}

/// The topic filters that fill the rest of a SUBSCRIBE or UNSUBSCRIBE, each validated and
/// followed by what `per_filter` reads after it. At most `filters_per_packet_max` (limits the
/// allocation a peer controls) and at least one (`empty` otherwise: [MQTT-3.8.3-3],
/// [MQTT-3.10.3-2]).
pub(super) fn read_filters<'a, T>(
    body: &mut Reader<'a>,
    limits: &DecodeLimits,
    empty: DecodeError,
    mut per_filter: impl FnMut(&mut Reader<'a>, &'a str) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut filters = Vec::new();
    while !body.is_empty() {
        if filters.len() >= limits.filters_per_packet_max as usize {
            return Err(DecodeError::TooManyFilters);
        }
        let filter = body.string()?;
        validate_topic_filter(filter, limits)?;
        filters.push(per_filter(body, filter)?);
    }
    if filters.is_empty() {
        return Err(empty);
    }
    Ok(filters)
}

fn subscribe<'a>(
    body: &mut Reader<'a>,
    limits: &DecodeLimits,
) -> Result<Subscribe<'a>, DecodeError> {
    let packet_id = body.packet_id()?;
    let filters = read_filters(body, limits, DecodeError::EmptySubscribe, |body, filter| {
        let options = body.u8()?;
        // [MQTT-3.8.3-4]: upper six bits reserved, and QoS 3 does not exist.
        if options & !0b11 != 0 {
            return Err(DecodeError::InvalidSubscribeOptions);
        }
        let qos = QoS::from_bits(options).ok_or(DecodeError::InvalidSubscribeOptions)?;
        Ok((filter, SubscriptionOptions::new(qos)))
    })?;
    Ok(Subscribe {
        packet_id,
        filters,
        properties: Properties::EMPTY,
    })
}

fn suback(body: &mut Reader<'_>) -> Result<SubAck<'static>, DecodeError> {
    let packet_id = body.packet_id()?;
    let codes = body
        .rest()
        .iter()
        .map(|&code| match code {
            SUBACK_FAILURE => Ok(SubscribeReturnCode::Failure),
            _ => QoS::from_bits(code)
                .map(SubscribeReturnCode::Granted)
                .ok_or(DecodeError::InvalidReturnCode),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubAck {
        packet_id,
        codes,
        properties: Properties::EMPTY,
    })
}

fn unsubscribe<'a>(
    body: &mut Reader<'a>,
    limits: &DecodeLimits,
) -> Result<Unsubscribe<'a>, DecodeError> {
    let packet_id = body.packet_id()?;
    let filters = read_filters(body, limits, DecodeError::EmptyUnsubscribe, |_, filter| {
        Ok(filter)
    })?;
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties: Properties::EMPTY,
    })
}

/// Reads fields from the body of one complete packet. Running out of bytes here means the
/// packet lied about its contents, so it is an error, not a request for more input.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes not read yet.
    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (taken, rest) = self.buf.split_at(len);
        self.buf = rest;
        Ok(taken)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let [byte] = self.take(1)? else {
            return Err(DecodeError::Truncated);
        };
        Ok(*byte)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let [high, low] = self.take(2)? else {
            return Err(DecodeError::Truncated);
        };
        Ok(u16::from_be_bytes([*high, *low]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let [a, b, c, d] = self.take(4)? else {
            return Err(DecodeError::Truncated);
        };
        Ok(u32::from_be_bytes([*a, *b, *c, *d]))
    }

    /// MQTT 5 §1.5.5: seven bits a byte, least significant first, at most four bytes. A
    /// non-minimal encoding is read like the remaining length is: as the value it spells.
    pub(crate) fn variable_byte_integer(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for index in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVariableByteInteger)
    }

    /// [MQTT-2.3.1-1]
    pub(crate) fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::ZeroPacketId)
    }

    /// Two-byte length, then that many bytes (§1.5.3 layout).
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 string without U+0000 ([MQTT-1.5.3-1], [MQTT-1.5.3-2]). Rust's UTF-8 check
    /// also refuses the surrogates U+D800..U+DFFF that [MQTT-1.5.3-1] forbids.
    pub(crate) fn string(&mut self) -> Result<&'a str, DecodeError> {
        let s = std::str::from_utf8(self.binary()?).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::NullCharacter);
        }
        Ok(s)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
