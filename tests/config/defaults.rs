//! Defaults, the example configs, and the accepted keys as the documentation lists them.

use super::*;

#[test]
fn defaults_are_those_of_the_spec() {
    let config = load(VALID).unwrap().config;
    assert_eq!(config.ingress.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.ingress.upstream.as_str(), "http://127.0.0.1:3000/");
    assert_eq!(
        config.ingress.token_headers,
        ["authorization", "x-session-token"]
    );
    assert_eq!(config.ingress.identity_headers.tenant_id, "x-tenant-id");
    assert!(config.ingress.allow_cors_preflight && config.ingress.forward_access_token);
    assert_eq!(config.ingress.connect_timeout.as_millis(), 2000);
    assert_eq!(config.ingress.request_timeout.as_millis(), 60_000);
    assert_eq!(config.egress.listen.unwrap().to_string(), "127.0.0.1:8081");
    assert_eq!(config.egress.max_retry_body_bytes, 1_048_576);
    assert_eq!(config.egress.request_timeout.as_millis(), 60_000);
    // The app-token flow, JTL's current default: everything derived from JTL's
    // production Zitadel.
    assert_eq!(config.session.flow, Flow::AppToken);
    assert_eq!(
        config.jtl.token_url.as_str(),
        "https://id.jtl-cloud.com/oauth/v2/token"
    );
    assert_eq!(config.jtl.scope.as_deref(), Some("openid"));
    assert_eq!(
        config.jtl.api_base_url.as_str(),
        "https://api.jtl-cloud.com/"
    );
    let profile = &config.session.profiles[0];
    assert_eq!(
        profile.key_set_url.as_str(),
        "https://id.jtl-cloud.com/oauth/v2/keys"
    );
    assert!(!profile.key_set_needs_bearer);
    assert_eq!(
        profile.policy.issuer.as_deref(),
        Some("https://id.jtl-cloud.com")
    );
    assert_eq!(
        config.jtl.client_secret,
        ClientSecret::Inline(jtl_auth_sidecar::config::Secret::new("s3cret-value"))
    );
    assert_eq!(config.session.leeway.as_secs(), 30);
    assert_eq!(config.session.max_token_bytes, 8192);
    assert_eq!(config.session.jwks_max_stale.as_secs(), 604_800);
    assert_eq!(config.session.verified_cache_entries, 100_000);
    assert_eq!(
        config.tenants.connect_path.as_deref(),
        Some("/api/connect-tenant")
    );
    assert_eq!(
        config.tenants.database_url.expose(),
        "sqlite://jtl-tenants.db"
    );
    assert_eq!(config.admin.listen.to_string(), "0.0.0.0:9090");
    assert_eq!(config.server.shutdown_grace.as_secs(), 20);
    assert_eq!(config.server.header_read_timeout.as_millis(), 10_000);
}

#[test]
fn every_example_config_passes_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let output = isolated(&mut sidecar())
            .arg("check")
            .arg("--config")
            .arg(&path)
            .env_remove("JTL_SIDECAR_CONFIG")
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected config/example.toml and config/minimal.toml"
    );
}

/// The keys a document names: `table` walked down to the accepted keys (a free-form
/// table such as `ingress.claim_headers` counts as its own name), plus whatever it holds
/// that is not accepted, so both missing and extra keys show in a comparison.
fn named_keys(table: &toml::Table, prefix: &str, accepted: &[String], out: &mut Vec<String>) {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        match value {
            toml::Value::Table(inner) if !accepted.contains(&key) => {
                named_keys(inner, &format!("{key}."), accepted, out)
            }
            _ => out.push(key),
        }
    }
}

#[test]
fn accepted_keys_are_the_keys_of_the_effective_config() {
    // The list the documentation tests compare with is the config's own shape.
    let accepted = accepted_keys();
    let effective: toml::Table = load(VALID)
        .unwrap()
        .effective
        .to_redacted_toml()
        .parse()
        .unwrap();
    let mut shown = Vec::new();
    named_keys(&effective, "", &accepted, &mut shown);
    shown.sort();
    assert_eq!(shown, accepted);
    assert!(accepted.contains(&"ingress.headers.tenant_id".to_owned()));
    assert!(accepted.contains(&"ingress.claim_headers".to_owned()));
}

#[test]
fn example_toml_names_exactly_the_accepted_keys() {
    let accepted = accepted_keys();
    let example: toml::Table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let mut named = Vec::new();
    named_keys(&example, "", &accepted, &mut named);
    named.sort();
    assert_eq!(
        named, accepted,
        "config/example.toml against the accepted keys"
    );
}

#[test]
fn configuration_guide_has_one_row_per_accepted_key() {
    // docs/configuration.md: every key is a table row that starts with it, "| `a.b` |".
    let guide = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut rows: Vec<String> = guide
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_owned())
        .filter(|key| key.contains('.') && !key.contains(' '))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        accepted_keys(),
        "docs/configuration.md's key rows against the accepted keys"
    );
}
