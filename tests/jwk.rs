//! JWK and JWK-set parsing (SPEC §5 "Key", §6 "JWKS"): what is taken, what is skipped and why.

mod common;

use common::SigningKey;
use jtl_auth_sidecar::jose::{Ed25519Key, JsonError, JwkError, JwkSet, JwksParseError};
use serde_json::{Value, json};

fn good_jwk() -> Value {
    SigningKey::from_seed(1, Some("k1")).jwk()
}

fn with(field: &str, value: Value) -> Value {
    let mut jwk = good_jwk();
    jwk[field] = value;
    jwk
}

fn without(field: &str) -> Value {
    let mut jwk = good_jwk();
    jwk.as_object_mut().unwrap().remove(field);
    jwk
}

#[test]
fn a_complete_ed25519_signing_jwk_is_accepted() {
    let key = Ed25519Key::from_jwk(&good_jwk()).unwrap();
    assert_eq!(key.kid(), Some("k1"));
    assert_eq!(
        key.public_bytes(),
        &SigningKey::from_seed(1, None).public_bytes()
    );
}

#[test]
fn use_alg_and_kid_are_optional() {
    let minimal = json!({"kty": "OKP", "crv": "Ed25519", "x": good_jwk()["x"]});
    let key = Ed25519Key::from_jwk(&minimal).unwrap();
    assert_eq!(key.kid(), None);
}

#[test]
fn keys_of_other_types_curves_uses_and_algorithms_are_refused() {
    let cases = [
        (with("kty", json!("RSA")), JwkError::WrongKeyType),
        (without("kty"), JwkError::WrongKeyType),
        (with("kty", json!("EC")), JwkError::WrongKeyType),
        (with("crv", json!("X25519")), JwkError::WrongCurve),
        (with("crv", json!("Ed448")), JwkError::WrongCurve),
        (without("crv"), JwkError::WrongCurve),
        (with("use", json!("enc")), JwkError::NotForSignatures),
        (with("use", json!(null)), JwkError::NotForSignatures),
        (with("alg", json!("ES256")), JwkError::WrongAlgorithm),
        (with("alg", json!("Ed25519")), JwkError::WrongAlgorithm),
        (with("kid", json!(1)), JwkError::KidNotString),
        (
            with("d", json!("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")),
            JwkError::PrivateKeyMaterial,
        ),
        (without("x"), JwkError::MissingX),
        (with("x", json!(5)), JwkError::MissingX),
        (json!("not an object"), JwkError::NotAnObject),
    ];
    for (jwk, expected) in cases {
        assert_eq!(Ed25519Key::from_jwk(&jwk).unwrap_err(), expected, "{jwk}");
    }
}

#[test]
fn x_must_be_32_bytes_of_canonical_unpadded_base64url() {
    let x = good_jwk()["x"].as_str().unwrap().to_owned();
    assert_eq!(
        Ed25519Key::from_jwk(&with("x", json!(format!("{x}=")))).unwrap_err(),
        JwkError::XNotBase64
    );
    let standard_alphabet = x.replace('-', "+").replace('_', "/");
    if standard_alphabet != x {
        assert_eq!(
            Ed25519Key::from_jwk(&with("x", json!(standard_alphabet))).unwrap_err(),
            JwkError::XNotBase64
        );
    }
    assert_eq!(
        Ed25519Key::from_jwk(&with("x", json!(&x[..40]))).unwrap_err(),
        JwkError::XLength(30)
    );
    assert_eq!(
        Ed25519Key::from_jwk(&with("x", json!(format!("{x}AAAA")))).unwrap_err(),
        JwkError::XLength(35)
    );
}

#[test]
fn the_identity_point_is_refused_as_small_order() {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        Ed25519Key::from_public_bytes(None, &identity).unwrap_err(),
        JwkError::SmallOrder
    );
}

#[test]
fn a_point_off_the_curve_is_refused() {
    // y = 2 has no x on Ed25519.
    let mut bytes = [0u8; 32];
    bytes[0] = 2;
    assert_eq!(
        Ed25519Key::from_public_bytes(None, &bytes).unwrap_err(),
        JwkError::NotOnCurve
    );
}

#[test]
fn a_key_set_keeps_good_keys_and_reports_the_rest() {
    let second = SigningKey::from_seed(2, Some("k2")).jwk();
    let document = json!({"keys": [
        good_jwk(),
        {"kty": "RSA", "kid": "rsa-1", "n": "AQAB", "e": "AQAB"},
        with("use", json!("enc")),
        second,
        SigningKey::from_seed(3, Some("k1")).jwk(),
    ]});
    let (set, skipped) = JwkSet::from_json(document.to_string().as_bytes()).unwrap();
    let kids: Vec<_> = set
        .keys()
        .iter()
        .map(|k| k.kid().unwrap().to_owned())
        .collect();
    assert_eq!(kids, ["k1", "k2"]);
    let reasons: Vec<_> = skipped
        .iter()
        .map(|s| (s.index, s.kid.as_deref(), s.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (1, Some("rsa-1"), JwkError::WrongKeyType),
            (2, Some("k1"), JwkError::NotForSignatures),
            (4, Some("k1"), JwkError::DuplicateKid),
        ]
    );
    assert!(set.contains_thumbprint(SigningKey::from_seed(2, None).public_key().thumbprint()));
    assert!(!set.contains_thumbprint(SigningKey::from_seed(3, None).public_key().thumbprint()));
}

#[test]
fn a_key_set_document_must_be_a_strict_object_with_keys() {
    assert_eq!(
        JwkSet::from_json(b"[]").unwrap_err(),
        JwksParseError::Json(JsonError::NotAnObject)
    );
    assert_eq!(
        JwkSet::from_json(b"{}").unwrap_err(),
        JwksParseError::NoKeysArray
    );
    assert_eq!(
        JwkSet::from_json(br#"{"keys":{}}"#).unwrap_err(),
        JwksParseError::NoKeysArray
    );
    assert_eq!(
        JwkSet::from_json(br#"{"keys":[],"keys":[]}"#).unwrap_err(),
        JwksParseError::Json(JsonError::DuplicateKey)
    );
    let (set, skipped) = JwkSet::from_json(br#"{"keys":[]}"#).unwrap();
    assert!(set.is_empty() && skipped.is_empty());
}
