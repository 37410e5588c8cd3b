//! The `[auth]` table: where credentials and topic rules come from, and the bounds of checking
//! them.
//!
//! Only the settings live here; `crate::auth` reads the files, at start-up and again on SIGHUP.

use std::path::PathBuf;

use super::ConfigError;

/// The `[auth]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// A CONNECT without credentials is accepted, with the anonymous rules. `None`: true while
    /// no password file and no JWT keys are configured, false once any is.
    pub allow_anonymous: Option<bool>,
    /// `user:hash` lines: argon2id, or what `mosquitto_passwd` writes.
    pub password_file: Option<PathBuf>,
    /// Topic rules in Mosquitto's ACL syntax. Without it every client may use every topic.
    pub acl_file: Option<PathBuf>,
    /// The HMAC secret of HS256/384/512 tokens (the file's bytes, a final newline trimmed).
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public keys (RSA, EC, Ed25519) that sign tokens.
    pub jwt_public_key_files: Vec<PathBuf>,
    /// A JWKS document; a token's `kid` chooses the key.
    pub jwks_file: Option<PathBuf>,
    /// The claim that names the user.
    pub jwt_user_claim: String,
    /// The claim that carries the client's topic rules (`{"sub": [...], "pub": [...]}`), if any.
    pub jwt_acl_claim: Option<String>,
    /// Required `iss` and `aud`, when set.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub jwt_leeway_s: u64,
    /// Longest token read; a longer password is refused before it is decoded.
    pub jwt_token_bytes_max: usize,
    /// Threads that verify password hashes, off the shard threads.
    pub verifier_threads: usize,
    /// Password verifications waiting for a verifier; past it a CONNECT is refused as "server
    /// busy" rather than queued without end.
    pub verify_queue_max: usize,
    /// How long a successful password verification is remembered (per shard, under a keyed
    /// hash of the user name and password), so a reconnect storm costs one hash each.
    pub verified_cache_ttl_s: u64,
    /// Remembered verifications per shard.
    pub verified_cache_entries_max: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            allow_anonymous: None,
            password_file: None,
            acl_file: None,
            jwt_secret_file: None,
            jwt_public_key_files: Vec::new(),
            jwks_file: None,
            jwt_user_claim: "sub".into(),
            jwt_acl_claim: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_s: 30,
            jwt_token_bytes_max: 8192,
            verifier_threads: 2,
            verify_queue_max: 1024,
            verified_cache_ttl_s: 300,
            verified_cache_entries_max: 4096,
        }
    }
}

impl AuthSettings {
    /// Whether tokens can be checked: some JWT key is configured.
    pub fn jwt_configured(&self) -> bool {
        self.jwt_secret_file.is_some()
            || !self.jwt_public_key_files.is_empty()
            || self.jwks_file.is_some()
    }

    /// `allow_anonymous` as it applies: stated, or true while nothing authenticates anyone.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous
            .unwrap_or(self.password_file.is_none() && !self.jwt_configured())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.verifier_threads) {
            return Err(ConfigError::invalid(
                "auth.verifier_threads",
                "must be between 1 and 64",
            ));
        }
        if !(1..=1_000_000).contains(&self.verify_queue_max) {
            return Err(ConfigError::invalid(
                "auth.verify_queue_max",
                "must be between 1 and 1000000",
            ));
        }
        if self.verified_cache_entries_max > 10_000_000 {
            return Err(ConfigError::invalid(
                "auth.verified_cache_entries_max",
                "must be at most 10000000 (0 turns the cache off)",
            ));
        }
        if !(16..=1024 * 1024).contains(&self.jwt_token_bytes_max) {
            return Err(ConfigError::invalid(
                "auth.jwt_token_bytes_max",
                "must be between 16 and 1048576",
            ));
        }
        if self.jwt_user_claim.is_empty() {
            return Err(ConfigError::invalid(
                "auth.jwt_user_claim",
                "must name a claim",
            ));
        }
        if self.jwt_leeway_s > 86_400 {
            return Err(ConfigError::invalid(
                "auth.jwt_leeway_s",
                "must be at most 86400",
            ));
        }
        Ok(())
    }
}

/// The `[auth]` table as the file states it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileAuth {
    allow_anonymous: Option<bool>,
    password_file: Option<PathBuf>,
    acl_file: Option<PathBuf>,
    jwt_secret_file: Option<PathBuf>,
    jwt_public_key_files: Option<Vec<PathBuf>>,
    jwks_file: Option<PathBuf>,
    jwt_user_claim: Option<String>,
    jwt_acl_claim: Option<String>,
    jwt_issuer: Option<String>,
    jwt_audience: Option<String>,
    jwt_leeway_s: Option<u64>,
    jwt_token_bytes_max: Option<usize>,
    verifier_threads: Option<usize>,
    verify_queue_max: Option<usize>,
    verified_cache_ttl_s: Option<u64>,
    verified_cache_entries_max: Option<usize>,
}

impl FileAuth {
    pub(super) fn apply(self, auth: &mut AuthSettings) {
        auth.allow_anonymous = self.allow_anonymous.or(auth.allow_anonymous);
        auth.password_file = self.password_file.or(auth.password_file.take());
        auth.acl_file = self.acl_file.or(auth.acl_file.take());
        auth.jwt_secret_file = self.jwt_secret_file.or(auth.jwt_secret_file.take());
        if let Some(files) = self.jwt_public_key_files {
            auth.jwt_public_key_files = files;
        }
        auth.jwks_file = self.jwks_file.or(auth.jwks_file.take());
        if let Some(claim) = self.jwt_user_claim {
            auth.jwt_user_claim = claim;
        }
        auth.jwt_acl_claim = self.jwt_acl_claim.or(auth.jwt_acl_claim.take());
        auth.jwt_issuer = self.jwt_issuer.or(auth.jwt_issuer.take());
        auth.jwt_audience = self.jwt_audience.or(auth.jwt_audience.take());
        let numbers = [
            (self.jwt_leeway_s, &mut auth.jwt_leeway_s),
            (self.verified_cache_ttl_s, &mut auth.verified_cache_ttl_s),
        ];
        for (value, field) in numbers {
            if let Some(value) = value {
                *field = value;
            }
        }
        let sizes = [
            (self.jwt_token_bytes_max, &mut auth.jwt_token_bytes_max),
            (self.verifier_threads, &mut auth.verifier_threads),
            (self.verify_queue_max, &mut auth.verify_queue_max),
            (
                self.verified_cache_entries_max,
                &mut auth.verified_cache_entries_max,
            ),
        ];
        for (value, field) in sizes {
            if let Some(value) = value {
                *field = value;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn anonymous_follows_what_is_configured_unless_stated() {
        let open = Config::from_toml("", "f.toml").expect("parses");
        assert!(open.auth.anonymous_allowed());
        let closed = Config::from_toml("[auth]\npassword_file = \"p\"\n", "f.toml").expect("ok");
        assert!(!closed.auth.anonymous_allowed());
        let stated = Config::from_toml(
            "[auth]\njwt_secret_file = \"s\"\nallow_anonymous = true\n",
            "f.toml",
        )
        .expect("parses");
        assert!(stated.auth.anonymous_allowed());
    }

    #[test]
    fn bad_settings_are_named() {
        for (toml, key) in [
            ("[auth]\nverifier_threads = 0\n", "auth.verifier_threads"),
            ("[auth]\nverify_queue_max = 0\n", "auth.verify_queue_max"),
            (
                "[auth]\njwt_token_bytes_max = 1\n",
                "auth.jwt_token_bytes_max",
            ),
            ("[auth]\njwt_user_claim = \"\"\n", "auth.jwt_user_claim"),
        ] {
            let config = Config::from_toml(toml, "f.toml").expect("parses");
            let err = config.validate().expect_err(toml);
            assert!(err.message.contains(key), "{}: {}", toml, err.message);
        }
        let err = Config::from_toml("[auth]\npasword_file = \"p\"\n", "f.toml").expect_err("typo");
        assert!(err.message.contains("pasword_file"), "{}", err.message);
    }
}
