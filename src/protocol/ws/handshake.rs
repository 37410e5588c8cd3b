//! The HTTP/1.1 upgrade that opens a WebSocket connection (RFC 6455 §4.2), with the MQTT
//! subprotocol negotiation of MQTT 3.1.1 §6 and MQTT 5.0 §6.
//!
//! [`accept_upgrade`] decides from a request head that [`crate::protocol::http::parse_head`]
//! parsed whether it upgrades, or names the error; [`HandshakeError::from_request`] names the
//! error for a head that did not parse; [`write_accept_response`] and [`write_error_response`]
//! write the answer. No I/O, no allocation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest as _, Sha1};

use crate::protocol::http::{Method, RequestError, RequestHead};

/// RFC 6455 §1.3: the GUID appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only WebSocket version this server speaks (RFC 6455 §4.1, §4.4).
const WS_VERSION: &[u8] = b"13";

/// What the server accepts in an upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeConfig<'c> {
    /// The request path that upgrades to MQTT over WebSocket; other paths answer
    /// [`HandshakeError::NotFound`]. A query string is ignored.
    pub path: &'c str,
    /// Accept clients that offer no `Sec-WebSocket-Protocol` at all. MQTT 3.1.1 §6 requires
    /// clients to offer "mqtt", but some embedded clients send nothing.
    pub allow_no_subprotocol: bool,
    /// The origins a browser may open a WebSocket from (RFC 6455 §4.2.1 item 5, §10.2),
    /// compared with `Origin` ASCII case-insensitively; empty: any. A request without `Origin`
    /// does not come from a browser, whose pages are what the list keeps out, and is accepted.
    pub allowed_origins: &'c [String],
}

impl Default for HandshakeConfig<'_> {
    fn default() -> Self {
        HandshakeConfig {
            path: "/mqtt",
            allow_no_subprotocol: true,
            allowed_origins: &[],
        }
    }
}

/// An accepted upgrade: what the 101 response must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade {
    /// `base64(SHA-1(Sec-WebSocket-Key + GUID))`, RFC 6455 §4.2.2 item 5.4.
    pub accept_key: [u8; 28],
    /// The subprotocol chosen from the client's offer; `None` when the client offered none.
    pub subprotocol: Option<Subprotocol>,
}

impl Upgrade {
    /// The accept key as text.
    pub fn accept_key_str(&self) -> &str {
        core::str::from_utf8(&self.accept_key).expect("base64 output is ASCII")
    }
}

/// The `Sec-WebSocket-Protocol` tokens that carry MQTT. Tokens are case-sensitive
/// (RFC 6455 §4.1), so each variant is one exact spelling seen from real clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subprotocol {
    /// "mqtt": the registered token, MQTT 3.1.1 §6 and MQTT 5.0 §6.
    Mqtt,
    /// "mqttv3.1": MQTT 3.1 clients.
    MqttV31,
    /// "mqttv3.1.1"
    MqttV311,
    /// "mqtt-v3"
    MqttDashV3,
    /// "mqtt-v3.1.1"
    MqttDashV311,
    /// "mqtt-v5"
    MqttDashV5,
}

impl Subprotocol {
    /// Every supported token, for lookups.
    const ALL: [Subprotocol; 6] = [
        Subprotocol::Mqtt,
        Subprotocol::MqttV31,
        Subprotocol::MqttV311,
        Subprotocol::MqttDashV3,
        Subprotocol::MqttDashV311,
        Subprotocol::MqttDashV5,
    ];

    /// The exact token to echo in `Sec-WebSocket-Protocol`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Subprotocol::Mqtt => "mqtt",
            Subprotocol::MqttV31 => "mqttv3.1",
            Subprotocol::MqttV311 => "mqttv3.1.1",
            Subprotocol::MqttDashV3 => "mqtt-v3",
            Subprotocol::MqttDashV311 => "mqtt-v3.1.1",
            Subprotocol::MqttDashV5 => "mqtt-v5",
        }
    }

    /// The subprotocol spelled exactly `token`, if supported.
    pub fn from_token(token: &[u8]) -> Option<Subprotocol> {
        Subprotocol::ALL
            .into_iter()
            .find(|p| p.as_str().as_bytes() == token)
    }
}

/// Why an upgrade request is refused, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeError {
    /// No blank line within the byte limit, or more header fields than the parser holds
    /// ([`RequestError::TooLarge`], [`RequestError::TooManyFields`]).
    RequestTooLarge,
    /// Not HTTP/1.x syntax: bad request line, header line, or a bare CR or LF.
    Malformed,
    /// Method other than GET (RFC 6455 §4.1 item 2), known from the first bytes.
    MethodNotGet,
    /// HTTP version below 1.1 or not 1.x (RFC 6455 §4.1 item 2).
    HttpVersionUnsupported,
    /// Missing or repeated Host (RFC 9112 §3.2, RFC 6455 §4.1 item 4).
    HostInvalid,
    /// A well-formed GET for another path. The caller may serve it some other way.
    NotFound,
    /// A plain GET, or an upgrade to something other than WebSocket.
    UpgradeRequired,
    /// `Upgrade: websocket` without `Connection: upgrade` (RFC 6455 §4.1 items 5, 6).
    ConnectionNotUpgrade,
    /// `Sec-WebSocket-Version` missing or not 13 (RFC 6455 §4.4).
    VersionUnsupported,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes (RFC 6455 §4.1 item 7).
    KeyInvalid,
    /// An `Origin` that is not in [`HandshakeConfig::allowed_origins`]: a page of another
    /// site (RFC 6455 §4.2.2 item 4: "a 403 Forbidden").
    OriginNotAllowed,
    /// Subprotocols offered, none of them MQTT.
    SubprotocolUnsupported,
    /// No subprotocol offered and the configuration requires one (MQTT 3.1.1 §6).
    SubprotocolMissing,
}

impl HandshakeError {
    /// The HTTP status code of the response.
    pub const fn status(self) -> u16 {
        match self {
            HandshakeError::RequestTooLarge => 431,
            HandshakeError::Malformed => 400,
            HandshakeError::MethodNotGet => 405,
            HandshakeError::HttpVersionUnsupported => 505,
            HandshakeError::HostInvalid => 400,
            HandshakeError::NotFound => 404,
            HandshakeError::UpgradeRequired => 426,
            HandshakeError::ConnectionNotUpgrade => 400,
            HandshakeError::VersionUnsupported => 426,
            HandshakeError::KeyInvalid => 400,
            HandshakeError::OriginNotAllowed => 403,
            HandshakeError::SubprotocolUnsupported => 400,
            HandshakeError::SubprotocolMissing => 400,
        }
    }

    /// Text for the response body and logs.
    pub const fn reason(self) -> &'static str {
        match self {
            HandshakeError::RequestTooLarge => "request headers too large",
            HandshakeError::Malformed => "malformed HTTP request",
            HandshakeError::MethodNotGet => "only GET can upgrade to WebSocket",
            HandshakeError::HttpVersionUnsupported => "HTTP/1.1 required",
            HandshakeError::HostInvalid => "exactly one Host header required",
            HandshakeError::NotFound => "not found",
            HandshakeError::UpgradeRequired => "WebSocket upgrade required",
            HandshakeError::ConnectionNotUpgrade => "Connection header must include upgrade",
            HandshakeError::VersionUnsupported => "Sec-WebSocket-Version must be 13",
            HandshakeError::KeyInvalid => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::OriginNotAllowed => "Origin not allowed",
            HandshakeError::SubprotocolUnsupported => {
                "unsupported subprotocol, expected mqtt or mqttv3.1"
            }
            HandshakeError::SubprotocolMissing => "Sec-WebSocket-Protocol mqtt required",
        }
    }

    /// The refusal of an upgrade request whose head did not parse. `method` is what its first
    /// bytes name ([`Method::from_start`]): only a GET upgrades, so a request that is not one
    /// is refused for its method (405) however the rest of its head reads.
    pub const fn from_request(error: RequestError, method: Option<Method>) -> HandshakeError {
        if !matches!(method, Some(Method::Get)) {
            return HandshakeError::MethodNotGet;
        }
        match error {
            RequestError::MethodNotAllowed => HandshakeError::MethodNotGet,
            RequestError::TooLarge | RequestError::TooManyFields => HandshakeError::RequestTooLarge,
            RequestError::Malformed => HandshakeError::Malformed,
            RequestError::VersionUnsupported => HandshakeError::HttpVersionUnsupported,
            RequestError::HostInvalid => HandshakeError::HostInvalid,
        }
    }
}

impl core::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} {}", self.status(), self.reason())
    }
}

impl std::error::Error for HandshakeError {}

/// Decides the upgrade from a parsed request head, checking the rules in a fixed order so
/// each request has exactly one answer. The head parser has checked the syntax, the version
/// and the Host (RFC 6455 §4.1 items 2, 4).
pub fn accept_upgrade(
    head: &RequestHead<'_>,
    cfg: &HandshakeConfig,
) -> Result<Upgrade, HandshakeError> {
    if head.method != Method::Get {
        return Err(HandshakeError::MethodNotGet);
    }
    if head.path() != cfg.path.as_bytes() {
        return Err(HandshakeError::NotFound);
    }
    // RFC 6455 §4.2.1 items 3, 4: both lists are compared case-insensitively.
    if !head
        .list("upgrade")
        .any(|token| token.eq_ignore_ascii_case(b"websocket"))
    {
        return Err(HandshakeError::UpgradeRequired);
    }
    if !head
        .list("connection")
        .any(|token| token.eq_ignore_ascii_case(b"upgrade"))
    {
        return Err(HandshakeError::ConnectionNotUpgrade);
    }
    let mut versions = head.values("sec-websocket-version").peekable();
    if versions.peek().is_none() || !versions.all(|version| version == WS_VERSION) {
        return Err(HandshakeError::VersionUnsupported);
    }
    // RFC 6455 §11.3.1: the key must not appear more than once.
    let mut keys = head.values("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(key), None) if key_is_valid(key) => key,
        _ => return Err(HandshakeError::KeyInvalid),
    };
    if !origin_allowed(head, cfg) {
        return Err(HandshakeError::OriginNotAllowed);
    }
    Ok(Upgrade {
        accept_key: accept_key(key),
        subprotocol: choose_subprotocol(head, cfg)?,
    })
}

/// Every `Origin` of the request is in the allowed list, or the list is empty. Browsers send
/// one (RFC 6454 §7.3); a request that repeats it must have every one allowed.
fn origin_allowed(head: &RequestHead<'_>, cfg: &HandshakeConfig) -> bool {
    cfg.allowed_origins.is_empty()
        || head.values("origin").all(|origin| {
            cfg.allowed_origins
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin))
        })
}

/// The client's first supported subprotocol. RFC 6455 §4.1 item 10 and RFC 9110 §5.3: repeated
/// headers form one list, in the client's order of preference.
fn choose_subprotocol(
    head: &RequestHead<'_>,
    cfg: &HandshakeConfig,
) -> Result<Option<Subprotocol>, HandshakeError> {
    let mut offered = head.list("sec-websocket-protocol").peekable();
    if offered.peek().is_none() {
        return if cfg.allow_no_subprotocol {
            Ok(None)
        } else {
            Err(HandshakeError::SubprotocolMissing)
        };
    }
    match offered.find_map(Subprotocol::from_token) {
        Some(protocol) => Ok(Some(protocol)),
        None => Err(HandshakeError::SubprotocolUnsupported),
    }
}

/// RFC 6455 §4.1 item 7: the key is base64 of 16 bytes, so exactly 24 characters with "==".
fn key_is_valid(key: &[u8]) -> bool {
    // Room for the decoder's length estimate of 24 characters (18 bytes).
    let mut decoded = [0u8; 18];
    key.len() == 24 && BASE64.decode_slice(key, &mut decoded) == Ok(16)
}

/// RFC 6455 §4.2.2 item 5.4: base64 of SHA-1 over the key as sent, then the GUID.
pub(crate) fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    let written = BASE64
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to exactly 28 base64 characters");
    debug_assert_eq!(written, 28);
    out
}

/// Writes the 101 response that completes the upgrade (RFC 6455 §4.2.2 item 5).
pub fn write_accept_response(up: &Upgrade, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\n");
    out.extend_from_slice(b"Sec-WebSocket-Accept: ");
    out.extend_from_slice(&up.accept_key);
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = up.subprotocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete error response; the caller closes the connection after sending it.
pub fn write_error_response(err: HandshakeError, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let body = err.reason();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        err.status(),
        status_text(err.status()),
        body.len() + 1,
    );
    match err {
        // RFC 9110 §15.5.22 and §7.8: a 426 names the protocol to upgrade to, and a sender
        // of Upgrade lists "upgrade" in Connection. RFC 6455 §4.4: name the version spoken.
        HandshakeError::UpgradeRequired | HandshakeError::VersionUnsupported => {
            out.extend_from_slice(b"Connection: Upgrade, close\r\nUpgrade: websocket\r\n");
            out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\n");
        }
        // RFC 9110 §15.5.6: a 405 lists the methods allowed.
        HandshakeError::MethodNotGet => {
            out.extend_from_slice(b"Connection: close\r\nAllow: GET\r\n");
        }
        _ => out.extend_from_slice(b"Connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b"\n");
}

/// The reason phrase for each status this module sends.
const fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::{FIELDS_MAX, Fields, parse_head};
    use proptest::prelude::*;

    const CFG: HandshakeConfig<'static> = HandshakeConfig {
        path: "/mqtt",
        allow_no_subprotocol: true,
        allowed_origins: &[],
    };

    /// The default `ws_handshake_bytes_max`.
    const BYTES_MAX: usize = 8 * 1024;

    /// What the listener does with the bytes received so far: parse the head, then decide.
    fn parse_upgrade(
        buf: &[u8],
        cfg: &HandshakeConfig,
        bytes_max: usize,
    ) -> Result<Option<(Upgrade, usize)>, HandshakeError> {
        let mut fields = Fields::new();
        match parse_head(buf, bytes_max, &mut fields) {
            Ok(None) => Ok(None),
            Ok(Some((head, consumed))) => accept_upgrade(&head, cfg).map(|up| Some((up, consumed))),
            Err(error) => Err(HandshakeError::from_request(error, Method::from_start(buf))),
        }
    }

    /// RFC 6455 §1.3's sample key, with the given extra header lines.
    fn request(extra: &str) -> Vec<u8> {
        format!(
            "GET /mqtt HTTP/1.1\r\n\
             Host: server.example.com\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             {extra}\r\n"
        )
        .into_bytes()
    }

    fn parse(req: &[u8]) -> Result<Option<(Upgrade, usize)>, HandshakeError> {
        parse_upgrade(req, &CFG, BYTES_MAX)
    }

    fn accepted(req: &[u8]) -> Upgrade {
        match parse(req) {
            Ok(Some((up, consumed))) => {
                assert_eq!(consumed, req.len());
                up
            }
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    fn refused(req: &[u8]) -> HandshakeError {
        match parse(req) {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Replaces the first occurrence of `from` in the standard request.
    fn edited(from: &str, to: &str) -> Vec<u8> {
        let req = String::from_utf8(request("")).expect("ASCII");
        assert!(req.contains(from), "{from:?} not in the request");
        req.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn rfc_accept_key() {
        let up = accepted(&request("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert_eq!(up.accept_key_str(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(up.subprotocol, Some(Subprotocol::Mqtt));
    }

    #[test]
    fn accept_response_bytes() {
        let up = accepted(&request("Sec-WebSocket-Protocol: mqtt\r\n"));
        let mut out = Vec::new();
        write_accept_response(&up, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\n\
              Connection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: mqtt\r\n\
              \r\n"
        );
        let up = accepted(&request(""));
        out.clear();
        write_accept_response(&up, &mut out);
        assert!(!out.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"));
    }

    #[test]
    fn error_response_bytes() {
        let mut out = Vec::new();
        write_error_response(HandshakeError::SubprotocolUnsupported, &mut out);
        let body = "unsupported subprotocol, expected mqtt or mqttv3.1\n";
        let expected = format!(
            "HTTP/1.1 400 Bad Request\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(String::from_utf8(out).expect("ASCII"), expected);

        let mut out = Vec::new();
        write_error_response(HandshakeError::VersionUnsupported, &mut out);
        let text = String::from_utf8(out).expect("ASCII");
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nUpgrade: websocket\r\n"));
    }

    #[test]
    fn every_error_has_a_response() {
        use HandshakeError::*;
        for err in [
            RequestTooLarge,
            Malformed,
            MethodNotGet,
            HttpVersionUnsupported,
            HostInvalid,
            NotFound,
            UpgradeRequired,
            ConnectionNotUpgrade,
            VersionUnsupported,
            KeyInvalid,
            OriginNotAllowed,
            SubprotocolUnsupported,
            SubprotocolMissing,
        ] {
            let mut out = Vec::new();
            write_error_response(err, &mut out);
            let text = String::from_utf8(out).expect("ASCII");
            assert!(text.starts_with(&format!("HTTP/1.1 {} ", err.status())));
            assert_ne!(status_text(err.status()), "Error");
            let (head, body) = text.split_once("\r\n\r\n").expect("blank line");
            assert!(head.contains(&format!("Content-Length: {}", body.len())));
            assert_eq!(body, format!("{}\n", err.reason()));
        }
    }

    #[test]
    fn subprotocol_selection() {
        let chosen = |extra: &str| accepted(&request(extra)).subprotocol;
        assert_eq!(
            chosen("Sec-WebSocket-Protocol: mqtt\r\n"),
            Some(Subprotocol::Mqtt)
        );
        assert_eq!(
            chosen("Sec-WebSocket-Protocol: mqttv3.1\r\n"),
            Some(Subprotocol::MqttV31)
        );
        assert_eq!(
            chosen("Sec-WebSocket-Protocol: foo, mqttv3.1\r\n"),
            Some(Subprotocol::MqttV31)
        );
        // The client's order decides, across repeated headers too.
        assert_eq!(
            chosen("Sec-WebSocket-Protocol: mqttv3.1.1 , mqtt\r\n"),
            Some(Subprotocol::MqttV311)
        );
        assert_eq!(
            chosen("Sec-WebSocket-Protocol: foo\r\nSec-WebSocket-Protocol:\tmqtt-v5,mqtt\r\n"),
            Some(Subprotocol::MqttDashV5)
        );
        assert_eq!(
            chosen("sec-websocket-protocol: mqtt-v3\r\nSec-WebSocket-Protocol: mqtt\r\n"),
            Some(Subprotocol::MqttDashV3)
        );
        assert_eq!(
            chosen("Sec-WebSocket-Protocol: ,, mqtt-v3.1.1\r\n"),
            Some(Subprotocol::MqttDashV311)
        );
        assert_eq!(chosen(""), None);
    }

    #[test]
    fn subprotocol_tokens_round_trip() {
        for p in Subprotocol::ALL {
            assert_eq!(Subprotocol::from_token(p.as_str().as_bytes()), Some(p));
        }
        // Tokens are case-sensitive (RFC 6455 §4.1).
        assert_eq!(Subprotocol::from_token(b"MQTT"), None);
    }

    #[test]
    fn subprotocol_errors() {
        assert_eq!(
            refused(&request("Sec-WebSocket-Protocol: foo, MQTT\r\n")),
            HandshakeError::SubprotocolUnsupported
        );
        assert_eq!(
            HandshakeError::SubprotocolUnsupported.reason(),
            "unsupported subprotocol, expected mqtt or mqttv3.1"
        );
        let strict = HandshakeConfig {
            allow_no_subprotocol: false,
            ..CFG
        };
        assert_eq!(
            parse_upgrade(&request(""), &strict, BYTES_MAX),
            Err(HandshakeError::SubprotocolMissing)
        );
        // An empty header offers nothing.
        assert_eq!(
            parse_upgrade(&request("Sec-WebSocket-Protocol: \r\n"), &strict, BYTES_MAX),
            Err(HandshakeError::SubprotocolMissing)
        );
        assert!(
            parse_upgrade(
                &request("Sec-WebSocket-Protocol: mqtt\r\n"),
                &strict,
                BYTES_MAX
            )
            .is_ok()
        );
    }

    #[test]
    fn header_names_are_case_insensitive_and_values_tolerant() {
        let req = b"GET /mqtt?client=7 HTTP/1.1\r\n\
            HOST: a\r\n\
            upgrade: WebSocket\r\n\
            CONNECTION: keep-alive,  Upgrade\r\n\
            sec-websocket-key:dGhlIHNhbXBsZSBub25jZQ==  \r\n\
            SEC-WEBSOCKET-VERSION: 13\r\n\
            User-Agent: x\r\n\r\n";
        let up = accepted(req);
        assert_eq!(up.accept_key_str(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        accepted(&edited("HTTP/1.1", "HTTP/1.2"));
    }

    #[test]
    fn method_and_version() {
        assert_eq!(
            refused(&edited("GET", "POST")),
            HandshakeError::MethodNotGet
        );
        // Refused before the request is complete.
        assert_eq!(refused(b"POS"), HandshakeError::MethodNotGet);
        assert_eq!(refused(&[0x10, 0x0c]), HandshakeError::MethodNotGet);
        assert_eq!(refused(&edited("GET", "get")), HandshakeError::MethodNotGet);
        // A HEAD is refused for its method however the rest of it reads: a static file may
        // answer one that parses.
        for head in [
            &edited("GET", "HEAD")[..],
            b"HEAD /mqtt HTTP/1.0\r\nHost: a\r\n\r\n",
            b"HEAD /mqtt HTTP/1.1\r\n\r\n",
            b"HEAD  /mqtt HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(refused(head), HandshakeError::MethodNotGet, "{head:?}");
        }
        assert_eq!(
            refused(&edited("HTTP/1.1", "HTTP/1.0")),
            HandshakeError::HttpVersionUnsupported
        );
        assert_eq!(
            refused(&edited("HTTP/1.1", "HTTP/2.0")),
            HandshakeError::HttpVersionUnsupported
        );
        assert_eq!(
            refused(&edited("HTTP/1.1", "HTTP/1.1x")),
            HandshakeError::Malformed
        );
    }

    #[test]
    fn paths() {
        assert_eq!(
            refused(&edited("/mqtt", "/index.html")),
            HandshakeError::NotFound
        );
        assert_eq!(
            refused(&edited("/mqtt", "/mqtt/")),
            HandshakeError::NotFound
        );
        assert_eq!(refused(&edited("/mqtt", "/MQTT")), HandshakeError::NotFound);
        accepted(&edited("/mqtt", "/mqtt?"));
        let root = HandshakeConfig { path: "/", ..CFG };
        assert!(parse_upgrade(&edited("/mqtt", "/?x=1"), &root, BYTES_MAX).is_ok());
        assert_eq!(
            refused(&edited("/mqtt", "http://h/mqtt")),
            HandshakeError::Malformed
        );
        // A plain GET for another path is NotFound, not UpgradeRequired: the caller may
        // serve it.
        assert_eq!(
            refused(b"GET /favicon.ico HTTP/1.1\r\nHost: a\r\n\r\n"),
            HandshakeError::NotFound
        );
    }

    #[test]
    fn not_websocket() {
        assert_eq!(
            refused(b"GET /mqtt HTTP/1.1\r\nHost: a\r\n\r\n"),
            HandshakeError::UpgradeRequired
        );
        assert_eq!(
            refused(&edited("Upgrade: websocket", "Upgrade: h2c")),
            HandshakeError::UpgradeRequired
        );
        assert_eq!(
            refused(&edited("Connection: Upgrade", "Connection: keep-alive")),
            HandshakeError::ConnectionNotUpgrade
        );
        assert_eq!(
            refused(&edited("Connection: Upgrade", "Connection: upgrades")),
            HandshakeError::ConnectionNotUpgrade
        );
        accepted(&edited("Upgrade: websocket", "Upgrade: foo, websocket"));
    }

    #[test]
    fn host() {
        assert_eq!(
            refused(&edited("Host: server.example.com\r\n", "")),
            HandshakeError::HostInvalid
        );
        assert_eq!(
            refused(&edited(
                "Host: server.example.com\r\n",
                "Host: a\r\nHost: b\r\n"
            )),
            HandshakeError::HostInvalid
        );
    }

    #[test]
    fn version() {
        assert_eq!(
            refused(&edited(
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Version: 8"
            )),
            HandshakeError::VersionUnsupported
        );
        assert_eq!(
            refused(&edited("Sec-WebSocket-Version: 13\r\n", "")),
            HandshakeError::VersionUnsupported
        );
        assert_eq!(
            refused(&request("Sec-WebSocket-Version: 12\r\n")),
            HandshakeError::VersionUnsupported
        );
    }

    #[test]
    fn key() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        for bad in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ=",
            "dGhlIHNhbXBsZSBub25jZ===",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j!Q==",
            "dGhlIHNhbXBsZSBub25jZSE=",
            "dGhlIHNhbXBsZSBub25jZQ==dGhlIHNhbXBsZSBub25jZQ==",
        ] {
            assert_eq!(
                refused(&edited(key, bad)),
                HandshakeError::KeyInvalid,
                "key {bad:?}"
            );
        }
        assert_eq!(
            refused(&edited(&format!("Sec-WebSocket-Key: {key}\r\n"), "")),
            HandshakeError::KeyInvalid
        );
        assert_eq!(
            refused(&request(&format!("Sec-WebSocket-Key: {key}\r\n"))),
            HandshakeError::KeyInvalid
        );
    }

    #[test]
    fn origins() {
        let allowed = [
            "https://scores.example".to_owned(),
            "http://localhost:8080".to_owned(),
        ];
        let cfg = HandshakeConfig {
            allowed_origins: &allowed,
            ..CFG
        };
        let judged = |extra: &str| parse_upgrade(&request(extra), &cfg, BYTES_MAX).map(|_| ());
        assert_eq!(judged("Origin: https://scores.example\r\n"), Ok(()));
        assert_eq!(judged("origin: HTTPS://Scores.Example\r\n"), Ok(()));
        assert_eq!(judged("Origin: http://localhost:8080\r\n"), Ok(()));
        // Without Origin, not a browser: accepted.
        assert_eq!(judged(""), Ok(()));
        for origin in [
            "Origin: https://evil.example\r\n",
            "Origin: https://scores.example.evil.example\r\n",
            "Origin: http://scores.example\r\n",
            "Origin: https://scores.example:443\r\n",
            "Origin: https://scores.example/\r\n",
            "Origin: http://localhost:8081\r\n",
            "Origin: null\r\n",
            "Origin: \r\n",
            "Origin: https://scores.example, https://evil.example\r\n",
            "Origin: https://scores.example\r\nOrigin: https://evil.example\r\n",
        ] {
            assert_eq!(
                judged(origin),
                Err(HandshakeError::OriginNotAllowed),
                "{origin:?}"
            );
        }
        // Every origin is allowed by default.
        accepted(&request("Origin: https://evil.example\r\n"));
        // The origin is judged once the request is known to be a WebSocket upgrade.
        let plain = b"GET /app.js HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\n\r\n";
        assert_eq!(
            parse_upgrade(plain, &cfg, BYTES_MAX),
            Err(HandshakeError::NotFound)
        );
        let mut out = Vec::new();
        write_error_response(HandshakeError::OriginNotAllowed, &mut out);
        let text = String::from_utf8(out).expect("ASCII");
        assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nOrigin not allowed\n"), "{text}");
    }

    #[test]
    fn refusals_of_a_head_that_did_not_parse() {
        use RequestError::*;
        let get = Some(Method::Get);
        for (error, refusal) in [
            (MethodNotAllowed, HandshakeError::MethodNotGet),
            (TooLarge, HandshakeError::RequestTooLarge),
            (Malformed, HandshakeError::Malformed),
            (VersionUnsupported, HandshakeError::HttpVersionUnsupported),
            (TooManyFields, HandshakeError::RequestTooLarge),
            (HostInvalid, HandshakeError::HostInvalid),
        ] {
            assert_eq!(HandshakeError::from_request(error, get), refusal);
            for other in [Some(Method::Head), None] {
                let refusal = HandshakeError::from_request(error, other);
                assert_eq!(refusal, HandshakeError::MethodNotGet);
            }
        }
        // Every malformed line of the head is refused 400 (the cases: `protocol::http`).
        for (from, to) in [
            ("GET /mqtt HTTP/1.1", "GET  /mqtt HTTP/1.1"),
            ("Host: server", "Host : server"),
            ("Host: server", "Host: ser\rver"),
            ("Upgrade: websocket\r\n", "Upgrade: websocket\r\n x\r\n"),
        ] {
            assert_eq!(
                refused(&edited(from, to)),
                HandshakeError::Malformed,
                "{to:?}"
            );
        }
    }

    #[test]
    fn request_size_limits() {
        // The edge cases of both limits: `protocol::http`.
        let mut endless = b"GET /mqtt HTTP/1.1\r\nX: ".to_vec();
        endless.resize(BYTES_MAX, b'a');
        assert_eq!(refused(&endless), HandshakeError::RequestTooLarge);
        assert_eq!(parse(&endless[..endless.len() - 1]), Ok(None));
        let fields = |n: usize| request(&"X: y\r\n".repeat(n - 5));
        accepted(&fields(FIELDS_MAX));
        assert_eq!(
            refused(&fields(FIELDS_MAX + 1)),
            HandshakeError::RequestTooLarge
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            max in 0usize..700,
        ) {
            let _ = parse_upgrade(&bytes, &CFG, max);
            let mut prefixed = b"GET /mqtt HTTP/1.1\r\n".to_vec();
            prefixed.extend_from_slice(&bytes);
            prefixed.extend_from_slice(b"\r\n\r\n");
            let _ = parse_upgrade(&prefixed, &CFG, BYTES_MAX);
        }

        #[test]
        fn split_at_every_byte_is_incomplete_until_the_end(
            extra in proptest::sample::select(vec![
                "", "Sec-WebSocket-Protocol: mqtt\r\n", "Origin: http://x\r\n",
            ]),
        ) {
            let req = request(extra);
            for end in 0..req.len() {
                prop_assert_eq!(parse(&req[..end]), Ok(None));
            }
            accepted(&req);
        }
    }
}
