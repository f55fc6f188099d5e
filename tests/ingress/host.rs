//! Host and :authority: missing, doubled or malformed is 400, over HTTP/1.1 and HTTP/2.

use super::*;

#[tokio::test]
async fn two_host_headers_are_refused_and_nothing_is_forwarded() {
    let proxy = Proxy::builder()
        .toml(
            r#"[ingress]
public_paths = ["/pub"]"#,
        )
        .start()
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
    let proxy = Proxy::builder().start().await;
    let token = proxy.token();
    for (what, request) in [
        (
            "HTTP/1.1 with a valid token",
            format!(
                "GET /x HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
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
            format!(
                "GET http://app.example/x HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            ),
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
        assert_eq!(
            error["error_description"],
            "The request has no Host header."
        );
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
    let proxy = Proxy::builder().start().await;
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
    let proxy = Proxy::builder().start().await;
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
                    };
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
    let proxy = Proxy::builder().start().await;
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
async fn http2_clients_are_served_and_host_comes_from_the_authority() {
    let proxy = Proxy::builder().start().await;
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
