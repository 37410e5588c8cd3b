//! Content types by file extension, for the files a web page loads.

/// The `Content-Type` for a file extension (case-insensitive); unknown types are served as
/// opaque bytes, and `X-Content-Type-Options: nosniff` stops browsers from guessing.
pub fn content_type(extension: Option<&str>) -> &'static str {
    let Some(ext) = extension else {
        return "application/octet-stream";
    };
    const TYPES: [(&str, &str); 22] = [
        ("html", "text/html; charset=utf-8"),
        ("htm", "text/html; charset=utf-8"),
        ("css", "text/css; charset=utf-8"),
        ("js", "text/javascript; charset=utf-8"),
        ("mjs", "text/javascript; charset=utf-8"),
        ("json", "application/json"),
        ("map", "application/json"),
        ("webmanifest", "application/manifest+json"),
        ("txt", "text/plain; charset=utf-8"),
        ("xml", "application/xml"),
        ("svg", "image/svg+xml"),
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("gif", "image/gif"),
        ("webp", "image/webp"),
        ("avif", "image/avif"),
        ("ico", "image/x-icon"),
        ("woff", "font/woff"),
        ("woff2", "font/woff2"),
        ("wasm", "application/wasm"),
        ("pdf", "application/pdf"),
    ];
    TYPES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(ext))
        .map_or("application/octet-stream", |&(_, mime)| mime)
}

/// Whether gzip is worth trying: text-like types shrink, images and fonts are compressed.
pub fn compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/manifest+json")
        || content_type.starts_with("application/xml")
        || content_type.starts_with("application/wasm")
        || content_type.starts_with("image/svg+xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_extension() {
        assert_eq!(content_type(Some("html")), "text/html; charset=utf-8");
        assert_eq!(content_type(Some("JS")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Some("mjs")), "text/javascript; charset=utf-8");
        assert_eq!(content_type(Some("css")), "text/css; charset=utf-8");
        assert_eq!(content_type(Some("png")), "image/png");
        assert_eq!(content_type(Some("svg")), "image/svg+xml");
        assert_eq!(content_type(Some("exe")), "application/octet-stream");
        assert_eq!(content_type(None), "application/octet-stream");
    }

    #[test]
    fn what_compresses() {
        assert!(compressible(content_type(Some("js"))));
        assert!(compressible(content_type(Some("svg"))));
        assert!(!compressible(content_type(Some("png"))));
        assert!(!compressible(content_type(Some("woff2"))));
    }
}
