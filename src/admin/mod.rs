//! The operations listener (`admin`, loopback by default): metrics, health, and an HTTP API to
//! see and kick clients and to publish without an MQTT connection.
//!
//! It runs on threads of its own, off the shards (`server.rs` says why blocking threads), and
//! owns no broker state: the shards do. It asks them through bounded queues (`shards.rs`),
//! each shard answering in its next loop turn (`shard/admin_requests.rs`), and hands the
//! publish API's messages to shard 0, which routes them as its broker's own, like the `$SYS`
//! topics. Nothing here runs on the fan-out path; JSON is parsed here, never in a shard.
//!
//! | file | role |
//! |---|---|
//! | `server.rs` | accept loop, one thread per connection, bounded |
//! | `request.rs` | one HTTP request read within bounds |
//! | `routes.rs` | endpoint, token, response; errors as JSON |
//! | `queries.rs` | clients, one client, kick, subscribers, stats |
//! | `publish.rs` | the publish API's JSON into routed messages |
//! | `shards.rs` | questions to the shards and their answers |

pub mod publish;
pub mod queries;
pub mod request;
pub mod routes;
pub mod server;
pub mod shards;

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::cluster::ClusterLink;
use crate::config::{AdminSettings, Limits, SharedConfig};
use crate::metrics::Metrics;
use publish::PublishLimits;
use shards::ShardRequests;

/// Longest token file read: a bearer token is tens of bytes; this bounds a wrong path.
const TOKEN_FILE_BYTES_MAX: u64 = 4096;

/// Everything the listener's threads share.
pub struct Admin {
    pub settings: AdminSettings,
    /// The API's bearer token, read again on SIGHUP; `None`: the API answers 403.
    pub token: RwLock<Option<Box<str>>>,
    pub shards: Arc<ShardRequests>,
    pub metrics: Arc<Metrics>,
    /// Set once every shard and listener is up, cleared when the broker begins to stop.
    pub ready: Arc<AtomicBool>,
    /// The configuration in force: the publish API checks messages against its limits, which a
    /// SIGHUP may change.
    pub config: Arc<SharedConfig>,
    pub started: Instant,
    /// In cluster mode, the NATS link, whose connection state `/readyz` reports.
    pub cluster: Option<Arc<ClusterLink>>,
}

impl Admin {
    /// The token in force.
    pub fn token(&self) -> Option<Box<str>> {
        self.token.read().map_or(None, |token| token.clone())
    }

    /// A reloaded token file's token (or none), for the requests that follow.
    pub fn set_token(&self, token: Option<Box<str>>) {
        if let Ok(mut held) = self.token.write() {
            *held = token;
        }
    }

    /// The publish API's bounds under the configuration in force.
    pub fn publish_limits(&self) -> PublishLimits {
        let (_, config) = self.config.current();
        publish_limits(&config.limits, &self.settings)
    }

    /// How long a request may take to arrive, and the shards to answer it.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.settings.timeout_ms.into())
    }
}

/// Why the token file cannot be used.
#[derive(Debug)]
pub struct TokenError(pub String);

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TokenError {}

/// The token in `path`: its content with one final newline trimmed, which must be printable
/// ASCII without spaces (what a header carries) and not empty.
pub fn read_token(path: &Path) -> Result<Box<str>, TokenError> {
    use std::io::Read;
    let name = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| TokenError(format!("cannot read admin_token_file {name}: {e}")))?;
    let mut text = String::new();
    file.take(TOKEN_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|e| TokenError(format!("cannot read admin_token_file {name}: {e}")))?;
    let token = text.strip_suffix('\n').unwrap_or(&text);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError(format!(
            "admin_token_file {name}: the token must be one line of printable ASCII without spaces"
        )));
    }
    Ok(token.into())
}

/// Starts the listener's threads on `listener`, already bound (and announced).
/// Starts the listener's thread; the handle lets a SIGHUP give it a new token.
pub fn start(listener: TcpListener, admin: Admin) -> std::io::Result<Arc<Admin>> {
    let admin = Arc::new(admin);
    server::spawn(listener, Arc::clone(&admin))?;
    Ok(admin)
}

/// The bounds of the publish API: a client's PUBLISH's, and `admin_page_len_max` messages.
fn publish_limits(limits: &Limits, settings: &AdminSettings) -> PublishLimits {
    PublishLimits {
        decode: limits.decode_limits(),
        messages_max: settings.page_len_max as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_one_line() {
        let dir = std::env::temp_dir().join(format!("fanfare-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("token");
        std::fs::write(&path, "s3cret\n").expect("write");
        assert_eq!(read_token(&path).expect("valid").as_ref(), "s3cret");
        std::fs::write(&path, "two words\n").expect("write");
        assert!(read_token(&path).is_err());
        std::fs::write(&path, "").expect("write");
        assert!(read_token(&path).is_err());
        assert!(read_token(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
