//! Plain calls to the emulator's endpoints through the product's own JTL client, for the
//! emulator's tests: a request with these headers and this body, the buffered answer.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use jtl_auth_sidecar::jtl::http::{CallError, JtlHttp, Response};
use serde_json::Value;

/// Sends the request; the client's error when no answer came.
pub async fn try_send(
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Result<Response, CallError> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    JtlHttp::new(Duration::from_secs(5), None)
        .expect("a JTL client")
        .call(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .expect("a request"),
        )
        .await
}

/// Sends the request; an answer is expected.
pub async fn send(method: Method, url: &str, headers: &[(&str, String)], body: &str) -> Response {
    try_send(method, url, headers, body)
        .await
        .expect("an answer from the emulator")
}

/// The answer's body as JSON.
pub fn json(response: &Response) -> Value {
    serde_json::from_slice(&response.body).expect("a JSON body")
}
