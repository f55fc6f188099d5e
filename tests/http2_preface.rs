//! Invalid HTTP/2 connection prefaces on the ingress (RFC 9113 §3.4), over raw TCP.
//!
//! The listener serves HTTP/1.1 and HTTP/2 with prior knowledge on one port, so what a
//! client sends first decides which of the two it is talking. A client that opens with
//! `PRI * HTTP/2.0` and then sends anything but the rest of the preface gets
//! GOAWAY(PROTOCOL_ERROR) and a closed connection. Anything else that is not the preface
//! is HTTP/1 and is answered as HTTP/1, bad requests with 400.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::proxy::{Proxy, raw};
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GOAWAY on stream 0: last stream 0, PROTOCOL_ERROR, no debug data.
const GOAWAY_PROTOCOL_ERROR: [u8; 17] = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// An empty SETTINGS frame, which must follow the client's preface.
const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Reads until the server closes; fails if it does not within 5 s.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .expect("closed without a reset");
    received
}

#[tokio::test]
async fn a_preface_that_diverges_after_the_http2_request_line_gets_goaway_and_a_close() {
    let proxy = Proxy::builder().start().await;
    for preface in [
        &b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"[..],
        // Only the last byte wrong.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ",
        // Wrong right after the request line.
        b"PRI * HTTP/2.0\n\n\n\n\n\n\n\n\n\n",
    ] {
        let mut stream = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
        stream.write_all(preface).await.unwrap();
        assert_eq!(
            read_to_close(&mut stream).await,
            GOAWAY_PROTOCOL_ERROR,
            "after {:?}",
            String::from_utf8_lossy(preface)
        );
    }
    assert_eq!(proxy.backend_hits(), 0);
}

#[tokio::test]
async fn the_preface_is_checked_across_reads() {
    let proxy = Proxy::builder().start().await;
    let mut stream = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // A peer that pauses mid-preface, so the pieces arrive in two reads: the pause is the
    // behaviour under test (the server has no event to say it read the first piece).
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"\r\nXX\r\n\r\n").await.unwrap();
    assert_eq!(read_to_close(&mut stream).await, GOAWAY_PROTOCOL_ERROR);

    // The whole preface in two pieces is HTTP/2: the server's first frame is SETTINGS.
    let mut stream = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // The same pause mid-preface (the behaviour under test).
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
    stream.write_all(&EMPTY_SETTINGS).await.unwrap();
    let mut header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header))
        .await
        .expect("a frame within 5 s")
        .expect("a frame header");
    assert_eq!(
        header[3], 4,
        "frame type SETTINGS, got header {header:02x?}"
    );
}

/// What h2spec's http2/3.5/2 sends. It is no HTTP/2 preface but an HTTP/1 request line
/// with a version hyper does not know, so it gets HTTP/1's answer, 400 and a close
/// (RFC 9112 §2.2). h2spec counts only GOAWAY or a close as a pass, and reads this 400 as
/// an unfinished frame ("unexpected EOF"): its known limit on cleartext ports
/// (summerwind/h2spec#112, #122).
#[tokio::test]
async fn h2spec_3_5_2_bytes_are_an_http1_bad_request() {
    let proxy = Proxy::builder().start().await;
    let (status, text) = raw(
        proxy.addresses.ingress,
        "INVALID CONNECTION PREFACE\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
}

#[tokio::test]
async fn http1_and_http2_prior_knowledge_requests_still_work() {
    let proxy = Proxy::builder().start().await;
    let token = proxy.token();
    let (status, text) = raw(
        proxy.addresses.ingress,
        &format!("GET /h1 HTTP/1.1\r\nHost: shop.example\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = Request::get(proxy.url("/h2"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(common::proxy::collect(response).await.status, 200);
    assert_eq!(proxy.backend_hits(), 2);
}
