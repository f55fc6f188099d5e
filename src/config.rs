//! Configuration: one TOML file plus `JTL_SIDECAR_<SECTION>__<KEY>` environment
//! overrides, merged with figment over the defaults of SPEC §3, then validated into typed
//! settings. Validation reports every problem at once, one line each, naming the key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::Figment;
use http::HeaderName;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::jose::{TokenFlow, TokenPolicy};
pub use crate::secrets::Secret;
use crate::secrets::REDACTED;

/// Environment variables starting with this override config keys.
pub const ENV_PREFIX: &str = "JTL_SIDECAR_";
/// Environment variable that may name the config file instead of `--config`.
pub const CONFIG_PATH_ENV: &str = "JTL_SIDECAR_CONFIG";
/// JTL's legacy token endpoint, `jtl.token_url`'s default in the session-token flow.
pub const LEGACY_TOKEN_URL: &str = "https://auth.jtl-cloud.com/oauth2/token";

/// Issuer of app tokens when `session.issuer` is empty in the app-token flow.
pub const DEFAULT_APP_TOKEN_ISSUER: &str = "https://id.jtl-cloud.com";

// ---------------------------------------------------------------------------------------
// The raw file: exactly the keys of SPEC §3, with their defaults.
// ---------------------------------------------------------------------------------------

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
}

impl Default for RawEgress {
    fn default() -> Self {
        RawEgress {
            listen: "127.0.0.1:8081".into(),
            allow_non_loopback: false,
            retry_on_401: true,
            max_retry_body_bytes: 1_048_576,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawJtl {
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
            client_id: String::new(),
            client_secret: String::new(),
            client_secret_file: String::new(),
            token_url: LEGACY_TOKEN_URL.into(),
            scope: String::new(),
            api_base_url: "https://api.jtl-cloud.com".into(),
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
    pub issuer: String,
    pub audience: String,
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            flow: "session-token".into(),
            leeway_s: 30,
            max_token_bytes: 8192,
            jwks_refresh_interval_s: 300,
            jwks_min_refetch_interval_s: 10,
            jwks_max_stale_s: 604_800,
            verified_cache_entries: 100_000,
            issuer: String::new(),
            audience: String::new(),
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
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "0.0.0.0:9090".into(),
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
pub struct RawServer {
    pub shutdown_grace_s: u64,
    pub shutdown_delay_s: u64,
    pub header_read_timeout_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            shutdown_grace_s: 20,
            shutdown_delay_s: 0,
            header_read_timeout_ms: 10_000,
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
fn strip_userinfo(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}://{REDACTED}@{}", &text[..start], &text[at + 1..])
        }
        _ => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Validated, typed settings.
// ---------------------------------------------------------------------------------------

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
}

// ---------------------------------------------------------------------------------------
// Problems and loading.
// ---------------------------------------------------------------------------------------

/// One thing wrong with the config: the key (dotted path) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub key: String,
    pub reason: String,
}

impl ConfigProblem {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigProblem {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Every problem found; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A valid config, the effective raw values (for `check` to print), and warnings about
/// things that are allowed but probably not meant.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: Config,
    pub effective: RawConfig,
    pub warnings: Vec<String>,
}

/// Loads `path` with overrides from the process environment.
pub fn load_file(path: &Path) -> Result<LoadedConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigProblem::new(
            "config",
            format!("cannot read {}: {error}", path.display()),
        )])
    })?;
    load_str(&text, process_env())
}

/// Loads a TOML document (an embedded config) with overrides from the process
/// environment.
pub fn load_str_with_process_env(toml_text: &str) -> Result<LoadedConfig, ConfigErrors> {
    load_str(toml_text, process_env())
}

/// The process environment, without panicking on values that are not UTF-8: a
/// `JTL_SIDECAR_` variable whose value is not UTF-8 is kept with a marker value that
/// validation reports by name (never by value); other variables are not our business.
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            if !name.starts_with(ENV_PREFIX) {
                return None;
            }
            Some(match value.into_string() {
                Ok(value) => (name, value),
                Err(_) => (name, NOT_UTF8.to_owned()),
            })
        })
        .collect()
}

/// Stands for an environment value that is not UTF-8 (it contains a NUL, which no real
/// environment value can).
const NOT_UTF8: &str = "\0not-utf-8";

/// Loads a TOML document with overrides from `env` (name, value pairs; only the ones
/// starting with [`ENV_PREFIX`] are read).
pub fn load_str(
    toml_text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<LoadedConfig, ConfigErrors> {
    let schema = match Value::serialize(RawConfig::default()) {
        Ok(Value::Dict(_, dict)) => dict,
        _ => Dict::new(),
    };
    let mut problems = Vec::new();
    let overrides = env_overrides(env, &schema, &mut problems);
    let figment = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Toml::string(toml_text))
        .merge(Serialized::defaults(overrides));

    let mut merged = match figment.extract::<Dict>() {
        Ok(merged) => merged,
        Err(error) => {
            problems.extend(error.into_iter().map(|e| figment_problem(&e)));
            return Err(ConfigErrors(problems));
        }
    };
    // Unknown keys and ill-typed values are reported and dropped (their defaults stand
    // in), so the checks below still run and every problem is reported at once.
    check_shape(&mut merged, &schema, "", &mut problems);
    let shape_problems = problems.len();
    let mut effective: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
        .merge(Serialized::defaults(merged))
        .extract()
        .map_err(|error| {
            problems.extend(error.into_iter().map(|e| figment_problem(&e)));
            ConfigErrors(problems.clone())
        })?;
    let mut warnings = Vec::new();
    let config = validate(&effective, &mut problems, &mut warnings);
    // A key already reported for its type stands at its default now: say nothing more
    // about it (a wrongly typed secret is not also "missing").
    let reported: Vec<String> = problems[..shape_problems]
        .iter()
        .map(|p| p.key.clone())
        .collect();
    let mut index = 0;
    problems.retain(|problem| {
        index += 1;
        index <= shape_problems || !reported.contains(&problem.key)
    });
    match config {
        Some(config) if problems.is_empty() => {
            // `check` prints the values in force, derived ones included (SPEC §11).
            effective.jtl.jwks_url = config.jtl.jwks_url.to_string();
            effective.jtl.token_url = config.jtl.token_url.to_string();
            effective.jtl.scope = config.jtl.scope.clone().unwrap_or_default();
            if let Some(issuer) = &config.session.issuer {
                effective.session.issuer = issuer.clone();
            }
            Ok(LoadedConfig {
                config,
                effective,
                warnings,
            })
        }
        _ => Err(ConfigErrors(problems)),
    }
}

fn figment_problem(error: &figment::Error) -> ConfigProblem {
    let key = if error.path.is_empty() {
        "config".to_owned()
    } else {
        error.path.join(".")
    };
    ConfigProblem::new(key, one_line(&error.kind.to_string()))
}

/// TOML syntax errors come with a multi-line source excerpt; keep the sentences only, so
/// that each problem stays on one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with('|')
                && !line.starts_with('^')
                && !line.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// Turns `JTL_SIDECAR_<SECTION>__<KEY>` variables into a dict shaped like the config.
/// Values of string keys are taken verbatim (a secret such as `007` must stay a string);
/// others are parsed as TOML-like values (`true`, `8080`, `["/a", "/b"]`).
fn env_overrides(
    env: impl IntoIterator<Item = (String, String)>,
    schema: &Dict,
    problems: &mut Vec<ConfigProblem>,
) -> Dict {
    let mut overrides = Dict::new();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name != CONFIG_PATH_ENV)
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let mut path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let is_claim_header = path.len() == 3 && path[0] == "ingress" && path[1] == "claim_headers";
        if is_claim_header {
            // Claim names are case-sensitive (`tenantSlug`): keep the variable's spelling.
            if let Some(claim) = name.rsplit("__").next() {
                path[2] = claim.to_owned();
            }
        }
        let dotted = path
            .iter()
            .map(|segment| printable_key(segment))
            .collect::<Vec<_>>()
            .join(".");
        let value = if is_claim_header {
            Value::from(raw)
        } else {
            match find(schema, &path) {
                Some(Value::String(..)) => Value::from(raw),
                Some(Value::Dict(..)) => {
                    problems.push(ConfigProblem::new(
                        dotted,
                        format!("{name} names a section, not a key"),
                    ));
                    continue;
                }
                Some(_) => raw.parse::<Value>().unwrap_or_else(|never| match never {}),
                None => {
                    problems.push(ConfigProblem::new(
                        dotted,
                        format!("unknown key (from environment variable {name})"),
                    ));
                    continue;
                }
            }
        };
        insert(&mut overrides, &path, value);
    }
    overrides
}

fn find<'d>(dict: &'d Dict, path: &[String]) -> Option<&'d Value> {
    let (first, rest) = path.split_first()?;
    let value = dict.get(first)?;
    if rest.is_empty() {
        return Some(value);
    }
    match value {
        Value::Dict(_, inner) => find(inner, rest),
        _ => None,
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

/// Reports every unknown key and every value of the wrong type, comparing the merged
/// config against the shape of the defaults.
fn check_shape(given: &mut Dict, schema: &Dict, prefix: &str, problems: &mut Vec<ConfigProblem>) {
    given.retain(|name, value| {
        let key = if prefix.is_empty() {
            printable_key(name)
        } else {
            format!("{prefix}.{}", printable_key(name))
        };
        let Some(expected) = schema.get(name) else {
            problems.push(ConfigProblem::new(key, "unknown key"));
            return false;
        };
        if key == "ingress.claim_headers" {
            let Value::Dict(_, entries) = value else {
                let found = kind(value, false);
                problems.push(ConfigProblem::new(
                    key,
                    format!("expected a table of claim = \"Header-Name\", found {found}"),
                ));
                return false;
            };
            entries.retain(|claim, header| {
                let is_string = matches!(header, Value::String(..));
                if !is_string {
                    problems.push(ConfigProblem::new(
                        format!("{key}.{}", printable_key(claim)),
                        format!(
                            "expected a header name (a string), found {}",
                            kind(header, false)
                        ),
                    ));
                }
                is_string
            });
            return true;
        }
        let secret = SECRET_KEYS.contains(&key.as_str());
        let found = kind(value, secret);
        let mut wrong = |expected: &str| {
            problems.push(ConfigProblem::new(
                &key,
                format!("expected {expected}, found {found}"),
            ));
            false
        };
        match (expected, &mut *value) {
            (Value::Dict(_, inner_schema), Value::Dict(_, inner)) => {
                check_shape(inner, inner_schema, &key, problems);
                true
            }
            (Value::Dict(..), _) => wrong("a table"),
            (_, Value::String(_, text)) if text == NOT_UTF8 => {
                problems.push(ConfigProblem::new(
                    &key,
                    "the environment variable's value is not UTF-8",
                ));
                false
            }
            (Value::String(..), Value::String(..)) | (Value::Bool(..), Value::Bool(..)) => true,
            (Value::String(..), _) => wrong("a string"),
            (Value::Bool(..), _) => wrong("true or false"),
            (Value::Num(..), Value::Num(_, number))
                if number
                    .to_u128_lossy()
                    .is_some_and(|n| n <= u128::from(u64::MAX)) =>
            {
                true
            }
            (Value::Num(..), _) => wrong("a whole number, 0 or more"),
            (Value::Array(..), Value::Array(_, items))
                if items.iter().all(|item| matches!(item, Value::String(..))) =>
            {
                true
            }
            (Value::Array(..), _) => wrong("an array of strings"),
            (_, _) => true,
        }
    });
}

/// Keys whose values are never shown, not even in an error.
const SECRET_KEYS: &[&str] = &[
    "jtl.client_secret",
    "tenants.database_url",
    "shared_cache.redis_url",
];

/// A key as shown in a problem line: as written when it is plain, else quoted with
/// escapes, so a key holding a newline cannot forge another line.
fn printable_key(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if plain {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// What was found, for a type error; the value itself only when it is not a secret.
fn kind(value: &Value, secret: bool) -> String {
    if secret {
        return match value {
            Value::String(..) => "a string",
            Value::Num(..) => "a number",
            Value::Bool(..) => "a boolean",
            Value::Dict(..) => "a table",
            Value::Array(..) => "an array",
            _ => "another type",
        }
        .to_owned();
    }
    match value {
        Value::String(_, text) => format!("the string {text:?}"),
        Value::Char(_, c) => format!("the character {c:?}"),
        Value::Bool(_, b) => format!("{b}"),
        Value::Num(_, number) => match (number.to_i128(), number.to_u128(), number.to_f64()) {
            (Some(n), _, _) => format!("the number {n}"),
            (_, Some(n), _) => format!("the number {n}"),
            (_, _, Some(n)) => format!("the number {n}"),
            _ => "a number".to_owned(),
        },
        Value::Empty(..) => "nothing".to_owned(),
        Value::Dict(..) => "a table".to_owned(),
        Value::Array(..) => "an array".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------

/// Collects problems into a list instead of stopping at the first.
struct Checker<'p> {
    problems: &'p mut Vec<ConfigProblem>,
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, reason: impl Into<String>) {
        self.problems.push(ConfigProblem::new(key, reason));
    }

    fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        if text.is_empty() {
            self.problem(key, "missing (an address such as \"0.0.0.0:8080\")");
            return None;
        }
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.problem(
                    key,
                    format!("not an IP address with a port (such as \"0.0.0.0:8080\"): {text:?}"),
                );
                None
            }
        }
    }

    fn http_url(&mut self, key: &str, text: &str) -> Option<Url> {
        if text.is_empty() {
            self.problem(key, "missing");
            return None;
        }
        let url = match Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            _ => {
                self.problem(
                    key,
                    format!("not an http(s) URL: {:?}", strip_userinfo(text)),
                );
                return None;
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            self.problem(key, "must not contain credentials");
            return None;
        }
        if url.fragment().is_some() {
            self.problem(key, "must not contain a fragment (#...)");
            return None;
        }
        Some(url)
    }

    fn range(&mut self, key: &str, value: u64, min: u64, max: u64) -> u64 {
        if value < min || value > max {
            self.problem(key, format!("{value} is out of range ({min} to {max})"));
        }
        value
    }

    fn millis(&mut self, key: &str, value: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.range(key, value, min, max))
    }

    fn seconds(&mut self, key: &str, value: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.range(key, value, min, max))
    }

    /// A header the sidecar sets: a valid name, not one with a fixed meaning in HTTP or
    /// in forwarding, and without `_` (which many servers drop or fold into `-`).
    fn settable_header(&mut self, key: &str, text: &str) -> Option<HeaderName> {
        if text.is_empty() {
            self.problem(key, "missing (a header name)");
            return None;
        }
        let Ok(name) = HeaderName::from_bytes(text.as_bytes()) else {
            self.problem(key, format!("not a valid header name: {text:?}"));
            return None;
        };
        if text.contains('_') {
            self.problem(
                key,
                format!("{text:?} contains '_'; use '-' (many servers drop or rewrite headers with '_')"),
            );
            return None;
        }
        if RESERVED_HEADERS.contains(&name.as_str()) {
            self.problem(
                key,
                format!("{text:?} is a header the proxy manages itself"),
            );
            return None;
        }
        Some(name)
    }
}

/// A level (`info`) or `tracing` filter directives (`info,hyper=warn`). A bare word
/// that is not a level would be read as a target name and silently enable everything for
/// it, so each directive must end in a level.
fn is_level_filter(text: &str) -> bool {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let directives_ok = !text.trim().is_empty()
        && text.split(',').all(|directive| {
            let level = directive.rsplit('=').next().unwrap_or_default().trim();
            LEVELS.iter().any(|known| known.eq_ignore_ascii_case(level))
        });
    directives_ok && tracing_subscriber::EnvFilter::builder().parse(text).is_ok()
}

/// Headers that must not be configured as identity or claim headers.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "content-encoding",
    "content-length",
    "content-type",
    "cookie",
    "forwarded",
    "host",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-request-id",
];

/// Header names compared the way identity headers are stripped: case-insensitively and
/// with `_` treated as `-`.
fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn validate(
    raw: &RawConfig,
    problems: &mut Vec<ConfigProblem>,
    warnings: &mut Vec<String>,
) -> Option<Config> {
    let mut check = Checker { problems };
    let ingress = validate_ingress(&raw.ingress, &mut check);
    let egress = validate_egress(&raw.egress, &mut check, warnings);
    let session = validate_session(&raw.session, &mut check);
    let jtl = validate_jtl(
        &raw.jtl,
        session.as_ref().map(|s| s.flow),
        session.as_ref(),
        &mut check,
        warnings,
    );
    let tenants = validate_tenants(&raw.tenants, &mut check);
    let shared_cache = validate_shared_cache(&raw.shared_cache, &mut check, warnings);
    let admin = check
        .socket_addr("admin.listen", &raw.admin.listen)
        .map(|listen| AdminConfig { listen });
    let log = validate_log(&raw.log, &mut check);
    let server = ServerConfig {
        shutdown_grace: check.seconds(
            "server.shutdown_grace_s",
            raw.server.shutdown_grace_s,
            0,
            3600,
        ),
        shutdown_delay: check.seconds(
            "server.shutdown_delay_s",
            raw.server.shutdown_delay_s,
            0,
            600,
        ),
        header_read_timeout: check.millis(
            "server.header_read_timeout_ms",
            raw.server.header_read_timeout_ms,
            1,
            600_000,
        ),
    };

    // Listeners must not collide with each other.
    let listeners = [
        ("ingress.listen", ingress.as_ref().map(|i| i.listen)),
        ("egress.listen", egress.as_ref().and_then(|e| e.listen)),
        ("admin.listen", admin.as_ref().map(|a| a.listen)),
    ];
    for (index, (key, addr)) in listeners.iter().enumerate() {
        for (other_key, other) in &listeners[..index] {
            if let (Some(addr), Some(other)) = (addr, other) {
                let overlapping_ip = addr.ip() == other.ip()
                    || addr.ip().is_unspecified()
                    || other.ip().is_unspecified();
                if addr.port() != 0 && addr.port() == other.port() && overlapping_ip {
                    check.problem(key, format!("uses the same port as {other_key}"));
                }
            }
        }
    }

    Some(Config {
        ingress: ingress?,
        egress: egress?,
        jtl: jtl?,
        session: session?,
        tenants: tenants?,
        shared_cache: shared_cache?,
        admin: admin?,
        log: log?,
        server,
    })
}

fn validate_ingress(raw: &RawIngress, check: &mut Checker) -> Option<IngressConfig> {
    let problems_before = check.problems.len();
    let listen = check.socket_addr("ingress.listen", &raw.listen);
    let upstream = check.http_url("ingress.upstream", &raw.upstream);
    if let Some(upstream) = &upstream {
        if upstream.query().is_some() {
            check.problem("ingress.upstream", "must not contain a query");
        }
    }

    let mut public_paths = Vec::new();
    for (index, pattern) in raw.public_paths.iter().enumerate() {
        let key = format!("ingress.public_paths[{index}]");
        match parse_public_path(pattern) {
            Ok(path) => public_paths.push(path),
            Err(reason) => check.problem(&key, reason),
        }
    }

    let mut cors_allowed_origins = Vec::new();
    for (index, origin) in raw.cors_allowed_origins.iter().enumerate() {
        let key = format!("ingress.cors_allowed_origins[{index}]");
        if origin == "*" || is_origin(origin) {
            cors_allowed_origins.push(origin.clone());
        } else {
            check.problem(
                &key,
                format!("not an origin (\"https://host[:port]\", no path) or \"*\": {origin:?}"),
            );
        }
    }

    let mut token_headers: Vec<HeaderName> = Vec::new();
    if raw.token_headers.is_empty() {
        check.problem("ingress.token_headers", "must name at least one header");
    }
    for (index, text) in raw.token_headers.iter().enumerate() {
        let key = format!("ingress.token_headers[{index}]");
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(name)
                if token_headers
                    .iter()
                    .any(|seen| folded(seen.as_str()) == folded(name.as_str())) =>
            {
                check.problem(&key, format!("{text:?} is listed twice"))
            }
            Ok(name)
                if name != http::header::AUTHORIZATION
                    && RESERVED_HEADERS.contains(&name.as_str()) =>
            {
                check.problem(
                    &key,
                    format!("{text:?} is a header the proxy manages itself"),
                )
            }
            Ok(name) => token_headers.push(name),
            Err(_) => check.problem(&key, format!("not a valid header name: {text:?}")),
        }
    }

    let tenant_id_header =
        check.settable_header("ingress.headers.tenant_id", &raw.headers.tenant_id);
    let user_id_header = check.settable_header("ingress.headers.user_id", &raw.headers.user_id);
    let tenant_slug_header =
        check.settable_header("ingress.headers.tenant_slug", &raw.headers.tenant_slug);

    let mut claim_headers = Vec::new();
    for (claim, header) in &raw.claim_headers {
        let key = format!("ingress.claim_headers.{}", printable_key(claim));
        if claim.is_empty() {
            check.problem(&key, "the claim name is empty");
            continue;
        }
        if let Some(header) = check.settable_header(&key, header) {
            claim_headers.push(ClaimHeader {
                claim: claim.clone(),
                header,
            });
        }
    }

    // Every header the sidecar sets must be distinct, and none may be a token header
    // (token headers are removed before forwarding).
    // Each valid one is checked, even when another is invalid, so that every problem is
    // reported at once.
    let mut set_by_sidecar: Vec<(String, &HeaderName)> = Vec::new();
    for (key, header) in [
        ("ingress.headers.tenant_id", &tenant_id_header),
        ("ingress.headers.user_id", &user_id_header),
        ("ingress.headers.tenant_slug", &tenant_slug_header),
    ] {
        if let Some(header) = header {
            set_by_sidecar.push((key.into(), header));
        }
    }
    for claim_header in &claim_headers {
        set_by_sidecar.push((
            format!("ingress.claim_headers.{}", claim_header.claim),
            &claim_header.header,
        ));
    }
    for (index, (key, name)) in set_by_sidecar.iter().enumerate() {
        if let Some((other_key, _)) = set_by_sidecar[..index]
            .iter()
            .find(|(_, other)| folded(other.as_str()) == folded(name.as_str()))
        {
            check.problem(key, format!("\"{name}\" is already set by {other_key}"));
        }
        if token_headers
            .iter()
            .any(|token| folded(token.as_str()) == folded(name.as_str()))
        {
            check.problem(
                key,
                format!("\"{name}\" is also listed in ingress.token_headers"),
            );
        }
    }

    let connect_timeout = check.millis(
        "ingress.connect_timeout_ms",
        raw.connect_timeout_ms,
        1,
        60_000,
    );
    let request_timeout = check.millis(
        "ingress.request_timeout_ms",
        raw.request_timeout_ms,
        1,
        3_600_000,
    );

    if check.problems.len() != problems_before {
        return None;
    }
    Some(IngressConfig {
        listen: listen?,
        upstream: upstream?,
        public_paths,
        allow_cors_preflight: raw.allow_cors_preflight,
        cors_allowed_origins,
        token_headers,
        forward_access_token: raw.forward_access_token,
        connect_timeout,
        request_timeout,
        identity_headers: IdentityHeaders {
            tenant_id: tenant_id_header?,
            user_id: user_id_header?,
            tenant_slug: tenant_slug_header?,
        },
        claim_headers,
    })
}

/// `"/exact"` or `"/prefix/*"`, in plain characters: no query, fragment, percent
/// escapes, backslashes or dot segments, so what is configured is what matches.
fn parse_public_path(pattern: &str) -> Result<PublicPath, String> {
    if !pattern.starts_with('/') {
        return Err(format!("must start with '/': {pattern:?}"));
    }
    if let Some(bad) = pattern
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '%' | '\\'))
    {
        return Err(format!("must not contain {bad:?}: {pattern:?}"));
    }
    let (base, is_prefix) = match pattern.strip_suffix('*') {
        Some(base) => (base, true),
        None => (pattern, false),
    };
    if base.contains('*') || (is_prefix && !base.ends_with('/')) {
        return Err(format!(
            "'*' is only allowed as a whole last segment (\"/prefix/*\"): {pattern:?}"
        ));
    }
    if base
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(format!("must not contain a dot segment: {pattern:?}"));
    }
    if is_prefix && base == "/" {
        return Err("\"/*\" would make every path public, so no request would be verified".into());
    }
    Ok(if is_prefix {
        PublicPath::Prefix(base.to_owned())
    } else {
        PublicPath::Exact(base.to_owned())
    })
}

fn is_origin(text: &str) -> bool {
    match Url::parse(text) {
        Ok(url) => {
            matches!(url.scheme(), "http" | "https")
                && url.host().is_some()
                && url.path() == "/"
                && !text.ends_with('/')
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none()
        }
        Err(_) => false,
    }
}

fn validate_egress(
    raw: &RawEgress,
    check: &mut Checker,
    warnings: &mut Vec<String>,
) -> Option<EgressConfig> {
    let problems_before = check.problems.len();
    let listen = if raw.listen.is_empty() {
        None
    } else {
        check.socket_addr("egress.listen", &raw.listen)
    };
    if let Some(addr) = listen {
        if !is_loopback(&addr) {
            if raw.allow_non_loopback {
                warnings.push(format!(
                    "egress.listen: {addr} is not a loopback address; anything that can reach it can call JTL's API with this app's access token"
                ));
            } else {
                check.problem(
                    "egress.listen",
                    format!("{addr} is not a loopback address; anything that can reach it could call JTL's API with this app's token (set egress.allow_non_loopback = true to allow it)"),
                );
            }
        }
    }
    let max_retry_body_bytes = check.range(
        "egress.max_retry_body_bytes",
        raw.max_retry_body_bytes,
        0,
        64 * 1024 * 1024,
    );
    if check.problems.len() != problems_before {
        return None;
    }
    Some(EgressConfig {
        listen,
        allow_non_loopback: raw.allow_non_loopback,
        retry_on_401: raw.retry_on_401,
        max_retry_body_bytes,
    })
}

fn validate_jtl(
    raw: &RawJtl,
    flow: Option<Flow>,
    session: Option<&SessionConfig>,
    check: &mut Checker,
    warnings: &mut Vec<String>,
) -> Option<JtlConfig> {
    let problems_before = check.problems.len();
    if raw.client_id.is_empty() {
        check.problem("jtl.client_id", "missing");
    } else if raw.client_id.trim() != raw.client_id {
        warnings.push(
            "jtl.client_id: has leading or trailing whitespace, which JTL will not accept".into(),
        );
    }
    let client_secret = match (
        raw.client_secret.is_empty(),
        raw.client_secret_file.is_empty(),
    ) {
        (true, true) => {
            check.problem(
                "jtl.client_secret",
                "missing (set jtl.client_secret or jtl.client_secret_file)",
            );
            None
        }
        (false, false) => {
            check.problem(
                "jtl.client_secret",
                "set either jtl.client_secret or jtl.client_secret_file, not both",
            );
            None
        }
        (false, true) => {
            if raw.client_secret.trim() != raw.client_secret {
                warnings.push(
                    "jtl.client_secret: has leading or trailing whitespace, which JTL will probably not accept".into(),
                );
            }
            Some(ClientSecret::Inline(Secret::new(raw.client_secret.clone())))
        }
        (true, false) => {
            let path = PathBuf::from(&raw.client_secret_file);
            if let Err(error) = std::fs::metadata(&path) {
                warnings.push(format!(
                    "jtl.client_secret_file: cannot be read here ({error}); `run` needs it"
                ));
            }
            Some(ClientSecret::File(path))
        }
    };
    // The app-token flow asks Zitadel for its service token unless a URL is set.
    let app_token_issuer = match flow {
        Some(Flow::AppToken) => session.and_then(|s| s.issuer.as_deref()),
        _ => None,
    };
    let token_url = match app_token_issuer {
        Some(issuer) if raw.token_url == LEGACY_TOKEN_URL => {
            check.http_url("jtl.token_url", &format!("{issuer}/oauth/v2/token"))
        }
        _ => check.http_url("jtl.token_url", &raw.token_url),
    };
    let scope = match (app_token_issuer, raw.scope.as_str()) {
        (Some(_), "") => Some("openid".to_owned()),
        (_, "") => None,
        (app_token, scope) => {
            if app_token.is_some() && !scope.split(' ').any(|s| s == "openid") {
                warnings.push(format!(
                    "jtl.scope: {scope:?} lacks \"openid\", which JTL's Zitadel requires for the service account's token request"
                ));
            }
            Some(scope.to_owned())
        }
    };
    let api_base_url = check.http_url("jtl.api_base_url", &raw.api_base_url);
    if api_base_url
        .as_ref()
        .is_some_and(|url| url.query().is_some())
    {
        check.problem(
            "jtl.api_base_url",
            "must not contain a query (paths are appended to it)",
        );
    }
    let jwks_url = if raw.jwks_url.is_empty() {
        match (
            flow,
            session.and_then(|s| s.issuer.as_deref()),
            &api_base_url,
        ) {
            (Some(Flow::AppToken), Some(issuer), _) => {
                Url::parse(&format!("{}/oauth/v2/keys", issuer.trim_end_matches('/'))).ok()
            }
            (_, _, Some(api)) => Url::parse(&format!(
                "{}/account/.well-known/jwks.json",
                api.as_str().trim_end_matches('/')
            ))
            .ok(),
            _ => None,
        }
    } else {
        check.http_url("jtl.jwks_url", &raw.jwks_url)
    };
    for (key, url) in [
        ("jtl.token_url", &token_url),
        ("jtl.api_base_url", &api_base_url),
        ("jtl.jwks_url", &jwks_url),
    ] {
        if let Some(url) = url {
            if url.scheme() == "http" && !is_loopback_host(url) {
                warnings.push(format!(
                    "{key}: {url} is plain http to a remote host; credentials and tokens would travel unencrypted"
                ));
            }
        }
    }
    let refresh_before_expiry = check.seconds(
        "jtl.refresh_before_expiry_s",
        raw.refresh_before_expiry_s,
        0,
        86_400,
    );
    let timeout = check.millis("jtl.timeout_ms", raw.timeout_ms, 1, 120_000);
    let ca_file = if raw.ca_file.is_empty() {
        None
    } else {
        let path = PathBuf::from(&raw.ca_file);
        if let Err(error) = std::fs::metadata(&path) {
            warnings.push(format!(
                "jtl.ca_file: cannot be read here ({error}); `run` needs it"
            ));
        }
        Some(path)
    };
    if check.problems.len() != problems_before {
        return None;
    }
    Some(JtlConfig {
        client_id: raw.client_id.clone(),
        client_secret: client_secret?,
        token_url: token_url?,
        scope,
        api_base_url: api_base_url?,
        jwks_url: jwks_url?,
        refresh_before_expiry,
        timeout,
        ca_file,
        opaque_token: app_token_issuer.is_some(),
    })
}

fn validate_session(raw: &RawSession, check: &mut Checker) -> Option<SessionConfig> {
    let problems_before = check.problems.len();
    let flow = match raw.flow.as_str() {
        "session-token" => Some(Flow::SessionToken),
        "app-token" => Some(Flow::AppToken),
        other => {
            check.problem(
                "session.flow",
                format!("must be \"session-token\" or \"app-token\", not {other:?}"),
            );
            None
        }
    };
    let leeway = check.seconds("session.leeway_s", raw.leeway_s, 0, 600);
    let max_token_bytes = check.range("session.max_token_bytes", raw.max_token_bytes, 256, 65_536);
    let jwks_refresh_interval = check.seconds(
        "session.jwks_refresh_interval_s",
        raw.jwks_refresh_interval_s,
        1,
        86_400,
    );
    let jwks_min_refetch_interval = check.seconds(
        "session.jwks_min_refetch_interval_s",
        raw.jwks_min_refetch_interval_s,
        1,
        3600,
    );
    if raw.jwks_min_refetch_interval_s > raw.jwks_refresh_interval_s {
        check.problem(
            "session.jwks_min_refetch_interval_s",
            "must not be longer than session.jwks_refresh_interval_s",
        );
    }
    let jwks_max_stale = check.seconds(
        "session.jwks_max_stale_s",
        raw.jwks_max_stale_s,
        0,
        30 * 86_400,
    );
    let verified_cache_entries = check.range(
        "session.verified_cache_entries",
        raw.verified_cache_entries,
        0,
        10_000_000,
    );
    let mut issuer = (!raw.issuer.is_empty()).then(|| raw.issuer.clone());
    let audience = (!raw.audience.is_empty()).then(|| raw.audience.clone());
    if flow == Some(Flow::AppToken) {
        let given = issuer.get_or_insert_with(|| DEFAULT_APP_TOKEN_ISSUER.to_owned());
        // `iss` is compared exactly, and Zitadel's has no trailing '/'.
        let trimmed = given.trim_end_matches('/').len();
        given.truncate(trimmed);
        if audience.is_none() {
            check.problem(
                "session.audience",
                "missing (the app's id is required in the app-token flow)",
            );
        }
        if let Some(issuer) = &issuer {
            if check
                .http_url("session.issuer", issuer)
                .is_some_and(|url| url.query().is_some())
            {
                check.problem(
                    "session.issuer",
                    "must not contain a query (paths are appended to it)",
                );
            }
        }
    }
    if check.problems.len() != problems_before {
        return None;
    }
    Some(SessionConfig {
        flow: flow?,
        leeway,
        max_token_bytes: usize::try_from(max_token_bytes).ok()?,
        jwks_refresh_interval,
        jwks_min_refetch_interval,
        jwks_max_stale,
        verified_cache_entries,
        issuer,
        audience,
    })
}

fn validate_tenants(raw: &RawTenants, check: &mut Checker) -> Option<TenantsConfig> {
    let problems_before = check.problems.len();
    let connect_path = if raw.connect_path.is_empty() {
        None
    } else {
        match parse_public_path(&raw.connect_path) {
            Ok(PublicPath::Exact(path)) => Some(path),
            Ok(PublicPath::Prefix(_)) => {
                check.problem(
                    "tenants.connect_path",
                    "must be one exact path, without '*'",
                );
                None
            }
            Err(reason) => {
                check.problem("tenants.connect_path", reason);
                None
            }
        }
    };
    let url = &raw.database_url;
    if let Some(path) = url.strip_prefix("sqlite:") {
        if path.trim_start_matches("//").is_empty() {
            check.problem(
                "tenants.database_url",
                "names no SQLite file (\"sqlite://path/to/file.db\")",
            );
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if Url::parse(url).map(|u| u.host().is_none()).unwrap_or(true) {
            check.problem("tenants.database_url", "not a valid postgres:// URL");
        }
    } else {
        check.problem(
            "tenants.database_url",
            format!(
                "must start with sqlite:// or postgres://, not {:?}",
                redact_url_password(url)
            ),
        );
    }
    if check.problems.len() == problems_before {
        // What the store will parse at start-up is checked now, so a URL it would
        // refuse is a config error (exit 2), not a start-up failure.
        let parsed = if url.starts_with("sqlite:") {
            sqlx::sqlite::SqliteConnectOptions::from_str(url).map(drop)
        } else {
            sqlx::postgres::PgConnectOptions::from_str(url).map(drop)
        };
        if let Err(error) = parsed {
            check.problem("tenants.database_url", format!("not usable: {error}"));
        }
    }
    if check.problems.len() != problems_before {
        return None;
    }
    Some(TenantsConfig {
        connect_path,
        database_url: Secret::new(url.clone()),
        record_on_request: raw.record_on_request,
    })
}

fn validate_shared_cache(
    raw: &RawSharedCache,
    check: &mut Checker,
    warnings: &mut Vec<String>,
) -> Option<SharedCacheConfig> {
    let problems_before = check.problems.len();
    if raw.key_prefix.is_empty() {
        check.problem(
            "shared_cache.key_prefix",
            "must not be empty (it keeps apps and environments sharing one Redis apart)",
        );
    } else if raw
        .key_prefix
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        check.problem(
            "shared_cache.key_prefix",
            format!(
                "must not contain whitespace or control characters: {:?}",
                raw.key_prefix
            ),
        );
    }
    let password_file =
        (!raw.redis_password_file.is_empty()).then(|| PathBuf::from(&raw.redis_password_file));
    let redis = if raw.redis_url.is_empty() {
        if password_file.is_some() {
            warnings.push(
                "shared_cache.redis_password_file: ignored while shared_cache.redis_url is empty"
                    .into(),
            );
        }
        None
    } else {
        let target = parse_redis_url(&raw.redis_url, password_file.clone());
        match target {
            Ok(target) => {
                match (&password_file, &target.password) {
                    (Some(_), Some(RedisPassword::Inline(_))) => check.problem(
                        "shared_cache.redis_password_file",
                        "set either a password in shared_cache.redis_url or shared_cache.redis_password_file, not both",
                    ),
                    (Some(path), _) => {
                        if let Err(error) = std::fs::metadata(path) {
                            warnings.push(format!(
                                "shared_cache.redis_password_file: cannot be read here ({error}); `run` needs it"
                            ));
                        }
                    }
                    (None, _) => {}
                }
                if !target.tls && !is_loopback_host_name(&target.host) {
                    warnings.push(format!(
                        "shared_cache.redis_url: redis:// to {} is unencrypted; the token is sealed, but the Redis password is not (use rediss://)",
                        target.address()
                    ));
                }
                Some(target)
            }
            Err(reason) => {
                check.problem("shared_cache.redis_url", reason);
                None
            }
        }
    };
    if check.problems.len() != problems_before {
        return None;
    }
    Some(SharedCacheConfig {
        redis,
        key_prefix: raw.key_prefix.clone(),
    })
}

/// `redis://[user][:password]@host[:port][/db]` or `rediss://…`: no query or fragment
/// (redis-rs reads options from them that this sidecar does not offer, such as skipping
/// certificate checks). A password in the URL and a password file exclude each other;
/// the URL's wins the parse, and the caller reports the conflict.
fn parse_redis_url(text: &str, password_file: Option<PathBuf>) -> Result<RedisTarget, String> {
    let shown = redact_url_password(text);
    let url =
        Url::parse(text).map_err(|_| format!("not a redis:// or rediss:// URL: {shown:?}"))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        _ => {
            return Err(format!(
                "must start with redis:// or rediss://, not {shown:?}"
            ))
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(format!("names no host: {shown:?}")),
    };
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "must not contain a query or fragment (TLS and the database are set by the scheme and the path): {shown:?}"
        ));
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        digits if digits.bytes().all(|b| b.is_ascii_digit()) && digits.len() <= 9 => digits
            .parse::<i64>()
            .map_err(|_| format!("the path is not a database number: {shown:?}"))?,
        _ => {
            return Err(format!(
                "the path must be a database number (\"/0\", \"/1\", …): {shown:?}"
            ))
        }
    };
    let decode = |text: &str| -> Result<String, String> {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|decoded| decoded.into_owned())
            .map_err(|_| "the user or password is not UTF-8 once percent-decoded".to_owned())
    };
    let username = match url.username() {
        "" => None,
        name => Some(decode(name)?),
    };
    let password = match url.password() {
        Some(password) => Some(RedisPassword::Inline(Secret::new(decode(password)?))),
        None => password_file.map(RedisPassword::File),
    };
    Ok(RedisTarget {
        tls,
        host,
        port: url.port().unwrap_or(REDIS_DEFAULT_PORT),
        db,
        username,
        password,
    })
}

fn is_loopback_host_name(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn validate_log(raw: &RawLog, check: &mut Checker) -> Option<LogConfig> {
    let format = match raw.format.as_str() {
        "json" => Some(LogFormat::Json),
        "pretty" => Some(LogFormat::Pretty),
        other => {
            check.problem(
                "log.format",
                format!("must be \"json\" or \"pretty\", not {other:?}"),
            );
            None
        }
    };
    if !is_level_filter(&raw.level) {
        check.problem(
            "log.level",
            format!(
                "not a level or filter (such as \"info\" or \"info,jtl_auth_sidecar=debug\"): {:?}",
                raw.level
            ),
        );
        return None;
    }
    Some(LogConfig {
        format: format?,
        level: raw.level.clone(),
    })
}
