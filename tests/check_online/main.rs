//! `check --online` as an operator runs it: the real binary against the JTL emulator, a
//! listening (or closed) upstream port and a tenant store; each failure gives its own
//! verdict line and exit 1, a healthy setup exits 0.

#[path = "../common/mod.rs"]
mod common;

mod app_token;
mod session_token;
mod shared_cache;
mod steps;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::redis::{PrivateRedis, test_redis_url};
use common::services::{Service, shared_server};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::emulator::{
    APP_EC_KEY_ID, APP_KEY_ID, APP_OKP_KEY_ID, DEV_APP_ID, DEV_APP_USER_ID, Emulator,
    EmulatorOptions, Failure,
};
use jtl_auth_sidecar::tenants::store::TenantStore;

const TENANT: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const USER: &str = "2f1b8d2c-5c1e-4a7e-9b3f-1d2e3f4a5b6c";

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Everything `check --online` looks at, healthy until a test breaks one part.
struct Setup {
    emulator: Emulator,
    dir: tempfile::TempDir,
    /// Keeps the upstream port open (the kernel accepts connections into the backlog).
    _upstream: std::net::TcpListener,
    upstream_url: String,
    /// `client_secret = ...` or `client_secret_file = ...`.
    secret_line: String,
    /// `jtl.token_url`; empty leaves it out (the app-token flow's default).
    token_url: String,
    /// Further `[jtl]` lines (`scope = ...`).
    jtl_extra: String,
    /// The `[session]` section: the legacy session-token flow unless a test sets another.
    session: String,
    timeout_ms: u64,
    tenants: String,
    /// The `[shared_cache]` section, empty for none (each replica its own token).
    shared_cache: String,
}

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The report line of `step` (`FAIL    credentials: ...`).
    fn line(&self, step: &str) -> &str {
        let prefix = format!("{step}: ");
        self.stdout
            .lines()
            .find(|line| line.get(8..).is_some_and(|rest| rest.starts_with(&prefix)))
            .unwrap_or_else(|| panic!("no line for {step:?} in:\n{}", self.stdout))
    }

    /// The verdict line of `step` that is not an `info` line.
    fn verdict(&self, step: &str) -> &str {
        let prefix = format!("{step}: ");
        self.stdout
            .lines()
            .filter(|line| !line.starts_with("info"))
            .find(|line| line.get(8..).is_some_and(|rest| rest.starts_with(&prefix)))
            .unwrap_or_else(|| panic!("no verdict for {step:?} in:\n{}", self.stdout))
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn assert_verdict(line: &str, verdict: &str, text: &str) {
    assert!(
        line.starts_with(&format!("{verdict:<8}")),
        "expected {verdict}: {line}"
    );
    assert!(line.contains(text), "expected {text:?} in: {line}");
}

impl Setup {
    async fn healthy() -> Setup {
        Setup::with_options(EmulatorOptions::default()).await
    }

    /// The app-token flow against the emulator as JTL's Zitadel: `session.issuer` is the
    /// emulator, `session.audience` the dev app id; `jtl.token_url`, `jtl.scope` and
    /// `jtl.jwks_url` are left to their defaults below the issuer.
    async fn app_token() -> Setup {
        let mut setup = Setup::healthy().await;
        setup.token_url = String::new();
        setup.session = format!(
            "[session]\nflow = \"app-token\"\nissuer = {:?}\naudience = {DEV_APP_ID:?}\n",
            setup.emulator.issuer()
        );
        setup
    }

    async fn with_options(options: EmulatorOptions) -> Setup {
        // The real clock: the binary checks minted session tokens against it.
        let emulator = Emulator::start(options.clone(), Clock::system())
            .await
            .expect("emulator");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("tenants.db");
        let store_url = format!("sqlite://{}", store.display());
        // The schema as `run` leaves it.
        TenantStore::open(&store_url)
            .await
            .expect("store")
            .close()
            .await;
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let upstream_url = format!("http://{}", upstream.local_addr().expect("addr"));
        Setup {
            token_url: emulator.token_url(),
            emulator,
            dir,
            _upstream: upstream,
            upstream_url,
            secret_line: format!("client_secret = {:?}", options.client_secret),
            jtl_extra: String::new(),
            session: "[session]\nflow = \"session-token\"\n".to_owned(),
            timeout_ms: 2000,
            tenants: format!("database_url = {store_url:?}"),
            shared_cache: String::new(),
        }
    }

    fn secret_file(&mut self, content: &str) {
        let path = self.dir.path().join("client-secret");
        std::fs::write(&path, content).expect("secret file");
        self.secret_line = format!("client_secret_file = {:?}", path.display().to_string());
    }

    fn write_config(&self) -> PathBuf {
        let token_url = if self.token_url.is_empty() {
            String::new()
        } else {
            format!("token_url = {:?}\n", self.token_url)
        };
        let toml = format!(
            "[ingress]\nupstream = {:?}\n\n[jtl]\nclient_id = \"emulated-client\"\n{}\n{token_url}api_base_url = {:?}\ntimeout_ms = {}\n{}\n{}\n[tenants]\n{}\n{}\n",
            self.upstream_url,
            self.secret_line,
            self.emulator.api_base_url(),
            self.timeout_ms,
            self.jtl_extra,
            self.session,
            self.tenants,
            self.shared_cache,
        );
        let path = self.dir.path().join("sidecar.toml");
        std::fs::write(&path, toml).expect("config");
        path
    }

    async fn run(&self, extra: &[&str]) -> Outcome {
        let config = self.write_config();
        let mut command = Command::new(env!("CARGO_BIN_EXE_jtl-auth-sidecar"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("JTL_SIDECAR_") {
                command.env_remove(name);
            }
        }
        command
            .arg("check")
            .arg("--config")
            .arg(&config)
            .args(extra);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("join")
            .expect("the binary runs");
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn online(&self) -> Outcome {
        self.run(&["--online"]).await
    }

    async fn with_session_token(&self, token: &str) -> Outcome {
        self.run(&["--online", "--session-token", token]).await
    }

    fn claims(&self, lifetime_s: i64) -> serde_json::Value {
        let mut claims =
            self.emulator
                .session_claims(TENANT, USER, "acme", Duration::from_secs(3600));
        let now = Clock::system().now_s();
        claims["exp"] = serde_json::json!(now + lifetime_s);
        claims
    }

    fn kid(&self) -> String {
        self.emulator.default_kid().expect("a key")
    }
}
