//! `egress.allowed_hosts` and `admin.drain_token_file`: who may call the egress listener
//! and `POST /drain`.

use super::*;

#[test]
fn allowed_hosts_is_empty_and_drain_token_file_unset_by_default() {
    let config = load(VALID).unwrap().config;
    assert!(config.egress.allowed_hosts.is_empty());
    assert_eq!(config.admin.drain_token_file, None);
}

#[test]
fn allowed_hosts_are_host_names_kept_in_lowercase() {
    let config = load(&format!(
        "{VALID}\n[egress]\nallowed_hosts = [\"Backend.Internal\", \"jtl-sidecar\", \"my_service\"]\n"
    ))
    .unwrap()
    .config;
    assert_eq!(
        config.egress.allowed_hosts,
        ["backend.internal", "jtl-sidecar", "my_service"]
    );
}

#[test]
fn an_allowed_host_with_a_scheme_port_or_path_is_refused_by_its_index() {
    for bad in [
        "http://backend.internal",
        "backend.internal:8081",
        "backend.internal/api",
        "",
        "*.internal",
        "backend..internal",
        "-backend.internal",
        "[::1]",
        "back end",
    ] {
        // The second entry is the bad one: the line names it by its index.
        let toml = format!("[egress]\nallowed_hosts = [\"ok.internal\", {bad:?}]");
        assert_problem(
            &toml,
            "egress.allowed_hosts[1]",
            "not a host name such as \"backend.internal\" (no scheme, port or path)",
        );
    }
}

#[test]
fn drain_token_file_names_a_file() {
    let config = load(&format!(
        "{VALID}\n[admin]\ndrain_token_file = \"/var/run/jtl-sidecar/drain-token\"\n"
    ))
    .unwrap()
    .config;
    assert_eq!(
        config.admin.drain_token_file.as_deref(),
        Some(std::path::Path::new("/var/run/jtl-sidecar/drain-token"))
    );
    for bad in ["/var/run/jtl-sidecar/", "/", ".."] {
        assert_problem(
            &format!("[admin]\ndrain_token_file = {bad:?}"),
            "admin.drain_token_file",
            "not a file path",
        );
    }
}

#[test]
fn both_keys_can_be_set_from_the_environment() {
    let config = load_with_env(
        VALID,
        &[
            (
                "JTL_SIDECAR_EGRESS__ALLOWED_HOSTS",
                r#"["backend.internal"]"#,
            ),
            (
                "JTL_SIDECAR_ADMIN__DRAIN_TOKEN_FILE",
                "/var/run/jtl-sidecar/drain-token",
            ),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(config.egress.allowed_hosts, ["backend.internal"]);
    assert!(config.admin.drain_token_file.is_some());
}
