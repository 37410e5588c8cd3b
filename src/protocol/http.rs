//! The head of an HTTP/1.1 request (RFC 9112 §2.1, §3, §5), as the WebSocket listener reads
//! it: the upgrade that opens a WebSocket ([`super::ws::handshake`]) and the plain GET or HEAD
//! that a static file answers (`crate::http`) alike, parsed once.
//!
//! [`parse_head`] reads the head from the bytes received so far. `Ok(None)` asks for more and
//! consumes nothing; `Ok(Some((head, consumed)))` borrows the method, the target and the header
//! fields from the buffer, and leaves the bytes after `consumed` alone (after an upgrade they
//! are WebSocket frames). The header fields are parsed by `httparse`. The request line is read
//! here: HTTP/1.1 "or higher" is taken (RFC 6455 §4.1 item 2, so 1.2 as well) and HTTP/2.0 is
//! an unsupported version rather than malformed, where httparse's request line knows HTTP/1.0
//! and 1.1 only. Past the method, nothing is read until the blank line is in: a head that is
//! incomplete is never an error, whatever its first lines hold.
//!
//! Bounded: a head may not exceed `bytes_max` bytes (a peer that never ends it costs at most
//! that many buffered bytes) nor hold more than [`FIELDS_MAX`] header fields, which live in a
//! fixed table on the caller's stack ([`Fields`]). No allocation.

/// Most header fields in one request. A browser sends about 15, a chain of proxies adds a few
/// more; 100 leaves room for both and keeps [`Fields`] a fixed table on the stack (3.2 KB at
/// 32 bytes a field). Past it the head is refused like one with too many bytes (431, RFC 6585
/// §5).
pub const FIELDS_MAX: usize = 100;

/// The methods the WebSocket listener answers: GET upgrades or fetches a file, HEAD asks about
/// a file (RFC 9110 §9.3.1, §9.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

impl Method {
    /// Each method with the space that ends its name on the request line.
    const NAMES: [(Method, &'static [u8]); 2] = [(Method::Get, b"GET "), (Method::Head, b"HEAD ")];

    /// The method a request starting with `buf` names, as far as its first bytes tell: GET
    /// while `buf` is a prefix of "GET " (the empty buffer included) or starts with it, HEAD
    /// likewise; `None` once the bytes name neither. Other methods are refused from their
    /// first bytes, so a peer speaking raw MQTT or TLS to the port is answered at once instead
    /// of when the size limit or the timeout runs out.
    pub fn from_start(buf: &[u8]) -> Option<Method> {
        Method::NAMES.into_iter().find_map(|(method, name)| {
            let start = &buf[..buf.len().min(name.len())];
            name.starts_with(start).then_some(method)
        })
    }
}

/// Why a request head is refused. The checks run in this order, except that the syntax of the
/// request line comes before its version, and the header fields come after both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestError {
    /// A method other than GET or HEAD, refused from the first bytes that show it.
    MethodNotAllowed,
    /// No blank line within `bytes_max` bytes.
    TooLarge,
    /// Not HTTP/1.x syntax: a bad request line or header field, or a bare CR or LF, which is
    /// how request smuggling starts (RFC 9112 §2.2).
    Malformed,
    /// HTTP/1.0, or a major version other than 1.
    VersionUnsupported,
    /// More than [`FIELDS_MAX`] header fields.
    TooManyFields,
    /// Missing or repeated Host (RFC 9112 §3.2).
    HostInvalid,
}

/// Room for the header fields of one request head, filled by [`parse_head`].
pub struct Fields<'b>([httparse::Header<'b>; FIELDS_MAX]);

impl Fields<'_> {
    pub const fn new() -> Self {
        Fields([httparse::EMPTY_HEADER; FIELDS_MAX])
    }
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Fields::new()
    }
}

/// A parsed request head, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: Method,
    /// The origin-form target, query included (RFC 9112 §3.2.1): a `/` and visible ASCII.
    pub target: &'a [u8],
    /// The minor version of HTTP/1.x: 1 or more.
    pub version_minor: u8,
    /// The header fields in the order received, values without surrounding whitespace.
    fields: &'a [httparse::Header<'a>],
}

impl<'a> RequestHead<'a> {
    /// The target without its query (RFC 3986 §3.4).
    pub fn path(&self) -> &'a [u8] {
        match self.target.iter().position(|&b| b == b'?') {
            Some(query) => &self.target[..query],
            None => self.target,
        }
    }

    /// The values of every field called `name`, in the order received. Field names are
    /// compared case-insensitively (RFC 9110 §5.1).
    pub fn values(&self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.fields
            .iter()
            .filter(move |field| field.name.eq_ignore_ascii_case(name))
            .map(|field| field.value)
    }

    /// The value of the last field called `name`.
    pub fn last(&self, name: &'static str) -> Option<&'a [u8]> {
        self.values(name).last()
    }

    /// The elements of the comma-separated lists in every field called `name`, in order:
    /// repeated fields form one list (RFC 9110 §5.3). Empty elements are skipped.
    pub fn list(&self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + use<'a> {
        self.values(name).flat_map(list_items)
    }

    /// `Accept-Encoding` names gzip (or `*`) with a non-zero weight (RFC 9110 §12.5.3).
    pub fn accepts_gzip(&self) -> bool {
        self.list("accept-encoding").any(coding_accepts_gzip)
    }
}

/// Parses the request head at the start of `buf`: `Ok(Some((head, consumed)))` once its blank
/// line is in, `buf[..consumed]` being the head, blank line included. Parsing rescans from the
/// start, which the byte limit keeps cheap.
pub fn parse_head<'h, 'b: 'h>(
    buf: &'b [u8],
    bytes_max: usize,
    fields: &'h mut Fields<'b>,
) -> Result<Option<(RequestHead<'h>, usize)>, RequestError> {
    let method = Method::from_start(buf).ok_or(RequestError::MethodNotAllowed)?;
    let window = &buf[..buf.len().min(bytes_max)];
    let Some(blank_line) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= bytes_max {
            Err(RequestError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let consumed = blank_line + 4;
    // The blank line's own CRLF ends the request line when there are no fields.
    let line_len = buf[..blank_line + 2]
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or(RequestError::Malformed)?;
    let (target, version_minor) = parse_request_line(&buf[..line_len])?;
    let fields = parse_fields(&buf[line_len + 2..consumed], &mut fields.0)?;
    let head = RequestHead {
        method,
        target,
        version_minor,
        fields,
    };
    if head.values("host").count() != 1 {
        return Err(RequestError::HostInvalid);
    }
    Ok(Some((head, consumed)))
}

/// "METHOD SP origin-form SP HTTP/1.x", with the method already checked: the target and the
/// minor version.
fn parse_request_line(line: &[u8]) -> Result<(&[u8], u8), RequestError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    // Origin form only (RFC 9112 §3.2.1): what browsers and WebSocket clients send. Visible
    // bytes only, so a bare CR or LF in the line is refused here.
    if target.first() != Some(&b'/') || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(RequestError::Malformed);
    }
    match *version {
        // Later 1.x minors are compatible with 1.1 (RFC 9110 §2.5).
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            if minor == b'0' {
                Err(RequestError::VersionUnsupported)
            } else {
                Ok((target, minor - b'0'))
            }
        }
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(RequestError::VersionUnsupported)
        }
        _ => Err(RequestError::Malformed),
    }
}

/// Parses the header fields and the blank line after them: `block` holds exactly those.
/// Names are tokens (RFC 9110 §5.6.2) right before the colon (RFC 9112 §5.1), values visible
/// bytes, spaces and tabs (RFC 9110 §5.5), and obsolete line folding is refused (RFC 9112
/// §5.2); httparse checks all three, and refuses a bare CR. It ends a line at a bare LF, so
/// that is refused first.
fn parse_fields<'h, 'b: 'h>(
    block: &'b [u8],
    table: &'h mut [httparse::Header<'b>],
) -> Result<&'h [httparse::Header<'b>], RequestError> {
    let bare_lf = block
        .iter()
        .enumerate()
        .any(|(at, &b)| b == b'\n' && (at == 0 || block[at - 1] != b'\r'));
    if bare_lf {
        return Err(RequestError::Malformed);
    }
    match httparse::parse_headers(block, table) {
        Ok(httparse::Status::Complete((len, fields))) if len == block.len() => Ok(fields),
        Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooManyFields),
        // Any other error is bad syntax. Ending before the block does, or not at all, takes a
        // bare LF, refused above.
        Ok(_) | Err(_) => Err(RequestError::Malformed),
    }
}

/// The non-empty elements of a comma-separated list (RFC 9110 §5.6.1), without the optional
/// whitespace around them.
pub fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|item| !item.is_empty())
}

/// Whether one element of `Accept-Encoding` allows gzip: `gzip`, `x-gzip` or `*`, unless its
/// weight is zero (`q=0`, `q=0.000`).
fn coding_accepts_gzip(item: &[u8]) -> bool {
    let mut params = item.split(|&b| b == b';').map(trim);
    let coding = params.next().unwrap_or_default();
    let named = coding.eq_ignore_ascii_case(b"gzip")
        || coding.eq_ignore_ascii_case(b"x-gzip")
        || coding == b"*";
    let refused = params.any(|param| {
        let Some(weight) = param
            .strip_prefix(b"q=")
            .or_else(|| param.strip_prefix(b"Q="))
        else {
            return false;
        };
        weight.first() == Some(&b'0') && weight[1..].iter().all(|&b| b == b'.' || b == b'0')
    });
    named && !refused
}

/// Strips optional whitespace (RFC 9110 §5.6.3) from both ends.
pub(crate) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 8192;

    /// A browser's upgrade request with the given extra header lines.
    fn upgrade(extra: &str) -> Vec<u8> {
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

    /// Replaces the first occurrence of `from` in the standard upgrade request.
    fn edited(from: &str, to: &str) -> Vec<u8> {
        let req = String::from_utf8(upgrade("")).expect("ASCII");
        assert!(req.contains(from), "{from:?} not in the request");
        req.replacen(from, to, 1).into_bytes()
    }

    fn parse(req: &[u8], max: usize) -> Result<Option<usize>, RequestError> {
        let mut fields = Fields::new();
        parse_head(req, max, &mut fields).map(|parsed| parsed.map(|(_, consumed)| consumed))
    }

    /// Runs `check` on the head of the complete request `req`.
    fn with_head(req: &[u8], check: impl FnOnce(&RequestHead<'_>)) {
        let mut fields = Fields::new();
        match parse_head(req, MAX, &mut fields) {
            Ok(Some((head, consumed))) => {
                assert_eq!(consumed, req.len());
                check(&head);
            }
            other => panic!("expected a request head, got {other:?}"),
        }
    }

    fn refused(req: &[u8]) -> RequestError {
        match parse(req, MAX) {
            Err(error) => error,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn get_and_head() {
        with_head(b"GET /a.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n", |head| {
            assert_eq!(head.method, Method::Get);
            assert_eq!(head.target, b"/a.js?v=1");
            assert_eq!(head.path(), b"/a.js");
            assert_eq!(head.version_minor, 1);
            assert_eq!(head.last("if-none-match"), None);
            assert!(!head.accepts_gzip());
        });
        with_head(
            b"HEAD / HTTP/1.1\r\nhost: x\r\nIf-None-Match: \"ab\"\r\n\r\n",
            |head| {
                assert_eq!(head.method, Method::Head);
                assert_eq!(head.path(), b"/");
                assert_eq!(head.last("If-None-Match"), Some(&b"\"ab\""[..]));
            },
        );
    }

    #[test]
    fn method_from_the_first_bytes() {
        for (start, method) in [
            (&b""[..], Some(Method::Get)),
            (b"G", Some(Method::Get)),
            (b"GET", Some(Method::Get)),
            (b"GET /", Some(Method::Get)),
            (b"H", Some(Method::Head)),
            (b"HEAD", Some(Method::Head)),
            (b"HEAD /", Some(Method::Head)),
            (b"GET/", None),
            (b"HEADS", None),
            (b"POS", None),
            (b"get ", None),
            (b"\x10\x0c", None),
        ] {
            assert_eq!(Method::from_start(start), method, "{start:?}");
        }
        // Refused before the request is complete.
        assert_eq!(refused(b"POS"), RequestError::MethodNotAllowed);
        assert_eq!(refused(b"\x10\x0c"), RequestError::MethodNotAllowed);
        assert_eq!(
            refused(&edited("GET", "POST")),
            RequestError::MethodNotAllowed
        );
        assert_eq!(
            refused(&edited("GET", "get")),
            RequestError::MethodNotAllowed
        );
    }

    #[test]
    fn split_at_every_byte_is_incomplete_until_the_end() {
        for req in [
            &upgrade("Sec-WebSocket-Protocol: mqtt\r\n")[..],
            b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            for end in 0..req.len() {
                assert_eq!(parse(&req[..end], MAX), Ok(None), "prefix of {end} bytes");
            }
            assert_eq!(parse(req, MAX), Ok(Some(req.len())));
        }
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let mut req = upgrade("");
        let len = req.len();
        req.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]);
        assert_eq!(parse(&req, MAX), Ok(Some(len)));
        // Nor read: a second head after the first is not looked at.
        let mut two = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let len = two.len();
        two.extend_from_slice(b"GET  / HTTP/9.9\r\n\n\r\n\r\n");
        assert_eq!(parse(&two, MAX), Ok(Some(len)));
    }

    #[test]
    fn fields_by_name_and_as_lists() {
        let req = b"GET /mqtt?client=7 HTTP/1.2\r\n\
            HOST: a\r\n\
            upgrade: WebSocket\r\n\
            CONNECTION: keep-alive,  Upgrade\r\n\
            sec-websocket-key:dGhlIHNhbXBsZSBub25jZQ==  \r\n\
            Sec-WebSocket-Protocol: ,, mqtt-v3.1.1 ,\r\n\
            Sec-WebSocket-Protocol:\tmqtt\t\r\n\
            X-Empty:\r\n\
            User-Agent: x\r\n\r\n";
        with_head(req, |head| {
            assert_eq!(head.version_minor, 2);
            assert_eq!(head.path(), b"/mqtt");
            assert_eq!(head.values("host").collect::<Vec<_>>(), [b"a"]);
            assert_eq!(
                head.values("sec-websocket-key").collect::<Vec<_>>(),
                [b"dGhlIHNhbXBsZSBub25jZQ=="]
            );
            assert_eq!(
                head.list("connection").collect::<Vec<_>>(),
                [&b"keep-alive"[..], b"Upgrade"]
            );
            assert_eq!(
                head.list("sec-websocket-protocol").collect::<Vec<_>>(),
                [&b"mqtt-v3.1.1"[..], b"mqtt"]
            );
            assert_eq!(head.last("sec-websocket-protocol"), Some(&b"mqtt"[..]));
            assert_eq!(head.last("x-empty"), Some(&b""[..]));
            assert_eq!(head.list("x-empty").count(), 0);
            assert_eq!(head.values("origin").count(), 0);
        });
    }

    #[test]
    fn versions() {
        assert_eq!(
            refused(&edited("HTTP/1.1", "HTTP/1.0")),
            RequestError::VersionUnsupported
        );
        assert_eq!(
            refused(&edited("HTTP/1.1", "HTTP/2.0")),
            RequestError::VersionUnsupported
        );
        assert_eq!(
            refused(&edited("HTTP/1.1", "HTTP/1.1x")),
            RequestError::Malformed
        );
        assert_eq!(
            refused(&edited("HTTP/1.1", "HTTP/1.x")),
            RequestError::Malformed
        );
        with_head(&edited("HTTP/1.1", "HTTP/1.9"), |head| {
            assert_eq!(head.version_minor, 9);
        });
        // The target is checked before the version.
        assert_eq!(
            refused(&edited("/mqtt HTTP/1.1", "mqtt HTTP/2.0")),
            RequestError::Malformed
        );
    }

    #[test]
    fn host() {
        assert_eq!(
            refused(&edited("Host: server.example.com\r\n", "")),
            RequestError::HostInvalid
        );
        assert_eq!(
            refused(&edited(
                "Host: server.example.com\r\n",
                "Host: a\r\nhost: b\r\n"
            )),
            RequestError::HostInvalid
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\n\r\n"),
            RequestError::HostInvalid
        );
        // The syntax of every line is checked before the Host.
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nX y\r\n\r\n"),
            RequestError::Malformed
        );
    }

    #[test]
    fn malformed_lines() {
        for (from, to) in [
            ("GET /mqtt HTTP/1.1", "GET  /mqtt HTTP/1.1"),
            ("GET /mqtt HTTP/1.1", "GET /mqtt HTTP/1.1 "),
            ("GET /mqtt HTTP/1.1", "GET mqtt HTTP/1.1"),
            ("GET /mqtt HTTP/1.1", "GET /mqtt"),
            ("GET /mqtt HTTP/1.1", "GET /mq\x7ftt HTTP/1.1"),
            ("GET /mqtt HTTP/1.1", "GET /mqtté HTTP/1.1"),
            ("GET /mqtt HTTP/1.1", "GET http://h/mqtt HTTP/1.1"),
            ("GET /mqtt HTTP/1.1\r\n", "GET /mqtt HTTP/1.1\n"),
            ("GET /mqtt HTTP/1.1\r\n", "GET /mqtt HTTP/1.1\r\r\n"),
            ("Host: server", "Host : server"),
            ("Host: server", "Host\0: server"),
            ("Host: server", "Host server"),
            ("Host: server", "Hostserver"),
            ("Host: server", ": server"),
            ("Host: server", "Hé: server"),
            ("Host: server", "Host: ser\0ver"),
            ("Host: server", "Host: ser\x7fver"),
            ("Host: server", "Host: ser\rver"),
            ("Host: server", "Host: ser\nver"),
            ("Host: server.example.com\r\n", "Host: server.example.com\n"),
            (
                "Host: server.example.com\r\n",
                "Host: server.example.com\r\r\n",
            ),
            ("Upgrade: websocket\r\n", "Upgrade: websocket\r\n x\r\n"),
            ("Upgrade: websocket\r\n", "Upgrade: websocket\r\n\tx\r\n"),
            ("Upgrade: websocket\r\n", "Upgrade: websocket\r\n\n"),
        ] {
            assert_eq!(
                refused(&edited(from, to)),
                RequestError::Malformed,
                "{to:?}"
            );
        }
        // Bytes from 0x80 are allowed in values (obs-text, RFC 9110 §5.5).
        with_head(&edited("Host: server", "Host: sérver"), |head| {
            assert_eq!(head.last("host"), Some("sérver.example.com".as_bytes()));
        });
    }

    #[test]
    fn size_limit() {
        let req = upgrade("");
        assert_eq!(parse(&req, req.len()), Ok(Some(req.len())));
        let short = req.len() - 1;
        assert_eq!(parse(&req, short), Err(RequestError::TooLarge));
        assert_eq!(parse(&req[..short], short), Err(RequestError::TooLarge));
        assert_eq!(parse(&req[..short - 1], short), Ok(None));
        let mut endless = b"GET /mqtt HTTP/1.1\r\nX: ".to_vec();
        endless.resize(MAX, b'a');
        assert_eq!(refused(&endless), RequestError::TooLarge);
        assert_eq!(parse(&endless[..MAX - 1], MAX), Ok(None));
        let mut endless = b"HEAD / HTTP/1.1\r\nX: ".to_vec();
        endless.resize(64, b'a');
        assert_eq!(parse(&endless, 64), Err(RequestError::TooLarge));
        assert_eq!(parse(&endless[..63], 64), Ok(None));
        // Even before the method is known, the buffer may not pass the limit.
        assert_eq!(parse(b"GE", 2), Err(RequestError::TooLarge));
        assert_eq!(parse(b"G", 2), Ok(None));
    }

    #[test]
    fn fields_limit() {
        let fields = |n: usize| upgrade(&"X: y\r\n".repeat(n - 5));
        let most = fields(FIELDS_MAX);
        assert_eq!(parse(&most, MAX), Ok(Some(most.len())));
        assert_eq!(
            refused(&fields(FIELDS_MAX + 1)),
            RequestError::TooManyFields
        );
    }

    #[test]
    fn gzip_weights() {
        for (value, gzip) in [
            ("gzip", true),
            ("gzip, deflate, br", true),
            ("br;q=1.0, GZIP;q=0.5", true),
            ("*", true),
            ("x-gzip", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("gzip; q=0.000", false),
            ("gzip;q=0.001", true),
            ("gzipx", false),
            ("", false),
        ] {
            let req = format!("GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: {value}\r\n\r\n");
            with_head(req.as_bytes(), |head| {
                assert_eq!(head.accepts_gzip(), gzip, "{value:?}");
            });
        }
        let repeated = b"GET / HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n\
            accept-encoding: gzip\r\n\r\n";
        with_head(repeated, |head| assert!(head.accepts_gzip()));
    }

    #[test]
    fn list_elements() {
        assert_eq!(
            list_items(b" a ,, \tb\t,c,").collect::<Vec<_>>(),
            [&b"a"[..], b"b", b"c"]
        );
        assert_eq!(list_items(b" , ").count(), 0);
        assert_eq!(trim(b" \t a b \t"), b"a b");
    }

    /// A valid field name and value, for generated heads.
    fn field() -> impl Strategy<Value = String> {
        ("[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", "[ -~\t]{0,24}")
            .prop_filter("not Host", |(name, _)| !name.eq_ignore_ascii_case("host"))
            .prop_map(|(name, value)| format!("{name}:{value}\r\n"))
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            max in 0usize..700,
        ) {
            let _ = parse(&bytes, max);
            for start in [&b"GET /mqtt HTTP/1.1\r\n"[..], b"HEAD / HTTP/1.1\r\nHost: x\r\n"] {
                let mut prefixed = start.to_vec();
                prefixed.extend_from_slice(&bytes);
                prefixed.extend_from_slice(b"\r\n\r\n");
                if let Ok(Some(consumed)) = parse(&prefixed, MAX) {
                    prop_assert!(consumed <= prefixed.len());
                }
            }
        }

        #[test]
        fn generated_heads_are_incomplete_until_the_end(
            head in proptest::sample::select(vec!["GET /", "HEAD /x?y=1", "GET /mqtt"]),
            fields in proptest::collection::vec(field(), 0..8),
            trailing in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut req = format!("{head} HTTP/1.1\r\nHost: h\r\n").into_bytes();
            for field in &fields {
                req.extend_from_slice(field.as_bytes());
            }
            req.extend_from_slice(b"\r\n");
            let len = req.len();
            for end in 0..len {
                prop_assert_eq!(parse(&req[..end], MAX), Ok(None));
            }
            req.extend_from_slice(&trailing);
            prop_assert_eq!(parse(&req, MAX), Ok(Some(len)));
            let mut table = Fields::new();
            let (parsed, _) = parse_head(&req, MAX, &mut table)
                .expect("valid")
                .expect("complete");
            prop_assert_eq!(parsed.fields.len(), fields.len() + 1);
        }
    }
}
