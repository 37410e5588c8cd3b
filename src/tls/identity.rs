//! The name a client certificate gives its holder: its subject's common name, else its first DNS
//! name. With `identity_as_username` it stands for the MQTT user name of the connection.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Longest identity taken from a certificate: a user name, not a document.
const IDENTITY_BYTES_MAX: usize = 256;

pub fn certificate_identity(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).ok()?;
    let common_name = parsed
        .subject()
        .iter_common_name()
        .find_map(|name| name.as_str().ok().map(str::to_owned));
    let dns_name = || {
        let alternatives = parsed.subject_alternative_name().ok()??;
        alternatives
            .value
            .general_names
            .iter()
            .find_map(|name| match name {
                GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
    };
    common_name
        .or_else(dns_name)
        .filter(|name| !name.is_empty() && name.len() <= IDENTITY_BYTES_MAX)
}
