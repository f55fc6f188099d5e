//! Configuration (SPEC §2 `check`, §3): defaults, environment overrides, and validation
//! that reports every problem with its key.

use std::process::Command;

use jtl_auth_sidecar::config::{
    load_str, ClientSecret, ConfigErrors, Flow, LoadedConfig, PublicPath, RedisPassword, Secret,
};

const VALID: &str = r#"
[jtl]
client_id = "client-1"
client_secret = "s3cret-value"
"#;

fn load(toml: &str) -> Result<LoadedConfig, ConfigErrors> {
    load_str(toml, Vec::<(String, String)>::new())
}

fn load_with_env(toml: &str, env: &[(&str, &str)]) -> Result<LoadedConfig, ConfigErrors> {
    load_str(
        toml,
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

/// The problem lines of an invalid config.
fn problems(toml: &str) -> Vec<String> {
    match load(toml) {
        Ok(_) => panic!("config must be invalid:\n{toml}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// Credentials supplied through the environment, so a test's TOML can hold any section.
const CREDENTIALS: &[(&str, &str)] = &[("JTL_SIDECAR_JTL__CLIENT_ID", "client-1")];

/// Asserts that `toml`, with credentials from the environment, is reported on `key` with
/// `reason` in the line.
fn assert_problem(toml: &str, key: &str, reason: &str) {
    let secret_given = toml.contains("client_secret");
    let mut env = CREDENTIALS.to_vec();
    if !secret_given {
        env.push(("JTL_SIDECAR_JTL__CLIENT_SECRET", "s3cret-value"));
    }
    let lines: Vec<String> = match load_with_env(toml, &env) {
        Ok(_) => panic!("config must be invalid:\n{toml}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    };
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with(&format!("{key}: ")) && line.contains(reason)),
        "expected `{key}: …{reason}…` for\n{toml}\ngot {lines:#?}"
    );
}

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jtl-auth-sidecar"))
}

/// The command without any `JTL_SIDECAR_` variable of the environment the tests run in.
fn isolated(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("JTL_SIDECAR_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `check` on a file holding `contents`: (exit code, stdout, stderr).
fn run_check(contents: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, contents).unwrap();
    let output = isolated(sidecar().arg("check").arg("--config").arg(&path))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

// ---- defaults and the examples ---------------------------------------------------------------

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
    assert_eq!(
        config.jtl.token_url.as_str(),
        "https://auth.jtl-cloud.com/oauth2/token"
    );
    assert_eq!(
        config.jtl.jwks_url.as_str(),
        "https://api.jtl-cloud.com/account/.well-known/jwks.json"
    );
    assert_eq!(
        config.jtl.client_secret,
        ClientSecret::Inline(jtl_auth_sidecar::config::Secret::new("s3cret-value"))
    );
    assert_eq!(config.session.flow, Flow::SessionToken);
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

#[test]
fn example_toml_documents_every_key() {
    // Table by table, the keys of example.toml are exactly the keys of the config.
    let example: toml::Table =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let defaults: toml::Table = load(VALID)
        .unwrap()
        .effective
        .to_redacted_toml()
        .parse()
        .unwrap();
    fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (name, value) in table {
            let key = format!("{prefix}{name}");
            match value {
                // claim_headers is free-form: the example shows one entry.
                toml::Value::Table(inner) if key != "ingress.claim_headers" => {
                    keys(inner, &format!("{key}."), out)
                }
                _ => out.push(key),
            }
        }
    }
    let (mut documented, mut all) = (Vec::new(), Vec::new());
    keys(&example, "", &mut documented);
    keys(&defaults, "", &mut all);
    documented.sort();
    all.sort();
    assert_eq!(documented, all);
}

// ---- check on the command line ------------------------------------------------------------------

#[test]
fn check_prints_the_effective_config_with_secrets_redacted() {
    let (code, stdout, _) = run_check(&format!(
        "{VALID}\n[tenants]\ndatabase_url = \"postgres://app:db-pass-123@db.internal/jtl\"\n"
    ));
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("client_secret = \"<redacted>\""),
        "{stdout}"
    );
    assert!(stdout.contains("client_id = \"client-1\""));
    assert!(
        stdout.contains("database_url = \"postgres://app:<redacted>@db.internal/jtl\""),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret-value") && !stdout.contains("db-pass-123"));
    // Defaults are shown too: the output is the effective config.
    assert!(
        stdout.contains("jwks_url = \"https://api.jtl-cloud.com/account/.well-known/jwks.json\"")
    );
    let reparsed = load(&stdout.replace("<redacted>", "x")).unwrap();
    assert_eq!(reparsed.config.jtl.client_id, "client-1");
}

#[test]
fn check_exits_2_with_one_line_per_problem() {
    let (code, stdout, stderr) = run_check("[ingress]\nupstream = \"foo\"\n");
    assert_eq!(code, Some(2));
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.contains(&"jtl.client_id: missing"), "{stderr}");
    assert!(
        lines.contains(&"ingress.upstream: not an http(s) URL: \"foo\""),
        "{stderr}"
    );
    assert!(stdout.is_empty());
}

#[test]
fn check_reads_the_path_from_jtl_sidecar_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, VALID).unwrap();
    let output = isolated(&mut sidecar())
        .arg("check")
        .env("JTL_SIDECAR_CONFIG", &path)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_of_a_missing_or_unparsable_file_exits_2() {
    let output = sidecar()
        .args(["check", "--config", "/nonexistent/sidecar.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("config: cannot read /nonexistent/sidecar.toml"));

    let (code, _, stderr) = run_check("[jtl\nclient_id = ");
    assert_eq!(code, Some(2));
    let problem_lines: Vec<&str> = stderr.lines().skip(1).collect();
    assert_eq!(problem_lines.len(), 1, "one line per problem: {stderr}");
    assert!(
        problem_lines[0].starts_with("config: TOML parse error at line"),
        "{stderr}"
    );
}

#[test]
fn version_and_help_exit_0() {
    let version = sidecar().arg("--version").output().unwrap();
    assert_eq!(version.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("jtl-auth-sidecar "));
    assert_eq!(
        sidecar().arg("--help").output().unwrap().status.code(),
        Some(0)
    );
}

// ---- environment overrides ---------------------------------------------------------------------

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

// ---- every class of invalid config ------------------------------------------------------------

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
    assert!(from_file
        .warnings
        .iter()
        .any(|w| w.starts_with("jtl.client_secret_file: cannot be read")));
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
fn app_token_flow_derives_issuer_and_keys_url() {
    let config = load(&format!(
        "{VALID}\n[session]\nflow = \"app-token\"\naudience = \"app-1\"\n"
    ))
    .unwrap()
    .config;
    assert_eq!(
        config.session.issuer.as_deref(),
        Some("https://id.jtl-cloud.com")
    );
    assert_eq!(
        config.jtl.jwks_url.as_str(),
        "https://id.jtl-cloud.com/oauth/v2/keys"
    );
    let policy = config.session.token_policy();
    assert_eq!(policy.audience.as_deref(), Some("app-1"));
}

#[test]
fn app_token_flow_asks_zitadel_for_the_service_token_with_openid() {
    let config = load(&format!(
        "{VALID}\n[session]\nflow = \"app-token\"\naudience = \"app-1\"\nissuer = \"https://id.example/\"\n"
    ))
    .unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    // `check` prints the derived values, as they are in force.
    let shown = config.effective.to_redacted_toml();
    assert!(
        shown.contains("token_url = \"https://id.example/oauth/v2/token\""),
        "{shown}"
    );
    assert!(shown.contains("scope = \"openid\""), "{shown}");
    assert!(
        shown.contains("jwks_url = \"https://id.example/oauth/v2/keys\""),
        "{shown}"
    );
    let config = config.config;
    // A trailing '/' is dropped: `iss` is compared exactly.
    assert_eq!(config.session.issuer.as_deref(), Some("https://id.example"));
    assert_eq!(
        config.jtl.token_url.as_str(),
        "https://id.example/oauth/v2/token"
    );
    assert_eq!(
        config.jtl.jwks_url.as_str(),
        "https://id.example/oauth/v2/keys"
    );
    assert_eq!(config.jtl.scope.as_deref(), Some("openid"));

    // Explicit values win; a scope without openid is valid but warned about.
    let explicit = load(&format!(
        "{VALID}\n[session]\nflow = \"app-token\"\naudience = \"app-1\"\n"
    ));
    assert!(explicit.is_ok());
    let loaded = load_with_env(
        &format!("{VALID}\n[session]\nflow = \"app-token\"\naudience = \"app-1\"\n"),
        &[
            ("JTL_SIDECAR_JTL__TOKEN_URL", "https://sso.example/token"),
            ("JTL_SIDECAR_JTL__SCOPE", "profile"),
        ],
    )
    .unwrap();
    assert_eq!(
        loaded.config.jtl.token_url.as_str(),
        "https://sso.example/token"
    );
    assert_eq!(loaded.config.jtl.scope.as_deref(), Some("profile"));
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("jtl.scope:") && w.contains("openid")),
        "{:?}",
        loaded.warnings
    );
    let with_openid = load_with_env(
        &format!("{VALID}\n[session]\nflow = \"app-token\"\naudience = \"app-1\"\n"),
        &[(
            "JTL_SIDECAR_JTL__SCOPE",
            "openid urn:zitadel:iam:org:project:id:zitadel:aud",
        )],
    )
    .unwrap();
    assert!(!with_openid
        .warnings
        .iter()
        .any(|w| w.starts_with("jtl.scope:")));

    // The session-token flow keeps JTL's legacy endpoint and sends no scope.
    let legacy = load(VALID).unwrap().config;
    assert_eq!(
        legacy.jtl.token_url.as_str(),
        "https://auth.jtl-cloud.com/oauth2/token"
    );
    assert_eq!(legacy.jtl.scope, None);
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
    assert!(local
        .warnings
        .iter()
        .all(|w| !w.starts_with("jtl.token_url:")));
}

// ---- secrets and hostile input in the output ---------------------------------------------------

#[test]
fn database_passwords_are_redacted_however_they_are_written() {
    for (url, hidden) in [
        ("postgres://app:p@ss@db/jtl", "p@ss"),
        ("postgres://app:p%20ss@db/jtl", "p%20ss"),
        ("postgres://app:hunter2@db/jtl", "hunter2"),
        (
            "postgres://app@db/jtl?password=hunter2&sslmode=require",
            "hunter2",
        ),
    ] {
        let loaded = load(&format!("{VALID}\n[tenants]\ndatabase_url = {url:?}\n")).unwrap();
        let shown = loaded.effective.to_redacted_toml();
        assert!(!shown.contains(hidden), "{url}: {shown}");
        assert!(shown.contains("<redacted>"), "{url}: {shown}");
    }
    // An unparsable URL in an error loses its user info too.
    let lines = problems(&format!(
        "{VALID}\n[tenants]\ndatabase_url = \"mysql://app:hunter2@db:70000/x\"\n"
    ));
    assert!(lines.iter().all(|l| !l.contains("hunter2")), "{lines:?}");
    assert_problem(
        "[jtl]\ntoken_url = \"htps://client:tok3n@auth.example/\"",
        "jtl.token_url",
        "not an http(s) URL",
    );
    let lines = problems("[jtl]\nclient_id = \"a\"\nclient_secret = \"b\"\ntoken_url = \"htps://client:tok3n@auth.example/\"");
    assert!(lines.iter().all(|l| !l.contains("tok3n")), "{lines:?}");
}

#[test]
fn a_secret_of_the_wrong_type_is_not_echoed() {
    let lines = problems("[jtl]\nclient_id = \"a\"\nclient_secret = 8675309123\n");
    assert_eq!(
        lines,
        ["jtl.client_secret: expected a string, found a number"]
    );
}

#[test]
fn type_errors_do_not_hide_other_problems() {
    let lines = problems(
        "[session]\nleeway_s = \"30\"\n[log]\nformat = \"xml\"\n[ingress]\nupstream = \"foo\"\n",
    );
    for key in [
        "session.leeway_s",
        "log.format",
        "ingress.upstream",
        "jtl.client_id",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{key}: "))),
            "{key} in {lines:?}"
        );
    }
}

#[test]
fn a_key_holding_a_newline_cannot_forge_a_problem_line() {
    let lines = problems(&format!("{VALID}\n[ingress]\n\"a\\nb: injected\" = 1\n"));
    assert_eq!(lines, ["ingress.\"a\\nb: injected\": unknown key"]);
    assert!(lines.iter().all(|l| !l.contains('\n')));
}

#[test]
fn environment_values_that_are_not_utf8_are_reported_by_name_only() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, "[jtl]\nclient_id = \"a\"\n").unwrap();
    let output = isolated(sidecar().arg("check").arg("--config").arg(&path))
        .env(
            "JTL_SIDECAR_JTL__CLIENT_SECRET",
            OsString::from_vec(b"zq\xffxv".to_vec()),
        )
        .env("UNRELATED_NOT_UTF8", OsString::from_vec(b"\xff".to_vec()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("jtl.client_secret: the environment variable's value is not UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("zq") && !stderr.contains("xv"), "{stderr}");
    // An unrelated variable that is not UTF-8 is none of the sidecar's business.
    let output = isolated(sidecar().arg("check").arg("--config").arg(&path))
        .env("JTL_SIDECAR_JTL__CLIENT_SECRET", "fine")
        .env("UNRELATED_NOT_UTF8", OsString::from_vec(b"\xff".to_vec()))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn token_headers_cannot_name_headers_the_proxy_manages() {
    assert_problem(
        "[ingress]\ntoken_headers = [\"cookie\"]",
        "ingress.token_headers[0]",
        "manages itself",
    );
    assert_problem(
        "[ingress]\ntoken_headers = [\"Host\"]",
        "ingress.token_headers[0]",
        "manages itself",
    );
    assert!(load(&format!(
        "{VALID}\n[ingress]\ntoken_headers = [\"x-session-token\"]\n"
    ))
    .is_ok());
}

#[test]
fn base_urls_that_get_paths_appended_take_no_query() {
    assert_problem(
        "[jtl]\napi_base_url = \"https://api.example/?v=1\"",
        "jtl.api_base_url",
        "must not contain a query",
    );
}

#[test]
fn identity_header_collisions_are_reported_beside_other_header_problems() {
    let lines = problems(&format!(
        "{VALID}\n[ingress.headers]\ntenant_id = \"X_Tenant\"\ntenant_slug = \"X-Session-Token\"\n"
    ));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ingress.headers.tenant_id: ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ingress.headers.tenant_slug: ") && l.contains("token_headers")),
        "{lines:?}"
    );
}

// ---- [shared_cache] (SPEC §12) ---------------------------------------------------------------

#[test]
fn shared_cache_is_off_by_default_and_reads_redis_urls() {
    let config = load(VALID).unwrap().config;
    assert!(config.shared_cache.redis.is_none());
    assert_eq!(config.shared_cache.key_prefix, "jtl-auth-sidecar");

    let config = load(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"rediss://app:p%40ss@cache.internal:6380/3\"\nkey_prefix = \"shop-prod\"\n"
    ))
    .unwrap()
    .config;
    let target = config.shared_cache.redis.unwrap();
    assert!(target.tls);
    assert_eq!(target.host, "cache.internal");
    assert_eq!(target.port, 6380);
    assert_eq!(target.db, 3);
    assert_eq!(target.username.as_deref(), Some("app"));
    assert_eq!(
        target.password,
        Some(RedisPassword::Inline(Secret::new("p@ss"))),
        "percent-decoded"
    );
    assert!(!format!("{target:?}").contains("p@ss"));
    assert_eq!(config.shared_cache.key_prefix, "shop-prod");

    let target = load(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"redis://[::1]\"\nredis_password_file = \"/run/secrets/redis\"\n"
    ))
    .unwrap()
    .config
    .shared_cache
    .redis
    .unwrap();
    assert!(!target.tls);
    assert_eq!(
        (target.host.as_str(), target.port, target.db),
        ("::1", 6379, 0)
    );
    assert_eq!(target.address(), "[::1]:6379");
    assert_eq!(
        target.password,
        Some(RedisPassword::File("/run/secrets/redis".into()))
    );
}

#[test]
fn shared_cache_keys_are_checked() {
    for (toml, key, reason) in [
        (
            "[shared_cache]\nredis_url = \"http://cache:6379\"",
            "shared_cache.redis_url",
            "must start with redis:// or rediss://",
        ),
        (
            "[shared_cache]\nredis_url = \"memcached://u:hunter2@cache\"",
            "shared_cache.redis_url",
            "must start with redis:// or rediss://",
        ),
        (
            "[shared_cache]\nredis_url = \"redis://cache/db0\"",
            "shared_cache.redis_url",
            "database number",
        ),
        (
            "[shared_cache]\nredis_url = \"rediss://cache/0#insecure\"",
            "shared_cache.redis_url",
            "must not contain a query or fragment",
        ),
        (
            "[shared_cache]\nredis_url = \"redis://cache?db=1\"",
            "shared_cache.redis_url",
            "must not contain a query or fragment",
        ),
        (
            "[shared_cache]\nredis_url = \"redis://\"",
            "shared_cache.redis_url",
            "names no host",
        ),
        (
            "[shared_cache]\nkey_prefix = \"\"",
            "shared_cache.key_prefix",
            "must not be empty",
        ),
        (
            "[shared_cache]\nkey_prefix = \"my app\"",
            "shared_cache.key_prefix",
            "whitespace",
        ),
        (
            "[shared_cache]\nredis_url = \"redis://:pw@127.0.0.1\"\nredis_password_file = \"/run/secrets/redis\"",
            "shared_cache.redis_password_file",
            "not both",
        ),
        (
            "[shared_cache]\nredis_urls = \"redis://127.0.0.1\"",
            "shared_cache.redis_urls",
            "unknown key",
        ),
    ] {
        assert_problem(toml, key, reason);
    }
    // The environment sets them too.
    let loaded = load_with_env(
        VALID,
        &[(
            "JTL_SIDECAR_SHARED_CACHE__REDIS_URL",
            "redis://127.0.0.1:6390/2",
        )],
    )
    .unwrap();
    assert_eq!(loaded.config.shared_cache.redis.unwrap().port, 6390);
}

#[test]
fn redis_passwords_are_redacted_in_check_output_and_problems() {
    for (url, hidden) in [
        ("redis://:hunter2@cache.internal:6379/0", "hunter2"),
        ("rediss://app:hunter2@cache.internal/1", "hunter2"),
        ("rediss://app:p%40ss@cache.internal/1", "p%40ss"),
    ] {
        let loaded = load(&format!("{VALID}\n[shared_cache]\nredis_url = {url:?}\n")).unwrap();
        let shown = loaded.effective.to_redacted_toml();
        assert!(!shown.contains(hidden), "{url}: {shown}");
        assert!(
            shown.contains(":<redacted>@cache.internal"),
            "{url}: {shown}"
        );
    }
    let (code, stdout, stderr) = run_check(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"redis://:redis-pass-9@127.0.0.1:6379/0\"\n"
    ));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("redis_url = \"redis://:<redacted>@127.0.0.1:6379/0\""),
        "{stdout}"
    );
    assert!(!stdout.contains("redis-pass-9") && !stderr.contains("redis-pass-9"));
    // Not in a problem line either, nor in a type error.
    let lines = problems(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"http://:redis-pass-9@cache/x\"\n"
    ));
    assert!(
        lines.iter().all(|l| !l.contains("redis-pass-9")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("shared_cache.redis_url: ")),
        "{lines:?}"
    );
    let lines = problems(&format!("{VALID}\n[shared_cache]\nredis_url = 8675309\n"));
    assert_eq!(
        lines,
        ["shared_cache.redis_url: expected a string, found a number"]
    );
}

#[test]
fn shared_cache_warnings() {
    let loaded = load(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"redis://cache.internal\"\n"
    ))
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("shared_cache.redis_url:") && w.contains("unencrypted")),
        "{:?}",
        loaded.warnings
    );
    let loaded = load(&format!(
        "{VALID}\n[shared_cache]\nredis_password_file = \"/nowhere\"\n"
    ))
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("shared_cache.redis_password_file:") && w.contains("ignored")),
        "{:?}",
        loaded.warnings
    );
    let loaded = load(&format!(
        "{VALID}\n[shared_cache]\nredis_url = \"rediss://cache.internal\"\nredis_password_file = \"/nowhere/redis-password\"\n"
    ))
    .unwrap();
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("shared_cache.redis_password_file:")
                && w.contains("cannot be read here")),
        "{:?}",
        loaded.warnings
    );
    assert!(!loaded.warnings.iter().any(|w| w.contains("unencrypted")));
}
