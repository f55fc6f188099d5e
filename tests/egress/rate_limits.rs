//! JTL's rate limits on the egress listener, over real sockets: the emulator gives each
//! tenant a budget per interval on the manual clock and reports it in `X-RateLimit-*`,
//! as JTL does; the sidecar keeps each tenant within it.

use std::time::Duration;

use super::common::harness::{TENANT, advance_waking_nothing, eventually_async};
use super::common::proxy::{Answer, Proxy, get};
use super::warm_up;
use jtl_auth_sidecar::emulator::Failure;

/// A second tenant, whose budget is its own.
const OTHER: &str = "0b5c3a52-8d5e-4a4f-9f0e-2a7d5c1e9b34";

async fn call(proxy: &Proxy, tenant: &str) -> Answer {
    get(&proxy.egress_url("/v1/orders"), &[("x-tenant-id", tenant)]).await
}

async fn metrics(proxy: &Proxy) -> String {
    String::from_utf8(get(&proxy.admin_url("/metrics"), &[]).await.body.to_vec()).unwrap()
}

async fn assert_metrics(proxy: &Proxy, expected: &[&str]) {
    let metrics = metrics(proxy).await;
    for line in expected {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

/// Until `/metrics` shows this many tenants with a request waiting.
async fn waiting_tenants(proxy: &Proxy, tenants: usize) {
    let line = format!("jtl_sidecar_egress_rate_limit_waiting_tenants {tenants}\n");
    eventually_async(&format!("{tenants} tenant(s) wait"), || async {
        metrics(proxy).await.contains(&line)
    })
    .await;
}

#[tokio::test]
async fn a_spent_tenant_waits_for_its_interval_while_another_goes_straight_through() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    proxy.emulator.set_rate_limit(2, Duration::from_secs(5));

    let first = call(&proxy, TENANT).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["x-ratelimit-limit"], "2");
    assert_eq!(first.headers["x-ratelimit-remaining"], "1");
    assert_eq!(first.headers["x-ratelimit-interval-length-seconds"], "5");
    assert!(first.headers.get("x-ratelimit-reset").is_none());
    let second = call(&proxy, TENANT).await;
    assert_eq!(second.headers["x-ratelimit-remaining"], "0");

    // The budget is spent: the third request waits for the interval's end.
    let waiting = tokio::spawn({
        let url = proxy.egress_url("/v1/orders");
        async move { get(&url, &[("x-tenant-id", TENANT)]).await }
    });
    waiting_tenants(&proxy, 1).await;

    // Another tenant is not slowed: answered while the first one waits.
    let other = call(&proxy, OTHER).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.headers["x-ratelimit-remaining"], "1");
    assert!(!waiting.is_finished());
    assert_eq!(proxy.emulator.api_requests_for(Some(TENANT)), 2);

    // Not woken before the interval ends, then sent once it has.
    advance_waking_nothing(&proxy.clock, Duration::from_secs(4), "interval runs").await;
    assert!(!waiting.is_finished());
    proxy.clock.advance(Duration::from_secs(1));
    let third = waiting.await.unwrap();
    assert_eq!(third.status, 200, "{:?}", third.body);
    assert_eq!(
        third.headers["x-ratelimit-remaining"], "1",
        "a new interval"
    );
    assert_eq!(proxy.emulator.api_requests_for(Some(TENANT)), 3);
    assert_metrics(
        &proxy,
        &[
            "jtl_sidecar_egress_rate_limit_delayed_total 1\n",
            "jtl_sidecar_egress_rate_limit_refused_total 0\n",
            "jtl_sidecar_egress_rate_limit_jtl_429_total 0\n",
            "jtl_sidecar_egress_rate_limit_waiting_tenants 0\n",
        ],
    )
    .await;
}

#[tokio::test]
async fn past_the_longest_wait_the_sidecar_answers_429_and_jtl_never_sees_the_request() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nrate_limit_max_wait_ms = 1000")
        .start()
        .await;
    warm_up(&proxy).await;
    proxy.emulator.set_rate_limit(1, Duration::from_secs(60));
    assert_eq!(call(&proxy, TENANT).await.status, 200);

    let refused = call(&proxy, TENANT).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["retry-after"], "60");
    let body = refused.json();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["error_description"].as_str().unwrap().ends_with('.'));
    assert_eq!(
        proxy.emulator.api_requests_for(Some(TENANT)),
        1,
        "JTL never saw the refused request"
    );

    // Half a minute on, the wait is shorter, but still too long.
    proxy.clock.advance(Duration::from_millis(30_500));
    let refused = call(&proxy, TENANT).await;
    assert_eq!(refused.headers["retry-after"], "30", "29.5 s, rounded up");
    assert_eq!(call(&proxy, OTHER).await.status, 200);
    assert_eq!(proxy.emulator.api_requests_for(Some(TENANT)), 1);
    assert_metrics(
        &proxy,
        &[
            "jtl_sidecar_egress_rate_limit_refused_total 2\n",
            "jtl_sidecar_egress_rate_limit_delayed_total 0\n",
            "jtl_sidecar_requests_total{listener=\"egress\",outcome=\"rate_limited\",status=\"429\"} 2",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_429_from_jtl_pauses_that_tenant() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    proxy
        .emulator
        .set_api_failure(Failure::RateLimited { retry_after_s: 3 });
    let limited = call(&proxy, TENANT).await;
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.headers["retry-after"], "3",
        "computed by the sidecar"
    );
    proxy.emulator.set_api_failure(Failure::None);

    let waiting = tokio::spawn({
        let url = proxy.egress_url("/v1/orders");
        async move { get(&url, &[("x-tenant-id", TENANT)]).await }
    });
    waiting_tenants(&proxy, 1).await;
    assert_eq!(call(&proxy, OTHER).await.status, 200);
    assert_eq!(proxy.emulator.api_requests_for(Some(TENANT)), 1);
    advance_waking_nothing(&proxy.clock, Duration::from_secs(2), "pause runs").await;
    proxy.clock.advance(Duration::from_secs(1));
    assert_eq!(waiting.await.unwrap().status, 200);
    assert_eq!(proxy.emulator.api_requests_for(Some(TENANT)), 2);
    assert_metrics(
        &proxy,
        &[
            "jtl_sidecar_egress_rate_limit_jtl_429_total 1\n",
            "jtl_sidecar_egress_rate_limit_delayed_total 1\n",
        ],
    )
    .await;
}

#[tokio::test]
async fn requests_without_a_tenant_share_the_apps_own_budget() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nrate_limit_max_wait_ms = 0")
        .start()
        .await;
    warm_up(&proxy).await;
    proxy.emulator.set_rate_limit(1, Duration::from_secs(10));
    let url = proxy.egress_url("/v1/orders");
    assert_eq!(get(&url, &[]).await.status, 200);
    let refused = get(&url, &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json()["error"], "rate_limited");
    assert_eq!(call(&proxy, TENANT).await.status, 200);
    // The warm-up and the first call: the refused one never reached JTL.
    assert_eq!(proxy.emulator.api_requests_for(None), 2);
}

#[tokio::test]
async fn switched_off_every_request_goes_straight_to_jtl() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nrate_limits = false")
        .start()
        .await;
    warm_up(&proxy).await;
    proxy.emulator.set_rate_limit(1, Duration::from_secs(60));
    assert_eq!(call(&proxy, TENANT).await.status, 200);
    for _ in 0..2 {
        let answer = call(&proxy, TENANT).await;
        assert_eq!(answer.status, 429);
        // JTL's 429 as it came: no Retry-After, JTL's own body.
        assert!(answer.headers.get("retry-after").is_none());
        assert_eq!(answer.headers["x-ratelimit-remaining"], "0");
        assert_eq!(answer.json()["error_description"], "Too many requests");
    }
    assert_eq!(proxy.emulator.api_requests_for(Some(TENANT)), 3);
    assert_metrics(
        &proxy,
        &[
            "jtl_sidecar_egress_rate_limit_refused_total 0\n",
            "jtl_sidecar_egress_rate_limit_jtl_429_total 0\n",
        ],
    )
    .await;
}
