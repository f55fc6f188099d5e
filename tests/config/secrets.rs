//! Secrets and hostile input in `check`'s output and problem lines.

use super::*;

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
    let lines = problems(
        "[jtl]\nclient_id = \"a\"\nclient_secret = \"b\"\ntoken_url = \"htps://client:tok3n@auth.example/\"",
    );
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
    std::fs::write(&path, with_app_id("[jtl]\nclient_id = \"a\"\n")).unwrap();
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
    assert!(
        load(&format!(
            "{VALID}\n[ingress]\ntoken_headers = [\"x-session-token\"]\n"
        ))
        .is_ok()
    );
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
