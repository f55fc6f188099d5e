//! The emulator's endpoints: token, JWKS, and an API echo for everything else.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use super::bearer::{acting, bearer_is_valid, unauthorized_bearer};
use super::reply::{
    Endpoint, Reply, basic_credentials, call_counted, json_reply, query_pairs, query_param,
    read_body,
};
use super::{JWKS_PATH, MINT_PATH, State, TOKEN_PATH, describe_request, lock};

pub(super) async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Reply, Infallible> {
    let path = request.uri().path().to_owned();
    let request = match super::zitadel::route(&state, &path, request).await {
        Ok(reply) => return Ok(reply),
        Err(request) => request,
    };
    let request = match super::exchange_routes::route(&state, &path, request).await {
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
        state
            .rate_limits
            .count(super::rate_limit::tenant_of(request.headers()));
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
            );
        }
        None => {
            return json_reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": "invalid_request"}),
            );
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

fn jwks_endpoint(state: &State, request: &Request<Incoming>) -> Reply {
    if !bearer_is_valid(state, request) {
        return unauthorized_bearer();
    }
    json_reply(StatusCode::OK, &state.jwks())
}

/// Answers with the request it received, as JSON, like a JTL API that reflects what the
/// sidecar sent: method, path, query, headers and body; with the tenant's rate budget in
/// `X-RateLimit-*`, or `429` when it is used up.
async fn api_echo(state: &State, mut request: Request<Incoming>) -> Reply {
    // The app's token or a live exchanged one; the echo says which (`"acting"`).
    let Some(acting) = acting(state, &request) else {
        return unauthorized_bearer();
    };
    request.extensions_mut().insert(acting);
    let tenant = super::rate_limit::tenant_of(request.headers());
    let spent = match state.rate_limits.spend(tenant, &state.clock) {
        Ok(spent) => spent,
        Err(spent) => {
            let mut reply = json_reply(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": "rate_limited", "error_description": "Too many requests"}),
            );
            spent.insert_into(reply.headers_mut());
            return reply;
        }
    };
    let (parts, body) = request.into_parts();
    let Some(body) = read_body(body).await else {
        return json_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &json!({"error": "body too large"}),
        );
    };
    let mut reply = json_reply(StatusCode::OK, &describe_request(&parts, &body));
    spent.insert_into(reply.headers_mut());
    reply
}
