//! The HTTP client of the span exporter (`tracing.otlp_endpoint`): the same pooled
//! rustls client as JTL's calls (webpki roots plus `jtl.ca_file`, a deadline on every
//! call), so the exporter brings no HTTP or TLS stack of its own.
//!
//! It runs on a small runtime of its own, not the server's: the SDK's batch processor
//! blocks its thread on each export, and when the provider shuts down (or is dropped) on
//! a thread of the server's runtime, an export waiting for that runtime would wait for
//! itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry_http::{HttpClient, HttpError};
use tokio::runtime::Runtime;

use super::JtlHttp;
use crate::tls::TlsRoots;

/// [`JtlHttp`] on the export's own runtime, as OpenTelemetry's `HttpClient`.
pub struct OtlpClient {
    http: JtlHttp,
    _runtime: ExportRuntime,
}

impl OtlpClient {
    /// One worker thread, `otlp-export`, for the collector's connections.
    pub fn start(timeout: Duration, roots: Arc<TlsRoots>) -> std::io::Result<OtlpClient> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()?;
        let http = JtlHttp::with_roots(timeout, roots, runtime.handle().clone());
        Ok(OtlpClient {
            http,
            _runtime: ExportRuntime(Some(runtime)),
        })
    }
}

/// Shut down without waiting when dropped: a runtime dropped the ordinary way blocks,
/// which is refused inside another runtime.
struct ExportRuntime(Option<Runtime>);

impl Drop for ExportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpClient")
    }
}

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let answer = self.http.call(request.map(Full::new)).await?;
        let mut response = http::Response::new(answer.body);
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        Ok(response)
    }
}
