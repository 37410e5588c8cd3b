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

fn connect<'a>(mut body: Reader<'a>, limits: &DecodeLimits) -> Result<Connect<'a>, DecodeError> {
    let name = body.binary()?;
    let level = body.u8()?;
    let version = match (name, level) {
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        // A known name at another level: refuse with CONNACK 0x01 [MQTT-3.1.2-2].
        (b"MQIsdp" | b"MQTT", _) => return Err(DecodeError::UnsupportedProtocolVersion),
        // [MQTT-3.1.2-1]
        _ => return Err(DecodeError::InvalidProtocolName),
    };
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
        // MQTT 5 puts the will properties first (§3.1.3.2).
        let properties = if is_v5 {
            Properties::read(&mut body, PropertyScope::Will)?
        } else {
            Properties::EMPTY
        };
        let topic = body.string()?;
        validate_topic_name(topic, limits)?;
        let payload = body.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
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
mod tests {
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
        };
        assert_golden(&full, &Packet::Connect(connect), V31);
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
                let dup =
                    dup && (version == ProtocolVersion::V31 || delivery != Delivery::AtMostOnce);
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
            (packet_id(), prop::collection::vec(return_code, 1..5)).prop_map(
                |(packet_id, codes)| Packet::SubAck(SubAck {
                    packet_id,
                    codes,
                    properties: Properties::EMPTY,
                })
            ),
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
}
