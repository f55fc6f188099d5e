//! The client to the next hop: the app backend (ingress) or JTL's API (egress). Pooled
//! keep-alive connections with an idle timeout below the peer's keep-alive, `nodelay`, a
//! connect timeout, and a deadline for the response headers.

use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use url::Url;

use std::sync::Arc;

use super::pool::{Http1Pool, Unreachable};
use super::{ProxyBody, streamed_body};
use crate::jtl::http::{HttpsClient, innermost_cause, pooled_client};
use crate::tls::TlsRoots;

/// Pooled connections idle longer than this are closed. Node's default keep-alive
/// timeout is 5 s; reusing a connection the backend already closed fails the request.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Idle connections to JTL's API are closed after this long: well below the keep-alive
/// of public load balancers, and long enough to carry a burst of calls.
const JTL_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream could not be reached: {0}")]
    Unreachable(String),
    #[error("the upstream sent no response headers within {0} ms")]
    Timeout(u128),
    #[error("The request path cannot be forwarded.")]
    BadPath,
}

impl From<Unreachable> for UpstreamError {
    fn from(Unreachable(cause): Unreachable) -> Self {
        UpstreamError::Unreachable(cause)
    }
}

/// How requests reach the backend.
enum Transport {
    /// An `http://` backend (the usual sidecar case): the lean per-worker pool.
    Plain(Arc<Http1Pool>),
    /// An `https://` backend: hyper-util's pooled client with rustls.
    Tls(Box<HttpsClient<ProxyBody>>),
}

pub struct Upstream {
    transport: Transport,
    scheme: Scheme,
    authority: Authority,
    /// The upstream URL's path without its trailing `/`, put before every request path.
    path_prefix: String,
    request_timeout: Duration,
}

impl Upstream {
    /// The app backend. `tls` is used for an `https://` upstream (a backend reached
    /// through TLS); a plain `http://` one gets the lean per-worker pool.
    pub fn new(
        url: &Url,
        connect_timeout: Duration,
        request_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Upstream {
        let authority = authority_of(url);
        let transport = if url.scheme() == "http" {
            Transport::Plain(Http1Pool::new(
                authority.clone(),
                connect_timeout,
                POOL_IDLE_TIMEOUT,
            ))
        } else {
            Transport::Tls(Box::new(pooled_client(
                TlsRoots::fixed(tls),
                connect_timeout,
                POOL_IDLE_TIMEOUT,
                false,
                // Each ingress worker's own pool: its connections stay on its runtime.
                None,
            )))
        };
        Upstream::with_transport(url, &authority, transport, request_timeout)
    }

    /// JTL's API (egress): always hyper-util's pooled rustls client, `roots` carrying the
    /// webpki roots plus `jtl.ca_file` (new connections take up a changed file), HTTP/2
    /// offered by ALPN. Plain `http://` goes through the same client (the emulator).
    pub fn jtl_api(
        url: &Url,
        connect_timeout: Duration,
        response_timeout: Duration,
        roots: Arc<TlsRoots>,
    ) -> Upstream {
        let transport = Transport::Tls(Box::new(pooled_client(
            roots,
            connect_timeout,
            JTL_POOL_IDLE_TIMEOUT,
            true,
            // Egress runs on the main runtime: the connections with it.
            None,
        )));
        Upstream::with_transport(url, &authority_of(url), transport, response_timeout)
    }

    fn with_transport(
        url: &Url,
        authority: &str,
        transport: Transport,
        request_timeout: Duration,
    ) -> Upstream {
        Upstream {
            transport,
            // A validated http(s) URL always has a parsable scheme and authority.
            scheme: if url.scheme() == "https" {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            authority: authority
                .parse()
                .unwrap_or_else(|_| Authority::from_static("invalid.invalid")),
            path_prefix: url.path().trim_end_matches('/').to_owned(),
            request_timeout,
        }
    }

    /// The upstream URI for a request's path and query, byte for byte: origin-form
    /// (`/path?query`) for the plain-http pool, which writes the request target as given
    /// (backends expect origin-form from a reverse proxy; `Host` names the site);
    /// absolute for hyper-util's client, which connects by it and sends origin-form.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, UpstreamError> {
        let path_and_query = match path_and_query {
            Some(pq) if pq.as_str().starts_with('/') => pq,
            _ => return Err(UpstreamError::BadPath),
        };
        let path_and_query = if self.path_prefix.is_empty() {
            path_and_query.clone()
        } else if !super::paths::is_unambiguous(path_and_query.path()) {
            // Under a path prefix, `..` (or an encoded slash) could climb out of it.
            return Err(UpstreamError::BadPath);
        } else {
            format!("{}{path_and_query}", self.path_prefix)
                .parse()
                .map_err(|_| UpstreamError::BadPath)?
        };
        if let Transport::Plain(_) = self.transport {
            return Ok(Uri::from(path_and_query));
        }
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|_| UpstreamError::BadPath)
    }

    /// Sends the request; fails when the upstream cannot be reached or sends no response
    /// headers within `request_timeout_ms`.
    pub async fn send(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let exchange = async {
            match &self.transport {
                Transport::Plain(pool) => pool.send(request).await.map_err(UpstreamError::from),
                Transport::Tls(client) => client
                    .request(request)
                    .await
                    .map(|response| response.map(streamed_body))
                    .map_err(|error| UpstreamError::Unreachable(innermost_cause(&error))),
            }
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout(
                self.request_timeout.as_millis(),
            )))
    }
}

/// `host:port` of a URL, the port left out when the URL has none.
fn authority_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        let tls = crate::tls::client_tls_config(None).unwrap();
        let url = Url::parse(url).unwrap();
        Upstream::new(&url, Duration::from_secs(1), Duration::from_secs(1), tls)
    }

    fn target(upstream: &Upstream, path: &str) -> Result<String, UpstreamError> {
        let path: PathAndQuery = path.parse().unwrap();
        upstream.uri_for(Some(&path)).map(|uri| uri.to_string())
    }

    #[test]
    fn a_plain_backend_gets_the_origin_form_under_its_path_prefix() {
        let root = upstream("http://127.0.0.1:3000");
        assert_eq!(target(&root, "/a/../b?x=/..").unwrap(), "/a/../b?x=/..");
        let prefixed = upstream("http://127.0.0.1:3000/app/");
        assert_eq!(target(&prefixed, "/a?q=1").unwrap(), "/app/a?q=1");
    }

    #[test]
    fn under_a_path_prefix_a_path_that_could_climb_out_is_refused() {
        let prefixed = upstream("https://api.example/erp");
        for path in ["/../account", "/a/%2e%2e/b", "/a%2Fb", "/a\\b", "/./x"] {
            assert_eq!(
                target(&prefixed, path),
                Err(UpstreamError::BadPath),
                "{path}"
            );
        }
        assert_eq!(
            target(&prefixed, "/v1/items?next=/../x").unwrap(),
            "https://api.example/erp/v1/items?next=/../x"
        );
    }
}
