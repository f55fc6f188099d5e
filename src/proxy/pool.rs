//! A lean pool of HTTP/1.1 connections to a plain-http backend, one per worker thread.
//!
//! hyper-util's general-purpose pool costs a lock, a keyed map and a checkout future on
//! every request; here a worker keeps a stack of idle connections to its one backend.
//! A connection goes back on the stack when the response body has been read to its end
//! (a connection whose body was abandoned is closed, as it cannot be reused).

use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{BoxError, ProxyBody, full_body};
use http_body_util::BodyExt;

/// The backend could not be reached, or closed the connection before answering: why.
/// (The upstream client turns it into its own error; the pool knows nothing above it.)
#[derive(Debug)]
pub struct Unreachable(pub String);

/// Idle connections kept at most; more are closed when returned.
const MAX_IDLE: usize = 1024;

/// How long a reused connection must have sat idle before a request sent on it is
/// copied, to be sent again should the backend close the connection under it. A
/// backend closes at its own idle timeout (gunicorn 2 s, Node 5 s, nginx 75 s), never
/// after a few milliseconds, so a busy pool's connections need no copy: the copy of the
/// request head cost about 3 500 of 62 000 instructions per request (callgrind).
const REPLAY_AFTER_IDLE: Duration = Duration::from_millis(100);

pub struct Http1Pool {
    /// `host:port` to connect to.
    target: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<Vec<(SendRequest<ProxyBody>, Instant)>>,
}

impl Http1Pool {
    pub fn new(
        target: String,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<Http1Pool> {
        Arc::new(Http1Pool {
            target,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The most recently used idle connection, with how long it sat idle.
    fn take_idle(&self) -> Option<(SendRequest<ProxyBody>, Duration)> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some((sender, since)) = idle.pop() {
            let idle_for = since.elapsed();
            if !sender.is_closed() && idle_for < self.idle_timeout {
                return Some((sender, idle_for));
            }
        }
        None
    }

    fn put_back(&self, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, Unreachable> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.target.as_str()),
        )
        .await
        .map_err(|_| {
            Unreachable(format!(
                "connect timeout ({} ms)",
                self.connect_timeout.as_millis()
            ))
        })?
        .map_err(|e| Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!("upstream connection ended: {error}");
            }
        });
        Ok(sender)
    }

    /// Sends on an idle connection, or a new one. A request that an idle connection
    /// could not take (the backend had closed it) is sent again on a fresh connection.
    ///
    /// A backend closes an idle keep-alive connection when its own idle timeout ends
    /// (Node 5 s, gunicorn 2 s), and the sidecar may write a request on it at that very
    /// moment: the request is then on the wire before the close is seen, and hyper cannot
    /// hand it back. Such a request, when it is safe to repeat (RFC 9110 §9.2.2) and has
    /// no body, is sent once more on a fresh connection when the reused one (idle for at
    /// least [`REPLAY_AFTER_IDLE`]) was closed or reset before the response headers came.
    /// Other requests (a POST) get the error.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, Unreachable> {
        let mut from_idle = true;
        loop {
            let (mut sender, idle_for) = match self.take_idle() {
                Some(idle) if from_idle => idle,
                _ => {
                    from_idle = false;
                    // Boxed: only a new connection needs the connect future's room.
                    (Box::pin(self.connect()).await?, Duration::ZERO)
                }
            };
            if sender.ready().await.is_err() {
                continue;
            }
            let again = if from_idle && idle_for >= REPLAY_AFTER_IDLE {
                replayable(&request)
            } else {
                None
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.returning(sender, response)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if from_idle => request = unsent,
                    _ => {
                        let error = error.into_error();
                        match again {
                            Some(again) if closed_by_peer(&error) => {
                                tracing::debug!(
                                    "a reused backend connection was closed under a request \
                                     ({error}); sending it again on a fresh one"
                                );
                                request = again;
                                from_idle = false;
                            }
                            _ => return Err(Unreachable(error.to_string())),
                        }
                    }
                },
            }
        }
    }

    fn returning(
        self: &Arc<Self>,
        sender: SendRequest<ProxyBody>,
        response: Response<Incoming>,
    ) -> Response<ProxyBody> {
        let upgrading = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        response.map(|body| {
            let mut body = ReturnWhenDone {
                inner: body,
                conn: (!upgrading).then(|| (sender, Arc::downgrade(self))),
            };
            if body.inner.is_end_stream() {
                body.give_back();
            }
            body.map_err(BoxError::from).boxed()
        })
    }
}

/// A response body that hands its connection back to the pool once read to the end.
struct ReturnWhenDone {
    inner: Incoming,
    conn: Option<(SendRequest<ProxyBody>, Weak<Http1Pool>)>,
}

impl ReturnWhenDone {
    fn give_back(&mut self) {
        if let Some((sender, pool)) = self.conn.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.put_back(sender);
        }
    }
}

impl Body for ReturnWhenDone {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A copy of a request that may be sent again: a method safe to repeat (RFC 9110
/// §9.2.2) and no body (so nothing of it is consumed by the first attempt).
fn replayable(request: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    if !idempotent || !request.body().is_end_stream() {
        return None;
    }
    let mut again = Request::new(full_body(Bytes::new()));
    *again.method_mut() = request.method().clone();
    *again.uri_mut() = request.uri().clone();
    *again.version_mut() = request.version();
    *again.headers_mut() = request.headers().clone();
    Some(again)
}

/// The backend closed or reset the connection before the response headers: what a request
/// meets on a keep-alive connection the backend closed at its idle timeout.
fn closed_by_peer(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() {
        return true;
    }
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        cause = inner.source();
    }
    false
}
