//! `[jtl]`: the client credentials and JTL's endpoints, derived from `jtl.environment`
//! and the flow where the operator left them empty (SPEC §3 "set or derived").

use std::path::PathBuf;

use url::Url;

use super::session::{KeySetUrls, TokenRules};
use super::{Checker, is_loopback_host};
use crate::config::raw::RawJtl;
use crate::config::settings::{ClientSecret, Flow, JtlConfig, JtlEnvironment, SessionConfig};
use crate::jose::TokenKind;
use crate::secrets::Secret;

/// `[jtl]`, with the URLs that were left empty derived from `environment` and the flow
/// (their keys pushed onto `derived`), and where the key sets are.
pub(super) fn validate_jtl(
    raw: &RawJtl,
    environment: Option<JtlEnvironment>,
    session: Option<&(SessionConfig, TokenRules)>,
    check: &mut Checker,
    warnings: &mut Vec<String>,
    derived: &mut Vec<&'static str>,
) -> Option<(JtlConfig, KeySetUrls)> {
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
    let flow = session.map(|(config, _)| config.flow);
    // Zitadel's endpoints sit below the issuer; derived URLs never get a "//".
    let issuer_base = session
        .filter(|(config, _)| config.flow.accepts(TokenKind::AppToken))
        .and_then(|(_, rules)| rules.issuer.as_deref())
        .map(|issuer| issuer.trim_end_matches('/').to_owned());
    let zitadel_token_url = issuer_base
        .as_ref()
        .map(|base| format!("{base}/oauth/v2/token"));
    let mut derive = |key: &'static str, value: Option<String>| {
        if value.is_some() {
            derived.push(key);
        }
        value
    };
    let token_url_text = match raw.token_url.as_str() {
        "" => derive(
            "jtl.token_url",
            match flow {
                Some(Flow::AppToken) => zitadel_token_url.clone(),
                Some(Flow::SessionToken | Flow::Both) => {
                    environment.map(JtlEnvironment::legacy_token_url)
                }
                None => None,
            },
        ),
        written => Some(written.to_owned()),
    };
    let token_url = token_url_text
        .as_deref()
        .and_then(|text| check.http_url("jtl.token_url", text));
    // The token endpoint is Zitadel's: it needs `openid`, and its tokens are opaque.
    let zitadel_endpoint =
        token_url_text.is_some() && token_url_text.as_deref() == zitadel_token_url.as_deref();
    let scope = match raw.scope.as_str() {
        "" => derive("jtl.scope", zitadel_endpoint.then(|| "openid".to_owned())),
        scope => {
            if zitadel_endpoint && !scope.split(' ').any(|s| s == "openid") {
                warnings.push(format!(
                    "jtl.scope: {scope:?} lacks \"openid\", which JTL's Zitadel requires for the service account's token request"
                ));
            }
            Some(scope.to_owned())
        }
    };
    let api_base_text = match raw.api_base_url.as_str() {
        "" => derive(
            "jtl.api_base_url",
            environment.map(JtlEnvironment::api_base_url),
        ),
        written => Some(written.to_owned()),
    };
    let api_base_url = api_base_text
        .as_deref()
        .and_then(|text| check.http_url("jtl.api_base_url", text));
    if api_base_url
        .as_ref()
        .is_some_and(|url| url.query().is_some())
    {
        check.problem(
            "jtl.api_base_url",
            "must not contain a query (paths are appended to it)",
        );
    }
    // `jtl.jwks_url` names the session-token key set, or, in the app-token flow alone,
    // the app-token key set; the other is derived.
    let written_jwks = (!raw.jwks_url.is_empty())
        .then(|| check.http_url("jtl.jwks_url", &raw.jwks_url))
        .flatten();
    let derived_app_keys = || {
        issuer_base
            .as_ref()
            .and_then(|base| Url::parse(&format!("{base}/oauth/v2/keys")).ok())
    };
    let app_keys = match (flow, &written_jwks) {
        (Some(Flow::AppToken), Some(url)) => Some(url.clone()),
        (Some(Flow::AppToken | Flow::Both), _) => derived_app_keys(),
        _ => None,
    };
    let session_keys = match (flow, &written_jwks) {
        (Some(Flow::SessionToken | Flow::Both), Some(url)) => Some(url.clone()),
        (Some(Flow::SessionToken | Flow::Both), None) => api_base_url.as_ref().and_then(|api| {
            Url::parse(&format!(
                "{}/account/.well-known/jwks.json",
                api.as_str().trim_end_matches('/')
            ))
            .ok()
        }),
        _ => None,
    };
    if raw.jwks_url.is_empty() && (app_keys.is_some() || session_keys.is_some()) {
        derived.push("jtl.jwks_url");
    }
    // Derived URLs too: a key set fetched over plain http lets anyone on the path swap
    // the keys that tokens are verified with.
    let app_keys_key = if flow == Some(Flow::AppToken) {
        "jtl.jwks_url"
    } else {
        "session.issuer (the app-token key set)"
    };
    for (key, url) in [
        ("jtl.token_url", &token_url),
        ("jtl.api_base_url", &api_base_url),
        ("jtl.jwks_url", &session_keys),
        (app_keys_key, &app_keys),
    ] {
        if let Some(url) = url
            && url.scheme() == "http"
            && !is_loopback_host(url)
        {
            warnings.push(format!(
                    "{key}: {url} is plain http to a remote host; credentials and tokens would travel unencrypted"
                ));
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
    let config = JtlConfig {
        environment: environment?,
        client_id: raw.client_id.clone(),
        client_secret: client_secret?,
        token_url: token_url?,
        scope,
        api_base_url: api_base_url?,
        refresh_before_expiry,
        timeout,
        ca_file,
        opaque_token: zitadel_endpoint,
    };
    Some((
        config,
        KeySetUrls {
            app_token: app_keys,
            session_token: session_keys,
        },
    ))
}

/// `jtl.environment`.
pub(super) fn validate_environment(raw: &str, check: &mut Checker) -> Option<JtlEnvironment> {
    let environment = match raw {
        "production" => Some(JtlEnvironment::Production),
        "qa" => Some(JtlEnvironment::Qa),
        "dev" => Some(JtlEnvironment::Dev),
        _ => None,
    };
    if environment.is_none() {
        check.problem(
            "jtl.environment",
            format!("must be \"production\", \"qa\" or \"dev\", not {raw:?}"),
        );
    }
    environment
}
