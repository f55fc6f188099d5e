//! What reaches the backend: identity headers replaced, forwarding headers, request ids.

use super::*;

#[tokio::test]
async fn spoofed_identity_headers_are_removed_however_spelled() {
    let proxy = Proxy::builder().start().await;
    let token = proxy.token();
    let answer = get(
        &proxy.url("/orders"),
        &[
            ("authorization", &bearer(&token)),
            ("X-Tenant-ID", SPOOFED),
            ("x-tenant-id", SPOOFED),
            ("X_Tenant_ID", SPOOFED),
            ("X-TENANT-ID", SPOOFED),
            ("x_user_id", SPOOFED),
            ("X-Tenant-Slug", "evil"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.echoed("x-tenant-id"), [TENANT]);
    assert_eq!(answer.echoed("x-user-id"), [USER]);
    assert_eq!(answer.echoed("x-tenant-slug"), ["acme"]);
    assert!(answer.echoed("x_tenant_id").is_empty());
    assert!(answer.echoed("x_user_id").is_empty());
}

#[tokio::test]
async fn identity_headers_are_stripped_on_public_paths_too() {
    let proxy = Proxy::builder()
        .toml("[ingress]\npublic_paths = [\"/public/*\"]")
        .start()
        .await;
    let answer = get(
        &proxy.url("/public/a"),
        &[("X-Tenant-ID", SPOOFED), ("X_Tenant_ID", SPOOFED)],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.echoed("x-tenant-id").is_empty());
    assert!(answer.echoed("x_tenant_id").is_empty());
}

#[tokio::test]
async fn connection_header_cannot_remove_the_injected_identity() {
    let proxy = Proxy::builder().start().await;
    let (status, text) = raw(
        proxy.addresses.ingress,
        &format!(
            "GET /x HTTP/1.1\r\nHost: app\r\nAuthorization: Bearer {}\r\nConnection: close, X-Tenant-ID, X-User-ID\r\nX-Tenant-ID: {SPOOFED}\r\n\r\n",
            proxy.token()
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(TENANT) && text.contains(USER), "{text}");
    assert!(!text.contains(SPOOFED));
}

// ---- 6. forwarding ------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_backend_gets_the_access_token_and_forwarding_headers() {
    let proxy = Proxy::builder().start().await;
    let token = proxy.token();
    let answer = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&token)),
            ("host", "shop.example"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    )
    .await;
    let access = answer.echoed("authorization");
    assert_eq!(access.len(), 1);
    assert!(access[0].starts_with("Bearer ") && access[0] != bearer(&token));
    assert_eq!(answer.echoed("host"), ["shop.example"]);
    assert_eq!(answer.echoed("x-forwarded-host"), ["shop.example"]);
    assert_eq!(answer.echoed("x-forwarded-proto"), ["http"]);
    // The client is no proxy the sidecar trusts: what it claimed is replaced.
    assert_eq!(answer.echoed("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(answer.echoed("x-request-id").len(), 1);

    let kept = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&token)),
            ("x-request-id", "req-42"),
        ],
    )
    .await;
    assert_eq!(kept.echoed("x-request-id"), ["req-42"]);
}

#[tokio::test]
async fn without_forward_access_token_no_authorization_reaches_the_backend() {
    let proxy = Proxy::builder()
        .toml("[ingress]\nforward_access_token = false")
        .start()
        .await;
    let answer = get(
        &proxy.url("/x"),
        &[("authorization", &bearer(&proxy.token()))],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.echoed("authorization").is_empty());
}

#[tokio::test]
async fn public_requests_carry_no_credentials() {
    let proxy = Proxy::builder()
        .toml("[ingress]\npublic_paths = [\"/health\"]")
        .start()
        .await;
    let answer = get(
        &proxy.url("/health"),
        &[("authorization", "Bearer whatever")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(answer.echoed("authorization").is_empty());
}

#[tokio::test]
async fn claim_headers_forward_plain_claims_only() {
    let proxy = Proxy::builder()
        .toml("[ingress.claim_headers]\nkid = \"X-JTL-Customer-ID\"\nnote = \"X-Note\"")
        .start()
        .await;
    let mut claims = proxy
        .emulator
        .session_claims(TENANT, USER, "acme", Duration::from_secs(600));
    claims["note"] = json!("line\r\nX-Injected: 1");
    let token = proxy
        .emulator
        .mint(&claims, &proxy.emulator.default_kid().unwrap(), false)
        .unwrap();
    let answer = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&token)),
            ("x-jtl-customer-id", "spoofed"),
        ],
    )
    .await;
    assert_eq!(answer.echoed("x-jtl-customer-id"), ["emulated-customer"]);
    assert!(answer.echoed("x-note").is_empty());
    assert!(answer.echoed("x-injected").is_empty());
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let proxy = Proxy::builder().start().await;
    let answer = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&proxy.token())),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eDp5"),
            ("te", "gzip"),
            ("connection", "x-private"),
            ("x-private", "1"),
        ],
    )
    .await;
    for name in ["keep-alive", "proxy-authorization", "te", "x-private"] {
        assert!(answer.echoed(name).is_empty(), "{name} was forwarded");
    }
}

#[tokio::test]
async fn te_trailers_is_hop_by_hop_too() {
    // SPEC §4 lists `TE` among the removed headers, `trailers` or not.
    let proxy = Proxy::builder().start().await;
    for te in ["trailers", "trailers, deflate"] {
        let answer = get(
            &proxy.url("/x"),
            &[("authorization", &bearer(&proxy.token())), ("te", te)],
        )
        .await;
        assert_eq!(answer.status, 200);
        assert!(answer.echoed("te").is_empty(), "TE: {te} was forwarded");
    }
}

#[tokio::test]
async fn an_empty_request_id_is_replaced() {
    let proxy = Proxy::builder().start().await;
    let answer = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&proxy.token())),
            ("x-request-id", ""),
        ],
    )
    .await;
    let ids = answer.echoed("x-request-id");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(uuid::Uuid::parse_str(&ids[0]).is_ok(), "{ids:?}");
}

#[tokio::test]
async fn connection_cannot_remove_host_request_id_or_forwarding_headers() {
    let proxy = Proxy::builder().start().await;
    let (status, text) = raw(
        proxy.addresses.ingress,
        &format!(
            "GET /x HTTP/1.1\r\nHost: shop.example\r\nAuthorization: Bearer {}\r\nX-Request-ID: req-7\r\nConnection: close, X-Request-ID, Host, X-Forwarded-Host, Content-Length\r\n\r\n",
            proxy.token()
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let echo: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(echo["headers"]["host"], json!(["shop.example"]));
    assert_eq!(echo["headers"]["x-request-id"], json!(["req-7"]));
    assert_eq!(echo["headers"]["x-forwarded-host"], json!(["shop.example"]));
}

#[tokio::test]
async fn underscore_spellings_of_forwarding_headers_are_dropped() {
    let proxy = Proxy::builder().start().await;
    let answer = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&proxy.token())),
            ("X_Forwarded_Proto", "https"),
            ("X_Forwarded_For", "10.9.9.9"),
            ("X_Request_ID", "spoofed"),
        ],
    )
    .await;
    for name in ["x_forwarded_proto", "x_forwarded_for", "x_request_id"] {
        assert!(answer.echoed(name).is_empty(), "{name} reached the backend");
    }
    assert_eq!(answer.echoed("x-forwarded-proto"), ["http"]);
}

#[tokio::test]
async fn the_sidecars_own_answers_carry_the_request_id_and_the_backends_pass_unchanged() {
    let proxy = Proxy::builder().start().await;
    // A 401 names the client's request id, or the one the sidecar made for its log line.
    let refused = get(&proxy.url("/x"), &[("x-request-id", "req-401")]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.headers["x-request-id"], "req-401");
    let refused = get(&proxy.url("/x"), &[]).await;
    let made = refused.headers["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
    // The echo backend sets no X-Request-ID on its answer; none is added to it.
    let forwarded = get(
        &proxy.url("/x"),
        &[
            ("authorization", &bearer(&proxy.token())),
            ("x-request-id", "req-200"),
        ],
    )
    .await;
    assert_eq!(forwarded.status, 200);
    assert_eq!(forwarded.echoed("x-request-id"), ["req-200"]);
    assert!(forwarded.headers.get("x-request-id").is_none());
}
