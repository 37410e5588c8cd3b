//! TLS for `mqtts://` and `wss://`: the client configuration (rustls with the ring provider) and
//! the sans-IO steps `conn.rs` drives a session with over its own monoio socket.
//!
//! The session sits between the socket and the buffers the rest of the generator already
//! uses: what a publisher queues is encrypted at once into the writer's pending bytes, so a
//! direct send (`direct.rs`) and a coalesced flush send ciphertext unchanged; what a reader
//! receives lands in a ciphertext buffer, and its plaintext is moved into the connection's
//! read buffer, where packets are decoded in place as over plain TCP.

use std::io::{self, BufRead as _, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ClientConnection, Resumption};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

/// How the server's certificate is judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Against the CA certificates in this PEM file only.
    Ca(PathBuf),
    /// Against the system's trust store.
    System,
    /// Not at all: any certificate is accepted (handshake signatures are still checked).
    Insecure,
}

impl Verify {
    pub fn describe(&self) -> String {
        match self {
            Verify::Ca(path) => format!("ca {}", path.display()),
            Verify::System => "system".into(),
            Verify::Insecure => "insecure".into(),
        }
    }
}

/// Server names the `--tls-resume` ticket cache holds: each `--url` has its own cache, for one
/// server name, so a few suffice.
const RESUMPTION_CACHE_SERVERS: usize = 16;

/// What every TLS connection of a run shares.
#[derive(Clone, Debug)]
pub struct TlsTarget {
    pub config: Arc<ClientConfig>,
    /// SNI and the name the certificate must carry: the URL's host. An IP address is checked
    /// against the certificate's IP addresses and sends no SNI (RFC 6066 §3).
    pub server_name: ServerName<'static>,
    pub verify: Verify,
    pub alpn: &'static str,
    /// Whether clients resume earlier sessions (`--tls-resume`).
    pub resume: bool,
}

impl TlsTarget {
    /// `host` is the URL's host without brackets; `alpn` the one protocol offered.
    pub fn new(
        host: &str,
        verify: Verify,
        alpn: &'static str,
        resume: bool,
    ) -> anyhow::Result<TlsTarget> {
        let server_name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string())
                .with_context(|| format!("{host:?} is not a valid TLS server name"))?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let mut config = match &verify {
            Verify::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
            Verify::Ca(path) => builder
                .with_root_certificates(ca_file(path)?)
                .with_no_client_auth(),
            Verify::System => builder
                .with_root_certificates(system_roots()?)
                .with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        // By default every connection makes a full handshake, as that many distinct clients
        // would. With `resume`, the whole run shares one ticket cache, as a browser reloading a
        // page does: each connection resumes with a ticket an earlier one was given.
        config.resumption = if resume {
            Resumption::in_memory_sessions(RESUMPTION_CACHE_SERVERS)
        } else {
            Resumption::disabled()
        };
        Ok(TlsTarget {
            config: Arc::new(config),
            server_name,
            verify,
            alpn,
            resume,
        })
    }

    pub fn session(&self) -> anyhow::Result<ClientConnection> {
        let mut session = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .context("starting a TLS session")?;
        // What is queued is moved out at once (`seal`), so no limit is needed, and a large
        // publish batch must not be refused half written.
        session.set_buffer_limit(None);
        Ok(session)
    }
}

/// The CA certificates of a PEM file (other PEM sections, such as keys, are skipped).
fn ca_file(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).with_context(|| format!("--ca {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("--ca {}: bad PEM", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("--ca {}: not a usable CA certificate", path.display()))?;
    }
    if roots.is_empty() {
        bail!("--ca {}: no CERTIFICATE in the file", path.display());
    }
    Ok(roots)
}

fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(String::new, |e| format!(" ({e})"));
        bail!(
            "no system CA certificates found{why}: pass --ca FILE with the broker's CA, or \
             --insecure against a test broker"
        );
    }
    Ok(roots)
}

/// `--insecure`: any certificate chain and name are accepted. The handshake signatures are
/// still verified, with the provider's algorithms, so the session keys are the server's.
#[derive(Debug)]
struct AcceptAnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Encrypts `plain` and appends the records to `out`.
pub fn seal(session: &mut ClientConnection, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    session.writer().write_all(plain)?;
    pull(session, out)
}

/// Appends whatever the session has to send (handshake messages, records, alerts) to `out`.
pub fn pull(session: &mut ClientConnection, out: &mut Vec<u8>) -> io::Result<()> {
    while session.wants_write() {
        session.write_tls(out)?;
    }
    Ok(())
}

/// Feeds ciphertext to the session and appends the plaintext it yields to `plain`, never
/// beyond `plain`'s capacity. Returns the ciphertext bytes consumed and the plaintext bytes
/// appended. Ciphertext is fed only while the session holds no undelivered plaintext, so when
/// `plain` is full the rest stays with the caller for the next call.
pub fn open(
    session: &mut ClientConnection,
    cipher: &[u8],
    plain: &mut Vec<u8>,
) -> Result<(usize, usize), rustls::Error> {
    let before = plain.len();
    let mut rest = cipher;
    loop {
        if !deliver(session, plain) || rest.is_empty() {
            break;
        }
        // A slice is never "would block"; the only error is the session's own buffer being
        // full, which `deliver` having emptied it rules out.
        let n = session
            .read_tls(&mut rest)
            .map_err(|e| rustls::Error::General(format!("feeding the TLS session: {e}")))?;
        if n == 0 {
            // After the peer's close_notify nothing more is taken: drop the rest.
            rest = &[];
        }
        session.process_new_packets()?;
    }
    Ok((cipher.len() - rest.len(), plain.len() - before))
}

/// Moves the session's plaintext into `plain`'s spare capacity; true if none is left behind.
fn deliver(session: &mut ClientConnection, plain: &mut Vec<u8>) -> bool {
    loop {
        let mut reader = session.reader();
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            // Nothing yet (WouldBlock), or a TCP end without close_notify: the caller sees
            // the socket's end of stream itself.
            Err(_) => return true,
        };
        if chunk.is_empty() {
            return true;
        }
        let room = plain.capacity() - plain.len();
        if room == 0 {
            return false;
        }
        let n = chunk.len().min(room);
        plain.extend_from_slice(&chunk[..n]);
        reader.consume(n);
    }
}

/// What a session agreed on, for the report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Negotiated {
    pub protocol: String,
    pub cipher_suite: String,
    /// The protocol the server selected by ALPN; `None` if it ignored ALPN.
    pub alpn: Option<String>,
}

/// Whether a finished handshake resumed an earlier session.
pub fn resumed(session: &ClientConnection) -> bool {
    session.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

pub fn negotiated(session: &ClientConnection) -> Negotiated {
    let text = |v: Option<String>| v.unwrap_or_else(|| "unknown".into());
    Negotiated {
        protocol: text(session.protocol_version().map(|v| format!("{v:?}"))),
        cipher_suite: text(
            session
                .negotiated_cipher_suite()
                .map(|s| format!("{:?}", s.suite())),
        ),
        alpn: session
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::ServerConnection;
    use rustls::pki_types::PrivateKeyDer;

    pub struct TestPki {
        pub ca_pem: String,
        pub chain: Vec<CertificateDer<'static>>,
        pub key: PrivateKeyDer<'static>,
    }

    /// A CA and a server certificate for `localhost` and 127.0.0.1, made now.
    pub fn test_pki() -> TestPki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fanfare-loadtest test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("server key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("server params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        TestPki {
            ca_pem: ca.pem(),
            chain: vec![cert.der().clone(), ca.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der()).expect("key DER"),
        }
    }

    fn server(pki: &TestPki) -> ServerConnection {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.chain.clone(), pki.key.clone_key())
        .unwrap();
        let mut server = ServerConnection::new(Arc::new(config)).unwrap();
        server.set_buffer_limit(None);
        server
    }

    fn ca_target(pki: &TestPki, host: &str) -> TlsTarget {
        let dir = std::env::temp_dir().join(format!("lt-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("ca-{host}.pem"));
        std::fs::write(&path, &pki.ca_pem).unwrap();
        TlsTarget::new(host, Verify::Ca(path), "mqtt", false).unwrap()
    }

    /// Moves everything one side has to send to the other, through `open` on the client
    /// side with a plaintext buffer of `room` bytes that the test empties as it goes.
    fn client_reads(
        client: &mut ClientConnection,
        wire: &mut Vec<u8>,
        received: &mut Vec<u8>,
        room: usize,
    ) -> Result<(), rustls::Error> {
        let mut plain = Vec::with_capacity(room);
        loop {
            let (used, _) = open(client, wire, &mut plain)?;
            wire.drain(..used);
            received.extend_from_slice(&plain);
            plain.clear();
            if wire.is_empty() && client.reader().fill_buf().map_or(true, |c| c.is_empty()) {
                return Ok(());
            }
        }
    }

    fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
        let mut received = Vec::new();
        for _ in 0..10 {
            let mut wire = Vec::new();
            pull(client, &mut wire).unwrap();
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut back = Vec::new();
            server.write_tls(&mut back).unwrap();
            client_reads(client, &mut back, &mut received, 64).unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                return;
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn large_plaintext_through_a_small_buffer_arrives_whole_and_in_order() {
        let pki = test_pki();
        let target = ca_target(&pki, "localhost");
        let mut client = target.session().unwrap();
        let mut server = server(&pki);
        handshake(&mut client, &mut server);
        assert_eq!(negotiated(&client).protocol, "TLSv1_3");
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        server.writer().write_all(&sent).unwrap();
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        let mut received = Vec::new();
        // 1000 bytes of room: each call stops with ciphertext and plaintext left over.
        client_reads(&mut client, &mut wire, &mut received, 1000).unwrap();
        assert_eq!(received, sent);
    }

    #[test]
    fn sealed_bytes_reach_the_server() {
        let pki = test_pki();
        let target = ca_target(&pki, "127.0.0.1");
        assert!(matches!(target.server_name, ServerName::IpAddress(_)));
        let mut client = target.session().unwrap();
        let mut server = server(&pki);
        handshake(&mut client, &mut server);
        // More than rustls's default 64 KiB buffer limit in one go.
        let sent = vec![7u8; 200_000];
        let mut wire = Vec::new();
        seal(&mut client, &sent, &mut wire).unwrap();
        let mut got = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            server.read_tls(&mut rest).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = [0u8; 8192];
            while let Ok(n) = io::Read::read(&mut server.reader(), &mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        }
        assert_eq!(got.len(), sent.len());
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused_unless_insecure() {
        let pki = test_pki();
        let other = test_pki();
        let target = ca_target(&other, "localhost");
        let mut client = target.session().unwrap();
        let mut server = server(&pki);
        let mut wire = Vec::new();
        pull(&mut client, &mut wire).unwrap();
        server.read_tls(&mut &wire[..]).unwrap();
        server.process_new_packets().unwrap();
        let mut back = Vec::new();
        server.write_tls(&mut back).unwrap();
        let err = client_reads(&mut client, &mut back, &mut Vec::new(), 64).unwrap_err();
        assert!(format!("{err}").contains("certificate"), "{err}");

        let insecure = TlsTarget::new("localhost", Verify::Insecure, "mqtt", false).unwrap();
        let mut client = insecure.session().unwrap();
        let mut server = super::tests::server(&pki);
        handshake(&mut client, &mut server);
    }

    #[test]
    fn the_wrong_name_is_refused() {
        let pki = test_pki();
        let target = ca_target(&pki, "broker.example");
        let mut client = target.session().unwrap();
        let mut server = server(&pki);
        let mut wire = Vec::new();
        pull(&mut client, &mut wire).unwrap();
        server.read_tls(&mut &wire[..]).unwrap();
        server.process_new_packets().unwrap();
        let mut back = Vec::new();
        server.write_tls(&mut back).unwrap();
        assert!(client_reads(&mut client, &mut back, &mut Vec::new(), 64).is_err());
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("lt-tls-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        assert!(TlsTarget::new("localhost", Verify::Ca(empty), "mqtt", false).is_err());
        let missing = dir.join("missing.pem");
        assert!(TlsTarget::new("localhost", Verify::Ca(missing), "mqtt", false).is_err());
        let pki = test_pki();
        let two = dir.join("two.pem");
        std::fs::write(&two, format!("{}{}", pki.ca_pem, test_pki().ca_pem)).unwrap();
        assert!(TlsTarget::new("localhost", Verify::Ca(two), "mqtt", false).is_ok());
    }
}
