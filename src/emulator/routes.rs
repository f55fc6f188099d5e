//! The emulator's endpoints: token, JWKS, and an API echo for everything else.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{describe_request, lock, Failure, State, JWKS_PATH, MINT_PATH, TOKEN_PATH};

pub(super) type Reply = Response<Full<Bytes>>;

/// Request bodies the emulator reads at most (the API echo returns them).
const MAX_BODY: usize = 16 * 1024 * 1024;

pub(super) async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let path = request.uri().path().to_owned();
    let request = match super::zitadel::route(&state, &path, request).await {
        Ok(reply) => return Ok(reply),
        Err(request) => request,
    };
    let reply = if path == TOKEN_PATH {
        match call_counted(
            &state.counters.token_requests,
            &state.token_failure,
            Endpoint::Token,
        )
        .await
        {
            Some(reply) => reply,
            None => token_endpoint(&state, request).await,
        }
    } else if path == JWKS_PATH {
        match call_counted(
            &state.counters.jwks_requests,
            &state.jwks_failure,
            Endpoint::Keys,
        )
        .await
        {
            Some(reply) => reply,
            None => jwks_endpoint(&state, &request),
        }
    } else if path == MINT_PATH {
        mint_endpoint(&state, &request)
    } else {
        match call_counted(
            &state.counters.api_requests,
            &state.api_failure,
            Endpoint::Other,
        )
        .await
        {
            Some(reply) => reply,
            None => api_echo(&state, request).await,
        }
    };
    Ok(reply)
}

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
fn raw_json_reply(body: &'static str) -> Reply {
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
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
            headers.insert("x-ratelimit-limit", HeaderValue::from_static("1000"));
            headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            headers.insert("x-ratelimit-reset", HeaderValue::from(retry_after_s));
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

async fn token_endpoint(state: &State, request: Request<Incoming>) -> Reply {
    if request.method() != Method::POST {
        return json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "invalid_request"}),
        );
    }
    let authenticated = basic_credentials(&request).is_some_and(|(id, secret)| {
        id == *lock(&state.client_id) && secret == *lock(&state.client_secret)
    });
    if !authenticated {
        let mut reply = json_reply(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "Client authentication failed"}),
        );
        reply.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"jtl\""),
        );
        return reply;
    }
    let Some(body) = read_body(request.into_body()).await else {
        return json_reply(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request"}),
        );
    };
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    match field("grant_type").as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "unsupported_grant_type"}),
            )
        }
        None => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request"}),
            )
        }
    }
    let expires_in = *lock(&state.expires_in);
    let access_token = state.issue_access_token(expires_in.unwrap_or(3600));
    let mut answer = json!({"access_token": access_token, "token_type": "Bearer"});
    if let Some(expires_in) = expires_in {
        answer["expires_in"] = json!(expires_in);
    }
    let scope = field("scope");
    if let Some(scope) = &scope {
        answer["scope"] = json!(scope);
    }
    *lock(&state.last_scope) = scope;
    json_reply(StatusCode::OK, &answer)
}

/// Most tokens one mint request answers (the load benchmark asks for 20 000).
const MAX_MINTED: usize = 100_000;

fn mint_endpoint(state: &State, request: &Request<Incoming>) -> Reply {
    let query = query_pairs(request);
    let param = |name: &str| query_param(&query, name);
    let tenant_id = param("tenantId").unwrap_or(super::DEV_TENANT_ID);
    let user_id = param("userId").unwrap_or(super::DEV_USER_ID);
    let slug = param("tenantSlug").unwrap_or(super::DEV_TENANT_SLUG);
    let lifetime = param("lifetime_s")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3600u64);
    let count = param("count")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .clamp(1, MAX_MINTED);
    let Some(kid) = state.default_kid() else {
        return json_reply(
            StatusCode::CONFLICT,
            &json!({"error": "the emulator has no signing key"}),
        );
    };
    let header = json!({"alg": "EdDSA", "typ": "JWT"});
    let mut tokens = String::new();
    for _ in 0..count {
        let mut claims = state.session_claims(
            tenant_id,
            user_id,
            slug,
            std::time::Duration::from_secs(lifetime),
        );
        if count > 1 {
            // Distinct tokens for the same identity: a nonce claim.
            claims["nonce"] = json!(uuid::Uuid::new_v4().to_string());
        }
        if let Some(token) = state.mint_with_header(&header, &claims, &kid) {
            tokens.push_str(&token);
            tokens.push('\n');
        }
    }
    let mut reply = Response::new(Full::new(Bytes::from(tokens)));
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    reply
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

pub(super) fn basic_credentials(request: &Request<Incoming>) -> Option<(String, String)> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

fn bearer_is_valid(state: &State, request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .is_some_and(|token| state.is_valid_access_token(token))
}

fn unauthorized_bearer() -> Reply {
    let mut reply = json_reply(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "invalid_token", "error_description": "The access token is missing, expired or revoked"}),
    );
    reply.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    reply
}

fn jwks_endpoint(state: &State, request: &Request<Incoming>) -> Reply {
    if !bearer_is_valid(state, request) {
        return unauthorized_bearer();
    }
    json_reply(StatusCode::OK, &state.jwks())
}

/// Answers with the request it received, as JSON, like a JTL API that reflects what the
/// sidecar sent: method, path, query, headers and body.
async fn api_echo(state: &State, request: Request<Incoming>) -> Reply {
    if !bearer_is_valid(state, &request) {
        return unauthorized_bearer();
    }
    let (parts, body) = request.into_parts();
    let Some(body) = read_body(body).await else {
        return json_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": "body too large"}),
        );
    };
    let mut reply = json_reply(StatusCode::OK, &describe_request(&parts, &body));
    reply
        .headers_mut()
        .insert("x-ratelimit-limit", HeaderValue::from_static("1000"));
    reply
        .headers_mut()
        .insert("x-ratelimit-remaining", HeaderValue::from_static("999"));
    reply
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
