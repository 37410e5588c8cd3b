//! The HTTP request head parsers of the WebSocket listener: the upgrade (`parse_upgrade`) and,
//! for a request that is not one, the plain request (`parse_request`), over the same bytes as
//! `shard/ingest.rs` does.
//!
//! Input: one control byte, then the request bytes.
//! - bits 0-1: the byte limit, from [`BYTES_MAX`]; bit 2: `allow_no_subprotocol`.
//!
//! The network layer parses again from the start each time more bytes arrive, and acts on the
//! first answer that is not "need more". So for both parsers, every prefix of the bytes must
//! answer "need more" or exactly what the whole does; once complete, the head ends with the
//! blank line within the limit, and the bytes after it change nothing. The responses written for
//! an answer start with its status line.

use fanfare::http::parse_request;
use fanfare::protocol::ws::handshake::{
    HandshakeConfig, parse_upgrade, write_accept_response, write_error_response,
};

/// Request byte limits to pick from: the default, and sizes a short input can exceed. None is
/// below 5 bytes: until "HEAD " is in, the method is unknown, and a limit that small would be
/// reached before the method is judged (431 on some prefixes, 405 on the whole).
pub const BYTES_MAX: [usize; 4] = [8 * 1024, 256, 40, 5];

/// Prefixes checked besides the ones at the end of the head: this many, evenly spread.
const PREFIXES: usize = 8;

pub fn request(data: &[u8]) {
    let Some((&control, buf)) = data.split_first() else {
        return;
    };
    let bytes_max = BYTES_MAX[usize::from(control & 0b11)];
    let cfg = HandshakeConfig {
        path: "/mqtt",
        allow_no_subprotocol: control & 0b100 != 0,
        request_bytes_max: bytes_max,
    };
    let upgrade = parse_upgrade(buf, &cfg);
    let plain = parse_request(buf, bytes_max);
    let mut cuts: Vec<usize> = (1..PREFIXES).map(|k| buf.len() * k / PREFIXES).collect();
    if let Ok(Some((_, consumed))) = upgrade {
        cuts.extend([consumed - 1, consumed]);
    }
    if let Ok(Some((_, consumed))) = plain {
        cuts.extend([consumed - 1, consumed]);
    }
    for cut in cuts {
        let prefix = &buf[..cut];
        let answer = parse_upgrade(prefix, &cfg);
        assert!(
            answer == Ok(None) || answer == upgrade,
            "upgrade of a prefix"
        );
        let answer = parse_request(prefix, bytes_max);
        assert!(answer == Ok(None) || answer == plain, "request of a prefix");
    }

    let mut response = Vec::new();
    match upgrade {
        Ok(None) => assert!(buf.len() < bytes_max, "incomplete only under the limit"),
        Ok(Some((accepted, consumed))) => {
            check_head(buf, consumed, bytes_max);
            assert_eq!(accepted.accept_key_str().len(), 28, "base64 of 20 bytes");
            write_accept_response(&accepted, &mut response);
            assert!(
                response.starts_with(b"HTTP/1.1 101 "),
                "101 Switching Protocols"
            );
            assert!(response.ends_with(b"\r\n\r\n"), "a head without a body");
        }
        Err(error) => {
            write_error_response(error, &mut response);
            let status = format!("HTTP/1.1 {} ", error.status());
            assert!(
                response.starts_with(status.as_bytes()),
                "the error's status"
            );
        }
    }
    match plain {
        Ok(None) => assert!(buf.len() < bytes_max, "incomplete only under the limit"),
        Ok(Some((request, consumed))) => {
            check_head(buf, consumed, bytes_max);
            assert!(request.target.starts_with(b"/"), "an origin-form target");
            if let Ok(Some((_, upgrade_consumed))) = upgrade {
                assert_eq!(consumed, upgrade_consumed, "one head, whoever reads it");
            }
        }
        Err(_) => {}
    }
}

/// A complete head: it ends with the first blank line, within the limit.
fn check_head(buf: &[u8], consumed: usize, bytes_max: usize) {
    assert!(
        consumed <= buf.len() && consumed <= bytes_max,
        "within the limit"
    );
    assert!(
        buf[..consumed].ends_with(b"\r\n\r\n"),
        "ends with the blank line"
    );
    let first = buf.windows(4).position(|w| w == b"\r\n\r\n");
    assert_eq!(first, Some(consumed - 4), "the first blank line");
}
