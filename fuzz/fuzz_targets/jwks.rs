//! The JWK set parser of both flows (Ed25519 keys for session tokens, RSA keys for app
//! tokens, any other key type skipped) on arbitrary documents.
//!
//! Oracles besides "no panic": a parsed set plus its skipped keys accounts for every entry
//! of `keys`, once, in document order; every key taken is of the flow's kind; no two keys
//! share a `kid`; the set holds each key under its `kid` and thumbprint; a document the
//! strict JSON parser refuses is refused.

#![no_main]

use jtl_auth_sidecar::jose::{JwkSet, KeyKind, VerifyingKey, parse_strict_json_object};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(data: &[u8], kind: KeyKind) {
    let strict = parse_strict_json_object(data);
    let Ok((set, skipped)) = JwkSet::from_json_of(data, kind) else {
        return;
    };
    let document = strict.expect("a parsed key set is a strict JSON object");
    let entries = document["keys"].as_array().expect("a keys array");
    assert_eq!(
        set.len() + skipped.len(),
        entries.len(),
        "every entry accounted for"
    );
    let mut previous = None;
    for skip in &skipped {
        assert!(skip.index < entries.len());
        assert!(
            previous < Some(skip.index),
            "skipped keys in document order, once"
        );
        previous = Some(skip.index);
        assert_eq!(
            skip.kid.as_deref(),
            entries[skip.index].get("kid").and_then(Value::as_str)
        );
    }
    for (at, key) in set.keys().iter().enumerate() {
        match (kind, key) {
            (KeyKind::Ed25519, VerifyingKey::Ed25519(_)) | (KeyKind::Rsa, VerifyingKey::Rsa(_)) => {
            }
            _ => panic!("a key of another kind was taken: {key:?}"),
        }
        assert!(set.contains_thumbprint(key.thumbprint()));
        if let Some(kid) = key.kid() {
            assert!(
                set.keys()[..at]
                    .iter()
                    .all(|earlier| earlier.kid() != Some(kid)),
                "two keys share the kid {kid:?}"
            );
            assert_eq!(set.get(kid), Some(key));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data, KeyKind::Ed25519);
    check(data, KeyKind::Rsa);
});
