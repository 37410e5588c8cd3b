//! The operations listener's settings: `admin` (its address) and the `admin_*` keys, top-level
//! in the file like the other listeners. The listener itself lives in `crate::admin`.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{ConfigError, parse_listener};

/// Where the operations listener listens, who may use its API, and the bounds of its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// `None` (`admin = "off"`) turns the listener off. Loopback by default: the API can kick
    /// clients and publish, so it is reached from the host (or through a tunnel) unless the
    /// operator chooses otherwise.
    pub listen: Option<SocketAddr>,
    /// A file whose content (one final newline trimmed) is the bearer token of the API. Without
    /// it every API endpoint answers 403: the API is never open by default.
    pub token_file: Option<PathBuf>,
    /// `GET /metrics` needs no token (Prometheus scrapes it on loopback); false: it needs the
    /// API's token like every other endpoint but `/healthz` and `/readyz`.
    pub metrics_public: bool,
    /// Largest request body (a publish batch), in bytes; 413 past it. Read into memory whole,
    /// so worst case `admin_connections_max` × this: 16 × 4 MiB = 64 MiB.
    pub body_bytes_max: u64,
    /// Largest request head (request line and headers), in bytes; 431 past it.
    pub head_bytes_max: u32,
    /// Admin connections served at once, each by its own thread; one past it gets 503 and is
    /// closed. Each holds at most one request waiting in every shard's queue, so this also
    /// bounds those queues.
    pub connections_max: u32,
    /// How long reading a request, and waiting for the shards' answers, may take.
    pub timeout_ms: u32,
    /// Most entries one answer lists (clients, subscribers, publishes of a batch); a `limit`
    /// past it is lowered to it.
    pub page_len_max: u32,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            token_file: None,
            metrics_public: true,
            body_bytes_max: 4 * 1024 * 1024,
            head_bytes_max: 8 * 1024,
            connections_max: 16,
            timeout_ms: 5000,
            page_len_max: 1000,
        }
    }
}

/// The `admin*` keys of the file, each optional.
#[derive(Debug, Default)]
pub(super) struct FileAdmin {
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) metrics_public: Option<bool>,
    pub(super) body_bytes_max: Option<u64>,
    pub(super) head_bytes_max: Option<u32>,
    pub(super) connections_max: Option<u32>,
    pub(super) timeout_ms: Option<u32>,
    pub(super) page_len_max: Option<u32>,
}

impl FileAdmin {
    pub(super) fn apply(self, admin: &mut AdminSettings) -> Result<(), ConfigError> {
        if let Some(addr) = self.listen {
            admin.listen = parse_listener("admin", &addr)?;
        }
        admin.token_file = self.token_file.or(admin.token_file.take());
        let fields = [
            (self.head_bytes_max, &mut admin.head_bytes_max),
            (self.connections_max, &mut admin.connections_max),
            (self.timeout_ms, &mut admin.timeout_ms),
            (self.page_len_max, &mut admin.page_len_max),
        ];
        for (value, field) in fields {
            if let Some(value) = value {
                *field = value;
            }
        }
        if let Some(public) = self.metrics_public {
            admin.metrics_public = public;
        }
        if let Some(bytes) = self.body_bytes_max {
            admin.body_bytes_max = bytes;
        }
        Ok(())
    }
}

impl AdminSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ranges: [(&str, u64, u64, u64); 5] = [
            ("admin_body_bytes_max", self.body_bytes_max, 1, 1 << 30),
            (
                "admin_head_bytes_max",
                self.head_bytes_max.into(),
                512,
                1 << 20,
            ),
            (
                "admin_connections_max",
                self.connections_max.into(),
                1,
                1024,
            ),
            ("admin_timeout_ms", self.timeout_ms.into(), 1, 600_000),
            ("admin_page_len_max", self.page_len_max.into(), 1, 100_000),
        ];
        for (key, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(ConfigError::invalid(
                    key,
                    &format!("must be between {low} and {high}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn admin_keys() {
        let config = Config::default();
        assert_eq!(
            config.admin.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        assert!(config.admin.token_file.is_none());
        let config = Config::from_toml(
            "admin = \"off\"\nadmin_token_file = \"/etc/t\"\nadmin_body_bytes_max = 100\nadmin_metrics_public = false\n",
            "f.toml",
        )
        .expect("parses");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.admin.listen, None);
        assert_eq!(config.admin.body_bytes_max, 100);
        assert!(!config.admin.metrics_public);
        let config = Config::from_toml("admin_connections_max = 0\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("zero");
        assert!(err.message.contains("admin_connections_max"), "{err}");
        let err = Config::from_toml("admin = \"nowhere\"\n", "f.toml").expect_err("address");
        assert!(err.message.contains("`admin`"), "{err}");
    }
}
