//! The session token: missing, invalid, doubled, in X-Session-Token; never forwarded.

use super::*;

#[tokio::test]
async fn a_missing_token_is_401_with_a_bare_challenge() {
    let proxy = Proxy::builder().start().await;
    let answer = get(&proxy.url("/orders"), &[]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.headers["www-authenticate"], "Bearer");
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.json()["error"], "missing_token");
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn an_invalid_token_is_401_and_says_why_without_echoing_it() {
    let proxy = Proxy::builder().start().await;
    let token = proxy.token();
    let tampered = format!("{}x", &token[..token.len() - 1]);
    let answer = get(
        &proxy.url("/orders"),
        &[("authorization", &bearer(&tampered))],
    )
    .await;
    assert_eq!(answer.status, 401);
    let body = answer.json();
    assert_eq!(body["error"], "invalid_token");
    let description = body["error_description"].as_str().unwrap();
    assert!(!description.is_empty());
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\", error_description=\""),
        "{challenge}"
    );
    for segment in tampered.split('.') {
        assert!(!String::from_utf8_lossy(&answer.body).contains(segment));
        assert!(!challenge.contains(segment));
    }

    let claims = proxy
        .emulator
        .session_claims(TENANT, USER, "acme", Duration::from_secs(60));
    let short = proxy
        .emulator
        .mint(&claims, &proxy.emulator.default_kid().unwrap(), false)
        .unwrap();
    proxy.clock.advance(Duration::from_secs(120));
    let expired = get(&proxy.url("/orders"), &[("authorization", &bearer(&short))]).await;
    assert_eq!(expired.status, 401);
    assert_eq!(
        expired.json()["error_description"],
        "The session token has expired."
    );
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let proxy = Proxy::builder().start().await;
    let token = proxy.token();
    let answer = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&token)),
            ("authorization", &bearer(&token)),
        ],
    )
    .await;
    assert_eq!(answer.status, 401);
}

#[tokio::test]
async fn x_session_token_is_read_and_two_different_tokens_are_refused() {
    let proxy = Proxy::builder().start().await;
    let token = proxy.token();
    let answer = get(&proxy.url("/x"), &[("x-session-token", &token)]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.echoed("x-tenant-id"), [TENANT]);

    let other = proxy
        .emulator
        .mint_session_token(
            TENANT,
            "00000000-0000-4000-8000-000000000001",
            "acme",
            Duration::from_secs(600),
        )
        .unwrap();
    let answer = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&token)),
            ("x-session-token", &other),
        ],
    )
    .await;
    assert_eq!(answer.status, 401);
    // Named as this (session-token) sidecar names its tokens.
    assert_eq!(
        answer.json()["error_description"],
        "The request carries two different session tokens."
    );
}

#[tokio::test]
async fn the_session_token_never_reaches_the_backend() {
    let proxy = Proxy::builder().start().await;
    let token = proxy.token();
    for headers in [
        vec![("authorization", bearer(&token))],
        vec![("x-session-token", token.clone())],
        vec![
            ("authorization", bearer(&token)),
            ("x_session_token", token.clone()),
        ],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let answer = get(&proxy.url("/x"), &headers).await;
        assert_eq!(answer.status, 200);
        let text = String::from_utf8_lossy(&answer.body);
        assert!(
            !text.contains(&token),
            "the backend saw the session token: {text}"
        );
    }
}
