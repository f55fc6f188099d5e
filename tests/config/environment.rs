//! `JTL_SIDECAR_*` overrides: they win over the file, verbatim; unknown keys are errors.

use super::*;

#[test]
fn environment_overrides_win_over_the_file() {
    let loaded = load_with_env(
        &format!(
            "{VALID}\n[ingress]\nupstream = \"http://127.0.0.1:3000\"\nconnect_timeout_ms = 100\n"
        ),
        &[
            ("JTL_SIDECAR_INGRESS__UPSTREAM", "http://127.0.0.1:4000"),
            ("JTL_SIDECAR_INGRESS__CONNECT_TIMEOUT_MS", "250"),
            ("JTL_SIDECAR_INGRESS__FORWARD_ACCESS_TOKEN", "false"),
            (
                "JTL_SIDECAR_INGRESS__PUBLIC_PATHS",
                r#"["/health", "/static/*"]"#,
            ),
            (
                "JTL_SIDECAR_INGRESS__CLAIM_HEADERS__kid",
                "X-JTL-Customer-ID",
            ),
            ("JTL_SIDECAR_JTL__CLIENT_SECRET", "from-env"),
            ("UNRELATED", "1"),
        ],
    )
    .unwrap();
    let config = loaded.config;
    assert_eq!(config.ingress.upstream.as_str(), "http://127.0.0.1:4000/");
    assert_eq!(config.ingress.connect_timeout.as_millis(), 250);
    assert!(!config.ingress.forward_access_token);
    assert_eq!(
        config.ingress.public_paths,
        [
            PublicPath::Exact("/health".into()),
            PublicPath::Prefix("/static/".into())
        ]
    );
    assert_eq!(config.ingress.claim_headers[0].claim, "kid");
    assert_eq!(config.ingress.claim_headers[0].header, "x-jtl-customer-id");
    assert_eq!(
        config.jtl.client_secret,
        ClientSecret::Inline(jtl_auth_sidecar::config::Secret::new("from-env"))
    );
}

#[test]
fn trusted_proxies_take_ipv4_and_ipv6_networks_and_bare_addresses() {
    let entries = r#"["10.0.0.0/8", "192.168.1.7", "fd00::/8", "::1"]"#;
    let from_file = load(&format!(
        "{VALID}\n[ingress]\ntrusted_proxies = {entries}\n"
    ))
    .unwrap()
    .config;
    let from_env = load_with_env(VALID, &[("JTL_SIDECAR_INGRESS__TRUSTED_PROXIES", entries)])
        .unwrap()
        .config;
    for config in [from_file, from_env] {
        let shown: Vec<String> = config
            .ingress
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8", "::1/128"]
        );
    }
    assert!(
        load(VALID)
            .unwrap()
            .config
            .ingress
            .trusted_proxies
            .is_empty()
    );
}

#[test]
fn environment_strings_are_taken_verbatim() {
    // A numeric-looking secret must not become the number 7.
    let loaded = load_with_env(
        "",
        &[
            ("JTL_SIDECAR_JTL__CLIENT_ID", "0042"),
            ("JTL_SIDECAR_JTL__CLIENT_SECRET", "007"),
        ],
    )
    .unwrap();
    assert_eq!(loaded.config.jtl.client_id, "0042");
    assert_eq!(
        loaded.config.jtl.client_secret,
        ClientSecret::Inline(jtl_auth_sidecar::config::Secret::new("007"))
    );
}

#[test]
fn unknown_environment_keys_are_errors_but_the_config_path_is_not() {
    let errors = load_with_env(
        VALID,
        &[
            ("JTL_SIDECAR_JTL__CLIENT_SECRT", "x"),
            ("JTL_SIDECAR_CONFIG", "/etc/x.toml"),
        ],
    )
    .unwrap_err();
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("jtl.client_secrt: unknown key"),
        "{lines:?}"
    );
    assert!(lines[0].contains("JTL_SIDECAR_JTL__CLIENT_SECRT"));
}

#[test]
fn environment_values_of_the_wrong_type_are_reported() {
    let errors =
        load_with_env(VALID, &[("JTL_SIDECAR_SERVER__SHUTDOWN_GRACE_S", "soon")]).unwrap_err();
    assert_eq!(errors.0[0].key, "server.shutdown_grace_s");
}
