//! `check` on the command line: the effective config, exit codes, `--version`, `--help`.

use super::*;

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
    // Defaults are shown too: the output is the effective config, with each derived
    // value marked.
    assert!(
        stdout.contains("jwks_url = \"https://id.jtl-cloud.com/oauth/v2/keys\" # (derived)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("token_url = \"https://id.jtl-cloud.com/oauth/v2/token\" # (derived)"),
        "{stdout}"
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
    std::fs::write(&path, with_app_id(VALID)).unwrap();
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
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("config: cannot read /nonexistent/sidecar.toml")
    );

    let (code, _, stderr) = run_check("[jtl\nclient_id = ");
    assert_eq!(code, Some(2));
    let problem_lines: Vec<&str> = stderr.lines().skip(1).collect();
    assert_eq!(problem_lines.len(), 1, "one line per problem: {stderr}");
    assert!(
        problem_lines[0].starts_with("config: TOML parse error at line"),
        "{stderr}"
    );
}

/// `--version` names the package version and, built from a git checkout, the commit
/// (build.rs); the image build passes the commit in `JTL_SIDECAR_COMMIT` instead.
#[test]
fn version_names_the_package_version_and_the_commit_it_was_built_from() {
    let version = sidecar().arg("--version").output().unwrap();
    let stdout = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let expected_version = format!("jtl-auth-sidecar {}", env!("CARGO_PKG_VERSION"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned());
    match head {
        Some(commit) => assert_eq!(stdout, format!("{expected_version} (commit {commit})")),
        None => {
            eprintln!("not a git checkout: --version names no commit");
            assert_eq!(stdout, expected_version);
        }
    }
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
