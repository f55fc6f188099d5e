//! Compact JWS parsing and full verification of both flows on arbitrary input.
//!
//! Every input is used twice:
//! - as a token (when it is UTF-8), verified in the session-token flow (EdDSA) and in the
//!   app-token flow (RS256), through the sidecar's own `TokenVerifier` over a fixed key
//!   set (`verify::verify_with_keys`);
//! - as an edit script applied to a valid token of each flow: the edited token must be
//!   refused unless the edits left it unchanged (anything else would be a forgery).
//!
//! Oracles besides "no panic": an accepted token has exactly three segments of the
//! base64url alphabet, was signed by a key of the set (checked again here directly with
//! that key), names its key in the app-token flow, and is not expired; the header fast
//! path of `CompactJws::parse_as` agrees with the strict object parser.

#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jtl_auth_sidecar::jose::{
    Algorithm, CompactJws, JoseError, JsonError, JwkSet, KeyKind, Malformed, Part, TokenKind,
    TokenPolicy, base64url_encode, parse_strict_json_object,
};
use jtl_auth_sidecar::verify::verify_with_keys;
use libfuzzer_sys::fuzz_target;
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

const NOW: i64 = 1_790_000_000;
const ISSUER: &str = "https://id.jtl-cloud.com";
const APP_ID: &str = "312909075212468632";
const RSA_KID: &str = "298817363741638659";

struct Flow {
    policy: TokenPolicy,
    keys: JwkSet,
    /// A token this flow accepts at `NOW`.
    valid: String,
}

struct Fixtures {
    session: Flow,
    app: Flow,
}

fn ed25519_jwk(pair: &Ed25519KeyPair, kid: Option<&str>) -> Value {
    let mut jwk = json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
                         "x": base64url_encode(pair.public_key().as_ref())});
    if let Some(kid) = kid {
        jwk["kid"] = json!(kid);
    }
    jwk
}

fn rsa_jwk(pair: &RsaKeyPair, kid: &str) -> Value {
    let public = PublicKeyComponents::<Vec<u8>>::from(pair.public());
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
           "n": base64url_encode(&public.n), "e": base64url_encode(&public.e)})
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        base64url_encode(header.to_string().as_bytes()),
        base64url_encode(claims.to_string().as_bytes())
    )
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        // Session-token flow: two Ed25519 keys, one with a kid, one without; the valid
        // token has no header kid (JTL's documented form).
        let first = Ed25519KeyPair::from_seed_unchecked(&[1; 32]).unwrap();
        let second = Ed25519KeyPair::from_seed_unchecked(&[2; 32]).unwrap();
        let jwks = json!({"keys": [ed25519_jwk(&first, Some("k1")), ed25519_jwk(&second, None)]});
        let (session_keys, skipped) =
            JwkSet::from_json_of(jwks.to_string().as_bytes(), KeyKind::Ed25519).unwrap();
        assert!(skipped.is_empty());
        let claims = json!({
            "exp": NOW + 300, "iat": NOW - 5, "kid": "customer-4711",
            "userId": "2f1b8d2c-5c1e-4a7e-9b3f-1d2e3f4a5b6c",
            "tenantId": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "tenantSlug": "acme-gmbh",
        });
        let input = signing_input(&json!({"alg": "EdDSA", "typ": "JWT"}), &claims);
        let signature = second.sign(input.as_bytes());
        let session = Flow {
            policy: TokenPolicy::default(),
            keys: session_keys,
            valid: format!("{input}.{}", base64url_encode(signature.as_ref())),
        };

        // App-token flow: the emulator's first two test-only RSA keys.
        let rsa = RsaKeyPair::from_pkcs8(include_bytes!("../../src/emulator/keys/rsa2048-1.pk8"))
            .unwrap();
        let other = RsaKeyPair::from_pkcs8(include_bytes!("../../src/emulator/keys/rsa2048-2.pk8"))
            .unwrap();
        let jwks = json!({"keys": [rsa_jwk(&rsa, RSA_KID), rsa_jwk(&other, "other")]});
        let (app_keys, skipped) =
            JwkSet::from_json_of(jwks.to_string().as_bytes(), KeyKind::Rsa).unwrap();
        assert!(skipped.is_empty());
        let claims = json!({
            "iss": ISSUER, "sub": "312909075212468999", "aud": [APP_ID, "312909075212460000"],
            "urn:jtl:tenant_id": "7C9E6679-7425-40DE-944B-E07FC1F90AE7",
            "urn:jtl:app_id": APP_ID, "iat": NOW - 10, "exp": NOW + 300,
        });
        let input = signing_input(
            &json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID}),
            &claims,
        );
        let mut signature = vec![0; rsa.public().modulus_len()];
        rsa.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut signature,
        )
        .unwrap();
        let app = Flow {
            policy: TokenPolicy {
                kind: TokenKind::AppToken,
                issuer: Some(ISSUER.to_owned()),
                audience: vec![APP_ID.to_owned()],
                ..TokenPolicy::default()
            },
            keys: app_keys,
            valid: format!("{input}.{}", base64url_encode(&signature)),
        };
        let fixtures = Fixtures { session, app };
        for flow in [&fixtures.session, &fixtures.app] {
            assert!(
                verify(flow, &flow.valid).is_ok(),
                "the valid token verifies"
            );
        }
        fixtures
    })
}

/// Verifies `token` in `flow` and checks what an accepted token must be.
fn verify(flow: &Flow, token: &str) -> Result<(), JoseError> {
    let algorithm = flow.policy.algorithm();
    check_parse_agrees(token, flow.policy.max_token_bytes, algorithm);
    let verified = verify_with_keys(token, &flow.keys, &flow.policy, NOW)?;

    assert_eq!(token.matches('.').count(), 2, "accepted: three segments");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'),
        "accepted: only the base64url alphabet"
    );
    assert!(!verified.session().is_expired(NOW, flow.policy.leeway_s));
    let jws = CompactJws::parse_as(token, flow.policy.max_token_bytes, algorithm)
        .expect("an accepted token parses");
    let key = flow
        .keys
        .keys()
        .iter()
        .find(|key| key.thumbprint() == verified.key_thumbprint())
        .expect("accepted: the signing key is in the set");
    assert!(
        key.verify(jws.signing_input(), jws.signature()),
        "accepted: the key's own check passes"
    );
    match jws.kid() {
        Some(kid) => assert_eq!(key.kid(), Some(kid), "accepted: the named key signed"),
        None => assert_eq!(
            algorithm,
            Algorithm::EdDSA,
            "accepted: an app token names its key"
        ),
    }
    Ok(())
}

/// The header of `parse_as` (a fast path that builds no map) against the strict object
/// parser on the same decoded bytes.
fn check_parse_agrees(token: &str, max: usize, algorithm: Algorithm) {
    let parsed = CompactJws::parse_as(token, max, algorithm);
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        assert!(parsed.is_err(), "not three segments, yet parsed");
        return;
    };
    let decode = |segment: &str| {
        if segment.contains('=') {
            None
        } else {
            URL_SAFE_NO_PAD.decode(segment).ok()
        }
    };
    match &parsed {
        Ok(jws) => {
            let header = parse_strict_json_object(&decode(header).expect("header decodes"))
                .expect("the strict parser takes the header");
            assert_eq!(header.get("alg"), Some(&json!(algorithm.name())));
            assert!(!header.contains_key("crit"));
            assert_eq!(header.get("kid").and_then(Value::as_str), jws.kid());
            let payload = parse_strict_json_object(&decode(payload).expect("payload decodes"))
                .expect("the strict parser takes the payload");
            assert_eq!(&payload, jws.payload());
        }
        Err(JoseError::Malformed(problem)) => {
            let expected = match problem {
                Malformed::Json(Part::Header) => JsonError::Syntax,
                Malformed::NotAnObject(Part::Header) => JsonError::NotAnObject,
                Malformed::DuplicateKey(Part::Header) => JsonError::DuplicateKey,
                Malformed::TooDeep(Part::Header) => JsonError::TooDeep,
                _ => return,
            };
            let bytes = decode(header).expect("a header refused for its JSON decoded");
            assert_eq!(parse_strict_json_object(&bytes).err(), Some(expected));
        }
        Err(
            JoseError::UnsupportedAlgorithm | JoseError::OtherKind(_) | JoseError::CriticalHeader,
        ) => {
            let bytes = decode(header).expect("a header refused for its alg decoded");
            let header = parse_strict_json_object(&bytes).expect("valid header JSON");
            let alg_ok = header.get("alg") == Some(&json!(algorithm.name()));
            assert!(!alg_ok || header.contains_key("crit"));
        }
        Err(_) => {}
    }
}

const ALPHABET: &[u8; 65] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

/// Applies up to 16 edits of 4 bytes each (operation, position high, position low, value).
fn edited(token: &str, script: &[u8]) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    for edit in script.chunks_exact(4).take(16) {
        let (op, value) = (edit[0], edit[3]);
        let position = usize::from(u16::from_be_bytes([edit[1], edit[2]]));
        let at = position % (bytes.len() + 1);
        let symbol = ALPHABET[usize::from(value) % ALPHABET.len()];
        match op % 5 {
            0 if at < bytes.len() => bytes[at] = symbol,
            1 => bytes.insert(at, symbol),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            3 if at < bytes.len() => bytes[at] = value,
            // Cut the token here.
            4 => bytes.truncate(at),
            _ => {}
        }
    }
    bytes
}

fuzz_target!(|data: &[u8]| {
    let fixtures = fixtures();
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verify(&fixtures.session, token);
        let _ = verify(&fixtures.app, token);
    }
    for flow in [&fixtures.session, &fixtures.app] {
        let mutated = edited(&flow.valid, data);
        let Ok(mutated) = std::str::from_utf8(&mutated) else {
            continue;
        };
        if mutated != flow.valid {
            assert!(
                verify(flow, mutated).is_err(),
                "a changed token was accepted: {mutated}"
            );
        }
    }
});
