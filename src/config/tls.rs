//! The `[tls]` table: certificates and keys of the mqtts and wss listeners, client
//! authentication, protocol versions, certificates chosen by SNI, kernel TLS.
//!
//! Only the settings live here; `crate::tls` reads the files and builds rustls's
//! configurations from them, at start-up and again on SIGHUP.

use std::path::PathBuf;

use super::ConfigError;

/// Whether clients of the TLS listeners present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client may present one, which must then chain to `client_ca_file`.
    Optional,
    /// Every client must present one that chains to `client_ca_file` (mutual TLS).
    Required,
}

/// A TLS protocol version the listeners accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// Whether an established TLS connection's keys go to the kernel (kTLS), so sends stay plain
/// io_uring sends of shared bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KtlsMode {
    /// When the start-up probe finds the kernel's `tls` module.
    #[default]
    Auto,
    Off,
}

/// A certificate served to clients that ask for `server_name` (SNI).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    pub server_name: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Most `[[tls.sni]]` tables: each is a certificate held in memory by every listener.
pub const SNI_CERTIFICATES_MAX: usize = 256;

/// The `[tls]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, end-entity certificate first; served when no SNI entry matches.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// The MQTT user name of a client with a certificate is its certificate's identity (its
    /// subject common name, else its first DNS name), whatever its CONNECT says.
    pub identity_as_username: bool,
    pub versions: Vec<TlsVersion>,
    pub sni: Vec<SniCertificate>,
    pub ktls: KtlsMode,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            client_auth: ClientAuth::None,
            identity_as_username: false,
            versions: vec![TlsVersion::Tls12, TlsVersion::Tls13],
            sni: Vec::new(),
            ktls: KtlsMode::Auto,
        }
    }
}

/// The `[tls]` table as the file states it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
    identity_as_username: Option<bool>,
    versions: Option<Vec<TlsVersion>>,
    sni: Option<Vec<SniCertificate>>,
    ktls: Option<KtlsMode>,
}

impl FileTls {
    pub(super) fn apply(self, tls: &mut TlsSettings) {
        tls.cert_file = self.cert_file.or(tls.cert_file.take());
        tls.key_file = self.key_file.or(tls.key_file.take());
        tls.client_ca_file = self.client_ca_file.or(tls.client_ca_file.take());
        if let Some(auth) = self.client_auth {
            tls.client_auth = auth;
        }
        if let Some(identity) = self.identity_as_username {
            tls.identity_as_username = identity;
        }
        if let Some(versions) = self.versions {
            tls.versions = versions;
        }
        if let Some(sni) = self.sni {
            tls.sni = sni;
        }
        if let Some(ktls) = self.ktls {
            tls.ktls = ktls;
        }
    }
}

impl TlsSettings {
    /// Checks what can be checked without reading the files; `enabled` when a TLS listener is
    /// on. The files themselves are read, and refused by name, when the listeners are set up.
    pub fn validate(&self, enabled: bool) -> Result<(), ConfigError> {
        if enabled && self.cert_file.is_none() {
            return Err(ConfigError::invalid(
                "tls.cert_file",
                "the mqtts and wss listeners need a certificate (--tls-cert)",
            ));
        }
        if enabled && self.key_file.is_none() {
            return Err(ConfigError::invalid(
                "tls.key_file",
                "the mqtts and wss listeners need a private key (--tls-key)",
            ));
        }
        if self.client_auth != ClientAuth::None && self.client_ca_file.is_none() {
            return Err(ConfigError::invalid(
                "tls.client_ca_file",
                "client_auth = \"optional\" or \"required\" needs the CA that client certificates chain to",
            ));
        }
        if self.identity_as_username && self.client_auth == ClientAuth::None {
            return Err(ConfigError::invalid(
                "tls.identity_as_username",
                "needs client_auth = \"optional\" or \"required\": no certificate is asked for",
            ));
        }
        if self.versions.is_empty() {
            return Err(ConfigError::invalid(
                "tls.versions",
                "must name at least one of \"1.2\" and \"1.3\"",
            ));
        }
        if self.sni.len() > SNI_CERTIFICATES_MAX {
            return Err(ConfigError::invalid(
                "tls.sni",
                &format!("at most {SNI_CERTIFICATES_MAX} [[tls.sni]] tables"),
            ));
        }
        for (index, sni) in self.sni.iter().enumerate() {
            let name = sni.server_name.trim_end_matches('.');
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .split('.')
                    .all(|label| !label.is_empty() && label.len() <= 63)
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(ConfigError::invalid(
                    "tls.sni.server_name",
                    &format!(
                        "`{}` (entry {}) is not a DNS name",
                        sni.server_name,
                        index + 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_table_parses_and_needs_a_certificate_once_a_listener_is_on() {
        let config = Config::from_toml(
            "wss = \"127.0.0.1:8443\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
             client_auth = \"optional\"\nclient_ca_file = \"ca.pem\"\nversions = [\"1.3\"]\n\
             [[tls.sni]]\nserver_name = \"scores.example\"\ncert_file = \"s.pem\"\nkey_file = \"sk.pem\"\n",
            "f.toml",
        )
        .expect("parses");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.tls.sni.len(), 1);
        assert_eq!(config.tls.versions, vec![super::TlsVersion::Tls13]);
        let config = Config::from_toml("mqtts = \"127.0.0.1:8883\"\n", "f.toml").expect("parses");
        let err = config.validate().expect_err("no certificate");
        assert!(err.message.contains("tls.cert_file"), "{}", err.message);
    }

    #[test]
    fn bad_settings_are_named() {
        for (toml, key) in [
            ("[tls]\nclient_auth = \"required\"\n", "tls.client_ca_file"),
            (
                "[tls]\nidentity_as_username = true\n",
                "tls.identity_as_username",
            ),
            ("[tls]\nversions = []\n", "tls.versions"),
            (
                "[[tls.sni]]\nserver_name = \"bad name\"\ncert_file = \"a\"\nkey_file = \"b\"\n",
                "tls.sni.server_name",
            ),
        ] {
            let config = Config::from_toml(toml, "f.toml").expect("parses");
            let err = config.validate().expect_err(toml);
            assert!(err.message.contains(key), "{}: {}", toml, err.message);
        }
        let err = Config::from_toml("[tls]\nversions = [\"1.1\"]\n", "f.toml").expect_err("1.1");
        assert!(err.message.contains("1.1"), "{}", err.message);
        let err = Config::from_toml("[tls]\nclient_auth = \"maybe\"\n", "f.toml").expect_err("x");
        assert!(err.message.contains("maybe"), "{}", err.message);
    }
}
