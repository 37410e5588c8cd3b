//! A plain HTTP/1.1 `GET` or `HEAD` request head (RFC 9112 §3), read from the bytes received
//! so far: the request that reaches the WebSocket listener but is not an upgrade.
//!
//! Borrowed and bounded like the upgrade parser: `Ok(None)` means "need more", the head may not
//! exceed `bytes_max`, and only the headers that change the answer are kept.

use crate::protocol::ws::handshake::HEADER_FIELDS_MAX;

/// The methods a static file answers (RFC 9110 §9.3.1, §9.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// What the response depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'b> {
    pub method: Method,
    /// The origin-form target, query included (RFC 9112 §3.2.1).
    pub target: &'b [u8],
    /// The `If-None-Match` list; a repeated header keeps the last (they are rare and a miss
    /// only costs a full answer).
    pub if_none_match: Option<&'b [u8]>,
    /// `Accept-Encoding` lists gzip (or `*`) with a non-zero weight (RFC 9110 §12.5.3).
    pub accepts_gzip: bool,
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// No blank line within `bytes_max` bytes, or more than [`HEADER_FIELDS_MAX`] header
    /// fields.
    TooLarge,
    /// Not HTTP/1.x syntax, or a bare CR or LF (RFC 9112 §2.2).
    Malformed,
    /// A method other than GET or HEAD.
    MethodNotAllowed,
    /// Not HTTP/1.1 or a later 1.x.
    VersionUnsupported,
    /// Missing or repeated Host (RFC 9112 §3.2).
    HostInvalid,
}

/// Parses the request head at the start of `buf`. `Ok(Some((request, consumed)))` once the
/// blank line is in; `buf[..consumed]` is the head.
pub fn parse_request(
    buf: &[u8],
    bytes_max: usize,
) -> Result<Option<(Request<'_>, usize)>, RequestError> {
    // Refuse other methods at once, as the upgrade parser does.
    let get = b"GET ".starts_with(&buf[..buf.len().min(4)]);
    let head = b"HEAD ".starts_with(&buf[..buf.len().min(5)]);
    if !get && !head {
        return Err(RequestError::MethodNotAllowed);
    }
    let window = &buf[..buf.len().min(bytes_max)];
    let Some(head_len) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() >= bytes_max {
            Err(RequestError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let mut lines = CrlfLines(Some(&buf[..head_len]));
    let request_line = lines.next().ok_or(RequestError::Malformed)?;
    let (method, target) = parse_request_line(request_line)?;
    let mut request = Request {
        method,
        target,
        if_none_match: None,
        accepts_gzip: false,
    };
    let mut hosts = 0u32;
    for (index, line) in lines.enumerate() {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(RequestError::Malformed)?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(RequestError::Malformed);
        }
        if !value
            .iter()
            .all(|&b| b == b'\t' || b == b' ' || (b >= 0x21 && b != 0x7f))
        {
            return Err(RequestError::Malformed);
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"if-none-match") {
            request.if_none_match = Some(value);
        } else if name.eq_ignore_ascii_case(b"accept-encoding") {
            request.accepts_gzip |= accepts_gzip(value);
        }
        if index == HEADER_FIELDS_MAX {
            return Err(RequestError::TooLarge);
        }
    }
    if hosts != 1 {
        return Err(RequestError::HostInvalid);
    }
    Ok(Some((request, head_len + 4)))
}

/// The lines of a request head split on CRLF. A bare CR or LF inside a line is refused by
/// the callers' byte checks: they are how request smuggling starts (RFC 9112 §2.2).
struct CrlfLines<'b>(Option<&'b [u8]>);

impl<'b> Iterator for CrlfLines<'b> {
    type Item = &'b [u8];

    fn next(&mut self) -> Option<&'b [u8]> {
        let rest = self.0?;
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                self.0 = Some(&rest[end + 2..]);
                Some(&rest[..end])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// "METHOD SP origin-form SP HTTP/1.x".
fn parse_request_line(line: &[u8]) -> Result<(Method, &[u8]), RequestError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RequestError::Malformed);
    };
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        _ => return Err(RequestError::MethodNotAllowed),
    };
    if target.first() != Some(&b'/') || !target.iter().all(|&b| b.is_ascii_graphic()) {
        return Err(RequestError::Malformed);
    }
    match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit() => {
            if *minor == b'0' {
                Err(RequestError::VersionUnsupported)
            } else {
                Ok((method, target))
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

/// Whether an `Accept-Encoding` value allows gzip: `gzip`, `x-gzip` or `*`, unless its weight
/// is zero (`q=0`, `q=0.000`).
fn accepts_gzip(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|item| {
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
    })
}

/// RFC 9110 §5.6.2: the bytes allowed in a header name.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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

    fn parsed(req: &[u8]) -> Request<'_> {
        match parse_request(req, MAX) {
            Ok(Some((request, consumed))) => {
                assert_eq!(consumed, req.len());
                request
            }
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn get_and_head() {
        let req = parsed(b"GET /a.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.target, b"/a.js?v=1");
        assert_eq!(req.if_none_match, None);
        assert!(!req.accepts_gzip);
        let req = parsed(b"HEAD / HTTP/1.1\r\nhost: x\r\nIf-None-Match: \"ab\"\r\n\r\n");
        assert_eq!(req.method, Method::Head);
        assert_eq!(req.if_none_match, Some(&b"\"ab\""[..]));
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        let req = b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n";
        for end in 0..req.len() {
            assert_eq!(parse_request(&req[..end], MAX), Ok(None), "{end}");
        }
        parsed(req);
    }

    #[test]
    fn refusals() {
        let refused = |req: &[u8]| parse_request(req, MAX).expect_err("refused");
        assert_eq!(refused(b"POS"), RequestError::MethodNotAllowed);
        assert_eq!(refused(b"\x10\x0c"), RequestError::MethodNotAllowed);
        assert_eq!(
            refused(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"),
            RequestError::VersionUnsupported
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\n\r\n"),
            RequestError::HostInvalid
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            RequestError::HostInvalid
        );
        for bad in [
            &b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\ry\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\0\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(refused(bad), RequestError::Malformed, "{bad:?}");
        }
        let fields = |n: usize| {
            format!(
                "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
                "X: y\r\n".repeat(n - 1)
            )
        };
        assert!(matches!(
            parse_request(fields(HEADER_FIELDS_MAX).as_bytes(), MAX),
            Ok(Some(_))
        ));
        assert_eq!(
            refused(fields(HEADER_FIELDS_MAX + 1).as_bytes()),
            RequestError::TooLarge
        );
        let mut endless = b"HEAD / HTTP/1.1\r\nX: ".to_vec();
        endless.resize(64, b'a');
        assert_eq!(parse_request(&endless, 64), Err(RequestError::TooLarge));
        assert_eq!(parse_request(&endless[..63], 64), Ok(None));
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
            assert_eq!(parsed(req.as_bytes()).accepts_gzip, gzip, "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            max in 0usize..500,
        ) {
            let _ = parse_request(&bytes, max);
            let mut prefixed = b"GET / HTTP/1.1\r\n".to_vec();
            prefixed.extend_from_slice(&bytes);
            prefixed.extend_from_slice(b"\r\n\r\n");
            let _ = parse_request(&prefixed, MAX);
        }
    }
}
