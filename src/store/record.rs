//! The bytes of a store file: a magic header, then records, each checksummed, so that a write
//! torn by a crash is told apart from corruption (see `docs/persistence.md`).
//!
//! ```text
//! file   = MAGIC record*
//! record = length: u32 LE   bytes of `body`
//!          crc:    u32 LE   CRC-32 (IEEE) of `body`
//!          body    = kind: u8, stamp: u64 LE, topic_len: u16 LE, topic
//!                    kind SET only: qos: u8, expires_at_ms: u64 LE (Unix ms, 0: never),
//!                                   properties_len: u32 LE, properties,
//!                                   payload_len: u32 LE, payload
//!                    kinds 3 and 5 SESSION (first and current format) and 4 SESSION_END:
//!                                   `topic` is a client identifier; SESSION's fields follow
//!                                   (`session_record.rs`)
//! ```
//!
//! `stamp` orders the records of one topic (or session) across files: the newest wins at load. Sans-IO:
//! bytes in, values out; the files are `files.rs`'s.

use super::session_record::{self, Format, StoredSession};
use crate::protocol::mqtt::QoS;

/// The first bytes of every store file; the last is the format's version.
pub const MAGIC: [u8; 8] = *b"fanfare\x01";

/// The longest record body: a topic (64 KiB), properties and a payload of MQTT's largest
/// packet (256 MiB) fit. A longer length field is corruption, not a record: it limits what a
/// damaged file makes the loader allocate. Part of the format rather than a setting: files
/// written under a larger bound would read as corrupt under a smaller one, and what a record
/// holds is already bounded by `packet_bytes_max` and `session_queue_bytes_max`.
pub const RECORD_BYTES_MAX: usize = 1 << 29;

/// Bytes before a record's body: its length and checksum.
pub const HEADER_BYTES: usize = 8;

const KIND_SET: u8 = 1;
const KIND_DELETE: u8 = 2;
/// A persistent session's whole state, keyed by its client identifier, in the first format
/// (`session_record.rs`): read, no longer written.
const KIND_SESSION_FIRST: u8 = 3;
/// A persistent session ended.
pub(super) const KIND_SESSION_END: u8 = 4;
/// A persistent session's whole state, with its in-flight packet identifiers, QoS 2 state and
/// delayed will, without origins (`session_record.rs`): read, no longer written.
const KIND_SESSION_SECOND: u8 = 5;
/// A persistent session's whole state, with the origins of its tentative messages and its
/// own commit mark, without cluster identities (`session_record.rs`): read, no longer written.
const KIND_SESSION_THIRD: u8 = 6;
/// A persistent session's whole state, with its messages' identities in the cluster and
/// those its client was sent lately (`session_record.rs`).
pub(super) const KIND_SESSION: u8 = 7;

/// A retained message as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub topic: Box<str>,
    pub qos: QoS,
    /// Wall-clock expiry in Unix milliseconds; `None`: never expires.
    pub expires_at_ms: Option<u64>,
    pub properties: Box<[u8]>,
    pub payload: Box<[u8]>,
}

/// One record: a topic's retained message set or deleted, a session's state or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Set {
        stamp: u64,
        message: StoredMessage,
    },
    Delete {
        stamp: u64,
        topic: Box<str>,
    },
    /// Boxed: a session is far larger than the other records.
    Session {
        stamp: u64,
        session: Box<StoredSession>,
    },
    SessionEnd {
        stamp: u64,
        client_id: Box<str>,
    },
}

/// What a record is about: the newest record of each wins at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key<'a> {
    Retained(&'a str),
    Session(&'a str),
}

impl Record {
    pub fn stamp(&self) -> u64 {
        match self {
            Record::Set { stamp, .. }
            | Record::Delete { stamp, .. }
            | Record::Session { stamp, .. }
            | Record::SessionEnd { stamp, .. } => *stamp,
        }
    }

    pub fn key(&self) -> Key<'_> {
        match self {
            Record::Set { message, .. } => Key::Retained(&message.topic),
            Record::Delete { topic, .. } => Key::Retained(topic),
            Record::Session { session, .. } => Key::Session(&session.client_id),
            Record::SessionEnd { client_id, .. } => Key::Session(client_id),
        }
    }
}

/// The parts of a SET record, borrowed from wherever the message lives.
pub struct SetRef<'a> {
    pub stamp: u64,
    pub topic: &'a str,
    pub qos: QoS,
    pub expires_at_ms: Option<u64>,
    pub properties: &'a [u8],
    pub payload: &'a [u8],
}

/// Appends a SET record to `out`; returns its length in bytes.
pub fn encode_set(out: &mut Vec<u8>, set: &SetRef<'_>) -> usize {
    let start = begin(out, KIND_SET, set.stamp, set.topic);
    out.push(set.qos as u8);
    out.extend_from_slice(&set.expires_at_ms.unwrap_or(0).to_le_bytes());
    put_bytes32(out, set.properties);
    put_bytes32(out, set.payload);
    finish(out, start)
}

/// Appends a DELETE record to `out`; returns its length in bytes.
pub fn encode_delete(out: &mut Vec<u8>, stamp: u64, topic: &str) -> usize {
    let start = begin(out, KIND_DELETE, stamp, topic);
    finish(out, start)
}

pub(crate) fn begin(out: &mut Vec<u8>, kind: u8, stamp: u64, topic: &str) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out.push(kind);
    out.extend_from_slice(&stamp.to_le_bytes());
    // Topics are at most 65 535 bytes [MQTT-1.5.4-1]: the broker stores no longer ones.
    let topic_len = u16::try_from(topic.len()).expect("an MQTT topic fits 16 bits");
    out.extend_from_slice(&topic_len.to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    start
}

pub(crate) fn put_bytes32(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("an MQTT packet fits 32 bits");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

pub(crate) fn finish(out: &mut [u8], start: usize) -> usize {
    let body = start + HEADER_BYTES;
    let body_len = out.len() - body;
    assert!(
        body_len <= RECORD_BYTES_MAX,
        "the decoder accepts what is written"
    );
    let crc = crc32fast::hash(&out[body..]);
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..body].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The length field is past [`RECORD_BYTES_MAX`].
    TooLong,
    /// The body does not match its checksum.
    BadChecksum,
    /// The checksum holds but the body does not parse (unknown kind, fields past the body).
    Malformed,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordError::TooLong => "a record length past the largest record",
            RecordError::BadChecksum => "a record whose checksum does not match",
            RecordError::Malformed => "a record that does not parse",
        })
    }
}

/// The record at the start of `bytes` and its length; `Ok(None)` when `bytes` ends before it
/// does (nothing is consumed).
pub fn decode(bytes: &[u8]) -> Result<Option<(Record, usize)>, RecordError> {
    decode_with(bytes, parse_body)
}

/// The record at the start of `bytes`, its body checked against its checksum and parsed by
/// `parse` (`None`: malformed), and its length. The framing is shared with other files of the
/// same shape (the bridges' queues, `crate::bridge::journal`).
pub fn decode_with<T>(
    bytes: &[u8],
    parse: impl Fn(&[u8]) -> Option<T>,
) -> Result<Option<(T, usize)>, RecordError> {
    let Some(header) = bytes.get(..HEADER_BYTES) else {
        return Ok(None);
    };
    let body_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if body_len > RECORD_BYTES_MAX {
        return Err(RecordError::TooLong);
    }
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let Some(body) = bytes.get(HEADER_BYTES..HEADER_BYTES + body_len) else {
        return Ok(None);
    };
    if crc32fast::hash(body) != crc {
        return Err(RecordError::BadChecksum);
    }
    let record = parse(body).ok_or(RecordError::Malformed)?;
    Ok(Some((record, HEADER_BYTES + body_len)))
}

fn parse_body(body: &[u8]) -> Option<Record> {
    let mut reader = Reader(body);
    let kind = reader.u8()?;
    let stamp = reader.u64()?;
    let topic_len = usize::from(u16::from_le_bytes(reader.array()?));
    let topic: Box<str> = std::str::from_utf8(reader.take(topic_len)?).ok()?.into();
    let record = match kind {
        KIND_DELETE => Record::Delete { stamp, topic },
        KIND_SESSION_END => Record::SessionEnd {
            stamp,
            client_id: topic,
        },
        KIND_SESSION_FIRST => Record::Session {
            stamp,
            session: Box::new(session_record::parse(&mut reader, topic, Format::First)?),
        },
        KIND_SESSION_SECOND => Record::Session {
            stamp,
            session: Box::new(session_record::parse(&mut reader, topic, Format::Second)?),
        },
        KIND_SESSION_THIRD => Record::Session {
            stamp,
            session: Box::new(session_record::parse(&mut reader, topic, Format::Third)?),
        },
        KIND_SESSION => Record::Session {
            stamp,
            session: Box::new(session_record::parse(&mut reader, topic, Format::Current)?),
        },
        KIND_SET => {
            let qos = QoS::from_bits(reader.u8()?)?;
            let expires_at_ms = Some(reader.u64()?).filter(|&ms| ms != 0);
            let properties = reader.bytes32()?.into();
            let payload = reader.bytes32()?.into();
            let message = StoredMessage {
                topic,
                qos,
                expires_at_ms,
                properties,
                payload,
            };
            Record::Set { stamp, message }
        }
        _ => return None,
    };
    reader.0.is_empty().then_some(record)
}

pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.array()?))
    }

    pub(crate) fn bytes32(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_le_bytes(self.array()?) as usize;
        self.take(len)
    }
}

/// What a whole file held.
#[derive(Debug)]
pub struct Scan<T = Record> {
    pub records: Vec<T>,
    /// Where a torn last record began, cut at load: normal after a crash.
    pub torn_at: Option<usize>,
    /// With `recover`: byte ranges that were not readable and were skipped.
    pub skipped: Vec<(usize, usize)>,
}

/// Unreadable bytes before the end of a file: corruption, not a torn write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt {
    pub offset: usize,
    pub error: RecordError,
}

/// Reads every record of a file's bytes.
///
/// The last write before a crash may be torn: a record cut short, a record whose bytes the
/// disk did not all keep (bad checksum) reaching the end of the file, or zeros where a file
/// system extended the file but the data never came. Those end the scan as `torn_at`. Any
/// other unreadable record is corruption: an error, unless `recover`, which skips to the next
/// offset where a whole record checks out and keeps reading.
pub fn scan(bytes: &[u8], recover: bool) -> Result<Scan, Corrupt> {
    scan_with(bytes, recover, parse_body)
}

/// [`scan`] for records whose bodies `parse` reads.
pub fn scan_with<T>(
    bytes: &[u8],
    recover: bool,
    parse: impl Fn(&[u8]) -> Option<T> + Copy,
) -> Result<Scan<T>, Corrupt> {
    let mut found = Scan {
        records: Vec::new(),
        torn_at: None,
        skipped: Vec::new(),
    };
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let error = match decode_with(rest, parse) {
            Ok(Some((record, len))) => {
                found.records.push(record);
                offset += len;
                continue;
            }
            Ok(None) => {
                found.torn_at = Some(offset);
                return Ok(found);
            }
            Err(error) => error,
        };
        if reaches_end(rest) {
            found.torn_at = Some(offset);
            return Ok(found);
        }
        if !recover {
            return Err(Corrupt { offset, error });
        }
        let next = (offset + 1..bytes.len())
            .find(|&at| matches!(decode_with(&bytes[at..], parse), Ok(Some(_))))
            .unwrap_or(bytes.len());
        found.skipped.push((offset, next));
        offset = next;
    }
    Ok(found)
}

/// Whether the bad record at the start of `rest` is the last write's: it claims to reach the
/// end, or only zeros follow.
fn reaches_end(rest: &[u8]) -> bool {
    let body_len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    HEADER_BYTES + body_len >= rest.len() || rest.iter().all(|&byte| byte == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(stamp: u64, topic: &str, payload: &[u8]) -> Record {
        Record::Set {
            stamp,
            message: StoredMessage {
                topic: topic.into(),
                qos: QoS::AtLeastOnce,
                expires_at_ms: Some(1_700_000_000_000),
                properties: Box::from(&[0x01, 0x01][..]),
                payload: payload.into(),
            },
        }
    }

    fn encode(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        for record in records {
            match record {
                Record::Set { stamp, message } => encode_set(
                    &mut out,
                    &SetRef {
                        stamp: *stamp,
                        topic: &message.topic,
                        qos: message.qos,
                        expires_at_ms: message.expires_at_ms,
                        properties: &message.properties,
                        payload: &message.payload,
                    },
                ),
                Record::Delete { stamp, topic } => encode_delete(&mut out, *stamp, topic),
                Record::Session { .. } | Record::SessionEnd { .. } => {
                    unreachable!("these tests write retained records")
                }
            };
        }
        out
    }

    #[test]
    fn round_trip() {
        let records = vec![
            set(1, "score/1", b"3-1"),
            Record::Delete {
                stamp: 2,
                topic: "score/2".into(),
            },
            set(3, "", b""),
        ];
        let bytes = encode(&records);
        let found = scan(&bytes, false).expect("clean");
        assert_eq!(found.records, records);
        assert_eq!(found.torn_at, None);
    }

    #[test]
    fn golden_delete() {
        let bytes = encode(&[Record::Delete {
            stamp: 7,
            topic: "a".into(),
        }]);
        let body = [2, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, b'a'];
        assert_eq!(&bytes[..4], &(body.len() as u32).to_le_bytes());
        assert_eq!(&bytes[4..8], &crc32fast::hash(&body).to_le_bytes());
        assert_eq!(&bytes[8..], &body);
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_length() {
        let records = vec![set(1, "a", b"one"), set(2, "b", b"two")];
        let bytes = encode(&records);
        let first = encode(&records[..1]).len();
        for cut in first + 1..bytes.len() {
            let found = scan(&bytes[..cut], false).expect("a torn tail is not corruption");
            assert_eq!(found.records, records[..1], "cut at {cut}");
            assert_eq!(found.torn_at, Some(first));
        }
    }

    #[test]
    fn a_bad_last_record_or_trailing_zeros_are_a_torn_tail() {
        let records = vec![set(1, "a", b"one"), set(2, "b", b"two")];
        let mut bytes = encode(&records);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let found = scan(&bytes, false).expect("torn");
        assert_eq!(found.records.len(), 1);
        let mut zeros = encode(&records);
        let end = zeros.len();
        zeros.extend_from_slice(&[0; 4096]);
        let found = scan(&zeros, false).expect("torn");
        assert_eq!((found.records.len(), found.torn_at), (2, Some(end)));
    }

    #[test]
    fn a_bad_checksum_in_the_middle_is_corruption_and_recover_skips_it() {
        let records = vec![set(1, "a", b"one"), set(2, "b", b"two"), set(3, "c", b"3")];
        let mut bytes = encode(&records);
        let first = encode(&records[..1]).len();
        bytes[first + HEADER_BYTES + 3] ^= 0x40;
        assert_eq!(
            scan(&bytes, false).map(|_| ()),
            Err(Corrupt {
                offset: first,
                error: RecordError::BadChecksum
            })
        );
        let found = scan(&bytes, true).expect("recovered");
        assert_eq!(found.records, vec![records[0].clone(), records[2].clone()]);
        assert_eq!(found.skipped.len(), 1);
        assert_eq!(found.skipped[0].0, first);
    }

    #[test]
    fn a_huge_length_is_refused_before_allocating() {
        let mut bytes = vec![0xff; HEADER_BYTES];
        bytes.extend_from_slice(&[1; 64]);
        assert_eq!(decode(&bytes).map(|_| ()), Err(RecordError::TooLong));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = scan(&bytes, false);
            let _ = scan(&bytes, true);
        }

        #[test]
        fn any_set_round_trips(
            stamp in any::<u64>(),
            topic in "[a-z/]{0,20}",
            payload in prop::collection::vec(any::<u8>(), 0..64),
            expiry in prop::option::of(1u64..u64::MAX),
        ) {
            let record = Record::Set {
                stamp,
                message: StoredMessage {
                    topic: topic.into(),
                    qos: QoS::ExactlyOnce,
                    expires_at_ms: expiry,
                    properties: Box::default(),
                    payload: payload.into(),
                },
            };
            let bytes = encode(std::slice::from_ref(&record));
            let found = scan(&bytes, false).expect("clean");
            prop_assert_eq!(found.records, vec![record]);
        }
    }
}
