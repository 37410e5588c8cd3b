//! Static file responses as bytes: the head is written per request, the body is the cached
//! representation itself, shared with every connection that asks for it.

use std::io::Write as _;
use std::rc::Rc;

use crate::protocol::http::{Method, RequestHead, list_items};

/// One file ready to serve: its bytes, their gzip form when smaller, and the validator.
#[derive(Debug)]
pub struct Asset {
    pub content_type: &'static str,
    pub identity: Rc<[u8]>,
    /// Present only when smaller than `identity`.
    pub gzip: Option<Rc<[u8]>>,
    /// FNV-1a 64 of `identity`, in hex: a strong validator for the content (RFC 9110 §8.8.3).
    pub tag: Box<str>,
}

impl Asset {
    /// Builds an asset, compressing `bytes` when the type is worth it and the result smaller.
    pub fn new(content_type: &'static str, bytes: Vec<u8>) -> Asset {
        let tag = format!("{:016x}", fnv1a64(&bytes)).into_boxed_str();
        let gzip = if super::mime::compressible(content_type) && bytes.len() > 256 {
            gzip(&bytes).filter(|packed| packed.len() < bytes.len())
        } else {
            None
        };
        Asset {
            content_type,
            identity: bytes.into(),
            gzip: gzip.map(Rc::from),
            tag,
        }
    }

    /// Bytes held in memory, both representations.
    pub fn held_bytes(&self) -> u64 {
        (self.identity.len() + self.gzip.as_ref().map_or(0, |g| g.len())) as u64
    }
}

/// A response: the head, and the body to send after it (none for HEAD and 304).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: Vec<u8>,
    pub body: Option<Rc<[u8]>>,
}

/// Answers `request` with `asset`: 304 when the client's validator still matches, the gzip
/// representation when accepted, the bytes otherwise.
pub fn reply_with(asset: &Asset, request: &RequestHead<'_>) -> Reply {
    let gzip = asset.gzip.as_ref().filter(|_| request.accepts_gzip());
    // Each representation has its own strong tag: the encoded bytes differ (RFC 9110 §8.8.3).
    let etag = match gzip {
        Some(_) => format!("\"{}-gz\"", asset.tag),
        None => format!("\"{}\"", asset.tag),
    };
    let body = gzip.unwrap_or(&asset.identity);
    // A repeated If-None-Match keeps the last: they are rare, and a miss only costs a full
    // answer.
    let not_modified = request
        .last("if-none-match")
        .is_some_and(|list| etag_matches(list, &asset.tag));
    let status = if not_modified { 304 } else { 200 };
    let mut head = Vec::with_capacity(320);
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", status_text(status));
    let _ = write!(head, "Content-Type: {}\r\n", asset.content_type);
    if !not_modified {
        let _ = write!(head, "Content-Length: {}\r\n", body.len());
    }
    let _ = write!(head, "ETag: {etag}\r\n");
    if gzip.is_some() {
        head.extend_from_slice(b"Content-Encoding: gzip\r\n");
    }
    // The answer depends on Accept-Encoding whenever a gzip form exists (RFC 9110 §12.5.5).
    if asset.gzip.is_some() {
        head.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
    // Revalidate each use: a 304 is cheap, and a new broker version shows at once.
    head.extend_from_slice(b"Cache-Control: no-cache\r\n");
    head.extend_from_slice(b"X-Content-Type-Options: nosniff\r\n");
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let body = (!not_modified && request.method == Method::Get).then(|| body.clone());
    Reply { status, head, body }
}

/// A short text answer for errors (400, 404); the body is left out for HEAD.
pub fn reply_status(status: u16, method: Method) -> Reply {
    let text = status_text(status);
    let mut head = Vec::with_capacity(160);
    let _ = write!(
        head,
        "HTTP/1.1 {status} {text}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        text.len() + 1
    );
    let body = (method == Method::Get).then(|| Rc::from(format!("{text}\n").into_bytes()));
    Reply { status, head, body }
}

/// Whether an `If-None-Match` list names either representation of the tag, or is `*`.
/// The comparison is weak (RFC 9110 §13.1.2): a `W/` prefix is ignored.
fn etag_matches(list: &[u8], tag: &str) -> bool {
    list_items(list).any(|item| {
        if item == b"*" {
            return true;
        }
        let item = item.strip_prefix(b"W/").unwrap_or(item);
        let Some(inner) = item.strip_prefix(b"\"").and_then(|i| i.strip_suffix(b"\"")) else {
            return false;
        };
        let inner = inner.strip_suffix(b"-gz").unwrap_or(inner);
        inner == tag.as_bytes()
    })
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Error",
    }
}

/// FNV-1a, 64 bits: a content fingerprint for ETags, not a security boundary.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 3),
        flate2::Compression::best(),
    );
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::{Fields, parse_head};
    use std::io::Read as _;

    /// A request for `/x`, parsed from bytes that live as long as the test.
    fn request(method: Method, if_none_match: Option<&str>, gzip: bool) -> RequestHead<'static> {
        let mut raw = match method {
            Method::Get => "GET /x HTTP/1.1\r\nHost: h\r\n".to_owned(),
            Method::Head => "HEAD /x HTTP/1.1\r\nHost: h\r\n".to_owned(),
        };
        if let Some(list) = if_none_match {
            raw.push_str(&format!("If-None-Match: {list}\r\n"));
        }
        if gzip {
            raw.push_str("Accept-Encoding: gzip\r\n");
        }
        raw.push_str("\r\n");
        let raw: &'static [u8] = raw.into_bytes().leak();
        let fields = Box::leak(Box::new(Fields::new()));
        let (head, _) = parse_head(raw, 8192, fields)
            .expect("valid")
            .expect("complete");
        head
    }

    fn text(reply: &Reply) -> String {
        String::from_utf8(reply.head.clone()).expect("ASCII head")
    }

    fn js() -> Asset {
        Asset::new(
            "text/javascript; charset=utf-8",
            "let x = 1;\n".repeat(100).into_bytes(),
        )
    }

    #[test]
    fn full_answer_without_gzip() {
        let asset = js();
        let reply = reply_with(&asset, &request(Method::Get, None, false));
        let head = text(&reply);
        assert_eq!(reply.status, 200);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("\r\nContent-Type: text/javascript; charset=utf-8\r\n"));
        assert!(head.contains("\r\nContent-Length: 1100\r\n"));
        assert!(head.contains(&format!("\r\nETag: \"{}\"\r\n", asset.tag)));
        assert!(head.contains("\r\nVary: Accept-Encoding\r\n"));
        assert!(head.contains("\r\nConnection: close\r\n"));
        assert!(!head.contains("Content-Encoding"));
        assert!(head.ends_with("\r\n\r\n"));
        assert_eq!(reply.body.as_deref(), Some(&asset.identity[..]));
    }

    #[test]
    fn gzip_when_accepted() {
        let asset = js();
        let reply = reply_with(&asset, &request(Method::Get, None, true));
        let head = text(&reply);
        assert!(head.contains("\r\nContent-Encoding: gzip\r\n"));
        assert!(head.contains(&format!("\r\nETag: \"{}-gz\"\r\n", asset.tag)));
        let body = reply.body.expect("body");
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut unpacked)
            .expect("valid gzip");
        assert_eq!(unpacked, &asset.identity[..]);
    }

    #[test]
    fn small_or_binary_files_are_not_compressed() {
        assert!(
            Asset::new("text/css; charset=utf-8", b"a{}".to_vec())
                .gzip
                .is_none()
        );
        assert!(Asset::new("image/png", vec![0; 4096]).gzip.is_none());
        let reply = reply_with(
            &Asset::new("image/png", vec![0; 10]),
            &request(Method::Get, None, true),
        );
        assert!(!text(&reply).contains("Vary"));
    }

    #[test]
    fn not_modified() {
        let asset = js();
        let tag = format!("\"{}\"", asset.tag);
        let tags = [
            tag.clone(),
            format!("\"other\", W/{tag}"),
            format!("\"{}-gz\"", asset.tag),
            "*".to_owned(),
            format!(" \"x\" ,{tag} "),
        ];
        for list in &tags {
            let reply = reply_with(&asset, &request(Method::Get, Some(list), true));
            let head = text(&reply);
            assert_eq!(reply.status, 304, "{list}");
            assert!(head.starts_with("HTTP/1.1 304 Not Modified\r\n"));
            assert!(head.contains("\r\nETag: "));
            assert!(!head.contains("Content-Length"));
            assert!(reply.body.is_none());
        }
        for list in ["\"nope\"", "", "abc", "\"\""] {
            let reply = reply_with(&asset, &request(Method::Get, Some(list), false));
            assert_eq!(reply.status, 200, "{list}");
        }
    }

    #[test]
    fn head_has_no_body() {
        let asset = js();
        let reply = reply_with(&asset, &request(Method::Head, None, false));
        assert_eq!(reply.status, 200);
        assert!(text(&reply).contains("\r\nContent-Length: 1100\r\n"));
        assert!(reply.body.is_none());
        let reply = reply_status(404, Method::Head);
        assert!(reply.body.is_none());
        assert!(text(&reply).contains("Content-Length: 10\r\n"));
    }

    #[test]
    fn status_replies() {
        for status in [400, 404] {
            let reply = reply_status(status, Method::Get);
            let head = text(&reply);
            let body = reply.body.expect("body");
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")));
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
            assert_ne!(status_text(status), "Error");
        }
    }

    #[test]
    fn tags_follow_content() {
        let a = Asset::new("text/plain; charset=utf-8", b"one".to_vec());
        let b = Asset::new("text/plain; charset=utf-8", b"two".to_vec());
        assert_ne!(a.tag, b.tag);
        assert_eq!(a.tag.len(), 16);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
