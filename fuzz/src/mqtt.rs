//! The MQTT decoder, read as the broker reads it: packet after packet from one connection's
//! bytes, before CONNECT and then at the version the CONNECT named (`shard/ingest.rs`).
//!
//! Input: one control byte, then the stream.
//! - bits 0-1: the version the stream starts at; [`v311`]: none (before CONNECT), 3.1, 3.1.1;
//!   [`v5`]: none, 5.0.
//! - bit 2: small limits (64-byte packets, 8-byte topics, 3 levels, 2 filters) instead of the
//!   broker's defaults, so short inputs reach every limit check.
//! - bit 3: read the stream as a client reads the server (`decode_from_server`), at the start
//!   version (3.1.1 or 5.0 when that is "none").
//!
//! For every packet decoded it checks that
//! - `packet_len` agrees on its length, and the packet alone decodes the same (no look-ahead);
//! - one byte less is "incomplete" (`Ok(None)`), never an error: incomplete input consumes
//!   nothing;
//! - `encode` takes it without panicking (the encoder asserts what the decoder checks), writes
//!   no more bytes than were read, and decoding that gives the same packet back.

use fanfare::config::Limits;
use fanfare::protocol::mqtt::{
    DecodeError, DecodeLimits, Packet, ProtocolVersion, decode, decode_from_server, encode,
    packet_len,
};

/// Limits that a few hundred bytes of input can exceed.
const SMALL: DecodeLimits = DecodeLimits {
    packet_bytes_max: 64,
    topic_bytes_max: 8,
    topic_levels_max: 3,
    client_id_bytes_max: 8,
    filters_per_packet_max: 2,
};

/// MQTT 3.1 and 3.1.1: the stream starts before CONNECT, at 3.1 or at 3.1.1.
pub fn v311(data: &[u8]) {
    use ProtocolVersion::*;
    run(data, [None, Some(V31), Some(V311), None], V311);
}

/// MQTT 5.0: the stream starts before CONNECT or at 5.0.
pub fn v5(data: &[u8]) {
    use ProtocolVersion::*;
    run(data, [None, Some(V5), None, Some(V5)], V5);
}

fn run(data: &[u8], starts: [Option<ProtocolVersion>; 4], client_side: ProtocolVersion) {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let start = starts[usize::from(control & 0b11)];
    let limits = if control & 0b100 != 0 {
        SMALL
    } else {
        Limits::default().decode_limits()
    };
    if control & 0b1000 != 0 {
        read_stream(
            stream,
            Some(start.unwrap_or(client_side)),
            &limits,
            Side::Client,
        );
    } else {
        read_stream(stream, start, &limits, Side::Server);
    }
}

/// Which end reads the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The broker: `decode`.
    Server,
    /// A client: `decode_from_server`.
    Client,
}

fn decode_at<'a>(
    side: Side,
    buf: &'a [u8],
    version: Option<ProtocolVersion>,
    limits: &DecodeLimits,
) -> Result<Option<(Packet<'a>, usize)>, DecodeError> {
    match (side, version) {
        (Side::Server, _) => decode(buf, version, limits),
        (Side::Client, Some(version)) => decode_from_server(buf, version, limits),
        (Side::Client, None) => unreachable!("a client reads at a known version"),
    }
}

/// Decodes packets one after another until the bytes run out or one is refused.
fn read_stream(
    mut buf: &[u8],
    mut version: Option<ProtocolVersion>,
    limits: &DecodeLimits,
    side: Side,
) {
    loop {
        let (packet, used) = match decode_at(side, buf, version, limits) {
            Ok(Some(decoded)) => decoded,
            Ok(None) | Err(_) => return,
        };
        check_packet(side, buf, &packet, used, version, limits);
        // After CONNECT the broker reads at the version it named.
        if let (None, Packet::Connect(connect)) = (version, &packet) {
            version = Some(connect.version);
        }
        buf = &buf[used..];
    }
}

fn check_packet(
    side: Side,
    buf: &[u8],
    packet: &Packet<'_>,
    used: usize,
    version: Option<ProtocolVersion>,
    limits: &DecodeLimits,
) {
    // A fixed header alone is 2 bytes.
    assert!(used >= 2, "a packet takes at least 2 bytes");
    assert!(used <= buf.len(), "a packet ends inside the buffer");
    assert!(used <= limits.packet_bytes_max as usize, "packet_bytes_max");
    assert_eq!(packet_len(buf, limits), Ok(Some(used)), "packet_len agrees");
    let alone = decode_at(side, &buf[..used], version, limits);
    assert_eq!(alone, Ok(Some((packet.clone(), used))), "no look-ahead");
    let short = decode_at(side, &buf[..used - 1], version, limits);
    assert_eq!(
        short,
        Ok(None),
        "one byte short is incomplete, not an error"
    );

    let encode_version = match (version, packet) {
        (Some(version), _) => version,
        (None, Packet::Connect(connect)) => connect.version,
        (None, other) => panic!("before CONNECT the decoder returned {other:?}"),
    };
    let mut again = Vec::with_capacity(used);
    encode(packet, encode_version, &mut again);
    assert!(
        again.len() <= used,
        "the encoding ({} bytes) is no longer than what was read ({used})",
        again.len()
    );
    let decoded = decode_at(side, &again, version, limits);
    assert_eq!(
        decoded,
        Ok(Some((packet.clone(), again.len()))),
        "decode, encode, decode gives the same packet"
    );
}
