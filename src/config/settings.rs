//! The validated, typed settings the rest of the program reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use url::Url;

use super::Cidr;
use crate::jose::{TokenFlow, TokenPolicy};
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientSecret {
    Inline(Secret),
    /// Read at start-up and again after the token endpoint answers `invalid_client`.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct JtlConfig {
    pub client_id: String,
    pub client_secret: ClientSecret,
    pub token_url: Url,
    pub scope: Option<String>,
    pub api_base_url: Url,
    /// `jtl.jwks_url`, or the default derived from the flow.
    pub jwks_url: Url,
    pub refresh_before_expiry: Duration,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// The service token is opaque (the app-token flow's, from Zitadel): its lifetime is
    /// `expires_in`, never a decoded body.
    pub opaque_token: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    SessionToken,
    AppToken,
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
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl SessionConfig {
    pub fn token_policy(&self) -> TokenPolicy {
        TokenPolicy {
            flow: match self.flow {
                Flow::SessionToken => TokenFlow::SessionToken,
                Flow::AppToken => TokenFlow::AppToken,
            },
            max_token_bytes: self.max_token_bytes,
            leeway_s: i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX),
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        }
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
    /// `shared_cache.redis_password_file`, read at start-up.
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
