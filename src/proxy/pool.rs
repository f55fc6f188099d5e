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
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::upstream::UpstreamError;
use super::{BoxError, ProxyBody};
use http_body_util::BodyExt;

/// Idle connections kept at most; more are closed when returned.
const MAX_IDLE: usize = 1024;

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

    fn take_idle(&self) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < self.idle_timeout {
                return Some(sender);
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

    async fn connect(&self) -> Result<SendRequest<ProxyBody>, UpstreamError> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(self.target.as_str()),
        )
        .await
        .map_err(|_| {
            UpstreamError::Unreachable(format!(
                "connect timeout ({} ms)",
                self.connect_timeout.as_millis()
            ))
        })?
        .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!("upstream connection ended: {error}");
            }
        });
        Ok(sender)
    }

    /// Sends on an idle connection, or a new one. A request that an idle connection
    /// could not take (the backend had closed it) is sent again on a fresh connection.
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let mut from_idle = true;
        loop {
            let mut sender = match self.take_idle() {
                Some(sender) if from_idle => sender,
                _ => {
                    from_idle = false;
                    self.connect().await?
                }
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.returning(sender, response)),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if from_idle => request = unsent,
                    _ => return Err(UpstreamError::Unreachable(error.into_error().to_string())),
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
        if let Some((sender, pool)) = self.conn.take() {
            if let Some(pool) = pool.upgrade() {
                pool.put_back(sender);
            }
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
