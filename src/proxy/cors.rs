//! CORS when `ingress.cors_allowed_origins` is set: the sidecar answers preflights
//! itself and adds CORS headers to every response, its own 401s included (otherwise the
//! browser hides them from the frontend).

use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::{ProxyBody, full_body};

/// How long browsers may cache a preflight answer.
const PREFLIGHT_MAX_AGE_S: u32 = 600;

/// OPTIONS with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The `Access-Control-Allow-Origin` value for this request's origin, if allowed.
pub fn allowed_origin(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    if allowed.iter().any(|a| a == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let text = origin.to_str().ok()?;
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(text))
        .then(|| origin.clone())
}

/// The sidecar's own answer to a preflight: 204, with the CORS grant when the origin is
/// allowed (without it, the browser refuses the real request).
pub fn preflight_response(headers: &HeaderMap, allowed: &[String]) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(""));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    out.append(VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed_origin(headers, allowed) {
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if let Some(method) = headers.get(ACCESS_CONTROL_REQUEST_METHOD) {
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, method.clone());
        }
        if let Some(requested) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
        }
        out.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(PREFLIGHT_MAX_AGE_S),
        );
    }
    response
}

/// Adds the CORS grant to any response for an allowed origin.
pub fn add_cors_headers(response_headers: &mut HeaderMap, origin: HeaderValue) {
    response_headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    response_headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("WWW-Authenticate, Retry-After, X-Request-ID"),
    );
    add_vary_origin(response_headers);
}

/// `Vary: Origin` unless the response says so already. Every response gets it while
/// origins are configured, granted or not: a shared cache must not hand an answer made
/// for one origin (with or without the grant) to another.
pub fn add_vary_origin(response_headers: &mut HeaderMap) {
    let varies_by_origin = response_headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("origin") || t.trim() == "*")
        })
    });
    if !varies_by_origin {
        response_headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}
