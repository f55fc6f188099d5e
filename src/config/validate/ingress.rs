//! `[ingress]` (with its headers and public paths) and `[egress]`.

use http::HeaderName;
use url::Url;

use super::{Checker, RESERVED_HEADERS, folded, is_loopback};
use crate::config::cidr::Cidr;
use crate::config::printable_key;
use crate::config::raw::{RawEgress, RawIngress};
use crate::config::settings::{
    ClaimHeader, EgressConfig, IdentityHeaders, IngressConfig, PublicPath,
};

pub(super) fn validate_ingress(raw: &RawIngress, check: &mut Checker) -> Option<IngressConfig> {
    let problems_before = check.problems.len();
    let listen = check.socket_addr("ingress.listen", &raw.listen);
    let upstream = check.http_url("ingress.upstream", &raw.upstream);
    if let Some(upstream) = &upstream
        && upstream.query().is_some()
    {
        check.problem("ingress.upstream", "must not contain a query");
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

    let mut trusted_proxies = Vec::new();
    for (index, text) in raw.trusted_proxies.iter().enumerate() {
        let key = format!("ingress.trusted_proxies[{index}]");
        match text.parse::<Cidr>() {
            Ok(cidr) => trusted_proxies.push(cidr),
            Err(not_a_cidr) => check.problem(&key, format!("{not_a_cidr}: {text:?}")),
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
        trusted_proxies,
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
pub(super) fn parse_public_path(pattern: &str) -> Result<PublicPath, String> {
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

pub(super) fn validate_egress(
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
    if let Some(addr) = listen
        && !is_loopback(&addr)
    {
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
    let max_retry_body_bytes = check.range(
        "egress.max_retry_body_bytes",
        raw.max_retry_body_bytes,
        0,
        64 * 1024 * 1024,
    );
    let mut allowed_hosts = Vec::new();
    for (index, name) in raw.allowed_hosts.iter().enumerate() {
        if is_host_name(name) {
            // Lowercase once here, so the per-request comparison allocates nothing.
            allowed_hosts.push(name.to_ascii_lowercase());
        } else {
            check.problem(
                &format!("egress.allowed_hosts[{index}]"),
                format!("not a host name such as \"backend.internal\" (no scheme, port or path): {name:?}"),
            );
        }
    }
    let request_timeout = check.millis(
        "egress.request_timeout_ms",
        raw.request_timeout_ms,
        1,
        3_600_000,
    );
    let exchanged_tokens_max = check.range(
        "egress.exchanged_tokens_max",
        raw.exchanged_tokens_max,
        1,
        10_000_000,
    );
    let rate_limit_max_wait = check.millis(
        "egress.rate_limit_max_wait_ms",
        raw.rate_limit_max_wait_ms,
        0,
        3_600_000,
    );
    if check.problems.len() != problems_before {
        return None;
    }
    Some(EgressConfig {
        listen,
        allow_non_loopback: raw.allow_non_loopback,
        retry_on_401: raw.retry_on_401,
        max_retry_body_bytes,
        allowed_hosts,
        request_timeout,
        token_exchange: raw.token_exchange,
        exchanged_tokens_max,
        rate_limits: raw.rate_limits,
        rate_limit_max_wait,
    })
}

/// A DNS name: dot-separated labels of letters, digits, `-` (not at either end) and `_`
/// (container runtimes name services with it), at most 63 characters each and 253 in all.
pub(super) fn is_host_name(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}
