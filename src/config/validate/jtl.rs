//! `[jtl]`: the client credentials and JTL's endpoints, defaults derived from the flow.

use std::path::PathBuf;

use url::Url;

use super::{is_loopback_host, Checker};
use crate::config::raw::RawJtl;
use crate::config::settings::{ClientSecret, Flow, JtlConfig, SessionConfig};
use crate::config::LEGACY_TOKEN_URL;
use crate::secrets::Secret;

pub(super) fn validate_jtl(
    raw: &RawJtl,
    flow: Option<Flow>,
    session: Option<&SessionConfig>,
    check: &mut Checker,
    warnings: &mut Vec<String>,
) -> Option<JtlConfig> {
    let problems_before = check.problems.len();
    if raw.client_id.is_empty() {
        check.problem("jtl.client_id", "missing");
    } else if raw.client_id.trim() != raw.client_id {
        warnings.push(
            "jtl.client_id: has leading or trailing whitespace, which JTL will not accept".into(),
        );
    }
    let client_secret = match (
        raw.client_secret.is_empty(),
        raw.client_secret_file.is_empty(),
    ) {
        (true, true) => {
            check.problem(
                "jtl.client_secret",
                "missing (set jtl.client_secret or jtl.client_secret_file)",
            );
            None
        }
        (false, false) => {
            check.problem(
                "jtl.client_secret",
                "set either jtl.client_secret or jtl.client_secret_file, not both",
            );
            None
        }
        (false, true) => {
            if raw.client_secret.trim() != raw.client_secret {
                warnings.push(
                    "jtl.client_secret: has leading or trailing whitespace, which JTL will probably not accept".into(),
                );
            }
            Some(ClientSecret::Inline(Secret::new(raw.client_secret.clone())))
        }
        (true, false) => {
            let path = PathBuf::from(&raw.client_secret_file);
            if let Err(error) = std::fs::metadata(&path) {
                warnings.push(format!(
                    "jtl.client_secret_file: cannot be read here ({error}); `run` needs it"
                ));
            }
            Some(ClientSecret::File(path))
        }
    };
    // The app-token flow asks Zitadel for its service token unless a URL is set.
    let app_token_issuer = match flow {
        Some(Flow::AppToken) => session.and_then(|s| s.issuer.as_deref()),
        _ => None,
    };
    let token_url = match app_token_issuer {
        Some(issuer) if raw.token_url == LEGACY_TOKEN_URL => {
            check.http_url("jtl.token_url", &format!("{issuer}/oauth/v2/token"))
        }
        _ => check.http_url("jtl.token_url", &raw.token_url),
    };
    let scope = match (app_token_issuer, raw.scope.as_str()) {
        (Some(_), "") => Some("openid".to_owned()),
        (_, "") => None,
        (app_token, scope) => {
            if app_token.is_some() && !scope.split(' ').any(|s| s == "openid") {
                warnings.push(format!(
                    "jtl.scope: {scope:?} lacks \"openid\", which JTL's Zitadel requires for the service account's token request"
                ));
            }
            Some(scope.to_owned())
        }
    };
    let api_base_url = check.http_url("jtl.api_base_url", &raw.api_base_url);
    if api_base_url
        .as_ref()
        .is_some_and(|url| url.query().is_some())
    {
        check.problem(
            "jtl.api_base_url",
            "must not contain a query (paths are appended to it)",
        );
    }
    let jwks_url = if raw.jwks_url.is_empty() {
        match (
            flow,
            session.and_then(|s| s.issuer.as_deref()),
            &api_base_url,
        ) {
            (Some(Flow::AppToken), Some(issuer), _) => {
                Url::parse(&format!("{}/oauth/v2/keys", issuer.trim_end_matches('/'))).ok()
            }
            (_, _, Some(api)) => Url::parse(&format!(
                "{}/account/.well-known/jwks.json",
                api.as_str().trim_end_matches('/')
            ))
            .ok(),
            _ => None,
        }
    } else {
        check.http_url("jtl.jwks_url", &raw.jwks_url)
    };
    for (key, url) in [
        ("jtl.token_url", &token_url),
        ("jtl.api_base_url", &api_base_url),
        ("jtl.jwks_url", &jwks_url),
    ] {
        if let Some(url) = url {
            if url.scheme() == "http" && !is_loopback_host(url) {
                warnings.push(format!(
                    "{key}: {url} is plain http to a remote host; credentials and tokens would travel unencrypted"
                ));
            }
        }
    }
    let refresh_before_expiry = check.seconds(
        "jtl.refresh_before_expiry_s",
        raw.refresh_before_expiry_s,
        0,
        86_400,
    );
    let timeout = check.millis("jtl.timeout_ms", raw.timeout_ms, 1, 120_000);
    let ca_file = if raw.ca_file.is_empty() {
        None
    } else {
        let path = PathBuf::from(&raw.ca_file);
        if let Err(error) = std::fs::metadata(&path) {
            warnings.push(format!(
                "jtl.ca_file: cannot be read here ({error}); `run` needs it"
            ));
        }
        Some(path)
    };
    if check.problems.len() != problems_before {
        return None;
    }
    Some(JtlConfig {
        client_id: raw.client_id.clone(),
        client_secret: client_secret?,
        token_url: token_url?,
        scope,
        api_base_url: api_base_url?,
        jwks_url: jwks_url?,
        refresh_before_expiry,
        timeout,
        ca_file,
        opaque_token: app_token_issuer.is_some(),
    })
}
