//! Every class of invalid config, each reported with its key, all at once; warnings.

use super::*;

#[test]
fn unknown_keys_are_all_reported() {
    let lines = problems(&format!(
        "{VALID}\n[ingress]\nlisten_addr = \"x\"\n[bogus]\na = 1\n[jtl.extra]\n"
    ));
    assert!(
        lines.contains(&"ingress.listen_addr: unknown key".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"bogus: unknown key".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"jtl.extra: unknown key".to_owned()),
        "{lines:?}"
    );
}

#[test]
fn wrong_types_are_all_reported() {
    let lines = problems(&format!(
        "{VALID}\n[ingress]\nconnect_timeout_ms = \"2s\"\nforward_access_token = \"yes\"\npublic_paths = \"/a\"\n[session]\nleeway_s = -5\n"
    ));
    for key in [
        "ingress.connect_timeout_ms",
        "ingress.forward_access_token",
        "ingress.public_paths",
        "session.leeway_s",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{key}: expected"))),
            "{key} in {lines:?}"
        );
    }
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let lines = problems(
        "[ingress]\nlisten = \"nope\"\nupstream = \"ftp://x\"\n[jtl]\ntoken_url = \"x\"\n[session]\nleeway_s = 100000\n[log]\nformat = \"xml\"\n",
    );
    let keys: Vec<&str> = lines
        .iter()
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    for key in [
        "ingress.listen",
        "ingress.upstream",
        "jtl.client_id",
        "jtl.client_secret",
        "jtl.token_url",
        "session.leeway_s",
        "log.format",
    ] {
        assert!(keys.contains(&key), "{key} missing from {lines:#?}");
    }
}

#[test]
fn addresses_that_do_not_parse() {
    assert_problem(
        "[ingress]\nlisten = \"localhost:8080\"",
        "ingress.listen",
        "not an IP address with a port",
    );
    assert_problem(
        "[admin]\nlisten = \"0.0.0.0\"",
        "admin.listen",
        "not an IP address with a port",
    );
    assert_problem(
        "[egress]\nlisten = \"127.0.0.1:99999\"",
        "egress.listen",
        "not an IP address with a port",
    );
    assert_problem(
        "[admin]\nlisten = \"0.0.0.0:8080\"",
        "admin.listen",
        "same port as ingress.listen",
    );
}

#[test]
fn urls_that_are_not_http() {
    assert_problem(
        "[ingress]\nupstream = \"foo\"",
        "ingress.upstream",
        "not an http(s) URL: \"foo\"",
    );
    assert_problem("[ingress]\nupstream = \"\"", "ingress.upstream", "missing");
    assert_problem(
        "[jtl]\ntoken_url = \"ftp://auth.example/token\"",
        "jtl.token_url",
        "not an http(s) URL",
    );
    assert_problem(
        "[jtl]\napi_base_url = \"https://\"",
        "jtl.api_base_url",
        "not an http(s) URL",
    );
    assert_problem(
        "[jtl]\njwks_url = \"file:///etc/jwks.json\"",
        "jtl.jwks_url",
        "not an http(s) URL",
    );
    assert_problem(
        "[jtl]\ntoken_url = \"https://user:pw@auth.example/token\"",
        "jtl.token_url",
        "credentials",
    );
}

#[test]
fn non_loopback_egress_needs_allow_non_loopback() {
    assert_problem(
        "[egress]\nlisten = \"0.0.0.0:8081\"",
        "egress.listen",
        "allow_non_loopback",
    );
    let loaded = load(&format!(
        "{VALID}\n[egress]\nlisten = \"0.0.0.0:8081\"\nallow_non_loopback = true\n"
    ))
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("egress.listen:")),
        "{:?}",
        loaded.warnings
    );
    let disabled = load(&format!("{VALID}\n[egress]\nlisten = \"\"\n")).unwrap();
    assert!(disabled.config.egress.listen.is_none());
    let ipv6_loopback = load(&format!("{VALID}\n[egress]\nlisten = \"[::1]:8081\"\n")).unwrap();
    assert!(ipv6_loopback.config.egress.listen.is_some());
}

#[test]
fn credentials_are_required_once() {
    assert_eq!(
        problems("[jtl]\nclient_secret = \"x\""),
        ["jtl.client_id: missing"]
    );
    assert_eq!(
        problems("[jtl]\nclient_id = \"a\""),
        ["jtl.client_secret: missing (set jtl.client_secret or jtl.client_secret_file)"]
    );
    assert_problem(
        "[jtl]\nclient_secret = \"x\"\nclient_secret_file = \"/run/secret\"",
        "jtl.client_secret",
        "not both",
    );
    let from_file =
        load("[jtl]\nclient_id = \"a\"\nclient_secret_file = \"/nonexistent/secret\"\n").unwrap();
    assert_eq!(
        from_file.config.jtl.client_secret,
        ClientSecret::File("/nonexistent/secret".into())
    );
    assert!(
        from_file
            .warnings
            .iter()
            .any(|w| w.starts_with("jtl.client_secret_file: cannot be read"))
    );
}

#[test]
fn zero_and_absurd_limits() {
    assert_problem(
        "[ingress]\nconnect_timeout_ms = 0",
        "ingress.connect_timeout_ms",
        "0 is out of range",
    );
    assert_problem(
        "[ingress]\nrequest_timeout_ms = 0",
        "ingress.request_timeout_ms",
        "out of range",
    );
    assert_problem(
        "[egress]\nrequest_timeout_ms = 0",
        "egress.request_timeout_ms",
        "out of range",
    );
    assert_problem("[jtl]\ntimeout_ms = 0", "jtl.timeout_ms", "out of range");
    assert_problem(
        "[session]\nmax_token_bytes = 0",
        "session.max_token_bytes",
        "out of range",
    );
    assert_problem(
        "[session]\nmax_token_bytes = 100000000",
        "session.max_token_bytes",
        "out of range",
    );
    assert_problem(
        "[session]\njwks_refresh_interval_s = 0",
        "session.jwks_refresh_interval_s",
        "out of range",
    );
    assert_problem(
        "[session]\njwks_min_refetch_interval_s = 0",
        "session.jwks_min_refetch_interval_s",
        "out of range",
    );
    assert_problem(
        "[session]\nleeway_s = 86400",
        "session.leeway_s",
        "out of range",
    );
    assert_problem(
        "[session]\nverified_cache_entries = 1000000000",
        "session.verified_cache_entries",
        "out of range",
    );
    assert_problem(
        "[egress]\nmax_retry_body_bytes = 10000000000",
        "egress.max_retry_body_bytes",
        "out of range",
    );
    assert_problem(
        "[server]\nheader_read_timeout_ms = 0",
        "server.header_read_timeout_ms",
        "out of range",
    );
    assert_problem(
        "[server]\nshutdown_grace_s = 100000",
        "server.shutdown_grace_s",
        "out of range",
    );
    assert_problem(
        "[session]\njwks_refresh_interval_s = 5\njwks_min_refetch_interval_s = 10",
        "session.jwks_min_refetch_interval_s",
        "not be longer than",
    );
    // Zero is meaningful where documented: no cache, no grace, no leeway.
    assert!(load(&format!("{VALID}\n[session]\nverified_cache_entries = 0\nleeway_s = 0\n[server]\nshutdown_grace_s = 0\n")).is_ok());
}

#[test]
fn trusted_proxies_must_be_cidrs() {
    for (entries, bad) in [
        (r#"["10.0.0.0/8", "proxy.internal"]"#, 1),
        (r#"["10.0.0.0/33"]"#, 0),
        (r#"["fd00::/129"]"#, 0),
        (r#"["10.0.0/8"]"#, 0),
        (r#"[""]"#, 0),
        (r#"["::1", "10.0.0.0/ 8"]"#, 1),
    ] {
        assert_problem(
            &format!("[ingress]\ntrusted_proxies = {entries}"),
            &format!("ingress.trusted_proxies[{bad}]"),
            "not a CIDR",
        );
    }
    // One line per entry, naming what was written.
    let lines = problems(&format!(
        "{VALID}\n[ingress]\ntrusted_proxies = [\"lb\", \"10.0.0.0/8\", \"1.2.3.4/40\"]\n"
    ));
    let cidr_lines: Vec<&String> = lines.iter().filter(|l| l.contains("not a CIDR")).collect();
    assert_eq!(cidr_lines.len(), 2, "{lines:?}");
    assert!(
        cidr_lines[0].starts_with("ingress.trusted_proxies[0]: ")
            && cidr_lines[0].ends_with("\"lb\"")
    );
    assert!(
        cidr_lines[1].starts_with("ingress.trusted_proxies[2]: ")
            && cidr_lines[1].ends_with("\"1.2.3.4/40\"")
    );
}

#[test]
fn public_paths_must_be_plain() {
    assert_problem(
        "[ingress]\npublic_paths = [\"health\"]",
        "ingress.public_paths[0]",
        "start with '/'",
    );
    assert_problem(
        "[ingress]\npublic_paths = [\"/ok\", \"/a/../b\"]",
        "ingress.public_paths[1]",
        "dot segment",
    );
    assert_problem(
        "[ingress]\npublic_paths = [\"/a%2Fb\"]",
        "ingress.public_paths[0]",
        "'%'",
    );
    assert_problem(
        "[ingress]\npublic_paths = [\"/a?x=1\"]",
        "ingress.public_paths[0]",
        "'?'",
    );
    assert_problem(
        "[ingress]\npublic_paths = [\"/a*\"]",
        "ingress.public_paths[0]",
        "whole last segment",
    );
    assert_problem(
        "[ingress]\npublic_paths = [\"/*/x\"]",
        "ingress.public_paths[0]",
        "whole last segment",
    );
    assert_problem(
        "[ingress]\npublic_paths = [\"/*\"]",
        "ingress.public_paths[0]",
        "every path public",
    );
}

#[test]
fn header_names_are_checked() {
    assert_problem(
        "[ingress]\ntoken_headers = []",
        "ingress.token_headers",
        "at least one",
    );
    assert_problem(
        "[ingress]\ntoken_headers = [\"bad header\"]",
        "ingress.token_headers[0]",
        "not a valid header name",
    );
    assert_problem(
        "[ingress]\ntoken_headers = [\"authorization\", \"Authorization\"]",
        "ingress.token_headers[1]",
        "listed twice",
    );
    assert_problem(
        "[ingress.headers]\ntenant_id = \"X_Tenant_ID\"",
        "ingress.headers.tenant_id",
        "contains '_'",
    );
    assert_problem(
        "[ingress.headers]\nuser_id = \"Host\"",
        "ingress.headers.user_id",
        "manages itself",
    );
    assert_problem(
        "[ingress.headers]\nuser_id = \"X-Tenant-ID\"",
        "ingress.headers.user_id",
        "already set by ingress.headers.tenant_id",
    );
    assert_problem(
        "[ingress.claim_headers]\nkid = \"x-tenant-slug\"",
        "ingress.claim_headers.kid",
        "already set by",
    );
    assert_problem(
        "[ingress.claim_headers]\nkid = \"X-Session-Token\"",
        "ingress.claim_headers.kid",
        "also listed in ingress.token_headers",
    );
    assert_problem(
        "[ingress.claim_headers]\nkid = 5",
        "ingress.claim_headers.kid",
        "expected a header name",
    );
}

#[test]
fn cors_origins_flow_store_and_log_are_checked() {
    assert_problem(
        "[ingress]\ncors_allowed_origins = [\"https://app.example/\"]",
        "ingress.cors_allowed_origins[0]",
        "not an origin",
    );
    assert!(load(&format!("{VALID}\n[ingress]\ncors_allowed_origins = [\"https://app.example\", \"http://localhost:5173\"]\n")).is_ok());
    assert_problem("[session]\nflow = \"oauth\"", "session.flow", "must be");
    assert_problem(
        "[session]\nflow = \"app-token\"",
        "session.audience",
        "missing",
    );
    assert_problem(
        "[tenants]\ndatabase_url = \"mysql://x/y\"",
        "tenants.database_url",
        "sqlite:// or postgres://",
    );
    assert_problem(
        "[tenants]\ndatabase_url = \"sqlite://\"",
        "tenants.database_url",
        "names no SQLite file",
    );
    // A URL the PostgreSQL driver would refuse at start-up is a config error now.
    assert_problem(
        "[tenants]\ndatabase_url = \"postgres://app:pw@db.internal/jtl?sslmode=sometimes\"",
        "tenants.database_url",
        "not usable",
    );
    assert_problem(
        "[tenants]\nconnect_path = \"connect\"",
        "tenants.connect_path",
        "start with '/'",
    );
    assert_problem(
        "[log]\nlevel = \"loud\"",
        "log.level",
        "not a level or filter",
    );
    assert_problem("[log]\nformat = \"xml\"", "log.format", "must be");
}

#[test]
fn warnings_name_risky_but_valid_settings() {
    let loaded = load_with_env(
        VALID,
        &[("JTL_SIDECAR_JTL__TOKEN_URL", "http://auth.example/token")],
    )
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("jtl.token_url:") && w.contains("unencrypted")),
        "{:?}",
        loaded.warnings
    );
    let local = load_with_env(
        VALID,
        &[("JTL_SIDECAR_JTL__TOKEN_URL", "http://127.0.0.1:9999/token")],
    )
    .unwrap();
    assert!(
        local
            .warnings
            .iter()
            .all(|w| !w.starts_with("jtl.token_url:"))
    );
}
