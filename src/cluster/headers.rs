//! A message's MQTT metadata as NATS headers, both ways: the RETAIN flag and the MQTT 5
//! properties a subscriber sees (§3.3.2.3), so that a subscriber on one node gets what a
//! publisher on another sent. A message without these headers (a native NATS publisher's) is
//! a plain message: no properties, not retained.
//!
//! | header | carries | value |
//! |---|---|---|
//! | `Mqtt-Retain` | RETAIN | `1` |
//! | `Mqtt-Message-Expiry` | Message Expiry Interval | seconds left when sent |
//! | `Mqtt-Payload-Format` | Payload Format Indicator | `0` or `1` |
//! | `Mqtt-Content-Type` | Content Type | text, escaped |
//! | `Mqtt-Response-Topic` | Response Topic | text, escaped |
//! | `Mqtt-Correlation-Data` | Correlation Data | bytes, escaped |
//! | `Mqtt-User-Property` | each User Property, in order | `name=value`, both escaped |
//!
//! Two more are fanfare's own: `Fanfare-Origin`, the node that sent the message, and
//! `Fanfare-Message-Id`, a QoS 1/2 publish's identity (`crate::broker::message_ids`).
//!
//! Escaping is percent-encoding of every byte outside printable ASCII, of `%` and of `=`: NATS
//! header values are one line and lose the spaces at their ends, and `=` splits a user
//! property. What stays readable (`application/json`) is written as it is, for native NATS
//! clients that read or write these headers.
//!
//! Header values come from other nodes or from any NATS client: every value is checked as the
//! MQTT decoder checks a client's PUBLISH, and a message whose headers do not make a valid
//! PUBLISH is not delivered.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;

use crate::broker::RoutedMessage;
use crate::protocol::mqtt::properties::{Properties, PropertiesBuf, Property, PropertyScope};
use crate::protocol::mqtt::topic::validate_topic_name;
use crate::protocol::mqtt::{DecodeLimits, QoS};

/// The header naming the node a message came from.
pub const ORIGIN: &str = "Fanfare-Origin";
/// A QoS 1/2 publish's identity in the cluster (`broker/message_ids.rs`).
pub const MESSAGE_ID: &str = "Fanfare-Message-Id";
/// `Nats-Msg-Id`, JetStream's own: a second message with the same value within the stream's
/// duplicate window is not stored. Set to the identity of a QoS 2 publish with an origin,
/// which every node derives alike (`broker/message_ids.rs`). The client library's name for
/// it, since received headers are keyed by that, not by the text.
pub use async_nats::header::NATS_MESSAGE_ID;
pub const RETAIN: &str = "Mqtt-Retain";
pub const MESSAGE_EXPIRY: &str = "Mqtt-Message-Expiry";
pub const PAYLOAD_FORMAT: &str = "Mqtt-Payload-Format";
pub const CONTENT_TYPE: &str = "Mqtt-Content-Type";
pub const RESPONSE_TOPIC: &str = "Mqtt-Response-Topic";
pub const CORRELATION_DATA: &str = "Mqtt-Correlation-Data";
pub const USER_PROPERTY: &str = "Mqtt-User-Property";
/// The QoS of a message in the stream of QoS 1/2 publishes (`qos.rs`): `1` or `2`; a message
/// without it is taken at QoS 1.
pub const QOS: &str = "Mqtt-Qos";
/// On the core NATS copy of a QoS 1/2 publish, for native NATS subscribers: the stream that
/// carries the message to the other nodes, which therefore ignore this copy.
pub const CARRIED_BY: &str = "Fanfare-Stream";

/// Why headers make no valid PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// A value that is not a number, flag or escape it should be.
    Malformed(&'static str),
    /// A string or binary value longer than MQTT's two-byte length allows.
    TooLong(&'static str),
    /// A value MQTT refuses: a null character, a Response Topic with wildcards, a Payload
    /// Format Indicator of 1 on a payload that is not UTF-8.
    Invalid(&'static str),
}

/// The headers of `message` as `node` sends it at `now`.
pub fn to_headers(message: &RoutedMessage, node: &str, now: Instant) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, node);
    if let Some(id) = message.id {
        headers.insert(MESSAGE_ID, id.to_header().as_str());
    }
    if message.retain {
        headers.insert(RETAIN, "1");
    }
    if let Some(left_s) = message.remaining_expiry_s(now) {
        headers.insert(MESSAGE_EXPIRY, left_s.to_string().as_str());
    }
    // The routed properties were validated when they were copied at the routing boundary.
    let Ok(properties) = Properties::parse(&message.properties, PropertyScope::Publish) else {
        debug_assert!(false, "routed properties are valid");
        return headers;
    };
    for property in properties {
        match property {
            Property::PayloadFormatIndicator(format) => {
                headers.insert(PAYLOAD_FORMAT, format.to_string().as_str());
            }
            Property::ContentType(text) => {
                headers.insert(CONTENT_TYPE, escape(text.as_bytes()).as_str());
            }
            Property::ResponseTopic(topic) => {
                headers.insert(RESPONSE_TOPIC, escape(topic.as_bytes()).as_str());
            }
            Property::CorrelationData(data) => {
                headers.insert(CORRELATION_DATA, escape(data).as_str());
            }
            Property::UserProperty(name, value) => {
                let pair = format!("{}={}", escape(name.as_bytes()), escape(value.as_bytes()));
                headers.append(USER_PROPERTY, pair.as_str());
            }
            // Nothing else is forwarded to subscribers (`RoutedMessage::properties`).
            _ => {}
        }
    }
    headers
}

/// The publish that `topic`, `payload` and `headers` stand for, at QoS 0. `age` is how long
/// ago the message was sent (a stored retained message's time in the stream): its expiry
/// counts from then. `Ok(None)` when it has expired already.
pub fn from_headers(
    topic: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
    limits: &DecodeLimits,
    now: Instant,
    age: Duration,
) -> Result<Option<RoutedMessage>, HeaderError> {
    let mut message = RoutedMessage::new(topic, payload, QoS::AtMostOnce, false);
    let Some(headers) = headers else {
        return Ok(Some(message));
    };
    message.retain = match headers.get(RETAIN).map(|v| v.as_str()) {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(HeaderError::Malformed(RETAIN)),
    };
    if let Some(value) = headers.get(MESSAGE_EXPIRY) {
        let expiry_s: u32 = value
            .as_str()
            .parse()
            .map_err(|_| HeaderError::Malformed(MESSAGE_EXPIRY))?;
        let Some(left) = Duration::from_secs(u64::from(expiry_s)).checked_sub(age) else {
            return Ok(None);
        };
        if left.is_zero() {
            return Ok(None);
        }
        message.expires_at = now.checked_add(left);
    }
    let mut properties = PropertiesBuf::new();
    if let Some(value) = headers.get(PAYLOAD_FORMAT) {
        let format = match value.as_str() {
            "0" => 0,
            "1" => 1,
            _ => return Err(HeaderError::Malformed(PAYLOAD_FORMAT)),
        };
        // [MQTT-3.3.2-4]: a payload said to be UTF-8 must be.
        if format == 1 && std::str::from_utf8(payload).is_err() {
            return Err(HeaderError::Invalid(PAYLOAD_FORMAT));
        }
        properties.push(Property::PayloadFormatIndicator(format));
    }
    if let Some(value) = headers.get(CONTENT_TYPE) {
        let text = text_of(value.as_str(), CONTENT_TYPE)?;
        properties.push(Property::ContentType(&text));
    }
    if let Some(value) = headers.get(RESPONSE_TOPIC) {
        let topic = text_of(value.as_str(), RESPONSE_TOPIC)?;
        // [MQTT-3.3.2-14]: a topic name, without wildcards.
        if topic.is_empty() || validate_topic_name(&topic, limits).is_err() {
            return Err(HeaderError::Invalid(RESPONSE_TOPIC));
        }
        properties.push(Property::ResponseTopic(&topic));
    }
    if let Some(value) = headers.get(CORRELATION_DATA) {
        let data = bytes_of(value.as_str(), CORRELATION_DATA)?;
        properties.push(Property::CorrelationData(&data));
    }
    for value in headers.get_all(USER_PROPERTY) {
        let (name, value) = value
            .as_str()
            .split_once('=')
            .ok_or(HeaderError::Malformed(USER_PROPERTY))?;
        let name = text_of(name, USER_PROPERTY)?;
        let value = text_of(value, USER_PROPERTY)?;
        properties.push(Property::UserProperty(&name, &value));
    }
    message.properties = properties.as_properties().raw().into();
    Ok(Some(message))
}

/// Percent-encodes the bytes a header value cannot hold as they are (see the module
/// documentation).
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_graphic() && byte != b'%' && byte != b'=' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Undoes [`escape`]; a `%` not followed by two hex digits is malformed. The result is bounded
/// by MQTT's two-byte length.
fn bytes_of(text: &str, header: &'static str) -> Result<Vec<u8>, HeaderError> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte != b'%' {
            out.push(byte);
            continue;
        }
        let high = bytes.next().and_then(hex_digit);
        let low = bytes.next().and_then(hex_digit);
        let (Some(high), Some(low)) = (high, low) else {
            return Err(HeaderError::Malformed(header));
        };
        out.push(high << 4 | low);
    }
    if out.len() > usize::from(u16::MAX) {
        return Err(HeaderError::TooLong(header));
    }
    Ok(out)
}

/// An escaped MQTT UTF-8 string: valid UTF-8 without the null character [MQTT-1.5.4-1/2].
fn text_of(text: &str, header: &'static str) -> Result<String, HeaderError> {
    let text =
        String::from_utf8(bytes_of(text, header)?).map_err(|_| HeaderError::Invalid(header))?;
    if text.contains('\0') {
        return Err(HeaderError::Invalid(header));
    }
    Ok(text)
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DecodeLimits {
        crate::config::Limits::default().decode_limits()
    }

    fn with_properties(build: impl FnOnce(&mut PropertiesBuf)) -> RoutedMessage {
        let mut properties = PropertiesBuf::new();
        build(&mut properties);
        let mut message = RoutedMessage::new("a/b", b"{}", QoS::AtLeastOnce, true);
        message.properties = properties.as_properties().raw().into();
        message
    }

    fn round_trip(message: &RoutedMessage, now: Instant) -> RoutedMessage {
        let headers = to_headers(message, "n1", now);
        from_headers(
            &message.topic,
            &message.payload,
            Some(&headers),
            &limits(),
            now,
            Duration::ZERO,
        )
        .expect("valid")
        .expect("not expired")
    }

    #[test]
    fn every_forwarded_property_and_retain_cross_unchanged() {
        let now = Instant::now();
        let mut message = with_properties(|p| {
            p.push(Property::PayloadFormatIndicator(1))
                .push(Property::ContentType("application/json; charset=utf-8"))
                .push(Property::ResponseTopic("reply/to me"))
                .push(Property::CorrelationData(&[0, 1, b'%', 0xFF, b'=']))
                .push(Property::UserProperty("k=1", " v%2 "))
                .push(Property::UserProperty("é", "line\r\nbreak"))
                .push(Property::UserProperty("k=1", "again"));
        });
        message.expires_at = Some(now + Duration::from_secs(30));
        let back = round_trip(&message, now);
        assert!(back.retain);
        assert_eq!(back.qos, QoS::AtMostOnce, "core NATS carries QoS 0");
        assert_eq!(
            back.properties, message.properties,
            "same properties, same order"
        );
        assert_eq!(back.remaining_expiry_s(now), Some(30));
    }

    #[test]
    fn values_are_one_readable_line() {
        let message = with_properties(|p| {
            p.push(Property::ContentType("text/plain"))
                .push(Property::UserProperty("a b", "c\nd"));
        });
        let headers = to_headers(&message, "n1", Instant::now());
        assert_eq!(
            headers.get(CONTENT_TYPE).map(|v| v.as_str()),
            Some("text/plain")
        );
        assert_eq!(
            headers.get(USER_PROPERTY).map(|v| v.as_str()),
            Some("a%20b=c%0Ad")
        );
        assert_eq!(headers.get(ORIGIN).map(|v| v.as_str()), Some("n1"));
        assert_eq!(headers.get(RETAIN).map(|v| v.as_str()), Some("1"));
        assert!(headers.get(MESSAGE_EXPIRY).is_none());
    }

    #[test]
    fn no_headers_is_a_plain_message() {
        let now = Instant::now();
        let plain = from_headers("t", b"x", None, &limits(), now, Duration::ZERO)
            .expect("valid")
            .expect("no expiry");
        assert_eq!(plain, RoutedMessage::new("t", b"x", QoS::AtMostOnce, false));
        let mut other = HeaderMap::new();
        other.insert("Nats-Msg-Id", "1");
        let same = from_headers("t", b"x", Some(&other), &limits(), now, Duration::ZERO);
        assert_eq!(same, Ok(Some(plain)));
    }

    #[test]
    fn expiry_counts_from_when_it_was_sent() {
        let now = Instant::now();
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_EXPIRY, "10");
        let at = |age_s| {
            from_headers(
                "t",
                b"x",
                Some(&headers),
                &limits(),
                now,
                Duration::from_secs(age_s),
            )
        };
        let fresh = at(4).expect("valid").expect("6 s left");
        assert_eq!(fresh.remaining_expiry_s(now), Some(6));
        assert_eq!(at(10), Ok(None));
        assert_eq!(at(11), Ok(None));
    }

    #[test]
    fn refuses_what_a_publish_could_not_carry() {
        let now = Instant::now();
        let check = |name: &str, value: &str, payload: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(name, value);
            from_headers("t", payload, Some(&headers), &limits(), now, Duration::ZERO).err()
        };
        assert_eq!(
            check(RETAIN, "yes", b"x"),
            Some(HeaderError::Malformed(RETAIN))
        );
        assert_eq!(
            check(MESSAGE_EXPIRY, "-1", b"x"),
            Some(HeaderError::Malformed(MESSAGE_EXPIRY))
        );
        assert_eq!(
            check(PAYLOAD_FORMAT, "2", b"x"),
            Some(HeaderError::Malformed(PAYLOAD_FORMAT))
        );
        assert_eq!(
            check(PAYLOAD_FORMAT, "1", &[0xFF]),
            Some(HeaderError::Invalid(PAYLOAD_FORMAT))
        );
        assert_eq!(
            check(CONTENT_TYPE, "a%00b", b"x"),
            Some(HeaderError::Invalid(CONTENT_TYPE))
        );
        assert_eq!(
            check(CONTENT_TYPE, "%C3%28", b"x"),
            Some(HeaderError::Invalid(CONTENT_TYPE)),
            "not UTF-8"
        );
        assert_eq!(
            check(CORRELATION_DATA, "%4", b"x"),
            Some(HeaderError::Malformed(CORRELATION_DATA))
        );
        assert_eq!(
            check(RESPONSE_TOPIC, "a/+", b"x"),
            Some(HeaderError::Invalid(RESPONSE_TOPIC))
        );
        assert_eq!(
            check(USER_PROPERTY, "no-equals", b"x"),
            Some(HeaderError::Malformed(USER_PROPERTY))
        );
        let long = "a".repeat(usize::from(u16::MAX) + 1);
        assert_eq!(
            check(CONTENT_TYPE, &long, b"x"),
            Some(HeaderError::TooLong(CONTENT_TYPE))
        );
    }
}
