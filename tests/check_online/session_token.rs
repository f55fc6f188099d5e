//! `check --online --session-token`: a pasted token explained; no secret shown.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_session_token_prints_its_claims_and_valid() {
    let setup = Setup::healthy().await;
    let token = setup
        .emulator
        .mint(&setup.claims(3600), &setup.kid(), false)
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let claims = out.line("session token");
    assert_verdict(
        claims,
        "info",
        &format!("tenantId \"{TENANT}\", userId \"{USER}\", tenantSlug \"acme\""),
    );
    assert!(claims.contains("header kid none"), "{claims}");
    assert_verdict(
        out.verdict("session token"),
        "ok",
        "valid: signed by key `emulator-key-1`",
    );
    assert!(
        out.verdict("session token")
            .contains("expires in 59 minutes")
            || out
                .verdict("session token")
                .contains("expires in 60 minutes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_token_says_how_long_ago() {
    let setup = Setup::healthy().await;
    let token = setup
        .emulator
        .mint(&setup.claims(-200), &setup.kid(), false)
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("session token"),
        "FAIL",
        "The session token has expired. It expired 3 minutes ago",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_with_an_unknown_kid_lists_the_known_ones() {
    let setup = Setup::healthy().await;
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "abc"});
    let token = setup
        .emulator
        .mint_with_header(&header, &setup.claims(3600), &setup.kid())
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("session token"),
        "FAIL",
        "signed by an unknown key `abc`. The key set has: `emulator-key-1`.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_signed_by_another_key_does_not_match_any() {
    let setup = Setup::healthy().await;
    setup.emulator.add_key("unpublished");
    setup.emulator.set_published("unpublished", false);
    let token = setup
        .emulator
        .mint(&setup.claims(3600), "unpublished", false)
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("session token"),
        "FAIL",
        "signature does not match any of the 1 known keys",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_session_token_says_why() {
    let setup = Setup::healthy().await;
    let out = setup.with_session_token("not-a-token").await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("session token"),
        "FAIL",
        "malformed: it does not have exactly three dot-separated parts",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_token_needs_online() {
    let setup = Setup::healthy().await;
    let out = setup.run(&["--session-token", "x.y.z"]).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("--online"), "{}", out.stderr);
    assert_eq!(setup.emulator.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_secret_nor_token_appears_in_the_output() {
    let mut setup = Setup::healthy().await;
    let token = setup
        .emulator
        .mint(&setup.claims(-200), &setup.kid(), false)
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    setup.secret_file("emulated-secret\n");
    let failing = setup.with_session_token(&token).await;
    for output in [out.all(), failing.all()] {
        assert!(!output.contains("emulated-secret"), "{output}");
        assert!(!output.contains(&token), "{output}");
        // Access tokens and session tokens are JWTs: none, not even a part of one.
        assert!(!output.contains("eyJ"), "{output}");
        for part in token.split('.') {
            assert!(!output.contains(part), "{output}");
        }
    }
    assert!(
        failing.line("credentials").contains("secret fingerprint"),
        "{}",
        failing.stdout
    );
}
