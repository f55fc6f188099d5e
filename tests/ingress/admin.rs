//! The admin port: health, readiness and metrics (`POST /drain` is in drain.rs).

use super::*;
use crate::common::harness::eventually_async;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let proxy = Proxy::builder().start().await;
    assert_eq!(get(&proxy.admin_url("/healthz"), &[]).await.status, 200);
    // The refreshers load a token and the keys on their own.
    eventually_async("ready", || async {
        get(&proxy.admin_url("/readyz"), &[]).await.status == 200
    })
    .await;

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
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn readiness_names_what_is_missing() {
    let proxy = Proxy::builder().start().await;
    proxy.emulator.set_jwks_failure(Failure::Status(500));
    proxy.emulator.set_token_failure(Failure::Status(500));
    let answer = get(&proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(answer.status, 503);
    let missing = answer.json()["missing"].clone();
    assert_eq!(missing, json!(["access_token", "jwks"]));
}

#[tokio::test]
async fn readiness_is_lost_when_the_access_token_expires_and_cannot_be_renewed() {
    let proxy = Proxy::builder().start().await;
    let ready = || async { get(&proxy.admin_url("/readyz"), &[]).await };
    eventually_async("ready", || async { ready().await.status == 200 }).await;
    proxy.emulator.set_token_failure(Failure::Status(503));
    proxy.clock.advance(Duration::from_secs(3600));
    let answer = ready().await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json()["missing"], json!(["access_token"]));
}
