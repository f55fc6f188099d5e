//! The rule for the endpoints meant for the pod's own containers only (the egress listener
//! and the admin's `POST /drain`): the request must name this machine, and must not come
//! from a browser.
//!
//! Listening on loopback is not enough. A page the user has open can make the browser send
//! requests to `127.0.0.1`: straight (its `fetch` carries `Origin`), or through DNS
//! rebinding (the page's own name, re-resolved to `127.0.0.1`, so the `Host` is still that
//! name). Relays and meshes in the pod reach loopback too. So a `Host` (HTTP/2:
//! `:authority`) that is not an IP literal, `localhost` or a name the operator allowed is
//! refused with `421`, and any request with `Origin` or a `Sec-Fetch-*` header with `403`,
//! before anything else. A browser sends no `Origin` on a navigation, an `<img>` or a
//! prefetch, but every current browser sends the `Sec-Fetch-*` headers on every request,
//! and no page script can set them (they are forbidden request headers).

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, HeaderName, Response, Uri, Version};

use super::ProxyBody;
use super::errors::{ErrorCode, bad_host, error_response};

/// Why a request was refused; its answer, outcome and (for logs) reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Missing, doubled or malformed host (`400`, as on ingress).
    BadHost(&'static str),
    /// A host that does not name this machine (`421`).
    Misdirected,
    /// A browser's request (`403`).
    FromBrowser,
}

const MISDIRECTED: &str = "This endpoint answers callers on the same machine only: the Host must be an IP address, localhost or a name in egress.allowed_hosts.";
const FROM_BROWSER: &str =
    "This endpoint does not answer browsers: the request carries an Origin or Sec-Fetch-* header.";

/// Headers only a browser sends (Fetch Metadata); a program's HTTP client sends none.
const FROM_BROWSERS_ONLY: [HeaderName; 5] = [
    ORIGIN,
    HeaderName::from_static("sec-fetch-site"),
    HeaderName::from_static("sec-fetch-mode"),
    HeaderName::from_static("sec-fetch-dest"),
    HeaderName::from_static("sec-fetch-user"),
];

impl Refusal {
    /// The outcome for the log line and the metrics.
    pub fn outcome(self) -> &'static str {
        match self {
            Refusal::BadHost(_) => "invalid_request",
            Refusal::Misdirected => "misdirected_request",
            Refusal::FromBrowser => "forbidden",
        }
    }

    /// The sentence of the answer's `error_description`.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::BadHost(description) => description,
            Refusal::Misdirected => MISDIRECTED,
            Refusal::FromBrowser => FROM_BROWSER,
        }
    }

    pub fn response(self) -> Response<ProxyBody> {
        let code = match self {
            Refusal::BadHost(_) => ErrorCode::InvalidRequest,
            Refusal::Misdirected => ErrorCode::MisdirectedRequest,
            Refusal::FromBrowser => ErrorCode::Forbidden,
        };
        error_response(code, self.reason())
    }
}

/// `Err` when the request does not come from a program on this machine (see the module
/// comment). `allowed_hosts` are lowercase host names, compared without regard to case
/// and port. Allocates nothing.
pub fn refuse_foreign_caller(
    version: Version,
    headers: &HeaderMap,
    uri: &Uri,
    allowed_hosts: &[String],
) -> Result<(), Refusal> {
    if let Some(description) = bad_host(version, headers, uri) {
        return Err(Refusal::BadHost(description));
    }
    // Every name the request carries must be local: `Host`, and the target's authority
    // (HTTP/2's `:authority`, or an HTTP/1 absolute-form target, which overrides `Host`).
    let host = headers.get(HOST).map(|value| value.as_bytes());
    let authority = uri.authority().map(|a| a.as_str().as_bytes());
    for name in [host, authority].into_iter().flatten() {
        if !is_local_host(name, allowed_hosts) {
            return Err(Refusal::Misdirected);
        }
    }
    if FROM_BROWSERS_ONLY
        .iter()
        .any(|name| headers.contains_key(name))
    {
        return Err(Refusal::FromBrowser);
    }
    Ok(())
}

/// `host[:port]` where host is an IPv4 literal, a bracketed IPv6 literal, `localhost` (any
/// case) or one of `allowed_hosts`; the port, when there, is digits.
pub fn is_local_host(value: &[u8], allowed_hosts: &[String]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    if let Some(bracketed) = value.strip_prefix('[') {
        return bracketed.split_once(']').is_some_and(|(inside, rest)| {
            inside.parse::<std::net::Ipv6Addr>().is_ok() && is_port_suffix(rest)
        });
    }
    let (host, rest) = value.split_at(value.find(':').unwrap_or(value.len()));
    is_port_suffix(rest)
        && (host.eq_ignore_ascii_case("localhost")
            || host.parse::<std::net::Ipv4Addr>().is_ok()
            || allowed_hosts
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(host)))
}

/// Nothing, or `:` and digits (RFC 3986 allows an empty port).
fn is_port_suffix(text: &str) -> bool {
    text.is_empty()
        || text
            .strip_prefix(':')
            .is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn refused(version: Version, headers: &[(&str, &str)], uri: &str) -> Option<Refusal> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let allowed = ["backend.internal".to_owned()];
        refuse_foreign_caller(version, &map, &uri.parse().unwrap(), &allowed).err()
    }

    #[test]
    fn ip_literals_localhost_and_allowed_names_are_local_with_or_without_port() {
        let allowed = ["backend.internal".to_owned()];
        for local in [
            "127.0.0.1",
            "127.0.0.1:8081",
            "10.1.2.3:9090",
            "[::1]",
            "[::1]:8081",
            "[fe80::1]:80",
            "localhost",
            "localhost:8081",
            "LocalHost:8081",
            "backend.internal",
            "Backend.Internal:3000",
        ] {
            assert!(is_local_host(local.as_bytes(), &allowed), "{local}");
        }
    }

    #[test]
    fn other_names_and_malformed_hosts_are_not_local() {
        let allowed = ["backend.internal".to_owned()];
        for foreign in [
            "",
            "evil.example",
            "evil.example:8081",
            "localhost.evil.example",
            "localhost.",
            "127.0.0.1.nip.io",
            "127.1",
            "::1",
            "[::1",
            "[::1]x",
            "[::1]:80:80",
            "[evil.example]:80",
            "127.0.0.1:80x",
            "backend.internal.evil.example",
            "internal",
        ] {
            assert!(!is_local_host(foreign.as_bytes(), &allowed), "{foreign}");
        }
        assert!(!is_local_host(b"local\xffhost", &allowed));
    }

    #[test]
    fn a_foreign_host_is_misdirected_and_an_origin_is_forbidden() {
        let h1 = Version::HTTP_11;
        assert_eq!(refused(h1, &[("host", "127.0.0.1:8081")], "/x"), None);
        assert_eq!(
            refused(h1, &[("host", "evil.example")], "/x"),
            Some(Refusal::Misdirected)
        );
        // An absolute-form target names the host too.
        assert_eq!(
            refused(h1, &[("host", "localhost")], "http://evil.example/x"),
            Some(Refusal::Misdirected)
        );
        assert_eq!(
            refused(
                h1,
                &[("host", "localhost:8081"), ("origin", "http://localhost")],
                "/x"
            ),
            Some(Refusal::FromBrowser)
        );
        assert!(matches!(refused(h1, &[], "/x"), Some(Refusal::BadHost(_))));
        let h2 = Version::HTTP_2;
        assert_eq!(refused(h2, &[], "http://[::1]:8081/x"), None);
        assert_eq!(
            refused(h2, &[], "http://evil.example:8081/x"),
            Some(Refusal::Misdirected)
        );
    }

    #[test]
    fn a_browser_request_without_origin_is_forbidden_by_its_fetch_metadata() {
        let h1 = Version::HTTP_11;
        for header in [
            "sec-fetch-site",
            "sec-fetch-mode",
            "sec-fetch-dest",
            "sec-fetch-user",
            "Sec-Fetch-Site",
        ] {
            assert_eq!(
                refused(h1, &[("host", "127.0.0.1:8081"), (header, "?1")], "/x"),
                Some(Refusal::FromBrowser),
                "{header}"
            );
        }
        // A navigation through DNS rebinding: an allowed name, no Origin.
        let navigation = [
            ("host", "backend.internal"),
            ("sec-fetch-site", "none"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-dest", "document"),
            ("sec-fetch-user", "?1"),
        ];
        assert_eq!(refused(h1, &navigation, "/x"), Some(Refusal::FromBrowser));
        // Other `sec-` headers are no browser's mark.
        assert_eq!(
            refused(h1, &[("host", "localhost"), ("sec-fetch", "x")], "/x"),
            None
        );
    }

    #[test]
    fn refusals_answer_with_their_status_and_code() {
        assert_eq!(Refusal::Misdirected.response().status(), 421);
        assert_eq!(Refusal::FromBrowser.response().status(), 403);
        assert_eq!(Refusal::BadHost("x").response().status(), 400);
        assert_eq!(Refusal::Misdirected.outcome(), "misdirected_request");
        assert_eq!(Refusal::FromBrowser.outcome(), "forbidden");
    }
}
