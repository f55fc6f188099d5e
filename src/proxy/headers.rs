//! Header rules of SPEC §4: identity headers, routing overrides and `_` spellings of
//! framing and forwarding headers stripped, hop-by-hop headers removed, the request id
//! set, and which upgrades may pass (WebSocket only); and where the session token is read
//! from, for the ingress and connect-tenant alike.

use http::header::{
    AUTHORIZATION, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// The request id, logged by the sidecar and passed to the next hop.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// The settings of an `h2c` upgrade (RFC 7540 §3.2): meant for the next hop only.
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// The one upgrade the sidecar relays.
const WEBSOCKET: &str = "websocket";

/// Hop-by-hop headers (RFC 9110 §7.6.1, `HTTP2-Settings` of RFC 7540 §3.2.1, and the
/// legacy ones proxies still see).
const HOP_BY_HOP: [HeaderName; 10] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HTTP2_SETTINGS,
];

/// A header name as identity headers are compared: lowercase, `_` read as `-` (CGI,
/// WSGI, Rack and PHP turn both into the same variable).
pub fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Routing overrides: some backends (IIS's URL Rewrite, Symfony before 5, Zend, Laminas)
/// route a request by these instead of its path, so a request admitted on a public path
/// could be served by a protected route. Never forwarded, however spelled.
const ROUTING_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// Headers whose `_` spellings never pass (folded names). CGI, WSGI, Rack and PHP turn
/// `X_Forwarded_For` and `X-Forwarded-For` into the same variable, so a `_` copy would
/// stand in for (or beside) what the sidecar set, removed or checked under the `-` name:
/// hop-by-hop and framing headers, forwarding headers (those only a trusted proxy may
/// send included), the request id, routing overrides. Checked only for names with a `_`.
const NO_UNDERSCORE_SPELLING: [&str; 26] = [
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

/// Whether `name` (a header name, lowercase as `http` stores it) reads as `folded_name`
/// case-insensitively with `_` as `-`, compared in place.
pub fn folds_to(name: &str, folded_name: &str) -> bool {
    name.len() == folded_name.len()
        && name.bytes().zip(folded_name.bytes()).all(|(n, f)| {
            let n = if n == b'_' {
                b'-'
            } else {
                n.to_ascii_lowercase()
            };
            n == f
        })
}

/// Step 1 of every request, in one pass over the names: removes client copies of the
/// identity headers (`identity_folded`, however spelled), the routing overrides (however
/// spelled), and the `_` spellings of [`NO_UNDERSCORE_SPELLING`]. A request with no `_` in
/// any name and none of these headers costs a scan of its names and no allocation.
pub fn strip_client_headers(headers: &mut HeaderMap, identity_folded: &[String]) {
    remove_where(headers, |name, underscored| {
        is_one_of(name, underscored, identity_folded)
            || if underscored {
                NO_UNDERSCORE_SPELLING
                    .iter()
                    .any(|folded_name| folds_to(name, folded_name))
            } else {
                ROUTING_OVERRIDES.contains(&name)
            }
    });
}

/// Removes every header whose folded name is in `folded_names`, all occurrences.
pub fn strip_folded(headers: &mut HeaderMap, folded_names: &[String]) {
    remove_where(headers, |name, underscored| {
        is_one_of(name, underscored, folded_names)
    });
}

/// Whether `name` is one of `folded_names` however spelled; `underscored` says whether it
/// holds a `_` (only such a name needs folding: `http` stores names in lowercase).
fn is_one_of(name: &str, underscored: bool, folded_names: &[String]) -> bool {
    if underscored {
        folded_names
            .iter()
            .any(|folded_name| folds_to(name, folded_name))
    } else {
        folded_names.iter().any(|folded_name| folded_name == name)
    }
}

/// Removes every header for whose name `goes(name, name holds '_')` is true, all
/// occurrences; collects (and allocates) only when one goes.
fn remove_where(headers: &mut HeaderMap, goes: impl Fn(&str, bool) -> bool) {
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            goes(name, name.contains('_'))
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
/// is the sidecar's own, not the client's; `Upgrade` and `HTTP2-Settings` too, so an
/// upgrade reaches the next hop only when the caller puts it back on purpose, see
/// [`restore_websocket_upgrade`]).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Which of the fixed set are present, in one pass over the names: most messages carry
    // none of them, or only `Connection: keep-alive`.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(index) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << index;
        }
    }
    if present == 0 {
        return;
    }
    let mut named: Vec<HeaderName> = Vec::new();
    for token in connection_tokens(headers) {
        // The usual tokens name nothing beyond the fixed set.
        if token.eq_ignore_ascii_case("keep-alive")
            || token.eq_ignore_ascii_case("close")
            || token.eq_ignore_ascii_case("upgrade")
        {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.to_ascii_lowercase().as_bytes())
            && !NOT_HOP_BY_HOP.contains(&name.as_str())
        {
            named.push(name);
        }
    }
    for name in named {
        headers.remove(&name);
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
}

/// The tokens of every `Connection` field, trimmed, empty list elements skipped.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Whether a request asks for the one upgrade the sidecar relays: `Connection` holds
/// the `upgrade` token and [`upgrade_is_websocket`]. The caller checks that it is
/// HTTP/1.1 (RFC 9110 §7.8: upgrades are HTTP/1.1's). Anything else offered (`h2c`, a
/// list with `websocket` and more, an unknown protocol) is not an upgrade the sidecar
/// relays: that request goes on as a plain one, without its upgrade headers.
pub fn asks_for_websocket(headers: &HeaderMap) -> bool {
    connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade"))
        && upgrade_is_websocket(headers)
}

/// `Upgrade` is one field holding exactly one protocol, `websocket` (case-insensitive,
/// surrounding whitespace allowed). Asked of a request ([`asks_for_websocket`]) and of
/// a `101` from the backend, which must switch to what the client asked for.
pub fn upgrade_is_websocket(headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(UPGRADE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    value
        .to_str()
        .is_ok_and(|text| text.trim().eq_ignore_ascii_case(WEBSOCKET))
}

/// Puts `Connection: upgrade` and `Upgrade: websocket` back for the next hop of a
/// WebSocket handshake (after [`remove_hop_by_hop`] removed them with the rest).
pub fn restore_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(WEBSOCKET));
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

/// The session token from the first of `token_headers` present. `Authorization` counts
/// only with the `Bearer` scheme. The same header twice, or two different tokens, is an
/// error (which one would the client have meant?).
pub fn read_token<'h>(
    headers: &'h HeaderMap,
    token_headers: &[HeaderName],
) -> Result<Option<&'h str>, &'static str> {
    let mut found: Option<&str> = None;
    for name in token_headers {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else { continue };
        if values.next().is_some() {
            return Err("The request carries the token header more than once.");
        }
        let Ok(text) = value.to_str() else {
            return Err("The token header is not valid text.");
        };
        let token = if *name == AUTHORIZATION {
            match bearer_token(text) {
                Some(token) => token,
                None => continue,
            }
        } else {
            text.trim()
        };
        if token.is_empty() {
            return Err("The token header is empty.");
        }
        match found {
            None => found = Some(token),
            Some(previous) if previous == token => {}
            Some(_) => return Err("The request carries two different tokens."),
        }
    }
    Ok(found)
}

/// The credentials of `Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' ').trim_end())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn names() -> Vec<HeaderName> {
        vec![AUTHORIZATION, HeaderName::from_static("x-session-token")]
    }

    #[test]
    fn token_comes_from_the_first_header_present() {
        assert_eq!(
            read_token(&map(&[("authorization", "Bearer abc")]), &names()),
            Ok(Some("abc"))
        );
        assert_eq!(
            read_token(&map(&[("authorization", "bearer  abc")]), &names()),
            Ok(Some("abc"))
        );
        assert_eq!(
            read_token(&map(&[("x-session-token", "abc")]), &names()),
            Ok(Some("abc"))
        );
        assert_eq!(read_token(&map(&[]), &names()), Ok(None));
    }

    #[test]
    fn authorization_without_bearer_is_not_a_token() {
        assert_eq!(
            read_token(&map(&[("authorization", "Basic eDp5")]), &names()),
            Ok(None)
        );
        assert_eq!(
            read_token(
                &map(&[("authorization", "Basic eDp5"), ("x-session-token", "t")]),
                &names()
            ),
            Ok(Some("t"))
        );
    }

    #[test]
    fn duplicates_and_conflicts_are_refused() {
        assert!(
            read_token(
                &map(&[("authorization", "Bearer a"), ("authorization", "Bearer a")]),
                &names()
            )
            .is_err()
        );
        assert!(
            read_token(
                &map(&[("authorization", "Bearer a"), ("x-session-token", "b")]),
                &names()
            )
            .is_err()
        );
        assert_eq!(
            read_token(
                &map(&[("authorization", "Bearer a"), ("x-session-token", "a")]),
                &names()
            ),
            Ok(Some("a"))
        );
        assert!(read_token(&map(&[("authorization", "Bearer ")]), &names()).is_err());
    }

    /// A header map of these pairs, in order (the ingress tests use it too).
    pub(crate) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
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
        remove_hop_by_hop(&mut headers);
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
    fn underscore_spellings_of_framing_forwarding_and_hop_by_hop_headers_go() {
        let underscored = [
            "transfer_encoding",
            "content_length",
            "x_forwarded_for",
            "x_forwarded_host",
            "x_forwarded_proto",
            "x_forwarded_prefix",
            "x_forwarded_port",
            "x_real_ip",
            "x_forwarded_ssl",
            "X_Forwarded_Scheme",
            "front_end_https",
            "x_url_scheme",
            "x_forwarded_server",
            "x_original_host",
            "x_host",
            "true_client_ip",
            "x_client_ip",
            "x_cluster_client_ip",
            "keep_alive",
            "proxy_connection",
            "proxy_authenticate",
            "proxy_authorization",
            "http2_settings",
            "x_request_id",
            "x_original_url",
            "x_rewrite_url",
            "x-forwarded_for",
        ];
        let mut pairs: Vec<(&str, &str)> = underscored.iter().map(|name| (*name, "1")).collect();
        pairs.extend([
            ("x-forwarded-proto", "http"),
            ("content-length", "0"),
            ("x_other", "1"),
            ("x_forwarded_forx", "1"),
        ]);
        let mut headers = map(&pairs);
        strip_client_headers(&mut headers, &[]);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "content-length",
                "x-forwarded-proto",
                "x_forwarded_forx",
                "x_other"
            ]
        );
    }

    #[test]
    fn routing_overrides_go_however_spelled() {
        let mut headers = map(&[
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x_original_url", "/admin"),
            ("X_Rewrite-URL", "/admin"),
            ("x-original-urls", "keep"),
        ]);
        strip_client_headers(&mut headers, &[]);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-original-urls"], "keep");
    }

    #[test]
    fn the_client_header_strip_removes_identity_headers_however_spelled() {
        let mut headers = map(&[
            ("x-tenant-id", "a"),
            ("X_Tenant_ID", "b"),
            ("x_tenant-id", "c"),
            ("x-tenant-idx", "keep"),
            ("x-forwarded-for", "kept here; set by trust later"),
        ]);
        strip_client_headers(&mut headers, &[folded("X-Tenant-ID")]);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers["x-tenant-idx"], "keep");
    }

    #[test]
    fn folding_compares_in_place() {
        assert!(folds_to("x_forwarded_for", "x-forwarded-for"));
        assert!(folds_to("x-forwarded-for", "x-forwarded-for"));
        assert!(!folds_to("x_forwarded_fo", "x-forwarded-for"));
        assert!(!folds_to("x.forwarded.for", "x-forwarded-for"));
    }

    #[test]
    fn upgrade_headers_and_http2_settings_are_hop_by_hop() {
        let mut headers = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("x-other", "stays"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers["x-other"], "stays");
    }

    #[test]
    fn only_websocket_alone_is_an_upgrade_the_sidecar_relays() {
        for (connection, upgrade) in [
            ("Upgrade", "websocket"),
            ("keep-alive, Upgrade", "WebSocket"),
            ("upgrade", " websocket "),
        ] {
            let headers = map(&[("connection", connection), ("upgrade", upgrade)]);
            assert!(asks_for_websocket(&headers), "{connection} / {upgrade}");
        }
        for pairs in [
            &[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "h2c"),
            ][..],
            &[("connection", "Upgrade"), ("upgrade", "websocket, h2c")],
            &[("connection", "Upgrade"), ("upgrade", "h2c, websocket")],
            &[("connection", "Upgrade"), ("upgrade", "websocket,")],
            &[("connection", "Upgrade"), ("upgrade", "websocket/13")],
            &[("connection", "Upgrade"), ("upgrade", "foo")],
            &[("connection", "Upgrade"), ("upgrade", "")],
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("upgrade", "h2c"),
            ],
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("upgrade", "websocket"),
            ],
            &[("connection", "keep-alive"), ("upgrade", "websocket")],
            &[("upgrade", "websocket")],
            &[("connection", "Upgrade")],
        ] {
            assert!(!asks_for_websocket(&map(pairs)), "{pairs:?}");
        }
    }

    #[test]
    fn a_websocket_upgrade_is_put_back_alone() {
        let mut headers = map(&[
            ("connection", "keep-alive, Upgrade, HTTP2-Settings"),
            ("upgrade", "WebSocket"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
        ]);
        remove_hop_by_hop(&mut headers);
        restore_websocket_upgrade(&mut headers);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
    }
}
