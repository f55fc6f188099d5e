//! The token-exchange endpoints (see `exchange.rs`), checked in JTL's order: the failure
//! switch, `POST` only (405), the app's bearer token (401, as the API answers), a JSON
//! `Content-Type` (415), a JSON object with string fields and a UUID `tenantId` (400
//! `invalid_request`), then JTL's refusals (404/403) or, for a refresh, the refresh token
//! (400 `invalid_grant`).

use http::header::CONTENT_TYPE;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::State;
use super::bearer::{bearer_is_valid, unauthorized_bearer};
use super::exchange::{
    ACT_AS_USER_PATH, ACT_AS_USER_REFRESH_PATH, DELEGATED_PATH, DELEGATED_REFRESH_PATH,
    ExchangeKind, ExchangeSpelling, Grant, Issued, Presented,
};
use super::reply::{Endpoint, Reply, call_counted, json_reply, read_body};

/// The exchange routes; the request back when `path` is not one of them.
pub(super) async fn route(
    state: &State,
    path: &str,
    request: Request<Incoming>,
) -> Result<Reply, Request<Incoming>> {
    let (kind, refresh) = match path {
        ACT_AS_USER_PATH => (ExchangeKind::User, false),
        ACT_AS_USER_REFRESH_PATH => (ExchangeKind::User, true),
        DELEGATED_PATH => (ExchangeKind::Tenant, false),
        DELEGATED_REFRESH_PATH => (ExchangeKind::Tenant, true),
        _ => return Err(request),
    };
    let exchange = &state.exchange;
    let counter = if refresh {
        exchange.refresh_counter(kind)
    } else {
        exchange.mint_counter(kind)
    };
    if let Some(reply) = call_counted(counter, &exchange.failure, Endpoint::Token).await {
        return Ok(reply);
    }
    let body = match checked_body(state, request).await {
        Ok(body) => body,
        Err(reply) => return Ok(reply),
    };
    exchange.record_body(Value::Object(body.clone()));
    Ok(if refresh {
        refresh_endpoint(state, kind, &body)
    } else {
        mint_endpoint(state, kind, &body)
    })
}

fn error(status: StatusCode, error: &str, description: &str) -> Reply {
    json_reply(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn invalid_request(description: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

fn invalid_grant(description: &str) -> Reply {
    error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

/// The request's JSON object, once method, bearer and content type pass.
async fn checked_body(
    state: &State,
    request: Request<Incoming>,
) -> Result<Map<String, Value>, Reply> {
    if request.method() != Method::POST {
        return Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "Only POST is allowed",
        ));
    }
    if !bearer_is_valid(state, &request) {
        return Err(unauthorized_bearer());
    }
    let json_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "Content-Type must be application/json",
        ));
    }
    let Some(body) = read_body(request.into_body()).await else {
        return Err(invalid_request("The request body could not be read"));
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(invalid_request("The request body must be a JSON object")),
        Err(_) => Err(invalid_request("The request body is not valid JSON")),
    }
}

/// A required non-empty string field, or what is wrong with it.
fn string_field<'b>(body: &'b Map<String, Value>, name: &str) -> Result<&'b str, String> {
    match body.get(name) {
        Some(Value::String(value)) if !value.is_empty() => Ok(value),
        Some(Value::String(_)) => Err(format!("{name} must not be empty")),
        Some(_) => Err(format!("{name} must be a string")),
        None => Err(format!("{name} is required")),
    }
}

/// `tenantId`: a UUID in its hyphenated form.
fn tenant_field(body: &Map<String, Value>) -> Result<String, String> {
    let tenant_id = string_field(body, "tenantId")?;
    if tenant_id.len() != 36 || uuid::Uuid::try_parse(tenant_id).is_err() {
        return Err("tenantId must be a UUID".to_owned());
    }
    Ok(tenant_id.to_owned())
}

fn mint_endpoint(state: &State, kind: ExchangeKind, body: &Map<String, Value>) -> Reply {
    let grant = match grant_of(kind, body) {
        Ok(grant) => grant,
        Err(problem) => return invalid_request(&problem),
    };
    if let Some(refusal) = state.exchange.refusal(&grant) {
        return error(refusal.status(), refusal.error(), refusal.description());
    }
    answer(state, &grant)
}

fn grant_of(kind: ExchangeKind, body: &Map<String, Value>) -> Result<Grant, String> {
    // userId first, as JTL lists it; a delegated request ignores one.
    let user_id = match kind {
        ExchangeKind::User => Some(string_field(body, "userId")?.to_owned()),
        ExchangeKind::Tenant => None,
    };
    Ok(Grant {
        kind,
        tenant_id: tenant_field(body)?,
        user_id,
    })
}

fn refresh_endpoint(state: &State, kind: ExchangeKind, body: &Map<String, Value>) -> Reply {
    let refresh_token = match string_field(body, "refreshToken") {
        Ok(token) => token,
        Err(problem) => return invalid_request(&problem),
    };
    match state.exchange.present(kind, refresh_token) {
        Presented::Rotated(grant) => match state.exchange.refusal(&grant) {
            // The grant is gone (uninstalled, capability withdrawn, user removed): the
            // refresh token with it.
            Some(refusal) => invalid_grant(refusal.description()),
            None => answer(state, &grant),
        },
        Presented::Reused => invalid_grant("The refresh token was already used"),
        Presented::Unknown => invalid_grant("The refresh token is invalid"),
    }
}

/// 200 with fresh tokens for `grant`, spelled as switched.
fn answer(state: &State, grant: &Grant) -> Reply {
    let issued = state.issue_exchanged(grant);
    json_reply(StatusCode::OK, &spelled(state.exchange.spelling(), &issued))
}

fn spelled(spelling: ExchangeSpelling, issued: &Issued) -> Value {
    let Issued {
        access_token,
        refresh_token,
        lifetime_s,
        expires_at_s,
    } = issued;
    match spelling {
        ExchangeSpelling::CamelCase => json!({
            "accessToken": access_token,
            "refreshToken": refresh_token,
            "expiresIn": lifetime_s,
            "tokenType": "Bearer",
        }),
        ExchangeSpelling::SnakeCase => json!({
            "access_token": access_token,
            "refresh_token": refresh_token,
            "expires_in": lifetime_s,
            "token_type": "Bearer",
        }),
        ExchangeSpelling::ExpiresAtRfc3339 => json!({
            "accessToken": access_token,
            "refreshToken": refresh_token,
            "expiresAt": rfc3339(*expires_at_s),
        }),
        ExchangeSpelling::ExpiresAtEpoch => json!({
            "access_token": access_token,
            "refresh_token": refresh_token,
            "expires_at": expires_at_s,
        }),
        ExchangeSpelling::NoLifetime => json!({
            "accessToken": access_token,
            "refreshToken": refresh_token,
        }),
        ExchangeSpelling::NoAccessToken => json!({
            "refreshToken": refresh_token,
            "expiresIn": lifetime_s,
        }),
    }
}

/// Epoch seconds as RFC 3339 UTC (`2026-09-21T10:40:00Z`).
fn rfc3339(epoch_s: i64) -> Value {
    OffsetDateTime::from_unix_timestamp(epoch_s)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}
