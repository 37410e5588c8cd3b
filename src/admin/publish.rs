//! `POST /api/v1/publish`: a JSON object, or an array of them published in order, each turned
//! into the owned message a client's PUBLISH becomes at the routing boundary
//! ([`RoutedMessage`]). Parsed with simd-json, on the admin thread: no JSON is ever read on the
//! fan-out path.
//!
//! ```json
//! {"topic": "score/1", "payload": "2-1", "qos": 1, "retain": true,
//!  "properties": {"content_type": "text/plain", "message_expiry_interval": 60,
//!                 "user_properties": [["source", "feed"]]}}
//! ```
//! `payload` is UTF-8 text; `payload_base64` carries bytes instead. Every field is checked as
//! the broker checks a client's PUBLISH (topic name rules and limits, packet size), and an
//! unknown field is an error rather than silently ignored: the error names the field and the
//! index of the message in the array.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use simd_json::BorrowedValue;
use simd_json::prelude::*;

use crate::broker::RoutedMessage;
use crate::protocol::mqtt::topic::validate_topic_name;
use crate::protocol::mqtt::{DecodeLimits, PropertiesBuf, Property, QoS};

/// What is wrong with a publish request: which message (in an array), which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishError {
    pub index: Option<usize>,
    pub field: Option<&'static str>,
    pub problem: String,
}

impl PublishError {
    fn field(field: &'static str, problem: impl Into<String>) -> PublishError {
        PublishError {
            index: None,
            field: Some(field),
            problem: problem.into(),
        }
    }

    fn whole(problem: impl Into<String>) -> PublishError {
        PublishError {
            index: None,
            field: None,
            problem: problem.into(),
        }
    }
}

/// The bounds a publish is held to: those of a client's PUBLISH, and of one batch.
pub struct PublishLimits {
    pub decode: DecodeLimits,
    /// Messages in one request.
    pub messages_max: usize,
}

/// The messages of `body`, in order, or the first problem found.
pub fn parse(
    body: &mut [u8],
    limits: &PublishLimits,
    now: Instant,
) -> Result<Vec<Arc<RoutedMessage>>, PublishError> {
    let value = simd_json::to_borrowed_value(body)
        .map_err(|e| PublishError::whole(format!("invalid JSON: {e}")))?;
    let (items, batch): (Vec<&BorrowedValue>, bool) = match value.as_array() {
        Some(items) => (items.iter().collect(), true),
        None => (vec![&value], false),
    };
    if items.is_empty() || items.len() > limits.messages_max {
        return Err(PublishError::whole(format!(
            "a request publishes 1 to {} messages",
            limits.messages_max
        )));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let message = message(item, limits, now).map_err(|mut error| {
            error.index = batch.then_some(index);
            error
        })?;
        messages.push(Arc::new(message));
    }
    Ok(messages)
}

const FIELDS: [&str; 6] = [
    "topic",
    "payload",
    "payload_base64",
    "qos",
    "retain",
    "properties",
];

fn message(
    item: &BorrowedValue,
    limits: &PublishLimits,
    now: Instant,
) -> Result<RoutedMessage, PublishError> {
    let object = item
        .as_object()
        .ok_or_else(|| PublishError::whole("a message is a JSON object"))?;
    if let Some(unknown) = object.keys().find(|key| !FIELDS.contains(&key.as_ref())) {
        return Err(PublishError::whole(format!("unknown field `{unknown}`")));
    }
    let topic = object
        .get("topic")
        .and_then(|topic| topic.as_str())
        .ok_or_else(|| PublishError::field("topic", "a string is required"))?;
    validate_topic_name(topic, &limits.decode)
        .map_err(|e| PublishError::field("topic", format!("not a valid topic name: {e}")))?;
    let payload = payload(object.get("payload"), object.get("payload_base64"))?;
    let qos = match object.get("qos").map(|qos| qos.as_u8()) {
        None => QoS::AtMostOnce,
        Some(bits) => bits
            .and_then(QoS::from_bits)
            .ok_or_else(|| PublishError::field("qos", "must be 0, 1 or 2"))?,
    };
    let retain = match object.get("retain") {
        None => false,
        Some(retain) => retain
            .as_bool()
            .ok_or_else(|| PublishError::field("retain", "must be true or false"))?,
    };
    let mut message = RoutedMessage::new(topic, &payload, qos, retain);
    if let Some(properties) = object.get("properties") {
        let (bytes, expiry_s) = self::properties(properties, &payload, &limits.decode)?;
        message.properties = bytes.as_properties().raw().into();
        message.expires_at = expiry_s.map(|s| now + Duration::from_secs(s.into()));
    }
    // What a client could send: the message must fit the largest packet the broker takes.
    let size = 2 + message.topic.len() + message.properties.len() + message.payload.len() + 16;
    if size > limits.decode.packet_bytes_max as usize {
        return Err(PublishError::field(
            "payload",
            format!(
                "the message is larger than packet_bytes_max ({})",
                limits.decode.packet_bytes_max
            ),
        ));
    }
    Ok(message)
}

fn payload(
    text: Option<&BorrowedValue>,
    base64: Option<&BorrowedValue>,
) -> Result<Vec<u8>, PublishError> {
    match (text, base64) {
        (Some(_), Some(_)) => Err(PublishError::field(
            "payload",
            "give `payload` or `payload_base64`, not both",
        )),
        (Some(text), None) => text
            .as_str()
            .map(|text| text.as_bytes().to_vec())
            .ok_or_else(|| PublishError::field("payload", "must be a string (UTF-8 text)")),
        (None, Some(encoded)) => encoded
            .as_str()
            .and_then(|encoded| STANDARD.decode(encoded).ok())
            .ok_or_else(|| PublishError::field("payload_base64", "must be a base64 string")),
        (None, None) => Ok(Vec::new()),
    }
}

const PROPERTIES: [&str; 6] = [
    "content_type",
    "response_topic",
    "correlation_data",
    "message_expiry_interval",
    "payload_format_indicator",
    "user_properties",
];

/// The MQTT 5 properties subscribers get (§3.3.2.3), and the Message Expiry Interval, which
/// the broker writes per subscriber from the time that remains.
fn properties(
    value: &BorrowedValue,
    payload: &[u8],
    decode: &DecodeLimits,
) -> Result<(PropertiesBuf, Option<u32>), PublishError> {
    let bad = |problem: &str| PublishError::field("properties", problem);
    let object = value.as_object().ok_or_else(|| bad("must be an object"))?;
    if let Some(unknown) = object
        .keys()
        .find(|key| !PROPERTIES.contains(&key.as_ref()))
    {
        return Err(bad(&format!("unknown property `{unknown}`")));
    }
    let text = |key: &str| -> Result<Option<&str>, PublishError> {
        object
            .get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| bad(&format!("`{key}` must be a string")))
            })
            .transpose()
    };
    let mut buf = PropertiesBuf::new();
    if let Some(indicator) = object.get("payload_format_indicator") {
        let indicator = indicator
            .as_u8()
            .filter(|i| *i <= 1)
            .ok_or_else(|| bad("`payload_format_indicator` must be 0 or 1"))?;
        if indicator == 1 && std::str::from_utf8(payload).is_err() {
            return Err(bad(
                "`payload_format_indicator` 1 says UTF-8, the payload is not",
            ));
        }
        buf.push(Property::PayloadFormatIndicator(indicator));
    }
    if let Some(content_type) = text("content_type")? {
        buf.push(Property::ContentType(content_type));
    }
    if let Some(topic) = text("response_topic")? {
        validate_topic_name(topic, decode)
            .map_err(|_| bad("`response_topic` is not a valid topic name"))?;
        buf.push(Property::ResponseTopic(topic));
    }
    if let Some(data) = text("correlation_data")? {
        buf.push(Property::CorrelationData(data.as_bytes()));
    }
    if let Some(pairs) = object.get("user_properties") {
        user_properties(pairs, &mut buf)?;
    }
    let expiry_s = match object.get("message_expiry_interval") {
        None => None,
        Some(s) => Some(
            s.as_u32()
                .ok_or_else(|| bad("`message_expiry_interval` must be seconds, 0 to 4294967295"))?,
        ),
    };
    Ok((buf, expiry_s))
}

/// `[["name", "value"], ...]`: an array, since names may repeat and order is kept
/// [MQTT-3.3.2-18].
fn user_properties(pairs: &BorrowedValue, buf: &mut PropertiesBuf) -> Result<(), PublishError> {
    let bad = || PublishError::field("properties", "`user_properties` is [[name, value], ...]");
    for pair in pairs.as_array().ok_or_else(bad)? {
        let [name, value] = pair.as_array().map(Vec::as_slice).ok_or_else(bad)? else {
            return Err(bad());
        };
        let (Some(name), Some(value)) = (name.as_str(), value.as_str()) else {
            return Err(bad());
        };
        buf.push(Property::UserProperty(name, value));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> PublishLimits {
        PublishLimits {
            decode: crate::config::Limits::default().decode_limits(),
            messages_max: 10,
        }
    }

    fn parse_str(json: &str) -> Result<Vec<Arc<RoutedMessage>>, PublishError> {
        parse(&mut json.as_bytes().to_vec(), &limits(), Instant::now())
    }

    #[test]
    fn one_message_or_an_array_in_order() {
        let one = parse_str(r#"{"topic": "a/b", "payload": "hi", "qos": 1, "retain": true}"#)
            .expect("valid");
        assert_eq!(one.len(), 1);
        assert_eq!(&*one[0].topic, "a/b");
        assert_eq!(&*one[0].payload, b"hi");
        assert_eq!(one[0].qos, QoS::AtLeastOnce);
        assert!(one[0].retain);
        let batch =
            parse_str(r#"[{"topic": "x", "payload_base64": "AAE="}, {"topic": "y"}]"#).unwrap();
        assert_eq!(&*batch[0].payload, [0, 1]);
        assert_eq!(&*batch[1].topic, "y");
        assert!(batch[1].payload.is_empty());
    }

    #[test]
    fn properties_are_encoded_and_expiry_kept_apart() {
        let json = r#"{"topic": "t", "payload": "x", "properties": {"content_type": "text/plain",
            "message_expiry_interval": 30, "user_properties": [["k", "v"], ["k", "w"]]}}"#;
        let message = &parse_str(json).expect("valid")[0];
        assert!(message.expires_at.is_some());
        let properties = crate::protocol::mqtt::Properties::parse(
            &message.properties,
            crate::protocol::mqtt::PropertyScope::Publish,
        )
        .expect("valid properties");
        let users: Vec<_> = properties.user_properties().collect();
        assert_eq!(users, [("k", "v"), ("k", "w")]);
    }

    #[test]
    fn each_error_names_its_field_and_index() {
        let error = |json: &str| parse_str(json).expect_err(json);
        assert_eq!(error("{not json").field, None);
        let bad_topic = error(r#"[{"topic": "ok"}, {"topic": "a/+"}]"#);
        assert_eq!((bad_topic.index, bad_topic.field), (Some(1), Some("topic")));
        assert_eq!(error(r#"{"topic": ""}"#).field, Some("topic"));
        assert_eq!(error(r#"{"topic": "t", "qos": 3}"#).field, Some("qos"));
        assert_eq!(
            error(r#"{"topic": "t", "payload_base64": "%"}"#).field,
            Some("payload_base64")
        );
        assert!(
            error(r#"{"topic": "t", "color": 1}"#)
                .problem
                .contains("color")
        );
        assert_eq!(error("[]").field, None);
        let props = error(r##"{"topic": "t", "properties": {"response_topic": "#"}}"##);
        assert_eq!(props.field, Some("properties"));
    }
}
