//! Upgrades through the ingress (SPEC §4, "Upgrades: only WebSocket") over real sockets:
//! an h2c-capable backend that would turn a relayed upgrade into a tunnel of unverified
//! HTTP/2 streams, backends that switch protocols unasked, and WebSocket still working.
//!
//! The test backends are raw TCP servers that read request heads byte by byte, so no
//! bytes meant for a later protocol are buffered away, and record every request they
//! receive (connection, protocol, path, headers).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::proxy::Proxy;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Settings an h2c client offers (RFC 7540 §3.2.1), as curl sends them.
const HTTP2_SETTINGS: &str = "AAMAAABkAARAAAAAAAIAAAAA";

/// How long a test waits for an answer before it fails (a hang guard, not an assertion
/// about speed).
const PATIENCE: Duration = Duration::from_secs(10);

// ---- test backends ---------------------------------------------------------------------

/// One request as a test backend received it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection it came on, counted from 0.
    connection: usize,
    /// `HTTP/1.1` (or `HTTP/1.0`), or `HTTP/2` for a stream after a switch to h2c.
    protocol: String,
    path: String,
    /// Lowercase names, in the order received.
    headers: Vec<(String, String)>,
}

impl Seen {
    fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether `Connection` holds `token` (case-insensitive).
    fn connection_names(&self, token: &str) -> bool {
        self.values("connection").iter().any(|value| {
            value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    }

    /// No trace of an upgrade offer reached the backend.
    fn assert_plain(&self) {
        assert!(
            self.values("upgrade").is_empty(),
            "Upgrade forwarded: {self:?}"
        );
        assert!(
            self.values("http2-settings").is_empty(),
            "HTTP2-Settings forwarded: {self:?}"
        );
        assert!(
            !self.connection_names("upgrade") && !self.connection_names("http2-settings"),
            "Connection still names the upgrade: {self:?}"
        );
    }
}

type Log = Arc<Mutex<Vec<Seen>>>;

#[derive(Clone, Copy)]
enum Behaviour {
    /// An h2c-capable server: a request offering `h2c` in any `Upgrade` field gets
    /// `101 Upgrade: h2c`, and the socket then serves HTTP/2 (streams recorded too).
    /// Every other request gets `200 plain`.
    H2c,
    /// Answers `101` with this `Upgrade` value to every request whose path starts with
    /// `/switch`, asked or not, and goes on reading the socket as HTTP/1.1, so a
    /// sidecar that sent another request on that connection would show here. Every
    /// other request gets `200 plain`.
    SwitchUnasked(&'static str),
}

struct Backend {
    addr: SocketAddr,
    log: Log,
}

impl Backend {
    async fn start(behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Log = Arc::default();
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            let mut connection = 0;
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, connection, behaviour, Arc::clone(&shared)));
                connection += 1;
            }
        });
        Backend { addr, log }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn seen_at(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

async fn serve(mut stream: TcpStream, connection: usize, behaviour: Behaviour, log: Log) {
    while let Some(head) = read_head(&mut stream).await {
        let (line, headers) = parse_head(&head);
        let mut words = line.split(' ');
        let path = words.nth(1).unwrap_or_default().to_owned();
        let protocol = words.next().unwrap_or_default().to_owned();
        let offers_h2c = headers
            .iter()
            .filter(|(name, _)| name == "upgrade")
            .flat_map(|(_, value)| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("h2c"));
        log.lock().unwrap().push(Seen {
            connection,
            protocol,
            path: path.clone(),
            headers,
        });
        // The tests send no request bodies.
        let reply = match behaviour {
            Behaviour::H2c if offers_h2c => {
                let switch = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";
                if stream.write_all(switch.as_bytes()).await.is_err() {
                    return;
                }
                serve_http2(stream, connection, log).await;
                return;
            }
            Behaviour::SwitchUnasked(protocol) if path.starts_with("/switch") => format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\r\n"
            ),
            _ => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nplain"
                .to_owned(),
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// HTTP/2 on a socket that just switched to h2c; every stream is recorded and answered.
async fn serve_http2(stream: TcpStream, connection: usize, log: Log) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let headers = request
            .headers()
            .iter()
            .map(|(n, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_owned(), value)
            })
            .collect();
        log.lock().unwrap().push(Seen {
            connection,
            protocol: "HTTP/2".to_owned(),
            path: request.uri().path().to_owned(),
            headers,
        });
        async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                b"reached over h2c",
            ))))
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A WebSocket echo server (tokio-tungstenite), as in tests/ingress/websocket.rs.
async fn websocket_echo_backend() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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

// ---- raw HTTP/1.1 on both ends -----------------------------------------------------------

/// Reads one message head, byte by byte, up to and including the blank line; `None` at
/// the end of the stream.
async fn read_head<R: AsyncRead + Unpin>(stream: &mut R) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// The first line and the headers (names lowercased) of a message head.
fn parse_head(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.split("\r\n").filter(|line| !line.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    (first, headers)
}

/// An answer the client read off its socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn assert_bad_gateway(&self) {
        assert_eq!(self.status, 502, "{self:?}");
        assert_eq!(self.json()["error"], "bad_gateway", "{self:?}");
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("upgrade"), None, "{self:?}");
    }
}

/// Writes `request` and reads the answer: its head, then a body of `Content-Length`
/// bytes (a `101` has none; the socket is left right after its head).
async fn exchange(stream: &mut TcpStream, request: &str) -> Reply {
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(PATIENCE, read_head(stream))
        .await
        .expect("an answer")
        .expect("a response head");
    let (line, headers) = parse_head(&head);
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let mut reply = Reply {
        status,
        headers,
        body: String::new(),
    };
    if status == 101 {
        return reply;
    }
    let length: usize = reply
        .header("content-length")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the test expects a Content-Length: {head}"));
    let mut body = vec![0u8; length];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut body))
        .await
        .expect("the body")
        .unwrap();
    reply.body = String::from_utf8_lossy(&body).into_owned();
    reply
}

/// A GET with a valid session token and `extra` header lines (each ending in `\r\n`).
fn get(path: &str, token: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: app.example\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
    )
}

/// What a browser sends to open a WebSocket (RFC 6455 §4.1), with `extra` lines.
fn websocket_handshake(path: &str, token: &str, extra: &str) -> String {
    get(
        path,
        token,
        &format!(
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}"
        ),
    )
}

/// What an attacker does once a connection has become h2c: the HTTP/2 preface and a
/// stream without any token. `Ok(status)` if an HTTP/2 answer came back.
async fn try_http2_stream(stream: TcpStream, path: &str) -> Result<u16, String> {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get(format!("http://app.example{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    match tokio::time::timeout(PATIENCE, sender.send_request(request)).await {
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("no HTTP/2 answer".to_owned()),
    }
}

// ---- h2c is never relayed -----------------------------------------------------------------

#[tokio::test]
async fn an_h2c_upgrade_is_forwarded_as_a_plain_request_and_no_unverified_http2_stream_reaches_the_backend()
 {
    let backend = Backend::start(Behaviour::H2c).await;
    let proxy = Proxy::builder().upstream(&backend.url()).start().await;
    let mut client = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
    let reply = exchange(
        &mut client,
        &get(
            "/first",
            &proxy.token(),
            &format!(
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: {HTTP2_SETTINGS}\r\n"
            ),
        ),
    )
    .await;
    // Whatever came back, try what an attacker would after a 101: HTTP/2 on the same
    // connection, a stream without a token.
    let smuggled = try_http2_stream(client, "/smuggled").await;

    let seen = backend.seen();
    assert!(
        seen.iter()
            .all(|s| s.path != "/smuggled" && s.protocol != "HTTP/2"),
        "a token-less HTTP/2 stream reached the backend ({smuggled:?}): {seen:?}"
    );
    assert_ne!(reply.status, 101, "the h2c upgrade was relayed: {reply:?}");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "plain"),
        "{reply:?}"
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].path.as_str(), seen[0].protocol.as_str()),
        ("/first", "HTTP/1.1")
    );
    seen[0].assert_plain();
    assert!(
        smuggled.is_err(),
        "an HTTP/2 answer came back: {smuggled:?}"
    );
}

#[tokio::test]
async fn upgrade_offers_other_than_websocket_alone_are_forwarded_as_plain_requests() {
    // The backend switches to h2c whenever it is offered, wherever in the list: any
    // offer that reached it would come back as a 101.
    let backend = Backend::start(Behaviour::H2c).await;
    let proxy = Proxy::builder().upstream(&backend.url()).start().await;
    let token = proxy.token();
    let ws = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let cases = [
        (
            "/list-websocket-h2c",
            format!("Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n{ws}"),
        ),
        (
            "/list-h2c-websocket",
            format!("Connection: Upgrade\r\nUpgrade: h2c, websocket\r\n{ws}"),
        ),
        (
            "/two-upgrade-fields",
            format!("Connection: Upgrade\r\nUpgrade: websocket\r\nUpgrade: h2c\r\n{ws}"),
        ),
        (
            "/h2c-settings-unnamed",
            format!("Connection: Upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: {HTTP2_SETTINGS}\r\n"),
        ),
        (
            "/unknown-protocol",
            "Connection: Upgrade\r\nUpgrade: foo/1, h2c\r\n".to_owned(),
        ),
        (
            "/websocket-without-connection-upgrade",
            format!("Connection: keep-alive\r\nUpgrade: websocket\r\n{ws}"),
        ),
    ];
    for (path, extra) in &cases {
        let mut client = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
        let reply = exchange(&mut client, &get(path, &token, extra)).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "plain"),
            "{path}: {reply:?}"
        );
        let seen = backend.seen_at(path);
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        seen[0].assert_plain();
    }
    // HTTP/1.0 knows no upgrades (RFC 9110 §7.8): a WebSocket offer goes on plain too.
    let mut client = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
    let request = format!(
        "GET /http10 HTTP/1.0\r\nHost: app.example\r\nAuthorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{ws}\r\n"
    );
    let reply = exchange(&mut client, &request).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    backend.seen_at("/http10")[0].assert_plain();
}

// ---- a 101 the client did not ask for ---------------------------------------------------------

#[tokio::test]
async fn a_101_to_a_request_that_asked_for_no_websocket_is_502_and_that_backend_connection_is_never_reused()
 {
    for protocol in ["h2c", "websocket"] {
        let backend = Backend::start(Behaviour::SwitchUnasked(protocol)).await;
        let proxy = Proxy::builder().upstream(&backend.url()).start().await;
        let token = proxy.token();
        // One client connection: one worker, one pool of backend connections.
        let mut client = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
        let warm = exchange(&mut client, &get("/before", &token, "")).await;
        assert_eq!(warm.status, 200, "{warm:?}");

        let switched = exchange(&mut client, &get("/switch", &token, "")).await;
        switched.assert_bad_gateway();

        // The client's connection is still plain HTTP/1.1, and the next requests reach
        // the backend on other connections than the one that switched.
        for n in 0..3 {
            let after = exchange(&mut client, &get("/after", &token, "")).await;
            assert_eq!(
                (after.status, after.body.as_str()),
                (200, "plain"),
                "{protocol} {n}"
            );
        }
        let switch = &backend.seen_at("/switch")[0];
        switch.assert_plain();
        let after = backend.seen_at("/after");
        assert_eq!(after.len(), 3, "{after:?}");
        assert!(
            after.iter().all(|s| s.connection != switch.connection),
            "{protocol}: the connection that answered 101 was used again: {:?}",
            backend.seen()
        );
    }
}

#[tokio::test]
async fn a_101_switching_a_websocket_handshake_to_h2c_is_502() {
    let backend = Backend::start(Behaviour::SwitchUnasked("h2c")).await;
    let proxy = Proxy::builder().upstream(&backend.url()).start().await;
    let token = proxy.token();
    let mut client = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
    let reply = exchange(
        &mut client,
        &websocket_handshake(
            "/switch",
            &token,
            "Connection: Upgrade\r\nUpgrade: websocket\r\n",
        ),
    )
    .await;
    reply.assert_bad_gateway();
    // The handshake itself was relayed as one, so the backend had the chance to refuse.
    let handshake = &backend.seen_at("/switch")[0];
    assert_eq!(handshake.values("upgrade"), ["websocket"]);
    // The client's connection did not switch: the next request is plain HTTP/1.1.
    let next = exchange(&mut client, &get("/next", &token, "")).await;
    assert_eq!(
        (next.status, next.body.as_str()),
        (200, "plain"),
        "{next:?}"
    );
}

// ---- upgrades only for a verified GET ----------------------------------------------------------

/// What a browser adds to a request to open a WebSocket, after `Connection: Upgrade`.
const WEBSOCKET_OFFER: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Sends the request `build` makes (given the sidecar, for its token) to a sidecar with
/// `toml` in front of a backend that answers `101 Upgrade: websocket` to every
/// `/switch…` path, and checks that the client got `502`, the backend saw a plain
/// request, and the client's connection still speaks HTTP/1.1. Returns what the backend
/// saw.
async fn assert_not_relayed_as_an_upgrade(
    toml: &str,
    path: &str,
    build: impl FnOnce(&Proxy) -> String,
) -> Seen {
    let backend = Backend::start(Behaviour::SwitchUnasked("websocket")).await;
    let proxy = Proxy::builder()
        .upstream(&backend.url())
        .toml(toml)
        .start()
        .await;
    let mut client = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
    let reply = exchange(&mut client, &build(&proxy)).await;
    reply.assert_bad_gateway();
    let seen = backend.seen_at(path);
    assert_eq!(seen.len(), 1, "{path}: {seen:?}");
    seen[0].assert_plain();
    let next = exchange(&mut client, &get("/next", &proxy.token(), "")).await;
    assert_eq!(
        (next.status, next.body.as_str()),
        (200, "plain"),
        "{next:?}"
    );
    seen[0].clone()
}

#[tokio::test]
async fn a_preflight_asking_for_a_websocket_is_forwarded_plain_and_a_101_to_it_is_502() {
    assert_not_relayed_as_an_upgrade("", "/switch-preflight", |_| {
        format!(
            "OPTIONS /switch-preflight HTTP/1.1\r\nHost: app.example\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: GET\r\n{WEBSOCKET_OFFER}\r\n"
        )
    })
    .await;
}

#[tokio::test]
async fn a_post_asking_for_a_websocket_with_a_valid_token_is_forwarded_plain_and_a_101_to_it_is_502()
 {
    let seen = assert_not_relayed_as_an_upgrade("", "/switch-post", |proxy| {
        format!(
            "POST /switch-post HTTP/1.1\r\nHost: app.example\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\n{WEBSOCKET_OFFER}\r\n",
            proxy.token()
        )
    })
    .await;
    // The token was verified: the request went on with its identity, just no upgrade.
    assert_eq!(seen.values("x-tenant-id").len(), 1, "{seen:?}");
}

#[tokio::test]
async fn a_token_less_websocket_on_a_public_path_is_forwarded_plain_and_a_101_to_it_is_502() {
    assert_not_relayed_as_an_upgrade(
        "[ingress]\npublic_paths = [\"/switch-public/*\"]",
        "/switch-public/socket",
        |_| {
            format!(
                "GET /switch-public/socket HTTP/1.1\r\nHost: app.example\r\n{WEBSOCKET_OFFER}\r\n"
            )
        },
    )
    .await;
}

// ---- WebSocket still works -------------------------------------------------------------------

#[tokio::test]
async fn a_websocket_handshake_as_browsers_spell_it_is_relayed_and_echoes() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let backend = websocket_echo_backend().await;
    let proxy = Proxy::builder()
        .upstream(&format!("http://{backend}"))
        .start()
        .await;
    // Firefox sends `Connection: keep-alive, Upgrade`; the token is case-insensitive.
    let mut client = TcpStream::connect(proxy.addresses.ingress).await.unwrap();
    let reply = exchange(
        &mut client,
        &websocket_handshake(
            "/socket",
            &proxy.token(),
            "Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n",
        ),
    )
    .await;
    assert_eq!(reply.status, 101, "{reply:?}");
    assert_eq!(reply.header("upgrade"), Some("websocket"));
    // RFC 6455 §1.3: the accept value for the key sent above.
    assert_eq!(
        reply.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    let mut socket =
        tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    socket
        .send(Message::text("through the sidecar"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("an echo")
        .expect("a message")
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "through the sidecar");
}
