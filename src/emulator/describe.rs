//! A request described as JSON: what the emulator's API echo and `dev`'s echo backend
//! answer with, so a caller sees exactly what arrived.

use http::request::Parts;
use ring::digest;
use serde_json::{Map, Value, json};

use super::exchange::Acting;

/// Bodies up to this size are included in full; larger ones by length and digest only.
const ECHOED_BODY_MAX: usize = 64 * 1024;

/// Method, HTTP version, the request target as it arrived (origin-form `/path?query`
/// or absolute-form `http://host/path`), path, query, every header (name → list of values, in order),
/// and the body (text, length and SHA-256); in the emulator's API echo also who the
/// bearer token acts for (`"acting"`).
pub fn describe_request(parts: &Parts, body: &[u8]) -> Value {
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(values)) => values.push(value),
            _ => {
                headers.insert(name.as_str().to_owned(), Value::Array(vec![value]));
            }
        }
    }
    let sha256: String = digest::digest(&digest::SHA256, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut described = json!({
        "method": parts.method.as_str(),
        "version": format!("{:?}", parts.version),
        "target": parts.uri.to_string(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": (body.len() <= ECHOED_BODY_MAX).then(|| String::from_utf8_lossy(body).into_owned()),
        "body_length": body.len(),
        "body_sha256": sha256,
    });
    if let Some(acting) = parts.extensions.get::<Acting>() {
        described["acting"] = acting.to_json();
    }
    described
}
