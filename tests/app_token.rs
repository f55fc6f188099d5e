//! App-token verification (SPEC §11): every check of JTL's `verifyAppToken` (signature and
//! issuer, audience, app id) and the shared JWS rules, one test per rejection class. The
//! tokens are real RS256 signatures made with ring and the emulator's fixed test-only keys.

use jtl_auth_sidecar::jose::{
    JoseError, JwkError, JwkSet, KeyKind, Malformed, Part, TokenKind, TokenPolicy, base64url_encode,
};
use jtl_auth_sidecar::verify::{VerifiedSession, verify_with_keys};
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use std::sync::Arc;

const NOW: i64 = 1_790_000_000;
const ISSUER: &str = "https://id.jtl-cloud.com";
const APP_ID: &str = "312909075212468632";
const TENANT: &str = "7C9E6679-7425-40DE-944B-E07FC1F90AE7";
const SUB: &str = "312909075212468999";

struct RsaSigner {
    pair: RsaKeyPair,
    kid: &'static str,
}

impl RsaSigner {
    fn new(der: &[u8], kid: &'static str) -> RsaSigner {
        RsaSigner {
            pair: RsaKeyPair::from_pkcs8(der).unwrap(),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        let public = PublicKeyComponents::<Vec<u8>>::from(self.pair.public());
        json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
               "n": base64url_encode(&public.n), "e": base64url_encode(&public.e)})
    }

    fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            base64url_encode(header.to_string().as_bytes()),
            base64url_encode(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .unwrap();
        format!("{input}.{}", base64url_encode(&signature))
    }

    fn mint(&self, claims: &Value) -> String {
        self.sign_raw(
            &json!({"alg": "RS256", "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

fn signer() -> RsaSigner {
    RsaSigner::new(
        include_bytes!("../src/emulator/keys/rsa2048-1.pk8"),
        "298817363741638659",
    )
}

fn claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": SUB,
        "aud": [APP_ID, "312909075212460000"],
        "urn:jtl:tenant_id": TENANT,
        "urn:jtl:app_id": APP_ID,
        "iat": NOW - 10,
        "exp": NOW + 300,
    })
}

fn with(name: &str, value: Value) -> Value {
    let mut claims = claims();
    claims[name] = value;
    claims
}

fn without(name: &str) -> Value {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn policy() -> TokenPolicy {
    TokenPolicy {
        kind: TokenKind::AppToken,
        issuer: Some(ISSUER.into()),
        audience: vec![APP_ID.into()],
        ..TokenPolicy::default()
    }
}

/// The key set as Zitadel publishes it: EC and OKP keys beside the RSA ones, numeric kids.
fn zitadel_document(rsa: &[&RsaSigner]) -> Value {
    let mut keys = vec![
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "298817363741600001",
               "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}),
        json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "298817363741600002",
               "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
    ];
    keys.extend(rsa.iter().map(|signer| signer.jwk()));
    json!({ "keys": keys })
}

fn keys_of(rsa: &[&RsaSigner]) -> JwkSet {
    let document = zitadel_document(rsa).to_string();
    let (set, skipped) = JwkSet::from_json_of(document.as_bytes(), KeyKind::Rsa).unwrap();
    assert_eq!(skipped.len(), 2, "the EC and OKP keys are skipped");
    set
}

fn verify(token: &str) -> Result<Arc<VerifiedSession>, JoseError> {
    verify_with_keys(token, &keys_of(&[&signer()]), &policy(), NOW)
}

fn reject(claims: &Value) -> JoseError {
    let token = signer().mint(claims);
    let error = verify(&token).expect_err("token must be refused");
    let message = error.to_string();
    for segment in token.split('.').filter(|s| s.len() >= 8) {
        assert!(!message.contains(segment), "{message:?} echoes the token");
    }
    error
}

// ---- accepted --------------------------------------------------------------------------

#[test]
fn a_valid_app_token_gives_the_tenant_lowercase_and_the_numeric_sub_as_is() {
    let session = verify(&signer().mint(&claims())).unwrap().session().clone();
    assert_eq!(
        session.tenant_id.hyphenated().to_string(),
        TENANT.to_lowercase()
    );
    assert_eq!(session.user_id, SUB);
    assert_eq!(session.tenant_slug, None, "app tokens carry no slug");
}

#[test]
fn aud_may_be_a_plain_string_and_app_id_may_be_absent() {
    assert!(verify(&signer().mint(&with("aud", json!(APP_ID)))).is_ok());
    assert!(verify(&signer().mint(&without("urn:jtl:app_id"))).is_ok());
}

#[test]
fn a_4096_bit_key_verifies() {
    let big = RsaSigner::new(
        include_bytes!("../src/emulator/keys/rsa4096.pk8"),
        "298817363741638660",
    );
    let keys = keys_of(&[&signer(), &big]);
    assert!(verify_with_keys(&big.mint(&claims()), &keys, &policy(), NOW).is_ok());
}

// ---- JTL's three checks -----------------------------------------------------------------

/// The config always gives app tokens an issuer and an app id; a policy without them
/// refuses every app token instead of skipping the check.
#[test]
fn an_app_token_policy_without_issuer_or_app_id_refuses() {
    let token = signer().mint(&claims());
    let keys = keys_of(&[&signer()]);
    let no_issuer = TokenPolicy {
        issuer: None,
        ..policy()
    };
    assert_eq!(
        verify_with_keys(&token, &keys, &no_issuer, NOW).unwrap_err(),
        JoseError::WrongIssuer
    );
    let no_app = TokenPolicy {
        audience: Vec::new(),
        ..policy()
    };
    assert_eq!(
        verify_with_keys(&token, &keys, &no_app, NOW).unwrap_err(),
        JoseError::WrongAudience
    );
}

/// During a move to a new app registration `session.audience` lists both app ids: a token
/// for either passes, and `urn:jtl:app_id` must be one of them that the token's own `aud`
/// holds (not merely one the sidecar accepts).
#[test]
fn an_audience_list_accepts_either_app_and_the_app_id_must_be_one_the_token_is_for() {
    const NEW_APP: &str = "312909075212469999";
    let moving = TokenPolicy {
        audience: vec![APP_ID.into(), NEW_APP.into()],
        ..policy()
    };
    let check = |aud: Value, app_id: Option<&str>| {
        let mut claims = with("aud", aud);
        match app_id {
            Some(app_id) => claims["urn:jtl:app_id"] = json!(app_id),
            None => {
                claims.as_object_mut().unwrap().remove("urn:jtl:app_id");
            }
        }
        verify_with_keys(
            &signer().mint(&claims),
            &keys_of(&[&signer()]),
            &moving,
            NOW,
        )
        .map(|_| ())
    };
    assert_eq!(check(json!([APP_ID]), Some(APP_ID)), Ok(()));
    assert_eq!(check(json!(NEW_APP), Some(NEW_APP)), Ok(()));
    assert_eq!(check(json!([NEW_APP, "other"]), None), Ok(()));
    assert_eq!(check(json!(["other"]), None), Err(JoseError::WrongAudience));
    // The app id names the other accepted app, which this token is not for.
    assert_eq!(
        check(json!([NEW_APP]), Some(APP_ID)),
        Err(JoseError::WrongAppId)
    );
    // An app id the token is for, but not one the sidecar accepts.
    assert_eq!(
        check(json!([NEW_APP, "other"]), Some("other")),
        Err(JoseError::WrongAppId)
    );
}

#[test]
fn the_audience_must_contain_the_app_id_exactly() {
    assert_eq!(reject(&without("aud")), JoseError::MissingClaim("aud"));
    assert_eq!(
        reject(&with("aud", json!("another-app"))),
        JoseError::WrongAudience
    );
    assert_eq!(
        reject(&with("aud", json!(["a", "b"]))),
        JoseError::WrongAudience
    );
    // Case-sensitive, and never a prefix or a number standing for the string.
    assert_eq!(
        reject(&with("aud", json!("APP-1")).clone()),
        JoseError::WrongAudience
    );
    let policy = TokenPolicy {
        audience: vec!["app-1".into()],
        ..policy()
    };
    let token = signer().mint(&with("aud", json!("App-1")));
    assert_eq!(
        verify_with_keys(&token, &keys_of(&[&signer()]), &policy, NOW).unwrap_err(),
        JoseError::WrongAudience
    );
    assert_eq!(
        reject(&with("aud", json!(312909075212468632u64))),
        JoseError::WrongAudience
    );
    assert_eq!(
        reject(&with("aud", json!(format!("{APP_ID}0")))),
        JoseError::WrongAudience
    );
}

#[test]
fn the_app_id_claim_when_present_must_equal_the_app_id() {
    assert_eq!(
        reject(&with("urn:jtl:app_id", json!("312909075212460000"))),
        JoseError::WrongAppId
    );
    assert_eq!(
        reject(&with("urn:jtl:app_id", json!(""))),
        JoseError::WrongAppId
    );
    assert_eq!(
        reject(&with("urn:jtl:app_id", json!(312909075212468632u64))),
        JoseError::InvalidClaim {
            claim: "urn:jtl:app_id",
            reason: "is not a string"
        }
    );
    assert_eq!(
        reject(&with("urn:jtl:app_id", Value::Null)),
        JoseError::InvalidClaim {
            claim: "urn:jtl:app_id",
            reason: "is not a string"
        }
    );
}

#[test]
fn the_issuer_must_be_zitadel_exactly() {
    assert_eq!(reject(&without("iss")), JoseError::MissingClaim("iss"));
    for other in [
        "https://id.jtl-cloud.com/",
        "https://ID.jtl-cloud.com",
        "https://evil.example",
        "",
    ] {
        assert_eq!(
            reject(&with("iss", json!(other))),
            JoseError::WrongIssuer,
            "{other}"
        );
    }
}

// ---- lifetime ---------------------------------------------------------------------------

#[test]
fn exp_nbf_and_iat_are_checked_with_the_leeway() {
    // leeway_s defaults to 30.
    assert!(verify(&signer().mint(&with("exp", json!(NOW - 29)))).is_ok());
    assert_eq!(reject(&with("exp", json!(NOW - 30))), JoseError::Expired);
    assert_eq!(reject(&without("exp")), JoseError::MissingClaim("exp"));
    assert!(matches!(
        reject(&with("exp", json!("1790000300"))),
        JoseError::InvalidClaim { claim: "exp", .. }
    ));
    assert!(verify(&signer().mint(&with("nbf", json!(NOW + 30)))).is_ok());
    assert_eq!(
        reject(&with("nbf", json!(NOW + 31))),
        JoseError::NotYetValid
    );
    assert!(verify(&signer().mint(&with("iat", json!(NOW + 30)))).is_ok());
    assert_eq!(
        reject(&with("iat", json!(NOW + 31))),
        JoseError::IssuedInFuture
    );
}

// ---- identity ---------------------------------------------------------------------------

#[test]
fn the_tenant_must_be_a_uuid() {
    assert_eq!(
        reject(&without("urn:jtl:tenant_id")),
        JoseError::MissingClaim("urn:jtl:tenant_id")
    );
    for bad in [
        json!("acme"),
        json!(42),
        json!("7c9e6679742540de944be07fc1f90ae7"),
    ] {
        assert!(
            matches!(
                reject(&with("urn:jtl:tenant_id", bad.clone())),
                JoseError::InvalidClaim {
                    claim: "urn:jtl:tenant_id",
                    ..
                }
            ),
            "{bad}"
        );
    }
    // A session token's tenantId does not count in this flow.
    let mut session_shaped = without("urn:jtl:tenant_id");
    session_shaped["tenantId"] = json!(TENANT);
    assert_eq!(
        reject(&session_shaped),
        JoseError::MissingClaim("urn:jtl:tenant_id")
    );
}

#[test]
fn sub_must_be_plain_text_of_1_to_255_characters() {
    assert_eq!(reject(&without("sub")), JoseError::MissingClaim("sub"));
    for (bad, reason) in [
        (
            json!("12\r\nX-Tenant-ID: evil"),
            "contains a control character",
        ),
        (json!("a\u{0}b"), "contains a control character"),
        (json!(""), "is empty"),
        (json!("x".repeat(256)), "is longer than 255 characters"),
        (json!(312909075212468999u64), "is not a string"),
    ] {
        assert_eq!(
            reject(&with("sub", bad.clone())),
            JoseError::InvalidClaim {
                claim: "sub",
                reason
            },
            "{bad}"
        );
    }
    assert!(verify(&signer().mint(&with("sub", json!("x".repeat(255))))).is_ok());
}

#[test]
fn duplicate_claims_are_refused() {
    let signer = signer();
    let token = signer.mint(&claims());
    let header = base64url_encode(br#"{"alg":"RS256","typ":"JWT","kid":"298817363741638659"}"#);
    let payload = base64url_encode(
        format!(r#"{{"iss":"{ISSUER}","sub":"1","aud":"{APP_ID}","urn:jtl:tenant_id":"{TENANT}","exp":{},"urn:jtl:tenant_id":"00000000-0000-4000-8000-000000000666"}}"#, NOW + 60).as_bytes(),
    );
    let forged = format!("{header}.{payload}.{}", token.rsplit('.').next().unwrap());
    assert_eq!(
        verify(&forged).unwrap_err(),
        JoseError::Malformed(Malformed::DuplicateKey(Part::Payload))
    );
    let duplicate_alg = signer.sign_raw(&json!({"alg": "RS256", "kid": signer.kid}), &claims());
    let (_, rest) = duplicate_alg.split_once('.').unwrap();
    let header = base64url_encode(br#"{"alg":"RS256","alg":"none","kid":"298817363741638659"}"#);
    assert_eq!(
        verify(&format!("{header}.{rest}")).unwrap_err(),
        JoseError::Malformed(Malformed::DuplicateKey(Part::Header))
    );
}

// ---- keys and algorithms ----------------------------------------------------------------

#[test]
fn the_kid_is_required_and_must_name_a_usable_rsa_key() {
    let signer = signer();
    let no_kid = signer.sign_raw(&json!({"alg": "RS256", "typ": "JWT"}), &claims());
    assert_eq!(verify(&no_kid).unwrap_err(), JoseError::MissingKid);
    for kid in ["1", "298817363741600001", "298817363741600002"] {
        // Unknown, the EC key's and the OKP key's kid: none is a usable key.
        let token = signer.sign_raw(&json!({"alg": "RS256", "kid": kid}), &claims());
        assert_eq!(
            verify(&token).unwrap_err(),
            JoseError::UnknownKey { kid: kid.into() },
            "{kid}"
        );
    }
    // Signed by another RSA key than the one its kid names.
    let other = RsaSigner::new(
        include_bytes!("../src/emulator/keys/rsa2048-2.pk8"),
        "298817363741638659",
    );
    assert_eq!(
        verify(&other.mint(&claims())).unwrap_err(),
        JoseError::BadSignature
    );
}

#[test]
fn only_rs256_is_accepted() {
    let signer = signer();
    for alg in ["RS384", "RS512", "PS256", "ES256", "none", "HS256", "rs256"] {
        let token = signer.sign_raw(&json!({"alg": alg, "kid": signer.kid}), &claims());
        assert_eq!(
            verify(&token).unwrap_err(),
            JoseError::UnsupportedAlgorithm,
            "{alg}"
        );
    }
    // EdDSA is the other flow's algorithm: refused as a session token, so the 401 can say
    // what to change.
    let token = signer.sign_raw(&json!({"alg": "EdDSA", "kid": signer.kid}), &claims());
    assert_eq!(
        verify(&token).unwrap_err(),
        JoseError::OtherKind(TokenKind::SessionToken)
    );
    // HS256 "signed" with the public key as the HMAC secret (the classic confusion).
    let jwk = signer.jwk();
    let input = format!(
        "{}.{}",
        base64url_encode(br#"{"alg":"HS256","kid":"298817363741638659"}"#),
        base64url_encode(claims().to_string().as_bytes())
    );
    let mac_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        jwk["n"].as_str().unwrap().as_bytes(),
    );
    let tag = ring::hmac::sign(&mac_key, input.as_bytes());
    let token = format!("{input}.{}", base64url_encode(tag.as_ref()));
    assert_eq!(verify(&token).unwrap_err(), JoseError::UnsupportedAlgorithm);
    // An RS256 header over a 64-byte (EdDSA-sized) signature.
    let header = base64url_encode(br#"{"alg":"RS256","kid":"298817363741638659"}"#);
    let body = base64url_encode(claims().to_string().as_bytes());
    let short = format!("{header}.{body}.{}", base64url_encode(&[7; 64]));
    assert_eq!(
        verify(&short).unwrap_err(),
        JoseError::Malformed(Malformed::SignatureLength)
    );
}

#[test]
fn crit_is_refused_and_embedded_keys_are_never_used() {
    let signer = signer();
    let crit = signer.sign_raw(
        &json!({"alg": "RS256", "kid": signer.kid, "crit": ["exp"]}),
        &claims(),
    );
    assert_eq!(verify(&crit).unwrap_err(), JoseError::CriticalHeader);
    // A token that brings its own key (jwk) and names no known kid is still unknown.
    let attacker = RsaSigner::new(
        include_bytes!("../src/emulator/keys/rsa2048-3.pk8"),
        "attacker",
    );
    let token = attacker.sign_raw(
        &json!({"alg": "RS256", "kid": "attacker", "jwk": attacker.jwk(), "jku": "https://evil.example/keys"}),
        &claims(),
    );
    assert_eq!(
        verify(&token).unwrap_err(),
        JoseError::UnknownKey {
            kid: "attacker".into()
        }
    );
}

#[test]
fn keys_under_2048_bits_and_other_kinds_are_skipped_with_the_reason() {
    // A 1024-bit odd modulus (its factors do not matter: it is refused by size).
    let mut n = vec![0xc3u8; 128];
    n[127] = 0x01;
    let small = json!({"kty": "RSA", "kid": "small", "n": base64url_encode(&n), "e": "AQAB"});
    let mut document = zitadel_document(&[&signer()]);
    document["keys"].as_array_mut().unwrap().push(small);
    document["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "kid": "rs512", "alg": "RS512", "n": signer().jwk()["n"], "e": "AQAB"}));
    document["keys"].as_array_mut().unwrap().push(
        json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": signer().jwk()["n"], "e": "AQAB"}),
    );
    let (set, skipped) =
        JwkSet::from_json_of(document.to_string().as_bytes(), KeyKind::Rsa).unwrap();
    assert_eq!(set.len(), 1);
    let reasons: Vec<(Option<String>, JwkError)> = skipped
        .into_iter()
        .map(|skip| (skip.kid, skip.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (Some("298817363741600001".into()), JwkError::WrongKeyType),
            (Some("298817363741600002".into()), JwkError::WrongKeyType),
            (
                Some("small".into()),
                JwkError::ModulusTooSmall { bits: 1024 }
            ),
            (Some("rs512".into()), JwkError::WrongAlgorithm),
            (Some("enc".into()), JwkError::NotForSignatures),
        ]
    );
    let token = signer().sign_raw(&json!({"alg": "RS256", "kid": "small"}), &claims());
    assert_eq!(
        verify_with_keys(&token, &set, &policy(), NOW).unwrap_err(),
        JoseError::UnknownKey {
            kid: "small".into()
        }
    );
}

#[test]
fn a_session_token_is_not_an_app_token_and_an_app_token_is_not_a_session_token() {
    // An RS256 app token presented to the session-token flow is refused by its alg, as
    // the app token it is.
    let token = signer().mint(&claims());
    let session_policy = TokenPolicy::default();
    assert_eq!(
        verify_with_keys(&token, &keys_of(&[&signer()]), &session_policy, NOW).unwrap_err(),
        JoseError::OtherKind(TokenKind::AppToken)
    );
}
