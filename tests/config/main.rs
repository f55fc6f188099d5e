//! Configuration (SPEC §2 `check`, §3): defaults, environment overrides, and validation
//! that reports every problem with its key.

mod check_command;
mod defaults;
mod derived;
mod environment;
mod invalid;
mod local_callers;
mod secrets;
mod shared_cache;

use std::process::Command;

use jtl_auth_sidecar::config::{
    ClientSecret, ConfigErrors, Flow, LoadedConfig, PublicPath, RedisPassword, Secret,
    accepted_keys, load_str,
};

const VALID: &str = r#"
[jtl]
client_id = "client-1"
client_secret = "s3cret-value"
"#;

/// The app id the tests' configs carry: app tokens (the default flow) need one.
const APP_ID: &str = "app-1";

/// `toml` with `session.audience = APP_ID` added, unless it names a flow or an audience
/// itself: the tests here are about other keys, and the default flow needs an app id.
fn with_app_id(toml: &str) -> String {
    if toml.contains("audience") || toml.contains("flow") {
        return toml.to_owned();
    }
    let line = format!("audience = {APP_ID:?}\n");
    match toml.find("[session]\n") {
        Some(at) => {
            let end = at + "[session]\n".len();
            format!("{}{line}{}", &toml[..end], &toml[end..])
        }
        None => format!("{toml}\n[session]\n{line}"),
    }
}

fn load(toml: &str) -> Result<LoadedConfig, ConfigErrors> {
    load_str(&with_app_id(toml), Vec::<(String, String)>::new())
}

fn load_with_env(toml: &str, env: &[(&str, &str)]) -> Result<LoadedConfig, ConfigErrors> {
    load_str(
        &with_app_id(toml),
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
    std::fs::write(&path, with_app_id(contents)).unwrap();
    let output = isolated(sidecar().arg("check").arg("--config").arg(&path))
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}
