//! MQTT 5 properties (§2.2.2): a borrowed, validated view of a packet's property bytes.
//!
//! [`Properties`] keeps the raw bytes of one property list (without its length prefix) and
//! reads values on demand, so decoding allocates nothing, repeated properties (user
//! properties, subscription identifiers) keep their order, and re-encoding or forwarding is a
//! copy. A view is only made from bytes that passed [`Properties::parse`] for the packet they
//! belong to, or from a [`PropertiesBuf`], which writes only well-formed properties.
//!
//! Validation, per §2.2.2.2 and the property sections of §3:
//! - an identifier the spec does not define for the packet is a Malformed Packet;
//! - a value that does not fit its data type (truncated, bad UTF-8, U+0000) is Malformed;
//! - a second copy of a property that may appear once, or a value the spec forbids
//!   (Receive Maximum 0, Maximum Packet Size 0, a 0/1 byte above 1, ...), is a Protocol Error;
//! - a Topic Alias of 0 is "Topic Alias invalid" [MQTT-3.3.2-8].

use super::decode::Reader;
use super::error::DecodeError;
use super::packet::QoS;

/// Property identifiers (§2.2.2.2), in the spec's numeric order.
pub mod property_id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

use property_id as id;

/// Largest value of a variable byte integer (§1.5.5).
pub const VARIABLE_BYTE_INTEGER_MAX: u32 = 268_435_455;

/// One property, in the spec's numeric order of identifiers. Values are as on the wire; the
/// decoder has checked the rules listed in the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property<'a> {
    /// 0 = unspecified bytes, 1 = UTF-8 (§3.3.2.3.2).
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(&'a str),
    ResponseTopic(&'a str),
    CorrelationData(&'a [u8]),
    /// 1..=268 435 455, a variable byte integer on the wire.
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(&'a str),
    ServerKeepAlive(u16),
    AuthenticationMethod(&'a str),
    AuthenticationData(&'a [u8]),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(&'a str),
    ServerReference(&'a str),
    ReasonString(&'a str),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    /// Name and value; may repeat, and the order is kept [MQTT-3.3.2-18].
    UserProperty(&'a str, &'a str),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

impl<'a> Property<'a> {
    pub const fn id(&self) -> u8 {
        match self {
            Property::PayloadFormatIndicator(_) => id::PAYLOAD_FORMAT_INDICATOR,
            Property::MessageExpiryInterval(_) => id::MESSAGE_EXPIRY_INTERVAL,
            Property::ContentType(_) => id::CONTENT_TYPE,
            Property::ResponseTopic(_) => id::RESPONSE_TOPIC,
            Property::CorrelationData(_) => id::CORRELATION_DATA,
            Property::SubscriptionIdentifier(_) => id::SUBSCRIPTION_IDENTIFIER,
            Property::SessionExpiryInterval(_) => id::SESSION_EXPIRY_INTERVAL,
            Property::AssignedClientIdentifier(_) => id::ASSIGNED_CLIENT_IDENTIFIER,
            Property::ServerKeepAlive(_) => id::SERVER_KEEP_ALIVE,
            Property::AuthenticationMethod(_) => id::AUTHENTICATION_METHOD,
            Property::AuthenticationData(_) => id::AUTHENTICATION_DATA,
            Property::RequestProblemInformation(_) => id::REQUEST_PROBLEM_INFORMATION,
            Property::WillDelayInterval(_) => id::WILL_DELAY_INTERVAL,
            Property::RequestResponseInformation(_) => id::REQUEST_RESPONSE_INFORMATION,
            Property::ResponseInformation(_) => id::RESPONSE_INFORMATION,
            Property::ServerReference(_) => id::SERVER_REFERENCE,
            Property::ReasonString(_) => id::REASON_STRING,
            Property::ReceiveMaximum(_) => id::RECEIVE_MAXIMUM,
            Property::TopicAliasMaximum(_) => id::TOPIC_ALIAS_MAXIMUM,
            Property::TopicAlias(_) => id::TOPIC_ALIAS,
            Property::MaximumQoS(_) => id::MAXIMUM_QOS,
            Property::RetainAvailable(_) => id::RETAIN_AVAILABLE,
            Property::UserProperty(..) => id::USER_PROPERTY,
            Property::MaximumPacketSize(_) => id::MAXIMUM_PACKET_SIZE,
            Property::WildcardSubscriptionAvailable(_) => id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            Property::SubscriptionIdentifierAvailable(_) => id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            Property::SharedSubscriptionAvailable(_) => id::SHARED_SUBSCRIPTION_AVAILABLE,
        }
    }

    /// Bytes of the identifier and the value.
    pub fn encoded_len(&self) -> usize {
        1 + match *self {
            Property::PayloadFormatIndicator(_)
            | Property::RequestProblemInformation(_)
            | Property::RequestResponseInformation(_)
            | Property::MaximumQoS(_)
            | Property::RetainAvailable(_)
            | Property::WildcardSubscriptionAvailable(_)
            | Property::SubscriptionIdentifierAvailable(_)
            | Property::SharedSubscriptionAvailable(_) => 1,
            Property::ServerKeepAlive(_)
            | Property::ReceiveMaximum(_)
            | Property::TopicAliasMaximum(_)
            | Property::TopicAlias(_) => 2,
            Property::MessageExpiryInterval(_)
            | Property::SessionExpiryInterval(_)
            | Property::WillDelayInterval(_)
            | Property::MaximumPacketSize(_) => 4,
            Property::SubscriptionIdentifier(value) => variable_byte_integer_len(value as usize),
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => 2 + s.len(),
            Property::CorrelationData(b) | Property::AuthenticationData(b) => 2 + b.len(),
            Property::UserProperty(name, value) => 4 + name.len() + value.len(),
        }
    }

    /// Appends the identifier and value. Panics on a value the decoder would refuse.
    pub fn put(&self, out: &mut Vec<u8>) {
        self.check_value()
            .expect("the encoder sends only property values the decoder accepts");
        out.push(self.id());
        match *self {
            Property::PayloadFormatIndicator(b)
            | Property::RequestProblemInformation(b)
            | Property::RequestResponseInformation(b)
            | Property::MaximumQoS(b)
            | Property::RetainAvailable(b)
            | Property::WildcardSubscriptionAvailable(b)
            | Property::SubscriptionIdentifierAvailable(b)
            | Property::SharedSubscriptionAvailable(b) => out.push(b),
            Property::ServerKeepAlive(v)
            | Property::ReceiveMaximum(v)
            | Property::TopicAliasMaximum(v)
            | Property::TopicAlias(v) => out.extend_from_slice(&v.to_be_bytes()),
            Property::MessageExpiryInterval(v)
            | Property::SessionExpiryInterval(v)
            | Property::WillDelayInterval(v)
            | Property::MaximumPacketSize(v) => out.extend_from_slice(&v.to_be_bytes()),
            Property::SubscriptionIdentifier(v) => put_variable_byte_integer(v as usize, out),
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => put_string(s, out),
            Property::CorrelationData(b) | Property::AuthenticationData(b) => put_binary(b, out),
            Property::UserProperty(name, value) => {
                put_string(name, out);
                put_string(value, out);
            }
        }
    }

    /// Reads one property; the data type follows from the identifier (§2.2.2.2).
    fn read(reader: &mut Reader<'a>) -> Result<Property<'a>, DecodeError> {
        // Identifiers are variable byte integers, but every defined one fits in one byte.
        let property = match reader.variable_byte_integer()? {
            0x01 => Property::PayloadFormatIndicator(reader.u8()?),
            0x02 => Property::MessageExpiryInterval(reader.u32()?),
            0x03 => Property::ContentType(reader.string()?),
            0x08 => Property::ResponseTopic(reader.string()?),
            0x09 => Property::CorrelationData(reader.binary()?),
            0x0B => Property::SubscriptionIdentifier(reader.variable_byte_integer()?),
            0x11 => Property::SessionExpiryInterval(reader.u32()?),
            0x12 => Property::AssignedClientIdentifier(reader.string()?),
            0x13 => Property::ServerKeepAlive(reader.u16()?),
            0x15 => Property::AuthenticationMethod(reader.string()?),
            0x16 => Property::AuthenticationData(reader.binary()?),
            0x17 => Property::RequestProblemInformation(reader.u8()?),
            0x18 => Property::WillDelayInterval(reader.u32()?),
            0x19 => Property::RequestResponseInformation(reader.u8()?),
            0x1A => Property::ResponseInformation(reader.string()?),
            0x1C => Property::ServerReference(reader.string()?),
            0x1F => Property::ReasonString(reader.string()?),
            0x21 => Property::ReceiveMaximum(reader.u16()?),
            0x22 => Property::TopicAliasMaximum(reader.u16()?),
            0x23 => Property::TopicAlias(reader.u16()?),
            0x24 => Property::MaximumQoS(reader.u8()?),
            0x25 => Property::RetainAvailable(reader.u8()?),
            0x26 => Property::UserProperty(reader.string()?, reader.string()?),
            0x27 => Property::MaximumPacketSize(reader.u32()?),
            0x28 => Property::WildcardSubscriptionAvailable(reader.u8()?),
            0x29 => Property::SubscriptionIdentifierAvailable(reader.u8()?),
            0x2A => Property::SharedSubscriptionAvailable(reader.u8()?),
            // §2.2.2.2: an identifier the spec does not define is a Malformed Packet.
            _ => return Err(DecodeError::InvalidPropertyIdentifier),
        };
        Ok(property)
    }

    /// The value rules that do not depend on the packet.
    fn check_value(&self) -> Result<(), DecodeError> {
        match *self {
            // "It is a Protocol Error to include ... a value other than 0 or 1"
            // (§3.1.2.11.6, §3.1.2.11.7, §3.2.2.3.4, §3.2.2.3.5, §3.2.2.3.11..13); the
            // Payload Format Indicator (§3.3.2.3.2) defines only 0 and 1 as well.
            Property::PayloadFormatIndicator(b)
            | Property::RequestProblemInformation(b)
            | Property::RequestResponseInformation(b)
            | Property::MaximumQoS(b)
            | Property::RetainAvailable(b)
            | Property::WildcardSubscriptionAvailable(b)
            | Property::SubscriptionIdentifierAvailable(b)
            | Property::SharedSubscriptionAvailable(b)
                if b > 1 =>
            {
                Err(DecodeError::InvalidPropertyValue)
            }
            // §3.8.2.1.2
            Property::SubscriptionIdentifier(0) => Err(DecodeError::ZeroSubscriptionIdentifier),
            Property::SubscriptionIdentifier(v) if v > VARIABLE_BYTE_INTEGER_MAX => {
                Err(DecodeError::MalformedVariableByteInteger)
            }
            // §3.1.2.11.3, §3.2.2.3.3
            Property::ReceiveMaximum(0) => Err(DecodeError::ZeroReceiveMaximum),
            // [MQTT-3.3.2-8]
            Property::TopicAlias(0) => Err(DecodeError::ZeroTopicAlias),
            // §3.1.2.11.4, §3.2.2.3.6
            Property::MaximumPacketSize(0) => Err(DecodeError::ZeroMaximumPacketSize),
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s)
                if s.contains('\0') =>
            {
                Err(DecodeError::NullCharacter)
            }
            Property::UserProperty(name, value) if name.contains('\0') || value.contains('\0') => {
                Err(DecodeError::NullCharacter)
            }
            _ => Ok(()),
        }
    }
}

/// Where a property list sits, which decides the identifiers it may hold (§2.2.2.2 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PropertyScope {
    Connect,
    /// The will properties in the CONNECT payload (§3.1.3.2).
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP, which allow the same properties.
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

const fn bit(id: u8) -> u64 {
    1 << id
}

impl PropertyScope {
    /// The identifiers allowed here, as a bit set indexed by identifier.
    const fn allowed(self) -> u64 {
        let message = bit(id::PAYLOAD_FORMAT_INDICATOR)
            | bit(id::MESSAGE_EXPIRY_INTERVAL)
            | bit(id::CONTENT_TYPE)
            | bit(id::RESPONSE_TOPIC)
            | bit(id::CORRELATION_DATA)
            | bit(id::USER_PROPERTY);
        let ack = bit(id::REASON_STRING) | bit(id::USER_PROPERTY);
        match self {
            PropertyScope::Connect => {
                bit(id::SESSION_EXPIRY_INTERVAL)
                    | bit(id::AUTHENTICATION_METHOD)
                    | bit(id::AUTHENTICATION_DATA)
                    | bit(id::REQUEST_PROBLEM_INFORMATION)
                    | bit(id::REQUEST_RESPONSE_INFORMATION)
                    | bit(id::RECEIVE_MAXIMUM)
                    | bit(id::TOPIC_ALIAS_MAXIMUM)
                    | bit(id::USER_PROPERTY)
                    | bit(id::MAXIMUM_PACKET_SIZE)
            }
            PropertyScope::Will => message | bit(id::WILL_DELAY_INTERVAL),
            PropertyScope::ConnAck => {
                bit(id::SESSION_EXPIRY_INTERVAL)
                    | bit(id::ASSIGNED_CLIENT_IDENTIFIER)
                    | bit(id::SERVER_KEEP_ALIVE)
                    | bit(id::AUTHENTICATION_METHOD)
                    | bit(id::AUTHENTICATION_DATA)
                    | bit(id::RESPONSE_INFORMATION)
                    | bit(id::SERVER_REFERENCE)
                    | bit(id::REASON_STRING)
                    | bit(id::RECEIVE_MAXIMUM)
                    | bit(id::TOPIC_ALIAS_MAXIMUM)
                    | bit(id::MAXIMUM_QOS)
                    | bit(id::RETAIN_AVAILABLE)
                    | bit(id::USER_PROPERTY)
                    | bit(id::MAXIMUM_PACKET_SIZE)
                    | bit(id::WILDCARD_SUBSCRIPTION_AVAILABLE)
                    | bit(id::SUBSCRIPTION_IDENTIFIER_AVAILABLE)
                    | bit(id::SHARED_SUBSCRIPTION_AVAILABLE)
            }
            PropertyScope::Publish => {
                message | bit(id::SUBSCRIPTION_IDENTIFIER) | bit(id::TOPIC_ALIAS)
            }
            PropertyScope::Subscribe => bit(id::SUBSCRIPTION_IDENTIFIER) | bit(id::USER_PROPERTY),
            PropertyScope::Unsubscribe => bit(id::USER_PROPERTY),
            PropertyScope::Ack | PropertyScope::SubAck | PropertyScope::UnsubAck => ack,
            PropertyScope::Disconnect => {
                ack | bit(id::SESSION_EXPIRY_INTERVAL) | bit(id::SERVER_REFERENCE)
            }
            PropertyScope::Auth => {
                ack | bit(id::AUTHENTICATION_METHOD) | bit(id::AUTHENTICATION_DATA)
            }
        }
    }

    /// The identifiers that may appear more than once here: user properties everywhere, and
    /// subscription identifiers in a PUBLISH a server sends ([MQTT-3.3.4-4] one per matching
    /// subscription). The decoder refuses them in a client's PUBLISH [MQTT-3.3.4-6].
    const fn repeatable(self) -> u64 {
        match self {
            PropertyScope::Publish => bit(id::USER_PROPERTY) | bit(id::SUBSCRIPTION_IDENTIFIER),
            _ => bit(id::USER_PROPERTY),
        }
    }

    pub const fn allows(self, id: u8) -> bool {
        id < 64 && self.allowed() & bit(id) != 0
    }
}

/// A validated property list, borrowed from a packet or a [`PropertiesBuf`].
///
/// Equality compares the bytes, so two lists with the same properties in another order differ;
/// that is what a round trip needs.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Properties<'a> {
    raw: &'a [u8],
}

/// Writes the accessor of a property that appears at most once: the value if present.
/// A flag (a byte property that may only be 0 or 1, §2.2.2.2) reads as `bool`.
macro_rules! single_accessors {
    ($($(#[$doc:meta])* $name:ident: $id:ident => $variant:ident, flag;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self) -> Option<bool> {
                match self.find(id::$id)? {
                    Property::$variant(value) => Some(value == 1),
                    _ => None,
                }
            }
        )*
    };
    ($($(#[$doc:meta])* $name:ident: $id:ident => $variant:ident, $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(&self) -> Option<$ty> {
                match self.find(id::$id)? {
                    Property::$variant(value) => Some(value),
                    _ => None,
                }
            }
        )*
    };
}

impl<'a> Properties<'a> {
    pub const EMPTY: Properties<'static> = Properties { raw: &[] };

    /// Validates `raw` (the bytes after the property length) as the properties of `scope`.
    pub fn parse(raw: &'a [u8], scope: PropertyScope) -> Result<Properties<'a>, DecodeError> {
        let mut reader = Reader::new(raw);
        let mut seen = 0u64;
        while !reader.is_empty() {
            let property = Property::read(&mut reader)?;
            let id = property.id();
            // §2.2.2.2: an identifier not valid for the packet type is a Malformed Packet.
            if !scope.allows(id) {
                return Err(DecodeError::InvalidPropertyIdentifier);
            }
            // "It is a Protocol Error to include <property> more than once."
            if seen & bit(id) != 0 && scope.repeatable() & bit(id) == 0 {
                return Err(DecodeError::DuplicateProperty);
            }
            seen |= bit(id);
            property.check_value()?;
        }
        // "It is a Protocol Error to include Authentication Data if there is no
        // Authentication Method" (§3.1.2.11.10, §3.2.2.3.18, §3.15.2.2.3).
        if seen & bit(id::AUTHENTICATION_DATA) != 0 && seen & bit(id::AUTHENTICATION_METHOD) == 0 {
            return Err(DecodeError::AuthenticationDataWithoutMethod);
        }
        Ok(Properties { raw })
    }

    /// Reads a property length (a variable byte integer) and that many bytes of properties.
    pub(crate) fn read(
        reader: &mut Reader<'a>,
        scope: PropertyScope,
    ) -> Result<Properties<'a>, DecodeError> {
        let len = reader.variable_byte_integer()?;
        let raw = reader.take(len as usize)?;
        Properties::parse(raw, scope)
    }

    /// The property bytes, without the length prefix.
    pub const fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub const fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Bytes on the wire: the property length and the properties.
    pub fn encoded_len(&self) -> usize {
        variable_byte_integer_len(self.raw.len()) + self.raw.len()
    }

    /// Appends the property length and the properties.
    pub fn put(&self, out: &mut Vec<u8>) {
        put_variable_byte_integer(self.raw.len(), out);
        out.extend_from_slice(self.raw);
    }

    /// The properties in wire order.
    pub fn iter(&self) -> PropertyIter<'a> {
        PropertyIter {
            reader: Reader::new(self.raw),
        }
    }

    /// Copies every property whose identifier is not in `skip`, in order. A server forwards a
    /// PUBLISH's properties unchanged except the Topic Alias and Subscription Identifiers,
    /// which are per connection ([MQTT-3.3.2-7], [MQTT-3.3.4-4]).
    pub fn copy_except(&self, skip: &[u8], out: &mut PropertiesBuf) {
        let mut reader = Reader::new(self.raw);
        loop {
            let before = reader.remaining();
            let Ok(property) = Property::read(&mut reader) else {
                break;
            };
            if !skip.contains(&property.id()) {
                let len = before.len() - reader.remaining().len();
                out.bytes.extend_from_slice(&before[..len]);
            }
        }
    }

    fn find(&self, id: u8) -> Option<Property<'a>> {
        self.iter().find(|property| property.id() == id)
    }

    single_accessors! {
        payload_format_indicator: PAYLOAD_FORMAT_INDICATOR => PayloadFormatIndicator, u8;
        message_expiry_interval_s: MESSAGE_EXPIRY_INTERVAL => MessageExpiryInterval, u32;
        content_type: CONTENT_TYPE => ContentType, &'a str;
        response_topic: RESPONSE_TOPIC => ResponseTopic, &'a str;
        correlation_data: CORRELATION_DATA => CorrelationData, &'a [u8];
        session_expiry_interval_s: SESSION_EXPIRY_INTERVAL => SessionExpiryInterval, u32;
        assigned_client_identifier: ASSIGNED_CLIENT_IDENTIFIER => AssignedClientIdentifier, &'a str;
        server_keep_alive_s: SERVER_KEEP_ALIVE => ServerKeepAlive, u16;
        authentication_method: AUTHENTICATION_METHOD => AuthenticationMethod, &'a str;
        authentication_data: AUTHENTICATION_DATA => AuthenticationData, &'a [u8];
        will_delay_interval_s: WILL_DELAY_INTERVAL => WillDelayInterval, u32;
        response_information: RESPONSE_INFORMATION => ResponseInformation, &'a str;
        server_reference: SERVER_REFERENCE => ServerReference, &'a str;
        reason_string: REASON_STRING => ReasonString, &'a str;
        receive_maximum: RECEIVE_MAXIMUM => ReceiveMaximum, u16;
        topic_alias_maximum: TOPIC_ALIAS_MAXIMUM => TopicAliasMaximum, u16;
        topic_alias: TOPIC_ALIAS => TopicAlias, u16;
        maximum_packet_size_bytes: MAXIMUM_PACKET_SIZE => MaximumPacketSize, u32;
    }

    single_accessors! {
        request_problem_information: REQUEST_PROBLEM_INFORMATION => RequestProblemInformation, flag;
        request_response_information: REQUEST_RESPONSE_INFORMATION => RequestResponseInformation, flag;
        retain_available: RETAIN_AVAILABLE => RetainAvailable, flag;
        wildcard_subscription_available: WILDCARD_SUBSCRIPTION_AVAILABLE => WildcardSubscriptionAvailable, flag;
        subscription_identifier_available: SUBSCRIPTION_IDENTIFIER_AVAILABLE => SubscriptionIdentifierAvailable, flag;
        shared_subscription_available: SHARED_SUBSCRIPTION_AVAILABLE => SharedSubscriptionAvailable, flag;
    }

    /// Every subscription identifier, in order (several only in a PUBLISH from a server).
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + 'a {
        self.iter().filter_map(|property| match property {
            Property::SubscriptionIdentifier(v) => Some(v),
            _ => None,
        })
    }

    pub fn maximum_qos(&self) -> Option<QoS> {
        match self.find(id::MAXIMUM_QOS)? {
            Property::MaximumQoS(v) => QoS::from_bits(v),
            _ => None,
        }
    }

    /// Every user property as (name, value), in order.
    pub fn user_properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.iter().filter_map(|property| match property {
            Property::UserProperty(name, value) => Some((name, value)),
            _ => None,
        })
    }
}

impl std::fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Properties<'a> {
    type Item = Property<'a>;
    type IntoIter = PropertyIter<'a>;

    fn into_iter(self) -> PropertyIter<'a> {
        self.iter()
    }
}

/// The properties of a [`Properties`] view, in wire order.
pub struct PropertyIter<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for PropertyIter<'a> {
    type Item = Property<'a>;

    fn next(&mut self) -> Option<Property<'a>> {
        // The bytes were validated when the view was made; an error cannot happen, and would
        // end the iteration rather than panic.
        Property::read(&mut self.reader).ok()
    }
}

/// An owned property list being built, for packets the broker sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertiesBuf {
    bytes: Vec<u8>,
}

impl PropertiesBuf {
    pub fn new() -> PropertiesBuf {
        PropertiesBuf::default()
    }

    /// Appends one property. Panics on a value the decoder would refuse (a programmer error);
    /// which properties a packet allows is checked when a packet is encoded.
    pub fn push(&mut self, property: Property<'_>) -> &mut PropertiesBuf {
        property.put(&mut self.bytes);
        self
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    pub fn as_properties(&self) -> Properties<'_> {
        Properties { raw: &self.bytes }
    }
}

/// Bytes a variable byte integer takes (§1.5.5).
pub const fn variable_byte_integer_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends `value` as a variable byte integer (§1.5.5), in the fewest bytes [MQTT-1.5.5-1].
pub fn put_variable_byte_integer(mut value: usize, out: &mut Vec<u8>) {
    assert!(
        value <= VARIABLE_BYTE_INTEGER_MAX as usize,
        "a variable byte integer holds at most 268 435 455"
    );
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            break;
        }
    }
}

fn put_binary(bytes: &[u8], out: &mut Vec<u8>) {
    let len =
        u16::try_from(bytes.len()).expect("string and binary fields are at most 65 535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_string(s: &str, out: &mut Vec<u8>) {
    put_binary(s.as_bytes(), out);
}

#[cfg(test)]
#[path = "properties_tests.rs"]
mod tests;
