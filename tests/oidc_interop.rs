//! Interoperability with an OpenID provider this project did not write: panva's
//! `oidc-provider` (Node.js, tests/interop/), configured as JTL's Zitadel serves a Cloud App
//! (SPEC §11): `{issuer}/oauth/v2/token` with client credentials by HTTP Basic and
//! `scope=openid` required, `{issuer}/oauth/v2/keys` with RSA, EC and OKP keys under
//! numeric-string kids, the discovery document, and app tokens that the provider issues
//! with its own machinery (RS256 JWT access tokens, `aud` = the app id, `urn:jtl:*`
//! claims from its `extraTokenClaims` hook, `sub` a numeric user id).
//!
//! The sidecar runs as a real `run` process in the app-token flow with only the issuer,
//! the audience and the service client configured (token and key-set URLs derived), in
//! front of the echo backend. The emulator in src/emulator was written from the same
//! reading of JTL's documents as the sidecar; this checks that reading against an
//! independent implementation of the standards.
//!
//! Needs Node.js and `npm ci` in tests/interop. Without them the tests say SKIP on stderr
//! and pass, unless `REQUIRE_INTEROP_TEST=1` (as .ci/run sets it), which makes them fail.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jtl_auth_sidecar::dev::echo::EchoBackend;
use jtl_auth_sidecar::jtl::client_auth::basic_authorization;
use serde_json::{Value, json};

/// The app (JTL's `appId`, Zitadel's project id) the sidecar serves, and another one.
const APP_ID: &str = "312909075212468632";
const OTHER_APP_ID: &str = "312909075212460000";
/// Issued in upper case: the sidecar forwards the canonical lower-case form.
const TENANT: &str = "7C9E6679-7425-40DE-944B-E07FC1F90AE7";
/// The sidecar's service account (an alphanumeric secret).
const SERVICE: (&str, &str) = ("sidecar-service", "Alnum3ric5ecret");
/// A service account whose secret needs RFC 6749 §2.3.1's form-urlencoding.
const RESERVED: (&str, &str) = ("sidecar-reserved", "a+b/c%d:e=f");
/// The "app shell": its client id is the user id that becomes `sub`, as in Zitadel.
const SHELL: (&str, &str) = ("312909075212468999", "shell-secret");
/// A shell client whose tokens the provider issues two hours in the past.
const EXPIRED_SHELL: (&str, &str) = ("312909075212468998", "shell-secret");

const WAIT: Duration = Duration::from_secs(30);

// ---- the provider ------------------------------------------------------------------------

/// Node.js and tests/interop's modules; `None` (after a loud SKIP) when one is missing, a
/// panic instead when `REQUIRE_INTEROP_TEST=1`.
fn node() -> Option<PathBuf> {
    let node = PathBuf::from(std::env::var_os("NODE").unwrap_or_else(|| "node".into()));
    let mut missing = Vec::new();
    missing.extend(common::node_unusable(&node));
    let module = interop_dir().join("node_modules/oidc-provider/package.json");
    if !module.is_file() {
        missing.push(format!("{} (cd tests/interop && npm ci)", module.display()));
    }
    if missing.is_empty() {
        return Some(node);
    }
    let list = missing.join("\n    ");
    if std::env::var("REQUIRE_INTEROP_TEST").as_deref() == Ok("1") {
        panic!("REQUIRE_INTEROP_TEST=1, but the interop test cannot run; missing:\n    {list}");
    }
    // Straight to stderr: libtest does not capture this, so the skip shows in any run.
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\nSKIP tests/oidc_interop.rs: the oidc-provider interop test did NOT run; missing:\n    {list}\n\
         (set REQUIRE_INTEROP_TEST=1 to make this a failure, as .ci/run does)\n{bar}\n",
        bar = "!".repeat(78),
    );
    None
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// One provider of the script: its issuer exactly as it writes `iss`, and its kids.
struct Issuer {
    issuer: String,
    rotate: String,
    ec_kid: String,
    okp_kid: String,
}

impl Issuer {
    /// `{issuer}/path` without a double slash.
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }
}

/// `node tests/interop/provider.mjs`, killed when dropped.
struct Provider {
    child: Child,
    stderr: Arc<Mutex<String>>,
    issuers: Vec<Issuer>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// One provider per entry of `trailing_slash`: its issuer ends in '/' when true.
    fn start(node: &Path, trailing_slash: &[bool]) -> Provider {
        let client = |(id, secret): (&str, &str)| json!({"id": id, "secret": secret});
        let setup = json!({
            "appId": APP_ID,
            "otherAppId": OTHER_APP_ID,
            "tenantId": TENANT,
            "serviceClients": [client(SERVICE), client(RESERVED)],
            "shellClient": client(SHELL),
            "expiredShellClient": client(EXPIRED_SHELL),
            "providers": trailing_slash.iter().enumerate()
                .map(|(n, slash)| json!({"name": format!("p{n}"), "trailingSlash": slash}))
                .collect::<Vec<_>>(),
        });
        let mut child = Command::new(node)
            .arg(interop_dir().join("provider.mjs"))
            .arg(setup.to_string())
            .current_dir(interop_dir())
            // The script exits when its stdin closes, so it never outlives the test.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", node.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let lines = lines_of(child.stdout.take().expect("stdout"), None);
        let deadline = Instant::now() + common::harness::scaled(WAIT);
        let ready = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "provider.mjs printed no ready line:\n{}",
                        stderr.lock().unwrap()
                    )
                });
            if let Ok(value) = serde_json::from_str::<Value>(&line)
                && value["ready"] == true
            {
                break value;
            }
        };
        let issuers = ready["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .map(|p| Issuer {
                issuer: p["issuer"].as_str().expect("issuer").to_owned(),
                rotate: p["rotate"].as_str().expect("rotate").to_owned(),
                ec_kid: p["kids"]["ec"].as_str().expect("ec kid").to_owned(),
                okp_kid: p["kids"]["okp"].as_str().expect("okp kid").to_owned(),
            })
            .collect();
        Provider {
            child,
            stderr,
            issuers,
        }
    }

    /// An app token from the provider's own client-credentials grant: `shell` asks for the
    /// resource `urn:jtl:app:{app}`, whose audience is `app`.
    async fn app_token(&self, issuer: &Issuer, shell: (&str, &str), app: &str) -> String {
        let body =
            format!("grant_type=client_credentials&scope=openid&resource=urn%3Ajtl%3Aapp%3A{app}");
        let (status, answer) = send(
            Method::POST,
            &issuer.url("/oauth/v2/token"),
            &[("authorization", &basic_authorization(shell.0, shell.1))],
            body,
        )
        .await;
        assert_eq!(status, 200, "{answer}\n{}", self.stderr.lock().unwrap());
        answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// A new RSA key signs from now on; its kid.
    async fn rotate(&self, issuer: &Issuer) -> String {
        let (status, answer) = send(Method::POST, &issuer.rotate, &[], String::new()).await;
        assert_eq!(status, 200, "{answer}");
        answer["kid"].as_str().expect("kid").to_owned()
    }

    /// The provider's introspection of `token`, asked by the client that holds it.
    async fn introspect(&self, issuer: &Issuer, client: (&str, &str), token: &str) -> Value {
        let (status, answer) = send(
            Method::POST,
            &issuer.url("/oauth/v2/introspect"),
            &[("authorization", &basic_authorization(client.0, client.1))],
            format!("token={token}"),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// A token's header and claims, read without verifying.
fn decoded(token: &str) -> (Value, Value) {
    let mut parts = token.split('.').map(|part| {
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).expect("base64url"))
            .expect("JSON")
    });
    (parts.next().expect("header"), parts.next().expect("claims"))
}

// ---- the sidecar -------------------------------------------------------------------------

/// `jtl-auth-sidecar run` in the app-token flow in front of an echo backend; killed when
/// dropped.
struct Sidecar {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    ingress: SocketAddr,
    admin: SocketAddr,
    _files: SidecarFiles,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config file, the tenant store and the backend it names.
struct SidecarFiles {
    config: PathBuf,
    _dir: tempfile::TempDir,
    _backend: EchoBackend,
}

impl SidecarFiles {
    /// Only what an operator sets for the app-token flow: issuer, audience, the service
    /// account; `jtl.token_url`, `jtl.scope` and `jtl.jwks_url` are derived.
    async fn write(issuer: &str, client: (&str, &str)) -> SidecarFiles {
        let backend = EchoBackend::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("echo backend");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("sidecar.toml");
        let toml = format!(
            "[ingress]\nlisten = \"127.0.0.1:0\"\nupstream = {upstream:?}\n\
             [egress]\nlisten = \"\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [jtl]\nclient_id = {id:?}\nclient_secret = {secret:?}\n\
             # Nothing here calls JTL's API: port 9 (discard) on loopback.\n\
             api_base_url = \"http://127.0.0.1:9\"\n\
             [session]\nflow = \"app-token\"\nissuer = {issuer:?}\naudience = {APP_ID:?}\n\
             [tenants]\ndatabase_url = {store:?}\n",
            upstream = backend.url(),
            id = client.0,
            secret = client.1,
            store = format!("sqlite://{}", dir.path().join("jtl-tenants.db").display()),
        );
        std::fs::write(&config, toml).expect("config file");
        SidecarFiles {
            config,
            _dir: dir,
            _backend: backend,
        }
    }
}

/// The binary with no `JTL_SIDECAR_*` or `RUST_LOG` from this environment.
fn sidecar_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jtl-auth-sidecar"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("JTL_SIDECAR_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command
}

impl Sidecar {
    /// Starts `run` and waits for its "is listening" line (not for readiness).
    async fn start(issuer: &str, client: (&str, &str)) -> Sidecar {
        let files = SidecarFiles::write(issuer, client).await;
        let mut child = sidecar_command()
            .arg("run")
            .arg("--config")
            .arg(&files.config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the sidecar starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = lines_of(child.stdout.take().expect("stdout"), Some(Arc::clone(&log)));
        let deadline = Instant::now() + common::harness::scaled(WAIT);
        let listening = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| {
                    panic!(
                        "the sidecar printed no \"is listening\" line:\n{}",
                        log.lock().unwrap().join("\n")
                    )
                });
            if line.contains("is listening") {
                let value: Value = serde_json::from_str(&line).expect("a JSON log line");
                break value.get("fields").cloned().unwrap_or(value);
            }
        };
        let address = |name: &str| -> SocketAddr {
            listening[name]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {name} address in {listening}"))
        };
        Sidecar {
            ingress: address("ingress"),
            admin: address("admin"),
            child,
            log,
            _files: files,
        }
    }

    /// Polls `/readyz` until it answers 200; false (with its last answer printed) after
    /// [`WAIT`].
    async fn became_ready(&self) -> bool {
        let readyz = format!("http://{}/readyz", self.admin);
        let deadline = Instant::now() + common::harness::scaled(WAIT);
        loop {
            let (status, body) = send(Method::GET, &readyz, &[], String::new()).await;
            if status == 200 {
                return true;
            }
            if Instant::now() > deadline {
                println!("/readyz: {status} {body}\n{}", self.log());
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /orders` with `token`: the status, and what the backend saw when it got there.
    async fn call(&self, token: &str) -> (u16, Value) {
        let bearer = format!("Bearer {token}");
        send(
            Method::GET,
            &format!("http://{}/orders", self.ingress),
            &[("authorization", &bearer)],
            String::new(),
        )
        .await
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Lines of a pipe, read on a thread; each also kept in `keep` when given.
fn lines_of(
    pipe: impl Read + Send + 'static,
    keep: Option<Arc<Mutex<Vec<String>>>>,
) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(keep) = &keep {
                keep.lock().unwrap().push(line.clone());
            }
            // The receiver may be gone; the pipe is still drained, so the child never blocks.
            let _ = sender.send(line);
        }
    });
    receiver
}

/// One HTTP/1.1 exchange: the status and the body as JSON (a string when it is not JSON).
async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: String) -> (u16, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut request = Request::builder().method(method).uri(url);
    if !body.is_empty() {
        request = request.header("content-type", "application/x-www-form-urlencoded");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = tokio::time::timeout(WAIT, client.request(request))
        .await
        .unwrap_or_else(|_| panic!("{url}: no answer within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

/// The single value of a header the backend saw.
fn seen<'v>(echo: &'v Value, header: &str) -> &'v str {
    let values = echo["headers"][header]
        .as_array()
        .unwrap_or_else(|| panic!("the backend saw no {header}: {echo}"));
    assert_eq!(values.len(), 1, "{header}: {echo}");
    values[0].as_str().expect("text")
}

// ---- the checks --------------------------------------------------------------------------

/// Ready (a service token with scope openid by Basic, the mixed key set loaded); the
/// provider's app token accepted with the identity forwarded; wrong audience and expired
/// refused; a token of a key rotated in after start accepted without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_app_tokens_are_verified_forwarded_refused_and_followed_through_a_rotation() {
    let Some(node) = node() else { return };
    let provider = Provider::start(&node, &[false]);
    let issuer = &provider.issuers[0];
    let sidecar = Sidecar::start(&issuer.issuer, SERVICE).await;
    assert!(sidecar.became_ready().await, "the sidecar became ready");

    let token = provider.app_token(issuer, SHELL, APP_ID).await;
    let (header, claims) = decoded(&token);
    assert_eq!(header["alg"], "RS256", "{header}");
    assert!(header["kid"].is_string(), "{header}");
    assert_eq!(claims["aud"], APP_ID, "{claims}");
    assert_eq!(claims["urn:jtl:tenant_id"], TENANT, "{claims}");
    assert_eq!(claims["sub"], SHELL.0, "{claims}");
    let (status, echo) = sidecar.call(&token).await;
    assert_eq!(status, 200, "{echo}\n{}", sidecar.log());
    assert_eq!(seen(&echo, "x-tenant-id"), TENANT.to_lowercase());
    assert_eq!(seen(&echo, "x-user-id"), SHELL.0);
    // The backend gets the sidecar's service token, which the provider issued to the
    // service client with the openid scope.
    let service_token = seen(&echo, "authorization")
        .strip_prefix("Bearer ")
        .expect("a bearer")
        .to_owned();
    assert_ne!(service_token, token);
    let introspected = provider.introspect(issuer, SERVICE, &service_token).await;
    assert_eq!(introspected["active"], true, "{introspected}");
    assert_eq!(introspected["client_id"], SERVICE.0, "{introspected}");
    assert_eq!(introspected["scope"], "openid", "{introspected}");

    let other_app = provider.app_token(issuer, SHELL, OTHER_APP_ID).await;
    assert_eq!(decoded(&other_app).1["aud"], OTHER_APP_ID);
    let (status, body) = sidecar.call(&other_app).await;
    assert_eq!(status, 401, "another app's token: {body}");

    let expired = provider.app_token(issuer, EXPIRED_SHELL, APP_ID).await;
    let (status, body) = sidecar.call(&expired).await;
    assert_eq!(status, 401, "an expired token: {body}");
    assert!(body.to_string().contains("expired"), "{body}");

    // The provider starts signing with a new key; the sidecar, not restarted, fetches the
    // key set again for the unknown kid (at most one fetch per 10 s: this may wait).
    let rotated_kid = provider.rotate(issuer).await;
    let rotated = provider.app_token(issuer, SHELL, APP_ID).await;
    assert_eq!(decoded(&rotated).0["kid"], rotated_kid.as_str());
    assert_ne!(decoded(&rotated).0["kid"], header["kid"]);
    let (status, echo) = sidecar.call(&rotated).await;
    assert_eq!(status, 200, "{echo}\n{}", sidecar.log());
    assert_eq!(seen(&echo, "x-user-id"), SHELL.0);
}

/// Zitadel's EC and OKP keys are not the flow's type: skipped silently (debug), so an
/// operator sees no warning for a healthy key set, at start or at a refetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mixed_key_set_logs_no_warning_about_its_ec_and_okp_keys() {
    let Some(node) = node() else { return };
    let provider = Provider::start(&node, &[false]);
    let issuer = &provider.issuers[0];
    let sidecar = Sidecar::start(&issuer.issuer, SERVICE).await;
    assert!(sidecar.became_ready().await, "the sidecar became ready");
    let (status, body) = sidecar
        .call(&provider.app_token(issuer, SHELL, APP_ID).await)
        .await;
    assert_eq!(status, 200, "{body}");
    let log = sidecar.log();
    let noisy: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
        .filter(|line| {
            line.contains(&issuer.ec_kid)
                || line.contains(&issuer.okp_kid)
                || line.contains("skipped a key")
        })
        .collect();
    assert!(
        noisy.is_empty(),
        "warnings about the EC/OKP keys:\n{}",
        noisy.join("\n")
    );
}

/// `check --online` against the provider: token endpoint (with the scope), credentials,
/// key set, discovery document, tenant store, upstream, and the provider's app token
/// explained by JTL's three checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_passes_against_the_provider() {
    let Some(node) = node() else { return };
    let provider = Provider::start(&node, &[false]);
    let issuer = &provider.issuers[0];
    let files = SidecarFiles::write(&issuer.issuer, SERVICE).await;
    let token = provider.app_token(issuer, SHELL, APP_ID).await;
    let config = files.config.clone();
    let output = tokio::task::spawn_blocking(move || {
        sidecar_command()
            .args(["check", "--online", "--session-token", &token, "--config"])
            .arg(&config)
            .output()
            .expect("check runs")
    })
    .await
    .expect("check thread");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "check --online:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for step in [
        "token endpoint",
        "credentials",
        "token lifetime",
        "JWKS",
        "keys",
        "discovery",
        "tenant store",
        "upstream",
        "app token 1/3 signature and issuer",
        "app token 2/3 audience",
        "app token 3/3 app id",
    ] {
        let ok = format!("{:<8}{step}: ", "ok");
        assert!(
            stdout.lines().any(|line| line.starts_with(&ok)),
            "no ok line for {step:?}:\n{stdout}"
        );
    }
    assert!(stdout.contains("openid"), "the scope is named:\n{stdout}");
    assert!(
        stdout.contains(&issuer.url("/.well-known/openid-configuration")),
        "the discovery document was checked:\n{stdout}"
    );
}

/// RFC 6749 §2.3.1: a secret holding `+ / % : =` works, because the sidecar form-urlencodes
/// it; the provider refuses the same secret joined raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_secret_with_reserved_characters_gets_a_token() {
    let Some(node) = node() else { return };
    let provider = Provider::start(&node, &[false]);
    let issuer = &provider.issuers[0];
    let raw = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", RESERVED.0, RESERVED.1))
    );
    let (status, body) = send(
        Method::POST,
        &issuer.url("/oauth/v2/token"),
        &[("authorization", &raw)],
        "grant_type=client_credentials&scope=openid".to_owned(),
    )
    .await;
    assert!(
        status == 400 || status == 401,
        "the secret joined raw: {status} {body}"
    );

    let sidecar = Sidecar::start(&issuer.issuer, RESERVED).await;
    assert!(sidecar.became_ready().await, "the sidecar became ready");
    let (status, echo) = sidecar
        .call(&provider.app_token(issuer, SHELL, APP_ID).await)
        .await;
    assert_eq!(status, 200, "{echo}");
    let service_token = seen(&echo, "authorization").trim_start_matches("Bearer ");
    let introspected = provider.introspect(issuer, RESERVED, service_token).await;
    assert_eq!(introspected["client_id"], RESERVED.0, "{introspected}");
}

/// An issuer that ends in '/' (oidc-provider allows it, and writes `iss` with it): kept as
/// written, compared exactly, and the derived URLs have no double slash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_with_a_trailing_slash_is_compared_as_written() {
    let Some(node) = node() else { return };
    let provider = Provider::start(&node, &[true]);
    let issuer = &provider.issuers[0];
    assert!(issuer.issuer.ends_with('/'), "{}", issuer.issuer);
    let sidecar = Sidecar::start(&issuer.issuer, SERVICE).await;
    assert!(sidecar.became_ready().await, "the sidecar became ready");
    let token = provider.app_token(issuer, SHELL, APP_ID).await;
    assert_eq!(decoded(&token).1["iss"], issuer.issuer.as_str());
    let (status, echo) = sidecar.call(&token).await;
    assert_eq!(status, 200, "a token whose iss ends in '/': {echo}");
    assert_eq!(seen(&echo, "x-tenant-id"), TENANT.to_lowercase());
}
