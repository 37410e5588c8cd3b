//! One HTTP/1.1 request read from an admin connection, within bounds: the head (request line
//! and headers) parsed with httparse once it is complete, at most `admin_head_bytes_max`; the
//! body by its `Content-Length`, at most `admin_body_bytes_max`, refused before any of it is
//! read; the whole within `admin_timeout_ms`.
//!
//! One request per connection (`Connection: close`): the API is called rarely, and a
//! connection that stays open would hold one of the `admin_connections_max` threads for
//! nothing.

use std::io::Read;
use std::time::Instant;

/// Headers a request may carry; past it the head is refused (431).
const HEADERS_MAX: usize = 32;
/// Query parameters read from a target; the rest are ignored.
const QUERY_PAIRS_MAX: usize = 16;

/// What was read: the method, the target's decoded path segments and query, the
/// `Authorization` header and the body.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    /// The path, split at `/` and each segment percent-decoded (`/api/v1/clients/a%2Fb` →
    /// `["api", "v1", "clients", "a/b"]`).
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub body: Vec<u8>,
}

impl Request {
    /// The value of query parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why no request could be read; each has its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed or the connection broke: nobody to answer.
    Gone,
    /// Not a valid HTTP/1.x request, or a target that does not decode.
    Malformed,
    TimedOut,
    HeadTooLarge,
    BodyTooLarge,
    /// A body without `Content-Length` (chunked): not taken.
    LengthRequired,
}

impl ReadError {
    /// The status and message of the answer, `None` when nobody is left to answer.
    pub fn status(self) -> Option<(u16, &'static str)> {
        match self {
            ReadError::Gone => None,
            ReadError::Malformed => Some((400, "malformed HTTP request")),
            ReadError::TimedOut => Some((408, "the request was not received in time")),
            ReadError::HeadTooLarge => Some((431, "the request head exceeds admin_head_bytes_max")),
            ReadError::BodyTooLarge => Some((413, "the body exceeds admin_body_bytes_max")),
            ReadError::LengthRequired => Some((411, "a body needs a Content-Length")),
        }
    }
}

/// The bounds of one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub head_bytes_max: usize,
    pub body_bytes_max: u64,
    pub deadline: Instant,
}

/// Reads one request from `stream`, whose read timeout is set.
pub fn read(stream: &mut impl Read, limits: RequestLimits) -> Result<Request, ReadError> {
    let mut buf = vec![0; limits.head_bytes_max];
    let mut filled = 0;
    loop {
        if Instant::now() > limits.deadline {
            return Err(ReadError::TimedOut);
        }
        if filled == buf.len() {
            return Err(ReadError::HeadTooLarge);
        }
        filled += match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(ReadError::Gone),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Err(ReadError::TimedOut),
            Err(_) => return Err(ReadError::Gone),
        };
        let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
        let mut head = httparse::Request::new(&mut headers);
        match head.parse(&buf[..filled]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(head_len)) => {
                let (mut request, length) = from_head(&head)?;
                if length > limits.body_bytes_max {
                    return Err(ReadError::BodyTooLarge);
                }
                let length = length as usize;
                let already = &buf[head_len..filled];
                request.body = already[..already.len().min(length)].to_vec();
                read_body(stream, &mut request.body, length, limits.deadline)?;
                return Ok(request);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge),
            Err(_) => return Err(ReadError::Malformed),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The request without its body, and the body's length.
fn from_head(head: &httparse::Request<'_, '_>) -> Result<(Request, u64), ReadError> {
    let method = head.method.ok_or(ReadError::Malformed)?.to_owned();
    let target = head.path.ok_or(ReadError::Malformed)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments = path
        .strip_prefix('/')
        .ok_or(ReadError::Malformed)?
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| percent_decode(segment, false).ok_or(ReadError::Malformed))
        .collect::<Result<Vec<_>, _>>()?;
    let query = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .take(QUERY_PAIRS_MAX)
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match (percent_decode(key, true), percent_decode(value, true)) {
                (Some(key), Some(value)) => Ok((key, value)),
                _ => Err(ReadError::Malformed),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut length = 0;
    let mut authorization = None;
    for header in head.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| ReadError::Malformed)?;
        if header.name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().map_err(|_| ReadError::Malformed)?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReadError::LengthRequired);
        } else if header.name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_owned());
        }
    }
    let request = Request {
        method,
        segments,
        query,
        authorization,
        body: Vec::new(),
    };
    Ok((request, length))
}

fn read_body(
    stream: &mut impl Read,
    body: &mut Vec<u8>,
    length: usize,
    deadline: Instant,
) -> Result<(), ReadError> {
    let start = body.len();
    body.resize(length, 0);
    let mut filled = start;
    while filled < length {
        if Instant::now() > deadline {
            return Err(ReadError::TimedOut);
        }
        filled += match stream.read(&mut body[filled..]) {
            Ok(0) => return Err(ReadError::Gone),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Err(ReadError::TimedOut),
            Err(_) => return Err(ReadError::Gone),
        };
    }
    Ok(())
}

/// Percent-decodes `text` (RFC 3986 §2.1), `+` as a space in a query (form encoding);
/// `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(text: &str, query: bool) -> Option<String> {
    let raw = text.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'%' => {
                let hex = std::str::from_utf8(raw.get(i + 1..i + 3)?).ok()?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if query => {
                bytes.push(b' ');
                i += 1;
            }
            byte => {
                bytes.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RequestLimits {
        RequestLimits {
            head_bytes_max: 1024,
            body_bytes_max: 16,
            deadline: Instant::now() + Duration::from_secs(5),
        }
    }

    #[test]
    fn head_and_body_within_bounds() {
        let raw = b"POST /api/v1/clients/a%2Fb?topic=x%2By+z&limit=3 HTTP/1.1\r\nAuthorization: Bearer t\r\nContent-Length: 4\r\n\r\nbody";
        let request = read(&mut &raw[..], limits()).expect("valid");
        assert_eq!(request.method, "POST");
        assert_eq!(request.segments, ["api", "v1", "clients", "a/b"]);
        assert_eq!(request.param("topic"), Some("x+y z"));
        assert_eq!(request.param("limit"), Some("3"));
        assert_eq!(request.authorization.as_deref(), Some("Bearer t"));
        assert_eq!(request.body, b"body");
    }

    #[test]
    fn bounds_and_malformed_input() {
        let big = b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n";
        assert_eq!(
            read(&mut &big[..], limits()).err(),
            Some(ReadError::BodyTooLarge)
        );
        let malformed = b"GET / HTTP/1.1\r\nbad header\r\n\r\n";
        assert_eq!(
            read(&mut &malformed[..], limits()).err(),
            Some(ReadError::Malformed)
        );
        let mut head = b"GET /".to_vec();
        head.extend([b'a'; 2048]);
        assert_eq!(
            read(&mut &head[..], limits()).err(),
            Some(ReadError::HeadTooLarge)
        );
        let cut = b"GET / HTTP/1.1\r\n";
        assert_eq!(read(&mut &cut[..], limits()).err(), Some(ReadError::Gone));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            read(&mut &chunked[..], limits()).err(),
            Some(ReadError::LengthRequired)
        );
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%ff", false), None);
    }
}
