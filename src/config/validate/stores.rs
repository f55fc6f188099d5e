//! `[tenants]` (the tenant store) and `[shared_cache]` (Redis).

use std::path::PathBuf;
use std::str::FromStr;

use url::Url;

use super::Checker;
use super::ingress::parse_public_path;
use crate::config::raw::{RawSharedCache, RawTenants, redact_url_password};
use crate::config::settings::{
    PublicPath, REDIS_DEFAULT_PORT, RedisPassword, RedisTarget, SharedCacheConfig, TenantsConfig,
};
use crate::secrets::Secret;

pub(super) fn validate_tenants(raw: &RawTenants, check: &mut Checker) -> Option<TenantsConfig> {
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

pub(super) fn validate_shared_cache(
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
            ));
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
            ));
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
