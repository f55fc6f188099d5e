//! The validated, typed settings the rest of the program reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use url::Url;

use super::Cidr;
use crate::jose::{TokenKind, TokenPolicy};
use crate::secrets::Secret;

#[derive(Debug, Clone)]
pub struct Config {
    pub ingress: IngressConfig,
    pub egress: EgressConfig,
    pub jtl: JtlConfig,
    pub session: SessionConfig,
    pub tenants: TenantsConfig,
    pub shared_cache: SharedCacheConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
    pub server: ServerConfig,
}

#[derive(Debug, Clone)]
pub struct IngressConfig {
    pub listen: SocketAddr,
    pub upstream: Url,
    pub public_paths: Vec<PublicPath>,
    pub allow_cors_preflight: bool,
    pub cors_allowed_origins: Vec<String>,
    /// Lowercase, in the order they are tried.
    pub token_headers: Vec<HeaderName>,
    /// The proxies in front (a TLS ingress, a load balancer) whose forwarding headers are
    /// kept; empty: every peer is a client, and the sidecar sets them itself.
    pub trusted_proxies: Vec<Cidr>,
    pub forward_access_token: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub identity_headers: IdentityHeaders,
    pub claim_headers: Vec<ClaimHeader>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeaders {
    pub tenant_id: HeaderName,
    pub user_id: HeaderName,
    pub tenant_slug: HeaderName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimHeader {
    pub claim: String,
    pub header: HeaderName,
}

/// An entry of `ingress.public_paths`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicPath {
    /// `"/exact"`: that path only.
    Exact(String),
    /// `"/prefix/*"`: stored without the `*`, so it ends with `/`.
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// `None` when `egress.listen` is empty (egress disabled).
    pub listen: Option<SocketAddr>,
    pub allow_non_loopback: bool,
    pub retry_on_401: bool,
    pub max_retry_body_bytes: u64,
    /// Host names (lowercase) the egress listener and `POST /drain` answer for, besides
    /// IP literals and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// How long JTL's API may take to send its response headers (then 504); the body
    /// may stream for as long as it takes.
    pub request_timeout: Duration,
    /// `X-JTL-Act-As` honoured: JTL's on-behalf-of-user and delegated tokens.
    pub token_exchange: bool,
    /// Exchanged tokens kept in memory at most (least recently used dropped).
    pub exchanged_tokens_max: u64,
    /// Each tenant kept within the budget JTL's `X-RateLimit-*` headers report.
    pub rate_limits: bool,
    /// How long a request may wait for its tenant's budget; longer is a local `429`.
    pub rate_limit_max_wait: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSecret {
    Inline(Secret),
    /// Read at start-up and again after the token endpoint answers `invalid_client`.
    File(PathBuf),
}

/// `jtl.environment`: which of JTL's environments the derived URLs point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JtlEnvironment {
    Production,
    Qa,
    Dev,
}

impl JtlEnvironment {
    /// What JTL's host names carry for this environment: `id{suffix}.jtl-cloud.com`.
    pub fn host_suffix(self) -> &'static str {
        match self {
            JtlEnvironment::Production => "",
            JtlEnvironment::Qa => ".qa",
            JtlEnvironment::Dev => ".dev",
        }
    }

    /// The app-token issuer (JTL's Zitadel) of this environment.
    pub fn issuer(self) -> String {
        format!("https://id{}.jtl-cloud.com", self.host_suffix())
    }

    /// JTL's legacy token endpoint of this environment.
    pub fn legacy_token_url(self) -> String {
        format!(
            "https://auth{}.jtl-cloud.com/oauth2/token",
            self.host_suffix()
        )
    }

    /// JTL's API of this environment.
    pub fn api_base_url(self) -> String {
        format!("https://api{}.jtl-cloud.com", self.host_suffix())
    }
}

#[derive(Debug, Clone)]
pub struct JtlConfig {
    pub environment: JtlEnvironment,
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub token_url: Url,
    pub scope: Option<String>,
    pub api_base_url: Url,
    pub refresh_before_expiry: Duration,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// The service token is opaque (the app-token flow's, from Zitadel): its lifetime is
    /// `expires_in`, never a decoded body.
    pub opaque_token: bool,
}

/// `session.flow`: which of JTL's tokens the ingress accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flow {
    /// JTL's current default: RS256 app tokens from JTL's Zitadel.
    #[default]
    AppToken,
    /// The legacy EdDSA session tokens.
    SessionToken,
    /// Both, while an app moves from one to the other (dispatch by the header's `alg`).
    Both,
}

impl Flow {
    /// The kinds of token accepted, app tokens first.
    pub fn kinds(self) -> &'static [TokenKind] {
        match self {
            Flow::AppToken => &[TokenKind::AppToken],
            Flow::SessionToken => &[TokenKind::SessionToken],
            Flow::Both => &[TokenKind::AppToken, TokenKind::SessionToken],
        }
    }

    pub fn accepts(self, kind: TokenKind) -> bool {
        self.kinds().contains(&kind)
    }

    /// As written in `session.flow` (and `dev --flow`).
    pub fn label(self) -> &'static str {
        match self {
            Flow::AppToken => "app-token",
            Flow::SessionToken => "session-token",
            Flow::Both => "both",
        }
    }

    pub fn from_label(label: &str) -> Option<Flow> {
        [Flow::AppToken, Flow::SessionToken, Flow::Both]
            .into_iter()
            .find(|flow| flow.label() == label)
    }

    /// The token as named in messages: "app token", "session token", or "token" when
    /// both are accepted.
    pub fn token_name(self) -> &'static str {
        match self {
            Flow::AppToken => TokenKind::AppToken.name(),
            Flow::SessionToken => TokenKind::SessionToken.name(),
            Flow::Both => "token",
        }
    }
}

/// What one kind of token needs, built once from the config: the claim rules (with the
/// kind, its algorithm and its claim mapping) and where its keys are. Everything that
/// differs between the flows is here; the rest of the program asks it.
#[derive(Debug, Clone)]
pub struct FlowProfile {
    pub policy: TokenPolicy,
    /// The key set: Zitadel's `{issuer}/oauth/v2/keys` for app tokens, JTL's
    /// `{api}/account/.well-known/jwks.json` for session tokens.
    pub key_set_url: Url,
    /// JTL's session-token key set needs `Authorization: Bearer <access token>`;
    /// Zitadel's is public.
    pub key_set_needs_bearer: bool,
}

impl FlowProfile {
    pub fn kind(&self) -> TokenKind {
        self.policy.kind
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub flow: Flow,
    pub leeway: Duration,
    pub max_token_bytes: usize,
    pub jwks_refresh_interval: Duration,
    pub jwks_min_refetch_interval: Duration,
    pub jwks_max_stale: Duration,
    pub verified_cache_entries: u64,
    /// One per kind of token accepted, in the order of [`Flow::kinds`].
    pub profiles: Vec<FlowProfile>,
}

impl SessionConfig {
    /// The profile of `kind`, when this flow accepts it.
    pub fn profile(&self, kind: TokenKind) -> Option<&FlowProfile> {
        self.profiles.iter().find(|profile| profile.kind() == kind)
    }

    /// The app-token profile's issuer, when app tokens are accepted.
    pub fn app_token_issuer(&self) -> Option<&str> {
        self.profile(TokenKind::AppToken)
            .and_then(|profile| profile.policy.issuer.as_deref())
    }
}

#[derive(Debug, Clone)]
pub struct TenantsConfig {
    /// `None` when `tenants.connect_path` is empty (the path is then proxied).
    pub connect_path: Option<String>,
    pub database_url: Secret,
    /// The first verified request of a tenant the store does not hold inserts it (SPEC §7).
    pub record_on_request: bool,
}

/// `[shared_cache]`, validated.
#[derive(Debug, Clone)]
pub struct SharedCacheConfig {
    /// `None` when `redis_url` is empty: each replica keeps its own token.
    pub redis: Option<RedisTarget>,
    /// Never empty.
    pub key_prefix: String,
}

/// Where Redis is and how to log in, read from `shared_cache.redis_url` (and
/// `redis_password_file`). Its `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `rediss://`: TLS with the roots of JTL's connections (`jtl.ca_file` included).
    pub tls: bool,
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The database number (the URL's path), 0 by default.
    pub db: i64,
    /// The ACL user, when the URL names one.
    pub username: Option<String>,
    pub password: Option<RedisPassword>,
}

impl RedisTarget {
    /// `host:port` for logs (never the credentials).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisPassword {
    /// From the URL's user info.
    Inline(Secret),
    /// `shared_cache.redis_password_file`, read at start-up and again for each new
    /// connection.
    File(PathBuf),
}

/// The default port of `redis://` and `rediss://`.
pub const REDIS_DEFAULT_PORT: u16 = 6379;

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Where the drain credential is written at start; `None`: `POST /drain` is refused.
    pub drain_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// OpenTelemetry (`[tracing]`): `traceparent` is always continued; spans are exported
/// only with an endpoint.
#[derive(Debug, Clone)]
pub struct TracingConfig {
    /// Where spans go, OTLP over HTTP (protobuf), with the signal path (`/v1/traces`)
    /// added when the configured URL has no path; `None`: nothing is exported.
    pub otlp_endpoint: Option<Url>,
    /// The share of traces started here (no sampled parent) that are sampled, 0 – 1.
    pub sample_ratio: f64,
    pub service_name: String,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long the listeners keep accepting (readiness failing, every
    /// HTTP/1 response `Connection: close`) before they close: the time balancers need
    /// to stop sending new connections. Zero closes them at once (SPEC §10).
    pub shutdown_delay: Duration,
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection with no request for this long is sent `GOAWAY`: idle ones
    /// cost memory, and a client opens a new one when it needs it.
    pub http2_idle_timeout: Duration,
}
