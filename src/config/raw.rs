//! The file as written: exactly the keys of SPEC §3, with their defaults. Its serialized
//! default is also the schema the shape check and the environment overrides compare with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::secrets::REDACTED;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    pub ingress: RawIngress,
    pub egress: RawEgress,
    pub jtl: RawJtl,
    pub session: RawSession,
    pub tenants: RawTenants,
    pub shared_cache: RawSharedCache,
    pub admin: RawAdmin,
    pub log: RawLog,
    pub tracing: RawTracing,
    pub server: RawServer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawIngress {
    pub listen: String,
    pub upstream: String,
    pub public_paths: Vec<String>,
    pub allow_cors_preflight: bool,
    pub cors_allowed_origins: Vec<String>,
    pub token_headers: Vec<String>,
    pub trusted_proxies: Vec<String>,
    pub forward_access_token: bool,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub headers: RawIdentityHeaders,
    pub claim_headers: BTreeMap<String, String>,
}

impl Default for RawIngress {
    fn default() -> Self {
        RawIngress {
            listen: "0.0.0.0:8080".into(),
            upstream: "http://127.0.0.1:3000".into(),
            public_paths: Vec::new(),
            allow_cors_preflight: true,
            cors_allowed_origins: Vec::new(),
            token_headers: vec!["authorization".into(), "x-session-token".into()],
            trusted_proxies: Vec::new(),
            forward_access_token: true,
            connect_timeout_ms: 2000,
            request_timeout_ms: 60_000,
            headers: RawIdentityHeaders::default(),
            claim_headers: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawIdentityHeaders {
    pub tenant_id: String,
    pub user_id: String,
    pub tenant_slug: String,
}

impl Default for RawIdentityHeaders {
    fn default() -> Self {
        RawIdentityHeaders {
            tenant_id: "X-Tenant-ID".into(),
            user_id: "X-User-ID".into(),
            tenant_slug: "X-Tenant-Slug".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawEgress {
    pub listen: String,
    pub allow_non_loopback: bool,
    pub retry_on_401: bool,
    pub max_retry_body_bytes: u64,
    pub allowed_hosts: Vec<String>,
    pub request_timeout_ms: u64,
    pub token_exchange: bool,
    pub exchanged_tokens_max: u64,
    pub rate_limits: bool,
    pub rate_limit_max_wait_ms: u64,
}

impl Default for RawEgress {
    fn default() -> Self {
        RawEgress {
            listen: "127.0.0.1:8081".into(),
            allow_non_loopback: false,
            retry_on_401: true,
            max_retry_body_bytes: 1_048_576,
            allowed_hosts: Vec::new(),
            request_timeout_ms: 60_000,
            token_exchange: true,
            exchanged_tokens_max: 10_000,
            rate_limits: true,
            rate_limit_max_wait_ms: 10_000,
        }
    }
}

/// `[jtl]`. The URL and scope keys are "" unless the operator wrote them: "" is derived
/// from `environment` and the flow, anything else is used exactly as written. (No key is
/// compared with a default to learn whether it was set.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawJtl {
    pub environment: String,
    pub client_id: String,
    pub client_secret: String,
    pub client_secret_file: String,
    pub token_url: String,
    pub scope: String,
    pub api_base_url: String,
    pub jwks_url: String,
    pub refresh_before_expiry_s: u64,
    pub timeout_ms: u64,
    pub ca_file: String,
}

impl Default for RawJtl {
    fn default() -> Self {
        RawJtl {
            environment: "production".into(),
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_file: String::new(),
            token_url: String::new(),
            scope: String::new(),
            api_base_url: String::new(),
            jwks_url: String::new(),
            refresh_before_expiry_s: 60,
            timeout_ms: 5000,
            ca_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSession {
    pub flow: String,
    pub leeway_s: u64,
    pub max_token_bytes: u64,
    pub jwks_refresh_interval_s: u64,
    pub jwks_min_refetch_interval_s: u64,
    pub jwks_max_stale_s: u64,
    pub verified_cache_entries: u64,
    /// "" is derived (app tokens) or unchecked (session tokens).
    pub issuer: String,
    pub audience: RawAudience,
}

/// `session.audience`: one app id, or a list of them during a move to a new app
/// registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawAudience {
    One(String),
    Many(Vec<String>),
}

impl Default for RawAudience {
    fn default() -> Self {
        RawAudience::One(String::new())
    }
}

impl RawAudience {
    /// The app ids written, without empty entries.
    pub fn values(&self) -> Vec<String> {
        match self {
            RawAudience::One(one) => vec![one.clone()],
            RawAudience::Many(many) => many.clone(),
        }
        .into_iter()
        .filter(|value| !value.is_empty())
        .collect()
    }
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            flow: "app-token".into(),
            leeway_s: 30,
            max_token_bytes: 8192,
            jwks_refresh_interval_s: 300,
            jwks_min_refetch_interval_s: 10,
            jwks_max_stale_s: 604_800,
            verified_cache_entries: 100_000,
            issuer: String::new(),
            audience: RawAudience::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTenants {
    pub connect_path: String,
    pub database_url: String,
    pub record_on_request: bool,
}

impl Default for RawTenants {
    fn default() -> Self {
        RawTenants {
            connect_path: "/api/connect-tenant".into(),
            database_url: "sqlite://jtl-tenants.db".into(),
            record_on_request: true,
        }
    }
}

/// `[shared_cache]` (SPEC §12): several replicas share one access token through Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSharedCache {
    pub redis_url: String,
    pub redis_password_file: String,
    pub key_prefix: String,
}

/// `shared_cache.key_prefix`'s default.
pub const DEFAULT_SHARED_CACHE_KEY_PREFIX: &str = "jtl-auth-sidecar";

impl Default for RawSharedCache {
    fn default() -> Self {
        RawSharedCache {
            redis_url: String::new(),
            redis_password_file: String::new(),
            key_prefix: DEFAULT_SHARED_CACHE_KEY_PREFIX.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub drain_token_file: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "0.0.0.0:9090".into(),
            drain_token_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: String,
    pub sample_ratio: f64,
    pub service_name: String,
}

impl Default for RawTracing {
    fn default() -> Self {
        RawTracing {
            otlp_endpoint: String::new(),
            sample_ratio: 1.0,
            service_name: "jtl-auth-sidecar".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawServer {
    pub shutdown_grace_s: u64,
    pub shutdown_delay_s: u64,
    pub header_read_timeout_ms: u64,
    pub http2_idle_timeout_s: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            shutdown_grace_s: 20,
            shutdown_delay_s: 0,
            header_read_timeout_ms: 10_000,
            http2_idle_timeout_s: 300,
        }
    }
}

impl RawConfig {
    /// The config as TOML, with `jtl.client_secret` and any password in
    /// `tenants.database_url` or `shared_cache.redis_url` replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.jtl.client_secret.is_empty() {
            shown.jtl.client_secret = REDACTED.into();
        }
        shown.tenants.database_url = redact_url_password(&shown.tenants.database_url);
        shown.shared_cache.redis_url = redact_url_password(&shown.shared_cache.redis_url);
        shown.tracing.otlp_endpoint = redact_url_password(&shown.tracing.otlp_endpoint);
        // Serializing plain strings, numbers, booleans and maps cannot fail.
        toml::to_string(&shown).unwrap_or_default()
    }
}

/// A URL with any password (in the user info or a `password=`-like query parameter)
/// replaced by `<redacted>`. Text that does not parse as a URL loses everything between
/// `://` and the last `@`, where credentials would be.
pub fn redact_url_password(text: &str) -> String {
    let Ok(url) = Url::parse(text) else {
        return strip_userinfo(text);
    };
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let lower = name.to_ascii_lowercase();
                let hidden = lower.contains("password") || lower.contains("secret");
                (
                    name.into_owned(),
                    if hidden {
                        REDACTED.to_owned()
                    } else {
                        value.into_owned()
                    },
                )
            })
            .collect();
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    let mut shown = shown.to_string().replace("%3Credacted%3E", REDACTED);
    if url.password().is_some() {
        // Put the marker where the password was: scheme://user:<redacted>@host, or
        // scheme://:<redacted>@host (Redis's password-only form).
        if url.username().is_empty() {
            shown = shown.replacen("://", &format!("://:{REDACTED}@"), 1);
        } else {
            let user_end = format!("://{}@", url.username());
            shown = shown.replacen(&user_end, &format!("://{}:{REDACTED}@", url.username()), 1);
        }
    }
    shown
}

/// Removes `user:password@` from URL-like text for error messages.
pub(super) fn strip_userinfo(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://{REDACTED}@{}", &text[..start], &text[at + 1..])
        }
        _ => text.to_owned(),
    }
}
