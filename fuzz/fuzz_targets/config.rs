//! The config loader (`config::load_str`: TOML text plus `JTL_SIDECAR_<SECTION>__<KEY>`
//! overrides, never the process environment) on arbitrary input, and the URL redaction
//! that `check` prints the effective config with.
//!
//! Input: TOML text, then optionally a NUL byte and environment lines `NAME=VALUE`
//! (`JTL_SIDECAR_` is put in front of names that lack it), e.g.
//! `[ingress]\nlisten = "0.0.0.0:8080"\n\0INGRESS__UPSTREAM=http://127.0.0.1:3000`.
//!
//! Oracles besides "no panic": a refused config names at least one problem, each on one
//! line; an accepted config's redacted TOML parses again and hides the client secret;
//! redacted URLs keep no password (user info or `password`/`secret` query parameters).

#![no_main]

use jtl_auth_sidecar::config::{ENV_PREFIX, load_str, redact_url_password};
use libfuzzer_sys::fuzz_target;
use url::Url;

const REDACTED: &str = "<redacted>";

fn check_redacted(text: &str) {
    let shown = redact_url_password(text);
    let Ok(original) = Url::parse(text) else {
        return;
    };
    if let Some(password) = original.password().filter(|p| !p.is_empty()) {
        // The authority of what is shown: after "://", up to the path, query or fragment.
        let authority = shown.split_once("://").map_or("", |(_, rest)| {
            rest.split(['/', '?', '#']).next().unwrap_or_default()
        });
        let userinfo = format!("{}:{password}@", original.username());
        assert!(
            !authority.contains(&userinfo),
            "the password stays in {shown:?}"
        );
    }
    let Ok(url) = Url::parse(&shown) else {
        return;
    };
    assert!(
        matches!(url.password(), None | Some("%3Credacted%3E")),
        "the password stays in {shown:?}"
    );
    for (name, value) in url.query_pairs() {
        let name = name.to_ascii_lowercase();
        if name.contains("password") || name.contains("secret") {
            assert_eq!(value, REDACTED, "{name} stays in {shown:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (toml_text, env_text) = text.split_once('\0').unwrap_or((text, ""));
    let env: Vec<(String, String)> = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| {
            let name = if name.starts_with(ENV_PREFIX) {
                name.to_owned()
            } else {
                format!("{ENV_PREFIX}{name}")
            };
            (name, value.to_owned())
        })
        .collect();
    for (_, value) in &env {
        check_redacted(value);
    }
    if toml_text.len() < 256 {
        check_redacted(toml_text);
    }

    match load_str(toml_text, env) {
        Ok(loaded) => {
            let shown = loaded.effective.to_redacted_toml();
            let table: toml::Table = shown.parse().expect("the redacted config is TOML");
            let secret = &loaded.effective.jtl.client_secret;
            if !secret.is_empty() {
                assert_eq!(table["jtl"]["client_secret"].as_str(), Some(REDACTED));
            }
            check_redacted(&loaded.effective.tenants.database_url);
            check_redacted(&loaded.effective.shared_cache.redis_url);
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refused config names a problem");
            for problem in &errors.0 {
                let line = problem.to_string();
                assert!(
                    !line.contains('\n'),
                    "a problem on more than one line: {line:?}"
                );
            }
        }
    }
});
