//! Connect-tenant (SPEC §7): `POST {tenants.connect_path}` is answered by the sidecar. It
//! verifies the session token, upserts the tenant into the store and returns it; nothing
//! reaches the backend.
//!
//! The token comes from the JSON body `{"sessionToken": "..."}` (what JTL's guide sends)
//! or, when the body holds none, from `ingress.token_headers`. When both carry one, the
//! body's wins: it is what the frontend meant for this endpoint, and a different
//! `Authorization` header (another app's credentials on a shared fetch wrapper) must not
//! turn an install into an error.

pub mod recorder;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::Value;

use crate::proxy::errors::{
    ErrorCode, body_too_slow, body_unreadable, error_response, invalid_token_challenge,
    unavailable, with_status,
};
use crate::proxy::headers::read_token;
use crate::proxy::{Handled, ProxyBody, full_body, verify_counted};
use crate::telemetry::Metrics;
use crate::verify::{TokenVerifier, VerifiedSession};
pub use recorder::{TenantRecord, TenantRecorder, TenantRecords};
pub use store::{StoreError, StoredTenant, TenantStore};

/// Request bodies larger than this are refused (413): a session token is a few hundred
/// bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// `Retry-After` when the store is unreachable: a little over the health-check interval,
/// by which time a store that came back is known to be back.
const STORE_RETRY_AFTER_S: u64 = 5;

/// The exact bodies of SPEC §7: the ones JTL's own guide returns, so existing frontends
/// keep working.
const TOKEN_REQUIRED_BODY: &str = r#"{"error":"Session token is required"}"#;
const VERIFICATION_FAILED_BODY: &str = r#"{"error":"Failed to verify session token"}"#;

pub struct ConnectTenant {
    /// `tenants.connect_path`: matched exactly against the request path.
    path: String,
    token_headers: Vec<HeaderName>,
    verifier: Arc<TokenVerifier>,
    store: Arc<TenantStore>,
    /// Told of every tenant connected, so requests do not ask the store about it again;
    /// `None` when `tenants.record_on_request` is off.
    recorder: Option<Arc<TenantRecorder>>,
    metrics: Arc<Metrics>,
    /// How long the (small) body may take to arrive: `server.header_read_timeout_ms`.
    body_read_timeout: Duration,
}

/// The success body, in the field order of SPEC §7. In the app-token flow there is no
/// slug, and the body has none.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectedBody<'a> {
    success: bool,
    tenant_id: &'a str,
    user_id: &'a str,
    /// Absent in the app-token flow, whose tokens carry no slug.
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_slug: Option<&'a str>,
}

impl ConnectTenant {
    pub fn new(
        path: String,
        token_headers: Vec<HeaderName>,
        verifier: Arc<TokenVerifier>,
        store: Arc<TenantStore>,
        recorder: Option<Arc<TenantRecorder>>,
        metrics: Arc<Metrics>,
        body_read_timeout: Duration,
    ) -> ConnectTenant {
        ConnectTenant {
            path,
            token_headers,
            verifier,
            store,
            recorder,
            metrics,
            body_read_timeout,
        }
    }

    pub fn store(&self) -> &Arc<TenantStore> {
        &self.store
    }

    /// Whether the sidecar answers this request itself: `POST` on exactly the path.
    /// Other methods on the path go through the ingress like any request (a preflight
    /// must pass for a cross-origin frontend).
    pub fn answers<B>(&self, request: &Request<B>) -> bool {
        request.method() == Method::POST && request.uri().path() == self.path
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Handled {
        let (parts, body) = request.into_parts();
        let body = match self.read_body(&parts.headers, body).await {
            Ok(body) => body,
            Err(refused) => return refused,
        };
        let body_token = match token_in_body(&body) {
            Ok(token) => token,
            Err(reason) => {
                return Handled::new(
                    error_response(ErrorCode::InvalidRequest, reason),
                    "invalid_request",
                );
            }
        };
        let token = match body_token {
            Some(token) => token,
            None => match read_token(&parts.headers, &self.token_headers) {
                Ok(Some(token)) => token.to_owned(),
                Ok(None) => {
                    return Handled::new(
                        exact(StatusCode::BAD_REQUEST, TOKEN_REQUIRED_BODY),
                        "missing_token",
                    );
                }
                // The same header twice, or two different tokens: not verifiable.
                Err(reason) => return Handled::new(verification_failed(reason), "invalid_token"),
            },
        };

        let session = match verify_counted(
            &self.verifier,
            &self.metrics,
            &token,
            verification_failed,
        )
        .await
        {
            Ok(session) => session,
            Err(refused) => return refused,
        };

        let stored = self
            .store
            .upsert(
                session.tenant_id,
                session.tenant_slug.as_deref().unwrap_or_default(),
                &session.user_id,
            )
            .await;
        let response = match stored {
            Ok(()) => {
                if let Some(recorder) = &self.recorder {
                    recorder.mark_known(session.tenant_id).await;
                }
                connected_response(&session)
            }
            Err(error) => {
                tracing::warn!("connect-tenant: {error}");
                return Handled {
                    session: Some(session),
                    ..Handled::new(
                        unavailable(
                            "The tenant store is unreachable right now; try again shortly.",
                            STORE_RETRY_AFTER_S,
                        ),
                        "tenant_store_unavailable",
                    )
                };
            }
        };
        Handled {
            session: Some(session),
            ..Handled::new(response, "tenant_connected")
        }
    }

    /// The whole body, at most [`MAX_BODY_BYTES`] (413 beyond, also when
    /// `Content-Length` announces more), within the body read timeout (408).
    async fn read_body(&self, headers: &HeaderMap, body: Incoming) -> Result<Vec<u8>, Handled> {
        let announced = headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.trim().parse::<u64>().ok());
        if announced.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let read = Limited::new(body, MAX_BODY_BYTES).collect();
        match tokio::time::timeout(self.body_read_timeout, read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
            Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
                Err(too_large())
            }
            Ok(Err(error)) => {
                tracing::debug!("connect-tenant request body could not be read: {error}");
                Err(Handled::new(body_unreadable(), "invalid_request"))
            }
            Err(_) => Err(Handled::new(body_too_slow(), "invalid_request")),
        }
    }
}

/// The `sessionToken` of a JSON object body. An empty body, a missing or `null`
/// `sessionToken`, or an empty one, is no token; anything that is not a JSON object, or a
/// `sessionToken` that is not a string, is a malformed request.
fn token_in_body(body: &[u8]) -> Result<Option<String>, &'static str> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err("The request body must be a JSON object."),
        Err(_) => return Err("The request body is not valid JSON."),
    };
    match object.remove("sessionToken") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(token)) => {
            let token = token.trim();
            Ok((!token.is_empty()).then(|| token.to_owned()))
        }
        Some(_) => Err("sessionToken must be a string."),
    }
}

fn connected_response(session: &VerifiedSession) -> Response<ProxyBody> {
    let tenant_id = session.tenant_id.hyphenated().to_string();
    let body = ConnectedBody {
        success: true,
        tenant_id: &tenant_id,
        user_id: &session.user_id,
        tenant_slug: session.tenant_slug.as_deref(),
    };
    match serde_json::to_string(&body) {
        Ok(text) => exact(StatusCode::OK, &text),
        // Serializing strings into JSON cannot fail; answer sanely if it ever did.
        Err(_) => error_response(ErrorCode::InvalidRequest, "The tenant cannot be shown."),
    }
}

/// SPEC §7's fixed body; the challenge says why, as every 401 of the sidecar does.
fn verification_failed(why: &str) -> Response<ProxyBody> {
    let mut response = exact(StatusCode::UNAUTHORIZED, VERIFICATION_FAILED_BODY);
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, invalid_token_challenge(why));
    response
}

fn too_large() -> Handled {
    let response = error_response(
        ErrorCode::InvalidRequest,
        "The request body is larger than 64 KiB.",
    );
    Handled::new(
        with_status(response, StatusCode::PAYLOAD_TOO_LARGE),
        "payload_too_large",
    )
}

/// A JSON response with exactly this body.
fn exact(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(body.to_owned()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_token_is_read_from_a_json_object() {
        let token = |t: &str| Ok(Some(t.to_owned()));
        assert_eq!(
            token_in_body(br#"{"sessionToken":"a.b.c"}"#),
            token("a.b.c")
        );
        assert_eq!(
            token_in_body(br#" {"sessionToken": " a.b.c "} "#),
            token("a.b.c")
        );
        assert_eq!(token_in_body(b""), Ok(None));
        assert_eq!(token_in_body(b" \n"), Ok(None));
        assert_eq!(token_in_body(b"{}"), Ok(None));
        assert_eq!(token_in_body(br#"{"sessionToken":null}"#), Ok(None));
        assert_eq!(token_in_body(br#"{"sessionToken":""}"#), Ok(None));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        assert!(token_in_body(b"{").is_err());
        assert!(token_in_body(b"not json").is_err());
        assert!(token_in_body(b"[]").is_err());
        assert!(token_in_body(br#""a.b.c""#).is_err());
        assert!(token_in_body(br#"{"sessionToken":42}"#).is_err());
        assert!(token_in_body(br#"{"sessionToken":["a"]}"#).is_err());
    }

    #[test]
    fn success_body_has_the_spec_field_order() {
        let body = ConnectedBody {
            success: true,
            tenant_id: "t",
            user_id: "u",
            tenant_slug: Some("s"),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"success":true,"tenantId":"t","userId":"u","tenantSlug":"s"}"#
        );
        let without_slug = ConnectedBody {
            tenant_slug: None,
            ..body
        };
        assert_eq!(
            serde_json::to_string(&without_slug).unwrap(),
            r#"{"success":true,"tenantId":"t","userId":"u"}"#
        );
    }
}
