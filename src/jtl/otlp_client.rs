//! The HTTP client of the span exporter (`tracing.otlp_endpoint`): the same pooled
//! rustls client as JTL's calls (webpki roots plus `jtl.ca_file`, a deadline on every
//! call, run on the server's runtime whichever thread the exporter calls from), so the
//! exporter brings no HTTP or TLS stack of its own.

use bytes::Bytes;
use http_body_util::Full;
use opentelemetry_http::{HttpClient, HttpError};

use super::JtlHttp;

/// [`JtlHttp`] as OpenTelemetry's `HttpClient`.
#[derive(Clone)]
pub struct OtlpClient(pub JtlHttp);

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
        let answer = self.0.call(request.map(Full::new)).await?;
        let mut response = http::Response::new(answer.body);
        *response.status_mut() = answer.status;
        *response.headers_mut() = answer.headers;
        Ok(response)
    }
}
