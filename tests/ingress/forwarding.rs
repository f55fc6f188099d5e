//! Forwarding headers by trust (`ingress.trusted_proxies`), routing overrides and `_`
//! spellings: what a client may claim, and what only a proxy in front may.

use super::*;

/// What a TLS ingress in front would write, and a client could forge.
const CLAIMS: [(&str, &str); 6] = [
    ("x-forwarded-for", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "shop.example"),
    ("forwarded", "for=203.0.113.7;proto=https;host=shop.example"),
    ("x-forwarded-prefix", "/shop"),
    ("x-real-ip", "203.0.113.7"),
];

/// A verified GET of `/x` with `Host: app.example` and `extra` headers.
async fn verified_get(proxy: &Proxy, extra: &[(&str, &str)]) -> common::proxy::Answer {
    let token = bearer(&proxy.token());
    let mut headers = vec![("authorization", token.as_str()), ("host", "app.example")];
    headers.extend_from_slice(extra);
    let answer = get(&proxy.url("/x"), &headers).await;
    assert_eq!(answer.status, 200);
    answer
}

#[tokio::test]
async fn a_trusted_proxys_forwarding_headers_reach_the_backend_and_the_chain_is_appended() {
    let proxy = Proxy::builder()
        .toml("[ingress]\ntrusted_proxies = [\"10.0.0.0/8\", \"127.0.0.0/8\"]")
        .start()
        .await;
    let answer = verified_get(&proxy, &CLAIMS).await;
    assert_eq!(answer.echoed("x-forwarded-proto"), ["https"]);
    assert_eq!(answer.echoed("x-forwarded-host"), ["shop.example"]);
    assert_eq!(answer.echoed("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
    assert_eq!(
        answer.echoed("forwarded"),
        ["for=203.0.113.7;proto=https;host=shop.example"]
    );
    assert_eq!(answer.echoed("x-forwarded-prefix"), ["/shop"]);
    assert_eq!(answer.echoed("x-real-ip"), ["203.0.113.7"]);
    assert_eq!(answer.echoed("host"), ["app.example"]);
}

#[tokio::test]
async fn a_trusted_proxy_that_sends_no_forwarding_headers_gets_the_sidecars() {
    let proxy = Proxy::builder()
        .toml("[ingress]\ntrusted_proxies = [\"127.0.0.1\"]")
        .start()
        .await;
    let answer = verified_get(&proxy, &[]).await;
    assert_eq!(answer.echoed("x-forwarded-proto"), ["http"]);
    assert_eq!(answer.echoed("x-forwarded-host"), ["app.example"]);
    assert_eq!(answer.echoed("x-forwarded-for"), ["127.0.0.1"]);
}

#[tokio::test]
async fn an_untrusted_clients_forwarding_claims_are_replaced_or_dropped() {
    // Trusting other networks, and trusting none (the default), are the same to this peer.
    for toml in ["[ingress]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]", ""] {
        let proxy = Proxy::builder().toml(toml).start().await;
        let answer = verified_get(&proxy, &CLAIMS).await;
        assert_eq!(answer.echoed("x-forwarded-proto"), ["http"], "{toml}");
        assert_eq!(answer.echoed("x-forwarded-host"), ["app.example"], "{toml}");
        assert_eq!(answer.echoed("x-forwarded-for"), ["127.0.0.1"], "{toml}");
        for name in ["forwarded", "x-forwarded-prefix", "x-real-ip"] {
            assert!(
                answer.echoed(name).is_empty(),
                "{toml}: {name} reached the backend"
            );
        }
    }
}

#[tokio::test]
async fn an_untrusted_clients_claims_are_dropped_on_public_paths_and_preflights_too() {
    let proxy = Proxy::builder()
        .toml("[ingress]\npublic_paths = [\"/public/*\"]")
        .start()
        .await;
    let public = get(&proxy.url("/public/a"), &CLAIMS).await;
    let mut preflight = Request::options(proxy.url("/orders"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST");
    for (name, value) in CLAIMS {
        preflight = preflight.header(name, value);
    }
    let preflight = send(preflight.body(Full::new(Bytes::new())).unwrap()).await;
    for answer in [public, preflight] {
        assert_eq!(answer.status, 200);
        assert_eq!(answer.echoed("x-forwarded-proto"), ["http"]);
        assert_eq!(answer.echoed("x-forwarded-for"), ["127.0.0.1"]);
        for name in ["forwarded", "x-forwarded-prefix", "x-real-ip"] {
            assert!(answer.echoed(name).is_empty(), "{name} reached the backend");
        }
    }
}

/// Other proxies' ways of saying `https`, the host and the client's address.
const OTHER_CLAIMS: [(&str, &str); 10] = [
    ("x-forwarded-ssl", "on"),
    ("x-forwarded-scheme", "https"),
    ("front-end-https", "on"),
    ("x-url-scheme", "https"),
    ("x-forwarded-server", "shop.example"),
    ("x-original-host", "shop.example"),
    ("x-host", "shop.example"),
    ("true-client-ip", "203.0.113.7"),
    ("x-client-ip", "203.0.113.7"),
    ("x-cluster-client-ip", "203.0.113.7"),
];

#[tokio::test]
async fn other_https_host_and_client_address_claims_pass_from_a_trusted_proxy_only() {
    let trusted = Proxy::builder()
        .toml("[ingress]\ntrusted_proxies = [\"127.0.0.1\"]")
        .start()
        .await;
    let answer = verified_get(&trusted, &OTHER_CLAIMS).await;
    for (name, value) in OTHER_CLAIMS {
        assert_eq!(answer.echoed(name), [value], "{name} from a trusted proxy");
    }
    let untrusted = Proxy::builder()
        .toml("[ingress]\npublic_paths = [\"/public/*\"]")
        .start()
        .await;
    let verified = verified_get(&untrusted, &OTHER_CLAIMS).await;
    let public = get(&untrusted.url("/public/a"), &OTHER_CLAIMS).await;
    assert_eq!(public.status, 200);
    for answer in [verified, public] {
        for (name, _) in OTHER_CLAIMS {
            assert!(answer.echoed(name).is_empty(), "{name} reached the backend");
        }
    }
}

#[tokio::test]
async fn identity_headers_are_stripped_from_a_trusted_proxy_too() {
    let proxy = Proxy::builder()
        .toml("[ingress]\ntrusted_proxies = [\"127.0.0.1\"]\npublic_paths = [\"/public/*\"]")
        .start()
        .await;
    let spoofed = [
        ("X-Tenant-ID", SPOOFED),
        ("X_Tenant_ID", SPOOFED),
        ("x_user_id", SPOOFED),
    ];
    let verified = verified_get(&proxy, &spoofed).await;
    assert_eq!(verified.echoed("x-tenant-id"), [TENANT]);
    assert_eq!(verified.echoed("x-user-id"), [USER]);
    let public = get(&proxy.url("/public/a"), &spoofed).await;
    assert_eq!(public.status, 200);
    assert!(public.echoed("x-tenant-id").is_empty());
    for answer in [verified, public] {
        assert!(answer.echoed("x_tenant_id").is_empty());
        assert!(answer.echoed("x_user_id").is_empty());
    }
}

/// The sidecar listening on `[::1]`, with `toml`.
async fn on_ipv6_loopback(toml: &str) -> Proxy {
    Proxy::builder()
        .toml(toml)
        .env(vec![(
            "JTL_SIDECAR_INGRESS__LISTEN".to_owned(),
            "[::1]:0".to_owned(),
        )])
        .start()
        .await
}

#[tokio::test]
async fn an_ipv6_peer_is_trusted_by_an_ipv6_entry_only() {
    let trusted = on_ipv6_loopback("[ingress]\ntrusted_proxies = [\"::1\"]").await;
    assert!(trusted.addresses.ingress.is_ipv6());
    let answer = verified_get(&trusted, &CLAIMS).await;
    assert_eq!(answer.echoed("x-forwarded-proto"), ["https"]);
    assert_eq!(answer.echoed("x-forwarded-for"), ["203.0.113.7, ::1"]);
    assert_eq!(answer.echoed("x-real-ip"), ["203.0.113.7"]);

    // `::1` is not 127.0.0.1: an IPv4 entry does not cover IPv6 loopback.
    let untrusted = on_ipv6_loopback("[ingress]\ntrusted_proxies = [\"127.0.0.0/8\"]").await;
    let answer = verified_get(&untrusted, &CLAIMS).await;
    assert_eq!(answer.echoed("x-forwarded-proto"), ["http"]);
    assert_eq!(answer.echoed("x-forwarded-for"), ["::1"]);
    assert!(answer.echoed("x-real-ip").is_empty());
}

// ---- headers no peer passes on -----------------------------------------------------------

/// `_` spellings of framing, hop-by-hop and forwarding headers, and routing overrides.
const NEVER_FORWARDED: [(&str, &str); 26] = [
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("X_Original_URL", "/admin"),
    ("X_Rewrite_URL", "/admin"),
    ("Transfer_Encoding", "chunked"),
    ("Content_Length", "5"),
    ("X_Forwarded_For", "10.9.9.9"),
    ("X_Forwarded_Host", "evil.example"),
    ("X_Forwarded_Proto", "https"),
    ("X_Forwarded_Prefix", "/evil"),
    ("X_Real_IP", "10.9.9.9"),
    ("X_Forwarded_Ssl", "on"),
    ("X_Forwarded_Scheme", "https"),
    ("Front_End_Https", "on"),
    ("X_Url_Scheme", "https"),
    ("X_Forwarded_Server", "evil.example"),
    ("X_Original_Host", "evil.example"),
    ("X_Host", "evil.example"),
    ("True_Client_IP", "10.9.9.9"),
    ("X_Client_IP", "10.9.9.9"),
    ("X_Cluster_Client_IP", "10.9.9.9"),
    ("Keep_Alive", "timeout=5"),
    ("Proxy_Connection", "keep-alive"),
    ("Proxy_Authorization", "Basic eDp5"),
    ("HTTP2_Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
    ("X_Request_ID", "spoofed"),
];

fn assert_none_forwarded(answer: &common::proxy::Answer, case: &str) {
    assert_eq!(answer.status, 200, "{case}");
    for (name, _) in NEVER_FORWARDED {
        let name = name.to_ascii_lowercase();
        assert!(
            answer.echoed(&name).is_empty(),
            "{case}: {name} reached the backend"
        );
    }
}

#[tokio::test]
async fn routing_overrides_and_underscore_spellings_never_reach_the_backend_on_any_path() {
    // Even from a trusted proxy: these are no forwarding headers it may pass on.
    for toml in ["", "trusted_proxies = [\"127.0.0.1\"]"] {
        let proxy = Proxy::builder()
            .toml(&format!(
                "[ingress]\npublic_paths = [\"/public/*\"]\n{toml}"
            ))
            .start()
            .await;
        let verified = verified_get(&proxy, &NEVER_FORWARDED).await;
        assert_none_forwarded(&verified, &format!("verified {toml}"));
        assert_eq!(verified.echoed("x-forwarded-proto").len(), 1);

        let public = get(&proxy.url("/public/a"), &NEVER_FORWARDED).await;
        assert_none_forwarded(&public, &format!("public {toml}"));

        let mut preflight = Request::options(proxy.url("/orders"))
            .header("origin", "https://app.example")
            .header("access-control-request-method", "POST");
        for (name, value) in NEVER_FORWARDED {
            preflight = preflight.header(name, value);
        }
        let preflight = send(preflight.body(Full::new(Bytes::new())).unwrap()).await;
        assert_none_forwarded(&preflight, &format!("preflight {toml}"));
    }
}
