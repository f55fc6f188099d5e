//! `check --online` as an operator runs it: the real binary against the JTL emulator, a
//! listening (or closed) upstream port and a tenant store; each failure gives its own
//! verdict line and exit 1, a healthy setup exits 0.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::redis::{test_redis_url, PrivateRedis};
use jtl_auth_sidecar::clock::Clock;
use jtl_auth_sidecar::emulator::{
    Emulator, EmulatorOptions, Failure, APP_EC_KEY_ID, APP_KEY_ID, APP_OKP_KEY_ID, DEV_APP_ID,
    DEV_APP_USER_ID,
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
    /// The `[session]` section, empty for the defaults (the session-token flow).
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
            session: String::new(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_passes_every_step_and_exits_0() {
    let setup = Setup::healthy().await;
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(out.line("token endpoint"), "ok", "answered");
    assert_verdict(
        out.line("credentials"),
        "ok",
        "accepted for client_id \"emulated-client\"",
    );
    assert_verdict(
        out.line("token lifetime"),
        "ok",
        "3600 s (60 minutes) as received in expires_in",
    );
    assert_verdict(
        out.line("JWKS"),
        "ok",
        "answered HTTP 200 to the access token",
    );
    assert_verdict(
        out.line("keys"),
        "ok",
        "1 usable Ed25519 key (`emulator-key-1`); none skipped",
    );
    assert_verdict(out.line("tenant store"), "ok", "table jtl_tenants present");
    assert_verdict(out.line("upstream"), "ok", "accepts connections");
    assert_verdict(
        out.line("shared cache"),
        "skipped",
        "shared_cache.redis_url is \"\": each replica gets its own access token",
    );
    assert!(out.stderr.contains("online check passed"), "{}", out.stderr);
    // The offline part is unchanged: the effective config comes first.
    assert!(out.stdout.starts_with("[ingress]"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_online_nothing_is_called() {
    let setup = Setup::healthy().await;
    let out = setup.run(&[]).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stdout.contains("token endpoint"), "{}", out.stdout);
    assert_eq!(setup.emulator.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_still_exits_2_before_any_call() {
    let mut setup = Setup::healthy().await;
    setup.upstream_url = "foo".into();
    let out = setup.online().await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("ingress.upstream"), "{}", out.stderr);
    assert_eq!(setup.emulator.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_invalid_client_with_the_guides_advice() {
    let mut setup = Setup::healthy().await;
    setup.secret_line = "client_secret = \"not-the-secret\"".into();
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("token endpoint"), "ok", "answered");
    let line = out.line("credentials");
    assert_verdict(line, "FAIL", "invalid_client");
    assert!(line.contains("or client id and secret swapped"), "{line}");
    assert!(
        line.contains("nothing looks wrong with the values here"),
        "{line}"
    );
    assert!(!line.contains("not-the-secret"), "{line}");
    for step in ["token lifetime", "JWKS", "keys"] {
        assert_verdict(
            out.line(step),
            "skipped",
            "the credentials were not accepted",
        );
    }
    // The other checks still run.
    assert_verdict(out.line("upstream"), "ok", "accepts connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trailing_newline_in_the_secret_file_is_named() {
    let mut setup = Setup::healthy().await;
    setup.secret_file("emulated-secret\n");
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("credentials");
    assert_verdict(line, "FAIL", "invalid_client");
    assert!(
        line.contains("jtl.client_secret_file") && line.contains("ends with a trailing newline"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_that_is_down_is_connection_refused() {
    let mut setup = Setup::healthy().await;
    setup.token_url = format!("http://127.0.0.1:{}/oauth2/token", closed_port());
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("token endpoint"), "FAIL", "connection refused");
    assert_verdict(
        out.line("credentials"),
        "skipped",
        "the token endpoint was not reached",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_endpoint_is_a_timeout() {
    let mut setup = Setup::healthy().await;
    setup.timeout_ms = 200;
    setup
        .emulator
        .set_token_failure(Failure::Delay(Duration::from_secs(3)));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("token endpoint"),
        "FAIL",
        "no response within 200 ms (jtl.timeout_ms)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_tls_failure() {
    let setup = Setup::with_options(EmulatorOptions {
        tls: true,
        ..EmulatorOptions::default()
    })
    .await;
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("token endpoint"), "FAIL", "TLS handshake failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_401_says_the_token_was_not_accepted_for_the_jwks() {
    let setup = Setup::healthy().await;
    setup.emulator.set_jwks_failure(Failure::Status(401));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("credentials"), "ok", "accepted");
    assert_verdict(
        out.line("JWKS"),
        "FAIL",
        "the access token was not accepted for the JWKS",
    );
    assert_verdict(out.line("keys"), "skipped", "the key set was not fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_404_names_the_url_settings() {
    let setup = Setup::healthy().await;
    setup.emulator.set_jwks_failure(Failure::Status(404));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("JWKS"),
        "FAIL",
        "HTTP 404: wrong jtl.api_base_url / jtl.jwks_url",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_key_set_fails_the_keys_step() {
    let setup = Setup::healthy().await;
    setup.emulator.set_published(&setup.kid(), false);
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("JWKS"), "ok", "answered HTTP 200");
    assert_verdict(
        out.line("keys"),
        "FAIL",
        "no usable Ed25519 signing key (0 skipped): the document's \"keys\" array is empty",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_store_that_is_down_fails_its_step() {
    let mut setup = Setup::healthy().await;
    setup.tenants = format!(
        "database_url = \"postgres://postgres:hunter2@127.0.0.1:{}/db\"",
        closed_port()
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("tenant store");
    assert_verdict(line, "FAIL", "connection refused");
    assert!(
        line.contains("postgres://postgres:<redacted>@127.0.0.1"),
        "{line}"
    );
    assert!(!out.all().contains("hunter2"), "{}", out.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_store_in_a_missing_directory_fails_and_is_not_created() {
    let mut setup = Setup::healthy().await;
    let missing = setup.dir.path().join("no-such-dir");
    setup.tenants = format!(
        "database_url = \"sqlite://{}/tenants.db\"",
        missing.display()
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("tenant store"), "FAIL", "does not exist");
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sqlite_file_passes_without_being_created() {
    let mut setup = Setup::healthy().await;
    let file = setup.dir.path().join("fresh.db");
    setup.tenants = format!("database_url = \"sqlite://{}\"", file.display());
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("tenant store"),
        "ok",
        "does not exist yet (`run` creates it",
    );
    assert!(!file.exists(), "check created the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_step_is_skipped_when_connect_tenant_is_off() {
    let mut setup = Setup::healthy().await;
    setup.tenants = "connect_path = \"\"".into();
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("tenant store"),
        "skipped",
        "tenants.connect_path is \"\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_is_connection_refused() {
    let mut setup = Setup::healthy().await;
    setup.upstream_url = format!("http://127.0.0.1:{}", closed_port());
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("upstream"), "FAIL", "connection refused");
    assert_verdict(out.line("keys"), "ok", "usable");
}

// --- --session-token ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_session_token_prints_its_claims_and_valid() {
    let setup = Setup::healthy().await;
    let token = setup
        .emulator
        .mint(&setup.claims(3600), &setup.kid(), false)
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let claims = out.line("session token");
    assert_verdict(
        claims,
        "info",
        &format!("tenantId \"{TENANT}\", userId \"{USER}\", tenantSlug \"acme\""),
    );
    assert!(claims.contains("header kid none"), "{claims}");
    assert_verdict(
        out.verdict("session token"),
        "ok",
        "valid: signed by key `emulator-key-1`",
    );
    assert!(
        out.verdict("session token")
            .contains("expires in 59 minutes")
            || out
                .verdict("session token")
                .contains("expires in 60 minutes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_token_says_how_long_ago() {
    let setup = Setup::healthy().await;
    let token = setup
        .emulator
        .mint(&setup.claims(-200), &setup.kid(), false)
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("session token"),
        "FAIL",
        "The session token has expired. It expired 3 minutes ago",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_with_an_unknown_kid_lists_the_known_ones() {
    let setup = Setup::healthy().await;
    let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "abc"});
    let token = setup
        .emulator
        .mint_with_header(&header, &setup.claims(3600), &setup.kid())
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("session token"),
        "FAIL",
        "signed by an unknown key `abc`. The key set has: `emulator-key-1`.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_signed_by_another_key_does_not_match_any() {
    let setup = Setup::healthy().await;
    setup.emulator.add_key("unpublished");
    setup.emulator.set_published("unpublished", false);
    let token = setup
        .emulator
        .mint(&setup.claims(3600), "unpublished", false)
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("session token"),
        "FAIL",
        "signature does not match any of the 1 known keys",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_session_token_says_why() {
    let setup = Setup::healthy().await;
    let out = setup.with_session_token("not-a-token").await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("session token"),
        "FAIL",
        "malformed: it does not have exactly three dot-separated parts",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_token_needs_online() {
    let setup = Setup::healthy().await;
    let out = setup.run(&["--session-token", "x.y.z"]).await;
    assert_eq!(out.code, Some(2), "{}", out.all());
    assert!(out.stderr.contains("--online"), "{}", out.stderr);
    assert_eq!(setup.emulator.token_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_secret_nor_token_appears_in_the_output() {
    let mut setup = Setup::healthy().await;
    let token = setup
        .emulator
        .mint(&setup.claims(-200), &setup.kid(), false)
        .expect("token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    setup.secret_file("emulated-secret\n");
    let failing = setup.with_session_token(&token).await;
    for output in [out.all(), failing.all()] {
        assert!(!output.contains("emulated-secret"), "{output}");
        assert!(!output.contains(&token), "{output}");
        // Access tokens and session tokens are JWTs: none, not even a part of one.
        assert!(!output.contains("eyJ"), "{output}");
        for part in token.split('.') {
            assert!(!output.contains(part), "{output}");
        }
    }
    assert!(
        failing.line("credentials").contains("secret fingerprint"),
        "{}",
        failing.stdout
    );
}

/// The PostgreSQL store of `TEST_DATABASE_URL`, in a fresh schema: absent table first,
/// then present once `run`'s store has created it. Skipped (loudly) without the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_store_is_looked_at_without_being_migrated() {
    let Ok(server) = std::env::var("TEST_DATABASE_URL") else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n!!! SKIPPED PostgreSQL test a_postgres_store_is_looked_at_without_being_migrated: \
             TEST_DATABASE_URL is not set (.ci/run sets it to the local server) !!!"
        );
        return;
    };
    let schema = format!("jtl_check_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&server)
        .await
        .expect("TEST_DATABASE_URL reachable");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .expect("create schema");
    let separator = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{separator}options=-c%20search_path%3D{schema}");

    let mut setup = Setup::healthy().await;
    setup.tenants = format!("database_url = {url:?}");
    let before = setup.online().await;
    let created = async {
        let store = TenantStore::open(&url).await.expect("store");
        store.count().await.expect("schema created");
        store.close().await;
    };
    created.await;
    let after = setup.online().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop schema");
    admin.close().await;

    assert_eq!(before.code, Some(0), "{}", before.all());
    assert_verdict(
        before.line("tenant store"),
        "ok",
        "table jtl_tenants not there yet (`run` creates it)",
    );
    assert_eq!(after.code, Some(0), "{}", after.all());
    assert_verdict(
        after.line("tenant store"),
        "ok",
        "table jtl_tenants present",
    );
}

// --- the app-token flow (SPEC §11) ---------------------------------------------------

impl Setup {
    /// An app token for [`DEV_APP_ID`] with `aud` and `urn:jtl:app_id` as given.
    fn app_claims(&self, audience: serde_json::Value, app_id: Option<&str>) -> serde_json::Value {
        self.emulator.app_token_claims(
            TENANT,
            DEV_APP_USER_ID,
            &audience,
            app_id,
            Duration::from_secs(3600),
        )
    }

    fn app_token_for(&self, claims: &serde_json::Value) -> String {
        self.emulator
            .mint_app_token(claims, APP_KEY_ID)
            .expect("app token")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_token_flow_passes_every_step_with_discovery_and_exits_0() {
    let setup = Setup::app_token().await;
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let token_endpoint = out.line("token endpoint");
    assert_verdict(
        token_endpoint,
        "ok",
        &format!(
            "{} answered (scope \"openid\" sent)",
            setup.emulator.app_token_url()
        ),
    );
    assert_verdict(
        out.line("credentials"),
        "ok",
        "accepted for client_id \"emulated-client\"",
    );
    assert_verdict(
        out.line("token lifetime"),
        "ok",
        "3600 s (60 minutes) as received in expires_in",
    );
    assert_verdict(
        out.line("JWKS"),
        "ok",
        &format!(
            "{} answered HTTP 200 without a bearer (Zitadel's key set is public)",
            setup.emulator.app_keys_url()
        ),
    );
    let keys = out.line("keys");
    assert_verdict(
        keys,
        "ok",
        &format!("1 usable RSA key (`{APP_KEY_ID}` 2048 bits)"),
    );
    assert!(
        keys.contains(&format!(
            "2 keys of other types skipped (`{APP_EC_KEY_ID}`, `{APP_OKP_KEY_ID}`), as expected"
        )),
        "{keys}"
    );
    assert_verdict(
        out.line("discovery"),
        "ok",
        &format!(
            "{}: issuer, jwks_uri and token_endpoint match session.issuer, jtl.jwks_url and jtl.token_url",
            setup.emulator.discovery_url()
        ),
    );
    assert_verdict(out.line("tenant store"), "ok", "table jtl_tenants present");
    assert_verdict(out.line("upstream"), "ok", "accepts connections");
    assert!(out.stderr.contains("online check passed"), "{}", out.stderr);
    // Zitadel's endpoints, not the legacy ones.
    assert_eq!(setup.emulator.app_token_requests(), 1);
    assert_eq!(setup.emulator.app_keys_requests(), 1);
    assert_eq!(setup.emulator.discovery_requests(), 1);
    assert_eq!(setup.emulator.token_requests(), 0);
    assert_eq!(setup.emulator.jwks_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_token_flow_has_no_discovery_step() {
    let setup = Setup::healthy().await;
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(!out.stdout.contains("discovery:"), "{}", out.stdout);
    assert_eq!(setup.emulator.discovery_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_issuer_that_differs_fails_naming_session_issuer() {
    let setup = Setup::app_token().await;
    let mut document = setup.emulator.discovery_document();
    document["issuer"] = serde_json::json!("https://id.jtl-cloud.com");
    setup.emulator.set_discovery_document(Some(document));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("discovery");
    assert_verdict(
        line,
        "FAIL",
        &format!(
            "issuer is \"https://id.jtl-cloud.com\", not session.issuer {:?}",
            setup.emulator.issuer()
        ),
    );
    assert!(
        line.contains("set session.issuer = \"https://id.jtl-cloud.com\""),
        "{line}"
    );
    assert!(!line.contains("jwks_uri is"), "{line}");
    // The other steps do not depend on it.
    assert_verdict(out.line("keys"), "ok", "1 usable RSA key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_jwks_uri_that_differs_fails_naming_jtl_jwks_url() {
    let setup = Setup::app_token().await;
    let mut document = setup.emulator.discovery_document();
    document["jwks_uri"] = serde_json::json!("https://id.jtl-cloud.com/oauth/v2/keys");
    setup.emulator.set_discovery_document(Some(document));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("discovery");
    assert_verdict(
        line,
        "FAIL",
        &format!(
            "jwks_uri is \"https://id.jtl-cloud.com/oauth/v2/keys\", not jtl.jwks_url {:?}",
            setup.emulator.app_keys_url()
        ),
    );
    assert!(
        line.contains("set jtl.jwks_url = \"https://id.jtl-cloud.com/oauth/v2/keys\""),
        "{line}"
    );
    assert!(!line.contains("not session.issuer"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_token_endpoint_that_differs_fails_naming_jtl_token_url() {
    let mut setup = Setup::app_token().await;
    // Configured explicitly to the legacy endpoint, which Zitadel does not publish.
    setup.token_url = setup.emulator.token_url();
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("discovery");
    assert_verdict(
        line,
        "FAIL",
        &format!(
            "token_endpoint is {:?}, not jtl.token_url {:?}: set jtl.token_url = {:?} (or leave it unset",
            setup.emulator.app_token_url(),
            setup.emulator.token_url(),
            setup.emulator.app_token_url(),
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_discovery_document_fails() {
    let setup = Setup::app_token().await;
    setup.emulator.set_discovery_failure(Failure::Status(404));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("discovery"),
        "FAIL",
        &format!("{} answered HTTP 404", setup.emulator.discovery_url()),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_answer_that_is_not_json_fails() {
    let setup = Setup::app_token().await;
    setup
        .emulator
        .set_discovery_document(Some(serde_json::json!(["not", "an", "object"])));
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("discovery"),
        "FAIL",
        "the answer is not a JSON object",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_without_openid_fails_the_token_endpoint_with_zitadels_advice() {
    let mut setup = Setup::app_token().await;
    setup.jtl_extra = "scope = \"profile\"".into();
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("token endpoint");
    assert_verdict(
        line,
        "FAIL",
        "refused the scope: scope \"profile\" sent, HTTP 400 invalid_scope",
    );
    assert!(line.contains("include openid in jtl.scope"), "{line}");
    assert!(line.contains("jtl.scope = \"openid profile\""), "{line}");
    assert_verdict(
        out.line("credentials"),
        "skipped",
        "the scope was refused before a token was handed out",
    );
    assert_verdict(out.line("token lifetime"), "skipped", "no access token");
    // The key set is public: it is checked all the same.
    assert_verdict(out.line("JWKS"), "ok", "without a bearer");
    assert_verdict(out.line("keys"), "ok", "1 usable RSA key");
    // `check` warned before any call.
    assert!(
        out.stderr
            .contains("jtl.scope: \"profile\" lacks \"openid\""),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_token_without_expires_in_is_assumed_to_live_300_s() {
    let setup = Setup::app_token().await;
    setup.emulator.set_expires_in(None);
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("token lifetime"),
        "ok",
        "300 s (5 minutes) assumed 300 s: the opaque token came without expires_in",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_with_only_ec_and_okp_keys_fails_the_keys_step() {
    let setup = Setup::app_token().await;
    // Minted while the key is there; then Zitadel stops publishing it.
    let token = setup
        .emulator
        .mint_app_token_for(TENANT, DEV_APP_USER_ID, Duration::from_secs(3600))
        .expect("app token");
    setup.emulator.set_app_key_published(APP_KEY_ID, false);
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(out.line("JWKS"), "ok", "without a bearer");
    let keys = out.line("keys");
    assert_verdict(
        keys,
        "FAIL",
        "the JWKS document holds no usable RS256 (RSA, 2048 bits or more) signing key (2 skipped)",
    );
    assert!(
        keys.contains(&format!(
            "only keys of other types (`{APP_EC_KEY_ID}`, `{APP_OKP_KEY_ID}`), while app tokens are signed with RSA"
        )),
        "{keys}"
    );
    assert_verdict(
        out.line("app token"),
        "skipped",
        "not verified: no usable RSA key set was fetched",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_small_rsa_key_is_named_beside_the_usable_one() {
    let setup = Setup::app_token().await;
    setup.emulator.publish_small_rsa_key("small");
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert!(
        out.line("keys").contains(
            "1 RSA key skipped: key #4 (kid \"small\"): the RSA modulus has 1024 bits, fewer than the 2048 required"
        ),
        "{}",
        out.line("keys")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_app_token_passes_jtls_three_checks() {
    let setup = Setup::app_token().await;
    let token =
        setup.app_token_for(&setup.app_claims(serde_json::json!([DEV_APP_ID]), Some(DEV_APP_ID)));
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let claims = out.line("app token");
    assert_verdict(
        claims,
        "info",
        &format!(
            "aud [\"{DEV_APP_ID}\"], urn:jtl:app_id \"{DEV_APP_ID}\", urn:jtl:tenant_id \"{TENANT}\", sub \"{DEV_APP_USER_ID}\""
        ),
    );
    assert!(
        claims.contains(&format!("header kid \"{APP_KEY_ID}\"")),
        "{claims}"
    );
    let first = out.line("app token 1/3 signature and issuer");
    assert_verdict(
        first,
        "ok",
        &format!("key `{APP_KEY_ID}` (RSA, 2048 bits) signed it; iss equals session.issuer"),
    );
    assert!(first.contains("lifetime ok (expires in"), "{first}");
    assert_verdict(
        out.line("app token 2/3 audience"),
        "ok",
        &format!("aud [\"{DEV_APP_ID}\"] contains the app id"),
    );
    assert_verdict(
        out.line("app token 3/3 app id"),
        "ok",
        &format!("urn:jtl:app_id \"{DEV_APP_ID}\" equals the app id"),
    );
    assert_verdict(
        out.verdict("app token"),
        "ok",
        &format!(
            "valid: signed by key `{APP_KEY_ID}`, tenant {TENANT}, user \"{DEV_APP_USER_ID}\""
        ),
    );
    // In JTL's order, after the other steps.
    let order: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|line| line.get(8..))
        .filter_map(|rest| rest.split(": ").next())
        .filter(|step| step.starts_with("app token") || *step == "discovery")
        .collect();
    assert_eq!(
        order,
        [
            "discovery",
            "app token",
            "app token 1/3 signature and issuer",
            "app token 2/3 audience",
            "app token 3/3 app id",
            "app token"
        ]
    );
    let all = out.all();
    for part in token.split('.') {
        assert!(!all.contains(part), "{all}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_for_another_audience_fails_the_audience_check() {
    let setup = Setup::app_token().await;
    let token = setup.app_token_for(&setup.app_claims(serde_json::json!(["another-app"]), None));
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("app token 1/3 signature and issuer"),
        "ok",
        "signed it",
    );
    assert_verdict(
        out.line("app token 2/3 audience"),
        "FAIL",
        &format!(
            "aud [\"another-app\"] does not contain the app id (session.audience \"{DEV_APP_ID}\")"
        ),
    );
    assert_verdict(
        out.line("app token 3/3 app id"),
        "ok",
        "urn:jtl:app_id absent, which passes",
    );
    assert_verdict(
        out.verdict("app token"),
        "FAIL",
        "The session token is meant for another audience. It fails JTL's check 2 (audience) above.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_for_another_app_id_fails_the_app_id_check() {
    let setup = Setup::app_token().await;
    let token = setup.app_token_for(
        &setup.app_claims(serde_json::json!([DEV_APP_ID]), Some("999999999999999999")),
    );
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.line("app token 1/3 signature and issuer"),
        "ok",
        "signed it",
    );
    assert_verdict(
        out.line("app token 2/3 audience"),
        "ok",
        "contains the app id",
    );
    assert_verdict(
        out.line("app token 3/3 app id"),
        "FAIL",
        &format!("urn:jtl:app_id \"999999999999999999\" is not the app id (session.audience \"{DEV_APP_ID}\")"),
    );
    assert_verdict(
        out.verdict("app token"),
        "FAIL",
        "The app token was issued for another app (urn:jtl:app_id).",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_token_with_an_unknown_kid_fails_the_first_check() {
    let setup = Setup::app_token().await;
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "unknown-kid"});
    let token = setup
        .emulator
        .mint_app_token_with_header(
            &header,
            &setup.app_claims(serde_json::json!([DEV_APP_ID]), Some(DEV_APP_ID)),
            APP_KEY_ID,
        )
        .expect("app token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let first = out.line("app token 1/3 signature and issuer");
    assert_verdict(
        first,
        "FAIL",
        &format!("kid `unknown-kid` is not in the key set at jtl.jwks_url (it has `{APP_KEY_ID}`)"),
    );
    assert!(
        first.contains("as sent (unverified): iss equals session.issuer"),
        "{first}"
    );
    for step in ["app token 2/3 audience", "app token 3/3 app id"] {
        assert_verdict(
            out.line(step),
            "skipped",
            "not decided: the signature was not verified; as sent,",
        );
    }
    assert_verdict(
        out.verdict("app token"),
        "FAIL",
        "The session token was signed by an unknown key `unknown-kid`.",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_token_pasted_in_the_app_token_flow_is_named() {
    let setup = Setup::app_token().await;
    let token = setup
        .emulator
        .mint(&setup.claims(3600), &setup.kid(), false)
        .expect("session token");
    let out = setup.with_session_token(&token).await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert_verdict(
        out.verdict("app token"),
        "FAIL",
        "Its header alg is \"EdDSA\": a session token (getSessionToken)",
    );
}

// ---- [shared_cache]: Redis (SPEC §12) --------------------------------------------------------

fn shared_cache_section(redis_url: &str, key_prefix: &str) -> String {
    format!("[shared_cache]\nredis_url = {redis_url:?}\nkey_prefix = {key_prefix:?}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reachable_redis_passes_the_shared_cache_step_and_says_the_entry_is_not_there_yet() {
    let test = "a_reachable_redis_passes_the_shared_cache_step_and_says_the_entry_is_not_there_yet";
    let Some(url) = test_redis_url(test) else {
        return;
    };
    let mut setup = Setup::healthy().await;
    let prefix = format!("jtl-sidecar-check-{}", uuid::Uuid::new_v4().simple());
    setup.shared_cache = shared_cache_section(&url, &prefix);
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(
        line,
        "ok",
        "a sealed test entry was written, read back and deleted",
    );
    assert!(
        line.contains(&format!("this app's entry {prefix}:access-token:")),
        "{line}"
    );
    assert!(line.contains("is not there yet"), "{line}");
    // The test entry is gone, and nothing else was written.
    let mut redis = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut redis)
        .await
        .expect("KEYS");
    assert!(keys.is_empty(), "left behind: {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_shared_entry_is_read_and_never_overwritten() {
    use jtl_auth_sidecar::shared_cache::{entry_key, Entry, SealingKey};
    let test = "an_existing_shared_entry_is_read_and_never_overwritten";
    let Some(url) = test_redis_url(test) else {
        return;
    };
    let mut setup = Setup::healthy().await;
    let prefix = format!("jtl-sidecar-check-{}", uuid::Uuid::new_v4().simple());
    setup.shared_cache = shared_cache_section(&url, &prefix);
    // What a running replica of this app would have published.
    let token_url = url::Url::parse(&setup.token_url).expect("token url");
    let key = entry_key(&prefix, token_url.as_str(), "emulated-client", None);
    let secret = EmulatorOptions::default().client_secret;
    let now = Clock::system().now_ms();
    let entry = Entry {
        token: "a-shared-access-token".into(),
        expires_at_ms: now + 600_000,
        obtained_at_ms: now,
        lifetime_source: 0,
    };
    let sealed = SealingKey::derive(secret.as_bytes())
        .seal(&key, &entry)
        .expect("sealed");
    let mut redis = redis::Client::open(url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&sealed)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .expect("SET");
    let out = setup.online().await;
    let after: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("GET");
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    assert_eq!(out.code, Some(0), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(line, "ok", "there and opens with this client secret");
    assert!(line.contains("valid 5"), "about 600 s left: {line}");
    assert!(!line.contains("a-shared-access-token"), "{line}");
    assert_eq!(
        after.as_deref(),
        Some(&sealed[..]),
        "the entry is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_fails_the_shared_cache_step_and_exits_1() {
    let mut setup = Setup::healthy().await;
    let port = closed_port();
    setup.shared_cache = shared_cache_section(&format!("redis://127.0.0.1:{port}"), "app");
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(
        line,
        "FAIL",
        &format!("redis://127.0.0.1:{port}/0: cannot connect to 127.0.0.1:{port}"),
    );
    assert!(
        line.contains("the replicas fall back to their own access tokens"),
        "{line}"
    );
    assert!(line.contains("does not stop serving"), "{line}");
    // The other steps are unaffected.
    assert_verdict(out.line("credentials"), "ok", "accepted");
    assert_verdict(out.line("upstream"), "ok", "accepts connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_fails_naming_the_login_and_never_shows_it() {
    let test = "a_wrong_redis_password_fails_naming_the_login_and_never_shows_it";
    let Some(redis) = PrivateRedis::start(test, &["--requirepass", "the-right-one"]).await else {
        return;
    };
    let mut setup = Setup::healthy().await;
    let password = setup.dir.path().join("redis-password");
    std::fs::write(&password, "not-the-password\n").expect("password file");
    setup.shared_cache = format!(
        "{}redis_password_file = {:?}\n",
        shared_cache_section(&format!("redis://127.0.0.1:{}", redis.port), "app"),
        password.display().to_string()
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(line, "FAIL", "login refused by 127.0.0.1:");
    assert!(line.contains("redis_password_file"), "{line}");
    assert!(
        line.contains("the replicas fall back to their own access tokens"),
        "{line}"
    );
    assert!(!out.all().contains("not-the-password"), "{}", out.all());

    // The right password, in the URL: ok, and the URL is shown without it.
    setup.shared_cache = shared_cache_section(
        &format!("redis://:the-right-one@127.0.0.1:{}", redis.port),
        "app",
    );
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("shared cache"),
        "ok",
        &format!("redis://127.0.0.1:{}/0: a sealed test entry", redis.port),
    );
    assert!(!out.all().contains("the-right-one"), "{}", out.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_redis_certificate_fails_naming_jtl_ca_file() {
    let test = "an_untrusted_redis_certificate_fails_naming_jtl_ca_file";
    // A TLS-only redis-server with a self-signed certificate for localhost.
    let Some(redis) = PrivateRedis::start_tls(test, &[]).await else {
        return;
    };
    let cert_arg = redis.tls_cert.as_ref().expect("tls").display().to_string();
    let mut setup = Setup::healthy().await;
    let url = format!("rediss://localhost:{}", redis.port);
    setup.shared_cache = shared_cache_section(&url, "app");
    let out = setup.online().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    let line = out.line("shared cache");
    assert_verdict(
        line,
        "FAIL",
        &format!(
            "rediss://localhost:{}/0: TLS handshake with localhost:{} failed",
            redis.port, redis.port
        ),
    );
    assert!(line.contains("set jtl.ca_file"), "{line}");
    assert!(
        line.contains("the replicas fall back to their own access tokens"),
        "{line}"
    );

    // jtl.ca_file trusts it, as the runtime's connections would.
    setup.jtl_extra = format!("ca_file = {cert_arg:?}");
    let out = setup.online().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    assert_verdict(
        out.line("shared cache"),
        "ok",
        "a sealed test entry was written, read back and deleted",
    );
}
