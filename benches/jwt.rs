//! JWT verification at CONNECT: one typical browser token (user, expiry, issuer, audience and
//! a small ACL) checked with an HMAC secret and with an EC P-256 public key. The connect-rate
//! goal is ES256 at 5 000 verifications per second per core or more.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fanfare::auth::jwt::{JwtKeys, JwtSettings, verify};
use ring::hmac;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

const NOW: u64 = 1_700_000_000;
const SECRET: &[u8] = b"bench secret of at least thirty-two bytes";

fn claims() -> String {
    format!(
        r#"{{"sub":"fan-1234","iss":"https://auth.example","aud":"fanfare","iat":{},"exp":{},"acl":{{"sub":["scores/football/#","chat/+/in"],"pub":["chat/room7/out"]}}}}"#,
        NOW - 60,
        NOW + 3600
    )
}

fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims())
    );
    let signature = sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn verification(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("fanfare-bench-jwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the temporary folder is writable");
    let secret_path = dir.join("secret");
    std::fs::write(&secret_path, SECRET).expect("writable");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("an EC key");
    let pem_path: PathBuf = dir.join("ec.pem");
    std::fs::write(&pem_path, ec.public_key_pem()).expect("writable");
    let keys = JwtKeys::load(Some(&secret_path), &[pem_path], None).expect("the keys load");
    let _ = std::fs::remove_dir_all(&dir);

    let hmac_key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
    let hs256 = token("HS256", |m| hmac::sign(&hmac_key, m).as_ref().to_vec());
    let rng = SystemRandom::new();
    let ec_pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &ec.serialize_der(), &rng)
            .expect("ring reads rcgen's PKCS#8");
    let es256 = token("ES256", |m| {
        ec_pair.sign(&rng, m).expect("signs").as_ref().to_vec()
    });

    let settings = JwtSettings {
        acl_claim: Some("acl".into()),
        issuer: Some("https://auth.example".into()),
        audience: Some("fanfare".into()),
        ..JwtSettings::default()
    };
    let mut group = c.benchmark_group("jwt");
    group.throughput(Throughput::Elements(1));
    for (alg, token) in [("hs256", &hs256), ("es256", &es256)] {
        assert!(verify(token.as_bytes(), &keys, &settings, NOW).is_ok());
        let size = format!("{alg}/{}B", token.len());
        group.bench_function(BenchmarkId::new("verify", size), |b| {
            b.iter(|| {
                verify(
                    std::hint::black_box(token.as_bytes()),
                    &keys,
                    &settings,
                    NOW,
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
