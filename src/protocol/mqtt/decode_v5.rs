//! MQTT 5.0 layouts of every packet after CONNECT (CONNECT itself differs from 3.1.1 only by
//! its properties and is read in `decode`).
//!
//! Each packet gains properties; the acknowledgements, DISCONNECT and AUTH gain a reason code
//! that, with the properties, may be left out when it is Success and there are none
//! ([MQTT-3.4.2-1], §3.14.2.1, §3.15.2.1); SUBSCRIBE gains options per filter; UNSUBACK gains a
//! reason per filter.

use super::decode::read_filters;
use super::decode::{DecodeLimits, Direction, Reader};
use super::encode::{packet_type, publish_flag};
use super::error::DecodeError;
use super::packet::{
    Ack, Auth, ConnAck, Delivery, Disconnect, Packet, Publish, QoS, RetainHandling, SubAck,
    Subscribe, SubscribeReturnCode, SubscriptionOptions, UnsubAck, Unsubscribe,
};
use super::properties::{Properties, PropertyScope};
use super::reason::{ReasonCode, ReasonCodeOf};
use super::topic::validate_topic_name;

/// Subscription option bits (§3.8.3.1).
pub(crate) mod subscription_option {
    pub const QOS_MASK: u8 = 0b0000_0011;
    pub const NO_LOCAL: u8 = 0b0000_0100;
    pub const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
    pub const RETAIN_HANDLING_SHIFT: u8 = 4;
    pub const RETAIN_HANDLING_MASK: u8 = 0b0011_0000;
    pub const RESERVED: u8 = 0b1100_0000;
}

/// Prefix of a shared subscription's filter (§4.8.2).
pub(crate) const SHARED_SUBSCRIPTION_PREFIX: &str = "$share/";

pub(super) fn packet_body<'a>(
    kind: u8,
    flags: u8,
    direction: Direction,
    mut body: Reader<'a>,
    limits: &DecodeLimits,
) -> Result<Packet<'a>, DecodeError> {
    use packet_type::*;
    let packet = match kind {
        CONNACK => Packet::ConnAck(connack(&mut body)?),
        PUBLISH => {
            // The payload is the rest of the packet: nothing can trail it.
            return Ok(Packet::Publish(publish(flags, direction, body, limits)?));
        }
        PUBACK => Packet::PubAck(ack(&mut body, ReasonCodeOf::PubAckOrPubRec)?),
        PUBREC => Packet::PubRec(ack(&mut body, ReasonCodeOf::PubAckOrPubRec)?),
        PUBREL => Packet::PubRel(ack(&mut body, ReasonCodeOf::PubRelOrPubComp)?),
        PUBCOMP => Packet::PubComp(ack(&mut body, ReasonCodeOf::PubRelOrPubComp)?),
        SUBSCRIBE => Packet::Subscribe(subscribe(&mut body, limits)?),
        SUBACK => Packet::SubAck(suback(&mut body)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe(&mut body, limits)?),
        UNSUBACK => Packet::UnsubAck(unsuback(&mut body)?),
        PINGREQ => Packet::PingReq,
        PINGRESP => Packet::PingResp,
        DISCONNECT => {
            let (reason, properties) = short_reason(
                &mut body,
                ReasonCodeOf::Disconnect,
                PropertyScope::Disconnect,
            )?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        AUTH => {
            let (reason, properties) =
                short_reason(&mut body, ReasonCodeOf::Auth, PropertyScope::Auth)?;
            Packet::Auth(Auth { reason, properties })
        }
        // `check_type` let through only the types above.
        _ => return Err(DecodeError::UnexpectedPacket),
    };
    body.finish()?;
    Ok(packet)
}

fn reason_code(body: &mut Reader<'_>, packet: ReasonCodeOf) -> Result<ReasonCode, DecodeError> {
    let reason = ReasonCode(body.u8()?);
    if reason.is_valid_for(packet) {
        Ok(reason)
    } else {
        Err(DecodeError::InvalidReasonCode)
    }
}

/// A reason code and properties that may both be absent: no bytes left means Success, and a
/// reason with nothing after it means no properties.
fn short_reason<'a>(
    body: &mut Reader<'a>,
    packet: ReasonCodeOf,
    scope: PropertyScope,
) -> Result<(ReasonCode, Properties<'a>), DecodeError> {
    if body.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::EMPTY));
    }
    let reason = reason_code(body, packet)?;
    let properties = if body.is_empty() {
        Properties::EMPTY
    } else {
        Properties::read(body, scope)?
    };
    Ok((reason, properties))
}

fn connack<'a>(body: &mut Reader<'a>) -> Result<ConnAck<'a>, DecodeError> {
    let flags = body.u8()?;
    // [MQTT-3.2.2-1]
    if flags & !1 != 0 {
        return Err(DecodeError::ReservedConnAckFlags);
    }
    let session_present = flags & 1 != 0;
    let reason = reason_code(body, ReasonCodeOf::ConnAck)?;
    // [MQTT-3.2.2-6]
    if session_present && reason.is_error() {
        return Err(DecodeError::ReservedConnAckFlags);
    }
    let properties = Properties::read(body, PropertyScope::ConnAck)?;
    Ok(ConnAck {
        session_present,
        reason,
        properties,
    })
}

fn publish<'a>(
    flags: u8,
    direction: Direction,
    mut body: Reader<'a>,
    limits: &DecodeLimits,
) -> Result<Publish<'a>, DecodeError> {
    // `check_publish_flags` already refused QoS 3.
    let qos = QoS::from_bits((flags & publish_flag::QOS_MASK) >> publish_flag::QOS_SHIFT)
        .ok_or(DecodeError::InvalidQoS)?;
    let topic = body.string()?;
    let delivery = match qos {
        QoS::AtMostOnce => Delivery::AtMostOnce,
        QoS::AtLeastOnce => Delivery::AtLeastOnce(body.packet_id()?),
        QoS::ExactlyOnce => Delivery::ExactlyOnce(body.packet_id()?),
    };
    let properties = Properties::read(&mut body, PropertyScope::Publish)?;
    // [MQTT-3.3.4-6]
    if direction == Direction::ClientToServer
        && properties.subscription_identifiers().next().is_some()
    {
        return Err(DecodeError::SubscriptionIdentifierFromClient);
    }
    // An empty topic name stands for the one the Topic Alias maps to (§3.3.2.3.4); without an
    // alias it is a Protocol Error.
    if !(topic.is_empty() && properties.topic_alias().is_some()) {
        validate_topic_name(topic, limits)?;
    }
    Ok(Publish {
        dup: flags & publish_flag::DUP != 0,
        retain: flags & publish_flag::RETAIN != 0,
        delivery,
        topic,
        // May be empty (§3.3.3).
        payload: body.rest(),
        properties,
    })
}

fn ack<'a>(body: &mut Reader<'a>, packet: ReasonCodeOf) -> Result<Ack<'a>, DecodeError> {
    let packet_id = body.packet_id()?;
    let (reason, properties) = short_reason(body, packet, PropertyScope::Ack)?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

fn subscribe<'a>(
    body: &mut Reader<'a>,
    limits: &DecodeLimits,
) -> Result<Subscribe<'a>, DecodeError> {
    use subscription_option::*;
    let packet_id = body.packet_id()?;
    let properties = Properties::read(body, PropertyScope::Subscribe)?;
    let filters = read_filters(body, limits, DecodeError::EmptySubscribe, |body, filter| {
        let options = body.u8()?;
        // [MQTT-3.8.3-5]
        if options & RESERVED != 0 {
            return Err(DecodeError::ReservedSubscribeOptionBits);
        }
        let qos = QoS::from_bits(options & QOS_MASK).ok_or(DecodeError::InvalidSubscribeOptions)?;
        let retain_handling = match (options & RETAIN_HANDLING_MASK) >> RETAIN_HANDLING_SHIFT {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendAtNewSubscribe,
            2 => RetainHandling::DoNotSend,
            _ => return Err(DecodeError::InvalidSubscribeOptions),
        };
        let no_local = options & NO_LOCAL != 0;
        // [MQTT-3.8.3-4]
        if no_local && filter.starts_with(SHARED_SUBSCRIPTION_PREFIX) {
            return Err(DecodeError::NoLocalOnSharedSubscription);
        }
        Ok((
            filter,
            SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: options & RETAIN_AS_PUBLISHED != 0,
                retain_handling,
            },
        ))
    })?;
    Ok(Subscribe {
        packet_id,
        filters,
        properties,
    })
}

fn suback<'a>(body: &mut Reader<'a>) -> Result<SubAck<'a>, DecodeError> {
    let packet_id = body.packet_id()?;
    let properties = Properties::read(body, PropertyScope::SubAck)?;
    let codes = body
        .rest()
        .iter()
        .map(|&code| match ReasonCode(code) {
            reason if !reason.is_valid_for(ReasonCodeOf::SubAck) => {
                Err(DecodeError::InvalidReasonCode)
            }
            ReasonCode::UNSPECIFIED_ERROR => Ok(SubscribeReturnCode::Failure),
            reason if reason.is_error() => Ok(SubscribeReturnCode::Refused(reason)),
            reason => QoS::from_bits(reason.0)
                .map(SubscribeReturnCode::Granted)
                .ok_or(DecodeError::InvalidReasonCode),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubAck {
        packet_id,
        codes,
        properties,
    })
}

fn unsubscribe<'a>(
    body: &mut Reader<'a>,
    limits: &DecodeLimits,
) -> Result<Unsubscribe<'a>, DecodeError> {
    let packet_id = body.packet_id()?;
    let properties = Properties::read(body, PropertyScope::Unsubscribe)?;
    let filters = read_filters(body, limits, DecodeError::EmptyUnsubscribe, |_, filter| {
        Ok(filter)
    })?;
    Ok(Unsubscribe {
        packet_id,
        filters,
        properties,
    })
}

fn unsuback<'a>(body: &mut Reader<'a>) -> Result<UnsubAck<'a>, DecodeError> {
    let packet_id = body.packet_id()?;
    let properties = Properties::read(body, PropertyScope::UnsubAck)?;
    let reasons = body
        .rest()
        .iter()
        .map(|&code| {
            let reason = ReasonCode(code);
            if reason.is_valid_for(ReasonCodeOf::UnsubAck) {
                Ok(reason)
            } else {
                Err(DecodeError::InvalidReasonCode)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(UnsubAck {
        packet_id,
        reasons,
        properties,
    })
}
