//! The SESSION record: a persistent session's whole state, written again whenever it changed
//! (conflated per flush), so that the newest record of a client identifier is the session.
//!
//! ```text
//! SESSION body (kind 6) after kind, stamp and the client identifier (as `topic`):
//!   version: u8 (protocol level: 3, 4, 5) | expiry_s: u32 LE (0xFFFFFFFF: never)
//!   | expires_at_ms: u64 LE (Unix ms; 0: connected when written, or never expires)
//!   | offline_since_ms: u64 LE (Unix ms; 0: connected when written)
//!   | subscription_count: u32 LE, then each:
//!       filter_len: u16 LE, filter | options: u8 (bits 0-1 QoS, 2 No Local,
//!       3 Retain As Published) | subscription_id: u32 LE (0: none)
//!   | message_count: u32 LE, then each, in delivery order:
//!       packet_id: u16 LE (0: queued, not sent yet)
//!       | topic_len: u16 LE, topic | qos: u8 | flags: u8 (bit 0 RETAIN)
//!       | expires_at_ms: u64 LE (0: never) | id_count: u8, subscription_id: u32 LE each
//!       | properties_len: u32 LE, properties | payload_len: u32 LE, payload
//!       | origin: u8 (0: none; 1: a tentative QoS 2 publish, whose origin follows)
//!           client_id_len: u16 LE, client_id | incarnation: u64 LE | seq: u64 LE
//!       | cluster: u8 (0: none; 1: its identity in the cluster follows, `broker/message_ids.rs`)
//!           id: u128 LE
//!   | released_count: u16 LE, packet_id: u16 LE each (PUBREL sent, PUBCOMP awaited)
//!   | inbound_count: u16 LE, packet_id: u16 LE each (QoS 2 received, PUBREL awaited)
//!   | will: u8 (0: none, 1: a delayed will follows)
//!       due_ms: u64 LE (Unix ms) | topic_len: u16 LE, topic | qos: u8 | flags: u8 (bit 0
//!       RETAIN) | expires_at_ms: u64 LE (0: never) | properties_len: u32 LE, properties
//!       | payload_len: u32 LE, payload
//!   | incarnation: u64 LE (0: none yet) | committed_seq: u64 LE (its own tentative
//!     publishes committed up to this number; `broker/origins.rs`)
//!   | sent_count: u16 LE, id: u128 LE each (in cluster mode, the identities of the
//!     messages its client was sent lately, oldest first)
//! SESSION body of the third format (kind 6), still read: the same without the messages'
//!   cluster identities and without sent_count and its identities.
//! SESSION body of the second format (kind 5), still read: the same as kind 6 without the
//!   origins and without incarnation and committed_seq.
//! SESSION body of the first format (kind 3), still read: the same as kind 5 without
//!   offline_since_ms, without each message's packet_id, and without what follows the
//!   messages.
//! SESSION_END body: kind, stamp and the client identifier only.
//! ```

use super::record::{
    self, KIND_SESSION, KIND_SESSION_END, RECORD_BYTES_MAX, Reader, StoredMessage,
};
use crate::broker::{SessionImage, SubscriptionImage};
use crate::protocol::mqtt::{PacketId, ProtocolVersion, QoS};

const NO_LOCAL: u8 = 1 << 2;
const RETAIN_AS_PUBLISHED: u8 = 1 << 3;
const RETAIN: u8 = 1;

/// Which SESSION body a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// Kind 3: no packet identifiers, no QoS 2 state, no will, no offline time.
    First,
    /// Kind 5: no origins.
    Second,
    /// Kind 6: no cluster identities.
    Third,
    /// Kind 7, written now.
    Current,
}

/// A message a stored session is still to receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredQueued {
    /// Its `qos` is the QoS it is delivered with.
    pub message: StoredMessage,
    pub retain: bool,
    pub ids: Vec<u32>,
    /// The identifier it was sent with and not acknowledged; `None`: not sent yet.
    pub packet_id: Option<PacketId>,
    /// A tentative QoS 2 publish's origin: dropped at load unless committed
    /// (`store/uncommitted.rs`).
    pub origin: Option<StoredOrigin>,
    /// Its identity in the cluster, if it has one.
    pub id: Option<u128>,
}

/// Where a tentative QoS 2 publish came from (`broker/origins.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrigin {
    pub client_id: Box<str>,
    pub incarnation: u64,
    pub seq: u64,
}

/// A will a stored session holds back for its Will Delay Interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWill {
    pub message: StoredMessage,
    pub retain: bool,
    /// When it is published (Unix ms) unless its client comes back first.
    pub due_ms: u64,
}

/// A session as a SESSION record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    pub client_id: Box<str>,
    pub version: ProtocolVersion,
    pub expiry_s: u32,
    /// `None`: connected when written, or never expires.
    pub expires_at_ms: Option<u64>,
    /// Since when its client is away (Unix ms); `None`: connected when written.
    pub offline_since_ms: Option<u64>,
    pub subscriptions: Vec<SubscriptionImage>,
    pub messages: Vec<StoredQueued>,
    /// QoS 2 publishes sent whose PUBREC came, in order.
    pub released: Vec<PacketId>,
    /// QoS 2 publishes received whose PUBREL has not come.
    pub inbound_qos2: Vec<PacketId>,
    pub will: Option<StoredWill>,
    /// 0: none yet (or a record of an older format).
    pub incarnation: u64,
    pub committed_seq: u64,
    /// The cluster identities of what its client was sent lately, oldest first.
    pub sent_ids: Vec<u128>,
}

/// A session to encode, with its wall-clock times fixed by the writer.
pub struct SessionRef<'a> {
    pub stamp: u64,
    pub image: &'a SessionImage,
    pub expires_at_ms: Option<u64>,
    pub offline_since_ms: Option<u64>,
    /// The wall-clock expiry of each of `image.messages`.
    pub message_expiry_ms: &'a [Option<u64>],
    /// When the delayed will is due and when it expires, if the image holds one.
    pub will_due_ms: u64,
    pub will_expiry_ms: Option<u64>,
}

fn message_bytes(queued: &crate::broker::QueuedImage) -> usize {
    let message = &queued.message;
    // At most: the origin may be committed by the time it is encoded, and then left out.
    let origin = message
        .origin
        .as_ref()
        .map_or(0, |origin| 2 + origin.client_id.len() + 16);
    let id = if message.id.is_some() { 16 } else { 0 };
    1 + origin
        + 1
        + id
        + 2
        + 2
        + message.topic.len()
        + 11
        + 4 * queued.ids.len()
        + 8
        + message.properties.len()
        + message.payload.len()
}

/// At most this many identifiers of each kind are written: a window and the inbound QoS 2
/// state are bounded by `inflight_max` and `inbound_qos2_max`, both 16-bit.
const IDS_MAX: usize = u16::MAX as usize;

/// The bytes of what follows the messages.
fn tail_bytes(image: &SessionImage) -> usize {
    let ids = image.released.len().min(IDS_MAX) + image.inbound_qos2.len().min(IDS_MAX);
    let will = image.delayed_will.as_ref().map_or(0, |will| {
        let message = &will.message;
        8 + 2 + message.topic.len() + 2 + 8 + 8 + message.properties.len() + message.payload.len()
    });
    4 + 2 * ids + 1 + will + 16 + 2 + 16 * image.sent_ids.len().min(SENT_IDS_MAX)
}

/// At most this many identities of what the client was sent are written (`sent_ids_max` is
/// bounded far below).
const SENT_IDS_MAX: usize = u16::MAX as usize;

/// Appends a SESSION record to `out`; returns its length. Messages that would take the record
/// past [`RECORD_BYTES_MAX`] are left out, the oldest first, as a full session queue drops
/// them; returns how many too.
pub fn encode(out: &mut Vec<u8>, session: &SessionRef<'_>) -> (usize, usize) {
    let image = session.image;
    let start = record::begin(out, KIND_SESSION, session.stamp, &image.client_id);
    out.push(image.version.level());
    out.extend_from_slice(&image.expiry_s.to_le_bytes());
    out.extend_from_slice(&session.expires_at_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&session.offline_since_ms.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&(image.subscriptions.len() as u32).to_le_bytes());
    for subscription in &image.subscriptions {
        put_str16(out, &subscription.filter);
        let mut options = subscription.qos.bits();
        if subscription.no_local {
            options |= NO_LOCAL;
        }
        if subscription.retain_as_published {
            options |= RETAIN_AS_PUBLISHED;
        }
        out.push(options);
        out.extend_from_slice(&subscription.id.to_le_bytes());
    }
    // Room for the messages: the body so far, the count and what follows them are taken.
    let taken = out.len() - start + 4 + tail_bytes(image);
    let mut room = RECORD_BYTES_MAX.saturating_sub(taken);
    let mut first = image.messages.len();
    while first > 0 {
        let bytes = message_bytes(&image.messages[first - 1]);
        if bytes > room {
            break;
        }
        room -= bytes;
        first -= 1;
    }
    let kept = &image.messages[first..];
    out.extend_from_slice(&(kept.len() as u32).to_le_bytes());
    for (queued, expires_at_ms) in kept.iter().zip(&session.message_expiry_ms[first..]) {
        let packet_id = queued.packet_id.map_or(0, PacketId::get);
        out.extend_from_slice(&packet_id.to_le_bytes());
        let message = &queued.message;
        put_str16(out, &message.topic);
        out.push(queued.qos.bits());
        out.push(if queued.retain { RETAIN } else { 0 });
        out.extend_from_slice(&expires_at_ms.unwrap_or(0).to_le_bytes());
        // A delivery carries at most `SUBSCRIPTION_IDS_PER_DELIVERY_MAX` identifiers.
        let ids = &queued.ids[..queued.ids.len().min(usize::from(u8::MAX))];
        out.push(ids.len() as u8);
        for id in ids {
            out.extend_from_slice(&id.to_le_bytes());
        }
        record::put_bytes32(out, &message.properties);
        record::put_bytes32(out, &message.payload);
        // Committed, a copy is kept whatever becomes of its publisher's session.
        match message.origin.as_ref().filter(|origin| !origin.committed()) {
            None => out.push(0),
            Some(origin) => {
                out.push(1);
                // A client identifier is an MQTT string, at most 65 535 bytes.
                put_str16(out, &origin.client_id);
                out.extend_from_slice(&origin.incarnation.to_le_bytes());
                out.extend_from_slice(&origin.seq.to_le_bytes());
            }
        }
        match message.id {
            None => out.push(0),
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.0.to_le_bytes());
            }
        }
    }
    put_ids(out, &image.released);
    put_ids(out, &image.inbound_qos2);
    match &image.delayed_will {
        None => out.push(0),
        Some(will) => {
            out.push(1);
            out.extend_from_slice(&session.will_due_ms.to_le_bytes());
            let message = &will.message;
            put_str16(out, &message.topic);
            out.push(message.qos.bits());
            out.push(if message.retain { RETAIN } else { 0 });
            out.extend_from_slice(&session.will_expiry_ms.unwrap_or(0).to_le_bytes());
            record::put_bytes32(out, &message.properties);
            record::put_bytes32(out, &message.payload);
        }
    }
    out.extend_from_slice(&image.incarnation.to_le_bytes());
    out.extend_from_slice(&image.committed_seq.to_le_bytes());
    // The newest, should there be more than a record says.
    let sent = &image.sent_ids[image.sent_ids.len().saturating_sub(SENT_IDS_MAX)..];
    out.extend_from_slice(&(sent.len() as u16).to_le_bytes());
    for id in sent {
        out.extend_from_slice(&id.0.to_le_bytes());
    }
    (record::finish(out, start), first)
}

fn put_ids(out: &mut Vec<u8>, ids: &[PacketId]) {
    let ids = &ids[..ids.len().min(IDS_MAX)];
    out.extend_from_slice(&(ids.len() as u16).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.get().to_le_bytes());
    }
}

/// Appends a SESSION_END record to `out`; returns its length.
pub fn encode_end(out: &mut Vec<u8>, stamp: u64, client_id: &str) -> usize {
    let start = record::begin(out, KIND_SESSION_END, stamp, client_id);
    record::finish(out, start)
}

fn put_str16(out: &mut Vec<u8>, text: &str) {
    // Filters and topics are at most 65 535 bytes [MQTT-1.5.4-1].
    let len = u16::try_from(text.len()).expect("an MQTT string fits 16 bits");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn str16(reader: &mut Reader<'_>) -> Option<Box<str>> {
    let len = usize::from(reader.u16()?);
    Some(std::str::from_utf8(reader.take(len)?).ok()?.into())
}

/// A packet identifier; 0 is none.
fn packet_id(reader: &mut Reader<'_>) -> Option<Option<PacketId>> {
    Some(PacketId::new(reader.u16()?))
}

/// A count of identifiers and the identifiers, none of them 0.
fn ids(reader: &mut Reader<'_>) -> Option<Vec<PacketId>> {
    let count = usize::from(reader.u16()?);
    if reader.0.len() < 2 * count {
        return None;
    }
    (0..count).map(|_| packet_id(reader)?).collect()
}

/// A message's topic, QoS, flags and expiry, properties and payload.
fn message_head(reader: &mut Reader<'_>) -> Option<(StoredMessage, bool)> {
    let topic = str16(reader)?;
    let qos = QoS::from_bits(reader.u8()?)?;
    let retain = reader.u8()? & RETAIN != 0;
    let expires_at_ms = Some(reader.u64()?).filter(|&ms| ms != 0);
    let message = StoredMessage {
        topic,
        qos,
        expires_at_ms,
        properties: Box::default(),
        payload: Box::default(),
    };
    Some((message, retain))
}

/// The fields of a SESSION body after its client identifier; `None` if they do not parse.
pub(super) fn parse(
    reader: &mut Reader<'_>,
    client_id: Box<str>,
    format: Format,
) -> Option<StoredSession> {
    let current = format != Format::First;
    let origins = matches!(format, Format::Third | Format::Current);
    let cluster_ids = format == Format::Current;
    let version = match reader.u8()? {
        3 => ProtocolVersion::V31,
        4 => ProtocolVersion::V311,
        5 => ProtocolVersion::V5,
        _ => return None,
    };
    let expiry_s = reader.u32()?;
    let expires_at_ms = Some(reader.u64()?).filter(|&ms| ms != 0);
    let offline_since_ms = match current {
        true => Some(reader.u64()?).filter(|&ms| ms != 0),
        false => None,
    };
    // Counts are checked against the bytes left before anything is reserved: each entry
    // takes at least 7 bytes, so a damaged count cannot make the loader allocate much.
    let count = reader.u32()? as usize;
    let mut subscriptions = Vec::with_capacity(count.min(reader.0.len() / 7));
    for _ in 0..count {
        let filter = str16(reader)?;
        let options = reader.u8()?;
        subscriptions.push(SubscriptionImage {
            filter,
            qos: QoS::from_bits(options & 3)?,
            no_local: options & NO_LOCAL != 0,
            retain_as_published: options & RETAIN_AS_PUBLISHED != 0,
            id: reader.u32()?,
        });
    }
    let count = reader.u32()? as usize;
    let mut messages = Vec::with_capacity(count.min(reader.0.len() / 21));
    for _ in 0..count {
        let packet_id = match current {
            true => packet_id(reader)?,
            false => None,
        };
        let (mut message, retain) = message_head(reader)?;
        let ids = (0..reader.u8()?)
            .map(|_| reader.u32())
            .collect::<Option<Vec<u32>>>()?;
        message.properties = reader.bytes32()?.into();
        message.payload = reader.bytes32()?.into();
        let origin = match origins {
            true => origin(reader)?,
            false => None,
        };
        let id = match cluster_ids {
            true => cluster_id(reader)?,
            false => None,
        };
        messages.push(StoredQueued {
            message,
            retain,
            ids,
            packet_id,
            origin,
            id,
        });
    }
    let mut session = StoredSession {
        client_id,
        version,
        expiry_s,
        expires_at_ms,
        offline_since_ms,
        subscriptions,
        messages,
        released: Vec::new(),
        inbound_qos2: Vec::new(),
        will: None,
        incarnation: 0,
        committed_seq: 0,
        sent_ids: Vec::new(),
    };
    if current {
        session.released = ids(reader)?;
        session.inbound_qos2 = ids(reader)?;
        session.will = match reader.u8()? {
            0 => None,
            1 => {
                let due_ms = reader.u64()?;
                let (mut message, retain) = message_head(reader)?;
                message.properties = reader.bytes32()?.into();
                message.payload = reader.bytes32()?.into();
                Some(StoredWill {
                    message,
                    retain,
                    due_ms,
                })
            }
            _ => return None,
        };
    }
    if origins {
        session.incarnation = reader.u64()?;
        session.committed_seq = reader.u64()?;
    }
    if cluster_ids {
        let count = usize::from(reader.u16()?);
        session.sent_ids = (0..count)
            .map(|_| reader.u128())
            .collect::<Option<Vec<u128>>>()?;
    }
    Some(session)
}

/// A message's identity in the cluster, if it has one; `None` if it does not parse.
fn cluster_id(reader: &mut Reader<'_>) -> Option<Option<u128>> {
    match reader.u8()? {
        0 => Some(None),
        1 => Some(Some(reader.u128()?)),
        _ => None,
    }
}

/// A message's origin, if it has one; `None` if it does not parse.
fn origin(reader: &mut Reader<'_>) -> Option<Option<StoredOrigin>> {
    match reader.u8()? {
        0 => Some(None),
        1 => Some(Some(StoredOrigin {
            client_id: str16(reader)?,
            incarnation: reader.u64()?,
            seq: reader.u64()?,
        })),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message_ids::MessageId;
    use crate::broker::{Origin, QueuedImage, RoutedMessage, WillImage};
    use crate::store::record::{HEADER_BYTES, Record, scan};
    use std::sync::Arc;
    use std::time::Instant;

    fn id(value: u16) -> PacketId {
        PacketId::new(value).expect("test ids are non-zero")
    }

    fn image() -> SessionImage {
        let mut message = RoutedMessage::new("score/1", b"2-1", QoS::AtLeastOnce, false);
        message.properties = Box::from(&[0x03, 0x00, 0x01, b'j'][..]);
        message.id = Some(MessageId(0xfeed_0000_0000_0000_0000_0000_0000_0077));
        SessionImage {
            client_id: "fan-7".into(),
            version: ProtocolVersion::V5,
            expiry_s: 3600,
            expires_at: None,
            connected: false,
            subscriptions: vec![
                SubscriptionImage {
                    filter: "score/#".into(),
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: false,
                    id: 42,
                },
                SubscriptionImage {
                    filter: "$share/g/news".into(),
                    qos: QoS::ExactlyOnce,
                    no_local: false,
                    retain_as_published: true,
                    id: 0,
                },
            ],
            messages: vec![
                QueuedImage {
                    message: Arc::new(message),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    ids: vec![42],
                    packet_id: Some(id(513)),
                },
                QueuedImage {
                    message: Arc::new(RoutedMessage {
                        origin: Some(Arc::new(Origin::new("pub-2", u64::MAX - 1, 300))),
                        id: None,
                        ..RoutedMessage::new("a", b"", QoS::ExactlyOnce, true)
                    }),
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    ids: vec![],
                    packet_id: None,
                },
            ],
            released: vec![id(3), id(65535)],
            inbound_qos2: vec![id(9)],
            delayed_will: Some(WillImage {
                message: Arc::new(RoutedMessage::new(
                    "fans/7",
                    b"gone",
                    QoS::AtLeastOnce,
                    true,
                )),
                due: Instant::now(),
            }),
            incarnation: 0x0102_0304_0506_0708,
            committed_seq: 41,
            sent_ids: vec![MessageId(5), MessageId(u128::MAX)],
        }
    }

    fn session_ref(image: &SessionImage) -> SessionRef<'_> {
        SessionRef {
            stamp: 9,
            image,
            expires_at_ms: Some(1_700_000_000_000),
            offline_since_ms: Some(1_699_999_000_000),
            message_expiry_ms: &[Some(1_700_000_000_500), None],
            will_due_ms: 1_700_000_000_030,
            will_expiry_ms: Some(1_700_000_099_000),
        }
    }

    #[test]
    fn a_session_round_trips_in_order() {
        let image = image();
        let mut bytes = Vec::new();
        let (len, left_out) = encode(&mut bytes, &session_ref(&image));
        assert_eq!((len, left_out), (bytes.len(), 0));
        encode_end(&mut bytes, 10, "gone");
        let found = scan(&bytes, false).expect("clean");
        let [
            Record::Session { stamp: 9, session },
            Record::SessionEnd {
                stamp: 10,
                client_id,
            },
        ] = &found.records[..]
        else {
            panic!("two session records: {:?}", found.records);
        };
        assert_eq!(&**client_id, "gone");
        assert_eq!(&*session.client_id, "fan-7");
        assert_eq!(session.version, ProtocolVersion::V5);
        assert_eq!(session.expiry_s, 3600);
        assert_eq!(session.expires_at_ms, Some(1_700_000_000_000));
        assert_eq!(session.offline_since_ms, Some(1_699_999_000_000));
        assert_eq!(session.subscriptions, image.subscriptions);
        let topics: Vec<&str> = session.messages.iter().map(|m| &*m.message.topic).collect();
        assert_eq!(topics, ["score/1", "a"]);
        let first = &session.messages[0];
        assert_eq!(first.packet_id, Some(id(513)));
        assert_eq!(first.ids, [42]);
        assert_eq!(first.message.expires_at_ms, Some(1_700_000_000_500));
        assert_eq!(&*first.message.properties, &[0x03, 0x00, 0x01, b'j']);
        assert_eq!(&*first.message.payload, b"2-1");
        assert_eq!(first.origin, None);
        assert_eq!(first.id, Some(0xfeed_0000_0000_0000_0000_0000_0000_0077));
        let second = &session.messages[1];
        assert_eq!(second.packet_id, None);
        assert_eq!(second.id, None);
        assert_eq!(session.sent_ids, [5, u128::MAX]);
        let origin = StoredOrigin {
            client_id: "pub-2".into(),
            incarnation: u64::MAX - 1,
            seq: 300,
        };
        assert_eq!(second.origin, Some(origin));
        assert_eq!(session.incarnation, 0x0102_0304_0506_0708);
        assert_eq!(session.committed_seq, 41);
        assert!(second.retain);
        assert_eq!(second.message.qos, QoS::ExactlyOnce);
        assert_eq!(second.message.expires_at_ms, None);
        assert_eq!(session.released, [id(3), id(65535)]);
        assert_eq!(session.inbound_qos2, [id(9)]);
        let will = session.will.as_ref().expect("a delayed will");
        assert_eq!(will.due_ms, 1_700_000_000_030);
        assert!(will.retain);
        assert_eq!(&*will.message.topic, "fans/7");
        assert_eq!(will.message.qos, QoS::AtLeastOnce);
        assert_eq!(will.message.expires_at_ms, Some(1_700_000_099_000));
        assert_eq!(&*will.message.payload, b"gone");
    }

    #[test]
    fn a_session_without_in_flight_state_or_will_round_trips() {
        let image = SessionImage {
            connected: true,
            released: Vec::new(),
            inbound_qos2: Vec::new(),
            delayed_will: None,
            ..image()
        };
        let mut bytes = Vec::new();
        let session = SessionRef {
            offline_since_ms: None,
            ..session_ref(&image)
        };
        encode(&mut bytes, &session);
        let found = scan(&bytes, false).expect("clean");
        let [Record::Session { session, .. }] = &found.records[..] else {
            panic!("one session record: {:?}", found.records);
        };
        assert_eq!(session.offline_since_ms, None);
        assert!(session.released.is_empty());
        assert!(session.inbound_qos2.is_empty());
        assert_eq!(session.will, None);
    }

    /// A SESSION record of the first format (kind 3), as an older fanfare wrote it, byte by
    /// byte: it loads, with no packet identifiers, QoS 2 state or will.
    #[test]
    fn a_first_format_session_still_loads() {
        let mut bytes = Vec::new();
        let start = record::begin(&mut bytes, 3, 77, "old-1");
        bytes.push(4); // 3.1.1
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        put_str16(&mut bytes, "t/#");
        bytes.push(QoS::ExactlyOnce.bits());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        put_str16(&mut bytes, "t/1");
        bytes.push(QoS::AtLeastOnce.bits());
        bytes.push(0);
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.push(0);
        record::put_bytes32(&mut bytes, b"");
        record::put_bytes32(&mut bytes, b"hello");
        record::finish(&mut bytes, start);
        let found = scan(&bytes, false).expect("clean");
        let [Record::Session { stamp: 77, session }] = &found.records[..] else {
            panic!("one session record: {:?}", found.records);
        };
        assert_eq!(&*session.client_id, "old-1");
        assert_eq!(session.version, ProtocolVersion::V311);
        assert_eq!(session.expires_at_ms, None);
        assert_eq!(session.offline_since_ms, None);
        assert_eq!(&*session.subscriptions[0].filter, "t/#");
        let [message] = &session.messages[..] else {
            panic!("one message: {:?}", session.messages);
        };
        assert_eq!(message.packet_id, None);
        assert_eq!(&*message.message.payload, b"hello");
        assert!(session.released.is_empty());
        assert!(session.inbound_qos2.is_empty());
        assert_eq!(session.will, None);
    }

    /// An origin is written while its publish is tentative only: once committed, the copy
    /// is kept whatever becomes of its publisher, so it needs none.
    #[test]
    fn a_committed_origin_is_left_out() {
        let image = image();
        let origin = image.messages[1]
            .message
            .origin
            .as_ref()
            .expect("tentative");
        let mut tentative = Vec::new();
        encode(&mut tentative, &session_ref(&image));
        origin.mark_committed();
        let mut committed = Vec::new();
        encode(&mut committed, &session_ref(&image));
        assert_eq!(tentative.len() - committed.len(), 2 + "pub-2".len() + 16);
        let found = scan(&committed, false).expect("clean");
        let [Record::Session { session, .. }] = &found.records[..] else {
            panic!("one session record: {:?}", found.records);
        };
        assert!(
            session
                .messages
                .iter()
                .all(|queued| queued.origin.is_none())
        );
    }

    /// The current body of an image with one message, "hi", without a cluster identity and
    /// with none sent: the start of the older formats' bodies.
    fn current_body_of_one_message() -> Vec<u8> {
        let image = SessionImage {
            messages: vec![QueuedImage {
                message: Arc::new(RoutedMessage::new("t/1", b"hi", QoS::ExactlyOnce, false)),
                qos: QoS::ExactlyOnce,
                retain: false,
                ids: vec![],
                packet_id: Some(id(5)),
            }],
            sent_ids: Vec::new(),
            ..image()
        };
        let mut bytes = Vec::new();
        encode(
            &mut bytes,
            &SessionRef {
                message_expiry_ms: &[None],
                ..session_ref(&image)
            },
        );
        bytes
    }

    /// Where the message's payload of [`current_body_of_one_message`] ends.
    fn payload_end(bytes: &[u8]) -> usize {
        bytes
            .windows(2)
            .rposition(|window| window == b"hi")
            .expect("the payload")
            + 2
    }

    /// `bytes` as a record of `kind` again: its length and checksum.
    fn rewrite_as(bytes: &mut [u8], kind: u8) {
        bytes[HEADER_BYTES] = kind;
        let length = (bytes.len() - HEADER_BYTES) as u32;
        bytes[..4].copy_from_slice(&length.to_le_bytes());
        recheck(bytes);
    }

    /// A SESSION record of the third format (kind 6), as fanfare wrote it before cluster
    /// identities: the current body without them loads, with none.
    #[test]
    fn a_third_format_session_still_loads() {
        let mut bytes = current_body_of_one_message();
        // Kind 6: no identity byte after the origin byte, no sent count at the end.
        bytes.truncate(bytes.len() - 2);
        let end = payload_end(&bytes);
        assert_eq!(bytes.remove(end + 1), 0, "the identity byte");
        rewrite_as(&mut bytes, 6);
        let found = scan(&bytes, false).expect("clean");
        let [Record::Session { session, .. }] = &found.records[..] else {
            panic!("one session record: {:?}", found.records);
        };
        assert_eq!(&*session.messages[0].message.payload, b"hi");
        assert_eq!(session.messages[0].id, None);
        assert!(session.sent_ids.is_empty());
        assert_eq!(
            (session.incarnation, session.committed_seq),
            (0x0102_0304_0506_0708, 41)
        );
    }

    /// A SESSION record of the second format (kind 5), as fanfare wrote it before origins:
    /// the current body without them loads, with no origin, incarnation or commit.
    #[test]
    fn a_second_format_session_still_loads() {
        let mut bytes = current_body_of_one_message();
        // Kind 5: no origin or identity byte after the message's payload, nothing after the
        // will.
        bytes.truncate(bytes.len() - 18);
        let end = payload_end(&bytes);
        assert_eq!(bytes.remove(end), 0, "the origin byte");
        assert_eq!(bytes.remove(end), 0, "the identity byte");
        rewrite_as(&mut bytes, 5);
        let found = scan(&bytes, false).expect("clean");
        let [Record::Session { session, .. }] = &found.records[..] else {
            panic!("one session record: {:?}", found.records);
        };
        assert_eq!(session.messages[0].packet_id, Some(id(5)));
        assert_eq!(&*session.messages[0].message.payload, b"hi");
        assert_eq!(session.messages[0].origin, None);
        assert_eq!(session.inbound_qos2, [id(9)]);
        assert!(session.will.is_some());
        assert_eq!((session.incarnation, session.committed_seq), (0, 0));
    }

    fn recheck(bytes: &mut [u8]) {
        let crc = crc32fast::hash(&bytes[HEADER_BYTES..]);
        bytes[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn a_damaged_count_is_malformed_not_an_allocation() {
        let image = SessionImage {
            messages: Vec::new(),
            released: Vec::new(),
            inbound_qos2: Vec::new(),
            delayed_will: None,
            sent_ids: Vec::new(),
            ..image()
        };
        let mut bytes = Vec::new();
        encode(
            &mut bytes,
            &SessionRef {
                message_expiry_ms: &[],
                ..session_ref(&image)
            },
        );
        // The body ends: message count (4), released count (2), inbound count (2), will (1),
        // incarnation and commit (16), sent count (2).
        let end = bytes.len() - 18;
        let mut damaged = bytes.clone();
        damaged[end - 9..end - 5].copy_from_slice(&u32::MAX.to_le_bytes());
        recheck(&mut damaged);
        assert_eq!(
            record::decode(&damaged).map(|_| ()),
            Err(record::RecordError::Malformed)
        );
        let mut damaged = bytes.clone();
        damaged[end - 5..end - 3].copy_from_slice(&u16::MAX.to_le_bytes());
        recheck(&mut damaged);
        assert_eq!(
            record::decode(&damaged).map(|_| ()),
            Err(record::RecordError::Malformed)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_in_flight_state_round_trips(
            packet_ids in proptest::collection::vec(0u16..4, 0..6),
            released in proptest::collection::vec(1u16.., 0..5),
            inbound in proptest::collection::vec(1u16.., 0..5),
            will in proptest::option::of((proptest::prelude::any::<bool>(), 1u64..)),
        ) {
            let messages: Vec<QueuedImage> = packet_ids
                .iter()
                .map(|&packet_id| QueuedImage {
                    message: Arc::new(RoutedMessage::new("t", b"p", QoS::AtLeastOnce, false)),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    ids: vec![],
                    packet_id: PacketId::new(packet_id),
                })
                .collect();
            let image = SessionImage {
                messages,
                released: released.iter().map(|&value| id(value)).collect(),
                inbound_qos2: inbound.iter().map(|&value| id(value)).collect(),
                delayed_will: will.map(|(retain, _)| WillImage {
                    message: Arc::new(RoutedMessage::new("w", b"x", QoS::ExactlyOnce, retain)),
                    due: Instant::now(),
                }),
                ..image()
            };
            let expiry = vec![None; image.messages.len()];
            let mut bytes = Vec::new();
            encode(
                &mut bytes,
                &SessionRef {
                    message_expiry_ms: &expiry,
                    will_due_ms: will.map_or(0, |(_, due_ms)| due_ms),
                    ..session_ref(&image)
                },
            );
            let found = scan(&bytes, false).expect("clean");
            let [Record::Session { session, .. }] = &found.records[..] else {
                panic!("one session record: {:?}", found.records);
            };
            let ids: Vec<Option<PacketId>> = session.messages.iter().map(|m| m.packet_id).collect();
            let expected: Vec<Option<PacketId>> =
                image.messages.iter().map(|m| m.packet_id).collect();
            proptest::prop_assert_eq!(ids, expected);
            proptest::prop_assert_eq!(&session.released, &image.released);
            proptest::prop_assert_eq!(&session.inbound_qos2, &image.inbound_qos2);
            let got_will = session.will.as_ref().map(|w| (w.retain, w.due_ms));
            proptest::prop_assert_eq!(got_will, will);
        }

        /// A body that checks out but holds anything: refused or read, never a panic or a
        /// large allocation.
        #[test]
        fn any_session_body_with_a_good_checksum_never_panics(
            kind in proptest::sample::select(vec![3u8, 5, 6]),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
        ) {
            let mut bytes = Vec::new();
            let start = record::begin(&mut bytes, kind, 1, "c");
            bytes.extend_from_slice(&body);
            record::finish(&mut bytes, start);
            let _ = record::decode(&bytes);
        }
    }

    #[test]
    fn a_zero_packet_identifier_in_the_state_is_malformed() {
        let image = SessionImage {
            messages: Vec::new(),
            delayed_will: None,
            released: vec![id(4)],
            inbound_qos2: Vec::new(),
            sent_ids: Vec::new(),
            ..image()
        };
        let mut bytes = Vec::new();
        encode(
            &mut bytes,
            &SessionRef {
                message_expiry_ms: &[],
                ..session_ref(&image)
            },
        );
        // The released identifier sits before the inbound count (2), the will byte (1),
        // incarnation and commit (16), sent count (2).
        let end = bytes.len() - 18;
        bytes[end - 5..end - 3].copy_from_slice(&0u16.to_le_bytes());
        recheck(&mut bytes);
        assert_eq!(
            record::decode(&bytes).map(|_| ()),
            Err(record::RecordError::Malformed)
        );
    }
}
