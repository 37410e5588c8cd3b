//! The MQTT subset the load generator speaks: CONNECT, SUBSCRIBE, PUBLISH (QoS 0 and 1),
//! PUBACK, PINGREQ and DISCONNECT out; CONNACK, SUBACK, PUBLISH, PUBACK, PINGRESP and
//! DISCONNECT in. MQTT 3.1.1 and MQTT 5. Sans-IO: bytes in, borrowed values out.
//!
//! This is its own small codec on purpose: the load generator must stay an independent client
//! that judges any broker, fanfare included, without sharing its bugs.

use std::fmt;

/// Protocol level on the wire (CONNECT byte 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    const fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }
}

/// Packet types, in the spec's numeric order (MQTT 5 §2.1.2).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
}

/// A decoded server packet; borrows from the read buffer, so decoding allocates nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Connack {
        session_present: bool,
        /// 3.1.1 return code or MQTT 5 reason code; 0 is success in both.
        code: u8,
    },
    Suback {
        packet_id: u16,
        codes: &'a [u8],
    },
    Publish {
        qos: u8,
        retain: bool,
        dup: bool,
        topic: &'a [u8],
        packet_id: Option<u16>,
        payload: &'a [u8],
    },
    Puback {
        packet_id: u16,
    },
    Pingresp,
    Disconnect {
        reason: u8,
    },
    /// Any other type; skipped by the caller (its length is known).
    Other {
        kind: u8,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Remaining length uses more than 4 bytes [MQTT-1.5.5].
    MalformedLength,
    /// Remaining length exceeds what the caller accepts; limits the buffer a peer can make us grow.
    TooLarge,
    /// The body is shorter than its fields say.
    Truncated,
    /// QoS 3 on a PUBLISH [MQTT-3.3.1-4].
    BadQos,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for DecodeError {}

/// Appends a variable byte integer (MQTT 5 §1.5.5).
pub fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    assert!(
        value < 268_435_456,
        "variable byte integer holds at most 28 bits"
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

/// Reads a variable byte integer: `Ok(None)` when more bytes are needed.
pub fn get_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        value |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::MalformedLength)
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("strings we encode are shorter than 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// Writes fixed header + body, where `body` is built by `fill` after the header's place.
fn framed(out: &mut Vec<u8>, first: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::with_capacity(64);
    fill(&mut body);
    out.push(first);
    put_varint(out, body.len());
    out.extend_from_slice(&body);
}

/// A user name and password sent in CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Vec<u8>,
}

pub fn encode_connect(
    out: &mut Vec<u8>,
    version: Version,
    client_id: &str,
    keep_alive_s: u16,
    credentials: Option<&Credentials>,
    topic_alias_max: u16,
) {
    assert!(
        topic_alias_max == 0 || version == Version::V5,
        "Topic Alias Maximum is an MQTT 5 property"
    );
    framed(out, kind::CONNECT << 4, |b| {
        put_str(b, b"MQTT");
        b.push(version.level());
        // Clean session / clean start, no will; the user name and password flags (§3.1.2.8,
        // §3.1.2.9) when there are credentials.
        b.push(if credentials.is_some() { 0xC2 } else { 0x02 });
        b.extend_from_slice(&keep_alive_s.to_be_bytes());
        if version == Version::V5 {
            // Session expiry 0 and defaults everywhere, but for the Topic Alias Maximum asked
            // for (§3.1.2.11.5): the broker may then send topics by alias.
            if topic_alias_max > 0 {
                b.push(3);
                b.push(0x22);
                b.extend_from_slice(&topic_alias_max.to_be_bytes());
            } else {
                b.push(0);
            }
        }
        put_str(b, client_id.as_bytes());
        if let Some(credentials) = credentials {
            put_str(b, credentials.username.as_bytes());
            put_str(b, &credentials.password);
        }
    });
}

pub fn encode_subscribe(
    out: &mut Vec<u8>,
    version: Version,
    packet_id: u16,
    filter: &str,
    qos: u8,
) {
    assert!(packet_id != 0, "packet id 0 is not allowed [MQTT-2.2.1-3]");
    assert!(qos <= 1, "the load generator subscribes at QoS 0 or 1");
    // Fixed header flags 0b0010 are mandatory for SUBSCRIBE [MQTT-3.8.1-1].
    framed(out, (kind::SUBSCRIBE << 4) | 0x02, |b| {
        b.extend_from_slice(&packet_id.to_be_bytes());
        if version == Version::V5 {
            b.push(0);
        }
        put_str(b, filter.as_bytes());
        b.push(qos);
    });
}

/// A PUBLISH encoded once and patched per message: payload bytes and packet id.
#[derive(Clone, Debug)]
pub struct PublishTemplate {
    pub bytes: Vec<u8>,
    /// Where the payload starts inside `bytes`.
    pub payload_at: usize,
    /// Where the 2-byte packet id sits (QoS 1 only).
    pub packet_id_at: Option<usize>,
}

pub fn publish_template(
    version: Version,
    topic: &str,
    qos: u8,
    retain: bool,
    payload_bytes: usize,
) -> PublishTemplate {
    assert!(qos <= 1, "the load generator publishes at QoS 0 or 1");
    let mut header = (kind::PUBLISH << 4) | (qos << 1);
    if retain {
        header |= 1;
    }
    let mut body = Vec::with_capacity(topic.len() + payload_bytes + 8);
    put_str(&mut body, topic.as_bytes());
    let mut packet_id_at = None;
    if qos > 0 {
        packet_id_at = Some(body.len());
        body.extend_from_slice(&1u16.to_be_bytes());
    }
    if version == Version::V5 {
        body.push(0);
    }
    let payload_in_body = body.len();
    body.resize(body.len() + payload_bytes, 0);
    let mut bytes = vec![header];
    put_varint(&mut bytes, body.len());
    let header_len = bytes.len();
    bytes.extend_from_slice(&body);
    PublishTemplate {
        bytes,
        payload_at: header_len + payload_in_body,
        packet_id_at: packet_id_at.map(|at| at + header_len),
    }
}

pub fn encode_puback(out: &mut Vec<u8>, packet_id: u16) {
    // Both versions accept the 2-byte form; MQTT 5 §3.4.2.1 lets the reason code be omitted
    // when it is 0 and there are no properties.
    out.extend_from_slice(&[kind::PUBACK << 4, 2]);
    out.extend_from_slice(&packet_id.to_be_bytes());
}

pub fn encode_pingreq(out: &mut Vec<u8>) {
    out.extend_from_slice(&[kind::PINGREQ << 4, 0]);
}

pub fn encode_disconnect(out: &mut Vec<u8>) {
    // The 0-length form means "normal disconnection" in MQTT 5 too (§3.14.2.1).
    out.extend_from_slice(&[kind::DISCONNECT << 4, 0]);
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, DecodeError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(DecodeError::Truncated),
    }
}

/// Skips an MQTT 5 property block starting at `at`, returning the offset after it.
fn skip_properties(b: &[u8], at: usize) -> Result<usize, DecodeError> {
    let rest = b.get(at..).ok_or(DecodeError::Truncated)?;
    let (len, used) = get_varint(rest)?.ok_or(DecodeError::Truncated)?;
    let end = at + used + len;
    if end > b.len() {
        return Err(DecodeError::Truncated);
    }
    Ok(end)
}

/// Decodes one packet from the front of `buf`. `Ok(None)` means "need more" and consumes
/// nothing; the size limit is checked on the fixed header, before the body arrives.
pub fn decode(
    buf: &[u8],
    version: Version,
    packet_bytes_max: usize,
) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, used)) = get_varint(&buf[1..])? else {
        return Ok(None);
    };
    let total = 1 + used + len;
    if total > packet_bytes_max {
        return Err(DecodeError::TooLarge);
    }
    if buf.len() < total {
        return Ok(None);
    }
    let b = &buf[1 + used..total];
    let v5 = version == Version::V5;
    let packet = match first >> 4 {
        kind::CONNACK => {
            let flags = *b.first().ok_or(DecodeError::Truncated)?;
            let code = *b.get(1).ok_or(DecodeError::Truncated)?;
            Packet::Connack {
                session_present: flags & 1 == 1,
                code,
            }
        }
        kind::SUBACK => {
            let packet_id = u16_at(b, 0)?;
            let at = if v5 { skip_properties(b, 2)? } else { 2 };
            Packet::Suback {
                packet_id,
                codes: &b[at..],
            }
        }
        kind::PUBLISH => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err(DecodeError::BadQos);
            }
            let topic_len = usize::from(u16_at(b, 0)?);
            let mut at = 2 + topic_len;
            let topic = b.get(2..at).ok_or(DecodeError::Truncated)?;
            let mut packet_id = None;
            if qos > 0 {
                packet_id = Some(u16_at(b, at)?);
                at += 2;
            }
            if v5 {
                at = skip_properties(b, at)?;
            }
            Packet::Publish {
                qos,
                retain: first & 1 == 1,
                dup: first & 8 == 8,
                topic,
                packet_id,
                payload: b.get(at..).ok_or(DecodeError::Truncated)?,
            }
        }
        kind::PUBACK => Packet::Puback {
            packet_id: u16_at(b, 0)?,
        },
        kind::PINGRESP => Packet::Pingresp,
        kind::DISCONNECT => Packet::Disconnect {
            reason: b.first().copied().unwrap_or(0),
        },
        other => Packet::Other { kind: other },
    };
    Ok(Some((packet, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn varint_golden_vectors() {
        // MQTT 5 §1.5.5 table: boundaries of 1..4 byte encodings.
        for (value, bytes) in [
            (0usize, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xff, 0x7f]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xff, 0xff, 0x7f]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, bytes);
            assert_eq!(get_varint(bytes), Ok(Some((value, bytes.len()))));
        }
        assert_eq!(get_varint(&[0x80, 0x80]), Ok(None));
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::MalformedLength)
        );
    }

    #[test]
    fn connect_golden_v311_and_v5() {
        let mut out = Vec::new();
        encode_connect(&mut out, Version::V311, "a", 60, None, 0);
        assert_eq!(
            out,
            [
                0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b'a'
            ]
        );
        out.clear();
        encode_connect(&mut out, Version::V5, "a", 60, None, 0);
        assert_eq!(
            out,
            [
                0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 1, b'a'
            ]
        );
        out.clear();
        encode_connect(&mut out, Version::V5, "a", 60, None, 300);
        assert_eq!(
            out,
            [
                0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 3, 0x22, 1, 44, 0, 1, b'a'
            ]
        );
        out.clear();
        let credentials = Credentials {
            username: "u".into(),
            password: b"pw".to_vec(),
        };
        encode_connect(&mut out, Version::V311, "a", 60, Some(&credentials), 0);
        assert_eq!(
            out,
            [
                0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'a', 0, 1, b'u', 0,
                2, b'p', b'w'
            ]
        );
    }

    #[test]
    fn subscribe_golden() {
        let mut out = Vec::new();
        encode_subscribe(&mut out, Version::V311, 1, "a/b", 1);
        assert_eq!(out, [0x82, 8, 0, 1, 0, 3, b'a', b'/', b'b', 1]);
        out.clear();
        encode_subscribe(&mut out, Version::V5, 1, "a/b", 0);
        assert_eq!(out, [0x82, 9, 0, 1, 0, 0, 3, b'a', b'/', b'b', 0]);
    }

    #[test]
    fn publish_template_round_trips_both_versions() {
        for version in [Version::V311, Version::V5] {
            for qos in [0, 1] {
                let mut t = publish_template(version, "t/x", qos, true, 20);
                t.bytes[t.payload_at..].copy_from_slice(&[7; 20]);
                if let Some(at) = t.packet_id_at {
                    t.bytes[at..at + 2].copy_from_slice(&513u16.to_be_bytes());
                }
                let (p, used) = decode(&t.bytes, version, MAX).unwrap().unwrap();
                assert_eq!(used, t.bytes.len());
                assert_eq!(
                    p,
                    Packet::Publish {
                        qos,
                        retain: true,
                        dup: false,
                        topic: b"t/x",
                        packet_id: (qos == 1).then_some(513),
                        payload: &[7; 20],
                    }
                );
            }
        }
    }

    #[test]
    fn decodes_server_packets() {
        let v5_suback = [0x90, 4, 0, 9, 0, 1];
        assert_eq!(
            decode(&v5_suback, Version::V5, MAX),
            Ok(Some((
                Packet::Suback {
                    packet_id: 9,
                    codes: &[1]
                },
                6
            )))
        );
        let v311_suback = [0x90, 3, 0, 9, 0x80];
        assert_eq!(
            decode(&v311_suback, Version::V311, MAX).unwrap().unwrap().0,
            Packet::Suback {
                packet_id: 9,
                codes: &[0x80]
            }
        );
        // MQTT 5 CONNACK with a property block (receive maximum = 10).
        let connack = [0x20, 6, 1, 0, 3, 0x21, 0, 10];
        assert_eq!(
            decode(&connack, Version::V5, MAX).unwrap().unwrap().0,
            Packet::Connack {
                session_present: true,
                code: 0
            }
        );
        // MQTT 5 PUBLISH carrying a property (payload format indicator).
        let publish = [0x32, 9, 0, 1, b't', 0, 5, 2, 0x01, 1, b'x'];
        assert_eq!(
            decode(&publish, Version::V5, MAX).unwrap().unwrap().0,
            Packet::Publish {
                qos: 1,
                retain: false,
                dup: false,
                topic: b"t",
                packet_id: Some(5),
                payload: b"x",
            }
        );
        assert_eq!(
            decode(&[0x40, 2, 0, 5], Version::V311, MAX),
            Ok(Some((Packet::Puback { packet_id: 5 }, 4)))
        );
        assert_eq!(
            decode(&[0xd0, 0], Version::V311, MAX),
            Ok(Some((Packet::Pingresp, 2)))
        );
    }

    #[test]
    fn incomplete_input_consumes_nothing() {
        let t = publish_template(Version::V311, "topic", 0, false, 100);
        for cut in 0..t.bytes.len() {
            assert_eq!(decode(&t.bytes[..cut], Version::V311, MAX), Ok(None));
        }
    }

    #[test]
    fn size_limit_checked_on_fixed_header() {
        // Header claims 1000 bytes; only 3 have arrived: refused before waiting for the body.
        assert_eq!(
            decode(&[0x30, 0xe8, 0x07], Version::V311, 512),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn truncated_fields_are_errors_not_panics() {
        // PUBLISH whose topic length points past the body.
        assert_eq!(
            decode(&[0x30, 2, 0, 9], Version::V311, MAX),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&[0x36, 0], Version::V311, MAX),
            Err(DecodeError::BadQos)
        );
        // Arbitrary bytes never panic.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut b = [0u8; 12];
            for x in &mut b {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *x = seed as u8;
            }
            let _ = decode(&b, Version::V5, MAX);
            let _ = decode(&b, Version::V311, MAX);
        }
    }
}
