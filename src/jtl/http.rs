//! The HTTPS client for every call to JTL: rustls with the webpki roots plus
//! `jtl.ca_file`, HTTP/1.1 and HTTP/2, pooled connections, `jtl.timeout_ms` on every call.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::runtime::Handle;

use crate::background::{SpawnOn, run_on};
use crate::tls::{TlsRoots, TlsSetupError};

/// Token and JWKS responses larger than this are errors (SPEC §6).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Idle pooled connections are closed after this long; below typical server keep-alive
/// timeouts, so a connection the server already closed is not reused.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a call to JTL produced no usable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no response within {0} ms (jtl.timeout_ms)")]
    Timeout(u128),
    #[error("{kind}: {cause}")]
    Connect { kind: ConnectFailure, cause: String },
    /// Connected and sent, but the connection broke before a complete answer: closed or
    /// reset by the server or a proxy on the way.
    #[error(
        "the connection was closed or reset before an answer arrived (by JTL or a proxy on the way): {0}"
    )]
    Dropped(String),
    #[error("the response body is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("reading the response failed: {0}")]
    Body(String),
    #[error("the sidecar is shutting down")]
    ShuttingDown,
}

/// Why a connection could not be made, told apart so an operator knows where to look:
/// the name, the certificate, the port, or the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Dns,
    Tls,
    Refused,
    Timeout,
    Other,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConnectFailure::Dns => "DNS lookup failed (is the host name right?)",
            ConnectFailure::Tls => "TLS handshake failed (a proxy or private CA? set jtl.ca_file)",
            ConnectFailure::Refused => "connection refused (nothing listens on that port)",
            ConnectFailure::Timeout => "connect timed out (a firewall or no route?)",
            ConnectFailure::Other => "cannot connect",
        })
    }
}

impl ConnectFailure {
    /// Reads the cause from a client error's chain: hyper-util names DNS failures
    /// "dns error", TCP failures carry an `io::Error` kind, and TLS failures a
    /// `rustls::Error` (inside `io::Error`s, whose `source()` skips what they wrap).
    pub fn of(error: &(dyn std::error::Error + 'static)) -> ConnectFailure {
        let mut current = Some(error);
        while let Some(error) = current {
            if error.downcast_ref::<rustls::Error>().is_some() {
                return ConnectFailure::Tls;
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                if is_tls(io) {
                    return ConnectFailure::Tls;
                }
                if let Some(kind) = ConnectFailure::of_io(io) {
                    return kind;
                }
            }
            if error.to_string() == "dns error" {
                return ConnectFailure::Dns;
            }
            current = error.source();
        }
        ConnectFailure::Other
    }

    /// The cause of a plain TCP failure, when its kind tells one.
    pub fn of_io(error: &std::io::Error) -> Option<ConnectFailure> {
        match error.kind() {
            std::io::ErrorKind::ConnectionRefused => Some(ConnectFailure::Refused),
            std::io::ErrorKind::TimedOut => Some(ConnectFailure::Timeout),
            _ => None,
        }
    }
}

/// Whether an `io::Error` carries a `rustls::Error`, however deeply: hyper-rustls wraps
/// tokio-rustls's `io::Error` in another one.
fn is_tls(error: &std::io::Error) -> bool {
    let mut inner = error.get_ref();
    while let Some(error) = inner {
        if error.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        inner = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    false
}

/// A buffered response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub type HttpsClient<B = Full<Bytes>> = Client<RootsConnector, B>;

/// hyper-rustls's connector made anew for each new connection from the configuration
/// [`TlsRoots`] holds then, so a changed `jtl.ca_file` is taken up by the next
/// connection; connections in the pool keep theirs. Plain `http://` connects over TCP.
#[derive(Clone)]
pub struct RootsConnector {
    tcp: HttpConnector,
    roots: Arc<TlsRoots>,
    /// The protocols offered by ALPN.
    alpn: Vec<Vec<u8>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for RootsConnector {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<http::Uri>::poll_ready(&mut self.tcp, cx).map_err(Into::into)
    }

    fn call(&mut self, destination: http::Uri) -> Self::Future {
        let config = if destination.scheme() == Some(&http::uri::Scheme::HTTPS) {
            let mut config = rustls::ClientConfig::clone(&self.roots.config());
            config.alpn_protocols = self.alpn.clone();
            Arc::new(config)
        } else {
            // Not used for plain http: the file is not looked at.
            self.roots.current()
        };
        let mut connector = HttpsConnector::from((self.tcp.clone(), config));
        tower_service::Service::<http::Uri>::call(&mut connector, destination)
    }
}

/// A pooled client over rustls (plain http too): `nodelay`, a connect timeout, and idle
/// connections closed after `idle_timeout` (the pool timer is what makes that happen).
/// `http2` offers HTTP/2 by ALPN as well as HTTP/1.1. Connection tasks are spawned on
/// `runtime` when given, else on the runtime of the call that opens the connection (what
/// an ingress worker's own upstream pool wants).
pub fn pooled_client<B>(
    roots: Arc<TlsRoots>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    http2: bool,
    runtime: Option<Handle>,
) -> HttpsClient<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    let alpn = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        Vec::new()
    };
    let connector = RootsConnector { tcp, roots, alpn };
    let mut builder = match runtime {
        Some(runtime) => Client::builder(SpawnOn(runtime)),
        None => Client::builder(TokioExecutor::new()),
    };
    builder
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle_timeout)
        .build(connector)
}

/// The client of JTL's token and key endpoints. Its calls can start on an ingress worker
/// (the first request finds no token or no keys), but its pooled connections are
/// background I/O: each call runs, and each connection lives, on the runtime given at
/// construction (the server's main runtime).
#[derive(Clone)]
pub struct JtlHttp {
    client: HttpsClient,
    timeout: Duration,
    runtime: Handle,
}

impl JtlHttp {
    /// On the runtime this is called from (a server passes its main runtime explicitly,
    /// [`JtlHttp::on_runtime`]). Must be called within a Tokio runtime.
    pub fn new(timeout: Duration, ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        JtlHttp::on_runtime(timeout, ca_file, Handle::current())
    }

    /// Calls and connections run on `runtime`, wherever the caller runs.
    pub fn on_runtime(
        timeout: Duration,
        ca_file: Option<&Path>,
        runtime: Handle,
    ) -> Result<Self, TlsSetupError> {
        Ok(JtlHttp::with_roots(
            timeout,
            TlsRoots::new(ca_file)?,
            runtime,
        ))
    }

    /// As [`JtlHttp::on_runtime`], new connections trusting what `roots` holds then (the
    /// server shares one [`TlsRoots`] among JTL, egress and `rediss://`).
    pub fn with_roots(timeout: Duration, roots: Arc<TlsRoots>, runtime: Handle) -> Self {
        let client = pooled_client(
            roots,
            timeout,
            POOL_IDLE_TIMEOUT,
            true,
            Some(runtime.clone()),
        );
        JtlHttp {
            client,
            timeout,
            runtime,
        }
    }

    /// The pooled client, for callers that stream (egress).
    pub fn client(&self) -> &HttpsClient {
        &self.client
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `request` and buffers a response of at most [`MAX_RESPONSE_BYTES`], all
    /// within the configured timeout.
    pub async fn call(&self, request: Request<Full<Bytes>>) -> Result<Response, CallError> {
        // The whole exchange runs on the client's runtime: a connection opened here has
        // its socket registered with that runtime's reactor, not the caller's.
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    CallError::Connect {
                        kind: ConnectFailure::of(&e),
                        cause: innermost_cause(&e),
                    }
                } else {
                    CallError::Dropped(innermost_cause(&e))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        CallError::TooLarge
                    } else {
                        CallError::Body(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        let timeout = self.timeout;
        let bounded = async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(CallError::Timeout(timeout.as_millis())))
        };
        run_on(&self.runtime, bounded)
            .await
            .unwrap_or(Err(CallError::ShuttingDown))
    }
}

/// `Retry-After` in seconds, at most an hour (JTL's token and key endpoints do not use
/// the HTTP-date form).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|seconds| Duration::from_secs(seconds.min(3600)))
}

/// A body that holds nothing but whitespace: named as empty rather than as bad JSON.
pub fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

/// The innermost cause of a client error: "connection refused", "invalid peer
/// certificate: UnknownIssuer", rather than hyper's generic wrapper text.
pub fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut source = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The first call comes from an ingress worker's runtime; the pooled connection it
    /// opens lives on the client's runtime, so after that worker's runtime is gone the next
    /// call reuses it: the server sees one connection. Were the connection task spawned on
    /// the worker (hyper-util's `TokioExecutor` spawns on the caller's runtime), it would
    /// die with the worker and the next call would open a second connection.
    #[test]
    fn a_connection_opened_from_a_worker_outlives_the_worker() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let accepted = Arc::new(AtomicUsize::new(0));
        let addr = main.block_on({
            let accepted = Arc::clone(&accepted);
            async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("address");
                tokio::spawn(async move {
                    while let Ok((stream, _)) = listener.accept().await {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        let service = hyper::service::service_fn(|_| async {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from_static(b"{}"),
                            )))
                        });
                        tokio::spawn(
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                        );
                    }
                });
                addr
            }
        });
        let http = JtlHttp::on_runtime(Duration::from_secs(5), None, main.handle().clone())
            .expect("client");
        let request = || {
            Request::get(format!("http://{addr}/"))
                .body(Full::new(Bytes::new()))
                .expect("request")
        };
        let worker = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let first = worker.block_on(http.call(request())).expect("first call");
        assert_eq!(first.status, StatusCode::OK);
        drop(worker);
        let second = main.block_on(http.call(request())).expect("second call");
        assert_eq!(second.status, StatusCode::OK);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "a second connection was opened"
        );
    }
}
