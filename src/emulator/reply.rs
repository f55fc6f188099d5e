//! What the emulator's endpoints share: the reply type and JSON replies, reading a request
//! (body, query, Basic credentials), and the failure switches tests turn on.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Failure, lock};

pub(super) type Reply = Response<Full<Bytes>>;

/// Request bodies the emulator reads at most (the API echo returns them).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What a switchable endpoint serves, which decides what [`Failure::MissingField`] leaves
/// out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// A token endpoint: the answer lacks `access_token`.
    Token,
    /// A key set: the answer lacks `keys`.
    Keys,
    /// Anything else: the answer is `{}`.
    Other,
}

/// Marks a reply that must not be sent: the listener resets the connection instead
/// ([`Failure::Reset`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct ResetConnection;

/// Counts a call of an endpoint and applies its failure switch: the switch's reply, or
/// `None` when the endpoint answers normally.
pub(super) async fn call_counted(
    calls: &std::sync::atomic::AtomicU64,
    switch: &std::sync::Mutex<Failure>,
    endpoint: Endpoint,
) -> Option<Reply> {
    calls.fetch_add(1, Ordering::SeqCst);
    let failure = lock(switch).clone();
    misbehave(failure, endpoint).await
}

/// A 200 `application/json` with exactly this body.
pub(super) fn raw_json_reply(body: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}

async fn misbehave(failure: Failure, endpoint: Endpoint) -> Option<Reply> {
    match failure {
        Failure::None => None,
        Failure::Status(status) => Some(json_reply(
            status_or_500(status),
            &json!({"error": "emulated_failure", "error_description": "failure switched on in the JTL emulator"}),
        )),
        Failure::StatusRetryAfter(status, seconds) => {
            let mut reply = json_reply(
                status_or_500(status),
                &json!({"error": "temporarily_unavailable"}),
            );
            reply
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
            Some(reply)
        }
        Failure::Delay(delay) => {
            tokio::time::sleep(delay).await;
            None
        }
        Failure::RateLimited { retry_after_s } => {
            let mut reply = json_reply(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": "rate_limited", "error_description": "Too many requests"}),
            );
            let headers = reply.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from_static("1000"));
            headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            // JTL's API names its interval and sends no Retry-After; the identity
            // providers' token endpoints may.
            if endpoint == Endpoint::Other {
                headers.insert(
                    "x-ratelimit-interval-length-seconds",
                    HeaderValue::from(retry_after_s),
                );
            } else {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            Some(reply)
        }
        Failure::Oversize => Some(json_reply(
            StatusCode::OK,
            &json!({"padding": "x".repeat(70 * 1024)}),
        )),
        Failure::Garbage => Some(raw_json_reply(
            "<html><head><title>502 Bad Gateway</title></head><body>upstream error</body></html>",
        )),
        Failure::Empty => Some(raw_json_reply("")),
        Failure::MissingField => Some(json_reply(
            StatusCode::OK,
            &match endpoint {
                Endpoint::Token => json!({"token_type": "Bearer", "expires_in": 3600}),
                Endpoint::Keys => json!({"issuer": "jtl-emulator", "key_count": 1}),
                Endpoint::Other => json!({}),
            },
        )),
        Failure::Reset => {
            let mut reply = raw_json_reply("");
            reply.extensions_mut().insert(ResetConnection);
            Some(reply)
        }
    }
}

fn status_or_500(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The query of a minting request, decoded.
pub(super) fn query_pairs(request: &Request<Incoming>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The first value of a query parameter.
pub(super) fn query_param<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// The client id and secret of a token request's `Authorization: Basic`, decoded as
/// RFC 6749 §2.3.1 says and as JTL's identity providers do (each half form-urldecoded, so
/// a client that does not encode a secret holding `+`, `%`, … is refused).
pub(super) fn basic_credentials(request: &Request<Incoming>) -> Option<(String, String)> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    crate::jtl::client_auth::decode_basic_authorization(value)
}

pub(super) async fn read_body(body: Incoming) -> Option<Bytes> {
    Limited::new(body, MAX_BODY)
        .collect()
        .await
        .ok()
        .map(|collected| collected.to_bytes())
}

pub(super) fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(body.to_string())));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    reply
}
