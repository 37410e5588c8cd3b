//! Tokens are made here: HMAC, ECDSA and Ed25519 ones with keys generated at test time (ring,
//! rcgen). ring cannot make RSA keys, so the RSA tokens are fixed: signed once with a key that
//! was then thrown away; only its public half is kept below.

use std::sync::atomic::{AtomicUsize, Ordering};

use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair,
    KeyPair,
};

use super::*;

/// The time the tests run at; tokens are valid around it.
const NOW: u64 = 1_700_000_000;

/// 64 bytes: long enough for HS512.
const SECRET: &[u8] = b"test secret, not used anywhere else; long enough for HS512 tokens.";

const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAw7mlGnPmbIqEhO3qH32o
y7zRTyxgiInFqRFe+zfrbWrwztTq23Vj6oVxQM0HSPD5wwXT+NnPc8r3fesJUXNp
98SQPRtzE8oYwQbdXGYxD/02D1m5m/X3jmqfiwgdtBe+bP2cCchOwhgk4jmWG+x6
YEy9pOH0yL7O3rOUeBfW4yoXPLfrG55vQs/wCwYUf57RbR+ALgDTXLX2GP03j1k1
WO3US07CaiqPYR0BVKlLfth+fFmjQfaB4+/W7vKTUFobyolYJc3R2J9wSjvgUDQj
U/9ST1jfXcEnuvdII9L/AonnznHIlTo6h623x2RqOXKNNhW2PX6UF1f/8mVFr850
eQIDAQAB
-----END PUBLIC KEY-----
";

/// The same key as a JWK's `n` and `e`.
const RSA_N: &str = "w7mlGnPmbIqEhO3qH32oy7zRTyxgiInFqRFe-zfrbWrwztTq23Vj6oVxQM0HSPD5wwXT-NnPc8r3fesJUXNp98SQPRtzE8oYwQbdXGYxD_02D1m5m_X3jmqfiwgdtBe-bP2cCchOwhgk4jmWG-x6YEy9pOH0yL7O3rOUeBfW4yoXPLfrG55vQs_wCwYUf57RbR-ALgDTXLX2GP03j1k1WO3US07CaiqPYR0BVKlLfth-fFmjQfaB4-_W7vKTUFobyolYJc3R2J9wSjvgUDQjU_9ST1jfXcEnuvdII9L_AonnznHIlTo6h623x2RqOXKNNhW2PX6UF1f_8mVFr850eQ";
const RSA_E: &str = "AQAB";

/// Claims `{"sub":"rsa-user","exp":2000000000}`, header `{"alg":…,"typ":"JWT"}`.
const RS256_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyc2EtdXNlciIsImV4cCI6MjAwMDAwMDAwMH0.kqp7-Cd6Rii_4L_xezFix3HnItpgEYVR3GPPYoQjTkVVnwT97yE3CGr-kPwimLQ8yluHiaq9N37w81zQ3BeYlPoYwIgkcFprVGCivQ5OzlroOzG7HCwE3L6Du8gTfUueYiTMjZ-jGmTGiLd9mMW0UmrxBOO0KyyJbTRxeqjaUQv5HUYfhwEiRKUbk_nQTXHq7KDCqzXHD2V8dzOBvlqQRJZHIwc9ncUliXQ3B921PczZjBCFesW-g1dZLsccKOKlV_w6pvZq0k5Lv0YTGsSJxP_tJOzomioEk6qa-uC1bKbT8L_rPsaZDpyYNUg7nbugECHeqVezE7tcrOqdPsT-UA";
const RS384_TOKEN: &str = "eyJhbGciOiJSUzM4NCIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyc2EtdXNlciIsImV4cCI6MjAwMDAwMDAwMH0.dZTLTkkepuRzkdOoAatdkUglRfUa_8-1HxKI4J6XUEnuWKflRschnamybzJRMuuNcHqwj1MoEwcm1W5imbeqlp8t-84gkXm-rdAlf6xsNtrz0HvlKFiOhCAXBTdGT3-ThC_6cgQsvnd0Gr1DJuxg6PMt_8ICveJlQ9Zs3q87sbxtpPgWpxA9yXGVV4oZ4Xl39rJC1Lo_YiEClYw6JrK264V3eUb9QL5R47fnYbKyV5VUkudbRrqTx_K4IGAwn-IeYb1Okjfz4WxQrzVdNvlPYqloPIjKE9K_zQ3DYDt1KQt4eQ-dUMDqZKkuHtMmu0LGBU3hLFXb5rkAJG7oJhfz3Q";
const RS512_TOKEN: &str = "eyJhbGciOiJSUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyc2EtdXNlciIsImV4cCI6MjAwMDAwMDAwMH0.KVzg1WPvKXek5n8X1BbiZYyPFB1pkm6A9i7QPZc7SV7_uIXCzOoqmaQW_ordBkXIUUJAfkmyc6S1tjdPowjlog66UJPVwy-npRC-wUQY59ZzzbeEyPrGEO595ps933l0hTWA_DUdprINrRnC0_Le4roSKnoSI9oMldMkYC4_I6XCHsV6FXbiotLhbu_9ERll_k0NAqUjDBncdra7KXZbX5nCSI_Xbwp5CWFaBMYpmikTqtUPY_vhJdS5r3xR4ucRnAVl0-aRRChW-D7IFIU76uSV6oAe-JURzfeqDVu67vrz-MhVa5EqVgIxCCCUOKIBoUkFoZ0XM-1vU4LdkAJUjA";
/// PSS with a 32-byte salt (RFC 7518 §3.5).
const PS256_TOKEN: &str = "eyJhbGciOiJQUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJyc2EtdXNlciIsImV4cCI6MjAwMDAwMDAwMH0.tZtFvr4K1kuBvPgKl1ZwgkPPsAUVgJVYxLwBQBEgnlXln8_Wwu6IQMCvksESmMqHq7q5VL4osHr69oqaAR4iQz2EcWT2BHYyCD2oAymgGf-OuaPULm63lq8XyRx1urj1kPJSjIOesdRs861e-GwKNhGNfZZrzUZTll0RiZsGyBcLcRntTMK6rTq8exz_aJxfG72VrqrKvFT31TouRvt0E5SVkPkQ6cakDhSYr0oZEox5qZnAuIwG7OUcluhk7SuwtMkWo0lVa1WfA6w9rrR7-Ql3YlBS0-tseSMXv8NbNpFWduzIagkyrZRCj1M_X6ZX2btBCJcslUMHQk7GWHPh8g";
/// RS256 with `"kid":"rsa-1"` in the header.
const RS256_KID_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzYS0xIn0.eyJzdWIiOiJyc2EtdXNlciIsImV4cCI6MjAwMDAwMDAwMH0.pQrtth6y5WoHXGxjm1UYRtyjPRhNmSKkdx9R7dnUGSCkSsAToLitl_S-jhO8Z1O9AOaJUtxkgOEe05U9CoxSE_O_XRcMO0lf3CD4-vus5GG2nZvlAG3Og5kxYEnRjyqFCjz0MbxdwvQoDii08MyECzbEf2UDtSwy3z5meFRy1ViOiFhR1QkRnzYaLSfqPx3mkwwb27l5Zd3rHz2mTnaAG3WtOQF5IzrY6u413gURY94-78JmAIHXyoJMRnd8EaEicIKpsM2m9BgNeI7nccoYj7JiGl3xtY5ZpSKQIX4k6TECKcbZrcqgmCim1Ho1AhNaPZ7AlphSSwNTDyLsbbvRhQ";

/// A folder of key files, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("fanfare-jwt-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).expect("the temporary folder is writable");
        Dir(path)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).expect("the temporary folder is writable");
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Signer {
    Hmac(hmac::Key),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl Signer {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Signer::Hmac(key) => hmac::sign(key, message).as_ref().to_vec(),
            Signer::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), message)
                .expect("ECDSA signs")
                .as_ref()
                .to_vec(),
            Signer::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS of these two JSON texts, signed by `signer`.
fn token(header: &str, claims: &str, signer: &Signer) -> String {
    let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
    let signature = signer.sign(signed.as_bytes());
    format!("{signed}.{}", b64(&signature))
}

fn hs(secret: &[u8], alg: hmac::Algorithm) -> Signer {
    Signer::Hmac(hmac::Key::new(alg, secret))
}

/// A P-256 or P-384 key pair: its PEM public key (from rcgen) and a ring signer.
fn ec_key(rcgen_alg: &'static rcgen::SignatureAlgorithm) -> (String, Signer) {
    let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("rcgen makes EC keys");
    let signing = if rcgen_alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        &ECDSA_P256_SHA256_FIXED_SIGNING
    } else {
        &ECDSA_P384_SHA384_FIXED_SIGNING
    };
    let ring_pair = EcdsaKeyPair::from_pkcs8(signing, &pair.serialize_der(), &SystemRandom::new())
        .expect("ring reads rcgen's PKCS#8");
    (pair.public_key_pem(), Signer::Ecdsa(ring_pair))
}

fn ed25519_key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("ring makes keys");
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ring reads its own PKCS#8")
}

fn secret_keys(dir: &Dir, secret: &[u8]) -> JwtKeys {
    let path = dir.file("secret", secret);
    JwtKeys::load(Some(&path), &[], None).expect("the secret loads")
}

fn pem_keys(dir: &Dir, pems: &[&str]) -> JwtKeys {
    let paths: Vec<PathBuf> = (0..pems.len())
        .map(|i| dir.file(&format!("key{i}.pem"), pems[i].as_bytes()))
        .collect();
    JwtKeys::load(None, &paths, None).expect("the PEM files load")
}

fn jwks_keys(dir: &Dir, jwks: &str) -> JwtKeys {
    let path = dir.file("jwks.json", jwks.as_bytes());
    JwtKeys::load(None, &[], Some(&path)).expect("the JWKS loads")
}

fn check(token: &str, keys: &JwtKeys) -> Result<Claims, JwtRefusal> {
    verify(token.as_bytes(), keys, &JwtSettings::default(), NOW)
}

fn claims_valid_for(user: &str) -> String {
    format!(r#"{{"sub":"{user}","exp":{}}}"#, NOW + 600)
}

const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
const ES256: &str = r#"{"alg":"ES256","typ":"JWT"}"#;

#[test]
fn hs256_token_from_a_secret_file_with_a_trailing_newline() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, &[SECRET, b"\n"].concat());
    let signed = token(
        HS256,
        &claims_valid_for("alice"),
        &hs(SECRET, hmac::HMAC_SHA256),
    );
    let claims = check(&signed, &keys).expect("valid");
    assert_eq!(
        claims,
        Claims {
            user: "alice".into(),
            expires_at: Some(NOW + 600),
            acl: None
        }
    );
}

#[test]
fn hs384_and_hs512_need_secrets_as_long_as_their_hash() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let claims = claims_valid_for("alice");
    let hs384 = token(
        r#"{"alg":"HS384"}"#,
        &claims,
        &hs(SECRET, hmac::HMAC_SHA384),
    );
    let hs512 = token(
        r#"{"alg":"HS512"}"#,
        &claims,
        &hs(SECRET, hmac::HMAC_SHA512),
    );
    assert!(check(&hs384, &keys).is_ok());
    assert!(check(&hs512, &keys).is_ok());

    let short = &SECRET[..40];
    let keys = secret_keys(&dir, short);
    let hs256 = token(HS256, &claims, &hs(short, hmac::HMAC_SHA256));
    let hs512 = token(r#"{"alg":"HS512"}"#, &claims, &hs(short, hmac::HMAC_SHA512));
    assert!(check(&hs256, &keys).is_ok());
    assert_eq!(check(&hs512, &keys), Err(JwtRefusal::AlgorithmNotAllowed));
}

#[test]
fn es256_and_es384_tokens_from_pem_public_keys() {
    let dir = Dir::new();
    let (p256_pem, p256) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (p384_pem, p384) = ec_key(&rcgen::PKCS_ECDSA_P384_SHA384);
    let keys = pem_keys(&dir, &[&p256_pem, &p384_pem]);
    let es256 = token(ES256, &claims_valid_for("bob"), &p256);
    let es384 = token(r#"{"alg":"ES384"}"#, &claims_valid_for("carol"), &p384);
    assert_eq!(check(&es256, &keys).expect("valid").user, "bob");
    assert_eq!(check(&es384, &keys).expect("valid").user, "carol");
    // A P-256 signature under the P-384 algorithm: no key of that curve says yes.
    let mislabelled = token(r#"{"alg":"ES384"}"#, &claims_valid_for("bob"), &p256);
    assert_eq!(check(&mislabelled, &keys), Err(JwtRefusal::BadSignature));
}

#[test]
fn eddsa_token_from_a_jwks() {
    let dir = Dir::new();
    let pair = ed25519_key();
    let jwks = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"ed-1","use":"sig","x":"{}"}}]}}"#,
        b64(pair.public_key().as_ref())
    );
    let keys = jwks_keys(&dir, &jwks);
    let signer = Signer::Ed25519(pair);
    let with_kid = token(
        r#"{"alg":"EdDSA","kid":"ed-1"}"#,
        &claims_valid_for("dan"),
        &signer,
    );
    let without_kid = token(r#"{"alg":"EdDSA"}"#, &claims_valid_for("dan"), &signer);
    assert_eq!(check(&with_kid, &keys).expect("valid").user, "dan");
    assert_eq!(check(&without_kid, &keys).expect("valid").user, "dan");
}

#[test]
fn rsa_tokens_from_a_pem_public_key() {
    let dir = Dir::new();
    let keys = pem_keys(&dir, &[RSA_PUBLIC_PEM]);
    for token in [RS256_TOKEN, RS384_TOKEN, RS512_TOKEN, PS256_TOKEN] {
        let claims = check(token, &keys).expect("valid");
        assert_eq!(claims.user, "rsa-user");
        assert_eq!(claims.expires_at, Some(2_000_000_000));
    }
}

#[test]
fn rs256_token_from_a_jwks_by_kid() {
    let dir = Dir::new();
    let jwks = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"rsa-1","alg":"RS256","n":"{RSA_N}","e":"{RSA_E}"}}]}}"#
    );
    let keys = jwks_keys(&dir, &jwks);
    assert_eq!(
        check(RS256_KID_TOKEN, &keys).expect("valid").user,
        "rsa-user"
    );
    // The key is pinned to RS256: the same key's RS384 token is not for it.
    assert_eq!(
        check(RS384_TOKEN, &keys),
        Err(JwtRefusal::AlgorithmNotAllowed)
    );
}

#[test]
fn expired_token_is_refused_past_the_leeway() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    let expired = token(
        HS256,
        &format!(r#"{{"sub":"a","exp":{}}}"#, NOW - 100),
        &signer,
    );
    let within_leeway = token(
        HS256,
        &format!(r#"{{"sub":"a","exp":{}}}"#, NOW - 10),
        &signer,
    );
    let fractional = token(
        HS256,
        &format!(r#"{{"sub":"a","exp":{}.5}}"#, NOW + 10),
        &signer,
    );
    assert_eq!(check(&expired, &keys), Err(JwtRefusal::Expired));
    assert!(check(&within_leeway, &keys).is_ok());
    assert_eq!(
        check(&fractional, &keys).expect("valid").expires_at,
        Some(NOW + 10)
    );

    let strict = JwtSettings {
        leeway_s: 0,
        ..JwtSettings::default()
    };
    let at_exp = token(HS256, &format!(r#"{{"sub":"a","exp":{NOW}}}"#), &signer);
    assert_eq!(
        verify(at_exp.as_bytes(), &keys, &strict, NOW),
        Err(JwtRefusal::Expired)
    );
    assert_eq!(
        verify(within_leeway.as_bytes(), &keys, &strict, NOW),
        Err(JwtRefusal::Expired)
    );
}

#[test]
fn token_not_yet_valid_is_refused_past_the_leeway() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    let early = token(
        HS256,
        &format!(r#"{{"sub":"a","nbf":{}}}"#, NOW + 100),
        &signer,
    );
    let within_leeway = token(
        HS256,
        &format!(r#"{{"sub":"a","nbf":{}}}"#, NOW + 10),
        &signer,
    );
    assert_eq!(check(&early, &keys), Err(JwtRefusal::NotYetValid));
    assert!(check(&within_leeway, &keys).is_ok());
    let strict = JwtSettings {
        leeway_s: 0,
        ..JwtSettings::default()
    };
    let refused = verify(within_leeway.as_bytes(), &keys, &strict, NOW);
    assert_eq!(refused, Err(JwtRefusal::NotYetValid));
}

#[test]
fn dates_that_are_not_numbers_are_malformed() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    for claims in [
        r#"{"sub":"a","exp":"2000000000"}"#,
        r#"{"sub":"a","nbf":-5}"#,
    ] {
        assert_eq!(
            check(&token(HS256, claims, &signer), &keys),
            Err(JwtRefusal::Malformed)
        );
    }
}

#[test]
fn issuer_must_match_when_configured() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    let settings = JwtSettings {
        issuer: Some("https://auth.example".into()),
        ..JwtSettings::default()
    };
    let cases = [
        (r#"{"sub":"a","iss":"https://auth.example"}"#, Ok(())),
        (
            r#"{"sub":"a","iss":"https://evil.example"}"#,
            Err(JwtRefusal::WrongIssuer),
        ),
        (r#"{"sub":"a"}"#, Err(JwtRefusal::WrongIssuer)),
        (
            r#"{"sub":"a","iss":["https://auth.example"]}"#,
            Err(JwtRefusal::WrongIssuer),
        ),
    ];
    for (claims, expected) in cases {
        let result = verify(
            token(HS256, claims, &signer).as_bytes(),
            &keys,
            &settings,
            NOW,
        );
        assert_eq!(result.map(|_| ()), expected, "{claims}");
    }
}

#[test]
fn audience_may_be_a_string_or_an_array() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    let settings = JwtSettings {
        audience: Some("fanfare".into()),
        ..JwtSettings::default()
    };
    let cases = [
        (r#"{"sub":"a","aud":"fanfare"}"#, Ok(())),
        (r#"{"sub":"a","aud":["other","fanfare"]}"#, Ok(())),
        (
            r#"{"sub":"a","aud":["other"]}"#,
            Err(JwtRefusal::WrongAudience),
        ),
        (
            r#"{"sub":"a","aud":"other"}"#,
            Err(JwtRefusal::WrongAudience),
        ),
        (r#"{"sub":"a"}"#, Err(JwtRefusal::WrongAudience)),
    ];
    for (claims, expected) in cases {
        let result = verify(
            token(HS256, claims, &signer).as_bytes(),
            &keys,
            &settings,
            NOW,
        );
        assert_eq!(result.map(|_| ()), expected, "{claims}");
    }
    // No audience configured: a token meant for some audience is not for us.
    let for_others = token(HS256, r#"{"sub":"a","aud":"fanfare"}"#, &signer);
    assert_eq!(check(&for_others, &keys), Err(JwtRefusal::WrongAudience));
}

#[test]
fn unknown_kid_is_refused() {
    let dir = Dir::new();
    let pair = ed25519_key();
    let jwks = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"ed-1","x":"{}"}}]}}"#,
        b64(pair.public_key().as_ref())
    );
    let keys = jwks_keys(&dir, &jwks);
    let signer = Signer::Ed25519(pair);
    let unknown = token(
        r#"{"alg":"EdDSA","kid":"ed-2"}"#,
        &claims_valid_for("a"),
        &signer,
    );
    assert_eq!(check(&unknown, &keys), Err(JwtRefusal::UnknownKid));
}

#[test]
fn kid_of_a_key_of_another_type_is_refused() {
    let dir = Dir::new();
    let ed = ed25519_key();
    let (_, p256) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k","x":"{}"}}]}}"#,
        b64(ed.public_key().as_ref())
    );
    let keys = jwks_keys(&dir, &jwks);
    let es256 = token(
        r#"{"alg":"ES256","kid":"k"}"#,
        &claims_valid_for("a"),
        &p256,
    );
    assert_eq!(check(&es256, &keys), Err(JwtRefusal::AlgorithmNotAllowed));
}

#[test]
fn unsigned_token_is_refused() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    for alg in ["none", "None", "NONE", "HS1", ""] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
        let unsigned = format!(
            "{}.{}.",
            b64(header.as_bytes()),
            b64(claims_valid_for("a").as_bytes())
        );
        assert!(looks_like_jwt(unsigned.as_bytes()));
        assert_eq!(
            check(&unsigned, &keys),
            Err(JwtRefusal::AlgorithmNotAllowed),
            "{alg}"
        );
    }
}

#[test]
fn hmac_token_signed_with_a_public_key_is_refused() {
    let dir = Dir::new();
    let (ec_pem, _) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let claims = claims_valid_for("mallory");
    for public_pem in [RSA_PUBLIC_PEM, ec_pem.as_str()] {
        // The attacker knows the public key and signs with its PEM text as an HMAC secret.
        let forged = token(
            HS256,
            &claims,
            &hs(public_pem.as_bytes(), hmac::HMAC_SHA256),
        );
        let keys = pem_keys(&dir, &[public_pem]);
        assert_eq!(check(&forged, &keys), Err(JwtRefusal::AlgorithmNotAllowed));

        // With an HMAC secret loaded as well, the token meets only that secret.
        let paths = [dir.file("public.pem", public_pem.as_bytes())];
        let secret = dir.file("secret", SECRET);
        let both = JwtKeys::load(Some(&secret), &paths, None).expect("loads");
        assert_eq!(check(&forged, &both), Err(JwtRefusal::BadSignature));
    }
    // And a JWKS RSA key named by kid does not turn into an HMAC key either.
    let jwks = format!(r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"{RSA_N}","e":"{RSA_E}"}}]}}"#);
    let keys = jwks_keys(&dir, &jwks);
    let forged = token(
        r#"{"alg":"HS256","kid":"r"}"#,
        &claims,
        &hs(RSA_N.as_bytes(), hmac::HMAC_SHA256),
    );
    assert_eq!(check(&forged, &keys), Err(JwtRefusal::AlgorithmNotAllowed));
}

#[test]
fn tampered_token_is_refused() {
    let dir = Dir::new();
    let (pem, p256) = ec_key(&rcgen::PKCS_ECDSA_P256_SHA256);
    let keys = pem_keys(&dir, &[&pem]);
    let genuine = token(ES256, &claims_valid_for("alice"), &p256);
    let (signed, signature) = genuine.rsplit_once('.').expect("three segments");

    let mut bad_signature = b64(&[0u8; 64]);
    assert_eq!(
        check(&format!("{signed}.{bad_signature}"), &keys),
        Err(JwtRefusal::BadSignature)
    );
    // One character of the real signature changed.
    bad_signature = signature.to_string();
    let last = if signature.starts_with('A') { "B" } else { "A" };
    bad_signature.replace_range(..1, last);
    assert_eq!(
        check(&format!("{signed}.{bad_signature}"), &keys),
        Err(JwtRefusal::BadSignature)
    );

    // Claims swapped for the attacker's, the signature kept.
    let header = signed.split('.').next().expect("a header");
    let admin = b64(claims_valid_for("admin").as_bytes());
    let swapped = format!("{header}.{admin}.{signature}");
    assert_eq!(check(&swapped, &keys), Err(JwtRefusal::BadSignature));

    let hmac_keys = secret_keys(&dir, SECRET);
    let hs256 = token(
        HS256,
        &claims_valid_for("alice"),
        &hs(SECRET, hmac::HMAC_SHA256),
    );
    let truncated = &hs256[..hs256.len() - 3];
    assert_eq!(check(truncated, &hmac_keys), Err(JwtRefusal::BadSignature));
}

#[test]
fn malformed_tokens_are_refused() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    let good = token(HS256, &claims_valid_for("a"), &signer);
    let (header, rest) = good.split_once('.').expect("segments");
    let cases = [
        format!("{header}*.{rest}"),
        format!("{header}=.{rest}"),
        format!("{header}.{rest}.extra"),
        rest.to_string(),
        String::new(),
        "..".to_string(),
        format!("{}.{rest}", b64(b"not json")),
        format!("{}.{rest}", b64(br#"["alg","HS256"]"#)),
        format!("{}.{rest}", b64(br#"{"alg":"HS256","alg":"HS256"}"#)),
        format!("{}.{rest}", b64(br#"{"typ":"JWT"}"#)),
        // A critical extension this broker does not understand (RFC 7515 §4.1.11).
        format!(
            "{}.{rest}",
            b64(br#"{"alg":"HS256","crit":["b64"],"b64":false}"#)
        ),
        // Signed, but the payload is not a JSON object.
        token(HS256, "not json", &signer),
        token(HS256, r#"["sub","a"]"#, &signer),
    ];
    for case in cases {
        assert_eq!(check(&case, &keys), Err(JwtRefusal::Malformed), "{case}");
    }
}

#[test]
fn token_over_the_limit_is_refused_before_decoding() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    // Not even base64: only the length can have refused it.
    let huge = vec![b'*'; 100 * 1024];
    assert_eq!(
        verify(&huge, &keys, &JwtSettings::default(), NOW),
        Err(JwtRefusal::TooLarge)
    );

    let signer = hs(SECRET, hmac::HMAC_SHA256);
    let padding = "x".repeat(TOKEN_BYTES_MAX_DEFAULT);
    let long = token(
        HS256,
        &format!(r#"{{"sub":"a","pad":"{padding}"}}"#),
        &signer,
    );
    assert_eq!(check(&long, &keys), Err(JwtRefusal::TooLarge));
    let roomy = JwtSettings {
        token_bytes_max: 2 * TOKEN_BYTES_MAX_DEFAULT,
        ..Default::default()
    };
    assert!(verify(long.as_bytes(), &keys, &roomy, NOW).is_ok());
}

#[test]
fn user_claim_must_be_a_non_empty_string() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    for claims in [
        r#"{"exp":2000000000}"#,
        r#"{"sub":""}"#,
        r#"{"sub":42}"#,
        r#"{"sub":null}"#,
    ] {
        let refused = check(&token(HS256, claims, &signer), &keys);
        assert_eq!(refused, Err(JwtRefusal::MissingUserClaim), "{claims}");
    }
    let settings = JwtSettings {
        user_claim: "preferred_username".into(),
        ..JwtSettings::default()
    };
    let named = token(
        HS256,
        r#"{"sub":"1234","preferred_username":"erin"}"#,
        &signer,
    );
    let claims = verify(named.as_bytes(), &keys, &settings, NOW).expect("valid");
    assert_eq!(claims.user, "erin");
    assert_eq!(claims.expires_at, None);
}

#[test]
fn acl_claim_is_parsed_when_configured() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    let settings = JwtSettings {
        acl_claim: Some("acl".into()),
        ..JwtSettings::default()
    };
    let with_acl = token(
        HS256,
        r#"{"sub":"fan","acl":{"sub":["scores/#","chat/+/in"],"pub":["chat/room1/out"]}}"#,
        &signer,
    );
    let claims = verify(with_acl.as_bytes(), &keys, &settings, NOW).expect("valid");
    let expected = TokenAcl {
        subscribe: vec!["scores/#".into(), "chat/+/in".into()],
        publish: vec!["chat/room1/out".into()],
    };
    assert_eq!(claims.acl, Some(expected));

    let read_only = token(
        HS256,
        r#"{"sub":"fan","acl":{"sub":["scores/#"]}}"#,
        &signer,
    );
    let acl = verify(read_only.as_bytes(), &keys, &settings, NOW)
        .expect("valid")
        .acl;
    assert_eq!(acl.expect("an ACL").publish, Vec::<String>::new());

    let without = token(HS256, r#"{"sub":"fan"}"#, &signer);
    assert_eq!(
        verify(without.as_bytes(), &keys, &settings, NOW)
            .expect("valid")
            .acl,
        None
    );
    // Not asked for: not read.
    assert_eq!(check(&with_acl, &keys).expect("valid").acl, None);
}

#[test]
fn malformed_acl_claim_is_refused() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let signer = hs(SECRET, hmac::HMAC_SHA256);
    let settings = JwtSettings {
        acl_claim: Some("acl".into()),
        ..JwtSettings::default()
    };
    for acl in [
        r#""scores/#""#,
        r#"null"#,
        r#"{"sub":"scores/#"}"#,
        r#"{"sub":[1]}"#,
        r#"{"sub":["scores/#/live"]}"#,
        r#"{"pub":["sc+ores"]}"#,
        r#"{"pub":[""]}"#,
        r#"{"subscribe":["scores/#"]}"#,
    ] {
        let claims = format!(r#"{{"sub":"fan","acl":{acl}}}"#);
        let refused = verify(
            token(HS256, &claims, &signer).as_bytes(),
            &keys,
            &settings,
            NOW,
        );
        assert_eq!(refused, Err(JwtRefusal::BadAclClaim), "{acl}");
    }
}

#[test]
fn shape_test_needs_three_base64url_segments() {
    assert!(looks_like_jwt(b"eyJh.eyJz.c2ln"));
    assert!(looks_like_jwt(b"eyJh.eyJz."));
    assert!(looks_like_jwt(b"a-_0.b.c"));
    for password in [
        &b"hunter2"[..],
        b"a.b",
        b"a.b.c.d",
        b".b.c",
        b"a..c",
        b"a.b.c=",
        b"a b.c.d",
        b"",
    ] {
        assert!(!looks_like_jwt(password), "{password:?}");
    }
}

#[test]
fn key_files_that_cannot_serve_are_refused_naming_the_file() {
    let dir = Dir::new();
    let short = dir.file("short", b"too short\n");
    let error = JwtKeys::load(Some(&short), &[], None).expect_err("refused");
    assert!(
        error.0.starts_with("jwt_secret_file `") && error.0.contains("short"),
        "{error}"
    );

    let missing = dir.0.join("missing.pem");
    let error = JwtKeys::load(None, &[missing], None).expect_err("refused");
    assert!(error.0.contains("missing.pem"), "{error}");

    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
    let private = dir.file("private.pem", pair.serialize_pem().as_bytes());
    let error = JwtKeys::load(None, &[private], None).expect_err("refused");
    assert!(
        error.0.contains("private.pem") && error.0.contains("private key"),
        "{error}"
    );

    let no_key = dir.file("empty.pem", b"nothing here\n");
    assert!(JwtKeys::load(None, &[no_key], None).is_err());

    for jwks in [
        "not json",
        r#"{"keys":[]}"#,
        r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}]}"#,
        r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA","d":"AA"}]}"#,
        r#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}"#,
    ] {
        let path = dir.file("jwks.json", jwks.as_bytes());
        let error = JwtKeys::load(None, &[], Some(&path)).expect_err(jwks);
        assert!(error.0.starts_with("jwks_file `"), "{error}");
    }
}

#[test]
fn keys_of_unknown_types_or_for_encryption_are_skipped_in_a_jwks() {
    let dir = Dir::new();
    let pair = ed25519_key();
    let x = b64(pair.public_key().as_ref());
    let jwks = format!(
        r#"{{"keys":[
            {{"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":"{x}"}},
            {{"kty":"EC","crv":"P-521","kid":"p521","x":"AA","y":"AA"}},
            {{"kty":"OKP","crv":"Ed25519","kid":"sig","x":"{x}"}}
        ]}}"#
    );
    let keys = jwks_keys(&dir, &jwks);
    assert_eq!(format!("{keys:?}"), r#"[Ed25519 kid="sig"]"#);
    let signer = Signer::Ed25519(pair);
    let for_encryption = token(
        r#"{"alg":"EdDSA","kid":"enc"}"#,
        &claims_valid_for("a"),
        &signer,
    );
    assert_eq!(check(&for_encryption, &keys), Err(JwtRefusal::UnknownKid));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let dir = Dir::new();
    let keys = secret_keys(&dir, SECRET);
    let shown = format!("{keys:?}");
    assert_eq!(shown, "[HMAC secret]");
    assert!(!keys.is_empty());
    let none = JwtKeys::load(None, &[], None).expect("nothing to load");
    assert!(none.is_empty());
}
