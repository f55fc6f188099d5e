//! The discovery step of the app-token flow (SPEC §11): Zitadel's OpenID Connect
//! discovery document at `{session.issuer}/.well-known/openid-configuration`, whose
//! `issuer`, `jwks_uri` and `token_endpoint` must be what the sidecar is configured with.
//! A mismatch names the key to fix. Read-only: one GET, bounded by `jtl.timeout_ms`.

use bytes::Bytes;
use http::header::ACCEPT;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{Map, Value};
use url::Url;

use super::{Line, Verdict, step};
use crate::config::Config;
use crate::jose::TokenKind;
use crate::jtl::JtlHttp;

/// Where the document is, below the issuer.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// What the document is compared with: the effective config of the app-token flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected<'a> {
    /// `session.issuer`, as written or derived (a trailing '/' kept).
    pub issuer: &'a str,
    /// The app-token key set: `jtl.jwks_url` in the app-token flow, derived from the
    /// issuer (and not configurable) in `both`.
    pub jwks_url: &'a Url,
    /// `jtl.jwks_url` names the app-token key set (the app-token flow alone).
    pub jwks_url_configurable: bool,
    /// `jtl.token_url`, when the service token is asked for with `openid` (from the
    /// provider itself); JTL's legacy token endpoint, which `both` and JTL's `--legacy`
    /// templates use without a scope, is not compared.
    pub token_url: Option<&'a Url>,
}

/// `{issuer}/.well-known/openid-configuration`.
pub fn document_url(issuer: &str) -> String {
    format!("{}{DISCOVERY_PATH}", issuer.trim_end_matches('/'))
}

/// Fetches the document and compares it; one line.
pub async fn check(config: &Config, http: &JtlHttp) -> Line {
    let app_tokens = config.session.profile(TokenKind::AppToken);
    let (Some(issuer), Some(profile)) = (config.session.app_token_issuer(), app_tokens) else {
        return Line::new(
            Verdict::Skipped,
            step::DISCOVERY,
            "session.issuer is not set",
        );
    };
    let url = document_url(issuer);
    let fail = |message: String| Line::new(Verdict::Fail, step::DISCOVERY, message);
    let request = match Request::builder()
        .method(Method::GET)
        .uri(url.as_str())
        .header(ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
    {
        Ok(request) => request,
        Err(_) => return fail(format!("{url}: not a valid URL (session.issuer)")),
    };
    let response = match http.call(request).await {
        Ok(response) => response,
        Err(error) => return fail(format!("{url}: {error}")),
    };
    if response.status != StatusCode::OK {
        let hint = if response.status == StatusCode::NOT_FOUND {
            " (is session.issuer an OpenID provider? JTL's is https://id.jtl-cloud.com)"
        } else {
            ""
        };
        return fail(format!(
            "{url} answered HTTP {}{hint}",
            response.status.as_u16()
        ));
    }
    let document = match serde_json::from_slice::<Value>(&response.body) {
        Ok(Value::Object(document)) => document,
        _ => {
            return fail(format!(
                "{url}: the answer is not a JSON object, so not a discovery document (is session.issuer right?)"
            ));
        }
    };
    let expected = Expected {
        issuer,
        jwks_url: &profile.key_set_url,
        jwks_url_configurable: config.session.flow == crate::config::Flow::AppToken,
        // Asked for `openid`, the token endpoint is taken for the provider's own.
        token_url: config
            .jtl
            .scope
            .as_deref()
            .is_some_and(|scope| scope.split(' ').any(|s| s == "openid"))
            .then_some(&config.jtl.token_url),
    };
    let mismatches = compare(&document, &expected);
    if mismatches.is_empty() {
        let message = if expected.token_url.is_some() {
            format!(
                "{url}: issuer, jwks_uri and token_endpoint match session.issuer, jtl.jwks_url and jtl.token_url"
            )
        } else {
            format!(
                "{url}: issuer and jwks_uri match session.issuer and the app-token key set; token_endpoint not compared (the service token comes from jtl.token_url without the openid scope, not from the provider)"
            )
        };
        Line::new(Verdict::Ok, step::DISCOVERY, message)
    } else {
        fail(format!("{url}: {}", mismatches.join("; ")))
    }
}

/// Each member that does not match, as one clause naming the key to fix; empty when all do.
/// `issuer` is compared exactly (tokens' `iss` is); the two URLs as parsed URLs, so that
/// `https://host` and `https://host/` are the same.
pub fn compare(document: &Map<String, Value>, expected: &Expected<'_>) -> Vec<String> {
    let mut mismatches = Vec::new();
    match document.get("issuer").and_then(Value::as_str) {
        None => mismatches.push(
            "the document has no \"issuer\" string (is session.issuer JTL's Zitadel?)".to_owned(),
        ),
        Some(issuer) if issuer == expected.issuer => {}
        Some(issuer) => mismatches.push(format!(
            "issuer is {}, not session.issuer {}: app tokens carry the document's issuer as iss, \
             so every one would fail the issuer check; set session.issuer = {}",
            quoted(issuer),
            quoted(expected.issuer),
            quoted(issuer),
        )),
    }
    let issuer = expected.issuer.trim_end_matches('/');
    for (member, key, configured, default) in [
        (
            "jwks_uri",
            "jtl.jwks_url",
            Some(expected.jwks_url),
            format!("{issuer}/oauth/v2/keys"),
        ),
        (
            "token_endpoint",
            "jtl.token_url",
            expected.token_url,
            format!("{issuer}/oauth/v2/token"),
        ),
    ] {
        let Some(configured) = configured else {
            continue;
        };
        match document.get(member).and_then(Value::as_str) {
            None => mismatches.push(format!("the document has no {member:?} string")),
            Some(published) => {
                let published_url = Url::parse(published).ok();
                if published_url.as_ref() == Some(configured) {
                    continue;
                }
                if key == "jtl.jwks_url" && !expected.jwks_url_configurable {
                    // In `both`, jtl.jwks_url names the session-token key set: the
                    // app-token keys are always {issuer}/oauth/v2/keys.
                    mismatches.push(format!(
                        "{member} is {}, not the app-token key set {} (with session.flow = \"both\" it is always {{session.issuer}}/oauth/v2/keys): is session.issuer this provider's issuer?",
                        quoted(published),
                        quoted(configured.as_str()),
                    ));
                    continue;
                }
                let or_default = if published_url == Url::parse(&default).ok() {
                    " (or leave it unset: that is its default in the app-token flow)"
                } else {
                    ""
                };
                mismatches.push(format!(
                    "{member} is {}, not {key} {}: set {key} = {}{or_default}",
                    quoted(published),
                    quoted(configured.as_str()),
                    quoted(published),
                ));
            }
        }
    }
    mismatches
}

/// A value from the document, quoted and escaped, cut at 200 characters.
fn quoted(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    let ellipsis = if cut.len() < text.len() { "…" } else { "" };
    format!("\"{}{ellipsis}\"", cut.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn document(issuer: &str, jwks: &str, token: &str) -> Map<String, Value> {
        match json!({"issuer": issuer, "jwks_uri": jwks, "token_endpoint": token}) {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn expected_urls() -> (Url, Url) {
        (
            Url::parse("https://id.jtl-cloud.com/oauth/v2/keys").unwrap(),
            Url::parse("https://id.jtl-cloud.com/oauth/v2/token").unwrap(),
        )
    }

    #[test]
    fn a_matching_document_has_no_mismatch() {
        let (jwks_url, token_url) = expected_urls();
        let expected = Expected {
            issuer: "https://id.jtl-cloud.com",
            jwks_url: &jwks_url,
            jwks_url_configurable: true,
            token_url: Some(&token_url),
        };
        let doc = document(
            "https://id.jtl-cloud.com",
            "https://id.jtl-cloud.com/oauth/v2/keys",
            "https://id.jtl-cloud.com/oauth/v2/token",
        );
        assert_eq!(compare(&doc, &expected), Vec::<String>::new());
    }

    #[test]
    fn each_mismatch_names_its_key() {
        let (jwks_url, token_url) = expected_urls();
        let expected = Expected {
            issuer: "https://id.jtl-cloud.com",
            jwks_url: &jwks_url,
            jwks_url_configurable: true,
            token_url: Some(&token_url),
        };
        let doc = document(
            "https://id.jtl-cloud.com/",
            "https://other.example/keys",
            "https://other.example/token",
        );
        let found = compare(&doc, &expected);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("set session.issuer = \"https://id.jtl-cloud.com/\""));
        assert!(found[1].contains("set jtl.jwks_url = \"https://other.example/keys\""));
        assert!(found[2].contains("set jtl.token_url = \"https://other.example/token\""));
    }

    #[test]
    fn in_both_a_jwks_uri_mismatch_points_at_the_issuer_not_jtl_jwks_url() {
        let (jwks_url, _) = expected_urls();
        let expected = Expected {
            issuer: "https://id.jtl-cloud.com",
            jwks_url: &jwks_url,
            jwks_url_configurable: false,
            token_url: None,
        };
        let found = compare(
            &document(
                "https://id.jtl-cloud.com",
                "https://keys.example/jwks",
                "https://id.jtl-cloud.com/oauth/v2/token",
            ),
            &expected,
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("is session.issuer"), "{found:?}");
        assert!(!found[0].contains("set jtl.jwks_url"), "{found:?}");
    }

    #[test]
    fn missing_members_are_mismatches() {
        let (jwks_url, token_url) = expected_urls();
        let expected = Expected {
            issuer: "https://id.jtl-cloud.com",
            jwks_url: &jwks_url,
            jwks_url_configurable: true,
            token_url: Some(&token_url),
        };
        let found = compare(&Map::new(), &expected);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[1].contains("no \"jwks_uri\""), "{found:?}");
    }

    #[test]
    fn the_document_url_is_below_the_issuer() {
        assert_eq!(
            document_url("https://id.jtl-cloud.com/"),
            "https://id.jtl-cloud.com/.well-known/openid-configuration"
        );
    }
}
