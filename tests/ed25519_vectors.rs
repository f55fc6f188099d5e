//! Public Ed25519 test vectors: Project Wycheproof and ed25519-speccheck, read at test time
//! from `tests/vectors/` (provenance and licences in tests/vectors/README.md), and
//! RFC 8037 Appendix A, printed below.

use jtl_auth_sidecar::jose::{
    CompactJws, Ed25519Key, JoseError, JwkError, JwkSet, Malformed, Part, TokenPolicy,
};
use jtl_auth_sidecar::verify::verify_with_keys;
use serde_json::{Value, json};

fn testdata(path: &str) -> Value {
    let full = format!("{}/tests/vectors/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("cannot read {full}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full} is not JSON: {e}"))
}

fn unhex(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().expect("hex string")).expect("valid hex")
}

#[test]
fn wycheproof_valid_cases_verify_and_invalid_cases_fail() {
    let suite = testdata("wycheproof/ed25519_test.json");
    let mut checked = 0;
    let (mut valid, mut invalid) = (0, 0);
    for group in suite["testGroups"].as_array().expect("testGroups") {
        let public = unhex(&group["publicKey"]["pk"]);
        let key = Ed25519Key::from_public_bytes(None, &public)
            .unwrap_or_else(|e| panic!("Wycheproof key {} refused: {e}", group["publicKey"]["pk"]));
        for case in group["tests"].as_array().expect("tests") {
            let message = unhex(&case["msg"]);
            let signature = unhex(&case["sig"]);
            let expected = match case["result"].as_str() {
                Some("valid") => true,
                Some("invalid") => false,
                other => panic!("tcId {}: unexpected result {other:?}", case["tcId"]),
            };
            assert_eq!(
                key.verify(&message, &signature),
                expected,
                "tcId {} ({}): expected {}",
                case["tcId"],
                case["comment"],
                case["result"]
            );
            checked += 1;
            if expected { valid += 1 } else { invalid += 1 }
        }
    }
    assert_eq!(checked, suite["numberOfTests"].as_u64().unwrap() as usize);
    assert_eq!((valid, invalid), (88, 63));
}

/// How each ed25519-speccheck case must end, by index. Keys are checked when a key set
/// is loaded; only keys that pass are used to verify.
///
/// Our call on mixed-order keys (a prime-order point plus a torsion component): refused,
/// like small-order ones. Honest key generation never yields them, and they are exactly
/// where cofactored and cofactorless verifiers disagree (cases 2-5, 8, 9), so refusing them
/// leaves no case whose outcome depends on the verification equation.
#[derive(Debug, PartialEq)]
enum Outcome {
    KeyRefused(JwkError),
    SignatureRefused,
}

#[test]
fn speccheck_cases_end_as_decided() {
    use Outcome::*;
    let expected = [
        KeyRefused(JwkError::SmallOrder), // 0: small-order A, small-order R
        KeyRefused(JwkError::SmallOrder), // 1: small-order A, mixed-order R
        KeyRefused(JwkError::MixedOrder), // 2: mixed-order A (ring alone accepts)
        KeyRefused(JwkError::MixedOrder), // 3: mixed-order A (ring alone accepts)
        KeyRefused(JwkError::MixedOrder), // 4: mixed-order A and R, cofactored only
        KeyRefused(JwkError::MixedOrder), // 5: mixed-order A and R, cofactored only
        SignatureRefused,                 // 6: S out of range (S > L)
        SignatureRefused,                 // 7: S much larger than L
        KeyRefused(JwkError::MixedOrder), // 8: non-canonical R, mixed-order A
        KeyRefused(JwkError::MixedOrder), // 9: non-canonical R, mixed-order A
        KeyRefused(JwkError::NonCanonical), // 10: non-canonical A
        KeyRefused(JwkError::NonCanonical), // 11: non-canonical A (ring alone accepts)
    ];
    let cases = testdata("ed25519-speccheck/cases.json");
    let cases = cases.as_array().expect("array of cases");
    assert_eq!(cases.len(), expected.len());
    for (index, (case, expected)) in cases.iter().zip(expected).enumerate() {
        let outcome = match Ed25519Key::from_public_bytes(None, &unhex(&case["pub_key"])) {
            Err(reason) => KeyRefused(reason),
            Ok(key) => {
                assert!(
                    !key.verify(&unhex(&case["message"]), &unhex(&case["signature"])),
                    "case {index}: signature must not verify"
                );
                SignatureRefused
            }
        };
        assert_eq!(outcome, expected, "case {index}");
    }
}

#[test]
fn speccheck_small_order_and_non_canonical_keys_are_refused_in_a_jwks() {
    let cases = testdata("ed25519-speccheck/cases.json");
    let jwk = |index: usize| {
        let x = unhex(&cases[index]["pub_key"]);
        json!({"kty": "OKP", "crv": "Ed25519", "kid": format!("case-{index}"),
               "x": jtl_auth_sidecar::jose::base64url_encode(&x)})
    };
    let document = json!({"keys": [jwk(0), jwk(1), jwk(10), jwk(11)]}).to_string();
    let (set, skipped) = JwkSet::from_json(document.as_bytes()).unwrap();
    assert!(set.is_empty());
    let reasons: Vec<_> = skipped
        .iter()
        .map(|s| (s.kid.clone().unwrap(), s.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("case-0".into(), JwkError::SmallOrder),
            ("case-1".into(), JwkError::SmallOrder),
            ("case-10".into(), JwkError::NonCanonical),
            ("case-11".into(), JwkError::NonCanonical),
        ]
    );
}

// RFC 8037 Appendix A (A.2 public key, A.3 thumbprint, A.4 signed example), values as
// printed in the RFC: https://www.rfc-editor.org/rfc/rfc8037#appendix-A
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
const RFC8037_A4: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

fn rfc8037_key() -> Ed25519Key {
    Ed25519Key::from_jwk(&json!({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}))
        .expect("RFC 8037 key")
}

#[test]
fn rfc8037_key_has_the_printed_thumbprint() {
    assert_eq!(rfc8037_key().thumbprint(), RFC8037_THUMBPRINT);
}

#[test]
fn rfc8037_a4_signature_verifies_and_fails_with_one_byte_changed() {
    let key = rfc8037_key();
    let (signing_input, signature) = RFC8037_A4.rsplit_once('.').unwrap();
    let signature = base64_decode(signature);
    assert!(key.verify(signing_input.as_bytes(), &signature));

    let mut altered_signature = signature.clone();
    altered_signature[10] ^= 0x01;
    assert!(!key.verify(signing_input.as_bytes(), &altered_signature));

    let mut altered_input = signing_input.as_bytes().to_vec();
    altered_input[0] ^= 0x01;
    assert!(!key.verify(&altered_input, &signature));
}

#[test]
fn rfc8037_a4_is_refused_as_a_session_token() {
    // Its structure and signature are fine, but the payload is text, not a JSON object.
    assert_eq!(
        CompactJws::parse(RFC8037_A4, 8192).unwrap_err(),
        JoseError::Malformed(Malformed::Json(Part::Payload))
    );
    let keys = JwkSet::from_keys([rfc8037_key()]);
    assert_eq!(
        verify_with_keys(RFC8037_A4, &keys, &TokenPolicy::default(), 0).unwrap_err(),
        JoseError::Malformed(Malformed::Json(Part::Payload))
    );
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .expect("base64url")
}
