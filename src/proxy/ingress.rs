//! The ingress listener's request handling, step by step as in SPEC §4: strip identity
//! headers, answer or pass preflights and public paths, read and verify the session
//! token, forward with the verified identity, stream the answer back.

use std::sync::Arc;
use std::time::Instant;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_util::task::TaskTracker;

use super::errors::{
    ErrorCode, access_token_unavailable, error_response, refuse_bad_host, refuse_method,
    upstream_failure,
};
use super::forwarding::{is_trusted, set_forwarding_headers};
use super::headers::{
    X_REQUEST_ID, asks_for_websocket, ensure_request_id, folded, read_token, remove_hop_by_hop,
    restore_websocket_upgrade, strip_client_headers, strip_folded, upgrade_is_websocket,
};
use super::upstream::Upstream;
use super::{Handled, Peer, ProxyBody, RequestLine, cors, paths, streamed_body, verify_counted};
use crate::config::Flow;
use crate::config::IngressConfig;
use crate::jose::Session;
use crate::jtl::AccessTokens;
use crate::telemetry::trace::{self, RequestSpan, Tracing};
use crate::telemetry::{Listener, Metrics};
use crate::tenants::{ConnectTenant, TenantRecorder};
use crate::verify::TokenVerifier;

pub struct Ingress {
    settings: IngressConfig,
    /// Folded names of every header the sidecar sets from the token.
    identity_folded: Vec<String>,
    /// Folded names of the token headers: removed before forwarding however spelled.
    token_folded: Vec<String>,
    verifier: Arc<TokenVerifier>,
    tokens: AccessTokens,
    /// Answers `POST {tenants.connect_path}`; `None` when connect-tenant is disabled.
    connect_tenant: Option<Arc<ConnectTenant>>,
    /// Records the tenants of verified requests (SPEC §7); `None` when
    /// `tenants.record_on_request` is off or no store is opened.
    recorder: Option<Arc<TenantRecorder>>,
    /// TLS settings for an `https://` upstream; kept to build one pool per worker.
    upstream_tls: rustls::ClientConfig,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    /// Continues each request's trace (and exports its span with an endpoint).
    traces: Tracing,
    /// Upgraded connections (WebSockets) being relayed, shared by all workers, so a
    /// graceful shutdown can wait for them like for requests in flight.
    tunnels: TaskTracker,
}

impl Ingress {
    pub fn new(
        settings: IngressConfig,
        verifier: Arc<TokenVerifier>,
        tokens: AccessTokens,
        connect_tenant: Option<Arc<ConnectTenant>>,
        recorder: Option<Arc<TenantRecorder>>,
        upstream_tls: rustls::ClientConfig,
        metrics: Arc<Metrics>,
    ) -> Ingress {
        let upstream = Upstream::new(
            &settings.upstream,
            settings.connect_timeout,
            settings.request_timeout,
            upstream_tls.clone(),
        );
        let identity = &settings.identity_headers;
        let mut identity_folded: Vec<String> = [
            &identity.tenant_id,
            &identity.user_id,
            &identity.tenant_slug,
        ]
        .iter()
        .map(|name| folded(name.as_str()))
        .collect();
        identity_folded.extend(
            settings
                .claim_headers
                .iter()
                .map(|c| folded(c.header.as_str())),
        );
        let token_folded = settings
            .token_headers
            .iter()
            .map(|name| folded(name.as_str()))
            .collect();
        Ingress {
            tunnels: TaskTracker::new(),
            settings,
            identity_folded,
            token_folded,
            verifier,
            tokens,
            connect_tenant,
            recorder,
            upstream_tls,
            upstream,
            metrics,
            traces: Tracing::propagate_only(1.0),
        }
    }

    /// Traces with `traces` (the config's `[tracing]`) rather than propagating only.
    pub fn with_traces(mut self, traces: Tracing) -> Ingress {
        self.traces = traces;
        self
    }

    /// The same ingress with a connection pool of its own, for one worker thread.
    pub fn for_worker(&self) -> Ingress {
        Ingress {
            tunnels: self.tunnels.clone(),
            traces: self.traces.clone(),
            ..Ingress::new(
                self.settings.clone(),
                Arc::clone(&self.verifier),
                self.tokens.clone(),
                self.connect_tenant.clone(),
                self.recorder.clone(),
                self.upstream_tls.clone(),
                Arc::clone(&self.metrics),
            )
        }
    }

    /// The relays of upgraded connections, for the drain to wait on.
    pub fn tunnels(&self) -> &TaskTracker {
        &self.tunnels
    }

    pub async fn handle(
        self: Arc<Self>,
        mut request: Request<Incoming>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight(Listener::Ingress);
        let method = request.method().clone();
        // Cloning a Uri shares its bytes; the path is only formatted if the line is logged.
        let uri = request.uri().clone();
        let request_id = ensure_request_id(request.headers_mut());
        let span = self.traces.request(request.headers(), "ingress", &method);
        let cors_origin = if self.settings.cors_allowed_origins.is_empty() {
            None
        } else {
            cors::allowed_origin(request.headers(), &self.settings.cors_allowed_origins)
        };

        let Handled {
            mut response,
            outcome,
            session,
            reason,
            from_backend,
            route,
        } = if span.is_exported() {
            // Boxed: the span's context, attached at every poll, only for exported
            // requests; the others' futures stay as small as without tracing.
            Box::pin(span.scope(self.route(request, peer, &span))).await
        } else {
            self.route(request, peer, &span).await
        };

        // The sidecar's own answers (401, 502...) carry the request id of their log line,
        // so a client's report can be matched with it; the backend's pass unchanged.
        if !from_backend {
            response
                .headers_mut()
                .insert(X_REQUEST_ID, request_id.clone());
        }

        match cors_origin {
            Some(origin) => cors::add_cors_headers(response.headers_mut(), origin),
            None if !self.settings.cors_allowed_origins.is_empty() => {
                cors::add_vary_origin(response.headers_mut())
            }
            None => {}
        }
        RequestLine {
            listener: Listener::Ingress,
            method: &method,
            path: uri.path(),
            status: response.status().as_u16(),
            started,
            tenant_id: session
                .as_ref()
                .map(|s| &s.tenant_id as &dyn std::fmt::Display),
            request_id: request_id.to_str().unwrap_or_default(),
            outcome,
            reason: reason.as_ref().map(|r| r as &dyn std::fmt::Display),
            route,
            span,
        }
        .record(&self.metrics);
        response
    }

    /// Admits the request (or answers it), then forwards it from one await point: the
    /// compiler gives each await of the forward future room of its own, and hyper keeps
    /// that room for every connection (see [`Self::admit`]).
    async fn route(&self, request: Request<Incoming>, peer: Peer, span: &RequestSpan) -> Handled {
        let (request, admitted) = match self.admit(request).await {
            Admission::Forward(request, admitted) => (request, admitted),
            Admission::Answered(answered) => return answered,
        };
        if admitted.session.is_some() {
            peer.mark_verified();
        }
        let verified = admitted.session.as_ref().map(|session| Verified {
            session,
            access_token: admitted.access_token,
        });
        let mut handled = self
            .forward(request, peer, verified, span)
            .await
            .with_outcome(admitted.outcome);
        handled.route = match admitted.outcome {
            "public" => "public",
            "preflight" => "preflight",
            _ => "protected",
        };
        handled.session = admitted.session;
        handled
    }

    /// Everything before the forward: the request comes back with what it may carry, or
    /// the sidecar's own answer. Cold paths (connect-tenant, a token fetch) are boxed:
    /// hyper keeps room for a connection's request future as long as the connection
    /// lives, so the largest path inlined here would cost every idle connection its size.
    async fn admit(&self, mut request: Request<Incoming>) -> Admission {
        // Before anything else is looked at: a request without a host, with two, or
        // with a malformed one reaches nothing (RFC 9112 §3.2), token or not.
        if let Some(response) = refuse_bad_host(request.version(), request.headers(), request.uri())
        {
            return Admission::Answered(Handled::new(response, "invalid_request"));
        }

        // 1. Identity headers from the client never survive, on any path; nor do
        // routing overrides or `_` spellings of framing and forwarding headers.
        strip_client_headers(request.headers_mut(), &self.identity_folded);

        // Methods that reflect or tunnel are never forwarded with credentials.
        if let Some(response) = refuse_method(request.method()) {
            return Admission::Answered(Handled::new(response, "method_not_allowed"));
        }

        // 2. Connect-tenant is answered here; nothing reaches the backend.
        if let Some(connect_tenant) = &self.connect_tenant
            && connect_tenant.answers(&request)
        {
            let answered = Box::pin(connect_tenant.handle(request)).await;
            return Admission::Answered(Handled {
                route: "connect-tenant",
                ..answered
            });
        }

        // 3. Preflights and public paths pass without a token.
        if cors::is_preflight(request.method(), request.headers()) {
            if !self.settings.cors_allowed_origins.is_empty() {
                let response = cors::preflight_response(
                    request.headers(),
                    &self.settings.cors_allowed_origins,
                );
                return Admission::Answered(Handled {
                    route: "preflight",
                    ..Handled::new(response, "preflight_answered")
                });
            }
            if self.settings.allow_cors_preflight {
                return Admission::Forward(request, Admitted::unverified("preflight"));
            }
        }
        if paths::is_public(request.uri().path(), &self.settings.public_paths) {
            return Admission::Forward(request, Admitted::unverified("public"));
        }

        // 4. The token.
        let token = match read_token(request.headers(), &self.settings.token_headers) {
            Ok(Some(token)) => token,
            Ok(None) => {
                let description = match self.verifier.flow() {
                    Flow::AppToken => {
                        "An app token is required: send it as Authorization: Bearer <token>."
                    }
                    Flow::SessionToken => {
                        "A session token is required: send it as Authorization: Bearer <token>."
                    }
                    Flow::Both => {
                        "An app token (or, while the app moves, a session token) is required: send it as Authorization: Bearer <token>."
                    }
                };
                let response = error_response(ErrorCode::MissingToken, description);
                return Admission::Answered(Handled::new(response, "missing_token"));
            }
            Err(reason) => {
                // "The token header is empty." names the token as the flow does.
                let reason = reason.replacen("token", self.verifier.flow().token_name(), 1);
                return Admission::Answered(Handled::new(
                    error_response(ErrorCode::InvalidToken, &reason),
                    "invalid_token",
                ));
            }
        };

        // 5. Verification.
        let session = match verify_counted(&self.verifier, &self.metrics, token, |description| {
            error_response(ErrorCode::InvalidToken, description)
        })
        .await
        {
            Ok(session) => session,
            Err(refused) => return Admission::Answered(refused),
        };
        // A known tenant costs one cache lookup; an unknown one is recorded off the path.
        if let Some(recorder) = &self.recorder {
            recorder.saw(&session);
        }
        let access_token = if self.settings.forward_access_token {
            match self.tokens.current_authorization() {
                Some(value) => Some(value),
                None => match Box::pin(self.tokens.get()).await {
                    Ok(token) => Some(token.authorization().clone()),
                    Err(error) => {
                        let response = access_token_unavailable(error.retry_after_s);
                        return Admission::Answered(Handled {
                            session: Some(session),
                            ..Handled::new(response, "access_token_unavailable")
                        });
                    }
                },
            }
        } else {
            None
        };

        // 6. Forward with the verified identity.
        let admitted = Admitted {
            outcome: "forwarded",
            session: Some(session),
            access_token,
        };
        Admission::Forward(request, admitted)
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        peer: Peer,
        verified: Option<Verified<'_>>,
        span: &RequestSpan,
    ) -> Handled {
        // Only a verified HTTP/1.1 GET WebSocket handshake is relayed as an upgrade: a
        // tunnel outlives the one request that was checked, so it is never opened by a
        // preflight, a public path or another method. Any other offer (`h2c` above all:
        // a tunnel of HTTP/2 streams the sidecar would never see) goes on as a plain
        // request, its upgrade headers removed with the hop-by-hop ones.
        let websocket = verified.is_some()
            && request.version() == Version::HTTP_11
            && request.method() == Method::GET
            && asks_for_websocket(request.headers());
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
        let (parts, body) = request.into_parts();
        let mut headers = parts.headers;
        // Room for what is added below (identity, forwarding, request id, token), so the
        // map grows once rather than as each header arrives.
        headers.reserve(8);

        remove_hop_by_hop(&mut headers);
        strip_folded(&mut headers, &self.token_folded);
        if parts.version == Version::HTTP_2 {
            join_cookies(&mut headers);
        }
        if let Some(verified) = &verified {
            self.set_identity(&mut headers, verified);
        }
        let trusted = is_trusted(&self.settings.trusted_proxies, peer.addr.ip());
        set_forwarding_headers(&mut headers, &parts.uri, &peer, trusted);
        span.pass_on(&mut headers);
        if websocket {
            restore_websocket_upgrade(&mut headers);
        }

        let uri = match self.upstream.uri_for(parts.uri.path_and_query()) {
            Ok(uri) => uri,
            Err(error) => {
                return Handled::new(
                    error_response(ErrorCode::InvalidRequest, &error.to_string()),
                    "invalid_request",
                );
            }
        };
        let mut outgoing = Request::new(streamed_body(body));
        *outgoing.method_mut() = parts.method;
        *outgoing.uri_mut() = uri;
        *outgoing.version_mut() = Version::HTTP_11;
        *outgoing.headers_mut() = headers;

        let started = Instant::now();
        let mut span = trace::child("upstream");
        let result = self.upstream.send(outgoing).await;
        self.metrics
            .observe_upstream(Listener::Ingress, started.elapsed());
        match &result {
            Ok(response) => span.status(response.status().as_u16()),
            Err(error) => span.fail(error.to_string()),
        }
        drop(span);
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                let (response, outcome) = upstream_failure(&error, "The app backend");
                return Handled::new(response, outcome);
            }
        };

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // A switch is relayed only to the WebSocket the client asked for.
            let client_upgrade = match client_upgrade {
                Some(client_upgrade) if upgrade_is_websocket(response.headers()) => client_upgrade,
                _ => return refuse_switch(response, websocket),
            };
            remove_hop_by_hop(response.headers_mut());
            restore_websocket_upgrade(response.headers_mut());
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            self.tunnels.spawn(async move {
                // The tunnel keeps the connection's place in the listener's budget: its
                // client socket and its backend socket are still held.
                let _place = peer;
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    Err(error) => tracing::debug!("upgrade failed: {error}"),
                }
            });
        } else {
            // 7. The answer, unchanged apart from hop-by-hop headers.
            remove_hop_by_hop(response.headers_mut());
        }
        Handled {
            from_backend: true,
            ..Handled::new(response, "forwarded")
        }
    }

    fn set_identity(&self, headers: &mut HeaderMap, verified: &Verified<'_>) {
        let names = &self.settings.identity_headers;
        let session = verified.session;
        let mut set = |name: &HeaderName, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), value);
            }
        };
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        set(
            &names.tenant_id,
            session.tenant_id.hyphenated().encode_lower(&mut text),
        );
        set(&names.user_id, &session.user_id);
        if let Some(slug) = &session.tenant_slug {
            set(&names.tenant_slug, slug);
        }
        for claim_header in &self.settings.claim_headers {
            if let Some(value) = claim_value(session.claims.get(&claim_header.claim)) {
                set(&claim_header.header, &value);
            }
        }
        if let Some(access_token) = &verified.access_token {
            headers.insert(AUTHORIZATION, access_token.clone());
        }
    }
}

/// `502` for a `101` the sidecar does not relay: to a request not relayed as a WebSocket
/// handshake (it did not ask for one, or was no verified GET), or switching to something
/// else. The response is dropped without being upgraded, which closes that backend
/// connection: hyper's client never keeps a connection that answered `101` (the lean
/// pool does not take it back either).
fn refuse_switch(response: Response<ProxyBody>, asked_for_websocket: bool) -> Handled {
    // The backend's own words, cut short: a log line, not a place for a whole header.
    let switched_to: String = match response.headers().get(http::header::UPGRADE) {
        Some(value) => String::from_utf8_lossy(value.as_bytes())
            .chars()
            .take(64)
            .collect(),
        None => "(no Upgrade header)".to_owned(),
    };
    if asked_for_websocket {
        tracing::warn!(
            switched_to = %switched_to,
            "the app backend answered a WebSocket handshake with 101 Switching Protocols to \
             another protocol; not relayed: answered 502 and closed that backend connection"
        );
    } else {
        tracing::warn!(
            switched_to = %switched_to,
            "the app backend answered a request that was not relayed as a WebSocket handshake \
             with 101 Switching Protocols; not relayed: answered 502 and closed that backend \
             connection"
        );
    }
    drop(response);
    Handled::new(
        error_response(
            ErrorCode::BadGateway,
            "The app backend switched protocols, which the sidecar relays only for a verified WebSocket handshake.",
        ),
        "upgrade_refused",
    )
}

/// What [`Ingress::admit`] decided.
enum Admission {
    /// The request goes on to the backend.
    Forward(Request<Incoming>, Admitted),
    /// The sidecar answered it.
    Answered(Handled),
}

/// What a request is forwarded with.
struct Admitted {
    /// The log outcome when the backend answers: `forwarded`, `public`, `preflight`.
    outcome: &'static str,
    /// The verified session, when a token was required.
    session: Option<Arc<crate::verify::VerifiedSession>>,
    /// `Bearer <access token>` when it is forwarded.
    access_token: Option<HeaderValue>,
}

impl Admitted {
    fn unverified(outcome: &'static str) -> Self {
        Admitted {
            outcome,
            session: None,
            access_token: None,
        }
    }
}

struct Verified<'a> {
    session: &'a Session,
    /// `Bearer <access token>` when it is forwarded.
    access_token: Option<HeaderValue>,
}

impl Handled {
    fn with_outcome(mut self, outcome: &'static str) -> Self {
        if self.outcome == "forwarded" {
            self.outcome = outcome;
        }
        self
    }
}

/// A claim forwarded as a header: a string or a number, free of control characters.
fn claim_value(claim: Option<&Value>) -> Option<String> {
    let text = match claim? {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    (!text.chars().any(char::is_control)).then_some(text)
}

/// HTTP/2 lets a client split `Cookie` into several fields; an HTTP/1.1 backend
/// expects one, joined with `; ` (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(http::header::COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(http::header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::proxy::headers::tests::map as headers;

    #[test]
    fn claims_become_headers_only_when_plain() {
        assert_eq!(claim_value(Some(&Value::from("c-1"))), Some("c-1".into()));
        assert_eq!(claim_value(Some(&Value::from(42))), Some("42".into()));
        assert_eq!(claim_value(Some(&Value::from("a\r\nb"))), None);
        assert_eq!(claim_value(Some(&serde_json::json!({"a": 1}))), None);
        assert_eq!(claim_value(None), None);
    }

    #[test]
    fn http2_cookie_fields_are_joined() {
        let mut map = headers(&[("cookie", "a=1"), ("cookie", "b=2")]);
        join_cookies(&mut map);
        assert_eq!(map.get_all("cookie").iter().count(), 1);
        assert_eq!(map["cookie"], "a=1; b=2");
    }
}
