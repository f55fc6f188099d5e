//! Set or derived: URL, scope and issuer keys left empty are derived from
//! `jtl.environment` and the flow; a key that is set is used exactly as written, even when
//! it equals the derived value, and `check` marks only the derived ones.

use super::*;
use jtl_auth_sidecar::config::RawConfig;
use jtl_auth_sidecar::jose::TokenKind;

const LEGACY: &str = "https://auth.jtl-cloud.com/oauth2/token";

fn config(session: &str, jtl: &str) -> LoadedConfig {
    let toml = format!("{VALID}{jtl}\n[session]\n{session}\n");
    load(&toml).unwrap_or_else(|errors| panic!("{errors}\n{toml}"))
}

fn marked_derived(loaded: &LoadedConfig, line_start: &str) -> bool {
    let shown = loaded.to_redacted_toml();
    let line = shown
        .lines()
        .find(|line| line.starts_with(line_start))
        .unwrap_or_else(|| panic!("no `{line_start}` in\n{shown}"));
    line.ends_with("# (derived)")
}

/// No derivable key has a default that a written value could be mistaken for.
#[test]
fn every_derivable_key_is_empty_unless_written() {
    let raw = RawConfig::default();
    for value in [
        &raw.jtl.token_url,
        &raw.jtl.scope,
        &raw.jtl.api_base_url,
        &raw.jtl.jwks_url,
        &raw.session.issuer,
    ] {
        assert_eq!(value, "");
    }
    assert_eq!(raw.session.flow, "app-token");
    assert_eq!(raw.jtl.environment, "production");
}

#[test]
fn the_app_token_flow_derives_every_url_from_the_environment() {
    for (environment, infix) in [("production", ""), ("qa", ".qa"), ("dev", ".dev")] {
        let loaded = config(
            "audience = \"app-1\"",
            &format!("environment = {environment:?}"),
        );
        let config = &loaded.config;
        let issuer = format!("https://id{infix}.jtl-cloud.com");
        let profile = config.session.profile(TokenKind::AppToken).unwrap();
        assert_eq!(profile.policy.issuer.as_deref(), Some(issuer.as_str()));
        assert_eq!(profile.policy.audience, ["app-1"]);
        assert_eq!(
            profile.key_set_url.as_str(),
            format!("{issuer}/oauth/v2/keys")
        );
        assert_eq!(
            config.jtl.token_url.as_str(),
            format!("{issuer}/oauth/v2/token")
        );
        assert_eq!(config.jtl.scope.as_deref(), Some("openid"));
        assert!(config.jtl.opaque_token);
        assert_eq!(
            config.jtl.api_base_url.as_str(),
            format!("https://api{infix}.jtl-cloud.com/")
        );
        for key in ["token_url", "scope", "api_base_url", "jwks_url", "issuer"] {
            assert!(marked_derived(&loaded, &format!("{key} = ")), "{key}");
        }
    }
}

#[test]
fn a_written_value_equal_to_the_derived_one_is_used_and_not_marked_derived() {
    let loaded = config(
        "audience = \"app-1\"\nissuer = \"https://id.jtl-cloud.com\"",
        "token_url = \"https://id.jtl-cloud.com/oauth/v2/token\"\nscope = \"openid\"\napi_base_url = \"https://api.jtl-cloud.com\"\njwks_url = \"https://id.jtl-cloud.com/oauth/v2/keys\"",
    );
    assert_eq!(
        loaded.config.jtl.token_url.as_str(),
        "https://id.jtl-cloud.com/oauth/v2/token"
    );
    for key in ["token_url", "scope", "api_base_url", "jwks_url", "issuer"] {
        assert!(!marked_derived(&loaded, &format!("{key} = ")), "{key}");
    }
    // Only the key left out is derived.
    let partly = config("audience = \"app-1\"", "scope = \"openid\"");
    assert!(!marked_derived(&partly, "scope = "));
    assert!(marked_derived(&partly, "token_url = "));
    assert!(marked_derived(&partly, "jwks_url = "));
}

/// JTL's `--legacy` templates: app tokens verified, the service token from the legacy
/// endpoint, with no scope. A written legacy URL is never replaced by Zitadel's.
#[test]
fn a_written_legacy_token_url_is_kept_in_the_app_token_flow_without_a_scope() {
    let loaded = config("audience = \"app-1\"", &format!("token_url = {LEGACY:?}"));
    let config = &loaded.config;
    assert_eq!(config.session.flow, Flow::AppToken);
    assert_eq!(config.jtl.token_url.as_str(), LEGACY);
    assert_eq!(config.jtl.scope, None);
    // The legacy endpoint's token is a JWT, read for its lifetime when need be.
    assert!(!config.jtl.opaque_token);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn the_session_token_flow_and_both_take_the_service_token_from_the_legacy_endpoint() {
    for (flow, environment, expected) in [
        ("session-token", "production", LEGACY),
        ("both", "production", LEGACY),
        ("both", "dev", "https://auth.dev.jtl-cloud.com/oauth2/token"),
    ] {
        let loaded = config(
            &format!("flow = {flow:?}\naudience = \"app-1\""),
            &format!("environment = {environment:?}"),
        );
        assert_eq!(loaded.config.jtl.token_url.as_str(), expected, "{flow}");
        assert_eq!(loaded.config.jtl.scope, None, "{flow}");
    }
}

#[test]
fn an_issuer_with_a_trailing_slash_is_kept_and_derived_urls_get_no_double_slash() {
    let loaded = config("audience = \"app-1\"\nissuer = \"https://id.example/\"", "");
    let config = &loaded.config;
    let profile = config.session.profile(TokenKind::AppToken).unwrap();
    assert_eq!(
        profile.policy.issuer.as_deref(),
        Some("https://id.example/")
    );
    assert_eq!(
        config.jtl.token_url.as_str(),
        "https://id.example/oauth/v2/token"
    );
    assert_eq!(
        profile.key_set_url.as_str(),
        "https://id.example/oauth/v2/keys"
    );
    assert_eq!(config.jtl.scope.as_deref(), Some("openid"));
    assert!(
        loaded
            .to_redacted_toml()
            .contains("issuer = \"https://id.example/\"")
    );
}

#[test]
fn both_has_a_profile_per_kind_with_its_own_key_set() {
    let loaded = config("flow = \"both\"\naudience = [\"app-1\", \"app-2\"]", "");
    let session = &loaded.config.session;
    assert_eq!(session.profiles.len(), 2);
    let app = session.profile(TokenKind::AppToken).unwrap();
    assert_eq!(
        app.key_set_url.as_str(),
        "https://id.jtl-cloud.com/oauth/v2/keys"
    );
    assert!(!app.key_set_needs_bearer);
    assert_eq!(app.policy.audience, ["app-1", "app-2"]);
    let legacy = session.profile(TokenKind::SessionToken).unwrap();
    assert_eq!(
        legacy.key_set_url.as_str(),
        "https://api.jtl-cloud.com/account/.well-known/jwks.json"
    );
    assert!(legacy.key_set_needs_bearer);
    // JTL's session tokens carry neither iss nor aud: in `both` they are not held to
    // the app token's.
    assert_eq!(legacy.policy.issuer, None);
    assert!(legacy.policy.audience.is_empty());
    // `jtl.jwks_url` names the session-token key set in `both`.
    let written = config(
        "flow = \"both\"\naudience = \"app-1\"",
        "jwks_url = \"https://keys.example/jwks.json\"",
    );
    let session = &written.config.session;
    assert_eq!(
        session
            .profile(TokenKind::SessionToken)
            .unwrap()
            .key_set_url
            .as_str(),
        "https://keys.example/jwks.json"
    );
    assert_eq!(
        session
            .profile(TokenKind::AppToken)
            .unwrap()
            .key_set_url
            .as_str(),
        "https://id.jtl-cloud.com/oauth/v2/keys"
    );
}

#[test]
fn the_audience_is_an_app_id_or_a_list_and_never_the_placeholder() {
    assert_problem(
        "[session]\naudience = \"<your app id>\"",
        "session.audience",
        "placeholder",
    );
    assert_problem(
        "[session]\naudience = [\"app-1\", \"<your new app id>\"]",
        "session.audience",
        "placeholder",
    );
    assert_problem("[session]\naudience = 5", "session.audience", "app id");
    assert_problem("[session]\nflow = \"both\"", "session.audience", "missing");
}

#[test]
fn an_unknown_environment_is_refused() {
    assert_problem(
        "[jtl]\nenvironment = \"staging\"",
        "jtl.environment",
        "\"production\", \"qa\" or \"dev\"",
    );
}

#[test]
fn a_scope_without_openid_is_warned_about_for_zitadels_token_endpoint_only() {
    let zitadel = config("audience = \"app-1\"", "scope = \"profile\"");
    assert!(
        zitadel
            .warnings
            .iter()
            .any(|w| w.starts_with("jtl.scope:") && w.contains("openid")),
        "{:?}",
        zitadel.warnings
    );
    let elsewhere = config(
        "audience = \"app-1\"",
        "token_url = \"https://sso.example/token\"\nscope = \"profile\"",
    );
    assert_eq!(elsewhere.config.jtl.scope.as_deref(), Some("profile"));
    assert!(elsewhere.warnings.is_empty(), "{:?}", elsewhere.warnings);
}

#[test]
fn the_audience_list_can_come_from_the_environment() {
    let loaded = load_with_env(
        VALID,
        &[("JTL_SIDECAR_SESSION__AUDIENCE", "[\"app-1\", \"app-2\"]")],
    )
    .unwrap();
    let profile = loaded.config.session.profile(TokenKind::AppToken).unwrap();
    assert_eq!(profile.policy.audience, ["app-1", "app-2"]);
    let one = load_with_env(VALID, &[("JTL_SIDECAR_SESSION__AUDIENCE", "app-3")]).unwrap();
    let profile = one.config.session.profile(TokenKind::AppToken).unwrap();
    assert_eq!(profile.policy.audience, ["app-3"]);
}

/// A key set fetched over plain http lets anyone on the path swap the keys tokens are
/// verified with: warned about when the URL is derived, too.
#[test]
fn a_derived_key_set_over_plain_http_to_a_remote_host_is_warned_about() {
    let loaded = config(
        "flow = \"both\"\naudience = \"app-1\"\nissuer = \"http://zitadel.example\"",
        "",
    );
    assert!(
        loaded.warnings.iter().any(|w| w
            .starts_with("session.issuer (the app-token key set): http://zitadel.example/oauth/v2/keys is plain http")),
        "{:?}",
        loaded.warnings
    );
    let local = config(
        "flow = \"both\"\naudience = \"app-1\"\nissuer = \"http://127.0.0.1:8090\"",
        "",
    );
    assert!(local.warnings.is_empty(), "{:?}", local.warnings);
}
