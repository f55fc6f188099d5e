//! The admin listener: `/healthz`, `/readyz`, `/metrics` (SPEC §9), open to probes and
//! scrapers by pod IP, and `POST /drain` with its credential ([`drain`]), which begins the
//! shutdown without closing the listeners (a backend's preStop hook calls it, so
//! keep-alive clients leave while the pod is taken out).

mod drain;
mod drain_token;

pub use drain::Drain;
pub use drain_token::DrainTokenError;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use serde_json::json;

use crate::jtl::Jtl;
use crate::proxy::{ProxyBody, full_body};
use crate::telemetry::Metrics;
use crate::tenants::TenantStore;

/// What `/readyz` looks at.
pub struct Readiness {
    jtl: Jtl,
    /// `None` when connect-tenant is disabled (no store is opened then).
    tenant_store: Option<Arc<TenantStore>>,
    shutting_down: AtomicBool,
}

impl Readiness {
    pub fn new(jtl: Jtl, tenant_store: Option<Arc<TenantStore>>) -> Arc<Readiness> {
        Arc::new(Readiness {
            jtl,
            tenant_store,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// From now on `/readyz` answers 503, whatever else holds, and HTTP/1 answers carry
    /// `Connection: close`.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// The names of what is missing; empty when ready.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.shutting_down.load(Ordering::SeqCst) {
            missing.push("shutting_down");
        }
        if self.jtl.tokens.current().is_none() {
            missing.push("access_token");
        }
        // Every key set the flow needs: "jwks" when one is missing, and in `both` also
        // which one.
        let key_sets = &self.jtl.key_sets;
        let unusable: Vec<_> = key_sets
            .iter()
            .filter(|keys| keys.usable().is_none())
            .collect();
        if !unusable.is_empty() {
            missing.push("jwks");
        }
        if key_sets.len() > 1 {
            for keys in unusable {
                missing.push(match keys.token_kind() {
                    crate::jose::TokenKind::AppToken => "jwks_app_token",
                    crate::jose::TokenKind::SessionToken => "jwks_session_token",
                });
            }
        }
        // The last result of the store's background check, not a query per probe.
        if self
            .tenant_store
            .as_ref()
            .is_some_and(|store| !store.is_reachable())
        {
            missing.push("tenant_store");
        }
        missing
    }
}

pub struct Admin {
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    /// Who may `POST /drain`.
    pub drain: Drain,
}

impl Admin {
    /// `peer` is the address the request came from: `/drain` is for the pod's own
    /// containers only.
    pub fn handle<B>(
        &self,
        request: &Request<B>,
        peer: std::net::SocketAddr,
    ) -> Response<ProxyBody> {
        if request.uri().path() == "/drain" {
            return self.drain(request, peer);
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method_not_allowed"}),
            );
        }
        match request.uri().path() {
            "/healthz" => json(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => {
                let missing = self.readiness.missing();
                if missing.is_empty() {
                    json(StatusCode::OK, &json!({"status": "ready"}))
                } else {
                    json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"status": "not_ready", "missing": missing}),
                    )
                }
            }
            "/metrics" => {
                let mut response = Response::new(full_body(self.metrics.encode()));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                response
            }
            _ => json(StatusCode::NOT_FOUND, &json!({"error": "not_found"})),
        }
    }

    fn drain<B>(&self, request: &Request<B>, peer: std::net::SocketAddr) -> Response<ProxyBody> {
        if request.method() != Method::POST {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method_not_allowed"}),
            );
        }
        // Anyone who reaches the admin port could otherwise take the pod out of service.
        if let Err(refused) = self.drain.authorize(request, peer) {
            tracing::warn!(%peer, reason = refused.reason(), "POST /drain refused; nothing changed");
            return refused.response();
        }
        if self.readiness.is_shutting_down() {
            tracing::info!(%peer, "POST /drain: already draining");
        } else {
            tracing::info!(
                %peer,
                "draining (POST /drain): readiness fails and keep-alive clients are told to close; the listeners close on SIGTERM"
            );
        }
        self.readiness.begin_shutdown();
        json(StatusCode::ACCEPTED, &json!({"status": "draining"}))
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full_body(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
