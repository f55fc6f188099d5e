//! Who a request's bearer token is: the app's own access token (the API, the legacy key
//! set and the token exchange accept it), or a live exchanged token (the API only).

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, StatusCode};
use serde_json::json;

use super::State;
use super::exchange::Acting;
use super::reply::{Reply, json_reply};

fn bearer_token<B>(request: &Request<B>) -> Option<&str> {
    request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}

/// The app's own access token (legacy or Zitadel), issued, unexpired and not revoked.
pub(super) fn bearer_is_valid<B>(state: &State, request: &Request<B>) -> bool {
    bearer_token(request).is_some_and(|token| state.is_valid_access_token(token))
}

/// Who the request's bearer token acts for: the app (its own access token), a user or a
/// tenant (a live exchanged token); `None` when it is missing, unknown, expired or
/// revoked.
pub(super) fn acting<B>(state: &State, request: &Request<B>) -> Option<Acting> {
    let token = bearer_token(request)?;
    if state.is_valid_access_token(token) {
        return Some(Acting::App);
    }
    state.exchange.acting(token, state.clock.now_ms())
}

/// JTL's answer to a missing, expired or revoked bearer token.
pub(super) fn unauthorized_bearer() -> Reply {
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
