//! Public paths and CORS preflights: which requests pass without a token.

use super::*;

#[tokio::test]
async fn public_paths_match_the_path_only_and_never_ambiguous_ones() {
    let proxy = Proxy::builder()
        .toml("[ingress]\npublic_paths = [\"/health\", \"/public/*\"]")
        .start()
        .await;
    for (path, public) in [
        ("/health", true),
        ("/health?probe=1", true),
        ("/public/app.js", true),
        ("/healthz", false),
        ("/health/x", false),
        ("/public", false),
        ("/secret?x=/public/a", false),
        ("/public/../secret", false),
        ("/public/%2e%2e/secret", false),
        ("/public/%2E%2E/secret", false),
        ("/public/a%2Fb", false),
        ("/public/a%5cb", false),
    ] {
        let answer = get(&proxy.url(path), &[]).await;
        let expected = if public { 200 } else { 401 };
        assert_eq!(answer.status, expected, "{path}");
    }
    let (status, _) = raw(
        proxy.addresses.ingress,
        "GET /public/a\\..\\secret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_ne!(status, 200, "a raw backslash never matches");
}

#[tokio::test]
async fn double_encoded_and_u_escaped_paths_never_match_a_public_path() {
    let proxy = Proxy::builder()
        .toml("[ingress]\npublic_paths = [\"/health\", \"/public/*\"]")
        .start()
        .await;
    for path in [
        "/public/%252e%252e/secret",
        "/public/%252E%252E/secret",
        "/public/..%2500",
        "/public/a%2500",
        "/public/x%252Fsecret",
        "/health%25",
        "/public/%u002e%u002e/secret",
        "/public/%U002E%U002E/secret",
        "/public/%uff0e%uff0e/secret",
    ] {
        let answer = get(&proxy.url(path), &[]).await;
        assert_eq!(answer.status, 401, "{path} passed without a token");
    }
    assert_eq!(proxy.backend_hits(), 0);
    // Other escapes still match: every backend reads them one way.
    assert_eq!(get(&proxy.url("/public/a%20b"), &[]).await.status, 200);
}

#[tokio::test]
async fn malformed_escapes_nul_overlong_utf8_and_encoded_semicolons_never_match_a_public_path() {
    let proxy = Proxy::builder()
        .toml("[ingress]\npublic_paths = [\"/health\", \"/public/*\"]")
        .start()
        .await;
    for path in [
        // Lenient decoders leave `%2%65` in place; decoding again reads `..`.
        "/public/%2%65%2%65/secret",
        "/public/%%32%65%%32%65/secret",
        "/public/100%",
        "/public/a%zz",
        "/public/a%00",
        "/public/%c0%ae%c0%ae/secret",
        "/public/%C1%9C",
        "/public/..%3B/secret",
        "/public/%2e%2e%3bx/secret",
    ] {
        let answer = get(&proxy.url(path), &[]).await;
        assert_eq!(answer.status, 401, "{path} passed without a token");
    }
    assert_eq!(proxy.backend_hits(), 0);
    assert_eq!(get(&proxy.url("/public/caf%C3%A9"), &[]).await.status, 200);
}

#[tokio::test]
async fn preflights_pass_without_a_token_only_when_they_are_preflights() {
    let proxy = Proxy::builder().start().await;
    let preflight = Request::options(proxy.url("/orders"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(preflight).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["method"], "OPTIONS");

    let not_preflight = Request::options(proxy.url("/orders"))
        .header("origin", "https://app.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(not_preflight).await.status, 401);
}

#[tokio::test]
async fn preflights_need_a_token_when_not_allowed() {
    let proxy = Proxy::builder()
        .toml("[ingress]\nallow_cors_preflight = false")
        .start()
        .await;
    let preflight = Request::options(proxy.url("/orders"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(preflight).await.status, 401);
}

#[tokio::test]
async fn configured_origins_get_preflights_answered_and_cors_headers_on_401s() {
    let proxy = Proxy::builder()
        .toml("[ingress]\ncors_allowed_origins = [\"https://app.example\"]")
        .start()
        .await;
    let preflight = Request::options(proxy.url("/orders"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(preflight).await;
    assert_eq!(answer.status, 204);
    assert_eq!(
        answer.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(answer.headers["access-control-allow-methods"], "POST");
    assert_eq!(
        answer.headers["access-control-allow-headers"],
        "authorization, content-type"
    );
    assert!(
        answer.body.is_empty(),
        "answered by the sidecar, not the backend"
    );

    let unauthorized = get(&proxy.url("/orders"), &[("origin", "https://app.example")]).await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(
        unauthorized.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        unauthorized.headers["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("WWW-Authenticate")
    );

    let other = get(&proxy.url("/orders"), &[("origin", "https://evil.example")]).await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    // Still `Vary: Origin`, so a shared cache does not hand this answer to an allowed origin.
    assert_eq!(other.headers["vary"], "Origin");
    let without_origin = get(&proxy.url("/orders"), &[]).await;
    assert_eq!(without_origin.headers["vary"], "Origin");

    let token = proxy.token();
    let ok = get(
        &proxy.url("/orders"),
        &[
            ("origin", "https://app.example"),
            ("authorization", &bearer(&token)),
        ],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers["access-control-allow-origin"],
        "https://app.example"
    );
}
