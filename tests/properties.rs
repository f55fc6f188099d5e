//! Properties (proptest) of the token parsers of both flows, the JWKS parser, and the
//! proxy: arbitrary input never panics, every change to a valid token is refused, and a
//! refused token forwards nothing. The fuzz targets in fuzz/ explore the same code for
//! longer; these run with every `cargo test`, with modest case counts.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::harness::{TENANT, USER};
use common::proxy::{Proxy, get};
use common::{NOW, SigningKey, session_claims};
use jtl_auth_sidecar::emulator::DEV_APP_USER_ID;
use jtl_auth_sidecar::jose::{
    Algorithm, CompactJws, JwkSet, KeyKind, TokenKind, TokenPolicy, base64url_encode,
};
use jtl_auth_sidecar::verify::verify_with_keys;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use ring::rand::SystemRandom;
use ring::rsa::PublicKeyComponents;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};

const ISSUER: &str = "https://id.jtl-cloud.com";
const APP_ID: &str = "312909075212468632";
const RSA_KID: &str = "298817363741638659";

/// One flow's policy, key set and a token it accepts at [`NOW`].
struct Flow {
    policy: TokenPolicy,
    keys: JwkSet,
    valid: String,
}

impl Flow {
    fn accepts(&self, token: &str) -> bool {
        verify_with_keys(token, &self.keys, &self.policy, NOW).is_ok()
    }
}

fn rsa_jwk(pair: &RsaKeyPair, kid: &str) -> Value {
    let public = PublicKeyComponents::<Vec<u8>>::from(pair.public());
    json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
           "n": base64url_encode(&public.n), "e": base64url_encode(&public.e)})
}

/// The session-token flow: two Ed25519 keys; the valid token names none (JTL's form).
fn session_flow() -> &'static Flow {
    static FLOW: OnceLock<Flow> = OnceLock::new();
    FLOW.get_or_init(|| {
        let named = SigningKey::from_seed(1, Some("k1"));
        let unnamed = SigningKey::from_seed(2, None);
        Flow {
            policy: TokenPolicy::default(),
            keys: JwkSet::from_keys([named.public_key(), unnamed.public_key()]),
            valid: unnamed.mint(&session_claims()),
        }
    })
}

/// The app-token flow: the emulator's first two test-only RSA keys, parsed from a JWKS.
fn app_flow() -> &'static Flow {
    static FLOW: OnceLock<Flow> = OnceLock::new();
    FLOW.get_or_init(|| {
        let pair =
            RsaKeyPair::from_pkcs8(include_bytes!("../src/emulator/keys/rsa2048-1.pk8")).unwrap();
        let other =
            RsaKeyPair::from_pkcs8(include_bytes!("../src/emulator/keys/rsa2048-2.pk8")).unwrap();
        let document = json!({"keys": [rsa_jwk(&pair, RSA_KID), rsa_jwk(&other, "other")]});
        let (keys, _) =
            JwkSet::from_json_of(document.to_string().as_bytes(), KeyKind::Rsa).unwrap();
        let claims = json!({
            "iss": ISSUER, "sub": "312909075212468999", "aud": [APP_ID],
            "urn:jtl:tenant_id": TENANT, "urn:jtl:app_id": APP_ID,
            "iat": NOW - 10, "exp": NOW + 300,
        });
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": RSA_KID});
        let input = format!(
            "{}.{}",
            base64url_encode(header.to_string().as_bytes()),
            base64url_encode(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; pair.public().modulus_len()];
        pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut signature,
        )
        .unwrap();
        Flow {
            policy: TokenPolicy {
                kind: TokenKind::AppToken,
                issuer: Some(ISSUER.into()),
                audience: vec![APP_ID.into()],
                ..TokenPolicy::default()
            },
            keys,
            valid: format!("{input}.{}", base64url_encode(&signature)),
        }
    })
}

fn flows() -> [&'static Flow; 2] {
    [session_flow(), app_flow()]
}

// ---- mutations --------------------------------------------------------------------------

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

/// One change to a token: where (any position, taken modulo the length), what, and a
/// byte for the change to use.
#[derive(Debug, Clone, Copy)]
enum Edit {
    /// Replace a character with one of the token alphabet (dot included).
    Replace(usize, u8),
    /// Replace a character with any byte (`printable`: any visible ASCII or space).
    ReplaceRaw(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    /// Swap two characters.
    Swap(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Replace(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::ReplaceRaw(at, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Insert(at, b)),
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..4)
}

/// `token` with `edits` applied; `printable` keeps every byte visible ASCII (so that the
/// result can be sent as a header value).
fn mutated(token: &str, edits: &[Edit], printable: bool) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    let symbol = |b: u8| ALPHABET[usize::from(b) % ALPHABET.len()];
    let raw = |b: u8| if printable { 0x20 + b % 0x5f } else { b };
    for edit in edits {
        let len = bytes.len();
        match *edit {
            Edit::Replace(at, b) if len > 0 => bytes[at % len] = symbol(b),
            Edit::ReplaceRaw(at, b) if len > 0 => bytes[at % len] = raw(b),
            Edit::Insert(at, b) => bytes.insert(at % (len + 1), symbol(b)),
            Edit::Delete(at) if len > 0 => {
                bytes.remove(at % len);
            }
            Edit::Truncate(at) => bytes.truncate(at % (len + 1)),
            Edit::Swap(a, b) if len > 0 => bytes.swap(a % len, b % len),
            _ => {}
        }
    }
    bytes
}

// ---- (a) token parsers --------------------------------------------------------------------

#[test]
fn the_valid_tokens_verify() {
    for flow in flows() {
        assert!(flow.accepts(&flow.valid), "{}", flow.valid);
    }
}

proptest! {
    #![proptest_config(Config::with_cases(256))]

    #[test]
    fn arbitrary_strings_are_refused_without_panicking(text in any::<String>()) {
        for flow in flows() {
            prop_assert!(!flow.accepts(&text));
            for algorithm in [Algorithm::EdDSA, Algorithm::RS256] {
                prop_assert!(CompactJws::parse_as(&text, 8192, algorithm).is_err());
            }
        }
    }

    /// Three segments of the token alphabet get past the character checks to the
    /// decoding, JSON and signature-length checks.
    #[test]
    fn arbitrary_three_segment_tokens_are_refused(
        text in "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,120}\\.[A-Za-z0-9_-]{0,400}",
    ) {
        for flow in flows() {
            prop_assert!(!flow.accepts(&text));
        }
    }

    /// Well-formed headers and payloads of arbitrary JSON text, with a signature of the
    /// right length: refused at the strict JSON parse, the claims or the signature.
    #[test]
    fn arbitrary_json_under_a_valid_header_is_refused(
        header_tail in "(,\"[a-z]{1,4}\":(\"[a-z]{0,4}\"|[0-9]{1,3}|null|\\[\\]|\\{\\}))*",
        payload in "\\{(\"[a-zA-Z]{1,8}\":(\"[a-z0-9-]{0,40}\"|[0-9]{1,12}|true|\\[1\\]),?){0,6}\\}",
        signature in prop::collection::vec(any::<u8>(), 64..=64),
    ) {
        for (flow, alg, signature) in [
            (session_flow(), "EdDSA", signature.clone()),
            (app_flow(), "RS256", signature.repeat(4)),
        ] {
            let header = format!("{{\"alg\":\"{alg}\",\"kid\":\"{RSA_KID}\"{header_tail}}}");
            let token = format!(
                "{}.{}.{}",
                base64url_encode(header.as_bytes()),
                base64url_encode(payload.as_bytes()),
                base64url_encode(&signature)
            );
            prop_assert!(!flow.accepts(&token), "{token}");
        }
    }

    /// Any change to a valid token, of either flow, is refused.
    #[test]
    fn every_mutation_of_a_valid_token_is_refused(edits in edits()) {
        for flow in flows() {
            let bytes = mutated(&flow.valid, &edits, false);
            // A swap of two equal characters changes nothing: that token stays valid.
            if bytes == flow.valid.as_bytes() {
                prop_assert!(flow.accepts(&flow.valid));
                continue;
            }
            let Ok(token) = String::from_utf8(bytes) else {
                continue;
            };
            prop_assert!(!flow.accepts(&token), "accepted after {edits:?}: {token}");
        }
    }
}

// ---- (b) the JWKS parser --------------------------------------------------------------------

/// One JWK of any of the key types Zitadel publishes, with members that are right,
/// missing, or wrong.
fn jwk() -> impl Strategy<Value = Value> {
    let b64 = prop::collection::vec(any::<u8>(), 0..300).prop_map(|bytes| base64url_encode(&bytes));
    (
        prop::sample::select(vec!["OKP", "RSA", "EC", "oct", ""]),
        prop::sample::select(vec!["Ed25519", "P-256", "X25519", ""]),
        prop::option::of(prop::sample::select(vec!["sig", "enc"])),
        prop::option::of(prop::sample::select(vec![
            "EdDSA", "RS256", "ES256", "none",
        ])),
        prop::option::of("[a-z0-9]{0,6}"),
        prop::option::of(b64.clone()),
        prop::option::of(b64),
        prop::sample::select(vec!["AQAB", "Aw", "AQ", "AAEAAQ", "", "!"]),
    )
        .prop_map(|(kty, crv, key_use, alg, kid, x, n, e)| {
            let mut jwk = json!({"kty": kty, "crv": crv, "e": e});
            for (name, value) in [
                ("use", key_use.map(str::to_owned)),
                ("alg", alg.map(str::to_owned)),
                ("kid", kid),
                ("x", x),
                ("n", n),
            ] {
                if let Some(value) = value {
                    jwk[name] = json!(value);
                }
            }
            jwk
        })
}

proptest! {
    #![proptest_config(Config::with_cases(256))]

    #[test]
    fn the_jwks_parser_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        for kind in [KeyKind::Ed25519, KeyKind::Rsa] {
            let _ = JwkSet::from_json_of(&bytes, kind);
        }
    }

    /// Key sets of arbitrary keys: every entry is taken or skipped, once, and only keys
    /// of the flow's kind are taken.
    #[test]
    fn every_key_of_a_key_set_is_taken_or_skipped(
        keys in prop::collection::vec(jwk(), 0..8),
    ) {
        let document = json!({"keys": keys}).to_string();
        for kind in [KeyKind::Ed25519, KeyKind::Rsa] {
            let (set, skipped) = JwkSet::from_json_of(document.as_bytes(), kind).unwrap();
            prop_assert_eq!(set.len() + skipped.len(), keys.len());
            for key in set.keys() {
                let expected = match kind { KeyKind::Ed25519 => "OKP", KeyKind::Rsa => "RSA" };
                let entry = keys.iter().find(|entry| {
                    entry.get("kid").and_then(Value::as_str) == key.kid()
                        && entry["kty"] == expected
                });
                prop_assert!(entry.is_some(), "{key:?} is not of kind {kind}");
            }
        }
    }

    /// Changes to a real key set (both flows' keys, and Zitadel's EC key) never panic,
    /// and a changed document that still parses has every entry taken or skipped (the
    /// strict parser takes a subset of what serde_json takes).
    #[test]
    fn mutated_key_sets_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        let bytes = mutated(&app_key_document(), &edits, false);
        for kind in [KeyKind::Ed25519, KeyKind::Rsa] {
            if let Ok((set, skipped)) = JwkSet::from_json_of(&bytes, kind) {
                let document: Value = serde_json::from_slice(&bytes).unwrap();
                let entries = document["keys"].as_array().unwrap().len();
                prop_assert_eq!(set.len() + skipped.len(), entries);
            }
        }
    }
}

fn app_key_document() -> String {
    let pair =
        RsaKeyPair::from_pkcs8(include_bytes!("../src/emulator/keys/rsa2048-1.pk8")).unwrap();
    json!({"keys": [
        rsa_jwk(&pair, RSA_KID),
        {"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": "298817363741600001",
         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
        SigningKey::from_seed(1, Some("k1")).jwk(),
    ]})
    .to_string()
}

// ---- (c) a refused token forwards nothing -------------------------------------------------

/// Sends mutations of a valid token to a real sidecar: each is answered 401 and reaches
/// nothing; then the token itself passes, so the harness does forward what it accepts.
fn refused_tokens_reach_nothing(proxy: Proxy, token: String, runtime: &tokio::runtime::Runtime) {
    // The sidecar's tasks are dropped with `proxy`, in the runtime's context.
    let _context = runtime.enter();
    let mut runner = TestRunner::new(Config::with_cases(64));
    let result = runner.run(&edits(), |edits| {
        let bytes = mutated(&token, &edits, true);
        prop_assume!(bytes != token.as_bytes());
        let bad = String::from_utf8(bytes).expect("printable ASCII");
        prop_assume!(bad.trim() != token);
        let authorization = format!("Bearer {}", bad.trim());
        prop_assume!(http::HeaderValue::from_str(&authorization).is_ok());
        let before = proxy.backend_hits();
        let answer = runtime.block_on(proxy.with_refetches_permitted(get(
            &proxy.url("/orders"),
            &[("authorization", &authorization)],
        )));
        prop_assert_eq!(answer.status, 401, "{:?} for {}", answer.body, bad);
        prop_assert_eq!(proxy.backend_hits(), before, "forwarded: {}", bad);
        Ok(())
    });
    result.unwrap();
    let before = proxy.backend_hits();
    let answer = runtime.block_on(get(
        &proxy.url("/orders"),
        &[("authorization", &format!("Bearer {token}"))],
    ));
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(proxy.backend_hits(), before + 1);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Long enough that the clock the refetch waits move on never expires it.
const LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

#[test]
fn refused_session_tokens_reach_nothing() {
    let runtime = runtime();
    let proxy = runtime.block_on(Proxy::builder().start());
    let token = proxy
        .emulator
        .mint_session_token(TENANT, USER, "acme", LIFETIME)
        .expect("token");
    refused_tokens_reach_nothing(proxy, token, &runtime);
}

#[test]
fn refused_app_tokens_reach_nothing() {
    let runtime = runtime();
    let proxy = runtime.block_on(
        Proxy::builder()
            .flow(jtl_auth_sidecar::config::Flow::AppToken)
            .start(),
    );
    let token = proxy
        .emulator
        .mint_app_token_for(TENANT, DEV_APP_USER_ID, LIFETIME)
        .expect("token");
    refused_tokens_reach_nothing(proxy, token, &runtime);
}
