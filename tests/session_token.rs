//! Session-token verification (SPEC §5): one test per rejection class, and the shape of
//! an accepted token. All tokens are real Ed25519 signatures made with ring.

mod common;

use common::{NOW, SigningKey, TENANT_ID, USER_ID, session_claims};
use jtl_auth_sidecar::jose::{
    CompactJws, JoseError, JwkSet, MAX_KEYS_TRIED, Malformed, Part, TokenKind, TokenPolicy,
    base64url_encode,
};
use jtl_auth_sidecar::verify::{VerifiedSession, verify_with_keys};
use serde_json::{Value, json};
use std::sync::Arc;

const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

fn key() -> SigningKey {
    SigningKey::from_seed(1, None)
}

fn keys_of(signers: &[&SigningKey]) -> JwkSet {
    JwkSet::from_keys(signers.iter().map(|signer| signer.public_key()))
}

fn verify(token: &str, keys: &JwkSet) -> Result<Arc<VerifiedSession>, JoseError> {
    verify_with_keys(token, keys, &TokenPolicy::default(), NOW)
}

/// Verifies against the default test key and asserts the error never echoes the token.
fn reject(token: &str) -> JoseError {
    let error = verify(token, &keys_of(&[&key()])).expect_err("token must be refused");
    assert_no_echo(&error, token);
    error
}

fn assert_no_echo(error: &JoseError, token: &str) {
    let message = error.to_string();
    for segment in token.split('.').filter(|s| s.len() >= 8) {
        assert!(
            !message.contains(segment),
            "error {message:?} echoes the token"
        );
    }
}

fn with_claim(name: &str, value: Value) -> Value {
    let mut claims = session_claims();
    claims[name] = value;
    claims
}

fn without_claim(name: &str) -> Value {
    let mut claims = session_claims();
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn invalid_claim(claim: &'static str, reason: &'static str) -> JoseError {
    JoseError::InvalidClaim { claim, reason }
}

// ---- accepted tokens --------------------------------------------------------------------

#[test]
fn valid_token_yields_the_typed_session() {
    let token = key().mint(&session_claims());
    let verified = verify(&token, &keys_of(&[&key()])).unwrap();
    let session = verified.session();
    assert_eq!(session.tenant_id.to_string(), TENANT_ID);
    assert_eq!(session.user_id.to_string(), USER_ID);
    assert_eq!(session.tenant_slug.as_deref(), Some("acme-gmbh"));
    assert_eq!(session.expires_at, NOW + 300);
    assert_eq!(session.claims["kid"], "customer-4711");
    assert_eq!(verified.key_thumbprint(), key().public_key().thumbprint());
}

#[test]
fn uppercase_uuids_are_accepted_and_forwarded_lowercase() {
    let mut claims = session_claims();
    claims["tenantId"] = json!(TENANT_ID.to_uppercase());
    claims["userId"] = json!(USER_ID.to_uppercase());
    let session = verify(&key().mint(&claims), &keys_of(&[&key()]))
        .unwrap()
        .session()
        .clone();
    assert_eq!(session.tenant_id.hyphenated().to_string(), TENANT_ID);
    assert_eq!(session.user_id, USER_ID);
}

#[test]
fn header_kid_selects_the_key() {
    let first = SigningKey::from_seed(1, Some("k1"));
    let second = SigningKey::from_seed(2, Some("k2"));
    let token = second.mint(&session_claims());
    let verified = verify(&token, &keys_of(&[&first, &second])).unwrap();
    assert_eq!(verified.key_thumbprint(), second.public_key().thumbprint());
}

#[test]
fn token_without_kid_is_checked_against_each_key() {
    let first = SigningKey::from_seed(1, Some("k1"));
    let second = SigningKey::from_seed(2, Some("k2"));
    let token = SigningKey::from_seed(2, None).mint(&session_claims());
    let verified = verify(&token, &keys_of(&[&first, &second])).unwrap();
    assert_eq!(verified.key_thumbprint(), second.public_key().thumbprint());
}

#[test]
fn payload_kid_is_a_claim_not_a_key_selector() {
    // The payload names "k1", but the token has no header kid and was signed by k2.
    let first = SigningKey::from_seed(1, Some("k1"));
    let second = SigningKey::from_seed(2, Some("k2"));
    let token = SigningKey::from_seed(2, None).mint(&with_claim("kid", json!("k1")));
    let verified = verify(&token, &keys_of(&[&first, &second])).unwrap();
    assert_eq!(verified.key_thumbprint(), second.public_key().thumbprint());
    assert_eq!(verified.session().claims["kid"], "k1");
}

#[test]
fn at_most_eight_keys_are_tried_without_a_kid() {
    let signers: Vec<SigningKey> = (1..=MAX_KEYS_TRIED as u8 + 1)
        .map(|seed| SigningKey::from_seed(seed, Some(&format!("k{seed}"))))
        .collect();
    let keys = JwkSet::from_keys(signers.iter().map(SigningKey::public_key));
    let ninth = SigningKey::from_seed(MAX_KEYS_TRIED as u8 + 1, None);
    assert_eq!(
        verify(&ninth.mint(&session_claims()), &keys).unwrap_err(),
        JoseError::NoKeyMatches {
            tried: MAX_KEYS_TRIED
        }
    );
    // The same key is found when the token names it.
    assert!(verify(&signers[MAX_KEYS_TRIED].mint(&session_claims()), &keys).is_ok());
    // And the eighth is still within reach without a kid.
    let eighth = SigningKey::from_seed(MAX_KEYS_TRIED as u8, None);
    assert!(verify(&eighth.mint(&session_claims()), &keys).is_ok());
}

#[test]
fn embedded_keys_and_key_urls_in_the_header_are_never_trusted() {
    let attacker = SigningKey::from_seed(66, None);
    let header = json!({
        "alg": "EdDSA",
        "jwk": attacker.jwk(),
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIB"],
    });
    let token = attacker.sign_raw(&header.to_string(), &session_claims().to_string());
    assert_eq!(reject(&token), JoseError::NoKeyMatches { tried: 1 });
    // The same header on a token signed by a key of the set is fine: the members are ignored.
    let token = key().sign_raw(&header.to_string(), &session_claims().to_string());
    assert!(verify(&token, &keys_of(&[&key()])).is_ok());
}

#[test]
fn fractional_numeric_dates_are_accepted() {
    let claims = with_claim("exp", json!(NOW as f64 + 0.5));
    let session = verify(&key().mint(&claims), &keys_of(&[&key()]))
        .unwrap()
        .session()
        .clone();
    assert_eq!(session.expires_at, NOW + 1);
}

#[test]
fn slug_limits_count_characters_not_bytes() {
    let slug_255 = "ä".repeat(255);
    let session = verify(
        &key().mint(&with_claim("tenantSlug", json!(slug_255))),
        &keys_of(&[&key()]),
    )
    .unwrap()
    .session()
    .clone();
    assert_eq!(session.tenant_slug.unwrap().chars().count(), 255);
    assert_eq!(
        reject(&key().mint(&with_claim("tenantSlug", json!("a".repeat(256))))),
        invalid_claim("tenantSlug", "is longer than 255 characters")
    );
}

// ---- algorithm and header ----------------------------------------------------------------

#[test]
fn alg_none_is_refused() {
    let header = base64url_encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url_encode(session_claims().to_string().as_bytes());
    assert_eq!(
        reject(&format!("{header}.{payload}.")),
        JoseError::UnsupportedAlgorithm
    );
}

#[test]
fn hs256_keyed_with_the_public_key_is_refused() {
    // The classic confusion attack: HMAC with the (public) Ed25519 key as the secret.
    let header = base64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = base64url_encode(session_claims().to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key().public_bytes());
    let tag = ring::hmac::sign(&hmac_key, signing_input.as_bytes());
    let token = format!("{signing_input}.{}", base64url_encode(tag.as_ref()));
    assert_eq!(reject(&token), JoseError::UnsupportedAlgorithm);
}

#[test]
fn alg_spelled_eddsa_in_lowercase_is_refused() {
    let token = key().sign_raw(r#"{"alg":"eddsa"}"#, &session_claims().to_string());
    assert_eq!(reject(&token), JoseError::UnsupportedAlgorithm);
}

#[test]
fn alg_ed25519_is_refused() {
    let token = key().sign_raw(r#"{"alg":"Ed25519"}"#, &session_claims().to_string());
    assert_eq!(reject(&token), JoseError::UnsupportedAlgorithm);
}

#[test]
fn missing_or_non_string_alg_is_refused() {
    let token = key().sign_raw(r#"{"typ":"JWT"}"#, &session_claims().to_string());
    assert_eq!(reject(&token), JoseError::UnsupportedAlgorithm);
    let token = key().sign_raw(r#"{"alg":["EdDSA"]}"#, &session_claims().to_string());
    assert_eq!(reject(&token), JoseError::UnsupportedAlgorithm);
}

#[test]
fn crit_header_is_refused() {
    let token = key().sign_raw(
        r#"{"alg":"EdDSA","crit":["exp"],"exp":1}"#,
        &session_claims().to_string(),
    );
    assert_eq!(reject(&token), JoseError::CriticalHeader);
    let token = key().sign_raw(
        r#"{"alg":"EdDSA","crit":[]}"#,
        &session_claims().to_string(),
    );
    assert_eq!(reject(&token), JoseError::CriticalHeader);
}

#[test]
fn non_string_header_kid_is_refused() {
    let token = key().sign_raw(r#"{"alg":"EdDSA","kid":7}"#, &session_claims().to_string());
    assert_eq!(
        reject(&token),
        JoseError::Malformed(Malformed::KidNotString)
    );
}

// ---- encoding and structure ------------------------------------------------------------------

#[test]
fn base64_padding_is_refused() {
    let token = key().mint(&session_claims());
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    assert_eq!(
        reject(&format!("{signing_input}.{signature}==")),
        JoseError::Malformed(Malformed::Padding)
    );
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    segments[0].push('=');
    assert_eq!(
        reject(&segments.join(".")),
        JoseError::Malformed(Malformed::Padding)
    );
}

#[test]
fn standard_alphabet_plus_and_slash_are_refused() {
    let token = key().mint(&session_claims());
    assert_eq!(
        reject(&token.replacen(['-', '_', 'A'], "+", 1)),
        JoseError::Malformed(Malformed::InvalidCharacter)
    );
    assert_eq!(
        reject(&token.replacen(['-', '_', 'A'], "/", 1)),
        JoseError::Malformed(Malformed::InvalidCharacter)
    );
}

#[test]
fn non_canonical_trailing_bits_are_refused() {
    // 64 signature bytes take 86 characters, the last holding 2 data bits and 4 spare bits.
    // Setting a spare bit keeps the decoded bytes but changes the text, so it must be
    // refused, not normalised.
    let token = key().mint(&session_claims());
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    assert_eq!(signature.len(), 86);
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = signature.as_bytes()[85];
    let position = alphabet.iter().position(|&c| c == last).unwrap();
    let tweaked = alphabet[position ^ 1] as char;
    let forged = format!("{signing_input}.{}{tweaked}", &signature[..85]);
    assert_eq!(
        reject(&forged),
        JoseError::Malformed(Malformed::Base64(Part::Signature))
    );
}

#[test]
fn two_and_four_segments_are_refused() {
    let token = key().mint(&session_claims());
    let (two, _) = token.rsplit_once('.').unwrap();
    assert_eq!(reject(two), JoseError::Malformed(Malformed::SegmentCount));
    assert_eq!(
        reject(&format!("{token}.AAAA")),
        JoseError::Malformed(Malformed::SegmentCount)
    );
    assert_eq!(
        reject(&format!("{token}.")),
        JoseError::Malformed(Malformed::SegmentCount)
    );
}

#[test]
fn whitespace_anywhere_is_refused() {
    let token = key().mint(&session_claims());
    for variant in [
        format!(" {token}"),
        format!("{token}\n"),
        format!("{token}\r\n"),
        format!("{}\t{}", &token[..10], &token[10..]),
        format!("{} {}", &token[..10], &token[10..]),
    ] {
        assert_eq!(
            reject(&variant),
            JoseError::Malformed(Malformed::InvalidCharacter),
            "{variant:?}"
        );
    }
}

#[test]
fn empty_token_is_refused() {
    assert_eq!(reject(""), JoseError::Malformed(Malformed::Empty));
    assert_eq!(
        reject(".."),
        JoseError::Malformed(Malformed::Json(Part::Header))
    );
}

#[test]
fn duplicate_keys_in_the_header_are_refused() {
    let token = key().sign_raw(
        r#"{"alg":"EdDSA","alg":"EdDSA"}"#,
        &session_claims().to_string(),
    );
    assert_eq!(
        reject(&token),
        JoseError::Malformed(Malformed::DuplicateKey(Part::Header))
    );
    let token = key().sign_raw(
        r#"{"alg":"none","alg":"EdDSA"}"#,
        &session_claims().to_string(),
    );
    assert_eq!(
        reject(&token),
        JoseError::Malformed(Malformed::DuplicateKey(Part::Header))
    );
}

#[test]
fn duplicate_keys_in_the_payload_are_refused() {
    let other_tenant = "00000000-0000-4000-8000-000000000001";
    let payload = format!(
        r#"{{"exp":{},"userId":"{USER_ID}","tenantId":"{TENANT_ID}","tenantSlug":"a","tenantId":"{other_tenant}"}}"#,
        NOW + 300
    );
    let token = key().sign_raw(HEADER, &payload);
    assert_eq!(
        reject(&token),
        JoseError::Malformed(Malformed::DuplicateKey(Part::Payload))
    );
    let nested = format!(
        r#"{{"exp":{},"userId":"{USER_ID}","tenantId":"{TENANT_ID}","tenantSlug":"a","x":{{"y":1,"y":2}}}}"#,
        NOW + 300
    );
    assert_eq!(
        reject(&key().sign_raw(HEADER, &nested)),
        JoseError::Malformed(Malformed::DuplicateKey(Part::Payload))
    );
}

#[test]
fn payload_that_is_not_an_object_is_refused() {
    for payload in ["[1,2]", "\"text\"", "42", "null"] {
        assert_eq!(
            reject(&key().sign_raw(HEADER, payload)),
            JoseError::Malformed(Malformed::NotAnObject(Part::Payload)),
            "{payload}"
        );
    }
    assert_eq!(
        reject(&key().sign_raw(HEADER, "{not json")),
        JoseError::Malformed(Malformed::Json(Part::Payload))
    );
}

#[test]
fn header_that_is_not_an_object_is_refused() {
    let token = key().sign_raw(r#"["EdDSA"]"#, &session_claims().to_string());
    assert_eq!(
        reject(&token),
        JoseError::Malformed(Malformed::NotAnObject(Part::Header))
    );
}

#[test]
fn nesting_bomb_is_refused() {
    let payload = format!("{{\"a\":{}1{}}}", "[".repeat(2000), "]".repeat(2000));
    let token = key().sign_raw(HEADER, &payload);
    assert!(token.len() < TokenPolicy::default().max_token_bytes);
    assert_eq!(
        reject(&token),
        JoseError::Malformed(Malformed::TooDeep(Part::Payload))
    );
}

#[test]
fn oversize_token_is_refused_before_parsing() {
    let max = TokenPolicy::default().max_token_bytes;
    let token = key().mint(&with_claim("padding", json!("x".repeat(max))));
    assert!(token.len() > max);
    assert_eq!(
        reject(&token),
        JoseError::Malformed(Malformed::TooLarge { max })
    );
    // A token of exactly the limit is still parsed (and here accepted).
    let policy = TokenPolicy {
        max_token_bytes: key().mint(&session_claims()).len(),
        ..TokenPolicy::default()
    };
    assert!(
        verify_with_keys(
            &key().mint(&session_claims()),
            &keys_of(&[&key()]),
            &policy,
            NOW
        )
        .is_ok()
    );
}

// ---- signatures and keys ------------------------------------------------------------------------

fn with_signature(token: &str, signature: &[u8]) -> String {
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    format!("{signing_input}.{}", base64url_encode(signature))
}

#[test]
fn zero_signature_is_refused() {
    let token = with_signature(&key().mint(&session_claims()), &[0u8; 64]);
    assert_eq!(reject(&token), JoseError::NoKeyMatches { tried: 1 });
    let with_kid = SigningKey::from_seed(1, Some("k1"));
    let token = with_signature(&with_kid.mint(&session_claims()), &[0u8; 64]);
    assert_eq!(
        verify(&token, &keys_of(&[&with_kid])).unwrap_err(),
        JoseError::BadSignature
    );
}

#[test]
fn truncated_signature_is_refused() {
    let token = key().mint(&session_claims());
    let signature = CompactJws::parse(&token, 8192)
        .unwrap()
        .signature()
        .to_vec();
    assert_eq!(
        reject(&with_signature(&token, &signature[..63])),
        JoseError::Malformed(Malformed::SignatureLength)
    );
    assert_eq!(
        reject(&with_signature(
            &token,
            &[signature.as_slice(), &[0]].concat()
        )),
        JoseError::Malformed(Malformed::SignatureLength)
    );
    assert_eq!(
        reject(&with_signature(&token, &[])),
        JoseError::Malformed(Malformed::SignatureLength)
    );
}

#[test]
fn signature_from_another_token_is_refused() {
    let genuine = key().mint(&with_claim("tenantSlug", json!("other")));
    let foreign = CompactJws::parse(&genuine, 8192)
        .unwrap()
        .signature()
        .to_vec();
    let token = with_signature(&key().mint(&session_claims()), &foreign);
    assert_eq!(reject(&token), JoseError::NoKeyMatches { tried: 1 });
}

#[test]
fn tampered_payload_is_refused() {
    let token = key().mint(&session_claims());
    let signature = token.rsplit_once('.').unwrap().1;
    let forged_claims = with_claim("tenantId", json!("00000000-0000-4000-8000-000000000001"));
    let forged = format!(
        "{}.{}.{signature}",
        base64url_encode(HEADER.as_bytes()),
        base64url_encode(forged_claims.to_string().as_bytes())
    );
    assert_eq!(reject(&forged), JoseError::NoKeyMatches { tried: 1 });
}

#[test]
fn valid_signature_from_a_key_outside_the_set_is_refused() {
    let outsider = SigningKey::from_seed(9, None);
    assert_eq!(
        reject(&outsider.mint(&session_claims())),
        JoseError::NoKeyMatches { tried: 1 }
    );
    let outsider_with_kid = SigningKey::from_seed(9, Some("k9"));
    let known = SigningKey::from_seed(1, Some("k1"));
    let error = verify(
        &outsider_with_kid.mint(&session_claims()),
        &keys_of(&[&known]),
    )
    .unwrap_err();
    assert_eq!(error, JoseError::UnknownKey { kid: "k9".into() });
    assert_eq!(
        TokenKind::SessionToken.refusal(&error),
        "The session token was signed by an unknown key `k9`."
    );
    // A kid that claims a known key but was signed by another fails as a bad signature.
    let impostor = SigningKey::from_seed(9, Some("k1"));
    assert_eq!(
        verify(&impostor.mint(&session_claims()), &keys_of(&[&known])).unwrap_err(),
        JoseError::BadSignature
    );
}

#[test]
fn empty_key_set_refuses_everything() {
    assert_eq!(
        verify(&key().mint(&session_claims()), &JwkSet::default()).unwrap_err(),
        JoseError::NoKeys
    );
}

#[test]
fn unknown_kid_that_is_unsafe_to_print_is_not_shown() {
    let hostile = SigningKey::from_seed(9, Some("a\"b\r\nSet-Cookie: x"));
    let error = verify(&hostile.mint(&session_claims()), &keys_of(&[&key()])).unwrap_err();
    assert_eq!(
        TokenKind::SessionToken.refusal(&error),
        "The session token was signed by an unknown key."
    );
}

// ---- claims ---------------------------------------------------------------------------------------

#[test]
fn missing_exp_is_refused() {
    assert_eq!(
        reject(&key().mint(&without_claim("exp"))),
        JoseError::MissingClaim("exp")
    );
}

#[test]
fn string_exp_is_refused() {
    let token = key().mint(&with_claim("exp", json!((NOW + 300).to_string())));
    assert_eq!(reject(&token), invalid_claim("exp", "is not a number"));
    let token = key().mint(&with_claim("exp", json!(null)));
    assert_eq!(reject(&token), invalid_claim("exp", "is not a number"));
}

#[test]
fn expired_token_is_refused_and_leeway_is_honoured() {
    let leeway = TokenPolicy::default().leeway_s;
    let at = |exp: i64| key().mint(&with_claim("exp", json!(exp)));
    assert!(
        verify(&at(NOW - leeway + 1), &keys_of(&[&key()])).is_ok(),
        "inside the leeway"
    );
    assert_eq!(reject(&at(NOW - leeway)), JoseError::Expired);
    assert_eq!(reject(&at(NOW - 3600)), JoseError::Expired);
    let strict = TokenPolicy {
        leeway_s: 0,
        ..TokenPolicy::default()
    };
    assert_eq!(
        verify_with_keys(&at(NOW), &keys_of(&[&key()]), &strict, NOW).unwrap_err(),
        JoseError::Expired
    );
    assert!(verify_with_keys(&at(NOW + 1), &keys_of(&[&key()]), &strict, NOW).is_ok());
}

#[test]
fn future_nbf_is_refused() {
    let leeway = TokenPolicy::default().leeway_s;
    assert_eq!(
        reject(&key().mint(&with_claim("nbf", json!(NOW + leeway + 1)))),
        JoseError::NotYetValid
    );
    assert!(
        verify(
            &key().mint(&with_claim("nbf", json!(NOW + leeway))),
            &keys_of(&[&key()])
        )
        .is_ok()
    );
    assert_eq!(
        reject(&key().mint(&with_claim("nbf", json!("soon")))),
        invalid_claim("nbf", "is not a number")
    );
}

#[test]
fn future_iat_is_refused() {
    let leeway = TokenPolicy::default().leeway_s;
    assert_eq!(
        reject(&key().mint(&with_claim("iat", json!(NOW + leeway + 1)))),
        JoseError::IssuedInFuture
    );
    assert!(
        verify(
            &key().mint(&with_claim("iat", json!(NOW + leeway))),
            &keys_of(&[&key()])
        )
        .is_ok()
    );
    assert_eq!(
        reject(&key().mint(&with_claim("iat", json!(true)))),
        invalid_claim("iat", "is not a number")
    );
}

#[test]
fn missing_identity_claims_are_refused() {
    assert_eq!(
        reject(&key().mint(&without_claim("tenantId"))),
        JoseError::MissingClaim("tenantId")
    );
    assert_eq!(
        reject(&key().mint(&without_claim("userId"))),
        JoseError::MissingClaim("userId")
    );
    assert_eq!(
        reject(&key().mint(&without_claim("tenantSlug"))),
        JoseError::MissingClaim("tenantSlug")
    );
}

#[test]
fn non_uuid_ids_are_refused() {
    let not_uuid = invalid_claim("tenantId", "is not a UUID");
    for spelling in [
        "acme",
        "",
        "7c9e6679742540de944be07fc1f90ae7",
        "{7c9e6679-7425-40de-944b-e07fc1f90ae7}",
        "urn:uuid:7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "7c9e6679-7425-40de-944b-e07fc1f90ae",
        "7c9e6679-7425-40de-944b-e07fc1f90aeg",
    ] {
        assert_eq!(
            reject(&key().mint(&with_claim("tenantId", json!(spelling)))),
            not_uuid,
            "{spelling:?}"
        );
    }
    assert_eq!(
        reject(&key().mint(&with_claim("userId", json!("42")))),
        invalid_claim("userId", "is not a UUID")
    );
    assert_eq!(
        reject(&key().mint(&with_claim("userId", json!(42)))),
        invalid_claim("userId", "is not a string")
    );
}

#[test]
fn cr_lf_in_a_claim_is_refused() {
    let injected = format!("{TENANT_ID}\r\nX-Tenant-ID: 00000000-0000-4000-8000-000000000001");
    assert_eq!(
        reject(&key().mint(&with_claim("tenantId", json!(injected)))),
        invalid_claim("tenantId", "is not a UUID")
    );
    let injected = format!("{}\r\n", &USER_ID[..34]);
    assert_eq!(
        reject(&key().mint(&with_claim("userId", json!(injected)))),
        invalid_claim("userId", "is not a UUID")
    );
    assert_eq!(
        reject(&key().mint(&with_claim("tenantSlug", json!("acme\r\nX-User-ID: admin")))),
        invalid_claim("tenantSlug", "contains a control character")
    );
}

#[test]
fn empty_slug_is_refused() {
    assert_eq!(
        reject(&key().mint(&with_claim("tenantSlug", json!("")))),
        invalid_claim("tenantSlug", "is empty")
    );
    assert_eq!(
        reject(&key().mint(&with_claim("tenantSlug", json!(7)))),
        invalid_claim("tenantSlug", "is not a string")
    );
}

#[test]
fn control_characters_in_the_slug_are_refused() {
    for slug in [
        "a\u{0}b",
        "tab\there",
        "del\u{7f}",
        "c1\u{85}",
        "esc\u{1b}[0m",
    ] {
        assert_eq!(
            reject(&key().mint(&with_claim("tenantSlug", json!(slug)))),
            invalid_claim("tenantSlug", "contains a control character"),
            "{slug:?}"
        );
    }
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let policy = TokenPolicy {
        issuer: Some("https://issuer.example".into()),
        audience: vec!["app-1".into()],
        ..TokenPolicy::default()
    };
    let keys = keys_of(&[&key()]);
    let check = |claims: Value| verify_with_keys(&key().mint(&claims), &keys, &policy, NOW);
    let mut good = session_claims();
    good["iss"] = json!("https://issuer.example");
    good["aud"] = json!(["other", "app-1"]);
    assert!(check(good.clone()).is_ok());
    good["aud"] = json!("app-1");
    assert!(check(good.clone()).is_ok());

    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!(["other"]);
    assert_eq!(check(wrong_aud).unwrap_err(), JoseError::WrongAudience);
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    assert_eq!(check(wrong_iss).unwrap_err(), JoseError::WrongIssuer);
    let mut no_iss = good.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_eq!(check(no_iss).unwrap_err(), JoseError::MissingClaim("iss"));
    let mut no_aud = good;
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(check(no_aud).unwrap_err(), JoseError::MissingClaim("aud"));
    // Without configuration, iss and aud are not looked at.
    assert!(verify(&key().mint(&with_claim("iss", json!(5))), &keys).is_ok());
}

#[test]
fn claims_are_checked_only_after_the_signature() {
    // An expired token with a forged signature is reported as a signature failure, so an
    // attacker learns nothing about claim checks from unsigned tokens.
    let token = with_signature(&key().mint(&with_claim("exp", json!(0))), &[7u8; 64]);
    assert_eq!(reject(&token), JoseError::NoKeyMatches { tried: 1 });
}

#[test]
fn error_messages_are_human_sentences_naming_the_token_by_its_flow() {
    let session = |error: JoseError| TokenKind::SessionToken.refusal(&error);
    let app = |error: JoseError| TokenKind::AppToken.refusal(&error);
    assert_eq!(
        session(JoseError::Expired),
        "The session token has expired."
    );
    assert_eq!(app(JoseError::Expired), "The app token has expired.");
    assert_eq!(
        session(JoseError::BadSignature),
        "The session token's signature does not match its key."
    );
    assert_eq!(
        app(JoseError::Malformed(Malformed::Padding)),
        "The app token is malformed: it uses base64 padding ('='), which compact JWS does not allow."
    );
    assert_eq!(
        app(JoseError::UnsupportedAlgorithm),
        "The app token is not signed with an algorithm accepted here (RS256)."
    );
    // Without a flow, the plain message names neither.
    assert_eq!(JoseError::Expired.to_string(), "The token has expired.");
}
