//! The egress listener (SPEC §8, §6) over real sockets: the sidecar in front of the JTL
//! emulator, whose API echo answers with the request it received (or 401 when the access
//! token is not one it issued and still honours). Who may call it: local_callers.rs.

mod act_as;
#[path = "../common/mod.rs"]
mod common;
mod local_callers;
mod rate_limits;

use std::time::Duration;

use bytes::Bytes;
use common::harness::{TENANT, eventually, eventually_async};
use common::proxy::{Answer, Proxy, client, collect, get, send};
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use jtl_auth_sidecar::config::load_str;
use jtl_auth_sidecar::emulator::{EmulatorOptions, Failure};

/// A POST to the egress listener with a body whose length is announced.
async fn post(proxy: &Proxy, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Answer {
    let mut request = Request::post(proxy.egress_url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(request.body(Full::new(Bytes::from(body))).unwrap()).await
}

/// A POST for [`TENANT`] whose body is sent in chunks, without `Content-Length`.
async fn post_chunked(proxy: &Proxy, path: &str, chunks: Vec<Vec<u8>>) -> Answer {
    let frames = chunks
        .into_iter()
        .map(|chunk| Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(chunk))));
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let request = Request::post(proxy.egress_url(path))
        .header("x-tenant-id", TENANT)
        .body(body)
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    collect(client.request(request).await.unwrap()).await
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// One request that obtains the first access token, so later deltas count only what the
/// test causes.
async fn warm_up(proxy: &Proxy) {
    let answer = get(&proxy.egress_url("/warm-up"), &[]).await;
    assert_eq!(answer.status, 200, "warm-up: {:?}", answer.body);
}

#[tokio::test]
async fn egress_injects_the_access_token_and_keeps_method_path_query_and_body() {
    let proxy = Proxy::builder().egress().start().await;
    let body = br#"{"sku":"A-1","qty":2}"#.to_vec();
    let answer = post(
        &proxy,
        "/v1/orders/42?expand=items&filter=a%2Fb",
        &[
            ("authorization", "Bearer the-callers-own-token"),
            ("x-tenant-id", TENANT),
            ("content-type", "application/json"),
            ("x-custom", "kept"),
        ],
        body.clone(),
    )
    .await;

    // 200 from the echo: it accepted the bearer as an access token it issued.
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let echoed = answer.json();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["path"], "/v1/orders/42");
    assert_eq!(echoed["query"], "expand=items&filter=a%2Fb");
    assert_eq!(echoed["body"], String::from_utf8(body).unwrap());
    let authorization = answer.echoed("authorization");
    assert_eq!(authorization.len(), 1, "{authorization:?}");
    assert!(authorization[0].starts_with("Bearer "));
    assert!(!authorization[0].contains("the-callers-own-token"));
    assert_eq!(answer.echoed("x-tenant-id"), vec![TENANT.to_owned()]);
    assert_eq!(answer.echoed("x-custom"), vec!["kept".to_owned()]);
    assert_eq!(proxy.emulator.token_requests(), 1);
}

#[tokio::test]
async fn egress_sends_the_apis_host_and_drops_hop_by_hop_headers() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nallowed_hosts = [\"backend.internal\"]")
        .start()
        .await;
    let answer = get(
        &proxy.egress_url("/v1/ping"),
        &[
            ("host", "backend.internal:3000"),
            ("connection", "X-Private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic eDp5"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.echoed("host"),
        vec![proxy.emulator.addr().to_string()]
    );
    for header in ["x-private", "keep-alive", "proxy-authorization"] {
        assert!(answer.echoed(header).is_empty(), "{header} was forwarded");
    }
    // The answer comes back with JTL's rate-limit headers.
    assert_eq!(answer.headers["x-ratelimit-limit"], "1000");
    assert_eq!(answer.headers["x-ratelimit-remaining"], "999");
}

#[tokio::test]
async fn a_tenant_id_that_is_not_one_uuid_is_refused_with_400_before_reaching_jtl() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();

    for headers in [
        vec![("x-tenant-id", "acme")],
        vec![("x-tenant-id", "")],
        vec![("x-tenant-id", "7c9e6679742540de944be07fc1f90ae7")],
        vec![("x-tenant-id", TENANT), ("x-tenant-id", TENANT)],
        // Spelled with underscores: some servers read it as X-Tenant-ID, so it is checked
        // like one, and refused rather than passed on unchecked.
        vec![("x_tenant_id", "acme")],
        vec![("X_Tenant_ID", TENANT)],
    ] {
        let answer = get(&proxy.egress_url("/v1/orders"), &headers).await;
        assert_eq!(answer.status, 400, "{headers:?}");
        assert_eq!(answer.headers["content-type"], "application/json");
        assert_eq!(answer.json()["error"], "invalid_request", "{headers:?}");
        assert!(answer.json()["error_description"].is_string());
    }
    assert_eq!(proxy.emulator.api_requests(), api_before);

    // An upper-case UUID is a UUID, and passes as sent.
    let upper = TENANT.to_ascii_uppercase();
    let answer = get(&proxy.egress_url("/v1/orders"), &[("x-tenant-id", &upper)]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.echoed("x-tenant-id"), vec![upper]);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_post_is_retried_with_its_body() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let tokens_before = proxy.emulator.token_requests();
    let api_before = proxy.emulator.api_requests();
    proxy.emulator.revoke_access_tokens();

    let body = b"name=widget&price=9.99".to_vec();
    let answer = post(
        &proxy,
        "/v1/items",
        &[("x-tenant-id", TENANT)],
        body.clone(),
    )
    .await;

    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["method"], "POST");
    assert_eq!(answer.json()["body"], String::from_utf8(body).unwrap());
    assert_eq!(answer.echoed("x-tenant-id"), vec![TENANT.to_owned()]);
    assert_eq!(proxy.emulator.token_requests() - tokens_before, 1);
    assert_eq!(proxy.emulator.api_requests() - api_before, 2);
}

#[tokio::test]
async fn a_chunked_body_within_the_limit_is_retried_intact() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nmax_retry_body_bytes = 1024")
        .start()
        .await;
    warm_up(&proxy).await;
    proxy.emulator.revoke_access_tokens();

    let chunks = vec![vec![b'a'; 300], vec![b'b'; 300], vec![b'c'; 300]];
    let whole = chunks.concat();
    let answer = post_chunked(&proxy, "/v1/upload", chunks).await;

    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["body_sha256"], sha256_hex(&whole));
    assert_eq!(answer.json()["body_length"], 900);
}

#[tokio::test]
async fn fifty_concurrent_requests_refused_with_the_same_token_cause_one_token_request() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let tokens_before = proxy.emulator.token_requests();
    proxy.emulator.revoke_access_tokens();

    let client = client();
    let requests = (0..50).map(|i| {
        let client = client.clone();
        let url = proxy.egress_url(&format!("/v1/items?i={i}"));
        async move {
            let request = Request::post(url)
                .header("x-tenant-id", TENANT)
                .body(Full::new(Bytes::from(format!("item {i}"))))
                .unwrap();
            let answer = collect(client.request(request).await.unwrap()).await;
            (i, answer)
        }
    });
    let answers = futures_util::future::join_all(requests).await;

    for (i, answer) in answers {
        assert_eq!(answer.status, 200, "request {i}: {:?}", answer.body);
        assert_eq!(answer.json()["body"], format!("item {i}"));
    }
    assert_eq!(proxy.emulator.token_requests() - tokens_before, 1);
}

#[tokio::test]
async fn a_body_over_the_retry_limit_is_streamed_intact() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nmax_retry_body_bytes = 1024")
        .start()
        .await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();

    let announced = post(&proxy, "/v1/upload", &[], body.clone()).await;
    assert_eq!(announced.status, 200);
    assert_eq!(announced.json()["body_sha256"], sha256_hex(&body));

    // Without Content-Length: read up to the limit, then the rest streamed on.
    let chunks: Vec<Vec<u8>> = body.chunks(700).map(<[u8]>::to_vec).collect();
    let chunked = post_chunked(&proxy, "/v1/upload", chunks).await;
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.json()["body_length"], body.len());
    assert_eq!(chunked.json()["body_sha256"], sha256_hex(&body));
}

#[tokio::test]
async fn a_body_over_the_retry_limit_gets_jtls_401_without_a_retry() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nmax_retry_body_bytes = 1024")
        .start()
        .await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();
    proxy.emulator.revoke_access_tokens();

    let answer = post(
        &proxy,
        "/v1/upload",
        &[("x-tenant-id", TENANT)],
        vec![b'x'; 4096],
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json()["error"], "invalid_token", "JTL's own body");
    assert_eq!(proxy.emulator.api_requests() - api_before, 1);

    // The refused token was dropped: the next call, not retriable either, carries a
    // fresh one.
    let next = post(
        &proxy,
        "/v1/upload",
        &[("x-tenant-id", TENANT)],
        vec![b'y'; 4096],
    )
    .await;
    assert_eq!(next.status, 200);
}

#[tokio::test]
async fn with_retry_on_401_off_jtls_401_is_passed_through() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nretry_on_401 = false")
        .start()
        .await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();
    proxy.emulator.revoke_access_tokens();

    let answer = post(
        &proxy,
        "/v1/items",
        &[("x-tenant-id", TENANT)],
        b"small".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(proxy.emulator.api_requests() - api_before, 1);

    // The refused token was still dropped: the next call gets a fresh one.
    let next = post(
        &proxy,
        "/v1/items",
        &[("x-tenant-id", TENANT)],
        b"small".to_vec(),
    )
    .await;
    assert_eq!(next.status, 200);
}

/// JTL answers a request without `X-Tenant-ID` with 401 as well; that says nothing about
/// the token, so it is not invalidated and the request is not retried.
#[tokio::test]
async fn a_401_to_a_request_without_x_tenant_id_is_passed_back_and_invalidates_nothing() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let tokens_before = proxy.emulator.token_requests();
    let api_before = proxy.emulator.api_requests();
    proxy.emulator.set_api_failure(Failure::Status(401));

    let answer = post(&proxy, "/v1/items", &[], b"{}".to_vec()).await;
    assert_eq!(answer.status, 401, "{:?}", answer.body);
    assert_eq!(proxy.emulator.api_requests() - api_before, 1, "no retry");

    // The token was kept: the next call carries it, without a token request.
    proxy.emulator.set_api_failure(Failure::None);
    let next = get(&proxy.egress_url("/v1/items"), &[("x-tenant-id", TENANT)]).await;
    assert_eq!(next.status, 200, "{:?}", next.body);
    assert_eq!(proxy.emulator.token_requests() - tokens_before, 0);
}

#[tokio::test]
async fn token_endpoint_down_and_token_expired_answers_503_with_retry_after() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();
    proxy.emulator.set_token_failure(Failure::Status(503));
    // Past the emulator's 3600 s lifetime: the cached token has expired.
    proxy.clock.advance(Duration::from_secs(3601));

    let answer = get(&proxy.egress_url("/v1/orders"), &[("x-tenant-id", TENANT)]).await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/json");
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    // The expired token was never sent.
    assert_eq!(proxy.emulator.api_requests(), api_before);
}

#[tokio::test]
async fn a_429_from_jtl_is_passed_through_with_the_sidecars_retry_after_and_not_retried() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let tokens_before = proxy.emulator.token_requests();
    let api_before = proxy.emulator.api_requests();
    proxy
        .emulator
        .set_api_failure(Failure::RateLimited { retry_after_s: 30 });

    let answer = get(&proxy.egress_url("/v1/orders"), &[]).await;
    assert_eq!(answer.status, 429);
    // JTL sends no Retry-After: the sidecar adds one, the interval JTL named (the
    // manual clock stands still, so all of it).
    assert_eq!(answer.headers["retry-after"], "30");
    assert_eq!(answer.headers["x-ratelimit-remaining"], "0");
    assert_eq!(answer.headers["x-ratelimit-interval-length-seconds"], "30");
    // JTL's own error body, not the sidecar's.
    assert_eq!(answer.json()["error_description"], "Too many requests");
    assert_eq!(proxy.emulator.api_requests() - api_before, 1);
    assert_eq!(proxy.emulator.token_requests(), tokens_before);
}

#[tokio::test]
async fn jtl_error_bodies_are_passed_through() {
    let proxy = Proxy::builder().egress().start().await;
    proxy.emulator.set_api_failure(Failure::Status(500));
    let answer = get(&proxy.egress_url("/v1/orders"), &[]).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.json()["error"], "emulated_failure");
}

#[tokio::test]
async fn an_unreachable_api_is_502_bad_gateway() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let proxy = Proxy::builder()
        .egress()
        .env(vec![(
            "JTL_SIDECAR_JTL__API_BASE_URL".to_owned(),
            closed_url,
        )])
        .start()
        .await;
    let answer = get(&proxy.egress_url("/v1/orders"), &[]).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"], "bad_gateway");
}

#[tokio::test]
async fn egress_reaches_an_https_api_through_rustls_trusting_jtl_ca_file() {
    let options = EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    };
    let proxy = Proxy::builder().egress().emulator(options).start().await;
    let answer = get(
        &proxy.egress_url("/v1/orders?page=2"),
        &[("x-tenant-id", TENANT)],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json()["query"], "page=2");
    // HTTP/2 by ALPN: the API's authority travels as `:authority`, not as `Host`.
    assert_eq!(answer.json()["version"], "HTTP/2.0");
    assert!(answer.echoed("host").is_empty());
}

#[tokio::test]
async fn trace_is_not_forwarded() {
    let proxy = Proxy::builder().egress().start().await;
    let request = Request::builder()
        .method("TRACE")
        .uri(proxy.egress_url("/v1/orders"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(request).await;
    assert_eq!(answer.status, 405);
    assert_eq!(proxy.emulator.api_requests(), 0);
}

#[tokio::test]
async fn egress_requests_are_counted_under_the_egress_listener() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    get(&proxy.egress_url("/v1/x"), &[("x-tenant-id", "nope")]).await;
    let metrics =
        String::from_utf8(get(&proxy.admin_url("/metrics"), &[]).await.body.to_vec()).unwrap();
    for expected in [
        "jtl_sidecar_requests_total{listener=\"egress\",outcome=\"forwarded\",status=\"200\"} 1",
        "jtl_sidecar_requests_total{listener=\"egress\",outcome=\"invalid_request\",status=\"400\"} 1",
        "jtl_sidecar_upstream_duration_seconds_count{listener=\"egress\"} 1",
        "jtl_sidecar_requests_in_flight{listener=\"egress\"} 0",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn egress_is_disabled_by_an_empty_listen() {
    let proxy = Proxy::builder().start().await;
    assert!(proxy.addresses.egress.is_none());
}

#[test]
fn a_non_loopback_egress_listen_without_allow_non_loopback_is_a_config_error() {
    let base = "[ingress]\nupstream = \"http://127.0.0.1:3000\"\n[jtl]\nclient_id = \"a\"\nclient_secret = \"b\"\n[session]\naudience = \"app-1\"\n";
    let errors = load_str(
        &format!("{base}[egress]\nlisten = \"0.0.0.0:8081\"\n"),
        Vec::new(),
    )
    .map(|_| ())
    .expect_err("refused");
    assert!(errors.to_string().contains("egress.listen"), "{errors}");

    let allowed = load_str(
        &format!("{base}[egress]\nlisten = \"0.0.0.0:8081\"\nallow_non_loopback = true\n"),
        Vec::new(),
    )
    .expect("allowed");
    assert!(
        allowed
            .warnings
            .iter()
            .any(|warning| warning.starts_with("egress.listen:"))
    );
}

#[tokio::test]
async fn shutdown_lets_an_egress_request_in_flight_finish_and_refuses_new_connections() {
    let mut proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let egress = proxy.addresses.egress.unwrap();
    proxy
        .emulator
        .set_api_failure(Failure::Delay(Duration::from_millis(600)));
    let api_requests = proxy.emulator.api_requests();
    let in_flight = tokio::spawn(get_owned(proxy.egress_url("/v1/slow")));
    // At JTL's API (counted on arrival), held there by the delay: truly in flight.
    eventually("the request reached JTL", || {
        proxy.emulator.api_requests() > api_requests
    })
    .await;

    proxy.shut_down();
    eventually_async("the egress listener stops accepting", || async {
        tokio::net::TcpStream::connect(egress).await.is_err()
    })
    .await;
    let finished = proxy.finished.take().unwrap();
    assert!(
        !finished.is_finished(),
        "the drain waits for the egress request"
    );
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "the request in flight was answered");
    tokio::time::timeout(Duration::from_secs(10), finished)
        .await
        .expect("the drain ends")
        .unwrap();
}

async fn get_owned(url: String) -> Answer {
    get(&url, &[]).await
}

#[tokio::test]
async fn a_401_to_the_fresh_token_is_passed_on_without_a_third_attempt_and_drops_that_token_too() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let tokens_before = proxy.emulator.token_requests();
    let api_before = proxy.emulator.api_requests();
    proxy.emulator.set_api_failure(Failure::Status(401));

    let answer = post(
        &proxy,
        "/v1/items",
        &[("x-tenant-id", TENANT)],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 401);
    assert_eq!(proxy.emulator.api_requests() - api_before, 2);

    // The token that got the second 401 is gone as well: one more token request (kept,
    // it would be none).
    proxy.emulator.set_api_failure(Failure::None);
    let answer = get(&proxy.egress_url("/v1/items"), &[]).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(proxy.emulator.token_requests() - tokens_before, 2);
}

#[tokio::test]
async fn a_401_when_no_fresh_token_can_be_had_answers_503_with_the_token_endpoints_retry_after() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();
    proxy.emulator.revoke_access_tokens();
    proxy
        .emulator
        .set_token_failure(Failure::StatusRetryAfter(503, 120));

    let answer = post(
        &proxy,
        "/v1/items",
        &[("x-tenant-id", TENANT)],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 503, "{:?}", answer.body);
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    let retry_after: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The token endpoint's own Retry-After is the floor of the wait.
    assert!((100..=120).contains(&retry_after), "{retry_after}");
    assert_eq!(proxy.emulator.api_requests() - api_before, 1);
}

#[tokio::test]
async fn connection_cannot_drop_the_checked_tenant_header() {
    let proxy = Proxy::builder().egress().start().await;
    let answer = get(
        &proxy.egress_url("/v1/orders"),
        &[("x-tenant-id", TENANT), ("connection", "X-Tenant-ID")],
    )
    .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.echoed("x-tenant-id"), vec![TENANT.to_owned()]);
}

#[tokio::test]
async fn a_body_that_stalls_before_its_end_is_answered_408_and_not_sent() {
    let env = vec![(
        "JTL_SIDECAR_SERVER__HEADER_READ_TIMEOUT_MS".to_owned(),
        "500".to_owned(),
    )];
    let proxy = Proxy::builder().egress().env(env).start().await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();
    // One chunk, then nothing: the body never ends.
    let first = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        http_body::Frame::data(Bytes::from_static(b"{\"partial\":")),
    )]);
    let stalled = futures_util::StreamExt::chain(first, futures_util::stream::pending());
    let request = Request::post(proxy.egress_url("/v1/items"))
        .body(StreamBody::new(stalled).boxed())
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("answered before the client gave up")
        .unwrap();
    let answer = collect(response).await;
    assert_eq!(answer.status, 408);
    assert_eq!(answer.json()["error"], "invalid_request");
    assert_eq!(proxy.emulator.api_requests(), api_before);
}

#[tokio::test]
async fn json_with_the_utf8_charset_reaches_jtl_as_plain_application_json() {
    let proxy = Proxy::builder().egress().start().await;
    for (sent, received) in [
        ("application/json; charset=utf-8", "application/json"),
        ("Application/JSON;Charset=\"UTF-8\"", "application/json"),
        ("application/json", "application/json"),
        (
            "application/json; charset=iso-8859-1",
            "application/json; charset=iso-8859-1",
        ),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        (
            "multipart/form-data; boundary=xyz",
            "multipart/form-data; boundary=xyz",
        ),
    ] {
        let answer = post(
            &proxy,
            "/v1/orders",
            &[("content-type", sent)],
            b"{\"a\":1}".to_vec(),
        )
        .await;
        assert_eq!(answer.status, 200, "{sent}: {:?}", answer.body);
        assert_eq!(
            answer.echoed("content-type"),
            vec![received.to_owned()],
            "{sent}"
        );
        assert_eq!(answer.json()["body"], "{\"a\":1}", "{sent}");
    }
}

/// `egress.request_timeout_ms` bounds the wait for JTL's response headers: a JTL that
/// takes the request and never answers is `504 gateway_timeout` after the configured
/// time, not the 60 s default.
#[tokio::test]
async fn jtl_sending_no_response_headers_is_504_after_egress_request_timeout_ms() {
    // A stand-in for JTL's API that reads the request, says it has, and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_api = format!("http://{}", listener.local_addr().unwrap());
    let (arrived, mut request_arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let arrived = arrived.clone();
            held.push(tokio::spawn(async move {
                let mut buffer = vec![0; 4096];
                let read = tokio::io::AsyncReadExt::read(&mut stream, &mut buffer).await;
                if read.is_ok_and(|n| n > 0) {
                    let _ = arrived.send(());
                }
                // Hold the connection open, silent, until the test ends.
                std::future::pending::<()>().await;
                drop(stream);
            }));
        }
    });
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nrequest_timeout_ms = 300")
        .env([("JTL_SIDECAR_JTL__API_BASE_URL".to_owned(), silent_api)])
        .start()
        .await;

    let started = std::time::Instant::now();
    let answer = get(&proxy.egress_url("/v1/items"), &[]).await;
    let took = started.elapsed();

    assert!(
        request_arrived.try_recv().is_ok(),
        "the request reached the stand-in, so the wait was for the response headers"
    );
    assert_eq!(answer.status, 504, "{:?}", answer.body);
    assert_eq!(
        answer.headers["content-type"], "application/json",
        "SPEC's error body"
    );
    let body = answer.json();
    assert_eq!(body["error"], "gateway_timeout");
    assert_eq!(
        body["error_description"],
        "JTL's API did not answer in time."
    );
    assert!(
        took >= Duration::from_millis(300),
        "not before the timeout: {took:?}"
    );
    // Far below the 60 s default: the configured value is the one in force.
    assert!(took < Duration::from_secs(10), "took {took:?}");
}
