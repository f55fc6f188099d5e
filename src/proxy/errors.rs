//! The JSON error responses of SPEC §4, built in one place.

use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Response, StatusCode, Version};
use serde_json::json;

use super::upstream::UpstreamError;
use super::{ProxyBody, full_body};

/// The `error` codes the sidecar answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MissingToken,
    InvalidToken,
    TemporarilyUnavailable,
    BadGateway,
    GatewayTimeout,
    InvalidRequest,
    /// `421`: the request names a host this listener does not answer for.
    MisdirectedRequest,
    /// `403`: the caller may not do this (a browser on a local endpoint, a drain without
    /// its credential).
    Forbidden,
    /// `429`: the tenant's JTL rate budget would not come back in time (egress).
    RateLimited,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MissingToken => "missing_token",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::BadGateway => "bad_gateway",
            ErrorCode::GatewayTimeout => "gateway_timeout",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::MisdirectedRequest => "misdirected_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MissingToken | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorCode::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// `{"error": code, "error_description": description}` with the status of the code, and
/// the `WWW-Authenticate` challenge of RFC 6750 on a 401.
pub fn error_response(code: ErrorCode, description: &str) -> Response<ProxyBody> {
    let body = json!({"error": code.as_str(), "error_description": description});
    let mut response = Response::new(full_body(body.to_string()));
    *response.status_mut() = code.status();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let challenge = match code {
        ErrorCode::MissingToken => Some(HeaderValue::from_static("Bearer")),
        ErrorCode::InvalidToken => Some(invalid_token_challenge(description)),
        _ => None,
    };
    if let Some(value) = challenge {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

/// `Bearer error="invalid_token", error_description="..."` (RFC 6750), for every 401 of a
/// token that was there but not right, connect-tenant's included.
pub fn invalid_token_challenge(description: &str) -> HeaderValue {
    let challenge = format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        quoted_string_safe(description)
    );
    // quoted_string_safe leaves printable ASCII only, always a valid header value.
    HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

/// `400` for a request whose host is missing, doubled or malformed, checked before
/// anything else (SPEC §4, RFC 9112 §3.2): an HTTP/1 request without `Host` (HTTP/1.0
/// too, so no backend ever gets a request without one), any request with two, a `Host`
/// that is not `uri-host[:port]` (userinfo included). An empty `Host` is allowed (RFC
/// 9112 §3.2). HTTP/2 and later carry the host in `:authority` (the URI's authority
/// here): a request with neither it nor `Host` is refused, and so is one whose `Host`
/// names another host than its `:authority` (RFC 9113 §8.3.1), or whose `:authority`
/// carries userinfo. hyper's parser lets all of these through; none is forwarded.
pub fn refuse_bad_host(
    version: Version,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> Option<Response<ProxyBody>> {
    bad_host(version, headers, uri)
        .map(|description| error_response(ErrorCode::InvalidRequest, description))
}

/// What [`refuse_bad_host`] refuses, as the sentence of its answer.
pub fn bad_host(
    version: Version,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> Option<&'static str> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("The request has more than one Host header.");
    }
    if host.is_some_and(|host| !is_host_and_port(host.as_bytes())) {
        return Some("The request's Host header is not a host with an optional port.");
    }
    let http1 = matches!(
        version,
        Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
    );
    if http1 {
        return match host {
            Some(_) => None,
            None => Some("The request has no Host header."),
        };
    }
    let authority = uri.authority().map(http::uri::Authority::as_str);
    match (authority, host) {
        (None, None) => Some("The request has neither :authority nor a Host header."),
        (Some(authority), _) if authority.contains('@') => {
            Some("The request's :authority is not a host with an optional port.")
        }
        (Some(authority), Some(host))
            if !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) =>
        {
            Some("The request's Host header and :authority name different hosts.")
        }
        _ => None,
    }
}

/// `uri-host [":" port]` (RFC 9110 §7.2), or nothing at all: what `Host` may hold.
fn is_host_and_port(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    if value.contains(&b'@') {
        return false;
    }
    let Ok(authority) = http::uri::Authority::try_from(value) else {
        return false;
    };
    // The authority parser takes any text after the colon; a port is digits only.
    match authority.as_str()[authority.host().len()..].strip_prefix(':') {
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()),
        None => authority.host().len() == authority.as_str().len(),
    }
}

/// A 503 that tells the client when to come back.
pub fn unavailable(description: &str, retry_after_s: u64) -> Response<ProxyBody> {
    let mut response = error_response(ErrorCode::TemporarilyUnavailable, description);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_s.max(1)));
    response
}

/// 503 when a token cannot be checked now: no signing key can be had, or too many
/// requests already wait for a fresh key set. `retry_after_s` is the wait until the
/// next permitted key-set fetch ([`crate::jtl::KeySet::retry_after`]), asking sooner
/// being pointless.
pub fn keys_unavailable(description: &str, retry_after_s: u64) -> Response<ProxyBody> {
    unavailable(description, retry_after_s)
}

/// 503 when no valid access token can be had; `retry_after_s` is the token manager's
/// next attempt.
pub fn access_token_unavailable(retry_after_s: u64) -> Response<ProxyBody> {
    unavailable(
        "The app's JTL access token is unavailable right now; try again shortly.",
        retry_after_s,
    )
}

/// 400 when a request body the sidecar reads itself broke off.
pub fn body_unreadable() -> Response<ProxyBody> {
    error_response(
        ErrorCode::InvalidRequest,
        "The request body could not be read.",
    )
}

/// 408 when a request body the sidecar reads itself did not arrive in time.
pub fn body_too_slow() -> Response<ProxyBody> {
    with_status(
        error_response(
            ErrorCode::InvalidRequest,
            "The request body did not arrive in time.",
        ),
        StatusCode::REQUEST_TIMEOUT,
    )
}

/// An `invalid_request` error answered with a more precise status (405, 408, 413).
pub fn with_status(mut response: Response<ProxyBody>, status: StatusCode) -> Response<ProxyBody> {
    *response.status_mut() = status;
    response
}

/// `405` for `TRACE` and `CONNECT`, which are never forwarded: a next hop that reflects
/// `TRACE` would hand out the credentials the sidecar added.
pub fn refuse_method(method: &Method) -> Option<Response<ProxyBody>> {
    if method != Method::TRACE && method != Method::CONNECT {
        return None;
    }
    Some(with_status(
        error_response(
            ErrorCode::InvalidRequest,
            "TRACE and CONNECT are not forwarded.",
        ),
        StatusCode::METHOD_NOT_ALLOWED,
    ))
}

/// The answer when the next hop (`peer`: "The app backend", "JTL's API") failed, and
/// the outcome for the log line and the metrics: unreachable 502, no response headers
/// in time 504, a path that cannot be forwarded 400.
pub fn upstream_failure(error: &UpstreamError, peer: &str) -> (Response<ProxyBody>, &'static str) {
    match error {
        UpstreamError::Unreachable(_) => {
            tracing::warn!("{error}");
            let description = format!("{peer} could not be reached.");
            (
                error_response(ErrorCode::BadGateway, &description),
                "bad_gateway",
            )
        }
        UpstreamError::Timeout(_) => {
            tracing::warn!("{error}");
            let description = format!("{peer} did not answer in time.");
            (
                error_response(ErrorCode::GatewayTimeout, &description),
                "gateway_timeout",
            )
        }
        UpstreamError::BadPath => (
            error_response(ErrorCode::InvalidRequest, &error.to_string()),
            "invalid_request",
        ),
    }
}

/// Text that can stand inside a quoted-string: printable ASCII without `"` and `\`.
fn quoted_string_safe(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_token_carries_the_rfc6750_challenge() {
        let response = error_response(ErrorCode::InvalidToken, "The session token has expired.");
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()[WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"The session token has expired.\""
        );
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn missing_token_challenge_has_no_error() {
        let response = error_response(ErrorCode::MissingToken, "x");
        assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    fn host_refused(version: Version, hosts: &[&str], uri: &str) -> bool {
        let mut headers = http::HeaderMap::new();
        for host in hosts {
            headers.append(http::header::HOST, HeaderValue::from_str(host).unwrap());
        }
        refuse_bad_host(version, &headers, &uri.parse().unwrap()).is_some()
    }

    #[test]
    fn an_http1_request_needs_exactly_one_well_formed_host() {
        for version in [Version::HTTP_10, Version::HTTP_11] {
            for fine in [
                "app.example",
                "app.example:8443",
                "APP.example:",
                "127.0.0.1:80",
                "[::1]:8080",
                "",
            ] {
                assert!(!host_refused(version, &[fine], "/x"), "{fine}");
            }
            for bad in [
                "a@b",
                "user:pw@app.example",
                "app.example:port",
                "a:1:2",
                "app example",
                "app.example/x",
                "[::1",
                "app%41.example",
            ] {
                assert!(host_refused(version, &[bad], "/x"), "{bad}");
            }
            assert!(host_refused(version, &[], "/x"));
            assert!(host_refused(version, &["a", "a"], "/x"));
            // The target's authority does not stand in for Host in HTTP/1.
            assert!(host_refused(version, &[], "http://app.example/x"));
        }
    }

    #[test]
    fn an_http2_request_takes_its_authority() {
        let h2 = Version::HTTP_2;
        assert!(!host_refused(h2, &[], "http://app.example/x"));
        assert!(!host_refused(h2, &["app.example"], "/x"));
        assert!(!host_refused(h2, &["APP.example"], "http://app.example/x"));
        assert!(host_refused(h2, &[], "/x"));
        assert!(host_refused(h2, &["other.example"], "http://app.example/x"));
        assert!(host_refused(h2, &[], "http://u@app.example/x"));
        assert!(host_refused(h2, &["a@b"], "/x"));
    }

    #[test]
    fn descriptions_cannot_break_out_of_the_quoted_string() {
        assert_eq!(quoted_string_safe("a\"b\\c\r\nd`é"), "a'b'c??d`?");
    }
}
