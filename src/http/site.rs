//! What the WebSocket listener serves to plain HTTP requests: the built-in assets (the demo
//! page and `fanfare.js`) and, when configured, the files of one directory.
//!
//! Reading a file is a blocking system call in the shard's event loop, so files are read
//! once, on their first request, and then served from memory: a bounded per-shard cache
//! (`http_cache_bytes_max`, oldest entry evicted first) of each file and its gzip form. A
//! cached file is checked against the disk (one `stat`) at most every [`RECHECK`], so an edit
//! shows within that time. Files are small (`http_file_bytes_max`): the worst case is one
//! read of that many bytes, plus gzip, once per edit per shard. Misses are not cached; a
//! lookup that finds nothing costs a `realpath` walk, which the kernel answers from its
//! dentry cache.
//!
//! Worst case memory: shards × `http_cache_bytes_max`, plus the built-in assets (tens of KB)
//! per shard.

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use super::mime::content_type;
use super::path::{SafePath, parse_target};
use super::response::{Asset, Reply, reply_status, reply_with};
use crate::protocol::http::RequestHead;

/// How long a cached file is served before its size and time are compared with the disk.
pub const RECHECK: Duration = Duration::from_secs(2);

/// The built-in assets, compiled into the binary: path (no leading `/`) and content.
/// `fanfare.js` and `fanfare.mjs` are the minified build (`scripts/build-web.mjs`, committed in
/// `web/dist/`): about a third of the source's size on the wire. The readable source is
/// served beside them for people and debuggers.
const BUILTIN: [(&str, &[u8]); 6] = [
    ("index.html", include_bytes!("../../web/index.html")),
    ("fanfare.js", include_bytes!("../../web/dist/fanfare.js")),
    ("fanfare.mjs", include_bytes!("../../web/dist/fanfare.mjs")),
    ("fanfare.src.js", include_bytes!("../../web/fanfare.js")),
    ("demo.css", include_bytes!("../../web/demo.css")),
    ("demo.js", include_bytes!("../../web/demo.js")),
];

/// What to serve, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    /// Serve [`BUILTIN`] (config `http_builtin`).
    pub builtin: bool,
    /// Serve the files under this directory (config `http_dir`).
    pub dir: Option<PathBuf>,
    /// Larger files are not served (config `http_file_bytes_max`).
    pub file_bytes_max: u64,
    /// Bytes of files held in memory (config `http_cache_bytes_max`).
    pub cache_bytes_max: u64,
}

/// One shard's view of the served files.
pub struct Site {
    config: SiteConfig,
    /// The canonical form of `config.dir`; `None` when unset or unusable.
    root: Option<PathBuf>,
    /// Built-in assets, compressed on first use.
    builtin: [Option<Rc<Asset>>; BUILTIN.len()],
    cache: HashMap<String, Cached>,
    /// Cached paths, oldest first: the eviction order.
    order: VecDeque<String>,
    cache_bytes: u64,
    warned_too_large: bool,
}

struct Cached {
    asset: Rc<Asset>,
    file: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    checked_at: Instant,
}

/// Why a file of the directory is not served.
#[derive(Debug)]
enum Miss {
    NotFound,
    /// The path resolves (through a symbolic link) outside the directory.
    Outside,
    TooLarge(u64),
    Io(std::io::Error),
}

impl Site {
    pub fn new(config: SiteConfig) -> Site {
        let root = config
            .dir
            .as_ref()
            .and_then(|dir| match std::fs::canonicalize(dir) {
                Ok(root) if root.is_dir() => Some(root),
                Ok(_) | Err(_) => {
                    log::warn!("http_dir {}: not a readable directory", dir.display());
                    None
                }
            });
        Site {
            config,
            root,
            builtin: Default::default(),
            cache: HashMap::new(),
            order: VecDeque::new(),
            cache_bytes: 0,
            warned_too_large: false,
        }
    }

    /// Answers a plain HTTP request; `None` when nothing is served at that path, so the caller
    /// answers as it would without static files.
    pub fn respond(&mut self, request: &RequestHead<'_>, now: Instant) -> Option<Reply> {
        let path = match parse_target(request.target) {
            Ok(path) => path,
            Err(error) => {
                log::debug!("refused HTTP path: {error:?}");
                return Some(reply_status(400, request.method));
            }
        };
        let asset = match self.builtin(&path) {
            Some(asset) => asset,
            None => self.in_dir(&path, now)?,
        };
        Some(reply_with(&asset, request))
    }

    fn builtin(&mut self, path: &SafePath) -> Option<Rc<Asset>> {
        if !self.config.builtin {
            return None;
        }
        let name = match path.as_str() {
            "" => "index.html",
            name => name,
        };
        let index = BUILTIN.iter().position(|&(known, _)| known == name)?;
        let slot = &mut self.builtin[index];
        let asset = slot.get_or_insert_with(|| {
            let (name, bytes) = BUILTIN[index];
            let ext = name.rsplit_once('.').map(|(_, ext)| ext);
            Rc::new(Asset::new(content_type(ext), bytes.to_vec()))
        });
        Some(asset.clone())
    }

    fn in_dir(&mut self, path: &SafePath, now: Instant) -> Option<Rc<Asset>> {
        let root = self.root.clone()?;
        if let Some(cached) = self.cache.get_mut(path.as_str()) {
            if now.saturating_duration_since(cached.checked_at) < RECHECK {
                return Some(cached.asset.clone());
            }
            let unchanged = std::fs::metadata(&cached.file).is_ok_and(|meta| {
                meta.len() == cached.len && meta.modified().ok() == cached.modified
            });
            if unchanged {
                cached.checked_at = now;
                return Some(cached.asset.clone());
            }
            self.forget(path.as_str());
        }
        match load(&root, path, self.config.file_bytes_max) {
            Ok(loaded) => {
                let asset = Rc::new(loaded.asset);
                self.remember(
                    path.as_str(),
                    &asset,
                    loaded.file,
                    loaded.len,
                    loaded.modified,
                    now,
                );
                Some(asset)
            }
            Err(Miss::TooLarge(len)) => {
                if !self.warned_too_large {
                    self.warned_too_large = true;
                    log::warn!(
                        "http_dir: not serving /{} ({len} bytes > http_file_bytes_max {}); \
                         further files over the limit are not logged",
                        path.as_str(),
                        self.config.file_bytes_max
                    );
                }
                None
            }
            Err(Miss::Io(error)) => {
                log::debug!("http_dir: /{}: {error}", path.as_str());
                None
            }
            Err(miss) => {
                log::debug!("http_dir: /{}: {miss:?}", path.as_str());
                None
            }
        }
    }

    fn remember(
        &mut self,
        key: &str,
        asset: &Rc<Asset>,
        file: PathBuf,
        len: u64,
        modified: Option<SystemTime>,
        now: Instant,
    ) {
        let bytes = asset.held_bytes();
        if bytes > self.config.cache_bytes_max {
            return;
        }
        while self.cache_bytes + bytes > self.config.cache_bytes_max {
            let Some(oldest) = self.order.front().cloned() else {
                break;
            };
            self.forget(&oldest);
        }
        self.cache_bytes += bytes;
        self.order.push_back(key.to_owned());
        self.cache.insert(
            key.to_owned(),
            Cached {
                asset: asset.clone(),
                file,
                len,
                modified,
                checked_at: now,
            },
        );
    }

    fn forget(&mut self, key: &str) {
        if let Some(cached) = self.cache.remove(key) {
            self.cache_bytes -= cached.asset.held_bytes();
            self.order.retain(|k| k != key);
        }
    }

    /// Bytes of directory files held in memory.
    pub fn cache_bytes(&self) -> u64 {
        self.cache_bytes
    }
}

struct Loaded {
    asset: Asset,
    file: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

/// Reads `path` under `root` (canonical). Symbolic links are followed only to files inside
/// `root`; a directory is served by its `index.html`, never listed.
fn load(root: &Path, path: &SafePath, file_bytes_max: u64) -> Result<Loaded, Miss> {
    let mut file = inside(root, &root.join(path.as_str()))?;
    let mut meta = std::fs::metadata(&file).map_err(Miss::Io)?;
    if meta.is_dir() {
        file = inside(root, &file.join("index.html"))?;
        meta = std::fs::metadata(&file).map_err(Miss::Io)?;
    }
    if !meta.is_file() {
        return Err(Miss::NotFound);
    }
    if meta.len() > file_bytes_max {
        return Err(Miss::TooLarge(meta.len()));
    }
    // The canonical path has no links left; O_NOFOLLOW refuses one swapped in since.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file)
        .map_err(Miss::Io)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may have grown since the stat: read at most one byte past the limit.
    opened
        .take(file_bytes_max + 1)
        .read_to_end(&mut bytes)
        .map_err(Miss::Io)?;
    if bytes.len() as u64 > file_bytes_max {
        return Err(Miss::TooLarge(bytes.len() as u64));
    }
    let ext = file.extension().and_then(|ext| ext.to_str());
    Ok(Loaded {
        asset: Asset::new(content_type(ext), bytes),
        len: meta.len(),
        modified: meta.modified().ok(),
        file,
    })
}

/// The canonical form of `candidate` if it exists and lies under `root`.
fn inside(root: &Path, candidate: &Path) -> Result<PathBuf, Miss> {
    let canonical = std::fs::canonicalize(candidate).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => Miss::NotFound,
        _ => Miss::Io(e),
    })?;
    if canonical.starts_with(root) {
        Ok(canonical)
    } else {
        Err(Miss::Outside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::{Fields, Method, parse_head};
    use std::os::unix::fs::symlink;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "fanfare-site-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn write(&self, rel: &str, bytes: &[u8]) {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config(dir: Option<&TempDir>) -> SiteConfig {
        SiteConfig {
            builtin: true,
            dir: dir.map(|d| d.0.join("www")),
            file_bytes_max: 1024,
            cache_bytes_max: 4096,
        }
    }

    /// The status and body of a GET for `target`; `None` when nothing is served there.
    fn get(site: &mut Site, target: &str) -> Option<(u16, Vec<u8>)> {
        get_with(site, target, "", Instant::now())
    }

    fn get_with(
        site: &mut Site,
        target: &str,
        extra: &str,
        now: Instant,
    ) -> Option<(u16, Vec<u8>)> {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let mut fields = Fields::new();
        let (request, _) = parse_head(raw.as_bytes(), 8192, &mut fields)
            .expect("valid")
            .expect("complete");
        let reply = site.respond(&request, now)?;
        let mut bytes = reply.head.clone();
        bytes.extend_from_slice(reply.body.as_deref().unwrap_or_default());
        Some((reply.status, bytes))
    }

    fn status(site: &mut Site, target: &str) -> Option<u16> {
        get(site, target).map(|(status, _)| status)
    }

    fn ends_with(bytes: &[u8], tail: &[u8]) -> bool {
        bytes.ends_with(tail)
    }

    #[test]
    fn builtin_assets() {
        let mut site = Site::new(config(None));
        let (code, page) = get(&mut site, "/").expect("index");
        assert_eq!(code, 200);
        assert!(ends_with(&page, BUILTIN[0].1));
        let text = String::from_utf8_lossy(&page);
        assert!(text.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert_eq!(status(&mut site, "/index.html"), Some(200));
        let (_, js) = get(&mut site, "/fanfare.js?v=2").expect("js");
        assert!(String::from_utf8_lossy(&js).contains("text/javascript"));
        assert_eq!(status(&mut site, "/fanfare.mjs"), Some(200));
        let (_, source) = get(&mut site, "/fanfare.src.js").expect("source");
        assert!(ends_with(&source, include_bytes!("../../web/fanfare.js")));
        assert!(source.len() > js.len(), "the minified build is the smaller");
        assert_eq!(status(&mut site, "/nope.js"), None);
        let mut off = Site::new(SiteConfig {
            builtin: false,
            ..config(None)
        });
        assert_eq!(status(&mut off, "/"), None);
        assert_eq!(status(&mut off, "/fanfare.js"), None);
    }

    #[test]
    fn builtin_gzip_and_not_modified() {
        let mut site = Site::new(config(None));
        let now = Instant::now();
        let (code, bytes) =
            get_with(&mut site, "/fanfare.js", "Accept-Encoding: gzip\r\n", now).expect("js");
        assert_eq!(code, 200);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Content-Encoding: gzip\r\n"));
        let etag = text
            .lines()
            .find_map(|line| line.strip_prefix("ETag: "))
            .expect("etag")
            .to_owned();
        let (code, _) = get_with(
            &mut site,
            "/fanfare.js",
            &format!("If-None-Match: {etag}\r\n"),
            now,
        )
        .expect("js");
        assert_eq!(code, 304);
    }

    #[test]
    fn traversal_is_refused_before_the_disk() {
        let dir = TempDir::new("traversal");
        dir.write("secret.txt", b"secret");
        dir.write("www/ok.txt", b"ok");
        let mut site = Site::new(config(Some(&dir)));
        assert_eq!(status(&mut site, "/ok.txt"), Some(200));
        for target in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2e/secret.txt",
            "/..%2fsecret.txt",
            "/..%5csecret.txt",
            "/%252e%252e/secret.txt",
            "/ok.txt%00.html",
            "//secret.txt",
            "/.%2e/secret.txt",
        ] {
            assert_eq!(status(&mut site, target), Some(400), "{target}");
        }
        let raw = b"GET /..\\secret.txt HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut fields = Fields::new();
        let (request, _) = parse_head(raw, 8192, &mut fields)
            .expect("valid")
            .expect("complete");
        assert_eq!(
            site.respond(&request, Instant::now()).map(|r| r.status),
            Some(400)
        );
    }

    #[test]
    fn symlinks_out_of_the_directory_are_not_followed() {
        let dir = TempDir::new("symlink");
        dir.write("secret.txt", b"secret");
        dir.write("outside/inner.txt", b"inner");
        dir.write("www/real.txt", b"real");
        symlink(dir.0.join("secret.txt"), dir.0.join("www/leak.txt")).expect("symlink");
        symlink(dir.0.join("outside"), dir.0.join("www/sub")).expect("symlink");
        symlink("real.txt", dir.0.join("www/alias.txt")).expect("symlink");
        symlink("/etc/passwd", dir.0.join("www/passwd")).expect("symlink");
        let mut site = Site::new(config(Some(&dir)));
        assert_eq!(status(&mut site, "/leak.txt"), None);
        assert_eq!(status(&mut site, "/sub/inner.txt"), None);
        assert_eq!(status(&mut site, "/passwd"), None);
        // A link that stays inside is fine.
        let (code, bytes) = get(&mut site, "/alias.txt").expect("alias");
        assert_eq!(code, 200);
        assert!(ends_with(&bytes, b"real"));
    }

    #[test]
    fn a_served_directory_that_is_itself_a_link() {
        let dir = TempDir::new("rootlink");
        dir.write("real/a.txt", b"a");
        symlink(dir.0.join("real"), dir.0.join("www")).expect("symlink");
        let mut site = Site::new(config(Some(&dir)));
        assert_eq!(status(&mut site, "/a.txt"), Some(200));
    }

    #[test]
    fn directories_need_an_index() {
        let dir = TempDir::new("index");
        dir.write("www/docs/page.html", b"<p>page</p>");
        dir.write("www/app/index.html", b"<p>app</p>");
        let mut site = Site::new(SiteConfig {
            builtin: false,
            ..config(Some(&dir))
        });
        assert_eq!(status(&mut site, "/docs"), None);
        assert_eq!(status(&mut site, "/docs/"), None);
        assert_eq!(status(&mut site, "/"), None);
        let (code, bytes) = get(&mut site, "/app/").expect("index");
        assert_eq!(code, 200);
        assert!(String::from_utf8_lossy(&bytes).contains("text/html"));
        assert!(ends_with(&bytes, b"<p>app</p>"));
        assert_eq!(status(&mut site, "/app"), Some(200));
        assert_eq!(status(&mut site, "/docs/page.html/x"), None);
    }

    #[test]
    fn hidden_files_and_types() {
        let dir = TempDir::new("types");
        dir.write("www/.env", b"KEY=1");
        dir.write("www/style.css", b"a{}");
        dir.write("www/blob", b"\x00\x01");
        let mut site = Site::new(config(Some(&dir)));
        assert_eq!(status(&mut site, "/.env"), Some(400));
        let (_, css) = get(&mut site, "/style.css").expect("css");
        assert!(
            String::from_utf8_lossy(&css).contains("Content-Type: text/css; charset=utf-8\r\n")
        );
        let (_, blob) = get(&mut site, "/blob").expect("blob");
        assert!(String::from_utf8_lossy(&blob).contains("application/octet-stream"));
    }

    #[test]
    fn file_size_is_bounded() {
        let dir = TempDir::new("size");
        dir.write("www/big.txt", &[b'x'; 1025]);
        dir.write("www/max.txt", &[b'x'; 1024]);
        let mut site = Site::new(config(Some(&dir)));
        assert_eq!(status(&mut site, "/big.txt"), None);
        assert_eq!(status(&mut site, "/max.txt"), Some(200));
    }

    #[test]
    fn cache_is_bounded_and_follows_edits() {
        let dir = TempDir::new("cache");
        for name in ["a", "b", "c", "d", "e"] {
            dir.write(&format!("www/{name}.bin"), &[0u8; 1000]);
        }
        let mut site = Site::new(config(Some(&dir)));
        for name in ["a", "b", "c", "d", "e"] {
            assert_eq!(status(&mut site, &format!("/{name}.bin")), Some(200));
            assert!(site.cache_bytes() <= 4096);
        }
        assert_eq!(site.cache_bytes(), 4000);
        assert!(!site.cache.contains_key("a.bin"));
        assert!(site.cache.contains_key("e.bin"));

        dir.write("www/e.bin", b"new");
        let now = Instant::now();
        let (_, old) = get_with(&mut site, "/e.bin", "", now).expect("cached");
        assert!(ends_with(&old, &[0u8; 1000]));
        let (_, new) = get_with(&mut site, "/e.bin", "", now + RECHECK).expect("reloaded");
        assert!(ends_with(&new, b"new"));
        std::fs::remove_file(dir.0.join("www/e.bin")).expect("rm");
        assert_eq!(get_with(&mut site, "/e.bin", "", now + RECHECK * 2), None);
    }

    #[test]
    fn head_requests() {
        let mut site = Site::new(config(None));
        let raw = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut fields = Fields::new();
        let (request, _) = parse_head(raw, 8192, &mut fields)
            .expect("valid")
            .expect("complete");
        assert_eq!(request.method, Method::Head);
        let reply = site.respond(&request, Instant::now()).expect("served");
        assert_eq!(reply.status, 200);
        assert!(reply.body.is_none());
    }

    #[test]
    fn missing_directory_serves_only_builtins() {
        let mut site = Site::new(SiteConfig {
            dir: Some(PathBuf::from("/nonexistent/fanfare-www")),
            ..config(None)
        });
        assert_eq!(status(&mut site, "/fanfare.js"), Some(200));
        assert_eq!(status(&mut site, "/x.txt"), None);
    }
}
