//! A shard's door: judges each CONNECT's credentials against the policy in force, answers at
//! once where it can (no credentials needed, a token, a password verified recently) and sends
//! password hashes to the verifiers otherwise.
//!
//! The cache of recent successes is the shard's own, keyed by a hash of the user name and the
//! password under a key drawn at start-up, so it holds no password and its keys cannot be
//! matched against a list of known hashes. Checks of the same credentials that arrive while
//! one is with a verifier wait for its verdict rather than start their own: a reconnect storm
//! of one backend's credentials costs one hash, not one per connection.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use super::verifier::{Verdict, Verifiers, VerifyJob};
use crate::auth::{Decision, Identity, Policy, Refusal, SharedPolicy};
use crate::conn::ConnId;

/// What the door says about a CONNECT.
pub enum Entry {
    Accept(Option<Identity>),
    Refuse(Refusal),
    /// A verifier checks the password; the verdict comes back through [`AuthGate::take_verdict`].
    Pending,
}

pub struct AuthGate {
    shard: usize,
    shared: Arc<SharedPolicy>,
    /// Bumped by each reload; compared once per turn.
    generation: Arc<AtomicU64>,
    policy: Arc<Policy>,
    verifiers: Arc<Verifiers>,
    /// Keyed hash of (user, password) → when the success stops counting.
    verified: HashMap<u64, Instant>,
    /// Keyed hash of credentials with a verifier → the connections waiting for its verdict.
    waiting: HashMap<u64, Vec<ConnId>>,
    /// Most connections waiting for verdicts at once (`verify_queue_max`).
    waiting_max: usize,
    waiting_len: usize,
    verified_max: usize,
    verified_ttl: Duration,
    keys: RandomState,
}

impl AuthGate {
    pub fn new(
        shard: usize,
        shared: Arc<SharedPolicy>,
        generation: Arc<AtomicU64>,
        verifiers: Arc<Verifiers>,
        verified_max: usize,
        verified_ttl: Duration,
        waiting_max: usize,
    ) -> AuthGate {
        AuthGate {
            shard,
            policy: shared.current(),
            shared,
            generation,
            verifiers,
            verified: HashMap::new(),
            waiting: HashMap::new(),
            waiting_max,
            waiting_len: 0,
            verified_max,
            verified_ttl,
            keys: RandomState::new(),
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Takes the reloaded policy, if there is one; says whether it changed. Successes
    /// remembered under the old one are forgotten: the password file may have changed.
    pub fn refresh(&mut self) -> bool {
        if self.generation.load(Ordering::Acquire) == self.policy.generation {
            return false;
        }
        self.policy = self.shared.current();
        self.verified.clear();
        true
    }

    /// Judges a CONNECT. `now` for the cache, the wall clock for token times.
    pub fn judge(
        &mut self,
        conn: ConnId,
        certificate_user: Option<&str>,
        username: Option<&str>,
        password: Option<&[u8]>,
        now: Instant,
    ) -> Entry {
        let unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self
            .policy
            .decide(certificate_user, username, password, unix_s)
        {
            Decision::Accept(identity) => Entry::Accept(identity),
            Decision::Refuse(refusal) => Entry::Refuse(refusal),
            Decision::Verify { user, hash } => {
                let password = password.unwrap_or_default();
                let cache_key = self.cache_key(&user, password);
                if self
                    .verified
                    .get(&cache_key)
                    .is_some_and(|&until| until > now)
                {
                    return Entry::Accept(Some(password_identity(user)));
                }
                if self.waiting_len >= self.waiting_max {
                    return Entry::Refuse(Refusal::Busy);
                }
                if let Some(waiting) = self.waiting.get_mut(&cache_key) {
                    waiting.push(conn);
                    self.waiting_len += 1;
                    return Entry::Pending;
                }
                let job = VerifyJob {
                    shard: self.shard,
                    conn,
                    user,
                    hash,
                    password: Zeroizing::new(password.to_vec()),
                    cache_key,
                };
                if !self.verifiers.submit(job) {
                    return Entry::Refuse(Refusal::Busy);
                }
                self.waiting.insert(cache_key, vec![conn]);
                self.waiting_len += 1;
                Entry::Pending
            }
        }
    }

    /// The next verdict for this shard, if any: the connections that waited for it, and who
    /// they are when the password matched.
    pub fn take_verdict(&mut self, now: Instant) -> Option<(Vec<ConnId>, Option<Identity>)> {
        let Verdict {
            conn,
            user,
            matched,
            cache_key,
        } = self.verifiers.take_verdict(self.shard)?;
        let waiting = self
            .waiting
            .remove(&cache_key)
            .unwrap_or_else(|| vec![conn]);
        self.waiting_len = self.waiting_len.saturating_sub(waiting.len());
        if !matched {
            return Some((waiting, None));
        }
        self.remember(cache_key, now);
        Some((waiting, Some(password_identity(user))))
    }

    fn remember(&mut self, cache_key: u64, now: Instant) {
        if self.verified_max == 0 {
            return;
        }
        if self.verified.len() >= self.verified_max {
            self.verified.retain(|_, until| *until > now);
            if self.verified.len() >= self.verified_max {
                // Still full of live entries: start over rather than grow.
                self.verified.clear();
            }
        }
        self.verified.insert(cache_key, now + self.verified_ttl);
    }

    fn cache_key(&self, user: &str, password: &[u8]) -> u64 {
        let mut hasher = self.keys.build_hasher();
        hasher.write(user.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(password);
        hasher.finish()
    }
}

fn password_identity(user: Box<str>) -> Identity {
    Identity {
        user,
        token_acl: None,
        expires_at: None,
    }
}
