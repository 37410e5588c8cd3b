//! Who may connect, publish and subscribe: credentials checked at CONNECT (a password file, a
//! JWT in the password field, a client certificate), topic rules (an ACL file, or the rules a
//! token carries).
//!
//! Everything here is sans-IO and clock-free, like `protocol/`: files are read when a
//! [`Policy`] is loaded, time comes in as a parameter. The one slow check, a password hash, is
//! not run here: [`Policy::decide`] says which hash to verify, and the shard has a verifier
//! thread do it (`shard/verifier.rs`).

pub mod acl;
pub mod jwt;
// `fanfare passwd`: the one part that does its own I/O (the file, the terminal).
pub mod passwd_cli;
pub mod password;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use acl::{AclFile, Identity as AclIdentity};
use jwt::{JwtKeys, JwtRefusal, JwtSettings, TokenAcl};
use password::{PasswordFile, PasswordHash};

use crate::config::AuthSettings;

/// Who a connection is, once its CONNECT was accepted. Anonymous browsers have none at all
/// (`Option<Arc<Identity>>` is `None`), so they cost nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user the credentials proved; never a name a client merely claimed.
    pub user: Box<str>,
    /// The topic rules a token carried; they replace the ACL file's for this client.
    pub token_acl: Option<TokenAcl>,
    /// When the token stops being valid (Unix seconds): the connection ends then.
    pub expires_at: Option<u64>,
}

/// What [`Policy::decide`] says about a CONNECT's credentials.
#[derive(Debug)]
pub enum Decision {
    /// Accepted: anonymous (`None`) or as this identity.
    Accept(Option<Identity>),
    Refuse(Refusal),
    /// The password must be checked against this hash (slow: off the shard thread); when it
    /// matches, the client is `user`.
    Verify {
        user: Box<str>,
        hash: PasswordHash,
    },
}

/// Why a CONNECT was refused, for its CONNACK and its one log line. Never says which part of
/// the credentials was wrong, and never holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Credentials that do not check out: CONNACK 4 (3.1.x) or 0x86 (MQTT 5).
    BadCredentials(&'static str),
    /// No credentials, and anonymous clients are not allowed; or a will the client may not
    /// publish: CONNACK 5 or 0x87.
    NotAuthorized(&'static str),
    /// Too many password checks waiting: CONNACK 3 or 0x89 (server busy).
    Busy,
}

impl Refusal {
    pub const fn reason(self) -> &'static str {
        match self {
            Refusal::BadCredentials(why) | Refusal::NotAuthorized(why) => why,
            Refusal::Busy => "too many password checks waiting",
        }
    }
}

/// A file of the policy that did not load, named with its key for the log line.
#[derive(Debug)]
pub struct PolicyError {
    pub key: &'static str,
    pub path: PathBuf,
    pub problem: String,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (key, path, problem) = (self.key, self.path.display(), &self.problem);
        write!(f, "auth.{key} ({path}): {problem}")
    }
}

impl std::error::Error for PolicyError {}

/// The credentials and rules in force: loaded at start-up, replaced whole on SIGHUP.
pub struct Policy {
    anonymous: bool,
    /// The password file, and a hash of a random password that an unknown user's password is
    /// checked against: as slow as a real check, so the time of a refusal does not tell which
    /// users exist.
    passwords: Option<(PasswordFile, PasswordHash)>,
    acl: Option<AclFile>,
    jwt: Option<(JwtKeys, JwtSettings)>,
    /// Bumped by every reload, so verdicts remembered under an older policy are dropped.
    pub generation: u64,
}

impl Policy {
    /// Reads the files `settings` names; the error names the first that does not load.
    pub fn load(settings: &AuthSettings, generation: u64) -> Result<Policy, PolicyError> {
        let failed = |key: &'static str, path: &PathBuf| {
            let path = path.clone();
            move |problem: String| PolicyError { key, path, problem }
        };
        let passwords = match &settings.password_file {
            None => None,
            Some(path) => {
                let file = PasswordFile::load(path)
                    .map_err(|e| e.to_string())
                    .map_err(failed("password_file", path))?;
                Some((file, decoy_hash()))
            }
        };
        let acl = match &settings.acl_file {
            None => None,
            Some(path) => Some(
                AclFile::load(path)
                    .map_err(|e| e.to_string())
                    .map_err(failed("acl_file", path))?,
            ),
        };
        let jwt = if settings.jwt_configured() {
            let keys = JwtKeys::load(
                settings.jwt_secret_file.as_deref(),
                &settings.jwt_public_key_files,
                settings.jwks_file.as_deref(),
            )
            .map_err(|e| PolicyError {
                key: "jwt keys",
                path: PathBuf::new(),
                problem: e.to_string(),
            })?;
            let jwt_settings = JwtSettings {
                user_claim: settings.jwt_user_claim.clone(),
                acl_claim: settings.jwt_acl_claim.clone(),
                issuer: settings.jwt_issuer.clone(),
                audience: settings.jwt_audience.clone(),
                leeway_s: settings.jwt_leeway_s,
                token_bytes_max: settings.jwt_token_bytes_max,
            };
            Some((keys, jwt_settings))
        } else {
            None
        };
        Ok(Policy {
            anonymous: settings.anonymous_allowed(),
            passwords,
            acl,
            jwt,
            generation,
        })
    }

    /// Whether any client needs a check at all: without an ACL file and without tokens that
    /// carry rules, every client may use every topic, and the broker skips the checks.
    pub fn has_rules(&self) -> bool {
        self.acl.is_some()
            || self
                .jwt
                .as_ref()
                .is_some_and(|(_, s)| s.acl_claim.is_some())
    }

    /// Judges a CONNECT's credentials. `certificate_user`: the identity a verified client
    /// certificate gave (`identity_as_username`), which is proof enough.
    pub fn decide(
        &self,
        certificate_user: Option<&str>,
        username: Option<&str>,
        password: Option<&[u8]>,
        now_unix_s: u64,
    ) -> Decision {
        if let Some(user) = certificate_user {
            return Decision::Accept(Some(Identity {
                user: user.into(),
                token_acl: None,
                expires_at: None,
            }));
        }
        if let (Some((keys, settings)), Some(token)) = (&self.jwt, password)
            && jwt::looks_like_jwt(token)
        {
            return match jwt::verify(token, keys, settings, now_unix_s) {
                Ok(claims) => Decision::Accept(Some(Identity {
                    user: claims.user.into(),
                    token_acl: claims.acl,
                    expires_at: claims.expires_at,
                })),
                Err(refusal) => Decision::Refuse(Refusal::BadCredentials(jwt_reason(refusal))),
            };
        }
        match (&self.passwords, username, password) {
            (Some((file, decoy)), Some(user), Some(_)) => Decision::Verify {
                user: user.into(),
                hash: file.get(user).unwrap_or(decoy).clone(),
            },
            (_, _, Some(_)) if !self.anonymous => {
                Decision::Refuse(Refusal::BadCredentials("credentials nothing can check"))
            }
            _ if self.anonymous => Decision::Accept(None),
            _ => Decision::Refuse(Refusal::NotAuthorized("anonymous clients are not allowed")),
        }
    }

    /// May this client publish to `topic`? Clients never publish to `$` topics, which are the
    /// server's (§4.7.2).
    pub fn may_publish(&self, identity: Option<&Identity>, client_id: &str, topic: &str) -> bool {
        if topic.starts_with('$') {
            return false;
        }
        if let Some(rules) = identity.and_then(|i| i.token_acl.as_ref()) {
            return acl::topic_allowed(topic, &rules.publish);
        }
        match &self.acl {
            None => true,
            Some(file) => file.may_publish(&acl_identity(identity, client_id), topic),
        }
    }

    /// May this client subscribe to `filter`: is every topic it can match readable?
    pub fn may_subscribe(
        &self,
        identity: Option<&Identity>,
        client_id: &str,
        filter: &str,
    ) -> bool {
        if let Some(rules) = identity.and_then(|i| i.token_acl.as_ref()) {
            return acl::filter_covered(filter, &rules.subscribe);
        }
        match &self.acl {
            None => true,
            Some(file) => file.may_subscribe(&acl_identity(identity, client_id), filter),
        }
    }
}

/// The hash of a random password nobody knows, made like a new entry of the file.
fn decoy_hash() -> PasswordHash {
    let mut secret = [0u8; 32];
    // Any bytes will do if the system's randomness fails: the decoy only has to cost time.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret);
    let line = format!("decoy:{}\n", password::hash_password(&secret));
    PasswordFile::parse(&line, std::path::Path::new("decoy"))
        .ok()
        .and_then(|file| file.get("decoy").cloned())
        .expect("a fresh argon2id entry parses")
}

fn acl_identity<'a>(identity: Option<&'a Identity>, client_id: &'a str) -> AclIdentity<'a> {
    AclIdentity {
        user: identity.map(|i| &*i.user),
        client_id,
    }
}

fn jwt_reason(refusal: JwtRefusal) -> &'static str {
    refusal.description()
}

/// The policy every shard checks new connections against; SIGHUP replaces it.
pub struct SharedPolicy {
    current: RwLock<Arc<Policy>>,
}

impl SharedPolicy {
    pub fn new(policy: Policy) -> SharedPolicy {
        SharedPolicy {
            current: RwLock::new(Arc::new(policy)),
        }
    }

    /// The policy in force; a lock taken once per shard turn at most, never per delivery.
    pub fn current(&self) -> Arc<Policy> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, policy: Policy) {
        let policy = Arc::new(policy);
        match self.current.write() {
            Ok(mut current) => *current = policy,
            Err(poisoned) => *poisoned.into_inner() = policy,
        }
    }
}
