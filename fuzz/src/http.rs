//! The HTTP request head of the WebSocket listener: parsed once (`protocol::http::parse_head`),
//! then judged as an upgrade (`accept_upgrade`), a refusal answered with its status, or a
//! plain request a file may answer — over the same bytes as `shard/ingest.rs` does.
//!
//! Input: one control byte, then the request bytes.
//! - bits 0-1: the byte limit, from [`BYTES_MAX`]; bit 2: `allow_no_subprotocol`; bit 3:
//!   allow only the origin [`ALLOWED_ORIGIN`] (else any).
//!
//! The network layer parses again from the start each time more bytes arrive, and acts on the
//! first answer that is not "need more". So every prefix of the bytes must answer "need more"
//! or exactly what the whole does; once complete, the head ends with the first blank line
//! within the limit, and the bytes after it change nothing. The response written for an answer
//! starts with its status line.

use fanfare::protocol::http::{Fields, Method, parse_head};
use fanfare::protocol::ws::handshake::{
    HandshakeConfig, HandshakeError, Upgrade, accept_upgrade, write_accept_response,
    write_error_response,
};

/// Request byte limits to pick from: the default, and sizes a short input can exceed. None is
/// below 5 bytes: until "HEAD " is in, the method is unknown, and a limit that small would be
/// reached before the method is judged (431 on some prefixes, 405 on the whole).
pub const BYTES_MAX: [usize; 4] = [8 * 1024, 256, 40, 5];

/// The one origin allowed when control bit 3 is set.
pub const ALLOWED_ORIGIN: &str = "https://scores.example";

/// Prefixes checked besides the ones at the end of the head: this many, evenly spread.
const PREFIXES: usize = 8;

/// What the listener makes of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Not a whole head yet.
    Incomplete,
    /// The head could not be parsed: refused with the error's status.
    Unparsed(HandshakeError),
    /// A whole head of `consumed` bytes, upgraded or not.
    Head {
        consumed: usize,
        judged: Result<Upgrade, HandshakeError>,
        origin_form: bool,
    },
}

fn answer(buf: &[u8], bytes_max: usize, cfg: &HandshakeConfig<'_>) -> Answer {
    let mut fields = Fields::new();
    match parse_head(buf, bytes_max, &mut fields) {
        Ok(None) => Answer::Incomplete,
        Err(error) => {
            Answer::Unparsed(HandshakeError::from_request(error, Method::from_start(buf)))
        }
        Ok(Some((head, consumed))) => Answer::Head {
            consumed,
            judged: accept_upgrade(&head, cfg),
            origin_form: head.target.starts_with(b"/"),
        },
    }
}

pub fn request(data: &[u8]) {
    let Some((&control, buf)) = data.split_first() else {
        return;
    };
    let bytes_max = BYTES_MAX[usize::from(control & 0b11)];
    let origins = [ALLOWED_ORIGIN.to_owned()];
    let cfg = HandshakeConfig {
        path: "/mqtt",
        allow_no_subprotocol: control & 0b100 != 0,
        allowed_origins: if control & 0b1000 != 0 { &origins } else { &[] },
    };
    let whole = answer(buf, bytes_max, &cfg);
    let mut cuts: Vec<usize> = (1..PREFIXES).map(|k| buf.len() * k / PREFIXES).collect();
    if let Answer::Head { consumed, .. } = whole {
        cuts.extend([consumed - 1, consumed]);
    }
    for cut in cuts {
        let prefix = answer(&buf[..cut], bytes_max, &cfg);
        assert!(
            prefix == Answer::Incomplete || prefix == whole,
            "a prefix answers need more or what the whole does"
        );
    }

    let mut response = Vec::new();
    match whole {
        Answer::Incomplete => assert!(buf.len() < bytes_max, "incomplete only under the limit"),
        Answer::Unparsed(error)
        | Answer::Head {
            judged: Err(error), ..
        } => {
            write_error_response(error, &mut response);
            let status = format!("HTTP/1.1 {} ", error.status());
            assert!(
                response.starts_with(status.as_bytes()),
                "the error's status"
            );
        }
        Answer::Head {
            judged: Ok(accepted),
            ..
        } => {
            assert_eq!(accepted.accept_key_str().len(), 28, "base64 of 20 bytes");
            write_accept_response(&accepted, &mut response);
            assert!(
                response.starts_with(b"HTTP/1.1 101 "),
                "101 Switching Protocols"
            );
            assert!(response.ends_with(b"\r\n\r\n"), "a head without a body");
        }
    }
    if let Answer::Head {
        consumed,
        origin_form,
        ..
    } = whole
    {
        check_head(buf, consumed, bytes_max);
        assert!(origin_form, "an origin-form target");
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
