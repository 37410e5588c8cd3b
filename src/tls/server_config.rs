//! `[tls]` read from its files into rustls server configurations.
//!
//! Certificates and keys are read with the PEM API of `rustls-pki-types`; a key must match its
//! certificate. The certificate of `cert_file` is served unless the client's SNI names one of
//! `[[tls.sni]]`. The two listener kinds differ only in ALPN: `mqtt` on mqtts, `http/1.1` on
//! wss (which also serves the files over https). Session resumption: TLS 1.3 tickets sealed
//! with a key that changes every few hours, and TLS 1.2 sessions in a bounded cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ClientAuth, TlsSettings, TlsVersion};

/// TLS 1.2 sessions the resumption cache of a listener holds (each a few hundred bytes).
const SESSION_CACHE_ENTRIES_MAX: usize = 4096;

/// Why `[tls]` could not be set up: the key and the file it names, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSetupError(pub String);

impl std::fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsSetupError {}

fn refused(key: &str, path: &Path, why: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError(format!("{key} `{}`: {why}", path.display()))
}

/// The rustls configurations of the two TLS listener kinds.
#[derive(Debug)]
pub struct TlsServers {
    pub mqtts: Arc<ServerConfig>,
    pub wss: Arc<ServerConfig>,
}

impl TlsServers {
    /// Reads every file `settings` names and builds the configurations. `kernel_tls`: the
    /// traffic keys of established connections may be handed to the kernel, so rustls must
    /// let them out (`enable_secret_extraction`); otherwise they never leave it.
    pub fn load(settings: &TlsSettings, kernel_tls: bool) -> Result<TlsServers, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
            return Err(TlsSetupError(
                "tls.cert_file and tls.key_file are needed by the TLS listeners".to_owned(),
            ));
        };
        let default = certified_key(cert_file, key_file, "tls", &provider)?;
        let mut by_name = HashMap::new();
        for sni in &settings.sni {
            let key = certified_key(&sni.cert_file, &sni.key_file, "tls.sni", &provider)?;
            by_name.insert(
                sni.server_name.trim_end_matches('.').to_ascii_lowercase(),
                key,
            );
        }
        let resolver = Arc::new(CertResolver { default, by_name });
        let versions: Vec<&'static rustls::SupportedProtocolVersion> = settings
            .versions
            .iter()
            .map(|version| match version {
                TlsVersion::Tls12 => &rustls::version::TLS12,
                TlsVersion::Tls13 => &rustls::version::TLS13,
            })
            .collect();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(|e| TlsSetupError(format!("tls.versions: {e}")))?;
        let builder = match (&settings.client_ca_file, settings.client_auth) {
            (Some(ca_file), ClientAuth::Optional | ClientAuth::Required) => {
                let roots = client_roots(ca_file)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
                let verifier = match settings.client_auth {
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| refused("tls.client_ca_file", ca_file, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver);
        config.session_storage =
            rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES_MAX);
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| TlsSetupError(format!("cannot make a session ticket key: {e}")))?;
        config.enable_secret_extraction = kernel_tls;
        let mut wss = config.clone();
        config.alpn_protocols = vec![b"mqtt".to_vec()];
        wss.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsServers {
            mqtts: Arc::new(config),
            wss: Arc::new(wss),
        })
    }
}

/// A certificate chain and its private key, checked to belong together.
fn certified_key(
    cert_file: &Path,
    key_file: &Path,
    table: &str,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let cert_key = format!("{table}.cert_file");
    let key_key = format!("{table}.key_file");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| refused(&cert_key, cert_file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| refused(&cert_key, cert_file, e))?;
    if chain.is_empty() {
        return Err(refused(&cert_key, cert_file, "no PEM certificate in it"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| refused(&key_key, key_file, e))?;
    // Checking that the key matches parses the certificate: a certificate that does not parse
    // is the certificate file's fault, anything else the key file's.
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InvalidCertificate(_) => refused(&cert_key, cert_file, e),
        _ => refused(&key_key, key_file, e),
    })?;
    Ok(Arc::new(certified))
}

fn client_roots(ca_file: &Path) -> Result<Arc<RootCertStore>, TlsSetupError> {
    let key = "tls.client_ca_file";
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| refused(key, ca_file, e))? {
        let cert = cert.map_err(|e| refused(key, ca_file, e))?;
        roots.add(cert).map_err(|e| refused(key, ca_file, e))?;
    }
    if roots.is_empty() {
        return Err(refused(key, ca_file, "no PEM certificate in it"));
    }
    Ok(Arc::new(roots))
}

/// The certificate of the name a client asks for (SNI), else the default one.
#[derive(Debug)]
struct CertResolver {
    default: Arc<CertifiedKey>,
    /// Lower-case DNS names without a trailing dot.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = client_hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()));
        Some(Arc::clone(named.unwrap_or(&self.default)))
    }
}

/// The configurations every shard builds new TLS connections from; SIGHUP replaces them, and
/// connections already established carry on with the ones they started with.
#[derive(Debug)]
pub struct SharedTls {
    current: RwLock<Arc<TlsServers>>,
}

impl SharedTls {
    pub fn new(servers: TlsServers) -> SharedTls {
        SharedTls {
            current: RwLock::new(Arc::new(servers)),
        }
    }

    /// The current configurations; a lock taken per accepted TLS connection, never on the
    /// data path.
    pub fn current(&self) -> Arc<TlsServers> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            // A writer panicked mid-replace: what it left is a whole Arc either way.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace(&self, servers: TlsServers) {
        let servers = Arc::new(servers);
        match self.current.write() {
            Ok(mut current) => *current = servers,
            Err(poisoned) => *poisoned.into_inner() = servers,
        }
    }
}
