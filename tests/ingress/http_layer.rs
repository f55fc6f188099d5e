//! The HTTP layer: slow, silent and malformed clients, refused methods, a taken port.

use super::*;

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let proxy = Proxy::builder()
        .toml("[server]\nheader_read_timeout_ms = 300")
        .start()
        .await;
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
    let proxy = Proxy::builder().start().await;
    let (status, _) = raw(
        proxy.addresses.ingress,
        "GET /x HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn silent_connections_and_slow_http2_prefaces_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = Proxy::builder()
        .toml("[server]\nheader_read_timeout_ms = 300")
        .start()
        .await;
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
async fn trace_and_connect_are_not_forwarded() {
    let proxy = Proxy::builder().start().await;
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
async fn a_second_sidecar_cannot_share_the_ingress_port() {
    let proxy = Proxy::builder().start().await;
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
        (
            "JTL_SIDECAR_SESSION__AUDIENCE".to_owned(),
            "app-1".to_owned(),
        ),
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
