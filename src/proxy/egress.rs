//! The egress listener's request handling (SPEC §8): the backend, its cron jobs and
//! workers call JTL's API through the sidecar. `METHOD /path?query` goes to
//! `{jtl.api_base_url}/path?query` with the app's access token in place of whatever
//! `Authorization` the caller sent; a `401` from JTL to a request with `X-Tenant-ID`
//! drops the token that got it and, when the body could be kept, the request is sent
//! once more with a fresh token (JTL also answers a missing `X-Tenant-ID` with `401`,
//! which says nothing about the token).
//! `Content-Type: application/json; charset=utf-8` goes on as `application/json`: JTL's
//! API refuses the parameter, and JSON is UTF-8 by definition (RFC 8259).
//! With `X-JTL-Act-As` (`user:<id>` or `tenant`, and `X-Tenant-ID`) the request goes with
//! JTL's exchanged token instead ([`crate::jtl::exchange`]); the header never reaches JTL.
//! Only programs on this machine are answered ([`super::local_caller`]): a foreign `Host`
//! is `421`, a request with `Origin` or `Sec-Fetch-*` (a browser) `403`, and neither
//! reaches JTL.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use url::Url;

use super::act_as::{X_JTL_ACT_AS, act_as};
use super::errors::{
    ErrorCode, access_token_unavailable, body_too_slow, body_unreadable, error_response,
    refuse_method, upstream_failure,
};
use super::headers::{ensure_request_id, remove_hop_by_hop};
use super::local_caller::refuse_foreign_caller;
use super::rate_limits::{BudgetKey, RateLimits};
use super::upstream::{Upstream, UpstreamError};
use super::{BoxError, ProxyBody, RequestLine, full_body, streamed_body};
use crate::config::EgressConfig;
use crate::jtl::exchange::{ExchangeError, ExchangeKey, ExchangedToken, TokenExchange};
use crate::jtl::http::CallError;
use crate::jtl::{AccessToken, AccessTokens, Jtl};
use crate::telemetry::trace::{self, RequestSpan, Tracing};
use crate::telemetry::{Listener, Metrics};

/// JTL's tenant header; passed on as the caller sent it, once it is known to be a UUID.
pub const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");

/// How the next hop is named in error descriptions.
const JTL_API: &str = "JTL's API";

pub struct Egress {
    upstream: Upstream,
    tokens: AccessTokens,
    /// JTL's exchanged tokens, for requests with `X-JTL-Act-As`.
    exchange: TokenExchange,
    retry_on_401: bool,
    max_retry_body_bytes: u64,
    /// `egress.allowed_hosts`, lowercase: names the listener answers for besides IP
    /// literals and `localhost`.
    allowed_hosts: Vec<String>,
    /// How long a body read for a possible retry may take (`server.header_read_timeout_ms`):
    /// a caller trickling a body does not hold a buffer forever.
    body_read_timeout: Duration,
    /// Each tenant kept within JTL's rate budget (SPEC §15).
    rate_limits: RateLimits,
    metrics: Arc<Metrics>,
    /// Continues each request's trace towards JTL (and exports its span).
    traces: Tracing,
}

/// A request body, kept when it is small enough to be sent twice.
enum RequestBody {
    /// Read to its end within `max_retry_body_bytes`: can be sent again after a 401.
    Buffered(Bytes),
    /// Larger (or of unknown length beyond the limit): streamed once, never retried.
    Streamed(ProxyBody),
}

impl Egress {
    /// `connect_timeout` is `jtl.timeout_ms`; `roots` carries the webpki roots and
    /// `jtl.ca_file`. JTL's API must send its response headers within
    /// `egress.request_timeout_ms` (else 504); the body may then stream for as long as it
    /// takes.
    pub fn new(
        settings: &EgressConfig,
        api_base_url: &Url,
        connect_timeout: Duration,
        body_read_timeout: Duration,
        roots: Arc<crate::tls::TlsRoots>,
        jtl: &Jtl,
        metrics: Arc<Metrics>,
    ) -> Egress {
        Egress {
            upstream: Upstream::jtl_api(
                api_base_url,
                connect_timeout,
                settings.request_timeout,
                roots,
            ),
            tokens: jtl.tokens.clone(),
            exchange: jtl.exchange.clone(),
            retry_on_401: settings.retry_on_401,
            max_retry_body_bytes: settings.max_retry_body_bytes,
            allowed_hosts: settings.allowed_hosts.clone(),
            body_read_timeout,
            rate_limits: RateLimits::off(),
            metrics,
            traces: Tracing::propagate_only(1.0),
        }
    }

    /// Traces with `traces` (the config's `[tracing]`) rather than propagating only.
    pub fn with_traces(mut self, traces: Tracing) -> Egress {
        self.traces = traces;
        self
    }

    /// Keeps each tenant within JTL's rate budget (off until this is called).
    pub fn with_rate_limits(mut self, rate_limits: RateLimits) -> Egress {
        self.rate_limits = rate_limits;
        self
    }

    pub async fn handle(self: Arc<Self>, mut request: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight(Listener::Egress);
        let method = request.method().clone();
        let uri = request.uri().clone();
        let request_id = ensure_request_id(request.headers_mut());
        let span = self.traces.request(request.headers(), "egress", &method);
        let tenant_id = tenant_id(request.headers());

        // Only programs on this machine: a browser (`Origin`, `Sec-Fetch-*`, or DNS
        // rebinding behind a foreign `Host`) is refused before anything reaches JTL.
        let foreign = refuse_foreign_caller(
            request.version(),
            request.headers(),
            request.uri(),
            &self.allowed_hosts,
        );
        let (response, outcome) = match (foreign, &tenant_id, refuse_method(&method)) {
            (Err(refused), _, _) => (refused.response(), refused.outcome()),
            (Ok(()), _, Some(refused)) => (refused, "method_not_allowed"),
            (Ok(()), Err(reason), None) => (
                error_response(ErrorCode::InvalidRequest, reason),
                "invalid_request",
            ),
            (Ok(()), Ok(tenant), None) => {
                match act_as(
                    request.headers(),
                    tenant.as_deref(),
                    self.exchange.enabled(),
                ) {
                    // Boxed in an exported request only, as on the ingress.
                    Ok(acting) if span.is_exported() => {
                        Box::pin(span.scope(self.forward(
                            request,
                            tenant.as_deref(),
                            acting,
                            &span,
                        )))
                        .await
                    }
                    Ok(acting) => {
                        self.forward(request, tenant.as_deref(), acting, &span)
                            .await
                    }
                    Err(reason) => (
                        error_response(ErrorCode::InvalidRequest, reason),
                        "invalid_request",
                    ),
                }
            }
        };

        RequestLine {
            listener: Listener::Egress,
            method: &method,
            path: uri.path(),
            status: response.status().as_u16(),
            started,
            tenant_id: tenant_id
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .map(|t| t as &dyn std::fmt::Display),
            request_id: request_id.to_str().unwrap_or_default(),
            outcome,
            reason: None,
            route: "egress",
            span,
        }
        .record(&self.metrics);
        response
    }

    /// Sends the request to JTL with the app's token, or with the exchanged token of
    /// `acting` (`X-JTL-Act-As`).
    async fn forward(
        &self,
        request: Request<Incoming>,
        tenant: Option<&str>,
        acting: Option<ExchangeKey>,
        span: &RequestSpan,
    ) -> (Response<ProxyBody>, &'static str) {
        let (parts, body) = request.into_parts();
        let uri = match self.upstream.uri_for(parts.uri.path_and_query()) {
            Ok(uri) => uri,
            Err(error) => return upstream_failure(&error, JTL_API),
        };
        let mut headers = parts.headers;
        remove_hop_by_hop(&mut headers);
        span.pass_on(&mut headers);
        // Every caller credential goes; the token is set per attempt. `Host` is left to
        // the client, which takes it from the API's URL (`:authority` over HTTP/2).
        headers.remove(AUTHORIZATION);
        headers.remove(HOST);
        // Present exactly when a request acts for someone (else it was refused before).
        if acting.is_some() {
            headers.remove(X_JTL_ACT_AS);
        }
        plain_json_content_type(&mut headers);

        // The token first: without one there is nothing to send, and the body is not read.
        let early = match self.credential(acting.as_ref()).await {
            Ok(token) => token,
            Err(refused) => return refused,
        };
        let body = if self.retry_on_401 {
            let read = read_for_retry(body, self.max_retry_body_bytes);
            match tokio::time::timeout(self.body_read_timeout, read).await {
                Ok(Ok(body)) => body,
                Ok(Err(error)) => {
                    tracing::debug!("egress request body could not be read: {error}");
                    return (body_unreadable(), "invalid_request");
                }
                Err(_) => return (body_too_slow(), "invalid_request"),
            }
        } else {
            RequestBody::Streamed(streamed_body(body))
        };
        // The tenant's JTL rate budget: go on, wait for its interval, or 429 unsent.
        if let Err(refused) = self.admit(tenant).await {
            return (refused, "rate_limited");
        }
        // Reading the body (and waiting) took time: take the token again (free while it
        // is valid), so one that expired meanwhile is never sent.
        let token = match early {
            // Still before its refresh time: the same token, asked for once per request.
            Credential::Exchanged(token) if self.exchange.is_fresh(&token) => {
                Credential::Exchanged(token)
            }
            _ => match self.credential(acting.as_ref()).await {
                Ok(current) => current,
                Err(refused) => return refused,
            },
        };
        let (first_body, replay) = match body {
            RequestBody::Buffered(bytes) => (full_body(bytes.clone()), Some(bytes)),
            RequestBody::Streamed(body) => (body, None),
        };

        let attempt = |body: ProxyBody, token: &Credential| {
            let request = outgoing(&parts.method, &uri, &headers, body, token.authorization());
            self.send(request, tenant)
        };
        let response = match attempt(first_body, &token).await {
            Ok(response) => response,
            Err(error) => return upstream_failure(&error, JTL_API),
        };
        if response.status() != StatusCode::UNAUTHORIZED {
            return (finish(response), "forwarded");
        }
        // JTL answers a request without `X-Tenant-ID` with 401 too: that says nothing
        // about the token, so it is passed back as it came and nothing is invalidated
        // (a token request per caller mistake would be wasted).
        if tenant.is_none() {
            tracing::debug!(
                "JTL's API answered 401 to a request without X-Tenant-ID; passed back, the access token kept"
            );
            return (finish(response), "forwarded");
        }

        // JTL refused the token: drop exactly that one (a newer one is left alone), so
        // this and every later call gets a fresh token, also when this one is not retried.
        self.invalidate(acting.as_ref(), &token).await;
        let Some(replay) = replay else {
            return (finish(response), "forwarded");
        };
        // The 401's connection is not reused; its body is not wanted.
        drop(response);
        if let Err(refused) = self.admit(tenant).await {
            return (refused, "rate_limited");
        }
        let fresh = match self.credential(acting.as_ref()).await {
            Ok(fresh) => fresh,
            Err(refused) => return refused,
        };
        tracing::info!(
            token = %fresh.fingerprint(),
            acting_for = acting.as_ref().map(|key| key.kind.as_str()),
            "JTL's API answered 401; sending the request once more with a fresh token"
        );
        // The second answer is the answer, whatever it is. A 401 to it drops that token
        // too (SPEC §6: a 401 invalidates the token that received it), without a third
        // attempt.
        match attempt(full_body(replay), &fresh).await {
            Ok(response) => {
                if response.status() == StatusCode::UNAUTHORIZED {
                    self.invalidate(acting.as_ref(), &fresh).await;
                }
                (finish(response), "retried")
            }
            Err(error) => upstream_failure(&error, JTL_API),
        }
    }

    /// The token to send: the app's own, or the exchanged one of `acting`. Without one,
    /// the answer to give instead: the app's token unavailable (503), JTL's refusal of
    /// the exchange (its status and body), or a failed exchange (502/504).
    async fn credential(
        &self,
        acting: Option<&ExchangeKey>,
    ) -> Result<Credential, (Response<ProxyBody>, &'static str)> {
        let Some(key) = acting else {
            return match self.tokens.get().await {
                Ok(token) => Ok(Credential::App(token)),
                Err(error) => Err(token_unavailable(error.retry_after_s)),
            };
        };
        // Boxed: the exchange (cache, single flight, JTL, Redis) is a large future that a
        // request with the app's own token should not carry.
        match Box::pin(self.exchange.token_for(key)).await {
            Ok(token) => Ok(Credential::Exchanged(token)),
            Err(error) => Err(exchange_failure(error)),
        }
    }

    /// Drops the token JTL answered `401` to (only that one).
    async fn invalidate(&self, acting: Option<&ExchangeKey>, token: &Credential) {
        match (acting, token) {
            (_, Credential::App(token)) => self.tokens.invalidate(token),
            (Some(key), Credential::Exchanged(token)) => {
                Box::pin(self.exchange.invalidate(key, token)).await
            }
            (None, Credential::Exchanged(_)) => {}
        }
    }

    /// The tenant's JTL rate budget: go on, wait for its interval, or the sidecar's 429.
    /// The wait is boxed: a request that never waits (no tenant blocked) carries none of
    /// it in its future.
    async fn admit(&self, tenant: Option<&str>) -> Result<(), Response<ProxyBody>> {
        if !self.rate_limits.any_blocked() {
            return Ok(());
        }
        let key = BudgetKey::of_tenant(tenant.map(str::as_bytes));
        Box::pin(self.rate_limits.admit(key)).await
    }

    async fn send(
        &self,
        request: Request<ProxyBody>,
        tenant: Option<&str>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let started = Instant::now();
        let mut span = trace::child("upstream");
        let mut result = self.upstream.send(request).await;
        self.metrics
            .observe_upstream(Listener::Egress, started.elapsed());
        match &result {
            Ok(response) => span.status(response.status().as_u16()),
            Err(error) => span.fail(error.to_string()),
        }
        drop(span);
        if let Ok(response) = &mut result {
            let status = response.status();
            self.rate_limits.record_with(
                || BudgetKey::of_tenant(tenant.map(str::as_bytes)),
                status,
                response.headers_mut(),
            );
        }
        result
    }
}

/// The token a request goes with.
enum Credential {
    /// The app's own access token.
    App(Arc<AccessToken>),
    /// An exchanged token acting for a user or a tenant installation.
    Exchanged(Arc<ExchangedToken>),
}

impl Credential {
    fn authorization(&self) -> &HeaderValue {
        match self {
            Credential::App(token) => token.authorization(),
            Credential::Exchanged(token) => token.authorization(),
        }
    }

    fn fingerprint(&self) -> &str {
        match self {
            Credential::App(token) => token.fingerprint(),
            Credential::Exchanged(token) => token.fingerprint(),
        }
    }
}

/// The answer when no exchanged token could be had: JTL's refusal passed back as it
/// came (status, content type, body), or the sidecar's own error.
fn exchange_failure(error: ExchangeError) -> (Response<ProxyBody>, &'static str) {
    match error {
        ExchangeError::Refused {
            status,
            content_type,
            body,
        } => {
            let mut response = Response::new(full_body(body));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response.headers_mut().insert(CONTENT_TYPE, content_type);
            }
            (response, "exchange_refused")
        }
        ExchangeError::Unreadable(what) => (
            error_response(
                ErrorCode::BadGateway,
                &format!("JTL's token-exchange answer could not be used: {what}."),
            ),
            "bad_gateway",
        ),
        ExchangeError::Unreachable(CallError::Timeout(_)) => (
            error_response(
                ErrorCode::GatewayTimeout,
                "JTL's token exchange did not answer in time.",
            ),
            "gateway_timeout",
        ),
        ExchangeError::Unreachable(error) => {
            tracing::warn!("the token exchange failed: {error}");
            (
                error_response(
                    ErrorCode::BadGateway,
                    "JTL's token exchange could not be reached.",
                ),
                "bad_gateway",
            )
        }
        ExchangeError::AppToken(unavailable) => token_unavailable(unavailable.retry_after_s),
    }
}

/// One attempt's request: the caller's method, path, query and headers, the token.
fn outgoing(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: ProxyBody,
    authorization: &HeaderValue,
) -> Request<ProxyBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    *request.version_mut() = Version::HTTP_11;
    let mut headers = headers.clone();
    headers.insert(AUTHORIZATION, authorization.clone());
    *request.headers_mut() = headers;
    request
}

/// JTL's answer streamed back unchanged (its error bodies and `X-RateLimit-*` included)
/// apart from hop-by-hop headers and, on a 429, the sidecar's `Retry-After`.
fn finish(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    remove_hop_by_hop(response.headers_mut());
    response
}

fn token_unavailable(retry_after_s: u64) -> (Response<ProxyBody>, &'static str) {
    (
        access_token_unavailable(retry_after_s),
        "access_token_unavailable",
    )
}

/// The caller's `X-Tenant-ID`: absent, or exactly one hyphenated UUID (any case), passed
/// on as sent.
fn tenant_id(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    // `X_Tenant_ID` reaches some servers as `X-Tenant-ID` (CGI and its heirs) and is
    // dropped by others (nginx): never pass on a tenant that was not checked.
    let underscored = headers.keys().any(|name| {
        let name = name.as_str();
        name.len() == X_TENANT_ID.as_str().len()
            && name.contains('_')
            && name.replace('_', "-") == X_TENANT_ID.as_str()
    });
    if underscored {
        return Err("The tenant header must be spelled X-Tenant-ID, with hyphens.");
    }
    let mut values = headers.get_all(X_TENANT_ID).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("The request carries the X-Tenant-ID header more than once.");
    }
    const NOT_A_UUID: &str = "The X-Tenant-ID header is not a UUID.";
    let text = value.to_str().map_err(|_| NOT_A_UUID)?;
    if crate::jose::hyphenated_uuid(text).is_none() {
        return Err(NOT_A_UUID);
    }
    Ok(Some(text.to_owned()))
}

/// Rewrites a single `Content-Type: application/json; charset=utf-8` to
/// `application/json` (SPEC §8); every other content type, and a repeated header, is
/// left as it is.
fn plain_json_content_type(headers: &mut HeaderMap) {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return;
    };
    if is_json_with_utf8_charset(value.as_bytes()) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
}

/// Whether a `Content-Type` value is `application/json` with exactly one parameter,
/// `charset` equal to `utf-8`, in RFC 9110's grammar: `type "/" subtype *( OWS ";" OWS
/// [ name "=" ( token / quoted-string ) ] )`, names and the charset compared without
/// regard to case. Empty parameter slots (`;;`) count for nothing, as the grammar allows.
/// A quoted charset is accepted without escapes (`"utf-8"`); anything unusual is simply
/// not matched and so passes unchanged.
fn is_json_with_utf8_charset(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    let is_ows = |c: char| c == ' ' || c == '\t';
    let mut parts = text.split(';');
    let media_type = parts.next().unwrap_or_default().trim_matches(is_ows);
    if !media_type.eq_ignore_ascii_case("application/json") {
        return false;
    }
    let mut charset_seen = false;
    for parameter in parts {
        let parameter = parameter.trim_matches(is_ows);
        if parameter.is_empty() {
            continue;
        }
        let Some((name, value)) = parameter.split_once('=') else {
            return false;
        };
        if charset_seen || !name.eq_ignore_ascii_case("charset") {
            return false;
        }
        let value = value
            .strip_prefix('"')
            .and_then(|quoted| quoted.strip_suffix('"'))
            .unwrap_or(value);
        if !value.eq_ignore_ascii_case("utf-8") {
            return false;
        }
        charset_seen = true;
    }
    charset_seen
}

/// Reads the body when it ends within `limit` bytes, so it can be sent twice; a body
/// announced larger is not read at all, and one that turns out larger is streamed on
/// from where reading stopped. Trailers of a buffered body are dropped (JTL's API takes
/// none).
async fn read_for_retry(mut body: Incoming, limit: u64) -> Result<RequestBody, hyper::Error> {
    if body.size_hint().lower() > limit {
        return Ok(RequestBody::Streamed(streamed_body(body)));
    }
    let mut buffered = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buffered.extend_from_slice(&data);
        if buffered.len() as u64 > limit {
            let rest = Prefixed {
                prefix: Some(buffered.freeze()),
                rest: body,
            };
            return Ok(RequestBody::Streamed(rest.map_err(BoxError::from).boxed()));
        }
    }
    Ok(RequestBody::Buffered(buffered.freeze()))
}

/// The bytes already read, then the rest of the caller's body as it arrives.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(prefix));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(prefix));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_tenant(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(X_TENANT_ID, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn tenant_id_is_optional_and_otherwise_one_hyphenated_uuid() {
        assert_eq!(tenant_id(&with_tenant(&[])), Ok(None));
        let uuid = "7C9E6679-7425-40DE-944B-E07FC1F90AE7";
        assert_eq!(tenant_id(&with_tenant(&[uuid])), Ok(Some(uuid.to_owned())));
        assert!(tenant_id(&with_tenant(&["7c9e6679742540de944be07fc1f90ae7"])).is_err());
        assert!(tenant_id(&with_tenant(&["acme"])).is_err());
        assert!(tenant_id(&with_tenant(&[""])).is_err());
        let lower = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
        assert!(tenant_id(&with_tenant(&[lower, lower])).is_err());
    }

    #[test]
    fn json_with_the_utf8_charset_is_matched_in_any_spelling() {
        for value in [
            "application/json; charset=utf-8",
            "application/json;charset=utf-8",
            "Application/JSON; Charset=UTF-8",
            "application/json ; charset=utf-8",
            "application/json;\tcharset=utf-8",
            "application/json;   charset=Utf-8  ",
            "application/json; charset=\"utf-8\"",
            "application/json; charset=\"UTF-8\"",
            "application/json; charset=utf-8;",
        ] {
            assert!(is_json_with_utf8_charset(value.as_bytes()), "{value}");
        }
    }

    #[test]
    fn other_content_types_and_parameters_are_not_matched() {
        for value in [
            "application/json",
            "application/json;",
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf8",
            "application/json; charset=\"utf-8",
            "application/json; charset=utf-8\"",
            "application/json; charset = utf-8",
            "application/json; charset=utf-8; charset=utf-8",
            "application/json; charset=utf-8; v=2",
            "application/json; v=2; charset=utf-8",
            "application/json; charset",
            "application/json; profile=x",
            "application/problem+json; charset=utf-8",
            "application/jsonx; charset=utf-8",
            "text/plain; charset=utf-8",
            "text/json; charset=utf-8",
            "multipart/form-data; boundary=x",
            "",
        ] {
            assert!(!is_json_with_utf8_charset(value.as_bytes()), "{value}");
        }
        assert!(!is_json_with_utf8_charset(
            b"application/json; charset=\xffutf-8"
        ));
    }

    #[test]
    fn only_a_single_matching_content_type_header_is_rewritten() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=UTF-8"),
        );
        plain_json_content_type(&mut headers);
        assert_eq!(headers[CONTENT_TYPE], "application/json");

        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        plain_json_content_type(&mut headers);
        assert_eq!(headers[CONTENT_TYPE], "text/plain; charset=utf-8");

        let mut headers = HeaderMap::new();
        for value in ["application/json; charset=utf-8", "text/plain"] {
            headers.append(CONTENT_TYPE, HeaderValue::from_static(value));
        }
        plain_json_content_type(&mut headers);
        assert_eq!(headers.get_all(CONTENT_TYPE).iter().count(), 2);

        let mut headers = HeaderMap::new();
        plain_json_content_type(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn an_underscored_tenant_header_is_refused_not_passed_on_unchecked() {
        for name in ["x_tenant_id", "x-tenant_id", "x_tenant-id"] {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::HeaderName::from_static(name),
                HeaderValue::from_static("acme"),
            );
            assert_eq!(
                tenant_id(&headers),
                Err("The tenant header must be spelled X-Tenant-ID, with hyphens."),
                "{name}"
            );
        }
    }
}
