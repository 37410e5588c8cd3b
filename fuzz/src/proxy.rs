//! The PROXY protocol header a trusted load balancer puts before a connection's first byte
//! (`protocol::proxy::parse`), read as a listener reads it: from the start again each time
//! more bytes arrive, acting on the first answer that is not "need more".
//!
//! Input: the bytes a connection starts with; no control byte.
//!
//! So every prefix must answer "need more" or exactly what the whole does, and no byte past
//! [`PROXY_HEADER_BYTES_MAX`] may change the answer. A header takes at most the input and
//! that limit, ends with CRLF in version 1, and is followed by bytes that change nothing.
//! Every prefix of a header looks like one (`looks_like_proxy_header`), so a listener that
//! takes no header from a peer refuses it from its first bytes; and whatever does not look
//! like one is refused as not a PROXY header at all.

use fanfare::protocol::proxy::{
    PROXY_HEADER_BYTES_MAX, ProxyError, ProxyHeader, looks_like_proxy_header, parse,
    starts_with_signature,
};

/// The longest version 1 line, CRLF included (the spec, §2.1).
const V1_LINE_BYTES_MAX: usize = 107;

/// The shortest header: "PROXY UNKNOWN\r\n".
const HEADER_BYTES_MIN: usize = 15;

pub fn header(data: &[u8]) {
    let whole = parse(data);
    let limit = data.len().min(PROXY_HEADER_BYTES_MAX);
    assert_eq!(
        parse(&data[..limit]),
        whole,
        "nothing past the limit counts"
    );
    for end in 0..limit {
        let prefix = parse(&data[..end]);
        assert!(
            prefix == Ok(None) || prefix == whole,
            "a prefix of {end} bytes answers need more or what the whole does"
        );
    }
    assert_eq!(
        looks_like_proxy_header(data),
        whole != Err(ProxyError::NotProxy),
        "refused as not a header exactly when it does not look like one"
    );
    assert_eq!(
        starts_with_signature(data) == Some(false),
        whole == Err(ProxyError::NotProxy),
        "a listener that takes no header lets through exactly what is not one"
    );
    match whole {
        Ok(None) => assert!(
            data.len() < PROXY_HEADER_BYTES_MAX,
            "incomplete only under the limit"
        ),
        Ok(Some((header, consumed))) => check_header(data, header, consumed),
        Err(error) => assert!(!error.description().is_empty(), "every error says why"),
    }
}

fn check_header(data: &[u8], header: ProxyHeader, consumed: usize) {
    assert!(
        (HEADER_BYTES_MIN..=data.len().min(PROXY_HEADER_BYTES_MAX)).contains(&consumed),
        "within the input and the limit"
    );
    assert_eq!(
        parse(&data[..consumed]),
        Ok(Some((header, consumed))),
        "the bytes after the header change nothing"
    );
    for end in 0..=consumed {
        assert!(
            looks_like_proxy_header(&data[..end]),
            "every prefix of a header looks like one"
        );
    }
    if data.starts_with(b"PROXY ") {
        assert!(
            consumed <= V1_LINE_BYTES_MAX,
            "a version 1 line fits 107 bytes"
        );
        assert!(data[..consumed].ends_with(b"\r\n"), "and ends with CRLF");
        let first_break = data.iter().position(|&b| b == b'\r' || b == b'\n');
        assert_eq!(first_break, Some(consumed - 2), "at its first CR or LF");
    }
    if let ProxyHeader::Proxied {
        source,
        destination,
    } = header
    {
        assert_eq!(source.is_ipv4(), destination.is_ipv4(), "one family");
        assert_eq!(header.source(), Some(source));
    } else {
        assert_eq!(header.source(), None);
    }
}
