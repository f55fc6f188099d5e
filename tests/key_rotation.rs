//! No false 401 through a key rotation (SPEC §5), over real sockets: a token whose key is
//! not in the cached set is decided against a key set fetched after it arrived, even while
//! forged tokens keep the refetch rate limit spent; the waiting is bounded.

mod common;

use std::time::Duration;

use common::harness::{TENANT, USER, eventually_async};
use common::proxy::{Answer, Proxy, get};
use jtl_auth_sidecar::jtl::MAX_WAITING_FOR_KEYS;
use serde_json::json;

fn hour() -> Duration {
    Duration::from_secs(3600)
}

/// A token signed by a real key that names a kid the key set does not hold.
fn forged(proxy: &Proxy, n: usize) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": format!("forged-{n}")});
    let claims = proxy.emulator.session_claims(TENANT, USER, "acme", hour());
    let kid = proxy.emulator.default_kid().unwrap();
    proxy
        .emulator
        .mint_with_header(&header, &claims, &kid)
        .unwrap()
}

fn spawn_get(proxy: &Proxy, token: String) -> tokio::task::JoinHandle<Answer> {
    let url = proxy.url("/orders");
    tokio::spawn(async move { get(&url, &[("authorization", &format!("Bearer {token}"))]).await })
}

async fn metric(proxy: &Proxy, line_start: &str) -> Option<String> {
    let body = get(&proxy.admin_url("/metrics"), &[]).await.body;
    String::from_utf8(body.to_vec())
        .ok()?
        .lines()
        .find(|line| line.starts_with(line_start))
        .map(str::to_owned)
}

async fn waiting_requests(proxy: &Proxy) -> Option<String> {
    metric(proxy, "jtl_sidecar_jwks_waiting_requests ").await
}

/// A sidecar whose key set was just loaded by a verified request: no refetch is permitted
/// for the next 10 s (jwks_min_refetch_interval_s).
async fn warmed_proxy() -> Proxy {
    let proxy = Proxy::builder().start().await;
    assert_eq!(spawn_get(&proxy, proxy.token()).await.unwrap().status, 200);
    proxy
}

#[tokio::test]
async fn a_rotated_in_key_gets_200_while_forged_tokens_keep_the_refetch_limit_spent() {
    let proxy = warmed_proxy().await;
    let fetches_before = proxy.emulator.jwks_requests();

    // The key set was just loaded, so no refetch is permitted for 10 s: forged tokens wait.
    let flood: Vec<_> = (0..20)
        .map(|n| spawn_get(&proxy, forged(&proxy, n)))
        .collect();
    eventually_async("the forged requests wait", || async {
        waiting_requests(&proxy).await.as_deref() == Some("jtl_sidecar_jwks_waiting_requests 20")
    })
    .await;

    // JTL rotates in a key and a frontend sends its first token.
    proxy.emulator.add_key("rotated-in");
    let claims = proxy.emulator.session_claims(TENANT, USER, "acme", hour());
    let genuine = spawn_get(
        &proxy,
        proxy.emulator.mint(&claims, "rotated-in", false).unwrap(),
    );
    eventually_async("the genuine request waits too", || async {
        waiting_requests(&proxy).await.as_deref() == Some("jtl_sidecar_jwks_waiting_requests 21")
    })
    .await;
    assert!(
        !genuine.is_finished(),
        "not refused before a newer key set was fetched"
    );
    assert_eq!(proxy.backend_hits(), 1);

    proxy.clock.advance(Duration::from_secs(10));
    let answer = genuine.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["headers"]["x-tenant-id"][0], TENANT);
    for request in flood {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 401);
        assert_eq!(answer.json()["error"], "invalid_token");
    }
    assert_eq!(
        proxy.backend_hits(),
        2,
        "no forged request reached the backend"
    );
    assert_eq!(
        proxy.emulator.jwks_requests(),
        fetches_before + 1,
        "one fetch for all"
    );
}

#[tokio::test]
async fn beyond_the_bound_of_waiting_requests_the_answer_is_503_with_retry_after() {
    let proxy = warmed_proxy().await;
    let waiting: Vec<_> = (0..MAX_WAITING_FOR_KEYS)
        .map(|n| spawn_get(&proxy, forged(&proxy, n)))
        .collect();
    let full = format!("jtl_sidecar_jwks_waiting_requests {MAX_WAITING_FOR_KEYS}");
    eventually_async("the bound is reached", || async {
        waiting_requests(&proxy).await.as_deref() == Some(full.as_str())
    })
    .await;

    let answer = spawn_get(&proxy, forged(&proxy, MAX_WAITING_FOR_KEYS))
        .await
        .unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    // The next fetch is permitted 10 s after the one that loaded the set; the clock has
    // not moved since.
    assert_eq!(answer.headers["retry-after"], "10");
    // A token whose key is cached never queues.
    assert_eq!(spawn_get(&proxy, proxy.token()).await.unwrap().status, 200);

    proxy.clock.advance(Duration::from_secs(10));
    for request in waiting {
        assert_eq!(request.await.unwrap().status, 401);
    }
    assert_eq!(
        metric(&proxy, "jtl_sidecar_requests_total{listener=\"ingress\",outcome=\"keys_crowded\",status=\"503\"}")
            .await
            .as_deref(),
        Some("jtl_sidecar_requests_total{listener=\"ingress\",outcome=\"keys_crowded\",status=\"503\"} 1")
    );
    assert_eq!(
        waiting_requests(&proxy).await.as_deref(),
        Some("jtl_sidecar_jwks_waiting_requests 0")
    );
}
