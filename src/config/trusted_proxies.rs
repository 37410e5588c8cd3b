//! `trusted_proxies`: the networks whose PROXY headers and forwarding fields are believed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ConfigError;

/// Most entries of `trusted_proxies`: each connection that may start with a PROXY header, and
/// each hop of a forwarded upgrade request, is checked against all of them.
pub const TRUSTED_PROXIES_MAX: usize = 256;

/// The proxies whose word about a client's address is believed: the PROXY protocol header
/// they put before a connection ([`crate::protocol::proxy`]) and the `Forwarded` and
/// `X-Forwarded-For` fields they append to an upgrade request
/// ([`crate::protocol::forwarded`]). Networks in CIDR notation, IPv4 and IPv6; a bare address
/// is a network of one (/32, /128).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

/// An address and the number of its leading bits an address must share to be in the network;
/// the bits past them are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix_bits: u8,
}

impl TrustedProxies {
    /// Parses the entries of the configuration key `key`: `10.0.0.0/8`, `2001:db8::/32`,
    /// `::1`. An entry with bits set past its prefix length (`10.1.0.0/8`) is refused as the
    /// likely typo it is; at most [`TRUSTED_PROXIES_MAX`] entries.
    pub fn parse(key: &str, entries: &[String]) -> Result<TrustedProxies, ConfigError> {
        if entries.len() > TRUSTED_PROXIES_MAX {
            return Err(ConfigError::invalid(
                key,
                &format!("at most {TRUSTED_PROXIES_MAX} entries"),
            ));
        }
        let networks = entries
            .iter()
            .map(|entry| {
                Network::parse(entry).map_err(|problem| ConfigError::invalid(key, &problem))
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { networks })
    }

    /// The networks in CIDR notation, as `trusted_proxies` accepts them.
    pub fn entries(&self) -> Vec<String> {
        self.networks
            .iter()
            .map(|network| format!("{}/{}", network.address, network.prefix_bits))
            .collect()
    }

    /// Whether `ip` is in one of the networks. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`,
    /// how a dual-stack socket reports an IPv4 peer) is its IPv4 address as well, and the
    /// reverse.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v4, v6) = match ip {
            IpAddr::V4(v4) => (Some(v4), v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => (v6.to_ipv4_mapped(), v6),
        };
        self.networks.iter().any(|network| match network.address {
            IpAddr::V4(address) => v4.is_some_and(|v4| {
                same_prefix(
                    address.to_bits().into(),
                    v4.to_bits().into(),
                    32,
                    network.prefix_bits,
                )
            }),
            IpAddr::V6(address) => {
                same_prefix(address.to_bits(), v6.to_bits(), 128, network.prefix_bits)
            }
        })
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

impl Network {
    fn parse(entry: &str) -> Result<Network, String> {
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (entry, None),
        };
        let address: IpAddr = address.parse().map_err(|_| {
            format!("`{entry}` is not an address or network like 10.0.0.0/8, 2001:db8::/32 or ::1")
        })?;
        let (bits, width) = match address {
            IpAddr::V4(v4) => (u128::from(v4.to_bits()), 32),
            IpAddr::V6(v6) => (v6.to_bits(), 128),
        };
        let prefix_bits = match prefix {
            None => width,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|&n| prefix.bytes().all(|b| b.is_ascii_digit()) && n <= width)
                .ok_or_else(|| {
                    format!("`{entry}`: the prefix length must be a number from 0 to {width}")
                })?,
        };
        let network_bits = bits & mask(width, prefix_bits);
        if network_bits != bits {
            let network = match address {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from_bits(
                    u32::try_from(network_bits).expect("an IPv4 address has 32 bits"),
                )),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from_bits(network_bits)),
            };
            return Err(format!(
                "`{entry}` has bits set past its prefix length: did you mean {network}/{prefix_bits}?"
            ));
        }
        Ok(Network {
            address,
            prefix_bits,
        })
    }
}

/// The `prefix_bits` leading bits of a `width`-bit address, as a mask.
fn mask(width: u8, prefix_bits: u8) -> u128 {
    let all = u128::MAX >> (128 - u32::from(width));
    let host = all.checked_shr(u32::from(prefix_bits)).unwrap_or(0);
    all & !host
}

/// Whether two `width`-bit addresses share their `prefix_bits` leading bits.
fn same_prefix(a: u128, b: u128, width: u8, prefix_bits: u8) -> bool {
    (a ^ b) & mask(width, prefix_bits) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn trusted(entries: &[&str]) -> Result<TrustedProxies, ConfigError> {
        let entries: Vec<String> = entries.iter().map(|&e| e.to_owned()).collect();
        TrustedProxies::parse("trusted_proxies", &entries)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn trusted_proxies_match_their_networks() {
        let proxies = trusted(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "2001:db8::/32",
            "::1",
            "172.16.0.0/12",
        ])
        .expect("valid");
        for inside in [
            "10.0.0.0",
            "10.255.255.255",
            "192.0.2.7",
            "2001:db8::1",
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            "::1",
            "172.31.255.255",
            // An IPv4 peer of a dual-stack socket matches the IPv4 networks.
            "::ffff:10.1.2.3",
            "::ffff:192.0.2.7",
        ] {
            assert!(proxies.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "11.0.0.0",
            "9.255.255.255",
            "192.0.2.8",
            "2001:db9::",
            "::2",
            "172.32.0.0",
            "::ffff:11.0.0.1",
            // IPv4-compatible (deprecated) is not mapped.
            "::10.0.0.1",
            "::ffff:0:1",
        ] {
            assert!(!proxies.contains(ip(outside)), "{outside}");
        }
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn trusted_proxies_mapped_networks_and_edges() {
        let mapped = trusted(&["::ffff:10.0.0.0/104"]).expect("valid");
        assert!(mapped.contains(ip("10.9.9.9")));
        assert!(mapped.contains(ip("::ffff:10.9.9.9")));
        assert!(!mapped.contains(ip("11.0.0.1")));
        let everything = trusted(&["0.0.0.0/0", "::/0"]).expect("valid");
        assert!(everything.contains(ip("203.0.113.7")));
        assert!(everything.contains(ip("2001:db8::1")));
        let v4_only = trusted(&["0.0.0.0/0"]).expect("valid");
        assert!(!v4_only.contains(ip("2001:db8::1")));
        assert!(v4_only.contains(ip("::ffff:203.0.113.7")));
        let host = trusted(&["192.0.2.7/32", "2001:db8::7/128"]).expect("valid");
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.6")));
        assert!(host.contains(ip("2001:db8::7")));
        assert!(!host.contains(ip("2001:db8::6")));
    }

    #[test]
    fn bad_trusted_proxies_are_named() {
        for (entry, says) in [
            ("10.0.0.0/33", "0 to 32"),
            ("::/129", "0 to 128"),
            ("10.0.0.0/", "0 to 32"),
            ("10.0.0.0/+8", "0 to 32"),
            ("10.0.0.0/8/8", "0 to 32"),
            ("10.0.0/8", "not an address"),
            ("localhost", "not an address"),
            ("", "not an address"),
            (" 10.0.0.1", "not an address"),
            ("10.1.0.0/8", "did you mean 10.0.0.0/8?"),
            ("2001:db8::1/32", "did you mean 2001:db8::/32?"),
        ] {
            let err = trusted(&[entry]).expect_err(entry);
            assert!(err.message.contains("`trusted_proxies`"), "{}", err.message);
            assert!(err.message.contains(says), "{}", err.message);
        }
        let many = vec!["10.0.0.1".to_owned(); TRUSTED_PROXIES_MAX + 1];
        assert!(TrustedProxies::parse("trusted_proxies", &many).is_err());
        assert!(TrustedProxies::parse("trusted_proxies", &many[1..]).is_ok());
        let err = Config::from_toml("trusted_proxies = [\"10.0.0.0/33\"]\n", "f.toml")
            .expect_err("bad network");
        assert!(err.message.contains("`trusted_proxies`"), "{}", err.message);
        let err = Config::from_toml("trusted_proxies = \"10.0.0.0/8\"\n", "f.toml")
            .expect_err("not a list");
        assert!(err.message.contains("trusted_proxies"), "{}", err.message);
    }
}
