//! The load: keep-alive workers sending freshly minted session tokens, and the backend.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jtl_auth_sidecar::emulator::Emulator;
use tokio::net::{TcpListener, TcpStream};

use crate::{REQUEST_TIMEOUT, SESSION_TOKEN_LIFETIME, SLUG, TENANT};

/// What the load workers share.
pub(crate) struct Load {
    pub(crate) emulator: Emulator,
    /// The kid new tokens are signed with (and name in their header).
    pub(crate) kid: RwLock<String>,
    pub(crate) ingress: SocketAddr,
    pub(crate) stop: AtomicBool,
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) failures: Mutex<BTreeMap<String, u64>>,
    /// Tokens minted: a `jti` per token. Without it a token is a function of (user, kid,
    /// second) alone (`iat`/`exp` are whole seconds, EdDSA signatures deterministic), so
    /// the 32 workers would send only 32 distinct tokens a second and the verified cache
    /// would fill for 52 minutes, which looked like growing memory.
    pub(crate) minted: AtomicU64,
}

impl Load {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        *self.failures.lock().unwrap().entry(why).or_default() += 1;
    }

    fn token(&self, user: &str) -> Option<String> {
        let kid = self.kid.read().unwrap().clone();
        let mut claims = self
            .emulator
            .session_claims(TENANT, user, SLUG, SESSION_TOKEN_LIFETIME);
        claims["jti"] = self.minted.fetch_add(1, Ordering::Relaxed).into();
        self.emulator.mint(&claims, &kid, true)
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(sender)
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Request<Empty<Bytes>> {
    let mut request = Request::get(path).header(HOST, addr.to_string());
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Empty::new()).expect("a valid request")
}

/// One request on `sender`: its status, or why there is none.
async fn send(
    sender: &mut Sender,
    request: Request<Empty<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}")))
}

/// A one-off GET on a new connection (admin endpoints, the final check).
pub(crate) async fn fetch(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(StatusCode, String), String> {
    let mut sender = connect(addr).await?;
    let (status, body) = send(&mut sender, get(addr, path, token)).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One keep-alive connection sending requests back to back until `stop`.
pub(crate) async fn worker(load: Arc<Load>, n: usize) {
    let user = format!("00000000-0000-4000-8000-{n:012}");
    while !load.stop.load(Ordering::Relaxed) {
        let mut sender = match connect(load.ingress).await {
            Ok(sender) => sender,
            Err(e) => {
                load.fail(format!("connect: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        load.connections.fetch_add(1, Ordering::Relaxed);
        while !load.stop.load(Ordering::Relaxed) {
            if sender.ready().await.is_err() {
                break; // closed by the sidecar between requests: a new connection
            }
            let Some(token) = load.token(&user) else {
                load.fail("minting: the kid is gone".into());
                continue;
            };
            match send(&mut sender, get(load.ingress, "/soak", Some(&token))).await {
                Ok((StatusCode::OK, _)) => {
                    load.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok((status, _)) => load.fail(format!("HTTP {status}")),
                Err(e) => {
                    load.fail(format!("transport: {e}"));
                    break;
                }
            }
        }
    }
}

/// The backend: 200 with an empty body to every request, counted.
pub(crate) async fn backend(listener: TcpListener, hits: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let hits = Arc::clone(&hits);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_request| {
                hits.fetch_add(1, Ordering::Relaxed);
                async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
