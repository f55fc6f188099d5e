//! The forwarding headers the backend gets (SPEC §4 step 6, §16): set from what the
//! sidecar saw, or, from a proxy in `ingress.trusted_proxies`, kept as that proxy wrote
//! them. A client that reaches the sidecar directly cannot claim `https`, another host,
//! another client address or a path prefix.

use std::net::IpAddr;

use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::Peer;
use crate::config::Cidr;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What only a proxy in front can know, and the sidecar does not set: from any other
/// peer these are the client's own claims, so they go. Backends build redirects and links
/// from them (Rack and Rails read `X-Forwarded-Ssl` and `X-Forwarded-Scheme` to decide a
/// request was `https`; others read `Front-End-Https` or `X-Url-Scheme`, and the host from
/// `X-Forwarded-Server`, `X-Original-Host` or `X-Host`), or log and rate-limit by a client
/// address (`X-Real-IP`, `True-Client-IP`, `X-Client-IP`, `X-Cluster-Client-IP`).
/// Sorted (kept so by a test), and at most 16: a bit set marks those present.
const SAID_BY_PROXIES: [&str; 14] = [
    "forwarded",
    "front-end-https",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-host",
    "x-original-host",
    "x-real-ip",
    "x-url-scheme",
];

/// Whether a peer is one of the proxies in front. An empty list trusts no one, at the
/// cost of one length check.
pub fn is_trusted(trusted_proxies: &[Cidr], ip: IpAddr) -> bool {
    trusted_proxies.iter().any(|cidr| cidr.contains(ip))
}

/// `Host` kept (taken from `:authority` for HTTP/2 clients, which send no `Host`); then,
/// from a trusted proxy: `X-Forwarded-For` appended to, `X-Forwarded-Proto` and
/// `X-Forwarded-Host` kept (set as below when it sent none), and the headers of
/// [`SAID_BY_PROXIES`] kept. From any other peer:
/// `X-Forwarded-For` is the peer alone, `X-Forwarded-Proto` is `http` (the listener's),
/// `X-Forwarded-Host` is `Host`, and the others are removed.
pub fn set_forwarding_headers(
    headers: &mut HeaderMap,
    uri: &http::Uri,
    peer: &Peer,
    trusted: bool,
) {
    if !headers.contains_key(HOST)
        && let Some(authority) = uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(HOST, authority);
    }
    if trusted {
        append_forwarded_for(headers, peer);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            set_forwarded_host(headers);
        }
        return;
    }
    remove_proxy_claims(headers);
    headers.insert(X_FORWARDED_FOR, peer.forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    set_forwarded_host(headers);
}

/// Removes every header of [`SAID_BY_PROXIES`]: one pass over the request's names, and no
/// removal (nor allocation) when none is there, as in most requests.
fn remove_proxy_claims(headers: &mut HeaderMap) {
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(index) = proxy_claim_index(name.as_str()) {
            present |= 1 << index;
        }
    }
    for (index, name) in SAID_BY_PROXIES.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(*name);
        }
    }
}

/// Where `name` stands in [`SAID_BY_PROXIES`]. Most names are passed over on their first
/// byte, the rest compared by length before their bytes: this runs for every header of
/// every request from an untrusted peer (callgrind, `benches/callgrind.sh`: the whole of
/// `set_forwarding_headers` 1 414 instructions a request this way, 2 508 with a binary
/// search of the list).
fn proxy_claim_index(name: &str) -> Option<usize> {
    if !matches!(name.as_bytes().first(), Some(b'f' | b't' | b'x')) {
        return None;
    }
    SAID_BY_PROXIES
        .iter()
        .position(|claim| claim.len() == name.len() && *claim == name)
}

/// The trusted proxy's chain with the peer appended, as one field.
fn append_forwarded_for(headers: &mut HeaderMap, peer: &Peer) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, peer.forwarded_for.clone());
        return;
    }
    let mut chain: Vec<&[u8]> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    chain.push(peer.forwarded_for.as_bytes());
    let joined = HeaderValue::from_bytes(&chain.join(&b", "[..]));
    headers.remove(&X_FORWARDED_FOR);
    if let Ok(value) = joined {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// `X-Forwarded-Host` is `Host`, or absent when there is none.
fn set_forwarded_host(headers: &mut HeaderMap) {
    match headers.get(HOST).cloned() {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::proxy::headers::tests::map as headers;

    fn peer() -> Peer {
        Peer::new("127.0.0.9:5000".parse().unwrap())
    }

    fn claimed() -> HeaderMap {
        headers(&[
            ("host", "app.example"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "shop.example"),
            ("forwarded", "for=10.0.0.1;proto=https"),
            ("x-forwarded-prefix", "/shop"),
            ("x-forwarded-port", "443"),
            ("x-real-ip", "10.0.0.1"),
            ("x-forwarded-ssl", "on"),
            ("x-forwarded-scheme", "https"),
            ("front-end-https", "on"),
            ("x-url-scheme", "https"),
            ("x-forwarded-server", "shop.example"),
            ("x-original-host", "shop.example"),
            ("x-host", "shop.example"),
            ("true-client-ip", "10.0.0.1"),
            ("x-client-ip", "10.0.0.1"),
            ("x-cluster-client-ip", "10.0.0.1"),
        ])
    }

    #[test]
    fn the_proxy_claims_are_sorted_and_fit_the_bit_set() {
        assert!(SAID_BY_PROXIES.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(SAID_BY_PROXIES.len() <= u16::BITS as usize);
        for name in SAID_BY_PROXIES {
            assert_eq!(HeaderName::from_static(name).as_str(), name);
        }
    }

    #[test]
    fn from_a_trusted_proxy_its_headers_are_kept_and_the_chain_appended() {
        let mut map = claimed();
        set_forwarding_headers(&mut map, &"/x".parse().unwrap(), &peer(), true);
        assert_eq!(map["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.9");
        assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "shop.example");
        assert_eq!(map["forwarded"], "for=10.0.0.1;proto=https");
        assert_eq!(map["x-forwarded-prefix"], "/shop");
        assert_eq!(map["x-forwarded-port"], "443");
        assert_eq!(map["x-real-ip"], "10.0.0.1");
        assert_eq!(map["x-forwarded-ssl"], "on");
        assert_eq!(map["x-forwarded-scheme"], "https");
        assert_eq!(map["x-cluster-client-ip"], "10.0.0.1");
        assert_eq!(map["host"], "app.example");
    }

    #[test]
    fn a_trusted_proxy_that_sent_none_gets_them_set() {
        let mut map = headers(&[("host", "app.example")]);
        set_forwarding_headers(&mut map, &"/x".parse().unwrap(), &peer(), true);
        assert_eq!(map["x-forwarded-for"], "127.0.0.9");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "app.example");
    }

    #[test]
    fn from_any_other_peer_the_sidecar_sets_them_and_drops_the_claims() {
        let mut map = claimed();
        set_forwarding_headers(&mut map, &"/x".parse().unwrap(), &peer(), false);
        assert_eq!(map["x-forwarded-for"], "127.0.0.9");
        assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "app.example");
        for name in SAID_BY_PROXIES {
            assert!(
                !map.contains_key(name),
                "{name} kept from an untrusted peer"
            );
        }
        assert_eq!(map["host"], "app.example");
        // `Host` and the three the sidecar set, nothing else.
        assert_eq!(map.len(), 4);
    }

    #[test]
    fn https_host_and_client_address_claims_in_other_spellings_go_from_an_untrusted_peer() {
        for name in [
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
        ] {
            let mut map = headers(&[("host", "app.example"), (name, "x"), (name, "y")]);
            set_forwarding_headers(&mut map, &"/x".parse().unwrap(), &peer(), false);
            assert!(
                !map.contains_key(name),
                "{name} kept from an untrusted peer"
            );
            let mut map = headers(&[("host", "app.example"), (name, "x")]);
            set_forwarding_headers(&mut map, &"/x".parse().unwrap(), &peer(), true);
            assert_eq!(map[name], "x", "{name} dropped from a trusted proxy");
        }
    }

    #[test]
    fn an_http2_authority_becomes_host_and_forwarded_host() {
        let mut map = headers(&[("x-forwarded-host", "evil.example")]);
        let uri: http::Uri = "http://app.example:8080/x".parse().unwrap();
        set_forwarding_headers(&mut map, &uri, &peer(), false);
        assert_eq!(map["host"], "app.example:8080");
        assert_eq!(map["x-forwarded-host"], "app.example:8080");
    }

    #[test]
    fn trust_is_by_network() {
        let trusted: Vec<Cidr> = ["10.0.0.0/8", "fd00::/8"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        assert!(is_trusted(&trusted, "10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&trusted, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(is_trusted(&trusted, "fd00::7".parse().unwrap()));
        assert!(!is_trusted(&trusted, "127.0.0.1".parse().unwrap()));
        assert!(!is_trusted(&[], "10.1.2.3".parse().unwrap()));
    }
}
