//! The data plane: ingress (verify and forward to the backend), and what it shares with
//! egress (header rules, JSON error bodies, the upstream client).

pub mod cors;
pub mod errors;
pub mod headers;
pub mod ingress;
pub mod paths;
pub mod pool;
pub mod upstream;

use std::net::SocketAddr;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Errors of streamed bodies, whatever their source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends: streamed from a peer, or built by the sidecar.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A complete body built by the sidecar.
pub fn full_body(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A peer's body, streamed as it arrives.
pub fn streamed_body(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed()
}

/// The client at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Its IP as an `X-Forwarded-For` entry, formatted once per connection.
    pub forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Peer {
        let ip = addr.ip().to_string();
        Peer {
            addr,
            // An IP address is always a valid header value.
            forwarded_for: HeaderValue::from_str(&ip)
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
    }
}
