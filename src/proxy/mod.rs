//! The data plane: ingress (verify and forward to the backend), and what it shares with
//! egress (header rules, JSON error bodies, the upstream client).

pub mod cors;
pub mod errors;
pub mod headers;
pub mod ingress;
pub mod paths;
pub mod pool;
pub mod upstream;

use bytes::Bytes;
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
