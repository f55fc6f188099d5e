//! Header rules of SPEC §4: identity headers stripped however they are spelled,
//! hop-by-hop headers removed, the request id set.

use http::header::{
    CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The request id, logged by the sidecar and passed to the next hop.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the legacy ones proxies still see).
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// A header name as identity headers are compared: lowercase, `_` read as `-` (CGI,
/// WSGI, Rack and PHP turn both into the same variable).
pub fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Removes the `_` spellings of headers the proxy sets itself (`X_Forwarded_For`...),
/// which CGI-style backends would read as the real ones.
pub fn strip_underscore_variants(headers: &mut HeaderMap, folded_names: &[String]) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().contains('_') && folded_names.contains(&folded(name.as_str())))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Removes every header whose folded name is in `folded_names`, all occurrences.
pub fn strip_folded(headers: &mut HeaderMap, folded_names: &[String]) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            if name.contains('_') {
                folded_names.iter().any(|f| *f == folded(name))
            } else {
                folded_names.iter().any(|f| f == name)
            }
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(&name);
    }
}

/// Headers a client's `Connection` may not name: dropping them would change the
/// message (`Content-Length`), the proxy's own forwarding headers, or the tenant an
/// egress call was checked for (`X-Tenant-ID`).
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

/// Removes the headers named in `Connection` and the fixed hop-by-hop set (`TE`
/// included, `trailers` or not: SPEC §4 lists it, and the next hop's HTTP/1.1 connection
/// is the sidecar's own, not the client's). Returns the `Upgrade` value when the message asked for an upgrade,
/// so the caller can carry it to the next hop on purpose.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    // Which of the fixed set are present, in one pass over the names: most messages carry
    // none of them, or only `Connection: keep-alive`.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << index;
        }
    }
    if present == 0 {
        return None;
    }
    let mut named: Vec<HeaderName> = Vec::new();
    let mut wants_upgrade = false;
    for value in headers.get_all(CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("upgrade") {
                wants_upgrade = true;
            }
            // The usual tokens name nothing beyond the fixed set.
            if token.eq_ignore_ascii_case("keep-alive") || token.eq_ignore_ascii_case("close") {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.to_ascii_lowercase().as_bytes()) {
                if !NOT_HOP_BY_HOP.contains(&name.as_str()) {
                    named.push(name);
                }
            }
        }
    }
    let upgrade = if wants_upgrade {
        headers.get(UPGRADE).cloned()
    } else {
        None
    };
    for name in named {
        headers.remove(&name);
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
    upgrade
}

/// Puts `Connection: upgrade` and `Upgrade` back for the next hop of an upgrade.
pub fn restore_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade);
    headers.remove(TRANSFER_ENCODING);
}

/// `X-Request-ID` from the client, or a new one; returned for the log line.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers
        .get(&X_REQUEST_ID)
        .filter(|id| !id.is_empty() && id.to_str().is_ok())
    {
        return id.clone();
    }
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    // A hyphenated UUID is always a valid header value.
    let value = HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static(""));
    headers.insert(X_REQUEST_ID, value.clone());
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn identity_headers_go_however_spelled() {
        let mut headers = map(&[
            ("x-tenant-id", "a"),
            ("X_Tenant_ID", "b"),
            ("x-tenant-id", "c"),
            ("x_tenant-id", "d"),
            ("x-tenant-idx", "keep"),
        ]);
        strip_folded(&mut headers, &[folded("X-Tenant-ID")]);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-tenant-idx"], "keep");
    }

    #[test]
    fn connection_named_and_fixed_hop_by_hop_headers_go() {
        let mut headers = map(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers, gzip"),
            ("proxy-authorization", "Basic x"),
            ("x-other", "stays"),
        ]);
        assert_eq!(remove_hop_by_hop(&mut headers), None);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-other"], "stays");
    }

    #[test]
    fn connection_cannot_name_what_the_proxy_forwards() {
        let mut headers = map(&[
            (
                "connection",
                "Host, Content-Length, X-Request-ID, X-Forwarded-For",
            ),
            ("host", "a"),
            ("content-length", "0"),
            ("x-request-id", "r"),
            ("x-forwarded-for", "1.2.3.4"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 4);
    }

    #[test]
    fn underscore_spellings_of_forwarding_headers_go() {
        let mut headers = map(&[
            ("x_forwarded_proto", "https"),
            ("x-forwarded-proto", "http"),
            ("x_other", "1"),
        ]);
        strip_underscore_variants(&mut headers, &[folded("X-Forwarded-Proto")]);
        assert_eq!(headers.len(), 2);
        assert!(headers.contains_key("x-forwarded-proto") && headers.contains_key("x_other"));
    }

    #[test]
    fn an_upgrade_is_reported() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(remove_hop_by_hop(&mut headers).unwrap(), "websocket");
        assert!(headers.is_empty());
    }
}
