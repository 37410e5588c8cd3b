//! JSON Web Tokens (RFC 7519) carried in the CONNECT password, the usual way a browser proves
//! who it is: the page's backend signs a short-lived token, the page hands it to the broker.
//!
//! A token is the compact JWS serialization (RFC 7515 §7.1): `header.payload.signature`, each
//! part base64url without padding. [`verify`] checks, in this order and before trusting any of
//! the payload: the size (`token_bytes_max`, before any decoding), the shape, the header's
//! `alg` against the keys (never `none`, never an algorithm of another key type), the key by
//! `kid`, the signature, and only then the claims: `exp`, `nbf`, `iss`, `aud`, the user claim
//! and the optional ACL claim.
//!
//! Algorithms (RFC 7518 §3, RFC 8037): HS256/384/512, RS256/384/512, PS256, ES256/384, EdDSA
//! (Ed25519). Each key has one type, fixed when it is loaded, and each algorithm needs one key
//! type: an HMAC token is never checked against an RSA or EC public key, whose bytes are
//! public (the "algorithm confusion" attack), and `alg: none` names no algorithm at all.
//!
//! # Why the signatures are checked with `ring` directly
//! `jsonwebtoken` was the natural choice, but only its 9.x line sits on `ring`; from 10.0 on
//! (12.0 now) it offers `aws-lc-rs` (needs CMake to build) or the RustCrypto crates, whose
//! `rsa` crate carries RUSTSEC-2023-0071 (Marvin, no fixed release), or a process-wide custom
//! provider that would still be ours to write; and its claim checks read the system clock,
//! where this module takes the time as a parameter. `ring` 0.17 is already in the broker
//! (rustls's provider), is maintained, verifies all ten algorithms with constant-time code and
//! has no RSA private-key operation on this path. What remains is small and kept here, where
//! the limits and refusals are ours: splitting, base64url (`base64`), two JSON objects
//! (`serde_json`), SPKI public keys (`rustls-pki-types` PEM, `x509-parser`), and JWKS keys.
//!
//! Like the rest of `auth/`, verification is clock-free and does no I/O; only
//! [`JwtKeys::load`] reads files, once at start-up.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, signature};
use rustls_pki_types::pem::{PemObject, SectionKind};
use serde::Deserialize;
use serde_json::{Map, Value};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::Zeroizing;

use crate::protocol::mqtt::topic::is_valid_topic_filter;

/// Default of [`JwtSettings::token_bytes_max`]: a token with a handful of claims and an RSA-4096
/// signature is about 1.5 KiB; 8 KiB leaves room for a generous ACL claim.
pub const TOKEN_BYTES_MAX_DEFAULT: usize = 8192;

/// Default of [`JwtSettings::leeway_s`]: the clock skew tolerated between the token's issuer and
/// the broker, on `exp` and `nbf`.
pub const LEEWAY_S_DEFAULT: u64 = 30;

/// Keys one [`JwtKeys`] holds at most, all files together. A token without `kid` is tried
/// against every key of its type, so this bounds the signature checks one CONNECT can cost.
pub const KEYS_MAX: usize = 64;

/// Largest key file read (secret, PEM or JWKS): limits the allocation a misnamed file (a log,
/// a disk image) would cause at start-up. A JWKS of `KEYS_MAX` RSA-4096 keys is about 50 KiB.
pub const KEY_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Shortest HMAC secret accepted: RFC 7518 §3.2 wants a key at least as long as the hash
/// output, 32 bytes for HS256 (HS384 and HS512 tokens need 48 and 64 bytes, checked per token).
pub const HMAC_SECRET_BYTES_MIN: usize = 32;

/// How tokens are checked, beyond their signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The claim that names the user, a non-empty string (`sub` by default).
    pub user_claim: String,
    /// The claim that carries the client's ACL (`{"sub": [filters], "pub": [filters]}`), if
    /// tokens carry one; `None` ignores any such claim.
    pub acl_claim: Option<String>,
    /// When set, `iss` must be present and equal to it.
    pub issuer: Option<String>,
    /// When set, `aud` (a string or an array of strings) must be present and contain it. When
    /// unset, a token with an `aud` is refused: it was meant for someone else (RFC 7519 §4.1.3).
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Longest token accepted, in bytes; longer ones are refused before any decoding.
    pub token_bytes_max: usize,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            user_claim: "sub".to_string(),
            acl_claim: None,
            issuer: None,
            audience: None,
            leeway_s: LEEWAY_S_DEFAULT,
            token_bytes_max: TOKEN_BYTES_MAX_DEFAULT,
        }
    }
}

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The value of the user claim.
    pub user: String,
    /// `exp`, in seconds since the epoch, if the token has one.
    pub expires_at: Option<u64>,
    /// The ACL claim, when `acl_claim` is set and the token carries it.
    pub acl: Option<TokenAcl>,
}

/// The topic filters a token allows: the whole ACL of its client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAcl {
    /// Filters the client may subscribe to (claim field `sub`).
    #[serde(rename = "sub", default)]
    pub subscribe: Vec<String>,
    /// Filters whose matching topics the client may publish to (claim field `pub`).
    #[serde(rename = "pub", default)]
    pub publish: Vec<String>,
}

/// Why a token was refused. Nothing of the token is kept, so logging one is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtRefusal {
    TooLarge,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingUserClaim,
    BadAclClaim,
}

impl JwtRefusal {
    /// One line for the log.
    pub const fn description(self) -> &'static str {
        match self {
            JwtRefusal::TooLarge => "the token is longer than token_bytes_max",
            JwtRefusal::Malformed => {
                "the token is not a compact JWS of base64url JSON, or has critical extensions"
            }
            JwtRefusal::AlgorithmNotAllowed => {
                "the token's alg is none, unknown, or not that of any key it may be checked with"
            }
            JwtRefusal::UnknownKid => "the token's kid names no loaded key",
            JwtRefusal::BadSignature => "the token's signature does not verify",
            JwtRefusal::Expired => "the token has expired (exp)",
            JwtRefusal::NotYetValid => "the token is not valid yet (nbf)",
            JwtRefusal::WrongIssuer => "the token's iss is missing or not the configured issuer",
            JwtRefusal::WrongAudience => {
                "the token's aud is missing, not the configured audience, or unexpected"
            }
            JwtRefusal::MissingUserClaim => "the token's user claim is missing or not a string",
            JwtRefusal::BadAclClaim => "the token's ACL claim is not lists of topic filters",
        }
    }
}

impl fmt::Display for JwtRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// Why the keys could not be loaded: the setting, the file it names, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtKeyError(pub String);

impl fmt::Display for JwtKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwtKeyError {}

fn key_error(setting: &str, path: &Path, why: impl fmt::Display) -> JwtKeyError {
    JwtKeyError(format!("{setting} `{}`: {why}", path.display()))
}

/// The algorithms a token may name (RFC 7518 §3.1, RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Hs256,
    Hs384,
    Hs512,
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Es256,
    Es384,
    EdDsa,
}

impl Algorithm {
    /// `None` for `none` and every name not listed: such a token is refused, not guessed at.
    fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "HS256" => Algorithm::Hs256,
            "HS384" => Algorithm::Hs384,
            "HS512" => Algorithm::Hs512,
            "RS256" => Algorithm::Rs256,
            "RS384" => Algorithm::Rs384,
            "RS512" => Algorithm::Rs512,
            "PS256" => Algorithm::Ps256,
            "ES256" => Algorithm::Es256,
            "ES384" => Algorithm::Es384,
            "EdDSA" => Algorithm::EdDsa,
            _ => return None,
        })
    }
}

/// A public key or secret, its type fixed when it was loaded.
enum KeyMaterial {
    /// One ring key per hash, made once from the secret (boxed: three hash states).
    Hmac(Box<HmacKeys>),
    /// Modulus and exponent, big-endian without leading zeros (as ring takes them).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed points (`04 || x || y`).
    EcP256(Vec<u8>),
    EcP384(Vec<u8>),
    Ed25519(Vec<u8>),
}

struct HmacKeys {
    sha256: hmac::Key,
    sha384: hmac::Key,
    sha512: hmac::Key,
    /// For the per-hash minimum length (RFC 7518 §3.2).
    secret_bytes: usize,
}

impl KeyMaterial {
    fn kind(&self) -> &'static str {
        match self {
            KeyMaterial::Hmac(_) => "HMAC secret",
            KeyMaterial::Rsa { .. } => "RSA",
            KeyMaterial::EcP256(_) => "EC P-256",
            KeyMaterial::EcP384(_) => "EC P-384",
            KeyMaterial::Ed25519(_) => "Ed25519",
        }
    }

    fn hmac(secret: &[u8]) -> KeyMaterial {
        KeyMaterial::Hmac(Box::new(HmacKeys {
            sha256: hmac::Key::new(hmac::HMAC_SHA256, secret),
            sha384: hmac::Key::new(hmac::HMAC_SHA384, secret),
            sha512: hmac::Key::new(hmac::HMAC_SHA512, secret),
            secret_bytes: secret.len(),
        }))
    }

    /// Whether a token signed with `alg` may be checked with this key: the one place that
    /// keeps algorithms and key types apart.
    fn accepts(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            KeyMaterial::Hmac(keys) => match alg {
                Hs256 => keys.secret_bytes >= 32,
                Hs384 => keys.secret_bytes >= 48,
                Hs512 => keys.secret_bytes >= 64,
                _ => false,
            },
            KeyMaterial::Rsa { .. } => matches!(alg, Rs256 | Rs384 | Rs512 | Ps256),
            KeyMaterial::EcP256(_) => alg == Es256,
            KeyMaterial::EcP384(_) => alg == Es384,
            KeyMaterial::Ed25519(_) => alg == EdDsa,
        }
    }

    /// Checks `signature` over `signed`. Callers have checked [`KeyMaterial::accepts`].
    fn verifies(&self, alg: Algorithm, signed: &[u8], signature: &[u8]) -> bool {
        use Algorithm::*;
        let checked = match (self, alg) {
            (KeyMaterial::Hmac(keys), Hs256) => hmac::verify(&keys.sha256, signed, signature),
            (KeyMaterial::Hmac(keys), Hs384) => hmac::verify(&keys.sha384, signed, signature),
            (KeyMaterial::Hmac(keys), Hs512) => hmac::verify(&keys.sha512, signed, signature),
            (KeyMaterial::Rsa { n, e }, _) => {
                let params = match alg {
                    Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    _ => return false,
                };
                signature::RsaPublicKeyComponents { n, e }.verify(params, signed, signature)
            }
            (KeyMaterial::EcP256(point), Es256) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, signature)
            }
            (KeyMaterial::EcP384(point), Es384) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(signed, signature)
            }
            (KeyMaterial::Ed25519(public), EdDsa) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, public)
                    .verify(signed, signature)
            }
            _ => return false,
        };
        checked.is_ok()
    }
}

/// One key: its material, and what a JWKS said of it.
struct Key {
    /// The JWKS `kid`; keys from the secret and PEM files have none.
    kid: Option<String>,
    /// The JWKS `alg`, when the key is pinned to one algorithm.
    alg: Option<Algorithm>,
    material: KeyMaterial,
}

impl Key {
    /// A key from the secret or a PEM file: no `kid`, any algorithm of its type.
    fn unnamed(material: KeyMaterial) -> Key {
        Key {
            kid: None,
            alg: None,
            material,
        }
    }

    fn accepts(&self, alg: Algorithm) -> bool {
        self.alg.is_none_or(|pinned| pinned == alg) && self.material.accepts(alg)
    }
}

/// The keys tokens are checked with: an HMAC secret, PEM public keys and JWKS keys, together.
pub struct JwtKeys {
    keys: Vec<Key>,
}

impl fmt::Debug for JwtKeys {
    /// Types and kids only: never a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for key in &self.keys {
            match &key.kid {
                Some(kid) => list.entry(&format_args!("{} kid={kid:?}", key.material.kind())),
                None => list.entry(&format_args!("{}", key.material.kind())),
            };
        }
        list.finish()
    }
}

impl JwtKeys {
    /// Reads the keys: `secret_file` (the HMAC secret is the file's raw bytes, one trailing
    /// `\n` or `\r\n` removed, at least [`HMAC_SECRET_BYTES_MIN`] bytes), `public_key_files`
    /// (PEM `PUBLIC KEY` sections: RSA of 2048 to 8192 bits, EC P-256 or P-384, Ed25519), and
    /// `jwks_file` (a JWK Set, RFC 7517 §5; keys for encryption or of other types are skipped,
    /// private keys refused). The error names the setting and the file.
    pub fn load(
        secret_file: Option<&Path>,
        public_key_files: &[PathBuf],
        jwks_file: Option<&Path>,
    ) -> Result<JwtKeys, JwtKeyError> {
        let mut keys = JwtKeys { keys: Vec::new() };
        if let Some(path) = secret_file {
            let bytes = read_key_file("jwt_secret_file", path)?;
            keys.add_secret(&bytes, path)?;
        }
        for path in public_key_files {
            let bytes = read_key_file("jwt_public_key_files", path)?;
            keys.add_pem(&bytes, path)?;
        }
        if let Some(path) = jwks_file {
            let bytes = read_key_file("jwks_file", path)?;
            keys.add_jwks(&bytes, path)?;
        }
        Ok(keys)
    }

    /// Whether no key was loaded: JWT authentication is then off.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn push(&mut self, key: Key, setting: &str, path: &Path) -> Result<(), JwtKeyError> {
        if self.keys.len() >= KEYS_MAX {
            return Err(key_error(
                setting,
                path,
                format!("more than {KEYS_MAX} keys in all"),
            ));
        }
        self.keys.push(key);
        Ok(())
    }

    fn add_secret(&mut self, bytes: &[u8], path: &Path) -> Result<(), JwtKeyError> {
        // Editors and `echo` end a file with a newline the secret's author did not mean.
        let secret = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
        if secret.len() < HMAC_SECRET_BYTES_MIN {
            let why = format!("the secret is shorter than {HMAC_SECRET_BYTES_MIN} bytes");
            return Err(key_error("jwt_secret_file", path, why));
        }
        let key = Key::unnamed(KeyMaterial::hmac(secret));
        self.push(key, "jwt_secret_file", path)
    }

    fn add_pem(&mut self, bytes: &[u8], path: &Path) -> Result<(), JwtKeyError> {
        const SETTING: &str = "jwt_public_key_files";
        let mut found = 0;
        for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
            let (kind, der) = section.map_err(|e| key_error(SETTING, path, e))?;
            match kind {
                SectionKind::PublicKey => {
                    let material = spki_material(&der).map_err(|e| key_error(SETTING, path, e))?;
                    self.push(Key::unnamed(material), SETTING, path)?;
                    found += 1;
                }
                SectionKind::PrivateKey
                | SectionKind::RsaPrivateKey
                | SectionKind::EcPrivateKey => {
                    let why = "holds a private key; give the broker only the public key";
                    return Err(key_error(SETTING, path, why));
                }
                _ => {}
            }
        }
        if found == 0 {
            return Err(key_error(SETTING, path, "no PEM `PUBLIC KEY` section"));
        }
        Ok(())
    }

    fn add_jwks(&mut self, bytes: &[u8], path: &Path) -> Result<(), JwtKeyError> {
        const SETTING: &str = "jwks_file";
        let set: JwkSet = serde_json::from_slice(bytes)
            .map_err(|e| key_error(SETTING, path, format!("not a JWK Set: {e}")))?;
        let mut found = 0;
        for (index, jwk) in set.keys.iter().enumerate() {
            let name = match &jwk.kid {
                Some(kid) => format!("key {index} (kid {kid:?})"),
                None => format!("key {index}"),
            };
            if jwk.d.is_some() {
                let why = format!("{name} is a private key; publish only public keys");
                return Err(key_error(SETTING, path, why));
            }
            if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            match jwk_key(jwk) {
                Ok(Some(key)) => {
                    self.push(key, SETTING, path)?;
                    found += 1;
                }
                // A type or curve this broker does not verify: other keys of the set may serve.
                Ok(None) => log::warn!("{SETTING} `{}`: {name} skipped", path.display()),
                Err(why) => return Err(key_error(SETTING, path, format!("{name}: {why}"))),
            }
        }
        if found == 0 {
            return Err(key_error(
                SETTING,
                path,
                "no signature key this broker can use",
            ));
        }
        Ok(())
    }

    /// Checks the signature with the keys the header allows; see [`verify`].
    fn check_signature(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<(), JwtRefusal> {
        let mut named = false;
        let mut tried = false;
        for key in &self.keys {
            if kid.is_some() {
                if key.kid.as_deref() != kid {
                    continue;
                }
                named = true;
            }
            if !key.accepts(alg) {
                continue;
            }
            tried = true;
            if key.material.verifies(alg, signed, signature) {
                return Ok(());
            }
        }
        if kid.is_some() && !named {
            Err(JwtRefusal::UnknownKid)
        } else if !tried {
            Err(JwtRefusal::AlgorithmNotAllowed)
        } else {
            Err(JwtRefusal::BadSignature)
        }
    }
}

fn read_key_file(setting: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>, JwtKeyError> {
    let file = File::open(path).map_err(|e| key_error(setting, path, e))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| key_error(setting, path, e))?;
    if bytes.len() as u64 > KEY_FILE_BYTES_MAX {
        let why = format!("larger than {KEY_FILE_BYTES_MAX} bytes");
        return Err(key_error(setting, path, why));
    }
    Ok(bytes)
}

/// The key of a DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7; RFC 8410 for Ed25519).
fn spki_material(der: &[u8]) -> Result<KeyMaterial, String> {
    let (rest, spki) = SubjectPublicKeyInfo::from_der(der)
        .map_err(|e| format!("not a SubjectPublicKeyInfo: {e}"))?;
    if !rest.is_empty() {
        return Err("bytes after the SubjectPublicKeyInfo".to_string());
    }
    let oid = &spki.algorithm.algorithm;
    let bits: &[u8] = &spki.subject_public_key.data;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa_material(rsa.modulus, rsa.exponent),
            _ => Err("a malformed RSA public key".to_string()),
        }
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(curve) if curve == OID_EC_P256 => ec_material(bits, 32),
            Some(curve) if curve == OID_NIST_EC_P384 => ec_material(bits, 48),
            _ => Err("an EC key on a curve other than P-256 and P-384".to_string()),
        }
    } else if *oid == OID_SIG_ED25519 {
        ed25519_material(bits)
    } else {
        Err(format!(
            "a public key of type {oid}, not RSA, EC or Ed25519"
        ))
    }
}

fn rsa_material(n: &[u8], e: &[u8]) -> Result<KeyMaterial, String> {
    let strip = |bytes: &[u8]| {
        let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        bytes[first..].to_vec()
    };
    let (n, e) = (strip(n), strip(e));
    // ring verifies moduli of 2048 to 8192 bits; saying so now beats refusing every token.
    let n_bits = (n.len() * 8).saturating_sub(n.first().map_or(8, |b| b.leading_zeros() as usize));
    if !(2048..=8192).contains(&n_bits) {
        return Err(format!("an RSA modulus of {n_bits} bits, not 2048 to 8192"));
    }
    if e.is_empty() {
        return Err("an RSA public exponent of zero".to_string());
    }
    Ok(KeyMaterial::Rsa { n, e })
}

/// An uncompressed point on a curve whose coordinates are `coordinate_bytes` long.
fn ec_material(point: &[u8], coordinate_bytes: usize) -> Result<KeyMaterial, String> {
    if point.len() != 1 + 2 * coordinate_bytes || point[0] != 0x04 {
        return Err("an EC public key that is not an uncompressed point".to_string());
    }
    Ok(match coordinate_bytes {
        32 => KeyMaterial::EcP256(point.to_vec()),
        _ => KeyMaterial::EcP384(point.to_vec()),
    })
}

fn ed25519_material(public: &[u8]) -> Result<KeyMaterial, String> {
    if public.len() != 32 {
        return Err("an Ed25519 public key that is not 32 bytes".to_string());
    }
    Ok(KeyMaterial::Ed25519(public.to_vec()))
}

/// A JWK Set (RFC 7517 §5); other members are ignored.
#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

/// The JWK members used here (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2); others are ignored.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    /// The secret of an `oct` key.
    k: Option<String>,
    /// Present only in private keys, which have no place in a verifier's files.
    d: Option<serde::de::IgnoredAny>,
}

/// The key of a JWK; `Ok(None)` for a type or curve this module does not verify.
fn jwk_key(jwk: &Jwk) -> Result<Option<Key>, String> {
    let member = |value: &Option<String>, name: &str| -> Result<Vec<u8>, String> {
        let text = value.as_deref().ok_or_else(|| format!("no `{name}`"))?;
        URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| format!("`{name}` is not base64url"))
    };
    let material = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => rsa_material(&member(&jwk.n, "n")?, &member(&jwk.e, "e")?)?,
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let coordinate_bytes = if crv == "P-256" { 32 } else { 48 };
            let (x, y) = (member(&jwk.x, "x")?, member(&jwk.y, "y")?);
            if x.len() != coordinate_bytes || y.len() != coordinate_bytes {
                return Err(format!("`x` and `y` are not {coordinate_bytes} bytes each"));
            }
            let point = [&[0x04][..], &x, &y].concat();
            ec_material(&point, coordinate_bytes)?
        }
        ("OKP", Some("Ed25519")) => ed25519_material(&member(&jwk.x, "x")?)?,
        ("oct", _) => {
            let secret = Zeroizing::new(member(&jwk.k, "k")?);
            if secret.len() < HMAC_SECRET_BYTES_MIN {
                return Err(format!("`k` is shorter than {HMAC_SECRET_BYTES_MIN} bytes"));
            }
            KeyMaterial::hmac(&secret)
        }
        _ => return Ok(None),
    };
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => match Algorithm::from_name(name) {
            Some(alg) if material.accepts(alg) => Some(alg),
            // Pinned to an algorithm this module does not verify, or not of its type.
            _ => return Ok(None),
        },
    };
    Ok(Some(Key {
        kid: jwk.kid.clone(),
        alg,
        material,
    }))
}

/// The JOSE header members used here; others (`typ`, `cty`, `jku`, `jwk`, `x5u`…) are ignored:
/// keys come from the broker's files only, never from the token.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Extensions the token's issuer says must be understood (RFC 7515 §4.1.11); this module
    /// understands none, so any is a refusal.
    crit: Option<serde::de::IgnoredAny>,
}

/// Cheap shape test: three base64url segments separated by dots (no decoding). The signature
/// segment may be empty, so that an unsigned (`alg: none`) token is refused as a token rather
/// than tried as a password.
pub fn looks_like_jwt(password: &[u8]) -> bool {
    let Some([header, payload, signature]) = segments(password) else {
        return false;
    };
    let base64url = |segment: &[u8]| {
        segment
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !header.is_empty()
        && !payload.is_empty()
        && base64url(header)
        && base64url(payload)
        && base64url(signature)
}

/// The three dot-separated segments of a compact JWS, or `None` for any other count.
fn segments(token: &[u8]) -> Option<[&[u8]; 3]> {
    let mut segments = token.split(|&b| b == b'.');
    match (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        (Some(header), Some(payload), Some(signature), None) => Some([header, payload, signature]),
        _ => None,
    }
}

/// Verifies `token` with `keys` at `now_unix_s`, and returns what it says of its bearer.
///
/// A token with a `kid` is checked only with the keys of that `kid` (`UnknownKid` if none);
/// one without is tried with every key of its algorithm's type, at most [`KEYS_MAX`]. The
/// payload is parsed only once the signature holds. Cost: one base64 pass over at most
/// `token_bytes_max` bytes, two small JSON parses, and the signature checks.
pub fn verify(
    token: &[u8],
    keys: &JwtKeys,
    settings: &JwtSettings,
    now_unix_s: u64,
) -> Result<Claims, JwtRefusal> {
    if token.len() > settings.token_bytes_max {
        return Err(JwtRefusal::TooLarge);
    }
    let [header_b64, payload_b64, signature_b64] = segments(token).ok_or(JwtRefusal::Malformed)?;
    let header: Header =
        serde_json::from_slice(&base64url(header_b64)?).map_err(|_| JwtRefusal::Malformed)?;
    if header.crit.is_some() {
        return Err(JwtRefusal::Malformed);
    }
    let alg = Algorithm::from_name(&header.alg).ok_or(JwtRefusal::AlgorithmNotAllowed)?;
    let signature = base64url(signature_b64)?;
    // The signing input is the first two segments as sent, dot included (RFC 7515 §5.2).
    let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
    keys.check_signature(alg, header.kid.as_deref(), signed, &signature)?;

    let payload: Map<String, Value> =
        serde_json::from_slice(&base64url(payload_b64)?).map_err(|_| JwtRefusal::Malformed)?;
    check_claims(&payload, settings, now_unix_s)
}

fn base64url(segment: &[u8]) -> Result<Vec<u8>, JwtRefusal> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtRefusal::Malformed)
}

/// The registered claims, then the user and ACL claims, of a token whose signature holds.
fn check_claims(
    payload: &Map<String, Value>,
    settings: &JwtSettings,
    now_unix_s: u64,
) -> Result<Claims, JwtRefusal> {
    // RFC 7519 §4.1.4: valid while now < exp; rounding a fractional exp down is the safe side.
    let expires_at = numeric_date(payload.get("exp"), f64::floor)?;
    if expires_at.is_some_and(|exp| now_unix_s >= exp.saturating_add(settings.leeway_s)) {
        return Err(JwtRefusal::Expired);
    }
    // §4.1.5: valid from nbf on; a fractional nbf rounds up.
    let not_before = numeric_date(payload.get("nbf"), f64::ceil)?;
    if not_before.is_some_and(|nbf| now_unix_s.saturating_add(settings.leeway_s) < nbf) {
        return Err(JwtRefusal::NotYetValid);
    }
    if let Some(issuer) = &settings.issuer
        && payload.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(JwtRefusal::WrongIssuer);
    }
    check_audience(payload.get("aud"), settings.audience.as_deref())?;

    let user = match payload.get(&settings.user_claim) {
        Some(Value::String(user)) if !user.is_empty() => user.clone(),
        _ => return Err(JwtRefusal::MissingUserClaim),
    };
    let acl = match settings
        .acl_claim
        .as_ref()
        .and_then(|name| payload.get(name))
    {
        None => None,
        Some(claim) => Some(token_acl(claim)?),
    };
    Ok(Claims {
        user,
        expires_at,
        acl,
    })
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, an integer or not.
fn numeric_date(value: Option<&Value>, round: fn(f64) -> f64) -> Result<Option<u64>, JwtRefusal> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(JwtRefusal::Malformed);
    };
    if let Some(seconds) = number.as_u64() {
        return Ok(Some(seconds));
    }
    match number.as_f64().map(round) {
        // `as` saturates at u64::MAX, far past any clock.
        Some(seconds) if seconds.is_finite() && seconds >= 0.0 => Ok(Some(seconds as u64)),
        _ => Err(JwtRefusal::Malformed),
    }
}

/// RFC 7519 §4.1.3: a token whose `aud` is present must name us, so one with an `aud` is
/// refused when no audience is configured.
fn check_audience(aud: Option<&Value>, audience: Option<&str>) -> Result<(), JwtRefusal> {
    match (aud, audience) {
        (None, None) => Ok(()),
        (Some(Value::String(aud)), Some(ours)) if aud == ours => Ok(()),
        (Some(Value::Array(auds)), Some(ours)) if auds.iter().any(|a| a.as_str() == Some(ours)) => {
            Ok(())
        }
        _ => Err(JwtRefusal::WrongAudience),
    }
}

/// The ACL claim: an object of two optional lists of valid topic filters, nothing else.
fn token_acl(claim: &Value) -> Result<TokenAcl, JwtRefusal> {
    let acl = TokenAcl::deserialize(claim).map_err(|_| JwtRefusal::BadAclClaim)?;
    let mut filters = acl.subscribe.iter().chain(&acl.publish);
    if !filters.all(|filter| is_valid_topic_filter(filter)) {
        return Err(JwtRefusal::BadAclClaim);
    }
    Ok(acl)
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
