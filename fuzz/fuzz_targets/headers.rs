//! The header rules of SPEC §4 (src/proxy/headers.rs) and public-path matching
//! (src/proxy/paths.rs) on arbitrary header maps and paths.
//!
//! Input, by lines: the request path; extra identity header names (comma-separated,
//! added to the defaults); then `name:value` headers (lines that are no valid header are
//! skipped).
//!
//! Invariants:
//! - after `strip_folded`, no header remains whose name equals an identity header name
//!   case-insensitively with `_` read as `-`, and every other header is left as it was;
//! - after `strip_client_headers`, no identity header (however spelled), no routing
//!   override (`X-Original-URL`, `X-Rewrite-URL`, however spelled) and no `_` spelling of a
//!   framing, hop-by-hop or forwarding header remains, and every other header is left as
//!   it was;
//! - after `remove_hop_by_hop`, no fixed hop-by-hop header and no header that `Connection`
//!   named (except the proxy's own forwarding headers) remains, and every other header is
//!   left as it was;
//! - a path with a dot segment (raw or `%2e`, also with a `;` or `%3B` parameter), `%2F`,
//!   `%5C`, `%25`, `%00`, `%C0`, `%C1`, a `%` without two hex digits (`%u` escapes and
//!   malformed ones) or a backslash never matches a public path; a path that matches still matches once
//!   normalised (RFC 3986 §6.2.2: percent-encoded unreserved characters decoded, dot
//!   segments removed), so the backend reads it as the same public path.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use jtl_auth_sidecar::config::PublicPath;
use jtl_auth_sidecar::proxy::headers::{remove_hop_by_hop, strip_client_headers, strip_folded};
use jtl_auth_sidecar::proxy::paths::is_public;
use libfuzzer_sys::fuzz_target;

const IDENTITY: [&str; 3] = ["X-Tenant-ID", "X-User-ID", "X-Tenant-Slug"];
/// Whose `_` spellings never pass (folded).
const NO_UNDERSCORE: [&str; 26] = [
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "http2-settings",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-real-ip",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "front-end-https",
    "x-url-scheme",
    "x-forwarded-server",
    "x-original-host",
    "x-host",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-request-id",
    "x-original-url",
    "x-rewrite-url",
];
const ROUTING_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
];
/// What `Connection` may not name (SPEC §4).
const NOT_HOP_BY_HOP: [&str; 8] = [
    "host",
    "x-tenant-id",
    "content-length",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
];

fn fold(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

fn values(headers: &HeaderMap, name: &HeaderName) -> Vec<HeaderValue> {
    headers.get_all(name).iter().cloned().collect()
}

/// Every header of `before` is gone from `after` when `goes` says so, and otherwise
/// has all its values, in order; `after` has nothing `before` did not.
fn check_filtered(before: &HeaderMap, after: &HeaderMap, goes: impl Fn(&str) -> bool, rule: &str) {
    for name in before.keys() {
        if goes(name.as_str()) {
            assert!(!after.contains_key(name), "{rule}: {name} remains");
        } else {
            assert_eq!(
                values(before, name),
                values(after, name),
                "{rule}: {name} was changed"
            );
        }
    }
    assert!(
        after.keys().all(|name| before.contains_key(name)),
        "{rule}: a header appeared"
    );
}

/// Headers `Connection` names that must go.
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    let mut named = Vec::new();
    for value in headers.get_all("connection") {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim) {
            let token = token.to_ascii_lowercase();
            if token.is_empty() || ["keep-alive", "close", "upgrade"].contains(&token.as_str()) {
                continue;
            }
            if HeaderName::from_bytes(token.as_bytes()).is_ok()
                && !NOT_HOP_BY_HOP.contains(&token.as_str())
            {
                named.push(token);
            }
        }
    }
    named
}

fn has_dot_segment(path: &str) -> bool {
    path.to_ascii_lowercase().split('/').any(|segment| {
        let name = segment
            .split(';')
            .next()
            .unwrap_or_default()
            .split("%3b")
            .next()
            .unwrap_or_default()
            .replace("%2e", ".");
        name == "." || name == ".."
    })
}

fn is_ambiguous(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.contains('\\')
        || lower.contains("%2f")
        || lower.contains("%5c")
        || lower.contains("%25")
        || lower.contains("%00")
        || lower.contains("%c0")
        || lower.contains("%c1")
        || has_malformed_escape(path)
        || has_dot_segment(path)
}

/// A `%` not followed by two hex digits (`%u` escapes included).
fn has_malformed_escape(path: &str) -> bool {
    path.match_indices('%').any(|(at, _)| {
        !matches!(path.get(at + 1..at + 3), Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()))
    })
}

/// RFC 3986 §6.2.2.2 and §5.2.4: percent-encoded unreserved characters decoded, then dot
/// segments removed.
fn normalised(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    decoded.push(char::from(byte));
                    at += 3;
                    continue;
                }
            }
        }
        let c = path[at..].chars().next().unwrap_or_default();
        decoded.push(c);
        at += c.len_utf8().max(1);
    }
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    output.push("");
                }
            }
            ".." => {
                if output.len() > 1 {
                    output.pop();
                }
                if last {
                    output.push("");
                }
            }
            segment => output.push(segment),
        }
    }
    output.join("/")
}

fn matches(path: &str, pattern: &PublicPath) -> bool {
    match pattern {
        PublicPath::Exact(exact) => path == exact,
        PublicPath::Prefix(prefix) => path.starts_with(prefix.as_str()),
    }
}

fn check_path(path: &str, patterns: &[PublicPath]) {
    let public = is_public(path, patterns);
    if is_ambiguous(path) {
        assert!(!public, "an ambiguous path matched: {path:?}");
    }
    if public {
        let view = normalised(path);
        assert!(
            patterns
                .iter()
                .any(|pattern| matches(path, pattern) && matches(&view, pattern)),
            "{path:?} matched, but the backend reads it as {view:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let path = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let extra = lines.next().unwrap_or_default();

    let patterns = [
        PublicPath::Exact("/health".into()),
        PublicPath::Prefix("/public/".into()),
        PublicPath::Prefix("/static/assets/".into()),
    ];
    check_path(&path, &patterns);
    if let Ok(uri) = path.parse::<http::Uri>() {
        check_path(uri.path(), &patterns);
    }

    let mut identity: Vec<String> = IDENTITY.iter().map(|name| fold(name)).collect();
    for name in extra.split(|&b| b == b',') {
        if let Ok(name) = HeaderName::from_bytes(name) {
            identity.push(fold(name.as_str()));
        }
    }

    let mut headers = HeaderMap::new();
    for line in lines.take(64) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        headers.append(name, value);
    }

    let before = headers.clone();
    strip_folded(&mut headers, &identity);
    check_filtered(
        &before,
        &headers,
        |name| identity.contains(&fold(name)),
        "identity",
    );

    let before = headers.clone();
    strip_client_headers(&mut headers, &identity);
    check_filtered(
        &before,
        &headers,
        |name| {
            let folded = fold(name);
            identity.contains(&folded)
                || ROUTING_OVERRIDES.contains(&folded.as_str())
                || (name.contains('_') && NO_UNDERSCORE.contains(&folded.as_str()))
        },
        "client headers",
    );

    let before = headers.clone();
    let named = connection_named(&before);
    remove_hop_by_hop(&mut headers);
    check_filtered(
        &before,
        &headers,
        |name| HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name),
        "hop-by-hop",
    );
});
