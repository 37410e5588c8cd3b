//! Limits per client address, across every shard: `connections_per_ip_max` connections open at
//! once and `connect_rate_per_ip_max` new ones per second (a token bucket holding a second's
//! worth), against floods and reconnect storms. A connection past them is closed at once.
//!
//! The address is the client's real one: taken at accept, unless the peer is a trusted proxy,
//! in which case it is taken when the PROXY header or `Forwarded` names the client. So an
//! address is counted exactly when it is not a trusted proxy's, the rule [`AddressBook::counts`]
//! states and every caller follows, at admission and at release alike. IPv6 clients are counted
//! per /64, the block one subscriber usually holds.
//!
//! Shards share the book: 64 stripes, each a lock over a map, taken once per accept and once
//! per close, never on the data path.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use crate::config::TrustedProxies;

const STRIPES: usize = 64;

/// Entries a stripe holds before idle ones (no connection, a full bucket) are swept.
const STRIPE_SWEEP_AT: usize = 4096;

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRefusal {
    TooManyConnections,
    TooManyConnects,
}

impl AddressRefusal {
    pub const fn description(self) -> &'static str {
        match self {
            AddressRefusal::TooManyConnections => "connections_per_ip_max reached",
            AddressRefusal::TooManyConnects => "connect_rate_per_ip_max reached",
        }
    }
}

struct Entry {
    connections: u32,
    tokens: f64,
    at: Instant,
}

pub struct AddressBook {
    stripes: Box<[Mutex<HashMap<IpAddr, Entry>>]>,
    hasher: RandomState,
    /// `connections_per_ip_max` and `connect_rate_per_ip_max`, which a reload may change:
    /// each accept reads them.
    connections_max: AtomicU32,
    connects_per_s: AtomicU32,
    trusted: TrustedProxies,
}

impl AddressBook {
    pub fn new(connections_max: u32, connects_per_s: u32, trusted: TrustedProxies) -> AddressBook {
        AddressBook {
            stripes: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            connections_max: AtomicU32::new(connections_max),
            connects_per_s: AtomicU32::new(connects_per_s),
            trusted,
        }
    }

    /// Takes reloaded limits: accepts from now on are held to them, connections open stay.
    pub fn set_limits(&self, connections_max: u32, connects_per_s: u32) {
        self.connections_max
            .store(connections_max, Ordering::Relaxed);
        self.connects_per_s.store(connects_per_s, Ordering::Relaxed);
    }

    fn rate(&self) -> f64 {
        f64::from(self.connects_per_s.load(Ordering::Relaxed).max(1))
    }

    /// Whether connections from `ip` are counted: not when it is a trusted proxy's, whose
    /// clients are counted once they are known.
    pub fn counts(&self, ip: IpAddr) -> bool {
        !self.trusted.contains(ip)
    }

    /// Counts a new connection from `ip`, or refuses it.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), AddressRefusal> {
        let key = counted_as(ip);
        let mut stripe = self.stripe(key);
        if stripe.len() >= STRIPE_SWEEP_AT {
            let rate = self.rate();
            stripe.retain(|_, entry| entry.connections > 0 || refilled(entry, rate, now) < rate);
        }
        let rate = self.rate();
        let entry = stripe.entry(key).or_insert(Entry {
            connections: 0,
            tokens: rate,
            at: now,
        });
        entry.tokens = refilled(entry, rate, now);
        entry.at = now;
        if entry.connections >= self.connections_max.load(Ordering::Relaxed) {
            return Err(AddressRefusal::TooManyConnections);
        }
        if entry.tokens < 1.0 {
            return Err(AddressRefusal::TooManyConnects);
        }
        entry.tokens -= 1.0;
        entry.connections += 1;
        Ok(())
    }

    /// A connection counted under `ip` ended.
    pub fn release(&self, ip: IpAddr, now: Instant) {
        let key = counted_as(ip);
        let mut stripe = self.stripe(key);
        let rate = self.rate();
        if let Some(entry) = stripe.get_mut(&key) {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 && refilled(entry, rate, now) >= rate {
                stripe.remove(&key);
            }
        }
    }

    fn stripe(&self, key: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let index = (self.hasher.hash_one(key) as usize) % STRIPES;
        match self.stripes[index].lock() {
            Ok(guard) => guard,
            // A shard panicked while holding it: the counts are still counts.
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// The bucket of `entry` refilled up to `now`.
fn refilled(entry: &Entry, rate: f64, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(entry.at).as_secs_f64();
    (entry.tokens + rate * elapsed).min(rate)
}

/// The address an IP is counted under: itself, or its /64 for IPv6 (an IPv4-mapped address
/// is its IPv4 address).
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn book(connections_max: u32, rate: u32) -> AddressBook {
        let trusted =
            TrustedProxies::parse("trusted_proxies", &["10.0.0.1".to_owned()]).expect("parses");
        AddressBook::new(connections_max, rate, trusted)
    }

    #[test]
    fn open_connections_are_bounded_and_released() {
        let book = book(2, 100);
        let (ip, t0) = ("192.0.2.1".parse().expect("ip"), Instant::now());
        assert_eq!(book.admit(ip, t0), Ok(()));
        assert_eq!(book.admit(ip, t0), Ok(()));
        assert_eq!(book.admit(ip, t0), Err(AddressRefusal::TooManyConnections));
        book.release(ip, t0);
        assert_eq!(book.admit(ip, t0), Ok(()));
        let other = "192.0.2.2".parse().expect("ip");
        assert_eq!(book.admit(other, t0), Ok(()));
    }

    #[test]
    fn new_connections_per_second_are_bounded() {
        let book = book(1000, 3);
        let (ip, t0) = ("192.0.2.1".parse().expect("ip"), Instant::now());
        for _ in 0..3 {
            assert_eq!(book.admit(ip, t0), Ok(()));
            book.release(ip, t0);
        }
        assert_eq!(book.admit(ip, t0), Err(AddressRefusal::TooManyConnects));
        let later = t0 + Duration::from_millis(400);
        assert_eq!(book.admit(ip, later), Ok(()));
    }

    #[test]
    fn ipv6_counts_per_64_and_trusted_proxies_are_not_counted() {
        let book = book(1, 100);
        let t0 = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2::2".parse().expect("ip");
        assert_eq!(book.admit(a, t0), Ok(()));
        assert_eq!(book.admit(b, t0), Err(AddressRefusal::TooManyConnections));
        assert!(!book.counts("10.0.0.1".parse().expect("ip")));
        assert!(book.counts("10.0.0.2".parse().expect("ip")));
    }
}
