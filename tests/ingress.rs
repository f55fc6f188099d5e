//! Ingress (SPEC §4) end to end over real sockets: emulator + echo backend + sidecar.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::harness::{TENANT, USER};
use common::proxy::{get, raw, send, Proxy};
use http::Request;
use http_body_util::Full;
use jtl_auth_sidecar::emulator::Failure;
use serde_json::json;

const SPOOFED: &str = "00000000-0000-4000-8000-000000000666";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---- 1. identity headers ----------------------------------------------------------------

#[tokio::test]
async fn spoofed_identity_headers_are_removed_however_spelled() {
    let proxy = Proxy::start("").await;
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
    let proxy = Proxy::start("[ingress]\npublic_paths = [\"/public/*\"]").await;
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
    let proxy = Proxy::start("").await;
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

// ---- 3. public paths and preflights ----------------------------------------------------------------

#[tokio::test]
async fn public_paths_match_the_path_only_and_never_ambiguous_ones() {
    let proxy = Proxy::start("[ingress]\npublic_paths = [\"/health\", \"/public/*\"]").await;
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
async fn preflights_pass_without_a_token_only_when_they_are_preflights() {
    let proxy = Proxy::start("").await;
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
    let proxy = Proxy::start("[ingress]\nallow_cors_preflight = false").await;
    let preflight = Request::options(proxy.url("/orders"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(preflight).await.status, 401);
}

#[tokio::test]
async fn configured_origins_get_preflights_answered_and_cors_headers_on_401s() {
    let proxy = Proxy::start("[ingress]\ncors_allowed_origins = [\"https://app.example\"]").await;
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
    assert!(unauthorized.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("WWW-Authenticate"));

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

// ---- 4. and 5. the token -------------------------------------------------------------------------------

#[tokio::test]
async fn a_missing_token_is_401_with_a_bare_challenge() {
    let proxy = Proxy::start("").await;
    let answer = get(&proxy.url("/orders"), &[]).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.headers["www-authenticate"], "Bearer");
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.json()["error"], "missing_token");
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn an_invalid_token_is_401_and_says_why_without_echoing_it() {
    let proxy = Proxy::start("").await;
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
    let proxy = Proxy::start("").await;
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
    let proxy = Proxy::start("").await;
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
}

#[tokio::test]
async fn the_session_token_never_reaches_the_backend() {
    let proxy = Proxy::start("").await;
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

// ---- 6. forwarding ------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_backend_gets_the_access_token_and_forwarding_headers() {
    let proxy = Proxy::start("").await;
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
    assert_eq!(answer.echoed("x-forwarded-for"), ["203.0.113.7, 127.0.0.1"]);
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
    let proxy = Proxy::start("[ingress]\nforward_access_token = false").await;
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
    let proxy = Proxy::start("[ingress]\npublic_paths = [\"/health\"]").await;
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
    let proxy =
        Proxy::start("[ingress.claim_headers]\nkid = \"X-JTL-Customer-ID\"\nnote = \"X-Note\"")
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
    let proxy = Proxy::start("").await;
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
    let proxy = Proxy::start("").await;
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
    let proxy = Proxy::start("").await;
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
async fn two_host_headers_are_refused_and_nothing_is_forwarded() {
    let proxy = Proxy::start(
        r#"[ingress]
public_paths = ["/pub"]"#,
    )
    .await;
    for path in ["/x", "/pub"] {
        let (status, text) = raw(
            proxy.addresses.ingress,
            &format!(
                "GET {path} HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                proxy.token()
            ),
        )
        .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains(r#""error":"invalid_request""#), "{text}");
    }
    assert_eq!(proxy.backend_hits(), 0);
}

/// The JSON error of a raw answer, and whether it carries a `WWW-Authenticate` challenge.
fn raw_error(text: &str) -> (serde_json::Value, bool) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (
        json,
        head.to_ascii_lowercase().contains("\r\nwww-authenticate:"),
    )
}

#[tokio::test]
async fn a_request_without_host_is_400_before_anything_else_and_reaches_nothing() {
    let proxy = Proxy::start("").await;
    let token = proxy.token();
    for (what, request) in [
        (
            "HTTP/1.1 with a valid token",
            format!("GET /x HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        ),
        (
            "HTTP/1.1 without a token (400, not 401)",
            "GET /x HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        ),
        (
            "HTTP/1.0 with a valid token",
            format!("GET /x HTTP/1.0\r\nAuthorization: Bearer {token}\r\n\r\n"),
        ),
        (
            "an absolute-form target, whose authority is no Host",
            format!("GET http://app.example/x HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        ),
        (
            "TRACE (400 before the method's 405)",
            "TRACE /x HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        ),
    ] {
        let (status, text) = raw(proxy.addresses.ingress, &request).await;
        assert_eq!(status, 400, "{what}: {text}");
        let (error, challenged) = raw_error(&text);
        assert_eq!(error["error"], "invalid_request", "{what}: {text}");
        assert_eq!(error["error_description"], "The request has no Host header.");
        assert!(!challenged, "{what}: {text}");
    }
    assert_eq!(
        proxy.backend_hits(),
        0,
        "a request without Host was forwarded"
    );

    // The same request with Host is forwarded as ever.
    let (status, text) = raw(
        proxy.addresses.ingress,
        &format!("GET /x HTTP/1.1\r\nHost: app.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(proxy.backend_hits(), 1);
}

#[tokio::test]
async fn connect_tenant_without_host_is_400_and_not_answered() {
    let proxy = Proxy::start("").await;
    let token = proxy.token();
    let connect = |host: &str| {
        format!(
            "POST /api/connect-tenant HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
    };
    let (status, text) = raw(proxy.addresses.ingress, &connect("")).await;
    assert_eq!(status, 400, "{text}");
    let (error, _) = raw_error(&text);
    assert_eq!(error["error"], "invalid_request", "{text}");
    assert_eq!(
        error["error_description"],
        "The request has no Host header."
    );

    // With Host, connect-tenant answers it.
    let (status, text) = raw(proxy.addresses.ingress, &connect("Host: app.example\r\n")).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(raw_error(&text).0["success"], true, "{text}");
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn a_host_that_is_not_host_and_port_is_400_and_an_empty_one_is_allowed() {
    let proxy = Proxy::start("").await;
    let token = proxy.token();
    let request = |host: &str, token: Option<&str>| {
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        format!("GET /x HTTP/1.1\r\nHost: {host}\r\n{authorization}Connection: close\r\n\r\n")
    };
    for host in [
        "a@b",
        "user:secret@app.example",
        "app.example:http",
        "a:1:2",
        "app.example/x",
        "[::1",
    ] {
        for token in [Some(token.as_str()), None] {
            let (status, text) = raw(proxy.addresses.ingress, &request(host, token)).await;
            assert_eq!(status, 400, "Host: {host}: {text}");
            let (error, challenged) = raw_error(&text);
            assert_eq!(error["error"], "invalid_request", "Host: {host}: {text}");
            assert!(!challenged, "{text}");
        }
    }
    assert_eq!(proxy.backend_hits(), 0, "a malformed Host was forwarded");
    // RFC 9112 §3.2 allows an empty Host; ports and IP literals are fine.
    for host in ["", "app.example:8443", "127.0.0.1", "[::1]:8080"] {
        let (status, text) = raw(proxy.addresses.ingress, &request(host, Some(&token))).await;
        assert_eq!(status, 200, "Host: {host}: {text}");
    }
}

/// Sends one HTTP/2 request (prior knowledge) whose header block is `block` (HPACK,
/// literal fields only, no Huffman) and returns the `:status` of the answer.
async fn h2_status(addr: SocketAddr, block: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]); // SETTINGS, empty
    let length = u32::try_from(block.len()).unwrap().to_be_bytes();
    // HEADERS on stream 1, END_STREAM | END_HEADERS.
    bytes.extend_from_slice(&[length[1], length[2], length[3], 0x1, 0x5, 0, 0, 0, 1]);
    bytes.extend_from_slice(block);
    stream.write_all(&bytes).await.unwrap();
    let read = async {
        loop {
            let mut header = [0u8; 9];
            stream.read_exact(&mut header).await.expect("a frame");
            let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.expect("its payload");
            match header[3] {
                // The sidecar's SETTINGS: acknowledged.
                0x4 if header[4] & 0x1 == 0 => {
                    let ack = [0, 0, 0, 0x4, 0x1, 0, 0, 0, 0];
                    stream.write_all(&ack).await.unwrap();
                }
                // The answer's HEADERS: `:status` comes first, from the static table.
                0x1 => {
                    return match payload.first().map(|b| b & 0x7f) {
                        Some(8) => 200,
                        Some(12) => 400,
                        _ => panic!("unexpected :status field {payload:02x?}"),
                    }
                }
                0x3 | 0x7 => panic!("stream reset or GOAWAY: {payload:02x?}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer")
}

/// An HPACK literal field without indexing, its name from the static table.
fn hpack_literal(index: u8, value: &str, block: &mut Vec<u8>) {
    fn integer(value: usize, prefix_bits: u32, first: u8, block: &mut Vec<u8>) {
        let max = (1usize << prefix_bits) - 1;
        if value < max {
            block.push(first | value as u8);
            return;
        }
        block.push(first | max as u8);
        let mut rest = value - max;
        while rest >= 128 {
            block.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        block.push(rest as u8);
    }
    integer(usize::from(index), 4, 0x00, block);
    integer(value.len(), 7, 0x00, block);
    block.extend_from_slice(value.as_bytes());
}

#[tokio::test]
async fn an_http2_request_takes_its_authority_and_without_authority_or_host_is_400() {
    const AUTHORITY: u8 = 1;
    const AUTHORIZATION: u8 = 23;
    const HOST: u8 = 38;
    let proxy = Proxy::start("").await;
    let token = format!("Bearer {}", proxy.token());
    // :method GET, :scheme http, :path / (static table 2, 6, 4), then the fields given.
    let block = |fields: &[(u8, &str)]| {
        let mut block = vec![0x82, 0x86, 0x84];
        for (index, value) in fields {
            hpack_literal(*index, value, &mut block);
        }
        block
    };
    let addr = proxy.addresses.ingress;
    assert_eq!(
        h2_status(addr, &block(&[(AUTHORIZATION, &token)])).await,
        400
    );
    assert_eq!(
        h2_status(
            addr,
            &block(&[
                (AUTHORITY, "app.example"),
                (HOST, "other.example"),
                (AUTHORIZATION, &token)
            ])
        )
        .await,
        400,
        "Host and :authority disagree"
    );
    assert_eq!(proxy.backend_hits(), 0);
    assert_eq!(
        h2_status(
            addr,
            &block(&[(AUTHORITY, "app.example"), (AUTHORIZATION, &token)])
        )
        .await,
        200
    );
    assert_eq!(
        h2_status(
            addr,
            &block(&[(HOST, "app.example"), (AUTHORIZATION, &token)])
        )
        .await,
        200
    );
    assert_eq!(proxy.backend_hits(), 2);
}

#[tokio::test]
async fn path_and_query_arrive_byte_for_byte() {
    let proxy = Proxy::start("").await;
    let path = "/a%20b/c%2Fd/%C3%A4/./x";
    let query = "x=1&y=%2F&z&w=a+b&v=%252e";
    let answer = get(
        &proxy.url(&format!("{path}?{query}")),
        &[("authorization", &bearer(&proxy.token()))],
    )
    .await;
    assert_eq!(answer.json()["path"], path);
    assert_eq!(answer.json()["query"], query);
    // Origin-form, as a reverse proxy sends it: not `http://backend/...`.
    assert_eq!(answer.json()["target"], format!("{path}?{query}"));
}

#[tokio::test]
async fn a_1_mib_body_arrives_intact() {
    let proxy = Proxy::start("").await;
    let body: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let digest: String = ring::digest::digest(&ring::digest::SHA256, &body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let request = Request::post(proxy.url("/upload"))
        .header("authorization", bearer(&proxy.token()))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let answer = send(request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["body_length"], 1024 * 1024);
    assert_eq!(answer.json()["body_sha256"], digest);
}

#[tokio::test]
async fn http2_clients_are_served_and_host_comes_from_the_authority() {
    let proxy = Proxy::start("").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = Request::get(proxy.url("/h2"))
        .header("authorization", bearer(&proxy.token()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let answer = common::proxy::collect(response).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.echoed("host"), [proxy.addresses.ingress.to_string()]);
    assert_eq!(answer.echoed("x-tenant-id"), [TENANT]);
}

#[tokio::test]
async fn upstream_down_is_502_json() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let proxy = Proxy::start_with_upstream(&dead, "").await;
    let answer = get(
        &proxy.url("/x"),
        &[("authorization", &bearer(&proxy.token()))],
    )
    .await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"], "bad_gateway");
}

#[tokio::test]
async fn slow_upstream_is_504_json() {
    // A backend that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let proxy = Proxy::start_with_upstream(
        &format!("http://{addr}"),
        "[ingress]\nrequest_timeout_ms = 300",
    )
    .await;
    let answer = get(
        &proxy.url("/x"),
        &[("authorization", &bearer(&proxy.token()))],
    )
    .await;
    assert_eq!(answer.status, 504);
    assert_eq!(answer.json()["error"], "gateway_timeout");
}

#[tokio::test]
async fn no_key_set_is_503_with_retry_after() {
    let proxy = Proxy::start("").await;
    proxy.emulator.set_jwks_failure(Failure::Status(500));
    let answer = get(
        &proxy.url("/x"),
        &[("authorization", &bearer(&proxy.token()))],
    )
    .await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn no_access_token_is_503_with_retry_after() {
    let proxy = Proxy::start("").await;
    // Keys are loaded with a first token; then the token is revoked and the endpoint fails.
    let token = proxy.token();
    assert_eq!(
        get(&proxy.url("/x"), &[("authorization", &bearer(&token))])
            .await
            .status,
        200
    );
    proxy.emulator.set_token_failure(Failure::Status(503));
    proxy.clock.advance(Duration::from_secs(3600));
    let fresh = proxy.token();
    let answer = get(&proxy.url("/x"), &[("authorization", &bearer(&fresh))]).await;
    assert_eq!(answer.status, 503);
    assert!(answer.headers.contains_key("retry-after"));
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
}

/// A WebSocket echo server (tokio-tungstenite) on an ephemeral port.
async fn websocket_echo_backend() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = socket.send(message).await;
                    }
                }
            });
        }
    });
    addr
}

type ClientSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_websocket(proxy: &Proxy) -> ClientSocket {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/socket",
            proxy.addresses.ingress
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", bearer(&proxy.token()).parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("handshake through the proxy");
    assert_eq!(response.status(), 101);
    socket
}

async fn echo_once(socket: &mut ClientSocket, text: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    socket.send(Message::text(text)).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    echoed.into_text().unwrap().as_str().to_owned()
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let backend = websocket_echo_backend().await;
    let proxy = Proxy::start_with_upstream(&format!("http://{backend}"), "").await;
    let mut socket = open_websocket(&proxy).await;
    assert_eq!(
        echo_once(&mut socket, "hello through the sidecar").await,
        "hello through the sidecar"
    );

    // Without a token the handshake is refused before reaching the backend.
    let unauthenticated =
        tokio_tungstenite::connect_async(format!("ws://{}/socket", proxy.addresses.ingress)).await;
    assert!(unauthenticated.is_err());
}

#[tokio::test]
async fn an_open_websocket_keeps_working_during_the_drain_and_ends_it_when_closed() {
    let backend = websocket_echo_backend().await;
    let mut proxy = Proxy::start_with_upstream(
        &format!("http://{backend}"),
        "[server]\nshutdown_grace_s = 30",
    )
    .await;
    let mut socket = open_websocket(&proxy).await;
    proxy.shut_down();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(echo_once(&mut socket, "still here").await, "still here");
    let finished = proxy.finished.take().unwrap();
    assert!(
        !finished.is_finished(),
        "the drain waits for the open WebSocket"
    );
    socket.close(None).await.unwrap();
    drop(socket);
    tokio::time::timeout(Duration::from_secs(10), finished)
        .await
        .expect("the drain ends once the WebSocket is closed")
        .unwrap();
}

#[tokio::test]
async fn a_websocket_left_open_is_cut_when_the_grace_period_ends() {
    let backend = websocket_echo_backend().await;
    let mut proxy = Proxy::start_with_upstream(
        &format!("http://{backend}"),
        "[server]\nshutdown_grace_s = 1",
    )
    .await;
    let _socket = open_websocket(&proxy).await;
    let started = std::time::Instant::now();
    proxy.shut_down();
    tokio::time::timeout(Duration::from_secs(10), proxy.finished.take().unwrap())
        .await
        .expect("the server stops after the grace period")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for the grace period"
    );
}

/// The first non-loopback IPv4 address of this machine, to reach a listener on 0.0.0.0
/// from an address that is not loopback.
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let output = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse::<std::net::IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback())
}

/// Issue 16, rollouts with native sidecars (SIGTERM reaches the sidecar only after the
/// backend has exited): the backend's preStop calls `POST /drain` on the admin port.
/// Readiness fails, the listener keeps accepting, and HTTP/1 answers carry
/// `Connection: close`; only the pod's own containers (loopback) may ask.
#[tokio::test]
async fn post_drain_from_loopback_fails_readiness_and_closes_keep_alive_but_keeps_accepting() {
    let proxy = Proxy::start_with_env_and_backend(
        "",
        vec![("JTL_SIDECAR_ADMIN__LISTEN".into(), "0.0.0.0:0".into())],
    )
    .await;
    let admin_port = proxy.addresses.admin.port();
    let loopback = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let token = proxy.token();
    let before = get(
        &proxy.url("/before"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(before.status, 200);
    assert!(
        before.headers.get("connection").is_none(),
        "{:?}",
        before.headers
    );

    // Not a GET (a probe or a crawler must not drain the pod), and not from outside.
    let (status, _) = raw(
        loopback,
        "GET /drain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 405);
    match non_loopback_ip() {
        Some(ip) => {
            let (status, text) = raw(
                SocketAddr::new(ip, admin_port),
                "POST /drain HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
            assert_eq!(status, 403, "{text}");
            let ready = get(&proxy.admin_url("/readyz"), &[]).await;
            assert_eq!(ready.status, 200, "a refused drain changes nothing");
        }
        None => eprintln!("SKIP (part): no non-loopback address to test the 403 of /drain from"),
    }

    let (status, text) = raw(
        loopback,
        "POST /drain HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(status, 202, "{text}");
    let ready = get(&proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, 503);
    assert!(ready.json()["missing"]
        .to_string()
        .contains("shutting_down"));
    let during = get(
        &proxy.url("/during"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(during.status, 200, "still accepting and serving");
    assert_eq!(
        during.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "keep-alive clients are told to go"
    );
}

// ---- the HTTP layer ---------------------------------------------------------------------------------------

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let proxy = Proxy::start("[server]\nheader_read_timeout_ms = 300").await;
    let started = std::time::Instant::now();
    let (_, text) = raw(proxy.addresses.ingress, "GET /x HTTP/1.1\r\nHost: a\r\n").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connection was closed by the sidecar"
    );
    assert!(!text.contains("200 OK"));
}

#[tokio::test]
async fn malformed_http_is_refused_and_not_forwarded() {
    let proxy = Proxy::start("").await;
    let (status, _) = raw(
        proxy.addresses.ingress,
        "GET /x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(proxy.backend_hits(), 0);
}

// ---- admin --------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_readiness_and_metrics() {
    let proxy = Proxy::start("").await;
    assert_eq!(get(&proxy.admin_url("/healthz"), &[]).await.status, 200);
    // The refreshers load a token and the keys on their own.
    let mut ready = get(&proxy.admin_url("/readyz"), &[]).await;
    for _ in 0..200 {
        if ready.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = get(&proxy.admin_url("/readyz"), &[]).await;
    }
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );

    get(
        &proxy.url("/x"),
        &[("authorization", &bearer(&proxy.token()))],
    )
    .await;
    get(&proxy.url("/x"), &[]).await;
    let metrics =
        String::from_utf8(get(&proxy.admin_url("/metrics"), &[]).await.body.to_vec()).unwrap();
    for expected in [
        "jtl_sidecar_requests_total{listener=\"ingress\",outcome=\"forwarded\",status=\"200\"} 1",
        "jtl_sidecar_requests_total{listener=\"ingress\",outcome=\"missing_token\",status=\"401\"} 1",
        "jtl_sidecar_verification_duration_seconds_count 1",
        "jtl_sidecar_upstream_duration_seconds_count{listener=\"ingress\"} 1",
        "jtl_sidecar_token_fetches_total{result=\"success\"} 1",
        "jtl_sidecar_jwks_fetches_total{result=\"success\"} 1",
        "jtl_sidecar_verified_cache_lookups_total{result=\"miss\"} 1",
        "jtl_sidecar_requests_in_flight{listener=\"ingress\"} 0",
    ] {
        assert!(metrics.contains(expected), "missing {expected} in\n{metrics}");
    }
}

#[tokio::test]
async fn readiness_names_what_is_missing() {
    let proxy = Proxy::start("").await;
    proxy.emulator.set_jwks_failure(Failure::Status(500));
    proxy.emulator.set_token_failure(Failure::Status(500));
    let answer = get(&proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(answer.status, 503);
    let missing = answer.json()["missing"].clone();
    assert_eq!(missing, json!(["access_token", "jwks"]));
}

#[tokio::test]
async fn silent_connections_and_slow_http2_prefaces_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = Proxy::start("[server]\nheader_read_timeout_ms = 300").await;
    for opening in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut stream = tokio::net::TcpStream::connect(proxy.addresses.ingress)
            .await
            .unwrap();
        stream.write_all(opening).await.unwrap();
        let mut buffer = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "the sidecar closed the connection after {:?}",
            String::from_utf8_lossy(opening)
        );
    }
}

#[tokio::test]
async fn connection_cannot_remove_host_request_id_or_forwarding_headers() {
    let proxy = Proxy::start("").await;
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
    let proxy = Proxy::start("").await;
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
async fn trace_and_connect_are_not_forwarded() {
    let proxy = Proxy::start("").await;
    let token = proxy.token();
    let trace = Request::builder()
        .method("TRACE")
        .uri(proxy.url("/x"))
        .header("authorization", bearer(&token))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(trace).await.status, 405);
    let (status, _) = raw(
        proxy.addresses.ingress,
        &format!("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 405);
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn readiness_is_lost_when_the_access_token_expires_and_cannot_be_renewed() {
    let proxy = Proxy::start("").await;
    let ready = || async { get(&proxy.admin_url("/readyz"), &[]).await };
    for _ in 0..200 {
        if ready().await.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready().await.status, 200);
    proxy.emulator.set_token_failure(Failure::Status(503));
    proxy.clock.advance(Duration::from_secs(3600));
    let answer = ready().await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["missing"], json!(["access_token"]));
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    // A backend that counts the connections it accepts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    let proxy = Proxy::start_with_upstream(&format!("http://{addr}"), "").await;
    let token = proxy.token();
    for _ in 0..30 {
        let answer = get(&proxy.url("/x"), &[("authorization", &bearer(&token))]).await;
        assert_eq!((answer.status, answer.body.as_ref()), (200, &b"ok"[..]));
    }
    // One pooled connection per worker thread at most, not one per request.
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert!(
        accepted.load(Ordering::SeqCst) <= workers,
        "{} connections",
        accepted.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn bodies_stream_through_without_buffering() {
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};
    use tokio::sync::{mpsc, oneshot};

    // The backend sends a first chunk and holds the rest until the test has seen that
    // chunk arrive through the proxy: a proxy that buffered the whole answer would hang.
    let (release_sender, release) = oneshot::channel::<()>();
    let release = Arc::new(Mutex::new(Some(release)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(move |_request| {
            let release = release.lock().unwrap().take();
            async move {
                let (chunks, receiver) =
                    mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(2);
                tokio::spawn(async move {
                    let _ = chunks
                        .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"first;"))))
                        .await;
                    if let Some(release) = release {
                        let _ = release.await;
                    }
                    let _ = chunks
                        .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"second"))))
                        .await;
                });
                let body = StreamBody::new(tokio_stream_from(receiver));
                Ok::<_, std::convert::Infallible>(http::Response::new(body))
            }
        });
        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });
    let proxy = Proxy::start_with_upstream(&format!("http://{addr}"), "").await;
    let request = Request::get(proxy.url("/stream"))
        .header("authorization", bearer(&proxy.token()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = common::proxy::client().request(request).await.unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk arrives while the backend still holds the rest")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"first;"));
    release_sender.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"second"));
}

/// A stream over an mpsc receiver (tokio's receiver is not a Stream by itself).
fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test]
async fn request_bodies_stream_to_the_backend() {
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;

    // The backend answers as soon as it has read the first chunk of the request body;
    // the client sends the rest only after that answer: buffering would hang.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service =
            hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                let mut body = request.into_body();
                let first = match body.frame().await {
                    Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
                    _ => Bytes::new(),
                };
                tokio::spawn(async move { while body.frame().await.is_some() {} });
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(first)))
            });
        let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });
    let proxy = Proxy::start_with_upstream(&format!("http://{addr}"), "").await;
    let (chunks, receiver) =
        mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>>(2);
    let request = Request::post(proxy.url("/upload"))
        .header("authorization", bearer(&proxy.token()))
        .body(StreamBody::new(tokio_stream_from(receiver)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    chunks
        .send(Ok(hyper::body::Frame::data(Bytes::from_static(b"part-1"))))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .expect("the backend answered before the request body was complete")
        .unwrap();
    let answer = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(answer, Bytes::from_static(b"part-1"));
    drop(chunks);
}

#[tokio::test]
async fn a_second_sidecar_cannot_share_the_ingress_port() {
    let proxy = Proxy::start("").await;
    let env = vec![
        (
            "JTL_SIDECAR_INGRESS__LISTEN".to_owned(),
            proxy.addresses.ingress.to_string(),
        ),
        (
            "JTL_SIDECAR_ADMIN__LISTEN".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        ("JTL_SIDECAR_EGRESS__LISTEN".to_owned(), "".to_owned()),
        ("JTL_SIDECAR_JTL__CLIENT_ID".to_owned(), "a".to_owned()),
        ("JTL_SIDECAR_JTL__CLIENT_SECRET".to_owned(), "b".to_owned()),
    ];
    let config = jtl_auth_sidecar::config::load_str("", env).unwrap().config;
    let second =
        jtl_auth_sidecar::server::Server::bind(config, jtl_auth_sidecar::clock::Clock::system())
            .await;
    match second {
        Err(error) => assert!(
            error
                .to_string()
                .starts_with("ingress.listen: cannot listen on"),
            "{error}"
        ),
        Ok(_) => panic!("a second server bound the ingress port of the first"),
    }
}

#[tokio::test]
async fn an_https_upstream_goes_through_tls_and_an_untrusted_certificate_is_502() {
    // The emulator's HTTPS server has a self-signed certificate that the upstream client
    // (webpki roots) does not trust: the request must fail at the TLS handshake.
    let tls_server = jtl_auth_sidecar::emulator::Emulator::start(
        jtl_auth_sidecar::emulator::EmulatorOptions {
            tls: true,
            ..Default::default()
        },
        jtl_auth_sidecar::clock::Clock::system(),
    )
    .await
    .unwrap();
    let proxy = Proxy::start_with_upstream(&tls_server.base_url(), "").await;
    let answer = get(
        &proxy.url("/x"),
        &[("authorization", &bearer(&proxy.token()))],
    )
    .await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"], "bad_gateway");
    assert_eq!(tls_server.api_requests(), 0);
}

#[tokio::test]
async fn the_sidecars_own_answers_carry_the_request_id_and_the_backends_pass_unchanged() {
    let proxy = Proxy::start("").await;
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
