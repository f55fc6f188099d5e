//! Who the egress listener answers: programs on this machine. A browser is refused, both
//! when a page sends to 127.0.0.1 (its requests carry `Origin`) and through DNS rebinding
//! (the page's own name resolved to 127.0.0.1, so `Host` is that name); neither request
//! reaches JTL.

use hyper_util::rt::{TokioExecutor, TokioIo};

use super::*;

/// A GET on the egress listener with `Host: host` and `headers`; the connection goes to
/// the listener's address whatever the host says.
async fn get_as(proxy: &Proxy, host: &str, headers: &[(&str, &str)]) -> Answer {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    get(&proxy.egress_url("/v1/orders"), &all).await
}

#[tokio::test]
async fn egress_refuses_a_foreign_host_with_421_and_sends_nothing_to_jtl() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();
    let port = proxy.addresses.egress.unwrap().port();
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        "".to_owned(),
    ] {
        let answer = get_as(&proxy, &host, &[("x-tenant-id", TENANT)]).await;
        assert_eq!(answer.status, 421, "{host:?}");
        assert_eq!(answer.headers["content-type"], "application/json");
        assert_eq!(answer.json()["error"], "misdirected_request", "{host:?}");
        assert!(answer.json()["error_description"].is_string());
    }
    assert_eq!(
        proxy.emulator.api_requests(),
        api_before,
        "nothing reached JTL"
    );
    let metrics =
        String::from_utf8(get(&proxy.admin_url("/metrics"), &[]).await.body.to_vec()).unwrap();
    let expected = "jtl_sidecar_requests_total{listener=\"egress\",outcome=\"misdirected_request\",status=\"421\"} 5";
    assert!(metrics.contains(expected), "{metrics}");
}

#[tokio::test]
async fn egress_accepts_ip_literals_and_localhost_with_or_without_port() {
    let proxy = Proxy::builder().egress().start().await;
    let port = proxy.addresses.egress.unwrap().port();
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("[::1]:{port}"),
        "[::1]".to_owned(),
    ] {
        let answer = get_as(&proxy, &host, &[]).await;
        assert_eq!(answer.status, 200, "{host}: {:?}", answer.body);
    }
}

#[tokio::test]
async fn egress_accepts_a_name_in_allowed_hosts_in_any_case_and_with_any_port() {
    let proxy = Proxy::builder()
        .egress()
        .toml("[egress]\nallowed_hosts = [\"Backend.Internal\"]")
        .start()
        .await;
    for host in [
        "backend.internal",
        "BACKEND.internal:8081",
        "backend.internal:1",
    ] {
        let answer = get_as(&proxy, host, &[]).await;
        assert_eq!(answer.status, 200, "{host}: {:?}", answer.body);
    }
    let answer = get_as(&proxy, "other.internal", &[]).await;
    assert_eq!(answer.status, 421);
}

#[tokio::test]
async fn egress_refuses_a_request_with_an_origin_with_403_and_sends_nothing_to_jtl() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();
    let port = proxy.addresses.egress.unwrap().port();
    let host = format!("127.0.0.1:{port}");
    let own_origin = format!("http://{host}");
    for origin in [
        "https://evil.example",
        "http://localhost:8081",
        own_origin.as_str(),
        "null",
    ] {
        let answer = get_as(&proxy, &host, &[("origin", origin)]).await;
        assert_eq!(answer.status, 403, "{origin}");
        assert_eq!(answer.json()["error"], "forbidden", "{origin}");
    }
    // A body the browser sends with it is not read or sent either.
    let answer = post(
        &proxy,
        "/v1/orders",
        &[("origin", "https://evil.example"), ("x-tenant-id", TENANT)],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        proxy.emulator.api_requests(),
        api_before,
        "nothing reached JTL"
    );
}

/// A navigation, an `<img>` or a prefetch carries no `Origin`, but every current browser
/// sends Fetch Metadata, which no page script can set.
#[tokio::test]
async fn egress_refuses_a_browser_request_without_origin_by_its_sec_fetch_headers() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let api_before = proxy.emulator.api_requests();
    let host = format!("127.0.0.1:{}", proxy.addresses.egress.unwrap().port());
    for (name, value) in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "no-cors"),
        ("sec-fetch-dest", "image"),
        ("sec-fetch-user", "?1"),
    ] {
        let answer = get_as(&proxy, &host, &[(name, value), ("x-tenant-id", TENANT)]).await;
        assert_eq!(answer.status, 403, "{name}");
        assert_eq!(answer.json()["error"], "forbidden", "{name}");
        assert!(
            answer.json()["error_description"]
                .as_str()
                .is_some_and(|text| text.contains("Sec-Fetch")),
            "{name}"
        );
    }
    assert_eq!(
        proxy.emulator.api_requests(),
        api_before,
        "nothing reached JTL"
    );
}

/// HTTP/2 names the host in `:authority`; the rule is the same.
#[tokio::test]
async fn egress_checks_the_http2_authority() {
    let proxy = Proxy::builder().egress().start().await;
    warm_up(&proxy).await;
    let egress = proxy.addresses.egress.unwrap();
    let stream = tokio::net::TcpStream::connect(egress).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let api_before = proxy.emulator.api_requests();
    let mut statuses = Vec::new();
    for uri in [
        format!("http://evil.example:{}/v1/orders", egress.port()),
        format!("http://{egress}/v1/orders"),
        format!("http://localhost:{}/v1/orders", egress.port()),
    ] {
        let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
        let response = sender.send_request(request).await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [421, 200, 200]);
    assert_eq!(proxy.emulator.api_requests() - api_before, 2);
}
