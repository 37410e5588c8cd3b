//! Where connections go: the brokers (or cluster nodes) of `--url`, and those of `--pub-url`
//! for connections that only publish, with what every connection of the run shares.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::codec::{self, Version};
use crate::tls::TlsTarget;

/// One broker, or one node of a cluster, that connections are opened to.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The URL as given, for the report.
    pub url: String,
    pub addr: SocketAddr,
    /// `Some((host header, path))` for `ws://` and `wss://`.
    pub ws: Option<(String, String)>,
    /// `Some` for `mqtts://` and `wss://`.
    pub tls: Option<TlsTarget>,
}

/// Where and how to connect; shared read-only by every connection of a thread.
#[derive(Clone, Debug)]
pub struct Target {
    /// `--url`, in the order given: connection i goes to `endpoints[i % len]`. Never empty.
    pub endpoints: Vec<Endpoint>,
    /// `--pub-url`: where connections that publish and do not subscribe go instead, so
    /// deliveries cross from one node to another; empty: they go to `endpoints` too.
    pub pub_endpoints: Vec<Endpoint>,
    pub version: Version,
    /// Source addresses used round-robin; empty means "let the kernel choose".
    pub sources: Vec<IpAddr>,
    pub keep_alive_s: u16,
    /// `--topic-alias-max`: the Topic Alias Maximum of every MQTT 5 CONNECT (0: none).
    pub topic_alias_max: u16,
    /// `--username` and `--password`, sent by every connection.
    pub credentials: Option<codec::Credentials>,
    pub timeout: Duration,
    /// Initial read buffer; grows (up to `packet_bytes_max`) only for a packet that needs it.
    pub read_buffer_bytes: usize,
    /// Largest MQTT packet or WebSocket frame accepted from the broker.
    pub packet_bytes_max: usize,
}

impl Target {
    /// The endpoint of connection `index`, round-robin by index, so every process of
    /// `--procs` (which share connections by index too) agrees on it. `publisher_only`: the
    /// connection publishes and subscribes to nothing, and goes to `--pub-url` if given.
    pub fn endpoint(&self, index: usize, publisher_only: bool) -> &Endpoint {
        let list = if publisher_only && !self.pub_endpoints.is_empty() {
            &self.pub_endpoints
        } else {
            &self.endpoints
        };
        &list[index % list.len()]
    }

    /// Every endpoint of the run, `--url` first.
    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().chain(&self.pub_endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            url: format!("tcp://127.0.0.1:{port}"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ws: None,
            tls: None,
        }
    }

    fn target(urls: &[u16], pub_urls: &[u16]) -> Target {
        Target {
            endpoints: urls.iter().map(|&p| endpoint(p)).collect(),
            pub_endpoints: pub_urls.iter().map(|&p| endpoint(p)).collect(),
            version: Version::V311,
            sources: Vec::new(),
            keep_alive_s: 60,
            topic_alias_max: 0,
            credentials: None,
            timeout: Duration::from_secs(1),
            read_buffer_bytes: 4096,
            packet_bytes_max: 1 << 16,
        }
    }

    fn port(t: &Target, index: usize, publisher_only: bool) -> u16 {
        t.endpoint(index, publisher_only).addr.port()
    }

    #[test]
    fn connections_spread_round_robin_over_the_urls() {
        let t = target(&[1, 2, 3], &[]);
        let ports: Vec<u16> = (0..7).map(|i| port(&t, i, false)).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3, 1]);
        // Without --pub-url, publishers are spread the same way.
        assert_eq!(port(&t, 4, true), 2);
        let mut shares = [0usize; 3];
        for i in 0..300 {
            shares[usize::from(port(&t, i, i % 5 == 0)) - 1] += 1;
        }
        assert_eq!(shares, [100, 100, 100]);
    }

    #[test]
    fn publishers_go_to_the_pub_urls() {
        let t = target(&[1, 2], &[8, 9]);
        assert_eq!(port(&t, 0, false), 1);
        assert_eq!(port(&t, 1, false), 2);
        assert_eq!(port(&t, 10, true), 8);
        assert_eq!(port(&t, 11, true), 9);
        let all: Vec<u16> = t.all_endpoints().map(|e| e.addr.port()).collect();
        assert_eq!(all, [1, 2, 8, 9]);
    }

    fn parse(line: &str) -> anyhow::Result<crate::config::Config> {
        crate::config::parse(line.split_whitespace().map(Into::into))
    }

    #[test]
    fn urls_repeat_and_publishers_may_go_elsewhere() {
        let c = parse(
            "fanout --url tcp://127.0.0.1:1 --url tcp://127.0.0.1:2 --pub-url tcp://127.0.0.1:3",
        )
        .unwrap();
        let ports =
            |list: &[Endpoint]| -> Vec<u16> { list.iter().map(|e| e.addr.port()).collect() };
        assert_eq!(ports(&c.target.endpoints), [1, 2]);
        assert_eq!(ports(&c.target.pub_endpoints), [3]);
        // One transport per run; --pub-url only where some connections just publish.
        assert!(parse("fanout --url tcp://127.0.0.1:1 --url ws://127.0.0.1:2/m").is_err());
        assert!(parse("fanout --url tcp://127.0.0.1:1 --pub-url ws://127.0.0.1:2").is_err());
        assert!(parse("p2p --pub-url tcp://127.0.0.1:3").is_err());
        assert!(parse("fanout --pub-url tcp://10.1.2.3:1883").is_err());
    }
}
