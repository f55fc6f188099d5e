//! WebSockets through the proxy, during the drain and past the grace period.

use super::*;
use crate::common::harness::eventually_async;

/// A WebSocket echo server (tokio-tungstenite) on an ephemeral port.
async fn websocket_echo_backend() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        let _ = socket.send(message).await;
                    }
                }
            });
        }
    });
    addr
}

type ClientSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open_websocket(proxy: &Proxy) -> ClientSocket {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/socket",
            proxy.addresses.ingress
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", bearer(&proxy.token()).parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("handshake through the proxy");
    assert_eq!(response.status(), 101);
    socket
}

async fn echo_once(socket: &mut ClientSocket, text: &str) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    socket.send(Message::text(text)).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    echoed.into_text().unwrap().as_str().to_owned()
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let backend = websocket_echo_backend().await;
    let proxy = Proxy::builder()
        .upstream(&format!("http://{backend}"))
        .start()
        .await;
    let mut socket = open_websocket(&proxy).await;
    assert_eq!(
        echo_once(&mut socket, "hello through the sidecar").await,
        "hello through the sidecar"
    );

    // Without a token the handshake is refused before reaching the backend.
    let unauthenticated =
        tokio_tungstenite::connect_async(format!("ws://{}/socket", proxy.addresses.ingress)).await;
    assert!(unauthenticated.is_err());
}

#[tokio::test]
async fn an_open_websocket_keeps_working_during_the_drain_and_ends_it_when_closed() {
    let backend = websocket_echo_backend().await;
    let mut proxy = Proxy::builder()
        .upstream(&format!("http://{backend}"))
        .toml("[server]\nshutdown_grace_s = 30")
        .start()
        .await;
    let mut socket = open_websocket(&proxy).await;
    proxy.shut_down();
    // The listeners close as the drain begins.
    let ingress = proxy.addresses.ingress;
    eventually_async("the drain has begun", || async {
        tokio::net::TcpStream::connect(ingress).await.is_err()
    })
    .await;
    assert_eq!(echo_once(&mut socket, "still here").await, "still here");
    let finished = proxy.finished.take().unwrap();
    assert!(
        !finished.is_finished(),
        "the drain waits for the open WebSocket"
    );
    socket.close(None).await.unwrap();
    drop(socket);
    tokio::time::timeout(Duration::from_secs(10), finished)
        .await
        .expect("the drain ends once the WebSocket is closed")
        .unwrap();
}

#[tokio::test]
async fn a_websocket_left_open_is_cut_when_the_grace_period_ends() {
    let backend = websocket_echo_backend().await;
    let mut proxy = Proxy::builder()
        .upstream(&format!("http://{backend}"))
        .toml("[server]\nshutdown_grace_s = 1")
        .start()
        .await;
    let _socket = open_websocket(&proxy).await;
    let started = std::time::Instant::now();
    proxy.shut_down();
    tokio::time::timeout(Duration::from_secs(10), proxy.finished.take().unwrap())
        .await
        .expect("the server stops after the grace period")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "it waited for the grace period"
    );
}
