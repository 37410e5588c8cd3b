//! The TLS client side of a bridge (`mqtts://`, `wss://`): the rustls configuration built
//! once at start-up from the bridge's keys, and the name the remote's certificate must carry.
//!
//! The remote's certificate must chain to `ca_file`, or to the system's CA certificates
//! without it, and carry `server_name` (the URL's host by default). `insecure = true` skips
//! both checks, for tests only: start-up logs it as a warning. A client certificate is sent
//! when `cert_file` and `key_file` are set. The crypto provider is ring, as the listeners'.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::warn;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::bridge::{BridgeSettings, RemoteUrl};

/// What a bridge's TLS connections are opened with.
#[derive(Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// Why a bridge's TLS settings cannot be used; start-up stops on it.
#[derive(Debug)]
pub enum TlsSetupError {
    /// A certificate or key file unreadable or holding no PEM of its kind.
    File(&'static str, PathBuf, String),
    /// No `ca_file`, and the system has no CA certificates to use instead.
    NoSystemRoots,
    /// `server_name`, or the URL's host, is no DNS name or IP address.
    ServerName(String),
    /// rustls refused the settings (a key that does not fit the certificate, say).
    Rustls(rustls::Error),
}

impl std::fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSetupError::File(key, path, why) => {
                write!(f, "{key} {}: {why}", path.display())
            }
            TlsSetupError::NoSystemRoots => write!(
                f,
                "no CA certificates found on this system: set ca_file to the remote's CA"
            ),
            TlsSetupError::ServerName(name) => {
                write!(f, "{name:?} is not a DNS name or an IP address")
            }
            TlsSetupError::Rustls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsSetupError {}

/// The TLS client of a bridge whose URL asks for TLS.
pub fn client(settings: &BridgeSettings, remote: &RemoteUrl) -> Result<TlsClient, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Rustls)?;
    let builder = if settings.insecure {
        warn!(
            "bridge {}: insecure = true: the certificate of {} is not checked; for tests only",
            settings.name, settings.url
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        builder.with_root_certificates(roots(settings.ca_file.as_deref())?)
    };
    let config = match (&settings.cert_file, &settings.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| file_error("cert_file", cert_file, e))?;
            if chain.is_empty() {
                return Err(TlsSetupError::File(
                    "cert_file",
                    cert_file.clone(),
                    "no certificate".to_owned(),
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| file_error("key_file", key_file, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsSetupError::Rustls)?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = settings.server_name.as_deref().unwrap_or(&remote.host);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| TlsSetupError::ServerName(name.to_owned()))?;
    Ok(TlsClient {
        config: Arc::new(config),
        server_name,
    })
}

fn file_error(key: &'static str, path: &Path, e: rustls_pki_types::pem::Error) -> TlsSetupError {
    TlsSetupError::File(key, path.to_owned(), e.to_string())
}

/// The CA certificates of `ca_file`, else the system's.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|e| file_error("ca_file", path, e))?
            {
                let cert = cert.map_err(|e| file_error("ca_file", path, e))?;
                roots
                    .add(cert)
                    .map_err(|e| TlsSetupError::File("ca_file", path.to_owned(), e.to_string()))?;
            }
        }
        None => {
            // Certificates the system store holds but rustls cannot parse are skipped, as
            // other TLS clients of the same store do.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return match ca_file {
            Some(path) => Err(TlsSetupError::File(
                "ca_file",
                path.to_owned(),
                "no certificate".to_owned(),
            )),
            None => Err(TlsSetupError::NoSystemRoots),
        };
    }
    Ok(roots)
}

/// `insecure = true`: any certificate for any name. The handshake's signatures are still
/// checked, so the peer holds the key of the certificate it sent, whatever that is.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
