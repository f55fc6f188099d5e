//! Forwarding: paths and bodies intact and streamed, pooled, over TLS; 502, 503, 504.

use super::*;

#[tokio::test]
async fn path_and_query_arrive_byte_for_byte() {
    let proxy = Proxy::builder().start().await;
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
    let proxy = Proxy::builder().start().await;
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
async fn upstream_down_is_502_json() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let proxy = Proxy::builder().upstream(&dead).start().await;
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
    let proxy = Proxy::builder()
        .upstream(&format!("http://{addr}"))
        .toml("[ingress]\nrequest_timeout_ms = 300")
        .start()
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
    let proxy = Proxy::builder().start().await;
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
    let proxy = Proxy::builder().start().await;
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

#[tokio::test]
async fn upstream_connections_are_reused() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
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
    let proxy = Proxy::builder()
        .upstream(&format!("http://{addr}"))
        .start()
        .await;
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
    let proxy = Proxy::builder()
        .upstream(&format!("http://{addr}"))
        .start()
        .await;
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
    let proxy = Proxy::builder()
        .upstream(&format!("http://{addr}"))
        .start()
        .await;
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
    let proxy = Proxy::builder()
        .upstream(&tls_server.base_url())
        .start()
        .await;
    let answer = get(
        &proxy.url("/x"),
        &[("authorization", &bearer(&proxy.token()))],
    )
    .await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["error"], "bad_gateway");
    assert_eq!(tls_server.api_requests(), 0);
}
