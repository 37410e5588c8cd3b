//! The client's side of the WebSocket upgrade (RFC 6455 §4.1), as a bridge opens a
//! connection to a remote broker: the request it sends and the check of the answer, asking
//! for the `mqtt` subprotocol (MQTT 3.1.1 §6, MQTT 5.0 §6). No I/O.

use std::io::Write as _;

use super::handshake::accept_key;

/// Longest response head read from the server: an upgrade answer is a few hundred bytes,
/// and this bounds what a server that never ends its head can make the client hold.
pub const RESPONSE_HEAD_BYTES_MAX: usize = 8 * 1024;

/// Header fields read from the response head; more is refused as malformed.
const RESPONSE_FIELDS_MAX: usize = 32;

/// The subprotocol asked for: the registered token (MQTT 5.0 §6).
pub const SUBPROTOCOL: &str = "mqtt";

/// Why the server's answer does not open a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRefused {
    /// Not an HTTP/1.1 response head.
    Malformed,
    /// No end of the head within [`RESPONSE_HEAD_BYTES_MAX`].
    HeadTooLong,
    /// A status other than 101 Switching Protocols: a wrong path answers 404, say.
    Status(u16),
    /// 101 without `Upgrade: websocket` and `Connection: Upgrade` (RFC 6455 §4.1, items 2-3
    /// of the client's checks).
    NotWebSocket,
    /// `Sec-WebSocket-Accept` missing or not the one the key asks for (item 4).
    AcceptMismatch,
    /// A subprotocol other than `mqtt` (item 6).
    Subprotocol,
}

impl std::fmt::Display for UpgradeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeRefused::Malformed => write!(f, "malformed HTTP response to the upgrade"),
            UpgradeRefused::HeadTooLong => {
                write!(f, "HTTP response head over {RESPONSE_HEAD_BYTES_MAX} bytes")
            }
            UpgradeRefused::Status(status) => {
                write!(f, "WebSocket upgrade refused with HTTP status {status}")
            }
            UpgradeRefused::NotWebSocket => write!(f, "HTTP 101 without a WebSocket upgrade"),
            UpgradeRefused::AcceptMismatch => write!(f, "wrong Sec-WebSocket-Accept"),
            UpgradeRefused::Subprotocol => {
                write!(f, "the server chose a subprotocol other than {SUBPROTOCOL}")
            }
        }
    }
}

impl std::error::Error for UpgradeRefused {}

/// Writes the GET that asks `host` (as the URL names it, with its port) to upgrade `path`;
/// `key` is base64 of 16 random bytes (RFC 6455 §4.1 item 7). The caller has checked that
/// `host` and `path` hold no control character or space.
pub fn write_request(host: &str, path: &str, key: &str, out: &mut Vec<u8>) {
    assert!(
        !host
            .bytes()
            .chain(path.bytes())
            .any(|b| b <= b' ' || b == 0x7f),
        "no space or control character in the request line or Host"
    );
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
}

/// Checks the response head at the start of `buf` against the request's `key`: `Ok(None)`
/// asks for more bytes; `Ok(Some(n))` says the head is `n` bytes and the WebSocket is open
/// (what follows in `buf` is frames).
pub fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, UpgradeRefused> {
    let mut fields = [httparse::EMPTY_HEADER; RESPONSE_FIELDS_MAX];
    let mut response = httparse::Response::new(&mut fields);
    let used = match response.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) if buf.len() >= RESPONSE_HEAD_BYTES_MAX => {
            return Err(UpgradeRefused::HeadTooLong);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpgradeRefused::Malformed),
    };
    if used > RESPONSE_HEAD_BYTES_MAX || response.version != Some(1) {
        return Err(UpgradeRefused::Malformed);
    }
    let status = response.code.ok_or(UpgradeRefused::Malformed)?;
    if status != 101 {
        return Err(UpgradeRefused::Status(status));
    }
    let field = |name: &str| {
        response
            .headers
            .iter()
            .find(|field| field.name.eq_ignore_ascii_case(name))
            .map(|field| field.value.trim_ascii())
    };
    let upgrade_ok = field("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    let connection_ok = field("connection").is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !upgrade_ok || !connection_ok {
        return Err(UpgradeRefused::NotWebSocket);
    }
    if field("sec-websocket-accept") != Some(&accept_key(key.as_bytes())[..]) {
        return Err(UpgradeRefused::AcceptMismatch);
    }
    // A server that names no subprotocol is taken at its word that it speaks MQTT; one that
    // names another is not.
    match field("sec-websocket-protocol") {
        None => {}
        Some(token) if token == SUBPROTOCOL.as_bytes() => {}
        Some(_) => return Err(UpgradeRefused::Subprotocol),
    }
    Ok(Some(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6455 §1.3's example key and the accept it asks for.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn answer(status_line: &str, fields: &str) -> Vec<u8> {
        format!("{status_line}\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn request_asks_for_mqtt_over_websocket() {
        let mut out = Vec::new();
        write_request("broker.test:8080", "/mqtt", KEY, &mut out);
        let text = String::from_utf8(out).expect("ASCII");
        assert!(text.starts_with("GET /mqtt HTTP/1.1\r\nHost: broker.test:8080\r\n"));
        assert!(text.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_101_with_the_right_accept_opens() {
        let fields = format!(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n"
        );
        let mut head = answer("HTTP/1.1 101 Switching Protocols", &fields);
        let len = head.len();
        assert_eq!(check_response(&head[..len - 1], KEY), Ok(None));
        head.extend_from_slice(&[0x82, 0x00]);
        assert_eq!(check_response(&head, KEY), Ok(Some(len)));
    }

    #[test]
    fn refusals_are_named() {
        let not_found = answer("HTTP/1.1 404 Not Found", "Content-Length: 0\r\n");
        assert_eq!(
            check_response(&not_found, KEY),
            Err(UpgradeRefused::Status(404))
        );
        let wrong = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n";
        assert_eq!(
            check_response(&answer("HTTP/1.1 101 OK", wrong), KEY),
            Err(UpgradeRefused::AcceptMismatch)
        );
        let other = format!(
            "Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Accept: {ACCEPT}\r\n\
             Sec-WebSocket-Protocol: chat\r\n"
        );
        assert_eq!(
            check_response(&answer("HTTP/1.1 101 OK", &other), KEY),
            Err(UpgradeRefused::Subprotocol)
        );
        assert_eq!(
            check_response(b"SSH-2.0-OpenSSH\r\n\r\n", KEY),
            Err(UpgradeRefused::Malformed)
        );
        let endless = vec![b'a'; RESPONSE_HEAD_BYTES_MAX];
        let mut head = b"HTTP/1.1 101 OK\r\nX: ".to_vec();
        head.extend_from_slice(&endless);
        assert_eq!(check_response(&head, KEY), Err(UpgradeRefused::HeadTooLong));
    }
}
