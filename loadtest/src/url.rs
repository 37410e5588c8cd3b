//! `--url` taken apart: the transport, the host for SNI and the certificate's name, the
//! address to connect to, and the TLS settings that go with it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use serde::Serialize;

use crate::target::Endpoint;
use crate::tls::{TlsTarget, Verify};

/// What `--url` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `tcp://` (or `mqtt://`).
    Tcp,
    /// `mqtts://`: MQTT over TLS, ALPN `mqtt`.
    Mqtts,
    /// `ws://`.
    Ws,
    /// `wss://`: WebSocket over TLS, ALPN `http/1.1`.
    Wss,
}

impl Transport {
    pub fn tls(self) -> bool {
        matches!(self, Transport::Mqtts | Transport::Wss)
    }
    pub fn ws(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

/// A `--url` taken apart, before its host is resolved.
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    pub transport: Transport,
    /// The host as written, without the brackets of an IPv6 address: for SNI and the
    /// certificate's name.
    pub host: String,
    pub port: u16,
    /// `host:port` as written: the WebSocket `Host` header.
    pub authority: String,
    /// WebSocket only: the request path, `/mqtt` if the URL has none.
    pub path: String,
}

/// Splits `tcp://host:port`, `mqtts://host:port`, `ws://host:port/path` or
/// `wss://host:port/path`; an IPv6 host is written in brackets, `[::1]:8883`.
pub fn parse_url(url: &str) -> anyhow::Result<Url> {
    let schemes = [
        ("tcp://", Transport::Tcp),
        ("mqtt://", Transport::Tcp),
        ("mqtts://", Transport::Mqtts),
        ("ws://", Transport::Ws),
        ("wss://", Transport::Wss),
    ];
    let Some((transport, rest)) = schemes
        .iter()
        .find_map(|(prefix, t)| Some((*t, url.strip_prefix(prefix)?)))
    else {
        bail!("--url must start with tcp://, mqtts://, ws:// or wss:// (got {url:?})");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/mqtt"),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .with_context(|| format!("--url {url:?}: no ']' after the IPv6 address"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    ensure!(
        !host.is_empty() && (authority.starts_with('[') || !host.contains(':')),
        "--url {url:?}: bad host (write an IPv6 address in brackets: [::1]:8883)"
    );
    let port = port.with_context(|| format!("--url {url:?}: the port is missing"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|&p| p != 0)
        .with_context(|| format!("--url {url:?}: bad port {port:?}"))?;
    Ok(Url {
        transport,
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path: if transport.ws() {
            path.to_string()
        } else {
            String::new()
        },
    })
}

/// The address to connect to: the host's first IPv4 address, else its first address.
pub fn resolve(url: &Url) -> anyhow::Result<SocketAddr> {
    let all: Vec<SocketAddr> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {:?}", url.host))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .with_context(|| format!("{:?} resolves to nothing", url.host))
}

/// The TLS settings for `url`, from `--ca` and `--insecure`; `None` for plain transports.
pub fn tls_target(
    url: &Url,
    ca: Option<PathBuf>,
    insecure: bool,
    resume: bool,
) -> anyhow::Result<Option<TlsTarget>> {
    ensure!(
        !(insecure && ca.is_some()),
        "--ca and --insecure exclude each other"
    );
    if !url.transport.tls() {
        ensure!(
            ca.is_none() && !insecure && !resume,
            "--ca, --insecure and --tls-resume apply to mqtts:// and wss:// URLs only"
        );
        return Ok(None);
    }
    let verify = match (ca, insecure) {
        (Some(path), _) => Verify::Ca(path),
        (None, true) => Verify::Insecure,
        (None, false) => Verify::System,
    };
    let alpn = match url.transport {
        Transport::Wss => "http/1.1",
        _ => "mqtt",
    };
    TlsTarget::new(&url.host, verify, alpn, resume).map(Some)
}

/// `--ca`, `--insecure` and `--tls-resume`: the same for every URL of the run.
#[derive(Clone, Debug, Default)]
pub struct TlsFlags {
    pub ca: Option<PathBuf>,
    pub insecure: bool,
    pub resume: bool,
}

/// The endpoints of `urls` (`flag` names them in errors), which must all use `transport` (one
/// transport per run: the report describes one) and, unless `allow_remote`, be loopback.
pub fn endpoints(
    urls: &[String],
    flag: &str,
    transport: Transport,
    tls: &TlsFlags,
    allow_remote: bool,
) -> anyhow::Result<Vec<Endpoint>> {
    let mut out = Vec::with_capacity(urls.len());
    for url in urls {
        let parsed = parse_url(url)?;
        ensure!(
            parsed.transport == transport,
            "{flag} {url:?}: every URL of a run uses the first one's transport ({transport:?})"
        );
        let addr = resolve(&parsed)?;
        ensure!(
            allow_remote || addr.ip().is_loopback(),
            "{} is not a loopback address; pass --allow-remote to load a remote broker",
            addr.ip()
        );
        out.push(Endpoint {
            url: url.clone(),
            addr,
            ws: transport
                .ws()
                .then(|| (parsed.authority.clone(), parsed.path.clone())),
            tls: tls_target(&parsed, tls.ca.clone(), tls.insecure, tls.resume)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(transport: Transport, host: &str, port: u16, authority: &str, path: &str) -> Url {
        Url {
            transport,
            host: host.into(),
            port,
            authority: authority.into(),
            path: path.into(),
        }
    }

    #[test]
    fn parses_every_url_form() {
        let t = Transport::Tcp;
        assert_eq!(
            parse_url("tcp://127.0.0.1:1883").unwrap(),
            url(t, "127.0.0.1", 1883, "127.0.0.1:1883", "")
        );
        assert_eq!(
            parse_url("mqtt://localhost:1883").unwrap(),
            url(t, "localhost", 1883, "localhost:1883", "")
        );
        assert_eq!(
            parse_url("mqtts://broker.local:8883").unwrap(),
            url(
                Transport::Mqtts,
                "broker.local",
                8883,
                "broker.local:8883",
                ""
            )
        );
        assert_eq!(
            parse_url("ws://127.0.0.1:8080").unwrap(),
            url(Transport::Ws, "127.0.0.1", 8080, "127.0.0.1:8080", "/mqtt")
        );
        assert_eq!(
            parse_url("wss://localhost:8443/ws/mqtt?x=1").unwrap(),
            url(
                Transport::Wss,
                "localhost",
                8443,
                "localhost:8443",
                "/ws/mqtt?x=1"
            )
        );
        assert_eq!(
            parse_url("mqtts://[::1]:8883").unwrap(),
            url(Transport::Mqtts, "::1", 8883, "[::1]:8883", "")
        );
    }

    #[test]
    fn refuses_bad_urls() {
        for bad in [
            "http://127.0.0.1:80",
            "127.0.0.1:1883",
            "mqtts://127.0.0.1",
            "mqtts://127.0.0.1:",
            "mqtts://127.0.0.1:0",
            "mqtts://127.0.0.1:70000",
            "wss://:8443/mqtt",
            "mqtts://::1:8883",
            "mqtts://[::1:8883",
            "mqtts://[::1]8883",
        ] {
            assert!(parse_url(bad).is_err(), "{bad} should be refused");
        }
    }
}
