//! The data plane: ingress (verify and forward to the backend), egress (the backend's
//! calls to JTL's API with the access token), and what they share (header rules, JSON
//! error bodies, the upstream client, the per-request log line and metrics).

pub mod act_as;
pub mod cors;
pub mod egress;
pub mod errors;
pub mod forwarding;
pub mod headers;
pub mod ingress;
pub mod local_caller;
pub mod paths;
pub mod pool;
pub mod rate_limits;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::telemetry::trace::RequestSpan;
use crate::telemetry::{Listener, Metrics};

/// Errors of streamed bodies, whatever their source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends: streamed from a peer, or built by the sidecar.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A complete body built by the sidecar.
pub fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A peer's body, streamed as it arrives.
pub fn streamed_body(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed()
}

/// What happened to a request, for its log line and the metrics: ingress and
/// connect-tenant both answer with it.
pub struct Handled {
    pub response: http::Response<ProxyBody>,
    pub outcome: &'static str,
    pub session: Option<std::sync::Arc<crate::verify::VerifiedSession>>,
    /// Why a token was refused, in the words of its `401` (never the token).
    pub reason: Option<String>,
    /// The backend's answer (passed on unchanged), not one the sidecar made.
    pub from_backend: bool,
    /// What kind of path it was, for its span: protected, public, preflight or
    /// connect-tenant.
    pub route: &'static str,
}

impl Handled {
    /// An answer the sidecar made itself.
    pub fn new(response: http::Response<ProxyBody>, outcome: &'static str) -> Self {
        Handled {
            response,
            outcome,
            session: None,
            reason: None,
            from_backend: false,
            route: "protected",
        }
    }
}

/// Verifies `token` and counts the verification by kind and outcome; a refusal comes
/// back as the answer it gets: a `503` with the real wait for key trouble, else the `401`
/// that `invalid` makes of the description (ingress and connect-tenant word it
/// differently).
pub async fn verify_counted(
    verifier: &crate::verify::TokenVerifier,
    metrics: &Metrics,
    token: &str,
    invalid: impl FnOnce(&str) -> http::Response<ProxyBody>,
) -> Result<Arc<crate::verify::VerifiedSession>, Handled> {
    use crate::verify::VerifyError;
    let started = Instant::now();
    let verified = verifier.verify(token).await;
    metrics.observe_verification(
        started.elapsed(),
        verifier.flow_label(&verified),
        verified
            .as_ref()
            .map_or_else(VerifyError::outcome, |_| "verified"),
    );
    verified.map_err(|error| {
        let description = verifier.describe(&error);
        match error {
            VerifyError::Rejected(..) => Handled {
                reason: Some(description.clone()),
                ..Handled::new(invalid(&description), error.outcome())
            },
            VerifyError::KeysUnavailable(_) | VerifyError::KeysCrowded(_) => Handled::new(
                errors::keys_unavailable(&description, verifier.retry_after_s(&error)),
                error.outcome(),
            ),
        }
    })
}

/// The client at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Its IP as an `X-Forwarded-For` entry, formatted once per connection.
    pub forwarded_for: HeaderValue,
    /// What the connection's requests earned it, shared with the listener's admission.
    marks: Arc<ConnectionMarks>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        Peer::with_marks(addr, Arc::default())
    }

    /// A peer whose connection's marks the admission reads too.
    pub fn with_marks(addr: SocketAddr, marks: Arc<ConnectionMarks>) -> Peer {
        // An IPv4 client of a dual-stack listener is `::ffff:a.b.c.d`: logged as IPv4.
        let ip = addr.ip().to_canonical().to_string();
        Peer {
            addr,
            // An IP address is always a valid header value.
            forwarded_for: HeaderValue::from_str(&ip)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            marks,
        }
    }

    /// A request on this connection carried a verified token.
    pub fn mark_verified(&self) {
        self.marks.mark_verified();
    }
}

/// What a connection's requests earned it, for the admission: a connection that never
/// carried a verified token (only `401`s, public paths, preflights) is shed before one
/// that did when the listener runs out of room. It also holds the connection's place in
/// the budget, so the place is given back when the last holder is gone: the connection,
/// or the WebSocket tunnel it became.
#[derive(Default)]
pub struct ConnectionMarks {
    verified: AtomicBool,
    _place: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for ConnectionMarks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionMarks")
            .field("verified", &self.verified())
            .finish_non_exhaustive()
    }
}

impl ConnectionMarks {
    /// Marks holding `place` (released when they are dropped).
    pub fn holding(place: Box<dyn std::any::Any + Send + Sync>) -> ConnectionMarks {
        ConnectionMarks {
            verified: AtomicBool::new(false),
            _place: Some(place),
        }
    }

    pub fn mark_verified(&self) {
        // Most requests of a verified connection find it set: a load, no write.
        if !self.verified.load(Ordering::Relaxed) {
            self.verified.store(true, Ordering::Relaxed);
        }
    }

    pub fn verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }
}

/// What one request did, for its log line and the request counter (SPEC §9, §10).
pub struct RequestLine<'a> {
    pub listener: Listener,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub status: u16,
    pub started: Instant,
    /// Formatted only when the line is written.
    pub tenant_id: Option<&'a dyn std::fmt::Display>,
    pub request_id: &'a str,
    pub outcome: &'static str,
    /// Why a token was refused: the sentence of the 401, which `check --online
    /// --session-token` prints too.
    pub reason: Option<&'a dyn std::fmt::Display>,
    /// protected, public, preflight, connect-tenant or egress.
    pub route: &'static str,
    pub span: RequestSpan,
}

impl RequestLine<'_> {
    /// Counts the request, ends its span and writes its one log line (never a token).
    pub fn record(self, metrics: &Metrics) {
        metrics.count_request(self.listener, self.outcome, self.status);
        self.span.finish(
            self.route,
            self.status,
            self.outcome,
            self.tenant_id,
            self.path,
            self.request_id,
        );
        tracing::info!(
            // The message as a field of its own, first as a format string's would be: a
            // plain `str`, not formatted.
            message = "request",
            listener = self.listener.as_str(),
            // Plain `str`s, not `%` (Display): written without the formatting machinery.
            method = self.method.as_str(),
            path = self.path,
            status = self.status,
            latency_ms = (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            tenant_id = self.tenant_id.map(tracing::field::display),
            request_id = self.request_id,
            outcome = self.outcome,
            reason = self.reason.map(tracing::field::display),
        );
    }
}
