//! The admin port: health, readiness, metrics and `POST /drain`.

use super::*;

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
