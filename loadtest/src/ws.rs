//! WebSocket client side (RFC 6455): the upgrade request and its answer, masked binary frames
//! out, unmasked server frames in. Sans-IO. A server frame may hold several MQTT packets and one
//! MQTT packet may span frames (MQTT 5 §6), so frames are unwrapped into one MQTT byte stream.

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest as _, Sha1};

/// RFC 6455 §1.3.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const OPCODE_CONTINUATION: u8 = 0x0;
const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;
const OPCODE_CLOSE: u8 = 0x8;
const OPCODE_PING: u8 = 0x9;
const OPCODE_PONG: u8 = 0xA;

/// The HTTP upgrade request; `key` is 16 random bytes (RFC 6455 §4.1).
pub fn upgrade_request(host: &str, path: &str, key: [u8; 16]) -> (String, String) {
    let key = BASE64.encode(key);
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    (request, key)
}

fn expected_accept(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Checks the server's answer. `Ok(None)`: the header is not complete yet. `Ok(Some(n))`: the
/// first `n` bytes were the HTTP answer; anything after them is already WebSocket frames.
pub fn check_upgrade_response(buf: &[u8], key: &str) -> anyhow::Result<Option<usize>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        ensure!(buf.len() < 8192, "HTTP answer longer than 8 KiB");
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("HTTP answer is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    ensure!(
        status.split(' ').nth(1) == Some("101"),
        "upgrade refused: {status:?}"
    );
    let mut accept_ok = false;
    let mut protocol_ok = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            accept_ok = value == expected_accept(key);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocol_ok = value == "mqtt";
        }
    }
    ensure!(accept_ok, "Sec-WebSocket-Accept missing or wrong");
    ensure!(protocol_ok, "server did not select subprotocol mqtt");
    Ok(Some(end + 4))
}

/// XORs `data` with the 4-byte mask, starting at mask offset 0. Works 8 bytes at a time: the
/// bytewise loop is 10-20x slower and this runs on every byte the load generator sends.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("chunks_exact gives 8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

/// Appends one final, masked frame carrying `payload` (client frames must be masked, §5.3).
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

pub fn encode_binary(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    encode_frame(out, OPCODE_BINARY, payload, mask);
}

/// What unwrapping server frames produced besides MQTT bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// Payloads of pings to answer with pongs, concatenated (each ≤ 125 bytes, §5.5).
    pub pings: Vec<Vec<u8>>,
    /// The server sent a close frame; its status code if it gave one.
    pub closed: Option<u16>,
}

/// Unwraps complete server frames from the front of `input`, appending data payloads to
/// `mqtt`. Returns how many bytes of `input` were consumed; an incomplete frame is left
/// in place. `frame_bytes_max` limits the frame size the server can make us buffer.
pub fn unwrap_frames(
    input: &[u8],
    mqtt: &mut Vec<u8>,
    control: &mut Control,
    frame_bytes_max: usize,
) -> anyhow::Result<usize> {
    let mut at = 0;
    loop {
        let b = &input[at..];
        if b.len() < 2 {
            return Ok(at);
        }
        let opcode = b[0] & 0x0f;
        ensure!(b[0] & 0x70 == 0, "reserved bits set without an extension");
        ensure!(b[1] & 0x80 == 0, "server frames must not be masked (§5.1)");
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let len = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
                (usize::try_from(len).unwrap_or(usize::MAX), 10)
            }
            126 | 127 => return Ok(at),
            len => (usize::from(len), 2),
        };
        // The limit is checked on the header, before the body is waited for.
        ensure!(
            len <= frame_bytes_max,
            "server frame of {len} bytes exceeds {frame_bytes_max}"
        );
        if b.len() < header + len {
            return Ok(at);
        }
        let payload = &b[header..header + len];
        match opcode {
            OPCODE_BINARY | OPCODE_CONTINUATION => mqtt.extend_from_slice(payload),
            OPCODE_PING => control.pings.push(payload.to_vec()),
            OPCODE_PONG => {}
            OPCODE_CLOSE => {
                control.closed = Some(if len >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                });
                return Ok(at + header + len);
            }
            OPCODE_TEXT => bail!("text frame; MQTT uses binary frames only"),
            other => bail!("unknown opcode {other:#x}"),
        }
        at += header + len;
    }
}

pub fn encode_pong(out: &mut Vec<u8>, payload: &[u8], mask: [u8; 4]) {
    encode_frame(out, OPCODE_PONG, payload, mask);
}

pub fn encode_close(out: &mut Vec<u8>, mask: [u8; 4]) {
    encode_frame(out, OPCODE_CLOSE, &1000u16.to_be_bytes(), mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask_bytewise(data: &mut [u8], mask: [u8; 4]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }

    #[test]
    fn fast_mask_matches_bytewise() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..70 {
            let original: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut fast = original.clone();
            let mut slow = original.clone();
            apply_mask(&mut fast, mask);
            unmask_bytewise(&mut slow, mask);
            assert_eq!(fast, slow);
            apply_mask(&mut fast, mask);
            assert_eq!(fast, original);
        }
    }

    #[test]
    fn rfc6455_masked_hello() {
        // RFC 6455 §5.7: a single-frame masked text message "Hello".
        let mut out = Vec::new();
        encode_frame(&mut out, OPCODE_TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
    }

    #[test]
    fn frame_length_forms() {
        for (len, header) in [
            (125usize, 2 + 4),
            (126, 4 + 4),
            (65_535, 4 + 4),
            (65_536, 10 + 4),
        ] {
            let mut out = Vec::new();
            encode_binary(&mut out, &vec![1; len], [1, 2, 3, 4]);
            assert_eq!(out.len(), header + len);
            assert_eq!(out[1] & 0x80, 0x80, "client frames are masked");
        }
    }

    #[test]
    fn rfc6455_accept_key() {
        // RFC 6455 §1.3 example.
        assert_eq!(
            expected_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn upgrade_response_checks() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
            Sec-WebSocket-Protocol: mqtt\r\n\r\n\x82\x02";
        let n = check_upgrade_response(ok, key).unwrap().unwrap();
        assert_eq!(&ok[n..], b"\x82\x02");
        assert_eq!(check_upgrade_response(&ok[..40], key).unwrap(), None);
        let refused = b"HTTP/1.1 400 Bad Request\r\n\r\n";
        assert!(check_upgrade_response(refused, key).is_err());
        let no_protocol = b"HTTP/1.1 101 Switching Protocols\r\n\
            Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_upgrade_response(no_protocol, key).is_err());
    }

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn several_packets_in_one_frame_and_one_packet_across_frames() {
        let mut wire = server_frame(OPCODE_BINARY, true, &[0xd0, 0, 0xd0, 0, 0x30]);
        wire.extend(server_frame(OPCODE_BINARY, false, &[3, 0, 1]));
        wire.extend(server_frame(OPCODE_CONTINUATION, true, b"t"));
        let mut mqtt = Vec::new();
        let mut control = Control::default();
        let used = unwrap_frames(&wire, &mut mqtt, &mut control, 1 << 20).unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(mqtt, [0xd0, 0, 0xd0, 0, 0x30, 3, 0, 1, b't']);
    }

    #[test]
    fn split_frames_are_resumed_at_every_cut() {
        let mut wire = server_frame(OPCODE_BINARY, true, &[9; 300]);
        wire.extend(server_frame(OPCODE_PING, true, b"hi"));
        wire.extend(server_frame(OPCODE_BINARY, true, &[8; 5]));
        for cut in 0..wire.len() {
            let mut mqtt = Vec::new();
            let mut control = Control::default();
            let mut pending = wire[..cut].to_vec();
            let used = unwrap_frames(&pending, &mut mqtt, &mut control, 1 << 20).unwrap();
            pending.drain(..used);
            pending.extend_from_slice(&wire[cut..]);
            let used = unwrap_frames(&pending, &mut mqtt, &mut control, 1 << 20).unwrap();
            assert_eq!(used, pending.len());
            assert_eq!(mqtt.len(), 305);
            assert_eq!(control.pings, vec![b"hi".to_vec()]);
        }
    }

    #[test]
    fn refuses_masked_oversized_and_text_frames() {
        let mut c = Control::default();
        let mut m = Vec::new();
        assert!(unwrap_frames(&[0x82, 0x81, 1, 2, 3, 4, 5], &mut m, &mut c, 100).is_err());
        assert!(unwrap_frames(&[0x82, 126, 0x10, 0], &mut m, &mut c, 100).is_err());
        assert!(unwrap_frames(&[0x81, 1, b'a'], &mut m, &mut c, 100).is_err());
        let used = unwrap_frames(&[0x88, 2, 0x03, 0xe9, 0x82], &mut m, &mut c, 100).unwrap();
        assert_eq!(used, 4);
        assert_eq!(c.closed, Some(1001));
    }
}
