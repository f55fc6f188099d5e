//! Session-token verification against raw ring Ed25519 on the same signing input.
//!
//! `cargo bench --bench verify` — the ratio full/raw shows what parsing, key selection
//! and claim checks add on top of the one signature check that cannot be avoided.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use jtl_auth_sidecar::jose::{
    base64url_encode, verify_session_token, CompactJws, Ed25519Key, JwkSet, TokenPolicy,
};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

const NOW: i64 = 1_790_000_000;

/// A token shaped like JTL's: documented header without `kid`, the usual claims.
fn realistic_token(pair: &Ed25519KeyPair) -> String {
    let header = r#"{"alg":"EdDSA","typ":"JWT"}"#;
    let payload = format!(
        r#"{{"exp":{},"iat":{},"userId":"2f1b8d2c-5c1e-4a7e-9b3f-1d2e3f4a5b6c","tenantId":"7c9e6679-7425-40de-944b-e07fc1f90ae7","tenantSlug":"acme-gmbh","kid":"customer-4711"}}"#,
        NOW + 300,
        NOW - 5
    );
    let signing_input = format!(
        "{}.{}",
        base64url_encode(header.as_bytes()),
        base64url_encode(payload.as_bytes())
    );
    let signature = pair.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", base64url_encode(signature.as_ref()))
}

fn bench_verify(c: &mut Criterion) {
    let pair = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).expect("seed");
    let public = pair.public_key().as_ref().to_vec();
    let token = realistic_token(&pair);
    let keys = JwkSet::from_keys([
        Ed25519Key::from_public_bytes(Some("key-1".into()), &public).expect("key")
    ]);
    let policy = TokenPolicy::default();
    assert!(verify_session_token(&token, &keys, &policy, NOW).is_ok());

    let (signing_input, _) = token.rsplit_once('.').expect("three segments");
    let signature = CompactJws::parse(&token, 8192)
        .expect("parses")
        .signature()
        .to_vec();

    let mut group = c.benchmark_group("session_token");
    group.bench_function("raw_ring_ed25519_verify", |b| {
        b.iter(|| {
            UnparsedPublicKey::new(&ED25519, black_box(&public))
                .verify(black_box(signing_input.as_bytes()), black_box(&signature))
                .is_ok()
        })
    });
    group.bench_function("full_verification", |b| {
        b.iter(|| verify_session_token(black_box(&token), &keys, &policy, NOW).is_ok())
    });
    group.bench_function("parse_and_claims_only", |b| {
        b.iter(|| {
            let jws = CompactJws::parse(black_box(&token), policy.max_token_bytes).expect("parses");
            policy.session_from(jws.into_payload(), NOW).is_ok()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
