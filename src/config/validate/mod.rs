//! Validation: each section's raw values checked and turned into typed settings, every
//! problem collected (one file per group of sections), and the checks across sections.

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use url::Url;

use super::ConfigProblem;
use super::raw::{RawAdmin, RawConfig, RawLog, RawTracing, strip_userinfo};
use super::settings::{AdminConfig, Config, LogConfig, LogFormat, ServerConfig, TracingConfig};

mod ingress;
mod jtl;
mod session;
mod stores;

use ingress::{validate_egress, validate_ingress};
use jtl::{validate_environment, validate_jtl};
use session::{validate_session, with_profiles};
use stores::{validate_shared_cache, validate_tenants};

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
                format!(
                    "{text:?} contains '_'; use '-' (many servers drop or rewrite headers with '_')"
                ),
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

/// Validates every section; the keys whose values were derived are pushed onto `derived`.
pub(super) fn validate(
    raw: &RawConfig,
    problems: &mut Vec<ConfigProblem>,
    warnings: &mut Vec<String>,
    derived: &mut Vec<&'static str>,
) -> Option<Config> {
    let mut check = Checker { problems };
    let ingress = validate_ingress(&raw.ingress, &mut check);
    let egress = validate_egress(&raw.egress, &mut check, warnings);
    let environment = validate_environment(&raw.jtl.environment, &mut check);
    let session = validate_session(&raw.session, environment, &mut check);
    if session
        .as_ref()
        .is_some_and(|(_, rules)| rules.issuer_derived)
    {
        derived.push("session.issuer");
    }
    let jtl = validate_jtl(
        &raw.jtl,
        environment,
        session.as_ref(),
        &mut check,
        warnings,
        derived,
    );
    let session = match (session, &jtl) {
        (Some((session, rules)), Some((_, key_sets))) => {
            let session = with_profiles(session, rules, key_sets);
            // Every kind the flow accepts has its key set, or nothing is verified by it.
            if session.profiles.len() == session.flow.kinds().len() {
                Some(session)
            } else {
                check.problem("session.flow", "a key set URL could not be derived");
                None
            }
        }
        _ => None,
    };
    let jtl = jtl.map(|(jtl, _)| jtl);
    let tenants = validate_tenants(&raw.tenants, &mut check);
    let shared_cache = validate_shared_cache(&raw.shared_cache, &mut check, warnings);
    let admin = validate_admin(&raw.admin, &mut check);
    let log = validate_log(&raw.log, &mut check);
    let tracing = validate_tracing(&raw.tracing, &mut check);
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
        http2_idle_timeout: check.seconds(
            "server.http2_idle_timeout_s",
            raw.server.http2_idle_timeout_s,
            1,
            86_400,
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
        tracing: tracing?,
        server,
    })
}

fn validate_admin(raw: &RawAdmin, check: &mut Checker) -> Option<AdminConfig> {
    let listen = check.socket_addr("admin.listen", &raw.listen);
    let drain_token_file = match raw.drain_token_file.as_str() {
        "" => None,
        text => {
            // Written at start by rename: it must name a file, not a directory.
            let path = std::path::PathBuf::from(text);
            if text.ends_with('/') || path.file_name().is_none() {
                check.problem(
                    "admin.drain_token_file",
                    format!(
                        "not a file path (such as \"/var/run/jtl-sidecar/drain-token\"): {text:?}"
                    ),
                );
                return None;
            }
            Some(path)
        }
    };
    Some(AdminConfig {
        listen: listen?,
        drain_token_file,
    })
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

fn validate_tracing(raw: &RawTracing, check: &mut Checker) -> Option<TracingConfig> {
    let otlp_endpoint = match raw.otlp_endpoint.as_str() {
        "" => None,
        text => match Url::parse(text) {
            Ok(url)
                if matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.username().is_empty()
                    && url.password().is_none() =>
            {
                Some(with_traces_path(url))
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                check.problem(
                    "tracing.otlp_endpoint",
                    "must not hold credentials; give the collector's headers in OTEL_EXPORTER_OTLP_HEADERS",
                );
                return None;
            }
            _ => {
                check.problem(
                    "tracing.otlp_endpoint",
                    format!(
                        "not an http(s) URL of an OTLP collector (such as \"http://otel-collector:4318\"): {:?}",
                        strip_userinfo(text)
                    ),
                );
                return None;
            }
        },
    };
    if !(0.0..=1.0).contains(&raw.sample_ratio) {
        check.problem(
            "tracing.sample_ratio",
            format!("must be from 0 to 1, not {}", raw.sample_ratio),
        );
        return None;
    }
    let service_name = raw.service_name.trim();
    if service_name.is_empty() || service_name.len() > 255 {
        check.problem(
            "tracing.service_name",
            "must be a name of 1 to 255 characters",
        );
        return None;
    }
    Some(TracingConfig {
        otlp_endpoint,
        sample_ratio: raw.sample_ratio,
        service_name: service_name.to_owned(),
    })
}

/// A collector's base URL (`http://collector:4318`) gets OTLP's path for traces; a URL
/// with a path of its own is taken as it is.
fn with_traces_path(mut url: Url) -> Url {
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/v1/traces");
    }
    url
}
