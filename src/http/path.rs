//! From a request target to a relative file path that cannot leave the served directory.
//!
//! The target is checked segment by segment *after* percent-decoding, so `%2e%2e` is as
//! refused as `..`. A decoded byte may not be a separator (`%2f`, `%5c`), NUL or control, nor
//! `%` (a doubly encoded `%252e` would become `%2e` in a second decoder). Segments may not be
//! empty (`//etc` would make an absolute path when joined) or start with `.` (`.`, `..`, and
//! hidden files such as `.git`). What passes is a list of plain names joined with `/`.

/// Longest accepted path, in bytes: bounds the work of a lookup.
pub const PATH_BYTES_MAX: usize = 1024;
/// Most segments in a path.
pub const PATH_SEGMENTS_MAX: usize = 16;

/// A checked, decoded path relative to the served root, with no leading or trailing `/`.
/// Empty for the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafePath(String);

impl SafePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The extension of the last segment, if any.
    pub fn extension(&self) -> Option<&str> {
        let name = self.0.rsplit('/').next()?;
        name.rsplit_once('.').map(|(_, ext)| ext)
    }
}

/// Why a target is refused; every variant answers 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin form (does not start with `/`).
    NotOrigin,
    /// Longer than [`PATH_BYTES_MAX`] or deeper than [`PATH_SEGMENTS_MAX`].
    TooLong,
    /// A `%` not followed by two hex digits, or a decoded segment that is not UTF-8.
    BadEncoding,
    /// A separator, NUL, control byte or `%` hidden by percent-encoding, or a raw backslash.
    ForbiddenByte,
    /// An empty segment (`//`) or one starting with `.` (`..`, `.`, hidden files).
    ForbiddenSegment,
}

/// Checks and decodes the path of a request target; the query (`?…`) is ignored.
pub fn parse_target(target: &[u8]) -> Result<SafePath, PathError> {
    let path = match target.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => &target[..end],
        None => target,
    };
    let Some(rest) = path.strip_prefix(b"/") else {
        return Err(PathError::NotOrigin);
    };
    if path.len() > PATH_BYTES_MAX {
        return Err(PathError::TooLong);
    }
    let mut out = String::with_capacity(rest.len());
    // A trailing `/` names a directory; its index is looked up by the caller.
    let rest = rest.strip_suffix(b"/").unwrap_or(rest);
    if rest.is_empty() {
        return Ok(SafePath(out));
    }
    for (index, raw) in rest.split(|&b| b == b'/').enumerate() {
        if index >= PATH_SEGMENTS_MAX {
            return Err(PathError::TooLong);
        }
        let segment = decode_segment(raw)?;
        if segment.is_empty() || segment.starts_with('.') {
            return Err(PathError::ForbiddenSegment);
        }
        if index > 0 {
            out.push('/');
        }
        out.push_str(&segment);
    }
    Ok(SafePath(out))
}

/// Percent-decodes one segment (RFC 3986 §2.1) and checks every resulting byte.
fn decode_segment(raw: &[u8]) -> Result<String, PathError> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = match raw[i] {
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
                let (Some(high), Some(low)) = (hex_value(hex[0]), hex_value(hex[1])) else {
                    return Err(PathError::BadEncoding);
                };
                i += 3;
                let decoded = high << 4 | low;
                // `/` and `\` would split the segment a second time; `%` would be decoded
                // again by a careless layer.
                if matches!(decoded, b'/' | b'\\' | b'%') {
                    return Err(PathError::ForbiddenByte);
                }
                decoded
            }
            raw_byte => {
                i += 1;
                raw_byte
            }
        };
        if b == b'\\' || b < 0x20 || b == 0x7f {
            return Err(PathError::ForbiddenByte);
        }
        bytes.push(b);
    }
    String::from_utf8(bytes).map_err(|_| PathError::BadEncoding)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(target: &str) -> String {
        parse_target(target.as_bytes())
            .unwrap_or_else(|e| panic!("{target:?} refused: {e:?}"))
            .0
    }

    fn refused(target: &str) -> PathError {
        match parse_target(target.as_bytes()) {
            Err(e) => e,
            Ok(path) => panic!("{target:?} accepted as {path:?}"),
        }
    }

    #[test]
    fn plain_paths() {
        assert_eq!(ok("/"), "");
        assert_eq!(ok("/?x=1"), "");
        assert_eq!(ok("/index.html"), "index.html");
        assert_eq!(ok("/js/app.js?v=3#top"), "js/app.js");
        assert_eq!(ok("/docs/"), "docs");
        assert_eq!(ok("/a%20b.txt"), "a b.txt");
        assert_eq!(ok("/caf%C3%A9.html"), "café.html");
        assert_eq!(ok("/a..b"), "a..b");
        let path = parse_target(b"/js/app.min.js").expect("valid");
        assert_eq!(path.extension(), Some("js"));
        assert_eq!(path.segments().collect::<Vec<_>>(), ["js", "app.min.js"]);
        assert_eq!(parse_target(b"/README").expect("valid").extension(), None);
    }

    #[test]
    fn dot_segments() {
        for target in [
            "/..",
            "/../",
            "/../etc/passwd",
            "/a/../../b",
            "/a/..",
            "/.",
            "/./a",
            "/a/./b",
            "/.git/config",
            "/.env",
        ] {
            assert_eq!(refused(target), PathError::ForbiddenSegment, "{target}");
        }
    }

    #[test]
    fn encoded_dot_segments() {
        for target in [
            "/%2e%2e/etc/passwd",
            "/%2E%2E/etc/passwd",
            "/.%2e/x",
            "/%2e./x",
            "/a/%2e%2e",
            "/%2e",
        ] {
            assert_eq!(refused(target), PathError::ForbiddenSegment, "{target}");
        }
    }

    #[test]
    fn encoded_separators_and_double_encoding() {
        for target in [
            "/..%2fetc%2fpasswd",
            "/a%2f..%2f..%2fb",
            "/a%2Fb",
            "/..%5c..%5cwindows",
            "/a%5Cb",
            "/%252e%252e/etc/passwd",
            "/%25",
            "/a%00.html",
            "/a%0d%0a",
            "/a%7f",
        ] {
            assert_eq!(refused(target), PathError::ForbiddenByte, "{target}");
        }
    }

    #[test]
    fn raw_forbidden_bytes() {
        assert_eq!(refused("/a\\..\\b"), PathError::ForbiddenByte);
        assert_eq!(refused("/a\0b"), PathError::ForbiddenByte);
        assert_eq!(refused("/a\tb"), PathError::ForbiddenByte);
    }

    #[test]
    fn absolute_and_empty_segments() {
        assert_eq!(refused("//etc/passwd"), PathError::ForbiddenSegment);
        assert_eq!(refused("/a//b"), PathError::ForbiddenSegment);
        assert_eq!(refused("etc/passwd"), PathError::NotOrigin);
        assert_eq!(refused("http://host/x"), PathError::NotOrigin);
        assert_eq!(refused(""), PathError::NotOrigin);
        // Joined under the root, an accepted path never replaces it.
        let joined = std::path::Path::new("/srv").join(ok("/etc/passwd"));
        assert!(joined.starts_with("/srv"));
    }

    #[test]
    fn bad_encoding() {
        for target in ["/%", "/%4", "/%zz", "/%c3", "/%ff.html"] {
            assert_eq!(refused(target), PathError::BadEncoding, "{target}");
        }
    }

    #[test]
    fn bounds() {
        let long = format!("/{}", "a".repeat(PATH_BYTES_MAX));
        assert_eq!(refused(&long), PathError::TooLong);
        let deep = "/a".repeat(PATH_SEGMENTS_MAX + 1);
        assert_eq!(refused(&deep), PathError::TooLong);
        ok(&"/a".repeat(PATH_SEGMENTS_MAX));
    }

    proptest! {
        #[test]
        fn accepted_paths_stay_inside(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut target = b"/".to_vec();
            target.extend_from_slice(&bytes);
            if let Ok(path) = parse_target(&target) {
                for segment in path.segments() {
                    prop_assert!(!segment.is_empty());
                    prop_assert!(!segment.starts_with('.'));
                    prop_assert!(!segment.contains(['/', '\\', '\0', '%']));
                }
                let joined = std::path::Path::new("/srv/www").join(path.as_str());
                prop_assert!(joined.starts_with("/srv/www"));
                for component in std::path::Path::new(path.as_str()).components() {
                    let normal = matches!(component, std::path::Component::Normal(_));
                    prop_assert!(normal);
                }
            }
        }
    }
}
